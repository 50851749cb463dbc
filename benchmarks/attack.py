"""The attack run of issue 13: hostile inputs through the CLI and a live board agent, counted.

Every case runs `python -m edgeprune ...` in a child process (its own peak RSS from wait4) and
is classed: ok (exit 0, or exit 2 with one `edgeprune: error:` line), traceback, crash (death by
a signal) or other. Classes: random mutations of real models through every MODEL-taking
command, the reproducers of tests/hostile.py (models, packages, data files), path escapes
pushed to a live agent (anything changed outside its work directory counts as an escape),
and kill -9 during `prune -o` (the target must be the old or the new file, never torn, and the
next write must leave no temp file). Also the added latency of the interpreter probe, what the
record of vetted models saves on `personalize` of the FSDD demo run twice, the agent's CPU on
2 MiB of overlapping frame headers (and the decoder's, with and without its resynchronization
bound), and two clients pushing to one path at once. The record of vetted models is kept in a
temp folder, never the user's cache.

    python benchmarks/attack.py            # ~2-4 minutes on 2 cores; ATTACK_CASES=N per class
"""

from __future__ import annotations

import hashlib
import os
import signal
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
from common import REPO, command, machine, machine_markdown, now, publish

from tests import hostile
from tests.models import build
from tests.test_fuzz import mutations

CASES = int(os.environ.get("ATTACK_CASES", "12"))
CACHE = tempfile.TemporaryDirectory(prefix="attack-cache-")  # the run's record of vetted models
COMMANDS = ("inspect", "profile", "prune", "record")


class Tally:
    def __init__(self) -> None:
        self.runs = self.ok = self.tracebacks = self.crashes = self.other = 0
        self.peak_rss = 0  # bytes
        self.peak_input = 0
        self.examples: list[str] = []

    def run(self, argv: list[str], inputs: list[Path], timeout: float = 120) -> None:
        env = dict(os.environ, PYTHONPATH=str(REPO))
        proc = subprocess.Popen(
            [sys.executable, "-m", "edgeprune", *map(str, argv)],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.PIPE,
            env=env,
            cwd=REPO,
        )
        deadline = time.monotonic() + timeout
        err = b""
        while True:
            pid, status, usage = os.wait4(proc.pid, os.WNOHANG)
            if pid:
                break
            if time.monotonic() > deadline:
                proc.kill()
            time.sleep(0.02)
        err = proc.stderr.read().decode(errors="replace")
        proc.stderr.close()
        rc = os.waitstatus_to_exitcode(status)
        self.runs += 1
        self.peak_rss = max(self.peak_rss, usage.ru_maxrss * 1024)
        self.peak_input = max([self.peak_input] + [p.stat().st_size for p in inputs if p.exists()])
        lines = [x for x in err.splitlines() if x.strip() and "%|" not in x]
        lines = [x for x in lines if not x.startswith("INFO: ")]
        what = None
        if "Traceback" in err:
            self.tracebacks += 1
            what = "traceback"
        elif rc < 0:
            self.crashes += 1
            what = f"signal {-rc}"
        elif rc == 0 or (rc == 2 and len(lines) == 1 and lines[0].startswith("edgeprune: ")):
            self.ok += 1
        else:
            self.other += 1
            what = f"rc {rc}, {len(lines)} lines"
        if what and len(self.examples) < 10:
            tail = lines[-1][:160] if lines else ""
            self.examples.append(f"{what}: {' '.join(map(str, argv))[:120]} — {tail}")


def argv_for(cmd: str, model: Path, tmp: Path, data: Path) -> list:
    return {
        "inspect": ["inspect", model],
        "profile": ["profile", model],
        "prune": ["prune", model, "--sparsity", "0.5", "--score", "magnitude", "-o", tmp / "o"],
        "record": ["record", model, data, "-o", tmp / "m.npz", "-q"],
    }[cmd]


