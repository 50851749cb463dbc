"""The fleet's pruning sweep, judged by the fleet without moving a sample.

`personalize` keeps the largest sparsity whose agreement with the model before pruning stays,
by its one-sided 95 % Wilson lower bound, at or above `agreement` on the user's check samples
(rule "fidelity"), and whose estimated accuracy (with a reference) does not drop. The fleet
applies the first half with counts (the second, a paired mean over per-sample scores, is not
federated yet): the server sends the fleet's activation
map (sums, the size of the map), every board cuts the same candidates from it (`candidates`: the
same code on the same map gives the same masks), and answers, per candidate, how many of its
check samples (the odd ones, as `stages.collect` splits them; the map came from the even ones)
the candidate predicts as the source does — counts, which add up. `choose` applies the rule to
the fleet's totals.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator, Sequence
from typing import Any

import numpy as np

from .. import prune
from ..activations import ActivationMap
from ..estimate import wilson_lower
from ..model import Model
from ..reference import classifier_outputs


def settings(config: dict[str, Any]) -> dict[str, Any]:
    """The pruning settings of a run config (score, granularity, keep-classifier, scope)."""
    return {
        "score": str(config["score"]),
        "granularity": str(config["granularity"]),
        "keep_classifier": bool(config["keep-classifier"]),
        "scope": str(config["scope"]),
    }


def candidates(
    model: Model, amap: ActivationMap, sparsities: Sequence[float], how: dict[str, Any]
) -> Iterator[tuple[float, Model]]:
    """(sparsity, `model` pruned at it from `amap`) for each sparsity (0: `model` itself)."""
    scores = prune.compute_scores(
        model,
        amap.layers,
        amap,
        score=how["score"],
        granularity=how["granularity"],
        keep_classifier=how["keep_classifier"],
    )
    for s in sparsities:
        yield s, (prune.apply(model, scores.masks(s, how["scope"])) if s else model)


def _predictions(model: Model, samples: Iterable[np.ndarray]) -> np.ndarray:
    return np.array([int(np.argmax(z)) for _, z in classifier_outputs(model, samples)])


def agreement_counts(
    model: Model,
    amap: ActivationMap,
    sparsities: Sequence[float],
    how: dict[str, Any],
    samples: Sequence[np.ndarray],
) -> tuple[list[int], int]:
    """Per candidate, how many of `samples` it predicts as `model` does; and how many samples."""
    before = _predictions(model, samples)
    same = [
        int(np.sum(_predictions(m, samples) == before))
        for _, m in candidates(model, amap, sparsities, how)
    ]
    return same, len(before)


def choose(
    sparsities: Sequence[float], same: Sequence[int], n: int, agreement: float
) -> tuple[float, list[dict[str, float]]]:
    """The largest sparsity whose fleet-wide agreement lower bound reaches `agreement` (0 when
    none does), and the sweep as rows for the report."""
    rows = [
        {
            "sparsity": float(s),
            "agreement": k / n if n else 0.0,
            "agreement_lower": wilson_lower(k, n),
        }
        for s, k in zip(sparsities, same)
    ]
    passing = [
        r["sparsity"] for r in rows if r["sparsity"] == 0 or r["agreement_lower"] >= agreement
    ]
    return max(passing, default=0.0), rows
