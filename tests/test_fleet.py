"""The fleet on real Flower processes on 127.0.0.1: a SuperLink, SuperNodes (one per simulated
board, each with a disjoint share of samples) and `flwr run`, exactly as a user deploys them
(docs/DEVICES.md), in insecure mode on the loopback.

The aggregated activation map must equal the map recorded centrally over the union of the boards'
fit parts (float rounding only), with and without SecAgg+; a board that dies mid-round is reported
and the round completes with the others. Select with `-m fleet`; skipped without flwr.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import threading
import time
from pathlib import Path

import numpy as np
import pytest

from edgeprune import prior
from edgeprune.activations import ActivationMap, record
from edgeprune.fleet import statistics
from edgeprune.fleet.local import BIN, LocalFleet
from edgeprune.model import Model
from edgeprune.reference import Reference, beside
from edgeprune.stages import collect
from tests.models import random_inputs
from tests.test_fleet_statistics import assert_same_sweep, central_sweep, reference_for

pytestmark = [pytest.mark.fleet, pytest.mark.host("flwr")]

BOARDS = 4
PER_BOARD = 10
# Rounds on a loaded 2-core machine: each message starts a ClientApp process per board.
TIMEOUT = 240


def _input_shape(path: Path) -> tuple[int, ...]:
    """One sample's shape (the model input's without its batch axis)."""
    model = Model.load(path)
    return tuple(model.tensor(model.main.inputs[0]).shape[1:])


@pytest.fixture(scope="module")
def fleet(tmp_path_factory, tflite_model):
    """SuperLink + 4 SuperNodes; board k holds samples seeded k (disjoint shares)."""
    for exe in ("flower-superlink", "flower-supernode", "flwr"):
        if not (BIN / exe).exists() and shutil.which(exe) is None:
            pytest.skip(f"{exe} not installed (pip install -e '.[fleet]')")
    root = tmp_path_factory.mktemp("fleet")
    model = tflite_model("float32", "mixed")
    shape = _input_shape(model)
    f = LocalFleet(root)
    shares = []
    try:
        for k in range(BOARDS):
            data = root / f"board{k}"
            data.mkdir()
            share = random_inputs(PER_BOARD, shape, seed=100 + k)
            np.save(data / "samples.npy", share)
            shares.append(share)
            f.node(f"board{k}", data, data / "fleet.tflite")
        f.model, f.shares = model, shares
        yield f
    finally:
        f.close()


def central(model: Path, shares) -> ActivationMap:
    """The map one pass records over the union of the boards' fit parts (their even samples)."""
    return record(Model.load(model), np.concatenate([s[0::2] for s in shares]))


# The map's own float32 partial sums differ with the grouping of samples (activations.FOLD_EVERY
# bounds that rounding below 1e-5); the aggregation itself adds no error.
TOLERANCE = 1e-5


@pytest.mark.parametrize("secure", [False, True], ids=["plain", "secagg+"])
def test_the_fleet_map_is_the_central_map(fleet, secure):
    """Plain: the fleet model cut at a fixed sparsity. SecAgg+: the default rule "fidelity",
    judged by the boards' counts: 20 check samples cannot show 95 % agreement (Wilson lower
    bound of 20/20 is 0.88), so the fleet keeps the source as it is."""
    fleet_map = fleet.root / f"fleet-{secure}.npz"
    out = fleet.root / f"fleet-{secure}.tflite"
    rule = {"secure": True} if secure else {"rule": "fixed", "sparsity": 0.5}
    report = fleet.run(
        fleet.model,
        TIMEOUT,
        boards=BOARDS,
        **{"min-boards": BOARDS, "map": str(fleet_map), "out": str(out), **rule},
    )
    stats = report["rounds"]["statistics"]
    assert stats["answered"] == BOARDS and stats["missing"] == [] and stats["secure"] == secure
    model = Model.load(fleet.model)
    got, want = ActivationMap.load(fleet_map, model), central(fleet.model, fleet.shares)
    assert got.count == want.count == BOARDS * PER_BOARD // 2
    assert statistics.max_relative_difference(got, want) <= TOLERANCE
    # Each board sent sums of the size of the map, not its samples.
    assert all(b < stats["model_bytes"] * 2 for b in stats["upload_bytes"])
    assert report["rounds"]["delivery"]["boards"] == BOARDS
    if not secure:
        assert stats["rule"] == "fixed" and abs(stats["measured_sparsity"] - 0.5) < 0.05
        assert Model.load(out).to_bytes() != model.to_bytes()
        return
    check = report["rounds"]["check"]
    assert check["boards"] == BOARDS and check["samples"] == BOARDS * PER_BOARD // 2
    sweep = check["sweep"]
    assert [r["sparsity"] for r in sweep][:2] == [0.0, 0.1] and sweep[0]["agreement"] == 1.0
    assert all(r["agreement_lower"] < 0.95 for r in sweep)
    assert stats["sparsity"] == 0.0 and Model.load(out).to_bytes() == model.to_bytes()


