"""The agent on a serial port (pyserial): a lossy wire, so the client resends what is lost.

The port is named like a pyserial URL's path (`serial:///dev/ttyACM0?baud=921600`); the agent
there runs `python3 -m firmware_bridge serve --serial PORT` at the same speed.
"""

from __future__ import annotations

import threading

from firmware_bridge import protocol

from .device_errors import DeviceError, LinkError
from .links import Link, LinkURL, refuse_host

BITS_PER_BYTE = 10  # 8N1: start bit, 8 data bits, stop bit


class SerialLink(Link):
    """A serial port opened exclusively; input left over from an earlier session is dropped.

    Its URL: serial:///dev/ttyUSB0[?baud=921600]
    """

    parameters = ("baud",)
    example = "serial:///dev/ttyX?baud=N"
    lossy = True
    chunk_size = 8 << 10  # a damaged frame costs one small chunk, not a large one
    window = 4

    @classmethod
    def check(cls, url: LinkURL) -> None:
        refuse_host(url)
        if not url.path:
            raise DeviceError(f"{url.text}: a serial URL needs a port, e.g. serial:///dev/ttyACM0")
        if not url.params.get("baud", str(protocol.DEFAULT_BAUD)).isdigit():
            raise DeviceError(f"{url.text}: baud must be a whole number, e.g. ?baud=921600")

    def __init__(self, url: LinkURL):
        import serial

        self.label = url.text
        baud = int(url.params.get("baud", protocol.DEFAULT_BAUD))
        self.rate = baud / BITS_PER_BYTE
        self._closed = threading.Event()
        self.error = ""
        try:
            self.port = serial.serial_for_url(url.path, baudrate=baud, timeout=0.2, exclusive=True)
        except (serial.SerialException, ValueError) as e:
            raise LinkError(f"cannot open {url.path}: {e}") from None
        self.port.reset_input_buffer()

    def read(self) -> bytes:
        import serial

        while not self._closed.is_set():
            try:
                data = self.port.read(max(1, self.port.in_waiting))
            except (serial.SerialException, OSError, TypeError, ValueError, AttributeError) as e:
                self.error = str(e)
                return b""
            if data:
                return data
        return b""

    def write(self, data: bytes) -> None:
        import serial

        try:
            self.port.write(data)
        except (serial.SerialException, OSError) as e:
            raise LinkError(f"cannot write to {self.label}: {e}") from None

    def close(self) -> None:
        self._closed.set()
        self.port.close()

    def failure(self) -> LinkError:
        return LinkError(f"the serial link {self.label} failed: {self.error or 'port closed'}")
