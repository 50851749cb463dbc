"""Thinning: channel groups removed from the graph give a smaller model that computes exactly what
the channel-masked model computes (float to rounding, integer models within one output step), on
a plain CNN with a flatten, a depthwise network (multiplier 2) and MobileNetV2 (residual ADDs,
depthwise chains, PAD, MEAN); label-free repair brings a thinned model closer to the dense one."""

import numpy as np
import pytest

from edgeprune import prune
from edgeprune.channels import analyze, mask
from edgeprune.errors import EdgepruneError
from edgeprune.model import Model
from edgeprune.profile import profile
from edgeprune.runtime import Runner
from edgeprune.thin import shrink, thin
from tests.models import ARCHS, INPUT_SHAPES, build, random_inputs

COMMITTED = [("float32", "small_cnn"), ("float32", "mixed"), ("int8", "mixed"),
             ("float16", "mixed")]  # fmt: skip
HEAD = pytest.mark.skipif("conv_head" not in ARCHS, reason="tests/models.py has no conv_head")


def outputs(model: Model, xs) -> np.ndarray:
    runner = Runner(model)
    return np.stack([runner.run(x)[model.main.outputs[0]] for x in xs])


def tolerance(model: Model, y: np.ndarray) -> float:
    """One quantization step for a quantized output; float rounding (float16 biases: 1e-3)."""
    q = model.tensor(model.main.outputs[0]).quantization
    if q is not None:
        return float(q.scale[0]) * 1.01
    fp16 = any(t.type_name == "FLOAT16" for t in model.tensors)
    return (1e-3 if fp16 else 1e-5) * max(1.0, float(np.abs(y).max()))


def half_of_the_groups(model: Model, seed: int = 0):
    graph, groups = analyze(model)
    rng = np.random.default_rng(seed)
    return graph, [g for g in groups if not g.frozen and rng.random() < 0.5]


def check_thinned_equals_masked(model: Model, arch: str, zero_bias: bool):
    graph, chosen = half_of_the_groups(model)
    result = thin(model, graph, chosen, zero_bias=zero_bias)
    assert result.removed, "nothing was removed"
    masked = mask(model, result.removed, bias=not zero_bias)
    xs = random_inputs(6, INPUT_SHAPES[arch][1:], seed=3)
    want, got = outputs(masked, xs), outputs(result.model, xs)
    assert np.abs(got - want).max() <= tolerance(model, want)
    assert result.model.nbytes < model.nbytes
    before, after = profile(model)["totals"], profile(result.model)["totals"]
    assert after["macs"] < before["macs"]
    assert after["params"] < before["params"]
    return result


@pytest.mark.parametrize("zero_bias", [True, False])
@pytest.mark.parametrize("kind,arch", COMMITTED)
def test_thinned_model_equals_the_channel_masked_model(kind, arch, zero_bias):
    model = Model(build(kind, arch))
    result = check_thinned_equals_masked(model, arch, zero_bias)
    # Shapes of the producers' weights really shrank.
    graph, _ = analyze(result.model)
    assert sum(x.out_channels for x in graph.layers.values()) < sum(
        x.out_channels for x in analyze(model)[0].layers.values()
    )


@pytest.mark.tensorflow
@pytest.mark.parametrize("kind", ["float32", "int8"])
def test_mobilenet_v2_residual_groups_thin_exactly(kind):
    model = Model(build(kind, "mobilenet_v2_shaped"))
    graph, groups = analyze(model)
    residual = [g for g in groups if len(g.producers) > 2]  # projections joined by ADDs
    assert residual and all(not g.frozen for g in residual)
    assert "SOFTMAX" in {opcode for _, opcode, _ in graph.reported}
    check_thinned_equals_masked(model, "mobilenet_v2_shaped", zero_bias=False)


@pytest.mark.parametrize("kind", [pytest.param("int8", marks=HEAD)])
def test_thinned_conv_head_equals_the_masked_model(kind):
    check_thinned_equals_masked(Model(build(kind, "conv_head")), "conv_head", zero_bias=False)


@HEAD
def test_softmax_over_channels_freezes_and_is_reported():
    model = Model(build("int8", "conv_head"))
    graph, groups = analyze(model)
    assert [opcode for _, opcode, _ in graph.reported] == ["SOFTMAX"]
    frozen = [g for g in groups if g.frozen]
    assert any("SOFTMAX" in g.frozen for g in frozen)


def test_a_channel_pruned_model_thins_to_the_same_outputs():
    model = Model(build("float32", "small_cnn"))
    layers = analyze(model)[0].layers.values()
    masks = prune.masks(model, tuple(layers), None, 0.5, score="magnitude", granularity="channel",
                        keep_classifier=True)  # fmt: skip
    pruned = prune.apply(model, masks)
    result = shrink(pruned, masked=True)
    assert result.removed
    xs = random_inputs(6, INPUT_SHAPES["small_cnn"][1:], seed=3)
    want = outputs(pruned, xs)
    assert np.abs(outputs(result.model, xs) - want).max() <= tolerance(model, want)
    assert result.model.nbytes < 0.7 * model.nbytes


