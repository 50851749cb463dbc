"""The fleet (issue 17): federated statistics on Flower — exactness, cost, and what it buys.

Every figure comes from Flower's own processes on 127.0.0.1 (`edgeprune.fleet.local`: a
`flower-superlink`, one `flower-supernode` per board, `flwr run`), or, for 64 boards, from
Flower's simulation engine (`flower-superlink --simulation`, Ray; `pip install
'flwr[simulation]==1.42.0'`). Every run gives its wall time, the CPU time of all its processes
(`TreeCPU`) and the load average: the machine is shared.

1. Exactness and cost, per fleet size (4 and 16 real SuperNodes, 64 simulated boards), plain and
   under SecAgg+, on the FSDD source that never heard george (benchmarks/fsdd.py): the
   aggregated activation map against the map one central pass records over the union of the
   boards' fit parts (max relative difference), bytes each board uploads beside the model's
   size, wall time of the statistics round and of the whole `flwr run`, CPU time.
2. Accuracy, with the source's reference on the server (the fleet's check estimates accuracy,
   the prior stage runs on the fleet, EM capped at `--prior-iterations` rounds):
   - FSDD, each speaker a board (george: all his recordings, never heard by the source; the five
     others: their validation recordings, never trained on), each board's recordings split in
     half — unlabeled adaptation (on the board) and labelled test;
   - CIFAR-10, each user a board (benchmarks/users.py's "3 classes at 70/20/10 %": 400
     unlabeled images on the board, 300 held out).
   Held-out accuracy per board of the source, the fleet model (pruned from the fleet's
   statistics at the sparsity the fleet's check chose, or at `--sparsity` with `--rule fixed`),
   the fleet model personalized locally (`personalize`, all stages, judged with the reference
   the fleet delivered: the source's rebound to the fleet model with the prior the fleet gave
   it), and local-only personalization from the source; the worst board against local-only.

    python benchmarks/fleet.py            # everything (about 30 minutes on 2 loaded cores)
    python benchmarks/fleet.py --quick    # 4 boards only, no 16/64
    python benchmarks/fleet.py --rule fixed --sparsity 0.3   # the fleet model without the check
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import threading
import time
from dataclasses import replace
from pathlib import Path
from typing import NamedTuple

import numpy as np

if __package__ in (None, ""):  # `python benchmarks/fleet.py`: make `benchmarks` importable
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from benchmarks import common, fsdd  # noqa: E402
from edgeprune import reference as refmod  # noqa: E402
from edgeprune.activations import ActivationMap, record  # noqa: E402
from edgeprune.fleet import statistics  # noqa: E402
from edgeprune.fleet.local import (  # noqa: E402
    APP,
    BIN,
    LocalFleet,
    free_port,
    toml_value,
    wait_for,
)
from edgeprune.model import Model  # noqa: E402
from edgeprune.personalize import personalize  # noqa: E402

SECTION = "fleet"
PER_BOARD = 24  # recordings per board in the cost runs
GOALS = {"rel_diff": 1e-6, "points": 1.0, "sim_seconds": 120.0}
CIFAR_BOARDS = 6
PRIOR_ITERATIONS = 10  # EM's rounds on real SuperNodes, capped (personalize's EM: at most 300)


class TreeCPU:
    """CPU seconds (user + system) a process tree spends inside the `with` block: every process
    under `root` (this process by default) is sampled each `every` seconds; each one's last
    reading counts, less its reading at the start for a process already running then (a
    SuperNode started before the run; this process). A process that lives less than `every` may
    be missed: a lower bound. The machine is shared, so wall time alone says little; `by_name`
    shows where the CPU went."""

    def __init__(self, root: int | None = None, every: float = 0.25):
        import psutil

        self._root = psutil.Process(root or os.getpid())
        self._every, self._seen, self._before = every, {}, {}
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._poll, daemon=True)

    def _sample(self, into: dict) -> None:
        import psutil

        for proc in [self._root, *self._root.children(recursive=True)]:
            try:
                t = proc.cpu_times()
                into[(proc.pid, proc.create_time())] = (proc.name(), t.user + t.system)
            except psutil.Error:
                continue

    def _poll(self) -> None:
        while not self._stop.is_set():
            self._sample(self._seen)
            self._stop.wait(self._every)

    def __enter__(self) -> TreeCPU:
        self._sample(self._before)
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join()

    def _spent(self) -> list[tuple[str, float]]:
        return [
            (name, cpu - self._before.get(key, ("", 0.0))[1])
            for key, (name, cpu) in self._seen.items()
        ]

    @property
    def seconds(self) -> float:
        return sum(cpu for _, cpu in self._spent())

    def by_name(self) -> dict[str, float]:
        out: dict[str, float] = {}
        for name, cpu in self._spent():
            out[name] = out.get(name, 0.0) + cpu
        return dict(sorted(out.items(), key=lambda kv: -kv[1]))


def write_shares(root: Path, shares: list[np.ndarray]) -> list[Path]:
    dirs = []
    for k, share in enumerate(shares):
        d = root / "boards" / str(k)
        d.mkdir(parents=True, exist_ok=True)
        np.save(d / "samples.npy", share)
        dirs.append(d)
    return dirs


def central(model: Path, shares: list[np.ndarray]) -> ActivationMap:
    return record(Model.load(model), np.concatenate([s[0::2] for s in shares]))


def cost_entry(report: dict, model: Path, shares, fleet_map: Path, cpu: TreeCPU) -> dict:
    stats = report["rounds"]["statistics"]
    got = ActivationMap.load(fleet_map, Model.load(model))
    return {
        "boards": stats["answered"],
        "secure": stats["secure"],
        "round_seconds": stats["seconds"],
        "run_seconds": report["wall_seconds"],
        "cpu_seconds": cpu.seconds,
        "cpu_by_process": {k: round(v, 1) for k, v in list(cpu.by_name().items())[:4]},
        "load": os.getloadavg()[0],
        "upload_bytes": max(stats["upload_bytes"]),
        "model_bytes": stats["model_bytes"],
        "rel_diff": statistics.max_relative_difference(got, central(model, shares)),
    }


def real_processes(root: Path, model: Path, shares: list[np.ndarray], secure_too: bool) -> list:
    """Plain (and SecAgg+) rounds on one SuperNode per share."""
    out = []
    with LocalFleet(root / f"real{len(shares)}", start_timeout=180) as fleet:
        for k, d in enumerate(write_shares(fleet.root, shares)):
            fleet.node(f"board{k}", d)
        for secure in (False, True) if secure_too else (False,):
            fleet_map = fleet.root / f"map-{secure}.npz"
            n = len(shares)
            with TreeCPU() as cpu:
                report = fleet.run(
                    model, 1800, boards=n, min_boards=n, secure=secure, map=str(fleet_map)
                )
            out.append(cost_entry(report, model, shares, fleet_map, cpu))
            print(json.dumps(out[-1]), flush=True)
    return out


def simulated(root: Path, model: Path, shares: list[np.ndarray], secure: bool) -> dict:
    """One run on Flower's simulation engine: `len(shares)` virtual boards in Ray actors."""
    root = root / f"sim{len(shares)}-{secure}"
    home = root / "flwr"
    home.mkdir(parents=True)
    parts = root / "parts"
    for k, share in enumerate(shares):
        (parts / str(k)).mkdir(parents=True)
        np.save(parts / str(k) / "samples.npy", share)
    port = free_port()
    (home / "config.toml").write_text(
        '[superlink]\ndefault = "sim"\n\n'
        f'[superlink.sim]\naddress = "127.0.0.1:{port}"\ninsecure = true\n\n'
        f"[superlink.sim.options]\nnum-supernodes = {len(shares)}\n\n"
        "[superlink.sim.options.backend.client-resources]\nnum-cpus = 1\n\n"
        # The actors' log lines stay in their own files: none is forwarded to the driver.
        "[superlink.sim.options.backend.init-args]\nlog-to-driver = false\n"
    )
    env = {**os.environ, "FLWR_HOME": str(home), "PATH": f"{BIN}:/usr/bin:/bin"}
    env["FLWR_DISABLE_UPDATE_CHECK"] = "1"
    log_path = root / "superlink.log"
    log = open(log_path, "wb")  # noqa: SIM115  (kept open for the process)
    cpu = TreeCPU().__enter__()  # the SuperLink, its simulation runtime and Ray's processes
    link = subprocess.Popen(
        [str(BIN / "flower-superlink"), "--simulation", "--insecure", "--host", "127.0.0.1",
         "--port", str(port), "--disable-runtime-dependency-installation"],
        stdout=log, stderr=subprocess.STDOUT, env=env, cwd=root, start_new_session=True,
    )  # fmt: skip
    try:
        wait_for(log_path, "Uvicorn running", link, 180)
        fleet_map, report = root / "map.npz", root / "report.json"
        n = len(shares)
        config = {
            "model": str(model), "boards": n, "min-boards": n, "secure": secure,
            "partitions": str(parts), "map": str(fleet_map), "report": str(report),
            "round-timeout": 1800.0,
        }  # fmt: skip
        overrides = " ".join(f"{k}={toml_value(v)}" for k, v in config.items())
        start = time.perf_counter()
        done = subprocess.run(
            [str(BIN / "flwr"), "run", str(APP), "sim", "--stream", "-c", overrides],
            env=env, cwd=root, capture_output=True, text=True, timeout=3600,
        )  # fmt: skip
        wall = time.perf_counter() - start
        if done.returncode or not report.exists():
            raise RuntimeError(done.stdout + done.stderr)
        result = json.loads(report.read_text())
        result["wall_seconds"] = wall
        cpu.__exit__()
        entry = cost_entry(result, model, shares, fleet_map, cpu)
        entry["simulated"] = True
        print(json.dumps(entry), flush=True)
        return entry
    finally:
        cpu.__exit__()
        os.killpg(link.pid, signal.SIGTERM)
        link.wait(30)
        log.close()


