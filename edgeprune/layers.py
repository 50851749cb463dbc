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

ACTIVATIONS = {v: k for k, v in vars(tflite.ActivationFunctionType).items() if k.isupper()}
PADDINGS = {v: k for k, v in vars(tflite.Padding).items() if k.isupper()}


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
        "activation": ACTIVATIONS.get(opts.get("fused_activation_function", 0), "NONE"),
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
            padding=PADDINGS.get(opts.get("padding", 0), "SAME"),
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


# ----- multiply-adds ----------------------------------------------------------------------------
#
# Convention: one MAC is one multiply-add, a·b + c. A convolution or matrix product costs one MAC
# per weight per position where that weight is applied (zero padding included, as published
# figures count it); an elementwise arithmetic op costs one MAC per output element, a window or
# reduction one per element it reads. Ops that only move, compare or look up values, and the
# nonlinearities, cost none. An op in neither table is "not profiled" — never silently 0.


@dataclass(frozen=True)
class Cost:
    """How an op's multiply-adds follow from its tensor shapes.

    rule:
      "reduction"       output elements × the weight's elements per output channel
                        (`out_axis` names that axis of the weight)
      "depthwise"       output elements × kernel height × kernel width
      "matmul"          output elements × the contracted dimension of the first input
      "input_x_weight"  input positions (input elements / channels) × weight elements
      "output"          output elements
      "input"           elements of the first input
      "window"          output elements × pooling window (filter_height × filter_width)
    weight: position of a weight input whose zero entries skip work (effective MACs), if any.
    input: position of the activation input ("matmul", "input_x_weight", "input").
    """

    rule: str
    weight: int | None = None
    out_axis: int = 0
    input: int = 0


MACS: dict[str, Cost] = {
    "CONV_2D": Cost("reduction", weight=1, out_axis=0),
    "CONV_3D": Cost("reduction", weight=1, out_axis=4),
    "DEPTHWISE_CONV_2D": Cost("depthwise", weight=1),
    "FULLY_CONNECTED": Cost("reduction", weight=1, out_axis=0),
    "BATCH_MATMUL": Cost("matmul", weight=1),
    "TRANSPOSE_CONV": Cost("input_x_weight", weight=1, input=2),
    "CONV_3D_TRANSPOSE": Cost("input_x_weight", weight=1, input=2),
    "ADD": Cost("output"),
    "SUB": Cost("output"),
    "MUL": Cost("output"),
    "DIV": Cost("output"),
    "SQUARED_DIFFERENCE": Cost("output"),
    "SQUARE": Cost("output"),
    "PRELU": Cost("output"),
    "LEAKY_RELU": Cost("output"),
    "ADD_N": Cost("output"),
    "AVERAGE_POOL_2D": Cost("window"),
    "MEAN": Cost("input"),
    "SUM": Cost("input"),
    "L2_NORMALIZATION": Cost("input"),
}
# Ops that do no multiply-adds: data movement, comparisons, lookups, casts, quantization and
# nonlinearities (evaluated by tables or polynomials whose cost is not a MAC count).
NO_MACS = frozenset(
    {
        "RESHAPE",
        "SQUEEZE",
        "EXPAND_DIMS",
        "TRANSPOSE",
        "CONCATENATION",
        "PACK",
        "UNPACK",
        "SPLIT",
        "SPLIT_V",
        "SLICE",
        "STRIDED_SLICE",
        "GATHER",
        "GATHER_ND",
        "SCATTER_ND",
        "PAD",
        "PADV2",
        "MIRROR_PAD",
        "TILE",
        "BROADCAST_TO",
        "SHAPE",
        "RANK",
        "CAST",
        "QUANTIZE",
        "DEQUANTIZE",
        "RELU",
        "RELU6",
        "RELU_N1_TO_1",
        "RELU_0_TO_1",
        "LOGISTIC",
        "TANH",
        "HARD_SWISH",
        "SOFTMAX",
        "LOG_SOFTMAX",
        "GELU",
        "ELU",
        "EXP",
        "LOG",
        "SQRT",
        "RSQRT",
        "ABS",
        "NEG",
        "SIN",
        "COS",
        "MAXIMUM",
        "MINIMUM",
        "MAX_POOL_2D",
        "REDUCE_MAX",
        "REDUCE_MIN",
        "REDUCE_ANY",
        "REDUCE_ALL",
        "ARG_MAX",
        "ARG_MIN",
        "RESIZE_NEAREST_NEIGHBOR",
        "SPACE_TO_DEPTH",
        "DEPTH_TO_SPACE",
        "SPACE_TO_BATCH_ND",
        "BATCH_TO_SPACE_ND",
        "ZEROS_LIKE",
        "ONES_LIKE",
        "FILL",
        "RANGE",
        "LESS",
        "GREATER",
        "EQUAL",
        "NOT_EQUAL",
        "LESS_EQUAL",
        "GREATER_EQUAL",
        "LOGICAL_AND",
        "LOGICAL_OR",
        "LOGICAL_NOT",
        "SELECT",
        "SELECT_V2",
        "WHERE",
        "REVERSE_V2",
        "EMBEDDING_LOOKUP",
        "FLOOR",
        "CEIL",
        "ROUND",
        "SIGN",
    }
)

