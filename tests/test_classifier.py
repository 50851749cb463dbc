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
    resolution = 2 * float(out_q.scale[0]) if out_q is not None else 1e-4
    resolved = []
    for x in random_inputs(200, INPUT_SHAPES[arch][1:], seed=8):
        values = runner.run(x)
        float_logits = (values[c.layer.input].reshape(1, -1) @ weight.T + bias)[0]
        top2 = np.sort(float_logits)[-2:]
        if top2[1] - top2[0] >= resolution:  # an int8 output cannot order closer logits
            resolved.append(values[out].argmax() == float_logits.argmax())
    assert len(resolved) >= 150 and all(resolved)


def test_rewrite_keeps_the_source_untouched():
    model = Model(build("int8"))
    before = model.to_bytes()
    c = Classifier.of(model)
    c.rewrite(model, c.weight * 2, c.bias)
    assert model.to_bytes() == before
    assert Classifier.of(model).weight.tolist() == c.weight.tolist()
