"""Hostile inputs for the hardening tests and the attack run, made from the committed fixtures.

Each function returns the bytes (or writes the file) of one input that once cost a traceback,
a crash or unbounded memory (issue 13); `tests/test_hardening.py` checks every one fails with
one line, `benchmarks/attack.py` runs them and random mutations through the CLI. Models are
patched in place through the bounds-checked reader's own tables, so every patch lands on the
field it names.
"""

from __future__ import annotations

import io
import json
import platform
import struct
import zipfile
from pathlib import Path

import numpy as np

from edgeprune.model import _U32, ModelSlot, OperatorSlot, SubGraphSlot, TensorSlot, _Table
from tests.models import build

_I32 = struct.Struct("<i")


def _main(data: bytearray) -> _Table:
    buf = memoryview(data)
    root = _Table(buf, _U32.unpack_from(buf, 0)[0], "model")
    return root.tables(ModelSlot.SUBGRAPHS, "subgraph")[0]


def _vector(table: _Table, slot: int) -> tuple[int, int]:
    start, count = table.span(slot, 4)
    if not start:
        raise ValueError(f"slot {slot} absent")
    return start, count


def _set_vector(data: bytearray, table: _Table, slot: int, values: list[int]) -> None:
    """Overwrite an int32 vector with `values` (no longer than it is; shorter sets its count)."""
    start, count = _vector(table, slot)
    assert len(values) <= count
    _U32.pack_into(data, start - 4, len(values))
    for i, v in enumerate(values):
        _I32.pack_into(data, start + 4 * i, v)


def model(kind: str = "int8") -> bytearray:
    return bytearray(build(kind))


def tensors(data: bytearray) -> list[_Table]:
    return _main(data).tables(SubGraphSlot.TENSORS, "tensor")


def operators(data: bytearray) -> list[_Table]:
    return _main(data).tables(SubGraphSlot.OPERATORS, "operator")


def unknown_bias_type() -> bytes:
    """The int8 fixture with its first bias (INT32) retyped to an unknown type code."""
    from edgeprune.layers import scan
    from edgeprune.model import Model

    data = model("int8")
    bias = scan(Model(bytes(data))).layers[0].bias
    at = tensors(data)[bias].field(TensorSlot.TYPE)
    data[at] = 200
    return bytes(data)


def opcode_of_another_op() -> bytes:
    """The first CONV_2D re-pointed at the opcode of RESHAPE (fewer inputs than a conv)."""
    from edgeprune.model import Model

    data = model("int8")
    m = Model(bytes(data))
    codes = [name for name, _ in m.opcodes]
    ops = operators(data)
    for op, table in zip(m.operators, ops):
        if op.opcode == "FULLY_CONNECTED":
            at = table.field(OperatorSlot.OPCODE_INDEX)
            if at:
                _U32.pack_into(data, at, codes.index("RESHAPE"))
                return bytes(data)
    raise AssertionError("fixture changed")


def dense_as_depthwise() -> bytes:
    """A FULLY_CONNECTED re-pointed at the DEPTHWISE_CONV_2D opcode (a 2-D weight where a 4-D
    one goes: its MAC rule once raised IndexError)."""
    from edgeprune.model import Model

    data = model("int8")
    m = Model(bytes(data))
    codes = [name for name, _ in m.opcodes]
    index = next(op.index for op in m.operators if op.opcode == "FULLY_CONNECTED")
    at = operators(data)[index].field(OperatorSlot.OPCODE_INDEX)
    _U32.pack_into(data, at, codes.index("DEPTHWISE_CONV_2D"))
    return bytes(data)


def wrapping_shape() -> bytes:
    """A weight whose shape's int64 product wraps around to exactly its buffer's size.

    The first conv weight of the int8 fixture has 216 = 2**3·27 int8 elements; with
    2**62 + 1 = 5·5581·8681·49477·384773 the shape [216, 5·384773, 5581·8681, 49477] has the
    product 216·(2**62 + 1) = 216 + 54·2**64, which an int64 product reads as 216.
    """
    data = model("int8")
    shape = [216, 5 * 384773, 5581 * 8681, 49477]
    assert int(np.prod(shape, dtype=np.int64)) == 216
    weight = next(i for i in range(len(tensors(data))) if _shape(data, i) == [8, 3, 3, 3])
    _set_vector(data, tensors(data)[weight], TensorSlot.SHAPE, shape)
    return bytes(data)


