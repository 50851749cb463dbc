"""Classifier heads people have (a 1×1 CONV_2D + RESHAPE + SOFTMAX, float or int8), models
that are not classifiers, and models compiled for the Edge TPU: read, judged, or refused in one
line that says what to do."""

import json
import re

import numpy as np
import pytest

from edgeprune.classifier import Classifier, Head, NotAClassifier
from edgeprune.estimate import softmax
from edgeprune.model import Model
from edgeprune.personalize import personalize, probabilities
from edgeprune.reference import build as build_reference
from edgeprune.runtime import Runner
from tests.cli_run import run
from tests.models import INPUT_SHAPES, build, edgetpu_compiled, random_inputs, segmenter

SHAPE = INPUT_SHAPES["conv_head"][1:]


@pytest.mark.parametrize("kind", ["float32", "int8"])
def test_conv_head_is_read_and_rewritten_in_its_storage(kind):
    model = Model(build(kind, "conv_head"))
    head = Head.of(model)
    assert head.layer.opcode == "CONV_2D" and head.softmax and not head.spatial
    c = Classifier.of(model)
    assert c.weight.shape == (10, 16) and c.bias.shape == (10,)
    rng = np.random.default_rng(2)
    weight = c.weight[rng.permutation(10)] * rng.uniform(0.6, 1.4, (10, 1))
    bias = c.bias[rng.permutation(10)]
    rewritten = Model(c.rewrite(model, weight, bias).to_bytes())
    assert rewritten.tensor(c.layer.weight).shape == model.tensor(c.layer.weight).shape
    stored = Classifier.of(rewritten)
    q = rewritten.tensor(c.layer.weight).quantization
    step = q.scale.reshape(-1, 1) if q is not None else 1e-6
    assert np.all(np.abs(stored.weight - weight) <= 0.51 * step + 1e-6)
    # The rewritten model's class is the float computation's, through RESHAPE and SOFTMAX.
    runner = Runner(rewritten, [c.layer.input])
    out = rewritten.main.outputs[0]
    agree = []
    for x in random_inputs(100, SHAPE, seed=4):
        values = runner.run(x)
        logits = c.features(values[c.layer.input])[0] @ weight.T + bias
        top2 = np.sort(logits)[-2:]
        if top2[1] - top2[0] > 0.1:  # an int8 softmax cannot order closer logits
            agree.append(values[out].argmax() == logits.argmax())
    assert len(agree) >= 50 and all(agree)


def test_quantized_softmax_is_dequantized_not_softmaxed_again():
    x = random_inputs(60, SHAPE, seed=6)
    float_p = probabilities(Model(build("float32", "conv_head")), x)
    int8 = Model(build("int8", "conv_head"))
    p = probabilities(int8, x)
    raw = Runner(int8).run(x[0])[int8.main.outputs[0]].reshape(-1)
    assert softmax(raw).max() < 0.6 * p[0].max()  # what reading them as logits would give
    np.testing.assert_allclose(p.sum(axis=1), 1, atol=1e-9)
    # Read as probabilities, the int8 model's confidences are the float model's (to int8's
    # steps); softmaxed a second time they would all be near 1/10.
    assert np.abs(p.max(axis=1) - float_p.max(axis=1)).max() < 0.05
    assert p.max(axis=1).mean() > 0.2


@pytest.mark.parametrize("kind", ["float32", "int8"])
def test_conv_head_goes_through_the_judge(kind):
    model = Model(build(kind, "conv_head"))
    validation = random_inputs(300, SHAPE, seed=9)
    labels = probabilities(model, validation).argmax(axis=1)
    reference = build_reference(model, validation, labels)
    user = random_inputs(200, SHAPE, seed=5) + 0.5  # a user whose inputs moved
    out, report = personalize(model, list(user), reference=reference)
    stages = {s.name: s for s in report.stages}
    assert stages["prototypes"].check is not None  # judged by the label-free estimate
    rewrites = [s for s in report.stages[1:3] if s.applied]
    for s in report.stages[1:3]:
        if s.check is not None:
            assert s.applied == s.check["kept"]
    if not rewrites and not stages["prune"].applied:
        assert out.to_bytes() == model.to_bytes()  # refused everything: byte-identical


