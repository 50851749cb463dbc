"""`edgeprune profile`, `compare` and `bench`: what a model costs, statically and when it runs.

`register` only declares arguments; the measuring modules are imported by the commands.
"""

from __future__ import annotations

import argparse
import contextlib
import json
from typing import Any


def register(sub: argparse._SubParsersAction) -> None:
    """Add the measuring commands to edgeprune's parser."""
    p = sub.add_parser(
        "profile",
        help="MACs (dense and effective), parameters, weight bytes, peak activation memory",
        description="Static profile: 1 MAC = one multiply-add; effective MACs count only "
        "non-zero weights. MODEL is a .tflite file or an .edgepkg package.",
    )
    p.add_argument("model", help=".tflite file or .edgepkg package")
    p.add_argument(
        "--input-shape",
        metavar="SHAPE",
        help="profile for this input shape, e.g. 1,224,224,3 (needed when the input is dynamic)",
    )
    p.add_argument("--json", action="store_true", help="print JSON instead of a table")
    p.set_defaults(func=cmd_profile)

    p = sub.add_parser("compare", help="two models' profiles side by side, with ratios B / A")
    p.add_argument("a", help=".tflite file or .edgepkg package (the reference)")
    p.add_argument("b", help=".tflite file or .edgepkg package")
    p.add_argument("--input-shape", metavar="SHAPE", help="as for profile, used for both")
    p.add_argument("--plot", metavar="PNG", help="also draw the comparison (needs matplotlib)")
    p.add_argument("--json", action="store_true", help="print JSON instead of a table")
    p.set_defaults(func=cmd_compare)

    p = sub.add_parser(
        "bench",
        help="latency percentiles, init time, peak RSS, delegate; energy per inference",
        description="Warm-up runs, then timed runs of invoke(). --energy measures energy per "
        "inference with idle power subtracted: auto (RAPL, INA2xx hwmon, Pi 5 PMIC, else an "
        "estimate), rapl, hwmon[:SENSOR], pi5-pmic, um24c|um25c|um34c:PORT[@BAUD], estimate.",
    )
    p.add_argument("model", help=".tflite file or .edgepkg package")
    p.add_argument("--runs", type=int, default=50, help="timed runs (default 50)")
    p.add_argument("--warmup", type=int, default=5, help="untimed runs first (default 5)")
    p.add_argument("--threads", type=int, default=1, help="interpreter threads (default 1)")
    p.add_argument(
        "--delegate",
        choices=("xnnpack", "none", "edgetpu"),
        default="xnnpack",
        help="xnnpack: LiteRT's default CPU delegate; none: reference kernels; edgetpu: the "
        "Coral Edge TPU through libedgetpu.so.1",
    )
    p.add_argument("--input-shape", metavar="SHAPE", help="for dynamic inputs, e.g. 1,96,96,3")
    p.add_argument("--energy", metavar="METER", help="auto or a meter name (see above)")
    p.add_argument(
        "--idle-seconds", type=float, default=2.0, help="idle power window (default 2 s)"
    )
    p.add_argument("-q", "--quiet", action="store_true", help="no progress bar")
    p.add_argument("--json", action="store_true", help="print JSON")
    p.set_defaults(func=cmd_bench)


def _print_json(obj: Any) -> None:
    print(json.dumps(obj, indent=2))


def human(n: float | None, unit: str = "") -> str:
    """1234567 -> '1.23 M' (or '1.18 MiB' for unit 'B')."""
    if n is None:
        return "n/a"
    step, names = (
        (1024.0, ("B", "KiB", "MiB", "GiB", "TiB"))
        if unit == "B"
        else (
            1000.0,
            ("", "k", "M", "G", "T"),
        )
    )
    value, i = float(n), 0
    while abs(value) >= step and i < len(names) - 1:
        value, i = value / step, i + 1
    if i == 0:
        return f"{int(value):,}" + (" B" if unit == "B" else "")
    return f"{value:.3g} {names[i]}"


def _profile(path: str, input_shape: str | None) -> dict[str, Any]:
    from .package import load_model
    from .profile import parse_shape, profile

    shape = parse_shape(input_shape) if input_shape else None
    return profile(load_model(path), shape)


