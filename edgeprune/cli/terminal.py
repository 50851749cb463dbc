"""Progress on a terminal: an operation's bars drawn with tqdm on stderr, only when stderr is a
terminal (a log file or a pipe gets no bar fragments)."""

from __future__ import annotations

import sys
from typing import Any

from ..operation import Bar, Context


class TerminalContext(Context):
    """Draws each bar of a running operation; `quiet`, or a stderr that is not a terminal, draws
    none. Ctrl-C cancels (the KeyboardInterrupt reaches the CLI, which says nothing was
    written)."""

    def __init__(self, quiet: bool = False, label: str = ""):
        super().__init__()
        self.quiet, self.label = quiet or not _is_terminal(sys.stderr), label
        self._bars: dict[int, Any] = {}

    def show(self, bar: Bar) -> None:
        if self.quiet:
            return
        drawn = self._bars.get(id(bar))
        if drawn is None:
            from tqdm import tqdm

            scaled = bar.unit == "B"
            desc = f"{self.label}: {bar.desc}" if self.label else bar.desc
            drawn = tqdm(total=bar.total, desc=desc, unit=bar.unit, unit_scale=scaled,
                         unit_divisor=1024 if scaled else 1000, leave=False)  # fmt: skip
            self._bars[id(bar)] = drawn
        drawn.total = bar.total
        drawn.update(bar.n - drawn.n)

    def close(self, bar: Bar) -> None:
        drawn = self._bars.pop(id(bar), None)
        if drawn is not None:
            drawn.close()

    def close_all(self) -> None:
        for drawn in self._bars.values():
            drawn.close()
        self._bars.clear()


def _is_terminal(stream) -> bool:
    try:
        return stream.isatty()
    except (AttributeError, ValueError):  # replaced or closed
        return False
