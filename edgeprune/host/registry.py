"""The user's boards by name, and groups of them: `devices.json` in edgeprune's config directory.

The directory is $EDGEPRUNE_CONFIG_DIR, else $XDG_CONFIG_HOME/edgeprune, else
~/.config/edgeprune. The file is rewritten atomically; a URL is checked when it is added.
"""

from __future__ import annotations

import json
import os
import re
from pathlib import Path

from .._io import atomic_write_bytes
from .device_errors import DeviceError
from .transports import parse_url

_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,63}$")


def config_dir() -> Path:
    if explicit := os.environ.get("EDGEPRUNE_CONFIG_DIR"):
        return Path(explicit).expanduser()
    base = os.environ.get("XDG_CONFIG_HOME") or "~/.config"
    return Path(base).expanduser() / "edgeprune"


def registry_path() -> Path:
    return config_dir() / "devices.json"


def load() -> dict[str, str]:
    """Device name -> URL."""
    path = registry_path()
    if not path.exists():
        return {}
    try:
        data = json.loads(path.read_text())
        return {str(k): str(v["url"]) for k, v in data["devices"].items()}
    except (ValueError, KeyError, TypeError, AttributeError):
        raise DeviceError(f"{path} is not a device registry; fix or delete it") from None


def _save(devices: dict[str, str], groups: dict[str, list[str]] | None = None) -> None:
    """Write the registry; the groups stay as they are unless new ones are given."""
    path = registry_path()
    path.parent.mkdir(parents=True, exist_ok=True)
    groups = load_groups() if groups is None else groups
    data: dict = {"devices": {name: {"url": url} for name, url in sorted(devices.items())}}
    if groups:
        data["groups"] = {name: list(boards) for name, boards in sorted(groups.items())}
    atomic_write_bytes(path, (json.dumps(data, indent=2) + "\n").encode())


def add(name: str, url: str, replace: bool = False) -> None:
    if not _NAME.match(name):
        raise DeviceError(f"{name!r}: a device name is letters, digits, '_', '.', '-' (max 64)")
    parse_url(url)
    devices = load()
    if name in load_groups():
        raise DeviceError(f"{name!r} is a group; a board needs a name of its own")
    if name in devices and not replace:
        raise DeviceError(
            f"device {name!r} exists ({devices[name]}); remove it first or add with --replace"
        )
    devices[name] = url
    _save(devices)


def remove(name: str) -> None:
    devices = load()
    if name not in devices:
        raise DeviceError(f"no device named {name!r}; `edgeprune device list` shows them")
    in_groups = sorted(g for g, boards in load_groups().items() if name in boards)
    if in_groups:
        raise DeviceError(
            f"{name!r} is in group(s) {', '.join(in_groups)}: remove it from them first "
            "(edgeprune device group add GROUP BOARD... --replace)"
        )
    del devices[name]
    _save(devices)


def resolve(device: str) -> tuple[str, str]:
    """(label, URL) of a registered name, or of a device URL given directly."""
    if "://" in device:
        parse_url(device)
        return device, device
    devices = load()
    if device not in devices:
        raise DeviceError(
            f"no device named {device!r}: add it with `edgeprune device add {device} URL`, "
            "or give a URL (ssh://user@host, serial:///dev/ttyX, local://)"
        )
    return device, devices[device]


# ----- groups: a name for several boards, which every device verb runs on at once -------------


def load_groups() -> dict[str, list[str]]:
    """Group name -> its boards' names."""
    path = registry_path()
    if not path.exists():
        return {}
    try:
        data = json.loads(path.read_text())
        return {str(k): [str(b) for b in v] for k, v in data.get("groups", {}).items()}
    except (ValueError, TypeError, AttributeError):
        raise DeviceError(f"{path} is not a device registry; fix or delete it") from None


def add_group(name: str, boards: list[str], replace: bool = False) -> None:
    """Name `boards` (registered names) as one group."""
    if not _NAME.match(name):
        raise DeviceError(f"{name!r}: a group name is letters, digits, '_', '.', '-' (max 64)")
    devices, groups = load(), load_groups()
    if name in devices:
        raise DeviceError(f"{name!r} is a board; a group needs a name of its own")
    if name in groups and not replace:
        raise DeviceError(
            f"group {name!r} exists ({', '.join(groups[name])}); add it with --replace to change it"
        )
    if not boards:
        raise DeviceError("a group needs at least one board")
    unknown = [b for b in boards if b not in devices]
    if unknown:
        raise DeviceError(
            f"no board named {', '.join(map(repr, unknown))}: add each with "
            "`edgeprune device add NAME URL` first"
        )
    groups[name] = list(dict.fromkeys(boards))
    _save(devices, groups)


def remove_group(name: str) -> None:
    """Forget a group (its boards stay registered)."""
    groups = load_groups()
    if name not in groups:
        raise DeviceError(f"no group named {name!r}; `edgeprune device group list` shows them")
    del groups[name]
    _save(load(), groups)


def group_members(name: str) -> list[str] | None:
    """The boards of group `name`, or None when `name` is not a group (a board or a URL)."""
    if "://" in name:
        return None
    return load_groups().get(name)
