"""Requests and replies over one link to an agent, the layer under transfers and the client.

`Session` moves frames over an open link (a reader thread feeds a queue); `Connection` opens the
link a device URL names, says HELLO, and sends a request until its final reply comes (over a
lossy link a request that gets no answer is resent; the agent answers a resent request from its
reply cache, so nothing runs twice). A link that ends raises the link's own explanation
(missing agent, refused key, ...). The client's `Device` and `transfers` build on it.
"""

from __future__ import annotations

import contextlib
import itertools
import queue
import random
import threading
import time
from typing import Any

from firmware_bridge import protocol as p

from .device_errors import LinkError, RemoteError
from .links import Link
from .transports import open_link

CLIENT = "edgeprune-host/0.1.0"
RESEND_AFTER = 1.0  # seconds without an answer before a lossy link resends (plus wire time)
SILENCE = 10.0  # seconds without any frame, beyond keepalives, before the agent counts as gone
# Seconds the first answer (HELLO) may take: the agent is a Python process that starts and imports
# on the board, which takes seconds on a slow one (a Pi Zero, an emulated Pi, several at once).
STARTUP = 60.0


class Session:
    """One open link: frames out, and frames in through a reader thread and a queue."""

    def __init__(self, link: Link):
        self.link = link
        self.items: queue.Queue = queue.Queue()
        self._ids = itertools.count(random.randrange(1, 1 << 31))
        self.ended = False
        self.max_payload = p.DEFAULT_MAX_PAYLOAD
        self.keepalive = 0.0  # the agent's interval, known after HELLO
        threading.Thread(target=self._read_loop, daemon=True).start()

    def _read_loop(self) -> None:
        decoder = p.Decoder(p.HARD_MAX_PAYLOAD)
        try:
            while data := self.link.read():
                decoder.feed(data)
                for item in decoder.items():
                    self.items.put(item)
        finally:
            self.items.put(None)

    def new_id(self) -> int:
        return next(self._ids) & 0xFFFFFFFF or next(self._ids)

    def send(self, type_: int, request_id: int, body: dict[str, Any] | bytes) -> None:
        if isinstance(body, bytes):
            self.link.write(p.encode(type_, request_id, body))
        else:
            self.link.write(p.encode_json(type_, request_id, body))

    def send_parts(self, type_: int, request_id: int, parts) -> None:
        """A frame whose binary payload is `parts` (e.g. a chunk header and a file's bytes)."""
        self.link.write_parts(p.encode_parts(type_, request_id, parts))

    def receive(self, timeout: float) -> p.Frame | p.Damaged | None:
        """The next frame (or damaged frame); None after `timeout`; LinkError once it ended."""
        if self.ended:
            raise self.link.failure()
        try:
            item = self.items.get(timeout=timeout)
        except queue.Empty:
            return None
        if item is None:
            self.ended = True
            raise self.link.failure()
        return item

    @property
    def silence(self) -> float:
        return max(SILENCE, 3 * self.keepalive)

    def resend_after(self, in_flight: int = 0) -> float | None:
        """How long to wait for an answer before resending, or None when the link never loses."""
        if not self.link.lossy:
            return None
        return RESEND_AFTER + (in_flight / self.link.rate if self.link.rate else 0.0)

    def close(self) -> None:
        self.link.close()


def error_of(frame: p.Frame) -> RemoteError:
    """The RemoteError an ERROR frame stands for."""
    body = frame.json()
    code, message = str(body.get("code", "error")), str(body.get("message", "agent error"))
    return RemoteError(code, message, body)


def is_corrupt(frame: p.Frame | p.Damaged) -> bool:
    """An ERROR saying our request was damaged in transit: resend it."""
    if not isinstance(frame, p.Frame) or frame.type != p.ERROR:
        return False
    try:
        return frame.json().get("code") == "corrupt"
    except p.ProtocolError:
        return False


class Connection:
    """A board's agent reached through a device URL: the link opened lazily, HELLO said, and
    requests answered (resent over a lossy link). Use as a context manager to close the link."""

    def __init__(self, url: str, label: str | None = None):
        self.url = url
        self.label = label or url
        self._session: Session | None = None
        self.hello: dict[str, Any] = {}

    def __enter__(self) -> Connection:
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    def close(self) -> None:
        if self._session is not None:
            self._session.close()
            self._session = None

    @property
    def session(self) -> Session:
        """The open session, connecting and saying HELLO first if needed."""
        if self._session is None:
            session = Session(open_link(self.url))
            self._session = session
            try:
                self.hello = self.request(
                    p.HELLO,
                    {
                        "versions": list(p.VERSIONS),
                        "max_payload": p.DEFAULT_MAX_PAYLOAD,
                        "client": CLIENT,
                    },
                ).json()
            except BaseException:
                self.close()
                raise
            session.max_payload = self.hello["max_payload"]
            session.keepalive = float(self.hello.get("keepalive", 2.0))
        return self._session

    def reconnect(self) -> None:
        """Drop the session; the next request opens a new link."""
        if self._session is not None:
            with contextlib.suppress(Exception):  # the old link is broken: closing is best effort
                self._session.close()
            self._session = None

    def request(self, type_: int, body: dict[str, Any] | bytes) -> p.Frame:
        """Send one request and return its final reply (OK or DATA); RemoteError on ERROR."""
        session = self._session if type_ == p.HELLO else self.session
        request_id = session.new_id()
        session.send(type_, request_id, body)
        heard = time.monotonic()
        while True:
            wait = session.resend_after() or session.silence
            item = session.receive(wait)
            now = time.monotonic()
            if item is None:
                if type_ == p.HELLO and now - heard > max(STARTUP, session.silence):
                    raise LinkError(
                        f"{self.label}: no agent answered; is `python3 -m firmware_bridge serve` "
                        "running on the board on this link (at the same baud)?"
                    )
                if type_ != p.HELLO and now - heard > session.silence:
                    raise LinkError(f"{self.label}: the agent stopped answering")
                if session.resend_after() is not None:
                    session.send(type_, request_id, body)
                continue
            heard = now
            if item.request_id != request_id:
                continue  # a keepalive, or a late answer to an earlier request
            if isinstance(item, p.Damaged) or is_corrupt(item):
                session.send(type_, request_id, body)
            elif item.type == p.ERROR:
                raise error_of(item)
            elif item.type in p.FINAL:
                return item
