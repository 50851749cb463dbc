"""Personalize a model to one user's unlabeled samples: prune → prior → prototypes.

One pass over the data builds the ActivationMap, keeps a bounded, uniform reservoir of samples and
the final layer's statistics. Every candidate sparsity is cut from the same scores (never a second
pass over the data) and judged on the reservoir by a selection rule:

- "fidelity": the largest sparsity whose predictions agree with the source model's on at least
  `agreement` of the unlabeled samples (a label-free "do no harm" rule);
- "infomax": the sparsity maximizing H(mean p) − mean H(p): confident per-sample predictions with a
  diverse marginal, which also guards against collapse onto one class;
- "labels": the best accuracy on a few labelled samples held out from adaptation;
- "fixed": the sparsity the user asks for.

Then the final layer is rewritten by the label-shift prior (`prior`) and the prototype classifier
(`prototypes`), from statistics of the model they rewrite. Every stage is optional and reported.
"""

from __future__ import annotations

import json
import os
from collections.abc import Iterable
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from . import prior, prototypes, prune
from ._io import atomic_write_bytes
from .activations import ActivationMap
from .classifier import Classifier
from .errors import EdgepruneError
from .model import Model
from .runtime import Runner

RULES = ("fidelity", "infomax", "labels", "fixed")
STAGES = ("prune", "prior", "prototypes")
DEFAULT_SPARSITIES = tuple(round(0.1 * i, 1) for i in range(10))
PRIOR_SAMPLES = 4096  # logits kept (a uniform reservoir) for the prior's EM


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


def probabilities(model: Model, samples: Iterable[np.ndarray]) -> np.ndarray:
    """Class probabilities [n, classes] of `model` on `samples` (softmax unless already probs)."""
    runner = Runner(model)
    out = model.main.outputs[0]
    rows = [runner.run(x)[out].reshape(-1) for x in samples]
    logits = np.array(rows, dtype=np.float64)
    if logits.size and np.all(logits >= 0) and np.allclose(logits.sum(axis=1), 1.0, atol=1e-2):
        return logits
    e = np.exp(logits - logits.max(axis=1, keepdims=True))
    return e / e.sum(axis=1, keepdims=True)


def _entropy(p: np.ndarray, axis: int = -1) -> np.ndarray:
    return -(p * np.log(np.clip(p, 1e-12, None))).sum(axis=axis)


@dataclass
class Candidate:
    """One point of the sweep and what the selection rules see of it."""

    sparsity: float
    measured_sparsity: float
    agreement: float  # share of unlabeled samples predicted as the source model does
    confidence: float  # mean max-probability
    infomax: float  # H(mean p) − mean H(p), in nats
    labelled_accuracy: float | None = None  # on --labels samples (used only by rule "labels")
    test_accuracy: float | None = None  # on --test samples (reported, never used to choose)


@dataclass
class StageResult:
    """What one stage did, judged like the candidates (agreement on the reservoir, test set)."""

    name: str
    applied: bool
    agreement: float
    test_accuracy: float | None = None
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

    @property
    def best(self) -> Candidate:
        return self.candidates[self.chosen]

    def to_dict(self) -> dict[str, Any]:
        return {**asdict(self), "chosen_sparsity": self.best.sparsity}


class _Evaluator:
    """Judges a model on the reservoir (against the source model) and on the labelled sets."""

    def __init__(self, source: Model, reservoir: list, labelled=None, test=None):
        self.reservoir, self.labelled, self.test = reservoir, labelled, test
        self.source = probabilities(source, reservoir).argmax(axis=1)

    def __call__(self, model: Model) -> dict[str, Any]:
        p = probabilities(model, self.reservoir)
        scored = {}
        for name, data in (("labelled_accuracy", self.labelled), ("test_accuracy", self.test)):
            scored[name] = _accuracy(probabilities(model, data[0]), data[1]) if data else None
        return dict(
            agreement=float(np.mean(p.argmax(axis=1) == self.source)),
            confidence=float(p.max(axis=1).mean()),
            infomax=float(_entropy(p.mean(axis=0)) - _entropy(p).mean()),
            **scored,
        )


