"""Label-free repair: refit the layers after removed channels to reproduce the dense model.

For every tensor a thinned layer reads, one forward pass over the user's samples accumulates the
count, the channel sums Σx and the Gram matrix Σxxᵀ over all positions (O(channels²) memory per
tensor, whatever the sample count). After channels R are removed, the layer's input lacks x_R; the
least-squares estimate of x_R from the kept channels K (with an intercept) is
x_R ≈ Bᵀ x_K + a, B = Cov_KK⁻¹ Cov_KR, a = μ_R − Bᵀ μ_K, so the weights W_K + W_R Bᵀ and the bias
b + W_R a reproduce the dense layer's pre-activation output with the smallest mean squared error —
exactly so for dense and 1×1 layers (the reconstruction step of He et al. 2017 and ThiNet, in closed
form); for k×k windows each kernel offset is refit alike. A removed channel that was constant
gives B = 0 and a = its value: the bias fold of `thin`. No labels, no gradients.
"""

from __future__ import annotations

from collections.abc import Iterable

import numpy as np

from .layers import Layer
from .model import Model
from .runtime import Runner

RIDGE = 1e-4  # relative to the mean variance: keeps Cov_KK invertible for dead channels


class Moments:
    """Count, Σx and Σxxᵀ over positions of the channels of some activation tensors."""

    def __init__(self, model: Model, tensors: Iterable[int]):
        self.count: dict[int, int] = {}
        self.sums: dict[int, np.ndarray] = {}
        self.grams: dict[int, np.ndarray] = {}
        self.sources: dict[int, int] = {}  # layer input -> the tensor whose moments stand for it
        for t in dict.fromkeys(tensors):
            c = model.tensor(t).shape[-1]
            self.count[t], self.sums[t], self.grams[t] = 0, np.zeros(c), np.zeros((c, c))

    def has(self, t: int) -> bool:
        return self.count.get(t, 0) > 0

    def covers(self, t: int) -> bool:
        """Whether a layer reading tensor t can be refit (its moments, or its source's)."""
        return self.has(self.sources.get(t, t))

    def add(self, values: dict[int, np.ndarray]) -> None:
        """Add one invocation's real-valued tensors (batch included)."""
        for t, v in values.items():
            if t in self.sums:
                x = np.asarray(v, np.float64).reshape(-1, self.sums[t].size)
                self.count[t] += x.shape[0]
                self.sums[t] += x.sum(axis=0)
                self.grams[t] += x.T @ x

    def regression(self, t: int, keep: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """(removed channels R, B [K × R], a [R]): the least-squares x_R ≈ Bᵀ x_K + a."""
        n = max(self.count[t], 1)
        mean = self.sums[t] / n
        cov = self.grams[t] / n - np.outer(mean, mean)
        gone = np.setdiff1d(np.arange(mean.size), keep)
        kk = cov[np.ix_(keep, keep)]
        ridge = RIDGE * max(float(np.trace(kk)) / max(keep.size, 1), 1e-12)
        b = np.linalg.solve(kk + ridge * np.eye(keep.size), cov[np.ix_(keep, gone)])
        return gone, b, mean[gone] - b.T @ mean[keep]

    def refit(
        self, layer: Layer, model: Model, keep: np.ndarray, source: int | None = None
    ) -> tuple[np.ndarray, np.ndarray] | None:
        """(real weights with the removed input channels' share moved onto the kept ones,
        real bias change), or None when `layer` cannot be refit here (no statistics, a matmul).

        `source`: the tensor whose moments stand for the layer's input — the one a flatten
        reshaped into it (input feature p·C + c is its channel c), refit at every position p."""
        t = layer.input if source is None else source
        if not self.has(t) or layer.bias_input is None or layer.propagates_channels:
            return None
        c = self.sums[t].size
        gone, b, a = self.regression(t, np.unique(np.asarray(keep) % c))
        w = model.dequantized(layer.weight)
        axis = layer.in_axis
        moved = np.moveaxis(w, axis, -1)
        split = moved.reshape(*moved.shape[:-1], -1, c)  # [..., positions, C]
        new = split.copy()
        new[..., np.setdiff1d(np.arange(c), gone)] += split[..., gone] @ b.T
        delta = (split[..., gone] @ a).reshape(layer.out_channels, -1).sum(axis=1)
        return np.moveaxis(new.reshape(moved.shape), -1, axis), delta


def record_moments(
    model: Model, samples: Iterable[np.ndarray], tensors: Iterable[int], progress=None
) -> Moments:
    """Run `samples` through `model` once, accumulating the moments of `tensors`."""
    tensors = list(dict.fromkeys(tensors))
    moments = Moments(model, tensors)
    runner = Runner(model, watch=tensors)
    for sample in samples:
        moments.add(runner.run(sample))
        if progress is not None:
            progress()
    return moments


def reconstruction_scores(graph, groups, moments: Moments) -> dict[int, float]:
    """{group index: the output error its removal leaves after the refit}, to remove the
    cheapest groups first (ThiNet's criterion, in closed form): for each consumer and removed
    channel c, ‖W_c‖² · Var(x_c | the other channels) = ‖W_c‖² / (Cov⁻¹)_cc, summed."""
    precision: dict[int, np.ndarray] = {}
    weights: dict[int, np.ndarray] = {}
    scores: dict[int, float] = {}
    for g in groups:
        total = 0.0
        for layer, channels in g.consumers:
            t = moments.sources.get(layer.input, layer.input)
            if not moments.has(t):
                continue
            c = moments.sums[t].size
            if t not in precision:
                n = moments.count[t]
                mean = moments.sums[t] / n
                cov = moments.grams[t] / n - np.outer(mean, mean)
                ridge = RIDGE * max(float(np.trace(cov)) / c, 1e-12)
                precision[t] = np.diag(np.linalg.inv(cov + ridge * np.eye(c)))
            if layer.op not in weights:
                w = np.moveaxis(graph.model.dequantized(layer.weight), layer.in_axis, -1)
                weights[layer.op] = (w.reshape(-1, w.shape[-1]) ** 2).sum(axis=0)
            energy = weights[layer.op].reshape(-1, c).sum(axis=0)  # per source channel
            at = np.unique(channels % c)
            total += float((energy[at] / precision[t][at]).sum())
        scores[g.index] = total
    return scores
