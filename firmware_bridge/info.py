"""What INFO reports about the board: model, OS, Python, runtime, Edge TPU, fleet, memory, disk.

Read from files and module metadata only, never by importing a heavy runtime, so INFO stays fast
on a Pi. `root` prefixes every system path so tests can point it at a prepared tree.
"""

from __future__ import annotations

import functools
import glob
import hashlib
import importlib.util
import os
import platform
import shutil
from importlib.metadata import PackageNotFoundError, version
from pathlib import Path
from typing import Any

# (import name, distribution) of TFLite interpreters, in edgeprune.runtime's order.
RUNTIMES = (
    ("ai_edge_litert", "ai-edge-litert"),
    ("tflite_runtime", "tflite-runtime"),
    ("tensorflow", "tensorflow"),
)
# Coral Edge TPU USB ids: before its firmware is loaded, and after.
EDGETPU_USB = {("1a6e", "089a"), ("18d1", "9302")}
EDGETPU_LIBRARY = "libedgetpu.so.1"
LIBRARY_DIRS = ("usr/lib/*-linux-*", "usr/lib", "usr/local/lib", "lib/*-linux-*")


def _read(path: Path) -> str | None:
    try:
        return path.read_text(errors="replace").strip().strip("\0")
    except OSError:
        return None


def board_model(root: Path) -> str:
    """Device-tree model (Raspberry Pi, Coral Dev Board), else DMI product, else the CPU arch."""
    for rel in ("proc/device-tree/model", "sys/firmware/devicetree/base/model"):
        if text := _read(root / rel):
            return text
    vendor = _read(root / "sys/class/dmi/id/sys_vendor")
    product = _read(root / "sys/class/dmi/id/product_name")
    if product:
        return f"{vendor} {product}" if vendor else product
    return f"unknown {platform.machine()} board"


def os_name(root: Path) -> str:
    for line in (_read(root / "etc/os-release") or "").splitlines():
        if line.startswith("PRETTY_NAME="):
            return f"{line.split('=', 1)[1].strip(chr(34))}, kernel {platform.release()}"
    return platform.platform()


def runtime() -> dict[str, str] | None:
    """The first installed TFLite interpreter and its version (found, not imported)."""
    for module, distribution in RUNTIMES:
        if importlib.util.find_spec(module) is not None:
            try:
                return {"name": distribution, "version": version(distribution)}
            except PackageNotFoundError:
                return {"name": distribution, "version": "unknown"}
    return None


def edgetpu(root: Path) -> dict[str, Any]:
    """Coral Edge TPUs on USB or PCIe, and whether the delegate library is installed."""
    devices = []
    for dev in sorted(glob.glob(str(root / "sys/bus/usb/devices/*"))):
        ids = (_read(Path(dev, "idVendor")), _read(Path(dev, "idProduct")))
        if ids in EDGETPU_USB:
            devices.append(f"usb {ids[0]}:{ids[1]} ({Path(dev).name})")
    devices += [f"pcie {p}" for p in sorted(glob.glob(str(root / "dev/apex_*")))]
    dirs = [str(root / d) for pattern in LIBRARY_DIRS for d in glob.glob(str(root / pattern))]
    dirs += [d for d in os.environ.get("LD_LIBRARY_PATH", "").split(":") if d]
    library = next(
        (str(Path(d, EDGETPU_LIBRARY)) for d in dirs if Path(d, EDGETPU_LIBRARY).exists()), None
    )
    if devices and library:
        hint = "usable: edgeprune bench --delegate edgetpu with an Edge TPU-compiled model"
    elif devices:
        hint = "Edge TPU found but no libedgetpu.so.1: apt-get install libedgetpu1-std (Coral repo)"
    elif library:
        hint = "libedgetpu.so.1 is installed but no Edge TPU is plugged in"
    else:
        hint = "no Edge TPU"
    return {
        "devices": devices,
        "delegate_library": library,
        "usable": bool(devices and library),
        "hint": hint,
    }


