"""Models known not to crash the runtime, by sha256, so that they skip the child-process probe.

`runtime.probe` loads a model in a child process first, so that one that crashes LiteRT ends the
child and not this process or a board agent. That costs a Python start-up and a model load per
model (~0.5-1 s). A model whose probe passed, and a model edgeprune wrote from such a model
(`Model.save` of a `vetted` model), need it no more: their sha256 go into a small file in the
user's cache ($EDGEPRUNE_CACHE_DIR, else $XDG_CACHE_HOME/edgeprune, else ~/.cache/edgeprune),
written atomically, bounded to LIMIT entries (the oldest dropped). The record is never read from
the model file itself: a hostile file could forge any marker it carries. A missing, unreadable
or corrupt record is an empty one (models are probed again); one that cannot be written is
skipped: it only saves time.
"""

from __future__ import annotations

import contextlib
import os
import re
from pathlib import Path

from ._io import atomic_write_bytes

FILE = "vetted-models"
LIMIT = 4096  # sha256 remembered; the oldest are forgotten
_LINE = re.compile(rb"^[0-9a-f]{64}$")
_known: list[str] | None = None  # the record as this process last read or wrote it


def path() -> Path:
    """Where the record lives."""
    if explicit := os.environ.get("EDGEPRUNE_CACHE_DIR"):
        return Path(explicit).expanduser() / FILE
    base = os.environ.get("XDG_CACHE_HOME") or "~/.cache"
    return Path(base).expanduser() / "edgeprune" / FILE


def _read() -> list[str]:
    """The digests in the record, oldest first; lines that are not a sha256 are ignored."""
    try:
        with open(path(), "rb") as f:
            data = f.read(LIMIT * 65 + 65)  # never more than a full record's worth
    except OSError:
        return []
    return [line.decode() for line in data.splitlines() if _LINE.match(line)][-LIMIT:]


def known(digest: str) -> bool:
    """Whether a model with this sha256 passed the probe or was written by edgeprune from one."""
    global _known
    if _known is None:
        _known = _read()
    return digest in _known


def remember(digest: str) -> None:
    """Add `digest` to the record (re-read first: other processes add to it too)."""
    global _known
    entries = [d for d in _read() if d != digest][-(LIMIT - 1) :] + [digest]
    _known = entries
    with contextlib.suppress(OSError):  # a read-only or missing home: only time is lost
        path().parent.mkdir(parents=True, exist_ok=True)
        atomic_write_bytes(path(), "".join(d + "\n" for d in entries).encode())


def forget_memo() -> None:
    """Read the record again at the next question (tests, and a changed environment)."""
    global _known
    _known = None
