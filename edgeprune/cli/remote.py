"""`edgeprune remote DEVICE OPERATION ARGS...`: run a board operation through the board agent.

ARGS are parsed here, with the same generated options as the local command, into the
operation's parameters; the agent checks them again against its work directory, runs the
operation and sends its progress and its result, printed here exactly as a local run's.
"""

from __future__ import annotations

import argparse
import shlex
import sys
from typing import Any

from .. import operation
from ..operation import Bar
from .arguments import Parser, add_operation, params_of
from .render import show
from .terminal import TerminalContext


def board_operations() -> list[str]:
    return [name for name, op in operation.registered().items() if op.board]


def add_remote(sub: argparse._SubParsersAction) -> None:
    names = ", ".join(board_operations())
    p = sub.add_parser(
        "remote",
        help=f"run {names.replace(', ', '|')} on a board",
        description="Runs an edgeprune operation on the board, in its work directory, with its "
        "progress shown here. File arguments are paths in that directory. "
        f"OPERATION is one of: {names}. `edgeprune remote DEVICE OPERATION --help` lists its "
        "arguments.",
    )
    p.add_argument("device", help="a registered board's name, or a device URL")
    p.add_argument("operation", help=names)
    p.add_argument("args", nargs=argparse.REMAINDER, help="the operation's arguments")
    p.set_defaults(func=run_remote)


class _Events:
    """A running operation's events on the board, drawn as local bars."""

    def __init__(self, context: TerminalContext):
        self.context = context
        self.bars: dict[str, Bar] = {}

    def __call__(self, event: dict[str, Any]) -> None:
        if event.get("kind") != "progress":
            return
        desc = str(event.get("desc", ""))
        bar = self.bars.get(desc)
        if bar is None:
            unit = str(event.get("unit", "it"))
            bar = self.bars[desc] = self.context.bar(desc, event.get("total"), unit)
        bar.total = event.get("total")
        bar.set(int(event.get("n", 0)))


def run_remote(args: argparse.Namespace) -> None:
    from ..errors import EdgepruneError
    from ..host.device_errors import RemoteError
    from ..host.operations import open_device
    from ..host.registry import group_members

    if args.operation not in board_operations():
        raise EdgepruneError(
            f"{args.operation!r} does not run on a board; board operations are "
            f"{', '.join(board_operations())}"
        )
    op = operation.get(args.operation)
    parser = Parser(
        prog=f"edgeprune remote {args.device} {op.name}", description=op.description or op.summary
    )
    add_operation(parser, op)
    parsed = parser.parse_args(args.args)
    params = {k: v for k, v in params_of(op, parsed).items() if v is not None}
    boards = group_members(args.device)
    if boards is not None:  # a group: every board at once, then one table
        _run_on_group(args.device, boards, op, params, parsed)
        return
    with open_device(args.device) as device:
        context = TerminalContext(quiet=getattr(parsed, "quiet", False) or parsed.json,
                                  label=device.label)  # fmt: skip
        try:
            reply = device.run(op.name, params, _Events(context))
        except RemoteError as e:
            raise RemoteError(e.code, f"{device.label}: {e}", e.details) from None
        finally:
            context.close_all()
    show(op.name, op.result.from_dict(reply["result"]), parsed.json)
    folders = set(reply.get("directories", []))
    for path in reply.get("outputs", []):
        how = ["edgeprune", "pull", *(["-r"] if path in folders else []), args.device, path]
        print(f"{path} is on {device.label}; fetch it with `{shlex.join(how)}`", file=sys.stderr)


def _run_on_group(group: str, boards: list[str], op, params: dict, parsed) -> None:
    """`remote GROUP OP`: the operation on each board of the group (`host.groups.run_group`)."""
    from ..host.groups import run_group
    from ..host.operations import open_device

    def one(context, board: str):
        with open_device(board) as device:
            reply = device.run(op.name, params, _Events(context))
        return op.result.from_dict(reply["result"])

    context = TerminalContext(quiet=getattr(parsed, "quiet", False) or parsed.json)
    try:
        result = run_group(context, group, op.name, boards, one)
    finally:
        context.close_all()
    show(op.name, result, parsed.json)
