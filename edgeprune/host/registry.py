"""The user's boards by name: `devices.json` in edgeprune's config directory.

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


def _save(devices: dict[str, str]) -> None:
    path = registry_path()
    path.parent.mkdir(parents=True, exist_ok=True)
    data = {"devices": {name: {"url": url} for name, url in sorted(devices.items())}}
    atomic_write_bytes(path, (json.dumps(data, indent=2) + "\n").encode())


def add(name: str, url: str, replace: bool = False) -> None:
    if not _NAME.match(name):
        raise DeviceError(f"{name!r}: a device name is letters, digits, '_', '.', '-' (max 64)")
    parse_url(url)
    devices = load()
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