def cmd_profile(args: argparse.Namespace) -> None:
    info = _profile(args.model, args.input_shape)
    if args.json:
        return _print_json(info)
    t, m = info["totals"], info["memory"]
    print(f"{info['model']}  ({info['convention']}; {info['shapes']})")
    for kind in ("inputs", "outputs"):
        for s in info[kind]:
            print(f"  {kind[:-1]:<6} {s['name']} {s['shape']} {s['dtype']}")
    row = "{:>4} {:<22} {:<16} {:>10} {:>10} {:>10} {:>10} {:>10}".format
    print("\n" + row("op", "opcode", "output", "MACs", "eff. MACs", "params", "nonzero", "bytes"))
    for r in info["ops"]:
        shape = "x".join(map(str, r["output_shape"]))
        macs = "not prof." if r["macs"] is None else human(r["macs"])
        numbers = (human(r["effective_macs"]), human(r["params"]), human(r["nonzero_params"]))
        print(row(r["op"], r["opcode"][:22], shape[:16], macs, *numbers, human(r["weight_bytes"])))
    numbers = (human(t["effective_macs"]), human(t["params"]), human(t["nonzero_params"]))
    print(row("", "total", "", human(t["macs"]), *numbers, human(t["weight_bytes"])))
    print(
        f"\nMACs {t['macs']:,} (effective {t['effective_macs']:,}); params {t['params']:,} "
        f"({t['nonzero_params']:,} non-zero, sparsity {t['sparsity']:.1%})"
    )
    print(
        f"weights {human(t['weight_bytes'], 'B')}; file {human(t['file_bytes'], 'B')}, "
        f"gzip -9 {human(t['gzip_bytes'], 'B')}"
    )
    print(
        f"peak activation memory: arena {human(m['arena_bytes'], 'B')} ({m['arena_bytes']:,} B, "
        f"greedy plan); {human(m['peak_live_bytes'], 'B')} live at op {m['peak_op']} "
        "(lower bound)"
    )
    if info["not_profiled"]:
        names = ", ".join(f"{r['opcode']} (op {r['op']})" for r in info["not_profiled"])
        print(f"not profiled ({len(info['not_profiled'])} ops, not in the MAC totals): {names}")


def cmd_compare(args: argparse.Namespace) -> None:
    from .profile import compare

    result = compare(_profile(args.a, args.input_shape), _profile(args.b, args.input_shape))
    if args.plot:
        from .host.charts import plot_compare

        result["plot"] = str(plot_compare(result, args.plot))
    if args.json:
        return _print_json(result)
    row = "{:<16} {:>14} {:>14} {:>8}".format
    print(f"A: {result['a']}\nB: {result['b']}\n({result['convention']})\n")
    print(row("", "A", "B", "B/A"))
    for r in result["totals"]:
        unit = "B" if r["metric"].endswith("bytes") else ""
        ratio = "n/a" if r["ratio"] is None else f"{r['ratio']:.3f}"
        print(row(r["metric"], human(r["a"], unit), human(r["b"], unit), ratio))
    if result["ops"]:
        print("\n" + row("op", "eff. MACs A", "eff. MACs B", "B/A"))
        for r in result["ops"]:
            ratio = "n/a" if r["ratio"] is None else f"{r['ratio']:.3f}"
            a, b = r["effective_macs"]
            print(row(f"{r['op']} {r['opcode'][:12]}", human(a), human(b), ratio))
    elif not result["same_graph"]:
        print("\n(the models run different op sequences: no per-op comparison)")
    for side in ("a", "b"):
        missing = result["not_profiled"][side]
        if missing:
            names = ", ".join(sorted({r["opcode"] for r in missing}))
            print(f"not profiled in {side.upper()}: {len(missing)} ops ({names})")
    if args.plot:
        print(f"plot: {result['plot']}")


def cmd_bench(args: argparse.Namespace) -> None:
    from tqdm import tqdm

    from .bench import bench
    from .package import load_model
    from .profile import parse_shape

    with contextlib.suppress(ImportError):  # the USB meters, where pyserial is installed
        from .host import usbmeter  # noqa: F401  (registers them)

    model = load_model(args.model)
    bar = tqdm(total=args.runs, desc="bench", unit="run", disable=args.quiet, leave=False)
    try:
        result = bench(
            model,
            runs=args.runs,
            warmup=args.warmup,
            threads=args.threads,
            delegate=args.delegate,
            input_shape=parse_shape(args.input_shape) if args.input_shape else None,
            energy=args.energy,
            idle_seconds=args.idle_seconds,
            progress=lambda n: bar.update(n - bar.n),
        )
    finally:
        bar.close()
    if args.json:
        return _print_json(result)
    lat = result["latency_ms"]
    threads = result["threads"]
    print(
        f"{result['model']}: {result['runtime']}, delegate {result['delegate']}, "
        f"{threads} thread{'s' if threads != 1 else ''}"
    )
    if "note" in result:
        print(f"  note: {result['note']}")
    print(
        f"init {result['init_ms']:.1f} ms; {result['runs']} runs after {result['warmup']} "
        f"warm-up: min {lat['min']:.3f}, p50 {lat['p50']:.3f}, p95 {lat['p95']:.3f}, "
        f"max {lat['max']:.3f} ms (mean {lat['mean']:.3f} ± {lat['std']:.3f})"
    )
    print(f"peak RSS +{human(result['peak_rss_delta_bytes'], 'B')} ({result['rss_method']})")
    e = result.get("energy")
    if e is None:
        return
    if e["meter"] == "estimate":
        low, high = e["range_joules"]
        print(
            f"energy (estimate, no meter): {e['joules_per_inference'] * 1e3:.4g} mJ per "
            f"inference ({low * 1e3:.3g}-{high * 1e3:.3g} mJ); {e['source']}"
        )
        for reason in e.get("no_meter_because", []):
            print(f"  skipped {reason}")
    else:
        print(
            f"energy ({e['meter']}): {e['joules_per_inference'] * 1e3:.4g} mJ per inference, "
            f"idle {e['idle_watts']:.3f} W subtracted (active {e['active_watts']:.3f} W over "
            f"{e['active_seconds']:.1f} s, {e['inferences']} inferences); {e['method']}"
        )
