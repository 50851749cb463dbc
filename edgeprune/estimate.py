"""Label-free accuracy estimates and the confidence bounds every rewrite is judged with.

Both estimators are calibrated per candidate on the reference's labelled validation features: for
a final layer (W, b),
- "ac" (average confidence, calibrated): the temperature that minimizes the layer's validation
  NLL; a user sample's score is its max-probability at that temperature;
- "atc" (Average Thresholded Confidence; Garg et al., ICLR 2022): the confidence threshold above
  which the share of validation rows equals the layer's validation accuracy; a user sample
  scores 1 if its confidence is above it.
The estimate is the mean score over the user's check samples. The validation rows can be
weighted to the user's estimated class prior (a label-shifted user's validation set is not the
source's), and calibration is redone for every candidate, so a rewrite that lowers validation
accuracy lowers its own scores.

`paired` turns two candidates' per-sample scores on the same check samples into a verdict: kept
when the mean change is ≥ 0 and its one-sided 95 % lower bound (Student's t) is ≥ −tolerance.
Agreement with another model is bounded with Wilson's interval.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass

import numpy as np

from .reference import Reference, fit_temperature

Z = 1.6449  # one-sided 95 %
TOLERANCE = 0.01  # how far the lower bound of an estimated change may reach below zero


def softmax(logits: np.ndarray) -> np.ndarray:
    z = np.asarray(logits, np.float64)
    e = np.exp(z - z.max(axis=-1, keepdims=True))
    return e / e.sum(axis=-1, keepdims=True)


def entropy(p: np.ndarray, axis: int = -1) -> np.ndarray:
    """Shannon entropy in nats of probability rows."""
    return -(p * np.log(np.clip(p, 1e-12, None))).sum(axis=axis)


def confidence(logits: np.ndarray) -> np.ndarray:
    """The max-softmax score of each row of logits."""
    return softmax(logits).max(axis=-1)


def wilson_lower(successes: float, n: int, z: float = Z) -> float:
    """Lower end of Wilson's score interval for a proportion (0 for n = 0)."""
    if n <= 0:
        return 0.0
    p = successes / n
    centre = p + z * z / (2 * n)
    spread = z * np.sqrt(p * (1 - p) / n + z * z / (4 * n * n))
    return float(max(0.0, (centre - spread) / (1 + z * z / n)))


@dataclass(frozen=True)
class Verdict:
    """How a candidate compares with the model it would replace, on the check samples."""

    before: float  # estimated accuracy of the current model
    after: float  # estimated accuracy of the candidate
    lower: float  # one-sided lower confidence bound of after − before
    samples: int
    kept: bool
    second_delta: float | None = None  # the second estimator's change (ATC), when consulted

    @property
    def delta(self) -> float:
        return self.after - self.before

    def to_dict(self) -> dict:
        return {**asdict(self), "delta": self.delta}


def t_quantile(z: float, dof: int) -> float:
    """Student's t quantile at the normal quantile `z` (Cornish–Fisher, within 0.5 % for ≥ 5
    degrees of freedom at 95 %): the paired bound on n check samples uses n − 1 of them."""
    if dof < 1:
        return np.inf
    return z + (z**3 + z) / (4 * dof) + (5 * z**5 + 16 * z**3 + 3 * z) / (96 * dof**2)


def paired(before: np.ndarray, after: np.ndarray, tolerance: float = TOLERANCE) -> Verdict:
    """The verdict on two per-sample score vectors over the same check samples."""
    before, after = np.asarray(before, float), np.asarray(after, float)
    n = len(before)
    d = after - before
    mean = float(d.mean()) if n else 0.0
    spread = float(d.std(ddof=1)) if n > 1 else (0.0 if mean == 0 else np.inf)
    return _paired_rule(n, before, after, mean, spread, tolerance)


def paired_sums(before: np.ndarray, after: np.ndarray) -> np.ndarray:
    """What `paired` needs of two score vectors, as sums that add up across groups of samples
    (boards): [n, Σ before, Σ after, Σ d, Σ d²] with d = after − before."""
    before, after = np.asarray(before, float), np.asarray(after, float)
    d = after - before
    return np.array([len(d), before.sum(), after.sum(), d.sum(), (d * d).sum()])


def paired_from_sums(sums: np.ndarray, tolerance: float = TOLERANCE) -> Verdict:
    """`paired`'s verdict from the added `paired_sums` of every group: the same rule over the
    union of the samples (the spread from the sums: equal to rounding)."""
    n = int(round(float(sums[0])))
    total_b, total_a, total_d, total_d2 = (float(v) for v in sums[1:])
    mean = total_d / n if n else 0.0
    if n > 1:
        spread = float(np.sqrt(max(total_d2 - total_d * total_d / n, 0.0) / (n - 1)))
    else:
        spread = 0.0 if mean == 0 else np.inf
    means = (total_b / n, total_a / n) if n else (0.0, 0.0)
    return _paired_rule(n, *means, mean, spread, tolerance)


def _paired_rule(n: int, before, after, mean: float, spread: float, tolerance: float) -> Verdict:
    """Kept when the mean change is ≥ 0 and its one-sided lower bound is ≥ −tolerance; `before`
    and `after` are the score vectors or their means."""
    lower = mean - t_quantile(Z, n - 1) * spread / np.sqrt(max(n, 1)) if spread else mean
    return Verdict(
        float(np.mean(before)) if n else 0.0,
        float(np.mean(after)) if n else 0.0,
        float(lower),
        n,
        kept=bool(mean >= 0 and lower >= -tolerance),
    )


METHODS = ("atc", "ac")


class AccuracyEstimator:
    """A label-free accuracy estimate for any final layer (W, b), calibrated on the reference
    (see the module docstring). Method "atc": per sample, is its confidence above the layer's
    ATC threshold; "ac": its max-probability after the layer's own temperature scaling on the
    validation features (average confidence, calibrated): a smoother per-sample score, so the
    paired bound is tighter."""

    def __init__(
        self, reference: Reference, target_prior: np.ndarray | None = None, method: str = "ac"
    ):
        self.features = reference.features.astype(np.float64)
        self.labels = reference.labels
        self.method = method
        # Each validation row stands for its class's share of the user's data.
        self.weights = reference.row_weights(target_prior)

    def calibrate(self, weight: np.ndarray, bias: np.ndarray) -> float:
        """What the per-sample scores of this layer need: its threshold or temperature."""
        logits = self.features @ weight.T + bias
        if self.method == "ac":
            return fit_temperature(logits, self.labels, self.weights)
        accuracy = float(self.weights @ (logits.argmax(axis=1) == self.labels))
        scores = confidence(logits)
        order = np.argsort(scores)
        below = np.cumsum(self.weights[order])  # weighted share at or below each score
        i = int(np.searchsorted(below, 1.0 - accuracy, side="left"))
        return float(scores[order[min(i, len(order) - 1)]]) if accuracy < 1 else -np.inf

    def per_sample(self, logits: np.ndarray, calibration: float) -> np.ndarray:
        """Per user sample, its share of the estimated accuracy (the mean is the estimate)."""
        return per_sample(self.method, logits, calibration)


def per_sample(method: str, logits: np.ndarray, calibration: float) -> np.ndarray:
    """`AccuracyEstimator.per_sample` given the layer's `calibration` (what a board needs: the
    estimate's per-sample scores without the reference that calibrated them)."""
    if method == "ac":
        return confidence(np.asarray(logits) / calibration)
    return (confidence(logits) > calibration).astype(float)
