"""The one table of op semantics: which ops are prunable layers and how they use their weights.

Everything that needs to know an op's layout — activation statistics, scores, masks, profiles —
asks a `Layer` from this module instead of testing op names itself. Each prunable op kind is a
subclass of `Layer` (`Conv`, `Depthwise`, `TransposeConv`, `Dense`, `MatMul`) registered in
`OPS` by its builtin op name; it owns how its operator is parsed, the shape and arithmetic of
S_in, its weight's output-channel axis, its multiply-adds (`cost`) and how channels flow through
it. The MAC rules of every op are `Cost` classes in the table `MACS`.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, ClassVar

import numpy as np
import tflite

from .model import (
    BatchMatMulOptions,
    Conv2DOptions,
    DepthwiseConv2DOptions,
    Model,
    Operator,
    Options,
    Pool2DOptions,
    Tensor,
    TransposeConvOptions,
    producers,
)

ACTIVATIONS = {v: k for k, v in vars(tflite.ActivationFunctionType).items() if k.isupper()}
PADDINGS = {v: k for k, v in vars(tflite.Padding).items() if k.isupper()}

Shape = tuple[int, ...]


def _options(op: Operator, kind: type[Options]) -> Any:
    """The op's options if they are of `kind`, else that option set's schema defaults."""
    return op.options if isinstance(op.options, kind) else kind()


# ----- multiply-adds ----------------------------------------------------------------------------
#
# Convention: one MAC is one multiply-add, a·b + c. A convolution or matrix product costs one MAC
# per weight per position where that weight is applied (zero padding included, as published
# figures count it); an elementwise arithmetic op costs one MAC per output element, a window or
# reduction one per element it reads. Ops that only move, compare or look up values, and the
# nonlinearities, cost none. An op in neither table is "not profiled" — never silently 0.


@dataclass(frozen=True)
class Cost:
    """How an op's multiply-adds follow from its tensor shapes (one subclass per rule).

    weight: position of a weight input whose zero entries skip work (effective MACs), if any.
    input: position of the activation input, for the rules that read it.
    """

    weight: int | None = None
    input: int = 0

    def dense(self, op: Operator, shape: Callable[[int], Shape], out_elements: int) -> int:
        """Dense MACs of `op`; `shape(position)` is the shape of its input at that position."""
        raise NotImplementedError


@dataclass(frozen=True)
class Reduction(Cost):
    """Output elements × the weight's elements per output channel (`out_axis` of the weight)."""

    out_axis: int = 0

    def dense(self, op, shape, out_elements):
        w = shape(self.weight)
        return out_elements * (int(np.prod(w, dtype=np.int64)) // max(w[self.out_axis], 1))


@dataclass(frozen=True)
class DepthwiseWindow(Cost):
    """Output elements × kernel height × kernel width."""

    def dense(self, op, shape, out_elements):
        w = shape(self.weight)
        return out_elements * w[1] * w[2]


@dataclass(frozen=True)
class Contraction(Cost):
    """Output elements × the contracted dimension of the first input (BATCH_MATMUL's adj_x)."""

    def dense(self, op, shape, out_elements):
        x = shape(self.input)
        return out_elements * (x[-2] if _options(op, BatchMatMulOptions).adj_x else x[-1])


@dataclass(frozen=True)
class InputTimesWeight(Cost):
    """Input positions (input elements / channels) × weight elements."""

    def dense(self, op, shape, out_elements):
        x, w = shape(self.input), shape(self.weight)
        positions = int(np.prod(x, dtype=np.int64)) // max(x[-1], 1)
        return positions * int(np.prod(w, dtype=np.int64))


@dataclass(frozen=True)
class PerOutput(Cost):
    """One MAC per output element."""

    def dense(self, op, shape, out_elements):
        return out_elements


@dataclass(frozen=True)
class PerInput(Cost):
    """One MAC per element of the input."""

    def dense(self, op, shape, out_elements):
        return int(np.prod(shape(self.input), dtype=np.int64))


@dataclass(frozen=True)
class PoolWindow(Cost):
    """Output elements × pooling window (filter_height × filter_width)."""

    def dense(self, op, shape, out_elements):
        o = _options(op, Pool2DOptions)
        return out_elements * (o.filter_height or 1) * (o.filter_width or 1)


# ----- the DEQUANTIZE special case --------------------------------------------------------------


def _dequantized_constant(model: Model, op: Operator | None) -> int | None:
    """The constant a DEQUANTIZE op expands (float16 or int8 weights stored for a float op), or
    None. Its output is the weight: the op that reads it is the layer and counts the parameter."""
    if op is not None and op.opcode == "DEQUANTIZE" and model.is_constant(op.inputs[0]):
        return op.inputs[0]
    return None


def stored_constant(model: Model, tensor: int, writers: dict[int, Operator]) -> int | None:
    """The constant tensor holding `tensor`'s values: itself, or its DEQUANTIZE's input."""
    if model.is_constant(tensor):
        return tensor
    return _dequantized_constant(model, writers.get(tensor))


def stored_parameters(model: Model, op: Operator, writers: dict[int, Operator]) -> list[int]:
    """The constant tensors whose values `op` reads (DEQUANTIZE's input counts at its reader)."""
    if _dequantized_constant(model, op) is not None:
        return []
    found = (stored_constant(model, i, writers) for i in op.inputs if i >= 0)
    return [t for t in found if t is not None]


# ----- prunable layers: one class per op kind ---------------------------------------------------


@dataclass(frozen=True)
class Layer:
    """One prunable operator: its tensors, geometry and the arithmetic of its statistics.

    Subclasses are the op kinds; each declares where its operator keeps its operands, the axes
    of its weight (`layout`: o = output channel, i = input channel, h/w = kernel offsets) and its
    MAC rule, and overrides what its geometry changes. Instances come from `scan`.
    """

    kind: ClassVar[str]  # "conv", "depthwise", "dense" or "matmul"
    layout: ClassVar[str]
    activation_input: ClassVar[int] = 0  # position of the activation input in op.inputs
    weight_input: ClassVar[int] = 1  # position of the weight input
    bias_input: ClassVar[int | None] = 2  # position of the bias input, if the op has one
    output_shape_input: ClassVar[int | None] = None  # a constant holding the output's shape
    cost: ClassVar[Cost]
    # Structured pruning: the output tensor's axis that carries channels (NHWC: the last), and
    # whether output channel c depends on input channel c alone (its channels pass through).
    channel_axis: ClassVar[int] = -1
    propagates_channels: ClassVar[bool] = False
    # Whether the repair can refit it over whole input windows (`windows`, im2col).
    has_windows: ClassVar[bool] = False

    op: int
    opcode: str
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

    spatial: ClassVar[bool] = False

    # ----- parsing -------------------------------------------------------------------------

    @classmethod
    def geometry(cls, op: Operator, x: Tensor, w: Tensor, y: Tensor) -> dict[str, Any] | str:
        """The layer's fields read from its operator, or why the op is not a layer."""
        if len(w.shape) != 2:
            return f"expected a 2-D weight, got {w.shape}"
        return {}

    @classmethod
    def weightless(cls) -> str:
        """Why an op of this kind whose weight is not a constant is skipped ("" = silently)."""
        return "weight is not a constant tensor"

    # ----- weight axes ---------------------------------------------------------------------

    @property
    def out_axis(self) -> int:
        """Axis of the weight that indexes output channels."""
        return self.layout.index("o")

    @property
    def in_axis(self) -> int:
        """Axis of the weight that indexes input channels: where the previous op's output
        channels arrive (`propagates_channels` kinds map them through `depth_multiplier`)."""
        return self.layout.index("i")

    @property
    def out_channels(self) -> int:
        return self.weight_shape[self.out_axis]

    @property
    def in_features(self) -> int:
        """Length of the input vector a dense or matmul weight multiplies."""
        return self.weight_shape[-1]

    @property
    def kernel(self) -> tuple[int, int]:
        return (1, 1)

    # ----- statistics ----------------------------------------------------------------------

    def s_in_shape(self) -> tuple[int, ...]:
        """Shape of S_in: [kh, kw, c_in] for spatial layers, [in] for the others."""
        return (self.in_features,)

    def s_in(self, sum_abs_x: np.ndarray) -> np.ndarray:
        """S_in from Σ_samples |x| (the input tensor without its batch axis)."""
        return sum_abs_x.reshape(-1, self.in_features).sum(axis=0)

    def accumulate_s_in(self, sum_abs_x: np.ndarray, out: np.ndarray) -> None:
        """Add the S_in of Σ_samples |x| into `out` (of shape `s_in_shape()`)."""
        out += self.s_in(sum_abs_x)

    def input_for_weight(self, s_in: np.ndarray) -> np.ndarray:
        """S_in arranged to broadcast against the weight tensor (Eq. 1: A(w) = |w| · S_in)."""
        return s_in[None, :]

    def s_out(self, sum_abs_y: np.ndarray) -> np.ndarray:
        """S_out[c] from Σ_samples |y| (the output tensor without its batch axis)."""
        return sum_abs_y.reshape(-1, self.out_channels).sum(axis=0)

    # ----- structured pruning ----------------------------------------------------------------

    def constant_input(self) -> str:
        """Why an input channel holding one constant does not add one constant to every output,
        i.e. cannot be folded into the bias ("" when it does)."""
        return ""

    @property
    def constant_gain(self) -> float:
        """The share of the weights' sum over kernel offsets that a constant input channel adds
        to an output on average (1: every output reads every offset)."""
        return 1.0


class Dense(Layer):
    """FULLY_CONNECTED: weight [out, in]."""

    kind = "dense"
    layout = "oi"
    cost = Reduction(weight=1, out_axis=0)


class MatMul(Layer):
    """BATCH_MATMUL with a constant second operand: weight [in, out], or [out, in] with adj_y."""

    kind = "matmul"
    layout = "io"
    bias_input = None
    cost = Contraction(weight=1)

    @classmethod
    def geometry(cls, op, x, w, y):
        reason = super().geometry(op, x, w, y)
        if isinstance(reason, str):
            return reason
        options = _options(op, BatchMatMulOptions)
        if options.adj_x:
            return "BATCH_MATMUL with adj_x is not supported"
        return {"transpose_weight": bool(options.adj_y)}

    @classmethod
    def weightless(cls) -> str:
        return ""  # a BATCH_MATMUL of two activations is not a layer with weights

    @property
    def out_axis(self) -> int:
        return 0 if self.transpose_weight else 1

    @property
    def in_axis(self) -> int:
        return 1 - self.out_axis

    @property
    def in_features(self) -> int:
        return self.weight_shape[self.in_axis]

    def input_for_weight(self, s_in):
        return s_in[None, :] if self.transpose_weight else s_in[:, None]


class _Spatial(Layer):
    """2-D convolutions: NHWC input, kernel windows folded into S_in."""

    spatial = True
    option_set: ClassVar[type[Options]] = Conv2DOptions

    @classmethod
    def geometry(cls, op, x, w, y):
        if len(w.shape) != 4 or len(x.shape) != 4:
            return f"expected 4-D input and weight, got {x.shape} and {w.shape}"
        if len(y.shape) != 4:
            return f"expected a 4-D output, got {y.shape}"
        o = _options(op, cls.option_set)
        return {
            "output_hw": (y.shape[1], y.shape[2]),
            "stride": (o.stride_h or 1, o.stride_w or 1),
            "dilation": (o.get("dilation_h_factor") or 1, o.get("dilation_w_factor") or 1),
            "padding": PADDINGS.get(o.padding, "SAME"),
        }

    @property
    def kernel(self) -> tuple[int, int]:
        return (self.weight_shape[1], self.weight_shape[2])

    def s_in_shape(self) -> tuple[int, ...]:
        return (*self.kernel, self.weight_shape[3] // self.depth_multiplier)

    def s_in(self, sum_abs_x: np.ndarray) -> np.ndarray:
        """[kh, kw, c_in]: the kernel windows are folded here, once, because summing over
        samples commutes with the strided window sums."""
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

    def constant_input(self) -> str:
        if self.kernel != (1, 1) and self.padding != "VALID":
            return "pads its input: a constant does not fold exactly"
        return ""

    def padding_before(self, in_hw: tuple[int, int], out_hw: tuple[int, int]) -> tuple[int, int]:
        """Zero rows/columns the op adds before the input (TFLite's SAME rule; 0 for VALID)."""
        if self.padding != "SAME":
            return 0, 0
        pads = []
        for size, out, k, s, d in zip(in_hw, out_hw, self.kernel, self.stride, self.dilation):
            pads.append(max((out - 1) * s + (k - 1) * d + 1 - size, 0) // 2)
        return pads[0], pads[1]


class Conv(_Spatial):
    """CONV_2D: weight [out, kh, kw, in]."""

    kind = "conv"
    layout = "ohwi"
    cost = Reduction(weight=1, out_axis=0)
    has_windows = True

    def input_for_weight(self, s_in):
        return s_in[None]

    def windows(self, x: np.ndarray, rows: int) -> np.ndarray:
        """The input windows (im2col) at about `rows` or fewer output positions, on an evenly
        strided grid: [positions, kh·kw·C] in the weight's (h, w, c) order, so that `windows @
        w.reshape(out, -1).T` is the layer's output there before bias and activation (padding
        reads zeros); a batch gives each sample's windows in turn."""
        if x.ndim == 4 and x.shape[0] != 1:
            return np.concatenate([self.windows(one, rows) for one in x])
        x = x.reshape(x.shape[-3:])
        (kh, kw), (sh, sw), (dh, dw) = self.kernel, self.stride, self.dilation
        (h, w), (oh, ow) = x.shape[:2], self.output_hw
        pad_h, pad_w = self.padding_before((h, w), (oh, ow))
        padded = np.zeros(
            (
                max((oh - 1) * sh + (kh - 1) * dh + 1, pad_h + h),
                max((ow - 1) * sw + (kw - 1) * dw + 1, pad_w + w),
                x.shape[2],
            ),
            x.dtype,
        )
        padded[pad_h : pad_h + h, pad_w : pad_w + w] = x
        step = max(int(np.ceil(np.sqrt(oh * ow / rows))), 1)  # every step-th row and column
        gh, gw = -(-oh // step), -(-ow // step)
        return np.concatenate(
            [
                padded[a * dh :: sh * step, b * dw :: sw * step][:gh, :gw].reshape(gh * gw, -1)
                for a in range(kh)
                for b in range(kw)
            ],
            axis=1,
        )


class Depthwise(_Spatial):
    """DEPTHWISE_CONV_2D: weight [1, kh, kw, in × depth_multiplier]; output channel c reads input
    channel c // depth_multiplier only."""

    kind = "depthwise"
    layout = "1hwo"
    cost = DepthwiseWindow(weight=1)
    propagates_channels = True
    option_set = DepthwiseConv2DOptions

    @classmethod
    def geometry(cls, op, x, w, y):
        found = super().geometry(op, x, w, y)
        if isinstance(found, str):
            return found
        if x.shape[3] == 0 or w.shape[3] % x.shape[3]:
            return f"depthwise weight {w.shape} does not fit input {x.shape}"
        return {**found, "depth_multiplier": w.shape[3] // x.shape[3]}

    @property
    def in_axis(self) -> int:
        return 3  # shared with the output channels: c_in = c_out // depth_multiplier

    def input_for_weight(self, s_in):
        return np.repeat(s_in, self.depth_multiplier, axis=-1)[None]


class TransposeConv(_Spatial):
    """TRANSPOSE_CONV: inputs (output shape, weight [out, kh, kw, in], input, bias); input
    position p adds w[:, i, j, :] · x_p to output position p · stride + (i, j) − padding."""

    kind = "transpose_conv"
    layout = "ohwi"
    activation_input = 2
    bias_input = 3
    output_shape_input = 0
    cost = InputTimesWeight(weight=1, input=2)
    option_set = TransposeConvOptions

    def padding_before(self, in_hw, out_hw):
        """Output rows/columns cropped before the first one (TFLite: the SAME padding of the
        convolution that maps the output back to the input)."""
        if self.padding != "SAME":
            return 0, 0
        pads = []
        for out, k, s in zip(out_hw, self.kernel, self.stride):
            pads.append(max(((-(-out // s) - 1) * s + k - out) // 2, 0))
        return pads[0], pads[1]

    def s_in(self, sum_abs_x: np.ndarray) -> np.ndarray:
        """[kh, kw, c_in]: offset (i, j) reads the input positions it maps into the output."""
        reduced = sum_abs_x.reshape(sum_abs_x.shape[-3:])
        (h, w), (oh, ow) = reduced.shape[:2], self.output_hw
        (ph, pw), (sh, sw) = self.padding_before((h, w), (oh, ow)), self.stride
        s_in = np.empty((*self.kernel, reduced.shape[2]))
        for i in range(self.kernel[0]):
            rows = np.arange(h) * sh + i - ph
            rows = (rows >= 0) & (rows < oh)
            for j in range(self.kernel[1]):
                cols = np.arange(w) * sw + j - pw
                cols = (cols >= 0) & (cols < ow)
                s_in[i, j] = reduced[rows][:, cols].sum(axis=(0, 1))
        return s_in

    def input_for_weight(self, s_in):
        return s_in[None]

    def constant_input(self) -> str:
        if self.kernel != (1, 1) or self.stride != (1, 1):
            return "spreads its input over overlapping or sparse windows: a constant does not fold"
        return ""

    @property
    def constant_gain(self) -> float:
        return 1.0 / (self.stride[0] * self.stride[1])


# The one op table: builtin op name -> its prunable layer kind.
OPS: dict[str, type[Layer]] = {
    "CONV_2D": Conv,
    "DEPTHWISE_CONV_2D": Depthwise,
    "TRANSPOSE_CONV": TransposeConv,
    "FULLY_CONNECTED": Dense,
    "BATCH_MATMUL": MatMul,
}
# Ops that carry weights but that edgeprune does not prune yet: listed, never fatal.
KNOWN_UNSUPPORTED = {
    "CONV_3D",
    "CONV_3D_TRANSPOSE",
    "EMBEDDING_LOOKUP",
}
# Ops that may follow a classifier's final layer and leave its output one class-score vector
# (`classifier.Head`): reshapes, a spatial MEAN (linear), SOFTMAX, (de)quantization.
CLASSIFIER_HEAD_OPS = frozenset({"RESHAPE", "SQUEEZE", "MEAN", "SOFTMAX", "QUANTIZE", "DEQUANTIZE"})


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
    writers = producers(model)
    users = model.buffer_users()
    layers, skipped = [], []
    for op in model.operators:
        kind = OPS.get(op.opcode)
        if kind is None:
            if op.opcode in KNOWN_UNSUPPORTED or op.custom:
                skipped.append((op.index, op.opcode, "op not supported for pruning"))
            continue
        layer_or_reason = _layer(model, op, kind, writers, users)
        if isinstance(layer_or_reason, Layer):
            layers.append(layer_or_reason)
        elif layer_or_reason:
            skipped.append((op.index, op.opcode, layer_or_reason))
    return Scan(tuple(layers), tuple(skipped))


def _layer(model: Model, op: Operator, kind: type[Layer], writers, users) -> Layer | str:
    """`op` as a layer of `kind`, or why it is not one ("" when that needs no mention)."""
    if len(op.inputs) <= kind.weight_input or op.inputs[kind.weight_input] < 0 or not op.outputs:
        return "missing operands"
    weight = stored_constant(model, op.inputs[kind.weight_input], writers)
    if weight is None:
        return kind.weightless()
    w = model.tensor(weight)
    if w.dtype is None or w.sparse:
        return f"weights stored as {'sparse' if w.sparse else w.type_name}"
    if users.get(w.buffer, 0) > 1:
        return "weight buffer shared with another tensor"
    bias, at = None, kind.bias_input
    if at is not None and len(op.inputs) > at and op.inputs[at] >= 0:
        bias = stored_constant(model, op.inputs[at], writers)
        if bias is None:
            return "bias is not a constant tensor"
        if users.get(model.tensor(bias).buffer, 0) > 1:
            # The converter shares identical buffers; an all-zero bias has nothing to prune.
            if model.nonzero(bias):
                return "bias buffer shared with another tensor"
            bias = None
    x = model.tensor(op.inputs[kind.activation_input])
    geometry = kind.geometry(op, x, w, model.tensor(op.outputs[0]))
    if isinstance(geometry, str):
        return geometry
    activation = op.options.get("fused_activation_function", 0)
    return kind(
        op=op.index,
        opcode=op.opcode,
        input=op.inputs[kind.activation_input],
        output=op.outputs[0],
        weight=weight,
        bias=bias,
        weight_shape=w.shape,
        activation=ACTIVATIONS.get(activation, "NONE"),
        **geometry,
    )


# ----- the MAC table ----------------------------------------------------------------------------

MACS: dict[str, Cost] = {
    **{name: kind.cost for name, kind in OPS.items()},
    "CONV_3D": Reduction(weight=1, out_axis=4),
    "CONV_3D_TRANSPOSE": InputTimesWeight(weight=1, input=2),
    "ADD": PerOutput(),
    "SUB": PerOutput(),
    "MUL": PerOutput(),
    "DIV": PerOutput(),
    "SQUARED_DIFFERENCE": PerOutput(),
    "SQUARE": PerOutput(),
    "PRELU": PerOutput(),
    "LEAKY_RELU": PerOutput(),
    "ADD_N": PerOutput(),
    "AVERAGE_POOL_2D": PoolWindow(),
    "MEAN": PerInput(),
    "SUM": PerInput(),
    "L2_NORMALIZATION": PerInput(),
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
    weight = None
    if cost.weight is not None:
        if len(op.inputs) <= cost.weight or op.inputs[cost.weight] < 0:
            return None
        weight = stored_constant(model, op.inputs[cost.weight], writers)
    dense = cost.dense(op, shape, int(np.prod(out, dtype=np.int64)))
    return MacCount(int(dense), weight)


# ----- channel rules: how channels flow through each op (structured pruning) --------------------
#
# Channels are the last axis of every activation tensor (NHWC). A rule says which channels of an
# op's tensors must be removed together (`link`, into a `channels.ChannelGraph`: the dependency
# groups in the spirit of DepGraph) and what a channel that is constant on its inputs is on its
# output (`constant`, per-channel values, NaN: not constant), which decides whether removing it
# is exact. An op without a rule freezes every channel it touches and is reported.

_ACT_FUNCTIONS: dict[str, Callable[[np.ndarray], np.ndarray]] = {
    "NONE": lambda v: v,
    "RELU": lambda v: np.maximum(v, 0.0),
    "RELU6": lambda v: np.clip(v, 0.0, 6.0),
    "RELU_N1_TO_1": lambda v: np.clip(v, -1.0, 1.0),
    "RELU_0_TO_1": lambda v: np.clip(v, 0.0, 1.0),
    "TANH": np.tanh,
    "LOGISTIC": lambda v: 1.0 / (1.0 + np.exp(-v)),
    "HARD_SWISH": lambda v: v * np.clip(v + 3.0, 0.0, 6.0) / 6.0,
    "ABS": np.abs,
    "NEG": np.negative,
}


def activate(name: str, v: np.ndarray) -> np.ndarray:
    """The activation `name` (fused or standalone) applied to values; NaN when not modelled."""
    fn = _ACT_FUNCTIONS.get(name)
    return fn(v) if fn is not None else np.full_like(v, np.nan)


def fused(op: Operator) -> str:
    """The op's fused activation function by name ("NONE" when it has none)."""
    return ACTIVATIONS.get(op.options.get("fused_activation_function", 0), "NONE")


class ChannelRule:
    """An op the channel analysis cannot see through: its channels stay (the default rule)."""

    def link(self, graph: Any, op: Operator) -> str | None:
        """Join channels that must go together; return why not when the op must freeze them."""
        return f"{op.opcode} has no channel rule"

    def constant(self, graph: Any, op: Operator) -> np.ndarray:
        """Per-channel constant values of the op's first output (NaN where not constant)."""
        return np.full(graph.width(op.outputs[0]), np.nan)


class Producer(ChannelRule):
    """A layer with weights: output channel c is a new channel (constant act(bias[c]) when its
    weights are zero); its input channels are a separate group, removed from its weight."""

    def link(self, graph, op):
        layer = graph.layer(op.index)
        if layer is None:
            return "not a prunable layer"
        at = layer.output_shape_input
        if at is not None and not graph.is_constant(op.inputs[at]):
            return "its output shape is computed, not a constant"
        return None

    def constant(self, graph, op):
        layer = graph.layer(op.index)
        out = np.full(graph.width(layer.output), np.nan)
        zero = graph.zero_channels(layer)
        out[zero] = activate(layer.activation, graph.bias(layer)[zero])
        return out


class DepthwiseChannels(Producer):
    """DEPTHWISE_CONV_2D: output channel c·m + j reads input channel c only (m: multiplier)."""

    def link(self, graph, op):
        layer = graph.layer(op.index)
        if layer is None:
            return "not a prunable layer"
        m, c_in = layer.depth_multiplier, graph.width(layer.input)
        for j in range(m):
            graph.union(layer.input, np.arange(c_in), layer.output, np.arange(c_in) * m + j)
        return None

    def constant(self, graph, op):
        layer = graph.layer(op.index)
        out = super().constant(graph, op)
        # A zero input channel (padding is zero too) leaves only the bias.
        zero_in = np.repeat(graph.value(layer.input) == 0, layer.depth_multiplier)
        out[zero_in] = activate(layer.activation, graph.bias(layer)[zero_in])
        return out


@dataclass(frozen=True)
class SameChannels(ChannelRule):
    """Output channel c comes from input channel c alone (activations, pooling, quantize...).

    fn: what a constant becomes (an activation name, or "KEEP"); zero_only: a constant other
    than 0 does not stay constant (PAD adds zeros around it)."""

    fn: str = "KEEP"
    zero_only: bool = False

    def link(self, graph, op):
        x = op.inputs[0]
        if graph.is_constant(x):
            return None  # a DEQUANTIZE expanding stored weights: no channels flow
        if graph.width(x) != graph.width(op.outputs[0]):
            return f"{op.opcode} changes the channel count"
        reason = self.check(graph, op)
        if reason is None:
            graph.union(x, np.arange(graph.width(x)), op.outputs[0], np.arange(graph.width(x)))
        return reason

    def check(self, graph, op) -> str | None:
        """Why this op, as parameterized, does not pass channels through (None: it does)."""
        return None

    def constant(self, graph, op):
        v = graph.value(op.inputs[0]).copy()
        if self.zero_only:
            v[v != 0] = np.nan
        v = v if self.fn == "KEEP" else activate(self.fn, v)
        return activate(fused(op), v)


class PadChannels(SameChannels):
    """PAD: passes channels through when it pads no channels (its constant is 0 outside)."""

    def check(self, graph, op):
        pads = graph.constant_values(op.inputs[1]) if len(op.inputs) > 1 else None
        if pads is None or pads.ndim != 2 or np.any(pads[-1] != 0):
            return "PAD pads the channel axis (or its paddings are not constant)"
        return None


class ReduceChannels(SameChannels):
    """MEAN, SUM, REDUCE_MAX/MIN over axes other than the channel axis."""

    def check(self, graph, op):
        axes = graph.constant_values(op.inputs[1]) if len(op.inputs) > 1 else None
        rank = len(graph.shape(op.inputs[0]))
        if axes is None or np.any(np.mod(axes, rank) == rank - 1):
            return f"{op.opcode} reduces the channel axis (or its axes are not constant)"
        return None

    def constant(self, graph, op):
        v = super().constant(graph, op)
        if op.opcode == "SUM":
            v = v * graph.size(op.inputs[0]) / max(graph.size(op.outputs[0]), 1)
        return v


class ElementwiseChannels(ChannelRule):
    """ADD, SUB, MUL...: channel c of every full-width input and of the output go together (a
    residual group); an input broadcast over channels joins nothing; a constant input with one
    value per channel is cut with them."""

    def link(self, graph, op):
        out = op.outputs[0]
        width = graph.width(out)
        for x in op.inputs:
            shape = graph.shape(x)
            channels = shape[-1] if shape else 1
            if channels == 1 and width != 1:
                continue
            if channels != width:
                return f"{op.opcode} broadcasts in a way the channel analysis does not follow"
            if graph.is_constant(x):
                graph.cut_constant(x, out)
            else:
                graph.union(x, np.arange(width), out, np.arange(width))
        return None

    def constant(self, graph, op):
        a, b = (graph.value(x) for x in op.inputs[:2])
        combine = {
            "ADD": np.add,
            "SUB": np.subtract,
            "MUL": np.multiply,
            "MAXIMUM": np.maximum,
            "MINIMUM": np.minimum,
        }.get(op.opcode)
        if combine is None:
            return np.full(graph.width(op.outputs[0]), np.nan)
        return activate(fused(op), np.broadcast_to(combine(a, b), graph.width(op.outputs[0])))


class ConcatChannels(ChannelRule):
    """CONCATENATION on the channel axis: input k's channel c is output channel offset_k + c."""

    def link(self, graph, op):
        out = op.outputs[0]
        shapes = [graph.shape(x) for x in op.inputs]
        # The axis is read from the shapes: all but the channel axis equal to the output's.
        if any(s[:-1] != graph.shape(out)[:-1] for s in shapes):
            return "CONCATENATION along an axis other than the channels"
        offset = 0
        for x in op.inputs:
            c = graph.width(x)
            if not graph.is_constant(x):
                graph.union(x, np.arange(c), out, offset + np.arange(c))
            offset += c
        return None

    def constant(self, graph, op):
        return activate(fused(op), np.concatenate([graph.value(x) for x in op.inputs]))


@dataclass(frozen=True)
class ReshapeChannels(ChannelRule):
    """RESHAPE, SQUEEZE, EXPAND_DIMS that keep the channel axis, or a flatten [.., C] -> [F]
    before a dense layer (feature p·C + c is channel c at position p).

    shape_input: position of the constant holding the new shape, rewritten when thinned."""

    shape_input: int | None = None

    def link(self, graph, op):
        x, out = op.inputs[0], op.outputs[0]
        c, f = graph.width(x), graph.width(out)
        if graph.size(x) != graph.size(out):
            return f"{op.opcode} changes the element count"
        if c == f:
            graph.union(x, np.arange(c), out, np.arange(c))
            return None
        batch = graph.shape(x)[0] if len(graph.shape(x)) > 1 else 1
        if len(graph.shape(out)) == 2 and graph.shape(out)[0] == batch and f % c == 0:
            positions = f // c
            graph.union(x, np.tile(np.arange(c), positions), out, np.arange(f))
            return None
        return f"{op.opcode} mixes the channel axis with others"

    def constant(self, graph, op):
        v = graph.value(op.inputs[0])
        f = graph.width(op.outputs[0])
        return np.tile(v, f // max(v.size, 1))


_SAME = SameChannels()
CHANNEL_RULES: dict[str, ChannelRule] = {
    **{name: Producer() for name in OPS},
    "DEPTHWISE_CONV_2D": DepthwiseChannels(),
    **{name: SameChannels(fn=name) for name in _ACT_FUNCTIONS if name != "NONE"},
    **dict.fromkeys(("QUANTIZE", "DEQUANTIZE", "MAX_POOL_2D", "AVERAGE_POOL_2D"), _SAME),
    **dict.fromkeys(("RESIZE_BILINEAR", "RESIZE_NEAREST_NEIGHBOR", "MIRROR_PAD"), _SAME),
    "PAD": PadChannels(zero_only=True),
    "PADV2": PadChannels(zero_only=True, fn="NAN"),
    **dict.fromkeys(("MEAN", "SUM", "REDUCE_MAX", "REDUCE_MIN"), ReduceChannels()),
    **dict.fromkeys(("ADD", "SUB", "MUL", "MAXIMUM", "MINIMUM"), ElementwiseChannels()),
    "CONCATENATION": ConcatChannels(),
    "RESHAPE": ReshapeChannels(shape_input=1),
    **dict.fromkeys(("SQUEEZE", "EXPAND_DIMS"), ReshapeChannels()),
}
FROZEN = ChannelRule()


def channel_rule(opcode: str) -> ChannelRule:
    """The channel rule of an op (FROZEN when it has none: its channels are kept)."""
    return CHANNEL_RULES.get(opcode, FROZEN)
