"""Personalize a model to one user's unlabeled samples, and never make it worse.

One pass over the data (`stages.collect`) splits the samples into a fit part and a check part.
The stages run in one declared order — prior → prototypes → prune (`stages.ORDER`) — and each
proposes a rewrite fitted on the fit part; a proposal is kept only if the label-free check on the
check part says it does not hurt (`estimate`: the estimated accuracy does not drop, with a
confidence bound; pruning also keeps a bounded agreement with the model before it). Otherwise the
model stays byte-identical and the report says why.

The accuracy estimate needs the source reference (`reference`), built on the host from labelled
validation data. Without one, only what is safe without it runs: pruning at a sparsity that
changes no check prediction; the prior and prototype stages are skipped, and the report says so.

Pruning rules, over a sweep of sparsities cut from one activation map (never a second pass):
- "fidelity": the largest admissible sparsity (default);
- "infomax": the admissible sparsity maximizing H(mean p) − mean H(p);
- "labels": the best accuracy on a few labelled samples held out from adaptation (no check);
- "fixed": the sparsity the user asks for, if admissible.
"""

from __future__ import annotations

import json
import os
from collections.abc import Iterable
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path
from typing import Any

import numpy as np

from . import prior
from ._io import atomic_write_bytes
from .choices import RULES
from .classifier import Classifier, NotAClassifier
from .classifier import probabilities as output_probabilities
from .errors import EdgepruneError
from .estimate import TOLERANCE
from .model import Model
from .operation import Context
from .reference import Reference
from .runtime import Runner
from .shrink import shrink_step
from .stages import (
    ORDER,
    Candidate,
    Judge,
    PriorStage,
    PrototypeStage,
    PruneStage,
    State,
    agree,
    collect,
    outputs,
)

STAGES = ORDER
DEFAULT_SPARSITIES = tuple(round(0.1 * i, 1) for i in range(10))


def probabilities(model: Model, samples: Iterable[np.ndarray]) -> np.ndarray:
    """Class probabilities [n, classes] of `model` on `samples`: a softmax output dequantized as
    it is, never softmaxed twice (`classifier.probabilities`)."""
    runner = Runner(model)
    out = model.main.outputs[0]
    rows = [runner.run(x)[out].reshape(-1) for x in samples]
    return output_probabilities(model, np.array(rows, dtype=np.float64))


@dataclass
class StageResult:
    """What one stage proposed and whether the check kept it. `agreement` (with the source, on
    the check samples) and `test_accuracy` describe the model after the stage; `proposed_*`
    describe the proposal even when it was refused (for judging the estimator)."""

    name: str
    applied: bool
    agreement: float
    test_accuracy: float | None = None
    estimated_accuracy: float | None = None
    check: dict[str, Any] | None = None  # the estimate's verdict on the proposal
    proposed_test_accuracy: float | None = None
    reason: str = ""
    details: dict[str, Any] = field(default_factory=dict)


@dataclass
class Report:
    rule: str
    chosen: int
    samples: int
    evaluated_on: int
    settings: dict[str, Any]
    candidates: list[Candidate] = field(default_factory=list)
    stages: list[StageResult] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)

    @property
    def best(self) -> Candidate | None:
        return self.candidates[self.chosen] if self.candidates else None

    def to_dict(self) -> dict[str, Any]:
        best = self.best
        return {**asdict(self), "chosen_sparsity": best.sparsity if best else 0.0}


class _Evaluator:
    """Scores a model against the source on the check samples, and on the labelled sets."""

    def __init__(self, source: Model, evidence, labelled=None, test=None):
        self.check, self.labelled, self.test = evidence.check, labelled, test
        self.classifier = evidence.classifier
        self.source = outputs(source, self.check)

    def agreement(self, model: Model) -> float:
        same = agree(self.classifier, self.source, outputs(model, self.check))
        return float(np.mean(same))

    def accuracy(self, model: Model, which: str = "test") -> float | None:
        data = self.test if which == "test" else self.labelled
        return _accuracy(probabilities(model, data[0]), data[1]) if data else None

    def labelled_scores(self, model: Model) -> dict[str, float | None]:
        return {
            "labelled_accuracy": self.accuracy(model, "labelled"),
            "test_accuracy": self.accuracy(model, "test"),
        }