def _summary(metrics: dict[str, Any]) -> dict[str, Any]:
    return {"agreement": metrics["agreement"], "test_accuracy": metrics["test_accuracy"]}


def _accuracy(p: np.ndarray, labels: np.ndarray) -> float:
    return float(np.mean(p.argmax(axis=1) == labels))


def _choose(rule: str, candidates: list[Candidate], agreement: float, fixed: float | None) -> int:
    if rule == "fixed":
        return min(range(len(candidates)), key=lambda i: abs(candidates[i].sparsity - fixed))
    if rule == "fidelity":
        ok = [i for i, c in enumerate(candidates) if c.agreement >= agreement]
        return max(ok, key=lambda i: candidates[i].sparsity) if ok else 0
    key = "infomax" if rule == "infomax" else "labelled_accuracy"
    # Ties go to the lower sparsity: no change without a reason.
    return max(range(len(candidates)), key=lambda i: (getattr(candidates[i], key), -i))


def _real(model: Model, tensor: int, stored: np.ndarray) -> np.ndarray:
    q = model.tensor(tensor).quantization
    return q.dequantize(stored) if q is not None else stored.astype(np.float64)


class _ClassifierStats:
    """What the prior and prototype stages need: the final layer's logits (a reservoir, for EM)
    and its most confident input features per class (the prototype supports)."""

    def __init__(self, classifier: Classifier, support_size: int):
        self.classifier = classifier
        self.logits = Reservoir(PRIOR_SAMPLES, seed=1)
        self.supports = prototypes.Supports(
            classifier.classes, classifier.weight.shape[1], support_size
        )

    def take(self, model: Model, stored: dict[int, np.ndarray]) -> None:
        """Add one invocation's final-layer input and output (stored values of `model`)."""
        layer, classes = self.classifier.layer, self.classifier.classes
        features = _real(model, layer.input, stored[layer.input])
        logits = _real(model, layer.output, stored[layer.output]).reshape(-1, classes)
        self.supports.add(features.reshape(-1, self.classifier.weight.shape[1]), logits)
        for row in logits:
            self.logits.add(row)

    @classmethod
    def of(cls, model: Model, samples: list[np.ndarray], support_size: int) -> _ClassifierStats:
        """The statistics of `model` itself over `samples` (a pruned model has its own)."""
        stats = cls(Classifier.of(model), support_size)
        layer = stats.classifier.layer
        runner = Runner(model, [layer.input, layer.output])
        for x in samples:
            stats.take(model, runner.run(x, raw=True))
        return stats


class _Pass:
    """The one pass over the samples: the activation map, a reservoir of samples to judge
    candidates on and, when later stages need them, the source model's classifier statistics.
    All of it in memory bounded independently of the number of samples."""

    def __init__(self, model: Model, evaluation_size: int, stats: _ClassifierStats | None):
        self.amap = ActivationMap(model)
        self.samples = Reservoir(evaluation_size, seed=0)
        self.stats = stats

    def run(self, model: Model, samples: Iterable[np.ndarray], mode: str) -> None:
        runner = Runner(model, self.amap.watched, mode=mode)
        for x in samples:
            # The raw views must be gone before the next invoke: pass them, never keep them.
            self._take(model, runner.run(x, raw=True))
            self.samples.add(np.array(x))
        if not self.amap.count:
            raise EdgepruneError("no samples to personalize on")

    def _take(self, model: Model, stored: dict[int, np.ndarray]) -> None:
        self.amap.update(stored)
        if self.stats is not None:
            self.stats.take(model, stored)


