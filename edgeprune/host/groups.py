"""Running a device verb on a group of boards: all at once, each on its own line, one table.

`groupable(run)` wraps an operation's function whose first parameter after the context is
`device`: given a group's name (`edgeprune device group add NAME BOARD...`), it runs the function
once per board, concurrently in a bounded thread pool (`POOL`), each board drawing one progress
line labelled with its name. Every board runs to its end whatever the others do; nothing is
retried (a board's own result says if its link reconnected). The `GroupRun` result holds each
board's result or error; its `problem()` names the boards that failed, so the command line exits
non-zero after printing the table.
"""

from __future__ import annotations

import functools
import threading
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import Any

from ..operation import Bar, Context, Result

POOL = 8  # boards worked on at once: links and the laptop's CPU stay bounded


@dataclass
class GroupRun(Result):
    """One operation run on every board of a group."""

    group: str
    operation: str
    boards: list[dict[str, Any]] = field(default_factory=list)  # board, ok, seconds, result|error

    @property
    def failed(self) -> list[str]:
        return [b["board"] for b in self.boards if not b["ok"]]

    def problem(self) -> str | None:
        failed = self.failed
        if not failed:
            return None
        return (
            f"{self.operation} failed on {len(failed)} of {len(self.boards)} boards of "
            f"{self.group}: {', '.join(failed)}"
        )


class BoardContext(Context):
    """A board's view of the group's context: all its bars share one line, `board: what`."""

    def __init__(self, parent: Context, board: str):
        super().__init__(cancelled=parent.cancelled)
        self.parent, self.board = parent, board
        self.line: Bar | None = None
        self._lock = threading.Lock()

    def show(self, bar: Bar) -> None:
        with self._lock:
            if self.line is None:
                self.line = self.parent.bar(f"{self.board}: {bar.desc}", bar.total, bar.unit)
            self.line.total = bar.total
            self.line.set(bar.n)

    def close(self, bar: Bar) -> None:
        """The board's line stays until the board is done (`finish`)."""

    def finish(self) -> None:
        if self.line is not None:
            self.line.close()


def run_group(
    context: Context, group: str, operation: str, boards: list[str], run: Callable[..., Result]
) -> GroupRun:
    """`run(board_context, board)` for every board at once (at most POOL at a time)."""

    def one(board: str) -> dict[str, Any]:
        start = time.monotonic()
        sub = BoardContext(context, board)
        try:
            result = run(sub, board)
            entry = {"board": board, "ok": True, "result": result.to_dict()}
            problem = result.problem()
            if problem:
                entry.update(ok=False, error=problem)
        except Exception as e:  # every board is reported, none stops the others
            entry = {"board": board, "ok": False, "error": str(e) or type(e).__name__}
        finally:
            sub.finish()
        entry["seconds"] = round(time.monotonic() - start, 3)
        return entry

    with ThreadPoolExecutor(max_workers=max(1, min(POOL, len(boards)))) as pool:
        entries = list(pool.map(one, boards))
    return GroupRun(group, operation, entries)


def groupable(operation: str, per_board: Callable[[dict, str], dict] | None = None):
    """Let `run(context, device, **params)` take a group's name for `device`; `per_board(params,
    board)` gives a board its own parameters (pull: its own output folder)."""

    def wrap(run: Callable[..., Result]) -> Callable[..., Result]:
        @functools.wraps(run)
        def maybe_group(context: Context, device: str, **params: Any) -> Result:
            from .registry import group_members

            boards = group_members(device)
            if boards is None:
                return run(context, device, **params)
            return run_group(
                context,
                device,
                operation,
                boards,
                lambda c, b: run(c, b, **(per_board(params, b) if per_board else params)),
            )

        return maybe_group

    return wrap


def output_per_board(params: dict[str, Any], board: str) -> dict[str, Any]:
    """A group's pull: each board's copy goes into OUTPUT/BOARD/ (created), never one path."""
    from pathlib import Path

    folder = Path(params.get("output") or ".") / board
    folder.mkdir(parents=True, exist_ok=True)
    return {**params, "output": f"{folder}/"}
