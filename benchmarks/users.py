"""Issue 11's user types: does personalization ever make a user's model worse?

Eight user types, each individual run on ≥ 3 folds or seeds, every method on the same data:
FSDD new speakers (all digits, 5 of 10 digits, 20 recordings) and CIFAR-10 users (class pairs,
3 classes at 70/20/10 %, all 10 classes balanced or long-tailed, 20 images). An individual's
held-out test set follows the class distribution of its adaptation data; accuracy is the argmax
over all 10 classes. Methods: the source; the default pipeline with the source reference and
without it; the prior and the prototype stage alone (with the reference); labelled backprop
fine-tuning (lr 1e-3, from the float32 source). Also the label-free accuracy estimate against
the truth, for every pair a report gives, and the issue's goals.

    python benchmarks/personalization.py users --kind int8|float32 [--quick]
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import numpy as np

if __package__ in (None, ""):
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from benchmarks import common  # noqa: E402
from benchmarks.personalization import (  # noqa: E402
    BACKPROP,
    LABELLED,
    PAIRS,
    Individual,
    cifar_source,
    fsdd_individuals,
)
from edgeprune._io import atomic_write_bytes  # noqa: E402
from edgeprune.model import Model  # noqa: E402
from edgeprune.personalize import personalize  # noqa: E402

TYPES = {
    "fsdd-speaker": "FSDD new speaker, all 10 digits",
    "fsdd-5-digits": "FSDD new speaker saying 5 of the 10 digits",
    "fsdd-20": "FSDD new speaker, 20 unlabeled recordings",
    "cifar-pairs": "CIFAR-10 class pair",
    "cifar-70-20-10": "CIFAR-10, 3 classes at 70/20/10 %",
    "cifar-balanced": "CIFAR-10, all 10 classes, balanced (in-domain)",
    "cifar-long-tailed": "CIFAR-10, all 10 classes, long-tailed (25 % → 2.5 %)",
    "cifar-20": "CIFAR-10, 3 classes, 20 unlabeled images",
}
PIPELINE = "pipeline"
METHODS = {  # name → (use the reference, stages)
    PIPELINE: (True, ("prior", "prototypes", "prune")),
    "pipeline, no reference": (False, ("prior", "prototypes", "prune")),
    "prior alone": (True, ("prior",)),
    "prototypes alone": (True, ("prototypes",)),
}
LONG_TAIL = 0.1 ** (np.arange(10) / 9)  # class shares ∝ 10^(−k/9): 24.5 % … 2.45 %
CIFAR_ADAPT, CIFAR_TEST = 400, 300  # images per CIFAR user drawn by shares (types 5–8)
FEW = 20  # unlabeled samples of the few-sample users
# Sized for ≤ 20 min per kind on 2 cores (measured: ~1 s per FSDD run, ~3 s per CIFAR run, and
# 3–8 s per backprop fine-tuning, which therefore runs on the first fold or seed only).
FULL = dict(speakers=6, folds=5, pairs=8, users=6, seeds=3, backprop_folds=1)
QUICK = dict(speakers=1, folds=1, pairs=1, users=1, seeds=1, backprop_folds=1)


# ----- the individuals --------------------------------------------------------------------------


def fsdd_users(kind: str, plan: dict) -> Iterator[tuple[str, Individual]]:
    """Types 1–3 from the 5-fold split of each speaker's 500 recordings."""
    from benchmarks.fsdd import SPEAKERS

    for ind in fsdd_individuals(kind, SPEAKERS[: plan["speakers"]], plan["folds"]):
        yield "fsdd-speaker", ind
        rng = np.random.default_rng([5, SPEAKERS.index(ind.name), ind.fold])
        digits = np.sort(rng.permutation(10)[:5])
        a, t = np.isin(ind.adapt_y, digits), np.isin(ind.test_y, digits)
        yield (
            "fsdd-5-digits",
            ind._replace(
                adapt=ind.adapt[a],
                adapt_y=ind.adapt_y[a],
                test_x=ind.test_x[t],
                test_y=ind.test_y[t],
            ),
        )
        few = rng.permutation(len(ind.adapt))[:FEW]
        yield "fsdd-20", ind._replace(adapt=ind.adapt[few], adapt_y=ind.adapt_y[few])


