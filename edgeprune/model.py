"""A .tflite file as data: subgraphs, tensors, operators, quantization and writable weight views.

The flatbuffer is read by a small bounds-checked reader rather than the generated schema code, so
a truncated or hostile file raises `ModelError` instead of reading out of bounds, looping on an
absurd vector length or silently mis-parsing. The `tflite` schema module supplies the enum names
and the generated option tables (read only after their vtable has been checked).
"""

from __future__ import annotations

import hashlib
import math
import os
import struct
from dataclasses import dataclass, field, fields, replace
from enum import IntEnum
from typing import Any

import numpy as np
import tflite

from . import vetted
from ._io import atomic_write_bytes, open_regular
from .errors import ModelError, UnsupportedError

_U8, _U16, _I32, _U32, _U64 = (struct.Struct(f) for f in ("<B", "<H", "<i", "<I", "<Q"))
_I8 = struct.Struct("<b")
_IDENTIFIER = b"TFL3"
_MAX_RANK = 16
# Elements one tensor may claim (2**40: 4 TB of float32). Real models are far below; the limit
# keeps every size computed from a shape exact in int64 (a hostile shape's product cannot wrap).
MAX_ELEMENTS = 2**40


# ----- schema slots: field numbers of the tables read here (tensorflow/lite/schema.fbs) ----------


class ModelSlot(IntEnum):
    VERSION = 0
    OPERATOR_CODES = 1
    SUBGRAPHS = 2
    DESCRIPTION = 3
    BUFFERS = 4


class OperatorCodeSlot(IntEnum):
    DEPRECATED_BUILTIN_CODE = 0
    CUSTOM_CODE = 1
    VERSION = 2
    BUILTIN_CODE = 3


class SubGraphSlot(IntEnum):
    TENSORS = 0
    INPUTS = 1
    OUTPUTS = 2
    OPERATORS = 3
    NAME = 4


class TensorSlot(IntEnum):
    SHAPE = 0
    TYPE = 1
    BUFFER = 2
    NAME = 3
    QUANTIZATION = 4
    IS_VARIABLE = 5
    SPARSITY = 6
    SHAPE_SIGNATURE = 7


class QuantizationSlot(IntEnum):
    MIN = 0
    MAX = 1
    SCALE = 2
    ZERO_POINT = 3
    DETAILS_TYPE = 4
    DETAILS = 5
    QUANTIZED_DIMENSION = 6


class OperatorSlot(IntEnum):
    OPCODE_INDEX = 0
    INPUTS = 1
    OUTPUTS = 2
    BUILTIN_OPTIONS_TYPE = 3
    BUILTIN_OPTIONS = 4


class BufferSlot(IntEnum):
    DATA = 0
    OFFSET = 1
    SIZE = 2


def _enum_names(enum_class: type) -> dict[int, str]:
    return {
        v: k for k, v in vars(enum_class).items() if not k.startswith("_") and isinstance(v, int)
    }


_OPCODE_NAMES = _enum_names(tflite.BuiltinOperator)
_TYPE_NAMES = _enum_names(tflite.TensorType)
_DTYPES = {
    "FLOAT32": "<f4",
    "FLOAT16": "<f2",
    "FLOAT64": "<f8",
    "INT8": "i1",
    "UINT8": "u1",
    "INT16": "<i2",
    "UINT16": "<u2",
    "INT32": "<i4",
    "UINT32": "<u4",
    "INT64": "<i8",
    "UINT64": "<u8",
    "BOOL": "?",
    "COMPLEX64": "<c8",
    "COMPLEX128": "<c16",
}


