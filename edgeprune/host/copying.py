"""What goes where when `push` and `pull` copy like scp: files, folders (`-r`), `DIR/` targets.

A target that ends in "/" (or, for pull, an existing local directory) means "into that
directory", keeping the source's name; any other target is the copy's own name. A missing local
directory named with "/" is created when its parent exists; a missing parent is a one-line
error, never a traceback or a file where a directory was meant. Folders need `-r`, as with scp.
One `Device` (one link, one SSH session) carries every file of a copy; each file is skipped when
the same content is already there (the sha256 of the file on the other side is compared).
"""

from __future__ import annotations

import os
from collections.abc import Callable
from pathlib import Path, PurePosixPath
from typing import Any

from ..errors import EdgepruneError
from .device_errors import DeviceError, RemoteError

Progress = Callable[[int, int], None]


def _into(target: str) -> bool:
    return target.endswith("/") or (os.sep != "/" and target.endswith(os.sep))


def local_tree(source: Path, recursive: bool) -> list[tuple[Path, str]]:
    """(file, its path relative to `source`) for each file to push; "" for a single file."""
    if source.is_dir():
        if not recursive:
            raise EdgepruneError(f"{source} is a directory: push it with -r")
        files = sorted(p for p in source.rglob("*") if p.is_file())
        if not files:
            raise EdgepruneError(f"{source} holds no files: nothing to push")
        return [(f, f.relative_to(source).as_posix()) for f in files]
    if not source.exists():
        raise EdgepruneError(f"{source}: no such file or directory")
    return [(source, "")]


def remote_root(source: Path, remote: str | None) -> str:
    """Where on the board `source` goes: `remote` (a name, or `DIR/` to go into DIR), default
    its own name in the work directory."""
    if not remote:
        return source.name
    return f"{remote.rstrip('/')}/{source.name}" if _into(remote) else remote


def local_root(output: str, name: str) -> Path:
    """Where a pulled file or folder called `name` goes for `-o output` (see the module)."""
    out = Path(output)
    if out.is_dir():
        return out / name
    if out.exists():
        if _into(output):
            raise EdgepruneError(f"{output}: exists and is not a directory")
        return out
    if not out.parent.is_dir():
        raise EdgepruneError(f"{output}: the directory {out.parent} does not exist")
    if _into(output):
        out.mkdir()
        return out / name
    return out


def push(board, source: Path, remote: str | None, recursive: bool, progress: Progress) -> dict:
    """Copy a file or folder to the board over one link; the per-file results and totals."""
    files = local_tree(source, recursive)
    root = remote_root(source, remote)
    total = sum(f.stat().st_size for f, _ in files)
    moved = _each(files, total, progress, lambda f, rel, p: board.put(f, _join(root, rel), p))
    return {**moved, "path": root}


def pull(board, path: str, output: str, recursive: bool, progress: Progress) -> dict:
    """Copy a file or folder from the board over one link; the per-file results and totals."""
    name = PurePosixPath(path).name or "edgeprune"
    if not recursive:
        dest = local_root(output, name)
        try:
            return _each([(path, "")], None, progress, lambda f, rel, p: board.get(f, dest, p))
        except RemoteError as e:
            if e.code == "not_found" and _is_folder(board, path):
                raise EdgepruneError(f"{path} is a folder on the board: pull it with -r") from None
            raise
    listed = board.list(path, recursive=True)
    if listed["truncated"]:
        raise EdgepruneError(f"{path} holds too many files to list in one reply; pull a subfolder")
    dest = local_root(output, name)
    if listed["type"] == "file":
        return _each([(path, "")], None, progress, lambda f, rel, p: board.get(f, dest, p))
    base = PurePosixPath(listed["path"])
    if dest.exists() and not dest.is_dir():
        raise EdgepruneError(f"{dest}: exists and is not a directory")
    dest.mkdir(exist_ok=True)
    files = []
    for entry in listed["entries"]:
        rel = _below(base, entry["path"])
        if entry["type"] == "dir":
            (dest / rel).mkdir(parents=True, exist_ok=True)
        else:
            files.append((entry, rel))
    total = sum(int(e["size"]) for e, _ in files)

    def get(entry: dict, rel: str, p: Progress) -> dict:
        target = dest / rel
        target.parent.mkdir(parents=True, exist_ok=True)
        return board.get(entry["path"], target, p)

    return {**_each(files, total, progress, get), "path": str(dest)}


def _below(base: PurePosixPath, path: object) -> str:
    """`path` relative to `base`, refused unless it is a plain path below it: a board that
    names `../x` (or an absolute path) must not make a pull write outside its destination."""
    parts = PurePosixPath(str(path)).parts
    top = len(base.parts)
    if parts[:top] != base.parts or len(parts) == top or {"..", "/"} & set(parts[top:]):
        raise DeviceError(f"the board listed {path!r}, which is not inside {base}; not pulled")
    return PurePosixPath(*parts[top:]).as_posix()


def _is_folder(board, path: str) -> bool:
    try:
        return board.list(path)["type"] == "dir"
    except RemoteError:
        return False


def _join(root: str, rel: str) -> str:
    return f"{root}/{rel}" if rel else root


def _each(items: list, total: int | None, progress: Progress, move) -> dict[str, Any]:
    """Move each item with one byte bar over all of them; the results and their totals."""
    done: list[dict[str, Any]] = []
    base = 0

    def step(n: int, size: int) -> None:
        progress(base + n, total if total is not None else size)

    for item, rel in items:
        result = move(item, rel, step)
        done.append(result)
        base += int(result["size"])
        if total is not None:
            progress(base, total)
    if len(done) == 1 and not items[0][1]:
        return done[0]
    return {
        "size": sum(int(r["size"]) for r in done),
        "sha256": "",
        "files": done,
        "skipped": sum(bool(r.get("skipped")) for r in done),
    }
