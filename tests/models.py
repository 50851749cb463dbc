"""Small TFLite models for tests: committed under ``tests/fixtures/``, built with TensorFlow.

``build(kind, arch)`` returns the bytes of a converted ``.tflite`` model. The combinations the
tests use (``COMMITTED``) are read from ``tests/fixtures/<arch>_<kind>.tflite``, so the core's
tests run without TensorFlow (e.g. on a Pi with only ``edgeprune[litert]`` and pytest); any
other combination is converted with TensorFlow and cached per process. Only this module imports
TensorFlow, and only inside functions.

Regenerate the committed files after changing a model below (needs TensorFlow)::

    python -m tests.models --write      # rewrite tests/fixtures/*.tflite
    python -m tests.models --check      # exit 1 if a fresh build differs from a committed file

``tests/test_fixture_drift.py`` runs the same check (marked ``tensorflow``), so the committed
bytes cannot drift from what this module builds.

kinds
    ``float32``  plain float model.
    ``dynamic``  dynamic-range quantization: float activations, and per-channel symmetric int8
                 weights for every weight of >= 1024 elements (the converter's fixed threshold;
                 smaller weights stay float32, so use arch ``mixed_wide`` to get them all).
    ``int8``     full integer quantization: per-channel symmetric int8 weights (conv and dense
                 along axis 0, depthwise along axis 3), int32 biases, int8 activations, int8
                 model input and output.
    ``float16``  fp16 weights and biases, each feeding a DEQUANTIZE op whose float32 output is
                 the weight (or bias) input of the conv/depthwise/fully-connected op.
    ``uint8``    legacy (TF1-style) quantization: asymmetric per-tensor uint8 weights with
                 non-zero zero points, int32 biases, uint8 input and output, no SignatureDef;
                 made from a fake-quant graph, only for arch ``mixed`` (same float weights).
archs
    ``mixed``                16x16x3 input; conv 8 (stride 2, SAME, relu), conv 8 (dilation 2,
                             VALID, relu6), depthwise (multiplier 2, SAME, relu), 1x1 conv 8,
                             flatten, dense 16 relu, dense 10 (logits).
    ``mixed_wide``           the same layers with widths 40, 64, 128 (depthwise), 8, dense 128, 10:
                             every weight has >= 1024 elements, the converter's threshold for
                             dynamic-range quantization (in ``mixed`` only the 16x128 dense
                             weight is big enough; the others stay float32).
    ``small_cnn``            32x32x3 input; four 3x3 convs, dense 32, dense 10 (benchmarks).
    ``mobilenet_v2_shaped``  Keras MobileNetV2, 96x96x3, alpha 0.35, 10 classes with softmax;
                             float32 is the kind meant for it (about 11 s to build).
    ``conv_head``            MobileNet v1's head in small: 16x16x3 input; conv 16 (stride 2,
                             relu), depthwise (relu), global average pool (keepdims), 1x1 conv
                             10 (the classifier), reshape, softmax (int8: quantized softmax).
    ``keypoints``            a MoveNet-like keypoint regressor, not a classifier: 16x16x3 input;
                             conv 8 (stride 2, relu), depthwise (relu), global average pool,
                             dense 51, reshape to [1, 17, 3] ((y, x, score) per keypoint).
    ``upsample``             16x16x3 input; conv 8 (stride 2, relu), transposed conv 8 (3x3, stride
                             2, SAME, relu), conv 8 (stride 2, relu), transposed conv 6 (2x2,
                             stride 2, VALID, relu), 1x1 conv 4 (stride 4), flatten, dense 10:
                             TRANSPOSE_CONV as producer and consumer of channels (thinning).

Weights are drawn from a seeded NumPy generator, biases are non-zero (the converter folds and
deduplicates all-zero bias tensors, which would hide bias effects), so every build of a (kind,
arch) gives the same bytes, in any process and any order, provided TensorFlow runs without
oneDNN (importing this module sets ``TF_ENABLE_ONEDNN_OPTS=0``; with oneDNN the ``uint8``
model's calibration ranges round differently). Checked with TensorFlow 2.21 on x86-64; another
TensorFlow version or CPU may convert differently, which the drift test reports.
"""

from __future__ import annotations

import argparse
import functools
import os
import sys
from pathlib import Path

import numpy as np

