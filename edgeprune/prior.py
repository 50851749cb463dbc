"""Label-shift prior: estimate the user's class priors from unlabeled predictions and fold them
into the final bias, so the rewritten model itself predicts with the corrected prior.

The priors are the maximum-likelihood estimate by EM of Saerens, Latinne & Decaestecker (2002),
"Adjusting the outputs of a classifier to new a priori probabilities". Adding
log(π_target / π_source) to the logits is exactly their posterior correction. A guard leaves the
model alone unless the shift is both significant (likelihood-ratio test, χ² with C − 1 degrees of
freedom) and large (total variation distance at least `min_tv`): a miscalibrated model on a new
user's data always "finds" some shift, and correcting a shift that is not there does harm.
"""

from __future__ import annotations

from dataclasses import dataclass
from statistics import NormalDist

import numpy as np

from .classifier import Classifier
from .model import Model

# Smallest shift worth correcting: FSDD speakers, who say all ten digits, show spurious shifts
# below it (benchmarks/RESULTS.md, personalization_fsdd); class subsets lie well above it.
MIN_TV = 0.4


@dataclass(frozen=True)
class PriorShift:
    source: np.ndarray
    target: np.ndarray
    total_variation: float
    statistic: float  # 2 · log-likelihood ratio of target vs source prior
    threshold: float  # χ² quantile the statistic must exceed
    min_tv: float
    floor: float

    @property
    def significant(self) -> bool:
        return self.statistic > self.threshold and self.total_variation >= self.min_tv

    @property
    def log_ratio(self) -> np.ndarray:
        return np.log(np.maximum(self.target, self.floor) / self.source)

    def present(self, share: float = 0.2) -> np.ndarray:
        """Classes whose estimated prior is at least `share` of the uniform prior 1/C."""
        if not self.significant:
            return np.ones(self.target.size, bool)
        return self.target >= share / self.target.size

    def to_dict(self) -> dict:
        return {
            "applied": self.significant,
            "total_variation": self.total_variation,
            "statistic": self.statistic,
            "threshold": self.threshold,
            "target_prior": self.target.round(4).tolist(),
        }


def em_prior(probs: np.ndarray, source: np.ndarray, iterations: int = 500, tol: float = 1e-9):
    """The target prior maximizing the likelihood of `probs` (posteriors under `source`)."""
    target = source.copy()
    ratio = probs / source
    for _ in range(iterations):
        weighted = ratio * target
        posterior = weighted / weighted.sum(axis=1, keepdims=True)
        updated = posterior.mean(axis=0)
        if np.abs(updated - target).max() < tol:
            target = updated
            break
        target = updated
    return target


def chi2_quantile(p: float, dof: int) -> float:
    """χ² quantile by the Wilson–Hilferty approximation (within 2 % at p = 0.999, dof ≥ 4)."""
    z = NormalDist().inv_cdf(p)
    k = max(dof, 1)
    return k * (1 - 2 / (9 * k) + z * np.sqrt(2 / (9 * k))) ** 3


def estimate(
    probs: np.ndarray,
    source: np.ndarray | None = None,
    min_tv: float = MIN_TV,
    alpha: float = 1e-3,
    floor: float = 1e-6,
) -> PriorShift:
    """Estimate the target prior from posteriors [n, C] and test it against the source prior."""
    classes = probs.shape[1]
    source = np.full(classes, 1.0 / classes) if source is None else np.asarray(source, float)
    target = em_prior(probs, source)
    loglik = np.log((probs / source * target).sum(axis=1)).sum()
    return PriorShift(
        source=source,
        target=target,
        total_variation=float(0.5 * np.abs(target - source).sum()),
        statistic=float(2 * loglik),
        threshold=float(chi2_quantile(1 - alpha, classes - 1)),
        min_tv=min_tv,
        floor=floor,
    )


def apply(model: Model, classifier: Classifier, shift: PriorShift) -> Model:
    """`model` with log(π_target / π_source) added to the final bias, if the shift is real."""
    if not shift.significant:
        return model
    return classifier.rewrite(model, classifier.weight, classifier.bias + shift.log_ratio)