def _accuracy(p: np.ndarray, labels: np.ndarray) -> float:
    return float(np.mean(p.argmax(axis=1) == labels))


def not_a_classifier(model: Model, stages: tuple[str, ...], rule: str) -> str:
    """Why the classifier stages cannot read `model` ("" when they can). A model that is not a
    classifier is refused with the reason unless only pruning was asked for."""
    try:
        Classifier.of(model)
    except NotAClassifier as e:
        if set(stages) - {"prune"} or rule in ("infomax", "labels"):
            raise
        return f"not a classifier ({e.reason})"
    return ""


def check_stages(stages: Iterable[str], fixed: float | None = None) -> tuple[str, ...]:
    """`stages` as given, refused if unknown, repeated or out of the declared order."""
    stages = tuple(stages)
    unknown = [s for s in stages if s not in ORDER]
    if unknown:
        raise EdgepruneError(f"unknown stage {unknown[0]!r}: stages are {', '.join(ORDER)}")
    if list(stages) != [s for s in ORDER if s in stages]:
        raise EdgepruneError(
            f"stages run in one order, {' → '.join(ORDER)}: give them as "
            f"{','.join(s for s in ORDER if s in stages)}"
        )
    if fixed is not None and "prune" not in stages:
        raise EdgepruneError("a sparsity needs the prune stage: add prune to --stages")
    return stages


def personalize(
    model: Model,
    samples: Iterable[np.ndarray],
    *,
    stages: tuple[str, ...] = STAGES,
    reference: Reference | None = None,
    rule: str = "fidelity",
    sparsities: tuple[float, ...] = DEFAULT_SPARSITIES,
    fixed: float | None = None,
    agreement: float = 0.95,
    tolerance: float = TOLERANCE,
    labelled: tuple[np.ndarray, np.ndarray] | None = None,
    test: tuple[np.ndarray, np.ndarray] | None = None,
    score: str = "fine",
    scope: str = "layer",
    granularity: str = "weight",
    keep_classifier: bool = True,
    support_size: int = 20,
    evaluation_size: int = 256,
    mode: str = "instrument",
    seed: int = 0,
    shrink: float = 0.0,
    progress: Context | None = None,
) -> tuple[Model, Report]:
    """Personalize `model` to the user behind `samples`: prior → prototypes → prune, each stage
    kept only if the check says it does not hurt; returns the model and the report.

    `progress` (an operation's Context) gets a bar for shrinking, one over the stages and one
    over the prune sweep's candidates; it shows progress and lets a cancel in, nothing more."""
    progress = progress or Context()
    stages = check_stages(stages, fixed)
    if rule not in RULES:
        raise EdgepruneError(f"unknown rule {rule!r}: rules are {', '.join(RULES)}")
    if rule == "labels" and labelled is None:
        raise EdgepruneError("rule 'labels' needs a few labelled samples: pass --labels FILE.npz")
    if rule == "fixed" and fixed is None:
        raise EdgepruneError("rule 'fixed' needs a sparsity")
    notes, shift = [], None
    shrunk = None
    if shrink:  # thin + repair first, kept only if the check passes (`shrink`)
        samples = list(samples)
        with progress.bar("shrink", None, "step"):
            model, reference, shrunk = shrink_step(
            model, samples, shrink, reference=reference, agreement=agreement,
                tolerance=tolerance, check_size=evaluation_size, mode=mode,
            )  # fmt: skip
    reason = not_a_classifier(model, stages, rule)
    classify = not reason
    if reason:
        notes.append(f"{reason}: pruned only where no check output moves by more than 1 %")
    if reference is not None:
        reference.check(model)
        reference.fits(Classifier.of(model))
    evidence = collect(model, samples, evaluation_size, support_size, mode, reference, classify)
    source = evidence.classifier
    if reference is not None:
        shift = prior.estimate(
            evidence.fit_logits,
            reference,
            source.weight,
            source.bias,
            evidence.feature_mean,
            evidence.fit_samples,
            seed=seed,
        )
    elif classify:
        notes.append(
            "no source reference: accuracy cannot be estimated without labels, so the prior and "
            "prototype stages were skipped and pruning kept only where no check prediction "
            "changed; build one with `edgeprune package --reference` or `edgeprune reference`"
        )
    judge = Judge(evidence, tolerance)
    if shift is not None and shift.significant and shift.labels_only:
        # The labels moved and only they did: the validation features stand for this user's
        # prior. (Were the features moving too, EM's estimate would be miscalibration, and
        # judged on data weighted by it, the prior correction would confirm itself.)
        judge.reweight(shift.target)
    evaluate = _Evaluator(model, evidence, labelled, test)
    state = State(model, *((source.weight, source.bias) if source else (None, None)))
    history = [
        StageResult(
            "source",
            True,
            1.0,
            evaluate.accuracy(model),
            estimated_accuracy=judge.estimated(state),
        )
    ]
    if shrunk is not None:
        row = StageResult("shrink", shrunk.applied, shrunk.agreement, check=shrunk.check)
        history.insert(0, replace(row, reason=shrunk.reason, details=shrunk.details))
    if rule == "fixed":
        sparsities = (0.0, fixed) if fixed else (0.0,)
    scoring = dict(score=score, granularity=granularity, keep_classifier=keep_classifier, seed=seed)
    prune_stage = PruneStage(rule, sparsities, agreement, scoring, scope, evaluate.labelled_scores)
    built = {"prior": PriorStage(shift), "prototypes": PrototypeStage(), "prune": prune_stage}
    checks = (list(test[0]), test[1]) if test is not None else (evidence.check, None)
    prune_stage.sweep = lambda s: progress.iterate(s, "prune sweep", len(s), "sparsity")
    for name in progress.iterate(stages, "stages", len(stages), "stage"):
        state, result = _run(built[name], state, evidence, judge, evaluate, history[-1], checks)
        history.append(result)
    settings = dict(
        stages=list(stages),
        reference=reference is not None,
        score=score,
        scope=scope,
        granularity=granularity,
        keep_classifier=keep_classifier,
        agreement=agreement,
        tolerance=tolerance,
        support_size=support_size,
        mode=mode,
        seed=seed,
        shrink=shrink,
    )
    report = Report(
        rule,
        prune_stage.chosen,
        evidence.samples,
        len(evidence.check),
        settings,
        prune_stage.candidates,
        history,
        notes,
    )
    return state.model, report