def counts(shares: np.ndarray, n: int) -> np.ndarray:
    """n split by shares, rounded by largest remainder (sums to n)."""
    exact = n * shares / shares.sum()
    out = np.floor(exact).astype(int)
    out[np.argsort(exact - out)[::-1][: n - out.sum()]] += 1
    return out


def draw(y: np.ndarray, classes, shares, n_adapt: int, n_test: int, rng) -> tuple:
    """Disjoint adaptation and test indices into `y` with the same class shares; the adaptation
    order is shuffled (a user's data does not arrive sorted by class)."""
    shares = np.asarray(shares, float)
    adapt, test = [], []
    for c, na, nt in zip(classes, counts(shares, n_adapt), counts(shares, n_test)):
        pick = rng.choice(np.flatnonzero(y == c), na + nt, replace=False)
        adapt.append(pick[:na])
        test.append(pick[na:])
    return rng.permutation(np.concatenate(adapt)), np.sort(np.concatenate(test))


def cifar_users(kind: str, plan: dict) -> Iterator[tuple[str, Individual]]:
    """Types 4–8, drawn from the half of the CIFAR-10 test split the reference never saw."""
    from benchmarks import cifar

    source = cifar_source(kind)
    X, y = source.X, source.y

    def individual(name, seed, adapt, test, classes):
        return Individual(
            name,
            seed,
            source.model,
            X[adapt],
            y[adapt],
            X[test],
            y[test],
            tuple(int(c) for c in sorted(classes)),
            source.float_model,
            source.reference,
        )

    for pair in PAIRS[: plan["pairs"]]:
        classes = [cifar.CLASSES.index(c) for c in pair]
        for fold in range(plan["folds"]):
            adapt, test = cifar.pair_split(X, y, classes, fold)
            yield "cifar-pairs", individual("/".join(pair), fold, adapt, test, classes)
    kinds = {  # type → (classes of individual i, their shares, adaptation samples)
        "cifar-70-20-10": (3, (0.7, 0.2, 0.1), CIFAR_ADAPT),
        "cifar-balanced": (10, np.ones(10), CIFAR_ADAPT),
        "cifar-long-tailed": (10, LONG_TAIL, CIFAR_ADAPT),
        "cifar-20": (3, np.ones(3), FEW),
    }
    for t, (utype, (k, shares, n)) in enumerate(kinds.items()):
        for i in range(plan["users"]):
            classes = np.random.default_rng([t, i]).permutation(10)[:k]
            name = ">".join(cifar.CLASSES[c] for c in classes)  # in order of their shares
            if k == 10:
                name = f"user {i}" + (f" ({name[: name.index('>')]} first)" if t == 2 else "")
            for seed in range(plan["seeds"]):
                rng = np.random.default_rng([t, i, seed])
                adapt, test = draw(y, classes, shares, n, CIFAR_TEST, rng)
                yield utype, individual(name, seed, adapt, test, classes)


# ----- running the methods ----------------------------------------------------------------------


def stage_entry(s) -> dict:
    """What the JSON keeps of one StageResult."""
    keep = ("significant", "total_variation", "statistic", "threshold")
    return dict(
        name=s.name,
        applied=bool(s.applied),
        test_accuracy=s.test_accuracy,
        estimated_accuracy=s.estimated_accuracy,
        proposed_test_accuracy=s.proposed_test_accuracy,
        check={k: s.check[k] for k in ("before", "after", "lower", "kept")} if s.check else None,
        reason=s.reason,
        details={k: s.details[k] for k in keep if k in s.details},
    )


def estimator_pairs(report) -> set[tuple[str, float, float]]:
    """(what, estimated, true) accuracy pairs of one report: the source, each stage's proposal,
    each kept stage, and each candidate of the pruning sweep ("sweep")."""
    pairs = set()
    for s in report.stages:
        if s.name == "source" or s.applied:
            if s.estimated_accuracy is not None and s.test_accuracy is not None:
                pairs.add((s.name, s.estimated_accuracy, s.test_accuracy))
        elif s.check and s.check.get("after") is not None and s.proposed_test_accuracy is not None:
            pairs.add((s.name, s.check["after"], s.proposed_test_accuracy))
    for c in report.candidates:
        if c.estimated_accuracy is not None and c.test_accuracy is not None:
            pairs.add(("sweep", c.estimated_accuracy, c.test_accuracy))
    return {(w, float(e), float(t)) for w, e, t in pairs}


