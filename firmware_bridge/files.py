"""The agent's work directory: confined paths, resumable uploads, checksummed downloads.

Every path a host names is relative to the work directory and must resolve (symlinks followed)
to a place inside it; the agent's own state lives in `.edgeprune/` there, which hosts cannot
name. An upload is written to `.edgeprune/partial/<sha256>` and renamed over its destination
only once its sha256 matches, so a destination is never half-written and a broken upload
resumes from the bytes already on the board.
"""

from __future__ import annotations

import contextlib
import hashlib
import os
import re
import shutil
import time
from pathlib import Path

from edgeprune._io import TEMP_NAME, replace_durably

from .claims import Claims
from .protocol import ProtocolError

STATE_DIR = ".edgeprune"
PARTIAL_MAX_AGE = 7 * 24 * 3600  # seconds an abandoned upload is kept for resuming
_SHA256 = re.compile(r"^[0-9a-f]{64}$")
_READ_BLOCK = 1 << 20
OPEN_UPLOADS = 64  # uploads an agent tracks at once; the oldest is forgotten (it can resume)


def check_sha256(value: object) -> str:
    """`value` if it is a lowercase hex sha256, else ProtocolError."""
    if not isinstance(value, str) or not _SHA256.match(value):
        raise ProtocolError("bad_request", "sha256 must be 64 lowercase hex digits")
    return value