def _run(
    stage, state: State, evidence, judge: Judge, evaluate: _Evaluator, last: StageResult, checks
):
    """One stage: propose, judge, keep or refuse; the new state and the report entry."""
    unchanged = dict(agreement=last.agreement, test_accuracy=last.test_accuracy)
    if stage.needs_reference and evidence.reference is None:
        return state, StageResult(stage.name, False, **unchanged, reason="needs a source reference")
    proposal = stage.propose(state, evidence, judge)
    if proposal is None:
        estimated = judge.estimated(state)
        return state, StageResult(
            stage.name,
            False,
            **unchanged,
            estimated_accuracy=estimated,
            reason=stage.skipped,
            details=stage.details,
        )
    # The sweep judged pruning candidate by candidate; a final-layer rewrite is judged here.
    verdict = (
        None if stage.name == "prune" else judge.final_layer(state, proposal.weight, proposal.bias)
    )
    kept = verdict is None or verdict.kept
    proposed_test = evaluate.accuracy(proposal.model)
    details = dict(proposal.details)
    source = evidence.classifier
    if (
        stage.name == "prototypes"
        and evidence.source.tensor(source.layer.weight).quantization is not None
    ):
        details.update(
            _float_check(proposal.model, source, proposal.weight, proposal.bias, *checks)
        )
    if not kept:
        return state, StageResult(
            stage.name,
            False,
            **unchanged,
            estimated_accuracy=judge.estimated(state),
            check=verdict.to_dict(),
            proposed_test_accuracy=proposed_test,
            reason="the estimated accuracy would drop",
            details=details,
        )
    state = stage.accept(state, proposal)
    estimated = (
        verdict.after if verdict is not None else stage.candidates[stage.chosen].estimated_accuracy
    )
    return state, StageResult(
        stage.name,
        True,
        evaluate.agreement(state.model),
        proposed_test,
        estimated_accuracy=estimated,
        check=verdict.to_dict() if verdict else None,
        proposed_test_accuracy=proposed_test,
        details=details,
    )


