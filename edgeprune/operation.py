"""What an operation is: one thing a user asks edgeprune to do, declared once, called by anyone.

An `Operation` is a function of the library with its parameters declared once (`Param`: type,
allowed values, default, and whether it names a file the operation reads or writes), progress
and cancel through a `Context`, and a typed `Result` with `to_dict()`. Everyone calls the same
object: Python code (`edgeprune.operations.prune(model=..., sparsity=0.5, output=...)`), the
command line, which generates its options from the `Param`s and renders the result, and the board
agent, which checks the file parameters against its work directory, forwards progress over its
protocol and turns CANCEL into `Context.cancelled`.

Modules that define operations `register` them here; `get(name)` finds one. Importing this
module costs nothing heavy: operations import numpy, the runtime or TensorFlow when they run.
"""

from __future__ import annotations

import dataclasses
import time
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass
from typing import Any, Literal

from .errors import EdgepruneError

Role = Literal["value", "input", "output"]
REQUIRED: Any = dataclasses.MISSING


class Cancelled(EdgepruneError):
    """The caller cancelled the operation; it stops at its next progress step, writing nothing."""


@dataclass(frozen=True)
class Param:
    """One parameter of an operation.

    `type` converts a command-line string (and checks a value given from Python); `role` says
    whether the value names a file the operation reads ("input") or writes ("output") — the
    board agent confines exactly those to its work directory and refuses any other string it
    was not told is a plain value. On the command line a parameter is `--name-with-dashes` (or
    `long`), plus the short `flag` ("-o"); `positional` ones come first, in declaration order.
    """

    name: str
    help: str
    type: Callable[[Any], Any] = str
    default: Any = None
    choices: tuple[Any, ...] | None = None
    role: Role = "value"
    positional: bool = False
    flag: str | None = None
    long: str | None = None
    metavar: str | None = None
    many: bool = False  # repeatable (a list of values)

    @property
    def required(self) -> bool:
        return self.default is REQUIRED

    def check(self, op: str, value: Any) -> Any:
        """`value` converted by `type` and checked against `choices`; one-line error if not."""
        if value is None and not self.required:
            return None
        if self.many:
            if not isinstance(value, list | tuple):
                raise EdgepruneError(f"{op}: {self.name} is a list")
            return [self._one(op, v) for v in value]
        return self._one(op, value)

    def _one(self, op: str, value: Any) -> Any:
        if self.type is bool:
            if not isinstance(value, bool):
                raise EdgepruneError(f"{op}: {self.name} is true or false, not {value!r}")
            return value
        try:
            value = self.type(value)
        except (TypeError, ValueError) as e:
            raise EdgepruneError(f"{op}: {self.name}: {e}") from None
        if self.choices is not None and value not in self.choices:
            allowed = ", ".join(map(str, self.choices))
            raise EdgepruneError(f"{op}: {self.name} is one of {allowed}, not {value!r}")
        return value


def switch(name: str, help: str, **declared: Any) -> Param:
    """A yes/no parameter, off unless given (`--name` on the command line)."""
    return Param(name, help, type=bool, default=False, **declared)


@dataclass
class Result:
    """What an operation returns: typed fields, `to_dict()` for JSON, `from_dict` back."""

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    def problem(self) -> str | None:
        """Why the operation failed although it produced this result (e.g. a package that
        failed verification); the command line prints the result, then exits 2 with it."""
        return None

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> Result:
        names = {f.name for f in dataclasses.fields(cls)}
        return cls(**{k: v for k, v in data.items() if k in names})


class Bar:
    """One progress bar of a running operation: counts steps, and is where cancel gets in."""

    def __init__(self, context: Context, desc: str, total: int | None, unit: str):
        self.context, self.desc, self.total, self.unit = context, desc, total, unit
        self.n, self.start = 0, time.monotonic()
        context.show(self)

    def update(self, steps: int = 1) -> None:
        self.set(self.n + steps)

    def set(self, n: int) -> None:
        if self.context.cancelled():
            raise Cancelled(f"{self.desc}: cancelled; nothing was written")
        self.n = n
        self.context.show(self)

    def close(self) -> None:
        self.context.close(self)

    def __enter__(self) -> Bar:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


@dataclass
class Context:
    """How a running operation reports progress and learns it was cancelled.

    The default shows nothing and is never cancelled; the CLI draws bars on stderr, the board
    agent sends them to the host as events. Subclasses override `show` and `close`.
    """

    cancelled: Callable[[], bool] = lambda: False

    def bar(self, desc: str, total: int | None = None, unit: str = "it") -> Bar:
        return Bar(self, desc, total, unit)

    def iterate(
        self, items: Iterable[Any], desc: str, total: int | None = None, unit: str = "it"
    ) -> Iterator[Any]:
        """Yield `items`, advancing a bar after each one (and stopping there if cancelled)."""
        with self.bar(desc, total, unit) as bar:
            for item in items:
                yield item
                bar.update()

    def show(self, bar: Bar) -> None:
        """A bar started or moved."""

    def close(self, bar: Bar) -> None:
        """A bar ended."""


@dataclass(frozen=True)
class Operation:
    """An operation: its name, what it does, its parameters, and the function that does it.

    `run(context, **params)` gets every declared parameter, checked and with defaults filled in.
    `board` operations run on a board too (through the agent's RUN); the others need the host.
    """

    name: str
    summary: str
    params: tuple[Param, ...]
    run: Callable[..., Result]
    result: type[Result]
    description: str = ""
    board: bool = False
    progress: bool = False  # it draws bars (the CLI adds --quiet)

    def param(self, name: str) -> Param:
        return next(p for p in self.params if p.name == name)

    def bind(self, params: dict[str, Any]) -> dict[str, Any]:
        """`params` checked against the declarations, with defaults: what `run` is called with."""
        known = {p.name for p in self.params}
        unknown = sorted(set(params) - known)
        if unknown:
            raise EdgepruneError(f"{self.name}: unknown parameter {unknown[0]!r}")
        bound = {}
        for p in self.params:
            if p.name not in params or params[p.name] is None:
                if p.required:
                    raise EdgepruneError(f"{self.name}: {p.name} is required")
                bound[p.name] = p.default
            else:
                bound[p.name] = p.check(self.name, params[p.name])
        return bound

    def files(self, params: dict[str, Any], role: Role) -> list[str]:
        """The paths among `params` that the operation reads ("input") or writes ("output")."""
        paths = []
        for p in self.params:
            value = params.get(p.name)
            if p.role == role and value is not None:
                paths.extend(map(str, value) if p.many else [str(value)])
        return paths

    def __call__(self, context: Context | None = None, **params: Any) -> Result:
        return self.run(context or Context(), **self.bind(params))


_REGISTRY: dict[str, Operation] = {}


def register(op: Operation) -> Operation:
    """Add `op` to the registry (by name); returns it, so a module can keep a handle."""
    if op.name in _REGISTRY:
        raise ValueError(f"operation {op.name!r} is registered twice")
    _REGISTRY[op.name] = op
    return op


def get(name: str) -> Operation:
    """The registered operation `name`; one-line error listing the known ones."""
    try:
        return _REGISTRY[name]
    except KeyError:
        known = ", ".join(sorted(_REGISTRY))
        raise EdgepruneError(f"unknown operation {name!r}: known are {known}") from None


def registered() -> dict[str, Operation]:
    return dict(_REGISTRY)
