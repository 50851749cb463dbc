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

Later passes run the dense and the thinned model side by side (`CrossMoments`): each layer is refit
to the inputs the thinned network upstream really gives it; settling (`thin.shrink(settle=True)`)
does that one depth level per pass and refits a settled k×k convolution over its whole input
windows (`Windows`, (kh·kw·K)² floats per layer, at most WINDOW_FEATURES features).
"""

from __future__ import annotations

from collections.abc import Iterable

import numpy as np

from .errors import EdgepruneError
from .layers import Layer, producers
from .model import Model
from .runtime import Runner

WINDOW_FEATURES = 1024  # a k×k conv reading more window features (kh·kw·C) than this is refit
# per kernel offset: its second-pass window moments would take (kh·kw·C)² floats
RIDGE = 1e-4  # relative to the mean variance: keeps Cov_KK invertible for dead channels
MAX_ROWS = 1024  # positions per sample and tensor that enter the moments (evenly strided)
WINDOW_ROWS = 256  # output positions per sample whose windows enter a conv's window moments
BATCH_ROWS = 512  # rows gathered (over samples) before one Gram product: small maps of many
# channels (7×7×960) gave products of 49 rows, a third of their CPU time spent writing C×C sums


def _rows(v: np.ndarray, channels: int) -> np.ndarray:
    """A tensor as float32 rows of channels, at most MAX_ROWS of its positions (evenly spaced):
    the moments of a 112×112 map need not read every position of every sample."""
    x = np.asarray(v).reshape(-1, channels)
    step = -(-x.shape[0] // MAX_ROWS)
    return x[::step].astype(np.float32)


def _finite(*products: np.ndarray) -> None:
    """Stop when a product of recorded activations is inf or NaN: a refit from it would write a
    model of NaNs. Samples far beyond float32's range give it, and so did NumPy's OpenBLAS SVE
    kernels under qemu 7.2's default CPU (intermittently, for finite inputs)."""
    if not all(np.isfinite(p).all() for p in products):
        raise EdgepruneError(
            "the activations' statistics came out inf or NaN (samples beyond float32's range, "
            "or a faulty BLAS on this machine); nothing was written"
        )


