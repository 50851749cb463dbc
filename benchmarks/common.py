"""Shared helpers for the benchmark scripts: machine description, interleaved timing, a child
process's peak RSS, a cache of converted models, and the writer of one section of RESULTS.md.

Nothing here imports TensorFlow; scripts import it only inside the functions that build models.
"""

from __future__ import annotations

import contextlib
import datetime
import hashlib
import json
import os
import platform
import shlex
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Sequence
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
BENCHMARKS = REPO / "benchmarks"
CACHE = BENCHMARKS / "_cache"  # gitignored
RESULTS = BENCHMARKS / "RESULTS.md"
RESULTS_HEADER = (
    "# Benchmark results\n\n"
    "Each section below is written by the script it names, from one run of that script; "
    "no figure is typed by hand. Re-run the script to refresh its section.\n"
)

if str(REPO) not in sys.path:  # `python benchmarks/x.py` puts benchmarks/ first, not the repo
    sys.path.insert(0, str(REPO))


# ----- the run and the machine ----------------------------------------------------------------


def command() -> str:
    """The command line that started this script, as typed from the repository root."""
    script = Path(sys.argv[0]).resolve()
    with contextlib.suppress(ValueError):
        script = script.relative_to(REPO)
    return shlex.join(["python", str(script), *sys.argv[1:]])


def now() -> str:
    """Local date and time with its UTC offset."""
    return datetime.datetime.now().astimezone().strftime("%Y-%m-%d %H:%M:%S %Z (UTC%z)")


def _cpu_model() -> str:
    with contextlib.suppress(OSError):
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    return platform.processor() or platform.machine()


def _os_name() -> str:
    with contextlib.suppress(OSError):
        for line in Path("/etc/os-release").read_text().splitlines():
            if line.startswith("PRETTY_NAME="):
                return f"{line.split('=', 1)[1].strip(chr(34))}, kernel {platform.release()}"
    return platform.platform()


def _version(distribution: str) -> str:
    from importlib.metadata import PackageNotFoundError, version

    try:
        return version(distribution)
    except PackageNotFoundError:
        return "not installed"


def source_state(package: str = "edgeprune") -> str:
    """The commit measured, and which files of `package` differ from it (the tree is shared)."""

    def git(*args: str) -> str:
        out = subprocess.run(["git", *args], cwd=REPO, capture_output=True, text=True, check=True)
        return out.stdout.rstrip()

    try:
        commit = git("log", "-1", "--format=%h %s")
        dirty = git("status", "--porcelain", "--", package).splitlines()
    except (OSError, subprocess.CalledProcessError):
        return "not a git checkout"
    if not dirty:
        return f"commit {commit}; {package}/ as committed"
    files = ", ".join(line[3:] for line in dirty)
    return f"commit {commit}; uncommitted changes in {package}/ at run time: {files}"


def machine() -> dict[str, str]:
    """What the figures were measured on."""
    import numpy as np
    import psutil

    cores = os.cpu_count() or 0
    usable = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else cores
    load = ", ".join(f"{x:.2f}" for x in os.getloadavg()) if hasattr(os, "getloadavg") else "?"
    return {
        "CPU": _cpu_model(),
        "cores": f"{cores} logical ({usable} usable by this process)",
        "RAM": f"{psutil.virtual_memory().total / 2**30:.1f} GiB",
        "OS": _os_name(),
        "Python": f"{platform.python_version()} ({platform.python_implementation()})",
        "numpy": np.__version__,
        "runtime": f"ai-edge-litert {_version('ai-edge-litert')}",
        "load average at start (1, 5, 15 min)": load,
    }


def machine_markdown(info: dict[str, str]) -> str:
    return "\n".join(f"- {k}: {v}" for k, v in info.items())


def cpu_snapshot() -> tuple[float, float, float]:
    """(busy CPU s of the machine, CPU s of this process and its waited-for children, wall)."""
    import psutil

    t = psutil.cpu_times()
    busy = sum(t) - t.idle - getattr(t, "iowait", 0.0)
    own = os.times()
    return busy, own.user + own.system + own.children_user + own.children_system, time.time()


def others_cpu_share(start: tuple[float, float, float], end: tuple[float, float, float]) -> float:
    """Fraction of the machine's CPU capacity that other processes used between two snapshots."""
    busy, own, wall = (e - s for s, e in zip(start, end))
    return max(0.0, busy - own) / (wall * (os.cpu_count() or 1))


# ----- measuring --------------------------------------------------------------------------------


BUSY_SHARE = 0.10  # a round is "quiet" when other processes used less of the CPU than this
MIN_QUIET_ROUNDS = 3  # medians come from the quiet rounds when there are at least this many


