"""Pure NumPy reference ops in TFLite semantics (NHWC, float64 math) for correctness tests.

Weights use TFLite layouts: CONV_2D [out, kh, kw, in], DEPTHWISE_CONV_2D [1, kh, kw, in * m]
(output channel o reads input channel o // m), FULLY_CONNECTED [out, in]. Padding is computed
exactly as TFLite does: SAME gives out = ceil(in / stride) and puts the odd pixel of padding after
(pad_before = pad_total // 2); VALID pads nothing and gives out = ceil((in - (k-1)·d) / stride).
"""

from __future__ import annotations

import numpy as np

ACTIVATIONS = {
    "NONE": lambda y: y,
    "RELU": lambda y: np.maximum(y, 0.0),
    "RELU6": lambda y: np.clip(y, 0.0, 6.0),
    "RELU_N1_TO_1": lambda y: np.clip(y, -1.0, 1.0),
    "TANH": np.tanh,
}


def activate(y: np.ndarray, activation: str = "NONE") -> np.ndarray:
    """Apply a TFLite fused activation function by name."""
    try:
        return ACTIVATIONS[activation](y)
    except KeyError:
        raise ValueError(
            f"unknown activation {activation!r}; expected {list(ACTIVATIONS)}"
        ) from None


def output_size(size: int, k: int, stride: int, dilation: int, padding: str) -> int:
    """Output length of one spatial dimension, as TFLite computes it."""
    effective = (k - 1) * dilation + 1
    if padding == "SAME":
        return -(-size // stride)
    if padding == "VALID":
        return max(-(-(size - effective + 1) // stride), 0)
    raise ValueError(f"unknown padding {padding!r}; expected 'SAME' or 'VALID'")


def pad_amounts(size: int, k: int, stride: int, dilation: int, padding: str):
    """(out, pad_before, pad_after) of one spatial dimension, as TFLite computes them."""
    out = output_size(size, k, stride, dilation, padding)
    if padding == "VALID":
        return out, 0, 0
    total = max((out - 1) * stride + (k - 1) * dilation + 1 - size, 0)
    return out, total // 2, total - total // 2


def pad_input(x: np.ndarray, kh: int, kw: int, stride=(1, 1), padding="SAME", dilation=(1, 1)):
    """Zero-pad a batch x [N, H, W, C] as the op pads it. Returns (x_pad as float64, oh, ow)."""
    x = np.asarray(x, dtype=np.float64)
    oh, top, bottom = pad_amounts(x.shape[1], kh, stride[0], dilation[0], padding)
    ow, left, right = pad_amounts(x.shape[2], kw, stride[1], dilation[1], padding)
    return np.pad(x, ((0, 0), (top, bottom), (left, right), (0, 0))), oh, ow


def _windows(x, kh, kw, stride, padding, dilation):
    """Yield (i, j, patch) for every kernel offset: patch [N, oh, ow, C] is the input that kernel
    tap (i, j) multiplies at every output position."""
    (sh, sw), (dh, dw) = stride, dilation
    x_pad, oh, ow = pad_input(x, kh, kw, stride, padding, dilation)
    for i in range(kh):
        for j in range(kw):
            rows = slice(i * dh, i * dh + (oh - 1) * sh + 1, sh)
            cols = slice(j * dw, j * dw + (ow - 1) * sw + 1, sw)
            yield i, j, x_pad[:, rows, cols, :]


def _bias(b, channels: int) -> np.ndarray:
    return np.zeros(channels) if b is None else np.asarray(b, dtype=np.float64)


def conv2d(
    x, w, b=None, stride=(1, 1), padding="SAME", dilation=(1, 1), activation="NONE"
) -> np.ndarray:
    """CONV_2D: x [N, H, W, in], w [out, kh, kw, in], b [out] or None -> [N, oh, ow, out]."""
    w = np.asarray(w, dtype=np.float64)
    out_channels, kh, kw, in_channels = w.shape
    if np.shape(x)[-1] != in_channels:
        raise ValueError(f"input has {np.shape(x)[-1]} channels, weight expects {in_channels}")
    y = 0.0
    for i, j, patch in _windows(x, kh, kw, stride, padding, dilation):
        y = y + patch @ w[:, i, j, :].T
    return activate(y + _bias(b, out_channels), activation)


def depthwise_conv2d(
    x,
    w,
    b=None,
    stride=(1, 1),
    padding="SAME",
    dilation=(1, 1),
    depth_multiplier=1,
    activation="NONE",
) -> np.ndarray:
    """DEPTHWISE_CONV_2D: x [N, H, W, C], w [1, kh, kw, C * m], b [C * m] or None
    -> [N, oh, ow, C * m]; output channel o reads input channel o // m."""
    w = np.asarray(w, dtype=np.float64)
    _, kh, kw, out_channels = w.shape
    if out_channels != np.shape(x)[-1] * depth_multiplier:
        raise ValueError(
            f"weight has {out_channels} channels, expected input channels "
            f"{np.shape(x)[-1]} x depth_multiplier {depth_multiplier}"
        )
    y = 0.0
    for i, j, patch in _windows(x, kh, kw, stride, padding, dilation):
        y = y + np.repeat(patch, depth_multiplier, axis=-1) * w[0, i, j, :]
    return activate(y + _bias(b, out_channels), activation)


def fully_connected(x, w, b=None, activation="NONE") -> np.ndarray:
    """FULLY_CONNECTED: w [out, in], x reshaped to [-1, in] -> [rows, out]."""
    w = np.asarray(w, dtype=np.float64)
    x = np.asarray(x, dtype=np.float64).reshape(-1, w.shape[1])
    return activate(x @ w.T + _bias(b, w.shape[0]), activation)


def im2col_s_in(x, kh: int, kw: int, stride=(1, 1), padding="SAME", dilation=(1, 1)):
    """Ground truth of a conv layer's input statistic, by brute force:

    S_in[i, j, c] = sum over samples n and output positions (oh, ow) of
                    |x_pad[n, oh*sh + i*dh, ow*sw + j*dw, c]|

    for a batch x [N, H, W, C], x_pad zero-padded as the op pads it. Returns [kh, kw, C].
    """
    (sh, sw), (dh, dw) = stride, dilation
    x_pad, oh, ow = pad_input(
        np.abs(np.asarray(x, dtype=np.float64)), kh, kw, stride, padding, dilation
    )
    s_in = np.zeros((kh, kw, x_pad.shape[-1]))
    for r in range(oh):
        for c in range(ow):
            for i in range(kh):
                for j in range(kw):
                    s_in[i, j] += x_pad[:, r * sh + i * dh, c * sw + j * dw, :].sum(axis=0)
    return s_in
