"""Frames of the device link (PROTOCOL.md): encode them, and decode them from a byte stream.

Standard library only, plus `edgeprune.errors` (which imports nothing): the agent runs on boards
that may have nothing but Python. The decoder resynchronizes on the magic after any damage, so
dropped or flipped bytes cost frames, not the session; which frames were lost is the job of the
request/response layer above.
"""

from __future__ import annotations

import json
import struct
import zlib
from dataclasses import dataclass
from typing import Any

from edgeprune.errors import EdgepruneError

MAGIC = b"EP"
VERSIONS = (2,)  # protocol versions this code speaks, oldest first (2: RUN takes params)
VERSION = VERSIONS[-1]
HEADER = struct.Struct(">2sBBII")  # magic, version, type, request id, payload length
HEADER_SIZE = HEADER.size + 4  # ... followed by the CRC32 of those 12 bytes
TRAILER_SIZE = 4  # CRC32 of header and payload
OVERHEAD = HEADER_SIZE + TRAILER_SIZE
DEFAULT_MAX_PAYLOAD = 1 << 20
HARD_MAX_PAYLOAD = 16 << 20  # no side may announce more than this in HELLO
REQUEST_MAX_PAYLOAD = 64 << 10  # a JSON request; only PUT_DATA carries a file's bytes
RESYNC_CREDIT = 2  # payload bytes a resynchronization may re-check per byte received
OFFSET = struct.Struct(">Q")  # file offsets inside binary payloads
DEFAULT_BAUD = 115200  # serial speed of agent and host unless both are told otherwise
EXIT_UNUSABLE = 2  # `serve` exits with it when its link cannot be opened
EXIT_BUSY = 3  # `serve` exits with it when another agent keeps starting on the work directory
SHA256_SIZE = 32

# Requests (host -> agent).
HELLO, INFO, PING = 0x01, 0x02, 0x03
PUT_OPEN, PUT_DATA, PUT_CLOSE = 0x10, 0x11, 0x12
GET_OPEN, GET_DATA = 0x18, 0x19
LIST = 0x1C
RUN, CANCEL = 0x20, 0x21
# Replies and unsolicited frames (agent -> host).
OK, ERROR, EVENT, DATA, KEEPALIVE = 0x80, 0x81, 0x82, 0x83, 0x8F

NAMES = {
    HELLO: "HELLO",
    INFO: "INFO",
    PING: "PING",
    PUT_OPEN: "PUT_OPEN",
    PUT_DATA: "PUT_DATA",
    PUT_CLOSE: "PUT_CLOSE",
    GET_OPEN: "GET_OPEN",
    GET_DATA: "GET_DATA",
    LIST: "LIST",
    RUN: "RUN",
    CANCEL: "CANCEL",
    OK: "OK",
    ERROR: "ERROR",
    EVENT: "EVENT",
    DATA: "DATA",
    KEEPALIVE: "KEEPALIVE",
}
REQUESTS = frozenset(t for t in NAMES if t < 0x80)
FINAL = frozenset({OK, ERROR, DATA})  # replies that end a request


class ProtocolError(EdgepruneError):
    """A frame or payload that breaks PROTOCOL.md; `code` is the ERROR code to answer with.

    One of edgeprune's errors: a host that meets one (a malformed reply) prints it as one line.
    """

    def __init__(self, code: str, message: str, **extra: object):
        super().__init__(message)
        self.code = code
        self.extra = extra  # more fields of the ERROR payload, e.g. the board's size on a gap


@dataclass(frozen=True)
class Frame:
    """One intact frame: its type, request id, payload and the protocol version it was sent in."""

    type: int
    request_id: int
    payload: bytes = b""
    version: int = VERSION

    def json(self) -> dict[str, Any]:
        """The payload as a JSON object; ProtocolError("bad_request") when it is not one."""
        try:
            value = json.loads(self.payload or b"{}")
        except (UnicodeDecodeError, json.JSONDecodeError) as e:
            raise ProtocolError("bad_request", f"payload is not JSON: {e}") from None
        if not isinstance(value, dict):
            raise ProtocolError("bad_request", "payload must be a JSON object")
        return value


@dataclass(frozen=True)
class Damaged:
    """A frame whose header was intact but whose payload was not: the sender should resend it.

    `reason` is "crc" (payload damaged), "too_large" (over the limit) or "version" (a protocol
    version this side does not speak). The header is covered by its own CRC, so the type and
    request id can be trusted.
    """

    type: int
    request_id: int
    reason: str
    length: int
    version: int


def encode(
    type_: int, request_id: int, payload: bytes | bytearray | memoryview = b"", version=VERSION
) -> bytes:
    """The bytes of one frame."""
    return b"".join(encode_parts(type_, request_id, (payload,), version))


def encode_parts(type_: int, request_id: int, parts, version=VERSION) -> list:
    """One frame whose payload is `parts` one after the other, as pieces to write in order (a
    large payload is neither joined nor copied: header, the parts themselves, the CRC)."""
    head = HEADER.pack(MAGIC, version, type_, request_id, sum(len(x) for x in parts))
    head += zlib.crc32(head).to_bytes(4, "big")
    crc = zlib.crc32(head)
    for part in parts:
        crc = zlib.crc32(part, crc)
    return [head, *parts, crc.to_bytes(4, "big")]


