"""Core performance of edgeprune: recording overhead, memory vs. sample count, prune-and-save
speed, start-up time.

    python benchmarks/core_perf.py [--quick] [--threads 1,2] [--max-wait S]

Measures, then writes its section of benchmarks/RESULTS.md (between the core_perf markers):

(a) time per sample of recording against plain invocation of the same model on the same runtime
    and interpreter thread count, for MobileNetV2 1.0/224 and the FSDD CNN (benchmarks/fsdd.py's
    architecture), each as float32, uint8 (TFLite's legacy asymmetric kernels) and full int8:
    record = instrumented invoke + ActivationMap.update in line; overlapped = the same with the
    sums on a second thread (record(overlap=True)). Wall and CPU time (all threads of this
    process). Targets at 1 interpreter thread: record/plain <= 1.3x in CPU time; overlapped/plain
    <= 1.15x wall (the second core does the sums).
(b) peak RSS of `python -m edgeprune record` at N = 100 and N = 5,000 samples, each in its own
    child process. Target: within 5 %.
(c) load + masks + apply + save of a 105 MB float model, in-process and through
    `python -m edgeprune prune`, beside shutil.copyfile of the same file. Targets: <= 1 s
    in-process, <= 1.5 s through the CLI, peak RSS of the CLI <= 3.5x the model file.
(d) CPU time of `edgeprune --help` against `python -c pass`. Target: <= 2x.

Every variant of a comparison runs in the same process run, alternating round by round, and the
figures are medians over the rounds: the machine may be shared and noisy, so ratios measured side
by side mean more than absolute times, and CPU time (which other processes disturb less) is
reported beside wall time. Converted models are cached under benchmarks/_cache/.
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
from edgeprune.activations import FOLD_EVERY, ActivationMap, _Overlapped, record
from edgeprune.model import Model
from edgeprune.runtime import Runner

SECTION = "core_perf"
RECORD_TARGET = 1.3  # record / plain CPU time per sample, 1 interpreter thread
OVERLAP_TARGET = 1.15  # overlapped record / plain wall time per sample, 1 interpreter thread
RSS_TARGET = 1.05  # peak RSS at the large N / at the small N
PRUNE_TARGET_S = {"in-process": 1.0, "CLI": 1.5}  # load + masks + apply + save, 105 MB model
PRUNE_RSS_TARGET = 3.5  # peak RSS of the CLI prune / model file size
STARTUP_TARGET = 2.0  # CPU time of `edgeprune --help` / `python -c pass`
SPARSITY = 0.5
DENSE_WIDTH = 5120  # Input(5120) -> Dense(5120, relu) -> Dense(10): about 105 MB of float32


def log(msg: str) -> None:
    print(msg, file=sys.stderr, flush=True)


@dataclass(frozen=True)
class Config:
    quick: bool
    threads: tuple[int, ...]
    rounds_a: int
    samples_a: dict[str, int]  # per round, per architecture
    rss_n: tuple[int, int]
    rounds_b: int
    rounds_c: int
    map_samples_c: int
    rounds_d: int


def config(quick: bool, threads: tuple[int, ...]) -> Config:
    if quick:
        return Config(
            quick,
            threads,
            rounds_a=2,
            samples_a={"mobilenet_v2": 16, "fsdd_cnn": 128},
            rss_n=(100, 1000),
            rounds_b=1,
            rounds_c=2,
            map_samples_c=4,
            rounds_d=3,
        )
    return Config(
        quick,
        threads,
        rounds_a=9,
        samples_a={"mobilenet_v2": FOLD_EVERY, "fsdd_cnn": 16 * FOLD_EVERY},
        rss_n=(100, 5000),
        rounds_b=3,
        rounds_c=7,
        map_samples_c=8,
        rounds_d=15,
    )


# ----- models ------------------------------------------------------------------------------------


def tests_model(arch: str) -> Path:
    """tests.models.build("float32", arch), cached and keyed by the source of tests/models.py."""
    from tests import models as tm

    digest = common.file_digest(common.REPO / "tests" / "models.py")
    return common.cached(f"{arch}_float32_{digest}.tflite", lambda: tm.build("float32", arch), log)


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


def big_dense() -> Path:
    return common.cached(f"dense{DENSE_WIDTH}_float32_v1.tflite", _build_big_dense, log)


FSDD_SHAPE = (49, 32, 1)  # benchmarks/fsdd.py's log-mel features: 49 frames x 32 bins
KINDS = ("float32", "uint8", "int8")
ARCHS = {"mobilenet_v2": "MobileNetV2 1.0/224", "fsdd_cnn": "FSDD CNN"}
CALIBRATION = 32


def _keras(arch: str):
    """MobileNetV2 1.0/224 (random weights) or the FSDD source CNN (benchmarks/fsdd.py's
    architecture, random weights: the cost of an invocation does not depend on training)."""
    from tests import models as tm

    tf = tm.import_tensorflow()
    tf.keras.backend.clear_session()
    tf.keras.utils.set_random_seed(tm.SEED)
    if arch == "mobilenet_v2":
        return tf.keras.applications.MobileNetV2(
            input_shape=(224, 224, 3), weights=None, classes=1000
        )
    import fsdd  # benchmarks/fsdd.py

    return fsdd.build_model(FSDD_SHAPE)


def _int8(keras_model, per_tensor: bool) -> bytes:
    """Full-integer int8 .tflite (int8 input and output) calibrated on random normal inputs;
    per-tensor weights when asked (the only kind the uint8 kernels take)."""
    from edgeprune.host.convert import SIGNATURE, from_keras
    from tests import models as tm

    tf = tm.import_tensorflow()
    source = from_keras(keras_model)
    try:
        converter = tf.lite.TFLiteConverter.from_saved_model(source.saved_model, [SIGNATURE])
        converter.optimizations = [tf.lite.Optimize.DEFAULT]
        rng = np.random.default_rng(tm.SEED)
        converter.representative_dataset = lambda: (
            [rng.standard_normal(source.input_shape).astype(np.float32)] for _ in range(CALIBRATION)
        )
        converter.target_spec.supported_ops = [tf.lite.OpsSet.TFLITE_BUILTINS_INT8]
        converter.inference_input_type = converter.inference_output_type = tf.int8
        converter._experimental_disable_per_channel = per_tensor
        return bytes(converter.convert())
    finally:
        source.close()


def _as_uint8(content: bytes) -> bytes:
    """A per-tensor int8 model as the same network in uint8 (TFLite's legacy asymmetric
    kernels): every int8 tensor becomes uint8 with q + 128 and zero point + 128."""
    from edgeprune.model import ModelSlot, QuantizationSlot, SubGraphSlot, TensorSlot, _Table

    data = bytearray(content)
    buf = memoryview(data)
    root = _Table(buf, int.from_bytes(buf[:4], "little"), "model")
    int8 = [t.index for t in Model(content).main.tensors if t.type_name == "INT8"]
    (graph,) = root.tables(ModelSlot.SUBGRAPHS, "subgraph")
    tables = graph.tables(SubGraphSlot.TENSORS, "tensor")
    for index in int8:
        table = tables[index]
        buf[table.field(TensorSlot.TYPE)] = 3  # UINT8
        quant = table.table(TensorSlot.QUANTIZATION, "quantization")
        start, count = quant.span(QuantizationSlot.ZERO_POINT, 8)
        zero_point = np.frombuffer(data, "<i8", count, start)
        zero_point += 128
    model = Model(data)
    for index in int8:
        if model.is_constant(index):
            model.tensor_data(index).view(np.uint8)[...] ^= 0x80
    return model.to_bytes()


def bench_model(arch: str, kind: str) -> Path:
    """MobileNetV2 1.0/224 or the FSDD CNN as float32, uint8 or int8, cached."""

    def build() -> bytes:
        keras_model = _keras(arch)
        if kind == "float32":
            return common.to_tflite(keras_model)
        if kind == "int8":
            return _int8(keras_model, per_tensor=False)
        return _as_uint8(_int8(keras_model, per_tensor=True))

    return common.cached(f"{arch}_{kind}_v2.tflite", build, log)


def random_samples(n: int, model: Model, seed: int = 0) -> np.ndarray:
    shape = model.tensor(model.main.inputs[0]).shape[1:]
    return np.random.default_rng(seed).standard_normal((n, *shape)).astype(np.float32)


# ----- (a) recording overhead --------------------------------------------------------------------


def measure_record(arch: str, kind: str, threads: int, cfg: Config, gate) -> dict:
    """Seconds per sample (wall and CPU) of plain invoke, instrumented invoke, record in line and
    record overlapped, interleaved. Each round records into a fresh map; the fold that turns its
    running sums into S_in/S_out runs once per recording (when the map is read) and is timed apart.
    """
    model = Model.load(bench_model(arch, kind))
    n = cfg.samples_a[arch]
    xs = random_samples(n, model)
    watched = ActivationMap(model).watched
    plain = Runner(model, num_threads=threads)
    runner = Runner(model, watched, num_threads=threads)
    second = Runner(model, watched, num_threads=threads)  # overlapped: runners take turns
    cpu: dict[str, list[float]] = {}  # process CPU seconds per sample, all threads
    fold_s: list[float] = []

    def plain_loop(_):
        for x in xs:
            plain.run(x, raw=True)

    def invoke_loop(_):
        for x in xs:
            runner.run(x, raw=True)

    def record_loop(amap):  # what record(overlap=False) runs
        for x in xs:
            amap.update(runner.run(x, raw=True))

    def overlapped_loop(amap):  # what record(overlap=True) runs
        sums = _Overlapped(amap, (runner, second))
        try:
            for x in xs:
                sums.run(x)
        finally:
            sums.close()

    def variant(label: str, loop):
        def run() -> float:
            amap = ActivationMap(model)  # setup, once per recording
            wall, cpu0 = time.perf_counter(), time.process_time()
            loop(amap)
            cpu.setdefault(label, []).append((time.process_time() - cpu0) / n)
            seconds = (time.perf_counter() - wall) / n
            if label == "record":
                fold_s.append(common.timed(lambda: amap.s_in(0)))
            return seconds

        return run

    variants = {
        "plain": variant("plain", plain_loop),
        "invoke": variant("invoke", invoke_loop),
        "record": variant("record", record_loop),
        "overlapped": variant("overlapped", overlapped_loop),
    }
    for fn in variants.values():  # warm-up: first invocations, page faults, caches
        fn()
    cpu.clear()
    fold_s.clear()
    log(f"(a) {ARCHS[arch]} {kind}, {threads} thread(s), {cfg.rounds_a} rounds x {n} samples")
    res = common.interleave(variants, cfg.rounds_a, log, gate)
    amap = ActivationMap(model)
    return {
        "model": f"{ARCHS[arch]} {kind}",
        "arch": arch,
        "kind": kind,
        "threads": threads,
        "n": n,
        "times": res.picked(),
        "cpu": {k: res.pick(v) for k, v in cpu.items()},
        "fold_s": common.median(fold_s),
        "rounds": res.describe(),
        "quiet": res.from_quiet,
        "watched": len(watched),
        "layers": len(amap.layers),
        "elements": amap.elements(),
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
        pruned = prune.apply(m, chosen, in_place=True)  # as the prune operation does
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


# ----- (d) start-up ------------------------------------------------------------------------------


def measure_startup(cfg: Config, gate) -> dict:
    """CPU seconds of `edgeprune --help` and of `python -c pass`, each a child process."""
    script = Path(sys.executable).with_name("edgeprune")
    helped = [str(script), "--help"] if script.exists() else [sys.executable, "-m", "edgeprune"]
    commands = {"python -c pass": [sys.executable, "-c", "pass"], "edgeprune --help": helped}
    if not script.exists():
        commands["edgeprune --help"].append("--help")
    cpu: dict[str, list[float]] = {name: [] for name in commands}

    def child(name: str):
        def run() -> float:
            seconds, cpu_s, _, _ = common.run_child(commands[name])
            cpu[name].append(cpu_s)
            return seconds

        return run

    log(f"(d) start-up, {cfg.rounds_d} rounds")
    res = common.interleave({name: child(name) for name in commands}, cfg.rounds_d, log, gate)
    return {
        "commands": {
            name: " ".join(Path(a).name if i == 0 else a for i, a in enumerate(c))
            for name, c in commands.items()
        },
        "times": res.picked(),
        "cpu": {k: res.pick(v) for k, v in cpu.items()},
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


def record_ratios(r: dict) -> dict[str, float]:
    """Median ratios of one (a) result: CPU and wall, record and overlapped, over plain."""
    t, c = r["times"], r["cpu"]
    plain, plain_cpu = common.median(t["plain"]), common.median(c["plain"])
    return {
        "invoke wall": common.median(t["invoke"]) / plain,
        "record wall": common.median(t["record"]) / plain,
        "record cpu": common.median(c["record"]) / plain_cpu,
        "overlapped wall": common.median(t["overlapped"]) / plain,
        "overlapped cpu": common.median(c["overlapped"]) / plain_cpu,
    }


def report(
    cfg: Config, info: dict, a: list[dict], b: list[dict], c: dict, d: dict, elapsed: float
) -> str:
    targets: list[tuple[str, str, str, bool, str, bool]] = []
    for r in a:
        if r["threads"] != 1:
            continue
        q = record_ratios(r)
        targets.append(
            (
                f"(a) record/plain, {r['model']}, 1 thread, CPU time",
                f"<= {RECORD_TARGET}x",
                f"{q['record cpu']:.2f}x",
                q["record cpu"] <= RECORD_TARGET,
                f"wall {q['record wall']:.2f}x",
                True,  # a CPU-time ratio: other processes disturb it little
            )
        )
        targets.append(
            (
                f"(a) record/plain, {r['model']}, 1 interpreter thread + sums on a 2nd, wall",
                f"<= {OVERLAP_TARGET}x",
                f"{q['overlapped wall']:.2f}x",
                q["overlapped wall"] <= OVERLAP_TARGET,
                f"CPU {q['overlapped cpu']:.2f}x",
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
                f"<= {PRUNE_TARGET_S[variant]:.1f} s",
                f"{s:.2f} s",
                s <= PRUNE_TARGET_S[variant],
                f"CPU {common.median(c['cpu'][variant]):.2f} s",
                c["quiet"],
            )
        )
    rss = c["cli_rss"] / c["size"]
    targets.append(
        (
            f"(c) peak RSS of the CLI prune / model file ({c['size'] / 1e6:.0f} MB)",
            f"<= {PRUNE_RSS_TARGET}x",
            f"{rss:.2f}x",
            rss <= PRUNE_RSS_TARGET,
            f"{c['cli_rss'] / 2**20:.0f} MiB",
            True,
        )
    )
    startup = common.median(d["cpu"]["edgeprune --help"]) / common.median(
        d["cpu"]["python -c pass"]
    )
    startup_wall = common.median(d["times"]["edgeprune --help"]) / common.median(
        d["times"]["python -c pass"]
    )
    targets.append(
        (
            "(d) `edgeprune --help` / `python -c pass`, CPU time",
            f"<= {STARTUP_TARGET}x",
            f"{startup:.2f}x",
            startup <= STARTUP_TARGET,
            f"wall {startup_wall:.2f}x",
            True,
        )
    )

    lines = [
        "## core_perf: recording overhead, memory vs. sample count, prune-and-save speed, start-up",
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
        "Each target is judged on the measure it names (CPU time or wall time); the last column"
        " gives the other one. A verdict marked (busy rounds) is a wall-time verdict resting on"
        " rounds in which other processes competed for the CPU.",
        "",
        "| measurement | target | measured | verdict | the other measure |",
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
        "Plain: `Runner(model).run(x, raw=True)`. Invoke: the instrumented model"
        " (`Runner(model, amap.watched)`) alone. Record: invoke + `amap.update(...)` in line, as"
        " `record(..., overlap=False)`. Overlapped: the same with the sums on a second thread"
        " (two runners take turns: the sums read one runner's tensors while the other invokes, no"
        " copies), as `record(..., overlap=True)`. A fresh"
        " map per round; the fold of the running sums into S_in/S_out, which runs once per"
        " recording (when the map is read or saved), is timed apart. Random float32 inputs"
        " (quantized by the runner for integer models); wall ms per sample; CPU = this process's"
        " CPU time (all threads) per sample.",
        "",
        "| model | threads | samples x rounds | plain ms | plain CPU ms | invoke/plain"
        " | record/plain, CPU | record/plain, wall | overlapped/plain, wall"
        " | overlapped/plain, CPU | per-round record/plain (wall) | fold at read, ms |",
        "|---|---|---|---|---|---|---|---|---|---|---|---|",
    ]
    for r in a:
        t, q = r["times"], record_ratios(r)
        per_round = common.paired_ratios(t["record"], t["plain"])
        lines.append(
            f"| {r['model']} | {r['threads']} | {r['n']} x {len(t['plain'])}"
            f" | {ms(common.median(t['plain']))} | {ms(common.median(r['cpu']['plain']))}"
            f" | {q['invoke wall']:.2f}x | {q['record cpu']:.2f}x | {q['record wall']:.2f}x"
            f" | {q['overlapped wall']:.2f}x | {q['overlapped cpu']:.2f}x"
            f" | {min(per_round):.2f}-{max(per_round):.2f}x | {ms(r['fold_s'])} |"
        )
    lines.append("")
    for r in a:
        lines.append(f"- {r['model']}, {r['threads']} thread(s): {r['rounds']}.")
    for r in a[:: len(cfg.threads)]:
        lines.append(
            f"- {r['model']}: {r['layers']} prunable layers, {r['watched']} watched tensors,"
            f" {r['elements'] / 1e6:.2f} M activation values summed per sample."
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
        " `prune.masks` + `prune.apply(in_place=True)` + `Model.save` (atomic: temp file, fsync,"
        " rename), as the prune operation runs them. CLI:"
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
    lines += [
        "",
        "### (d) Start-up: `edgeprune --help` beside `python -c pass`",
        "",
        "Each a child process (the same launcher as (b)); CPU = user + system seconds.",
        "",
        "| command | median wall s | median CPU s |",
        "|---|---|---|",
        *(
            f"| `{d['commands'][name]}` | {common.median(d['times'][name]):.3f}"
            f" | {common.median(d['cpu'][name]):.3f} |"
            for name in d["times"]
        ),
        "",
        f"Rounds: {d['rounds']}.",
    ]
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

    for arch in ARCHS:
        for kind in KINDS:
            bench_model(arch, kind)
    models_b = {
        "small CNN": tests_model("small_cnn"),
        "MobileNetV2 0.35/96": tests_model("mobilenet_v2_shaped"),
    }
    big_dense()
    build_s = time.perf_counter() - start

    gate = common.QuietGate(args.max_wait)
    a = [
        measure_record(arch, kind, threads, cfg, gate)
        for arch in ARCHS
        for kind in KINDS
        for threads in cfg.threads
    ]
    with tempfile.TemporaryDirectory(prefix="edgeprune-core-perf-") as tmp:
        b = [measure_rss(name, path, cfg, Path(tmp)) for name, path in models_b.items()]
        c = measure_prune(cfg, Path(tmp), gate)
    d = measure_startup(cfg, gate)
    elapsed = time.perf_counter() - start
    info["load_end"] = os.getloadavg()
    info["others_cpu"] = common.others_cpu_share(snapshot, common.cpu_snapshot())
    info["waited"] = gate.waited_s
    info["max_wait"] = args.max_wait
    log(f"model building/caching took {build_s:.0f} s of {elapsed:.0f} s")
    text = report(cfg, info, a, b, c, d, elapsed)
    common.write_section(SECTION, text)
    print(text)
    log(f"wrote the {SECTION} section of {common.RESULTS.relative_to(common.REPO)}")
    return 0


if __name__ == "__main__":
    with contextlib.suppress(KeyboardInterrupt):
        sys.exit(main())
    sys.exit(130)
