"""What the command line prints for each operation's result (the same for local and remote runs).

`RENDERERS[name](result)` yields the lines for stdout; `--json` prints `result.to_dict()` instead.
"""

from __future__ import annotations

import json
from collections import Counter
from collections.abc import Callable, Iterator
from typing import Any

from .. import operations as ops
from ..errors import EdgepruneError
from ..host import operations as host_ops
from ..host.groups import GroupRun
from ..operation import Result

Lines = Iterator[str]
RENDERERS: dict[str, Callable[[Any], Lines]] = {}
GiB = 2**30


def renders(name: str):
    """Register the decorated function as the renderer of operation `name`."""

    def add(fn: Callable[[Any], Lines]) -> Callable[[Any], Lines]:
        RENDERERS[name] = fn
        return fn

    return add


def renders_line(name: str, line: Callable[[Any], str]) -> None:
    """Register the renderer of operation `name` whose result prints as one line, `line(result)`."""
    renders(name)(lambda result: iter([line(result)]))


def render(name: str, result: Result) -> Lines:
    if isinstance(result, GroupRun):  # a device verb run on a group of boards
        return _group_run(name, result)
    return RENDERERS[name](result)


def show(name: str, result: Result, as_json: bool) -> None:
    """Print `result` (rendered, or as JSON); a result that reports a problem exits 2 after."""
    if as_json:
        print(json.dumps(result.to_dict(), indent=2))
    else:
        for line in render(name, result):
            print(line)
    problem = result.problem()
    if problem:
        raise EdgepruneError(problem)


def human(n: float | None, unit: str = "") -> str:
    """1234567 -> '1.23 M' (or '1.18 MiB' for unit 'B')."""
    if n is None:
        return "n/a"
    step, names = (
        (1024.0, ("B", "KiB", "MiB", "GiB", "TiB"))
        if unit == "B"
        else (1000.0, ("", "k", "M", "G", "T"))
    )
    value, i = float(n), 0
    while abs(value) >= step and i < len(names) - 1:
        value, i = value / step, i + 1
    if i == 0:
        return f"{int(value):,}" + (" B" if unit == "B" else "")
    return f"{value:.3g} {names[i]}"


def percent(value: float | None) -> str:
    return "—" if value is None else f"{value:.1%}"


def _tensors(info: Any) -> Lines:
    for kind in ("inputs", "outputs"):
        for t in getattr(info, kind):
            yield f"  {kind[:-1]:<6} {t['name']} {t['shape']} {t['dtype']}"


# ------------------------------------------------------------------------------------- the core


@renders("inspect")
def _inspect(info: ops.InspectResult) -> Lines:
    yield f"{info.model}: {info.bytes:,} bytes"
    yield from _tensors(info)
    counts = Counter(info.operators)
    yield "operators: " + ", ".join(f"{name}×{n}" for name, n in counts.most_common())
    row = "{:>4} {:<10} {:<16} {:>10} {:>10} {:>10}  {}".format
    yield "\n" + row("op", "layer", "weights", "params", "nonzero", "bytes", "quantization")
    for r in info.layers:
        shape = "x".join(map(str, r["weight_shape"]))
        numbers = (f"{r[k]:,}" for k in ("params", "nonzero", "weight_bytes"))
        yield row(r["op"], r["opcode"][:10], shape, *numbers, r["weights"])
    t = info.totals
    numbers = (f"{t[k]:,}" for k in ("params", "nonzero", "weight_bytes"))
    yield row("", "total", "", *numbers, f"sparsity {t['sparsity']:.1%}")
    for s in info.skipped:
        yield f"skipped op {s['op']} {s['opcode']}: {s['reason']}"
    for note in info.notes:
        yield f"note: {note}"


renders_line(
    "record", lambda r: f"recorded {r.samples} samples over {r.layers} layers -> {r.output}"
)


@renders("prune")
def _prune(r: ops.PruneResult) -> Lines:
    if r.note:
        yield f"warning: {r.note}"
    yield (
        f"wrote {r.output}: {r.zero_weights:,} of {r.weights:,} weights are zero "
        f"(measured sparsity {r.measured_sparsity:.1%}, requested {r.requested_sparsity:.1%})"
    )


