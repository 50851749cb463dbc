"""Pruning: masks by score/scope/granularity, zeros that dequantize to exactly 0.0, and pruned
models that run in a fresh interpreter and match a NumPy forward pass of the masked network."""

import numpy as np
import pytest

from edgeprune import prune
from edgeprune.activations import record
from edgeprune.errors import EdgepruneError
from edgeprune.model import Model
from edgeprune.runtime import Runner
from tests.forward import layer_forward, network_forward
from tests.models import INPUT_SHAPES, build, random_inputs

SAMPLE = INPUT_SHAPES["mixed"][1:]
KINDS = ("float32", "dynamic", "int8", "float16", "uint8")
SETTINGS = [("weight", "layer"), ("weight", "global"), ("channel", "layer"), ("channel", "global")]


def recorded(kind):
    # The converter leaves weights under 1024 elements in float: the wide variant quantizes all.
    model = Model(build(kind, "mixed_wide" if kind == "dynamic" else "mixed"))
    return model, record(model, random_inputs(8, SAMPLE, seed=5))


def output_tolerance(model, tensor, y):
    """How far the interpreter may be from float64 NumPy: one quantization step for quantized
    outputs, on-the-fly input quantization for dynamic-range ops, float rounding otherwise."""
    q = model.tensor(tensor).quantization
    if q is not None:
        return float(q.scale[0]) * 1.01
    return 1e-4 * max(1.0, float(np.abs(y).max()))


@pytest.mark.parametrize("granularity,scope", SETTINGS)
@pytest.mark.parametrize("kind", KINDS)
def test_pruned_model_is_exactly_masked_and_matches_numpy(kind, granularity, scope):
    model, amap = recorded(kind)
    masks = prune.masks(model, amap.layers, amap, 0.5, scope=scope, granularity=granularity)
    pruned = Model(prune.apply(model, masks).to_bytes())  # as a fresh file would load
    zeros, total = prune.measured_sparsity(pruned, amap.layers)
    slack = 0.08 if granularity == "channel" else 0.02  # a channel holds up to 8% of weights
    assert abs(zeros / total - 0.5) <= slack
    for m in masks:
        before, after = model.tensor_data(m.layer.weight), pruned.tensor_data(m.layer.weight)
        assert np.all(pruned.dequantized(m.layer.weight)[~m.keep] == 0.0)
        np.testing.assert_array_equal(after[m.keep], before[m.keep])
        if granularity == "channel" and m.layer.bias is not None:
            bias = pruned.dequantized(m.layer.bias)
            assert np.all(bias[~m.keep_bias] == 0.0)
            np.testing.assert_array_equal(
                bias[m.keep_bias], model.dequantized(m.layer.bias)[m.keep_bias]
            )
    runner = Runner(pruned, amap.watched, mode="preserve")
    dynamic = kind == "dynamic"
    for x in random_inputs(3, SAMPLE, seed=9):
        values = runner.run(x)
        for layer in amap.layers:
            y = values[layer.output]
            expected = layer_forward(pruned, layer, values[layer.input]).reshape(y.shape)
            if dynamic and pruned.tensor(layer.weight).dtype == np.int8:
                # Hybrid ops quantize their input to int8 on the fly: one input step per MAC.
                tol = 0.02 * max(1.0, float(np.abs(y).max()))
            else:
                tol = output_tolerance(pruned, layer.output, y)
            assert np.abs(expected - y).max() <= tol, (
                layer.opcode,
                np.abs(expected - y).max(),
                tol,
            )
        if kind in ("float32", "float16"):
            out = pruned.main.outputs[0]
            np.testing.assert_allclose(
                values[out], network_forward(pruned, x[None]), rtol=1e-4, atol=1e-4
            )


def test_uint8_zero_is_the_zero_point():
    model, amap = recorded("uint8")
    masks = prune.masks(model, amap.layers, amap, 0.5)
    pruned = prune.apply(model, masks)
    nonzero_points = 0
    for m in masks:
        q = model.tensor(m.layer.weight).quantization
        stored = pruned.tensor_data(m.layer.weight)
        assert np.all(stored[~m.keep] == q.zero_point[0])
        nonzero_points += int(q.zero_point[0] != 0)
    assert nonzero_points == len(masks)  # the legacy model really has asymmetric weights


