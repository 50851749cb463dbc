"""The laptop side of the fleet: a Flower `ServerApp` that adds the boards' sums and prunes.

Flower's own `DefaultWorkflow` drives the rounds:

1. statistics (fit): every available board gets the source model and answers with the sums of
   its one data pass (`client_app`). `FleetStrategy.aggregate_fit` adds them — exactly: they are
   sums — into the fleet's `ActivationMap` (read through the map's own file format), written to
   `map` if set. With `secure = true` the round is Flower's `SecAggPlusWorkflow`: the server
   sees only the total.
2. check (evaluate, rule "fidelity", the default): the boards get the fleet's map, cut the same
   sweep of candidates from it (`personalize`'s sparsities) and answer with counts of check
   samples each candidate predicts as the current model does and, with the source's
   `reference` on the server (which sends the calibrating temperature down), the sums of the
   paired accuracy-estimate scores (`fidelity`); the server keeps the largest sparsity that
   `personalize`'s check admits over the fleet's totals (`stages.admissible`: the agreement
   bound and the estimated change; without a reference, no changed prediction). With rule
   "fixed" the fleet model is cut at `sparsity` right after round 1.
3. delivery (evaluate; round 2 under "fidelity", whose fit round has nothing to do): the boards
   that answered get the fleet model (and, while its features are the source's, the source's
   reference rebound to it, with the prior the fleet gave it: `Reference.rebind`), save them,
   and report how many of their samples it predicts as the source does. The laptop writes the
   same reference beside `out` (`fleet.reference.npz`).

What the fleet can and cannot build from sums: pruning needs only the activation map (a sum), and
its check needs only counts and sums of scores: both run on the fleet. The prior stage (with a
`reference`, between rounds 1 and 2) needs, at each EM iteration, the sum of the boards' fit
posteriors under the current prior: one round an iteration (`prior_stage`; the boards keep their
fit logits in the node's state), then the tests on the server and one round to judge the
proposal; a kept prior is in the fleet model, and the check judges pruning against it. EM on a
prior near the simplex's boundary takes hundreds of iterations, hence `prior-iterations`. The
prototype stage keeps, per class, the M most confident single features: a selection of samples,
not a sum, so it cannot run on the fleet; it runs on each board, on top of the fleet model
(`edgeprune personalize fleet.tflite DATA`).

A board that does not answer within `round-timeout` seconds is reported in the run's report
(`report`, JSON) and the round completes with the rest if at least `min-boards` answered.

Run config (`flwr run APP -c "model='…' …"`): model, rule (fidelity|fixed), agreement, sparsity
(rule fixed), scope, score, granularity, keep-classifier (as `personalize`: the classifier stages
own the last layer), boards (wait for this many SuperNodes), min-boards, round-timeout, secure,
out, map, report, partitions (simulation: virtual board i reads PARTITIONS/i), reference (the
source's, for the accuracy estimate and the prior), tolerance.
"""

from __future__ import annotations

import json
import time
from types import SimpleNamespace
from typing import Any

import flwr.compat.common.recorddict_compat as compat
import numpy as np
from flwr.common import (
    Context,
    EvaluateIns,
    FitIns,
    Message,
    MessageType,
    ndarrays_to_parameters,
    parameters_to_ndarrays,
)
from flwr.server import LegacyContext, ServerApp, ServerConfig
from flwr.server.strategy import Strategy
from flwr.server.workflow import DefaultWorkflow, SecAggPlusWorkflow

from .. import prune
from .._io import atomic_open
from ..classifier import Classifier
from ..estimate import TOLERANCE, AccuracyEstimator
from ..model import Model
from ..personalize import DEFAULT_SPARSITIES as SPARSITIES
from ..reference import Reference, beside
from ..stages import PriorStage, State
from . import fidelity, prior_stage, statistics
from .statistics import BoardSums