def model_attacks(tally: Tally, tmp: Path, data: Path) -> None:
    rng = np.random.default_rng(13)
    for kind in ("int8", "float32"):
        for i, case in enumerate(mutations(build(kind), rng, CASES)):
            path = tmp / f"mut_{kind}_{i}.tflite"
            path.write_bytes(case)
            tally.run(argv_for(COMMANDS[i % len(COMMANDS)], path, tmp, data), [path])
    for name, make in hostile.MODELS.items():
        path = tmp / f"{name}.tflite"
        path.write_bytes(make())
        for cmd in COMMANDS:
            tally.run(argv_for(cmd, path, tmp, data), [path])


def _bomb(path: Path, claimed: int) -> None:
    """A package whose model.tflite inflates to `claimed` bytes of zeros (manifest agreeing)."""
    import json
    import zipfile

    digest, zeros = hashlib.sha256(), bytes(1 << 20)
    for _ in range(claimed >> 20):
        digest.update(zeros)
    manifest = hostile.manifest_for(build("int8"))
    manifest["model"].update(sha256=digest.hexdigest(), bytes=claimed)
    with zipfile.ZipFile(path, "w", zipfile.ZIP_DEFLATED) as zf:
        zf.writestr("manifest.json", json.dumps(manifest))
        with zf.open("model.tflite", "w", force_zip64=True) as f:
            for _ in range(claimed >> 20):
                f.write(zeros)


def package_attacks(tally: Tally, tmp: Path) -> None:
    bomb = tmp / "bomb.edgepkg"
    _bomb(bomb, 1 << 30)
    for argv in (["inspect", bomb], ["verify", bomb], ["unpack", bomb, "-o", tmp / "un"]):
        tally.run(argv, [bomb])
    for name, content in hostile.packages().items():
        path = tmp / f"{name}.edgepkg"
        path.write_bytes(content)
        for argv in (["inspect", path], ["verify", path], ["unpack", path, "-o", tmp / "un"]):
            tally.run(argv, [path])


def data_attacks(tally: Tally, tmp: Path) -> None:
    model = tmp / "int8.tflite"
    model.write_bytes(build("int8"))
    files = list(hostile.data_files(tmp / "data").values()) + [_trailing_npz(tmp / "big.npz")]
    for path in files:
        tally.run(["record", model, path, "-o", tmp / "m.npz", "-q"], [path])


def _trailing_npz(path: Path) -> Path:
    """An .npz (~1 MB) whose member holds one sample and then 1 GiB of zeros."""
    import io
    import zipfile

    header = io.BytesIO()
    np.lib.format.write_array_header_1_0(
        header, {"descr": "<f4", "fortran_order": False, "shape": (1, 16, 16, 3)}
    )
    zeros = bytes(1 << 20)
    with (
        zipfile.ZipFile(path, "w", zipfile.ZIP_DEFLATED) as zf,
        zf.open("x.npy", "w", force_zip64=True) as f,
    ):
        f.write(b"\x93NUMPY" + header.getvalue()[6:])
        for _ in range(1024):
            f.write(zeros)
    return path


def _snapshot(folder: Path, skip: Path) -> dict[str, str]:
    seen = {}
    for directory, dirs, files in os.walk(folder):
        if Path(directory) == skip:
            dirs[:] = []
            continue
        dirs[:] = [d for d in dirs if Path(directory, d) != skip]
        for f in files:
            p = Path(directory, f)
            seen[str(p)] = hashlib.sha256(p.read_bytes()).hexdigest() if p.is_file() else "?"
    return seen


