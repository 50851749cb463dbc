"""LIST: what is in the agent's work directory, confined like every other path.

A host may list the work directory itself ("" or ".") or any directory or file inside it, once
or recursively, to pull a folder or show `edgeprune ls`. Never listed: the agent's own
`.edgeprune/`, the temp files of atomic writes in progress, and symlinks that lead outside the
work directory; a recursive listing does not descend into symlinked directories (no loops).
The reply is cut at a byte budget (it must fit in one frame) and says so with `truncated`.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

from edgeprune._io import TEMP_NAME

from .files import STATE_DIR, WorkDir
from .protocol import ProtocolError

ENTRY_BYTES = 96  # a generous estimate of one entry's JSON beside its name


def _target(workdir: WorkDir, name: object) -> Path:
    if name in ("", ".", None):
        return workdir.root
    path = workdir.resolve(name)
    if not path.exists():
        raise ProtocolError("not_found", f"{name}: no such file or directory in the work directory")
    return path


def _inside(workdir: WorkDir, path: Path) -> bool:
    real = path.resolve()
    return real == workdir.root or workdir.root in real.parents


def _entry(workdir: WorkDir, path: Path) -> dict[str, Any] | None:
    """One entry: name relative to the work directory, type, size, mtime; None to hide it."""
    if TEMP_NAME.match(path.name) or not _inside(workdir, path):
        return None
    try:
        st = path.stat()
    except OSError:  # a dangling symlink, or the file went away
        return None
    kind = "dir" if path.is_dir() else "file"
    return {
        "path": workdir.relative(path),
        "type": kind,
        "size": st.st_size if kind == "file" else 0,
        "mtime": int(st.st_mtime),
    }


def _walk(workdir: WorkDir, top: Path, recursive: bool):
    for directory, dirs, files in os.walk(top):
        here = Path(directory)
        if here == workdir.root and STATE_DIR in dirs:
            dirs.remove(STATE_DIR)
        dirs.sort()
        for name in sorted(dirs + files):
            yield here / name
        if not recursive:
            return


def listing(workdir: WorkDir, name: object, recursive: bool, budget: int) -> dict[str, Any]:
    """{"path", "type", "entries": [...], "truncated"} for LIST of `name` (at most `budget`
    bytes of entries)."""
    if not isinstance(recursive, bool):
        raise ProtocolError("bad_request", "recursive must be true or false")
    top = _target(workdir, name)
    if top.is_file():
        entry = _entry(workdir, top)
        return {"path": entry["path"] if entry else str(name), "type": "file",
                "entries": [entry] if entry else [], "truncated": False}  # fmt: skip
    entries, used, truncated = [], 0, False
    for path in _walk(workdir, top, recursive):
        entry = _entry(workdir, path)
        if entry is None:
            continue
        used += len(entry["path"].encode()) + ENTRY_BYTES
        if used > budget:
            truncated = True
            break
        entries.append(entry)
    path = "" if top == workdir.root else workdir.relative(top)
    return {"path": path, "type": "dir", "entries": entries, "truncated": truncated}