# Set before anything imports TensorFlow (conftest imports this module first), whichever test
# does. oneDNN's float kernels round differently: the ``uint8`` model's activation ranges are
# computed by TensorFlow, and with oneDNN on one of its bytes differs from the committed file.
os.environ["TF_ENABLE_ONEDNN_OPTS"] = "0"
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")

KINDS = ("float32", "dynamic", "int8", "float16", "uint8")
ARCHS = (
    "mixed",
    "mixed_wide",
    "small_cnn",
    "mobilenet_v2_shaped",
    "conv_head",
    "keypoints",
    "upsample",
)
INPUT_SHAPES = {
    "mixed": (1, 16, 16, 3),
    "mixed_wide": (1, 16, 16, 3),
    "small_cnn": (1, 32, 32, 3),
    "mobilenet_v2_shaped": (1, 96, 96, 3),
    "conv_head": (1, 16, 16, 3),
    "keypoints": (1, 16, 16, 3),
    "upsample": (1, 16, 16, 3),
}
KEYPOINTS = 17  # arch "keypoints": MoveNet's 17 body keypoints
CALIBRATION_SAMPLES = 32
SEED = 1234

FIXTURES = Path(__file__).resolve().parent / "fixtures"
# The (kind, arch) combinations the tests use, committed under FIXTURES.
COMMITTED = (
    ("float32", "mixed"),
    ("dynamic", "mixed"),
    ("int8", "mixed"),
    ("float16", "mixed"),
    ("uint8", "mixed"),
    ("dynamic", "mixed_wide"),
    ("float32", "small_cnn"),
    ("float32", "conv_head"),
    ("int8", "conv_head"),
    ("float32", "keypoints"),
    ("int8", "keypoints"),
    ("float32", "upsample"),
    ("int8", "upsample"),
)

# Legacy uint8 model: the float input x maps to uint8 q as x = (q - MEAN) / STD.
UINT8_INPUT_MEAN = 128.0
UINT8_INPUT_STD = 32.0


def random_inputs(n: int, shape, seed: int = 0, dtype=np.float32) -> np.ndarray:
    """``n`` seeded samples of ``shape`` (one sample, e.g. ``(1, 16, 16, 3)`` or ``(16, 16, 3)``).

    Returns an array of shape ``(n, *shape)``; values are standard normal, the distribution the
    quantized models are calibrated on.
    """
    rng = np.random.default_rng(seed)
    return rng.standard_normal((n, *tuple(shape))).astype(dtype)


def import_tensorflow():
    """TensorFlow, imported quietly and without oneDNN (see the top of this module)."""
    try:
        import tensorflow as tf
    except ImportError as e:
        raise ImportError(
            f"{e}: tests/models.py needs TensorFlow to build a model that is not committed "
            "under tests/fixtures/ (pip install -e '.[host]')",
            name=e.name,
        ) from e
    return tf