# ----- accuracy ---------------------------------------------------------------------------------


def accuracy(model: Model, x: np.ndarray, y: np.ndarray) -> float:
    logits = np.array([z for _, z in refmod.classifier_outputs(model, x)])
    return float(np.mean(logits.argmax(axis=1) == y))


class Board(NamedTuple):
    name: str
    note: str  # what the source knows of this board's data
    adapt: np.ndarray  # unlabeled, on the board
    test_x: np.ndarray  # labelled, held out
    test_y: np.ndarray


class Dataset(NamedTuple):
    name: str
    source: Path
    validation: tuple[np.ndarray, np.ndarray]  # labelled, the source's reference is built on it
    boards: list[Board]


def fsdd_boards(seed: int = 0) -> Dataset:
    """Each FSDD speaker a board: george (never heard by the source) with all his recordings,
    the others with their validation recordings; each split in half, adaptation and test."""
    X, digits, names, _ = fsdd.load_fsdd()
    names = np.asarray(names)
    source = fsdd.train_source("george", X, digits, list(names))
    _, validation = fsdd.source_split(names, "george")
    boards = []
    for speaker in fsdd.SPEAKERS:
        members = np.flatnonzero(names == speaker)
        if speaker != "george":
            members = np.intersect1d(members, validation)
        order = np.random.default_rng([seed, len(boards)]).permutation(members)
        adapt, test = np.sort(order[::2]), np.sort(order[1::2])
        note = "heard" if speaker != "george" else "**never heard**"
        boards.append(Board(speaker, note, X[adapt], X[test], digits[test]))
    return Dataset("FSDD, each speaker a board", Path(source.float32), (X[validation],
                   digits[validation]), boards)  # fmt: skip