def _shape(data: bytearray, index: int) -> list[int]:
    return tensors(data)[index].array(TensorSlot.SHAPE, "<i4").tolist()


def no_inputs() -> bytes:
    data = model("int8")
    start, _ = _vector(_main(data), SubGraphSlot.INPUTS)
    _U32.pack_into(data, start - 4, 0)
    return bytes(data)


def constant_input() -> bytes:
    """The model input re-pointed at a weight tensor."""
    from edgeprune.model import Model

    data = model("int8")
    m = Model(bytes(data))
    weight = next(t.index for t in m.tensors if m.is_constant(t))
    _set_vector(data, _main(data), SubGraphSlot.INPUTS, [weight])
    return bytes(data)


def op_cycle() -> bytes:
    """The first operator's data input re-pointed at the last operator's output."""
    from edgeprune.model import Model

    data = model("int8")
    m = Model(bytes(data))
    first = m.operators[0]
    ops = operators(data)
    start, _ = _vector(ops[0], OperatorSlot.INPUTS)
    _I32.pack_into(data, start, m.operators[-2].outputs[0])
    assert first.inputs
    return bytes(data)


def zero_scale() -> bytes:
    """The model input's quantization scale set to −0.0 (LiteRT once segfaulted on it)."""
    from edgeprune.model import Model

    data = model("int8")
    m = Model(bytes(data))
    q = m.tensor(m.main.inputs[0]).quantization
    struct.pack_into("<f", data, q.scale_at, -0.0)
    return bytes(data)


# How LiteRT meets optional_weight(): its x86-64 build segfaults (the child-process probe reports
# the crash); its aarch64 build refuses the model while preparing it.
X86 = platform.machine() == "x86_64"
OPTIONAL_WEIGHT_FAILS = "crashed (SIGSEGV)" if X86 else "failed to prepare"


def optional_weight() -> bytes:
    """The first conv's weight input marked optional (-1): LiteRT segfaults preparing it."""
    data = model("int8")
    start, _ = _vector(operators(data)[0], OperatorSlot.INPUTS)
    _I32.pack_into(data, start + 4, -1)
    return bytes(data)


MODELS = {
    "optional_weight": optional_weight,
    "unknown_bias_type": unknown_bias_type,
    "opcode_of_another_op": opcode_of_another_op,
    "dense_as_depthwise": dense_as_depthwise,
    "wrapping_shape": wrapping_shape,
    "no_inputs": no_inputs,
    "constant_input": constant_input,
    "op_cycle": op_cycle,
    "zero_scale": zero_scale,
}


# ----- packages ---------------------------------------------------------------------------------


def zip_bytes(members: dict[str, bytes], method: int = zipfile.ZIP_DEFLATED) -> bytes:
    out = io.BytesIO()
    with zipfile.ZipFile(out, "w", method) as zf:
        for name, content in members.items():
            zf.writestr(name, content)
    return out.getvalue()


def manifest_for(model_bytes: bytes, **extra) -> dict:
    import hashlib

    from edgeprune.model import Model
    from edgeprune.package import tensor_spec

    m = Model(model_bytes)
    manifest = {
        "format": "edgepkg",
        "format_version": 1,
        "name": "hostile",
        "version": "1",
        "model": {
            "path": "model.tflite",
            "sha256": hashlib.sha256(model_bytes).hexdigest(),
            "bytes": len(model_bytes),
        },
        "inputs": [tensor_spec(m, i) for i in m.main.inputs] or [{"name": "x", "shape": [1],
                                                                   "type": "INT8"}],
        "outputs": [tensor_spec(m, i) for i in m.main.outputs] or [{"name": "y", "shape": [1],
                                                                     "type": "INT8"}],
    }  # fmt: skip
    manifest.update(extra)
    return manifest


