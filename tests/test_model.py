"""edgeprune.model: parsing real converted models, weight views, atomic save, external buffers."""

import numpy as np
import pytest

from edgeprune.errors import ModelError, UnsupportedError
from edgeprune.model import (
    NO_OPTIONS,
    Conv2DOptions,
    DepthwiseConv2DOptions,
    FullyConnectedOptions,
    Model,
    Quantization,
    dequantize,
)
from edgeprune.runtime import Runner
from tests.models import INPUT_SHAPES, build, random_inputs

KINDS = ("float32", "dynamic", "int8", "float16", "uint8")


def interpreter_tensors(data: bytes):
    from ai_edge_litert.interpreter import Interpreter

    interp = Interpreter(model_content=data)
    return {d["index"]: d for d in interp.get_tensor_details()}, interp


@pytest.mark.parametrize("kind", KINDS)
def test_tensors_match_the_interpreter(kind):
    data = build(kind)
    model = Model(data)
    details, interp = interpreter_tensors(data)
    assert len(model.tensors) == len(details)
    for t in model.tensors:
        d = details[t.index]
        assert t.name == d["name"]
        assert t.shape == tuple(d["shape"])
        if t.dtype is not None:
            assert t.dtype == np.dtype(d["dtype"])
        qp = d["quantization_parameters"]
        if t.quantization is None:
            assert qp["scales"].size == 0
        else:
            np.testing.assert_array_equal(t.quantization.scale, qp["scales"])
            np.testing.assert_array_equal(t.quantization.zero_point, qp["zero_points"])
            assert t.quantization.axis == qp["quantized_dimension"]
    # Constant data read through our views equals the interpreter's copy.
    constants = [t for t in model.tensors if model.is_constant(t) and t.dtype is not None]
    assert constants
    interp.allocate_tensors()
    for t in constants:
        np.testing.assert_array_equal(model.tensor_data(t), interp.get_tensor(t.index))


def test_operators_and_options():
    model = Model(build("float32"))
    ops = [op.opcode for op in model.operators]
    assert ops[:3] == ["CONV_2D", "CONV_2D", "DEPTHWISE_CONV_2D"]
    first, second, depthwise = model.operators[:3]
    assert isinstance(first.options, Conv2DOptions)
    assert (first.options.stride_h, first.options.padding) == (2, 0)
    assert second.options.dilation_h_factor == 2 and second.options.padding == 1
    assert isinstance(depthwise.options, DepthwiseConv2DOptions)
    assert depthwise.options.depth_multiplier == 2
    dense = [op for op in model.operators if op.opcode == "FULLY_CONNECTED"]
    assert all(isinstance(op.options, FullyConnectedOptions) for op in dense)
    assert model.operators[4].opcode == "RESHAPE" and model.operators[4].options is NO_OPTIONS
    # Scripts that read options by name keep working.
    assert first.options["stride_h"] == first.options.get("stride_h") == 2
    assert first.options.get("depth_multiplier", 7) == 7
    with pytest.raises(KeyError):
        first.options["depth_multiplier"]
    assert len(model.main.inputs) == 1 and len(model.main.outputs) == 1


def test_set_scales_rewrites_the_scales_the_reader_found():
    model = Model(build("int8"))
    t = next(t for t in model.tensors if t.quantization and t.quantization.scale.size > 1)
    wider = t.quantization.scale.astype(np.float64) * 2
    model.set_scales(t, wider)
    np.testing.assert_array_equal(model.tensor(t.index).quantization.scale, wider.astype("<f4"))
    reread = Model(model.to_bytes()).tensor(t.index).quantization
    np.testing.assert_array_equal(reread.scale, wider.astype("<f4"))
    np.testing.assert_array_equal(reread.zero_point, t.quantization.zero_point)
    with pytest.raises(UnsupportedError):
        model.set_scales(t, wider[:1])


def test_one_dequantize():
    q = Quantization(np.array([0.5, 2.0], np.float32), np.array([1, -3]), axis=1)
    stored = np.array([[1, -3], [3, 0]], np.int8)
    np.testing.assert_array_equal(dequantize(stored, q), [[0.0, 0.0], [1.0, 6.0]])
    assert dequantize(np.float32([1.5]), None).dtype == np.float64
    model = Model(build("uint8"))
    w = next(t for t in model.tensors if model.is_constant(t) and t.type_name == "UINT8")
    values = model.dequantized(w)
    np.testing.assert_array_equal(values, model.real(w, model.tensor_data(w)))
    assert model.nonzero(w) == np.count_nonzero(values)


