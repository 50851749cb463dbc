"""ActivationMap: exact S_in/S_out, both runner modes, merge, save/load, constant memory."""

import dataclasses
import json
import tracemalloc
from pathlib import Path

import numpy as np
import pytest

from edgeprune import prune
from edgeprune.activations import ActivationMap, record
from edgeprune.errors import EdgepruneError
from edgeprune.model import Model
from edgeprune.runtime import Runner
from tests import reference as ref
from tests.models import INPUT_SHAPES, build, random_inputs

SAMPLE = INPUT_SHAPES["mixed"][1:]


@pytest.mark.parametrize("kind", ["float32", "int8", "float16", "uint8"])
def test_s_in_and_s_out_equal_brute_force(kind):
    model = Model(build(kind))
    xs = random_inputs(6, SAMPLE, seed=7)
    amap = ActivationMap(model)
    runner = Runner(model, amap.watched, mode="preserve")
    seen = []
    for x in xs:
        amap.update(runner.run(x, raw=True))
        seen.append(runner.run(x))
    assert amap.count == len(xs)
    kinds = set()
    for i, layer in enumerate(amap.layers):
        x = np.concatenate([v[layer.input] for v in seen]).astype(np.float64)
        y = np.concatenate([v[layer.output] for v in seen]).astype(np.float64)
        if layer.spatial:
            expected = ref.im2col_s_in(
                x, *layer.kernel, layer.stride, layer.padding, layer.dilation
            )
        else:
            expected = np.abs(x).reshape(-1, layer.in_features).sum(axis=0)
        np.testing.assert_allclose(amap.s_in(i), expected, rtol=1e-6)
        np.testing.assert_allclose(
            amap.s_out(i), np.abs(y).reshape(-1, y.shape[-1]).sum(0), rtol=1e-6
        )
        kinds.add((layer.kind, layer.padding, layer.stride, layer.dilation))
    # The model covers stride 2 SAME, dilation 2 VALID, depthwise and dense.
    assert ("conv", "SAME", (2, 2), (1, 1)) in kinds and (
        "conv",
        "VALID",
        (1, 1),
        (2, 2),
    ) in kinds
    assert {k[0] for k in kinds} == {"conv", "depthwise", "dense"}


def test_fold_matches_brute_force_on_odd_geometry():
    """Uneven SAME padding, stride 3, dilation 2 and a non-square kernel: folding must agree."""
    from edgeprune.layers import OPS, Conv

    rng = np.random.default_rng(0)
    x = rng.standard_normal((3, 11, 8, 2))
    for padding in ("SAME", "VALID"):
        out_hw = (ref.output_size(11, 3, 3, 2, padding), ref.output_size(8, 2, 2, 1, padding))
        assert OPS["CONV_2D"] is Conv
        layer = Conv(0, "CONV_2D", 0, 1, 2, None, (4, 3, 2, 2), (3, 2), (2, 1), padding)
        layer = dataclasses.replace(layer, output_hw=out_hw)
        assert layer.s_in_shape() == (3, 2, 2)
        folded = layer.s_in(np.abs(x).sum(axis=0))
        expected = ref.im2col_s_in(x, 3, 2, (3, 2), padding, (2, 1))
        np.testing.assert_allclose(folded, expected, rtol=1e-6)


@pytest.mark.parametrize("kind", ["float32", "dynamic", "int8", "float16"])
def test_both_runner_modes_give_the_same_map(kind):
    model = Model(build(kind))
    xs = random_inputs(5, SAMPLE, seed=1)
    a, b = record(model, xs, mode="instrument"), record(model, xs, mode="preserve")
    for i in range(len(a.layers)):
        np.testing.assert_array_equal(a.s_in(i), b.s_in(i))
        np.testing.assert_array_equal(a.s_out(i), b.s_out(i))


