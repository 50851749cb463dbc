"""The label-free stages and their guards: the prior test, its floor, the accuracy estimate and
its bounds, the prototype layer with the prior folded in — on synthetic data where the truth is
known, and on real converted models."""

import numpy as np
import pytest

from edgeprune import estimate, prior, prototypes
from edgeprune.classifier import Classifier
from edgeprune.model import Model
from edgeprune.reference import Reference
from edgeprune.runtime import Runner
from tests.models import INPUT_SHAPES, build, random_inputs

SAMPLE = INPUT_SHAPES["mixed"][1:]


class Gaussians:
    """C classes of unit-variance Gaussian features in D dimensions, and the Bayes classifier for
    a uniform prior: logits = W f + b with W = means, b = −|mean|² / 2."""

    def __init__(self, classes: int, dims: int = 16, spread: float = 3.0, seed: int = 0):
        rng = np.random.default_rng(seed)
        self.means = rng.normal(
            0, spread / np.sqrt(2 * dims), (classes, dims)
        )  # |μi − μj| ≈ spread
        self.weight = self.means
        self.bias = -0.5 * (self.means**2).sum(axis=1)
        self.classes, self.dims, self.rng = classes, dims, rng

    def draw(self, prior: np.ndarray, n: int) -> tuple[np.ndarray, np.ndarray]:
        labels = self.rng.choice(self.classes, n, p=prior)
        return self.means[labels] + self.rng.normal(size=(n, self.dims)), labels

    def reference(self, n: int = 4000) -> Reference:
        features, labels = self.draw(np.full(self.classes, 1 / self.classes), n)
        confusion = np.zeros((self.classes, self.classes), np.int64)
        np.add.at(confusion, (labels, (features @ self.weight.T + self.bias).argmax(1)), 1)
        counts = np.maximum(np.bincount(labels, minlength=self.classes), 1)
        means = np.zeros((self.classes, self.dims))
        np.add.at(means, labels, features)
        return Reference("0" * 64, confusion, 1.0, means / counts[:, None], features, labels)

    def logits(self, features: np.ndarray) -> np.ndarray:
        return features @ self.weight.T + self.bias


SLOW = pytest.mark.slow  # minutes of numpy here, hours on the emulated Pi (qemu)


def shifted_prior(classes: int, present: list[int]) -> np.ndarray:
    p = np.zeros(classes)
    p[present] = 1 / len(present)
    return p


@pytest.mark.parametrize(
    "classes", [2, pytest.param(10, marks=SLOW), pytest.param(100, marks=SLOW)]
)
def test_prior_test_holds_its_level_for_any_number_of_classes_and_n(classes):
    """No shift: significant in at most a few of 20 users, for C = 2 … 100 and n = 20 … 400;
    a real shift to a few classes: significant once n is large enough to see it."""
    g = Gaussians(classes, seed=classes)
    ref = g.reference()
    uniform = np.full(classes, 1 / classes)
    for n in (20, 400):
        false = sum(
            prior.estimate(
                g.logits(g.draw(uniform, n)[0]), ref, g.weight, g.bias, seed=s
            ).significant
            for s in range(20)
        )
        assert false <= 3, (classes, n, false)
    target = shifted_prior(classes, [0, 1] if classes > 2 else [0])
    if classes == 2:
        target = np.array([0.9, 0.1])
    shift = prior.estimate(g.logits(g.draw(target, 400)[0]), ref, g.weight, g.bias)
    assert shift.significant
    assert shift.total_variation > 0.5 * 0.5 * np.abs(target - uniform).sum()


def test_no_class_is_removed_on_a_point_estimate():
    """Classes the user never showed keep a floor of 3/n: their log-ratio is finite and it grows
    less negative when there is less evidence (small n)."""
    g = Gaussians(10, seed=1)
    ref = g.reference()
    target = shifted_prior(10, [3, 5])
    big = prior.estimate(g.logits(g.draw(target, 600)[0]), ref, g.weight, g.bias)
    small = prior.estimate(g.logits(g.draw(target, 30)[0]), ref, g.weight, g.bias)
    assert big.significant and small.significant
    absent = [c for c in range(10) if c not in (3, 5)]
    for shift, n in ((big, 600), (small, 30)):
        assert np.all(np.isfinite(shift.log_ratio))
        np.testing.assert_allclose(
            shift.log_ratio[absent],
            np.log(
                np.maximum(shift.target[absent], np.minimum(shift.source[absent], 3 / n))
                / shift.source[absent]
            ),
        )
    assert small.log_ratio[absent].min() > big.log_ratio[absent].min()
    assert np.all(big.log_ratio[[3, 5]] > 1.0)  # the present classes are raised


