"""`edgeprune`: the command line, a thin caller of the library's operations.

Every subcommand is a registered `Operation` (`edgeprune.operations` for the core,
`edgeprune.host.operations` for the host): its options are generated from the operation's
parameters (`arguments`), its result printed by `render` or as JSON. `remote` runs a board
operation through the board agent and prints its result the same way (`remote`). Names with a
space ("device add") become nested subcommands.
"""

from __future__ import annotations

import argparse
import contextlib
import os
import sys

from .. import native_stderr, operation
from .. import operations as _core  # noqa: F401  (registers the core's operations)
from ..errors import EdgepruneError
from ..host import operations as _host  # noqa: F401  (registers the host's operations)
from .arguments import Parser, add_operation, params_of
from .render import show
from .terminal import TerminalContext

with contextlib.suppress(ImportError):  # where the host libraries are installed
    from ..host import charts, usbmeter  # noqa: F401  (register the charts and USB meters)

GROUPS = {
    "device": "the boards you work with: add, list, info, setup, remove, group",
    "device group": "several boards under one name: push, pull, remote, info take it",
}
DESCRIPTION = (
    "Personalize TFLite models on the device: record how strongly each weight is used on "
    "unlabeled samples, then prune the weights that are used least (Fine-Pruning)."
)


def run_operation(op: operation.Operation, args: argparse.Namespace) -> None:
    """Call `op` with the parsed arguments; print its result (or JSON)."""
    native_stderr.hide(getattr(args, "quiet", False))  # -q: the runtime's own INFO lines too
    context = TerminalContext(quiet=getattr(args, "quiet", False) or args.json)
    try:
        result = op(context, **params_of(op, args))
    finally:
        context.close_all()
    show(op.name, result, args.json)


def _subparsers(parent: argparse.ArgumentParser, groups: dict, path: str):
    if path not in groups:
        groups[path] = parent.add_subparsers(dest=f"command{len(groups)}", required=True,
                                             metavar="COMMAND")  # fmt: skip
    return groups[path]


def build_parser() -> argparse.ArgumentParser:
    """The parser of every registered operation, plus `remote`."""
    from .remote import add_remote

    parser = Parser(prog="edgeprune", description=DESCRIPTION)  # subcommands inherit the class
    groups: dict[str, argparse._SubParsersAction] = {}
    parents: dict[str, argparse.ArgumentParser] = {"": parser}
    for op in operation.registered().values():
        *outer, leaf = op.name.split(" ")
        prefix = ""
        for word in outer:  # "device add": a "device" command holding "add"
            name = f"{prefix} {word}".strip()
            if name not in parents:
                sub = _subparsers(parents[prefix], groups, prefix)
                parents[name] = sub.add_parser(word, help=GROUPS.get(name))
            prefix = name
        sub = _subparsers(parents[prefix], groups, prefix)
        p = sub.add_parser(leaf, help=op.summary, description=op.description or op.summary)
        add_operation(p, op)
        p.set_defaults(func=lambda args, op=op: run_operation(op, args))
    add_remote(_subparsers(parser, groups, ""))
    return parser


EXIT_BROKEN_PIPE = 141  # 128 + SIGPIPE, as a program killed by the closed pipe reports


def _silence_stdout() -> None:
    """Point stdout at /dev/null, so that flushing it at exit does not fail again."""
    devnull = os.open(os.devnull, os.O_WRONLY)
    os.dup2(devnull, sys.stdout.fileno())
    os.close(devnull)


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        args.func(args)
        sys.stdout.flush()  # a closed pipe shows here, not at exit
    except BrokenPipeError:  # `edgeprune ... | head`: the reader has all it wanted
        _silence_stdout()
        return EXIT_BROKEN_PIPE
    except EdgepruneError as e:  # one line, even when a runtime's message had several
        lines = (line.strip() for line in str(e).splitlines())
        print(f"edgeprune: error: {'; '.join(filter(None, lines))}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("edgeprune: interrupted; nothing was written", file=sys.stderr)
        return 130
    except SystemExit as e:  # `remote` parses its operation's arguments (or --help) itself
        return e.code if isinstance(e.code, int) else 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
