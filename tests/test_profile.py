"""Static profile: MACs by hand-derived formulas, effective MACs and non-zero params of pruned
models, the memory plan against TFLite's own arena, unknown ops, dynamic shapes, the CLI."""

import contextlib
import gzip
import io
import json

import numpy as np
import pytest

from edgeprune import prune
from edgeprune.cli import main
from edgeprune.errors import UnsupportedError
from edgeprune.layers import scan
from edgeprune.model import Model
from edgeprune.profile import plan_memory, profile, tensor_shapes
from tests.models import build, import_tensorflow

# The `mixed` network (tests/models.py), MACs per op from the Keras layers' geometry:
# conv 3x3x3->8 at 8x8 out; conv 3x3x8->8 (dilation 2, VALID) at 4x4; depthwise 3x3, 8x2 channels
# at 4x4; 1x1 conv 16->8 at 4x4; reshape; dense 128->16; dense 16->10.
MIXED_MACS = [8 * 8 * 8 * 27, 4 * 4 * 8 * 72, 4 * 4 * 16 * 9, 4 * 4 * 8 * 16, 0, 128 * 16, 16 * 10]
MIXED_PARAMS = 8 * 27 + 8 + 8 * 72 + 8 + 16 * 9 + 16 + 16 * 8 + 8 + 128 * 16 + 16 + 16 * 10 + 10


def convert(fn, signature, **options) -> bytes:
    """A tf.function converted to .tflite (float32)."""
    tf = import_tensorflow()
    concrete = tf.function(fn, input_signature=[tf.TensorSpec(signature, tf.float32)])
    converter = tf.lite.TFLiteConverter.from_concrete_functions([concrete.get_concrete_function()])
    return bytes(converter.convert())


@pytest.mark.parametrize("kind", ["float32", "int8", "float16", "dynamic", "uint8"])
def test_macs_and_params_match_the_architecture(kind):
    info = profile(Model(build(kind, "mixed")))
    layers = [r for r in info["ops"] if r["opcode"] not in ("DEQUANTIZE", "QUANTIZE")]
    assert [r["macs"] for r in layers] == MIXED_MACS
    assert info["totals"]["macs"] == sum(MIXED_MACS) == 29600
    # fp16 weights feed DEQUANTIZE ops: counted once, at the layer that uses them.
    assert info["totals"]["params"] == MIXED_PARAMS
    assert not info["not_profiled"]


@pytest.mark.parametrize("kind", ["float32", "uint8", "int8"])
def test_effective_macs_and_nonzero_params_of_a_pruned_model(kind):
    model = Model(build(kind, "mixed"))
    layers = scan(model).layers
    pruned = prune.apply(model, prune.masks(model, layers, None, 0.6, score="magnitude"))
    info = profile(pruned)
    rows = {r["op"]: r for r in info["ops"]}
    expected_total = 0
    for layer in layers:
        w = pruned.dequantized(layer.weight)  # zero points taken into account (uint8)
        kept = int(np.count_nonzero(w))
        # Each weight is applied at every output position of its channel.
        positions = rows[layer.op]["macs"] // w.size
        assert rows[layer.op]["effective_macs"] == kept * positions
        expected_total += kept * positions
        assert kept < 0.5 * w.size
    assert info["totals"]["effective_macs"] == expected_total
    assert info["totals"]["macs"] == sum(MIXED_MACS)
    nonzero = 0
    for t in {model.tensor(i).buffer: i for i in _parameters(pruned)}.values():
        nonzero += int(np.count_nonzero(pruned.dequantized(t)))
    assert info["totals"]["nonzero_params"] == nonzero
    assert info["totals"]["sparsity"] > 0.5


def _parameters(model):
    return [
        t.index
        for t in model.tensors
        if model.is_constant(t)
        and t.dtype is not None
        and (t.dtype.kind == "f" or t.quantization is not None)
    ]


