"""Prototype classifier: re-estimate the final layer from the user's own penultimate features.

After T3A (Iwasawa & Matsuo, NeurIPS 2021): each class's support set starts with the source
classifier's normalized weight vector and takes the M most confident (lowest-entropy)
pseudo-labelled target features, normalized; the prototype is the normalized sum of the support,
and the logits are features · prototype. `layer` gives the prototypes as a final
FULLY_CONNECTED, so the rewritten model's argmax is the prototype classifier's. The support sets
stream: memory is classes × M × features, whatever the number of samples.

With a `center` (the mean of the user's features), supports and features are centred first:
what every class of this user shares (a speaker's voice, a camera's colour cast) no longer
dominates the cosine. The centring goes into the bias: logits = (f − center) · prototype.
"""

from __future__ import annotations

import numpy as np

from .classifier import Classifier
from .estimate import entropy, softmax
from .model import Model

# How many supports the source weight vector counts as. Under a label shift (the prior stage found
# classes absent) the features are the source's own domain and its directions deserve trust; with
# no label shift, a user whose features moved (a new speaker) gains most from T3A's anchor of 1.
# Chosen on benchmarks/RESULTS.md (personalization_* sections).
ANCHOR = 1.0
LABEL_SHIFT_ANCHOR = 20.0


def _unit(rows: np.ndarray) -> np.ndarray:
    lengths = np.linalg.norm(rows, axis=-1, keepdims=True)
    return rows / np.where(lengths > 0, lengths, 1)


class Supports:
    """Per class, the M lowest-entropy normalized features seen so far."""

    def __init__(self, classes: int, features: int, m: int = 20):
        self.entropy = np.full((classes, m), np.inf)
        self.features = np.zeros((classes, m, features), np.float32)
        self.norms = np.zeros((classes, m))

    def add(self, features: np.ndarray, logits: np.ndarray) -> None:
        """Offer one batch of penultimate features [n, D] with their source logits [n, C]."""
        probs = softmax(logits.astype(np.float64))
        norms = np.linalg.norm(features, axis=1)
        for f, norm, c, h in zip(features, norms, probs.argmax(axis=1), entropy(probs)):
            worst = int(self.entropy[c].argmax())
            if h < self.entropy[c, worst] and norm > 0:
                self.entropy[c, worst] = h
                self.features[c, worst] = f / norm
                self.norms[c, worst] = norm

    def kept(self) -> np.ndarray:
        """The kept features as they were seen (not normalized), [k, D]."""
        valid = np.isfinite(self.entropy)
        return self.features[valid] * self.norms[valid][:, None]

    def counts(self) -> np.ndarray:
        return np.isfinite(self.entropy).sum(axis=1)

    def prototypes(
        self, source_weight: np.ndarray, anchor: float = 1.0, center: np.ndarray | None = None
    ) -> np.ndarray:
        """Unit prototypes [C, D]: the normalized source weights, counted as `anchor` supports,
        plus the supports (minus `center`, normalized), renormalized (anchor 1 is T3A)."""
        features = self.features
        if center is not None:
            valid = np.isfinite(self.entropy)[..., None]
            features = np.where(valid, _unit(features * self.norms[..., None] - center), 0.0)
        return _unit(anchor * _unit(source_weight) + features.sum(axis=1))


def layer(
    model: Model,
    classifier: Classifier,
    supports: Supports,
    anchor: float = 1.0,
    center: np.ndarray | None = None,
    offset: np.ndarray | None = None,
) -> tuple[np.ndarray, np.ndarray]:
    """The prototype classifier as a final layer (weight, bias): prototype scores on features
    centred on `center` (if given), plus `offset` per class (the prior stage's log-ratio, in logit
    units), so the two stages compose in one rewrite. No class is removed: a class without
    supports keeps its source direction, and a rare one is held down only by its offset.

    Prototypes are scaled to the source weights' mean norm; with a quantized output, the whole
    layer is scaled so that the kept features' logits fill its range (argmax does not care; int8
    outputs saturate, and their steps must still order close logits).
    """
    weight = supports.prototypes(classifier.weight, anchor, center)
    center = np.zeros(weight.shape[1]) if center is None else center
    weight *= float(np.linalg.norm(classifier.weight, axis=1).mean())
    bias = -(weight @ center)
    if offset is not None:
        bias = bias + offset
    fit = classifier.output_fit(model, supports.kept() @ weight.T + bias)
    return weight * fit, bias * fit