# Where `edgeprune device setup --fleet` puts the SuperNode's launch script, under the home.
SUPERNODE_SCRIPT = ".local/share/edgeprune/fleet/supernode.sh"


def fleet(root: Path, home: Path) -> dict[str, Any]:
    """The board's part in a fleet: Flower's version (found, not imported), whether `device
    setup --fleet` set a SuperNode up, and whether one runs (a `flower-supernode` process)."""
    try:
        flwr = version("flwr")
    except PackageNotFoundError:
        flwr = None
    running = False
    for cmdline in glob.glob(str(root / "proc/[0-9]*/cmdline")):
        try:
            words = Path(cmdline).read_bytes().split(b"\0")
        except OSError:  # the process ended meanwhile
            continue
        if any(Path(w.decode(errors="replace")).name == "flower-supernode" for w in words[:2]):
            running = True
            break
    return {"flwr": flwr, "supernode_set_up": (home / SUPERNODE_SCRIPT).exists(),
            "supernode_running": running}  # fmt: skip


def memory(root: Path) -> dict[str, int] | None:
    """Total and available RAM in bytes, from /proc/meminfo."""
    fields = {}
    for line in (_read(root / "proc/meminfo") or "").splitlines():
        key, _, rest = line.partition(":")
        if key in ("MemTotal", "MemAvailable") and rest.split():
            fields[key] = int(rest.split()[0]) * 1024
    if "MemTotal" not in fields:
        return None
    return {"total": fields["MemTotal"], "available": fields.get("MemAvailable", 0)}


def edgeprune_version() -> str:
    """The installed edgeprune's version, or the imported one's when running from a checkout."""
    try:
        return version("edgeprune")
    except PackageNotFoundError:
        pass
    try:
        import edgeprune
    except ImportError as e:
        return f"not importable ({e})"
    return edgeprune.__version__


# The packages `edgeprune device setup` installs on a board; their files make the build digest.
PACKAGES = ("edgeprune", "firmware_bridge")


def package_files() -> list[tuple[str, Path]]:
    """(path inside site-packages, file) of every file of PACKAGES (no __pycache__), sorted: what
    the wheel `device setup` builds holds, and what the build digest covers."""
    files = []
    for name in PACKAGES:
        spec = importlib.util.find_spec(name)
        if spec is None or not spec.submodule_search_locations:
            continue
        base = Path(next(iter(spec.submodule_search_locations)))
        for path in base.rglob("*"):
            rel = path.relative_to(base)
            if path.is_file() and "__pycache__" not in rel.parts and path.suffix != ".pyc":
                files.append((f"{name}/{rel.as_posix()}", path))
    return sorted(files)


def digest_of(members) -> str:
    """sha256 over (path, bytes) pairs in their order: the build digest of those files."""
    digest = hashlib.sha256()
    for rel, data in members:
        digest.update(f"{rel}\0{len(data)}\0".encode())
        digest.update(data)
    return digest.hexdigest()


@functools.cache
def edgeprune_build() -> dict[str, str]:
    """This edgeprune's version and a digest of its files (`digest_of` every file of
    `package_files`), the same on the laptop and on a board set up from it: `device info`
    compares them."""
    members = [(rel, path.read_bytes()) for rel, path in package_files()]
    return {"version": edgeprune_version(), "digest": digest_of(members)}


def collect(workdir: Path, root: Path = Path("/")) -> dict[str, Any]:
    """Everything INFO answers, as a JSON-able dict."""
    disk = shutil.disk_usage(workdir)
    return {
        "board": board_model(root),
        "os": os_name(root),
        "machine": platform.machine(),
        "cpus": os.cpu_count(),
        "python": platform.python_version(),
        "edgeprune": edgeprune_version(),
        "edgeprune_build": edgeprune_build(),
        "runtime": runtime(),
        "edgetpu": edgetpu(root),
        "fleet": fleet(root, Path.home()),
        "memory": memory(root),
        "disk": {"total": disk.total, "free": disk.free},
        "workdir": str(workdir),
        "agent_pid": os.getpid(),
    }
