"""Label-shift prior: estimate the user's class priors from unlabeled predictions, for a rewrite of
the final bias that makes the model itself predict with the corrected prior.

The priors are the maximum-likelihood estimate by EM of Saerens, Latinne & Decaestecker (2002) on
posteriors calibrated by the reference's temperature (EM assumes calibrated posteriors; Alexandari
et al. 2020 show calibration is what makes it beat black-box shift estimation). Adding
log(π_target / π_source) to the calibrated logits is exactly their posterior correction; in the
model's own logits that is temperature × log-ratio.

Whether the prior moved at all is a likelihood-ratio test whose null distribution is not assumed
but drawn: the statistic of the user's n samples is compared with the statistics of n samples
resampled from the reference's validation features, where the prior did not move. That holds for
any number of classes and any n, where the χ² approximation fails (C large, n small). No class is
removed on a point estimate: the corrected prior of every class is floored at what n samples
cannot rule out (the "rule of three": a class seen in none of n samples may still hold 3/n).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, replace

import numpy as np

from .estimate import softmax
from .reference import Reference

ALPHA = 0.01  # test level of "the prior moved"
NULL_DRAWS = 100  # resamples drawing the statistic's null distribution


@dataclass(frozen=True)
class PriorShift:
    source: np.ndarray
    target: np.ndarray
    statistic: float  # 2 · log-likelihood ratio of target vs source prior
    threshold: float  # the (1 − α) quantile of the statistic when the prior did not move
    samples: int
    temperature: float
    feature_distance: float = 0.0  # |user's mean feature − Σ π_target(c) · class mean|²
    feature_threshold: float = np.inf  # its (1 − α) quantile if only the labels had shifted

    @property
    def significant(self) -> bool:
        return bool(self.statistic > self.threshold)

    @property
    def labels_only(self) -> bool:
        """Do the user's features fit a pure label shift (class means of the reference mixed by
        the estimated prior)? A new speaker's features move too: EM then reads miscalibration
        as a prior, and correcting it does harm."""
        return bool(self.feature_distance <= self.feature_threshold)

    @property
    def total_variation(self) -> float:
        return float(0.5 * np.abs(self.target - self.source).sum())

    @property
    def floor(self) -> np.ndarray:
        """Per class, the smallest prior n samples cannot rule out (never above the source's)."""
        return np.minimum(self.source, 3.0 / max(self.samples, 1))

    @property
    def log_ratio(self) -> np.ndarray:
        """log(π_target / π_source) with the target floored: what calibrated logits gain."""
        return np.log(np.maximum(self.target, self.floor) / self.source)

    @property
    def model_prior(self) -> np.ndarray:
        """The prior a model corrected by `log_ratio` predicts for: the floored target,
        normalized (what its rebound reference records, `Reference.rebind`)."""
        floored = np.maximum(self.target, self.floor)
        return floored / floored.sum()

    @property
    def logit_offset(self) -> np.ndarray:
        """The same correction in the model's own logit units (× temperature)."""
        return self.temperature * self.log_ratio

    def to_dict(self) -> dict:
        return {
            "significant": self.significant,
            "total_variation": self.total_variation,
            "statistic": self.statistic,
            "threshold": self.threshold,
            "labels_only": self.labels_only,
            "feature_distance": self.feature_distance,
            "feature_threshold": self.feature_threshold,
            "samples": self.samples,
            "target_prior": self.target.round(4).tolist(),
            "model_prior": self.model_prior.tolist(),
        }


def em_step(probs: np.ndarray, source: np.ndarray, target: np.ndarray) -> tuple[np.ndarray, float]:
    """What one EM iteration needs of the samples, as sums (samples grouped anywhere — boards —
    add up to the union's): Σ of each sample's posterior under `target`, and Σ of the log of
    its likelihood ratio target vs source."""
    weighted = probs / source * target
    rows = weighted.sum(axis=1, keepdims=True)
    return (weighted / rows).sum(axis=0), float(np.log(rows).sum())


def em_iterate(
    step: Callable[[np.ndarray], tuple[np.ndarray, float]],
    samples: int,
    source: np.ndarray,
    iterations: int = 300,
    tol: float = 1e-7,
) -> tuple[np.ndarray, float]:
    """EM on the prior through `step` (`em_step` over all `samples`, wherever they are): the
    maximum-likelihood target prior and the likelihood-ratio statistic at it (one step more)."""
    target = source.copy()
    for _ in range(iterations):
        updated = step(target)[0] / samples
        done = np.abs(updated - target).max() < tol
        target = updated
        if done:
            break
    return target, 2 * step(target)[1]


def em_prior(
    probs: np.ndarray, source: np.ndarray, iterations: int = 300, tol: float = 1e-7
) -> np.ndarray:
    """The target prior maximizing the likelihood of `probs` (posteriors under `source`)."""
    return _statistic(probs, source, iterations, tol)[0]


def _statistic(
    probs: np.ndarray, source: np.ndarray, iterations: int = 300, tol: float = 1e-7
) -> tuple[np.ndarray, float]:
    return em_iterate(lambda t: em_step(probs, source, t), len(probs), source, iterations, tol)


def estimate(
    logits: np.ndarray,
    reference: Reference,
    weight: np.ndarray,
    bias: np.ndarray,
    feature_mean: np.ndarray | None = None,
    samples: int | None = None,
    alpha: float = ALPHA,
    draws: int = NULL_DRAWS,
    seed: int = 0,
    iterations: int = 300,
) -> PriorShift:
    """The user's prior from the source's logits [n, C] on their samples (EM, at most
    `iterations`), and the tests of it.

    `weight`, `bias` are the source's final layer: the null draws score the reference's
    validation features with it. With the user's `feature_mean` (over `samples` samples), also
    the test that only the labels shifted: the distance of that mean from the reference's class
    means mixed by the estimated prior, against the same distance for validation rows drawn with
    that prior."""
    probs = softmax(np.asarray(logits, float) / reference.temperature)
    target, statistic = _statistic(probs, reference.prior, iterations)
    em = (target, statistic, len(probs))
    return tests(em, reference, (weight, bias), (feature_mean, samples), alpha, draws, seed)


def tests(
    em: tuple[np.ndarray, float, int],
    reference: Reference,
    layer: tuple[np.ndarray, np.ndarray],
    features: tuple[np.ndarray | None, int | None] = (None, None),
    alpha: float = ALPHA,
    draws: int = NULL_DRAWS,
    seed: int = 0,
) -> PriorShift:
    """`estimate`'s tests of an EM result `em` (target, statistic, over n logits), which need
    only the reference, the source's final `layer` (weight, bias) and the user's `features`
    (feature mean, over how many samples): the fleet runs EM on its boards' sums (`em_step`)
    and tests here."""
    (target, statistic, n), (weight, bias), (feature_mean, samples) = em, layer, features
    t, source = reference.temperature, reference.prior
    rows = np.arange(len(reference.labels))
    null_probs = softmax((reference.features @ weight.T + bias) / t)
    rng = np.random.default_rng(seed)

    def draw(prior: np.ndarray, n: int) -> np.ndarray:
        return rng.choice(rows, n, p=reference.row_weights(prior))  # the rows are stratified

    # The null of "the prior moved": n validation rows drawn with the source prior.
    nulls = [_statistic(null_probs[draw(source, n)], source)[1] for _ in range(draws)]
    shift = PriorShift(
        source=source,
        target=target,
        statistic=statistic,
        threshold=float(np.quantile(nulls, 1 - alpha)),
        samples=n,
        temperature=t,
    )
    if feature_mean is None:
        return shift
    count = samples or n
    mixed = target @ reference.feature_means
    distances = [
        float(((reference.features[draw(target, count)].mean(axis=0) - mixed) ** 2).sum())
        for _ in range(draws)
    ]
    return replace(
        shift,
        feature_distance=float(((feature_mean - mixed) ** 2).sum()),
        feature_threshold=float(np.quantile(distances, 1 - alpha)),
    )