def test_the_fleet_check_is_the_central_check(fleet):
    """With the source's reference on the server, the fleet's check (agreement and the accuracy
    estimate, from the boards' sums) makes the decision and gives the figures `personalize`'s
    prune stage gives over the union of the boards' samples."""
    model = Model.load(fleet.model)
    reference = reference_for(model)
    path = fleet.root / "reference.npz"
    reference.save(path)
    agreement = 0.6  # 20 check samples: a bound 0.95 could never be reached
    iterations = 3  # EM's rounds, capped (each is a Flower round); the central EM has the same cap
    report = fleet.run(
        fleet.model,
        TIMEOUT,
        boards=BOARDS,
        **{
            "min-boards": BOARDS,
            "reference": str(path),
            "agreement": agreement,
            "prior-iterations": iterations,
            "out": str(fleet.root / "fleet.tflite"),
        },
    )
    check = report["rounds"]["check"]
    assert check["estimated"] and check["samples"] == BOARDS * PER_BOARD // 2
    stage = central_sweep(model, fleet.shares, reference, agreement)
    assert_same_sweep(check["sweep"], stage)
    assert report["rounds"]["statistics"]["sparsity"] == stage.candidates[stage.chosen].sparsity
    # The prior stage: EM over the boards' sums, a round an iteration, is the central EM.
    union = collect(model, np.concatenate(fleet.shares), reference=reference)
    c = union.classifier
    want = prior.estimate(
        union.fit_logits, reference, c.weight, c.bias, union.feature_mean, union.fit_samples,
        iterations=iterations,
    ).to_dict()  # fmt: skip
    got = report["rounds"]["prior"]
    assert got["rounds"] == iterations + 1 and got["samples"] == want["samples"]
    np.testing.assert_allclose(got["target_prior"], want["target_prior"], atol=1e-4)
    for key in ("statistic", "threshold", "feature_distance", "feature_threshold"):
        assert got[key] == pytest.approx(want[key], rel=1e-6), key
    assert (got["significant"], got["labels_only"]) == (want["significant"], want["labels_only"])
    assert got["applied"] is False and got["reason"]
    # The reference the boards personalize on top with: the source's rebound to the fleet model
    # (while pruning left its features as they were), on the laptop and on every board.
    delivered = [beside(fleet.root / f"board{k}" / "fleet.tflite") for k in range(BOARDS)]
    if report["rounds"]["statistics"]["sparsity"] == 0:
        laptop = Reference.load(beside(fleet.root / "fleet.tflite"))
        laptop.check(Model.load(fleet.root / "fleet.tflite"))
        assert laptop.model_prior is None  # the prior stage was not kept
        for board in map(Reference.load, delivered):
            assert board.model_sha256 == laptop.model_sha256
            assert board.temperature == laptop.temperature
            np.testing.assert_array_equal(board.features, laptop.features)
    else:
        assert report["rounds"]["statistics"]["reference"].startswith("none: pruning")
        assert not any(p.exists() for p in delivered)


def _client_app_started(node: subprocess.Popen) -> bool:
    """Whether a `flwr-clientapp` process runs in `node`'s process group (a message arrived)."""
    import psutil  # the [test] extra: not in the core's venv, where this module is skipped

    for proc in psutil.process_iter(["cmdline"]):
        try:
            cmdline = " ".join(proc.info["cmdline"] or ())
            if "flwr-clientapp" in cmdline and os.getpgid(proc.pid) == node.pid:
                return True
        except (psutil.Error, ProcessLookupError):
            continue
    return False


def test_a_board_that_dies_mid_round_is_reported(fleet):
    """A fifth board is killed (its SuperNode's whole process group: a board losing power) as
    soon as its ClientApp starts on the round's message; the round ends at round-timeout with
    the four others, and the report names the board that did not answer."""
    data = fleet.root / "board-dying"
    data.mkdir()
    shape = _input_shape(fleet.model)
    np.save(data / "samples.npy", random_inputs(200, shape, seed=99))
    node = fleet.node("board-dying", data)
    killed = threading.Event()

    def kill_mid_round() -> None:
        end = time.monotonic() + TIMEOUT
        while time.monotonic() < end and not _client_app_started(node):
            time.sleep(0.05)
        LocalFleet.kill(node)
        killed.set()

    threading.Thread(target=kill_mid_round, daemon=True).start()
    fleet_map = fleet.root / "fleet-dropout.npz"
    report = fleet.run(
        fleet.model,
        TIMEOUT,
        boards=BOARDS + 1,
        **{"min-boards": BOARDS, "round-timeout": 30.0, "map": str(fleet_map), "rule": "fixed"},
    )
    assert killed.is_set()
    stats = report["rounds"]["statistics"]
    assert stats["sent"] == BOARDS + 1 and stats["answered"] == BOARDS
    assert len(stats["missing"]) == 1 and stats["failed"] == [], stats
    got = ActivationMap.load(fleet_map, Model.load(fleet.model))
    assert statistics.max_relative_difference(got, central(fleet.model, fleet.shares)) <= TOLERANCE