def escape_attacks(tmp: Path) -> tuple[int, int, int]:
    """(attempts, refused, escapes) pushing to names that leave the work directory or reach the
    agent's own state."""
    from edgeprune.host.client import Device
    from edgeprune.host.device_errors import RemoteError
    from firmware_bridge import protocol as p

    arena = tmp / "arena"
    root = arena / "board"
    root.mkdir(parents=True)
    (arena / "secret").write_text("keep")
    (root / "link").symlink_to(arena)
    (root / "state").symlink_to(root / ".edgeprune")
    src = tmp / "payload"
    src.write_bytes(b"attack")
    targets = [
        "../secret", "/tmp/x", "link/secret", "x/../../secret", ".edgeprune/agent.lock",
        "x/../.edgeprune/agent.lock", "state/agent.lock", "./.edgeprune/partial/z",
        "a/./../../secret", "link/../board/../secret", "\0x", "", "x" * 5000,
    ]  # fmt: skip
    attempts = refused = 0
    with Device(f"local://{root}") as device:
        device.request(p.INFO, {})  # the agent is up (its lock taken) before the snapshot
        lock = root / ".edgeprune" / "agent.lock"
        before = _snapshot(arena, root / ".edgeprune")
        lock_before = lock.read_bytes() if lock.exists() else b""
        for target in targets:
            attempts += 1
            try:
                device.put(src, target)
            except (RemoteError, ValueError, OSError):
                refused += 1
        after = _snapshot(arena, root / ".edgeprune")
        changed = {k for k in set(before) | set(after) if before.get(k) != after.get(k)}
        escapes = len(changed) + ((lock.read_bytes() if lock.exists() else b"") != lock_before)
    return attempts, refused, escapes


def kill_attacks(tmp: Path, rounds: int) -> tuple[int, int, int]:
    """(kills, torn targets, stray temps after the next write) for kill -9 during prune -o."""
    src = tmp / "big.tflite"
    src.write_bytes(build("float32", "small_cnn"))
    out = tmp / "kill" / "out.tflite"
    out.parent.mkdir()
    argv = [sys.executable, "-m", "edgeprune", "prune", src, "--sparsity", "0.5", "--score",
            "magnitude", "-o", out]  # fmt: skip
    env = dict(os.environ, PYTHONPATH=str(REPO))
    subprocess.run(list(map(str, argv)), env=env, check=True, capture_output=True)
    good = {hashlib.sha256(out.read_bytes()).hexdigest()}
    rng = np.random.default_rng(9)
    torn = strays = 0
    for _ in range(rounds):
        proc = subprocess.Popen(list(map(str, argv)), env=env, stderr=subprocess.DEVNULL)
        time.sleep(float(rng.uniform(0.2, 1.2)))
        proc.send_signal(signal.SIGKILL)
        proc.wait()
        if out.exists() and hashlib.sha256(out.read_bytes()).hexdigest() not in good:
            torn += 1
        subprocess.run(list(map(str, argv)), env=env, check=True, capture_output=True)
        strays += len([p for p in out.parent.iterdir() if p.name != out.name])
    return rounds, torn, strays


def probe_latency() -> tuple[float, float, float]:
    """Median seconds (of 5, interleaved) of the child-process probe of the int8 fixture, of an
    in-process load of it, and of starting `python -c pass` — the machine's state at the time."""
    from edgeprune import runtime, vetted

    content = build("int8")
    probe, load, bare = [], [], []
    for _ in range(5):
        runtime._probed.clear()
        vetted.forget_memo()
        # an empty record each time, inside the run's own cache folder
        os.environ["EDGEPRUNE_CACHE_DIR"] = tempfile.mkdtemp(dir=CACHE.name)
        start = time.perf_counter()
        runtime.probe(content, "probe")
        probe.append(time.perf_counter() - start)
        start = time.perf_counter()
        runtime.load_interpreter(content, "load", probed=True)
        load.append(time.perf_counter() - start)
        start = time.perf_counter()
        subprocess.run([sys.executable, "-c", "pass"], check=True)
        bare.append(time.perf_counter() - start)
    return statistics.median(probe), statistics.median(load), statistics.median(bare)