def test_not_a_classifier_gets_one_line_and_prune_still_works(tmp_path, capsys):
    model = Model(segmenter(build("float32")))
    with pytest.raises(NotAClassifier, match="INT64 from ARG_MAX.*--stages prune"):
        Classifier.of(model)
    x = random_inputs(40, INPUT_SHAPES["mixed"][1:], seed=3)
    path, data = tmp_path / "seg.tflite", tmp_path / "x.npy"
    path.write_bytes(model.to_bytes())
    np.save(data, x)
    code, out, err = run(capsys, "personalize", path, data, "-o", tmp_path / "o.tflite", "-q")
    assert code == 2 and "not a classifier" in err and "--stages prune" in err
    assert len(err.strip().splitlines()) == 1 and "Traceback" not in err
    out_path = tmp_path / "p.tflite"
    code, out, err = run(
        capsys, "personalize", path, data, "-o", out_path, "--stages", "prune", "--json", "-q"
    )
    assert code == 0, err
    report = json.loads(out)["report"]
    assert any("not a classifier" in n for n in report["notes"])
    pruned = Model(out_path.read_bytes())
    # Every check sample keeps its class ids at the chosen sparsity (the check it passed).
    ids = [Runner(m).run(s)[m.main.outputs[0]] for m in (model, pruned) for s in x[1::2][:5]]
    chosen = report["candidates"][report["chosen"]]
    assert chosen["admissible"] and chosen["agreement"] == 1.0
    assert all(np.array_equal(a, b) for a, b in zip(ids[:5], ids[5:]))


KEYPOINT_REASON = "FULLY_CONNECTED's 51 outputs are shaped 17×3: a grid of values (keypoints"


@pytest.mark.parametrize("kind", ["float32", "int8"])
def test_a_keypoint_regressor_ending_in_fully_connected_is_not_a_classifier(kind, tmp_path, capsys):
    """MoveNet-like: ... → FULLY_CONNECTED 51 → RESHAPE [1, 17, 3]. The final layer is a linear
    one as a classifier's, but its outputs are a grid of (y, x, score) values: the classifier
    stages are refused with that reason in one line, and `--stages prune` still runs."""
    model = Model(build(kind, "keypoints"))
    assert model.tensor(model.main.outputs[0]).shape == (1, 17, 3)
    with pytest.raises(NotAClassifier, match=re.escape(KEYPOINT_REASON)):
        Head.of(model)
    path, data = tmp_path / "kp.tflite", tmp_path / "x.npy"
    path.write_bytes(model.to_bytes())
    np.save(data, random_inputs(40, INPUT_SHAPES["keypoints"][1:], seed=3))
    code, out, err = run(capsys, "personalize", path, data, "-o", tmp_path / "o.tflite", "-q")
    assert code == 2 and out == "" and err.count("\n") == 1 and KEYPOINT_REASON in err
    assert "--stages prune" in err and not (tmp_path / "o.tflite").exists()

    out_path = tmp_path / "p.tflite"
    argv = ("personalize", path, data, "-o", out_path, "--stages", "prune", "--json", "-q")
    code, out, err = run(capsys, *argv)
    assert code == 0, err
    report = json.loads(out)["report"]
    assert [s["name"] for s in report["stages"]] == ["source", "prune"]
    assert any(KEYPOINT_REASON in n for n in report["notes"])
    assert len(report["candidates"]) > 1 and report["candidates"][0]["agreement"] == 1.0
    written = Model(out_path.read_bytes())
    outputs = Runner(written).run(random_inputs(1, INPUT_SHAPES["keypoints"][1:])[0])
    assert outputs[written.main.outputs[0]].shape == (1, 17, 3)
    # and pruning at a sparsity asked for applies to it as to any model
    argv = ("prune", path, "--sparsity", "0.5", "--score", "magnitude", "-o", tmp_path / "h")
    code, out, err = run(capsys, *argv, "--json")
    assert code == 0 and json.loads(out)["measured_sparsity"] > 0.4, err