def package(model_bytes: bytes | None = None, extra_members=None, raw_manifest=None, **manifest):
    model_bytes = model_bytes if model_bytes is not None else build("int8")
    text = (
        raw_manifest
        if raw_manifest is not None
        else json.dumps(manifest_for(model_bytes, **manifest))
    )
    members = {"manifest.json": text.encode(), "model.tflite": model_bytes}
    members.update(extra_members or {})
    return zip_bytes(members)


def packages() -> dict[str, bytes]:
    """Packages that once cost a traceback (issue 13, item 4)."""
    deep = '{"a":' * 200_000 + "1" + "}" * 200_000
    return {
        "file_beside_dir": package(extra_members={"x": b"1", "x/y": b"2"}),
        "long_path": package(extra_members={"/".join(["d" * 200] * 21): b"1"}),
        "deep_manifest": package(raw_manifest=deep),
        "huge_integer": package(raw_manifest='{"format_version": ' + "9" * 5000 + "}"),
        "labels_no_outputs": package(no_outputs_model(), labels=["a"]),
        "ragged_mean": package(
            preprocessing={"kind": "image", "size": [16, 16], "mean": [[0.0], [1.0, 2.0]]}
        ),
        "ansi_name": package(extra_members={"\x1b[31mred\x1b[0m": b"1"}),
    }


def no_outputs_model() -> bytes:
    data = model("int8")
    start, _ = _vector(_main(data), SubGraphSlot.OUTPUTS)
    _U32.pack_into(data, start - 4, 0)
    return bytes(data)


# ----- data files -------------------------------------------------------------------------------


def data_files(folder: Path, sample_shape=(16, 16, 3)) -> dict[str, Path]:
    """.npy/.npz files with dtypes and headers that once cost a traceback or unbounded memory."""
    folder.mkdir(parents=True, exist_ok=True)
    files = {}
    n = int(np.prod(sample_shape))
    for name, arr in {
        "strings": np.array([["a"] * n]).reshape(1, *sample_shape),
        "void": np.zeros((1, *sample_shape), "V4"),
        "datetime": np.zeros((1, *sample_shape), "M8[s]"),
        "structured": np.zeros((1, *sample_shape), [("a", "<f4"), ("b", "<i4")]),
        "nan": np.full((2, *sample_shape), np.nan, np.float32),
        "inf": np.concatenate([np.zeros((1, *sample_shape)), np.full((1, *sample_shape), np.inf)]),
    }.items():
        files[name] = folder / f"{name}.npy"
        np.save(files[name], arr)
    # An .npz member whose header claims 2**40 samples on a few bytes of data.
    header = io.BytesIO()
    np.lib.format.write_array_header_1_0(
        header, {"descr": "<f4", "fortran_order": False, "shape": (2**40, *sample_shape)}
    )
    files["npz_claims_4TB"] = folder / "claims.npz"
    with zipfile.ZipFile(files["npz_claims_4TB"], "w") as zf:
        zf.writestr("x.npy", b"\x93NUMPY" + header.getvalue()[6:] + b"\0" * 64)
    return files


def model_commands(model: Path, samples: Path, out: Path) -> dict[str, list]:
    """The argv of every command that reads a MODEL, writing what it writes into `out`."""
    return {
        "inspect": ["inspect", model],
        "profile": ["profile", model],
        "prune": ["prune", model, "--sparsity", "0.5", "--score", "magnitude", "-o",
                  out / "o.tflite"],
        "record": ["record", model, samples, "-o", out / "m.npz", "-q"],
        "compare": ["compare", model, model],
    }  # fmt: skip


def overlapping_headers(size: int = 2 << 20, length: int = 1 << 20) -> bytes:
    """`size` bytes of valid PUT_DATA frame headers back to back, each announcing `length`
    bytes: each starts inside the frame the one before announced and none has a valid payload
    CRC (once 13 s of an agent's CPU per 2 MiB). Then enough zeros to complete the last one, so
    that a frame sent after them can be read."""
    import zlib

    from firmware_bridge import protocol as p

    head = p.HEADER.pack(p.MAGIC, p.VERSION, p.PUT_DATA, 1, length)
    head += zlib.crc32(head).to_bytes(4, "big")
    return head * (size // len(head)) + bytes(length + p.OVERHEAD)
