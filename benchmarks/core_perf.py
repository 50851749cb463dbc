"""Core performance of edgeprune: recording overhead, memory vs. sample count, prune-and-save speed.

    python benchmarks/core_perf.py [--quick] [--threads 1,2]

Measures, then writes its section of benchmarks/RESULTS.md (between the core_perf markers):

(a) time per sample of recording (Runner on the instrumented model or with preserve_all_tensors,
    plus ActivationMap.update) against plain invocation of the same model on the same runtime and
    thread count, for a small CNN and a real MobileNetV2 1.0/224. Target: record/plain <= 1.3x.
(b) peak RSS of `python -m edgeprune record` at N = 100 and N = 5,000 samples, each in its own
    child process. Target: within 5 %.
(c) load + masks + apply + save of a > 100 MB float model, in-process and through
    `python -m edgeprune prune`, beside shutil.copyfile of the same file. Target: <= 2 s.

Every variant of a comparison runs in the same process run, alternating round by round, and the
figures are medians over the rounds: the machine may be shared and noisy, so ratios measured side
by side mean more than absolute times. Converted models are cached under benchmarks/_cache/.
"""

from __future__ import annotations

import argparse
import contextlib
import os
import shutil
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

import common  # benchmarks/common.py; also puts the repository root on sys.path
import numpy as np

from edgeprune import prune
from edgeprune.activations import FOLD_EVERY, ActivationMap, record
from edgeprune.model import Model
from edgeprune.runtime import MODES, Runner

SECTION = "core_perf"
RECORD_TARGET = 1.3  # record / plain time per sample
RSS_TARGET = 1.05  # peak RSS at the large N / at the small N
PRUNE_TARGET_S = 2.0  # load + masks + apply + save of a >= 100 MB model
SPARSITY = 0.5
DENSE_WIDTH = 5120  # Input(5120) -> Dense(5120, relu) -> Dense(10): about 105 MB of float32


def log(msg: str) -> None:
    print(msg, file=sys.stderr, flush=True)


@dataclass(frozen=True)
class Config:
    quick: bool
    threads: tuple[int, ...]
    rounds_a: int
    samples_a: dict[str, int]  # per round, per model; multiples of FOLD_EVERY (see measure_record)
    rss_n: tuple[int, int]
    rounds_b: int
    rounds_c: int
    map_samples_c: int


def config(quick: bool, threads: tuple[int, ...]) -> Config:
    if quick:
        return Config(
            quick,
            threads,
            rounds_a=2,
            samples_a={"small CNN": FOLD_EVERY, "MobileNetV2 1.0/224": FOLD_EVERY},
            rss_n=(100, 1000),
            rounds_b=1,
            rounds_c=2,
            map_samples_c=4,
        )
    return Config(
        quick,
        threads,
        rounds_a=9,
        samples_a={"small CNN": 5 * FOLD_EVERY, "MobileNetV2 1.0/224": FOLD_EVERY},
        rss_n=(100, 5000),
        rounds_b=3,
        rounds_c=7,
        map_samples_c=8,
    )


# ----- models ------------------------------------------------------------------------------------


def tests_model(arch: str) -> Path:
    """tests.models.build("float32", arch), cached and keyed by the source of tests/models.py."""
    from tests import models as tm

    digest = common.file_digest(common.REPO / "tests" / "models.py")
    return common.cached(f"{arch}_float32_{digest}.tflite", lambda: tm.build("float32", arch), log)


def _build_mobilenet_v2() -> bytes:
    from tests import models as tm

    tf = tm.import_tensorflow()
    tf.keras.backend.clear_session()
    model = tf.keras.applications.MobileNetV2(input_shape=(224, 224, 3), weights=None, classes=1000)
    return common.to_tflite(model)


