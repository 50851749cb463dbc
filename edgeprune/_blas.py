"""One BLAS thread for a stretch of many small products (the repair's Gram sums and solves).

NumPy's OpenBLAS starts a thread per core and its idle threads spin: for products of a few
hundred rows on a loaded 2-core machine, MobileNetV2's repair took 11-16 s of CPU with the
default threads against 3.8 s with one (cProfile over `thin.shrink`, most of it in the spin).
`one_thread()` sets OpenBLAS to one thread for the duration and restores it; where NumPy is not
built on a known OpenBLAS it does nothing.
"""

from __future__ import annotations

import contextlib
import ctypes
import glob
import os
from collections.abc import Iterator

import numpy as np

_NAMES = (  # (get, set) in the OpenBLAS builds NumPy wheels ship
    ("scipy_openblas_get_num_threads64_", "scipy_openblas_set_num_threads64_"),
    ("openblas_get_num_threads64_", "openblas_set_num_threads64_"),
    ("openblas_get_num_threads", "openblas_set_num_threads"),
)


def _controls() -> tuple | None:
    """(get, set) of the OpenBLAS NumPy loaded, or None."""
    folder = os.path.join(os.path.dirname(np.__file__), os.pardir, "numpy.libs")
    for path in glob.glob(os.path.join(folder, "*openblas*")):
        try:
            lib = ctypes.CDLL(path)  # already loaded by NumPy: the same library
        except OSError:
            continue
        for get, put in _NAMES:
            if hasattr(lib, get) and hasattr(lib, put):
                return getattr(lib, get), getattr(lib, put)
    return None


_CONTROLS: list = []


@contextlib.contextmanager
def one_thread() -> Iterator[None]:
    """Run the block with one OpenBLAS thread (no-op without a known OpenBLAS)."""
    if not _CONTROLS:
        _CONTROLS.append(_controls())
    controls = _CONTROLS[0]
    if controls is None:
        yield
        return
    get, put = controls
    before = int(get())
    put(1)
    try:
        yield
    finally:
        put(before)
