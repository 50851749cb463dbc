"""The fleet's pruning sweep, judged by the fleet without moving a sample.

`personalize` keeps the largest sparsity whose agreement with the model before pruning stays,
by its one-sided 95 % Wilson lower bound, at or above `agreement` on the user's check samples,
and whose estimated accuracy does not drop (`stages.admissible`; with a reference: the paired
bound of `Judge.rewrite`, without one: no check prediction may change). The fleet applies the
same rule to sums: the server sends the fleet's activation map (sums, the size of the map) and,
with a reference, the temperature that calibrates the current final layer; every board cuts the
same candidates from the map (`candidates`: the same code on the same map gives the same masks)
and answers, per candidate, how many of its check samples (the odd ones, as `stages.collect`
splits them; the map came from the even ones) the candidate predicts as the model before
pruning does, and the sums of its paired scores (`estimate.paired_sums` of
`stages.rewrite_scores`) — counts and sums, which add up. `choose` applies the rule to the
fleet's totals (`estimate.paired_from_sums`): the decision and the figures a central pass over
the union of the boards' check samples gives, to rounding.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator, Sequence
from typing import Any

import numpy as np

from .. import prune
from ..activations import ActivationMap
from ..estimate import TOLERANCE, paired_from_sums, paired_sums, wilson_lower
from ..model import Model
from ..reference import classifier_outputs
from ..stages import admissible, rewrite_scores


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


def _logits(model: Model, samples: Iterable[np.ndarray]) -> np.ndarray:
    return np.array([z for _, z in classifier_outputs(model, samples)], np.float64)


def check_sums(
    model: Model,
    amap: ActivationMap,
    sparsities: Sequence[float],
    how: dict[str, Any],
    samples: Sequence[np.ndarray],
    temperature: float | None = None,
) -> list[np.ndarray]:
    """Per candidate, what the fleet's check adds up over `samples`: [same, n] — how many it
    predicts as `model` does, of how many — then, with a `temperature` (a reference on the
    server), the paired sums of its estimated change; for sparsity 0, the sums of the current
    model's own scores (its estimated accuracy)."""
    before = _logits(model, samples)
    rows = []
    for s, m in candidates(model, amap, sparsities, how):
        after = _logits(m, samples) if s else before
        row = [float(np.sum(before.argmax(axis=1) == after.argmax(axis=1))), float(len(before))]
        if temperature is not None:
            row += list(paired_sums(*rewrite_scores(before, after, temperature))[1:])
        rows.append(np.array(row))
    return rows


def choose(
    sparsities: Sequence[float],
    totals: Sequence[np.ndarray],
    agreement: float,
    tolerance: float = TOLERANCE,
) -> tuple[float, list[dict[str, Any]]]:
    """The largest admissible sparsity over the fleet's added `check_sums` (0 when none is),
    and the sweep as rows for the report (the fields of `stages.Candidate` the check sets)."""
    rows = []
    for s, total in zip(sparsities, totals):
        same, n = int(round(total[0])), int(round(total[1]))
        verdict = paired_from_sums(np.array([n, *total[2:]]), tolerance) if len(total) > 2 else None
        rows.append(
            {
                "sparsity": float(s),
                "agreement": same / n if n else 0.0,
                "agreement_lower": wilson_lower(same, n),
                # sparsity 0: the current model's own estimate (its scores sum in `before`)
                "estimated_accuracy": (verdict.after if s else verdict.before) if verdict else None,
                "estimated_lower": verdict.lower if verdict and s else None,
                "admissible": admissible(s, same, n, agreement, verdict if s else None),
            }
        )
    passing = [r["sparsity"] for r in rows if r["admissible"]]
    return max(passing, default=0.0), rows