class _Table:
    """One flatbuffer table whose vtable and fields are checked to lie inside the buffer."""

    __slots__ = ("buf", "pos", "vt", "vt_len", "what")

    def __init__(self, buf: memoryview, pos: int, what: str):
        self.buf, self.pos, self.what = buf, pos, what
        self.vt = pos - self._read(_I32, pos)
        self.vt_len = self._read(_U16, self.vt)
        if self.vt_len < 4 or self.vt_len % 2 or self.vt + self.vt_len > len(buf):
            self.fail(f"bad vtable at byte {self.vt}")

    def fail(self, why: str) -> None:
        raise ModelError(f"corrupt or truncated .tflite: {self.what}: {why}; re-export the model")

    def _read(self, fmt: struct.Struct, pos: int) -> Any:
        if pos < 0 or pos + fmt.size > len(self.buf):
            self.fail(f"offset {pos} outside the {len(self.buf)}-byte file")
        return fmt.unpack_from(self.buf, pos)[0]

    def field(self, slot: int) -> int:
        """Absolute position of field `slot`, or 0 when the field is absent."""
        at = 4 + 2 * slot
        if at + 2 > self.vt_len:
            return 0
        voff = self._read(_U16, self.vt + at)
        return self.pos + voff if voff else 0

    def scalar(self, slot: int, fmt: struct.Struct, default: Any = 0) -> Any:
        at = self.field(slot)
        return self._read(fmt, at) if at else default

    def _target(self, slot: int) -> int:
        at = self.field(slot)
        return at + self._read(_U32, at) if at else 0

    def table(self, slot: int, what: str) -> _Table | None:
        at = self._target(slot)
        return _Table(self.buf, at, what) if at else None

    def span(self, slot: int, item_size: int) -> tuple[int, int]:
        """(start, count) of the vector in field `slot`; (0, 0) when absent."""
        at = self._target(slot)
        if not at:
            return 0, 0
        count = self._read(_U32, at)
        if at + 4 + count * item_size > len(self.buf):
            self.fail(f"vector of {count} items runs past the end of the file")
        return at + 4, count

    def array(self, slot: int, dtype: str) -> np.ndarray:
        dt = np.dtype(dtype)
        start, count = self.span(slot, dt.itemsize)
        return np.frombuffer(self.buf, dt, count, start) if count else np.zeros(0, dt)

    def tables(self, slot: int, what: str) -> list[_Table]:
        start, count = self.span(slot, 4)
        positions = (start + 4 * i for i in range(count))
        return [
            _Table(self.buf, p + self._read(_U32, p), f"{what} {i}")
            for i, p in enumerate(positions)
        ]

    def string(self, slot: int) -> str:
        start, count = self.span(slot, 1)
        return bytes(self.buf[start : start + count]).decode("utf-8", "replace")


# ----- typed builtin options -------------------------------------------------------------------
#
# One dataclass per option set edgeprune reads; `OPTIONS` maps the BuiltinOptions type to it and
# to the generated `tflite` class it is read from. Field names are the schema's (snake_case): the
# generated getter of `stride_w` is `StrideW()`. Option sets not listed read as `NO_OPTIONS`.


@dataclass(frozen=True)
class Options:
    """Options of an operator whose option set edgeprune does not read: none."""

    def get(self, name: str, default: Any = None) -> Any:
        """The option `name`, or `default` when this option set has no such field."""
        return getattr(self, name, default) if name in self._names() else default

    def __getitem__(self, name: str) -> Any:
        if name not in self._names():
            raise KeyError(name)
        return getattr(self, name)

    @classmethod
    def _names(cls) -> tuple[str, ...]:
        return tuple(f.name for f in fields(cls))

    @classmethod
    def read(cls, generated: Any) -> Options:
        """This option set from an initialised generated options object, field by field."""
        getter = {name: "".join(p.capitalize() for p in name.split("_")) for name in cls._names()}
        return cls(**{name: getattr(generated, method)() for name, method in getter.items()})


NO_OPTIONS = Options()


@dataclass(frozen=True)
class WindowOptions(Options):
    """What convolutions and pooling share: how the window moves over H and W."""

    padding: int = 0
    stride_w: int = 0
    stride_h: int = 0
    fused_activation_function: int = 0


@dataclass(frozen=True)
class Conv2DOptions(WindowOptions):
    dilation_w_factor: int = 1
    dilation_h_factor: int = 1


@dataclass(frozen=True)
class DepthwiseConv2DOptions(Conv2DOptions):
    depth_multiplier: int = 0


@dataclass(frozen=True)
class TransposeConvOptions(WindowOptions):
    """TRANSPOSE_CONV: the window moves over the output (no dilation)."""


@dataclass(frozen=True)
class Pool2DOptions(WindowOptions):
    filter_width: int = 0
    filter_height: int = 0


@dataclass(frozen=True)
class ActivationOptions(Options):
    """ADD, SUB, MUL, DIV and CONCATENATION: only their fused activation matters here."""

    fused_activation_function: int = 0


