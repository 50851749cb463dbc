"""`edgeprune bench` latency beside LiteRT's own benchmark tool and a bare invoke() loop.

LiteRT's C++ `benchmark_model` binary is not in any package registry this project can use (the
`litert-cli` package downloads it from a web server at run time), so the reference is the
benchmark tool that the `ai-edge-litert` wheel itself ships,
`python -m ai_edge_litert.tools.benchmark_litert_model` ("mirrors the C++ benchmark_litert_model
tool"; it runs the model through LiteRT's CompiledModel API on the XNNPACK CPU accelerator),
plus the closest plain alternative: `Interpreter.invoke()` in a loop, timed with perf_counter.

Every tool runs as its own child process with the same model, warm-up, runs and threads; the
three alternate round by round (rotated order) in this one run. Figures are medians over rounds
of each run's median latency; ratios are per-round edgeprune / reference, then their median.

    python benchmarks/bench_latency.py [--rounds 5] [--runs 50] [--threads 1]
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import tempfile
import textwrap
import time
from pathlib import Path

if __package__ in (None, ""):
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from benchmarks import common  # noqa: E402

BARE_LOOP = """
import json, sys, time
import numpy as np
from ai_edge_litert.interpreter import Interpreter
path, warmup, runs, threads = sys.argv[1], *map(int, sys.argv[2:5])
t0 = time.perf_counter()
it = Interpreter(model_path=path, num_threads=threads)
it.allocate_tensors()
init = time.perf_counter() - t0
d = it.get_input_details()[0]
x = np.random.default_rng(0).standard_normal(d["shape"])
if np.dtype(d["dtype"]).kind in "iu":
    x = np.clip(x * 40, -128, 127)
it.set_tensor(d["index"], x.astype(d["dtype"]))
for _ in range(warmup):
    it.invoke()
times = []
for _ in range(runs):
    s = time.perf_counter()
    it.invoke()
    times.append(time.perf_counter() - s)