def test_the_prior_lives_in_logit_units_of_the_temperature():
    g = Gaussians(10, seed=2)
    ref = g.reference()
    hot = Reference(
        ref.model_sha256, ref.confusion, 2.0, ref.feature_means, ref.features, ref.labels
    )
    logits = g.logits(g.draw(shifted_prior(10, [1, 2, 3]), 300)[0])
    shift = prior.estimate(logits, hot, g.weight, g.bias)
    np.testing.assert_allclose(shift.logit_offset, 2.0 * shift.log_ratio)


@pytest.mark.parametrize("method", estimate.METHODS)
def test_accuracy_estimate_is_close_to_the_truth_in_domain_and_under_label_shift(method):
    g = Gaussians(10, spread=2.0, seed=3)  # about 70 % accurate
    ref = g.reference()
    for target in (np.full(10, 0.1), shifted_prior(10, [0, 4, 7])):
        features, labels = g.draw(target, 3000)
        truth = np.mean(g.logits(features).argmax(1) == labels)
        e = estimate.AccuracyEstimator(ref, target, method)
        calibration = e.calibrate(g.weight, g.bias)
        estimated = e.per_sample(g.logits(features), calibration).mean()
        assert estimated == pytest.approx(truth, abs=0.03), (method, target)
        # A worse layer (its bias pushed towards one class) is estimated worse (under label
        # shift calibrated confidence overestimates it by up to ~10 points: ranking, not size).
        worse_bias = g.bias.copy()
        worse_bias[1] += 3.0
        worse_truth = np.mean((g.logits(features) + worse_bias - g.bias).argmax(1) == labels)
        worse = e.per_sample(
            g.logits(features) + worse_bias - g.bias, e.calibrate(g.weight, worse_bias)
        ).mean()
        assert worse_truth < truth - 0.1 and worse < estimated - 0.05


def test_paired_verdict_and_wilson_bound():
    assert estimate.wilson_lower(20, 20) == pytest.approx(0.8809, abs=1e-3)  # n = 20 never
    assert estimate.wilson_lower(400, 400) > 0.99  # reaches 95 %; n = 400 does
    same = np.array([1, 0, 1, 1] * 25, bool)
    assert estimate.paired(same, same).kept  # no change is no harm
    worse = same.copy()
    worse[:10] = False
    assert not estimate.paired(same, worse).kept
    better = same | True
    assert estimate.paired(same, better).kept
    few = np.zeros(10, bool)
    one_better = few.copy()
    one_better[0] = True
    verdict = estimate.paired(few, one_better)
    assert verdict.delta == pytest.approx(0.1) and verdict.lower < -0.05 and not verdict.kept


def test_supports_keep_the_most_confident_features():
    s = prototypes.Supports(classes=3, features=2, m=2)
    features = np.array([[1.0, 0], [0, 2.0], [3.0, 0], [0, 1.0]])
    logits = np.array([[1.0, 0, 0], [5.0, 0, 0], [9.0, 0, 0], [0, 0, 4.0]])
    s.add(features, logits)
    assert s.counts().tolist() == [2, 0, 1]
    kept = {tuple(f) for f in s.features[0]}
    assert kept == {(0.0, 1.0), (1.0, 0.0)}  # the two lowest-entropy class-0 rows, normalized
    protos = s.prototypes(np.eye(3, 2) + 0.1)
    np.testing.assert_allclose(np.linalg.norm(protos, axis=1), 1.0)