def encode_json(type_: int, request_id: int, obj: dict[str, Any]) -> bytes:
    """A frame whose payload is `obj` as compact UTF-8 JSON."""
    return encode(type_, request_id, json.dumps(obj, separators=(",", ":")).encode())


class Decoder:
    """Turns a byte stream into Frame and Damaged items, skipping garbage between frames.

    Feed it whatever the link delivered; iterate `items()` for what is complete. The magic is
    searched with bytes.find and a candidate header costs one 12-byte CRC, so a damaged frame
    never takes the frames after it down with it and garbage costs linear time.

    A frame whose payload CRC fails is searched for frames inside it (dropped bytes make it
    swallow the next one) while the resynchronization credit lasts: RESYNC_CREDIT bytes per byte
    received, at most 4 frames' worth. Overlapping valid headers would otherwise cost a CRC of
    the whole announced length each (2 MiB of them: 13 s of CPU); past the credit the damaged
    frame is skipped whole and the host resends what it loses. `limits` caps the payload of
    given frame types below `max_payload` (the agent: JSON requests), refused at the header.
    """

    def __init__(
        self,
        max_payload: int = DEFAULT_MAX_PAYLOAD,
        versions=VERSIONS,
        limits: dict[int, int] | None = None,
    ):
        self.max_payload = max_payload
        self.versions = frozenset(versions)
        self.limits = dict(limits or {})
        self._buf = bytearray()
        self._pos = 0
        self._credit = self._credit_max = 4 * (max_payload + OVERHEAD)
        self.skipped = 0  # bytes dropped while resynchronizing

    def feed(self, data: bytes | bytearray | memoryview) -> None:
        if self._pos > 1 << 16 and self._pos * 2 > len(self._buf):
            del self._buf[: self._pos]
            self._pos = 0
        self._buf += data
        self._credit = min(self._credit_max, self._credit + RESYNC_CREDIT * len(data))

    def partial(self) -> tuple[int, int, int, int] | None:
        """(type, request id, announced length, bytes held) of a frame whose valid header has
        arrived but not all of its payload; None when no frame is waiting for bytes."""
        start = self._pos
        if self._buf[start : start + 2] != MAGIC or (header := self._header(start)) is None:
            return None
        _, _, type_, request_id, length = header
        return type_, request_id, length, len(self._buf) - start - HEADER_SIZE

    def _header(self, start: int) -> tuple | None:
        """The fields of the header at `start` if all of it has come and its CRC holds."""
        buf = self._buf
        if len(buf) - start < HEADER_SIZE:
            return None
        head = bytes(buf[start : start + HEADER.size])
        if zlib.crc32(head) != int.from_bytes(
            buf[start + HEADER.size : start + HEADER_SIZE], "big"
        ):
            return None
        return HEADER.unpack(head)

    def pending(self) -> int:
        """Bytes received but not yet part of a decoded item."""
        return len(self._buf) - self._pos

    def items(self):
        """Yield every complete Frame or Damaged item in the buffer, in order."""
        while True:
            item = self._next()
            if item is None:
                return
            yield item

    def _skip(self, n: int) -> None:
        self._pos += n
        self.skipped += n

    def _next(self) -> Frame | Damaged | None:
        buf = self._buf
        while True:
            start = buf.find(MAGIC, self._pos)
            if start < 0:  # keep a trailing first magic byte: it may start the next header
                keep = 1 if buf.endswith(MAGIC[:1]) else 0
                self._skip(len(buf) - keep - self._pos)
                return None
            self._skip(start - self._pos)
            if len(buf) - start < HEADER_SIZE:
                return None
            header = self._header(start)
            if header is None:
                self._skip(1)
                continue
            _, version, type_, request_id, length = header
            limit = min(self.max_payload, self.limits.get(type_, self.max_payload))
            if length > limit or version not in self.versions:
                self._skip(HEADER_SIZE)  # its payload is scanned, not trusted
                reason = "too_large" if length > limit else "version"
                return Damaged(type_, request_id, reason, length, version)
            end = start + HEADER_SIZE + length + TRAILER_SIZE
            if len(buf) < end:
                return None
            with memoryview(buf) as view:
                ok = zlib.crc32(view[start : end - TRAILER_SIZE]) == int.from_bytes(
                    buf[end - TRAILER_SIZE : end], "big"
                )
            if not ok:
                # Bytes may have been dropped: the next frame can start inside this one. While
                # the credit lasts, search from the byte after the magic; past it, skip it whole.
                searched = length + OVERHEAD
                if self._credit >= searched:
                    self._credit -= searched
                    self._skip(1)
                else:
                    self._skip(end - start)
                return Damaged(type_, request_id, "crc", length, version)
            payload = bytes(buf[start + HEADER_SIZE : end - TRAILER_SIZE])
            self._pos = end
            return Frame(type_, request_id, payload, version)
