"""`edgeprune convert`: Keras files and SavedModels to .tflite in every mode, each checked
against its source on the same samples; the check itself catches a wrong model."""

import json

import numpy as np
import pytest

from edgeprune.cli import main
from edgeprune.host.convert import compare_outputs, convert, from_keras, load_source
from edgeprune.model import Model
from tests.models import _keras_model, import_tensorflow

pytestmark = pytest.mark.tensorflow


@pytest.fixture(scope="module")
def sources(tmp_path_factory):
    """The `mixed` Keras network saved as .keras, .h5 and a SavedModel; calibration .npy."""
    import_tensorflow()  # quietly, before Keras loads
    d = tmp_path_factory.mktemp("sources")
    model = _keras_model("mixed")
    model.save(d / "mixed.keras")
    model.save(d / "mixed.h5")
    model.export(str(d / "saved"), verbose=False)
    rng = np.random.default_rng(0)
    np.save(d / "calibration.npy", rng.standard_normal((24, 16, 16, 3)).astype(np.float32))
    return d


@pytest.mark.parametrize(
    "mode, tolerance",
    [("float32", 1e-4), ("float16", 5e-2), ("dynamic", 0.5), ("int8", 0.5)],
)
def test_modes_match_their_source(sources, mode, tolerance):
    source = load_source(sources / "mixed.keras")
    try:
        samples = np.load(sources / "calibration.npy")
        data = convert(source, mode, samples if mode == "int8" else None)
        outputs = compare_outputs(data, source, samples[:8])
    finally:
        source.close()
    (diff,) = outputs.values()
    assert diff["samples"] == 8 and diff["max_abs_diff"] <= tolerance
    assert diff["mean_abs_diff"] <= diff["max_abs_diff"]
    model = Model(data)
    types = {model.tensor(i).type_name for i in (*model.main.inputs, *model.main.outputs)}
    weights = {
        model.tensor(op.inputs[1]).type_name for op in model.operators if op.opcode == "CONV_2D"
    }
    expected = {"float32": "FLOAT32", "float16": "FLOAT32", "dynamic": "FLOAT32", "int8": "INT8"}
    assert types == {"INT8" if mode == "int8" else "FLOAT32"}
    if mode == "float32":
        assert diff["max_abs_diff"] < 1e-4 and weights == {expected[mode]}
    if mode == "int8":
        assert weights == {"INT8"} and diff["max_abs_diff"] > 0  # quantization shows


def test_check_catches_a_different_model(sources):
    """Compare a converted model against another network: the difference is large."""
    tf = import_tensorflow()
    source = load_source(sources / "mixed.keras")
    wrong = from_keras(tf.keras.models.clone_model(_keras_model("mixed")), "fresh weights")
    try:
        samples = np.load(sources / "calibration.npy")[:4]
        (diff,) = compare_outputs(convert(wrong, "float32"), source, samples).values()
    finally:
        source.close()
        wrong.close()
    assert diff["max_abs_diff"] > 0.1


def test_h5_and_savedmodel_sources(sources):
    for path in (sources / "mixed.h5", sources / "saved"):
        source = load_source(path)
        try:
            assert source.input_shape == (1, 16, 16, 3)
            data = convert(source, "float32")
            (diff,) = compare_outputs(
                data, source, np.load(sources / "calibration.npy")[:4]
            ).values()
        finally:
            source.close()
        assert diff["max_abs_diff"] < 1e-4, path


def test_cli(sources, tmp_path, capsys):
    out = tmp_path / "m.tflite"
    argv = ["convert", str(sources / "mixed.keras"), "-o", str(out), "-q"]
    assert main([*argv, "--mode", "int8"]) == 2
    assert "--data" in capsys.readouterr().err and not out.exists()
    data = str(sources / "calibration.npy")
    assert main([*argv, "--mode", "int8", "--data", data, "--float-io", "--json"]) == 0
    report = json.loads(capsys.readouterr().out)
    assert report["checked_on"] == data and report["outputs"]["output_0"]["samples"] == 24
    model = Model.load(out)
    assert model.tensor(model.main.inputs[0]).type_name == "FLOAT32"
    assert main([*argv, "--mode", "dynamic"]) == 0
    text = capsys.readouterr().out
    assert "max |tflite - source|" in text and "random normal" in text
    assert main(["convert", str(tmp_path / "nope.keras"), "-o", str(out)]) == 2
    assert "no such file" in capsys.readouterr().err