@pytest.mark.parametrize("shape", [(1, 1, 17, 3), (1, 17, 1, 3)])
def test_a_grid_of_outputs_in_any_layout_is_not_a_class_score_vector(shape):
    from tests.models import _model_t, _pack

    schema, m = _model_t(build("float32", "keypoints"))
    g = m.subgraphs[0]
    g.tensors[g.outputs[0]].shape = list(shape)
    with pytest.raises(NotAClassifier, match=re.escape(KEYPOINT_REASON)):
        Head.of(Model(_pack(m)))


def test_one_value_per_sample_is_a_regression_not_class_scores(tmp_path, capsys):
    """The `mixed` model with its final FULLY_CONNECTED cut to one output: a regressor (age, a
    score) that runs, and that a softmax over one value would call certain of every sample."""
    from tests.models import _model_t, _pack

    schema, m = _model_t(build("float32"))
    g = m.subgraphs[0]
    fc = g.operators[-1]
    _, weight, bias = (g.tensors[i] for i in fc.inputs)
    for t, keep in ((weight, weight.shape[1]), (bias, 1)):
        t.shape = [1, *t.shape[1:]]
        m.buffers[t.buffer].data = m.buffers[t.buffer].data[: 4 * keep]  # the first row, float32
    g.tensors[fc.outputs[0]].shape = [1, 1]
    path, data = tmp_path / "age.tflite", tmp_path / "x.npy"
    path.write_bytes(_pack(m))
    np.save(data, random_inputs(20, INPUT_SHAPES["mixed"][1:], seed=3))
    assert Runner(Model(path.read_bytes())).run(np.load(data)[0]).popitem()[1].shape == (1, 1)
    code, out, err = run(capsys, "personalize", path, data, "-o", tmp_path / "o.tflite", "-q")
    assert code == 2 and err.count("\n") == 1 and "one output value per sample" in err


@pytest.fixture
def edgetpu_model(tmp_path):
    path = tmp_path / "model_edgetpu.tflite"
    path.write_bytes(edgetpu_compiled(build("int8")))
    data = tmp_path / "x.npy"
    np.save(data, random_inputs(4, INPUT_SHAPES["mixed"][1:], seed=1))
    return path, data


def test_edgetpu_model_prune_refused_in_one_line(edgetpu_model, tmp_path, capsys):
    path, _ = edgetpu_model
    out_path = tmp_path / "p.tflite"
    code, out, err = run(capsys, "prune", path, "--sparsity", "0.5", "--score", "magnitude",
                         "-o", out_path)  # fmt: skip
    assert code == 2 and not out_path.exists()
    assert "compiled for the Edge TPU" in err and "then compile" in err
    assert len(err.strip().splitlines()) == 1


def test_edgetpu_model_profile_inspect_bench_record_say_so(edgetpu_model, tmp_path, capsys):
    path, data = edgetpu_model
    code, out, _ = run(capsys, "profile", path)
    assert code == 0 and "note: compiled for the Edge TPU" in out and "not counted" in out
    code, out, _ = run(capsys, "inspect", path)
    assert code == 0 and "note: compiled for the Edge TPU" in out
    for argv in (("bench", path, "--runs", "1"), ("record", path, data, "-o", tmp_path / "m")):
        code, out, err = run(capsys, *argv)
        assert code == 2 and "compiled for the Edge TPU" in err, err
        assert "unresolved custom op" not in err and len(err.strip().splitlines()) == 1


