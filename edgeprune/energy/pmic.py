"""Raspberry Pi 5 power from its PMIC: `vcgencmd pmic_read_adc`, sampled and integrated.

The command prints one current and one voltage per rail, e.g.

     VDD_CORE_A current(7)=2.01230000A
     VDD_CORE_V volt(15)=0.86420000V

Power is the sum over rails of volts × amperes (rails are matched by name; EXT5V and BATT have
a voltage only and add nothing). This is what the board's regulators deliver: conversion losses
and what USB devices draw straight from the 5 V input are not in it.
"""

from __future__ import annotations

import re
import shutil
import subprocess

from .base import MeterError, SampledMeter

_LINE = re.compile(r"^\s*(\S+)_([AV])\s+(?:current|volt)\(\d+\)=([-+0-9.eE]+)[AV]\s*$")


def parse(text: str) -> dict[str, tuple[float, float]]:
    """{rail: (volts, amperes)} for the rails that have both."""
    amps: dict[str, float] = {}
    volts: dict[str, float] = {}
    for line in text.splitlines():
        m = _LINE.match(line)
        if m:
            (amps if m.group(2) == "A" else volts)[m.group(1)] = float(m.group(3))
    return {rail: (volts[rail], amps[rail]) for rail in amps if rail in volts}


class PmicMeter(SampledMeter):
    name = "pi5-pmic"
    interval = 0.1  # one vcgencmd call takes tens of milliseconds
    min_seconds = 2.0

    def __init__(self) -> None:
        self.command = shutil.which("vcgencmd")
        if self.command is None:
            raise MeterError(
                "vcgencmd not found: the PMIC meter is for Raspberry Pi 5 "
                "(Raspberry Pi OS ships vcgencmd in the libraspberrypi-bin package)"
            )
        rails = parse(self._run())
        if not rails:
            raise MeterError(
                "`vcgencmd pmic_read_adc` printed no rail currents: this is not a Raspberry Pi 5, "
                "or its firmware is too old (update with `sudo rpi-eeprom-update`)"
            )
        self.method = (
            f"Raspberry Pi 5 PMIC, vcgencmd pmic_read_adc: sum of volts x amperes over "
            f"{len(rails)} rails, sampled every {self.interval * 1000:.0f} ms and integrated"
        )

    def _run(self) -> str:
        try:
            done = subprocess.run(
                [self.command, "pmic_read_adc"], capture_output=True, text=True, timeout=5
            )
        except (OSError, subprocess.TimeoutExpired) as e:
            raise MeterError(f"vcgencmd pmic_read_adc failed: {e}") from e
        if done.returncode:
            raise MeterError(
                f"vcgencmd pmic_read_adc failed ({done.returncode}): "
                f"{(done.stderr or done.stdout).strip()[:200]}; on a Pi 5 add the user to the "
                "video group"
            )
        return done.stdout

    def read_watts(self) -> float:
        return sum(v * a for v, a in parse(self._run()).values())
