"""The NumPy reference ops agree with TensorFlow's ops and with the TFLite interpreter."""

import itertools

import numpy as np
import pytest

from tests import reference
from tests.models import INPUT_SHAPES, build, import_tensorflow, random_inputs

GEOMETRIES = list(itertools.product(("SAME", "VALID"), (1, 2), (1, 2)))


def geometry_id(g):
    return f"{g[0]}-s{g[1]}-d{g[2]}"


@pytest.fixture(scope="module")
def tf():
    return import_tensorflow()


@pytest.mark.parametrize("padding, stride, dilation", GEOMETRIES, ids=map(geometry_id, GEOMETRIES))
@pytest.mark.parametrize("size", [(9, 9), (8, 11)], ids=["9x9", "8x11"])
@pytest.mark.tensorflow
def test_conv2d_matches_tensorflow(tf, padding, stride, dilation, size):
    rng = np.random.default_rng(0)
    x = rng.standard_normal((2, *size, 3)).astype(np.float32)
    w = rng.standard_normal((4, 3, 3, 3)).astype(np.float32)  # TFLite [out, kh, kw, in]
    b = rng.standard_normal(4).astype(np.float32)
    expected = (
        tf.nn.conv2d(
            x,
            w.transpose(1, 2, 3, 0),
            strides=stride,
            padding=padding,
            dilations=dilation,
        ).numpy()
        + b
    )
    ours = reference.conv2d(x, w, b, (stride, stride), padding, (dilation, dilation))
    assert ours.shape == expected.shape
    np.testing.assert_allclose(ours, expected, rtol=1e-4, atol=1e-4)


@pytest.mark.tensorflow
def test_conv2d_rectangular_kernel_and_mixed_strides(tf):
    rng = np.random.default_rng(1)
    x = rng.standard_normal((1, 10, 7, 2)).astype(np.float32)
    w = rng.standard_normal((3, 2, 3, 2)).astype(np.float32)
    expected = tf.nn.conv2d(x, w.transpose(1, 2, 3, 0), strides=(2, 1), padding="SAME").numpy()
    ours = reference.conv2d(x, w, None, (2, 1), "SAME")
    np.testing.assert_allclose(ours, expected, rtol=1e-4, atol=1e-4)


