"""The one table of op semantics: which ops are prunable layers and how they use their weights.

Everything that needs to know an op's layout — activation statistics, scores, masks, profiles —
asks a `Layer` from this module instead of testing op names itself.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np
import tflite

from .model import Model, Operator

_ACTIVATIONS = {v: k for k, v in vars(tflite.ActivationFunctionType).items() if k.isupper()}
_PADDINGS = {v: k for k, v in vars(tflite.Padding).items() if k.isupper()}


@dataclass(frozen=True)
class OpSpec:
    """Where an op keeps its operands and how its weight is laid out."""

    kind: str  # "conv", "depthwise", "dense" or "matmul"
    activation: int  # position of the activation input in op.inputs
    weight: int  # position of the weight input
    bias: int | None  # position of the bias input, if the op has one
    layout: str  # weight axes: o = output channel, i = input channel, h/w = kernel offsets


OPS: dict[str, OpSpec] = {
    "CONV_2D": OpSpec("conv", 0, 1, 2, "ohwi"),
    "DEPTHWISE_CONV_2D": OpSpec("depthwise", 0, 1, 2, "1hwo"),
    "FULLY_CONNECTED": OpSpec("dense", 0, 1, 2, "oi"),
    "BATCH_MATMUL": OpSpec("matmul", 0, 1, None, "io"),
}
# Ops that carry weights but that edgeprune does not prune yet: listed, never fatal.
KNOWN_UNSUPPORTED = {
    "TRANSPOSE_CONV",
    "CONV_3D",
    "CONV_3D_TRANSPOSE",
    "EMBEDDING_LOOKUP",
}


@dataclass(frozen=True)
class Layer:
    """One prunable operator: its tensors, geometry and the arithmetic of its statistics."""

    op: int
    opcode: str
    spec: OpSpec
    input: int  # activation input tensor
    output: int  # output tensor (after the fused activation)
    weight: int  # constant tensor holding the stored weights (a DEQUANTIZE's input if any)
    bias: int | None
    weight_shape: tuple[int, ...]
    stride: tuple[int, int] = (1, 1)
    dilation: tuple[int, int] = (1, 1)
    padding: str = "VALID"
    activation: str = "NONE"
    depth_multiplier: int = 1
    transpose_weight: bool = False  # BATCH_MATMUL with adj_y: weight is [out, in]
    output_hw: tuple[int, int] = (1, 1)  # spatial output size of conv layers

    @property
    def kind(self) -> str:
        return self.spec.kind

    @property
    def out_axis(self) -> int:
        """Axis of the weight that indexes output channels."""
        if self.kind == "matmul":
            return 0 if self.transpose_weight else 1
        return self.spec.layout.index("o")

    @property
    def in_features(self) -> int:
        """Length of the input vector a dense or matmul weight multiplies."""
        if self.kind == "matmul":
            return self.weight_shape[1 if self.transpose_weight else 0]
        return self.weight_shape[-1]

    @property
    def kernel(self) -> tuple[int, int]:
        return (self.weight_shape[1], self.weight_shape[2]) if self.spatial else (1, 1)

    @property
    def spatial(self) -> bool:
        return self.kind in ("conv", "depthwise")

    # ----- statistics ----------------------------------------------------------------------

    def s_in(self, sum_abs_x: np.ndarray) -> np.ndarray:
        """S_in from Σ_samples |x| (the input tensor without its batch axis).

        Spatial layers give [kh, kw, c_in]: the kernel windows are folded here, once, because
        summing over samples commutes with the strided window sums. Others give [in].
        """
        if not self.spatial:
            return sum_abs_x.reshape(-1, self.in_features).sum(axis=0)
        reduced = sum_abs_x.reshape(sum_abs_x.shape[-3:])
        (kh, kw), (sh, sw), (dh, dw) = self.kernel, self.stride, self.dilation
        (h, w), (oh, ow) = reduced.shape[:2], self.output_hw
        pad_h, pad_w = self.padding_before((h, w), (oh, ow))
        rows_needed = (oh - 1) * sh + (kh - 1) * dh + 1
        cols_needed = (ow - 1) * sw + (kw - 1) * dw + 1
        padded = np.zeros(
            (max(rows_needed, pad_h + h), max(cols_needed, pad_w + w), reduced.shape[2])
        )
        padded[pad_h : pad_h + h, pad_w : pad_w + w] = reduced
        s_in = np.empty((kh, kw, reduced.shape[2]))
        for i in range(kh):
            for j in range(kw):
                rows = slice(i * dh, i * dh + (oh - 1) * sh + 1, sh)
                cols = slice(j * dw, j * dw + (ow - 1) * sw + 1, sw)
                s_in[i, j] = padded[rows, cols].sum(axis=(0, 1))
        return s_in

    def padding_before(self, in_hw: tuple[int, int], out_hw: tuple[int, int]) -> tuple[int, int]:
        """Zero rows/columns the op adds before the input (TFLite's SAME rule; 0 for VALID)."""
        if self.padding != "SAME":
            return 0, 0
        pads = []
        for size, out, k, s, d in zip(in_hw, out_hw, self.kernel, self.stride, self.dilation):
            pads.append(max((out - 1) * s + (k - 1) * d + 1 - size, 0) // 2)
        return pads[0], pads[1]

    def input_for_weight(self, s_in: np.ndarray) -> np.ndarray:
        """S_in arranged to broadcast against the weight tensor (Eq. 1: A(w) = |w| · S_in)."""
        if self.kind == "conv":
            return s_in[None]
        if self.kind == "depthwise":
            return np.repeat(s_in, self.depth_multiplier, axis=-1)[None]
        if self.kind == "matmul" and not self.transpose_weight:
            return s_in[:, None]
        return s_in[None, :]

    def s_out(self, sum_abs_y: np.ndarray) -> np.ndarray:
        """S_out[c] from Σ_samples |y| (the output tensor without its batch axis)."""
        return sum_abs_y.reshape(-1, self.weight_shape[self.out_axis]).sum(axis=0)


@dataclass(frozen=True)
class Scan:
    """The prunable layers of a model (execution order) and the ops that were skipped, with why."""

    layers: tuple[Layer, ...]
    skipped: tuple[tuple[int, str, str], ...]  # (op index, opcode, reason)

    @property
    def classifier(self) -> Layer | None:
        """The final classifier: the last prunable layer in execution order."""
        return self.layers[-1] if self.layers else None


def scan(model: Model) -> Scan:
    """Find every prunable layer of the main subgraph; unsupported ops are listed, not fatal."""
    producers = {t: op for op in model.operators for t in op.outputs}
    users = model.buffer_users()
    layers, skipped = [], []
    for op in model.operators:
        spec = OPS.get(op.opcode)
        if spec is None:
            if op.opcode in KNOWN_UNSUPPORTED or op.custom:
                skipped.append((op.index, op.opcode, "op not supported for pruning"))
            continue
        layer_or_reason = _layer(model, op, spec, producers, users)
        if isinstance(layer_or_reason, Layer):
            layers.append(layer_or_reason)
        elif layer_or_reason:
            skipped.append((op.index, op.opcode, layer_or_reason))
    return Scan(tuple(layers), tuple(skipped))


def _stored(model: Model, tensor: int, producers: dict[int, Operator]) -> int | None:
    """The constant tensor holding `tensor`'s values: itself, or the input of its DEQUANTIZE."""
    if model.is_constant(tensor):
        return tensor
    op = producers.get(tensor)
    if op is not None and op.opcode == "DEQUANTIZE" and model.is_constant(op.inputs[0]):
        return op.inputs[0]
    return None


def _layer(model: Model, op: Operator, spec: OpSpec, producers, users) -> Layer | str:
    if len(op.inputs) <= spec.weight or op.inputs[spec.weight] < 0 or not op.outputs:
        return "missing operands"
    weight = _stored(model, op.inputs[spec.weight], producers)
    if weight is None:
        # A BATCH_MATMUL of two activations is not a layer with weights: nothing to report.
        return "" if spec.kind == "matmul" else "weight is not a constant tensor"
    w = model.tensor(weight)
    if w.dtype is None or w.sparse:
        return f"weights stored as {'sparse' if w.sparse else w.type_name}"
    if users.get(w.buffer, 0) > 1:
        return "weight buffer shared with another tensor"
    bias = None
    if spec.bias is not None and len(op.inputs) > spec.bias and op.inputs[spec.bias] >= 0:
        bias = _stored(model, op.inputs[spec.bias], producers)
        if bias is None:
            return "bias is not a constant tensor"
        if users.get(model.tensor(bias).buffer, 0) > 1:
            # The converter shares identical buffers; an all-zero bias has nothing to prune.
            if np.any(model.dequantized(bias)):
                return "bias buffer shared with another tensor"
            bias = None
    opts: dict[str, Any] = op.options
    x = model.tensor(op.inputs[spec.activation])
    geometry: dict[str, Any] = {
        "activation": _ACTIVATIONS.get(opts.get("fused_activation_function", 0), "NONE"),
    }
    if spec.kind in ("conv", "depthwise"):
        if len(w.shape) != 4 or len(x.shape) != 4:
            return f"expected 4-D input and weight, got {x.shape} and {w.shape}"
        y = model.tensor(op.outputs[0])
        if len(y.shape) != 4:
            return f"expected a 4-D output, got {y.shape}"
        geometry.update(
            output_hw=(y.shape[1], y.shape[2]),
            stride=(opts.get("stride_h") or 1, opts.get("stride_w") or 1),
            dilation=(
                opts.get("dilation_h_factor") or 1,
                opts.get("dilation_w_factor") or 1,
            ),
            padding=_PADDINGS.get(opts.get("padding", 0), "SAME"),
        )
        if spec.kind == "depthwise":
            if x.shape[3] == 0 or w.shape[3] % x.shape[3]:
                return f"depthwise weight {w.shape} does not fit input {x.shape}"
            geometry["depth_multiplier"] = w.shape[3] // x.shape[3]
    elif len(w.shape) != 2:
        return f"expected a 2-D weight, got {w.shape}"
    if spec.kind == "matmul":
        if opts.get("adj_x"):
            return "BATCH_MATMUL with adj_x is not supported"
        geometry["transpose_weight"] = bool(opts.get("adj_y"))
    return Layer(
        op=op.index,
        opcode=op.opcode,
        spec=spec,
        input=op.inputs[spec.activation],
        output=op.outputs[0],
        weight=weight,
        bias=bias,
        weight_shape=w.shape,
        **geometry,
    )