class QuietGate:
    """Before a round, wait until other processes leave the CPU idle, within a total budget.

    On a shared machine other jobs come and go; waiting for a quiet moment before each round
    (but never longer, over the whole run, than `budget_s`) puts most rounds in quiet moments.
    """

    def __init__(self, budget_s: float, window_s: float = 0.5, threshold: float = BUSY_SHARE):
        self.budget_s, self.window_s, self.threshold = budget_s, window_s, threshold
        self.waited_s = 0.0

    def wait(self) -> None:
        while self.waited_s < self.budget_s:
            before = cpu_snapshot()
            time.sleep(self.window_s)
            self.waited_s += self.window_s
            if others_cpu_share(before, cpu_snapshot()) < self.threshold:
                return


class Interleaved(dict):
    """{variant: per-round results} of interleaved variants, and how busy each round was.

    A dict, so scripts that only want the per-round lists can use it as one.
    """

    def __init__(self, values: dict[str, list[float]], busy: list[float]):
        super().__init__(values)
        self.busy = busy  # share of the CPU other processes used during each round

    @property
    def quiet(self) -> list[int]:
        return [i for i, share in enumerate(self.busy) if share < BUSY_SHARE]

    @property
    def used(self) -> list[int]:
        """The rounds the figures come from: the quiet ones if there are enough, else all."""
        quiet = self.quiet
        return quiet if len(quiet) >= MIN_QUIET_ROUNDS else list(range(len(self.busy)))

    @property
    def from_quiet(self) -> bool:
        """Whether every round the figures come from was quiet."""
        return all(self.busy[i] < BUSY_SHARE for i in self.used)

    def pick(self, per_round: list[float]) -> list[float]:
        """The used rounds of any per-round list collected alongside (same round order)."""
        return [per_round[i] for i in self.used]

    def picked(self) -> dict[str, list[float]]:
        return {name: self.pick(v) for name, v in self.items()}

    def describe(self) -> str:
        quiet, total = len(self.quiet), len(self.busy)
        if len(self.used) < total:
            return f"{quiet} of {total} rounds quiet; figures from the quiet rounds"
        if quiet == total:
            return f"all {total} rounds quiet"
        return f"{quiet} of {total} rounds quiet (< {MIN_QUIET_ROUNDS}); figures from all rounds"


def interleave(
    variants: dict[str, Callable[[], float]],
    rounds: int,
    progress: Callable[[str], None] = print,
    gate: QuietGate | None = None,
) -> Interleaved:
    """Run every variant once per round, alternating, and collect what each call returns.

    The order is rotated every round (A B C, B C A, C A B, ...) so no variant always runs right
    after the same other one. Each callable returns its own measurement (e.g. seconds per sample).
    With a gate, each round waits for a quiet moment first. Every round records the share of the
    CPU that other processes used while it ran (`BUSY_SHARE` and above marks it busy).
    """
    names = list(variants)
    out = Interleaved({name: [] for name in names}, [])
    for r in range(rounds):
        if gate is not None:
            gate.wait()
        before = cpu_snapshot()
        k = r % len(names)
        for name in names[k:] + names[:k]:
            out[name].append(variants[name]())
        out.busy.append(others_cpu_share(before, cpu_snapshot()))
        progress(
            f"  round {r + 1}/{rounds}: "
            + ", ".join(f"{name} {out[name][-1]:.4g}" for name in names)
            + f"; others used {out.busy[-1]:.0%} of the CPU"
        )
    return out


def median(values: list[float]) -> float:
    return statistics.median(values)


def paired_ratios(a: list[float], b: list[float]) -> list[float]:
    """a[i] / b[i] for each round: the ratio of two variants measured side by side."""
    return [x / y for x, y in zip(a, b)]


def paired_difference(a: Sequence[float], b: Sequence[float]) -> tuple[float, float, float]:
    """mean(a − b) and its 95 % interval (normal approximation) for per-sample scores of two
    models on the same samples (hits 0/1: the accuracy difference): pairing removes what the
    samples share, and the interval says how much of a difference the test set can resolve."""
    d = [float(x) - float(y) for x, y in zip(a, b, strict=True)]
    mean = statistics.fmean(d)
    half = 1.96 * statistics.stdev(d) / len(d) ** 0.5 if len(d) > 1 else float("inf")
    return mean, mean - half, mean + half


def timed(fn: Callable[[], object]) -> float:
    """Wall-clock seconds of one call."""
    start = time.perf_counter()
    fn()
    return time.perf_counter() - start


# Runs argv[2:] and writes its exit code, ru_maxrss (bytes), wall and CPU seconds to argv[1].
# Why a launcher: ru_maxrss survives exec, and a child forked (or vforked) from a big process starts
# with the parent's high-water RSS, so os.wait4 on a direct child of this (large) benchmark process
# reports the benchmark's own size. The launcher is small (about 11 MiB), so its child's ru_maxrss
# is the command's own peak as soon as that exceeds the launcher's.
_LAUNCHER = """
import os, subprocess, sys, time
start = time.perf_counter()
proc = subprocess.Popen(sys.argv[2:])
_, status, usage = os.wait4(proc.pid, 0)
seconds = time.perf_counter() - start
cpu = usage.ru_utime + usage.ru_stime
with open(sys.argv[1], "w") as f:
    f.write(f"{os.waitstatus_to_exitcode(status)} {usage.ru_maxrss * 1024} {seconds!r} {cpu!r}")
"""


