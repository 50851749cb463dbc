"""Command-line options generated from an operation's declared parameters.

One `Param` becomes one argparse argument: positional ones in declaration order, the others as
`--name-with-dashes` (plus a short flag), booleans as switches, repeatable ones appended. Values
stay strings here; `Operation.bind` converts and checks them (one place for both the command line
and Python callers), so a bad value is the same one-line error wherever it comes from.
Options may come before, between or after the positionals (`Parser`).
"""

from __future__ import annotations

import argparse
from typing import Any

from ..operation import Operation, Param


class Parser(argparse.ArgumentParser):
    """An ArgumentParser whose options may stand anywhere among its positionals.

    Plain argparse fills an optional positional with its default as soon as an option follows
    the required ones: `ls box -r images` left `images` unrecognized. A parser with no
    subcommands and no pass-through rest parses intermixed (options first, then positionals);
    the others (the top level, `remote DEVICE OP ARGS...`) parse as usual. Subcommands inherit
    the class, so every generated command, local or remote, parses the same way.
    """

    _intermixing = False

    def parse_known_args(self, args=None, namespace=None):
        passing = (argparse.PARSER, argparse.REMAINDER)
        if self._intermixing or any(a.nargs in passing for a in self._get_positional_actions()):
            return super().parse_known_args(args, namespace)
        self._intermixing = True  # parse_known_intermixed_args calls back in here
        try:
            return self.parse_known_intermixed_args(args, namespace)
        finally:
            self._intermixing = False


def _help(param: Param) -> str:
    hidden = param.default is None or param.default is False or param.default in ((), "")
    shown = not hidden and not param.required
    if shown and isinstance(param.default, tuple):
        return f"{param.help} (default: {','.join(map(str, param.default))})"
    return f"{param.help} (default: {param.default})" if shown else param.help


def add_param(parser: argparse.ArgumentParser, param: Param) -> None:
    """Declare `param` on `parser` (its dest is the parameter's name)."""
    choices = param.choices if param.choices and param.type is str else None
    if param.positional:
        nargs = "*" if param.many else (None if param.required else "?")
        parser.add_argument(param.name, help=_help(param), nargs=nargs, metavar=param.metavar)
        return
    names = [param.long or "--" + param.name.replace("_", "-")]
    if param.flag:
        names.insert(0, param.flag)
    if param.type is bool:
        parser.add_argument(*names, dest=param.name, action="store_true", help=param.help)
        return
    parser.add_argument(
        *names,
        dest=param.name,
        help=_help(param),
        required=param.required,
        choices=choices,
        metavar=param.metavar,
        action="append" if param.many else "store",
        default=None,
    )


def add_operation(parser: argparse.ArgumentParser, op: Operation) -> None:
    """All of `op`'s parameters, plus --json, and --quiet where it draws progress bars."""
    for param in op.params:
        add_param(parser, param)
    if op.progress:
        parser.add_argument("-q", "--quiet", action="store_true", help="no progress bars")
    parser.add_argument("--json", action="store_true", help="print the result as JSON")


def params_of(op: Operation, args: argparse.Namespace) -> dict[str, Any]:
    """The parsed values of `op`'s parameters (None where not given: the default applies)."""
    return {p.name: getattr(args, p.name) for p in op.params}
