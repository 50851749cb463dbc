"""Rewriting the final layer: stored in the layer's own format, argmax equal to the float math."""

import numpy as np
import pytest

from edgeprune.classifier import Classifier
from edgeprune.model import Model
from edgeprune.runtime import Runner
from tests.models import INPUT_SHAPES, build, random_inputs

CASES = [("float32", "mixed"), ("float16", "mixed"), ("dynamic", "mixed_wide"), ("int8", "mixed")]
CASES += [("uint8", "mixed")]


def new_classifier(c: Classifier, rng) -> tuple[np.ndarray, np.ndarray]:
    """A different classifier: rows shuffled and rescaled (some beyond the old scale), new bias."""
    weight = c.weight[rng.permutation(c.classes)] * rng.uniform(0.6, 1.4, (c.classes, 1))
    return weight, c.bias[rng.permutation(c.classes)] * 0.5


def dynamic_range_error(features: np.ndarray, weight: np.ndarray, step: np.ndarray) -> float:
    """The most a dynamic-range FULLY_CONNECTED's logit can be off the float math: its int8
    weights are within half a step (`step`, per row) and it quantizes the features to int8 on the
    fly (a step of max|x| / 127: CPUs differ in how they round, aarch64 and x86 do)."""
    x_step = np.abs(features).max() / 127
    rows = 0.5 * step.reshape(-1) * np.abs(features).sum() + 0.5 * x_step * np.abs(weight).sum(1)
    return float(rows.max())


@pytest.mark.parametrize("kind,arch", CASES)
def test_rewritten_classifier_matches_float_argmax(kind, arch):
    model = Model(build(kind, arch))
    c = Classifier.of(model)
    rng = np.random.default_rng(3)
    weight, bias = new_classifier(c, rng)
    rewritten = Model(c.rewrite(model, weight, bias).to_bytes())
    stored = Classifier.of(rewritten)
    q = rewritten.tensor(c.layer.weight).quantization
    step = q.scale.reshape(-1, 1) if q is not None else 1e-3 * np.abs(weight).max()
    assert np.all(np.abs(stored.weight - weight) <= 0.51 * step + 1e-12)
    if q is not None and kind != "dynamic":
        assert np.any(q.scale > model.tensor(c.layer.weight).quantization.scale)  # widened
    runner = Runner(rewritten, [c.layer.input], mode="instrument")
    out = rewritten.main.outputs[0]
    out_q = rewritten.tensor(out).quantization
    resolved = []
    for x in random_inputs(400, INPUT_SHAPES[arch][1:], seed=8):
        values = runner.run(x)
        features = values[c.layer.input].reshape(1, -1)
        float_logits = (features @ weight.T + bias)[0]
        if out_q is not None:  # an int8 output cannot order logits closer than two steps
            resolution = 2 * float(out_q.scale[0])
        elif kind == "dynamic":  # the kernel rounds the features and the weights to int8
            resolution = 2 * dynamic_range_error(features[0], weight, step)
        else:
            resolution = 1e-4
        top2 = np.sort(float_logits)[-2:]
        if top2[1] - top2[0] >= resolution:
            resolved.append(values[out].argmax() == float_logits.argmax())
    assert len(resolved) >= 150 and all(resolved)


def test_rewrite_keeps_the_source_untouched():
    model = Model(build("int8"))
    before = model.to_bytes()
    c = Classifier.of(model)
    c.rewrite(model, c.weight * 2, c.bias)
    assert model.to_bytes() == before
    assert Classifier.of(model).weight.tolist() == c.weight.tolist()
