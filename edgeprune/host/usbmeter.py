"""RDTech UM24C / UM25C / UM34C USB power meters over their serial link (Bluetooth SPP bound
with `rfcomm bind`, 9600 baud), read with pyserial.

Protocol: the host sends the byte 0xF0; the meter answers with a 130-byte frame, big-endian:
bytes 2-3 voltage, 4-5 current, 6-9 power in mW, 10-11 temperature in °C. Voltage is in units
of 10 mV (UM24C, UM34C) or 1 mV (UM25C); current in 1 mA (UM24C, UM34C) or 0.1 mA (UM25C).
Power is taken as voltage × current, which resolves finer than the mW field.
"""

from __future__ import annotations

import struct

from ..energy import register
from ..energy.base import MeterError, SampledMeter

REQUEST = b"\xf0"
FRAME = 130
# model: (volts per unit, amperes per unit)
MODELS = {"um24c": (0.01, 0.001), "um25c": (0.001, 0.0001), "um34c": (0.01, 0.001)}


def decode(frame: bytes, model: str) -> tuple[float, float]:
    """(volts, amperes) from one 130-byte answer."""
    if len(frame) != FRAME:
        raise MeterError(f"{model} answered {len(frame)} bytes instead of {FRAME}")
    volts, amps = struct.unpack_from(">HH", frame, 2)
    v_unit, a_unit = MODELS[model]
    return volts * v_unit, amps * a_unit


class UsbMeter(SampledMeter):
    interval = 0.0  # each request-answer takes ~140 ms at 9600 baud: ask back to back
    min_seconds = 3.0

    def __init__(self, model: str, port: str, baud: int = 9600):
        if model not in MODELS:
            raise MeterError(f"unknown USB meter {model!r}: choose one of {', '.join(MODELS)}")
        if not port:
            raise MeterError(
                f"say where the {model.upper()} is: --energy {model}:/dev/rfcomm0 "
                "(after `sudo rfcomm bind 0 MAC`)"
            )
        try:
            import serial
        except ImportError as e:
            raise MeterError("the USB meter needs pyserial: pip install pyserial") from e
        self.model, self.name = model, model
        try:
            self.port = serial.serial_for_url(port, baudrate=baud, timeout=2.0)
        except (serial.SerialException, ValueError) as e:
            raise MeterError(f"cannot open {port} for the {model.upper()}: {e}") from e
        self.method = (
            f"{model.upper()} USB meter on {port} ({baud} baud): volts x amperes per 0xF0 "
            "request, sampled back to back and integrated"
        )
        try:
            self.read_watts()
        except MeterError:
            self.close()
            raise

    def read_watts(self) -> float:
        self.port.reset_input_buffer()
        self.port.write(REQUEST)
        frame = self.port.read(FRAME)
        if len(frame) < FRAME:
            raise MeterError(
                f"the {self.model.upper()} answered {len(frame)} of {FRAME} bytes within 2 s: "
                "is it on, paired and bound to this port?"
            )
        volts, amps = decode(frame, self.model)
        return volts * amps

    def close(self) -> None:
        self.port.close()


def _open(name: str, arg: str) -> UsbMeter:
    """`--energy um25c:PORT[@BAUD]`."""
    port, _, baud = arg.partition("@")
    try:
        return UsbMeter(name, port, int(baud) if baud else 9600)
    except ValueError:
        raise MeterError(f"--energy {name}:{arg}: the baud rate after @ must be a number") from None


register(MODELS, _open)
