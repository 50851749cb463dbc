"""Intel/AMD RAPL through Linux powercap: /sys/class/powercap/intel-rapl:N/energy_uj.

One counter per CPU package (its sub-zones, core and uncore, are parts of it and are not added
again). Each counts micro-joules and wraps at max_energy_range_uj. Since Linux 5.10 only root
can read energy_uj (CVE-2020-8694, the "PLATYPUS" power side channel).
"""

from __future__ import annotations

import re
from pathlib import Path

from .base import CounterMeter, MeterError, sysfs_root

_PACKAGE = re.compile(r"intel-rapl:\d+$")


def packages(root: Path | None = None) -> list[Path]:
    """The top-level RAPL zones (one per package) that have an energy counter."""
    base = (root or sysfs_root()) / "class" / "powercap"
    if not base.is_dir():
        return []
    return sorted(
        p for p in base.iterdir() if _PACKAGE.match(p.name) and (p / "energy_uj").exists()
    )


def _read_int(path: Path) -> int:
    try:
        return int(path.read_text().strip())
    except PermissionError:
        raise MeterError(
            f"cannot read {path}: RAPL energy counters are readable by root only since Linux "
            "5.10 (CVE-2020-8694); run as root, or once per boot: "
            "sudo chmod a+r /sys/class/powercap/intel-rapl:*/energy_uj"
        ) from None
    except (OSError, ValueError) as e:
        raise MeterError(f"cannot read the RAPL counter {path}: {e}") from e


class RaplMeter(CounterMeter):
    name = "rapl"
    min_seconds = 0.5

    def __init__(self, root: Path | None = None):
        self.zones = packages(root)
        if not self.zones:
            raise MeterError(
                "no RAPL energy counters (/sys/class/powercap/intel-rapl:N/energy_uj): "
                "not an Intel/AMD x86 CPU, or the intel_rapl_common module is not loaded"
            )
        self.wraps = [_read_int(z / "max_energy_range_uj") / 1e6 for z in self.zones]
        self.names = [_name(z) for z in self.zones]
        self.method = (
            f"RAPL energy counters of {', '.join(self.names)} (powercap energy_uj, read before "
            "and after, wrap-around at max_energy_range_uj)"
        )
        self.read_counters()  # fail now, with the permission message, not mid-benchmark

    def read_counters(self) -> list[float]:
        return [_read_int(z / "energy_uj") / 1e6 for z in self.zones]


def _name(zone: Path) -> str:
    try:
        return (zone / "name").read_text().strip() or zone.name
    except OSError:
        return zone.name
