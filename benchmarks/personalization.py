"""Personalization benchmarks: Fine-Pruning (Eq. 1) and the label-free stages, per individual.

Protocol (docs/DESIGN.md, "Evaluation protocol"): an individual is one FSDD speaker (source model
trained on the other five) or a set of CIFAR-10 classes (source model trained on all ten, argmax
over all ten). Each individual's data is split 5-fold into an unlabeled adaptation part and a
held-out test part; labels are used only to score, except by the methods marked "labels".
Results: per method, mean ± std over individuals (each the mean of its folds), the change
against the source model, and a paired t-test over all (individual, fold) pairs.

    python benchmarks/personalization.py fsdd|cifar|cifar-classes [--kind float32|int8]
    python benchmarks/personalization.py all --quick   # every dataset, 2 individuals × 1 fold
    python benchmarks/personalization.py users --kind int8   # issue 11 (benchmarks/users.py)

Every individual is personalized with its source's reference (`edgeprune.reference`), built from
labelled validation data the source never trained on: for FSDD the held-out share of the training
speakers' recordings (`fsdd.source_split`), for CIFAR-10 a seeded class-stratified half of the test
split (`cifar_halves`); CIFAR individuals are drawn only from the other half.
"""

from __future__ import annotations

import argparse
import io
import json
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import NamedTuple

import numpy as np

if __package__ in (None, ""):
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from benchmarks import common  # noqa: E402
from edgeprune import reference as refmod  # noqa: E402
from edgeprune._io import atomic_write_bytes  # noqa: E402
from edgeprune.model import Model  # noqa: E402
from edgeprune.personalize import personalize, probabilities  # noqa: E402

SWEEP = (0.0, 0.1, 0.2, 0.3, 0.4, 0.5, 0.6, 0.65, 0.7, 0.8, 0.9, 0.95)
PAIRS = (
    ("cat", "dog"),
    ("automobile", "truck"),
    ("deer", "horse"),
    ("bird", "airplane"),
    ("ship", "airplane"),
    ("dog", "horse"),
    ("frog", "cat"),
    ("bird", "frog"),
)


class Individual(NamedTuple):
    name: str
    fold: int
    model: Path
    adapt: np.ndarray
    adapt_y: np.ndarray  # used only by the labelled baselines
    test_x: np.ndarray
    test_y: np.ndarray
    classes: tuple[int, ...]  # the classes this individual has (all ten for a speaker)
    float_model: Path  # the float32 source, where the labelled baselines start
    reference: refmod.Reference | None = None  # the source's reference (label-free checks)


def folds(n: int, k: int, seed: int) -> Iterator[tuple[int, np.ndarray, np.ndarray]]:
    """k deterministic (fold, adaptation indices, test indices) splits of range(n)."""
    order = np.random.default_rng(seed).permutation(n)
    for fold, test in enumerate(np.array_split(order, k)):
        yield fold, np.setdiff1d(order, test), np.sort(test)


def fsdd_individuals(kind: str, speakers, n_folds: int) -> Iterator[Individual]:
    from benchmarks import fsdd

    X, digits, names, _ = fsdd.load_fsdd()
    names = np.asarray(names)
    for speaker in speakers:
        source = fsdd.train_source(speaker, X, digits, list(names))
        model = source.int8 if kind == "int8" else source.float32
        _, validation = fsdd.source_split(names, speaker)
        reference = refmod.build(Model.load(model), iter(X[validation]), digits[validation])
        Xs, ys = X[names == speaker], digits[names == speaker]
        for fold, adapt, test in folds(len(Xs), 5, seed=0):
            if fold >= n_folds:
                break
            yield Individual(
                speaker,
                fold,
                model,
                Xs[adapt],
                ys[adapt],
                Xs[test],
                ys[test],
                tuple(range(10)),
                source.float32,
                reference,
            )


