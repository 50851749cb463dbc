"""The final FULLY_CONNECTED layer as real numbers, and its rewrite in the layer's own storage.

Later stages (prior, prototypes) compute a new real-valued weight and bias; `rewrite` stores them
as float32, float16, or int8/uint8 requantized with the layer's scales, widening a channel's scale
(and the matching int32 bias scale) only when the new values no longer fit.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from .errors import UnsupportedError
from .layers import Dense, Layer, scan
from .model import Model


@dataclass(frozen=True)
class Classifier:
    """logits = weight @ features + bias, for the model's final layer."""

    layer: Layer
    weight: np.ndarray  # [classes, features]
    bias: np.ndarray  # [classes]

    @classmethod
    def of(cls, model: Model) -> Classifier:
        layer = scan(model).classifier
        if not isinstance(layer, Dense):
            raise UnsupportedError("the model does not end in a FULLY_CONNECTED layer")
        if layer.bias is None:
            raise UnsupportedError("the final layer has no bias tensor of its own to rewrite")
        return cls(layer, model.dequantized(layer.weight), model.dequantized(layer.bias))

    @property
    def classes(self) -> int:
        return self.weight.shape[0]

    def logits(self, features: np.ndarray) -> np.ndarray:
        return features.reshape(-1, self.weight.shape[1]) @ self.weight.T + self.bias

    def output_fit(self, model: Model, logits: np.ndarray, margin: float = 0.9) -> float:
        """The factor that makes `logits` fill `margin` of a quantized output's range: inside it
        (no saturation) and spread over it (int8 steps still order close logits); 1 for floats."""
        q = model.tensor(self.layer.output).quantization
        if q is None or not logits.size:
            return 1.0
        info = np.iinfo(model.tensor(self.layer.output).dtype)
        high, low = q.dequantize(np.array([info.max, info.min]))
        worst = max(logits.max() / high if high > 0 else 0, logits.min() / low if low < 0 else 0)
        return margin / worst if worst > 0 else 1.0

    def rewrite(self, model: Model, weight: np.ndarray, bias: np.ndarray) -> Model:
        """A copy of `model` whose final layer computes `weight @ f + bias`."""
        out = model.copy()
        weight_scale = _store(out, self.layer.weight, weight, widen=True)
        bias_tensor = out.tensor(self.layer.bias)
        if bias_tensor.quantization is not None and weight_scale is not None:
            # Integer kernels add the int32 bias to an accumulator in units of s_in · s_w.
            input_q = out.tensor(self.layer.input).quantization
            in_scale = float(input_q.scale[0]) if input_q is not None else 1.0
            bias_scale = np.broadcast_to(
                in_scale * weight_scale, bias_tensor.quantization.scale.shape
            )
            out.set_scales(bias_tensor, bias_scale)
        _store(out, self.layer.bias, bias, widen=False)
        return out


def _store(model: Model, tensor: int, values: np.ndarray, widen: bool) -> np.ndarray | None:
    """Write real `values` into a constant tensor; returns its scales, widened if `widen` and the
    values do not fit the old ones."""
    t = model.tensor(tensor)
    data = model.tensor_data(t)
    q = t.quantization
    if q is None:
        data[...] = values.astype(data.dtype)
        return None
    low_q, high_q = _range(data.dtype, q)
    rows = np.moveaxis(values, q.axis, 0) if q.scale.size > 1 else values.reshape(1, -1)
    rows = rows.reshape(q.scale.size, -1)
    zero = q.zero_point.astype(np.float64)
    needed = np.maximum(
        np.maximum(rows.max(axis=1), 0) / (high_q - zero),
        np.minimum(rows.min(axis=1), 0) / (low_q - zero),
    )
    scale = q.scale.astype(np.float64)
    if widen and np.any(needed > scale):
        scale = np.maximum(scale, needed)
        model.set_scales(t, scale)
        q = model.tensor(t.index).quantization
    data[...] = q.quantize(values, data.dtype, low_q, high_q)
    return scale


def _range(dtype: np.dtype, q) -> tuple[int, int]:
    """Stored range: symmetric int8 weights stay in [-127, 127] as TFLite's kernels expect."""
    info = np.iinfo(dtype)
    if dtype == np.int8 and not np.any(q.zero_point):
        return -127, 127
    return int(info.min), int(info.max)
