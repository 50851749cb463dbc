"""What a board needs to be a SuperNode of the fleet: a launch script and a systemd user unit.

`device setup NAME --fleet --superlink HOST:PORT` writes, on the board,

- `~/.local/share/edgeprune/fleet/supernode.sh`: starts `flower-supernode` from the board's
  venv with the same arguments `edgeprune.fleet.local.LocalFleet` uses on this machine: the
  SuperLink's address and the node config `data='<the board's samples>' out='<fleet model>'`,
  over TLS with the SuperLink's CA certificate when one is given (`--superlink-ca`, copied next
  to the script), else `--insecure`. Arguments given to the script are passed on
  (e.g. `--port` for a second SuperNode on one machine).
- `~/.config/systemd/user/edgeprune-supernode.service`: runs the script, restarting it on
  failure. Written, not enabled, unless asked (`--enable`: `systemctl --user enable --now`).

Every value in the script is quoted with `shlex.quote`; files are only rewritten when their
text changes, so setting a board up twice changes nothing.
"""

from __future__ import annotations

import re
import shlex
from dataclasses import dataclass
from pathlib import Path, PurePosixPath
from typing import Any

from firmware_bridge.info import SUPERNODE_SCRIPT

from .device_errors import DeviceError

FLEET_DIR = str(PurePosixPath(SUPERNODE_SCRIPT).parent)  # under the board's home
UNIT_DIR = ".config/systemd/user"
UNIT = "edgeprune-supernode.service"
_ADDRESS = re.compile(r"^(\[[0-9A-Fa-f:.]+\]|[A-Za-z0-9_.-]+):(\d{1,5})$")


def check_superlink(address: str) -> str:
    """`address` if it is HOST:PORT (the SuperLink's Fleet API, e.g. 192.168.1.10:9092)."""
    m = _ADDRESS.match(address or "")
    if not m or not 0 < int(m.group(2)) < 65536:
        raise DeviceError(
            f"--superlink {address!r}: give the SuperLink's Fleet API as HOST:PORT "
            "(e.g. 192.168.1.10:9092)"
        )
    return address


@dataclass
class Options:
    """The SuperNode asked for: the SuperLink's address, the board's samples (relative to its
    work directory), the SuperLink's CA certificate here (None: --insecure), enable the unit."""

    superlink: str
    data: str = "samples"
    ca: str | None = None
    enable: bool = False

    def check(self) -> None:
        """DeviceError (one line) for a bad address, a data path the node config cannot hold
        or a CA file that is not there."""
        check_superlink(self.superlink)
        _toml(self.data)
        if self.ca is not None and not Path(self.ca).is_file():
            raise DeviceError(f"--superlink-ca {self.ca}: no such file here")


def board_path(path: str, home: str, workdir: str) -> str:
    """`path` on the board made absolute: ~ is `home`, a relative path is under `workdir`."""
    if path == "~" or path.startswith("~/"):
        return home + path[1:]
    return path if path.startswith("/") else f"{workdir.rstrip('/')}/{path}"


@dataclass
class NodeFiles:
    """The SuperNode's files for one board: paths on the board and their text."""

    script: str
    unit: str
    superlink: str
    data: str
    out: str
    ca: str | None  # the CA certificate's path on the board, None for --insecure

    def script_text(self, venv: str) -> str:
        q = shlex.quote
        tls = f"--root-certificates {q(self.ca)}" if self.ca else "--insecure"
        config = f"data={_toml(self.data)} out={_toml(self.out)}"
        return (
            "#!/bin/sh\n"
            "# This board's Flower SuperNode for the edgeprune fleet (written by `edgeprune "
            "device setup --fleet`;\n# setting the board up again rewrites it). Extra arguments "
            "go to flower-supernode.\n"
            f"PATH={q(venv + '/bin')}:$PATH\n"
            "FLWR_DISABLE_UPDATE_CHECK=1\n"
            "export PATH FLWR_DISABLE_UPDATE_CHECK\n"
            f"exec flower-supernode {tls} --superlink {q(self.superlink)} \\\n"
            f'    --node-config "{config}" "$@"\n'
        )

    def unit_text(self) -> str:
        return (
            "[Unit]\n"
            "Description=edgeprune fleet: this board's Flower SuperNode\n"
            "After=network-online.target\n\n"
            "[Service]\n"
            f"ExecStart={_systemd_quote(self.script)}\n"
            "Restart=on-failure\n"
            "RestartSec=10\n\n"
            "[Install]\n"
            "WantedBy=default.target\n"
        )


def _toml(text: str) -> str:
    """`text` as a TOML literal string (the node config's values are TOML), safe inside the
    launch script's double quotes."""
    if any(c in text for c in "'\"$`\\\n"):
        raise DeviceError(f"{text!r}: quotes, $, ` and backslashes cannot be in a SuperNode path")
    return f"'{text}'"


def _systemd_quote(text: str) -> str:
    if any(c in text for c in '"\\\n%$'):
        raise DeviceError(f"{text!r}: a path systemd cannot run as it is")
    return f'"{text}"'


def node_files(home: str, workdir: str, options: Options) -> NodeFiles:
    """The SuperNode's files for a board whose home is `home` and work directory `workdir`."""
    fleet = f"{home}/{FLEET_DIR}"
    return NodeFiles(
        script=f"{home}/{SUPERNODE_SCRIPT}",
        unit=f"{home}/{UNIT_DIR}/{UNIT}",
        superlink=check_superlink(options.superlink),
        data=board_path(options.data, home, workdir),
        out=f"{fleet}/fleet.tflite",
        ca=f"{fleet}/superlink-ca.pem" if options.ca else None,
    )


def install(shell, files: NodeFiles, venv: str, options: Options) -> dict[str, Any]:
    """Write the SuperNode's files on the board through `shell` (a `setup.Shell`), only those
    whose text changed; enable the unit when asked. Returns what was written."""
    texts = {files.script: files.script_text(venv), files.unit: files.unit_text()}
    if files.ca is not None and options.ca is not None:
        texts[files.ca] = Path(options.ca).read_text()
    written = []
    for path, text in texts.items():
        status, now, _ = shell.run(["cat", path])
        if status == 0 and now == text:
            continue
        shell.check(
            ["sh", "-c", 'mkdir -p "$(dirname "$1")" && cat > "$1.part" && mv "$1.part" "$1"',
             "sh", path],
            f"writing {path}",
            stdin=text.encode(),
        )  # fmt: skip
        written.append(path)
    shell.check(["chmod", "755", files.script], "making the launch script executable")
    if options.enable:
        for argv in (
            ["systemctl", "--user", "daemon-reload"],
            ["systemctl", "--user", "enable", "--now", UNIT],
        ):
            shell.check(argv, " ".join(argv) + " (a user systemd session is needed)")
    return {
        "script": files.script,
        "unit": files.unit,
        "superlink": files.superlink,
        "data": files.data,
        "out": files.out,
        "tls": files.ca is not None,
        "enabled": options.enable,
        "written": written,
    }