def frame_attack() -> tuple[float, float, float]:
    """(CPU seconds of a live agent reading 2 MiB of overlapping valid PUT_DATA headers, each
    announcing 1 MiB, then a PING it must answer; the same bytes through the decoder in this
    process with its resynchronization bound, and without it: the decoder before issue 13)."""
    from firmware_bridge import protocol as p

    attack = hostile.overlapping_headers() + p.encode(p.PING, 99)

    def decode(unbounded: bool) -> float:
        decoder = p.Decoder()
        start = time.process_time()
        for i in range(0, len(attack), 1 << 16):
            decoder.feed(attack[i : i + (1 << 16)])
            if unbounded:
                decoder._credit = float("inf")
            for _ in decoder.items():
                pass
        return time.process_time() - start

    with tempfile.TemporaryDirectory() as root:
        argv = [sys.executable, "-m", "firmware_bridge", "serve", "--stdio", "--root", root]
        env = dict(os.environ, PYTHONPATH=str(REPO))
        agent = subprocess.Popen(argv, stdin=subprocess.PIPE, stdout=subprocess.PIPE, env=env)
        agent.stdin.write(attack)
        agent.stdin.flush()
        decoder = p.Decoder(p.HARD_MAX_PAYLOAD)
        while not any(i.request_id == 99 for i in decoder.items()):
            data = os.read(agent.stdout.fileno(), 1 << 20)
            if not data:
                break
            decoder.feed(data)
        agent.stdin.close()
        _, _, usage = os.wait4(agent.pid, 0)
    return usage.ru_utime + usage.ru_stime, decode(False), decode(True)


def concurrent_pushes(tmp: Path) -> str:
    """Two clients (two agent processes on one work directory) push different 8 MiB files to
    one path, the first held after its first chunk: what the second gets, and whether the
    file is then the first one's content."""
    import threading

    from edgeprune.host.client import Device
    from edgeprune.host.device_errors import RemoteError

    root = tmp / "pushes"
    first, second = tmp / "first.bin", tmp / "second.bin"
    first.write_bytes(os.urandom(8 << 20))
    second.write_bytes(os.urandom(8 << 20))
    started, go = threading.Event(), threading.Event()

    def progress(done: int, total: int) -> None:
        started.set()
        go.wait(60)

    with Device(f"local://{root}") as one, Device(f"local://{root}") as two:
        thread = threading.Thread(target=one.put, args=(first, "m.bin", progress))
        thread.start()
        started.wait(60)
        try:
            two.put(second, "m.bin")
            outcome = "second push succeeded"
        except RemoteError as e:
            outcome = f"second refused ({e.code})"
        go.set()
        thread.join(120)
    same = (root / "m.bin").read_bytes() == first.read_bytes()
    return f"{outcome}; the file is the first's content: {'yes' if same else 'NO'}"


def personalize_twice() -> list[tuple[str, float, float]]:
    """(label, wall s, CPU s incl. children) of `edgeprune personalize` of the FSDD demo with an
    empty record of vetted models, again with the record it left, and with the probe off."""
    demo = REPO / "examples" / "fsdd_demo"
    rows = []
    with tempfile.TemporaryDirectory() as d:
        env = dict(os.environ, PYTHONPATH=str(REPO), EDGEPRUNE_CACHE_DIR=str(Path(d) / "cache"))
        for label, extra in [
            ("first run (empty record: the source probed)", {}),
            ("second run (source in the record: no probe)", {}),
            ("probe off (EDGEPRUNE_PROBE=0), for scale", {"EDGEPRUNE_PROBE": "0"}),
        ]:
            argv = [sys.executable, "-m", "edgeprune", "personalize", demo / "model.tflite",
                    demo / "unlabeled.npy", "-o", Path(d) / "p.tflite", "--reference",
                    demo / "reference.npz", "-q"]  # fmt: skip
            start = time.perf_counter()
            proc = subprocess.Popen(
                list(map(str, argv)), env={**env, **extra}, stdout=subprocess.DEVNULL, cwd=REPO
            )
            _, status, usage = os.wait4(proc.pid, 0)
            assert status == 0, f"personalize exited with {status}"
            wall = time.perf_counter() - start
            rows.append((label, wall, usage.ru_utime + usage.ru_stime))
    return rows