DEFAULTS: dict[str, Any] = {
    "sparsity": 0.5,
    "scope": "layer",
    "score": "fine",
    "granularity": "weight",
    "keep-classifier": True,
    "rule": "fidelity",
    "agreement": 0.95,
    "boards": 1,
    "min-boards": 1,
    "round-timeout": 600.0,
    "secure": False,
    "out": "",
    "map": "",
    "report": "",
    "partitions": "",
    "reference": "",
    "tolerance": TOLERANCE,
    "prior": True,
    "prior-iterations": 300,
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

    def __init__(
        self,
        source: bytes,
        config: dict[str, Any],
        errors: dict[int, str],
        reference: Reference | None = None,
    ):
        """`errors`: node id -> reason of its error reply (filled by `TimedGrid`);
        `reference`: the source's (`edgeprune reference`), for the accuracy estimate."""
        self.source, self.config, self.errors = source, config, errors
        self.model = Model(source)
        self.reference = reference
        self.layer = layer = Classifier.of(self.model)
        # The current model and its final layer as real numbers (`stages.State`), and the class
        # prior the accuracy estimate weights the reference with (None: the source's).
        self.current, self.weight, self.bias = self.model, layer.weight, layer.bias
        self.target_prior = None
        self.model_prior = None  # the prior a kept prior stage gave the fleet model
        self.fleet_reference: Reference | None = None  # the reference rebound to the fleet model
        self.grid = None  # the Grid, for the prior stage's rounds (set by `main`)
        self.logits = 0  # the fit logits the boards keep for the prior
        self.report: dict[str, Any] = {"rounds": {}}
        self.sent: set[int] = set()
        self.answered: list[int] = []
        self.fleet: Model | None = None
        self.amap = None
        self.feature_sum: np.ndarray | None = None
        self._started = 0.0

    def _uint8(self, data: bytes) -> np.ndarray:
        return np.frombuffer(data, np.uint8).copy()

    def initialize_parameters(self, client_manager):
        return ndarrays_to_parameters([self._uint8(self.source)])

    def configure_fit(self, server_round, parameters, client_manager):
        if server_round > 1:  # round 2 only delivers the model the check chose (evaluate)
            return []
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
        self.feature_sum = sums.arrays[sums.names.index(statistics.FEATURES)]
        self.amap = statistics.activation_map(self.model, sums)
        if self.config["map"]:
            self.amap.save(self.config["map"])
        entry["map_samples"] = self.amap.count
        self.logits = sum(int(r.metrics.get("logits", 0)) for _, r in results)
        if self.reference is not None and self.config["prior"] and self.grid is not None:
            self._prior(sums)
        if self.config["rule"] == "fixed":
            self._build(float(self.config["sparsity"]))
        self._write_report()
        return None, {}

    def _prior(self, sums: BoardSums) -> None:
        """The prior stage (`prior_stage`), as `personalize` runs it: EM rounds, the tests, the
        reweighted estimate, the proposal judged by one more round; kept if it does not hurt."""
        entry: dict[str, Any] = {"applied": False}
        self.report["rounds"]["prior"] = entry
        start = time.perf_counter()
        try:
            shift, entry["rounds"] = prior_stage.estimate(
                self._ask, self.logits, self.reference, self.weight, self.bias,
                statistics.feature_mean(sums), self.amap.count,
                int(self.config["prior-iterations"]),
            )  # fmt: skip
            entry.update(shift.to_dict())
            stage = PriorStage(shift)
            if shift.significant and shift.labels_only:
                self.target_prior = shift.target  # as personalize's judge.reweight
            state = State(self.current, self.weight, self.bias)
            # The stage needs of the evidence only the final layer it rewrites.
            proposal = stage.propose(state, SimpleNamespace(classifier=self.layer), None)
            if proposal is None:
                entry["reason"] = stage.skipped
                return
            verdict = prior_stage.judge(
                self._ask, self.reference, self.target_prior, self.weight, self.bias,
                proposal.bias, float(self.config["tolerance"]),
            )  # fmt: skip
            entry["check"] = verdict.to_dict()
            if not verdict.kept:
                entry["reason"] = "the estimated accuracy would drop"
                return
            entry["applied"] = True
            self.current, self.bias = proposal.model, proposal.bias
            self.model_prior = shift.model_prior
        except prior_stage.BoardMissing as e:
            entry["reason"] = f"skipped: {e}"
        finally:
            entry["seconds"] = time.perf_counter() - start

    def _ask(self, arrays: list[np.ndarray], config: dict) -> list[dict]:
        """One round of the prior stage to every board of the statistics round: their replies'
        metrics, or `BoardMissing` if one did not answer."""
        self._asked = getattr(self, "_asked", 0) + 1
        ins = EvaluateIns(ndarrays_to_parameters(arrays), config)
        messages = [
            Message(
                content=compat.evaluateins_to_recorddict(ins, True),
                dst_node_id=node,
                message_type=MessageType.EVALUATE,
                group_id=f"prior-{self._asked}",
            )
            for node in self.answered
        ]
        replies = [m for m in self.grid.send_and_receive(messages) if m.has_content()]
        if len(replies) < len(messages):
            raise prior_stage.BoardMissing(
                f"{len(messages) - len(replies)} of {len(messages)} boards did not answer"
            )
        return [dict(compat.recorddict_to_evaluateres(m.content).metrics) for m in replies]

    def _build(self, sparsity: float) -> None:
        """The fleet model: the current model pruned at `sparsity` from the fleet's map."""
        how = fidelity.settings(self.config)
        _, self.fleet = next(fidelity.candidates(self.current, self.amap, [sparsity], how))
        zeros, total = prune.measured_sparsity(self.fleet, self.amap.layers)
        self.report["rounds"]["statistics"].update(
            rule=self.config["rule"],
            sparsity=sparsity,
            measured_sparsity=zeros / total if total else 0.0,
        )
        if self.config["out"]:
            self.fleet.save(self.config["out"])
        self._rebind(sparsity)

    def _rebind(self, sparsity: float) -> None:
        """The source's reference rebound to the fleet model (with the prior the fleet gave it),
        written beside `out` and delivered with the model: what a board's `personalize` on top
        needs to judge its stages. Only while pruning left the features as the source's."""
        entry = self.report["rounds"]["statistics"]
        if self.reference is None:
            return
        if sparsity > 0:
            entry["reference"] = "none: pruning changed the features the source reference describes"
            return
        self.fleet_reference = self.reference.rebind(self.fleet, self.model_prior)
        if self.config["out"]:
            self.fleet_reference.save(beside(self.config["out"]))
            entry["reference"] = str(beside(self.config["out"]))

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

    def _boards(self, client_manager) -> list:
        """The boards that answered the statistics round (still connected)."""
        by_id = {c.node_id: c for c in client_manager.all().values()}
        return [by_id[n] for n in self.answered if n in by_id]

    def configure_evaluate(self, server_round, parameters, client_manager):
        if self.amap is None:
            return []
        if self.fleet is None:  # rule "fidelity": the fleet judges the sweep first
            names, _, _ = statistics.layout(self.model)
            sums = statistics.board_sums(self.amap, np.zeros(1)).arrays[: len(names) - 1]
            arrays = [self._uint8(self.current.to_bytes()), *sums, self.feature_sum]
            config = {
                "stage": "check",
                "sparsities": ",".join(str(s) for s in SPARSITIES),
                **{k: self.config[k] for k in ("score", "granularity", "scope")},
                "keep-classifier": bool(self.config["keep-classifier"]),
            }
            if self.reference is not None:
                estimator = AccuracyEstimator(self.reference, self.target_prior, "ac")
                config["temperature"] = estimator.calibrate(self.weight, self.bias)
            ins = EvaluateIns(ndarrays_to_parameters(arrays), config)
            return [(c, ins) for c in self._boards(client_manager)]
        model = [self._uint8(self.fleet.to_bytes()), self._uint8(self.source)]
        if self.fleet_reference is not None:
            model.append(self._uint8(self.fleet_reference.to_bytes()))
        ins = EvaluateIns(ndarrays_to_parameters(model), {"stage": "deliver"})
        return [(c, ins) for c in self._boards(client_manager)]

    def aggregate_evaluate(self, server_round, results, failures):
        if self.fleet is None:
            totals = [self._check_totals(results, i) for i in range(len(SPARSITIES))]
            chosen, rows = fidelity.choose(
                SPARSITIES, totals, float(self.config["agreement"]), float(self.config["tolerance"])
            )
            self.report["rounds"]["check"] = {
                "boards": len(results),
                "failed": len(failures),
                "samples": int(round(totals[0][1])),
                "agreement": float(self.config["agreement"]),
                "estimated": self.reference is not None,
                "sweep": rows,
            }
            self._build(chosen)
            self._write_report()
            return None, {}
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

    @staticmethod
    def _check_totals(results, i: int) -> np.ndarray:
        """Candidate `i`'s `fidelity.check_sums`, added over the boards' replies."""
        width = len([k for k in results[0][1].metrics if k.startswith(f"c{i}_")])
        return np.array(
            [sum(float(r.metrics[f"c{i}_{j}"]) for _, r in results) for j in range(width)]
        )

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
    if config["rule"] not in ("fidelity", "fixed"):
        raise ValueError(f"run config 'rule' is fidelity or fixed, not {config['rule']!r}")
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
        source = f.read()
    reference = None
    if config["reference"]:
        reference = Reference.load(config["reference"])
        reference.check(Model(source))
        reference.fits(Classifier.of(Model(source)))
    strategy = FleetStrategy(source, config, timed.errors, reference)
    strategy.grid = timed
    rounds = 2 if config["rule"] == "fidelity" else 1  # fidelity: check (1), deliver (2)
    legacy = LegacyContext(
        context=context, config=ServerConfig(num_rounds=rounds), strategy=strategy
    )
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
