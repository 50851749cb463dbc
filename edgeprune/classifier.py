"""The final classifier layer as real numbers, and its rewrite in the layer's own storage.

The heads people have: a FULLY_CONNECTED, or a 1×1 CONV_2D (MobileNet v1/v2), followed only by
ops that keep it a class-score vector (RESHAPE, SQUEEZE, a spatial MEAN, SOFTMAX, (DE)QUANTIZE).
Anything else — several outputs, class ids (ARG_MAX), a score map per position, regression
heads (one value per sample, or the layer's outputs reshaped to a grid such as MoveNet's
[1, 17, 3] keypoints) — is not a classifier, and `Head.of` says why in one line.

Later stages (prior, prototypes) compute a new real-valued weight and bias; `rewrite` stores them
as float32, float16, or int8/uint8 requantized with the layer's scales, widening a channel's scale
(and the matching int32 bias scale) only when the new values no longer fit.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from .errors import UnsupportedError
from .layers import CLASSIFIER_HEAD_OPS, Conv, Dense, Layer, producers, scan
from .model import Model

HEAD_OPS = CLASSIFIER_HEAD_OPS  # what may sit between the final layer and the output
NOT_A_CLASSIFIER = "the classifier stages (prior, prototypes) do not apply: use --stages prune"
NOISE = 1e-6  # logits below this share of a quantized output's range are rounding noise


class NotAClassifier(UnsupportedError):
    """The model's output is not one class-score vector computed by a final linear layer."""

    def __init__(self, message: str, reason: str = ""):
        super().__init__(message)
        self.reason = reason or message


@dataclass(frozen=True)
class Head:
    """Where a classifier's scores come from: its final layer and what follows it."""

    layer: Layer
    softmax: bool  # the model's output is the softmax of the layer's logits
    spatial: bool  # a 1×1 conv on an H×W map, averaged (MEAN): features are the spatial mean

    @classmethod
    def of(cls, model: Model) -> Head:
        """The model's classifier head, or NotAClassifier with the one-line reason."""
        reason = _not_a_classifier(model)
        if isinstance(reason, str):
            raise NotAClassifier(f"not a classifier ({reason}): {NOT_A_CLASSIFIER}", reason)
        return reason


def _not_a_classifier(model: Model) -> Head | str:
    """The head, or why the model is not a classifier."""
    outputs = model.main.outputs
    if len(outputs) != 1:
        return f"{len(outputs)} outputs, not one class-score vector"
    out = model.tensor(outputs[0])
    writers = producers(model)
    chain, tensor = [], outputs[0]
    while tensor in writers and writers[tensor].opcode in HEAD_OPS and not writers[tensor].custom:
        chain.append(writers[tensor].opcode)
        tensor = writers[tensor].inputs[0]
    last = writers.get(tensor)
    if out.dtype is None or out.dtype.kind not in "fiu" or out.type_name in ("INT64", "INT32"):
        by = f" from {last.opcode}" if last is not None else ""
        return f"its output is {out.type_name}{by}: class ids or counts, not class scores"
    layer = scan(model).classifier
    if last is None or layer is None or layer.op != last.index:
        name = last.opcode if last is not None else "the input"
        return f"its output comes from {name}, not from a final FULLY_CONNECTED or 1×1 CONV_2D"
    if isinstance(layer, Conv) and layer.kernel != (1, 1):
        return f"its last layer is a {layer.kernel[0]}×{layer.kernel[1]} CONV_2D, not a 1×1 one"
    if not isinstance(layer, Dense | Conv):
        return f"its last layer is a {layer.opcode}, not a FULLY_CONNECTED or 1×1 CONV_2D"
    if layer.activation != "NONE":
        return f"its last layer has a fused {layer.activation}: its outputs are not logits"
    classes = layer.out_channels
    per_sample = int(np.prod(out.shape[1:])) if len(out.shape) > 1 else int(np.prod(out.shape))
    if per_sample != classes:
        return f"{per_sample // max(classes, 1)} score vectors per sample (one per position)"
    grid = [d for d in out.shape[1:] if d != 1]  # a class-score vector has one non-unit axis
    if len(grid) > 1:
        shaped = "×".join(map(str, grid))
        return (f"its {layer.opcode}'s {classes} outputs are shaped {shaped}: a grid of values "
                "(keypoints, boxes, a regression), not one class-score vector")  # fmt: skip
    if classes == 1:
        return "one output value per sample: a regression or a score, not class scores"
    spatial = isinstance(layer, Conv) and int(np.prod(model.tensor(layer.input).shape[1:-1])) > 1
    if spatial and "MEAN" not in chain:
        return "a score vector per position"
    return Head(layer, "SOFTMAX" in chain, spatial)