def cifar_boards(n: int = CIFAR_BOARDS) -> Dataset:
    """CIFAR-10 users as boards (benchmarks/users.py's type "cifar-70-20-10"): user i has 3
    classes at 70/20/10 %, 400 unlabeled images on the board and 300 held out, drawn from the
    half of the test split the source's reference never saw (built on the other half)."""
    from benchmarks import cifar
    from benchmarks.personalization import cifar_halves
    from benchmarks.users import CIFAR_ADAPT, CIFAR_TEST, draw

    source = cifar.train_source()
    X, y = cifar.load_cifar(None, "test")
    held, users = cifar_halves(y)
    ux, uy = X[users], y[users]
    boards = []
    for i in range(n):
        classes = np.random.default_rng([0, i]).permutation(10)[:3]
        rng = np.random.default_rng([0, i, 0])
        adapt, test = draw(uy, classes, (0.7, 0.2, 0.1), CIFAR_ADAPT, CIFAR_TEST, rng)
        name = ">".join(cifar.CLASSES[c] for c in classes)
        boards.append(Board(f"user {i}", name, ux[adapt], ux[test], uy[test]))
    validation = (X[held], y[held])
    return Dataset("CIFAR-10, each user a board", Path(source["float32"]), validation, boards)


def fleet_reference(fleet_model: Model, out: Path, report: dict, vx, vy) -> refmod.Reference:
    """The reference the fleet delivered with its model (`fleet.reference.npz`, the source's
    rebound with the prior the fleet gave it); when pruning changed the features and none was
    delivered, one built on the validation set, told the fleet's prior, as a user would."""
    if refmod.beside(out).exists():
        return refmod.Reference.load(refmod.beside(out))
    prior = report["rounds"].get("prior", {})
    built = refmod.build(fleet_model, iter(vx), vy)
    if not prior.get("applied"):
        return built
    return replace(built, model_prior=np.array(prior["model_prior"]))