def _keras_model(arch: str):
    tf = import_tensorflow()
    tf.keras.backend.clear_session()  # restart layer numbering: same tensor names every build
    layers = tf.keras.layers
    shape = INPUT_SHAPES[arch][1:]
    if arch in ("mixed", "mixed_wide"):
        c1, c2, d1 = (8, 8, 16) if arch == "mixed" else (40, 64, 128)
        model = tf.keras.Sequential(
            [
                tf.keras.Input(shape, batch_size=1),
                layers.Conv2D(c1, 3, strides=2, padding="same", activation="relu"),
                layers.Conv2D(c2, 3, dilation_rate=2, padding="valid", activation="relu6"),
                layers.DepthwiseConv2D(3, depth_multiplier=2, padding="same", activation="relu"),
                layers.Conv2D(8, 1),
                layers.Flatten(),
                layers.Dense(d1, activation="relu"),
                layers.Dense(10),
            ]
        )
    elif arch == "small_cnn":
        model = tf.keras.Sequential(
            [
                tf.keras.Input(shape, batch_size=1),
                layers.Conv2D(16, 3, padding="same", activation="relu"),
                layers.Conv2D(16, 3, strides=2, padding="same", activation="relu"),
                layers.Conv2D(32, 3, strides=2, padding="same", activation="relu"),
                layers.Conv2D(32, 3, strides=2, padding="same", activation="relu"),
                layers.Flatten(),
                layers.Dense(32, activation="relu"),
                layers.Dense(10),
            ]
        )
    elif arch == "conv_head":
        model = tf.keras.Sequential(
            [
                tf.keras.Input(shape, batch_size=1),
                layers.Conv2D(16, 3, strides=2, padding="same", activation="relu"),
                layers.DepthwiseConv2D(3, padding="same", activation="relu"),
                layers.GlobalAveragePooling2D(keepdims=True),
                layers.Conv2D(10, 1),
                layers.Reshape((10,)),
                layers.Softmax(),
            ]
        )
    elif arch == "upsample":
        model = tf.keras.Sequential(
            [
                tf.keras.Input(shape, batch_size=1),
                layers.Conv2D(8, 3, strides=2, padding="same", activation="relu"),
                layers.Conv2DTranspose(8, 3, strides=2, padding="same", activation="relu"),
                layers.Conv2D(8, 3, strides=2, padding="same", activation="relu"),
                layers.Conv2DTranspose(6, 2, strides=2, padding="valid", activation="relu"),
                layers.Conv2D(4, 1, strides=4),
                layers.Flatten(),
                layers.Dense(10),
            ]
        )
    elif arch == "keypoints":
        model = tf.keras.Sequential(
            [
                tf.keras.Input(shape, batch_size=1),
                layers.Conv2D(8, 3, strides=2, padding="same", activation="relu"),
                layers.DepthwiseConv2D(3, padding="same", activation="relu"),
                layers.GlobalAveragePooling2D(),
                layers.Dense(KEYPOINTS * 3),  # (y, x, score) per keypoint, as MoveNet's output
                layers.Reshape((KEYPOINTS, 3)),
            ]
        )
    elif arch == "mobilenet_v2_shaped":
        model = tf.keras.applications.MobileNetV2(
            input_shape=shape, alpha=0.35, weights=None, classes=10
        )
    else:
        raise ValueError(f"unknown arch {arch!r}; expected one of {ARCHS}")
    _seed_weights(model)
    return model


def _seed_weights(model) -> None:
    """Overwrite every weight with seeded values: He-normal kernels, non-zero biases, and batch
    norm statistics away from identity (so folded biases are non-zero too)."""
    depthwise = import_tensorflow().keras.layers.DepthwiseConv2D
    rng = np.random.default_rng(SEED)
    for layer in model.layers:
        for var in layer.weights:
            shape = tuple(var.shape)
            name = var.path.rsplit("/", 1)[-1]
            if name == "kernel":
                # Keras layouts: conv [kh, kw, in, out], depthwise [kh, kw, in, m], dense [in, out].
                fan_in = np.prod(shape[:2] if isinstance(layer, depthwise) else shape[:-1])
                value = rng.standard_normal(shape) * np.sqrt(2.0 / fan_in)
            elif name in ("bias", "beta", "moving_mean"):
                value = rng.uniform(0.05, 0.2, shape) * rng.choice([-1.0, 1.0], shape)
            elif name == "gamma":
                value = rng.uniform(0.8, 1.2, shape)
            elif name == "moving_variance":
                value = rng.uniform(0.5, 1.5, shape)
            else:
                raise ValueError(f"unexpected weight {var.path} in test model")
            var.assign(value.astype(np.float32))


def fixture_path(kind: str, arch: str = "mixed") -> Path:
    """Where the committed bytes of (kind, arch) live (whether or not it is committed)."""
    return FIXTURES / f"{arch}_{kind}.tflite"


def build(kind: str, arch: str = "mixed") -> bytes:
    """Bytes of a ``.tflite`` model of ``arch`` converted as ``kind`` (see module docstring):
    the committed file when there is one, else converted with TensorFlow.

    Read or built once per process: ``build("int8")`` and ``build(kind="int8", arch="mixed")``
    share the cache entry."""
    return _build(kind, arch)


@functools.cache
def _build(kind: str, arch: str) -> bytes:
    path = fixture_path(kind, arch)
    if (kind, arch) in COMMITTED and path.exists():
        return path.read_bytes()
    return convert_model(kind, arch)


