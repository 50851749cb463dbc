"""Reading a recipe dataclass back from its JSON dict, with a one-line error for bad input."""

from __future__ import annotations

import dataclasses
from typing import Any

from ..errors import EdgepruneError


def from_dict(cls: type, d: Any, kind: str) -> Any:
    """`cls(**d)` for a recipe dict of `kind` (written by `to_dict()`), checked field by field."""
    if not isinstance(d, dict):
        raise EdgepruneError(f"an {kind} recipe must be a JSON object, not {type(d).__name__}")
    d = dict(d)
    found = d.pop("kind", kind)
    if found != kind:
        raise EdgepruneError(f"recipe is of kind {found!r}, not {kind!r}")
    names = {f.name for f in dataclasses.fields(cls)}
    unknown = sorted(set(d) - names)
    if unknown:
        raise EdgepruneError(
            f"unknown {kind} recipe field(s) {', '.join(unknown)}: the recipe was written by "
            f"a newer edgeprune, or is not an {kind} recipe"
        )
    try:
        return cls(**d)
    except (TypeError, ValueError) as e:  # a value of the wrong type or shape
        raise EdgepruneError(f"invalid {kind} recipe: {e}") from e