@renders("thin")
def _thin(r: ops.ThinResult) -> Lines:
    yield (
        f"wrote {r.output}: removed {r.removed_groups} of {r.free_groups} channel groups "
        f"({r.channels_removed:,} tensor channels)"
        + (f", refit {r.repaired_layers} layers on your data" if r.repaired_layers else "")
    )
    for name in ("file_bytes", "macs", "params", "peak_bytes"):
        before, after = r.before[name], r.after[name]
        ratio = after / before if before else 1.0
        yield f"  {name.replace('_', ' '):<11} {before:>12,} -> {after:>12,}  ({ratio:.2f}x)"
    for why, n in r.kept_reasons.items():
        yield f"kept {n} groups: {why}"
    for line in r.frozen_ops:
        yield f"channels kept around {line}"


def stage_line(stage: dict[str, Any]) -> str:
    """One line per stage: what it did, its label-free estimate and, with --test, the truth."""
    name, check = stage["name"], stage["check"]
    if name == "source":
        line = f"source: estimated accuracy {percent(stage['estimated_accuracy'])}"
    elif stage["applied"]:
        line = f"{name}: kept"
    elif check is None:
        return f"{name}: skipped ({stage['reason']})"
    else:
        line = f"{name}: refused, {stage['reason']}"
    if check is not None:
        line += (
            f"; estimated accuracy {percent(check['before'])} -> {percent(check['after'])} "
            f"(lower bound of the change {100 * check['lower']:+.1f} pts)"
        )
    if name == "prune" and stage["applied"]:
        details = stage["details"]
        line += f"; sparsity {details['sparsity']:.2f} (measured {details['measured']:.1%})"
        if details.get("note"):
            line += f"; warning: {details['note']}"
    if stage["proposed_test_accuracy"] is not None:
        line += f"; held-out accuracy of the proposal {percent(stage['proposed_test_accuracy'])}"
    elif name == "source" and stage["test_accuracy"] is not None:
        line += f", held-out {percent(stage['test_accuracy'])}"
    return line


@renders("personalize")
def _personalize(r: ops.PersonalizeResult) -> Lines:
    report = r.report
    yield f"wrote {r.output}"
    for note in report["notes"]:
        yield f"note: {note}"
    for stage in report["stages"]:
        yield f"  {stage_line(stage)}"
    source, final = report["stages"][0], report["stages"][-1]
    if final["test_accuracy"] is not None:
        yield (
            f"held-out accuracy: source {source['test_accuracy']:.1%} -> "
            f"{final['test_accuracy']:.1%}"
        )
    yield (
        f"size: {r.bytes:,} bytes, as the source (same graph, weights rewritten in place); "
        f"deflate-compressed {r.deflated_source:,} -> {r.deflated_output:,} bytes"
    )
    for path in r.written:
        yield f"report: {path}"


@renders("reference")
def _reference(r: ops.ReferenceResult) -> Lines:
    yield (
        f"wrote {r.output}: {r.classes} classes, {r.samples} validation samples, source "
        f"accuracy {r.accuracy:.1%}, temperature {r.temperature:.2f}"
    )


@renders("profile")
def _profile(info: ops.ProfileResult) -> Lines:
    t, m = info.totals, info.memory
    yield f"{info.model}  ({info.convention}; {info.shapes})"
    yield from _tensors(info)
    row = "{:>4} {:<22} {:<16} {:>10} {:>10} {:>10} {:>10} {:>10}".format
    yield "\n" + row("op", "opcode", "output", "MACs", "eff. MACs", "params", "nonzero", "bytes")
    for r in info.ops:
        shape = "x".join(map(str, r["output_shape"]))
        macs = "not prof." if r["macs"] is None else human(r["macs"])
        numbers = (human(r["effective_macs"]), human(r["params"]), human(r["nonzero_params"]))
        yield row(r["op"], r["opcode"][:22], shape[:16], macs, *numbers, human(r["weight_bytes"]))
    numbers = (human(t["effective_macs"]), human(t["params"]), human(t["nonzero_params"]))
    yield row("", "total", "", human(t["macs"]), *numbers, human(t["weight_bytes"]))
    yield (
        f"\nMACs {t['macs']:,} (effective {t['effective_macs']:,}); params {t['params']:,} "
        f"({t['nonzero_params']:,} non-zero, sparsity {t['sparsity']:.1%})"
    )
    yield (
        f"weights {human(t['weight_bytes'], 'B')}; file {human(t['file_bytes'], 'B')}, "
        f"gzip -9 {human(t['gzip_bytes'], 'B')}"
    )
    yield (
        f"peak activation memory: arena {human(m['arena_bytes'], 'B')} ({m['arena_bytes']:,} B, "
        f"greedy plan); {human(m['peak_live_bytes'], 'B')} live at op {m['peak_op']} "
        "(lower bound)"
    )
    if info.not_profiled:
        names = ", ".join(f"{r['opcode']} (op {r['op']})" for r in info.not_profiled)
        yield f"not profiled ({len(info.not_profiled)} ops, not in the MAC totals): {names}"
    for note in info.notes:
        yield f"note: {note}"