def cifar_halves(y: np.ndarray, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """A seeded class-stratified half of the CIFAR-10 test split for the source reference, and
    the other half, the only images individuals are drawn from: sorted (reference, users)."""
    reference, users = [], []
    for c in np.unique(y):
        members = np.random.default_rng([seed, 1000 + int(c)]).permutation(np.flatnonzero(y == c))
        reference.append(members[: len(members) // 2])
        users.append(members[len(members) // 2 :])
    return np.sort(np.concatenate(reference)), np.sort(np.concatenate(users))


class CifarSource(NamedTuple):
    model: Path
    float_model: Path
    reference: refmod.Reference
    X: np.ndarray  # the users' half of the test split
    y: np.ndarray


def cifar_source(kind: str) -> CifarSource:
    """The CIFAR-10 source, its reference (built on one half of the test split) and the other
    half, from which every individual is drawn."""
    from benchmarks import cifar

    source = cifar.train_source()
    model = Path(source["int8"] if kind == "int8" else source["float32"])
    X, y = cifar.load_cifar(None, "test")
    held, users = cifar_halves(y)
    reference = refmod.build(Model.load(model), iter(X[held]), y[held])
    return CifarSource(model, Path(source["float32"]), reference, X[users], y[users])


def cifar_individuals(kind: str, pairs, n_folds: int) -> Iterator[Individual]:
    from benchmarks import cifar

    source = cifar_source(kind)
    X, y = source.X, source.y
    for pair in pairs:
        classes = tuple(cifar.CLASSES.index(c) for c in pair)
        for fold in range(n_folds):
            adapt, test = cifar.pair_split(X, y, classes, fold)
            yield Individual(
                "/".join(pair),
                fold,
                source.model,
                X[adapt],
                y[adapt],
                X[test],
                y[test],
                classes,
                source.float_model,
                source.reference,
            )


# name → personalize() settings. "labels" methods see labels; the others never do.
CLASS_COUNTS = (2, 3, 5, 7, 9)  # Fig. 3c analogue: classes per individual


def cifar_class_sets(counts=CLASS_COUNTS, seed: int = 0) -> list[tuple[str, ...]]:
    """One seeded random set of k CIFAR classes per k."""
    from benchmarks import cifar

    rng = np.random.default_rng(seed)
    return [tuple(cifar.CLASSES[i] for i in sorted(rng.permutation(10)[:k])) for k in counts]


FIXED = dict(stages=("prune",), rule="fixed")
ORACLE = "Eq.1, best sparsity by test labels (paper protocol)"
PIPELINE = "pipeline defaults (fidelity + prior + prototypes)"
SPARSE_PIPELINE = "Eq.1 50%, one global threshold, + prior + prototypes"
METHODS: dict[str, dict] = {
    "source": dict(stages=()),
    ORACLE: dict(stages=("prune",), rule="labels", sparsities=SWEEP, oracle=True),
    "Eq.1, rule fidelity": dict(stages=("prune",), rule="fidelity"),
    "Eq.1, rule infomax": dict(stages=("prune",), rule="infomax"),
    "Eq.1 at 30%": dict(FIXED, fixed=0.3),
    "Eq.1 at 50%": dict(FIXED, fixed=0.5),
    "Eq.1 at 50%, one global threshold": dict(FIXED, fixed=0.5, scope="global"),
    "Eq.1 at 50%, global on layer-normalized scores": dict(
        FIXED, fixed=0.5, scope="global_normalized"
    ),
    "Eq.1 at 50%, classifier pruned too": dict(FIXED, fixed=0.5, keep_classifier=False),
    "Eq.1 at 50%, whole channels": dict(FIXED, fixed=0.5, granularity="channel"),
    "magnitude at 50% (data-free)": dict(FIXED, fixed=0.5, score="magnitude"),
    "random at 50%": dict(FIXED, fixed=0.5, score="random"),
    "prior": dict(stages=("prior",)),
    "prototypes": dict(stages=("prototypes",)),
    "prior + prototypes": dict(stages=("prior", "prototypes")),
    "Eq.1 50% + prior + prototypes": dict(rule="fixed", fixed=0.5),
    SPARSE_PIPELINE: dict(rule="fixed", fixed=0.5, scope="global"),
    PIPELINE: dict(),
}
# Labelled baselines: they train on the adaptation data with its labels (benchmarks/baselines.py).
BACKPROP = "backprop fine-tuning, lr 1e-3 (labels)"
LABELLED = {
    "backprop fine-tuning, lr 1e-2 (labels)": lambda ind, src: _baseline(
        "finetune", ind, src, lr=1e-2
    ),
    BACKPROP: lambda ind, src: _baseline("finetune", ind, src, lr=1e-3),
    "SVD adaptation of the dense layers (labels)": lambda ind, src: _baseline("svd", ind, src),
}
FRACTIONS = (0.1, 0.25, 0.5, 1.0)  # Fig. 3b analogue: share of the adaptation data used
DATA_METHODS = (PIPELINE, "prototypes")


def _baseline(name: str, ind, float_model: Path, **kwargs) -> float:
    from benchmarks import baselines

    fn = getattr(baselines, name)
    return fn(float_model, (ind.adapt, ind.adapt_y), (ind.test_x, ind.test_y), **kwargs)


CLASS_METHODS = (  # the Fig. 3c run: the stages against the source and the paper's protocol
    "source",
    ORACLE,
    "prior",
    "prototypes",
    "prior + prototypes",
    PIPELINE,
)

SWEEPS = {  # Fig. 3a analogue: test accuracy along the sweep
    "Eq.1, per layer": dict(score="fine"),
    "Eq.1, global on layer-normalized scores": dict(score="fine", scope="global_normalized"),
    "magnitude, per layer": dict(score="magnitude"),
    "random, per layer": dict(score="random"),
}


def run(ind: Individual, settings: dict) -> tuple[float, float, object]:
    """Held-out accuracy of one method on one individual (argmax over all classes, and over the
    individual's own classes only), and its report."""
    settings = dict(settings)
    settings.setdefault("reference", ind.reference)
    test = (ind.test_x, ind.test_y)
    if settings.pop("oracle", False):
        settings["labelled"] = test
    model, report = personalize(Model.load(ind.model), iter(ind.adapt), test=test, **settings)
    accuracy = report.stages[-1].test_accuracy
    if len(ind.classes) == 10:
        return accuracy, accuracy, report
    own = np.array(ind.classes)
    p = probabilities(model, ind.test_x)[:, own]
    return accuracy, float(np.mean(own[p.argmax(axis=1)] == ind.test_y)), report


def paired_t(a: np.ndarray, b: np.ndarray) -> float:
    """Two-sided p-value of a paired t-test (scipy)."""
    from scipy import stats

    if np.allclose(a, b):
        return 1.0
    return float(stats.ttest_rel(a, b).pvalue)


def evaluate(individuals: list[Individual], methods: dict, sweeps: dict, progress=print):
    """accuracy[method] = [(individual, fold, accuracy)] (argmax over all classes, and over the
    individual's own), the sweep curves, Fig. 3b rows and what the stages decided."""
    names = list(methods) + list(LABELLED)
    scores: dict[str, list[tuple[str, int, float]]] = {m: [] for m in names}
    restricted: dict[str, list[tuple[str, int, float]]] = {m: [] for m in methods}
    curves: dict[str, list[list[float]]] = {s: [] for s in sweeps}
    data: dict[str, list[list[float]]] = {}
    extras: dict[str, list] = {
        "prior_applied": [],
        "prior_tv": [],
        "chosen_fidelity": [],
        "argmax_as_float": [],
        "float_gap": [],  # |accuracy of the int8 rewrite − of its float computation|
    }
    for ind in individuals:
        started = time.perf_counter()
        for method, settings in methods.items():
            accuracy, own, report = run(ind, settings)
            scores[method].append((ind.name, ind.fold, accuracy))
            restricted[method].append((ind.name, ind.fold, own))
            if method == "prior":
                extras["prior_applied"].append(report.stages[-1].applied)
                extras["prior_tv"].append(report.stages[-1].details.get("total_variation"))
            if method == "Eq.1, rule fidelity":
                extras["chosen_fidelity"].append(report.best.sparsity)
            final = report.stages[-1]
            if final.name == "prototypes" and "argmax_as_float" in final.details:
                extras["argmax_as_float"].append(final.details["argmax_as_float"])
                float_accuracy = final.details["float_test_accuracy"]
                extras["float_gap"].append(abs(final.test_accuracy - float_accuracy))
        for label, sweep in sweeps.items():
            settings = dict(stages=("prune",), rule="labels", sparsities=SWEEP, oracle=True)
            _, _, report = run(ind, {**settings, **sweep})
            curves[label].append([c.test_accuracy for c in report.candidates])
        for method, fn in LABELLED.items():
            scores[method].append((ind.name, ind.fold, fn(ind, ind.float_model)))
        if ind.fold == 0 and sweeps:
            for label, row in data_efficiency(ind).items():
                data.setdefault(label, []).append(row)
        progress(f"{ind.name} fold {ind.fold}: {time.perf_counter() - started:.0f} s")
    return scores, restricted, curves, data, extras


def data_efficiency(ind: Individual) -> dict[str, list[float]]:
    """Held-out accuracy with a random 10–100 % of the adaptation data (Fig. 3b analogue)."""
    rows: dict[str, list[float]] = {}
    order = np.random.default_rng(0).permutation(len(ind.adapt))  # the data is sorted by class
    for fraction in FRACTIONS:
        keep = np.sort(order[: max(1, round(fraction * len(ind.adapt)))])
        part = ind._replace(adapt=ind.adapt[keep], adapt_y=ind.adapt_y[keep])
        for method in DATA_METHODS:
            rows.setdefault(method, []).append(run(part, METHODS[method])[0])
        rows.setdefault(BACKPROP, []).append(LABELLED[BACKPROP](part, ind.float_model))
    return rows


def table(scores) -> str:
    source = np.array([a for _, _, a in scores["source"]])
    names = sorted(
        {n for n, _, _ in scores["source"]}, key=[n for n, _, _ in scores["source"]].index
    )
    head = "| method | " + " | ".join(names) + " | mean ± std | Δ vs source | p (paired t) |"
    lines = [head, "|---|" + "---:|" * (len(names) + 3)]
    for method, rows in scores.items():
        acc = np.array([a for _, _, a in rows])
        per = [np.mean([a for n, _, a in rows if n == name]) for name in names]
        delta = 100 * (acc.mean() - source.mean())
        p = paired_t(acc, source) if method != "source" else float("nan")
        cells = " | ".join(f"{v:.3f}" for v in per)
        lines.append(
            f"| {method} | {cells} | {np.mean(per):.3f} ± {np.std(per):.3f} | "
            f"{delta:+.1f} pts | {'—' if method == 'source' else f'{p:.3g}'} |"
        )
    return "\n".join(lines)


BASELINES = {  # the columns of the pairwise table, with their short headers
    "source": "source",
    "magnitude at 50% (data-free)": "magnitude 50%",
    "random at 50%": "random 50%",
    "backprop fine-tuning, lr 1e-2 (labels)": "backprop 1e-2 (labels)",
    BACKPROP: "backprop 1e-3 (labels)",
    "SVD adaptation of the dense layers (labels)": "SVD (labels)",
}
COMPARED = (  # its rows: the label-free methods that matter
    ORACLE,
    "Eq.1, rule fidelity",
    "Eq.1 at 50%",
    "prior",
    "prototypes",
    SPARSE_PIPELINE,
    PIPELINE,
)


def pairwise(scores) -> str:
    """Δ in points and paired-t p of each label-free method against each baseline."""
    columns = [b for b in BASELINES if b in scores]
    lines = [
        "| method | " + " | ".join(f"vs {BASELINES[b]}" for b in columns) + " |",
        "|---|" + "---:|" * len(columns),
    ]
    for method in (m for m in COMPARED if m in scores):
        acc = np.array([a for _, _, a in scores[method]])
        cells = []
        for baseline in columns:
            other = np.array([a for _, _, a in scores[baseline]])
            delta = 100 * (acc.mean() - other.mean())
            cells.append(f"{delta:+.1f} (p {paired_t(acc, other):.2g})")
        lines.append(f"| {method} | " + " | ".join(cells) + " |")
    return "\n".join(lines)


GOALS = {"fsdd": 10.0, "cifar": 15.0}  # issue 4: points over the source, zero labels


def _delta(scores, method: str) -> tuple[float, float, float]:
    """(mean Δ in points vs source, paired-t p, worst individual's Δ) of one method."""
    source = np.array([a for _, _, a in scores["source"]])
    acc = np.array([a for _, _, a in scores[method]])
    names = [n for n, _, _ in scores["source"]]
    worst = min(
        np.mean([a for (n, _, a) in scores[method] if n == name])
        - np.mean([a for (n, _, a) in scores["source"] if n == name])
        for name in set(names)
    )
    return 100 * (acc.mean() - source.mean()), paired_t(acc, source), 100 * worst


def findings(dataset: str, scores, restricted) -> list[str]:
    """What the tables say, in sentences computed from them (rerunning rewrites them)."""

    def said(method, table=scores):
        if method not in table:
            return None
        d, p, worst = _delta(table, method)
        return f"{d:+.1f} points (p = {p:.2g}; worst individual {worst:+.1f})"

    out = ["Findings (computed from the tables above):", ""]
    oracle = ORACLE
    out.append(
        f"- Eq. 1 with the sparsity picked by test labels (the paper's protocol): {said(oracle)}."
    )
    if "Eq.1, rule fidelity" in scores:
        out.append(f"- Eq. 1 with the label-free rule fidelity: {said('Eq.1, rule fidelity')}.")
    if "Eq.1 at 50%" in scores:
        eq1, mag = (
            _delta(scores, "Eq.1 at 50%")[0],
            _delta(scores, "magnitude at 50% (data-free)")[0],
        )
        verdict = "as well as or better than" if mag >= eq1 else "worse than"
        out.append(
            f"- At 50 % sparsity Eq. 1 gives {said('Eq.1 at 50%')}; data-free magnitude pruning "
            f"does {verdict} Eq. 1 ({mag:+.1f} vs {eq1:+.1f} points)."
        )
    if restricted and dataset != "fsdd":
        gone = _delta(restricted, oracle)[0] <= 0 < _delta(scores, oracle)[0]
        reading = (
            ": what Eq. 1 gains over ten classes is the model ceasing to predict absent "
            "classes, a class-prior effect"
            if gone
            else ""
        )
        out.append(
            f"- With the argmax restricted to the individual's own classes, the paper-protocol "
            f"gain becomes {said(oracle, restricted)}{reading}."
        )
    for method in (
        "prior",
        "prototypes",
        "prior + prototypes",
        "Eq.1 50% + prior + prototypes",
        SPARSE_PIPELINE,
    ):
        if method in scores:
            out.append(f"- {method}: {said(method)}.")
    d, _, worst = _delta(scores, PIPELINE)
    goal = GOALS.get(dataset)
    target = (
        ""
        if goal is None
        else (
            f" Goal ≥ +{goal:.0f} points with no individual below the source by more than 1 point: "
            f"{common.verdict(d >= goal and worst >= -1.0)}."
        )
    )
    out.append(f"- The default pipeline (zero labels, no gradients): {said(PIPELINE)}.{target}")
    if SPARSE_PIPELINE in scores:
        sparse = _delta(scores, SPARSE_PIPELINE)[0]
        out.append(
            f"- With 50 % of the weights pruned (one global threshold) the stages give "
            f"{sparse:+.1f} points, against {d:+.1f} for the default pipeline. Goal: the same "
            f"gains within 2 points: {common.verdict(sparse >= d - 2.0)}."
        )
    for method in LABELLED:
        if method in scores:
            out.append(f"- {method}: {said(method)}.")
    return out


def plot(curves, xs, path: Path, title: str, xlabel: str) -> None:
    """Mean ± std over individuals of each curve, one line per method."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(6.4, 4.0), dpi=110)
    for label, rows in curves.items():
        mean, std = np.mean(rows, axis=0), np.std(rows, axis=0)
        ax.plot(xs, mean, "o-", label=label)
        ax.fill_between(xs, mean - std, mean + std, alpha=0.15)
    ax.set_xlabel(xlabel)
    ax.set_ylabel("held-out accuracy")
    ax.set_title(title, fontsize=10)
    ax.legend(fontsize=7)
    fig.tight_layout()
    buffer = io.BytesIO()
    fig.savefig(buffer, format="png")
    plt.close(fig)
    atomic_write_bytes(path, buffer.getvalue())


def data_table(data: dict[str, list[list[float]]]) -> list[str]:
    """Fig. 3b rows as a Markdown table: mean accuracy per share of the adaptation data."""
    lines = [
        "| method | " + " | ".join(f"{f:.0%}" for f in FRACTIONS) + " |",
        "|---|" + "---:|" * len(FRACTIONS),
    ]
    for label, rows in data.items():
        lines.append(f"| {label} | " + " | ".join(f"{v:.3f}" for v in np.mean(rows, axis=0)) + " |")
    return lines


DATASETS = ("fsdd", "cifar", "cifar-classes")
QUICK_BUDGET = 15 * 60  # seconds: the whole --quick set on 2 cores


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    if argv[:1] == ["users"]:  # issue 11's user types: their own module
        from benchmarks import users

        return users.main(argv[1:])
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("dataset", choices=(*DATASETS, "all", "users"))
    parser.add_argument("--kind", choices=("float32", "int8"), default="float32")
    parser.add_argument("--folds", type=int, default=5, help="folds run per individual (of 5)")
    parser.add_argument(
        "--quick", action="store_true", help="2 individuals × 1 fold, in sections of their own"
    )
    args = parser.parse_args(argv)
    started = time.perf_counter()
    info = common.machine()
    for dataset in DATASETS if args.dataset == "all" else (args.dataset,):
        benchmark(dataset, args.kind, 1 if args.quick else args.folds, args.quick, info)
    if args.quick and args.dataset == "all":
        took = time.perf_counter() - started
        body = (
            f"## personalization_quick: the whole --quick set\n\n"
            f"- Command: `{common.command()}`\n- Run at: {common.now()}\n"
            f"{common.machine_markdown(info)}\n"
            f"- Took {took / 60:.1f} min (target under {QUICK_BUDGET // 60} min on 2 cores: "
            f"{common.verdict(took < QUICK_BUDGET)})"
        )
        common.write_section("personalization_quick", body)
        print(body)
    return 0


def benchmark(dataset: str, kind: str, n_folds: int, quick: bool, info: dict) -> None:
    """One dataset's experiments, written to its section of RESULTS.md with its plots."""
    started = time.perf_counter()
    methods, sweeps = METHODS, SWEEPS
    if dataset == "fsdd":
        from benchmarks.fsdd import SPEAKERS

        chosen = [(s,) for s in (SPEAKERS[:2] if quick else SPEAKERS)]
        individuals = list(fsdd_individuals(kind, [c[0] for c in chosen], n_folds))
    else:
        if dataset == "cifar":
            chosen = PAIRS[:2] if quick else PAIRS
        else:
            chosen = cifar_class_sets(CLASS_COUNTS[:2] if quick else CLASS_COUNTS)
            methods, sweeps = {m: METHODS[m] for m in CLASS_METHODS}, {}
        individuals = list(cifar_individuals(kind, chosen, n_folds))
    scores, restricted, curves, data, extras = evaluate(individuals, methods, sweeps=sweeps)
    name = f"personalization_{dataset}_{kind}{'_quick' if quick else ''}".replace("-", "_")
    tvs = [v for v in extras["prior_tv"] if v is not None]
    tv = f"{min(tvs):.2f}–{max(tvs):.2f}" if tvs else "—"
    lines = [
        f"## {name}: held-out accuracy per method",
        "",
        f"- Command: `{common.command()}`",
        f"- Run at: {common.now()}; took {time.perf_counter() - started:.0f} s",
        common.machine_markdown(info),
        f"- Individuals: {len(chosen)} × {n_folds} fold(s); adaptation samples per fold: "
        f"{len(individuals[0].adapt)}, held-out: {len(individuals[0].test_x)}",
        f"- Prior stage applied in {sum(extras['prior_applied'])} of "
        f"{len(extras['prior_applied'])} folds (estimated shift, total variation: {tv}; proposed "
        f"when its likelihood-ratio test says the prior moved, kept when the label-free check "
        f"agrees); rule fidelity chose sparsities {sorted(set(extras['chosen_fidelity']))}",
    ]
    if extras["argmax_as_float"]:
        agree = extras["argmax_as_float"]
        lines.append(
            f"- int8 final layer rewritten by the prototype stage: its argmax equals the float "
            f"computation of that layer on {min(agree):.1%} (worst fold) to {max(agree):.1%} of "
            f"the held-out samples, over {len(agree)} runs, and on {np.mean(agree):.2%} of all "
            f"of them pooled (target 99.5 %: worst fold {common.verdict(min(agree) >= 0.995)}, "
            f"pooled {common.verdict(np.mean(agree) >= 0.995)}; where they differ, the int8 "
            f"steps cannot order logits closer than one step). Its held-out accuracy differs "
            f"from the float computation's by {100 * np.mean(extras['float_gap']):.2f} points "
            f"on average and at most {100 * max(extras['float_gap']):.1f} (one sample of a fold)"
        )
    lines += [
        "",
        "Accuracy with the argmax over all ten classes:",
        "",
        table(scores),
        "",
        "Each label-free method against every baseline: Δ in points (paired t-test p over all "
        "individual × fold pairs):",
        "",
        pairwise(scores),
    ]
    if dataset != "fsdd":
        lines += ["", "The same, argmax restricted to the individual's own classes:", ""]
        lines += [table(restricted)]
    lines += [""] + findings(dataset, scores, restricted)
    title = f"{dataset} ({kind})"
    if curves:
        sweep_png = common.BENCHMARKS / f"{name}_sweep.png"
        plot(curves, SWEEP, sweep_png, f"{title}: accuracy vs sparsity", "sparsity (per layer)")
        lines += ["", f"![sweep]({sweep_png.name}) — Fig. 3a analogue: mean ± std over folds."]
    if data:
        data_png = common.BENCHMARKS / f"{name}_data.png"
        plot(
            data,
            FRACTIONS,
            data_png,
            f"{title}: accuracy vs adaptation data (fold 0)",
            "share of the adaptation data used (random subset)",
        )
        lines += [
            "",
            "Fig. 3b analogue: held-out accuracy with a seeded random share of the adaptation "
            "data, fold 0 of every individual:",
            "",
            *data_table(data),
            "",
            f"![data]({data_png.name}) — mean ± std over individuals.",
        ]
    body = "\n".join(lines)
    common.write_section(name, body)
    raw = dict(scores=scores, restricted=restricted, curves=curves, data=data, extras=extras)
    raw["run_at"] = common.now()
    text = json.dumps(raw, indent=1, default=lambda v: v.item())  # numpy scalars
    atomic_write_bytes(common.BENCHMARKS / f"{name}.json", text.encode())
    print(body)


if __name__ == "__main__":
    sys.exit(main())
