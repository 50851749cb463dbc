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
        }


def em_prior(
    probs: np.ndarray, source: np.ndarray, iterations: int = 300, tol: float = 1e-7
) -> np.ndarray:
    """The target prior maximizing the likelihood of `probs` (posteriors under `source`)."""
    target = source.copy()
    ratio = probs / source
    for _ in range(iterations):
        weighted = ratio * target
        updated = (weighted / weighted.sum(axis=1, keepdims=True)).mean(axis=0)
        done = np.abs(updated - target).max() < tol
        target = updated
        if done:
            break
    return target


def _statistic(probs: np.ndarray, source: np.ndarray) -> tuple[np.ndarray, float]:
    target = em_prior(probs, source)
    return target, float(2 * np.log((probs / source * target).sum(axis=1)).sum())


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
) -> PriorShift:
    """The user's prior from the source's logits [n, C] on their samples, and the tests of it.

    `weight`, `bias` are the source's final layer: the null draws score the reference's
    validation features with it. With the user's `feature_mean` (over `samples` samples), also
    the test that only the labels shifted: the distance of that mean from the reference's class
    means mixed by the estimated prior, against the same distance for validation rows drawn with
    that prior."""
    t, source = reference.temperature, reference.prior
    probs = softmax(np.asarray(logits, float) / t)
    target, statistic = _statistic(probs, source)
    share = np.bincount(reference.labels, minlength=reference.classes) / len(reference.labels)
    rows = np.arange(len(reference.labels))
    null_probs = softmax((reference.features @ weight.T + bias) / t)
    rng = np.random.default_rng(seed)

    def draw(prior: np.ndarray, n: int) -> np.ndarray:
        p = (prior / np.maximum(share, 1e-12))[reference.labels]  # the sample is stratified
        return rng.choice(rows, n, p=p / p.sum())

    # The null of "the prior moved": n validation rows drawn with the source prior.
    nulls = [_statistic(null_probs[draw(source, len(probs))], source)[1] for _ in range(draws)]
    shift = PriorShift(
        source=source,
        target=target,
        statistic=statistic,
        threshold=float(np.quantile(nulls, 1 - alpha)),
        samples=len(probs),
        temperature=t,
    )
    if feature_mean is None:
        return shift
    n = samples or len(probs)
    mixed = target @ reference.feature_means
    distances = [
        float(((reference.features[draw(target, n)].mean(axis=0) - mixed) ** 2).sum())
        for _ in range(draws)
    ]
    return replace(
        shift,
        feature_distance=float(((feature_mean - mixed) ** 2).sum()),
        feature_threshold=float(np.quantile(distances, 1 - alpha)),
    )