def test_merge_of_halves_equals_whole_and_save_load(tmp_path):
    model = Model(build("int8"))
    xs = random_inputs(10, SAMPLE, seed=2)
    whole = record(model, xs)
    first = record(model, xs[:4])
    first.save(tmp_path / "half.npz")
    merged = ActivationMap.load(tmp_path / "half.npz", model).merge(record(model, xs[4:]))
    resumed = record(model, xs[4:], amap=ActivationMap.load(tmp_path / "half.npz", model))
    assert merged.count == resumed.count == whole.count == 10
    for i in range(len(whole.layers)):
        np.testing.assert_allclose(merged.s_in(i), whole.s_in(i), rtol=1e-6)
        np.testing.assert_allclose(resumed.s_in(i), whole.s_in(i), rtol=1e-6)
        np.testing.assert_allclose(merged.s_out(i), whole.s_out(i), rtol=1e-6)


def test_map_of_another_model_is_refused(tmp_path):
    record(Model(build("float32")), random_inputs(2, SAMPLE)).save(tmp_path / "m.npz")
    other = Model(build("float32", "small_cnn"))
    with pytest.raises(EdgepruneError, match="different model"):
        ActivationMap.load(tmp_path / "m.npz", other)


def test_update_memory_does_not_grow_with_samples():
    model = Model(build("float32"))
    amap = ActivationMap(model)
    runner = Runner(model, amap.watched)
    values = [dict(runner.run(x)) for x in random_inputs(2, SAMPLE, seed=4)]
    amap.update(values[0])  # allocates the accumulators
    tracemalloc.start()
    try:
        amap.update(values[1])
        after_one = tracemalloc.get_traced_memory()[0]
        for _ in range(300):
            amap.update(values[1])
        after_many = tracemalloc.get_traced_memory()[0]
    finally:
        tracemalloc.stop()
    assert amap.count == 302
    assert after_many - after_one < 1024  # bytes: nothing is kept per sample


def test_a_batch_update_equals_one_update_per_sample():
    model = Model(build("int8"))
    runner = Runner(model, ActivationMap(model).watched)
    raw = []
    for x in random_inputs(2, SAMPLE, seed=6):
        raw.append({t: v.copy() for t, v in runner.run(x, raw=True).items()})
    one_by_one, batched = ActivationMap(model), ActivationMap(model)
    for stored in raw:
        one_by_one.update(stored)
    batched.update({t: np.concatenate([r[t] for r in raw]) for t in raw[0]}, samples=2)
    assert batched.count == one_by_one.count == 2
    for i in range(len(batched.layers)):
        np.testing.assert_allclose(batched.s_in(i), one_by_one.s_in(i), rtol=1e-6)
        np.testing.assert_allclose(batched.s_out(i), one_by_one.s_out(i), rtol=1e-6)


OLD_MAP = Path(__file__).parent / "fixtures" / "map_format1_int8_mixed.npz"


def test_a_map_saved_before_statistics_were_keyed_by_layer_still_loads(tmp_path):
    """The fixture was saved by the positional code (3 samples, seed 5): it loads onto the same
    layers, and saving it again writes the same keys and arrays."""
    model = Model(build("int8"))
    old = ActivationMap.load(OLD_MAP, model)
    fresh = record(model, random_inputs(3, SAMPLE, seed=5))
    assert old.count == 3 and [x.op for x in old.layers] == [x.op for x in fresh.layers]
    # The fixture was recorded on x86; an int8 kernel elsewhere (aarch64) may round a few outputs
    # a step apart. A map keyed onto the wrong layers differs almost everywhere, or in shape.
    for layer in fresh.layers:
        for was, now in (
            (old.s_in(layer), fresh.s_in(layer)),
            (old.s_out(layer), fresh.s_out(layer)),
        ):
            assert was.shape == now.shape
            same = np.isclose(was, now, rtol=1e-12, atol=0)
            assert same.mean() >= 0.75 and np.allclose(was, now, rtol=0.05), (was, now)
    old.save(tmp_path / "again.npz")
    with np.load(OLD_MAP) as before, np.load(tmp_path / "again.npz") as after:
        assert sorted(before.files) == sorted(after.files)
        assert json.loads(str(before["meta"])) == json.loads(str(after["meta"]))
        for key in before.files:
            np.testing.assert_array_equal(before[key], after[key])


