"""The board side of the fleet: a Flower `ClientApp` that answers with sums, never samples.

Each SuperNode runs on one board and names that board's unlabeled samples in its node config
(`flower-supernode --node-config "data='/home/pi/samples' out='/home/pi/fleet.tflite'"`).

- fit (the statistics round): the server sends the source model; the board runs edgeprune's one
  data pass (`stages.collect`) over its samples and replies with the pass's sums
  (`statistics.measure`): the activation map and the feature sum. Under secure aggregation the
  sums go as exact integer limbs (`statistics.encode`) through Flower's `secaggplus_mod`, so the
  server only ever sees the fleet's total.
- evaluate, check stage (rule "fidelity"): the server sends the current model and the fleet's
  activation map (and, with a reference on the server, the temperature that calibrates the
  model's final layer); the board cuts the sweep's candidates from the map and replies, per
  candidate, how many of its check samples it predicts as the model does and the sums of the
  paired accuracy-estimate scores (`fidelity.check_sums`): counts and sums.
- evaluate (the delivery round): the server sends the fleet model (and its reference, when the
  fleet has one); the board saves them to `out` and beside it (`fleet.reference.npz`) and
  replies how many of its samples the fleet model predicts as the source does — one count,
  again a sum. The board may then personalize locally on top (`edgeprune personalize
  fleet.tflite DATA --reference fleet.reference.npz`).
"""

from __future__ import annotations

import os
import time

import numpy as np
from flwr.client import ClientApp, NumPyClient
from flwr.client.mod import secaggplus_mod
from flwr.common import ArrayRecord, Context, Message, MessageType, RecordDict
from flwr.common.secure_aggregation.secaggplus_constants import RECORD_KEY_CONFIGS, Key

from ..data import Samples
from ..model import Model
from ..reference import Reference, beside, classifier_outputs
from ..stages import Reservoir, collect
from . import fidelity, prior_stage, statistics

KEPT = "edgeprune.pass"  # the node state's record of the pass's per-sample values
CHECK_SAMPLES = 256  # as `personalize`'s evaluation_size: the check reservoir's size


class BoardClient(NumPyClient):
    """One board: its samples (a .npy/.npz file or folder) and where the fleet model goes.
    What the pass leaves for the prior's rounds — its fit logits and check features, per-sample
    values that never leave the board — is kept in the node's `state` (Flower keeps a node's
    context across the messages of a run)."""

    def __init__(self, data: str, out: str = "", state: RecordDict | None = None):
        self.data, self.out = data, out
        self.state = RecordDict() if state is None else state

    def _samples(self, model: Model) -> Samples:
        return Samples(self.data, tuple(model.tensor(model.main.inputs[0]).shape))

    def fit(self, parameters, config):
        start = time.perf_counter()
        model = Model(bytes(np.asarray(parameters[0], np.uint8)))
        evidence = collect(model, self._samples(model))
        self.state[KEPT] = ArrayRecord([evidence.fit_logits, evidence.check_features])
        sums, seen = statistics.sums_of(evidence), evidence.samples
        arrays = sums.arrays
        if config.get("secure"):
            arrays = statistics.encode(arrays, statistics.signed(sums))
        upload = sum(a.nbytes for a in arrays)
        metrics = {
            "samples": seen,
            "logits": len(evidence.fit_logits),
            "seconds": time.perf_counter() - start,
            "bytes": upload,
        }
        # num_examples 1: the board's weight in SecAgg+'s average (the server multiplies back).
        return arrays, 1, metrics

    def evaluate(self, parameters, config):
        if config.get("stage") == "check":
            return self._check(parameters, config)
        if config.get("stage") == "prior":
            source, target = (np.asarray(a, float) for a in parameters)
            logits, _ = self._kept()
            sums = prior_stage.em_sums(logits, float(config["temperature"]), source, target)
            return 0.0, len(logits), sums
        if config.get("stage") == "final-layer":
            _, features = self._kept()
            calibrations = [float(config[f"cal{i}"]) for i in range(4)]
            sums = prior_stage.final_layer_sums(features, parameters, calibrations)
            return 0.0, len(features), sums
        model = Model(bytes(np.asarray(parameters[0], np.uint8)))
        source = Model(bytes(np.asarray(parameters[1], np.uint8)))
        if self.out:
            model.save(self.out)
            if len(parameters) > 2:  # the reference rebound to the fleet model
                ref = Reference.from_bytes(bytes(np.asarray(parameters[2], np.uint8)), "fleet")
                ref.check(model)
                ref.save(beside(self.out))
        fleet = [z.argmax() for _, z in classifier_outputs(model, self._samples(model))]
        before = [z.argmax() for _, z in classifier_outputs(source, self._samples(source))]
        same = int(sum(a == b for a, b in zip(fleet, before)))
        return 0.0, len(fleet), {"agree": same}

    def _check(self, parameters, config):
        """The fleet's sweep judged here: per candidate cut from the fleet's map (sent down),
        the sums of this board's check (`fidelity.check_sums`: counts of predictions kept and,
        given the server's temperature, the paired sums of the estimated change)."""
        model = Model(bytes(np.asarray(parameters[0], np.uint8)))
        names, _, _ = statistics.layout(model)
        amap = statistics.activation_map(model, statistics.BoardSums(names, parameters[1:]))
        sparsities = [float(s) for s in str(config["sparsities"]).split(",")]
        temperature = float(config["temperature"]) if "temperature" in config else None
        rows = fidelity.check_sums(
            model, amap, sparsities, fidelity.settings(config), self._check_samples(model),
            temperature,
        )  # fmt: skip
        metrics = {f"c{i}_{j}": float(v) for i, row in enumerate(rows) for j, v in enumerate(row)}
        return 0.0, int(rows[0][1]), metrics

    def _kept(self) -> tuple[np.ndarray, np.ndarray]:
        """The fit logits and check features of this run's statistics round."""
        if KEPT not in self.state:
            raise RuntimeError("no statistics round on this board in this run")
        logits, features = self.state[KEPT].to_numpy_ndarrays()
        return logits, features

    def _check_samples(self, model: Model) -> list[np.ndarray]:
        """The check part of `stages.collect`'s split: a uniform reservoir of the odd samples."""
        check = Reservoir(CHECK_SAMPLES, seed=0)
        for i, x in enumerate(self._samples(model)):
            if i % 2:
                check.add(np.array(x))
        return check.items


def client_fn(context: Context):
    """The board's client, from its node config (`data`, optional `out`). Under Flower's
    simulation engine a virtual node has only its `partition-id`: its samples are then
    `PARTITIONS/<partition-id>` (run config `partitions`)."""
    node = context.node_config
    data = str(node.get("data", ""))
    if not data and "partition-id" in node and context.run_config.get("partitions"):
        data = os.path.join(str(context.run_config["partitions"]), str(node["partition-id"]))
    if not data or not os.path.exists(data):
        raise ValueError(f"node config 'data' must name this board's samples, got {data!r}")
    return BoardClient(data, str(node.get("out", "")), context.state).to_client()


def secure_when_asked(msg: Message, ctxt: Context, call_next):
    """Flower's `secaggplus_mod` for rounds the server runs under SecAgg+; plain rounds pass."""
    configs = msg.content.config_records.get(RECORD_KEY_CONFIGS)
    if msg.metadata.message_type == MessageType.TRAIN and configs and Key.STAGE in configs:
        return secaggplus_mod(msg, ctxt, call_next)
    return call_next(msg, ctxt)


app = ClientApp(client_fn=client_fn, mods=[secure_when_asked])
