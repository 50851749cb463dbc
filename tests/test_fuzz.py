"""Truncated and mutated copies of real models: a clear ModelError or a consistent model, never a
crash, hang or unchecked exception."""

import contextlib
import signal
import struct

import numpy as np
import pytest

from edgeprune.errors import EdgepruneError, ModelError
from edgeprune.layers import scan
from edgeprune.model import Model
from tests.models import build

CASES_PER_KIND = 150  # × 4 kinds = 600 mutated or truncated files


def mutations(data: bytes, rng: np.random.Generator, n: int):
    """Truncations, random bit flips and hostile 32-bit words (offsets, lengths)."""
    hostile = [
        0,
        1,
        0x7FFFFFFF,
        0x80000000,
        0xFFFFFFFF,
        len(data),
        len(data) - 4,
        0xFFFF,
    ]
    for i in range(n):
        buf = bytearray(data)
        how = i % 3
        if how == 0:
            buf = buf[: int(rng.integers(0, len(data)))]
        elif how == 1:
            for at in rng.integers(0, len(buf), int(rng.integers(1, 9))):
                buf[at] ^= 1 << int(rng.integers(0, 8))
        else:
            # Words in the flatbuffer's structure (the first and last 20%, where tables live).
            region = int(len(buf) * 0.2)
            at = int(
                rng.choice(
                    [
                        rng.integers(0, region),
                        rng.integers(len(buf) - region, len(buf) - 4),
                    ]
                )
            )
            at -= at % 4
            struct.pack_into("<I", buf, at, int(rng.choice(hostile)))
        yield bytes(buf)


def exercise(data: bytes) -> str:
    """Parse and use a model the way the core does; returns 'ok' or 'rejected'."""
    try:
        model = Model(data)
    except ModelError as e:
        assert str(e) and "\n" not in str(e)
        return "rejected"
    for t in model.tensors:
        if model.is_constant(t) and t.dtype is not None and not t.sparse:
            values = model.tensor_data(t)
            assert values.shape == t.shape  # sizes were checked against the buffers
    with contextlib.suppress(EdgepruneError):
        scan(model)
    return "ok"


class _Timeout(Exception):
    pass


def _alarm(*_):
    raise _Timeout


@pytest.mark.parametrize("kind", ["float32", "dynamic", "int8", "float16"])
def test_fuzzed_models_fail_cleanly(kind):
    data = build(kind)
    rng = np.random.default_rng(42)
    outcomes = {"ok": 0, "rejected": 0}
    previous = signal.signal(signal.SIGALRM, _alarm)
    try:
        for case in mutations(data, rng, CASES_PER_KIND):
            signal.alarm(5)  # a parse must never hang
            outcomes[exercise(case)] += 1
            signal.alarm(0)
    finally:
        signal.alarm(0)
        signal.signal(signal.SIGALRM, previous)
    assert sum(outcomes.values()) == CASES_PER_KIND
    # Every truncation is caught; the mutations are a mix of harmless and rejected.
    assert outcomes["rejected"] >= CASES_PER_KIND // 3


def test_every_truncation_is_rejected():
    data = build("int8")
    for cut in range(0, len(data), max(1, len(data) // 97)):
        with pytest.raises(ModelError):
            Model(data[:cut])
