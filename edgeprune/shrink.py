"""The `personalize --shrink` step: thin the model, repair it on the user's data, keep it only if
the label-free check says it does not hurt.

Channel groups are removed (`thin.shrink`, lowest L1 norms first), the layers after them are refit
by least squares on the fit half of the samples (even ones), and the thinned model is judged on
the check half (odd ones) against the model it would replace: the 95 % lower bound of the share of
unchanged predictions must reach `agreement` and, with a source reference, the estimated accuracy
must not drop beyond the tolerance (`Judge.rewrite`, as for pruning). Otherwise the model is left
as it was and the report says why: shrinking never makes a user's model worse by this check.
"""

from __future__ import annotations

from dataclasses import dataclass, field, replace
from typing import Any

import numpy as np

from .classifier import Classifier
from .errors import UnsupportedError
from .estimate import TOLERANCE, wilson_lower
from .model import Model
from .reference import Reference, model_digest
from .stages import Judge, State, collect
from .thin import shrink as thin_model


@dataclass
class ShrinkOutcome:
    """What the shrink step did: the thinned model if kept, and the figures the check used."""

    applied: bool
    agreement: float
    agreement_lower: float
    reason: str = ""
    check: dict[str, Any] | None = None
    details: dict[str, Any] = field(default_factory=dict)


def shrink_step(
    model: Model,
    samples: list,
    amount: float,
    *,
    reference: Reference | None = None,
    agreement: float = 0.95,
    tolerance: float = TOLERANCE,
    check_size: int = 256,
    mode: str = "instrument",
) -> tuple[Model, Reference | None, ShrinkOutcome]:
    """(`model` thinned by `amount` and repaired, or `model` itself when the check refuses it;
    the reference for the model returned; what happened).

    The final layer keeps its input features, and the repair fits the thinned model's features
    to the dense one's, so the source reference stands for the thinned model too: it is carried
    over, re-bound to the new bytes, for the stages that follow."""
    try:
        classifier = Classifier.of(model)
    except UnsupportedError as e:
        return model, reference, ShrinkOutcome(False, 1.0, 1.0, f"needs a classifier: {e}")
    evidence = collect(model, samples, check_size, 1, mode, reference)
    judge = Judge(evidence, tolerance)
    result = thin_model(model, amount, samples=samples[0::2], protect=[classifier.layer.op])
    before, after = judge.logits(model), judge.logits(result.model)
    same = before.argmax(axis=1) == after.argmax(axis=1)
    lower = wilson_lower(float(same.sum()), len(same))
    verdict = None
    if judge.estimators:
        verdict = judge.rewrite(State(model, classifier.weight, classifier.bias), before, after)
    details = {
        "amount": amount,
        "removed_groups": len(result.removed),
        "free_groups": result.free_groups,
        "repaired_layers": len(result.repaired),
        "bytes_before": model.nbytes,
        "bytes_after": result.model.nbytes,
    }
    reasons = []
    if lower < agreement:
        reasons.append(f"agreement {np.mean(same):.3f} (lower bound {lower:.3f}) < {agreement}")
    if verdict is not None and not verdict.kept:
        reasons.append("the estimated accuracy would drop")
    outcome = ShrinkOutcome(
        not reasons,
        float(np.mean(same)),
        lower,
        "; ".join(reasons),
        verdict.to_dict() if verdict is not None else None,
        details,
    )
    if not outcome.applied:
        return model, reference, outcome
    if reference is not None:
        reference = replace(reference, model_sha256=model_digest(result.model))
    return result.model, reference, outcome
