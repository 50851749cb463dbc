"""What native code prints straight to file descriptor 2: shown, or hidden under `-q`.

The LiteRT runtime's C++ code writes lines such as "INFO: Created TensorFlow Lite XNNPACK
delegate for CPU." to stderr itself, past Python's sys.stderr, and honours no environment
variable that would stop it. `-q` asks for silence, so the CLI calls `hide()` and the places
that create an interpreter wrap it in `silenced()`, which points fd 2 at /dev/null for that
moment only. Nothing else is hidden: edgeprune's own errors are exceptions, printed after.
"""

from __future__ import annotations

import contextlib
import os
import sys
from collections.abc import Iterator

_hidden = False


def hide(value: bool = True) -> None:
    """Hide (or show again) native output during `silenced()` blocks, for this process."""
    global _hidden
    _hidden = value


@contextlib.contextmanager
def silenced() -> Iterator[None]:
    """While inside, fd 2 goes to /dev/null if `hide()` was called; else nothing changes."""
    if not _hidden:
        yield
        return
    with contextlib.suppress(ValueError, OSError):
        sys.stderr.flush()
    saved = os.dup(2)
    devnull = os.open(os.devnull, os.O_WRONLY)
    try:
        os.dup2(devnull, 2)
        yield
    finally:
        os.dup2(saved, 2)
        os.close(saved)
        os.close(devnull)