def _build_big_dense() -> bytes:
    from tests import models as tm

    tf = tm.import_tensorflow()
    tf.keras.backend.clear_session()
    layers = tf.keras.layers
    model = tf.keras.Sequential(
        [
            tf.keras.Input((DENSE_WIDTH,), batch_size=1),
            layers.Dense(DENSE_WIDTH, activation="relu"),
            layers.Dense(10),
        ]
    )
    rng = np.random.default_rng(tm.SEED)
    for layer in model.layers:
        kernel, bias = layer.get_weights()
        kernel = rng.standard_normal(kernel.shape) * np.sqrt(2.0 / kernel.shape[0])
        bias = rng.uniform(0.05, 0.2, bias.shape) * rng.choice([-1.0, 1.0], bias.shape)
        layer.set_weights([kernel.astype(np.float32), bias.astype(np.float32)])
    return common.to_tflite(model)


def mobilenet_v2() -> Path:
    return common.cached("mobilenet_v2_1.0_224_float32_v1.tflite", _build_mobilenet_v2, log)


def big_dense() -> Path:
    return common.cached(f"dense{DENSE_WIDTH}_float32_v1.tflite", _build_big_dense, log)


def random_samples(n: int, model: Model, seed: int = 0) -> np.ndarray:
    shape = model.tensor(model.main.inputs[0]).shape[1:]
    return np.random.default_rng(seed).standard_normal((n, *shape)).astype(np.float32)


# ----- (a) recording overhead --------------------------------------------------------------------