def backprop(ind: Individual) -> tuple[float, bool]:
    """Labelled fine-tuning's held-out accuracy, and whether it came from the cache: it is
    cached by its inputs (it starts from the float32 source, so both kinds share it)."""
    key = common.digest(
        common.file_digest(ind.float_model), ind.adapt, ind.adapt_y, ind.test_x, ind.test_y
    )
    path = common.CACHE / f"users-backprop-1e-3-{key}.json"
    if path.exists():
        return json.loads(path.read_text())["accuracy"], True
    accuracy = LABELLED[BACKPROP](ind, ind.float_model)
    atomic_write_bytes(path, json.dumps({"accuracy": accuracy}).encode())
    return accuracy, False


def run(utype: str, ind: Individual, backprop_folds: int) -> dict:
    """Every method on one (individual, fold): accuracies, stage decisions, estimator pairs."""
    started = time.perf_counter()
    row = dict(type=utype, individual=ind.name, fold=ind.fold, adapt=len(ind.adapt))
    row.update(test=len(ind.test_x), accuracy={}, stages={})
    pairs = set()
    for method, (with_reference, stages) in METHODS.items():
        _, report = personalize(
            Model.load(ind.model),
            iter(ind.adapt),
            stages=stages,
            reference=ind.reference if with_reference else None,
            test=(ind.test_x, ind.test_y),
        )
        row["accuracy"].setdefault("source", report.stages[0].test_accuracy)
        row["accuracy"][method] = report.stages[-1].test_accuracy
        row["stages"][method] = [stage_entry(s) for s in report.stages]
        pairs |= estimator_pairs(report)
    if ind.fold < backprop_folds:
        row["accuracy"][BACKPROP], row["backprop_cached"] = backprop(ind)
    row["pairs"] = sorted(pairs)
    row["seconds"] = round(time.perf_counter() - started, 1)
    return row


# ----- tables -----------------------------------------------------------------------------------


def deltas(runs: list[dict], utype: str, method: str) -> dict[str, float]:
    """Each individual's Δ in points against the source: the mean over its folds that ran it."""
    out: dict[str, list[float]] = {}
    for r in runs:
        if r["type"] == utype and method in r["accuracy"]:
            out.setdefault(r["individual"], []).append(
                100 * (r["accuracy"][method] - r["accuracy"]["source"])
            )
    # Rounded: 0.71 − 0.76 is −5.000000000000004 in floats, and "worse by > 1 point" is strict.
    return {name: round(float(np.mean(v)), 6) for name, v in out.items()}


def summary(runs, utype, method) -> dict | None:
    d = deltas(runs, utype, method)
    if not d:
        return None
    values = np.array(list(d.values()))
    return dict(mean=values.mean(), worst=values.min(), worse=int((values < -1).sum()), n=len(d))


def method_table(runs, method: str, types) -> list[str]:
    lines = [
        "| user type | individuals × folds | source accuracy | mean Δ | worst individual Δ | "
        "worse by > 1 pt |",
        "|---|---:|---:|---:|---:|---:|",
    ]
    for utype in types:
        s = summary(runs, utype, method)
        if s is None:
            continue
        mine = [r for r in runs if r["type"] == utype and method in r["accuracy"]]
        source = np.mean([r["accuracy"]["source"] for r in mine])
        lines.append(
            f"| {TYPES[utype]} | {s['n']} × {len(mine) // s['n']} | {source:.3f} | "
            f"{s['mean']:+.1f} | {s['worst']:+.1f} | {s['worse']} of {s['n']} |"
        )
    return lines