def test_statistics_are_looked_up_by_layer_not_position():
    model = Model(build("float32"))
    amap = record(model, random_inputs(2, SAMPLE, seed=3))
    layers = amap.layers
    for i, layer in enumerate(layers):
        np.testing.assert_array_equal(amap.s_in(layer), amap.s_in(i))
        assert amap.s_in(layer).shape == layer.s_in_shape()
        assert amap.s_out(layer).shape == (layer.out_channels,)
    # A subset of the layers, in another order, still gets each layer's own statistics.
    subset = (layers[-1], layers[0])
    scores = prune.compute_scores(model, subset, amap, granularity="channel")
    np.testing.assert_array_equal(scores.values[0], amap.s_out(layers[-1]))
    np.testing.assert_array_equal(scores.values[1], amap.s_out(layers[0]))
    foreign = dataclasses.replace(layers[0], op=999)
    with pytest.raises(EdgepruneError, match="not in the activation map"):
        amap.s_in(foreign)


@pytest.mark.parametrize("kind", ["int8", "uint8"])
def test_quantized_sums_are_exact_integers(kind):
    """Integer accumulation (int16; q added directly where zero_point is the type's minimum)
    gives Σ|q − zp| · scale of the stored values to 1e-9 relative, across the map's folds (200
    samples, spilled every 128) and past the int16 capacity in one batched add (200 rows)."""
    model = Model(build(kind))
    amap = ActivationMap(model)
    runner = Runner(model, amap.watched)
    stored = {t: [] for t in amap.watched}
    for x in random_inputs(200, SAMPLE, seed=4):
        raw = runner.run(x, raw=True)
        amap.update(raw)
        for t in amap.watched:
            stored[t].append(raw[t].copy())
        del raw  # raw views pin the interpreter's memory until dropped
    sums = amap._sums
    assert {total.shift for total in sums.values()} == {True, False}  # both integer paths
    assert {total.partial.dtype for total in sums.values()} == {np.dtype(np.int16)}
    assert min(total.capacity for total in sums.values()) == 128  # so 200 rows spill
    expected = {}
    for t, total in sums.items():
        q = np.concatenate(stored[t]).astype(np.int64)
        expected[t] = np.abs(q - total.zero_point).sum(axis=0) * total.scale
        batched = total.fresh()
        batched.add(np.concatenate(stored[t]))
        np.testing.assert_allclose(batched.take(), expected[t], rtol=1e-9, atol=0)
    for i, layer in enumerate(amap.layers):
        s_in = np.zeros(layer.s_in_shape())
        layer.accumulate_s_in(expected[layer.input], s_in)
        np.testing.assert_allclose(amap.s_in(i), s_in, rtol=1e-9, atol=0)
        np.testing.assert_allclose(amap.s_out(i), layer.s_out(expected[layer.output]), rtol=1e-9)
        assert amap.s_out(i).sum() > 0


@pytest.mark.parametrize("kind", ["float32", "uint8"])
def test_overlapped_recording_gives_the_same_map(kind):
    """Sums on a second thread while the next sample runs: the same map as summing in line, and a
    recording stopped by its samples (a cancel) keeps every sample that ran."""
    model = Model(build(kind))
    xs = random_inputs(70, SAMPLE, seed=9)
    serial = record(model, xs, overlap=False)
    overlapped = record(model, xs, overlap=True)
    assert overlapped.count == serial.count == 70
    for i in range(len(serial.layers)):
        np.testing.assert_array_equal(overlapped.s_in(i), serial.s_in(i))
        np.testing.assert_array_equal(overlapped.s_out(i), serial.s_out(i))

    def stopped():
        yield from xs[:5]
        raise KeyboardInterrupt

    amap = ActivationMap(model)
    with pytest.raises(KeyboardInterrupt):
        record(model, stopped(), amap, overlap=True)
    expected = record(model, xs[:5], overlap=False)
    assert amap.count == 5
    np.testing.assert_array_equal(amap.s_in(0), expected.s_in(0))
