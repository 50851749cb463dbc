"""Memory budgets: what `record` will allocate, estimated from the model before it allocates.

A small file can declare huge activation tensors; `record` keeps running sums of every prunable
layer's input and output and an interpreter (two when it overlaps the sums with the next
invocation), so its memory follows the declared shapes, not the file's size. `record_bytes`
adds those up and `check` refuses, with the figure, an estimate above `--max-memory`
(`DEFAULT_MAX_MEMORY` unless given).
"""

from __future__ import annotations

import math
import re
from typing import TYPE_CHECKING

from .errors import EdgepruneError

if TYPE_CHECKING:  # importing numpy here would slow `edgeprune --help`
    from .model import Model

DEFAULT_MAX_MEMORY = "2G"
_SIZE = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*([kmgt]?)i?b?\s*$", re.IGNORECASE)
_UNITS = {"": 1, "k": 2**10, "m": 2**20, "g": 2**30, "t": 2**40}
# Bytes per summed activation value: float64 carry + float32 partial + scratch, twice when the
# sums of one sample overlap the next invocation (double-buffered).
_PER_VALUE = 2 * (8 + 4 + 4)


def parse_size(text: object) -> int:
    """Bytes from `2G`, `512M`, `1.5g`, `100000` (binary units); EdgepruneError otherwise."""
    if isinstance(text, int) and not isinstance(text, bool) and text > 0:
        return text
    match = _SIZE.match(str(text))
    if not match or float(match[1]) <= 0:
        raise EdgepruneError(f"{text!r} is not a memory size: write e.g. 2G, 512M or 1.5G")
    return int(float(match[1]) * _UNITS[match[2].lower()])


def record_bytes(model: Model, watched: list[int]) -> int:
    """About the most memory `record` allocates for `model` watching `watched` tensors:
    the running sums, two interpreters' activation arenas and four copies of the model."""
    sums = sum(math.prod(model.tensor(t).shape[1:] or (1,)) for t in watched) * _PER_VALUE
    arena = sum(
        t.size * t.dtype.itemsize
        for t in model.tensors
        if t.dtype is not None and not model.is_constant(t)
    )
    return sums + 2 * arena + 4 * model.nbytes


def check(model: Model, watched: list[int], limit: object, what: str = "record") -> int:
    """The estimate, after refusing one above `limit` (a size as `parse_size` reads it)."""
    budget = parse_size(DEFAULT_MAX_MEMORY if limit is None else limit)
    need = record_bytes(model, watched)
    if need > budget:
        raise EdgepruneError(
            f"{what} would need about {_human(need)} for {model.name} (its declared tensor "
            f"shapes), over --max-memory {_human(budget)}: raise --max-memory if the machine "
            "has it"
        )
    return need


def _human(n: int) -> str:
    for unit, size in (("TiB", 2**40), ("GiB", 2**30), ("MiB", 2**20), ("KiB", 2**10)):
        if n >= size:
            return f"{n / size:,.1f} {unit}"
    return f"{n} bytes"