def test_gzip_size_shows_sparsity():
    model = Model(build("float32", "small_cnn"))
    pruned = prune.apply(model, prune.masks(model, scan(model).layers, None, 0.9, "magnitude"))
    dense, sparse = profile(model)["totals"], profile(pruned)["totals"]
    assert dense["gzip_bytes"] == len(gzip.compress(model.to_bytes(), 9, mtime=0))
    assert sparse["file_bytes"] == dense["file_bytes"]
    assert sparse["gzip_bytes"] < 0.4 * dense["gzip_bytes"]


def _residual_mlp() -> bytes:
    """Dense layers, a residual ADD, reshapes and a softmax, as Keras exports them."""
    tf = import_tensorflow()
    tf.keras.backend.clear_session()
    layers = tf.keras.layers
    x = tf.keras.Input((100,), batch_size=1)
    a = layers.Dense(64, activation="relu")(x)
    b = layers.Dense(64, activation="relu")(a)
    c = layers.Dense(48)(layers.Add()([a, b]))
    y = layers.Dense(10, activation="softmax")(layers.Flatten()(layers.Reshape((6, 8))(c)))
    with contextlib.redirect_stdout(io.StringIO()):
        return bytes(tf.lite.TFLiteConverter.from_keras_model(tf.keras.Model(x, y)).convert())


@pytest.mark.tensorflow
def test_memory_plan_places_tensors_where_tflite_does():
    """Without kernel scratch buffers (no convolutions), our plan is TFLite's arena, tensor by
    tensor: the interpreter's tensor addresses are read back through numpy views."""
    from ai_edge_litert.interpreter import Interpreter, OpResolverType

    data = _residual_mlp()
    model = Model(data)
    assert {"ADD", "RESHAPE", "SOFTMAX"} <= {op.opcode for op in model.operators}
    shapes, _ = tensor_shapes(model)
    plan = plan_memory(model, shapes)
    ours = {t: a.offset for a in plan.allocations for t in a.tensors}
    interpreter = Interpreter(
        model_content=data,
        experimental_op_resolver_type=OpResolverType.BUILTIN_WITHOUT_DEFAULT_DELEGATES,
    )
    interpreter.allocate_tensors()
    address = {t: interpreter.tensor(t)().ctypes.data for t in ours}
    base = min(address.values())
    assert {t: a - base for t, a in address.items()} == ours
    ends = [address[t] - base + model.tensor(t).size * 4 for t in ours]
    assert plan.arena_bytes == max(ends)
    # In-place ops really share: ADD writes into its reshaped input's buffer.
    add = next(op for op in model.operators if op.opcode == "ADD")
    assert ours[add.outputs[0]] in (ours[add.inputs[0]], ours[add.inputs[1]])
    assert plan.peak_live_bytes <= plan.arena_bytes


@pytest.mark.parametrize("arch", ["mixed", "small_cnn"])
def test_memory_plan_never_overlaps_live_tensors(arch):
    model = Model(build("float32", arch))
    plan = plan_memory(model, [t.shape for t in model.tensors])
    allocs = [a for a in plan.allocations if a.size]
    for i, a in enumerate(allocs):
        assert a.offset % 64 == 0 and a.offset + a.size <= plan.arena_bytes
        for b in allocs[i + 1 :]:
            if a.first <= b.last and b.first <= a.last:
                assert a.offset + a.size <= b.offset or b.offset + b.size <= a.offset
    # small_cnn: the graph input lives throughout (TFLite never overwrites it); the peak is the
    # second conv, reading the first conv's 32x32x16 output and writing 16x16x16.
    if arch == "small_cnn":
        assert plan.peak_op == 1
        assert plan.peak_live_bytes == (32 * 32 * 3 + 32 * 32 * 16 + 16 * 16 * 16) * 4
        assert plan.arena_bytes >= plan.peak_live_bytes


@pytest.mark.tensorflow
def test_unknown_op_is_named_not_zero():
    tf = import_tensorflow()
    data = convert(lambda x: tf.image.resize(x, (8, 8)) * 2.0, (1, 4, 4, 3))
    info = profile(Model(data))
    assert [r["opcode"] for r in info["not_profiled"]] == ["RESIZE_BILINEAR"]
    row = next(r for r in info["ops"] if r["opcode"] == "RESIZE_BILINEAR")
    assert row["macs"] is None and row["effective_macs"] is None
    assert info["totals"]["macs"] == 8 * 8 * 3  # the MUL only