@dataclass(frozen=True)
class FullyConnectedOptions(ActivationOptions):
    weights_format: int = 0
    keep_num_dims: bool = False
    asymmetric_quantize_inputs: bool = False


@dataclass(frozen=True)
class BatchMatMulOptions(Options):
    adj_x: bool = False
    adj_y: bool = False
    asymmetric_quantize_inputs: bool = False


@dataclass(frozen=True)
class ReducerOptions(Options):
    keep_dims: bool = False


# The option sets edgeprune reads, by their schema name: the BuiltinOptions type and the generated
# class both carry that name.
_READ = {
    "Conv2DOptions": Conv2DOptions,
    "DepthwiseConv2DOptions": DepthwiseConv2DOptions,
    "FullyConnectedOptions": FullyConnectedOptions,
    "BatchMatMulOptions": BatchMatMulOptions,
    "Pool2DOptions": Pool2DOptions,
    "TransposeConvOptions": TransposeConvOptions,
    "AddOptions": ActivationOptions,
    "SubOptions": ActivationOptions,
    "MulOptions": ActivationOptions,
    "DivOptions": ActivationOptions,
    "ConcatenationOptions": ActivationOptions,
    "ReducerOptions": ReducerOptions,
}
OPTIONS: dict[int, tuple[type, type[Options]]] = {
    getattr(tflite.BuiltinOptions, name): (getattr(tflite, name), kind)
    for name, kind in _READ.items()
}


def _read_options(table: _Table | None, options_type: int) -> Options:
    """The typed options of an operator, from its checked options table."""
    reader = OPTIONS.get(options_type)
    if table is None or reader is None:
        return NO_OPTIONS
    generated, kind = reader
    obj = generated()
    obj.Init(table.buf, table.pos)
    return kind.read(obj)


@dataclass(frozen=True)
class Quantization:
    """Affine quantization: real = scale * (q - zero_point), per channel along `axis`."""

    scale: np.ndarray
    zero_point: np.ndarray
    axis: int = 0
    # Byte offset of the scale vector in the file it was read from (0: not read from a file).
    scale_at: int = field(default=0, compare=False, repr=False)

    @classmethod
    def per_tensor(cls, scale: float, zero_point: int) -> Quantization:
        return cls(np.array([scale], np.float32), np.array([zero_point], np.int64))

    def _along(self, values: np.ndarray, ndim: int) -> np.ndarray:
        if values.size == 1 or ndim == 0:
            return values.reshape(())
        shape = [1] * ndim
        shape[self.axis] = values.size
        return values.reshape(shape)

    def zero_like(self, ndim: int) -> np.ndarray:
        """The stored value that dequantizes to exactly 0.0, broadcastable to a tensor of `ndim`."""
        return self._along(self.zero_point, ndim)

    def quantize(self, x: np.ndarray, dtype: np.dtype, low: int, high: int) -> np.ndarray:
        """The stored values nearest to real `x`, clipped to [low, high]."""
        scale = self._along(self.scale.astype(np.float64), np.ndim(x))
        q = np.round(x / scale) + self._along(self.zero_point, np.ndim(x))
        return np.clip(q, low, high).astype(dtype)

    def dequantize(self, q: np.ndarray) -> np.ndarray:
        scale = self._along(self.scale.astype(np.float64), q.ndim)
        return scale * (q.astype(np.float64) - self._along(self.zero_point, q.ndim))


def dequantize(stored: np.ndarray, q: Quantization | None) -> np.ndarray:
    """Real values of `stored` as a new float64 array: scale · (q − zero_point) when quantized."""
    stored = np.asarray(stored)
    return q.dequantize(stored) if q is not None else stored.astype(np.float64)


@dataclass(frozen=True)
class Tensor:
    index: int
    name: str
    shape: tuple[int, ...]
    type_name: str
    buffer: int
    quantization: Quantization | None = None
    sparse: bool = False
    signature: tuple[int, ...] | None = None  # shape_signature: -1 marks a dynamic dimension

    @property
    def dynamic(self) -> bool:
        """True when the converter marked a dimension as unknown until run time."""
        return self.signature is not None and any(d < 0 for d in self.signature)

    @property
    def dtype(self) -> np.dtype | None:
        """NumPy dtype of the stored values (None for strings, resources and packed int4)."""
        code = _DTYPES.get(self.type_name)
        return np.dtype(code) if code else None

    @property
    def size(self) -> int:
        return math.prod(self.shape)