@pytest.mark.parametrize("kind", ["float32", "int8"])
def test_repair_brings_the_thinned_model_closer_to_the_dense_one(kind):
    arch = "small_cnn" if kind == "float32" else "mixed"
    model = Model(build(kind, arch))
    shape = INPUT_SHAPES[arch][1:]
    held_out = random_inputs(16, shape, seed=4)
    dense = outputs(model, held_out)

    def error(result):
        return np.linalg.norm(outputs(result.model, held_out) - dense) / np.linalg.norm(dense)

    plain = shrink(model, 0.5)
    samples = random_inputs(64, shape, seed=3)
    repaired = shrink(model, 0.5, samples=samples)
    assert repaired.repaired
    assert error(repaired) < 0.8 * error(plain)
    # Groups chosen by their refit error, from the same moments (better on the FSDD benchmark;
    # on these random-weight models only sometimes).
    chosen_by_refit = shrink(model, 0.5, "reconstruction", samples=samples)
    assert len(chosen_by_refit.removed) == len(repaired.removed)
    assert error(chosen_by_refit) < 0.8 * error(plain)
    with pytest.raises(EdgepruneError, match="needs samples"):
        shrink(model, 0.5, "reconstruction")


def test_thin_command_writes_a_smaller_model_and_says_so(tmp_path, capsys):
    import json

    from edgeprune.cli import main

    source = tmp_path / "m.tflite"
    source.write_bytes(build("float32", "small_cnn"))
    data = tmp_path / "x.npy"
    np.save(data, random_inputs(32, INPUT_SHAPES["small_cnn"][1:], seed=3))
    out = tmp_path / "thin.tflite"
    argv = ["thin", source, "--amount", "0.5", "--data", data, "-o", out, "-q", "--json"]
    assert main([str(a) for a in argv]) == 0
    result = json.loads(capsys.readouterr().out)
    assert result["removed_groups"] > 0 and result["repaired_layers"] > 0
    for name in ("file_bytes", "macs", "params", "peak_bytes"):
        assert result["after"][name] < result["before"][name]
    assert out.stat().st_size == result["after"]["file_bytes"]
    assert main(["thin", str(source), "--amount", "1.5", "-o", str(out)]) == 2
    assert "amount" in capsys.readouterr().err


def test_personalize_shrink_is_kept_only_if_the_check_passes():
    from edgeprune.personalize import personalize

    model = Model(build("float32", "small_cnn"))
    xs = list(random_inputs(60, INPUT_SHAPES["small_cnn"][1:], seed=3))
    kwargs = dict(stages=("prune",), fixed=0.0, rule="fixed", evaluation_size=30, shrink=0.5)
    refused, report = personalize(model, xs, agreement=0.999, **kwargs)
    row = report.stages[0]
    assert row.name == "shrink" and not row.applied and "agreement" in row.reason
    assert refused.to_bytes() == model.to_bytes()
    kept, report = personalize(model, xs, agreement=0.0, **kwargs)
    assert report.stages[0].applied and report.settings["shrink"] == 0.5
    assert kept.nbytes < 0.6 * model.nbytes


def test_a_bias_tensor_two_layers_share_is_cut_for_each():
    """The converter shares identical constants (e.g. all-zero biases) between layers: thinning
    one layer's channels must not cut the other's bias."""
    from edgeprune.thin import schema

    source = Model(build("float32", "mixed"))
    convs = [op for op in source.operators if op.opcode == "CONV_2D"][:2]
    assert [source.tensor(op.inputs[2]).shape for op in convs] == [(8,), (8,)]
    fb = schema()
    root = fb.ModelT.InitFromPackedBuf(source.to_bytes(), 0)
    second = root.subgraphs[0].operators[convs[1].index]
    second.inputs = [int(i) for i in second.inputs[:2]] + [convs[0].inputs[2]]
    import flatbuffers

    builder = flatbuffers.Builder(0)
    builder.Finish(root.Pack(builder), file_identifier=b"TFL3")
    model = Model(bytes(builder.Output()))
    graph, groups = analyze(model)
    chosen = [g for g in groups if {x.op for x, _ in g.producers} == {convs[0].index}][:3]
    chosen += [g for g in groups if convs[1].index in {x.op for x, _ in g.producers}][-2:]
    result = thin(model, graph, chosen, zero_bias=False)
    assert len(result.removed) == 5
    xs = random_inputs(4, INPUT_SHAPES["mixed"][1:], seed=3)
    want = outputs(mask(model, result.removed, bias=True), xs)
    assert np.abs(outputs(result.model, xs) - want).max() <= tolerance(model, want)