def measure_record(name: str, path: Path, threads: int, cfg: Config, gate) -> dict:
    """Seconds per sample of plain, instrumented-invoke and record variants, interleaved.

    Each round records into a fresh ActivationMap over a multiple of FOLD_EVERY samples and reads
    S_in at the end, so every round pays its folds exactly as a long recording does.
    """
    model = Model.load(path)
    n = cfg.samples_a[name]
    xs = random_samples(n, model)
    watched = ActivationMap(model).watched
    plain = Runner(model, num_threads=threads)
    runners = {mode: Runner(model, watched, mode=mode, num_threads=threads) for mode in MODES}

    cpu: dict[str, list[float]] = {}  # process CPU seconds per sample, all threads

    def variant(name: str, runner: Runner, update: bool):
        def run() -> float:
            amap = ActivationMap(model) if update else None  # setup, once per recording
            wall, cpu0 = time.perf_counter(), time.process_time()
            if amap is None:
                for x in xs:
                    runner.run(x, raw=True)
            else:
                for x in xs:
                    amap.update(runner.run(x, raw=True))
                amap.s_in(0)  # folds whatever is pending
            cpu.setdefault(name, []).append((time.process_time() - cpu0) / n)
            return (time.perf_counter() - wall) / n

        return run

    variants = {"plain": variant("plain", plain, update=False)}
    for mode in MODES:
        variants[f"record {mode}"] = variant(f"record {mode}", runners[mode], update=True)
        variants[f"invoke {mode}"] = variant(f"invoke {mode}", runners[mode], update=False)
    for fn in variants.values():  # warm-up: first invocations, page faults, caches
        fn()
    cpu.clear()
    log(f"(a) {name}, {threads} thread(s), {cfg.rounds_a} rounds x {n} samples")
    res = common.interleave(variants, cfg.rounds_a, log, gate)

    # The map's own cost, on one stored result: the per-sample add (FOLD_EVERY - 1 updates, which
    # never fold) and one fold (forced by reading S_in), each a median over n / FOLD_EVERY blocks.
    amap = ActivationMap(model)
    stored = runners["instrument"].run(xs[0], raw=True)
    add_s, fold_s = [], []
    for _ in range(max(1, n // FOLD_EVERY)):
        start = time.perf_counter()
        for _ in range(FOLD_EVERY - 1):
            amap.update(stored)
        mid = time.perf_counter()
        amap.s_in(0)
        add_s.append((mid - start) / (FOLD_EVERY - 1))
        fold_s.append(time.perf_counter() - mid)

    watched_bytes = sum(
        int(np.prod(model.tensor(t).shape)) * model.tensor(t).dtype.itemsize for t in watched
    )
    return {
        "model": name,
        "threads": threads,
        "n": n,
        "times": res.picked(),
        "cpu": {k: res.pick(v) for k, v in cpu.items()},
        "rounds": res.describe(),
        "quiet": res.from_quiet,
        "add_s": common.median(add_s),
        "fold_s": common.median(fold_s),
        "watched": len(watched),
        "layers": len(ActivationMap(model).layers),
        "watched_mb": watched_bytes / 1e6,
    }


# ----- (b) peak RSS vs sample count --------------------------------------------------------------


def write_stack(path: Path, n: int, model: Model, seed: int) -> None:
    """n random float32 samples as one stacked .npy, written in chunks (flat memory here too)."""
    shape = model.tensor(model.main.inputs[0]).shape[1:]
    rng = np.random.default_rng(seed)
    out = np.lib.format.open_memmap(path, mode="w+", dtype=np.float32, shape=(n, *shape))
    for i in range(0, n, 256):
        k = min(256, n - i)
        out[i : i + k] = rng.standard_normal((k, *shape), dtype=np.float32)
    out.flush()
    del out


def measure_rss(name: str, path: Path, cfg: Config, tmp: Path) -> dict:
    model = Model.load(path)
    small, large = cfg.rss_n
    data = {}
    for n in (small, large):
        data[n] = tmp / f"{path.stem}_{n}.npy"
        write_stack(data[n], n, model, seed=n)
    results: dict[int, list[tuple[float, int]]] = {small: [], large: []}

    def child(n: int):
        def run() -> float:
            out = tmp / f"{path.stem}_{n}.map.npz"
            argv = [sys.executable, "-m", "edgeprune", "record", str(path), str(data[n])]
            seconds, _, rss, _ = common.run_child([*argv, "-o", str(out), "-q"])
            results[n].append((seconds, rss))
            return rss / 2**20

        return run

    log(f"(b) {name}: peak RSS (MiB) of `edgeprune record`, N = {small} vs {large}")
    variants = {f"N={small}": child(small), f"N={large}": child(large)}
    res = common.interleave(variants, cfg.rounds_b, log)  # no gate: RSS does not mind the load
    for n in data:
        data[n].unlink()
    rss = {n: common.median(res.pick([r for _, r in results[n]])) for n in results}
    secs = {n: common.median(res.pick([s for s, _ in results[n]])) for n in results}
    return {
        "model": name,
        "small": small,
        "large": large,
        "rss": rss,
        "seconds": secs,
        "rounds": res.describe(),
        "quiet": res.from_quiet,
    }


# ----- (c) prune + save of a big model -----------------------------------------------------------


def measure_prune(cfg: Config, tmp: Path, gate) -> dict:
    path = big_dense()
    size = path.stat().st_size
    model = Model.load(path)
    map_path = tmp / "dense.map.npz"
    record(model, random_samples(cfg.map_samples_c, model, seed=1)).save(map_path)
    del model
    out_inproc, out_cli, out_copy = tmp / "inproc.tflite", tmp / "cli.tflite", tmp / "copy.tflite"
    phases: dict[str, list[float]] = {"load": [], "masks": [], "apply": [], "save": []}
    cpu: dict[str, list[float]] = {"in-process": [], "CLI": []}

    def in_process() -> float:
        cpu0 = time.process_time()
        t0 = time.perf_counter()
        m = Model.load(path)
        amap = ActivationMap.load(map_path, m)
        t1 = time.perf_counter()
        chosen = prune.masks(m, amap.layers, amap, SPARSITY)
        t2 = time.perf_counter()
        pruned = prune.apply(m, chosen)
        t3 = time.perf_counter()
        pruned.save(out_inproc)
        t4 = time.perf_counter()
        cpu["in-process"].append(time.process_time() - cpu0)
        for key, dt in zip(phases, (t1 - t0, t2 - t1, t3 - t2, t4 - t3)):
            phases[key].append(dt)
        return t4 - t0

    cli_rss: list[int] = []

    def cli() -> float:
        argv = [sys.executable, "-m", "edgeprune", "prune", str(path), str(map_path)]
        seconds, cpu_s, rss, _ = common.run_child(
            [*argv, "--sparsity", str(SPARSITY), "-o", str(out_cli)]
        )
        cli_rss.append(rss)
        cpu["CLI"].append(cpu_s)
        return seconds

    def copy() -> float:
        out_copy.unlink(missing_ok=True)
        return common.timed(lambda: shutil.copyfile(path, out_copy))

    def copy_fsync() -> float:
        out_copy.unlink(missing_ok=True)

        def run():
            shutil.copyfile(path, out_copy)
            with open(out_copy, "rb+") as f:
                os.fsync(f.fileno())

        return common.timed(run)

    variants = {
        "in-process": in_process,
        "CLI": cli,
        "copyfile": copy,
        "copyfile+fsync": copy_fsync,
    }
    log(f"(c) {size / 1e6:.1f} MB model: one untimed warm-up round, then {cfg.rounds_c} rounds")
    for fn in variants.values():  # page cache, first touch of fresh memory, imports
        fn()
    for values in (*phases.values(), *cpu.values()):
        values.clear()
    cli_rss.clear()
    res = common.interleave(variants, cfg.rounds_c, log, gate)

    checks = {}
    for label, out in (("in-process", out_inproc), ("CLI", out_cli)):
        written = Model.load(out)
        layers = ActivationMap.load(map_path, written).layers
        zeros, total = prune.measured_sparsity(written, layers)
        y = Runner(written).run(random_samples(1, written, seed=2)[0])
        checks[label] = {
            "zeros": zeros,
            "total": total,
            "same_size": out.stat().st_size == size,
            "runs": all(np.isfinite(v).all() for v in y.values()),
            "layers": len(layers),
        }
    return {
        "size": size,
        "times": res.picked(),
        "cpu": {k: res.pick(v) for k, v in cpu.items()},
        "phases": {k: res.pick(v) for k, v in phases.items()},
        "checks": checks,
        "cli_rss": common.median(res.pick(cli_rss)),
        "rounds": res.describe(),
        "quiet": res.from_quiet,
    }


# ----- report ------------------------------------------------------------------------------------


def busy_warning(info: dict) -> list[str]:
    """A warning when other processes took a noticeable share of the CPU during the run."""
    if info["others_cpu"] < common.BUSY_SHARE:
        return []
    return [
        f"**Busy machine:** other processes used {info['others_cpu']:.0%} of the CPU capacity"
        " over the whole run (timed rounds waited for quiet moments, see the rounds notes);"
        " wall-clock figures from busy rounds are inflated and noisy (the interleaved ratios and"
        " the CPU-time column suffer less).",
        "",
    ]


def ms(seconds: float) -> str:
    return f"{seconds * 1e3:.3f}"


def report(cfg: Config, info: dict, a: list[dict], b: list[dict], c: dict, elapsed: float) -> str:
    targets: list[tuple[str, str, str, bool, str, bool]] = []
    for r in a:
        t = r["times"]
        plain = common.median(t["plain"])
        for mode in MODES:
            ratio = common.median(t[f"record {mode}"]) / plain
            cpu = common.median(r["cpu"][f"record {mode}"]) / common.median(r["cpu"]["plain"])
            targets.append(
                (
                    f"(a) record/plain, {r['model']}, {mode}, {r['threads']} thread(s)",
                    f"<= {RECORD_TARGET}x",
                    f"{ratio:.2f}x",
                    ratio <= RECORD_TARGET,
                    f"{cpu:.2f}x",
                    r["quiet"],
                )
            )
    for r in b:
        ratio = r["rss"][r["large"]] / r["rss"][r["small"]]
        targets.append(
            (
                f"(b) peak RSS of `record`, N={r['large']:,} / N={r['small']:,}, {r['model']}",
                f"<= {RSS_TARGET:.2f}",
                f"{ratio:.3f}",
                ratio <= RSS_TARGET,
                "",
                True,  # peak RSS does not depend on other processes' load
            )
        )
    for variant in ("in-process", "CLI"):
        s = common.median(c["times"][variant])
        targets.append(
            (
                f"(c) load + masks + apply + save, {c['size'] / 1e6:.0f} MB model, {variant}",
                f"<= {PRUNE_TARGET_S:.1f} s",
                f"{s:.2f} s",
                s <= PRUNE_TARGET_S,
                f"{common.median(c['cpu'][variant]):.2f} s",
                c["quiet"],
            )
        )

    lines = [
        "## core_perf: recording overhead, memory vs. sample count, prune-and-save speed",
        "",
        f"- Command (from the repository root): `{common.command()}`"
        + (" (smoke run: fewer rounds and samples)" if cfg.quick else ""),
        f"- Interpreter: `{sys.executable}`",
        f"- Code measured: {info['source']}",
        f"- Run at: {info['started']}; took {elapsed:.0f} s; load average at the end"
        f" (1, 5, 15 min): {', '.join(f'{x:.2f}' for x in info['load_end'])}; other processes"
        f" used {info['others_cpu']:.0%} of the machine's CPU capacity during the run",
        "- Machine:",
        *(f"  {line}" for line in common.machine_markdown(info["machine"]).splitlines()),
        "",
        *busy_warning(info),
        "Every comparison ran its variants alternately, round by round, in this one run; figures",
        "are medians over the rounds and ratios are ratios of those medians. Before each timed",
        "round the run waited for a moment when other processes left the CPU idle (at most"
        f" {info['max_wait']:.0f} s over the whole run; it waited {info['waited']:.0f} s)."
        f" A round is quiet when other processes used under {common.BUSY_SHARE:.0%} of the"
        f" CPU while it ran; when at least {common.MIN_QUIET_ROUNDS} rounds were quiet, the"
        " figures come from those rounds only.",
        "",
        "### Targets",
        "",
        "Verdicts are on wall-clock time, as the targets are stated. The CPU-time column is a"
        " cross-check that other processes on the machine disturb less: CPU seconds of this"
        " process (all its threads) or of the CLI child, with the same medians. A verdict marked"
        " (busy rounds) rests on rounds in which other processes competed for the CPU: read it"
        " together with the CPU-time column.",
        "",
        "| measurement | target | measured (wall) | verdict | same, in CPU time |",
        "|---|---|---|---|---|",
        *(
            f"| {m} | {tg} | {v} | {common.verdict(ok, quiet)} | {x} |"
            for m, tg, v, ok, x, quiet in targets
        ),
        "",
        f"Met: {sum(t[3] for t in targets)} of {len(targets)}.",
        "",
        "### (a) Time per sample: recording vs. plain invocation",
        "",
        "Plain: `Runner(model).run(x, raw=True)`. Invoke: `Runner(model, amap.watched, mode=...)"
        ".run(x, raw=True)` alone. Record: invoke + `amap.update(...)`, with a fresh map per round",
        "and its folds included (rounds are whole multiples of the fold interval,"
        f" {FOLD_EVERY} samples). The map's own cost, on one stored result: add = `amap.update`",
        "per sample without folding; fold = one fold of the partial sums into S_in/S_out (once"
        f" every {FOLD_EVERY} samples); per sample = add + fold / {FOLD_EVERY}.",
        "Random float32 inputs; ms per sample; the per-round ratio range shows the noise.",
        "",
        "| model | threads | samples x rounds | plain | mode | invoke | record | invoke/plain"
        " | record/plain | per-round record/plain | record/plain, CPU | add | fold"
        " | add + fold, per sample |",
        "|---|---|---|---|---|---|---|---|---|---|---|---|---|---|",
    ]
    for r in a:
        t = r["times"]
        plain = common.median(t["plain"])
        for mode in MODES:
            inv, rec = common.median(t[f"invoke {mode}"]), common.median(t[f"record {mode}"])
            per_round = common.paired_ratios(t[f"record {mode}"], t["plain"])
            cpu = common.median(r["cpu"][f"record {mode}"]) / common.median(r["cpu"]["plain"])
            lines.append(
                f"| {r['model']} | {r['threads']} | {r['n']} x {len(t['plain'])} | {ms(plain)}"
                f" | {mode} | {ms(inv)} | {ms(rec)} | {inv / plain:.2f}x | {rec / plain:.2f}x"
                f" | {min(per_round):.2f}-{max(per_round):.2f}x"
                f" | {cpu:.2f}x"
                f" | {ms(r['add_s'])}"
                f" | {ms(r['fold_s'])} | {ms(r['add_s'] + r['fold_s'] / FOLD_EVERY)} |"
            )
    lines.append("")
    for r in a:
        plain = common.median(r["times"]["plain"])
        per_sample = r["add_s"] + r["fold_s"] / FOLD_EVERY
        lines.append(
            f"- {r['model']}, {r['threads']} thread(s): {r['rounds']}. The map's add + fold per"
            f" sample is {per_sample / plain:.0%} of a plain invocation (the fold alone"
            f" {r['fold_s'] / FOLD_EVERY / plain:.0%})."
        )
    for r in a[:: len(cfg.threads)]:
        lines.append(
            f"- {r['model']}: {r['layers']} prunable layers, {r['watched']} watched tensors, "
            f"{r['watched_mb']:.1f} MB of float32 activations summed per sample."
        )
    lines += [
        "",
        "### (b) Peak RSS of `python -m edgeprune record MODEL DATA.npy -o MAP -q`",
        "",
        "Each run is its own process, started by a small launcher that reports its `ru_maxrss`"
        " (`os.wait4`): that run's own peak (a direct child of this benchmark would inherit the"
        " benchmark's high-water mark across exec). Data: one stacked .npy of random float32"
        " samples per N.",
        "",
        "| model | N small | peak RSS (MiB) | N large | peak RSS (MiB) | large/small"
        " | growth (MiB) | wall s, small / large | target | rounds |",
        "|---|---|---|---|---|---|---|---|---|---|",
    ]
    for r in b:
        lo, hi = r["rss"][r["small"]], r["rss"][r["large"]]
        lines.append(
            f"| {r['model']} | {r['small']:,} | {lo / 2**20:.1f} | {r['large']:,}"
            f" | {hi / 2**20:.1f}"
            f" | {hi / lo:.3f} | {(hi - lo) / 2**20:+.1f} | {r['seconds'][r['small']]:.1f} / "
            f"{r['seconds'][r['large']]:.1f} | {common.verdict(hi / lo <= RSS_TARGET)}"
            f" | {r['rounds']} |"
        )
    mb = c["size"] / 1e6
    lines += [
        "",
        f"### (c) Prune + rewrite + save of a {mb:.1f} MB float32 model",
        "",
        f"Model: Input({DENSE_WIDTH}) -> Dense({DENSE_WIDTH}, relu) -> Dense(10), seeded random"
        f" weights. Activation map: {cfg.map_samples_c} random samples (not timed). Sparsity"
        f" {SPARSITY}, score fine, scope layer. In-process: `Model.load` + `ActivationMap.load` +"
        " `prune.masks` + `prune.apply` + `Model.save` (atomic: temp file, fsync, rename). CLI:"
        f" `python -m edgeprune prune MODEL MAP --sparsity {SPARSITY} -o OUT` as a child process"
        " (interpreter start and imports included). copyfile: `shutil.copyfile` of the same file"
        " (no fsync); copyfile+fsync adds the fsync the atomic save does. One untimed warm-up"
        " round ran first.",
        "",
        "| variant | median s | MB/s | rounds (s) | median CPU s |",
        "|---|---|---|---|---|",
    ]
    for name, values in c["times"].items():
        s = common.median(values)
        rounds = ", ".join(f"{v:.2f}" for v in values)  # the rounds the median is over
        cpu_s = f"{common.median(c['cpu'][name]):.3f}" if name in c["cpu"] else "not measured"
        lines.append(f"| {name} | {s:.3f} | {mb / s:.0f} | {rounds} | {cpu_s} |")
    ph = {k: common.median(v) for k, v in c["phases"].items()}
    inproc = common.median(c["times"]["in-process"])
    lines += [
        "",
        f"Rounds: {c['rounds']}. In-process phases (median s): "
        + ", ".join(f"{k} {v:.3f}" for k, v in ph.items())
        + f". In-process / copyfile: "
        f"{inproc / common.median(c['times']['copyfile']):.1f}x;"
        f" in-process / copyfile+fsync: "
        f"{inproc / common.median(c['times']['copyfile+fsync']):.1f}x."
        f" Peak RSS of the CLI prune: {c['cli_rss'] / 2**20:.0f} MiB"
        f" ({c['cli_rss'] / c['size']:.1f}x the model file).",
        "",
        "| written by | zero weights | weights | measured sparsity | requested | same file size"
        " | loads and runs in a fresh interpreter |",
        "|---|---|---|---|---|---|---|",
    ]
    for label, k in c["checks"].items():
        lines.append(
            f"| {label} | {k['zeros']:,} | {k['total']:,} | {k['zeros'] / k['total']:.6f}"
            f" | {SPARSITY} | {'yes' if k['same_size'] else 'no'}"
            f" | {'yes' if k['runs'] else 'no'} |"
        )
    return "\n".join(lines) + "\n"


# ----- main --------------------------------------------------------------------------------------


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--quick", action="store_true", help="smoke run: few rounds and samples")
    parser.add_argument(
        "--threads",
        default="1,2",
        help="comma-separated interpreter thread counts for (a) (default 1,2)",
    )
    parser.add_argument(
        "--max-wait",
        type=float,
        default=None,
        help="seconds the whole run may spend waiting for quiet moments before timed rounds "
        "(default 240, or 20 with --quick)",
    )
    args = parser.parse_args(argv)
    if args.max_wait is None:
        args.max_wait = 20.0 if args.quick else 240.0
    cfg = config(args.quick, tuple(int(t) for t in args.threads.split(",")))
    info = {"started": common.now(), "machine": common.machine(), "source": common.source_state()}
    info["load_start"] = os.getloadavg()
    snapshot = common.cpu_snapshot()
    start = time.perf_counter()

    models_a = {"small CNN": tests_model("small_cnn"), "MobileNetV2 1.0/224": mobilenet_v2()}
    models_b = {
        "small CNN": models_a["small CNN"],
        "MobileNetV2 0.35/96": tests_model("mobilenet_v2_shaped"),
    }
    big_dense()
    build_s = time.perf_counter() - start

    gate = common.QuietGate(args.max_wait)
    a = [
        measure_record(name, path, threads, cfg, gate)
        for name, path in models_a.items()
        for threads in cfg.threads
    ]
    with tempfile.TemporaryDirectory(prefix="edgeprune-core-perf-") as tmp:
        b = [measure_rss(name, path, cfg, Path(tmp)) for name, path in models_b.items()]
        c = measure_prune(cfg, Path(tmp), gate)
    elapsed = time.perf_counter() - start
    info["load_end"] = os.getloadavg()
    info["others_cpu"] = common.others_cpu_share(snapshot, common.cpu_snapshot())
    info["waited"] = gate.waited_s
    info["max_wait"] = args.max_wait
    log(f"model building/caching took {build_s:.0f} s of {elapsed:.0f} s")
    text = report(cfg, info, a, b, c, elapsed)
    common.write_section(SECTION, text)
    print(text)
    log(f"wrote the {SECTION} section of {common.RESULTS.relative_to(common.REPO)}")
    return 0


if __name__ == "__main__":
    with contextlib.suppress(KeyboardInterrupt):
        sys.exit(main())
    sys.exit(130)