@renders("compare")
def _compare(result: ops.CompareResult) -> Lines:
    row = "{:<16} {:>14} {:>14} {:>8}".format
    yield f"A: {result.a}\nB: {result.b}\n({result.convention})\n"
    yield row("", "A", "B", "B/A")
    for r in result.totals:
        unit = "B" if r["metric"].endswith("bytes") else ""
        ratio = "n/a" if r["ratio"] is None else f"{r['ratio']:.3f}"
        yield row(r["metric"], human(r["a"], unit), human(r["b"], unit), ratio)
    if result.ops:
        yield "\n" + row("op", "eff. MACs A", "eff. MACs B", "B/A")
        for r in result.ops:
            ratio = "n/a" if r["ratio"] is None else f"{r['ratio']:.3f}"
            a, b = r["effective_macs"]
            yield row(f"{r['op']} {r['opcode'][:12]}", human(a), human(b), ratio)
    elif not result.same_graph:
        yield "\n(the models run different op sequences: no per-op comparison)"
    for side in ("a", "b"):
        missing = result.not_profiled[side]
        if missing:
            names = ", ".join(sorted({r["opcode"] for r in missing}))
            yield f"not profiled in {side.upper()}: {len(missing)} ops ({names})"
    if result.plot:
        yield f"plot: {result.plot}"


@renders("bench")
def _bench(r: ops.BenchResult) -> Lines:
    lat = r.latency_ms
    plural = "s" if r.threads != 1 else ""
    yield f"{r.model}: {r.runtime}, delegate {r.delegate}, {r.threads} thread{plural}"
    if r.note:
        yield f"  note: {r.note}"
    yield (
        f"init {r.init_ms:.1f} ms; {r.runs} runs after {r.warmup} "
        f"warm-up: min {lat['min']:.3f}, p50 {lat['p50']:.3f}, p95 {lat['p95']:.3f}, "
        f"max {lat['max']:.3f} ms (mean {lat['mean']:.3f} ± {lat['std']:.3f})"
    )
    yield f"peak RSS +{human(r.peak_rss_delta_bytes, 'B')} ({r.rss_method})"
    if r.front_end:
        f = r.front_end
        yield f"front end (--recipe): p50 {f['p50']:.3f} ms, min {f['min']:.3f} ms on {f['input']}"
    if r.samples:
        s = r.samples
        how = f"read, {s['recipe']} front end" if s["recipe"] else "read"
        yield f"{s['count']} samples from {s['source']}, each timed:"
        for name, ms, what in (("preprocessing", s["preprocess_ms"], f"  ({how}, to the input)"),
                               ("inference", s["inference_ms"], "")):  # fmt: skip
            yield f"  {name:<13} p50 {ms['p50']:.3f} ms, p90 {ms['p90']:.3f} ms per sample{what}"
    e = r.energy
    if e is None:
        return
    if e["meter"] == "estimate":
        low, high = e["range_joules"]
        yield (
            f"energy (estimate, no meter): {e['joules_per_inference'] * 1e3:.4g} mJ per "
            f"inference ({low * 1e3:.3g}-{high * 1e3:.3g} mJ); {e['source']}"
        )
        for reason in e.get("no_meter_because", []):
            yield f"  skipped {reason}"
    else:
        yield (
            f"energy ({e['meter']}): {e['joules_per_inference'] * 1e3:.4g} mJ per inference, "
            f"idle {e['idle_watts']:.3f} W subtracted (active {e['active_watts']:.3f} W over "
            f"{e['active_seconds']:.1f} s, {e['inferences']} inferences); {e['method']}"
        )


@renders("verify")
def _verify(report: ops.VerifyResult) -> Lines:
    title = f"{report.name or '?'} {report.version or ''}".strip()
    yield f"{report.package}: {title}"
    yield from (f"  ok: {check}" for check in report.checks)
    yield from (f"  PROBLEM: {problem}" for problem in report.problems)


renders_line("unpack", lambda r: f"unpacked {len(r.files)} files into {r.output}")


# ------------------------------------------------------------------------------------- the host


