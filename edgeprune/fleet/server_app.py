"""The laptop side of the fleet: a Flower `ServerApp` that adds the boards' sums and prunes.

One run is two Flower rounds, driven by Flower's own `DefaultWorkflow`:

1. statistics (fit): every available board gets the source model and answers with the sums of
   its one data pass (`client_app`). `FleetStrategy.aggregate_fit` adds them — exactly: they are
   sums — into the fleet's `ActivationMap` (through `ActivationMap.load` and `merge`, the map's own
   code), writes it to `map` if set, and builds the fleet model with edgeprune's pruning
   (`prune.compute_scores` on the fleet map, cut at `sparsity`). With `secure = true` the round
   is Flower's `SecAggPlusWorkflow`: the server sees only the total.
2. delivery (evaluate): the boards that answered get the fleet model, save it, and report how
   many of their samples it predicts as the source does (a count: the fleet's agreement).

What the fleet can and cannot build from sums: pruning needs only the activation map (a sum), so
it runs on the fleet's statistics. Its sparsity is the run's `sparsity`: choosing it needs the
judge's check samples, which stay on the boards (each board's local `personalize` judges again).
The prior stage needs per-sample logits (EM over the samples' posteriors) and the prototype stage
per-sample features (the M most confident per class): neither is a sum, so neither runs on the
fleet; both run on each board, on top of the fleet model.

A board that does not answer within `round-timeout` seconds is reported in the run's report
(`report`, JSON) and the round completes with the rest if at least `min-boards` answered.

Run config (`flwr run APP -c "model='…' …"`): model, sparsity, scope, score, granularity,
keep-classifier (as `personalize`: the classifier stages own the last layer), boards
(wait for this many SuperNodes), min-boards, round-timeout, secure, out, map, report,
partitions (simulation: the folder of each virtual board's samples, PARTITIONS/<partition-id>).
"""

from __future__ import annotations

import json
import time
from typing import Any

import numpy as np
from flwr.common import (
    Context,
    EvaluateIns,
    FitIns,
    ndarrays_to_parameters,
    parameters_to_ndarrays,
)
from flwr.server import LegacyContext, ServerApp, ServerConfig
from flwr.server.strategy import Strategy
from flwr.server.workflow import DefaultWorkflow, SecAggPlusWorkflow

from .. import prune
from .._io import atomic_open
from ..model import Model
from . import statistics
from .statistics import BoardSums

DEFAULTS: dict[str, Any] = {
    "sparsity": 0.5,
    "scope": "layer",
    "score": "fine",
    "granularity": "weight",
    "keep-classifier": True,
    "boards": 1,
    "min-boards": 1,
    "round-timeout": 600.0,
    "secure": False,
    "out": "",
    "map": "",
    "report": "",
    "partitions": "",
}


class TimedGrid:
    """Flower's Grid with a timeout on every round: a board that never answers (powered off,
    unplugged) ends the round after `timeout` seconds instead of holding it forever."""

    def __init__(self, grid, timeout: float):
        self._grid, self._timeout = grid, timeout
        self.errors: dict[int, str] = {}  # node id -> why its last reply was an error

    def send_and_receive(self, messages, *, timeout: float | None = None):
        replies = list(self._grid.send_and_receive(messages, timeout=timeout or self._timeout))
        for reply in replies:
            if reply.has_error():
                self.errors[reply.metadata.src_node_id] = str(reply.error.reason)
        return replies

    def __getattr__(self, name: str):
        return getattr(self._grid, name)


