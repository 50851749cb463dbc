"""Charts by name: the host side registers what draws them, operations ask for them by name.

The core draws nothing itself (matplotlib is a host library). `edgeprune.host.charts` registers
its plotters here when it is imported; the command line imports it where it is installed. An
operation that was asked for a chart calls `draw`, which says what to install when none is
registered; one that would only add a chart to a report checks `available` first.
"""

from __future__ import annotations

import os
from collections.abc import Callable
from pathlib import Path
from typing import Any

from .errors import EdgepruneError

Plotter = Callable[[dict[str, Any], str | os.PathLike], Path]
_PLOTTERS: dict[str, Plotter] = {}


def register(name: str, plotter: Plotter) -> None:
    """Draw chart `name` with `plotter(data, path)`, which writes a PNG and returns its path."""
    _PLOTTERS[name] = plotter


def available(name: str) -> bool:
    return name in _PLOTTERS


def draw(name: str, data: dict[str, Any], path: str | os.PathLike) -> Path:
    """Draw chart `name` of `data` into `path`; a one-line error when nothing can draw it."""
    if name not in _PLOTTERS:
        raise EdgepruneError(
            f"drawing the {name} chart needs matplotlib: pip install 'edgeprune[host]'"
        )
    return _PLOTTERS[name](data, path)
