"""The labelled baselines' TensorFlow replay of a .tflite graph (benchmarks/baselines.py)."""

import numpy as np
import pytest

from benchmarks.baselines import Replay
from edgeprune.model import Model
from edgeprune.personalize import probabilities
from tests.models import INPUT_SHAPES, random_inputs

pytestmark = pytest.mark.tensorflow

SAMPLE = INPUT_SHAPES["mixed"][1:]


def softmax(logits: np.ndarray) -> np.ndarray:
    e = np.exp(logits - logits.max(axis=1, keepdims=True))
    return e / e.sum(axis=1, keepdims=True)


def test_replay_computes_what_the_interpreter_computes(tflite_model):
    # The mixed model has strided, dilated, depthwise and 1x1 convs, RELU6, a reshape and dense.
    path = tflite_model("float32")
    x = random_inputs(32, SAMPLE)
    expected = probabilities(Model.load(path), x)
    np.testing.assert_allclose(softmax(Replay(path).predict(x)), expected, atol=1e-5)
    # SVD at full rank with M = I is the same function until M trains.
    np.testing.assert_allclose(softmax(Replay(path, svd_rank=64).predict(x)), expected, atol=1e-5)


def test_fit_learns_the_labels_and_svd_trains_only_its_small_matrices(tflite_model):
    path = tflite_model("float32")
    x = random_inputs(64, SAMPLE, seed=1)
    y = np.arange(64) % 3
    replay = Replay(path)
    before = np.mean(replay.predict(x).argmax(axis=1) == y)
    replay.fit(x, y, lr=1e-2, epochs=30, seed=0)
    assert np.mean(replay.predict(x).argmax(axis=1) == y) > max(before, 0.9)
    svd = Replay(path, svd_rank=4)
    kernels = [v.numpy() for pair in svd.weights.values() for v in pair]
    svd.fit(x, y, lr=1e-2, epochs=3, seed=0)
    assert [m.shape for m in svd.trainable] == [(4, 4), (4, 4)]
    assert not np.allclose(svd.trainable[0].numpy(), np.eye(4))
    for before_value, pair in zip(kernels, [v for p in svd.weights.values() for v in p]):
        np.testing.assert_array_equal(pair.numpy(), before_value)
