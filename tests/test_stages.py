"""The label-free stages after pruning: label-shift prior (EM) and prototype classifier."""

import numpy as np
import pytest

from edgeprune import prior, prototypes
from edgeprune.classifier import Classifier
from edgeprune.model import Model
from edgeprune.runtime import Runner
from tests.models import INPUT_SHAPES, build, random_inputs

SAMPLE = INPUT_SHAPES["mixed"][1:]


def synthetic_posteriors(target_prior, n=2000, classes=10, seed=0):
    """Posteriors of a Bayes-optimal classifier trained under a uniform prior (1-D Gaussians)."""
    rng = np.random.default_rng(seed)
    labels = rng.choice(classes, n, p=target_prior)
    x = rng.normal(labels * 3.0, 1.0)
    loglik = -0.5 * (x[:, None] - np.arange(classes) * 3.0) ** 2
    return prototypes.softmax(loglik), labels


def test_em_recovers_a_real_shift_and_ignores_none():
    shifted = np.zeros(10)
    shifted[[3, 5]] = 0.5
    probs, _ = synthetic_posteriors(shifted)
    shift = prior.estimate(probs)
    assert shift.significant and np.abs(shift.target - shifted).sum() / 2 < 0.05
    assert shift.present().tolist() == [i in (3, 5) for i in range(10)]
    probs, _ = synthetic_posteriors(np.full(10, 0.1), seed=1)
    same = prior.estimate(probs)
    assert not same.significant and same.present().all()


def test_chi2_quantile_matches_tables():
    # χ² 0.999 quantiles from statistical tables.
    for dof, expected in ((4, 18.467), (9, 27.877), (19, 43.820)):
        assert prior.chi2_quantile(0.999, dof) == pytest.approx(expected, rel=0.02)


@pytest.mark.parametrize("kind", ["float32", "int8"])
def test_prior_is_folded_into_the_bias(kind):
    model = Model(build(kind))
    c = Classifier.of(model)
    shifted = np.full(10, 0.01)
    shifted[[1, 7]] = 0.46
    shift = prior.estimate(synthetic_posteriors(shifted)[0])
    rewritten = Classifier.of(prior.apply(model, c, shift))
    q = model.tensor(c.layer.bias).quantization
    step = float(q.scale.max()) if q is not None else 1e-6
    np.testing.assert_allclose(rewritten.bias, c.bias + shift.log_ratio, atol=step)
    unshifted = prior.estimate(synthetic_posteriors(np.full(10, 0.1), seed=2)[0])
    assert prior.apply(model, c, unshifted) is model


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
def test_rewritten_model_is_the_prototype_classifier(kind, centred):
    model = Model(build(kind))
    c = Classifier.of(model)
    runner = Runner(model, [c.layer.input])
    supports = prototypes.Supports(c.classes, c.weight.shape[1], m=5)
    seen = []
    for x in random_inputs(60, SAMPLE, seed=3):
        values = runner.run(x)
        seen.append(values[c.layer.input].reshape(-1))
        supports.add(values[c.layer.input].reshape(1, -1), values[c.layer.output].reshape(1, -1))
    present = np.ones(c.classes, bool)
    present[[0, 4]] = False
    center = np.mean(seen, axis=0) if centred else None
    rewritten = prototypes.rewrite(model, c, supports, present, center=center)
    protos = supports.prototypes(c.weight, center=center)
    check = Runner(rewritten, [c.layer.input])
    out = rewritten.main.outputs[0]
    out_q = rewritten.tensor(out).quantization
    resolution = 2 * float(out_q.scale[0]) if out_q is not None else 0.0
    checked = 0
    for x in random_inputs(100, SAMPLE, seed=4):
        values = check.run(x)
        logits = (values[c.layer.input].reshape(-1) - (0 if center is None else center)) @ protos.T
        logits[~present] = -np.inf
        assert values[out].argmax() not in (0, 4)
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
