"""`edgeprune unpack` and `verify`: check and extract .edgepkg packages (on the device too)."""

from __future__ import annotations

import argparse
import json


def register(sub: argparse._SubParsersAction) -> None:
    """Add the package commands that run on the device to edgeprune's parser."""
    p = sub.add_parser("verify", help="check a package: safe structure, sha256s, model, recipe")
    p.add_argument("package", help=".edgepkg file")
    p.add_argument("--json", action="store_true", help="print the report as JSON")
    p.set_defaults(func=cmd_verify)

    p = sub.add_parser("unpack", help="verify a package and extract it into a new directory")
    p.add_argument("package", help=".edgepkg file")
    p.add_argument("-o", "--output", required=True, help="directory to create (or an empty one)")
    p.add_argument("--json", action="store_true", help="print the files written as JSON")
    p.set_defaults(func=cmd_unpack)


def cmd_verify(args: argparse.Namespace) -> None:
    from .package import PackageError, verify

    report = verify(args.package)
    if args.json:
        print(json.dumps(report, indent=2))
    else:
        title = f"{report.get('name', '?')} {report.get('version', '')}".strip()
        print(f"{args.package}: {title}")
        for check in report["checks"]:
            print(f"  ok: {check}")
        for problem in report["problems"]:
            print(f"  PROBLEM: {problem}")
    if not report["ok"]:
        raise PackageError(f"{args.package} failed verification: {report['problems'][0]}")


def cmd_unpack(args: argparse.Namespace) -> None:
    from .package import unpack

    written = unpack(args.package, args.output)
    if args.json:
        print(json.dumps({"output": args.output, "files": [str(p) for p in written]}, indent=2))
        return
    print(f"unpacked {len(written)} files into {args.output}")
