"""Claims the agents serving one work directory share: an upload's target, its content, a RUN.

A claim is a POSIX record lock (fcntl.lockf) on one byte of `.edgeprune/claims`, at an offset
drawn from the sha256 of its key: no file per claim to clean up, and the kernel drops every
claim of an agent that dies, so a claim never outlives its agent (a restarted agent finds them
all free). Record locks belong to the process: the agent that holds a claim may take it again
(a session re-pushing the path it is uploading), any other agent is refused.

Closing any descriptor of the file drops all of the process's locks on it, so only `Claims`
opens it, once.
"""

from __future__ import annotations

import fcntl
import hashlib
import os
from pathlib import Path

SPAN = 1 << 62  # offsets stay inside a signed 64-bit off_t


class Claims:
    """Exclusive, non-blocking claims on keys (strings) between the processes sharing `path`."""

    def __init__(self, path: str | os.PathLike):
        self.path = Path(path)
        self._fd: int | None = None
        self._held: set[str] = set()

    @staticmethod
    def _offset(key: str) -> int:
        return int.from_bytes(hashlib.sha256(key.encode()).digest()[:8], "big") % SPAN

    def take(self, key: str) -> bool:
        """Claim `key`; False if another process holds it."""
        if key in self._held:
            return True
        if self._fd is None:
            self._fd = os.open(self.path, os.O_RDWR | os.O_CREAT, 0o600)
        try:
            fcntl.lockf(self._fd, fcntl.LOCK_EX | fcntl.LOCK_NB, 1, self._offset(key))
        except (BlockingIOError, PermissionError):  # EAGAIN or EACCES, as POSIX allows
            return False
        self._held.add(key)
        return True

    def release(self, key: str) -> None:
        if key in self._held and self._fd is not None:
            fcntl.lockf(self._fd, fcntl.LOCK_UN, 1, self._offset(key))
        self._held.discard(key)

    def close(self) -> None:
        """Release every claim (closing the file drops them all)."""
        if self._fd is not None:
            os.close(self._fd)
        self._fd = None
        self._held.clear()
