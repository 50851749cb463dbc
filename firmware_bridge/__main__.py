"""`python3 -m firmware_bridge serve (--stdio | --serial PORT [--baud N]) [--root DIR]`."""

from __future__ import annotations

import argparse
import os
import sys

from .agent import STALL
from .protocol import DEFAULT_BAUD
from .serve import default_root, serve_serial, serve_stdio


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python3 -m firmware_bridge",
        description="The edgeprune agent: answers a host over one link, runs only edgeprune "
        "operations, and keeps every file inside its work directory.",
    )
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    p = sub.add_parser("serve", help="serve one link until it closes")
    link = p.add_mutually_exclusive_group(required=True)
    link.add_argument("--stdio", action="store_true", help="stdin/stdout (started over SSH)")
    link.add_argument("--serial", metavar="PORT", help="a serial port, e.g. /dev/ttyGS0")
    p.add_argument("--baud", type=int, default=DEFAULT_BAUD, help="serial speed in baud")
    p.add_argument(
        "--root",
        default=default_root(),
        help="work directory (default: $EDGEPRUNE_WORKDIR or ~/edgeprune)",
    )
    p.add_argument("--keepalive", type=float, default=2.0, help="seconds between keepalives")
    p.add_argument(
        "--stall",
        type=float,
        default=STALL,
        help="seconds a frame may wait for the rest of its bytes before the session ends",
    )
    args = parser.parse_args(argv)
    root = os.path.expanduser(args.root)
    if args.stdio:
        return serve_stdio(root, args.keepalive, args.stall)
    return serve_serial(root, args.serial, args.baud, args.keepalive, args.stall)


if __name__ == "__main__":
    sys.exit(main())
