"""The edgeprune operations a host may RUN on the board, and how one is run.

Nothing but these table entries can run: an operation is the `edgeprune` subcommand of the same
name, parsed by edgeprune's own parser and called in-process through `edgeprune.cli.main` (no
shell, no subprocess). Every argument that names a file must be declared here as an input or an
output and is confined to the work directory; any other string-valued option the host sets is
refused, so a new option that takes a path cannot slip past the confinement.

Progress comes from edgeprune's tqdm bars: while an operation runs, `tqdm.std.tqdm.display` is
replaced by a hook that turns each refresh into a progress event and raises KeyboardInterrupt
when the host has cancelled (edgeprune's CLI reports that as "interrupted; nothing was written").
"""

from __future__ import annotations

import argparse
import contextlib
import io
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import Any, NamedTuple

from .files import WorkDir
from .protocol import ProtocolError

Emit = Callable[[dict[str, Any]], None]
PROGRESS_INTERVAL = 0.25  # seconds between progress events of one bar (the last always goes)


@dataclass(frozen=True)
class Operation:
    """Which parsed arguments (argparse dests) of a subcommand name files, and which are plain."""

    inputs: tuple[str, ...] = ("model",)
    outputs: tuple[str, ...] = ()
    values: tuple[str, ...] = ()  # string-valued options that never name a file


_PRUNE_CHOICES = ("score", "scope", "granularity")
OPERATIONS: dict[str, Operation] = {
    "inspect": Operation(),
    "record": Operation(inputs=("model", "data", "resume"), outputs=("output",), values=("mode",)),
    "prune": Operation(inputs=("model", "map"), outputs=("output",), values=_PRUNE_CHOICES),
    "personalize": Operation(
        inputs=("model", "data", "labels", "test"),
        outputs=("output", "report"),
        values=("sparsity", "rule", "mode", "stages", *_PRUNE_CHOICES),
    ),
    # Run only when the board's edgeprune has these subcommands (the host companion's profile
    # and bench); until then RUN answers "unknown operation".
    "profile": Operation(values=("input_shape",)),
    "bench": Operation(values=("delegate", "energy", "input_shape")),
}
_INTERNAL_DESTS = {"command", "func", "help"}
QUIET = ("-q", "--quiet")


def _subcommands(parser: argparse.ArgumentParser) -> dict[str, argparse.ArgumentParser]:
    for action in parser._actions:  # argparse keeps subparsers as a private action type
        if isinstance(action, argparse._SubParsersAction):
            return dict(action.choices)
    return {}


def available() -> list[str]:
    """The operations this board can run: in the table and known to its edgeprune."""
    from edgeprune.cli import build_parser

    return _runnable(build_parser())


def _runnable(parser: argparse.ArgumentParser) -> list[str]:
    known = _subcommands(parser)
    return [name for name in OPERATIONS if name in known]


def _strings(value: Any) -> list[str]:
    if isinstance(value, str):
        return [value]
    if isinstance(value, list | tuple):
        return [v for v in value if isinstance(v, str)]
    return []


class Checked(NamedTuple):
    """A RUN that passed the checks: the argv to run, and the files it may write."""

    argv: list[str]
    outputs: list[str]


def check_arguments(name: object, args: object, workdir: WorkDir) -> Checked:
    """Validate RUN's operation and arguments against the table and the work directory.

    Parses with edgeprune's own parser so the board sees exactly what `edgeprune` would; a
    usage error becomes ProtocolError("bad_arguments") carrying argparse's message. A quiet
    flag is dropped: the host decides what to show, and progress is also how CANCEL gets in.
    """
    if not isinstance(args, list) or not all(isinstance(a, str) for a in args):
        raise ProtocolError("bad_request", "args must be a list of strings")
    from edgeprune.cli import build_parser

    parser = build_parser()
    runnable = _runnable(parser)
    if name not in runnable:
        raise ProtocolError(
            "unknown_operation",
            f"unknown operation {name!r}: this board runs {', '.join(runnable)}",
        )
    usage = io.StringIO()
    try:
        with contextlib.redirect_stderr(usage), contextlib.redirect_stdout(usage):
            parsed = parser.parse_args([name, *args])
    except SystemExit as e:
        kind = "help" if e.code == 0 else "bad_arguments"
        raise ProtocolError(kind, usage.getvalue().strip()) from None
    spec, subparser = OPERATIONS[name], _subcommands(parser)[name]
    outputs = []
    for dest, value in vars(parsed).items():
        if dest in _INTERNAL_DESTS or dest in spec.values:
            continue
        known = dest in spec.inputs or dest in spec.outputs
        if not known and value == subparser.get_default(dest):
            continue  # not set by the host: the operation's own default
        for text in _strings(value):
            if dest in spec.inputs:
                workdir.resolve(text)
            elif dest in spec.outputs:
                outputs.append(workdir.relative(workdir.resolve(text)))
            else:
                raise ProtocolError(
                    "bad_arguments",
                    f"option {dest!r} of {name} is not allowed on a remote board",
                )
    argv = [a for a in args if a not in QUIET] if getattr(parsed, "quiet", False) else args
    return Checked(argv, outputs)


@contextlib.contextmanager
def _progress_hook(emit: Emit, cancelled: threading.Event) -> Iterator[None]:
    """Route every tqdm refresh to `emit`; raise KeyboardInterrupt there once cancelled."""
    from tqdm import std

    original = std.tqdm.display
    last: dict[int, float] = {}

    def display(bar, msg=None, pos=None):
        if cancelled.is_set() and not getattr(bar, "_edgeprune_cancelled", False):
            bar._edgeprune_cancelled = True
            raise KeyboardInterrupt
        now = time.monotonic()
        done = bar.total is not None and bar.n >= bar.total
        if not done and now - last.get(id(bar), 0.0) < PROGRESS_INTERVAL:
            return True
        last[id(bar)] = now
        d = bar.format_dict
        emit(
            {
                "kind": "progress",
                "desc": d.get("prefix") or "",
                "n": d["n"],
                "total": d["total"],
                "unit": d.get("unit", "it"),
                "elapsed": round(d["elapsed"], 3),
            }
        )
        return True

    std.tqdm.display = display
    try:
        yield
    finally:
        std.tqdm.display = original


class _Lines(io.TextIOBase):
    """A text stream that emits each complete line as an output event."""

    def __init__(self, emit: Emit, stream: str):
        self._emit, self._stream, self._buf = emit, stream, ""

    def writable(self) -> bool:
        return True

    def write(self, text: str) -> int:
        self._buf += text
        *lines, self._buf = self._buf.split("\n")
        for line in lines:
            if line.strip():  # tqdm ends its (hooked) bars with a bare newline
                self._emit({"kind": "output", "stream": self._stream, "text": line})
        return len(text)

    def flush(self) -> None:
        if self._buf.strip():
            self._emit({"kind": "output", "stream": self._stream, "text": self._buf})
        self._buf = ""


def run(name: str, args: list[str], emit: Emit, cancelled: threading.Event) -> int:
    """Run a checked operation in this process (cwd = work directory); returns its exit code."""
    from edgeprune.cli import main

    out, err = _Lines(emit, "stdout"), _Lines(emit, "stderr")
    with (
        _progress_hook(emit, cancelled),
        contextlib.redirect_stdout(out),
        contextlib.redirect_stderr(err),
    ):
        try:
            code = main([name, *args])
        except SystemExit as e:  # argparse after a race with a changed file; never fatal
            code = e.code if isinstance(e.code, int) else 2
        finally:
            out.flush()
            err.flush()
    return code
