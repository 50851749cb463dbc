"""Atomic file writes: a crash or Ctrl-C never leaves a half-written file behind.

The one recipe, for every writer in edgeprune (the core, the host and the board agent): the bytes
go to a file beside the target, are fsynced, the file is renamed over the target, and the
directory is fsynced so the rename itself survives a power cut. `replace_durably` is its last
two steps, for writers that keep their file across runs (resumable transfers); `atomic_open`
and `atomic_write_bytes` are the whole of it for one file, `atomic_directory` for a directory.
Standard library only: the agent uses it on boards with nothing but Python.

A written file gets the mode a plain `open()` would give it (0666 less the umask), or keeps the
mode of the file it replaces. A writer holds an flock on its temp file while it writes, so the
next write to the same target can tell a killed writer's temp file (no lock) from a live one and
deletes it (`sweep_temps`).
"""

from __future__ import annotations

import contextlib
import errno
import os
import re
import shutil
import stat
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import BinaryIO

from .errors import EdgepruneError

try:
    import fcntl
except ImportError:  # not on Windows: no sweeping there
    fcntl = None  # type: ignore[assignment]

# The names `atomic_open` gives its temp files (tempfile.mkstemp(prefix=".NAME.", suffix=".tmp")),
# which a sweep after a crash may delete.
TEMP_NAME = re.compile(r"^\..+\.[a-z0-9_]{8}\.tmp$")


def _fsync(path: str | os.PathLike, flags: int = os.O_RDWR) -> None:
    """Flush a file's bytes to disk, or with O_RDONLY a directory's entries (a rename into it)."""
    fd = os.open(path, flags)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def replace_durably(src: str | os.PathLike, dest: str | os.PathLike) -> None:
    """Move the complete file `src` over `dest`: a crash leaves the old `dest` or the new one.

    `src` must be in `dest`'s file system (beside it, or in a state directory there).
    """
    _fsync(src)
    os.replace(src, dest)
    _fsync(Path(dest).parent, os.O_RDONLY)


def open_regular(path: str, flags: int) -> int:
    """An `opener` for open() that refuses (EINVAL) what is not a regular file: a FIFO, a
    device or a directory named like an input would block or never end."""
    fd = os.open(path, flags | os.O_NONBLOCK)
    if not stat.S_ISREG(os.fstat(fd).st_mode):
        os.close(fd)
        raise OSError(errno.EINVAL, "not a regular file", path)
    os.set_blocking(fd, True)
    return fd


def _umask() -> int:
    """The process's umask, read without changing it where the OS tells it (threads share it)."""
    with contextlib.suppress(OSError, ValueError), open("/proc/self/status") as f:
        for line in f:
            if line.startswith("Umask:"):
                return int(line.split()[1], 8)
    mask = os.umask(0o022)
    os.umask(mask)
    return mask


def _mode_for(path: Path) -> int:
    """The mode a new `path` gets: that of the file it replaces, else 0666 less the umask."""
    try:
        return os.stat(path).st_mode & 0o7777
    except OSError:
        return 0o666 & ~_umask()


def sweep_temps(path: str | os.PathLike) -> list[str]:
    """Delete the temp files that killed writers of `path` left beside it; their names.

    A live writer holds an flock on its temp file, so only abandoned ones are removed."""
    path = Path(path)
    if fcntl is None:
        return []
    prefix, removed = f".{path.name}.", []
    try:
        names = [n for n in os.listdir(path.parent or ".") if n.startswith(prefix)]
    except OSError:
        return []
    for name in names:
        if not TEMP_NAME.match(name) or len(name) != len(prefix) + 12:
            continue
        tmp = os.path.join(path.parent or ".", name)
        try:
            fd = os.open(tmp, os.O_RDONLY | getattr(os, "O_NOFOLLOW", 0))
        except OSError:
            continue
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            if os.path.samestat(os.fstat(fd), os.stat(tmp, follow_symlinks=False)):
                os.unlink(tmp)
                removed.append(name)
        except OSError:
            pass  # locked: a live writer
        finally:
            os.close(fd)
    return removed


def _new_temp(path: Path) -> tuple[int, str]:
    """A locked temp file beside `path` (a sweep cannot take it between creation and lock)."""
    parent = path.parent or Path(".")
    if not os.path.isdir(parent):  # checked as the kernel sees it: y/.. needs y
        raise EdgepruneError(f"cannot write {path}: no such directory {parent}")
    for _ in range(10):
        try:
            fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=parent)
        except OSError as e:
            raise EdgepruneError(f"cannot write {path}: {e.strerror} ({parent})") from e
        if fcntl is None:
            return fd, tmp
        fcntl.flock(fd, fcntl.LOCK_EX)
        try:
            if os.path.samestat(os.fstat(fd), os.stat(tmp)):
                return fd, tmp
        except FileNotFoundError:
            pass  # a sweep took it before the lock: make another
        os.close(fd)
    raise EdgepruneError(f"cannot write {path}: its temp files keep disappearing")


@contextlib.contextmanager
def atomic_open(path: str | os.PathLike) -> Iterator[BinaryIO]:
    """Open a temp file beside `path` for writing; on success it replaces `path` durably."""
    path = Path(path)
    sweep_temps(path)
    fd, tmp = _new_temp(path)
    try:
        os.fchmod(fd, _mode_for(path))
        with os.fdopen(fd, "wb") as f:
            yield f
            f.flush()
            try:
                replace_durably(tmp, path)
            except OSError as e:
                if e.errno in (errno.EISDIR, errno.ENOTDIR, errno.ENOENT, errno.EACCES, errno.EROFS,
                               errno.ENOSPC, errno.EXDEV, errno.EBUSY):  # fmt: skip
                    raise EdgepruneError(f"cannot write {path}: {e.strerror}") from e
                raise
    except BaseException:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(tmp)
        raise


def atomic_write_bytes(path: str | os.PathLike, data: bytes | bytearray | memoryview) -> None:
    """Write `data` to `path` atomically."""
    with atomic_open(path) as f:
        f.write(data)


@contextlib.contextmanager
def atomic_directory(path: str | os.PathLike) -> Iterator[Path]:
    """A new directory beside `path` to fill; on success it replaces `path` (absent or empty).

    On failure the new directory and all in it are removed: `path` never holds part of it.
    """
    path = Path(path)
    try:
        tmp = Path(tempfile.mkdtemp(prefix=f".{path.name}.", dir=path.parent))
    except OSError as e:
        raise EdgepruneError(f"cannot write {path}: {e.strerror} ({path.parent})") from e
    try:
        os.chmod(tmp, 0o777 & ~_umask())  # mkdtemp makes 0700; a plain mkdir respects the umask
        yield tmp
        for directory, _, files in os.walk(tmp, topdown=False):
            for name in files:
                _fsync(os.path.join(directory, name))
            _fsync(directory, os.O_RDONLY)
        if path.exists():
            path.rmdir()
        os.replace(tmp, path)
        _fsync(path.parent, os.O_RDONLY)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
