"""Samples: one sample or a stack per array, read one sample at a time, clear errors."""

import numpy as np
import pytest

from edgeprune.data import Samples
from edgeprune.errors import EdgepruneError

SHAPE = (1, 4, 4, 2)


def test_samples_from_folder_in_order(tmp_path):
    rng = np.random.default_rng(0)
    stack = rng.standard_normal((5, 4, 4, 2)).astype(np.float32)
    np.save(tmp_path / "a.npy", stack)
    np.save(tmp_path / "b.npy", stack[0])
    np.savez(tmp_path / "c.npz", x=stack[:2], y=stack[3][None])
    (tmp_path / "notes.txt").write_text("ignored")
    samples = Samples(tmp_path, SHAPE)
    got = list(samples)
    assert len(samples) == len(got) == 5 + 1 + 2 + 1
    expected = [*stack, stack[0], *stack[:2], stack[3]]
    for a, b in zip(got, expected):
        np.testing.assert_array_equal(a, b)


def test_truncated_stack_and_wrong_shapes(tmp_path):
    np.save(tmp_path / "s.npy", np.zeros((10, 4, 4, 2), np.float32))
    data = (tmp_path / "s.npy").read_bytes()
    (tmp_path / "s.npy").write_bytes(data[: len(data) - 100])
    with pytest.raises(EdgepruneError, match="truncated"):
        list(Samples(tmp_path / "s.npy", SHAPE))
    np.save(tmp_path / "s.npy", np.zeros((10, 4, 2), np.float32))
    with pytest.raises(EdgepruneError, match="does not fit"):
        Samples(tmp_path / "s.npy", SHAPE)
    (tmp_path / "empty").mkdir()
    with pytest.raises(EdgepruneError, match="no .npy"):
        Samples(tmp_path / "empty", SHAPE)
    (tmp_path / "junk.npy").write_bytes(b"not numpy")
    with pytest.raises(EdgepruneError, match="cannot read samples"):
        Samples(tmp_path / "junk.npy", SHAPE)
