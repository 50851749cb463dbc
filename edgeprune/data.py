"""Samples from .npy/.npz files: one sample per array, or a stack of samples along axis 0."""

from __future__ import annotations

import contextlib
import math
import os
import tokenize
import zipfile
import zlib
from collections.abc import Iterator
from pathlib import Path
from typing import BinaryIO

import numpy as np

from ._io import open_regular
from .errors import EdgepruneError

SUFFIXES = (".npy", ".npz")


# What a damaged .npy/.npz raises while read (numpy parses the header with ast and tokenize).
_UNREADABLE = (
    OSError, ValueError, SyntaxError, tokenize.TokenError, zipfile.BadZipFile, zlib.error,
    EOFError, NotImplementedError, RecursionError,
)  # fmt: skip

# dtype kinds a sample may have: bool, integers, floats (strings, objects, dates, records not).
_KINDS = "biuf"


class _Array:
    """One array in a file: its shape now, its samples later, read one at a time.

    Only the .npy header is read up front (for an .npz member too, from the zip stream), so a
    header that claims more than the file holds costs nothing: reading stops at the real end.
    """

    def __init__(self, path: Path, key: str | None, shape: tuple[int, ...], dtype: np.dtype):
        self.path, self.key, self.shape, self.dtype = path, key, shape, dtype

    @contextlib.contextmanager
    def _stream(self) -> Iterator[BinaryIO]:
        """The file (or .npz member) positioned after its .npy header."""
        if self.key is None:
            with open(self.path, "rb", opener=open_regular) as f:
                _read_npy_header(f)
                yield f
            return
        with zipfile.ZipFile(self.path) as zf, zf.open(self.key) as f:
            _read_npy_header(f)
            yield f

    def samples(self, count: int, sample_shape: tuple[int, ...]) -> Iterator[np.ndarray]:
        size = math.prod(sample_shape) * self.dtype.itemsize
        try:
            with self._stream() as f:
                for i in range(count):
                    buf = f.read(size)
                    if len(buf) != size:
                        raise EdgepruneError(f"{self.where} is truncated: re-create the file")
                    sample = np.frombuffer(buf, self.dtype).reshape(sample_shape)
                    if sample.dtype.kind == "f" and not np.all(np.isfinite(sample)):
                        raise EdgepruneError(
                            f"{self.where}: sample {i} holds NaN or infinity; "
                            "samples must be finite numbers"
                        )
                    yield sample
        except _UNREADABLE as e:
            raise EdgepruneError(f"cannot read samples from {self.where}: {e}") from e

    @property
    def where(self) -> str:
        return f"{self.path}" if self.key is None else f"{self.path}:{self.key}"


def _read_npy_header(f) -> tuple[tuple[int, ...], bool, np.dtype]:
    major, _ = np.lib.format.read_magic(f)
    if major == 1:
        return np.lib.format.read_array_header_1_0(f)
    return np.lib.format.read_array_header_2_0(f)


def _checked(path: Path, key: str | None, header, available: int) -> _Array:
    """The array a header describes, refused unless numeric, C-ordered and no larger than the
    `available` bytes (the file's or the member's declared size)."""
    shape, fortran, dtype = header
    where = f"{path}" if key is None else f"{path}:{key}"
    if fortran or dtype.kind not in _KINDS or dtype.fields is not None:
        raise EdgepruneError(
            f"{where}: {dtype} array; save the samples as a C-ordered numeric array"
        )
    if math.prod(shape) * dtype.itemsize > available:
        raise EdgepruneError(
            f"{where}: its header claims shape {list(shape)} ({math.prod(shape) * dtype.itemsize:,}"
            f" bytes) but it holds {available:,}: the file is damaged"
        )
    return _Array(path, key, tuple(shape), dtype)