def _float_check(model: Model, c: Classifier, weight, bias, samples, labels=None) -> dict:
    """How a quantized rewrite compares with the float computation of its final layer,
    weight @ features + bias: the share of `samples` on which their argmax agree, and with
    `labels` the float computation's accuracy (beside the rewritten model's own)."""
    runner = Runner(model, [c.layer.input])
    out = model.main.outputs[0]
    quantized, computed = [], []
    for x in samples:
        values = runner.run(x)
        quantized.append(values[out].argmax())
        computed.append((c.features(values[c.layer.input])[0] @ weight.T + bias).argmax())
    quantized, computed = np.array(quantized), np.array(computed)
    check = {"argmax_as_float": float(np.mean(quantized == computed))}
    if labels is not None:
        check["float_test_accuracy"] = float(np.mean(computed == np.asarray(labels)))
    return check


def write_report(report: Report, directory: str | os.PathLike, model_path: str = "") -> list:
    """report.json and report.md in `directory` (the personalize operation adds sweep.png
    where a chart is registered)."""
    directory = Path(directory)
    directory.mkdir(parents=True, exist_ok=True)
    data = report.to_dict()
    atomic_write_bytes(directory / "report.json", json.dumps(data, indent=2).encode())
    atomic_write_bytes(directory / "report.md", _markdown(report, model_path).encode())
    return [directory / "report.json", directory / "report.md"]


def _cell(value: float | None) -> str:
    return "—" if value is None else f"{value:.3f}"


def _markdown(report: Report, model_path: str) -> str:
    lines = [
        "# Personalization report",
        "",
        f"Model written: `{model_path}`" if model_path else "",
        f"Samples: {report.samples} (half fit the stages, {report.evaluated_on} check them).",
        f"Settings: {', '.join(f'{k}={v}' for k, v in report.settings.items())}.",
        *(f"\nNote: {note}" for note in report.notes),
        "",
        "| stage | kept | estimated acc. before → after | lower bound of the change | "
        "test acc. of the proposal | test acc. after | why not |",
        "|---|---|---:|---:|---:|---:|---|",
    ]
    for st in report.stages:
        c = st.check
        change = (
            f"{_cell(c['before'])} → {_cell(c['after'])}" if c else _cell(st.estimated_accuracy)
        )
        lines.append(
            f"| {st.name} | {'yes' if st.applied else 'no'} | {change} | "
            f"{_cell(c['lower']) if c else '—'} | {_cell(st.proposed_test_accuracy)} | "
            f"{_cell(st.test_accuracy)} | {st.reason} |"
        )
    if report.candidates:
        best = report.best
        lines += [
            "",
            f"Pruning rule **{report.rule}** chose sparsity **{best.sparsity:.2f}** "
            f"(measured {best.measured_sparsity:.3f}).",
            "",
            "| sparsity | measured | agreement | its lower bound | estimated acc. | admissible | "
            "confidence | infomax | labelled acc. | test acc. |",
            "|---:|---:|---:|---:|---:|---|---:|---:|---:|---:|",
        ]
        for i, c in enumerate(report.candidates):
            mark = " ←" if i == report.chosen else ""
            lines.append(
                f"| {c.sparsity:.2f}{mark} | {c.measured_sparsity:.3f} | {c.agreement:.3f} | "
                f"{c.agreement_lower:.3f} | {_cell(c.estimated_accuracy)} | "
                f"{'yes' if c.admissible else 'no'} | {c.confidence:.3f} | {c.infomax:.3f} | "
                f"{_cell(c.labelled_accuracy)} | {_cell(c.test_accuracy)} |"
            )
    lines += ["", "Test accuracy (when given) is reported only; no rule or stage sees it."]
    return "\n".join(lines) + "\n"
