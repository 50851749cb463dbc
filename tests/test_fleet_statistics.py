"""The fleet's statistics without Flower: board sums add up to the union's map, and the integer
limbs that SecAgg+ carries sum exactly (Flower's quantizer is checked when flwr is installed)."""

from __future__ import annotations

import numpy as np
import pytest

from edgeprune.activations import record
from edgeprune.fleet import fidelity, statistics
from edgeprune.model import Model
from tests.models import random_inputs


def test_limbs_sum_exactly_with_signs():
    rng = np.random.default_rng(0)
    boards = [[rng.random((3, 4)) * 1e6, rng.normal(size=5), np.array([7.0])] for _ in range(6)]
    signs = [False, True, False]
    encoded = [statistics.encode(b, signs) for b in boards]
    assert all(a.min() >= 0 and a.max() < 2**statistics.LIMB_BITS for e in encoded for a in e)
    summed = [sum(e[i] for e in encoded) for i in range(len(encoded[0]))]
    decoded = statistics.decode(summed, [a.shape for a in boards[0]], signs)
    for i, got in enumerate(decoded):
        want = sum(b[i] for b in boards)
        np.testing.assert_allclose(got, want, rtol=1e-13, atol=1e-12)
    with pytest.raises(ValueError):
        statistics.encode([np.array([-1.0])], [False])


def test_flowers_quantizer_passes_limbs_unchanged():
    quantization = pytest.importorskip("flwr.common.secure_aggregation.quantization")
    s = statistics.SECAGG_SETTINGS
    limbs = statistics.encode([np.array([0.0, 1.5, 123456.789, 2.0**60])], [False])
    quantized = quantization.quantize(limbs, s["clipping_range"], s["quantization_range"])
    for q, limb in zip(quantized, limbs):
        np.testing.assert_array_equal(q, limb + s["clipping_range"])


def test_board_sums_add_up_to_the_union(tflite_model):
    model = Model.load(tflite_model("float32", "mixed"))
    shape = model.tensor(model.main.inputs[0]).shape[1:]
    shares = [random_inputs(6, shape, seed=k) for k in range(3)]
    total = None
    for share in shares:
        sums, seen = statistics.measure(model, share)
        assert seen == 6 and sums.map_count == 3
        total = sums if total is None else total + sums
    names, shapes, _ = statistics.layout(model)
    assert total.names == names and [a.shape for a in total.arrays] == shapes
    fleet = statistics.activation_map(model, total)
    union = record(model, np.concatenate([s[0::2] for s in shares]))
    assert fleet.count == union.count == 9
    for layer in union.layers:
        np.testing.assert_allclose(fleet.s_in(layer), union.s_in(layer), rtol=1e-5)
        np.testing.assert_allclose(fleet.s_out(layer), union.s_out(layer), rtol=1e-5)
    assert statistics.feature_mean(total).shape == (shapes[-1][0],)


def test_the_fleet_check_counts_and_chooses(tflite_model):
    model = Model.load(tflite_model("float32", "mixed"))
    shape = model.tensor(model.main.inputs[0]).shape[1:]
    samples = random_inputs(12, shape, seed=3)
    amap = record(model, samples[0::2])
    how = {"score": "fine", "granularity": "weight", "keep_classifier": True, "scope": "layer"}
    same, n = fidelity.agreement_counts(model, amap, [0.0, 0.5, 0.9], how, list(samples[1::2]))
    assert n == 6 and same[0] == 6 and all(0 <= k <= 6 for k in same)
    chosen, rows = fidelity.choose([0.0, 0.3, 0.6], [400, 398, 300], 400, 0.95)
    assert chosen == 0.3 and rows[2]["agreement"] == 0.75 and rows[1]["agreement_lower"] >= 0.95
    assert fidelity.choose([0.0, 0.3], [20, 20], 20, 0.95)[0] == 0.0  # 20 samples prove nothing