def test_prune_reports_a_shortfall_as_a_warning(tmp_path, capsys):
    path = tmp_path / "m.tflite"
    path.write_bytes(build("float32", "conv_head"))
    code, out, _ = run(capsys, "prune", path, "--sparsity", "0.9", "--score", "magnitude",
                       "--keep-classifier", "-o", tmp_path / "p.tflite", "--json")  # fmt: skip
    result = json.loads(out)
    assert code == 0 and result["measured_sparsity"] < 0.8
    assert "final layer" in result["note"]
    code, out, _ = run(capsys, "prune", path, "--sparsity", "0.9", "--score", "magnitude",
                       "--keep-classifier", "-o", tmp_path / "p.tflite")  # fmt: skip
    assert out.startswith("warning: only")


@pytest.mark.tensorflow
def test_inspect_notes_lstm_weights(tmp_path, capsys):
    from tests.models import import_tensorflow

    tf = import_tensorflow()
    keras = tf.keras.Sequential(
        [tf.keras.Input((8, 4), batch_size=1), tf.keras.layers.LSTM(6), tf.keras.layers.Dense(3)]
    )
    converter = tf.lite.TFLiteConverter.from_keras_model(keras)
    path = tmp_path / "lstm.tflite"
    path.write_bytes(converter.convert())
    capsys.readouterr()  # the converter's own messages
    code, out, _ = run(capsys, "inspect", path, "--json")
    info = json.loads(out)
    notes = [n for n in info["notes"] if "cannot see" in n]
    # Keras 3's LSTM converts to a WHILE loop whose body holds the kernels (6·4·(4+6)).
    assert code == 0 and notes and "subgraph" in notes[0], info["notes"]
    unseen = sum(int(part.split(" in ")[0].replace(",", "")) for part in notes[0].split(": ")[1]
                 .split(", "))  # fmt: skip
    assert unseen >= 4 * 6 * (4 + 6)


def test_personalize_prune_shortfall_is_a_warning(capsys, tmp_path):
    model = tmp_path / "m.tflite"
    model.write_bytes(build("float32", "conv_head"))
    data = tmp_path / "x.npy"
    np.save(data, random_inputs(200, SHAPE, seed=12))  # one class for all: pruning passes
    code, out, err = run(capsys, "personalize", model, data, "-o", tmp_path / "p.tflite",
                         "--stages", "prune", "-q")  # fmt: skip
    assert code == 0, err
    line = next(x for x in out.splitlines() if x.strip().startswith("prune: kept"))
    assert "warning: only" in line and "the final layer (CONV_2D) was kept whole" in line


@pytest.mark.tensorflow
def test_conv_head_on_a_map_then_mean_is_read_as_its_spatial_mean(tmp_path):
    """A 1×1 conv on a 4×4 map, then a global average (MEAN), then SOFTMAX: the logits are the
    conv of the mean feature, so the features are the spatial mean of the conv's input."""
    from edgeprune.host.convert import convert, from_keras
    from tests.models import import_tensorflow

    tf = import_tensorflow()
    layers = tf.keras.layers
    keras = tf.keras.Sequential(
        [
            tf.keras.Input(SHAPE, batch_size=1),
            layers.Conv2D(8, 3, strides=4, padding="same", activation="relu"),
            layers.Conv2D(10, 1),
            layers.GlobalAveragePooling2D(),
            layers.Softmax(),
        ]
    )
    source = from_keras(keras, "spatial_head")
    try:
        model = Model(convert(source, "float32", None))
    finally:
        source.close()
    head = Head.of(model)
    assert head.spatial and head.softmax
    c = Classifier.of(model)
    runner = Runner(model, [c.layer.input])
    out = model.main.outputs[0]
    for x in random_inputs(5, SHAPE, seed=1):
        values = runner.run(x)
        logits = c.logits(c.features(values[c.layer.input]))[0]
        np.testing.assert_allclose(softmax(logits), values[out].reshape(-1), atol=1e-5)
