"""What `edgeprune inspect` reports: operators, layers, parameters, sparsity, quantization."""

from __future__ import annotations

from typing import Any

import numpy as np

from . import edgetpu
from .layers import Layer, producers, scan, stored_parameters
from .model import Model, Tensor


def describe_quantization(t: Tensor) -> str:
    q = t.quantization
    if q is None:
        return t.type_name
    kind = f"per-channel (axis {q.axis})" if q.scale.size > 1 else "per-tensor"
    zero = "symmetric" if not np.any(q.zero_point) else "asymmetric"
    return f"{t.type_name} {kind} {zero}"


def _io(model: Model, indices: tuple[int, ...]) -> list[dict[str, Any]]:
    return [
        {"name": t.name, "shape": list(t.shape), "dtype": describe_quantization(t)}
        for t in (model.tensor(i) for i in indices)
    ]


def _layer_row(model: Model, layer: Layer) -> dict[str, Any]:
    w = model.tensor(layer.weight)
    tensors = [w] + ([model.tensor(layer.bias)] if layer.bias is not None else [])
    return {
        "op": layer.op,
        "opcode": layer.opcode,
        "name": model.tensor(layer.output).name,
        "weight_shape": list(layer.weight_shape),
        "weights": describe_quantization(w),
        "params": w.size,
        "nonzero": model.nonzero(w),
        "weight_bytes": int(sum(model.stored_bytes(t) for t in tensors)),
    }


def unseen_weights(model: Model, layers: tuple[Layer, ...]) -> dict[str, int]:
    """{opcode: weights} held by ops that are not prunable layers (an LSTM's, a custom op's
    inputs): left out of the layer table and never pruned, so the totals do not count them."""
    seen = {t for layer in layers for t in (layer.weight, layer.bias) if t is not None}
    writers, counted, found = producers(model), set(), {}
    for op in model.operators:
        for i in stored_parameters(model, op, writers):
            t = model.tensor(i)
            if i in seen or i in counted or not _learned(t) or len(t.shape) < 1:
                continue
            counted.add(i)
            found[op.opcode] = found.get(op.opcode, 0) + t.size
    for k, sub in enumerate(model.subgraphs[1:], start=1):  # WHILE/IF bodies: never scanned
        size = sum(t.size for t in sub.tensors if _learned(t) and model.is_constant(t))
        if size:
            found[f"subgraph {k}"] = size
    return found


def _learned(t: Tensor) -> bool:
    """Floating-point or quantized values (not shapes, axes or other int32 operands)."""
    return t.dtype is not None and (t.dtype.kind in "fc" or t.quantization is not None)


def shortfall(
    model: Model, layers: tuple[Layer, ...], requested: float, measured: float, kept_last: bool
) -> str | None:
    """Why far fewer weights are zero than the sparsity asked (None when they are not)."""
    if requested - measured <= 0.05:
        return None
    why = []
    if kept_last and layers:
        why.append(f"the final layer ({layers[-1].opcode}) was kept whole")
    unseen = sum(unseen_weights(model, tuple(layers)).values())
    if unseen:
        why.append(f"{unseen:,} weights sit in ops that cannot be pruned (see inspect)")
    because = f": {'; '.join(why)}" if why else ""
    return f"only {measured:.1%} of the prunable weights are zero, not {requested:.0%}{because}"


def notes(model: Model, layers: tuple[Layer, ...]) -> list[str]:
    """What the layer table does not show: weights it cannot see, an Edge TPU compilation."""
    out = [n for n in [edgetpu.note(model)] if n]
    unseen = unseen_weights(model, layers)
    if unseen:
        where = ", ".join(f"{n:,} in {opcode}" for opcode, n in unseen.items())
        out.append(f"weights edgeprune cannot see (not in the totals, never pruned): {where}")
    return out


def summarize(model: Model) -> dict[str, Any]:
    """A JSON-ready description of `model` and its prunable layers."""
    found = scan(model)
    rows = [_layer_row(model, layer) for layer in found.layers]
    params = sum(r["params"] for r in rows)
    nonzero = sum(r["nonzero"] for r in rows)
    return {
        "model": model.name,
        "bytes": model.nbytes,
        "inputs": _io(model, model.main.inputs),
        "outputs": _io(model, model.main.outputs),
        "operators": [op.opcode for op in model.operators],
        "layers": rows,
        "skipped": [{"op": i, "opcode": name, "reason": why} for i, name, why in found.skipped],
        "totals": {
            "params": params,
            "nonzero": nonzero,
            "sparsity": 1 - nonzero / params if params else 0.0,
            "weight_bytes": sum(r["weight_bytes"] for r in rows),
        },
        "notes": notes(model, found.layers),
    }