def run_child(argv: list[str], cwd: Path = REPO) -> tuple[float, float, int, str]:
    """Run a command to completion: (wall s, CPU s (user + system), peak RSS bytes, output).

    The command runs under a small launcher process that waits for it with os.wait4, so the
    peak RSS is the kernel's ru_maxrss of exactly this command (see _LAUNCHER) and the seconds
    exclude the launcher's start. Raises if the command fails.
    """
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(REPO), env.get("PYTHONPATH")]))
    with tempfile.TemporaryDirectory(prefix="bench-child-") as tmp:
        report = Path(tmp) / "usage"
        log = Path(tmp) / "log"
        with open(log, "wb") as out:
            subprocess.run(
                [sys.executable, "-c", _LAUNCHER, str(report), *argv],
                cwd=cwd,
                env=env,
                stdout=out,
                stderr=subprocess.STDOUT,
                check=True,
            )
        code, rss, seconds, cpu = report.read_text().split()
        output = log.read_text(errors="replace")
    if int(code):
        raise RuntimeError(f"{shlex.join(argv)} failed ({code}):\n{output}")
    return float(seconds), float(cpu), int(rss), output


# ----- models -----------------------------------------------------------------------------------


def file_digest(*paths: Path) -> str:
    h = hashlib.sha256()
    for p in paths:
        h.update(Path(p).read_bytes())
    return h.hexdigest()[:12]


def digest(*parts) -> str:
    """Short sha256 of arrays (dtype, shape, bytes) and JSON-serializable parts: a cache key."""
    h = hashlib.sha256()
    for part in parts:
        if hasattr(part, "dtype") and hasattr(part, "shape"):
            h.update(str((part.dtype.str, part.shape)).encode())
            h.update(memoryview(part.copy(order="C")).cast("B"))
        else:
            h.update(json.dumps(part, sort_keys=True).encode())
    return h.hexdigest()[:12]


def to_tflite(keras_model, representative=None) -> bytes:
    """Batch-1 .tflite bytes of a Keras model through edgeprune's converter: float32, or full
    int8 (int8 input and output) calibrated on `representative` samples."""
    from edgeprune.host.convert import convert, from_keras

    source = from_keras(keras_model)
    try:
        return convert(source, "float32" if representative is None else "int8", representative)
    finally:
        source.close()


def to_tflite_pair(keras_model, X, samples: int, seed: int) -> tuple[bytes, bytes, float]:
    """The float32 and int8 .tflite bytes of `keras_model` (see `to_tflite`), the int8 one
    calibrated on `samples` rows of `X` drawn with `seed`, and the seconds both took to convert."""
    import numpy as np

    rng = np.random.default_rng(seed)
    representative = X[rng.choice(len(X), samples, replace=False)]
    start = time.perf_counter()
    float32, int8 = to_tflite(keras_model), to_tflite(keras_model, representative)
    return float32, int8, time.perf_counter() - start


def cached(name: str, build: Callable[[], bytes], progress: Callable[[str], None] = print) -> Path:
    """CACHE/name, built by `build()` (bytes) the first time. Put a version or digest in `name`."""
    path = CACHE / name
    if not path.exists():
        progress(f"building {name} (cached under {CACHE.relative_to(REPO)}/ for later runs)")
        CACHE.mkdir(parents=True, exist_ok=True)
        data = build()
        tmp = path.with_suffix(path.suffix + ".tmp")
        tmp.write_bytes(data)
        os.replace(tmp, path)
    return path


# ----- RESULTS.md -------------------------------------------------------------------------------


def verdict(ok: bool, quiet: bool = True) -> str:
    """ "met" / "not met", flagged when the figure comes from rounds on a busy machine."""
    text = "met" if ok else "**not met**"
    return text if quiet else f"{text} (busy rounds)"


def write_section(name: str, body: str, path: Path = RESULTS) -> None:
    """Replace the text between `<!-- name:begin -->` and `<!-- name:end -->` in `path` with
    `body` (creating the file or appending the section if missing); other sections are kept."""
    begin, end = f"<!-- {name}:begin -->", f"<!-- {name}:end -->"
    block = f"{begin}\n{body.strip()}\n{end}"
    text = path.read_text() if path.exists() else RESULTS_HEADER
    i, j = text.find(begin), text.find(end)
    if i >= 0 and j > i:
        text = text[:i] + block + text[j + len(end) :]
    else:
        text = text.rstrip("\n") + "\n\n" + block + "\n"
    tmp = path.with_name(f".{path.name}.tmp")
    tmp.write_text(text)
    os.replace(tmp, path)


def publish(name: str, body: str) -> None:
    """Write `body` as section `name` of RESULTS.md and print it: how a benchmark reports."""
    write_section(name, body)
    print(body)
