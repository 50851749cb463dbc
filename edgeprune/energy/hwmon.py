"""Power sensors under /sys/class/hwmon: the INA2xx family (ina219, ina226, ina260, ina3221...).

hwmon units: power in micro-watts (powerN_input), current in milli-amperes (currN_input),
voltage in milli-volts (inN_input). A sensor with power1_input is read directly; one without
(ina3221) gives current × bus voltage of channel 1 (curr1_input × in1_input).
"""

from __future__ import annotations

from pathlib import Path

from .base import MeterError, SampledMeter, sysfs_root

PREFIXES = ("ina",)  # the INA2xx/INA3221 drivers name their devices ina219, ina3221, ...


def sensors(root: Path | None = None) -> list[tuple[Path, str]]:
    """(hwmon directory, driver name) of every power sensor edgeprune can read."""
    base = (root or sysfs_root()) / "class" / "hwmon"
    found = []
    for d in sorted(base.glob("hwmon*")) if base.is_dir() else []:
        try:
            name = (d / "name").read_text().strip()
        except OSError:
            continue
        readable = (d / "power1_input").exists() or (
            (d / "curr1_input").exists() and (d / "in1_input").exists()
        )
        if name.startswith(PREFIXES) and readable:
            found.append((d, name))
    return found


class HwmonMeter(SampledMeter):
    name = "hwmon"
    interval = 0.02
    min_seconds = 1.0

    def __init__(self, which: str | None = None, root: Path | None = None):
        """`which`: a hwmon directory name (hwmon3) or driver name (ina226); default the first."""
        found = sensors(root)
        if which:
            found = [(d, n) for d, n in found if which in (d.name, n)]
        if not found:
            wanted = f" named {which!r}" if which else ""
            raise MeterError(
                f"no INA2xx power sensor{wanted} under /sys/class/hwmon: wire one to the "
                "board's supply and load its driver (e.g. dtoverlay=i2c-sensor,ina226)"
            )
        self.path, driver = found[0]
        self.direct = (self.path / "power1_input").exists()
        self.name = f"hwmon:{driver}"
        how = "power1_input" if self.direct else "curr1_input x in1_input"
        self.method = (
            f"{driver} at {self.path.name} ({how}), sampled every {self.interval * 1000:.0f} ms "
            "and integrated (trapezoid)"
        )
        self.read_watts()

    def _read(self, name: str) -> float:
        try:
            return float((self.path / name).read_text().strip())
        except (OSError, ValueError) as e:
            raise MeterError(f"cannot read {self.path / name}: {e}") from e

    def read_watts(self) -> float:
        if self.direct:
            return self._read("power1_input") / 1e6
        return self._read("curr1_input") / 1e3 * self._read("in1_input") / 1e3