ms = sorted(t * 1e3 for t in times)
print(json.dumps({"median_ms": ms[len(ms) // 2], "mean_ms": sum(ms) / len(ms),
                  "init_ms": init * 1e3}))
"""


def models() -> list[tuple[str, Path]]:
    """(label, cached .tflite) for the models measured; built on first use."""
    from benchmarks import profile_macs

    found = [
        ("small CNN 32x32 (float32)", common.cached("small_cnn_bench_float32_v1.tflite", _cnn))
    ]
    for label, constructor in (
        ("MobileNetV2 1.0/224 (float32)", "MobileNetV2"),
        ("MobileNetV1 1.0/224 (float32)", "MobileNet"),
        ("ResNet50 (float32)", "ResNet50"),
    ):
        name = f"keras_{constructor}_224_float32_v1.tflite"
        found.append((label, common.cached(name, lambda c=constructor: profile_macs.build(c))))
    found.append(
        (
            "MobileNetV2 1.0/224 (int8)",
            common.cached("keras_MobileNetV2_224_int8_v1.tflite", _mbv2_int8),
        )
    )
    return found


def _cnn() -> bytes:
    from tests import models as tm

    return tm.build("float32", "small_cnn")


def _mbv2_int8() -> bytes:
    import numpy as np

    from edgeprune.host.convert import _tf, convert, from_keras

    tf = _tf()
    tf.keras.backend.clear_session()
    model = tf.keras.applications.MobileNetV2(weights=None, input_shape=(224, 224, 3))
    source = from_keras(model, "MobileNetV2")
    samples = np.random.default_rng(0).standard_normal((16, 224, 224, 3)).astype(np.float32)
    try:
        return convert(source, "int8", samples)
    finally:
        source.close()


def run_tool(tool: str, model: Path, warmup: int, runs: int, threads: int, tmp: Path) -> float:
    """Median latency (ms) that `tool` reports for one child run."""
    py = sys.executable
    if tool == "edgeprune bench":
        argv = [py, "-m", "edgeprune", "bench", str(model), "--json", "-q"]
        argv += ["--warmup", str(warmup), "--runs", str(runs), "--threads", str(threads)]
        _, _, _, out = common.run_child(argv)
        return json.loads(out[out.index("{") :])["latency_ms"]["p50"]
    if tool == "LiteRT benchmark_litert_model":
        result = tmp / "litert.json"
        argv = [py, "-m", "ai_edge_litert.tools.benchmark_litert_model", "--model", str(model)]
        argv += ["--warmup_runs", str(warmup), "--num_runs", str(runs)]
        argv += ["--num_threads", str(threads), "--result_json", str(result)]
        common.run_child(argv)
        return json.loads(result.read_text())["latency"]["median_ms"]
    argv = [py, "-c", BARE_LOOP, str(model), str(warmup), str(runs), str(threads)]
    _, _, _, out = common.run_child(argv)
    return json.loads(out.strip().splitlines()[-1])["median_ms"]


TOOLS = ("edgeprune bench", "LiteRT benchmark_litert_model", "bare Interpreter.invoke loop")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--runs", type=int, default=50)
    parser.add_argument("--warmup", type=int, default=5)
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument(
        "--max-wait", type=float, default=300, help="seconds to wait in all for quiet moments"
    )
    args = parser.parse_args()
    started, info, cpu0 = time.time(), common.machine(), common.cpu_snapshot()
    rows, notes = [], []
    gate = common.QuietGate(args.max_wait)
    with tempfile.TemporaryDirectory(prefix="bench-latency-") as tmp:
        for label, path in models():
            print(f"{label}: {path.name}")
            variants = {
                tool: (
                    lambda t=tool, p=path: run_tool(
                        t, p, args.warmup, args.runs, args.threads, Path(tmp)
                    )
                )
                for tool in TOOLS
            }
            result = common.interleave(variants, args.rounds, gate=gate)
            got = result.picked()
            notes.append(f"{label}: {result.describe()}")
            ours = got[TOOLS[0]]
            cells = [f"{statistics.median(got[t]):.3f}" for t in TOOLS]
            per_round = [common.paired_ratios(ours, got[t]) for t in TOOLS[1:]]
            ratios = [statistics.median(r) for r in per_round]
            spread = [f"{min(r):.2f}-{max(r):.2f}" for r in per_round]
            rows.append(
                f"| {label} | {' | '.join(cells)} | {ratios[0]:.2f}x ({spread[0]}) | "
                f"{ratios[1]:.2f}x ({spread[1]}) |"
            )
    others = common.others_cpu_share(cpu0, common.cpu_snapshot())
    header = (
        "| model | edgeprune bench p50 (ms) | LiteRT benchmark_litert_model median (ms) | bare "
        "Interpreter.invoke loop median (ms) | edgeprune / LiteRT tool (per-round range) | "
        "edgeprune / bare loop (per-round range) |\n|---|---|---|---|---|---|"
    )
    body = f"""## bench_latency: `edgeprune bench` beside LiteRT's own benchmark tool

- Command (from the repository root): `{common.command()}`
- Code measured: {common.source_state()}
- Run at: {common.now()}; took {time.time() - started:.0f} s; other processes used
  {others:.0%} of the machine's CPU meanwhile
- Machine:
{textwrap.indent(common.machine_markdown(info), "  ")}

Each cell is the median over {args.rounds} rounds of one child process's median latency
({args.warmup} warm-up runs, then {args.runs} timed runs, {args.threads} thread(s), XNNPACK on
the CPU, random inputs). The three tools alternate round by round, in rotated order. LiteRT's
tool reports milliseconds to two decimals, so below about 1 ms its figures are coarse.

{header}
{chr(10).join(rows)}

Before each round the script waits for a moment when other processes leave the CPU idle (at
most {args.max_wait:.0f} s in all); rounds where others still used 10 % of the CPU or more count
as busy, and figures come from the quiet rounds when there are at least three:
{chr(10).join("- " + n for n in notes)}

What the reference is, honestly: LiteRT's C++ `benchmark_model` binary could not be obtained
here — no package registry reachable from this project ships it (the PyPI package `litert-cli`
downloads it from a web server at run time, which this machine cannot reach). The reference is
therefore the benchmark tool the `ai-edge-litert` 2.3.0 wheel ships,
`python -m ai_edge_litert.tools.benchmark_litert_model`, which its docstring says mirrors the C++
tool; it runs the model through LiteRT's CompiledModel API, while `edgeprune bench` and the bare
loop use the `Interpreter` API. Both use the XNNPACK CPU path. The bare loop is the closest
plain alternative: the same interpreter, no edgeprune code around `invoke()`.
"""
    common.write_section("bench_latency", body)
    print(f"wrote the bench_latency section of {common.RESULTS}")


if __name__ == "__main__":
    main()