def fleet_accuracy(root: Path, data: Dataset, rule: str, sparsity: float, iterations: int):
    """The fleet on real SuperNodes (one a board) with the source's reference on the server,
    then per board: source, fleet model, fleet + local personalization, local only."""
    source = Model.load(data.source)
    vx, vy = data.validation
    source_ref = refmod.build(source, iter(vx), vy)
    work = root / data.name.split(",")[0].lower()
    with LocalFleet(work, start_timeout=180) as fleet:
        source_ref.save(fleet.root / "reference.npz")
        for k, board in enumerate(data.boards):
            d = fleet.root / f"board{k}"
            d.mkdir()
            np.save(d / "samples.npy", board.adapt)
            fleet.node(f"board{k}", d, d / "fleet.tflite")  # the board keeps what is delivered
        out = fleet.root / "fleet.tflite"
        n = len(data.boards)
        with TreeCPU() as cpu:
            report = fleet.run(
                data.source, 3600, boards=n, min_boards=n, rule=rule, sparsity=sparsity,
                out=str(out), reference=str(fleet.root / "reference.npz"),
                prior_iterations=iterations,
            )  # fmt: skip
    report["cpu_seconds"], report["load"] = cpu.seconds, os.getloadavg()[0]
    fleet_model = Model.load(out)
    fleet_ref = fleet_reference(fleet_model, out, report, vx, vy)
    boards = [refmod.beside(work / f"board{k}" / "fleet.tflite") for k in range(n)]
    report["boards_with_reference"] = sum(p.exists() for p in boards)
    rows = []
    for board in data.boards:
        tx, ty = board.test_x, board.test_y
        local, _ = personalize(source, iter(board.adapt), reference=source_ref)
        on_fleet, _ = personalize(fleet_model, iter(board.adapt), reference=fleet_ref)
        rows.append(
            {
                "board": board.name,
                "note": board.note,
                "adapt": len(board.adapt),
                "test": len(tx),
                "source": accuracy(source, tx, ty),
                "fleet": accuracy(fleet_model, tx, ty),
                "fleet_local": accuracy(on_fleet, tx, ty),
                "local_only": accuracy(local, tx, ty),
            }
        )
        print(json.dumps(rows[-1]), flush=True)
    return {"dataset": data.name, "rule": rule, "report": report, "rows": rows}


# ----- the section ------------------------------------------------------------------------------


