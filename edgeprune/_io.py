"""Atomic file writes: a crash or Ctrl-C never leaves a half-written file behind.

The one recipe, for every writer in edgeprune (the core, the host and the board agent): the bytes
go to a file beside the target, are fsynced, the file is renamed over the target, and the
directory is fsynced so the rename itself survives a power cut. `replace_durably` is its last
two steps, for writers that keep their file across runs (resumable transfers); `atomic_open`
and `atomic_write_bytes` are the whole of it for one file, `atomic_directory` for a directory.
Standard library only: the agent uses it on boards with nothing but Python.
"""

from __future__ import annotations

import contextlib
import os
import re
import shutil
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import BinaryIO

from .errors import EdgepruneError

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


@contextlib.contextmanager
def atomic_open(path: str | os.PathLike) -> Iterator[BinaryIO]:
    """Open a temp file beside `path` for writing; on success it replaces `path` durably."""
    path = Path(path)
    try:
        fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent or ".")
    except OSError as e:
        raise EdgepruneError(f"cannot write {path}: {e.strerror} ({path.parent})") from e
    try:
        with os.fdopen(fd, "wb") as f:
            yield f
        replace_durably(tmp, path)
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
