"""Talk to a board's agent: `Device(url)` offers `info`, `list`, `put`, `get` and `run`.

The link, HELLO and the request/reply exchange are the `session` layer's (`Connection`, which
`Device` extends); pushes and pulls are `transfers`'. Ctrl-C during `run` cancels the operation
on the board.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from firmware_bridge import protocol as p

from . import transfers
from .device_errors import LinkError
from .session import Connection, error_of, is_corrupt

Event = dict[str, Any]


class Device(Connection):
    """A board reached through a device URL; use as a context manager to close the link."""

    def info(self) -> dict[str, Any]:
        """What the board reports about itself (INFO)."""
        return self.request(p.INFO, {}).json()

    def run(
        self, operation: str, params: dict[str, Any], on_event: Callable[[Event], None]
    ) -> dict[str, Any]:
        """Run a board operation (`edgeprune.operations`) with `params` on the board, passing
        its progress events to `on_event`; returns {"result": its to_dict(), "outputs": the
        files it wrote}.

        Ctrl-C cancels it on the board (it stops at its next progress step) and re-raises.
        """
        session = self.session
        request_id = session.new_id()
        body = {"operation": operation, "params": dict(params)}
        session.send(p.RUN, request_id, body)
        heard = time.monotonic()

        def step() -> p.Frame | None:
            """Wait a little for the run's next frame; its final reply, or None."""
            nonlocal heard
            item = session.receive(session.resend_after() or 1.0)
            now = time.monotonic()
            if item is None:
                if now - heard > session.silence:
                    raise LinkError(f"{self.label}: the agent stopped answering during {operation}")
                resend = session.resend_after()
                if resend is not None and now - heard > resend + session.keepalive:
                    session.send(p.RUN, request_id, body)  # answered from the agent's cache
                return None
            heard = now
            if item.request_id != request_id:
                return None
            if isinstance(item, p.Damaged) or is_corrupt(item):
                if item.type in p.FINAL:
                    session.send(p.RUN, request_id, body)
                return None
            if item.type == p.EVENT:
                on_event(item.json())
                return None
            return item if item.type in (p.OK, p.ERROR) else None

        interrupted = False
        while True:
            try:
                reply = step()
            except LinkError as e:
                raise LinkError(
                    f"{operation} did not finish on {self.label} (edgeprune writes its outputs "
                    f"atomically, so none is half-written): {e}"
                ) from None
            except KeyboardInterrupt:
                if interrupted:
                    raise
                interrupted = True
                session.send(p.CANCEL, session.new_id(), {"request_id": request_id})
                continue
            if reply is None:
                continue
            if interrupted:
                raise KeyboardInterrupt
            if reply.type == p.ERROR:
                raise error_of(reply)
            return reply.json()

    def list(self, path: str = "", recursive: bool = False) -> dict[str, Any]:
        """What is at `path` in the board's work directory (LIST): {"path", "type" ("file" or
        "dir"), "entries": [{"path", "type", "size", "mtime"}], "truncated"}."""
        return self.request(p.LIST, {"path": path, "recursive": recursive}).json()

    def put(self, local: str | Path, remote: str, progress=None) -> dict[str, Any]:
        """Upload a file (see `transfers.put`)."""
        return transfers.put(self, Path(local), remote, progress)

    def get(self, remote: str, local: str | Path, progress=None) -> dict[str, Any]:
        """Download a file (see `transfers.get`)."""
        return transfers.get(self, remote, Path(local), progress)