@functools.cache
def convert_model(kind: str, arch: str = "mixed") -> bytes:
    """Bytes of (kind, arch) freshly converted with TensorFlow, never the committed file."""
    if kind not in KINDS:
        raise ValueError(f"unknown kind {kind!r}; expected one of {KINDS}")
    if arch not in ARCHS:
        raise ValueError(f"unknown arch {arch!r}; expected one of {ARCHS}")
    if kind == "uint8":
        if arch != "mixed":
            raise ValueError("kind 'uint8' is only built for arch 'mixed'")
        return _build_uint8_legacy()
    import_tensorflow()  # first: quietly, and with a clear error when TensorFlow is absent
    from edgeprune.host.convert import convert, from_keras

    source = from_keras(_keras_model(arch), arch)
    try:
        calibration = random_inputs(CALIBRATION_SAMPLES, INPUT_SHAPES[arch], seed=SEED)
        return convert(source, kind, calibration if kind == "int8" else None)
    finally:
        source.close()


def _build_uint8_legacy() -> bytes:
    """The ``mixed`` network (same weights as the float model) as a TF1 graph with fake-quant
    ops, converted by the v1 converter with ``inference_type=tf.uint8``: every weight is
    asymmetric per-tensor uint8 with a non-zero zero point, biases are int32, and the model's
    input and output are uint8."""
    tf = import_tensorflow()
    tf1 = tf.compat.v1
    weights = [layer.get_weights() for layer in _keras_model("mixed").layers if layer.weights]
    samples = random_inputs(CALIBRATION_SAMPLES, INPUT_SHAPES["mixed"], seed=SEED)

    # Pass 1: the float graph, to calibrate the range of every activation.
    with tf.Graph().as_default(), tf1.Session() as session:
        x = tf1.placeholder(tf.float32, INPUT_SHAPES["mixed"], name="input")
        _, activations = _mixed_tf1_graph(x, weights, None)
        values = [session.run(activations, {x: sample}) for sample in samples]
    ranges = [
        (
            min(0.0, min(float(v[i].min()) for v in values)),
            max(0.0, max(float(v[i].max()) for v in values)),
        )
        for i in range(len(activations))
    ]
    # The input range is the one quantized_input_stats implies: x = (q - mean) / std.
    ranges[0] = (
        -UINT8_INPUT_MEAN / UINT8_INPUT_STD,
        (255 - UINT8_INPUT_MEAN) / UINT8_INPUT_STD,
    )

    # Pass 2: the same graph with fake-quant ops at those ranges, converted to uint8.
    with tf.Graph().as_default(), tf1.Session() as session:
        x = tf1.placeholder(tf.float32, INPUT_SHAPES["mixed"], name="input")
        y, _ = _mixed_tf1_graph(x, weights, ranges)
        converter = tf1.lite.TFLiteConverter.from_session(session, [x], [y])
        converter.inference_type = tf.uint8
        converter.inference_input_type = tf.uint8
        converter.quantized_input_stats = {"input": (UINT8_INPUT_MEAN, UINT8_INPUT_STD)}
        return bytes(converter.convert())


def _mixed_tf1_graph(x, weights, ranges):
    """The ``mixed`` network in TF ops. With ``ranges`` (one (min, max) per activation), weights
    and activations pass through fake-quant ops as a TF1 quantization-aware graph has them.
    Returns the logits and the list of activations (input first)."""
    tf = import_tensorflow()
    activations = []

    def act(h):
        if ranges is not None:
            lo, hi = ranges[len(activations)]
            h = tf.quantization.fake_quant_with_min_max_args(h, min=lo, max=hi)
        activations.append(h)
        return h

    def weight(w):
        if ranges is None:
            return tf.constant(w)
        lo, hi = min(0.0, float(w.min())), max(0.0, float(w.max()))
        return tf.quantization.fake_quant_with_min_max_args(tf.constant(w), min=lo, max=hi)

    (k1, b1), (k2, b2), (k3, b3), (k4, b4), (k5, b5), (k6, b6) = weights
    h = act(x)
    h = act(tf.nn.relu(tf.nn.conv2d(h, weight(k1), 2, "SAME") + b1))
    h = act(tf.nn.relu6(tf.nn.conv2d(h, weight(k2), 1, "VALID", dilations=2) + b2))
    h = act(tf.nn.relu(tf.nn.depthwise_conv2d(h, weight(k3), [1, 1, 1, 1], "SAME") + b3))
    h = act(tf.nn.conv2d(h, weight(k4), 1, "VALID") + b4)
    h = tf.reshape(h, [h.shape[0], -1])
    h = act(tf.nn.relu(tf.matmul(h, weight(k5)) + b5))
    h = act(tf.matmul(h, weight(k6)) + b6)
    return h, activations