def _arrays(path: Path) -> Iterator[_Array]:
    try:
        if path.suffix == ".npy":
            with open(path, "rb", opener=open_regular) as f:
                header = _read_npy_header(f)
                available = os.fstat(f.fileno()).st_size - f.tell()
            yield _checked(path, None, header, available)
        else:
            with zipfile.ZipFile(path) as zf:
                for info in zf.infolist():
                    if info.is_dir() or not info.filename.endswith(".npy"):
                        continue
                    with zf.open(info) as f:
                        header = _read_npy_header(f)
                        available = info.file_size - f.tell()
                    yield _checked(path, info.filename, header, available)
    except _UNREADABLE as e:
        raise EdgepruneError(f"cannot read samples from {path}: {e}") from e


class Samples:
    """The samples under a file or folder, fitted to a model input of shape `input_shape`.

    An array whose shape is the input's (with or without its batch axis) is one sample; an array
    of shape [N, *input_shape[1:]] holds N samples.
    """

    def __init__(self, path: str | os.PathLike, input_shape: tuple[int, ...]):
        path = Path(path)
        if path.is_dir():
            files = sorted(p for p in path.iterdir() if p.suffix in SUFFIXES and p.is_file())
        elif path.suffix in SUFFIXES and path.is_file():
            files = [path]
        else:
            raise EdgepruneError(f"{path}: not a .npy/.npz file or a folder of them")
        if not files:
            raise EdgepruneError(f"{path}: no .npy or .npz files in this folder")
        self.sample_shape = tuple(input_shape[1:])
        self._arrays = [(a, self._count(a)) for f in files for a in _arrays(f)]

    def _count(self, array: _Array) -> int:
        shape = array.shape
        if shape in (self.sample_shape, (1, *self.sample_shape)):
            return 1
        if shape[1:] == self.sample_shape:
            return shape[0]
        raise EdgepruneError(
            f"{array.path}: array of shape {shape} does not fit the model input {self.sample_shape}"
        )

    def __len__(self) -> int:
        return sum(n for _, n in self._arrays)

    def __iter__(self) -> Iterator[np.ndarray]:
        for array, n in self._arrays:
            yield from array.samples(n, self.sample_shape)


# An .npz read whole may inflate to at most this many times its file size (beyond 256 MiB):
# deflate makes 1000:1 of zeros, so a 10 MB file could otherwise claim 10 GB.
NPZ_RATIO = 50
NPZ_SMALL = 256 << 20


def check_npz_sizes(path: str | os.PathLike) -> None:
    """Refuse (one line) an .npz whose arrays' declared sizes, read from their headers only,
    exceed what reading it whole may cost (see NPZ_RATIO)."""
    path = Path(path)
    try:
        size = os.stat(path).st_size
        with zipfile.ZipFile(path) as zf:
            declared = sum(i.file_size for i in zf.infolist())
    except (OSError, zipfile.BadZipFile, ValueError):
        return  # np.load reports what is wrong with it
    if declared > max(NPZ_SMALL, NPZ_RATIO * size):
        raise EdgepruneError(
            f"{path}: its arrays inflate to {declared:,} bytes from a {size:,}-byte file "
            f"(over {NPZ_RATIO}:1): refusing to read it"
        )


def load_labelled(path: str | os.PathLike) -> tuple[np.ndarray, np.ndarray]:
    """Labelled samples from an .npz holding `x` (samples stacked on axis 0) and `y` (class ids)."""
    check_npz_sizes(path)
    try:
        with np.load(path, allow_pickle=False) as npz:
            x, y = npz["x"], npz["y"]
    except (OSError, ValueError, KeyError, TypeError, AttributeError) as e:
        raise EdgepruneError(
            f"cannot read labelled samples from {path}: expected an .npz with arrays x and y ({e})"
        ) from e
    if len(x) != len(y) or y.ndim != 1 or y.dtype.kind not in "iu":
        raise EdgepruneError(f"{path}: y must be {len(x)} integer class ids, one per sample in x")
    return x, y
