"""Static profile of a .tflite model: MACs (dense and effective), parameters, weight bytes,
compressed size and peak activation memory — read from the file, without running it.

MACs come from the op table in `layers` (one MAC = one multiply-add). Effective MACs count only
the work of non-zero weights: a weight that is zero skips its multiply-add at every position it
is applied, so an op's effective MACs are its dense MACs × (non-zero weights / weights).

Peak activation memory is planned as TFLite's arena planner plans it (`ArenaPlanner` with its
`SimpleMemoryArena`): every non-constant tensor lives from the op that writes it (graph inputs:
from the start) to the last op that reads it (graph outputs and tensors nobody reads: to the
end); tensors are placed largest first (those alive for the whole run first of all), each in the
smallest gap between already placed tensors whose lifetimes overlap its own, at 64-byte
alignment. Ops that TFLite runs in place (`layers.IN_PLACE`) write into an input's buffer. Kernel
scratch buffers (im2col and the like) and delegate-owned memory are not included: they depend
on the kernels the runtime picks, not on the model.
"""

from __future__ import annotations

import bisect
import gzip
import itertools
from dataclasses import dataclass
from typing import Any

import numpy as np

from . import edgetpu
from .errors import EdgepruneError, ModelError, UnsupportedError
from .layers import IN_PLACE, count_macs, producers, stored_parameters
from .model import Model, Tensor
from .summary import describe_quantization

CONVENTION = "1 MAC = one multiply-add (a*b + c)"
ALIGNMENT = 64  # TFLite's kDefaultTensorAlignment
_SCALAR_BYTES = 4  # TFLite never shares tensors this small in place (kScalarTensorBytes)


# ----- shapes -----------------------------------------------------------------------------------


def parse_shape(text: str) -> tuple[int, ...]:
    """'1,224,224,3' or '1x224x224x3' as a tuple of positive integers."""
    parts = text.replace("x", ",").split(",")
    try:
        shape = tuple(int(p) for p in parts if p.strip())
    except ValueError:
        raise EdgepruneError(f"--input-shape {text!r}: write it as e.g. 1,224,224,3") from None
    if not shape or min(shape) <= 0:
        raise EdgepruneError(f"--input-shape {text!r}: every dimension must be a positive integer")
    return shape


def tensor_shapes(
    model: Model, input_shape: tuple[int, ...] | None = None
) -> tuple[list[tuple[int, ...]], str]:
    """The shape of every tensor of the main subgraph, and a note on how it was decided.

    A model whose input has dynamic dimensions other than the batch needs `input_shape`; the
    interpreter then propagates it to every tensor. A dynamic batch alone is taken as stored (1).
    """
    inputs = [model.tensor(i) for i in model.main.inputs]
    stored = [t.shape for t in model.tensors]
    if input_shape is None:
        dynamic = [t for t in inputs if t.dynamic and any(d < 0 for d in t.signature[1:])]
        if dynamic:
            t = dynamic[0]
            raise UnsupportedError(
                f"{model.name}: input {t.name!r} has dynamic shape {list(t.signature)} (-1 = "
                "unknown): profile it for a shape you give, e.g. --input-shape "
                + ",".join(str(d if d > 0 else 1) for d in t.signature)
            )
        if any(t.dynamic for t in inputs):
            return stored, "dynamic batch dimension: profiled at batch 1 (set --input-shape)"
        return stored, "shapes as stored in the model"
    if len(inputs) != 1:
        raise UnsupportedError(f"--input-shape needs a model with 1 input; {model.name} has more")
    return _propagate(model, inputs[0], input_shape), f"input shape {list(input_shape)} (given)"


