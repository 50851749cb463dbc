"""Samples from .npy/.npz files: one sample per array, or a stack of samples along axis 0."""

from __future__ import annotations

import os
from collections.abc import Iterator
from pathlib import Path

import numpy as np

from .errors import EdgepruneError

SUFFIXES = (".npy", ".npz")


class _Array:
    """One array in a file: its shape now, its samples later, read one at a time for .npy."""

    def __init__(self, path: Path, key: str | None, shape: tuple[int, ...], dtype: np.dtype):
        self.path, self.key, self.shape, self.dtype = path, key, shape, dtype

    def samples(self, count: int, sample_shape: tuple[int, ...]) -> Iterator[np.ndarray]:
        if self.key is not None:
            with np.load(self.path, allow_pickle=False) as npz:
                yield from npz[self.key].reshape((count, *sample_shape))
            return
        # .npy: read sample by sample, so memory stays flat however large the stack is.
        size = int(np.prod(sample_shape, dtype=np.int64)) * self.dtype.itemsize
        with open(self.path, "rb") as f:
            _read_npy_header(f)
            for _ in range(count):
                buf = f.read(size)
                if len(buf) != size:
                    raise EdgepruneError(f"{self.path} is truncated: re-create the file")
                yield np.frombuffer(buf, self.dtype).reshape(sample_shape)


def _read_npy_header(f) -> tuple[tuple[int, ...], bool, np.dtype]:
    major, _ = np.lib.format.read_magic(f)
    if major == 1:
        return np.lib.format.read_array_header_1_0(f)
    return np.lib.format.read_array_header_2_0(f)


def _arrays(path: Path) -> Iterator[_Array]:
    try:
        if path.suffix == ".npy":
            with open(path, "rb") as f:
                shape, fortran, dtype = _read_npy_header(f)
            if fortran or dtype.hasobject:
                raise EdgepruneError(f"{path}: save the samples as a C-ordered numeric array")
            yield _Array(path, None, shape, dtype)
        else:
            with np.load(path, allow_pickle=False) as npz:
                for key in npz.files:
                    yield _Array(path, key, npz[key].shape, npz[key].dtype)
    except (OSError, ValueError) as e:
        raise EdgepruneError(f"cannot read samples from {path}: {e}") from e


class Samples:
    """The samples under a file or folder, fitted to a model input of shape `input_shape`.

    An array whose shape is the input's (with or without its batch axis) is one sample; an array
    of shape [N, *input_shape[1:]] holds N samples.
    """

    def __init__(self, path: str | os.PathLike, input_shape: tuple[int, ...]):
        path = Path(path)
        if path.is_dir():
            files = sorted(p for p in path.iterdir() if p.suffix in SUFFIXES)
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


def load_labelled(path: str | os.PathLike) -> tuple[np.ndarray, np.ndarray]:
    """Labelled samples from an .npz holding `x` (samples stacked on axis 0) and `y` (class ids)."""
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
