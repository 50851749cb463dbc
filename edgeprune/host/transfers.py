"""Push and pull files in chunks, with a window of chunks in flight, resumable by sha256.

Both sides name a transfer by the sha256 of the whole file, so a transfer interrupted by a cut
link resumes from the bytes already across, whether the link comes back within the same command
(it reconnects a few times) or on the next run of it. Over a lossy link a lost or damaged chunk
sends the window back to the first byte not yet confirmed (go-back-N). A file appears at its
destination only complete and verified: uploads are renamed into place by the agent, downloads
here, after the sha256 matched.
"""

from __future__ import annotations

import hashlib
import os
import time
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

from firmware_bridge import protocol as p

from .._io import replace_durably
from .device_errors import AgentMissingError, DeviceError, HostKeyError, LinkError
from .session import Connection, Session, error_of, is_corrupt

RECONNECTS = 3  # times a transfer reopens a broken link before giving up
BACKOFF = 0.5  # seconds, times the attempt number, before reopening
STALL = 60.0  # seconds without a confirmed byte before a noisy link is given up
Progress = Callable[[int, int], None]  # (bytes done, bytes total)


def sha256_file(path: Path) -> str:
    hasher = hashlib.sha256()
    with open(path, "rb") as f:
        while block := f.read(1 << 20):
            hasher.update(block)
    return hasher.hexdigest()


def _chunk(session: Session) -> int:
    return min(session.link.chunk_size, session.max_payload - 64)


def _with_reconnects(device: Connection, attempt: Callable[[], dict[str, Any]], what: str) -> dict:
    """Call `attempt` until it succeeds, reopening the link after each LinkError (a few times)."""
    reconnects = 0
    while True:
        try:
            result = attempt()
            return {**result, "reconnects": reconnects}
        except (HostKeyError, AgentMissingError):
            raise
        except LinkError as e:
            if reconnects >= RECONNECTS:
                raise LinkError(f"{e}; run the same {what} again to resume it") from None
            reconnects += 1
            device.reconnect()
            time.sleep(BACKOFF * reconnects)


class _Window:
    """Request ids in flight, each with its file offset, and when an answer was last heard."""

    def __init__(self, session: Session, start: int):
        self.session = session
        self.done = start  # bytes confirmed
        self.next = start  # next byte to send or ask for
        self.flight: dict[int, int] = {}
        self.heard = self.progressed = time.monotonic()

    def go_back(self) -> None:
        self.flight.clear()
        self.next = self.done

    def wait(self) -> p.Frame | p.Damaged | None:
        """The next answer to a request in flight, or None when it is time to resend."""
        session = self.session
        item = session.receive(session.resend_after(self.next - self.done) or session.silence)
        now = time.monotonic()
        if now - self.progressed > max(STALL, session.silence):
            raise LinkError(f"{session.link.label}: no progress for {STALL:.0f} s")
        if item is None:
            if now - self.heard > session.silence:
                raise LinkError(f"{session.link.label}: the agent stopped answering")
            if session.link.lossy:
                self.go_back()
            return None
        self.heard = now
        if item.request_id not in self.flight:
            return None
        if isinstance(item, p.Damaged) or is_corrupt(item):
            self.go_back()
            return None
        return item

    def advance(self, done: int) -> None:
        if done > self.done:
            self.done = done
            self.progressed = time.monotonic()

    def answers(self, size: int, send: Callable[[int, int], int]) -> Iterator[p.Frame]:
        """The answers to the requests for bytes [done, size), until `done` reaches `size`.

        Before each wait the window is filled: `send(request_id, offset)` sends the request for
        the bytes at `offset` and returns how many it covers. The caller advances `done` (or
        goes back) as each answer says.
        """
        session = self.session
        while self.done < size:
            while len(self.flight) < session.link.window and self.next < size:
                request_id = session.new_id()
                self.flight[request_id] = self.next
                self.next += send(request_id, self.next)
            item = self.wait()
            if item is not None:
                del self.flight[item.request_id]
                yield item


def _send_chunks(session: Session, f, digest: str, start: int, size: int, progress) -> None:
    window = _Window(session, start)
    head = bytes.fromhex(digest)
    chunk = _chunk(session)
    buffer = bytearray(chunk)  # reused: every link has written a frame when write returns

    def send(request_id: int, offset: int) -> int:
        n = os.preadv(f.fileno(), [memoryview(buffer)[: min(chunk, size - offset)]], offset)
        if n <= 0:
            raise DeviceError(f"{f.name}: changed while it was pushed (shorter); push again")
        parts = (head, p.OFFSET.pack(offset), memoryview(buffer)[:n])
        session.send_parts(p.PUT_DATA, request_id, parts)
        return n

    for item in window.answers(size, send):
        body = item.json()
        if item.type == p.ERROR and body.get("code") == "gap":
            window.advance(int(body["size"]))
            window.go_back()
        elif item.type == p.ERROR:
            raise error_of(item)
        else:
            window.advance(int(body["size"]))
            if progress:
                progress(window.done, size)