def main() -> None:
    started = time.monotonic()
    os.environ["EDGEPRUNE_CACHE_DIR"] = CACHE.name
    load_at_start = os.getloadavg()
    tally = Tally()
    with tempfile.TemporaryDirectory() as d:
        tmp = Path(d)
        data = tmp / "samples.npy"
        np.save(data, np.random.default_rng(0).random((2, 16, 16, 3), np.float32))
        model_attacks(tally, tmp, data)
        package_attacks(tally, tmp)
        data_attacks(tally, tmp)
        attempts, refused, escapes = escape_attacks(tmp)
        kills, torn, strays = kill_attacks(tmp, max(4, CASES // 2))
        pushes = concurrent_pushes(tmp)
    latency, load, bare = probe_latency()
    agent_cpu, bounded, unbounded = frame_attack()
    twice = personalize_twice()
    mb = 1 << 20
    rows = [
        ("CLI runs (mutated models ×2 kinds, reproducers, packages, data)", f"{tally.runs}"),
        ("exit 0 or exit 2 with one line", f"{tally.ok}"),
        ("tracebacks", f"{tally.tracebacks}"),
        ("crashes of an edgeprune process (signal)", f"{tally.crashes}"),
        ("other outcomes", f"{tally.other}"),
        ("peak RSS of any run (largest input file)",
         f"{tally.peak_rss / mb:.0f} MB ({tally.peak_input / mb:.2f} MB)"),
        ("pushes to escaping or reserved names (refused)", f"{attempts} ({refused})"),
        ("escapes (files changed outside the work dir, or the lock)", f"{escapes}"),
        ("kill -9 during prune -o: kills, torn targets", f"{kills}, {torn}"),
        ("stray temp files after the next write", f"{strays}"),
        ("interpreter probe: added latency per model (median of 5)",
         f"{latency * 1000:.0f} ms (in-process load {load * 1000:.0f} ms; "
         f"`python -c pass` {bare * 1000:.0f} ms)"),
        *[(f"personalize of the FSDD demo, {label}",
           f"wall {wall:.2f} s, CPU {cpu:.2f} s") for label, wall, cpu in twice],
        ("2 MiB of overlapping valid frame headers: live agent's CPU (start-up included)",
         f"{agent_cpu:.2f} s"),
        ("the same bytes through the decoder: with its resynchronization bound / without",
         f"{bounded * 1000:.1f} ms / {unbounded:.2f} s ({unbounded / max(bounded, 1e-9):.0f}x)"),
        ("two clients push to one path at once", pushes),
    ]  # fmt: skip
    goal = (
        tally.tracebacks == 0 and tally.crashes == 0 and escapes == 0 and torn == 0
        and strays == 0 and tally.peak_rss < 1 << 30
    )  # fmt: skip
    body = "\n".join(
        [
            "## attack: hostile inputs against the CLI and the board agent (issue 13)",
            "",
            f"`{command()}` — {now()}, {time.monotonic() - started:.0f} s, "
            f"{CASES} mutations per model kind (ATTACK_CASES); load average (1, 5, 15 min) "
            f"at start {', '.join(f'{x:.2f}' for x in load_at_start)}, at the end "
            f"{', '.join(f'{x:.2f}' for x in os.getloadavg())}.",
            "",
            machine_markdown(machine()),
            "",
            "| measure | value |",
            "|---|---|",
            *[f"| {a} | {b} |" for a, b in rows],
            "",
            f"Goal (0 tracebacks, 0 crashes, 0 escapes, 0 torn, 0 strays, RSS < 1 GB): "
            f"{'met' if goal else 'NOT met'}.",
            *([""] + [f"- {e}" for e in tally.examples] if tally.examples else []),
        ]
    )
    publish("attack", body)


if __name__ == "__main__":
    main()