@renders("convert")
def _convert(r: host_ops.ConvertResult) -> Lines:
    yield f"wrote {r.output}: {r.bytes:,} bytes, {r.mode}"
    for name, d in r.outputs.items():
        gap = f"max |tflite - source| {d['max_abs_diff']:.3g}, mean {d['mean_abs_diff']:.3g}"
        on = f"{d['samples']} samples, {r.checked_on}"
        yield f"  {name}: {gap} (largest |source| {d['max_abs_source']:.3g}; {on})"


@renders("package")
def _package(r: host_ops.PackageResult) -> Lines:
    m = r.manifest
    recipe = m["preprocessing"]
    yield (
        f"wrote {r.output}: {m['name']} {m['version']}, model "
        f"{m['model']['bytes']:,} bytes, {len(m['files'])} extra file(s), "
        f"recipe {recipe['kind'] if recipe else 'none'}, "
        f"{len(m['labels']) if m['labels'] else 'no'} labels, "
        f"{'a' if r.reference else 'no'} source reference"
    )


renders_line("device add", lambda r: f"added {r.name}: {r.url}")


def _names(rows: dict[str, str], none: str) -> Lines:
    """A line per name and what it stands for; `none` (what to do) when there are none."""
    if not rows:
        yield none
    for name, value in rows.items():
        yield f"{name:<16} {value}"


@renders("device list")
def _device_list(r: host_ops.DeviceList) -> Lines:
    return _names(
        r.devices, f"no devices in {r.registry}; add one with `edgeprune device add NAME URL`"
    )


renders_line("device remove", lambda r: f"removed {r.name}")


@renders("device info")
def _device_info(r: host_ops.DeviceInfo) -> Lines:
    info = r.info
    rt, mem, disk, tpu = info.get("runtime"), info.get("memory"), info["disk"], info["edgetpu"]
    tpu_text = tpu["hint"] + (f" ({', '.join(tpu['devices'])})" if tpu["devices"] else "")
    memory = (
        f"{mem['available'] / GiB:.1f} GiB free of {mem['total'] / GiB:.1f} GiB"
        if mem
        else "unknown"
    )
    rows = [
        ("board", info["board"]),
        ("os", info["os"]),
        ("python", f"{info['python']} ({info['machine']}, {info['cpus']} cpus)"),
        ("edgeprune", f"{info['edgeprune']}, agent protocol {info['protocol']}"),
        ("runtime", f"{rt['name']} {rt['version']}" if rt else "none: pip install ai-edge-litert"),
        ("edge tpu", tpu_text),
        ("fleet", _fleet_text(info.get("fleet"), r.label)),
        ("memory", memory),
        (
            "disk",
            f"{disk['free'] / GiB:.1f} GiB free of {disk['total'] / GiB:.1f} GiB "
            f"(work directory {info['workdir']})",
        ),
        ("operations", ", ".join(info["operations"]) or info.get("problem", "none")),
    ]
    yield f"{r.label}: {r.url}"
    for key, value in rows:
        yield f"  {key:<11}{value}"
    if r.mismatch:
        name = r.label if "://" not in r.label else "NAME"
        yield (
            f"  warning    {r.mismatch}: run `edgeprune device setup {name}` to install this "
            "laptop's edgeprune there"
        )


def _fleet_text(fleet: dict | None, label: str) -> str:
    """The board's part in a fleet, in a few words (an older agent reports none)."""
    if fleet is None:
        return "unknown (the board's agent is older than this edgeprune)"
    if not fleet["flwr"]:
        name = label if "://" not in label else "NAME"
        return f"no Flower: edgeprune device setup {name} --fleet --superlink HOST:PORT"
    node = "a SuperNode set up" if fleet["supernode_set_up"] else "no SuperNode set up"
    running = "running" if fleet["supernode_running"] else "not running"
    return f"flwr {fleet['flwr']}, {node}, flower-supernode {running}"


