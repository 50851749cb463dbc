"""Samples from .npy/.npz files: one sample per array, or a stack of samples along axis 0."""

from __future__ import annotations

import os
from collections.abc import Iterator
from pathlib import Path

import numpy as np

from .errors import EdgepruneError

SUFFIXES = (".npy", ".npz")


class Samples:
    """The samples under a file or folder, fitted to a model input of shape `input_shape`.

    An array whose shape is the input's (with or without its batch axis) is one sample; an array
    of shape [N, *input_shape[1:]] holds N samples. Large .npy stacks are memory-mapped.
    """

    def __init__(self, path: str | os.PathLike, input_shape: tuple[int, ...]):
        path = Path(path)
        if path.is_dir():
            self.files = sorted(p for p in path.iterdir() if p.suffix in SUFFIXES)
        elif path.suffix in SUFFIXES and path.is_file():
            self.files = [path]
        else:
            raise EdgepruneError(f"{path}: not a .npy/.npz file or a folder of them")
        if not self.files:
            raise EdgepruneError(f"{path}: no .npy or .npz files in this folder")
        self.sample_shape = tuple(input_shape[1:])
        self._arrays = [(f, key, self._count(arr, f)) for f, key, arr in self._scan()]

    def _scan(self):
        for f in self.files:
            try:
                loaded = np.load(f, mmap_mode="r", allow_pickle=False)
                if isinstance(loaded, np.ndarray):
                    yield f, None, loaded
                    continue
                with loaded as npz:
                    for key in npz.files:
                        yield f, key, npz[key]
            except (OSError, ValueError) as e:
                raise EdgepruneError(f"cannot read samples from {f}: {e}") from e

    def _count(self, arr: np.ndarray, f: Path) -> int:
        shape = arr.shape
        if shape in (self.sample_shape, (1, *self.sample_shape)):
            return 1
        if shape[1:] == self.sample_shape:
            return shape[0]
        raise EdgepruneError(
            f"{f}: array of shape {shape} does not fit the model input {self.sample_shape}"
        )

    def __len__(self) -> int:
        return sum(n for _, _, n in self._arrays)

    def __iter__(self) -> Iterator[np.ndarray]:
        for f, key, n in self._arrays:
            if key is None:
                arr = np.load(f, mmap_mode="r", allow_pickle=False)
            else:
                with np.load(f, allow_pickle=False) as npz:
                    arr = npz[key]
            arr = arr.reshape((n, *self.sample_shape))
            for i in range(n):
                yield np.asarray(arr[i])
