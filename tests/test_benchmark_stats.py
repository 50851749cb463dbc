"""The statistics benchmark verdicts rest on (benchmarks/common.py)."""

import pytest

from benchmarks.common import paired_difference
from benchmarks.thin import resolved

pytestmark = pytest.mark.host  # the benchmarks run on the host


def test_paired_difference_is_the_mean_difference_with_a_95_percent_interval():
    # Differences 0, +1, 0, -1: mean 0, sample sd sqrt(2/3), half-width 1.96 * sd / 2.
    diff, lo, hi = paired_difference([1, 1, 0, 0], [1, 0, 0, 1])
    assert diff == 0
    assert hi == pytest.approx(1.96 * (2 / 3) ** 0.5 / 2) and lo == pytest.approx(-hi)
    # Pairing: the same hits shifted by one changed sample give a narrow interval.
    a, b = [1] * 500 + [0] * 500, [1] * 499 + [0] * 501
    diff, lo, hi = paired_difference(a, b)
    assert diff == pytest.approx(0.001) and hi - lo < 0.01


def test_the_verdict_says_when_the_test_set_cannot_tell():
    assert resolved((-0.005, -0.009, -0.001)).endswith(": met)")
    assert resolved((-0.03, -0.04, -0.02)).endswith(": not met)")
    assert resolved((-0.016, -0.049, 0.017)).endswith("the test set cannot tell)")
