"""What every energy meter does: measure the joules spent while a function runs.

Two kinds of instrument: counters that the hardware accumulates (RAPL), read before and after;
and power sensors (INA2xx via hwmon, the Raspberry Pi 5 PMIC, USB meters), sampled by a
background thread while the function runs and integrated (trapezoid rule).
"""

from __future__ import annotations

import os
import threading
import time
from abc import ABC, abstractmethod
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from ..errors import EdgepruneError


class MeterError(EdgepruneError):
    """An energy meter that is missing, unreadable or answering nonsense."""


def sysfs_root() -> Path:
    """Where sysfs is: /sys, or $EDGEPRUNE_SYSFS (a copy or a fake tree, for tests)."""
    return Path(os.environ.get("EDGEPRUNE_SYSFS", "/sys"))


@dataclass(frozen=True)
class Reading:
    """Energy over a window: joules, the window's seconds and how many readings made it."""

    joules: float
    seconds: float
    samples: int

    @property
    def watts(self) -> float:
        return self.joules / self.seconds if self.seconds > 0 else 0.0


class Meter(ABC):
    """An instrument that measures the energy a function spends (the whole system's, as the
    instrument sees it: idle power is subtracted by the caller)."""

    name: str = ""
    method: str = ""
    min_seconds: float = 1.0  # shortest window that this instrument measures meaningfully

    @abstractmethod
    def measure(self, fn: Callable[[], Any]) -> Reading:
        """Run `fn` and return the energy spent meanwhile."""

    def close(self) -> None:  # noqa: B027 - most instruments hold nothing to release
        """Release the instrument (a serial port, ...)."""


class CounterMeter(Meter):
    """Cumulative energy counters (one per domain), each wrapping around on its own."""

    wraps: list[float]  # the joules at which each counter wraps back to 0

    @abstractmethod
    def read_counters(self) -> list[float]:
        """Every counter now, in joules."""

    def measure(self, fn: Callable[[], Any]) -> Reading:
        start, t0 = self.read_counters(), time.perf_counter()
        fn()
        end, t1 = self.read_counters(), time.perf_counter()
        total = 0.0
        for a, b, wrap in zip(start, end, self.wraps):
            # A counter that went down wrapped (once: windows are far shorter than a period).
            total += b - a if b >= a else b - a + wrap
        return Reading(total, t1 - t0, 2)


class SampledMeter(Meter):
    """A power sensor read every `interval` seconds while the function runs."""

    interval: float = 0.05

    @abstractmethod
    def read_watts(self) -> float:
        """Power now, in watts."""

    def measure(self, fn: Callable[[], Any]) -> Reading:
        samples: list[tuple[float, float]] = [(time.perf_counter(), self.read_watts())]
        done = threading.Event()
        failure: list[BaseException] = []

        def sample() -> None:
            try:
                while not done.wait(self.interval):
                    samples.append((time.perf_counter(), self.read_watts()))
            except BaseException as e:  # reported in the caller's thread
                failure.append(e)

        thread = threading.Thread(target=sample, name=f"edgeprune-{self.name}", daemon=True)
        t0 = time.perf_counter()
        thread.start()
        try:
            fn()
        finally:
            t1 = time.perf_counter()
            done.set()
            thread.join()
        if failure:
            raise failure[0]
        samples.append((time.perf_counter(), self.read_watts()))
        span = samples[-1][0] - samples[0][0]
        area = sum((tb - ta) * (wa + wb) / 2 for (ta, wa), (tb, wb) in zip(samples, samples[1:]))
        mean_watts = area / span if span > 0 else samples[-1][1]
        return Reading(mean_watts * (t1 - t0), t1 - t0, len(samples))