def overview(runs, methods, types) -> list[str]:
    lines = [
        "| user type | " + " | ".join(methods) + " |",
        "|---|" + "---:|" * len(methods),
    ]
    for utype in types:
        cells = []
        for m in methods:
            s = summary(runs, utype, m)
            cells.append(
                "—" if s is None else f"{s['mean']:+.1f} ({s['worst']:+.1f}, {s['worse']})"
            )
        lines.append(f"| {TYPES[utype]} | " + " | ".join(cells) + " |")
    return lines


def errors(rows: list[dict], what=None, floor: bool = False) -> np.ndarray:
    """Signed errors (estimated − true) in points of the pairs named `what` (None: all but the
    sweep); with `floor`, instead the mean |error| a perfect estimate of the user's accuracy
    would show from the finite test set alone, √(2/π)·√(t(1 − t)/n) per pair (binomial)."""
    return np.array(
        [
            100 * (np.sqrt(2 / np.pi * t * (1 - t) / r["test"]) if floor else e - t)
            for r in rows
            for w, e, t in r["pairs"]
            if (w != "sweep" if what is None else w == what)
        ]
    )


def estimator_table(runs, types) -> list[str]:
    def cell(v: np.ndarray) -> str:
        return "—" if v.size == 0 else f"{np.mean(np.abs(v)):.1f}"

    lines = [
        "| user type | pairs | MAE | bias | test-set floor | MAE source | MAE prior | "
        "MAE prototypes | MAE prune (kept) | MAE sweep candidates |",
        "|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for utype in (*types, None):
        rows = [r for r in runs if utype is None or r["type"] == utype]
        e = errors(rows)
        if not e.size:
            continue
        label = "**all runs**" if utype is None else TYPES[utype]
        parts = [cell(errors(rows, w)) for w in ("source", "prior", "prototypes", "prune", "sweep")]
        lines.append(
            f"| {label} | {e.size} | {np.mean(np.abs(e)):.1f} | {np.mean(e):+.1f} | "
            f"{np.mean(errors(rows, floor=True)):.1f} | " + " | ".join(parts) + " |"
        )
    return lines


def stage_table(runs, types, method=PIPELINE) -> list[str]:
    """How often each stage was kept, and kept stages that cost / refused ones that would gain."""
    lines = [
        "| user type | prior kept | prototypes kept | prune kept | kept, cost > 1 pt | "
        "refused, would gain > 1 pt |",
        "|---|---:|---:|---:|---:|---:|",
    ]
    for utype in types:
        mine = [r for r in runs if r["type"] == utype]
        kept = {n: 0 for n in METHODS[method][1]}
        cost, missed = [], []
        for r in mine:
            stages = r["stages"][method]
            for before, s in zip(stages, stages[1:]):
                kept[s["name"]] += s["applied"]
                proposed = s["proposed_test_accuracy"]
                if proposed is None or before["test_accuracy"] is None:
                    continue
                gain = 100 * (proposed - before["test_accuracy"])
                if s["applied"] and gain < -1:
                    cost.append(f"{s['name']} {gain:+.0f}")
                if not s["applied"] and gain > 1:
                    missed.append(f"{s['name']} {gain:+.0f}")
        n = len(mine)
        lines.append(
            f"| {TYPES[utype]} | "
            + " | ".join(f"{kept[s]}/{n}" for s in kept)
            + f" | {len(cost)} {_list(cost)} | {len(missed)} {_list(missed)} |"
        )
    return lines


def _list(items: list[str]) -> str:
    return f"({', '.join(items[:6])}{', …' if len(items) > 6 else ''})" if items else ""


def goals(runs, types) -> list[str]:
    """The issue's goals for the default pipeline with the reference, met or not, with figures."""

    def mean(utype, method=PIPELINE):
        s = summary(runs, utype, method)
        return None if s is None else s["mean"]

    out = []
    every = {t: summary(runs, t, PIPELINE) for t in types}
    worst_type = min(every, key=lambda t: every[t]["worst"])
    worse = sum(s["worse"] for s in every.values())
    total = sum(s["n"] for s in every.values())
    out.append(
        f"- No individual worse than the source by > 1 point, across every user type: "
        f"{common.verdict(worse == 0)} — {worse} of {total} individuals are; the worst is "
        f"{every[worst_type]['worst']:+.1f} points ({TYPES[worst_type]})."
    )
    for utype, goal, label in (("fsdd-speaker", 11.0, "FSDD speakers"),):
        if mean(utype) is not None:
            out.append(
                f"- {label} ≥ +{goal:.0f} points: {common.verdict(mean(utype) >= goal)} — "
                f"{mean(utype):+.1f}."
            )
    if mean("cifar-pairs") is not None:
        d = mean("cifar-pairs")
        out.append(f"- CIFAR class pairs ≥ +12 points: {common.verdict(d >= 12)} — {d:+.1f}.")
    if mean("cifar-70-20-10") is not None:
        d, p = mean("cifar-70-20-10"), mean("cifar-70-20-10", "prior alone")
        out.append(
            f"- Strongly imbalanced few-class users at least what the prior stage alone gives: "
            f"{common.verdict(d >= p)} — {d:+.1f} against {p:+.1f} points."
        )
    s = every.get("cifar-balanced")
    if s is not None:
        ok = s["mean"] >= -1 and s["worst"] >= -1
        out.append(
            f"- In-domain users (all 10 classes, balanced) within 1 point of the source "
            f"(mean and every individual ≥ −1): {common.verdict(ok)} — mean {s['mean']:+.1f}, "
            f"worst {s['worst']:+.1f}."
        )
    e = errors(runs)
    if e.size:
        mae = np.mean(np.abs(e))
        out.append(
            f"- Label-free accuracy estimate within 3 points of the truth (MAE over all runs): "
            f"{common.verdict(mae <= 3)} — MAE {mae:.1f} points over {e.size} pairs, "
            f"bias {np.mean(e):+.1f}."
        )
    return out


# ----- the benchmark ----------------------------------------------------------------------------


def _plain(value):
    """JSON-ready: numpy scalars as Python ones, floats to 4 decimals, tuples as lists."""
    if isinstance(value, dict):
        return {k: _plain(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [_plain(v) for v in value]
    if isinstance(value, np.generic):
        value = value.item()
    return round(value, 4) if isinstance(value, float) else value


STAGE_FIELDS = ("name", "applied", "test_accuracy", "estimated_accuracy", "proposed_test_accuracy")
STAGE_FIELDS += ("check", "reason", "details")


def to_json(runs: list[dict], plan: dict) -> str:
    """The per-run JSON, one run per line; each stage a list in the order of `stage_fields`."""
    lines = []
    for r in runs:
        stages = {m: [[s[k] for k in STAGE_FIELDS] for s in v] for m, v in r["stages"].items()}
        lines.append(json.dumps(_plain({**r, "stages": stages}), ensure_ascii=False))
    head = json.dumps({"run_at": common.now(), "plan": plan, "stage_fields": STAGE_FIELDS})[:-1]
    return head + ', "runs": [\n' + ",\n".join(lines) + "\n]}\n"


def core_digest() -> str:
    """A digest of edgeprune/*.py as imported at the start (the tree is shared and edited)."""
    files = sorted((common.REPO / "edgeprune").rglob("*.py"))
    return f"digest of edgeprune/**/*.py {common.file_digest(*files)}"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--kind", choices=("float32", "int8"), default="int8")
    parser.add_argument("--quick", action="store_true", help="1 individual per type, 1 fold")
    parser.add_argument(
        "--only", choices=("fsdd", "cifar"), help="one dataset (for timing; writes no section)"
    )
    args = parser.parse_args(argv)
    plan = QUICK if args.quick else FULL
    started = time.perf_counter()
    info = common.machine()
    info["code measured"] = f"{common.source_state()}; {core_digest()}"
    runs = []
    sources = dict(fsdd=fsdd_users, cifar=cifar_users)
    for dataset, users in sources.items():
        if args.only not in (None, dataset):
            continue
        for utype, ind in users(args.kind, plan):
            runs.append(run(utype, ind, plan["backprop_folds"]))
            r = runs[-1]
            print(
                f"{utype} {ind.name} fold {ind.fold}: source {r['accuracy']['source']:.3f}, "
                f"pipeline {r['accuracy'][PIPELINE]:.3f}, {r['seconds']:.0f} s",
                flush=True,
            )
    took = time.perf_counter() - started
    if args.only:
        print(f"took {took:.0f} s; no section written (--only)")
        return 0
    name = f"personalization_users_{args.kind}{'_quick' if args.quick else ''}"
    body = section(name, runs, plan, took, info)
    common.write_section(name, body)
    atomic_write_bytes(common.BENCHMARKS / f"{name}.json", to_json(runs, plan).encode())
    print(body)
    return 0


def section(name: str, runs: list[dict], plan: dict, took: float, info: dict) -> str:
    types = [t for t in TYPES if any(r["type"] == t for r in runs)]
    methods = ["source", *METHODS, BACKPROP]
    shown = [m for m in methods if m != "source"]
    sizes = {t: next(r for r in runs if r["type"] == t) for t in types}
    tuned = sum(BACKPROP in r["accuracy"] for r in runs)
    cached = sum(r.get("backprop_cached", False) for r in runs)
    lines = [
        f"## {name}: issue 11's user types — does personalization make anyone worse?",
        "",
        f"- Command: `{common.command()}`",
        f"- Run at: {common.now()}; took {took / 60:.1f} min",
        common.machine_markdown(info),
        f"- Individuals: FSDD {plan['speakers']} speakers × {plan['folds']} folds (of the "
        f"5-fold split) per FSDD type; CIFAR-10 {plan['pairs']} class pairs × {plan['folds']} "
        f"folds and {plan['users']} seeded users × {plan['seeds']} seeds per other CIFAR type. "
        f"Backprop fine-tuning runs on the first {plan['backprop_folds']} fold(s)/seed(s) of "
        f"every individual only (its Δ is over those); {cached} of {tuned} of its results came "
        f"from the cache of an earlier run on the same inputs (the float32 source, so int8 and "
        f"float32 runs share them), the rest were computed in this run's time.",
        "- Samples per run (adaptation / held-out): "
        + "; ".join(f"{TYPES[t]} {sizes[t]['adapt']} / {sizes[t]['test']}" for t in types),
        "- Sources and references: FSDD, one source per held-out speaker trained on 90 % of the "
        "other five speakers' recordings, its reference built on the other 10 %; CIFAR-10, one "
        "ResNet-8 trained on the train split, its reference built on a seeded class-stratified "
        "half of the test split, every individual drawn from the other half. 5-digit speakers: "
        "the fold's adaptation and test parts restricted to a seeded 5 digits (new per fold); "
        "20-recording speakers: a seeded 20 of the fold's adaptation part, the fold's test part. "
        "CIFAR users 5–8: seeded classes (and class order) per individual, a fresh seeded draw "
        "per seed; 70/20/10 and long-tailed users are tested on held-out data with the same "
        "shares. Accuracy is the argmax over all 10 classes.",
        "",
        "Mean Δ in points against the source per method (in brackets: the worst individual's Δ, "
        "and how many individuals are worse than the source by > 1 point); an individual's Δ is "
        "the mean over its folds/seeds:",
        "",
        *overview(runs, shown, types),
    ]
    for method in shown:
        lines += ["", f"**{method}**" + (" (labels)" if method == BACKPROP else ""), ""]
        lines += method_table(runs, method, types)
    lines += [
        "",
        "Label-free accuracy estimate against the held-out truth, in points, over every distinct "
        "(estimated, true) pair the reports of the runs with a reference give: the source, each "
        "stage's proposal (kept or refused) and each kept stage; MAE and bias (estimated − true) "
        "over those, and per kind of pair. The pruning sweep's candidates are shown apart (not "
        "in the MAE). The test-set floor is the mean |error| a perfect estimate of each user's "
        "accuracy would still show against a held-out set of this size (binomial sampling):",
        "",
        *estimator_table(runs, types),
        "",
        "What the default pipeline (with the reference) decided, per run: how often each stage was "
        "kept, kept stages whose proposal cost more than 1 point of held-out accuracy, and refused "
        "proposals that would have gained more than 1 point:",
        "",
        *stage_table(runs, types),
        "",
        "Goals of issue 11 (the default pipeline with the reference):",
        "",
        *goals(runs, types),
    ]
    return "\n".join(lines)


if __name__ == "__main__":
    sys.exit(main())