@renders("device setup")
def _device_setup(r: host_ops.DeviceSetup) -> Lines:
    rt = f"{r.runtime['name']} {r.runtime['version']}" if r.runtime else "no runtime"
    how = "from wheels pushed from here" if r.offline else "with the board's pip"
    if r.changed:
        yield (
            f"{r.device}: installed edgeprune {r.edgeprune} and {rt} into {r.venv} {how} "
            f"({len(r.pushed)} file(s) copied, {r.seconds:.0f} s)"
        )
    else:
        yield f"{r.device}: up to date: edgeprune {r.edgeprune} and {rt} in {r.venv}"
    yield f"  board      {r.machine}, Python {r.board_python}"
    if r.requirements:
        yield f"  installed  {' '.join(r.requirements)}"
    if r.registered:
        yield f"  device     {r.device} now runs the agent with {r.python}: {r.url}"
    else:
        yield f"  url        use {r.url}"
    if r.fleet:
        f = r.fleet
        tls = "TLS" if f["tls"] else "--insecure (no TLS: give --superlink-ca on a real network)"
        yield f"  supernode  {f['script']} joins {f['superlink']} ({tls}), samples {f['data']}"
        state = "enabled and started" if f["enabled"] else "written, not enabled (--enable)"
        yield f"  unit       {f['unit']}: {state}"


def _transfer(verb: str, route: str, r: host_ops.Transfer) -> str:
    if r.files or not r.sha256:  # a folder
        unchanged = f"; {r.skipped} unchanged, not sent" if r.skipped else ""
        return f"{verb} {route}/ ({len(r.files)} files, {r.size:,} bytes{unchanged})"
    if r.skipped:
        return f"{route}: already there with the same content (sha256 {r.sha256[:16]}…), not sent"
    resumed = f", resumed at byte {r.resumed_from:,}" if r.resumed_from else ""
    return f"{verb} {route} ({r.size:,} bytes, sha256 {r.sha256[:16]}…{resumed})"


renders_line("push", lambda r: _transfer("pushed", f"{r.source} -> {r.device}:{r.path}", r))
renders_line("pull", lambda r: _transfer("pulled", f"{r.device}:{r.source} -> {r.path}", r))


@renders("ls")
def _ls(r: host_ops.Listing) -> Lines:
    """Like `ls -l`: size, modification time (UTC), name (folders end in /), relative to the
    listed folder."""
    import time

    base = f"{r.path}/" if r.path and r.type == "dir" else ""
    for e in r.entries:
        when = time.strftime("%Y-%m-%d %H:%M", time.gmtime(e["mtime"]))
        name = e["path"][len(base) :] if e["path"].startswith(base) else e["path"]
        size = "" if e["type"] == "dir" else f"{e['size']:,}"
        yield f"{size:>15}  {when}  {name}{'/' if e['type'] == 'dir' else ''}"
    if not r.entries:
        yield f"{r.device}:{r.path or '.'} is empty"
    if r.truncated:
        yield f"(more entries than one reply holds: list a subfolder of {r.path or '.'})"


renders_line(
    "recipe",
    lambda r: (
        f"wrote {r.output}: {r.kind} recipe making {'x'.join(map(str, r.shape))} inputs; "
        "use it with --recipe or `edgeprune package --recipe`"
    ),
)


# ------------------------------------------------------------------------------- groups of boards


def _group_run(name: str, r: GroupRun) -> Lines:
    """One row per board: status, time, and the first line its own result prints as."""
    result_type = operation_result(name)
    ok = len(r.boards) - len(r.failed)
    yield f"{name} on {r.group} ({len(r.boards)} boards): {ok} ok, {len(r.failed)} failed"
    width = max([len(b["board"]) for b in r.boards] + [5])
    yield f"  {'board':<{width}}  status  {'time':>8}  result"
    for b in r.boards:
        if b["ok"] and result_type is not None:
            text = next(iter(render(name, result_type.from_dict(b["result"]))), "")
        else:
            text = b.get("error", "")
        status = "ok" if b["ok"] else "FAILED"
        first, *more = text.splitlines() or [""]  # an error's later lines (pip's) under its first
        yield f"  {b['board']:<{width}}  {status:<6}  {b['seconds']:>6.1f} s  {first}"
        yield from (f"  {'':<{width + 20}}{line}" for line in more)


def operation_result(name: str):
    """The result type of registered operation `name` (None if there is none)."""
    from .. import operation

    op = operation.registered().get(name)
    return op.result if op is not None else None


renders_line("device group add", lambda r: f"group {r.group}: {', '.join(r.boards)}")
renders_line(
    "device group remove", lambda r: f"removed group {r.group} (its boards stay registered)"
)


@renders("device group list")
def _group_list(r: host_ops.GroupList) -> Lines:
    groups = {name: ", ".join(boards) for name, boards in r.groups.items()}
    return _names(
        groups,
        f"no groups in {r.registry}; add one with `edgeprune device group add NAME BOARD...`",
    )
