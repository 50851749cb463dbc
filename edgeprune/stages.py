"""The personalization stages and the one data pass they share.

The pass (`collect`) runs the source model once over the user's unlabeled samples and splits them
alternately into a *fit* part — the activation map, the prototype supports, a reservoir of logits
for the prior, the mean feature — and a *check* part: a reservoir of samples with their
penultimate features, on which every proposed rewrite is judged (`Judge`) before it is kept.
Memory is bounded whatever the number of samples.

Every stage has one interface: `propose(state, evidence, judge)` returns a `Proposal` (a rewritten
model, its final layer as real numbers, a report entry) or None with the reason in `skipped`.
Stages run in the one declared order `ORDER`: the final-layer stages first, on the source's own
features (which the reference's validation features describe exactly), then pruning, judged by
agreement with the personalized model it would replace.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass, field, replace
from typing import Any

import numpy as np

from . import prior, prototypes, prune
from .activations import ActivationMap
from .choices import STAGES
from .classifier import Classifier
from .errors import EdgepruneError
from .estimate import AccuracyEstimator, Verdict, entropy, paired, softmax, wilson_lower
from .model import Model
from .reference import Reference, classifier_outputs
from .runtime import Runner
from .summary import shortfall

ORDER = STAGES
PRIOR_SAMPLES = 4096  # source logits kept (a uniform reservoir of the fit part) for the prior


class Reservoir:
    """A uniform random sample of at most `size` items from a stream (Vitter's Algorithm R)."""

    def __init__(self, size: int, seed: int = 0):
        self.size, self.seen, self.items = size, 0, []
        self._rng = np.random.default_rng(seed)

    def add(self, item: Any) -> None:
        self.seen += 1
        if len(self.items) < self.size:
            self.items.append(item)
        else:
            j = int(self._rng.integers(0, self.seen))
            if j < self.size:
                self.items[j] = item


@dataclass
class Evidence:
    """What the one pass over the user's samples left: fit part and check part."""

    source: Model
    classifier: Classifier | None  # the source's final layer (None: not a classifier)
    amap: ActivationMap  # fit part
    supports: prototypes.Supports | None  # fit part
    fit_logits: np.ndarray  # [≤ PRIOR_SAMPLES, C] source logits of the fit part
    feature_mean: np.ndarray  # mean penultimate feature of the fit part
    check: list  # check samples (a uniform reservoir)
    check_features: np.ndarray  # [m, D] their source penultimate features
    reference: Reference | None
    samples: int  # seen in all, both parts

    @property
    def fit_samples(self) -> int:
        return self.amap.count


def collect(
    model: Model,
    samples: Iterable[np.ndarray],
    check_size: int = 256,
    support_size: int = 20,
    mode: str = "instrument",
    reference: Reference | None = None,
    classify: bool = True,
) -> Evidence:
    """The one pass: odd samples go to the check part, even ones to the fit part. Without
    `classify` (a model that is not a classifier, pruned only) no final-layer evidence is kept."""
    if not classify:
        return _collect_for_pruning(model, samples, check_size, mode, reference)
    classifier = Classifier.of(model)
    layer, d = classifier.layer, classifier.weight.shape[1]
    amap = ActivationMap(model)
    supports = prototypes.Supports(classifier.classes, d, support_size)
    logits, check = Reservoir(PRIOR_SAMPLES, seed=1), Reservoir(check_size, seed=0)
    feature_sum = np.zeros(d)
    runner = Runner(model, [*amap.watched, layer.input, layer.output], mode=mode)

    def take(i: int, x: np.ndarray, stored: dict[int, np.ndarray]) -> None:
        nonlocal feature_sum
        features = classifier.features(model.real(layer.input, stored[layer.input]))
        if i % 2:
            check.add((np.array(x), features[0].copy()))
            return
        amap.update(stored)
        z = classifier.scores(model.real(layer.output, stored[layer.output]))
        supports.add(features, z)
        feature_sum += features.sum(axis=0)
        for row in z:
            logits.add(row)

    for i, x in enumerate(samples):
        # The raw views must be gone before the next invoke: pass them, never keep them.
        take(i, x, runner.run(x, raw=True))
    return _evidence(model, classifier, amap, supports, logits, feature_sum, check, reference)


def _collect_for_pruning(model: Model, samples, check_size: int, mode: str, reference) -> Evidence:
    """The one pass for a model that is not a classifier: the activation map and the checks."""
    amap = ActivationMap(model)
    check = Reservoir(check_size, seed=0)
    runner = Runner(model, amap.watched, mode=mode)
    for i, x in enumerate(samples):
        if i % 2:
            check.add((np.array(x), np.zeros(0)))
        else:
            amap.update(runner.run(x, raw=True))
    return _evidence(model, None, amap, None, Reservoir(0), np.zeros(0), check, reference)


def _evidence(model, classifier, amap, supports, logits, feature_sum, check, reference):
    """What the pass left, refused if it saw too few samples to both fit and check."""
    if not amap.count or not check.items:
        raise EdgepruneError("personalize needs at least 2 samples (one to fit, one to check)")
    return Evidence(
        source=model,
        classifier=classifier,
        amap=amap,
        supports=supports,
        fit_logits=np.array(logits.items),
        feature_mean=feature_sum / amap.count,
        check=[x for x, _ in check.items],
        check_features=np.array([f for _, f in check.items]),
        reference=reference,
        samples=amap.count + check.seen,
    )


def outputs(model: Model, samples: list) -> np.ndarray:
    """The model's first output on `samples`, real-valued, one flattened row per sample."""
    runner = Runner(model)
    out = model.main.outputs[0]
    return np.array([runner.run(x)[out].reshape(-1) for x in samples], np.float64)


def agree(classifier: Classifier | None, before: np.ndarray, after: np.ndarray) -> np.ndarray:
    """Per sample, does `after` predict what `before` does? For a classifier: the same class
    (argmax). Otherwise (no class to compare): every output within 1 % of the largest
    magnitude of the sample's output before."""
    if classifier is not None:
        return before.argmax(axis=1) == after.argmax(axis=1)
    size = np.maximum(np.abs(before).max(axis=1), 1e-12)
    return np.abs(after - before).max(axis=1) <= 0.01 * size


@dataclass
class State:
    """The model as the pipeline has it so far, with its final layer as real numbers."""

    model: Model
    weight: np.ndarray
    bias: np.ndarray
    shift: prior.PriorShift | None = None  # the prior correction in it, if kept


@dataclass
class Proposal:
    model: Model
    weight: np.ndarray
    bias: np.ndarray
    details: dict[str, Any] = field(default_factory=dict)


class Judge:
    """Compares a proposed model with the current one on the check samples: its estimated
    accuracy (with a reference) and the agreement of its predictions.

    Two label-free estimates give their opinion: calibrated average confidence (the paired lower
    bound comes from it: its per-sample scores are smooth) and ATC (its point estimate must not
    drop either). They fail differently — confidence rewards a rewrite that only sharpens what the
    model already believed; ATC's all-or-nothing scores are noisy — and a rewrite is kept only if
    neither predicts a drop."""

    def __init__(self, evidence: Evidence, tolerance: float):
        self.evidence, self.tolerance = evidence, tolerance
        self.estimators: tuple[AccuracyEstimator, ...] = ()
        if evidence.reference is not None:
            self.reweight(None)

    def reweight(self, prior: np.ndarray | None) -> None:
        """Estimate accuracy for a user with this class prior (None: the source's) from now on."""
        ref = self.evidence.reference
        self.estimators = tuple(AccuracyEstimator(ref, prior, m) for m in ("ac", "atc"))

    def logits(self, model: Model) -> np.ndarray:
        """The final layer's real-valued outputs of `model` on the check samples (a model that
        is not a classifier: its outputs)."""
        if self.evidence.classifier is None:
            return outputs(model, self.evidence.check)
        return np.array([z for _, z in classifier_outputs(model, self.evidence.check)])

    def agree(self, before: np.ndarray, after: np.ndarray) -> np.ndarray:
        """Per check sample, whether `after` (from `logits`) predicts what `before` does."""
        return agree(self.evidence.classifier, before, after)

    def final_layer(self, state: State, weight: np.ndarray, bias: np.ndarray) -> Verdict | None:
        """Estimated accuracy of replacing the final layer, on the source's check features."""
        if not self.estimators:
            return None
        f = self.evidence.check_features
        before = self._scores(f @ state.weight.T + state.bias, state.weight, state.bias)
        return self._verdict(before, self._scores(f @ weight.T + bias, weight, bias))

    def rewrite(self, state: State, before: np.ndarray, after: np.ndarray) -> Verdict | None:
        """Estimated accuracy of a pruned model, from its check logits `after` and the current
        model's `before`. Pruning changes the features the validation data describes, so the
        current model's calibrated posterior judges it: a sample counts with the probability
        the current model gives the pruned model's prediction. Pruning is not meant to raise
        accuracy (it cannot, by this estimate), so it is kept when the bound of its estimated
        loss stays within the tolerance."""
        if not self.estimators:
            return None
        return paired(*rewrite_scores(before, after, self.temperature(state)), self.tolerance)

    def temperature(self, state: State) -> float | None:
        """The temperature that calibrates the current final layer (None: no reference)."""
        if not self.estimators:
            return None
        return self.estimators[0].calibrate(state.weight, state.bias)

    def estimated(self, state: State) -> float | None:
        """The estimated accuracy of the current final layer on the check samples."""
        if not self.estimators:
            return None
        logits = self.evidence.check_features @ state.weight.T + state.bias
        return float(self._scores(logits, state.weight, state.bias)[0].mean())

    def _scores(self, logits: np.ndarray, weight: np.ndarray, bias: np.ndarray) -> list:
        """Per estimator, the per-sample scores of `logits` as the layer (weight, bias) has them."""
        return [e.per_sample(logits, e.calibrate(weight, bias)) for e in self.estimators]

    def _verdict(self, before: list, after: list) -> Verdict:
        main = paired(before[0], after[0], self.tolerance)
        return with_second(main, float(after[1].mean() - before[1].mean()))


def with_second(main: Verdict, second: float) -> Verdict:
    """A final-layer verdict: the main (paired "ac") one, kept only if the second estimator's
    (ATC's) point estimate does not drop either."""
    return replace(main, second_delta=second, kept=main.kept and second >= 0)


def rewrite_scores(
    before: np.ndarray, after: np.ndarray, temperature: float
) -> tuple[np.ndarray, np.ndarray]:
    """Per check sample, the scores `Judge.rewrite` pairs: the probability the current model's
    calibrated posterior (logits `before` over `temperature`) gives its own prediction and the
    rewritten model's (logits `after`)."""
    posterior = softmax(before / temperature)
    rows = np.arange(len(before))
    return posterior[rows, before.argmax(axis=1)], posterior[rows, after.argmax(axis=1)]


def admissible(
    sparsity: float, same: int, checked: int, agreement: float, verdict: Verdict | None
) -> bool:
    """The check a pruning candidate must pass: the Wilson lower bound of its agreement (`same`
    of `checked` check predictions unchanged) reaches `agreement` and its estimated accuracy
    does not drop (`verdict`). Without a reference nothing estimates accuracy: no prediction
    may change, which is what the estimate admits anyway (it never credits pruning a gain)."""
    if not sparsity:
        return True
    kept = verdict.kept if verdict is not None else same == checked
    return bool(wilson_lower(same, checked) >= agreement and kept)


# ----- the stages -------------------------------------------------------------------------------


class PriorStage:
    """Label-shift correction of the final bias (`prior`), proposed only if the test says the
    prior moved."""

    name = "prior"
    needs_reference = True

    def __init__(self, shift: prior.PriorShift | None):
        self.shift = shift
        self.skipped = ""
        self.details = shift.to_dict() if shift is not None else {}

    def propose(self, state: State, evidence: Evidence, judge: Judge) -> Proposal | None:
        if not self.shift.significant:
            self.skipped = "the prior did not move significantly"
            return None
        if not self.shift.labels_only:
            self.skipped = "the features moved too: not a label shift the prior can correct"
            return None
        bias = state.bias + self.shift.logit_offset
        model = evidence.classifier.rewrite(state.model, state.weight, bias)
        return Proposal(model, state.weight, bias, self.details)

    def accept(self, state: State, proposal: Proposal) -> State:
        return State(proposal.model, proposal.weight, proposal.bias, self.shift)


class PrototypeStage:
    """The final layer re-estimated from the user's own features (`prototypes`), plus the kept
    prior's log-ratio. Without a kept label shift the features are centred on the user's mean."""

    name = "prototypes"
    needs_reference = True
    skipped = ""
    details: dict[str, Any] = {}

    def propose(self, state: State, evidence: Evidence, judge: Judge) -> Proposal | None:
        shifted = state.shift is not None
        anchor = prototypes.LABEL_SHIFT_ANCHOR if shifted else prototypes.ANCHOR
        center = None if shifted else evidence.feature_mean
        offset = state.shift.logit_offset if shifted else None
        c = evidence.classifier
        weight, bias = prototypes.layer(state.model, c, evidence.supports, anchor, center, offset)
        details = {
            "anchor": anchor,
            "centred": center is not None,
            "with_prior": shifted,
            "supports_per_class": evidence.supports.counts().tolist(),
        }
        return Proposal(c.rewrite(state.model, weight, bias), weight, bias, details)

    def accept(self, state: State, proposal: Proposal) -> State:
        return replace(state, model=proposal.model, weight=proposal.weight, bias=proposal.bias)


@dataclass
class Candidate:
    """One point of the pruning sweep and what the selection rules see of it."""

    sparsity: float
    measured_sparsity: float
    agreement: float  # share of check samples predicted as the model before pruning does
    agreement_lower: float  # its one-sided 95 % Wilson lower bound
    confidence: float  # mean max-probability
    infomax: float  # H(mean p) − mean H(p), in nats
    estimated_accuracy: float | None = None  # label-free (needs a reference)
    estimated_lower: float | None = None  # lower bound of the estimated change
    admissible: bool = True  # passes the check (agreement bound and estimated change)
    labelled_accuracy: float | None = None  # on --labels samples (used only by rule "labels")
    test_accuracy: float | None = None  # on --test samples (reported, never used to choose)


class PruneStage:
    """Fine-Pruning (Eq. 1) at the sparsity a rule picks from a sweep cut from the one map; a
    candidate is admissible only if the lower bound of its agreement with the model before
    pruning reaches `agreement` and its estimated accuracy does not drop (without a reference:
    it changes no check prediction)."""

    name = "prune"
    needs_reference = False

    def __init__(
        self, rule: str, sparsities, agreement: float, scoring: dict, scope: str, labelled_scores
    ):
        """`scoring`: prune.compute_scores' settings; `labelled_scores(model)`: the accuracies
        on the user's labelled sets, if any ({"labelled_accuracy": …, "test_accuracy": …})."""
        self.rule, self.sparsities, self.agreement = rule, sparsities, agreement
        self.scoring, self.scope, self.labelled_scores = scoring, scope, labelled_scores
        self.candidates: list[Candidate] = []
        self.chosen = 0
        self.skipped = ""
        self.details: dict[str, Any] = {}
        self.sweep = lambda sparsities: sparsities  # personalize may wrap it in a progress bar

    def propose(self, state: State, evidence: Evidence, judge: Judge) -> Proposal | None:
        amap = evidence.amap
        scores = prune.compute_scores(state.model, amap.layers, amap, **self.scoring)
        before = judge.logits(state.model)
        checked = len(before)
        for s in self.sweep(self.sparsities):
            m = prune.apply(state.model, scores.masks(s, self.scope)) if s else state.model
            logits = judge.logits(m) if s else before
            zeros, total = prune.measured_sparsity(m, amap.layers)
            p = softmax(logits)
            same = int(np.sum(judge.agree(before, logits)))
            verdict = judge.rewrite(state, before, logits) if s else None
            lower = wilson_lower(same, checked)
            candidate = Candidate(
                sparsity=float(s),
                measured_sparsity=zeros / total if total else 0.0,
                agreement=same / checked,
                agreement_lower=lower,
                confidence=float(p.max(axis=1).mean()),
                infomax=float(entropy(p.mean(axis=0)) - entropy(p).mean()),
                estimated_accuracy=verdict.after if verdict else judge.estimated(state),
                estimated_lower=verdict.lower if verdict else None,
                admissible=admissible(s, same, checked, self.agreement, verdict),
                **self.labelled_scores(m),
            )
            self.candidates.append(candidate)
        self.chosen = self._choose()
        best = self.candidates[self.chosen]
        if not best.sparsity:
            self.skipped = (
                "no sparsity passed the check" if len(self.candidates) > 1 else "sparsity 0"
            )
            return None
        details = {"sparsity": best.sparsity, "measured": best.measured_sparsity}
        keep = self.scoring.get("keep_classifier", False)
        note = shortfall(state.model, amap.layers, best.sparsity, best.measured_sparsity, keep)
        if note:
            details["note"] = note
        chosen = prune.apply(
            state.model, scores.masks(best.sparsity, self.scope)
        )  # not kept: cheap
        return Proposal(chosen, state.weight, state.bias, details)

    def _choose(self) -> int:
        cands = self.candidates
        if self.rule == "labels":  # the user's labels decide; ties go to the lower sparsity
            return max(range(len(cands)), key=lambda i: (cands[i].labelled_accuracy, -i))
        ok = [i for i, c in enumerate(cands) if c.admissible]
        if self.rule == "infomax":
            return max(ok, key=lambda i: (cands[i].infomax, -i))
        return max(ok, key=lambda i: cands[i].sparsity)  # fidelity, fixed: the largest that passes

    def accept(self, state: State, proposal: Proposal) -> State:
        return replace(state, model=proposal.model)
