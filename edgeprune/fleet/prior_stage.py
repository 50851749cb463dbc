"""The prior stage on the fleet: EM on the fleet's class prior, one Flower round per iteration.

`personalize` estimates a user's class prior by EM over the source's (calibrated) logits of the
fit part (`prior.estimate`), tests whether it moved, and proposes a corrected final bias that the
accuracy estimate must not see drop (`stages.PriorStage`, `Judge.final_layer`). Every EM
iteration needs a sum over the samples under the current estimate (`prior.em_step`), so on the
fleet each iteration is a round: the server sends the current prior, every board answers with
the sums over its own fit logits (kept on the board since the statistics round), and the server
takes the step (`prior.em_iterate`, the loop `personalize` runs). The tests need only the
reference (`prior.tests`, on the server). The proposal is judged by one more round: the boards
score their check features under the layer before and after (`final_layer_sums`) and the server
applies `Judge.final_layer`'s rule to the totals.

A board that misses one of these rounds would make the sums of different iterations cover
different samples: the stage is then skipped (`BoardMissing`) and the fleet model has no prior.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

import numpy as np

from .. import prior
from ..estimate import TOLERANCE, AccuracyEstimator, Verdict, paired_from_sums, paired_sums, softmax
from ..estimate import per_sample as scores
from ..reference import Reference
from ..stages import with_second

METHODS = ("ac", "atc")  # the Judge's two estimators: the paired one first

# ask(arrays, config) -> the boards' replies' metrics (all boards, or BoardMissing)
Ask = Callable[[list[np.ndarray], dict], list[dict]]


class BoardMissing(RuntimeError):
    """A board did not answer a round of the stage."""


# ----- board side -------------------------------------------------------------------------------


def em_sums(logits: np.ndarray, temperature: float, source: np.ndarray, target: np.ndarray):
    """A board's `prior.em_step` over its fit logits, as metrics (p0…, loglik, n)."""
    if not len(logits):
        return {**{f"p{c}": 0.0 for c in range(len(source))}, "loglik": 0.0, "n": 0.0}
    probs = softmax(np.asarray(logits, float) / temperature)
    posterior, loglik = prior.em_step(probs, source, target)
    return {
        **{f"p{c}": float(v) for c, v in enumerate(posterior)},
        "loglik": loglik,
        "n": float(len(logits)),
    }


def final_layer_sums(
    features: np.ndarray, layers: Sequence[np.ndarray], calibrations: Sequence[float]
) -> dict[str, float]:
    """A board's share of `Judge.final_layer`: `layers` = (weight, bias before, bias after) and
    `calibrations` = (ac before, ac after, atc before, atc after); the paired sums of the "ac"
    scores and the sums of the "atc" ones over its check features."""
    weight, before, after = (np.asarray(a, float) for a in layers)
    f = np.asarray(features, float)
    logits = (f @ weight.T + before, f @ weight.T + after)
    ac = [scores("ac", z, t) for z, t in zip(logits, calibrations[:2])]
    atc = [scores("atc", z, t) for z, t in zip(logits, calibrations[2:])]
    sums = paired_sums(*ac)
    out = {f"ac{i}": float(v) for i, v in enumerate(sums)}
    return {**out, "atc0": float(atc[0].sum()), "atc1": float(atc[1].sum())}


# ----- server side ------------------------------------------------------------------------------


def _total(replies: list[dict], key: str) -> float:
    return sum(float(r[key]) for r in replies)


def estimate(
    ask: Ask,
    logits: int,
    reference: Reference,
    weight: np.ndarray,
    bias: np.ndarray,
    feature_mean: np.ndarray,
    fit_samples: int,
    iterations: int = 300,
    seed: int = 0,
) -> tuple[prior.PriorShift, int]:
    """`prior.estimate` over the fleet's `logits` fit logits (the boards' count): EM through
    `ask` (one round an iteration, one more for the statistic), then the tests; also how many
    rounds it took."""
    source, rounds = reference.prior, 0
    config = {"stage": "prior", "temperature": float(reference.temperature)}

    def step(target: np.ndarray) -> tuple[np.ndarray, float]:
        nonlocal rounds
        rounds += 1
        replies = ask([source, target], config)
        if int(round(_total(replies, "n"))) != logits:
            raise BoardMissing(f"the boards hold {_total(replies, 'n'):.0f} logits, not {logits}")
        posterior = np.array([_total(replies, f"p{c}") for c in range(len(source))])
        return posterior, _total(replies, "loglik")

    target, statistic = prior.em_iterate(step, logits, source, iterations)
    em = (target, statistic, logits)
    shift = prior.tests(em, reference, (weight, bias), (feature_mean, fit_samples), seed=seed)
    return shift, rounds


def judge(
    ask: Ask,
    reference: Reference,
    target_prior: np.ndarray | None,
    weight: np.ndarray,
    before: np.ndarray,
    after: np.ndarray,
    tolerance: float = TOLERANCE,
) -> Verdict:
    """`Judge.final_layer` of replacing the bias `before` by `after` (weight unchanged), over
    the fleet's check features: the calibrations here, the scores' sums on the boards."""
    estimators = [AccuracyEstimator(reference, target_prior, m) for m in METHODS]
    calibrations = [e.calibrate(weight, b) for e in estimators for b in (before, after)]
    replies = ask(
        [weight, before, after],
        {"stage": "final-layer", **{f"cal{i}": float(c) for i, c in enumerate(calibrations)}},
    )
    main = paired_from_sums(np.array([_total(replies, f"ac{i}") for i in range(5)]), tolerance)
    n = max(main.samples, 1)
    second = (_total(replies, "atc1") - _total(replies, "atc0")) / n
    return with_second(main, second)