def probabilities(model: Model, outputs: np.ndarray) -> np.ndarray:
    """Class probabilities [n, classes] from the model's real-valued outputs [n, classes]: a
    softmax output is taken as it is (a quantized one renormalized: uint8 rows sum to 0.88–1),
    logits are softmaxed. Not a classifier: softmax, as the prune check reads predictions."""
    from .estimate import softmax

    outputs = np.asarray(outputs, np.float64)
    try:
        head = Head.of(model)
    except NotAClassifier:
        head = None
    if head is not None and head.softmax:
        total = np.clip(outputs, 0, None).sum(axis=-1, keepdims=True)
        return np.clip(outputs, 0, None) / np.where(total > 0, total, 1)
    return softmax(outputs)


@dataclass(frozen=True)
class Classifier:
    """logits = weight @ features + bias, for the model's final layer."""

    layer: Layer
    weight: np.ndarray  # [classes, features]
    bias: np.ndarray  # [classes]
    spatial: bool = False  # see Head.spatial

    @classmethod
    def of(cls, model: Model) -> Classifier:
        head = Head.of(model)
        layer = head.layer
        if layer.bias is None:
            raise UnsupportedError("the final layer has no bias tensor of its own to rewrite")
        weight = model.dequantized(layer.weight).reshape(layer.out_channels, -1)
        return cls(layer, weight, model.dequantized(layer.bias), head.spatial)

    @property
    def classes(self) -> int:
        return self.weight.shape[0]

    def features(self, values: np.ndarray) -> np.ndarray:
        """The layer's real-valued input as feature rows [n, features] (a spatial head's mean)."""
        rows = np.asarray(values).reshape(-1, self.weight.shape[1])
        return rows.mean(axis=0, keepdims=True) if self.spatial else rows

    def scores(self, values: np.ndarray) -> np.ndarray:
        """The layer's real-valued output as logit rows [n, classes] (a spatial head's mean)."""
        rows = np.asarray(values).reshape(-1, self.classes)
        return rows.mean(axis=0, keepdims=True) if self.spatial else rows

    def logits(self, features: np.ndarray) -> np.ndarray:
        return features.reshape(-1, self.weight.shape[1]) @ self.weight.T + self.bias

    def output_fit(self, model: Model, logits: np.ndarray, margin: float = 0.9) -> float:
        """The factor that makes `logits` fill `margin` of a quantized output's range: inside it
        (no saturation) and spread over it (int8 steps still order close logits); 1 for floats.

        Logits under a millionth of the range are rounding noise, not an order to keep: features
        that are all the same (silent recordings, centred on their own mean) give them, and
        scaling them up by ~1e8 made a layer no interpreter would prepare."""
        q = model.tensor(self.layer.output).quantization
        if q is None or not logits.size:
            return 1.0
        info = np.iinfo(model.tensor(self.layer.output).dtype)
        high, low = q.dequantize(np.array([info.max, info.min]))
        worst = max(logits.max() / high if high > 0 else 0, logits.min() / low if low < 0 else 0)
        return margin / worst if worst > NOISE else 1.0

    def rewrite(self, model: Model, weight: np.ndarray, bias: np.ndarray) -> Model:
        """A copy of `model` whose final layer computes `weight @ f + bias`."""
        out = model.copy()
        shape = out.tensor(self.layer.weight).shape  # a 1×1 conv's [classes, 1, 1, features]
        weight_scale = _store(out, self.layer.weight, weight.reshape(shape), widen=True)
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