@pytest.mark.parametrize("centred", [False, True])
@pytest.mark.parametrize("kind", ["float32", "int8"])
def test_final_layer_is_prototype_scores_plus_the_log_ratio(kind, centred):
    """The rewritten model computes (f − center) · prototypes · s + offset (s the norm scaling,
    and for a quantized output its range fit): float to rounding, int8 as argmax where the top
    two logits are further apart than the output's resolution."""
    model = Model(build(kind))
    c = Classifier.of(model)
    runner = Runner(model, [c.layer.input])
    supports = prototypes.Supports(c.classes, c.weight.shape[1], m=5)
    seen = []
    for x in random_inputs(60, SAMPLE, seed=3):
        values = runner.run(x)
        seen.append(values[c.layer.input].reshape(-1))
        supports.add(values[c.layer.input].reshape(1, -1), values[c.layer.output].reshape(1, -1))
    center = np.mean(seen, axis=0) if centred else None
    offset = np.log(np.full(c.classes, 0.02) / 0.1)
    offset[[0, 4]] = np.log(0.4 / 0.1)
    weight, bias = prototypes.layer(model, c, supports, center=center, offset=offset)
    protos = supports.prototypes(c.weight, center=center) * np.linalg.norm(c.weight, axis=1).mean()
    scale = weight[0, 0] / protos[0, 0]
    assert scale > 0
    np.testing.assert_allclose(weight, scale * protos, rtol=1e-6)
    shift = 0 if center is None else protos @ center
    np.testing.assert_allclose(bias, scale * (offset - shift), rtol=1e-6, atol=1e-9)
    if kind == "float32":
        assert scale == pytest.approx(1.0)
    rewritten = c.rewrite(model, weight, bias)
    check = Runner(rewritten, [c.layer.input])
    out = rewritten.main.outputs[0]
    out_q = rewritten.tensor(out).quantization
    resolution = 2 * float(out_q.scale[0]) if out_q is not None else 0.0
    checked = 0
    for x in random_inputs(100, SAMPLE, seed=4):
        values = check.run(x)
        f = values[c.layer.input].reshape(-1)
        logits = scale * ((f - (0 if center is None else center)) @ protos.T + offset)
        if out_q is None:
            np.testing.assert_allclose(values[out].reshape(-1), logits, rtol=1e-4, atol=1e-4)
        top2 = np.sort(logits)[-2:]
        if top2[1] - top2[0] >= resolution:
            assert values[out].argmax() == logits.argmax()
            checked += 1
    assert checked >= 70


def test_centred_prototypes_are_built_from_the_centred_supports():
    s = prototypes.Supports(classes=2, features=2, m=2)
    s.add(np.array([[3.0, 1.0], [1.0, 3.0]]), np.array([[5.0, 0.0], [0.0, 5.0]]))
    protos = s.prototypes(np.eye(2), anchor=0.0, center=np.array([1.0, 1.0]))
    # (3, 1) − (1, 1) = (2, 0) and (1, 3) − (1, 1) = (0, 2): the shared offset is gone.
    np.testing.assert_allclose(protos, np.eye(2), atol=1e-6)
    plain = s.prototypes(np.eye(2), anchor=0.0)
    assert plain[0, 1] > 0.3  # uncentred, both point into the shared quadrant


def test_anchor_weighs_the_source_direction_against_the_supports():
    s = prototypes.Supports(classes=2, features=2, m=3)
    s.add(np.array([[0.0, 1.0], [0.0, 2.0]]), np.array([[5.0, 0.0], [6.0, 0.0]]))
    source = np.array([[1.0, 0.0], [0.0, 1.0]])
    t3a = s.prototypes(source, anchor=1.0)  # class 0: (1, 0) + 2 × (0, 1), renormalized
    np.testing.assert_allclose(t3a[0], np.array([1.0, 2.0]) / np.sqrt(5))
    trusting = s.prototypes(source, anchor=1000.0)
    assert np.abs(trusting[0] - [1.0, 0.0]).max() < 0.01
    np.testing.assert_allclose(trusting[1], [0.0, 1.0])  # no supports: the source direction


def test_the_prior_is_proposed_only_for_a_shift_in_the_labels():
    """A label shift keeps the class means: the user's mean feature is their mixture. A new
    speaker's features move as well, and EM would read the move as a prior."""
    g = Gaussians(10, seed=5)
    ref = g.reference()
    features, _ = g.draw(shifted_prior(10, [2, 6, 8]), 400)
    for moved, labels_only in ((0.0, True), (1.0, False)):
        f = features + moved
        shift = prior.estimate(g.logits(f), ref, g.weight, g.bias, f.mean(axis=0), len(f))
        assert shift.significant
        assert shift.labels_only == labels_only, (moved, shift.to_dict())


def test_t_quantile_matches_tables():
    # Student's t 0.95 quantiles from statistical tables.
    for dof, expected in ((5, 2.015), (9, 1.833), (30, 1.697), (1000, 1.646)):
        assert estimate.t_quantile(estimate.Z, dof) == pytest.approx(expected, rel=0.005)