def _model_t(data: bytes):
    from ai_edge_litert import schema_py_generated as schema

    return schema, schema.ModelT.InitFromPackedBuf(data, 0)


def _pack(m) -> bytes:
    import flatbuffers

    builder = flatbuffers.Builder(1024)
    builder.Finish(m.Pack(builder), file_identifier=b"TFL3")
    return bytes(builder.Output())


def _opcode(schema, m, builtin: int, custom: str | None = None) -> int:
    code = schema.OperatorCodeT()
    code.builtinCode = builtin
    code.deprecatedBuiltinCode = min(builtin, 127)
    code.customCode = custom
    m.operatorCodes.append(code)
    return len(m.operatorCodes) - 1


def edgetpu_compiled(data: bytes) -> bytes:
    """``data`` as the Edge TPU compiler leaves a model: all its ops replaced by one custom op
    ``edgetpu-custom-op`` from the input to the output (the compiled weights are inside the op's
    options, invisible to TFLite). Not runnable without libedgetpu: what edgeprune must say."""
    schema, m = _model_t(data)
    op = schema.OperatorT()
    op.opcodeIndex = _opcode(schema, m, schema.BuiltinOperator.CUSTOM, "edgetpu-custom-op")
    g = m.subgraphs[0]
    op.inputs, op.outputs = list(g.inputs), list(g.outputs)
    op.customOptions = list(b"compiled-for-the-edge-tpu")
    g.operators = [op]
    return _pack(m)


def segmenter(data: bytes, last_op: int = 3) -> bytes:
    """A per-pixel classifier (DeepLab-shaped) from a ``mixed`` model: its ops up to the 1x1
    conv ``last_op``, then ARG_MAX over channels: an INT64 class id per position."""
    schema, m = _model_t(data)
    g = m.subgraphs[0]
    g.operators = g.operators[: last_op + 1]
    scores = g.operators[-1].outputs[0]

    def tensor(shape, type_, buffer_data=None):
        buf = schema.BufferT()
        buf.data = buffer_data
        m.buffers.append(buf)
        t = schema.TensorT()
        t.shape, t.type, t.buffer = list(shape), type_, len(m.buffers) - 1
        t.name = f"segmenter_{len(g.tensors)}".encode()
        g.tensors.append(t)
        return len(g.tensors) - 1

    axis = tensor([1], schema.TensorType.INT32, list(np.int32([3]).tobytes()))
    shape = g.tensors[scores].shape
    ids = tensor(shape[:-1], schema.TensorType.INT64)
    op = schema.OperatorT()
    op.opcodeIndex = _opcode(schema, m, schema.BuiltinOperator.ARG_MAX)
    op.inputs, op.outputs = [scores, axis], [ids]
    op.builtinOptionsType = schema.BuiltinOptions.ArgMaxOptions
    op.builtinOptions = schema.ArgMaxOptionsT()
    op.builtinOptions.outputType = schema.TensorType.INT64
    g.operators.append(op)
    g.outputs = [ids]
    m.signatureDefs = []
    return _pack(m)


def write_fixtures() -> list[Path]:
    """Convert every committed combination afresh and write it under FIXTURES."""
    FIXTURES.mkdir(exist_ok=True)
    paths = []
    for kind, arch in COMMITTED:
        path = fixture_path(kind, arch)
        path.write_bytes(convert_model(kind, arch))
        paths.append(path)
    return paths


def stale_fixtures() -> list[Path]:
    """The committed files that are missing or differ from a fresh conversion."""
    stale = []
    for kind, arch in COMMITTED:
        path = fixture_path(kind, arch)
        if not path.exists() or path.read_bytes() != convert_model(kind, arch):
            stale.append(path)
    return stale


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m tests.models", description="Regenerate or check tests/fixtures/*.tflite."
    )
    action = parser.add_mutually_exclusive_group(required=True)
    action.add_argument("--write", action="store_true", help="rewrite the committed models")
    action.add_argument("--check", action="store_true", help="exit 1 if any differs")
    args = parser.parse_args(argv)
    if args.write:
        for path in write_fixtures():
            print(f"{path.stat().st_size:>8}  {path.relative_to(FIXTURES.parent.parent)}")
        return 0
    stale = stale_fixtures()
    for path in stale:
        print(f"differs from a fresh build: {path}", file=sys.stderr)
    return 1 if stale else 0


if __name__ == "__main__":
    sys.exit(main())