# Ops whose output TFLite's memory planner may place in an input's memory: the input positions
# it may share, and whether the op leaves the data unmodified (a reshape: the input may still
# have other readers) or overwrites it (then the input must have no other reader).
IN_PLACE: dict[str, tuple[tuple[int, ...], bool]] = {
    "RESHAPE": ((0,), True),
    "BITCAST": ((0,), True),
    "ADD": ((0, 1), False),
    "SUB": ((0, 1), False),
    "MUL": ((0, 1), False),
    "DIV": ((0, 1), False),
}


@dataclass(frozen=True)
class MacCount:
    """Dense multiply-adds of one op, and the stored weight whose zeros would skip some."""

    dense: int
    weight: int | None  # constant tensor (a DEQUANTIZE's input if any), or None


def count_macs(
    model: Model,
    op: Operator,
    writers: dict[int, Operator],
    shapes: list[tuple[int, ...]] | None = None,
) -> MacCount | None:
    """The multiply-adds of `op` for the given tensor shapes (default: the model's own), or
    None when the op is in neither MACS nor NO_MACS: the caller reports it as not profiled.

    `writers` is `producers(model)`, computed once by the caller."""
    if op.opcode in NO_MACS and not op.custom:
        return MacCount(0, None)
    cost = MACS.get(op.opcode)
    if cost is None or op.custom or not op.outputs:
        return None

    def shape(position: int) -> tuple[int, ...]:
        index = op.inputs[position]
        return shapes[index] if shapes is not None else model.tensor(index).shape

    out = shapes[op.outputs[0]] if shapes is not None else model.tensor(op.outputs[0]).shape
    out_elements = int(np.prod(out, dtype=np.int64))
    weight = None
    if cost.weight is not None:
        if len(op.inputs) <= cost.weight or op.inputs[cost.weight] < 0:
            return None
        w = shape(cost.weight)
        weight = _stored(model, op.inputs[cost.weight], writers)
    if cost.rule == "reduction":
        per_output = int(np.prod(w, dtype=np.int64)) // max(w[cost.out_axis], 1)
        dense = out_elements * per_output
    elif cost.rule == "depthwise":
        dense = out_elements * w[1] * w[2]
    elif cost.rule == "matmul":
        x = shape(cost.input)
        contracted = x[-2] if op.options.get("adj_x") else x[-1]
        dense = out_elements * contracted
    elif cost.rule == "input_x_weight":
        x = shape(cost.input)
        positions = int(np.prod(x, dtype=np.int64)) // max(x[-1], 1)
        dense = positions * int(np.prod(w, dtype=np.int64))
    elif cost.rule == "output":
        dense = out_elements
    elif cost.rule == "input":
        dense = int(np.prod(shape(cost.input), dtype=np.int64))
    elif cost.rule == "window":
        window = (op.options.get("filter_height") or 1) * (op.options.get("filter_width") or 1)
        dense = out_elements * window
    else:
        raise ValueError(f"unknown MAC rule {cost.rule!r} for {op.opcode}")
    return MacCount(int(dense), weight)


def producers(model: Model) -> dict[int, Operator]:
    """{tensor index: the operator that writes it} for the main subgraph."""
    return {t: op for op in model.operators for t in op.outputs}


def stored_constant(model: Model, tensor: int, writers: dict[int, Operator]) -> int | None:
    """The constant tensor holding `tensor`'s values: itself, or its DEQUANTIZE's input."""
    return _stored(model, tensor, writers)
