"""Thinning benchmark (issue 15): channel groups removed from the graph, repaired without labels.

For each model and share of the free channel groups removed (25 %, 50 %; the final layer's inputs
are kept), the table gives the groups removed with each allocation — "uniform" (the default: the
same share of every layer's groups) and "global" (`--allocation global`: how many groups each
layer loses is chosen for the whole model by greedy removal of the group adding the least refit
error as a share of each consumer's output variance, the costs updated after each removal) —;
for the uniform L1 groups and for the global refit-error ones (2 passes), the latency of the
thinned model over the dense one (interleaved rounds, one thread, same interpreter), the file
size and MAC ratios (and peak memory for uniform); and held-out accuracy for: the dense source;
magnitude-L1 channel pruning (`prune --granularity channel --score magnitude`, zeroed not
removed); the uniform L1 groups masked only; thinned (`edgeprune thin`); thinned + repair (least
squares on the user's unlabeled samples, `--data`); the groups chosen by their refit error
instead of L1 (`--score reconstruction`: ‖W_c‖² · Var(x_c | other channels), ThiNet's criterion
from the same moments), uniform and global, 1 pass and 2 passes (a second pass through the dense
and the refit thinned model refits each layer to the inputs it really receives, then a third
through both refits the classifier, which kept its inputs, to the features the repaired model
gives it, shrunk towards leaving it as it is by a λ chosen on held-out samples; the default);
the uniform 2-pass model + the personalization stages (prior, prototypes, prune, each kept only
if the label-free check passes; judged with a reference built for the thinned model on the
source's validation data, as `edgeprune reference` would on the laptop: the source's own does not
describe the thinned model's features, and `personalize` refuses it); what a user gets from
`personalize --shrink` on the source with its reference (thin + repair kept only if the check
passes, then the stages): whether the thinned model was kept, and its accuracy; the global
allocation at the uniform one's MACs (the smallest share, in steps of 2.5 points, whose MACs are no
more: the two compared at equal MACs, since for the same share of channels global removes fewer
MACs on CIFAR); and the MACs allocation (`--allocation macs`: down to the uniform allocation's
MACs, each time the group with the least refit error per MAC saved; its groups removed, MACs,
accuracy); and `thin --settle` (refit-error groups, uniform and global: one depth level settled
per pass, each layer refit to the inputs it finally gets, settled 3×3 convs over whole input
windows; a pass per level). "thin + repair s" times each refit-error fit (the data passes,
selection, refit, rewrite).
Repair runs with one BLAS thread; on a loaded machine wall time says little, CPU time is the figure
to read.

Data: FSDD — the source trained without the held-out speaker; repair and stages use half of the
speaker's recordings (unlabeled), accuracy the other half. CIFAR-10 ResNet-8 — half of the test
split (class-stratified, seeded) for repair and stages, the other half for accuracy; the source
reference from the source speakers' validation recordings / a quarter of the test split kept out
of both. MobileNetV2 (Keras, 224×224, α 1.0, untrained weights: no data set is downloaded) gives
latency, size, MACs and the time of thin + repair on 32 random inputs; its accuracy is not
measured.

    python benchmarks/thin.py                 # FSDD + MobileNetV2 (+ CIFAR if its model is cached)
    python benchmarks/thin.py --quick         # fewer rounds, one FSDD speaker
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import numpy as np

if __package__ in (None, ""):  # `python benchmarks/thin.py`: make `benchmarks` importable
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from benchmarks import common  # noqa: E402
from edgeprune import prune as prune_mod  # noqa: E402
from edgeprune import reference as refmod  # noqa: E402
from edgeprune.channels import analyze, mask, select  # noqa: E402
from edgeprune.classifier import Classifier  # noqa: E402
from edgeprune.model import Model  # noqa: E402
from edgeprune.personalize import personalize  # noqa: E402
from edgeprune.profile import profile  # noqa: E402
from edgeprune.runtime import Runner, load_interpreter  # noqa: E402
from edgeprune.thin import shrink, thin  # noqa: E402

AMOUNTS = (0.25, 0.5)
SECTION = "thin"
SETTLE = "settle"  # the repair of `thin --settle`, in place of a number of passes
FITS = (("uniform", 1), ("uniform", 2), ("global", 1), ("global", 2), ("macs", 2),
        ("uniform", SETTLE), ("global", SETTLE))  # fmt: skip


def hits(model: Model, X: np.ndarray, y: np.ndarray) -> list[int]:
    """1 for each sample `model` classifies right, else 0."""
    runner = Runner(model, num_threads=1)
    out = model.main.outputs[0]
    return [int(runner.run(x)[out].reshape(-1).argmax() == t) for x, t in zip(X, y)]


def accuracy(model: Model, X: np.ndarray, y: np.ndarray) -> float:
    return float(np.mean(hits(model, X, y)))


def seconds_per_invoke(model: Model, sample: np.ndarray, invokes: int):
    """A callable timing `invokes` invocations of `model` (one thread), seconds per invoke
    (`invokes` is raised so that one call lasts at least 0.2 s)."""
    interpreter, _ = load_interpreter(model.to_bytes(), "benchmark", num_threads=1)
    t = model.tensor(model.main.inputs[0])
    x = np.asarray(sample, np.float32).reshape(t.shape)
    if t.quantization is not None and t.dtype.kind in "iu":
        info = np.iinfo(t.dtype)
        x = t.quantization.quantize(x, t.dtype, info.min, info.max)
    interpreter.set_tensor(t.index, x.astype(t.dtype))
    start = time.perf_counter()
    interpreter.invoke()
    invokes = max(invokes, int(0.2 / max(time.perf_counter() - start, 1e-6)))

    def run() -> float:
        start = time.perf_counter()
        for _ in range(invokes):
            interpreter.invoke()
        return (time.perf_counter() - start) / invokes

    return run


def latency_ratios(variants: dict[str, Model], sample, invokes: int, rounds: int):
    timed = {k: seconds_per_invoke(m, sample, invokes) for k, m in variants.items()}
    result = common.interleave(timed, rounds, progress=lambda s: None)
    picked = result.picked()
    dense = picked["dense"]
    return (
        {k: common.median(common.paired_ratios(v, dense)) for k, v in picked.items()},
        common.median(dense),
        result,
    )


def timed_shrink(model: Model, amount: float, samples, protect, passes, allocation: str):
    """thin + repair (refit-error groups; `passes` 1, 2 or "settle": `--settle`) and its (wall,
    CPU) seconds."""
    wall, cpu = time.perf_counter(), time.process_time()
    settle = passes == SETTLE
    result = shrink(model, amount, "reconstruction", samples=samples, protect=protect,
                    passes=2 if settle else passes, allocation=allocation,
                    settle=settle)  # fmt: skip
    return result, (time.perf_counter() - wall, time.process_time() - cpu)


def equal_macs(model: Model, amount: float, macs: float, adapt, protect, test_x, test_y):
    """(share of groups, MAC ratio, accuracy) of the global allocation (refit-error groups, 2
    passes) at the smallest share, in steps of 2.5 points from `amount`, whose MACs are no more
    than `macs` (the uniform allocation's): the two compared at equal MACs, not only at equal
    channels (the global one removes fewer MACs for the same share of channels)."""
    dense = totals(model)["macs"]
    share = amount
    while True:
        result = shrink(model, share, "reconstruction", samples=adapt, protect=protect,
                        allocation="global")  # fmt: skip
        ratio = totals(result.model)["macs"] / dense
        if ratio <= macs + 1e-9 or share >= 0.9:
            return share, ratio, accuracy(result.model, test_x, test_y)
        share = round(share + 0.025, 3)


def totals(model: Model) -> dict:
    p = profile(model)
    return {
        "macs": p["totals"]["macs"],
        "bytes": model.nbytes,
        "peak": p["memory"]["peak_live_bytes"],
    }


def evaluate(name, model, adapt, test_x, test_y, validation, amounts, rounds, invokes):
    """Rows of the table for one source model; `validation` (x, y): the labelled data its
    reference is built on (None: no accuracy)."""
    rows = []
    dense_hits = hits(model, test_x, test_y) if test_x is not None else None
    dense_acc = float(np.mean(dense_hits)) if test_x is not None else None
    protect = [Classifier.of(model).layer.op] if test_x is not None else []
    source_ref = refmod.build(model, iter(validation[0]), validation[1]) if validation else None
    for amount in amounts:
        graph, groups = analyze(model)
        for g in groups:
            if any(x.op in protect for x, _ in g.consumers) and not g.frozen:
                g.frozen = "classifier input"
        chosen = select(graph, groups, amount)
        thinned = thin(model, graph, chosen).model
        repaired_l1 = shrink(model, amount, samples=adapt, protect=protect)
        fits, seconds = {}, {}
        for key in FITS:
            allocation, passes = key
            fits[key], seconds[key] = timed_shrink(model, amount, adapt, protect, passes,
                                                   allocation)  # fmt: skip
        repaired, spread = fits["uniform", 2], fits["global", 2]
        layers = tuple(graph.layers.values())
        l1 = prune_mod.apply(
            model,
            prune_mod.masks(model, layers, None, amount, score="magnitude",
                            granularity="channel", keep_classifier=True),
        )  # fmt: skip
        ratios, dense_s, timing = latency_ratios(
            {"dense": model, "thinned": thinned, "l1": l1, "global": spread.model},
            adapt[0],
            invokes,
            rounds,
        )
        before, after, wide = totals(model), totals(thinned), totals(spread.model)
        row = {
            "model": name,
            "amount": amount,
            "groups": f"{len(repaired.removed)}/{repaired.free_groups}",
            "global_groups": len(spread.removed),
            "latency": ratios["thinned"],
            "l1_latency": ratios["l1"],
            "global_latency": ratios["global"],
            "dense_ms": dense_s * 1e3,
            "timing": timing.describe(),
            "file": after["bytes"] / before["bytes"],
            "macs": after["macs"] / before["macs"],
            "peak": after["peak"] / before["peak"],
            "macs_fit": (
                len(fits["macs", 2].removed),
                totals(fits["macs", 2].model)["macs"] / before["macs"],
            ),  # fmt: skip
            "global_file": wide["bytes"] / before["bytes"],
            "global_macs": wide["macs"] / before["macs"],
            "seconds": seconds,
            "dense": dense_acc,
        }
        if test_x is not None:
            row["l1"] = accuracy(l1, test_x, test_y)
            row["masked"] = accuracy(mask(model, chosen), test_x, test_y)
            row["thinned"] = accuracy(thinned, test_x, test_y)
            row["repaired_l1"] = accuracy(repaired_l1.model, test_x, test_y)
            fit_hits = {k: hits(f.model, test_x, test_y) for k, f in fits.items()}
            row["fits"] = {k: float(np.mean(h)) for k, h in fit_hits.items()}
            # Against the dense model on the same samples: (difference, 95 % interval).
            row["paired"] = {k: common.paired_difference(h, dense_hits)
                             for k, h in fit_hits.items()}  # fmt: skip
            own = refmod.build(repaired.model, iter(validation[0]), validation[1])
            staged, _ = personalize(repaired.model, list(adapt), reference=own)
            # What a user gets: `personalize --shrink` from the source and its reference.
            shrunk, report = personalize(model, list(adapt), reference=source_ref, shrink=amount)
            kept = any(s.name == "shrink" and s.applied for s in report.stages)
            row["shrink"] = (kept, accuracy(shrunk, test_x, test_y))
            row["stages"] = accuracy(staged, test_x, test_y)
            row["equal_macs"] = equal_macs(model, amount, after["macs"] / before["macs"], adapt,
                                           protect, test_x, test_y)  # fmt: skip
        rows.append(row)
        print(row)
    return rows


def fsdd_models(speakers, kinds):
    from benchmarks import fsdd

    X, digits, names, _ = fsdd.load_fsdd()
    names = np.asarray(names)
    for speaker in speakers:
        source = fsdd.train_source(speaker, X, digits, list(names))
        _, validation = fsdd.source_split(names, speaker)
        Xs, ys = X[names == speaker], digits[names == speaker]
        adapt, test = np.arange(0, len(Xs), 2), np.arange(1, len(Xs), 2)
        for kind in kinds:
            model = Model.load(source.int8 if kind == "int8" else source.float32)
            labelled = (X[validation], digits[validation])
            yield f"FSDD CNN {kind} ({speaker})", model, Xs[adapt], Xs[test], ys[test], labelled


def cifar_models(kinds, n: int):
    from benchmarks import cifar

    stem = common.CACHE.glob("cifar10-source-s0-e15-*.float32.tflite")
    found = sorted(stem)
    if not found:
        print("CIFAR-10: no cached source model (training takes ~26 min): rows left out")
        return
    X, y = cifar.load_cifar(split="test")
    order = np.random.default_rng(0).permutation(len(X))
    ref_idx, adapt_idx, test_idx = order[:2000], order[2000 : 2000 + n], order[5000 : 5000 + n]
    for kind in kinds:
        path = Path(str(found[0]).replace(".float32.", f".{kind}."))
        model = Model.load(path)
        labelled = (X[ref_idx], y[ref_idx])
        yield f"CIFAR ResNet-8 {kind}", model, X[adapt_idx], X[test_idx], y[test_idx], labelled


def mobilenet(kind: str) -> Model:
    def build() -> bytes:
        tf = __import__("benchmarks.fsdd", fromlist=["_tf"])._tf()
        tf.keras.utils.set_random_seed(0)
        keras_model = tf.keras.applications.MobileNetV2(weights=None, input_shape=(224, 224, 3))
        calibration = np.random.default_rng(0).standard_normal((32, 224, 224, 3), np.float32)
        return common.to_tflite(keras_model, calibration if kind == "int8" else None)

    return Model.load(common.cached(f"mobilenetv2-224-1.0-{kind}-v1.tflite", build))


def table(rows) -> str:
    def seconds(pair):
        return f"{pair[0]:.1f} ({pair[1]:.1f} CPU)"

    def pct(v):
        return "—" if v is None else f"{100 * v:.1f}"

    def equal(v):
        return "—" if v is None else f"{v[0]:.1%}, {v[1]:.2f}×, {pct(v[2])}"

    def shrunk(v):
        return "—" if v is None else f"{'yes' if v[0] else 'no'}, {pct(v[1])}"

    lines = [
        "| model | removed | groups: uniform | global | uniform: latency | L1-masked latency | "
        "file | MACs | peak mem | global: latency | file | MACs | dense acc. | L1-masked | "
        "masked | thinned | + repair | + repair, refit-error groups, uniform, 1 pass | 2 passes "
        "| global, 1 pass | 2 passes | + stages | `personalize --shrink`: thinned?, acc. "
        "| global at uniform's MACs: removed, MACs, acc. "
        "| MACs allocation, 2 passes: groups, MACs, acc. "
        "| `--settle`: uniform | global "
        "| thin + repair s, uniform, 1 pass | 2 passes | global, 1 pass | 2 passes | MACs "
        "| `--settle`: uniform | global |",
        "|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|"
        "---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for r in rows:
        fits = r.get("fits", {})
        keys = [(a, p) for a in ("uniform", "global") for p in (1, 2)]
        accuracies = " | ".join(pct(fits.get(key)) for key in keys)
        settled = [("uniform", SETTLE), ("global", SETTLE)]
        times = " | ".join(seconds(r["seconds"][key]) for key in [*keys, ("macs", 2), *settled])
        n, macs = r["macs_fit"]
        by_macs = f"{n}, {macs:.2f}×, {pct(fits.get(('macs', 2)))}"
        lines.append(
            f"| {r['model']} | {r['amount']:.0%} | {r['groups']} | {r['global_groups']} | "
            f"{r['latency']:.2f}× | {r['l1_latency']:.2f}× | {r['file']:.2f}× | {r['macs']:.2f}× | "
            f"{r['peak']:.2f}× | {r['global_latency']:.2f}× | {r['global_file']:.2f}× | "
            f"{r['global_macs']:.2f}× | {pct(r['dense'])} | {pct(r.get('l1'))} | "
            f"{pct(r.get('masked'))} | {pct(r.get('thinned'))} | {pct(r.get('repaired_l1'))} | "
            f"{accuracies} | {pct(r.get('stages'))} | {shrunk(r.get('shrink'))} | "
            f"{equal(r.get('equal_macs'))} | {by_macs} | "
            f"{' | '.join(pct(fits.get(key)) for key in settled)} | {times} |"
        )
    return "\n".join(lines)


def resolved(paired: tuple[float, float, float]) -> str:
    """What the test set can say about "within 1 point": the paired difference to the dense
    model, its 95 % interval, and whether the interval lies wholly on one side of −1 point."""
    diff, lo, hi = (100 * v for v in paired)
    side = "met" if lo >= -1 else "not met" if hi < -1 else "the test set cannot tell"
    return f" (paired difference {diff:+.1f}, 95 % interval {lo:+.1f} to {hi:+.1f}: {side})"


def goals(rows) -> list[str]:
    out = []
    for r in rows:
        if r["model"].startswith("MobileNetV2") and r["amount"] == 0.5:
            for label, key in (("uniform allocation", ""), ("global allocation", "global_")):
                ok = r[f"{key}latency"] <= 0.6 and r[f"{key}file"] <= 0.55
                out.append(
                    f"- {r['model']}, 50 %, {label}: latency {r[f'{key}latency']:.2f}× "
                    f"(goal ≤ 0.6×), file {r[f'{key}file']:.2f}× (goal ≤ 0.55×): "
                    f"{common.verdict(ok)}"
                )
            for (allocation, passes), (wall, cpu) in r["seconds"].items():
                how = "--settle" if passes == SETTLE else f"{passes} pass{'es' * (passes > 1)}"
                out.append(
                    f"- {r['model']}, 50 %: thin + repair ({allocation}, {how}) in {wall:.1f} s "
                    f"wall, {cpu:.1f} s CPU "
                    f"(goal < 10 s): by wall time {common.verdict(wall < 10)}, by CPU time "
                    f"{common.verdict(cpu < 10)}"
                )
        if r.get("fits") and r["amount"] == 0.25:
            for allocation in ("uniform", "global"):
                one, two = r["fits"][allocation, 1], r["fits"][allocation, 2]
                default = " (the default)" if allocation == "uniform" else ""
                out.append(
                    f"- {r['model']}, 25 % + repair, {allocation} allocation{default}: "
                    f"{100 * one:.1f} % (1 pass), {100 * two:.1f} % (2 passes) vs dense "
                    f"{100 * r['dense']:.1f} % (goal: within 1 point): "
                    f"{common.verdict(two >= r['dense'] - 0.01)}"  # the default: 2 passes
                    f"{resolved(r['paired'][allocation, 2])}"
                )
                settled = r["fits"][allocation, SETTLE]
                out.append(
                    f"- {r['model']}, 25 % + repair, {allocation} allocation, `--settle`: "
                    f"{100 * settled:.1f} % vs dense {100 * r['dense']:.1f} % (goal: within 1 "
                    f"point): {common.verdict(settled >= r['dense'] - 0.01)}"
                    f"{resolved(r['paired'][allocation, SETTLE])}"
                )
    product = [r for r in rows if r.get("shrink")]
    if product:
        worst = min(product, key=lambda r: r["shrink"][1] - r["dense"])
        gap = 100 * (worst["shrink"][1] - worst["dense"])
        kept = sum(r["shrink"][0] for r in product)
        out.append(
            f"- first rule: `personalize --shrink` never below the dense source: worst "
            f"{gap:+.1f} points ({worst['model']}, {worst['amount']:.0%}); the thinned model kept "
            f"in {kept} of {len(product)} rows: {common.verdict(gap >= 0)}"
        )
    return out


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n", 1)[0])
    parser.add_argument("--quick", action="store_true", help="fewer rounds, one speaker")
    parser.add_argument("--no-cifar", action="store_true")
    parser.add_argument("--no-mobilenet", action="store_true")
    args = parser.parse_args(argv)
    rounds = 5 if args.quick else 9
    rows = []
    speakers = ("george",) if args.quick else ("george", "jackson")
    for name, model, adapt, tx, ty, labelled in fsdd_models(speakers, ("float32", "int8")):
        rows += evaluate(name, model, adapt, tx, ty, labelled, AMOUNTS, rounds, 20)
    if not args.no_cifar:
        n = 1000 if args.quick else 2500
        for name, model, adapt, tx, ty, labelled in cifar_models(("float32", "int8"), n):
            rows += evaluate(name, model, adapt, tx, ty, labelled, AMOUNTS, rounds, 20)
    if not args.no_mobilenet:
        noise = np.random.default_rng(1).standard_normal((32, 224, 224, 3), np.float32)
        for kind in ("float32", "int8"):
            model = mobilenet(kind)
            rows += evaluate(f"MobileNetV2 {kind}", model, noise, None, None, None,
                             AMOUNTS, rounds, 3)  # fmt: skip
    info = common.machine()
    body = "\n".join(
        [
            "## Thinning: channels removed from the graph (issue 15)",
            "",
            f"`{common.command()}` — {common.now()}",
            "",
            common.machine_markdown(info),
            "",
            __doc__.split("\n\n")[1].replace("\n", " "),
            "",
            table(rows),
            "",
            "Latency and L1-masked latency: median of the per-round ratios to the dense model "
            "(interleaved rounds, 1 thread; " + rows[-1]["timing"] + " in the last row). "
            "Removed: the share of the model's free channel groups removed: uniform takes it "
            "from every layer alike (rounded per layer; groups: removed/free), global from the "
            "model as a whole (groups removed), so its MACs and file differ. "
            "Accuracy in % on held-out samples.",
            "",
            "Goals:",
            *goals(rows),
        ]
    )
    common.publish(SECTION, body)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
