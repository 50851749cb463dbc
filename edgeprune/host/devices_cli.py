"""`edgeprune device add|list|info|remove`, `push`, `pull` and `remote`: work with boards.

`register` only declares arguments; the link modules (paramiko, pyserial) are imported when a
command opens a link. DEVICE is a name from the registry or a device URL.
"""

from __future__ import annotations

import argparse
import json
import sys
from typing import Any

GiB = 2**30


def register(sub: argparse._SubParsersAction) -> None:
    """Add the device commands to edgeprune's parser."""
    p = sub.add_parser("device", help="the boards you work with: add, list, info, remove")
    devices = p.add_subparsers(dest="device_command", required=True, metavar="ACTION")
    a = devices.add_parser(
        "add",
        help="remember a board by name",
        description="URL: ssh://user@host[:port][/WORKDIR][?python=PY&key=FILE], "
        "serial:///dev/ttyX[?baud=N] or local://[/WORKDIR]",
    )
    a.add_argument("name")
    a.add_argument("url")
    a.add_argument("--replace", action="store_true", help="overwrite an existing name")
    a.set_defaults(func=cmd_device_add)
    a = devices.add_parser("list", help="the registered boards")
    a.add_argument("--json", action="store_true")
    a.set_defaults(func=cmd_device_list)
    a = devices.add_parser("info", help="connect and show board, OS, runtime, Edge TPU, memory")
    a.add_argument("device", help="name or URL")
    a.add_argument("--json", action="store_true")
    a.set_defaults(func=cmd_device_info)
    a = devices.add_parser("remove", help="forget a board")
    a.add_argument("name")
    a.set_defaults(func=cmd_device_remove)

    p = sub.add_parser("push", help="copy a file to a board's work directory (resumable)")
    p.add_argument("device", help="name or URL")
    p.add_argument("file")
    p.add_argument("--as", dest="remote", metavar="PATH", help="path on the board (default: name)")
    p.add_argument("-q", "--quiet", action="store_true", help="no progress bar")
    p.add_argument("--json", action="store_true", help="print the result as JSON")
    p.set_defaults(func=cmd_push)

    p = sub.add_parser("pull", help="copy a file from a board's work directory (resumable)")
    p.add_argument("device", help="name or URL")
    p.add_argument("path", help="path on the board, relative to its work directory")
    p.add_argument("-o", "--output", default=".", help="file or directory (default: here)")
    p.add_argument("-q", "--quiet", action="store_true", help="no progress bar")
    p.add_argument("--json", action="store_true", help="print the result as JSON")
    p.set_defaults(func=cmd_pull)

    p = sub.add_parser(
        "remote",
        help="run inspect|record|prune|personalize|profile|bench on a board",
        description="Runs `edgeprune OPERATION ARGS...` on the board, in its work directory, "
        "with its progress shown here. File arguments are paths in that directory.",
    )
    p.add_argument("device", help="name or URL")
    p.add_argument("operation", help="inspect, record, prune, personalize, profile or bench")
    p.add_argument("args", nargs=argparse.REMAINDER, help="the operation's arguments")
    p.set_defaults(func=cmd_remote)


def _device(name_or_url: str):
    from .client import Device
    from .registry import resolve

    label, url = resolve(name_or_url)
    return Device(url, label)


def _bytes_bar(quiet: bool, desc: str):
    """A progress callback drawing a byte bar on stderr once bytes move, and its closer."""
    from tqdm import tqdm

    bars = []

    def update(done: int, total: int) -> None:
        if not bars:
            bars.append(
                tqdm(
                    total=total,
                    unit="B",
                    unit_scale=True,
                    unit_divisor=1024,
                    desc=desc,
                    disable=quiet,
                )
            )
        bars[0].n = done
        bars[0].refresh()

    def close() -> None:
        for bar in bars:
            bar.close()

    return update, close


def cmd_device_add(args: argparse.Namespace) -> None:
    from .registry import add

    add(args.name, args.url, args.replace)
    print(f"added {args.name}: {args.url}")


def cmd_device_list(args: argparse.Namespace) -> None:
    from .registry import load, registry_path

    devices = load()
    if args.json:
        return print(json.dumps(devices, indent=2))
    if not devices:
        print(f"no devices in {registry_path()}; add one with `edgeprune device add NAME URL`")
    for name, url in devices.items():
        print(f"{name:<16} {url}")


def cmd_device_remove(args: argparse.Namespace) -> None:
    from .registry import remove

    remove(args.name)
    print(f"removed {args.name}")


