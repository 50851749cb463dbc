"""What `edgeprune inspect` reports: operators, layers, parameters, sparsity, quantization."""

from __future__ import annotations

from typing import Any

import numpy as np

from .layers import Layer, scan
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
        "weight_bytes": int(sum(t.size * t.dtype.itemsize for t in tensors)),
    }


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
    }
