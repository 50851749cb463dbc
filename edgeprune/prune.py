"""Fine-Pruning: score every weight, choose masks at a target sparsity, write them into a model.

Scores: "fine" (Eq. 1, A(w) = |w| · S_in), "magnitude" (|w|) and "random" (seeded). Masks keep the
highest scores, either per layer (the same sparsity everywhere), under one global threshold, or
under one threshold on scores divided by their layer's mean ("global_normalized": raw Eq. 1 scores
are scale-dependent across layers), for single weights or for whole output channels (ranked by
S_out, bias included).

Memory, for models of hundreds of MB: weight scores are float32 (the float64 products rounded once,
so their order is kept), all layers' in one array; the cut's threshold comes from a radix select
over that array (no sorted or partitioned copy); zeros go into the loaded model when asked
(`apply(in_place=True)`, as the prune operation does). Peak: about 2.8x the model file.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

from .activations import ActivationMap
from .choices import GRANULARITIES, SCOPES, SCORES
from .errors import EdgepruneError
from .layers import Layer
from .model import Model


@dataclass(frozen=True)
class Mask:
    """What to keep of one layer: a weight-shaped boolean array and, for channels, the bias."""

    layer: Layer
    keep: np.ndarray
    keep_bias: np.ndarray | None = None


def _choose(name: str, value: str, allowed: tuple[str, ...]) -> None:
    if value not in allowed:
        raise EdgepruneError(f"unknown {name} {value!r}: choose one of {', '.join(allowed)}")


_CHUNK = 1 << 20  # weights per float64 temporary while scoring


def weight_scores(
    model: Model,
    layer: Layer,
    amap: ActivationMap | None,
    score: str,
    rng,
    out: np.ndarray | None = None,
) -> np.ndarray:
    """One float32 score per weight of `layer` (weight-shaped, written into `out` if given):
    higher means more worth keeping.

    Scores are computed in float64 a chunk of rows at a time and rounded to float32 once, so
    they keep the order of the float64 products (a cut without ties in float32 selects what the
    float64 scores would) at half the memory, with no weight-sized float64 temporaries."""
    t = model.tensor(layer.weight)
    data = model.tensor_data(t)
    out = np.empty(data.shape, np.float32) if out is None else out
    if score == "random":
        out[...] = rng.random(data.shape)
        return out
    q = t.quantization
    s_in = layer.input_for_weight(amap.s_in(layer)) if score == "fine" else None
    rows = max(1, _CHUNK // max(1, data[0].size)) if data.ndim else 1
    for start in range(0, data.shape[0] if data.ndim else 1, rows):
        part = np.s_[start : start + rows] if data.ndim else np.s_[...]
        w = data[part].astype(np.float64)
        if q is not None:  # scale · (q − zero_point), as Quantization.dequantize
            w -= _rows(q._along(q.zero_point, data.ndim), part)
            w *= _rows(q._along(q.scale.astype(np.float64), data.ndim), part)
        np.abs(w, out=w)
        if s_in is not None:
            w *= _rows(s_in, part)
        out[part] = w
    return out


def _rows(a: np.ndarray, part) -> np.ndarray:
    """The rows `part` of an array that broadcasts against the weight (all of it if it
    broadcasts along the first axis)."""
    return a[part] if a.ndim and a.shape[0] > 1 else a


def channel_scores(
    model: Model, layer: Layer, amap: ActivationMap | None, score: str, rng
) -> np.ndarray:
    """One score per output channel of `layer`: S_out ("fine"), its L1 norm, or random."""
    if score == "fine":
        return amap.s_out(layer)
    if score == "magnitude":
        w = np.abs(model.dequantized(layer.weight))
        return np.moveaxis(w, layer.out_axis, 0).reshape(layer.out_channels, -1).sum(axis=1)
    return rng.random(layer.out_channels)


def _keep_top(
    scores: list[np.ndarray],
    sparsity: float,
    sizes: list[int] | None = None,
    flat: np.ndarray | None = None,
):
    """Keep-masks dropping the lowest scores over all arrays together until `sparsity` of the
    weights is gone; sizes[k] is how many weights one entry of scores[k] stands for (a channel).
    `flat`, when given, is all of `scores` laid end to end (they are views of it): no copy."""
    if flat is None:
        flat = (
            scores[0].ravel() if len(scores) == 1 else np.concatenate([s.ravel() for s in scores])
        )
    if sizes is None:
        drop = round(sparsity * flat.size)
        if 0 < drop < flat.size:
            # Everything below the drop-th smallest score goes, then ties in order of position.
            threshold = _kth_smallest(flat, drop - 1)
            keep = flat > threshold
            tied = np.concatenate(  # positions, a chunk at a time: no second boolean array
                [
                    start + np.flatnonzero(flat[start : start + _CHUNK] == threshold)
                    for start in range(0, flat.size, _CHUNK)
                ]
            )
            below = flat.size - int(np.count_nonzero(keep)) - tied.size
            keep[tied[drop - below :]] = True
        else:
            keep = np.full(flat.size, not drop)
    else:
        keep = np.ones(flat.size, bool)
        weight = np.concatenate([np.full(s.size, n) for s, n in zip(scores, sizes)])
        order = np.argsort(flat, kind="stable")
        dropped = np.concatenate([[0], np.cumsum(weight[order])])
        target = sparsity * dropped[-1]
        k = int(np.searchsorted(dropped, target))  # the first count reaching the target...
        if k and target - dropped[k - 1] < dropped[k] - target:
            k -= 1  # ...or one channel fewer, whichever lands closer
        keep[order[:k]] = False
    out, start = [], 0
    for s in scores:
        out.append(keep[start : start + s.size].reshape(s.shape))
        start += s.size
    return out


def _kth_smallest(flat: np.ndarray, k: int):
    """The k-th smallest (from 0) of `flat`, as np.partition(flat, k)[k], without copying it when
    it is float32 and non-negative (scores are): a radix select on the float bits, which order as
    unsigned integers do for non-negative floats, in two counting passes a chunk at a time."""
    if flat.dtype != np.float32 or flat.size <= _CHUNK:
        return np.partition(flat, k)[k]
    bits = flat.view(np.uint32)
    chunks = range(0, bits.size, _CHUNK)
    high = np.zeros(1 << 16, np.int64)
    for start in chunks:
        high += np.bincount(bits[start : start + _CHUNK] >> 16, minlength=1 << 16)
    if high[1 << 15 :].any():  # a sign bit set: negative values (or -0.0)
        return np.partition(flat, k)[k]
    cumulative = np.cumsum(high)
    top = int(np.searchsorted(cumulative, k, side="right"))  # the bin that holds the k-th
    k -= int(cumulative[top - 1]) if top else 0
    low = np.zeros(1 << 16, np.int64)
    for start in chunks:
        part = bits[start : start + _CHUNK]
        low += np.bincount(part[(part >> 16) == top] & 0xFFFF, minlength=1 << 16)
    bottom = int(np.searchsorted(np.cumsum(low), k, side="right"))
    return np.array([top << 16 | bottom], np.uint32).view(np.float32)[0]


@dataclass(frozen=True)
class Scores:
    """Scores of every prunable weight (or channel), computed once, cut at any sparsity."""

    layers: tuple[Layer, ...]
    values: tuple[np.ndarray, ...]
    granularity: str
    flat: np.ndarray | None = field(default=None, repr=False, compare=False)  # values end to end

    def masks(self, sparsity: float, scope: str = "layer") -> list[Mask]:
        """Keep-masks that remove `sparsity` of the weights with the lowest scores."""
        _choose("scope", scope, SCOPES)
        if not 0.0 <= sparsity <= 1.0:
            raise EdgepruneError(f"sparsity must be between 0 and 1, got {sparsity}")
        values = list(self.values)
        if scope == "layer":
            keeps = [_keep_top([v], sparsity)[0] for v in values]
        else:
            if scope == "global_normalized":  # make layers comparable: divide by the layer mean
                values = [v / v.mean() if v.mean() > 0 else v for v in values]
            sizes = None
            if self.granularity == "channel":
                sizes = [
                    int(np.prod(x.weight_shape)) // v.size for x, v in zip(self.layers, values)
                ]
            flat = self.flat if scope == "global" else None
            keeps = _keep_top(values, sparsity, sizes, flat)
        if self.granularity == "weight":
            return [Mask(layer, keep) for layer, keep in zip(self.layers, keeps)]
        return [
            Mask(layer, _channel_to_weights(layer, keep), keep)
            for layer, keep in zip(self.layers, keeps)
        ]


def compute_scores(
    model: Model,
    layers: tuple[Layer, ...],
    amap: ActivationMap | None,
    score: str = "fine",
    granularity: str = "weight",
    keep_classifier: bool = False,
    seed: int = 0,
) -> Scores:
    """Scores for `layers` (their statistics are looked up in `amap` by layer), minus the
    classifier (the last of `layers`) if it is kept."""
    _choose("score", score, SCORES)
    _choose("granularity", granularity, GRANULARITIES)
    if score == "fine" and amap is None:
        raise EdgepruneError("score 'fine' needs an activation map: run `edgeprune record` first")
    rng = np.random.default_rng(seed)
    chosen = tuple(layers)[: -1 if keep_classifier else None]
    if granularity == "channel":
        values = tuple(channel_scores(model, layer, amap, score, rng) for layer in chosen)
        return Scores(chosen, values, granularity)
    # Weight scores of all layers in one float32 array, each layer's a view of its part.
    sizes = [model.tensor(layer.weight).size for layer in chosen]
    flat = np.empty(sum(sizes), np.float32)
    views, start = [], 0
    for layer, size in zip(chosen, sizes):
        view = flat[start : start + size].reshape(model.tensor(layer.weight).shape)
        views.append(weight_scores(model, layer, amap, score, rng, out=view))
        start += size
    return Scores(chosen, tuple(views), granularity, flat)


def masks(
    model: Model,
    layers: tuple[Layer, ...],
    amap: ActivationMap | None,
    sparsity: float,
    score: str = "fine",
    scope: str = "layer",
    granularity: str = "weight",
    keep_classifier: bool = False,
    seed: int = 0,
) -> list[Mask]:
    """Keep-masks for `layers` at the requested sparsity (`compute_scores`, then `Scores.masks`)."""
    _choose("scope", scope, SCOPES)
    scores = compute_scores(model, layers, amap, score, granularity, keep_classifier, seed)
    return scores.masks(sparsity, scope)


def _channel_to_weights(layer: Layer, keep_channels: np.ndarray) -> np.ndarray:
    shape = [1] * len(layer.weight_shape)
    shape[layer.out_axis] = keep_channels.size
    return np.broadcast_to(keep_channels.reshape(shape), layer.weight_shape)


def _write_zeros(model: Model, tensor: int, keep: np.ndarray) -> None:
    """Set the pruned entries of a constant tensor to the stored value that dequantizes to 0.0."""
    data = model.tensor_data(tensor)
    q = model.tensor(tensor).quantization
    zero = q.zero_like(data.ndim).astype(data.dtype) if q is not None else data.dtype.type(0)
    np.copyto(data, np.broadcast_to(zero, data.shape), where=~keep)


def apply(model: Model, mask_list: list[Mask], in_place: bool = False) -> Model:
    """A copy of `model` with every mask written into its weight (and bias) bytes; with
    in_place=True, `model` itself (no second copy of a large model in memory)."""
    pruned = model if in_place else model.copy()
    for m in mask_list:
        _write_zeros(pruned, m.layer.weight, m.keep)
        if m.keep_bias is not None and m.layer.bias is not None:
            _write_zeros(pruned, m.layer.bias, m.keep_bias)
    return pruned


def measured_sparsity(model: Model, layers: tuple[Layer, ...]) -> tuple[int, int]:
    """(zero weights, all weights) over `layers`, read back from the model's bytes."""
    zeros = total = 0
    for layer in layers:
        size = model.tensor(layer.weight).size
        zeros += size - model.nonzero(layer.weight)
        total += size
    return zeros, total