def personalize(
    model: Model,
    samples: Iterable[np.ndarray],
    *,
    stages: tuple[str, ...] = STAGES,
    rule: str = "fidelity",
    sparsities: tuple[float, ...] = DEFAULT_SPARSITIES,
    fixed: float | None = None,
    agreement: float = 0.95,
    labelled: tuple[np.ndarray, np.ndarray] | None = None,
    test: tuple[np.ndarray, np.ndarray] | None = None,
    score: str = "fine",
    scope: str = "layer",
    granularity: str = "weight",
    keep_classifier: bool = True,
    min_tv: float = prior.MIN_TV,
    support_size: int = 20,
    evaluation_size: int = 256,
    mode: str = "instrument",
    seed: int = 0,
) -> tuple[Model, Report]:
    """Personalize `model` to the user behind `samples`: prune (Eq. 1) → prior → prototypes, each
    stage switchable; returns the rewritten model and the report."""
    unknown = set(stages) - set(STAGES)
    if unknown or rule not in RULES:
        raise EdgepruneError(
            f"unknown stage or rule {sorted(unknown) or rule!r}: stages are {', '.join(STAGES)}, "
            f"rules {', '.join(RULES)}"
        )
    if rule == "labels" and labelled is None:
        raise EdgepruneError("rule 'labels' needs a few labelled samples: pass --labels FILE.npz")
    if rule == "fixed" and fixed is None:
        raise EdgepruneError("rule 'fixed' needs a sparsity")
    if "prune" not in stages:
        sparsities = (0.0,)
    elif rule == "fixed":
        sparsities = (0.0, fixed) if fixed else (0.0,)
    needs_classifier = bool({"prior", "prototypes"} & set(stages))
    stats = _ClassifierStats(Classifier.of(model), support_size) if needs_classifier else None
    collected = _Pass(model, evaluation_size, stats)
    collected.run(model, samples, mode)
    evaluate = _Evaluator(model, collected.samples.items, labelled, test)

    amap = collected.amap
    scores = prune.compute_scores(
        model, amap.layers, amap, score, granularity, keep_classifier, seed
    )
    candidates, models = [], []
    for s in sparsities:
        m = prune.apply(model, scores.masks(s, scope)) if s else model
        zeros, total = prune.measured_sparsity(m, amap.layers)
        candidates.append(
            Candidate(
                sparsity=float(s), measured_sparsity=zeros / total if total else 0.0, **evaluate(m)
            )
        )
        models.append(m)
    chosen = _choose(rule, candidates, agreement, fixed)
    current = models[chosen]
    best = candidates[chosen]
    history = [StageResult("source", True, candidates[0].agreement, candidates[0].test_accuracy)]
    if "prune" in stages:
        history.append(
            StageResult(
                "prune",
                best.sparsity > 0,
                best.agreement,
                best.test_accuracy,
                {"sparsity": best.sparsity, "measured": best.measured_sparsity},
            )
        )
    if stats is not None and current is not model:  # statistics of the model they rewrite
        stats = _ClassifierStats.of(current, collected.samples.items, support_size)
    checks = (list(test[0]), test[1]) if test is not None else (collected.samples.items, None)
    current, stage_results = _final_layer_stages(
        current, stages, stats, min_tv, evaluate, collected.samples.items, checks
    )
    history += stage_results
    settings = dict(
        stages=list(stages),
        score=score,
        scope=scope,
        granularity=granularity,
        keep_classifier=keep_classifier,
        agreement=agreement,
        min_tv=min_tv,
        support_size=support_size,
        mode=mode,
        seed=seed,
    )
    report = Report(
        rule, chosen, amap.count, len(collected.samples.items), settings, candidates, history
    )
    return current, report


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
        computed.append((values[c.layer.input].reshape(-1) @ weight.T + bias).argmax())
    quantized, computed = np.array(quantized), np.array(computed)
    check = {"argmax_as_float": float(np.mean(quantized == computed))}
    if labels is not None:
        check["float_test_accuracy"] = float(np.mean(computed == np.asarray(labels)))
    return check


def _mean_features(model: Model, classifier: Classifier, samples: list) -> np.ndarray:
    """The mean of the final layer's (real-valued) input features of `model` on `samples`."""
    runner = Runner(model, [classifier.layer.input])
    total = np.zeros(classifier.weight.shape[1])
    for x in samples:
        total += runner.run(x)[classifier.layer.input].reshape(-1)
    return total / max(len(samples), 1)


