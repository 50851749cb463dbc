"""Energy meters and energy per inference, with idle power measured and subtracted.

`--energy` names a meter: ``rapl``, ``hwmon[:SENSOR]``, ``pi5-pmic``, ``um24c|um25c|um34c:PORT``,
``estimate`` (MACs and bytes × published per-operation energies, no instrument), or ``auto``:
the first of rapl, hwmon, pi5-pmic that works here, else the estimate (with the reasons).
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterable
from typing import Any

from .base import Meter, MeterError, Reading

NAMES = ("auto", "rapl", "hwmon", "pi5-pmic", "um24c", "um25c", "um34c", "estimate")
HOST_METERS = ("um24c", "um25c", "um34c")  # registered by edgeprune.host.usbmeter (pyserial)

# name → factory(name, argument after the colon) → Meter. The core registers the meters it can
# read by itself below; the host side registers what needs host libraries.
_FACTORIES: dict[str, Callable[[str, str], Meter]] = {}


def register(names: Iterable[str], factory: Callable[[str, str], Meter]) -> None:
    """Make `open_meter` open each of `names` with `factory(name, argument)`."""
    for name in names:
        _FACTORIES[name] = factory


def _rapl(name: str, arg: str) -> Meter:
    from .rapl import RaplMeter

    return RaplMeter()


def _hwmon(name: str, arg: str) -> Meter:
    from .hwmon import HwmonMeter

    return HwmonMeter(arg or None)


def _pmic(name: str, arg: str) -> Meter:
    from .pmic import PmicMeter

    return PmicMeter()


register(["rapl"], _rapl)
register(["hwmon"], _hwmon)
register(["pi5-pmic"], _pmic)


def open_meter(spec: str) -> Meter | None:
    """The meter `spec` names (see the module docstring); None for "estimate"."""
    name, _, arg = spec.partition(":")
    if name == "estimate":
        return None
    factory = _FACTORIES.get(name)
    if factory is None:
        hint = (
            ": the USB meters need the host extra (pip install 'edgeprune[host]', pyserial)"
            if name in HOST_METERS
            else f": choose one of {', '.join(NAMES)}"
        )
        raise MeterError(f"unknown energy meter {spec!r}{hint}")
    return factory(name, arg)


def auto_meter() -> tuple[Meter | None, list[str]]:
    """The first meter that works on this machine, and why the ones before it did not."""
    reasons = []
    for spec in ("rapl", "hwmon", "pi5-pmic"):
        try:
            return open_meter(spec), reasons
        except MeterError as e:
            reasons.append(f"{spec}: {e}")
    return None, reasons


def per_inference(
    meter: Meter,
    run: Callable[[], object],
    idle_seconds: float = 2.0,
    min_seconds: float = 0.0,
) -> dict[str, Any]:
    """Energy per call of `run`: idle power first (the machine sleeping for `idle_seconds`),
    then `run` back to back for at least max(`min_seconds`, the meter's shortest window); the
    idle power times that window is subtracted from what the meter saw."""
    idle = meter.measure(lambda: time.sleep(idle_seconds))
    window = max(min_seconds, meter.min_seconds)
    count = 0

    def busy() -> None:
        nonlocal count
        start = time.perf_counter()
        while not count or time.perf_counter() - start < window:
            run()
            count += 1

    active = meter.measure(busy)
    net = active.joules - idle.watts * active.seconds
    return {
        "meter": meter.name,
        "method": meter.method,
        "idle_watts": idle.watts,
        "idle_seconds": idle.seconds,
        "active_watts": active.watts,
        "active_seconds": active.seconds,
        "inferences": count,
        "samples": idle.samples + active.samples,
        "joules_per_inference": net / count,
        "gross_joules_per_inference": active.joules / count,
    }


__all__ = [
    "NAMES",
    "Meter",
    "MeterError",
    "Reading",
    "auto_meter",
    "open_meter",
    "per_inference",
    "register",
]