@pytest.mark.parametrize("padding, stride, dilation", GEOMETRIES, ids=map(geometry_id, GEOMETRIES))
@pytest.mark.parametrize("multiplier", [1, 2])
@pytest.mark.tensorflow
def test_depthwise_matches_tensorflow(tf, padding, stride, dilation, multiplier):
    rng = np.random.default_rng(2)
    x = rng.standard_normal((2, 9, 9, 3)).astype(np.float32)
    w = rng.standard_normal((1, 3, 3, 3 * multiplier)).astype(np.float32)  # TFLite layout
    b = rng.standard_normal(3 * multiplier).astype(np.float32)
    # TF depthwise kernel [kh, kw, in, m]: TFLite channel o = c * m + k is TF's [..., c, k].
    w_tf = w[0].reshape(3, 3, 3, multiplier)
    if stride > 1 and dilation > 1:
        # tf.nn.depthwise_conv2d does not support this combination; a dense conv with a
        # block-diagonal kernel computes the same thing.
        dense = np.zeros((3, 3, 3, 3 * multiplier), np.float32)
        for o in range(3 * multiplier):
            dense[:, :, o // multiplier, o] = w[0, :, :, o]
        y = tf.nn.conv2d(x, dense, strides=stride, padding=padding, dilations=dilation)
    else:
        y = tf.nn.depthwise_conv2d(
            x, w_tf, (1, stride, stride, 1), padding, dilations=(dilation, dilation)
        )
    expected = y.numpy() + b
    ours = reference.depthwise_conv2d(
        x, w, b, (stride, stride), padding, (dilation, dilation), multiplier
    )
    assert ours.shape == expected.shape
    np.testing.assert_allclose(ours, expected, rtol=1e-4, atol=1e-4)


@pytest.mark.tensorflow
def test_fully_connected_matches_matmul(tf):
    rng = np.random.default_rng(3)
    x = rng.standard_normal((2, 3, 4, 5)).astype(np.float32)  # flattened to [-1, 20]
    w = rng.standard_normal((6, 20)).astype(np.float32)
    b = rng.standard_normal(6).astype(np.float32)
    expected = tf.nn.relu(tf.matmul(x.reshape(-1, 20), w, transpose_b=True) + b).numpy()
    ours = reference.fully_connected(x, w, b, "RELU")
    np.testing.assert_allclose(ours, expected, rtol=1e-5, atol=1e-5)


@pytest.mark.tensorflow
def test_activations(tf):
    y = np.linspace(-8, 8, 33)
    np.testing.assert_allclose(reference.activate(y, "RELU"), tf.nn.relu(y).numpy())
    np.testing.assert_allclose(reference.activate(y, "RELU6"), tf.nn.relu6(y).numpy())
    np.testing.assert_allclose(reference.activate(y, "RELU_N1_TO_1"), np.clip(y, -1, 1))
    np.testing.assert_allclose(reference.activate(y, "TANH"), tf.tanh(y).numpy())
    with pytest.raises(ValueError, match="unknown activation"):
        reference.activate(y, "SIGMOID")


@pytest.mark.parametrize(
    "size, k, stride, dilation, padding, expected",
    [
        (
            16,
            3,
            2,
            1,
            "SAME",
            (8, 0, 1),
        ),  # even input, stride 2: the odd pixel goes after
        (15, 3, 2, 1, "SAME", (8, 1, 1)),
        (8, 3, 1, 2, "VALID", (4, 0, 0)),
        (4, 3, 1, 1, "SAME", (4, 1, 1)),
        (5, 4, 1, 1, "SAME", (5, 1, 2)),
        (7, 3, 3, 2, "VALID", (1, 0, 0)),
        (2, 3, 1, 2, "VALID", (0, 0, 0)),
    ],
)
def test_pad_amounts(size, k, stride, dilation, padding, expected):
    assert reference.pad_amounts(size, k, stride, dilation, padding) == expected


@pytest.mark.parametrize("padding, stride, dilation", GEOMETRIES, ids=map(geometry_id, GEOMETRIES))
@pytest.mark.tensorflow
def test_im2col_s_in_matches_a_convolution_of_abs_x(tf, padding, stride, dilation):
    # S_in[i, j, c] is the summed output of convolving |x| with the one-hot kernel e_(i, j, c):
    # one dense conv with an identity kernel computes every entry at once.
    x = random_inputs(3, (9, 8, 2), seed=4)
    identity = np.eye(3 * 3 * 2, dtype=np.float32).reshape(3, 3, 2, 18)
    y = tf.nn.conv2d(np.abs(x), identity, strides=stride, padding=padding, dilations=dilation)
    expected = y.numpy().sum(axis=(0, 1, 2)).reshape(3, 3, 2)
    ours = reference.im2col_s_in(x, 3, 3, (stride, stride), padding, (dilation, dilation))
    np.testing.assert_allclose(ours, expected, rtol=1e-5)


@pytest.mark.filterwarnings("ignore:.*experimental_preserve_all_tensors")
def test_reference_network_matches_the_tflite_interpreter():
    """Every layer of the float32 ``mixed`` model, run by the reference on the interpreter's own
    input to that layer, reproduces the interpreter's output (TFLite padding, dilation, depth
    multiplier, fused activations)."""
    from ai_edge_litert.interpreter import Interpreter

    interpreter = Interpreter(
        model_content=build("float32"), experimental_preserve_all_tensors=True
    )
    interpreter.allocate_tensors()
    x = random_inputs(1, INPUT_SHAPES["mixed"][1:], seed=7)
    interpreter.set_tensor(interpreter.get_input_details()[0]["index"], x)
    interpreter.invoke()
    ops = [op for op in interpreter._get_ops_details() if op["op_name"] != "DELEGATE"]
    layers = [
        lambda h, w, b: reference.conv2d(h, w, b, (2, 2), "SAME", (1, 1), "RELU"),
        lambda h, w, b: reference.conv2d(h, w, b, (1, 1), "VALID", (2, 2), "RELU6"),
        lambda h, w, b: reference.depthwise_conv2d(h, w, b, (1, 1), "SAME", (1, 1), 2, "RELU"),
        lambda h, w, b: reference.conv2d(h, w, b, (1, 1), "VALID"),
        None,  # RESHAPE
        lambda h, w, b: reference.fully_connected(h, w, b, "RELU"),
        lambda h, w, b: reference.fully_connected(h, w, b),
    ]
    names = [op["op_name"] for op in ops]
    assert (
        names
        == ["CONV_2D"] * 2 + ["DEPTHWISE_CONV_2D", "CONV_2D", "RESHAPE"] + ["FULLY_CONNECTED"] * 2
    )
    chained = x.astype(np.float64)
    for op, layer in zip(ops, layers, strict=True):
        if layer is None:
            continue
        h, w, b = (interpreter.get_tensor(i) for i in op["inputs"])
        y = interpreter.get_tensor(op["outputs"][0])
        np.testing.assert_allclose(layer(h, w, b), y, rtol=1e-4, atol=1e-4)
        chained = layer(chained, w, b).reshape(y.shape)
    np.testing.assert_allclose(chained, y, rtol=1e-4, atol=1e-4)