def _info_lines(info: dict[str, Any]) -> list[tuple[str, str]]:
    rt = info.get("runtime")
    mem, disk, tpu = info.get("memory"), info["disk"], info["edgetpu"]
    tpu_text = tpu["hint"] + (f" ({', '.join(tpu['devices'])})" if tpu["devices"] else "")
    return [
        ("board", info["board"]),
        ("os", info["os"]),
        ("python", f"{info['python']} ({info['machine']}, {info['cpus']} cpus)"),
        ("edgeprune", f"{info['edgeprune']}, agent protocol {info['protocol']}"),
        ("runtime", f"{rt['name']} {rt['version']}" if rt else "none: pip install ai-edge-litert"),
        ("edge tpu", tpu_text),
        (
            "memory",
            f"{mem['available'] / GiB:.1f} GiB free of {mem['total'] / GiB:.1f} GiB"
            if mem
            else "unknown",
        ),
        (
            "disk",
            f"{disk['free'] / GiB:.1f} GiB free of {disk['total'] / GiB:.1f} GiB "
            f"(work directory {info['workdir']})",
        ),
        ("operations", ", ".join(info["operations"]) or info.get("problem", "none")),
    ]


def cmd_device_info(args: argparse.Namespace) -> None:
    with _device(args.device) as device:
        info = device.info()
    if args.json:
        return print(json.dumps(info, indent=2))
    print(f"{device.label}: {device.url}")
    for key, value in _info_lines(info):
        print(f"  {key:<11}{value}")


def cmd_push(args: argparse.Namespace) -> None:
    from pathlib import Path

    remote = args.remote or Path(args.file).name
    _transfer(
        args,
        "pushed",
        lambda device, update: device.put(args.file, remote, update),
        lambda device, result: f"{args.file} -> {device.label}:{result['path']}",
    )


def cmd_pull(args: argparse.Namespace) -> None:
    _transfer(
        args,
        "pulled",
        lambda device, update: device.get(args.path, args.output, update),
        lambda device, result: f"{device.label}:{args.path} -> {result['path']}",
    )


def _transfer(args: argparse.Namespace, verb: str, move, route) -> None:
    """Run one push or pull with a byte progress bar and print its result (or JSON)."""
    update, close = _bytes_bar(args.quiet or args.json, verb[:-2])
    with _device(args.device) as device:
        try:
            result = move(device, update)
        finally:
            close()
    if args.json:
        return print(json.dumps(result, indent=2))
    resumed = f", resumed at byte {result['resumed_from']:,}" if result["resumed_from"] else ""
    print(
        f"{verb} {route(device, result)} ({result['size']:,} bytes, "
        f"sha256 {result['sha256'][:16]}…{resumed})"
    )


class _RemoteEvents:
    """Shows a running operation's events: its bars as local tqdm bars, its output as lines."""

    def __init__(self, label: str, quiet: bool):
        self.label = label
        self.quiet = quiet
        self.bars: dict[str, Any] = {}

    def __call__(self, event: dict[str, Any]) -> None:
        kind = event.get("kind")
        if kind == "progress" and not self.quiet:
            self._progress(event)
        elif kind == "output":
            self.close()
            if event.get("stream") == "stdout":
                print(event["text"], flush=True)
            else:
                print(f"[{self.label}] {event['text']}", file=sys.stderr, flush=True)

    def _progress(self, event: dict[str, Any]) -> None:
        from tqdm import tqdm

        desc = str(event.get("desc", ""))
        bar = self.bars.get(desc)
        if bar is None:
            bar = tqdm(
                total=event.get("total"), desc=f"{self.label}: {desc}", unit=event.get("unit", "it")
            )
            self.bars[desc] = bar
        bar.total = event.get("total")
        bar.n = int(event.get("n", 0))
        bar.refresh()

    def close(self) -> None:
        for bar in self.bars.values():
            bar.close()
        self.bars.clear()


def cmd_remote(args: argparse.Namespace) -> None:
    from .device_errors import RemoteError

    with _device(args.device) as device:
        events = _RemoteEvents(device.label, quiet=bool({"-q", "--quiet"} & set(args.args)))
        try:
            result = device.run(args.operation, args.args, events)
        except RemoteError as e:
            if e.code == "failed":
                status = e.details.get("exit_code")
                message = f"{args.operation} failed on {device.label} (exit status {status})"
                raise RemoteError(e.code, message) from None
            if e.code == "help":
                return print(str(e))
            raise RemoteError(e.code, f"{device.label}: {e}") from None
        finally:
            events.close()
    for path in result.get("outputs", []):
        print(
            f"{path} is on {device.label}; fetch it with `edgeprune pull {args.device} {path}`",
            file=sys.stderr,
        )
