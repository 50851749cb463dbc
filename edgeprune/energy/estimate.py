"""Energy per inference estimated from MACs and bytes moved, for boards without a meter.

Per-operation energies at 45 nm, 0.9 V, from M. Horowitz, "Computing's energy problem (and what
we can do about it)", ISSCC 2014, Figure 1.1.9:

- 32-bit float multiply 3.7 pJ + add 0.9 pJ: 4.6 pJ per float MAC
- 8-bit integer multiply 0.2 pJ + 32-bit integer add 0.1 pJ (int32 accumulator): 0.3 pJ per
  int8 MAC
- DRAM: 1.3-2.6 nJ per 64-bit access; the middle, 1.95 nJ, is 244 pJ per byte
- SRAM cache, 32 KB: 20 pJ per 64-bit access, 2.5 pJ per byte

The model: every weight byte comes from DRAM once per inference; every activation byte an op
reads or writes goes through a 32 KB cache; every MAC the kernels execute (dense MACs: TFLite's
kernels do not skip zero weights) costs one MAC of the precision it runs in (int8 for int8 and
dynamic-range kernels, float32 otherwise — fp16 weights are expanded to float32 on CPUs). It
leaves out static power, instruction and control overheads, so a real board spends several
times more: use it to compare models, not to size a battery.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from ..model import Model

PJ_MAC = {"float32": 4.6, "int8": 0.3}
PJ_DRAM_BYTE = (1300 / 8, 1950 / 8, 2600 / 8)  # low, middle, high
PJ_SRAM_BYTE = 20 / 8
SOURCE = "Horowitz, ISSCC 2014 (45 nm): see docs/MEASURE.md"


def _precision(model: Model, op_index: int) -> str:
    op = model.operators[op_index]
    types = {model.tensor(i).type_name for i in op.inputs if i >= 0}
    return "int8" if types & {"INT8", "UINT8"} else "float32"


def estimate(model: Model, info: dict[str, Any], shapes: list[tuple[int, ...]]) -> dict[str, Any]:
    """Joules per inference (and their parts) for `model`, whose profile is `info`."""
    mac_pj = {"float32": 0.0, "int8": 0.0}
    activation_bytes = 0
    for row in info["ops"]:
        if row["macs"]:
            precision = _precision(model, row["op"])
            mac_pj[precision] += row["macs"] * PJ_MAC[precision]
        op = model.operators[row["op"]]
        for i in (*op.inputs, *op.outputs):
            t = model.tensor(i) if i >= 0 else None
            if t is not None and not model.is_constant(t) and t.dtype is not None:
                activation_bytes += int(np.prod(shapes[i], dtype=np.int64)) * t.dtype.itemsize
    weight_bytes = info["totals"]["weight_bytes"]
    compute = sum(mac_pj.values())
    memory = [weight_bytes * e + activation_bytes * PJ_SRAM_BYTE for e in PJ_DRAM_BYTE]
    return {
        "joules_per_inference": (compute + memory[1]) * 1e-12,
        "range_joules": [(compute + memory[0]) * 1e-12, (compute + memory[2]) * 1e-12],
        "compute_joules": compute * 1e-12,
        "memory_joules": memory[1] * 1e-12,
        "macs_by_precision": {p: round(pj / PJ_MAC[p]) for p, pj in mac_pj.items() if pj},
        "weight_bytes": weight_bytes,
        "activation_bytes": activation_bytes,
        "source": SOURCE,
    }