def test_fine_scores_are_eq1_and_layer_scope_keeps_the_top():
    model, amap = recorded("float32")
    rng = np.random.default_rng(0)
    for layer in amap.layers:
        scores = prune.weight_scores(model, layer, amap, "fine", rng)
        w = np.abs(model.dequantized(layer.weight))
        s_in = amap.s_in(layer)
        if layer.kind == "dense":
            expected = w * s_in[None, :]
        elif layer.kind == "conv":
            expected = w * s_in[None]
        else:
            expected = w * np.repeat(s_in, layer.depth_multiplier, axis=-1)[None]
        np.testing.assert_allclose(scores, expected)
    masks = prune.masks(model, amap.layers, amap, 0.3, scope="layer")
    for m in masks:
        scores = prune.weight_scores(model, m.layer, amap, "fine", rng)
        assert (~m.keep).sum() == round(0.3 * m.keep.size)
        assert scores[m.keep].min() >= scores[~m.keep].max()


def test_global_scope_uses_one_threshold():
    model, amap = recorded("float32")
    masks = prune.masks(model, amap.layers, amap, 0.5, scope="global")
    rng = np.random.default_rng(0)
    scores = [prune.weight_scores(model, m.layer, amap, "fine", rng) for m in masks]
    kept = min(s[m.keep].min() for s, m in zip(scores, masks) if m.keep.any())
    dropped = max(s[~m.keep].max() for s, m in zip(scores, masks) if (~m.keep).any())
    assert kept >= dropped
    per_layer = [1 - m.keep.mean() for m in masks]
    assert max(per_layer) - min(per_layer) > 0.1  # not the same sparsity everywhere


def test_keep_classifier_and_baseline_scores():
    model, amap = recorded("int8")
    classifier = amap.layers[-1]
    masks = prune.masks(model, amap.layers, amap, 0.6, keep_classifier=True)
    assert classifier not in [m.layer for m in masks]
    pruned = prune.apply(model, masks)
    np.testing.assert_array_equal(
        pruned.tensor_data(classifier.weight), model.tensor_data(classifier.weight)
    )
    magnitude = prune.masks(model, amap.layers, None, 0.5, score="magnitude")
    for m in magnitude:
        w = np.abs(model.dequantized(m.layer.weight))
        assert w[m.keep].min() >= w[~m.keep].max()
    a, b, c = (
        prune.masks(model, amap.layers, None, 0.5, score="random", seed=s) for s in (1, 1, 2)
    )
    assert all(np.array_equal(x.keep, y.keep) for x, y in zip(a, b))
    assert not all(np.array_equal(x.keep, z.keep) for x, z in zip(a, c))


def test_bad_requests_are_clear():
    model, amap = recorded("float32")
    with pytest.raises(EdgepruneError, match="needs an activation map"):
        prune.masks(model, amap.layers, None, 0.5)
    with pytest.raises(EdgepruneError, match="between 0 and 1"):
        prune.masks(model, amap.layers, amap, 1.5)
    with pytest.raises(EdgepruneError, match="unknown scope"):
        prune.masks(model, amap.layers, amap, 0.5, scope="model")


def test_global_normalized_thresholds_scores_relative_to_their_layer():
    model, amap = recorded("float32")
    scores = prune.compute_scores(model, amap.layers, amap)
    masks = scores.masks(0.5, scope="global_normalized")
    normalized = [v / v.mean() for v in scores.values]
    kept = min(v[m.keep].min() for v, m in zip(normalized, masks) if m.keep.any())
    dropped = max(v[~m.keep].max() for v, m in zip(normalized, masks) if (~m.keep).any())
    assert kept >= dropped
    zeros = sum(int((~m.keep).sum()) for m in masks)
    assert zeros == round(0.5 * sum(m.keep.size for m in masks))