def _propagate(model: Model, t: Tensor, shape: tuple[int, ...]) -> list[tuple[int, ...]]:
    signature = t.signature or t.shape
    if len(shape) != len(signature) or any(s > 0 and s != d for s, d in zip(signature, shape)):
        raise EdgepruneError(
            f"--input-shape {list(shape)} does not fit input {t.name!r} of shape "
            f"{list(signature)} (-1 = free)"
        )
    from .runtime import load_interpreter

    failure = f"the interpreter cannot run {model.name} at {list(shape)}"
    interpreter, _ = load_interpreter(model.to_bytes(), failure, allocate=False)
    try:
        interpreter.resize_tensor_input(t.index, list(shape), strict=False)
        interpreter.allocate_tensors()
        details = interpreter.get_tensor_details()
    except (ValueError, RuntimeError) as e:
        raise EdgepruneError(f"{failure}: {e}") from e
    shapes = [tt.shape for tt in model.tensors]
    for d in details:
        if d["index"] < len(shapes):
            shapes[d["index"]] = tuple(int(x) for x in d["shape"])
    return shapes


# ----- parameters -------------------------------------------------------------------------------


def is_parameter(t: Tensor) -> bool:
    """Constants that are learned values: floating point or quantized (shapes, axes and other
    int32 operands are not)."""
    return t.dtype is not None and (t.dtype.kind in "fc" or t.quantization is not None)


# ----- memory plan ------------------------------------------------------------------------------


@dataclass(frozen=True)
class Allocation:
    tensors: tuple[int, ...]  # tensors sharing this memory (an aliasing chain)
    size: int
    first: int  # first op index at which it is live
    last: int  # last op index at which it is live (len(ops) = to the end)
    offset: int = 0


@dataclass(frozen=True)
class MemoryPlan:
    arena_bytes: int  # high-water mark of the greedy plan
    peak_live_bytes: int  # most bytes live at one op: a lower bound for any plan
    peak_op: int  # the op where that happens
    allocations: tuple[Allocation, ...]