@dataclass(frozen=True)
class Operator:
    index: int
    opcode: str
    inputs: tuple[int, ...]
    outputs: tuple[int, ...]
    options: Options = NO_OPTIONS
    custom: bool = False


@dataclass(frozen=True)
class Subgraph:
    name: str
    tensors: tuple[Tensor, ...]
    operators: tuple[Operator, ...]
    inputs: tuple[int, ...]
    outputs: tuple[int, ...]


def _read_quantization(table: _Table | None, shape: tuple[int, ...]) -> Quantization | None:
    if table is None:
        return None
    scale = table.array(QuantizationSlot.SCALE, "<f4")
    if scale.size == 0:
        return None
    zero_point = table.array(QuantizationSlot.ZERO_POINT, "<i8")
    if zero_point.size == 0:
        zero_point = np.zeros(scale.size, np.int64)
    axis = table.scalar(QuantizationSlot.QUANTIZED_DIMENSION, _I32)
    if zero_point.size != scale.size:
        table.fail(f"{scale.size} scales but {zero_point.size} zero points")
    if scale.size > 1 and not (0 <= axis < len(shape) and shape[axis] == scale.size):
        table.fail(f"{scale.size} per-channel scales do not fit shape {shape} on axis {axis}")
    if not np.all(np.isfinite(scale)):
        table.fail("non-finite quantization scale")
    scale_at, _ = table.span(QuantizationSlot.SCALE, 4)
    return Quantization(scale.astype(np.float32), zero_point.astype(np.int64), axis, scale_at)


def _read_tensor(table: _Table, index: int, num_buffers: int) -> Tensor:
    shape = table.array(TensorSlot.SHAPE, "<i4")
    if shape.size > _MAX_RANK or np.any(shape < 0):
        table.fail(f"implausible shape {shape.tolist()[: _MAX_RANK + 1]}")
    shape = tuple(int(d) for d in shape)
    if math.prod(shape) > MAX_ELEMENTS:
        table.fail(f"shape {list(shape)} claims more than {MAX_ELEMENTS:,} elements")
    signature = table.array(TensorSlot.SHAPE_SIGNATURE, "<i4")
    if signature.size > _MAX_RANK or np.any(signature < -1):
        table.fail(f"implausible shape signature {signature.tolist()[: _MAX_RANK + 1]}")
    type_code = table.scalar(TensorSlot.TYPE, _U8)
    if type_code not in _TYPE_NAMES:
        table.fail(f"unknown tensor type code {type_code}")
    buffer = table.scalar(TensorSlot.BUFFER, _U32)
    if buffer >= max(num_buffers, 1):
        table.fail(f"buffer index {buffer} but the model has {num_buffers} buffers")
    return Tensor(
        index=index,
        name=table.string(TensorSlot.NAME),
        shape=shape,
        type_name=_TYPE_NAMES.get(type_code, f"TYPE_{type_code}"),
        buffer=buffer,
        quantization=_read_quantization(
            table.table(TensorSlot.QUANTIZATION, f"quantization of tensor {index}"), shape
        ),
        sparse=bool(table.field(TensorSlot.SPARSITY)),
        signature=tuple(int(d) for d in signature) if signature.size else None,
    )


def _indices(table: _Table, slot: int, limit: int, what: str, optional_ok: bool = False):
    values = table.array(slot, "<i4")
    low = -1 if optional_ok else 0
    if values.size and (values.min() < low or values.max() >= limit):
        table.fail(f"{what} refers to tensor outside 0..{limit - 1}")
    return tuple(int(v) for v in values)