def test_ties_at_the_cut_are_dropped_in_order_of_position():
    scores = np.array([3.0, 1.0, 2.0, 1.0, 1.0, 5.0])
    keep = prune._keep_top([scores], 0.5)[0]  # drop 3 of 6: the 1.0s, in order
    assert keep.tolist() == [True, False, True, False, False, True]
    keep = prune._keep_top([scores], 2 / 6)[0]  # drop 2: the first two 1.0s
    assert keep.tolist() == [True, False, True, False, True, True]


@pytest.mark.parametrize("kind", ["int8", "uint8", "float16", "dynamic"])
def test_scores_are_the_float64_products_rounded_once_to_float32(kind, monkeypatch):
    """float32 scores, a few rows at a time (per-channel scales sliced with them), equal the
    float64 Eq. 1 products rounded once; all layers' scores are views of one array."""
    model, amap = recorded(kind)
    monkeypatch.setattr(prune, "_CHUNK", 7)  # many chunks per layer
    scores = prune.compute_scores(model, amap.layers, amap)
    assert scores.flat.dtype == np.float32
    assert sum(v.size for v in scores.values) == scores.flat.size
    per_channel = False
    for layer, v in zip(scores.layers, scores.values):
        assert np.shares_memory(v, scores.flat)
        q = model.tensor(layer.weight).quantization
        per_channel |= q is not None and q.scale.size > 1
        expected = np.abs(model.dequantized(layer.weight)) * layer.input_for_weight(
            amap.s_in(layer)
        )
        np.testing.assert_array_equal(v, expected.astype(np.float32))
    assert per_channel or kind in ("uint8", "float16")


def test_global_masks_and_in_place_apply_copy_no_scores_or_model():
    """A global cut reads the one score array (no concatenated copy) and masks equal those of
    separately computed arrays; apply(in_place=True) writes into the model it was given."""
    model, amap = recorded("float32")
    scores = prune.compute_scores(model, amap.layers, amap)
    copied = prune.Scores(scores.layers, tuple(v.copy() for v in scores.values), "weight")
    for sparsity in (0.3, 0.5, 0.9):
        for a, b in zip(scores.masks(sparsity, "global"), copied.masks(sparsity, "global")):
            np.testing.assert_array_equal(a.keep, b.keep)
    masks = scores.masks(0.5, "global")
    pruned = prune.apply(model, masks, in_place=True)
    assert pruned is model
    zeros, total = prune.measured_sparsity(model, amap.layers)
    assert zeros == round(0.5 * total)


def test_kth_smallest_without_a_copy_equals_partition(monkeypatch):
    """The radix select over float32 bits finds np.partition's k-th value, with ties (zeros and
    repeated values), at the ends, and falls back to a partition for negative values."""
    monkeypatch.setattr(prune, "_CHUNK", 1000)  # several chunks
    rng = np.random.default_rng(0)
    flat = (np.abs(rng.standard_normal(10_000)) * rng.random(10_000)).astype(np.float32)
    flat[:1500] = 0
    flat[5000:5100] = flat[5000]
    for k in (0, 1, 1499, 1500, 5000, 7777, 9999):
        assert prune._kth_smallest(flat, k) == np.partition(flat, k)[k], k
    flat[7] = -1.0
    assert prune._kth_smallest(flat, 0) == -1.0
    flat[7] = -0.0
    assert prune._kth_smallest(flat, 1600) == np.partition(flat, 1600)[1600]


@pytest.mark.parametrize("kind", KINDS)
def test_nonzero_counts_what_dequantizes_to_nonzero(kind):
    """Model.nonzero counts on the stored values; it equals a count of the float64 values, on
    a pruned model (zeros and zero points present) too."""
    model, amap = recorded(kind)
    pruned = prune.apply(model, prune.masks(model, amap.layers, amap, 0.5))
    for m in (model, pruned):
        for layer in amap.layers:
            for t in filter(None, (layer.weight, layer.bias)):
                assert m.nonzero(t) == np.count_nonzero(m.dequantized(t)), (kind, t)
    zeros, total = prune.measured_sparsity(pruned, amap.layers)
    assert abs(zeros - 0.5 * total) <= len(amap.layers)  # per-layer rounding
