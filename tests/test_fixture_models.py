"""The test models have the properties other tests rely on (read through the interpreter only)."""

import numpy as np
import pytest

from tests.models import INPUT_SHAPES, build, random_inputs

PRUNABLE = ("CONV_2D", "DEPTHWISE_CONV_2D", "FULLY_CONNECTED")


def inspect(kind, arch="mixed"):
    """(interpreter, ops, tensors): the model's own ops (no DELEGATE nodes) and tensor details."""
    from ai_edge_litert.interpreter import Interpreter

    interpreter = Interpreter(model_content=build(kind, arch))
    interpreter.allocate_tensors()
    ops = [op for op in interpreter._get_ops_details() if op["op_name"] != "DELEGATE"]
    tensors = {t["index"]: t for t in interpreter.get_tensor_details()}
    return interpreter, ops, tensors


def weights(ops, tensors):
    """{op name and index: detail of its weight tensor} for the prunable ops."""
    return {
        f"{op['op_name']}#{op['index']}": tensors[op["inputs"][1]]
        for op in ops
        if op["op_name"] in PRUNABLE
    }


@pytest.mark.parametrize("kind", ["float32", "dynamic", "int8", "float16", "uint8"])
def test_every_kind_runs_and_agrees_with_float32(kind):
    x = random_inputs(1, INPUT_SHAPES["mixed"], seed=21)[0]
    outputs = {}
    for k in ("float32", kind):
        interpreter, _, _ = inspect(k)
        (inp,), (out,) = interpreter.get_input_details(), interpreter.get_output_details()
        feed = x
        if inp["dtype"] != np.float32:
            scale, zero = inp["quantization"]
            info = np.iinfo(inp["dtype"])
            feed = np.clip(np.round(x / scale + zero), info.min, info.max).astype(inp["dtype"])
        interpreter.set_tensor(inp["index"], feed)
        interpreter.invoke()
        y = interpreter.get_tensor(out["index"]).astype(np.float64)
        if out["dtype"] != np.float32:
            scale, zero = out["quantization"]
            y = (y - zero) * scale
        outputs[k] = y
    assert outputs[kind].shape == (1, 10)
    np.testing.assert_allclose(outputs[kind], outputs["float32"], atol=0.25)


def test_biases_are_present_and_nonzero(tflite_model):
    from ai_edge_litert.interpreter import Interpreter

    path = tflite_model("float32")
    assert path == tflite_model("float32") and path.read_bytes() == build("float32")
    interpreter = Interpreter(model_path=str(path))
    interpreter.allocate_tensors()
    for op in interpreter._get_ops_details():
        if op["op_name"] in PRUNABLE:
            assert np.all(interpreter.get_tensor(op["inputs"][2]) != 0)


def test_float16_weights_feed_dequantize_ops():
    _, ops, tensors = inspect("float16")
    producer = {out: op for op in ops for out in op["outputs"]}
    for op in ops:
        if op["op_name"] in PRUNABLE:
            for i in op["inputs"][1:]:  # weight and bias
                dequantize = producer[i]
                assert dequantize["op_name"] == "DEQUANTIZE"
                assert tensors[dequantize["inputs"][0]]["dtype"] == np.float16


def test_int8_weights_are_per_channel_symmetric():
    _, ops, tensors = inspect("int8")
    for name, w in weights(ops, tensors).items():
        q = w["quantization_parameters"]
        axis = 3 if name.startswith("DEPTHWISE") else 0
        assert w["dtype"] == np.int8
        assert q["quantized_dimension"] == axis
        assert q["scales"].size == w["shape"][axis] > 1
        assert np.all(q["zero_points"] == 0)


@pytest.mark.parametrize("arch, float_weights", [("mixed", 5), ("mixed_wide", 0)])
def test_dynamic_quantizes_weights_of_1024_elements_or_more(arch, float_weights):
    _, ops, tensors = inspect("dynamic", arch)
    ws = weights(ops, tensors).values()
    assert sum(w["dtype"] == np.float32 for w in ws) == float_weights
    for w in ws:
        assert (w["dtype"] == np.int8) == (np.prod(w["shape"]) >= 1024)


def test_uint8_weights_are_asymmetric_per_tensor():
    _, ops, tensors = inspect("uint8")
    for w in weights(ops, tensors).values():
        q = w["quantization_parameters"]
        assert w["dtype"] == np.uint8
        assert q["scales"].size == 1
        assert q["zero_points"][0] != 0