class Model:
    """A parsed .tflite model over a private, mutable copy of its bytes."""

    # Set by runtime.Runner once the interpreter is known not to crash on this model (its probe
    # passed, now or before: `vetted.py`); a copy keeps it, and `save` then records the written
    # file as vetted too: edgeprune's own rewrites of a vetted model skip the probe.
    vetted = False
    derived = False  # a copy edgeprune rewrites (copy()), not the bytes of a file as read

    def __init__(self, data: bytes | bytearray | memoryview, name: str = "<bytes>"):
        self.name = name
        self._data = bytearray(data)
        try:
            self._parse()
        except ModelError:
            raise
        except (struct.error, IndexError, ValueError, OverflowError, TypeError) as e:
            raise ModelError(
                f"corrupt or truncated .tflite {name}: {e}; re-export the model"
            ) from e

    @classmethod
    def load(cls, path: str | os.PathLike) -> Model:
        try:
            with open(path, "rb", opener=open_regular) as f:
                data = f.read()
        except OSError as e:
            raise ModelError(f"cannot read model {path}: {e.strerror}") from e
        return cls(data, name=str(path))

    def _parse(self) -> None:
        buf = memoryview(self._data)
        if len(buf) < 8 or bytes(buf[4:8]) != _IDENTIFIER:
            raise ModelError(f"{self.name} is not a .tflite file (no TFL3 identifier)")
        root = _Table(buf, _U32.unpack_from(buf, 0)[0], "model")
        self.version = root.scalar(ModelSlot.VERSION, _U32)
        self.description = root.string(ModelSlot.DESCRIPTION)
        self._buffers = [self._buffer_span(b) for b in root.tables(ModelSlot.BUFFERS, "buffer")]
        codes = root.tables(ModelSlot.OPERATOR_CODES, "operator code")
        self.opcodes = tuple(self._opcode(t) for t in codes)
        tables = root.tables(ModelSlot.SUBGRAPHS, "subgraph")
        if not tables:
            raise ModelError(f"{self.name} has no subgraph; re-export the model")
        self.subgraphs = tuple(self._subgraph(t) for t in tables)
        self._outputs_field = tables[0].field(SubGraphSlot.OUTPUTS)
        self._operators_at = tables[0].span(SubGraphSlot.OPERATORS, 4)[0] - 4  # its count
        self._check_constant_sizes()

    def _buffer_span(self, table: _Table) -> tuple[int, int]:
        start, size = table.span(BufferSlot.DATA, 1)
        offset = table.scalar(BufferSlot.OFFSET, _U64)
        external = table.scalar(BufferSlot.SIZE, _U64)
        if offset > 1:
            if offset + external > len(self._data):
                table.fail(f"external buffer at {offset}+{external} runs past the end of the file")
            start, size = offset, external
        return start, size

    def _opcode(self, table: _Table) -> tuple[str, bool]:
        code = max(
            table.scalar(OperatorCodeSlot.DEPRECATED_BUILTIN_CODE, _I8),
            table.scalar(OperatorCodeSlot.BUILTIN_CODE, _I32),
        )
        if code == tflite.BuiltinOperator.CUSTOM:
            return table.string(OperatorCodeSlot.CUSTOM_CODE), True
        return _OPCODE_NAMES.get(code, f"BUILTIN_{code}"), False

    def _subgraph(self, table: _Table) -> Subgraph:
        tensors = tuple(
            _read_tensor(t, i, len(self._buffers))
            for i, t in enumerate(table.tables(SubGraphSlot.TENSORS, "tensor"))
        )
        n = len(tensors)
        operators = []
        for i, op in enumerate(table.tables(SubGraphSlot.OPERATORS, "operator")):
            code = op.scalar(OperatorSlot.OPCODE_INDEX, _U32)
            if code >= len(self.opcodes):
                op.fail(f"opcode index {code} but the model has {len(self.opcodes)} opcodes")
            name, custom = self.opcodes[code]
            operators.append(
                Operator(
                    index=i,
                    opcode=name,
                    inputs=_indices(op, OperatorSlot.INPUTS, n, f"{name} input", True),
                    outputs=_indices(op, OperatorSlot.OUTPUTS, n, f"{name} output"),
                    options=_read_options(
                        op.table(OperatorSlot.BUILTIN_OPTIONS, f"{name} options"),
                        op.scalar(OperatorSlot.BUILTIN_OPTIONS_TYPE, _U8),
                    ),
                    custom=custom,
                )
            )
        return Subgraph(
            name=table.string(SubGraphSlot.NAME),
            tensors=tensors,
            operators=tuple(operators),
            inputs=_indices(table, SubGraphSlot.INPUTS, n, "subgraph input"),
            outputs=_indices(table, SubGraphSlot.OUTPUTS, n, "subgraph output"),
        )

    def _check_constant_sizes(self) -> None:
        for sg in self.subgraphs:
            for t in sg.tensors:
                size = self._buffers[t.buffer][1] if t.buffer < len(self._buffers) else 0
                if (
                    size
                    and t.dtype is not None
                    and not t.sparse
                    and size != t.size * t.dtype.itemsize
                ):
                    raise ModelError(
                        f"corrupt .tflite {self.name}: tensor {t.name!r} {t.shape} {t.type_name} "
                        f"needs {t.size * t.dtype.itemsize} bytes but its buffer holds {size}; "
                        "re-export the model"
                    )

    # ----- access -------------------------------------------------------------------------

    @property
    def main(self) -> Subgraph:
        return self.subgraphs[0]

    @property
    def tensors(self) -> tuple[Tensor, ...]:
        return self.main.tensors

    @property
    def operators(self) -> tuple[Operator, ...]:
        return self.main.operators

    def tensor(self, ref: int | Tensor) -> Tensor:
        return ref if isinstance(ref, Tensor) else self.main.tensors[ref]

    def is_constant(self, ref: int | Tensor) -> bool:
        t = self.tensor(ref)
        return t.buffer > 0 and self._buffers[t.buffer][1] > 0

    def tensor_data(self, ref: int | Tensor) -> np.ndarray:
        """A writable view of a constant tensor's stored values (quantized, as in the file)."""
        t = self.tensor(ref)
        if not self.is_constant(t):
            raise UnsupportedError(f"tensor {t.name!r} is not a constant: it has no data to view")
        if t.dtype is None or t.sparse:
            kind = "sparse" if t.sparse else t.type_name
            raise UnsupportedError(f"tensor {t.name!r} is stored as {kind}, which is not supported")
        start = self._buffers[t.buffer][0]
        return np.frombuffer(self._data, t.dtype, t.size, start).reshape(t.shape)

    def dequantized(self, ref: int | Tensor) -> np.ndarray:
        """A constant tensor's real values as float64."""
        t = self.tensor(ref)
        return dequantize(self.tensor_data(t), t.quantization)

    def real(self, ref: int | Tensor, stored: np.ndarray) -> np.ndarray:
        """Stored values of tensor `ref` (e.g. read from an interpreter) as float64 reals."""
        return dequantize(stored, self.tensor(ref).quantization)

    def nonzero(self, ref: int | Tensor) -> int:
        """How many stored values of a constant dequantize to something other than 0: those not
        equal to 0 (float) or to their zero point, with a scale that is not 0 (quantized),
        counted on the stored values (no float64 copy of a large weight)."""
        t = self.tensor(ref)
        data, q = self.tensor_data(t), t.quantization
        if q is None:
            return int(np.count_nonzero(data))
        live = q._along(q.scale != 0, data.ndim)
        return int(np.count_nonzero((data != q.zero_like(data.ndim)) & live))

    def buffer_users(self) -> dict[int, int]:
        """How many tensors (over all subgraphs) point at each non-empty buffer."""
        users: dict[int, int] = {}
        for sg in self.subgraphs:
            for t in sg.tensors:
                if t.buffer:
                    users[t.buffer] = users.get(t.buffer, 0) + 1
        return users

    # ----- writing ------------------------------------------------------------------------

    def copy(self) -> Model:
        """An independent model with the same structure and its own copy of the bytes."""
        clone = object.__new__(Model)
        clone.__dict__.update(self.__dict__)
        clone._data = bytearray(self._data)
        clone.derived = True
        return clone

    @property
    def nbytes(self) -> int:
        return len(self._data)

    def to_bytes(self) -> bytes:
        return bytes(self._data)

    def save(self, path: str | os.PathLike) -> None:
        """Write the model atomically: a crash never leaves a half-written file.

        The bytes are parsed again first and must describe the same graph: weights rewritten
        into buffers that overlap the file's own tables (a hostile or broken file) would leave a
        model nothing can read, so such a model is refused instead of written."""
        self.check_intact()
        atomic_write_bytes(path, self._data)
        if self.vetted:
            vetted.remember(hashlib.sha256(self._data).hexdigest())

    def check_intact(self) -> None:
        """ModelError unless the current bytes parse to the graph this model was read as."""
        try:
            again = Model(self._data, self.name)
        except ModelError as e:
            raise ModelError(
                f"{self.name}: its weight buffers overlap the file's own tables, so rewriting "
                f"them breaks the file ({e}); refusing to write it: re-export the model"
            ) from None
        if _structure(again) != _structure(self):
            raise ModelError(
                f"{self.name}: its weight buffers overlap the file's own tables, so rewriting "
                "them changes the graph; refusing to write it: re-export the model"
            )

    def single_input(self) -> Tensor:
        """The model's one input tensor; UnsupportedError for none, several or a constant."""
        inputs = self.main.inputs
        if len(inputs) != 1:
            raise UnsupportedError(f"{self.name} has {len(inputs)} inputs; edgeprune needs 1")
        if self.is_constant(inputs[0]):
            raise UnsupportedError(f"{self.name}: its input is a constant tensor; re-export it")
        return self.tensor(inputs[0])

    def stored_bytes(self, ref: int | Tensor) -> int:
        """Bytes of a tensor's buffer in the file (0 for a tensor without data)."""
        t = self.tensor(ref)
        return self._buffers[t.buffer][1] if t.buffer else 0

    def set_scales(self, ref: int | Tensor, scale: np.ndarray) -> None:
        """Rewrite a quantized tensor's scales in place (same count; zero points unchanged).

        Used to widen a per-channel scale when rewritten weights no longer fit the old one.
        """
        t = self.tensor(ref)
        if t.quantization is None or t.quantization.scale.size != np.size(scale):
            raise UnsupportedError(
                f"tensor {t.name!r} has no quantization with {np.size(scale)} scales"
            )
        new_scale = np.asarray(scale, "<f4").reshape(-1)
        np.frombuffer(self._data, "<f4", new_scale.size, t.quantization.scale_at)[:] = new_scale
        updated = replace(t, quantization=replace(t.quantization, scale=new_scale.copy()))
        tensors = list(self.main.tensors)
        tensors[t.index] = updated
        self.subgraphs = (replace(self.main, tensors=tuple(tensors)), *self.subgraphs[1:])

    def with_outputs(self, tensors: list[int], only: bool = False) -> Model:
        """A copy whose main subgraph also outputs `tensors` (after its own outputs); with
        `only`, outputs `tensors` alone and stops after the last operator they need (operators
        are stored in execution order): a pass that reads early tensors skips the rest.

        The new outputs vector is appended to the file and the subgraph's outputs field is
        re-pointed at it, and `only` shortens the operators vector's count, so everything else
        keeps its bytes and offsets.
        """
        if not self._outputs_field:
            raise UnsupportedError(f"{self.name}: the main subgraph has no outputs field to extend")
        outputs = [] if only else list(self.main.outputs)
        outputs += [t for t in dict.fromkeys(tensors) if t not in outputs]
        data = bytearray(self._data)
        if only and self._operators_at >= 0:
            writers = producers(self)
            last = max((writers[t].index for t in outputs if t in writers), default=-1)
            _U32.pack_into(data, self._operators_at, last + 1)
        data += bytes(-len(data) % 4)
        start = len(data)
        data += _U32.pack(len(outputs)) + np.asarray(outputs, "<i4").tobytes()
        if start - self._outputs_field >= 2**32:
            raise UnsupportedError("model too large to instrument (outputs beyond 4 GB)")
        _U32.pack_into(data, self._outputs_field, start - self._outputs_field)
        return Model(data, name=f"{self.name} (instrumented)")


def producers(model: Model) -> dict[int, Operator]:
    """{tensor index: the operator that writes it} for the main subgraph."""
    return {t: op for op in model.operators for t in op.outputs}


def _structure(model: Model) -> tuple:
    """What a rewrite of weights must leave unchanged: every tensor's shape, type, buffer and
    quantization scales, and every operator's code and tensors."""
    return tuple(
        (
            tuple(
                (t.shape, t.type_name, t.buffer, t.quantization is None, t.sparse)
                for t in sg.tensors
            ),
            tuple((op.opcode, op.inputs, op.outputs, op.options) for op in sg.operators),
            sg.inputs,
            sg.outputs,
        )
        for sg in model.subgraphs
    )