def _align(n: int, alignment: int) -> int:
    return -(-n // alignment) * alignment


def lifetimes(model: Model, shapes: list[tuple[int, ...]]) -> list[Allocation]:
    """One allocation per arena buffer: the non-constant tensors, with in-place outputs merged
    into the buffer of the input they share (TFLite's `ArenaPlanner::PlanAllocations`)."""
    ops, graph_in, graph_out = model.operators, set(model.main.inputs), set(model.main.outputs)
    end = len(ops)
    sizes = {}
    for t in model.tensors:
        if not model.is_constant(t) and t.dtype is not None:
            sizes[t.index] = int(np.prod(shapes[t.index], dtype=np.int64)) * t.dtype.itemsize
    refs = {t: (t in graph_in) + (t in graph_out) for t in sizes}
    for op in ops:
        for i in op.inputs:
            if i in sizes:
                refs[i] += 1
    root = {t: t for t in sizes}
    for op in ops:
        rule = IN_PLACE.get(op.opcode)
        out = op.outputs[0] if op.outputs else -1
        if rule is None or out not in sizes or out in graph_out:
            continue
        positions, unmodified = rule
        for pos in positions:
            src = op.inputs[pos] if pos < len(op.inputs) else -1
            if src not in sizes or src in graph_in:
                continue
            if not unmodified and (
                sizes[src] != sizes[out] or sizes[src] <= _SCALAR_BYTES or refs[src] > 1
            ):
                continue
            if unmodified or refs[root[src]] <= 1:
                root[out] = root[src]
            break
    first = {t: 0 for t in graph_in if t in sizes}
    left = {t: (t in graph_in) + (t in graph_out) for t in sizes}  # counts per root
    for op in ops:
        for i in op.inputs:
            if i in sizes:
                left[root[i]] += 1
    last: dict[int, int] = {}
    for op in ops:
        for o in op.outputs:
            if o in sizes:
                first.setdefault(root[o], op.index)
        for i in op.inputs:
            if i in sizes:
                left[root[i]] -= 1
                if left[root[i]] == 0:
                    last[root[i]] = op.index
    members: dict[int, list[int]] = {}
    for t in sizes:
        members.setdefault(root[t], []).append(t)
    return [
        Allocation(tuple(ts), sizes[r], first[r], last.get(r, end))
        for r, ts in members.items()
        if r in first
    ]


def plan_memory(
    model: Model, shapes: list[tuple[int, ...]], alignment: int = ALIGNMENT
) -> MemoryPlan:
    """Place every activation buffer as TFLite's greedy arena does (see the module docstring)."""
    allocations = lifetimes(model, shapes)
    end = len(model.operators)

    def order(a: Allocation):
        whole_run = a.first == 0 and a.last == end
        return (0, a.tensors[0], 0, 0) if whole_run else (1, -a.size, a.first, a.tensors[0])

    # Tensors alive for the whole run come first and overlap everything: they sit end to end
    # from offset 0 and are never searched for gaps (no gap there fits a non-empty tensor), so
    # the plan costs time linear in them; the others are searched as TFLite does.
    placed: list[Allocation] = []
    searched: list[Allocation] = []  # non-empty, not whole-run, kept sorted by offset
    base = high_water = 0
    for a in sorted(allocations, key=order):
        if a.size == 0:
            placed.append(a)
            continue
        if a.first == 0 and a.last == end:
            offset = _align(base, alignment)
            base = offset + a.size
        else:
            best, best_fit, current = None, None, base
            for other in searched:
                if other.last < a.first or other.first > a.last:
                    continue
                aligned = _align(current, alignment)
                gap = other.offset - aligned
                if aligned + a.size <= other.offset and (best_fit is None or gap < best_fit):
                    best, best_fit = aligned, gap
                current = max(current, other.offset + other.size)
                if best_fit == 0:
                    break
            offset = best if best is not None else _align(current, alignment)
        high_water = max(high_water, offset + a.size)
        done = Allocation(a.tensors, a.size, a.first, a.last, offset)
        placed.append(done)
        if not (a.first == 0 and a.last == end):
            bisect.insort(searched, done, key=lambda p: p.offset)
    # Bytes live at each op, from +size where a buffer starts and -size after it ends.
    change = [0] * (max(end, 1) + 1)
    for a in allocations:
        low, high = a.first, min(a.last, end - 1)
        if low <= high:
            change[low] += a.size
            change[high + 1] -= a.size
    live = list(itertools.accumulate(change[:-1]))
    peak_op = int(np.argmax(live))
    return MemoryPlan(high_water, live[peak_op], peak_op, tuple(placed))


# ----- the profile ------------------------------------------------------------------------------


def _spec(model: Model, index: int, shapes: list[tuple[int, ...]]) -> dict[str, Any]:
    t = model.tensor(index)
    spec = {"name": t.name, "shape": list(shapes[index]), "dtype": describe_quantization(t)}
    if t.quantization is not None and t.quantization.scale.size == 1:
        spec["scale"] = float(t.quantization.scale[0])
        spec["zero_point"] = int(t.quantization.zero_point[0])
    if t.signature is not None and t.dynamic:
        spec["signature"] = list(t.signature)
    return spec


def profile(model: Model, input_shape: tuple[int, ...] | None = None) -> dict[str, Any]:
    """A JSON-ready profile of `model` (see the module docstring for what each figure means)."""
    shapes, shape_note = tensor_shapes(model, input_shape)
    writers = producers(model)
    rows, counted, not_profiled = [], {}, []
    for op in model.operators:
        try:
            cost = count_macs(model, op, writers, shapes)
        except (IndexError, ValueError, ZeroDivisionError) as e:  # operands not of its kind
            raise ModelError(
                f"{model.name}: operator {op.index} ({op.opcode}) does not have the operands "
                f"its op code needs ({e}); re-export the model"
            ) from e
        stored = (model.tensor(t) for t in stored_parameters(model, op, writers))
        constants = [t for t in stored if is_parameter(t)]
        for t in constants:
            if t.buffer not in counted:
                counted[t.buffer] = (t.size, model.nonzero(t), t.size * t.dtype.itemsize)
        params = sum(t.size for t in constants)
        row = {
            "op": op.index,
            "opcode": op.opcode,
            "output_shape": list(shapes[op.outputs[0]]) if op.outputs else [],
            "macs": None,
            "effective_macs": None,
            "params": params,
            "nonzero_params": sum(counted[t.buffer][1] for t in constants),
            "weight_bytes": sum(counted[t.buffer][2] for t in constants),
        }
        if cost is None:
            not_profiled.append({"op": op.index, "opcode": op.opcode})
        else:
            row["macs"] = row["effective_macs"] = cost.dense
            if cost.weight is not None and cost.dense:
                w = model.tensor(cost.weight)
                kept = counted[w.buffer][1] if w.buffer in counted else model.nonzero(w)
                row["effective_macs"] = int(round(cost.dense * kept / max(w.size, 1)))
        rows.append(row)
    data = model.to_bytes()
    plan = plan_memory(model, shapes)
    params = sum(v[0] for v in counted.values())
    nonzero_params = sum(v[1] for v in counted.values())
    return {
        "model": model.name,
        "convention": CONVENTION,
        "shapes": shape_note,
        "inputs": [_spec(model, i, shapes) for i in model.main.inputs],
        "outputs": [_spec(model, i, shapes) for i in model.main.outputs],
        "ops": rows,
        "not_profiled": not_profiled,
        "notes": [n for n in [edgetpu.note(model)] if n],
        "totals": {
            "macs": sum(r["macs"] or 0 for r in rows),
            "effective_macs": sum(r["effective_macs"] or 0 for r in rows),
            "params": params,
            "nonzero_params": nonzero_params,
            "sparsity": 1 - nonzero_params / params if params else 0.0,
            "weight_bytes": sum(v[2] for v in counted.values()),
            "file_bytes": len(data),
            "gzip_bytes": len(gzip.compress(data, compresslevel=9, mtime=0)),
        },
        "memory": {
            "arena_bytes": plan.arena_bytes,
            "peak_live_bytes": plan.peak_live_bytes,
            "peak_op": plan.peak_op,
            "buffers": len(plan.allocations),
            "method": "TFLite-style greedy arena over tensor lifetimes in execution order, "
            f"{ALIGNMENT}-byte aligned; kernel scratch buffers not included",
        },
    }


# ----- two models side by side ------------------------------------------------------------------

COMPARED = (
    ("macs", "totals"),
    ("effective_macs", "totals"),
    ("params", "totals"),
    ("nonzero_params", "totals"),
    ("weight_bytes", "totals"),
    ("file_bytes", "totals"),
    ("gzip_bytes", "totals"),
    ("arena_bytes", "memory"),
    ("peak_live_bytes", "memory"),
)


def compare(a: dict[str, Any], b: dict[str, Any]) -> dict[str, Any]:
    """Two profiles side by side: each total of A and B and the ratio B / A; per op as well
    when both models run the same sequence of ops (e.g. a model and its pruned copy)."""
    rows = []
    for key, section in COMPARED:
        x, y = a[section][key], b[section][key]
        rows.append({"metric": key, "a": x, "b": y, "ratio": y / x if x else None})
    same_graph = [r["opcode"] for r in a["ops"]] == [r["opcode"] for r in b["ops"]]
    per_op = []
    if same_graph:
        for ra, rb in zip(a["ops"], b["ops"]):
            if ra["macs"] or rb["macs"] or ra["params"] or rb["params"]:
                x, y = ra["effective_macs"], rb["effective_macs"]
                per_op.append(
                    {
                        "op": ra["op"],
                        "opcode": ra["opcode"],
                        "effective_macs": [x, y],
                        "nonzero_params": [ra["nonzero_params"], rb["nonzero_params"]],
                        "ratio": y / x if x and y is not None else None,
                    }
                )
    return {
        "a": a["model"],
        "b": b["model"],
        "convention": CONVENTION,
        "totals": rows,
        "same_graph": same_graph,
        "ops": per_op,
        "not_profiled": {"a": a["not_profiled"], "b": b["not_profiled"]},
    }