def markdown(costs: list[dict], accs: list[dict], info: dict, seconds: float) -> str:
    lines = [
        f"## {SECTION}: federated statistics on Flower (issue 17)",
        "",
        f"`{common.command()}` — {common.now()} — {seconds:.0f} s in all",
        "",
        common.machine_markdown(info),
        f"- flwr: {common._version('flwr')}",
        "",
        "### Exactness and cost per round (FSDD source, "
        f"{PER_BOARD} recordings per board; real processes unless simulated)",
        "",
        "Wall time on a shared machine says little: every run also gives the CPU time of all its "
        "processes (SuperLink, SuperNodes and their ClientApps, or the simulation runtime and "
        "Ray's workers; sampled every 0.25 s, a lower bound) and the 1-minute load average at "
        "its end. These runs send no reference: the fleet's check is the agreement half, no "
        "prior stage (the accuracy runs below have both).",
        "",
        "| boards | how | SecAgg+ | statistics round | whole `flwr run` | CPU, all processes "
        "| load | upload per board | model | max rel. diff vs central |",
        "|---:|---|---|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for c in costs:
        how = "simulated (Ray)" if c.get("simulated") else "real SuperNodes"
        lines.append(
            f"| {c['boards']} | {how} | {'yes' if c['secure'] else 'no'} "
            f"| {c['round_seconds']:.1f} s | {c['run_seconds']:.1f} s "
            f"| {c['cpu_seconds']:.1f} s | {c['load']:.1f} | {c['upload_bytes']:,} B "
            f"| {c['model_bytes']:,} B | {c['rel_diff']:.2e} |"
        )
    plain = {c["boards"]: c for c in costs if not c["secure"]}
    overhead = [
        f"{c['boards']} boards: {c['round_seconds'] / plain[c['boards']]['round_seconds']:.1f}× "
        f"the plain round's time, {c['upload_bytes'] / plain[c['boards']]['upload_bytes']:.1f}× "
        "its upload"
        for c in costs
        if c["secure"] and c["boards"] in plain
    ]
    if overhead:
        lines += ["", "SecAgg+ overhead: " + "; ".join(overhead) + "."]
    worst = max(c["rel_diff"] for c in costs)
    upload_ok = all(c["upload_bytes"] <= c["model_bytes"] for c in costs if not c["secure"])
    sim = [c for c in costs if c.get("simulated") and c["boards"] >= 64 and not c["secure"]]
    lines += [
        "",
        "### Goals",
        "",
        f"- aggregated statistics identical to central ones (max rel. diff ≤ 1e-6): worst "
        f"{worst:.2e} — {common.verdict(worst <= GOALS['rel_diff'])}",
        "- per-round upload ≤ the model's size: "
        + (
            ", ".join(
                f"{c['boards']}{'s' if c['secure'] else ''}: {c['upload_bytes']:,} B" for c in costs
            )
        )
        + f" vs {costs[0]['model_bytes']:,} B — plain rounds "
        + common.verdict(upload_ok)
        + " (SecAgg+ sends 5 integer limbs per value, marked s)",
    ]
    if sim:
        c = sim[0]
        goal = GOALS["sim_seconds"]
        lines.append(
            f"- a 64-board simulated round within 2 minutes: the statistics round "
            f"{c['round_seconds']:.0f} s — {common.verdict(c['round_seconds'] <= goal)}"
            f"; the whole run, its three rounds (statistics, the fleet's check, delivery) "
            f"{c['run_seconds']:.0f} s — {common.verdict(c['run_seconds'] <= goal)}"
            f" ({c['cpu_seconds']:.0f} s of CPU in all its processes: "
            + ", ".join(f"{k} {v:.0f} s" for k, v in c["cpu_by_process"].items())
            + f"; load average {c['load']:.1f} at its end)"
        )
    for acc in accs:
        lines += accuracy_markdown(acc)
    if accs:
        worst = min(
            (100 * (r["fleet_local"] - r["local_only"]), f"{r['board']} ({a['dataset']})")
            for a in accs
            for r in a["rows"]
        )
        lines += [
            "",
            f"- no board below its local-only personalization by more than 1 point: worst "
            f"{worst[0]:+.1f} points, {worst[1]} — {common.verdict(worst[0] >= -GOALS['points'])}",
        ]
    return "\n".join(lines)


def accuracy_markdown(acc: dict) -> list[str]:
    rows, report = acc["rows"], acc["report"]
    stats = report["rounds"]["statistics"]
    lines = [
        "",
        f"### Accuracy, {acc['dataset']} (fleet model: rule {acc['rule']}, "
        f"{stats['sparsity']:.0%} of the weights pruned from the fleet's statistics, "
        "classifier kept)",
        "",
        "| board | data | adapt / test | source | fleet | fleet + local "
        "| local only | fleet + local − local only |",
        "|---|---|---:|---:|---:|---:|---:|---:|",
    ]
    for r in rows:
        gap = 100 * (r["fleet_local"] - r["local_only"])
        lines.append(
            f"| {r['board']} | {r['note']} "
            f"| {r['adapt']} / {r['test']} | {r['source']:.1%} | {r['fleet']:.1%} "
            f"| {r['fleet_local']:.1%} | {r['local_only']:.1%} | {gap:+.1f} |"
        )
    worst = min(100 * (r["fleet_local"] - r["local_only"]) for r in rows)
    check = report["rounds"].get("check")
    judged = ""
    if check:
        sweep = ", ".join(
            f"{r['sparsity']:.0%}: {r['agreement']:.1%} (≥ {r['agreement_lower']:.1%})"
            + (f", est. {r['estimated_accuracy']:.1%}" if r.get("estimated_accuracy") else "")
            + ("" if r.get("admissible", True) else " ✗")
            for r in check["sweep"]
        )
        judged = (
            f" The fleet's check ({check['samples']} check samples on {check['boards']} boards; "
            "per sparsity the agreement with the model before pruning, its lower bound, the "
            f"estimated accuracy; ✗ refused): {sweep}."
        )
    prior = report["rounds"].get("prior")
    if prior:
        judged += (
            f" The prior stage on the fleet: {prior['rounds']} rounds (EM, at most "
            f"{acc.get('iterations', '?')} iterations, then the statistic; "
            f"{'converged' if prior['rounds'] <= acc.get('iterations', 0) else 'capped'}) "
            f"in {prior['seconds']:.0f} s, total variation "
            f"{prior['total_variation']:.3f}, statistic {prior['statistic']:.1f} against "
            f"{prior['threshold']:.1f}: "
            + ("applied." if prior["applied"] else f"not applied ({prior.get('reason', '')}).")
        )
    lines += [
        "",
        f"Fleet run: {stats['answered']} boards, measured sparsity "
        f"{stats['measured_sparsity']:.1%}, statistics round {stats['seconds']:.1f} s, whole run "
        f"{report['wall_seconds']:.0f} s, {report['cpu_seconds']:.0f} s CPU in all its "
        f"processes (load {report['load']:.1f}).{judged} "
        + (
            f"The fleet's reference (the source's, rebound to the fleet model with its prior) "
            f"reached {report['boards_with_reference']} of {len(acc['rows'])} boards; local "
            "personalization on top is judged with it."
            if report["boards_with_reference"]
            else "No reference was delivered (pruning changed the features): local "
            "personalization on top is judged with one built on the validation set."
        ),
        "",
        f"Worst board here: {worst:+.1f} points against local-only personalization.",
    ]
    return lines


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--quick", action="store_true", help="4 boards only")
    parser.add_argument("--rule", choices=("fidelity", "fixed"), default="fidelity")
    parser.add_argument("--sparsity", type=float, default=0.3, help="with --rule fixed")
    parser.add_argument("--no-write", action="store_true", help="print, do not touch RESULTS.md")
    parser.add_argument(
        "--prior-iterations", type=int, default=PRIOR_ITERATIONS, help="EM rounds at most"
    )
    parser.add_argument("--no-cifar", action="store_true", help="FSDD boards only")
    args = parser.parse_args(argv)
    if shutil.which("flwr", path=str(BIN)) is None:
        raise SystemExit("flwr is not installed: pip install -e '.[fleet]'")
    info, start = common.machine(), time.perf_counter()
    X, _, _, _ = fsdd.load_fsdd()
    source_path = fsdd_boards().source
    rng = np.random.default_rng(0)
    pool = X[rng.permutation(len(X))]
    costs = []
    with tempfile.TemporaryDirectory(prefix="fleet-bench-") as tmp:
        root = Path(tmp)
        sizes = (4,) if args.quick else (4, 16)
        for n in sizes:
            shares = [pool[k * PER_BOARD : (k + 1) * PER_BOARD] for k in range(n)]
            costs += real_processes(root, source_path, shares, secure_too=True)
        if not args.quick:
            shares = [pool[k * PER_BOARD : (k + 1) * PER_BOARD] for k in range(64)]
            costs.append(simulated(root, source_path, shares, secure=False))
        datasets = [fsdd_boards] + ([] if args.no_cifar else [cifar_boards])
        accs = []
        for make in datasets:
            accs.append(
                fleet_accuracy(root, make(), args.rule, args.sparsity, args.prior_iterations)
            )
            accs[-1]["iterations"] = args.prior_iterations
    body = markdown(costs, accs, info, time.perf_counter() - start)
    if args.no_write:
        print(body)
    else:
        common.publish(SECTION, body)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
