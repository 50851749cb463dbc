"""Personalize a model to one user's unlabeled samples: one pass, a sweep, a selection rule.

The pass over the data builds the ActivationMap and keeps a bounded, uniform reservoir of samples.
Every candidate sparsity is cut from the same scores (never a second pass over the data) and
judged on the reservoir by a selection rule:

- "fidelity": the largest sparsity whose predictions agree with the source model's on at least
  `agreement` of the unlabeled samples (a label-free "do no harm" rule);
- "infomax": the sparsity maximizing H(mean p) − mean H(p): confident per-sample predictions with a
  diverse marginal, which also guards against collapse onto one class;
- "labels": the best accuracy on a few labelled samples held out from adaptation;
- "fixed": the sparsity the user asks for.
"""

from __future__ import annotations

import json
import os
from collections.abc import Iterable
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from . import prune
from ._io import atomic_write_bytes
from .activations import ActivationMap
from .errors import EdgepruneError
from .model import Model
from .runtime import Runner

RULES = ("fidelity", "infomax", "labels", "fixed")
DEFAULT_SPARSITIES = tuple(round(0.1 * i, 1) for i in range(10))


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
class Report:
    rule: str
    chosen: int
    samples: int
    evaluated_on: int
    settings: dict[str, Any]
    candidates: list[Candidate] = field(default_factory=list)

    @property
    def best(self) -> Candidate:
        return self.candidates[self.chosen]

    def to_dict(self) -> dict[str, Any]:
        return {**asdict(self), "chosen_sparsity": self.best.sparsity}


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


def personalize(
    model: Model,
    samples: Iterable[np.ndarray],
    *,
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
    evaluation_size: int = 256,
    mode: str = "instrument",
    seed: int = 0,
) -> tuple[Model, Report]:
    """Fine-prune `model` for the user behind `samples`; returns the chosen model and the report."""
    if rule not in RULES:
        raise EdgepruneError(f"unknown rule {rule!r}: choose one of {', '.join(RULES)}")
    if rule == "labels" and labelled is None:
        raise EdgepruneError("rule 'labels' needs a few labelled samples: pass --labels FILE.npz")
    if rule == "fixed":
        if fixed is None:
            raise EdgepruneError("rule 'fixed' needs a sparsity")
        sparsities = (0.0, fixed) if fixed else (0.0,)
    amap = ActivationMap(model)
    runner = Runner(model, amap.watched, mode=mode)
    reservoir = Reservoir(evaluation_size, seed)
    for x in samples:
        amap.update(runner.run(x, raw=True))
        reservoir.add(np.array(x))
    if not amap.count:
        raise EdgepruneError("no samples to personalize on")
    scores = prune.compute_scores(
        model, amap.layers, amap, score, granularity, keep_classifier, seed
    )
    source = probabilities(model, reservoir.items)
    candidates, models = [], []
    for s in sparsities:
        m = prune.apply(model, scores.masks(s, scope)) if s else model
        p = probabilities(m, reservoir.items)
        zeros, total = prune.measured_sparsity(m, amap.layers)
        mean = p.mean(axis=0)
        candidates.append(
            Candidate(
                sparsity=float(s),
                measured_sparsity=zeros / total if total else 0.0,
                agreement=float(np.mean(p.argmax(1) == source.argmax(1))),
                confidence=float(p.max(axis=1).mean()),
                infomax=float(_entropy(mean) - _entropy(p).mean()),
                labelled_accuracy=_accuracy(probabilities(m, labelled[0]), labelled[1])
                if labelled is not None
                else None,
                test_accuracy=_accuracy(probabilities(m, test[0]), test[1]) if test else None,
            )
        )
        models.append(m)
    chosen = _choose(rule, candidates, agreement, fixed)
    settings = dict(
        score=score,
        scope=scope,
        granularity=granularity,
        keep_classifier=keep_classifier,
        agreement=agreement,
        mode=mode,
        seed=seed,
    )
    report = Report(rule, chosen, amap.count, len(reservoir.items), settings, candidates)
    return models[chosen], report


def write_report(report: Report, directory: str | os.PathLike, model_path: str = "") -> list:
    """report.json, report.md and (with matplotlib installed) sweep.png in `directory`."""
    directory = Path(directory)
    directory.mkdir(parents=True, exist_ok=True)
    data = report.to_dict()
    atomic_write_bytes(directory / "report.json", json.dumps(data, indent=2).encode())
    atomic_write_bytes(directory / "report.md", _markdown(report, model_path).encode())
    written = [directory / "report.json", directory / "report.md"]
    try:
        from .host.plots import plot_sweep
    except ImportError:  # on a board without matplotlib: the tables say it all
        return written
    written.append(plot_sweep(report, directory / "sweep.png"))
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
    lines += ["", "Test accuracy (when given) is reported only; no rule sees it."]
    return "\n".join(lines) + "\n"
