"""The fleet's statistics without Flower: board sums add up to the union's map, and the integer
limbs that SecAgg+ carries sum exactly (Flower's quantizer is checked when flwr is installed)."""

from __future__ import annotations

import numpy as np
import pytest

from edgeprune import prior
from edgeprune.activations import record
from edgeprune.classifier import Classifier
from edgeprune.estimate import TOLERANCE, AccuracyEstimator
from edgeprune.fleet import fidelity, prior_stage, statistics
from edgeprune.model import Model
from edgeprune.personalize import DEFAULT_SPARSITIES as SPARSITIES
from edgeprune.reference import Reference, build, classifier_outputs
from edgeprune.stages import Judge, PruneStage, State, collect
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


def central_sweep(model: Model, shares, reference, agreement: float) -> PruneStage:
    """`personalize`'s prune stage over the union of the boards' samples (each share of even
    length keeps its samples' parity: the union splits as the boards do)."""
    evidence = collect(model, np.concatenate(shares), reference=reference)
    c = evidence.classifier
    scoring = {"score": "fine", "granularity": "weight", "keep_classifier": True}
    stage = PruneStage("fidelity", SPARSITIES, agreement, scoring, "layer", lambda m: {})
    stage.propose(State(model, c.weight, c.bias), evidence, Judge(evidence, TOLERANCE))
    return stage


def assert_same_sweep(rows: list[dict], stage: PruneStage) -> None:
    """The fleet's sweep rows carry the central candidates' check figures and decisions."""
    assert len(rows) == len(stage.candidates)
    for row, want in zip(rows, stage.candidates):
        assert row["agreement"] == want.agreement
        assert row["agreement_lower"] == want.agreement_lower
        assert row["admissible"] == want.admissible, (row, want)
        for key in ("estimated_accuracy", "estimated_lower"):
            if getattr(want, key) is None:
                assert row[key] is None
            else:
                assert abs(row[key] - getattr(want, key)) <= 1e-7, (key, row, want)  # rounding


def reference_for(model: Model, seed: int = 7) -> Reference:
    """A reference over random validation samples with labels the source mostly predicts."""
    shape = model.tensor(model.main.inputs[0]).shape[1:]
    x = random_inputs(60, shape, seed=seed)
    logits = np.array([z for _, z in classifier_outputs(model, x)])
    labels = logits.argmax(axis=1)
    flip = np.random.default_rng(seed).random(len(labels)) < 0.2
    labels[flip] = (labels[flip] + 1) % logits.shape[1]
    return build(model, iter(x), labels)


@pytest.mark.parametrize("with_reference", [True, False], ids=["estimate", "no-reference"])
def test_the_fleet_check_is_the_central_check(tflite_model, with_reference):
    """Boards' check sums, added, give the sweep (agreement, estimated accuracy, its bound,
    admissibility) and the choice `personalize` makes over the union of their samples."""
    model = Model.load(tflite_model("float32", "mixed"))
    shape = model.tensor(model.main.inputs[0]).shape[1:]
    shares = [random_inputs(40, shape, seed=20 + k) for k in range(3)]
    reference = reference_for(model) if with_reference else None
    agreement = 0.6
    stage = central_sweep(model, shares, reference, agreement)
    union = np.concatenate([s[0::2] for s in shares])
    amap = record(model, union)
    how = {"score": "fine", "granularity": "weight", "keep_classifier": True, "scope": "layer"}
    c = Classifier.of(model)
    temperature = (
        AccuracyEstimator(reference, None, "ac").calibrate(c.weight, c.bias) if reference else None
    )
    per_board = [
        fidelity.check_sums(model, amap, SPARSITIES, how, list(s[1::2]), temperature)
        for s in shares
    ]
    totals = [sum(rows) for rows in zip(*per_board)]
    chosen, rows = fidelity.choose(SPARSITIES, totals, agreement)
    assert_same_sweep(rows, stage)
    assert chosen == stage.candidates[stage.chosen].sparsity
    # The second half of the check (the estimate, or unchanged predictions) refuses a candidate
    # the agreement bound alone would admit: the test sees it applied.
    assert any(r["agreement_lower"] >= agreement and not r["admissible"] for r in rows[1:])
    assert all((r["estimated_lower"] is not None) == with_reference for r in rows[1:])


def boards_ask(boards: list[tuple[np.ndarray, np.ndarray]]):
    """The prior stage's rounds without Flower: each board's answer from its kept (fit logits,
    check features), as `client_app` computes it."""

    def ask(arrays, config):
        if config["stage"] == "prior":
            source, target = arrays
            return [
                prior_stage.em_sums(z, config["temperature"], source, target) for z, _ in boards
            ]
        calibrations = [config[f"cal{i}"] for i in range(4)]
        return [prior_stage.final_layer_sums(f, arrays, calibrations) for _, f in boards]

    return ask


def test_the_fleet_prior_is_the_central_prior(tflite_model):
    """EM a round an iteration over the boards' sums, then the tests, give `personalize`'s prior
    over the union; the proposal's verdict is `Judge.final_layer`'s over the union's checks."""
    model = Model.load(tflite_model("float32", "mixed"))
    shape = model.tensor(model.main.inputs[0]).shape[1:]
    reference = reference_for(model)
    c = Classifier.of(model)
    # Skewed boards (samples the source gives one class, mostly): the prior moves.
    pool = random_inputs(400, shape, seed=40)
    logits = np.array([z for _, z in classifier_outputs(model, pool)])
    favoured = np.flatnonzero(logits.argmax(axis=1) == 0)
    skewed = np.concatenate([pool[favoured], pool[:40]])
    shares = [s for s in np.array_split(skewed, 3) if len(s)]
    shares = [s[: len(s) // 2 * 2] for s in shares]  # even: the union splits as the boards do
    kept = [collect(model, s, reference=reference) for s in shares]
    union = collect(model, np.concatenate(shares), reference=reference)
    ask = boards_ask([(e.fit_logits, e.check_features) for e in kept])
    sums = sum((statistics.sums_of(e) for e in kept[1:]), statistics.sums_of(kept[0]))
    n = sum(len(e.fit_logits) for e in kept)
    shift, rounds = prior_stage.estimate(
        ask, n, reference, c.weight, c.bias, statistics.feature_mean(sums), sums.map_count
    )
    want = prior.estimate(
        union.fit_logits, reference, c.weight, c.bias, union.feature_mean, union.fit_samples
    )
    np.testing.assert_allclose(shift.target, want.target, atol=1e-9)
    assert abs(shift.statistic - want.statistic) <= 1e-6 * max(1.0, abs(want.statistic))
    assert shift.threshold == pytest.approx(want.threshold, rel=1e-9)
    assert shift.feature_distance == pytest.approx(want.feature_distance, rel=1e-9)
    assert shift.feature_threshold == pytest.approx(want.feature_threshold, rel=1e-9)
    assert (shift.significant, shift.labels_only) == (want.significant, want.labels_only)
    assert shift.total_variation > 0.05 and rounds >= 3
    # The proposal judged: the fleet's verdict is the central Judge's.
    judge = Judge(union, TOLERANCE)
    judge.reweight(want.target)
    after = c.bias + want.logit_offset
    verdict = prior_stage.judge(ask, reference, want.target, c.weight, c.bias, after)
    expected = judge.final_layer(State(model, c.weight, c.bias), c.weight, after)
    assert verdict.kept == expected.kept
    for key in ("before", "after", "lower", "second_delta"):
        assert getattr(verdict, key) == pytest.approx(getattr(expected, key), abs=1e-9), key