class Moments:
    """Count, Σx and Σxxᵀ over positions of the channels of some activation tensors."""

    def __init__(self, model: Model, tensors: Iterable[int]):
        self.count: dict[int, int] = {}
        self.sums: dict[int, np.ndarray] = {}
        self.grams: dict[int, np.ndarray] = {}
        self.sources: dict[int, int] = {}  # layer input -> the tensor whose moments stand for it
        self._pending: dict[int, list[np.ndarray]] = {}  # rows not yet in the sums
        for t in dict.fromkeys(tensors):
            c = model.tensor(t).shape[-1]
            self.count[t], self.sums[t], self.grams[t] = 0, np.zeros(c), np.zeros((c, c))

    def has(self, t: int) -> bool:
        self.finish()
        return self.count.get(t, 0) > 0

    def covers(self, t: int) -> bool:
        """Whether a layer reading tensor t can be refit (its moments, or its source's)."""
        return self.has(self.sources.get(t, t))

    def add(self, values: dict[int, np.ndarray]) -> None:
        """Add one invocation's real-valued tensors (batch included)."""
        for t, v in values.items():
            if t in self.sums:
                pending = self._pending.setdefault(t, [])
                pending.append(_rows(v, self.sums[t].size))
                if sum(len(x) for x in pending) >= BATCH_ROWS:
                    self._flush(t)

    def _flush(self, t: int) -> None:
        x = np.concatenate(self._pending.pop(t))
        self.count[t] += x.shape[0]
        with np.errstate(all="ignore"):  # checked below
            gram = x.T @ x
        _finite(gram)
        self.sums[t] += x.sum(axis=0, dtype=np.float64)
        self.grams[t] += gram

    def finish(self) -> None:
        """Bring the rows still gathered into the sums (the accessors call it)."""
        for t in list(self._pending):
            self._flush(t)

    def regression(self, t: int, keep: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """(removed channels R, B [K × R], a [R]): the least-squares x_R ≈ Bᵀ x_K + a."""
        self.finish()
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
        delta *= layer.constant_gain  # a transposed window reaches an output 1/stride² as often
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
    errors = RefitErrors(graph, moments)
    scores: dict[int, float] = {}
    for g in groups:
        total = 0.0
        for layer, channels in g.consumers:
            terms = errors.of(layer)
            if terms is None:
                continue
            energy, precision = terms[:2]
            at = np.unique(channels % precision.size)
            total += float((energy[at] / precision[at]).sum())
        scores[g.index] = total
    return scores


class RefitErrors:
    """Per consumer layer, what its refit error is made of: the diagonal of M = Σ_o W_oᵀ W_o
    over its kernel offsets (per input channel), the diagonal of the input's precision matrix,
    the input's covariance and tr(M Cov), the variance of the layer's output (per offset)."""

    def __init__(self, graph, moments: Moments):
        self.graph, self.moments = graph, moments
        self._cov: dict[int, tuple[np.ndarray, np.ndarray]] = {}
        self._terms: dict[int, tuple | None] = {}

    def covariance(self, t: int) -> tuple[np.ndarray, np.ndarray]:
        """(Cov, its inverse: the precision) of tensor t's channels, shrunk towards its diagonal
        by c / (c + n) for c channels seen in n rows: a pooled 1280-channel feature seen once per
        sample in 32 samples has a singular covariance, in which every channel looks perfectly
        predictable from the others (a conditional variance of 0, a free removal) — on the
        samples it was fitted to, not beyond them."""
        if t not in self._cov:
            n = self.moments.count[t]
            mean = self.moments.sums[t] / n
            cov = self.moments.grams[t] / n - np.outer(mean, mean)
            c = mean.size
            shrink = c / (c + n)
            cov = (1 - shrink) * cov + shrink * np.diag(np.diag(cov))
            cov = cov + RIDGE * max(float(np.trace(cov)) / c, 1e-12) * np.eye(c)
            self._cov[t] = cov, np.linalg.inv(cov)
        return self._cov[t]

    def of(self, layer: Layer):
        """(diag M, diag Cov⁻¹, Cov, tr(M Cov), M) of `layer`'s input, or None without
        moments."""
        if layer.op not in self._terms:
            t = self.moments.sources.get(layer.input, layer.input)
            if not self.moments.has(t):
                self._terms[layer.op] = None
                return None
            cov, precision = self.covariance(t)
            precision = np.diag(precision).copy()
            c = precision.size
            w = np.moveaxis(self.graph.model.dequantized(layer.weight), layer.in_axis, -1)
            rows = w.reshape(-1, c).astype(np.float64)  # every (output, offset, position) row
            m = rows.T @ rows
            scale = max(float(np.sum(m * cov)), 1e-30)
            self._terms[layer.op] = np.diag(m).copy(), precision, cov, scale, m
        return self._terms[layer.op]


def by_window(layer: Layer) -> bool:
    """Whether the second pass refits `layer` over whole input windows (`Windows`): a k×k
    CONV_2D of at most WINDOW_FEATURES window features."""
    if not layer.has_windows or layer.kernel == (1, 1):
        return False
    return int(np.prod(layer.weight_shape[1:])) <= WINDOW_FEATURES


class Windows:
    """Second-pass moments of one k×k convolution's input windows (im2col rows) in the thinned
    model, q (kh·kw·K), against the dense layer's output y = W p on the dense model's windows p:
    Σq, Σy, Σqqᵀ and Σqyᵀ. The refit maps q straight onto y, W' = Cov(y, q) Cov(q, q)⁻¹: each
    removed channel is estimated from the kept channels at every offset of the window, not only
    at its own position as the per-offset refit does. Used only for a layer whose inputs are
    settled (`thin.shrink(settle=True)`): fitted to inputs that still change, the window fits
    swung from pass to pass. The price is (kh·kw·K)² floats per layer, hence WINDOW_FEATURES."""

    def __init__(self, layer: Layer, dense: Model):
        self.layer = layer
        w = dense.dequantized(layer.weight).astype(np.float32)
        self.rows = w.reshape(w.shape[0], -1).T  # [kh·kw·C, out]: y = p @ rows
        self.count = 0
        self.stats: list[np.ndarray] = []
        self._pending: list[tuple[np.ndarray, np.ndarray]] = []

    def add(self, dense: np.ndarray, thinned: np.ndarray) -> None:
        y = self.layer.windows(dense.astype(np.float32), WINDOW_ROWS) @ self.rows
        self._pending.append((y, self.layer.windows(thinned.astype(np.float32), WINDOW_ROWS)))
        if sum(len(x) for x, _ in self._pending) >= BATCH_ROWS:
            self.finish()

    def finish(self) -> None:
        if not self._pending:
            return
        y = np.concatenate([x for x, _ in self._pending])
        q = np.concatenate([x for _, x in self._pending])
        self._pending = []
        if not self.stats:
            o, d = y.shape[1], q.shape[1]
            self.stats = [np.zeros(o), np.zeros(d), np.zeros((d, d)), np.zeros((d, o))]
        with np.errstate(all="ignore"):  # checked below
            gram, cross = q.T @ q, q.T @ y
        _finite(gram, cross)
        self.count += y.shape[0]
        for total, part in zip(self.stats, (y.sum(0, np.float64), q.sum(0, np.float64), gram,
                                            cross)):  # fmt: skip
            total += part

    def refit(self, keep: np.ndarray) -> tuple[np.ndarray, np.ndarray] | None:
        """(real weights [out, kh, kw, C], zero on the removed channels; real bias change), or
        None when the kept channels `keep` do not match the windows recorded."""
        self.finish()
        (kh, kw), c = self.layer.kernel, self.rows.shape[0] // int(np.prod(self.layer.kernel))
        kept = np.unique(keep % c)
        if not self.stats or kept.size * kh * kw != self.stats[1].size:
            return None
        n = max(self.count, 1)
        my, mq = self.stats[0] / n, self.stats[1] / n
        cov_qq = self.stats[2] / n - np.outer(mq, mq)
        cov_qy = self.stats[3] / n - np.outer(mq, my)
        d = cov_qq.shape[0]
        ridge = RIDGE * max(float(np.trace(cov_qq)) / d, 1e-12)
        fit = np.linalg.solve(cov_qq + ridge * np.eye(d), cov_qy)  # [kh·kw·K, out]
        new = np.zeros((self.rows.shape[1], kh, kw, c))
        new[..., kept] = fit.T.reshape(-1, kh, kw, kept.size)
        return new, my - fit.T @ mq


class CrossMoments:
    """Second pass of the repair: moments of the thinned model's inputs x' (kept channels, after
    the upstream layers were thinned and refit) against the dense model's x, so each layer is
    refit to what it really receives: W' = W · Cov(x, x') Cov(x', x')⁻¹ per kernel offset, bias
    b + W (μ_x − B μ_x') — He et al.'s reconstruction from the pruned network's own inputs.

    A layer that lost no input channel (a protected classifier) is refit towards the identity,
    B = (Cov(x, x') + λI)(Cov(x', x') + λI)⁻¹, with λ chosen on held-out samples (moments are
    kept for the even and the odd samples apart; λ = ∞ leaves the layer as it is): it reads one
    row per sample, and a few hundred samples do not pin down a full C × C map.

    The k×k convolutions in `windows` are refit over whole input windows (`Windows`)."""

    LAMBDAS = (RIDGE, 1e-3, 1e-2, 1e-1, 1.0, 10.0, np.inf)  # × the mean variance of x'

    def __init__(self, sources: dict[int, int], windows: dict[int, Windows] | None = None):
        self.sources = sources
        self.windows = windows or {}
        self.settled: dict[int, tuple] = {}  # op -> its fit from the pass that settled it
        self.settling: set[int] = set()  # ops whose fit from this pass is final (kept in settled)
        self.count: dict[int, list[int]] = {}
        self.stats: dict[int, list[list[np.ndarray]]] = {}  # per half: [Σx, Σx', Σx'x'ᵀ, Σxx'ᵀ]
        self._pending: dict[tuple[int, int], list[tuple[np.ndarray, np.ndarray]]] = {}
        self._calls = 0

    def has(self, t: int) -> bool:
        self.finish()
        return sum(self.count.get(t, ())) > 0

    def covers(self, t: int) -> bool:
        return self.has(self.sources.get(t, t))

    def add(self, dense: dict[int, np.ndarray], thinned: dict[int, np.ndarray]) -> None:
        half = self._calls % 2
        self._calls += 1
        for t, v in dense.items():
            pending = self._pending.setdefault((t, half), [])
            pending.append((_rows(v, v.shape[-1]), _rows(thinned[t], thinned[t].shape[-1])))
            if sum(len(x) for x, _ in pending) >= BATCH_ROWS:
                self._flush((t, half))
        for window in self.windows.values():
            window.add(dense[window.layer.input], thinned[window.layer.input])

    def finish(self) -> None:
        for key in list(self._pending):
            self._flush(key)
        for window in self.windows.values():
            window.finish()

    def _flush(self, key: tuple[int, int]) -> None:
        (t, half), pending = key, self._pending.pop(key)
        x = np.concatenate([x for x, _ in pending])
        xp = np.concatenate([xp for _, xp in pending])
        if t not in self.stats:
            c, k = x.shape[1], xp.shape[1]
            self.count[t] = [0, 0]
            self.stats[t] = [[np.zeros(c), np.zeros(k), np.zeros((k, k)), np.zeros((c, k))]
                             for _ in range(2)]  # fmt: skip
        s = self.stats[t][half]
        self.count[t][half] += x.shape[0]
        s[0] += x.sum(axis=0, dtype=np.float64)
        s[1] += xp.sum(axis=0, dtype=np.float64)
        with np.errstate(all="ignore"):  # checked below
            gram, cross = xp.T @ xp, x.T @ xp
        _finite(gram, cross)
        s[2] += gram
        s[3] += cross

    def _moments(self, t: int, halves=(0, 1)):
        """(μx, μx', Cov(x', x'), Cov(x, x')) over the samples of `halves`."""
        n = max(sum(self.count[t][h] for h in halves), 1)
        sx, sxp, gpp, gxp = (sum(self.stats[t][h][i] for h in halves) for i in range(4))
        mx, mp = sx / n, sxp / n
        return mx, mp, gpp / n - np.outer(mp, mp), gxp / n - np.outer(mx, mp)

    def _towards_identity(self, t: int, energy: np.ndarray) -> np.ndarray:
        """B for a layer that kept every input: λ chosen by two-fold held-out error of W x."""
        k = self.stats[t][0][1].size

        def fit(cov_pp, cov_xp, lam):
            if np.isinf(lam):
                return np.eye(k)
            scale = lam * max(float(np.trace(cov_pp)) / k, 1e-12)
            return np.linalg.solve(cov_pp + scale * np.eye(k), (cov_xp + scale * np.eye(k)).T).T

        def error(b, cov_pp, cov_xp):  # E‖W(x − Bx')‖² less the part that does not depend on B
            return float(np.sum(energy * (b @ cov_pp @ b.T - 2 * cov_xp @ b.T)))

        if min(self.count[t]) == 0:
            return fit(*self._moments(t)[2:], RIDGE)
        folds = [self._moments(t, (h,))[2:] for h in (0, 1)]
        errors = [sum(error(fit(*folds[h], lam), *folds[1 - h]) for h in (0, 1))
                  for lam in self.LAMBDAS]  # fmt: skip
        return fit(*self._moments(t)[2:], self.LAMBDAS[int(np.argmin(errors))])

    def refit(self, layer: Layer, model: Model, keep: np.ndarray, source: int | None = None):
        """The fit of a settled layer as it was; otherwise refit (and kept, when settling)."""
        if layer.op in self.settled:
            return self.settled[layer.op]
        fit = self._refit(layer, model, keep, source)
        if fit is not None and layer.op in self.settling:
            self.settled[layer.op] = fit
        return fit

    def _refit(self, layer: Layer, model: Model, keep: np.ndarray, source: int | None):
        if layer.op in self.windows:  # its window moments alone: no per-channel ones are read
            return self.windows[layer.op].refit(np.asarray(keep))
        t = layer.input if source is None else source
        if not self.has(t) or layer.bias_input is None or layer.propagates_channels:
            return None
        mx, mp, cov_pp, cov_xp = self._moments(t)
        k, c = mp.size, mx.size
        kept = np.unique(np.asarray(keep) % c)
        if kept.size != k:
            return None
        w = model.dequantized(layer.weight)
        axis = layer.in_axis
        moved = np.moveaxis(w, axis, -1)
        split = moved.reshape(*moved.shape[:-1], -1, c)
        if k == c:
            rows = split.reshape(-1, c)
            b = self._towards_identity(t, rows.T @ rows)
        else:
            ridge = RIDGE * max(float(np.trace(cov_pp)) / max(k, 1), 1e-12)
            b = np.linalg.solve(cov_pp + ridge * np.eye(k), cov_xp.T).T  # [C × K]
        new = np.zeros_like(split)
        new[..., kept] = split @ b
        delta = (split @ (mx - b @ mp)).reshape(layer.out_channels, -1).sum(axis=1)
        delta *= layer.constant_gain
        return np.moveaxis(new.reshape(moved.shape), -1, axis), delta


def levels(model: Model, ops: Iterable[int]) -> dict[int, int]:
    """{op: how many of `ops` lie on the longest path from the model's inputs to it, itself
    included}. The inputs of a layer of level k stop changing once the layers of the levels
    below it are settled (TFLite stores operators in execution order)."""
    ops = set(ops)
    writers = producers(model)
    depth: dict[int, int] = {}
    for i, op in enumerate(model.operators):
        upstream = max((depth[writers[t].index] for t in op.inputs if t in writers), default=0)
        depth[i] = upstream + (i in ops)
    return {i: depth[i] for i in ops}


def record_cross(
    dense: Model, thinned: Model, samples, sources: dict[int, int], windows: Iterable[Layer] = ()
) -> CrossMoments:
    """Run `samples` through both models once, accumulating `CrossMoments` of the tensors in
    `sources` ({layer input: the tensor standing for it}; same tensor indices in both models:
    thinning keeps them), and the window moments of the convolutions in `windows`."""
    cross = CrossMoments(sources, {x.op: Windows(x, dense) for x in windows})
    tensors = list(
        dict.fromkeys([*sources.values(), *(w.layer.input for w in cross.windows.values())])
    )
    a, b = (Runner(m, watch=tensors, only_watch=True) for m in (dense, thinned))
    for sample in samples:
        va, vb = a.run(sample), b.run(sample)
        cross.add({t: va[t] for t in tensors}, {t: vb[t] for t in tensors})
    return cross