def test_weight_view_is_writable_and_saved_atomically(tmp_path):
    model = Model(build("float32"))
    weight = model.operators[0].inputs[1]
    view = model.tensor_data(weight)
    original = view.copy()
    view[...] = 0.5
    path = tmp_path / "m.tflite"
    model.save(path)
    assert [p.name for p in tmp_path.iterdir()] == ["m.tflite"]  # no temp file left behind
    reloaded = Model.load(path)
    assert np.all(reloaded.tensor_data(weight) == 0.5)
    assert not np.array_equal(original, reloaded.tensor_data(weight))
    # The copy is independent of the original bytes.
    clone = reloaded.copy()
    clone.tensor_data(weight)[...] = 0
    assert np.all(reloaded.tensor_data(weight) == 0.5)


def test_non_constant_tensor_has_no_data():
    model = Model(build("float32"))
    with pytest.raises(UnsupportedError, match="not a constant"):
        model.tensor_data(model.main.inputs[0])


def test_load_errors_are_clear(tmp_path):
    with pytest.raises(ModelError, match="cannot read model"):
        Model.load(tmp_path / "missing.tflite")
    with pytest.raises(ModelError, match="not a .tflite"):
        Model(b"PK\x03\x04 this is a zip")


def _externalize_buffers(data: bytes) -> bytes:
    """Rewrite a model so every non-empty buffer lives after the flatbuffer (Buffer.offset/size),
    the layout the converter uses for models over 2 GB."""
    import flatbuffers
    from ai_edge_litert import schema_py_generated as schema

    def pack(m):
        builder = flatbuffers.Builder(1024)
        builder.Finish(m.Pack(builder), file_identifier=b"TFL3")
        return bytes(builder.Output())

    m = schema.ModelT.InitFromPackedBuf(data, 0)
    payloads = {}
    for i, buf in enumerate(m.buffers):
        if buf.data is not None and len(buf.data):
            payloads[i] = bytes(np.asarray(buf.data, np.uint8))
            buf.data, buf.offset, buf.size = None, 1 << 40, len(payloads[i])
    head = len(pack(m))  # the placeholder offsets are written, so the size will not change
    cursor, tail = head + (-head % 16), b""
    for i, payload in payloads.items():
        m.buffers[i].offset = cursor
        tail += bytes(cursor - head - len(tail)) + payload
        cursor = head + len(tail) + (-(head + len(tail)) % 16)
    packed = pack(m)
    assert len(packed) == head
    return packed + tail


@pytest.mark.parametrize("kind", ["float32", "int8"])
def test_buffers_stored_after_the_flatbuffer(kind):
    data = build(kind)
    external = _externalize_buffers(data)
    a, b = Model(data), Model(external)
    constants = [t for t in a.tensors if a.is_constant(t) and t.dtype is not None]
    for t in constants:
        np.testing.assert_array_equal(a.tensor_data(t), b.tensor_data(t))
    # The interpreter reads the same external layout and computes the same outputs.
    x = random_inputs(1, INPUT_SHAPES["mixed"][1:], seed=3)[0]
    out = a.main.outputs[0]
    np.testing.assert_array_equal(Runner(a).run(x)[out], Runner(b).run(x)[out])
    # A view into an external buffer is written back where the interpreter reads it.
    w = b.operators[-1].inputs[1]
    b.tensor_data(w)[...] = 0
    assert not np.any(Model(b.to_bytes()).tensor_data(w))


def test_instrumented_copy_exposes_watched_tensors():
    model = Model(build("float32"))
    hidden = [model.operators[0].outputs[0], model.operators[2].outputs[0]]
    inst = model.with_outputs(hidden)
    assert inst.main.outputs == (*model.main.outputs, *hidden)
    assert inst.tensors == model.tensors and model.main.outputs != inst.main.outputs
    x = random_inputs(1, INPUT_SHAPES["mixed"][1:], seed=1)[0]
    plain = Runner(model, hidden, mode="preserve").run(x)
    instrumented = Runner(model, hidden, mode="instrument").run(x)
    for t in plain:
        np.testing.assert_array_equal(plain[t], instrumented[t])


def test_a_copy_that_outputs_only_watched_tensors_stops_after_the_last_op_they_need():
    model = Model(build("float32"))
    hidden = [model.operators[2].outputs[0], model.operators[0].outputs[0]]
    prefix = model.with_outputs(hidden, only=True)
    assert prefix.main.outputs == tuple(hidden) and len(prefix.operators) == 3
    assert model.with_outputs(hidden).operators == model.operators  # the plain copy runs all
    x = random_inputs(1, INPUT_SHAPES["mixed"][1:], seed=1)[0]
    full = Runner(model, hidden).run(x)
    early = Runner(model, hidden, only_watch=True).run(x)
    assert set(early) == set(hidden)  # not the model's own outputs, which it no longer computes
    for t in hidden:
        np.testing.assert_array_equal(full[t], early[t])