@pytest.mark.tensorflow
def test_dynamic_shapes_need_an_input_shape(tmp_path, capsys):
    tf = import_tensorflow()
    kernel = tf.constant(np.ones((3, 3, 3, 4)), tf.float32)
    data = convert(lambda x: tf.nn.conv2d(x, kernel, 1, "SAME"), (1, None, None, 3))
    model = Model(data)
    with pytest.raises(UnsupportedError, match="--input-shape"):
        profile(model)
    info = profile(model, (1, 10, 12, 3))
    assert info["totals"]["macs"] == 10 * 12 * 4 * 27
    assert info["inputs"][0]["shape"] == [1, 10, 12, 3]
    path = tmp_path / "dyn.tflite"
    path.write_bytes(data)
    assert main(["profile", str(path)]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "--input-shape 1,1,1,3" in err
    assert main(["profile", str(path), "--input-shape", "1,5,5,4"]) == 2
    assert "does not fit" in capsys.readouterr().err

    dense = tf.constant(np.ones((8, 5)), tf.float32)
    batch_only = profile(Model(convert(lambda x: x @ dense, (None, 8))))
    assert batch_only["totals"]["macs"] == 40 and "batch 1" in batch_only["shapes"]


@pytest.mark.host("matplotlib")
def test_cli_profile_and_compare(tflite_model, tmp_path, capsys):
    a = tflite_model("float32", "small_cnn")
    model = Model.load(a)
    b = tmp_path / "pruned.tflite"
    prune.apply(model, prune.masks(model, scan(model).layers, None, 0.5, "magnitude")).save(b)
    assert main(["profile", str(a), "--json"]) == 0
    info = json.loads(capsys.readouterr().out)
    assert info["totals"]["macs"] == info["totals"]["effective_macs"] == 1491264
    assert main(["profile", str(b)]) == 0
    out = capsys.readouterr().out
    assert "1 MAC = one multiply-add" in out and "peak activation memory" in out
    png = tmp_path / "cmp.png"
    assert main(["compare", str(a), str(b), "--json", "--plot", str(png)]) == 0
    result = json.loads(capsys.readouterr().out)
    ratios = {r["metric"]: r["ratio"] for r in result["totals"]}
    assert ratios["macs"] == 1.0 and ratios["file_bytes"] == 1.0
    assert 0.49 < ratios["effective_macs"] < 0.52 and ratios["gzip_bytes"] < 0.8
    assert result["same_graph"] and len(result["ops"]) == 6
    assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert main(["compare", str(a), str(b)]) == 0
    assert "B/A" in capsys.readouterr().out


@pytest.mark.tensorflow
def test_mac_rules_of_other_ops():
    """TRANSPOSE_CONV, AVERAGE_POOL_2D, MEAN and a BATCH_MATMUL of two activations, by hand."""
    tf = import_tensorflow()
    up = tf.constant(np.ones((3, 3, 5, 4)), tf.float32)  # [kh, kw, out, in]

    def fn(x):
        y = tf.nn.conv2d_transpose(x, up, (1, 12, 12, 5), 2, "SAME")  # 6x6x4 -> 12x12x5
        pooled = tf.nn.avg_pool2d(y, 2, 2, "VALID")  # -> 6x6x5, 2x2 windows
        flat = tf.reshape(pooled, (1, 36, 5))
        gram = tf.matmul(flat, flat, transpose_a=True)  # [1, 5, 5], contracted over 36
        return tf.reduce_mean(gram, axis=(1, 2))

    info = profile(Model(convert(fn, (1, 6, 6, 4))))
    macs = {r["opcode"]: r["macs"] for r in info["ops"]}
    assert macs["TRANSPOSE_CONV"] == 6 * 6 * 4 * 3 * 3 * 5  # input positions x weights
    assert macs["AVERAGE_POOL_2D"] == 6 * 6 * 5 * 4
    assert macs["BATCH_MATMUL"] == 5 * 5 * 36
    assert macs["MEAN"] == 25
    assert not info["not_profiled"]
