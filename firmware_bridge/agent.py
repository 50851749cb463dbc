"""The agent's request loop: decode frames, answer them, run one operation at a time.

The transport is two callables (read some bytes, write all bytes), so the same loop serves a
serial port and the stdin/stdout of an SSH exec channel. Replies are remembered by request id
for the session, so a request the host resends after losing its reply is answered again rather
than done twice. A handler that fails answers ERROR; nothing a host sends stops the agent.
"""

from __future__ import annotations

import sys
import threading
import time
import traceback
from collections import OrderedDict
from collections.abc import Callable
from typing import Any

from . import __version__
from . import protocol as p
from .claims import Claims
from .files import WorkDir

REPLY_CACHE = 64  # replies remembered for resent requests
RUN_GRACE = 5.0  # seconds a running operation gets to stop when the link closes
STALL = 10.0  # seconds a frame may wait for the rest of its bytes before the session ends
# What one request may announce: a file's bytes ride in PUT_DATA only, the rest is JSON.
REQUEST_LIMITS = {t: p.REQUEST_MAX_PAYLOAD for t in p.REQUESTS if t != p.PUT_DATA}


class Agent:
    """Serves one link until it reaches end of file.

    `read` returns some bytes, b"" at the end of the link, or None when nothing arrived for a
    while (about a second): then a frame whose header announced more bytes than came, with
    nothing more for `stall` seconds, ends the session with ERROR `stalled` instead of holding
    it forever.
    """

    def __init__(
        self,
        workdir: WorkDir,
        read: Callable[[], bytes | None],
        write: Callable[[bytes], None],
        keepalive: float = 2.0,
        max_payload: int = p.DEFAULT_MAX_PAYLOAD,
        stall: float = STALL,
    ):
        self.workdir = workdir
        self._read = read
        self._write = write
        self.keepalive = keepalive
        self.max_payload = max_payload
        self.stall = stall
        self.session_max = max_payload
        self._lock = threading.Lock()  # guards writes, the reply cache and the running op
        self._last_sent = time.monotonic()
        self._replies: OrderedDict[int, bytes] = OrderedDict()
        self._run: tuple[int, threading.Thread, threading.Event] | None = None
        self._busy = False  # a request handler is working (e.g. hashing a large file)
        self._deaf = False  # writing to the host failed: replies are dropped from then on
        self._stopped = threading.Event()
        self._runs = Claims(workdir.state / "run")  # one RUN on the board, whatever the session
        self._handlers = {
            p.HELLO: self._hello,
            p.INFO: self._info,
            p.PING: lambda frame: (p.OK, {}),
            p.PUT_OPEN: self._put_open,
            p.PUT_DATA: self._put_data,
            p.PUT_CLOSE: self._put_close,
            p.GET_OPEN: self._get_open,
            p.GET_DATA: self._get_data,
            p.LIST: self._list,
            p.RUN: self._start_run,
            p.CANCEL: self._cancel,
        }

    # ----- the loop ----------------------------------------------------------------------

    def serve(self) -> bool:
        """Answer frames until the link ends; then cancel and wait for a running operation.
        True when a stalled frame ended the session while the link itself is still open."""
        decoder = p.Decoder(self.max_payload, limits=REQUEST_LIMITS)
        ticker = threading.Thread(target=self._keepalive_loop, daemon=True)
        ticker.start()
        arrived = time.monotonic()
        try:
            while (data := self._read()) != b"":
                if data is None:
                    if time.monotonic() - arrived > self.stall and self._stalled(decoder):
                        return True
                    continue
                arrived = time.monotonic()
                decoder.feed(data)
                for item in decoder.items():
                    if isinstance(item, p.Damaged):
                        self._damaged(item)
                    else:
                        self._handle(item)
            return False
        finally:
            self._stopped.set()
            self.workdir.end_session()  # uploads left open give up their paths
            running = self._run
            if running:
                running[2].set()
                running[1].join(RUN_GRACE)

    def _stalled(self, decoder: p.Decoder) -> bool:
        """Whether a frame has waited `stall` seconds for its bytes: if so it is answered with
        ERROR `stalled` and the session ends (True)."""
        waiting = decoder.partial()
        if waiting is None:
            return False
        type_, request_id, length, held = waiting
        message = (
            f"a frame announced {length} bytes and {held} came, then nothing for "
            f"{self.stall:g} s; the session is ended"
        )
        print(f"firmware_bridge: {message}", file=sys.stderr, flush=True)
        if type_ in p.REQUESTS:
            self._error(request_id, "stalled", message)
        return True

    def _send(self, frame: bytes, cache_for: int | None = None) -> None:
        with self._lock:
            if cache_for is not None:
                self._replies[cache_for] = frame
                while len(self._replies) > REPLY_CACHE:
                    self._replies.popitem(last=False)
            if self._deaf:
                return
            try:
                self._write(frame)
            except OSError:  # the host is gone; keep reading: uploads keep what still arrives
                self._deaf = True
            self._last_sent = time.monotonic()

    def _reply(self, request_id: int, type_: int, body: dict[str, Any] | bytes) -> None:
        if isinstance(body, bytes):
            frame = p.encode(type_, request_id, body)
        else:
            frame = p.encode_json(type_, request_id, body)
        self._send(frame, None if type_ == p.DATA else request_id)

    def _error(self, request_id: int, code: str, message: str, **extra: Any) -> None:
        self._reply(request_id, p.ERROR, {"code": code, "message": message, **extra})

    def _damaged(self, item: p.Damaged) -> None:
        if item.type not in p.REQUESTS:
            return
        if item.reason == "too_large":
            message = f"frame of {item.length} bytes is over the limit of {self.max_payload}"
            self._error(item.request_id, "too_large", message, max_payload=self.max_payload)
        elif item.reason == "version":
            message = f"protocol version {item.version} is not spoken here"
            self._error(item.request_id, "version", message, versions=list(p.VERSIONS))
        else:
            self._error(item.request_id, "corrupt", "frame damaged in transit", retry=True)

    def _handle(self, frame: p.Frame) -> None:
        if frame.type == p.KEEPALIVE:
            return
        with self._lock:
            cached = self._replies.get(frame.request_id)
        if cached is not None and frame.type != p.HELLO:
            return self._send(cached)
        handler = self._handlers.get(frame.type)
        self._busy = True
        try:
            if handler is None:
                raise p.ProtocolError("unknown_type", f"unknown frame type 0x{frame.type:02x}")
            reply = handler(frame)
        except p.ProtocolError as e:
            return self._error(frame.request_id, e.code, str(e), **e.extra)
        except OSError as e:
            return self._error(frame.request_id, "os", f"on the board: {e}")
        except Exception as e:  # a bug must not end the session: report it and go on
            traceback.print_exc(file=sys.stderr)
            return self._error(frame.request_id, "internal", f"agent error: {e!r}")
        finally:
            self._busy = False
        if reply is not None:
            self._reply(frame.request_id, *reply)

    def _keepalive_loop(self) -> None:
        while not self._stopped.wait(self.keepalive / 2):
            if (self._run or self._busy) and time.monotonic() - self._last_sent >= self.keepalive:
                self._send(p.encode(p.KEEPALIVE, 0))

    # ----- handlers: each returns (reply type, body) or None when it replies later -----

    def _hello(self, frame: p.Frame):
        body = frame.json()
        theirs = body.get("versions", [])
        common = [v for v in p.VERSIONS if v in theirs]
        if not common:
            raise p.ProtocolError(
                "version",
                f"the agent speaks protocol versions {list(p.VERSIONS)}, the host {theirs}: "
                "install the same edgeprune release on both",
            )
        wanted = body.get("max_payload", p.DEFAULT_MAX_PAYLOAD)
        if not isinstance(wanted, int) or wanted < 1024:
            raise p.ProtocolError("bad_request", "max_payload must be an integer >= 1024")
        with self._lock:
            self._replies.clear()  # request ids are per session
        self.session_max = min(wanted, self.max_payload)
        return p.OK, {
            "version": common[-1],
            "max_payload": self.session_max,
            "keepalive": self.keepalive,
            "agent": __version__,
        }

    def _info(self, frame: p.Frame):
        from . import info, operations  # not needed to start: keep the agent's start quick

        body = info.collect(self.workdir.root)
        try:
            body["operations"] = operations.available()
        except ImportError as e:
            body["operations"] = []
            body["problem"] = f"edgeprune cannot be imported on the board: {e}"
        body["protocol"] = p.VERSION
        return p.OK, body

    def _put_open(self, frame: p.Frame):
        body = frame.json()
        name, size, sha256 = body.get("path"), body.get("size"), body.get("sha256")
        offset = self.workdir.put_open(name, size, sha256)
        if offset is None:
            return p.OK, {"offset": size, "present": True}  # identical: nothing to send
        return p.OK, {"offset": offset}

    def _put_data(self, frame: p.Frame):
        head = p.SHA256_SIZE + p.OFFSET.size
        if len(frame.payload) < head:
            raise p.ProtocolError("bad_request", "PUT_DATA needs a sha256 and an offset")
        sha256 = frame.payload[: p.SHA256_SIZE].hex()
        (offset,) = p.OFFSET.unpack_from(frame.payload, p.SHA256_SIZE)
        size = self.workdir.put_data(sha256, offset, memoryview(frame.payload)[head:])
        return p.OK, {"size": size}

    def _put_close(self, frame: p.Frame):
        body = frame.json()
        path, size = self.workdir.put_close(body.get("path"), body.get("sha256"))
        return p.OK, {"path": self.workdir.relative(path), "size": size, "sha256": body["sha256"]}

    def _get_open(self, frame: p.Frame):
        path = self.workdir.resolve(frame.json().get("path"), must_exist=True)
        digest = self.workdir.digest(path)
        return p.OK, {
            "path": self.workdir.relative(path),
            "size": path.stat().st_size,
            "sha256": digest,
        }

    def _get_data(self, frame: p.Frame):
        body = frame.json()
        length = body.get("length")
        limit = self.session_max - p.OFFSET.size
        if not isinstance(length, int) or not 0 < length <= limit:
            raise p.ProtocolError("bad_request", f"length must be between 1 and {limit}")
        offset = body.get("offset")
        data = self.workdir.read(body.get("path"), body.get("sha256"), offset, length)
        return p.DATA, p.OFFSET.pack(offset) + data

    def _list(self, frame: p.Frame):
        from .listing import listing

        body = frame.json()
        budget = self.session_max // 2  # the entries' JSON, with room to spare in one frame
        return p.OK, listing(self.workdir, body.get("path"), body.get("recursive", False), budget)

    def _start_run(self, frame: p.Frame):
        from . import operations

        body = frame.json()
        name, params = body.get("operation"), body.get("params", {})
        checked = operations.check_request(name, params, self.workdir)
        with self._lock:
            if self._run is not None and self._run[0] == frame.request_id:
                return None  # a resent RUN: the running one will answer
            if self._run is not None:
                raise p.ProtocolError(
                    "busy", f"operation {self._run[0]} is running; CANCEL it or wait"
                )
        self._claim_run()  # outside the lock: keepalives flow while it waits
        with self._lock:
            cancelled = threading.Event()
            thread = threading.Thread(
                target=self._run_thread,
                args=(frame.request_id, name, checked, cancelled),
                daemon=True,
            )
            self._run = (frame.request_id, thread, cancelled)
        thread.start()
        return None

    def _claim_run(self) -> None:
        """The board's one RUN, waiting RUN_GRACE seconds for that of an ended session (a cut
        link's operation is being cancelled) before ERROR busy."""
        deadline = time.monotonic() + RUN_GRACE
        while not self._runs.take("run"):
            if time.monotonic() > deadline:
                raise p.ProtocolError(
                    "busy", "another session's operation is running on the board; wait for it"
                )
            time.sleep(0.1)

    def _run_thread(self, request_id, name, checked, cancelled) -> None:
        from edgeprune.errors import EdgepruneError
        from edgeprune.operation import Cancelled

        from . import operations

        def emit(event: dict[str, Any]) -> None:
            self._send(p.encode_json(p.EVENT, request_id, event))

        emit({"kind": "started", "operation": name, "outputs": checked.outputs})
        result, code, message = None, "failed", ""
        try:
            for output in checked.outputs:  # an operation expects an output's directory
                (self.workdir.root / output).parent.mkdir(parents=True, exist_ok=True)
            result = operations.run(checked, emit, cancelled)
        except (Cancelled, KeyboardInterrupt):
            code, message = "cancelled", f"{name} was cancelled; nothing written"
        except EdgepruneError as e:  # the user's input: its one line, as on the host
            message = str(e)
        except Exception as e:  # the operation itself crashed: report, keep serving
            traceback.print_exc(file=sys.stderr)
            message = f"{name} crashed on the board: {e!r}"
        with self._lock:
            self._run = None
            self._runs.release("run")
        if result is None:
            return self._error(request_id, code, message)
        done = [o for o in checked.outputs if (self.workdir.root / o).exists()]
        folders = [o for o in done if (self.workdir.root / o).is_dir()]
        self._reply(request_id, p.OK, {"result": result, "outputs": done, "directories": folders})

    def _cancel(self, frame: p.Frame):
        target = frame.json().get("request_id")
        running = self._run
        hit = running is not None and running[0] == target
        if hit:
            running[2].set()
        return p.OK, {"cancelled": hit}