class FleetStrategy(Strategy):
    """Adds the boards' sums and builds the fleet model (see the module docstring)."""

    def __init__(self, source: bytes, config: dict[str, Any], errors: dict[int, str]):
        """`errors`: node id -> reason of its error reply (filled by `TimedGrid`)."""
        self.source, self.config, self.errors = source, config, errors
        self.model = Model(source)
        self.report: dict[str, Any] = {"rounds": {}}
        self.sent: set[int] = set()
        self.answered: list[int] = []
        self.fleet: Model | None = None
        self.amap = None
        self._started = 0.0

    def _uint8(self, data: bytes) -> np.ndarray:
        return np.frombuffer(data, np.uint8).copy()

    def initialize_parameters(self, client_manager):
        return ndarrays_to_parameters([self._uint8(self.source)])

    def configure_fit(self, server_round, parameters, client_manager):
        boards = int(self.config["boards"])
        client_manager.wait_for(boards)
        clients = client_manager.sample(client_manager.num_available(), boards)
        self.sent = {c.node_id for c in clients}
        self._started = time.perf_counter()
        config = {"secure": bool(self.config["secure"])}
        return [(c, FitIns(parameters, config)) for c in clients]

    def aggregate_fit(self, server_round, results, failures):
        seconds = time.perf_counter() - self._started
        self.answered = [proxy.node_id for proxy, _ in results]
        failed = {f[0].node_id: str(f[1].status) for f in failures if isinstance(f, tuple)}
        failed.update({n: why for n, why in self.errors.items() if n in self.sent})
        missing = sorted(self.sent - set(self.answered) - set(failed))
        entry = {
            "sent": len(self.sent),
            "answered": len(results),
            "failed": [{"node": n, "reason": why} for n, why in sorted(failed.items())],
            "missing": missing,
            "seconds": seconds,
            "secure": bool(self.config["secure"]),
            "upload_bytes": [int(r.metrics.get("bytes", 0)) for _, r in results],
            "samples": [int(r.metrics.get("samples", 0)) for _, r in results],
            "model_bytes": len(self.source),
        }
        self.report["rounds"]["statistics"] = entry
        if len(results) < int(self.config["min-boards"]):
            entry["error"] = (
                f"only {len(results)} of {len(self.sent)} boards answered; "
                f"min-boards is {self.config['min-boards']}"
            )
            self._write_report()
            return None, {}
        sums = self._sums(results)
        self.amap = statistics.activation_map(self.model, sums)
        if self.config["map"]:
            self.amap.save(self.config["map"])
        scores = prune.compute_scores(
            self.model,
            self.amap.layers,
            self.amap,
            score=self.config["score"],
            granularity=self.config["granularity"],
            keep_classifier=bool(self.config["keep-classifier"]),
        )
        sparsity = float(self.config["sparsity"])
        self.fleet = prune.apply(self.model, scores.masks(sparsity, self.config["scope"]))
        zeros, total = prune.measured_sparsity(self.fleet, self.amap.layers)
        entry.update(
            map_samples=self.amap.count,
            sparsity=sparsity,
            measured_sparsity=zeros / total if total else 0.0,
        )
        if self.config["out"]:
            self.fleet.save(self.config["out"])
        self._write_report()
        fleet = self._uint8(self.fleet.to_bytes())
        return ndarrays_to_parameters([fleet, self._uint8(self.source)]), {}

    def _sums(self, results) -> BoardSums:
        """The fleet's sums: added here, or (secure) already added by SecAgg+."""
        names, shapes, signs = statistics.layout(self.model)
        if self.config["secure"]:
            # SecAgg+ hands every result the same average of the boards' limbs; × boards = sum.
            mean = parameters_to_ndarrays(results[0][1].parameters)
            limbs = [a * len(results) for a in mean]
            return BoardSums(names, statistics.decode(limbs, shapes, signs))
        total = None
        for _, res in results:
            board = BoardSums(names, parameters_to_ndarrays(res.parameters))
            total = board if total is None else total + board
        return total

    def configure_evaluate(self, server_round, parameters, client_manager):
        if self.fleet is None:
            return []
        by_id = {c.node_id: c for c in client_manager.all().values()}
        chosen = [by_id[n] for n in self.answered if n in by_id]
        return [(c, EvaluateIns(parameters, {})) for c in chosen]

    def aggregate_evaluate(self, server_round, results, failures):
        agree = sum(int(r.metrics.get("agree", 0)) for _, r in results)
        seen = sum(int(r.num_examples) for _, r in results)
        self.report["rounds"]["delivery"] = {
            "boards": len(results),
            "failed": len(failures),
            "agreement": agree / seen if seen else None,
            "samples": seen,
        }
        self._write_report()
        return None, {}

    def evaluate(self, server_round, parameters):
        return None

    def _write_report(self) -> None:
        if self.config["report"]:
            with atomic_open(self.config["report"]) as f:
                f.write(json.dumps(self.report, indent=2).encode())


def settings(run_config: dict[str, Any]) -> dict[str, Any]:
    """The run config with defaults filled in; `model` is required."""
    config = {**DEFAULTS, **dict(run_config)}
    if not config.get("model"):
        raise ValueError("run config 'model' must name the source .tflite on this machine")
    return config


def secagg_shares(boards: int) -> tuple[int, int]:
    """SecAgg+'s (num_shares, reconstruction_threshold) for a round of `boards`: every board
    shares its keys with all others (at least 3), and two thirds of them (fewer than all) can
    rebuild a dropped board's mask: the round survives a third of the boards dropping out, and
    fewer than two thirds colluding with the server learn nothing about a board's sums."""
    shares = max(3, boards)
    return shares, min(shares - 1, max(2, -(-2 * shares // 3)))


app = ServerApp()


@app.main()
def main(grid, context: Context) -> None:
    """Flower's DefaultWorkflow, one round, with SecAgg+ as the fit round when `secure`."""
    config = settings(context.run_config)
    timeout = float(config["round-timeout"])
    timed = TimedGrid(grid, timeout)
    with open(config["model"], "rb") as f:
        strategy = FleetStrategy(f.read(), config, timed.errors)
    legacy = LegacyContext(context=context, config=ServerConfig(num_rounds=1), strategy=strategy)
    fit = None
    if config["secure"]:
        shares, threshold = secagg_shares(int(config["boards"]))
        fit = SecAggPlusWorkflow(
            num_shares=shares,
            reconstruction_threshold=threshold,
            timeout=timeout,
            **statistics.SECAGG_SETTINGS,
        )
    DefaultWorkflow(fit_workflow=fit)(timed, legacy)