class WorkDir:
    """A directory the agent owns; resolves host paths inside it and stores transfers."""

    def __init__(self, root: str | os.PathLike):
        self.root = Path(root).expanduser().resolve()
        self.state = self.root / STATE_DIR
        self.partial = self.state / "partial"
        self.partial.mkdir(parents=True, exist_ok=True)
        self._hashers: dict[str, hashlib._Hash] = {}  # sha256 -> running hash of its partial
        self._sizes: dict[str, int] = {}  # sha256 -> the size its PUT_OPEN announced
        self._digests: dict[tuple, str] = {}  # (path, size, mtime_ns, inode) -> sha256
        self.claims = Claims(self.state / "claims")  # shared with the other agents here
        self._targets: dict[str, set[str]] = {}  # sha256 -> the paths being uploaded with it

    def resolve(self, name: object, *, must_exist: bool = False) -> Path:
        """The absolute path of host path `name`, or ProtocolError("path") if it leaves the root."""
        if not isinstance(name, str) or not name or "\0" in name:
            raise ProtocolError("path", "a path must be a non-empty string")
        rel = Path(name)
        if rel.is_absolute():
            raise ProtocolError(
                "path", f"{name}: paths on the device are relative to its work directory"
            )
        try:
            path = (self.root / rel).resolve()
        except (OSError, RuntimeError) as e:  # a name too long, a symlink loop
            raise ProtocolError("path", f"{name[:200]}: {e}") from None
        if path == self.root or self.root not in path.parents:
            raise ProtocolError("path", f"{name}: outside the work directory of the agent")
        # Checked on the resolved path: x/../.edgeprune/agent.lock or a symlink to the state
        # directory name it as surely as .edgeprune/agent.lock does.
        if path == self.state or self.state in path.parents:
            raise ProtocolError("path", f"{name}: {STATE_DIR}/ belongs to the agent")
        if must_exist and not path.is_file():
            raise ProtocolError("not_found", f"{name}: no such file in the work directory")
        return path

    def relative(self, path: Path) -> str:
        return path.relative_to(self.root).as_posix()

    # ----- uploads -----------------------------------------------------------------------

    def put_open(self, name: object, size: object, sha256: object) -> int | None:
        """Prepare an upload; returns how many of its bytes the board already has, or None when
        `name` already holds exactly this content (nothing to send).

        The upload claims its path and its content until PUT_CLOSE, the end of the session or
        the agent's death: another agent's upload to the same path (or of the same content,
        which shares the partial file) is refused with ERROR `in_progress`."""
        path = self.resolve(name)
        sha256 = check_sha256(sha256)
        if not isinstance(size, int) or size < 0:
            raise ProtocolError("bad_request", "size must be a non-negative integer")
        self._claim(name, path, sha256)
        try:
            if path.is_file() and path.stat().st_size == size and self.digest(path) == sha256:
                self._release(sha256, path)
                return None
            return self._open(sha256, size)
        except BaseException:
            self._release(sha256, path)
            raise

    def _claim(self, name: str, path: Path, sha256: str) -> None:
        target = f"path:{self.relative(path)}"
        if not self.claims.take(target):
            raise ProtocolError(
                "in_progress",
                f"another upload to {name} is in progress on the board; retry when it ends",
            )
        if not self.claims.take(f"content:{sha256}"):
            if not self._targets.get(sha256):
                self.claims.release(target)
            raise ProtocolError(
                "in_progress",
                f"another upload of the content of {name} is in progress on the board; "
                "retry when it ends",
            )
        self._targets.setdefault(sha256, set()).add(target)

    def _release(self, sha256: str, path: Path | None = None) -> None:
        """Give up the claims of the upload of `sha256` (to `path` only, if given)."""
        targets = self._targets.get(sha256, set())
        for target in [f"path:{self.relative(path)}"] if path else list(targets):
            targets.discard(target)
            if not any(target in held for held in self._targets.values()):
                self.claims.release(target)
        if not targets:
            self._targets.pop(sha256, None)
            self.claims.release(f"content:{sha256}")

    def end_session(self) -> None:
        """The session ended: every upload it left open gives up its claims."""
        self._targets.clear()
        self.claims.close()

    def _open(self, sha256: str, size: int) -> int:
        part = self.partial / sha256
        have = part.stat().st_size if part.exists() else 0
        if have > size:  # cannot be a prefix of this content
            part.unlink()
            have = 0
        free = shutil.disk_usage(self.partial).free
        if size - have > free:
            raise ProtocolError(
                "no_space", f"the board needs {size - have:,} more bytes and has {free:,} free"
            )
        self._sizes[sha256] = size
        if sha256 not in self._hashers:
            hasher = hashlib.sha256()
            if have:
                with open(part, "rb") as f:
                    while block := f.read(_READ_BLOCK):
                        hasher.update(block)
            # No file until data arrives: opens alone leave nothing behind.
            self._hashers[sha256] = hasher
            while len(self._hashers) > OPEN_UPLOADS:
                oldest = next(iter(self._hashers))
                del self._hashers[oldest]
                self._sizes.pop(oldest, None)
                self._release(oldest)
        return have

    def put_data(self, sha256: str, offset: int, data: bytes) -> int:
        """Write `data` at `offset` of the upload; returns the contiguous size now on the board.

        Bytes the board already has are skipped (a resent chunk), a chunk beyond the end is a
        gap: ProtocolError("gap") tells the host where to go back to.
        """
        hasher = self._hashers.get(sha256)
        if hasher is None:
            raise ProtocolError("bad_request", "PUT_DATA before PUT_OPEN for this sha256")
        part = self.partial / sha256
        have = part.stat().st_size if part.exists() else 0
        if offset > have:
            raise ProtocolError("gap", f"the board has {have} bytes; resend from there", size=have)
        if offset + len(data) > self._sizes[sha256]:
            raise ProtocolError("bad_request", "PUT_DATA beyond the size PUT_OPEN announced")
        new = data[have - offset :]
        if new:
            with open(part, "ab") as f:
                f.write(new)
            hasher.update(new)
            have += len(new)
        return have

    def put_close(self, name: object, sha256: object) -> tuple[Path, int]:
        """Check the upload's sha256, then move it over its destination atomically."""
        path = self.resolve(name)
        sha256 = check_sha256(sha256)
        part = self.partial / sha256
        if f"path:{self.relative(path)}" not in self._targets.get(sha256, ()):
            if path.is_file() and self.digest(path) == sha256:  # a resent PUT_CLOSE
                return path, path.stat().st_size
            raise ProtocolError("bad_request", "PUT_CLOSE without an open upload to that path")
        try:
            hasher = self._hashers.pop(sha256, None)
            if hasher is not None and not part.exists() and self._sizes.get(sha256) == 0:
                part.touch()  # an empty file: no PUT_DATA made its partial
            if hasher is None or not part.exists():
                raise ProtocolError("bad_request", "PUT_CLOSE without an open upload")
            if hasher.hexdigest() != sha256:
                part.unlink()
                raise ProtocolError(
                    "checksum", "the uploaded bytes do not match their sha256; push again"
                )
            path.parent.mkdir(parents=True, exist_ok=True)
            self.resolve(name)  # the parents just created must not have changed where it points
            replace_durably(part, path)
            return path, path.stat().st_size
        finally:
            self._release(sha256, path)

    # ----- downloads ---------------------------------------------------------------------

    def digest(self, path: Path) -> str:
        """sha256 of a file, cached while its size, mtime and inode stay the same."""
        st = path.stat()
        key = (str(path), st.st_size, st.st_mtime_ns, st.st_ino)
        if key not in self._digests:
            hasher = hashlib.sha256()
            with open(path, "rb") as f:
                while block := f.read(_READ_BLOCK):
                    hasher.update(block)
            self._digests[key] = hasher.hexdigest()
        return self._digests[key]

    def read(self, name: object, sha256: object, offset: object, length: int) -> bytes:
        """Up to `length` bytes at `offset` of a file that must still have content `sha256`."""
        path = self.resolve(name, must_exist=True)
        if not isinstance(offset, int) or offset < 0:
            raise ProtocolError("bad_request", "offset must be a non-negative integer")
        if self.digest(path) != check_sha256(sha256):
            raise ProtocolError("changed", f"{name} changed on the board during the download")
        with open(path, "rb") as f:
            f.seek(offset)
            return f.read(length)

    # ----- after a crash -----------------------------------------------------------------

    def sweep(self, everywhere: bool) -> list[str]:
        """Delete stale partial uploads and, if `everywhere`, the temp files of atomic writes
        that a killed agent left anywhere in the work directory."""
        removed = []
        for directory, dirs, files in os.walk(self.root) if everywhere else ():
            if Path(directory) == self.root and STATE_DIR in dirs:
                dirs.remove(STATE_DIR)
            for name in files:
                if TEMP_NAME.match(name):
                    path = Path(directory, name)
                    path.unlink()
                    removed.append(self.relative(path))
        old = time.time() - PARTIAL_MAX_AGE
        for part in self.partial.iterdir():
            with contextlib.suppress(FileNotFoundError):
                if part.stat().st_mtime < old:
                    part.unlink()
                    removed.append(f"{STATE_DIR}/partial/{part.name}")
        return removed