def put(device: Connection, local: Path, remote: str, progress: Progress | None = None) -> dict:
    """Upload `local` to `remote` (relative to the agent's work directory); returns its result.

    A file whose identical content (same sha256) is already at `remote` is not sent again
    (`"skipped": True`); a partial upload of the same content resumes where it stopped.
    """
    if not local.is_file():
        raise DeviceError(f"{local}: no such file")
    with ThreadPoolExecutor(1) as pool:  # hash the file while the link opens
        hashing = pool.submit(sha256_file, local)
        device.session  # noqa: B018 (connects)
        size, digest = local.stat().st_size, hashing.result()
    first: list[int] = []  # where each attempt started

    def attempt() -> dict[str, Any]:
        opened = device.request(p.PUT_OPEN, {"path": remote, "size": size, "sha256": digest})
        offset = int(opened.json()["offset"])
        first.append(offset)
        if opened.json().get("present"):  # the same content is already there: send nothing
            return {"path": remote, "size": size, "sha256": digest, "skipped": True,
                    "resumed_from": 0, "reconnected_at": []}  # fmt: skip
        with open(local, "rb") as f:
            _send_chunks(device.session, f, digest, offset, size, progress)
        done = device.request(p.PUT_CLOSE, {"path": remote, "sha256": digest}).json()
        return {**done, "resumed_from": first[0], "reconnected_at": first[1:]}

    return _with_reconnects(device, attempt, "push")


def _receive_chunks(session: Session, f, hasher, remote, digest, start, size, progress) -> None:
    window = _Window(session, start)
    chunk = _chunk(session)

    def ask(request_id: int, offset: int) -> int:
        length = min(chunk, size - offset)
        body = {"path": remote, "sha256": digest, "offset": offset, "length": length}
        session.send(p.GET_DATA, request_id, body)
        return length

    for item in window.answers(size, ask):
        if item.type == p.ERROR:
            raise error_of(item)
        (offset,) = p.OFFSET.unpack_from(item.payload)
        data = item.payload[p.OFFSET.size :]
        if offset > window.done or not data:  # an earlier answer was lost
            window.go_back()
        elif offset == window.done:
            f.write(data)
            hasher.update(data)
            window.advance(offset + len(data))
            if progress:
                progress(window.done, size)


def get(device: Connection, remote: str, local: Path, progress: Progress | None = None) -> dict:
    """Download `remote` to `local` (a file, or a directory to put it in); returns its result.

    The bytes go to a hidden `.NAME.<sha256 prefix>.partial` beside the destination, which a
    later pull of the same file resumes; the destination is replaced only after the sha256
    matched. A destination that already has the same content is left alone (`"skipped"`).
    """
    first: list[int] = []  # where each attempt started

    def attempt() -> dict[str, Any]:
        meta = device.request(p.GET_OPEN, {"path": remote}).json()
        size, digest = int(meta["size"]), str(meta["sha256"])
        dest = local / Path(meta["path"]).name if local.is_dir() else local
        if dest.is_file() and dest.stat().st_size == size and sha256_file(dest) == digest:
            return {"path": str(dest), "size": size, "sha256": digest, "skipped": True,
                    "resumed_from": 0, "reconnected_at": []}  # fmt: skip
        partial = dest.parent / f".{dest.name}.{digest[:16]}.partial"
        hasher = hashlib.sha256()
        if partial.exists() and partial.stat().st_size > size:
            partial.unlink()
        with open(partial, "ab+") as f:
            f.seek(0)
            while block := f.read(1 << 20):
                hasher.update(block)
            first.append(f.tell())
            _receive_chunks(device.session, f, hasher, remote, digest, first[-1], size, progress)
        if hasher.hexdigest() != digest:
            partial.unlink()
            raise DeviceError(f"{remote}: the downloaded bytes do not match its sha256; pull again")
        replace_durably(partial, dest)
        return {
            "path": str(dest),
            "size": size,
            "sha256": digest,
            "resumed_from": first[0],
            "reconnected_at": first[1:],
        }

    return _with_reconnects(device, attempt, "pull")