def _final_layer_stages(
    model: Model,
    stages: tuple[str, ...],
    stats: _ClassifierStats | None,
    min_tv: float,
    evaluate,
    reservoir: list,
    checks: tuple,
) -> tuple[Model, list[StageResult]]:
    """prior → prototypes on the final layer, each judged like the candidates. Without a label
    shift the prototypes centre the features on the reservoir's mean; `checks` are the (samples,
    labels or None) on which a quantized rewrite is compared with its float computation."""
    results, present, anchor, shifted = [], None, prototypes.ANCHOR, False
    if "prior" in stages:
        shift = prior.estimate(prototypes.softmax(np.array(stats.logits.items)), min_tv=min_tv)
        model = prior.apply(model, Classifier.of(model), shift)
        present = shift.present()
        if shift.significant:
            anchor, shifted = prototypes.LABEL_SHIFT_ANCHOR, True
        summary = _summary(evaluate(model))
        results.append(StageResult("prior", shift.significant, **summary, details=shift.to_dict()))
    if "prototypes" in stages:
        classifier = Classifier.of(model)
        center = None if shifted else _mean_features(model, classifier, reservoir)
        weight, bias = prototypes.layer(model, classifier, stats.supports, present, anchor, center)
        model = classifier.rewrite(model, weight, bias)
        details = {
            "anchor": anchor,
            "centred": center is not None,
            "classes": int(np.sum(present)) if present is not None else stats.classifier.classes,
            "supports_per_class": stats.supports.counts().tolist(),
        }
        if model.tensor(classifier.layer.weight).quantization is not None:
            details.update(_float_check(model, classifier, weight, bias, *checks))
        results.append(
            StageResult("prototypes", True, **_summary(evaluate(model)), details=details)
        )
    return model, results


def write_report(report: Report, directory: str | os.PathLike, model_path: str = "") -> list:
    """report.json, report.md and (with matplotlib installed) sweep.png in `directory`."""
    directory = Path(directory)
    directory.mkdir(parents=True, exist_ok=True)
    data = report.to_dict()
    atomic_write_bytes(directory / "report.json", json.dumps(data, indent=2).encode())
    atomic_write_bytes(directory / "report.md", _markdown(report, model_path).encode())
    written = [directory / "report.json", directory / "report.md"]
    try:
        from .host.charts import plot_sweep

        written.append(plot_sweep(report, directory / "sweep.png"))
    except ImportError:  # on a board without matplotlib: the tables say it all
        pass
    return written


def _markdown(report: Report, model_path: str) -> str:
    def cell(value: float | None) -> str:
        return "—" if value is None else f"{value:.3f}"

    lines = [
        "# Personalization report",
        "",
        f"Model written: `{model_path}`" if model_path else "",
        f"Rule: **{report.rule}** — chose sparsity **{report.best.sparsity:.2f}** "
        f"(measured {report.best.measured_sparsity:.3f}).",
        f"Adaptation samples: {report.samples}; candidates judged on {report.evaluated_on}.",
        f"Settings: {', '.join(f'{k}={v}' for k, v in report.settings.items())}.",
        "",
        "| sparsity | measured | agreement | confidence | infomax | labelled acc. | test acc. |",
        "|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for i, c in enumerate(report.candidates):
        mark = " ←" if i == report.chosen else ""
        lines.append(
            f"| {c.sparsity:.2f}{mark} | {c.measured_sparsity:.3f} | {c.agreement:.3f} | "
            f"{c.confidence:.3f} | {c.infomax:.3f} | {cell(c.labelled_accuracy)} | "
            f"{cell(c.test_accuracy)} |"
        )
    lines += ["", "| stage | applied | agreement | test acc. |", "|---|---|---:|---:|"]
    for st in report.stages:
        lines.append(
            f"| {st.name} | {'yes' if st.applied else 'no'} | {st.agreement:.3f} | "
            f"{cell(st.test_accuracy)} |"
        )
    lines += ["", "Test accuracy (when given) is reported only; no rule or stage sees it."]
    return "\n".join(lines) + "\n"
