"""The edgeprune operations a host may RUN on the board, and how one is run.

Only edgeprune's board operations (`edgeprune.operations`, `board=True`) can run. A RUN names
one and gives its parameters as JSON; they are checked by the operation's own declarations
(types, allowed values), and every parameter declared to name a file the operation reads or
writes is confined to the work directory. The operation is called in-process (no shell, no
subprocess, no command-line parsing); its progress bars become progress events, CANCEL makes its
next progress step raise `Cancelled`, and its typed result is the RUN's answer.

USB power meters are not registered here: on a board, `bench --energy` reads the meters the core
reads itself (RAPL, INA2xx hwmon, the Pi 5 PMIC) or estimates; the agent opens no serial port or
network connection for an operation.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from .files import WorkDir
from .protocol import ProtocolError

Emit = Callable[[dict[str, Any]], None]
PROGRESS_INTERVAL = 0.25  # seconds between progress events of one bar (the last always goes)


def _board_operations() -> dict[str, Any]:
    from edgeprune import (
        operation,
        operations,  # noqa: F401  (registers the core's operations)
    )

    return {name: op for name, op in operation.registered().items() if op.board}


def available() -> list[str]:
    """The operations this board can run."""
    return list(_board_operations())


@dataclass(frozen=True)
class Checked:
    """A RUN that passed the checks: the operation, its bound parameters, the files it writes."""

    operation: Any
    params: dict[str, Any]
    outputs: list[str]


def check_request(name: object, params: object, workdir: WorkDir) -> Checked:
    """Validate RUN's operation and parameters against the declarations and the work directory.

    A parameter error becomes ProtocolError("bad_arguments") carrying edgeprune's one-line
    message; a path outside the work directory, ProtocolError("path").
    """
    from edgeprune.errors import EdgepruneError

    if not isinstance(params, dict):
        raise ProtocolError("bad_request", "params must be an object")
    ops = _board_operations()
    if name not in ops:
        raise ProtocolError(
            "unknown_operation",
            f"unknown operation {name!r}: this board runs {', '.join(ops)}",
        )
    op = ops[name]
    try:
        bound = op.bind(params)
    except EdgepruneError as e:
        raise ProtocolError("bad_arguments", str(e)) from None
    for path in op.files(bound, "input"):
        workdir.resolve(path)
    outputs = [workdir.relative(workdir.resolve(path)) for path in op.files(bound, "output")]
    return Checked(op, bound, outputs)


def _context(emit: Emit, cancelled: threading.Event):
    """A Context that sends each bar's progress as events (at most every PROGRESS_INTERVAL
    seconds per bar, and its last step) and is cancelled when `cancelled` is set."""
    from edgeprune.operation import Bar, Context

    class Events(Context):
        def __init__(self) -> None:
            super().__init__(cancelled=cancelled.is_set)
            self.last: dict[int, float] = {}

        def show(self, bar: Bar) -> None:
            now = time.monotonic()
            done = bar.total is not None and bar.n >= bar.total
            if not done and now - self.last.get(id(bar), 0.0) < PROGRESS_INTERVAL:
                return
            self.last[id(bar)] = now
            emit(
                {
                    "kind": "progress",
                    "desc": bar.desc,
                    "n": bar.n,
                    "total": bar.total,
                    "unit": bar.unit,
                    "elapsed": round(now - bar.start, 3),
                }
            )

        def close(self, bar: Bar) -> None:
            self.last.pop(id(bar), None)

    return Events()


def run(checked: Checked, emit: Emit, cancelled: threading.Event) -> dict[str, Any]:
    """Run a checked operation in this process (cwd = work directory); returns its result as a
    dict. Raises edgeprune's errors (Cancelled when cancelled) for the agent to answer."""
    op = checked.operation
    return op.run(_context(emit, cancelled), **checked.params).to_dict()
