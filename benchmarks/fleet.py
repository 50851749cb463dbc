"""The fleet (issue 17): federated statistics on Flower — exactness, cost, and what it buys.

Every figure comes from Flower's own processes on 127.0.0.1 (`edgeprune.fleet.local`: a
`flower-superlink`, one `flower-supernode` per board, `flwr run`), or, for 64 boards, from
Flower's simulation engine (`flower-superlink --simulation`, Ray; `pip install
'flwr[simulation]==1.42.0'`). The source model is the FSDD source that never heard george
(benchmarks/fsdd.py).

1. Exactness and cost, per fleet size (4 and 16 real SuperNodes, 64 simulated boards), plain and
   under SecAgg+: the aggregated activation map against the map one central pass records over the
   union of the boards' fit parts (max relative difference), bytes each board uploads beside the
   model's size, wall time of the statistics round and of the whole `flwr run`.
2. Accuracy, FSDD, each speaker a board (george: all his recordings, never heard by the source;
   the five others: their validation recordings, never trained on), each board's recordings split
   in half — unlabeled adaptation (on the board) and labelled test. Held-out accuracy per board of
   the source, the fleet model (pruned from the fleet's statistics at the sparsity the fleet's
   check chose, or at `--sparsity` with `--rule fixed`), the fleet
   model personalized locally (`personalize`, all stages), and local-only personalization from
   the source.

    python benchmarks/fleet.py            # everything (about 10 minutes on 2 cores)
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
import time
from pathlib import Path

import numpy as np

if __package__ in (None, ""):  # `python benchmarks/fleet.py`: make `benchmarks` importable
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from benchmarks import common, fsdd  # noqa: E402
from edgeprune import reference as refmod  # noqa: E402
from edgeprune.activations import ActivationMap, record  # noqa: E402
from edgeprune.fleet import statistics  # noqa: E402
from edgeprune.fleet.local import APP, BIN, LocalFleet, free_port, toml_value  # noqa: E402
from edgeprune.model import Model  # noqa: E402
from edgeprune.personalize import personalize  # noqa: E402

SECTION = "fleet"
PER_BOARD = 24  # recordings per board in the cost runs
GOALS = {"rel_diff": 1e-6, "points": 1.0, "sim_seconds": 120.0}


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


def cost_entry(report: dict, model: Path, shares, fleet_map: Path) -> dict:
    stats = report["rounds"]["statistics"]
    got = ActivationMap.load(fleet_map, Model.load(model))
    return {
        "boards": stats["answered"],
        "secure": stats["secure"],
        "round_seconds": stats["seconds"],
        "run_seconds": report["wall_seconds"],
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
            report = fleet.run(
                model, 1800, boards=n, min_boards=n, secure=secure, map=str(fleet_map)
            )
            out.append(cost_entry(report, model, shares, fleet_map))
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
        "[superlink.sim.options.backend.client-resources]\nnum-cpus = 1\n"
    )
    env = {**os.environ, "FLWR_HOME": str(home), "PATH": f"{BIN}:/usr/bin:/bin"}
    env["FLWR_DISABLE_UPDATE_CHECK"] = "1"
    log = open(root / "superlink.log", "wb")  # noqa: SIM115  (kept open for the process)
    link = subprocess.Popen(
        [str(BIN / "flower-superlink"), "--simulation", "--insecure", "--host", "127.0.0.1",
         "--port", str(port), "--disable-runtime-dependency-installation"],
        stdout=log, stderr=subprocess.STDOUT, env=env, cwd=root, start_new_session=True,
    )  # fmt: skip
    try:
        time.sleep(5)
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
        entry = cost_entry(result, model, shares, fleet_map)
        entry["simulated"] = True
        print(json.dumps(entry), flush=True)
        return entry
    finally:
        os.killpg(link.pid, signal.SIGTERM)
        link.wait(30)
        log.close()


# ----- accuracy ---------------------------------------------------------------------------------


def accuracy(model: Model, x: np.ndarray, y: np.ndarray) -> float:
    logits = np.array([z for _, z in refmod.classifier_outputs(model, x)])
    return float(np.mean(logits.argmax(axis=1) == y))


def fsdd_boards(seed: int = 0):
    """(speaker, adaptation x, test x, test y) per board, and the source and its validation."""
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
        boards.append((speaker, X[adapt], X[test], digits[test]))
    return source.float32, (X[validation], digits[validation]), boards


def fsdd_accuracy(root: Path, rule: str, sparsity: float) -> dict:
    source_path, (vx, vy), boards = fsdd_boards()
    source = Model.load(source_path)
    with LocalFleet(root / "fsdd", start_timeout=180) as fleet:
        for speaker, adapt, _, _ in boards:
            d = fleet.root / speaker
            d.mkdir()
            np.save(d / "samples.npy", adapt)
            fleet.node(speaker, d)
        out = fleet.root / "fleet.tflite"
        report = fleet.run(
            source_path, 1800, boards=len(boards), min_boards=len(boards), rule=rule,
            sparsity=sparsity, out=str(out),
        )  # fmt: skip
    fleet_model = Model.load(out)
    source_ref = refmod.build(source, iter(vx), vy)
    fleet_ref = refmod.build(fleet_model, iter(vx), vy)
    rows = []
    for speaker, adapt, tx, ty in boards:
        local, _ = personalize(source, iter(adapt), reference=source_ref)
        on_fleet, _ = personalize(fleet_model, iter(adapt), reference=fleet_ref)
        rows.append(
            {
                "board": speaker,
                "heard_by_source": speaker != "george",
                "adapt": len(adapt),
                "test": len(tx),
                "source": accuracy(source, tx, ty),
                "fleet": accuracy(fleet_model, tx, ty),
                "fleet_local": accuracy(on_fleet, tx, ty),
                "local_only": accuracy(local, tx, ty),
            }
        )
        print(json.dumps(rows[-1]), flush=True)
    return {"rule": rule, "report": report, "rows": rows}


# ----- the section ------------------------------------------------------------------------------


def markdown(costs: list[dict], acc: dict | None, info: dict, seconds: float) -> str:
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
        "| boards | how | SecAgg+ | statistics round | whole `flwr run` | upload per board "
        "| model | max rel. diff vs central |",
        "|---:|---|---|---:|---:|---:|---:|---:|",
    ]
    for c in costs:
        how = "simulated (Ray)" if c.get("simulated") else "real SuperNodes"
        lines.append(
            f"| {c['boards']} | {how} | {'yes' if c['secure'] else 'no'} "
            f"| {c['round_seconds']:.1f} s | {c['run_seconds']:.1f} s "
            f"| {c['upload_bytes']:,} B | {c['model_bytes']:,} B | {c['rel_diff']:.2e} |"
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
        t = sim[0]["run_seconds"]
        lines.append(
            f"- a 64-board simulated round within 2 minutes: the whole run, its three rounds "
            f"(statistics, the fleet's check, delivery), {t:.0f} s — "
            f"{common.verdict(t <= GOALS['sim_seconds'])}; its statistics round alone "
            f"{sim[0]['round_seconds']:.0f} s"
        )
    else:
        lines.append("- a 64-board simulated round within 2 minutes: not run (--quick)")
    if acc is not None:
        lines += accuracy_markdown(acc)
    return "\n".join(lines)


def accuracy_markdown(acc: dict) -> list[str]:
    rows = acc["rows"]
    lines = [
        "",
        f"### Accuracy, FSDD, each speaker a board (fleet model: rule {acc['rule']}, "
        f"{acc['report']['rounds']['statistics']['sparsity']:.0%} of the weights pruned from "
        "the fleet's statistics, classifier kept)",
        "",
        "| board | heard by the source | adapt / test | source | fleet | fleet + local "
        "| local only | fleet + local − local only |",
        "|---|---|---:|---:|---:|---:|---:|---:|",
    ]
    for r in rows:
        gap = 100 * (r["fleet_local"] - r["local_only"])
        lines.append(
            f"| {r['board']} | {'yes' if r['heard_by_source'] else '**no**'} "
            f"| {r['adapt']} / {r['test']} | {r['source']:.1%} | {r['fleet']:.1%} "
            f"| {r['fleet_local']:.1%} | {r['local_only']:.1%} | {gap:+.1f} |"
        )
    worst = min(100 * (r["fleet_local"] - r["local_only"]) for r in rows)
    stats = acc["report"]["rounds"]["statistics"]
    check = acc["report"]["rounds"].get("check")
    judged = ""
    if check:
        sweep = ", ".join(
            f"{r['sparsity']:.0%}: {r['agreement']:.1%} (≥ {r['agreement_lower']:.1%})"
            for r in check["sweep"]
        )
        judged = (
            f" The fleet's check ({check['samples']} check samples on {check['boards']} boards, "
            f"agreement with the source and its lower bound per sparsity): {sweep}."
        )
    lines += [
        "",
        f"Fleet round: {stats['answered']} boards, measured sparsity "
        f"{stats['measured_sparsity']:.1%}, statistics round {stats['seconds']:.1f} s.{judged}",
        "",
        f"- no board below its local-only personalization by more than 1 point: worst "
        f"{worst:+.1f} points — {common.verdict(worst >= -GOALS['points'])}",
    ]
    return lines


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--quick", action="store_true", help="4 boards only")
    parser.add_argument("--rule", choices=("fidelity", "fixed"), default="fidelity")
    parser.add_argument("--sparsity", type=float, default=0.3, help="with --rule fixed")
    parser.add_argument("--no-write", action="store_true", help="print, do not touch RESULTS.md")
    args = parser.parse_args(argv)
    if shutil.which("flwr", path=str(BIN)) is None:
        raise SystemExit("flwr is not installed: pip install -e '.[fleet]'")
    info, start = common.machine(), time.perf_counter()
    X, _, _, _ = fsdd.load_fsdd()
    source_path, _, _ = fsdd_boards()
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
        acc = fsdd_accuracy(root, args.rule, args.sparsity)
    body = markdown(costs, acc, info, time.perf_counter() - start)
    if args.no_write:
        print(body)
    else:
        common.publish(SECTION, body)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
