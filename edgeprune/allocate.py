"""Global allocation: which channel groups to remove from the whole model, label-free.

Removing the same share of every layer's groups treats a redundant layer and a sensitive one
alike. Here every free group competes on one scale, from the repair's moments (one data pass):
the error the refit leaves in each consumer's output, as a share of that output's variance, so
that layers of any width and scale compare. Removed one at a time (greedy backward elimination,
as ThiNet does within a layer, here across the model): after each removal, the cost of removing
each further channel of the same tensor is updated, since two channels that predict each other
are cheap to remove apart but not together.

For a tensor x with covariance Σ (precision Λ = Σ⁻¹) read by consumers with weights W (per
kernel offset o), the refit error of removing the channels R is tr(M_RR Λ_RR⁻¹), M = Σ_l Σ_o
W_lₒᵀ W_lₒ / tr(W_l Σ W_lᵀ). Adding channel j to R costs, with G = Λ_RR⁻¹, g = G Λ_Rj and
s = Λ_jj − Λ_jR g,  Δ_j = (M_jj − 2 M_jR g + gᵀ M_RR g) / s;  G Λ_R: and M_RR G Λ_R: are kept
up to date by rank-one updates, so a step costs O(|R| · channels) for the one tensor it changes
(MobileNetV2, 9128 groups: 0.1-1.5 s). Σ is shrunk towards its diagonal when a tensor is seen in
few rows (`repair.RefitErrors.covariance`); a dead channel (no variance) costs nothing and goes
first. Every family keeps at least one group.
"""

from __future__ import annotations

import numpy as np

from .channels import Group
from .layers import count_macs, producers
from .repair import Moments, RefitErrors


class _Tensor:
    """One tensor's greedy state: its removed channels R and the cost Δ of removing each other.

    Rows 0..k-1 of its arrays (grown by doubling) hold, per removed channel, G Λ_R: (`gm`),
    M_RR G Λ_R: (`h`), Λ_R: and M_R: ; the sums over them that Δ needs are updated with each
    removal, so a step is a few matrix-vector products of k × channels (float32: the memory
    they stream is the cost). A tensor seen in fewer rows than it has channels is `independent`:
    its covariance cannot say which channels predict which, so each costs M_jj · Var(x_j),
    whatever else goes."""

    def __init__(self, m: np.ndarray, cov: np.ndarray, precision: np.ndarray, independent: bool):
        c = m.shape[0]
        self.independent = independent
        self.m, self.lam, self.k = m.astype(np.float32), precision.astype(np.float32), 0
        self.idx = np.zeros(c, int)
        self.gm = self.h = self.lam_r = self.m_r = np.zeros((0, c), np.float32)
        self.m_rr = np.zeros((0, 0), np.float32)
        self.t2, self.t3, self.s = np.zeros(c), np.zeros(c), np.diag(precision).copy()
        self.delta = np.diag(m) * np.diag(cov)
        if not independent:
            self._costs()

    def _costs(self) -> None:
        with np.errstate(all="ignore"):
            delta = (np.diag(self.m) - 2 * self.t2 + self.t3) / self.s
        self.delta = np.where(self.s > 0, np.maximum(delta, 0.0), np.inf)
        self.delta[self.idx[: self.k]] = 0.0  # already gone: costs nothing more

    def _grow(self) -> None:
        """Room for twice as many removed channels (memory grows with what is removed)."""
        cap = min(max(2 * self.gm.shape[0], 8), self.m.shape[0])
        for name in ("gm", "h", "lam_r", "m_r"):
            old = getattr(self, name)
            new = np.zeros((cap, old.shape[1]), np.float32)
            new[: old.shape[0]] = old
            setattr(self, name, new)
        m_rr = np.zeros((cap, cap), np.float32)
        m_rr[: self.k, : self.k] = self.m_rr[: self.k, : self.k]
        self.m_rr = m_rr

    def remove(self, j: int) -> None:
        """Channel j goes: border G with its row and column, update the sums, then Δ."""
        if self.independent:
            self.delta[j] = 0.0
            return
        if self.k == self.gm.shape[0]:
            self._grow()
        k, m, lam = self.k, self.m, self.lam
        gm, h = self.gm[:k], self.h[:k]
        g, mj = gm[:, j], self.m_r[:k, j]
        s = float(self.s[j])
        g_lam = (g @ self.lam_r[:k]).astype(np.float64)  # gᵀ Λ_R:
        row = (g_lam - lam[j]) / s  # the new removed channel's row of G Λ_R:, negated
        v = self.m_rr[:k, :k] @ g - mj
        g_h, v_gm, mj_gm = g @ h, v @ gm, mj @ gm
        bottom_h = mj_gm + (float(mj @ g) - float(m[j, j])) * row
        self.t2 += (g @ self.m_r[:k] - m[j]) * row
        self.t3 += row * (g_h + v_gm) + row * row * float(g @ v) - row * bottom_h
        self.s -= row * g_lam - lam[j] * row
        row32 = row.astype(np.float32)
        gm += g[:, None] * row32
        h += v[:, None] * row32
        self.gm[k], self.h[k], self.lam_r[k], self.m_r[k] = -row, bottom_h, lam[j], m[j]
        self.m_rr[k, :k] = self.m_rr[:k, k] = mj
        self.m_rr[k, k] = m[j, j]
        self.idx[k] = j
        self.k += 1
        self._costs()


class _Macs:
    """The MACs of the layers as groups go: a layer's MACs scale with its output channels left
    times its input channels left (a depthwise layer's with its channels), so a group saves, per
    layer it produces a channels of and consumes b of, L · (a·i + b·o − a·b) / (o₀·i₀)."""

    def __init__(self, graph, groups: list[Group]):
        model = graph.model
        writers = producers(model)
        ops = list(graph.layers)
        at = {op: k for k, op in enumerate(ops)}
        self.out0 = np.array([graph.layers[op].out_channels for op in ops], float)
        layers = [graph.layers[op] for op in ops]
        self.in0 = np.array([1 if x.propagates_channels else graph.width(x.input)
                             for x in layers], float)  # fmt: skip
        count = [count_macs(model, model.operators[op], writers) for op in ops]
        self.dense = np.array([c.dense if c is not None else 0 for c in count], float)
        self.o, self.i = self.out0.copy(), self.in0.copy()
        rows, cols, a, b = [], [], [], []
        for g_at, g in enumerate(groups):
            touched: dict[int, list[int]] = {}
            for layer, ch in g.producers:
                touched.setdefault(at[layer.op], [0, 0])[0] += len(ch)
            for layer, ch in g.consumers:
                touched.setdefault(at[layer.op], [0, 0])[1] += len(ch)
            for layer_at, (na, nb) in touched.items():
                rows.append(g_at)
                cols.append(layer_at)
                a.append(na)
                b.append(nb)
        self.rows, self.cols = np.array(rows, int), np.array(cols, int)
        self.a, self.b = np.array(a, float), np.array(b, float)
        self.groups = len(groups)

    @property
    def total(self) -> float:
        return float(np.sum(self.dense * self.o / self.out0 * self.i / self.in0))

    def savings(self) -> np.ndarray:
        """MACs each group would save now."""
        scale = self.dense[self.cols] / (self.out0[self.cols] * self.in0[self.cols])
        part = scale * (self.a * self.i[self.cols] + self.b * self.o[self.cols] - self.a * self.b)
        return np.bincount(self.rows, weights=part, minlength=self.groups)

    def remove(self, g_at: int) -> None:
        mine = self.rows == g_at
        np.subtract.at(self.o, self.cols[mine], self.a[mine])
        np.subtract.at(self.i, self.cols[mine], self.b[mine])


def uniform_macs(graph, families: list[list[Group]], amount: float) -> float:
    """The MACs left after the uniform allocation takes `amount` of every family."""
    groups = [g for f in families for g in f]
    macs = _Macs(graph, groups)
    position = {g.index: k for k, g in enumerate(groups)}
    for f in families:
        for g in f[: min(int(round(amount * len(f))), len(f) - 1)]:
            macs.remove(position[g.index])
    return macs.total


def greedy(
    graph,
    groups: list[Group],
    moments: Moments,
    count: int,
    families: list[list[Group]],
    macs_left: float | None = None,
) -> list[Group]:
    """`count` of `groups` (free ones) removed one by one, each time the one whose removal adds
    the least relative refit error, at least one group left in each of `families`. With
    `macs_left`, groups go until the model's MACs are down to it instead, each time the one whose
    refit error per MAC saved is least."""
    errors = RefitErrors(graph, moments)
    m: dict[int, np.ndarray] = {}
    for layer in {x.op: x for g in groups for x, _ in g.consumers}.values():
        terms = errors.of(layer)
        if terms is not None:
            t = moments.sources.get(layer.input, layer.input)
            m[t] = m.get(t, 0.0) + terms[4] / terms[3]  # M / tr(M Σ): a share of the output
    tensors = {t: _Tensor(mt, *errors.covariance(t), moments.count[t] < mt.shape[0])
               for t, mt in m.items()}  # fmt: skip
    base, n = {}, 0
    for t, state in tensors.items():
        base[t], n = n, n + state.delta.size
    owner = np.repeat(list(base) or [0], [s.delta.size for s in tensors.values()] or [0])
    slots: list[np.ndarray] = []  # per group: its (tensor, channel) slots
    for g in groups:
        found = set()
        for layer, channels in g.consumers:
            t = moments.sources.get(layer.input, layer.input)
            if t in tensors:
                found.update((base[t] + np.unique(channels % tensors[t].delta.size)).tolist())
        slots.append(np.array(sorted(found), int))
    rows = np.repeat(np.arange(len(groups)), [s.size for s in slots])
    cols = np.concatenate([*slots, np.zeros(0, int)])
    deltas = np.concatenate([s.delta for s in tensors.values()] or [np.zeros(0)])
    position = {g.index: i for i, g in enumerate(groups)}
    family = np.zeros(len(groups), int)
    left = [len(members) for members in families]
    for f, members in enumerate(families):
        family[[position[g.index] for g in members]] = f
    open_ = np.array([left[f] > 1 for f in family], bool)
    chosen: list[Group] = []
    macs = _Macs(graph, groups) if macs_left is not None else None
    while open_.any() and (len(chosen) < count if macs is None else macs.total > macs_left):
        cost = np.bincount(rows, weights=deltas[cols], minlength=len(groups))
        if macs is not None:
            cost = cost / np.maximum(macs.savings(), 1e-9)
        i = int(np.argmin(np.where(open_, cost, np.inf)))
        chosen.append(groups[i])
        if macs is not None:
            macs.remove(i)
        open_[i] = False
        left[family[i]] -= 1
        if left[family[i]] == 1:  # its last group stays
            open_[family == family[i]] = False
        for slot in slots[i]:
            t = int(owner[slot])
            tensors[t].remove(int(slot - base[t]))
            deltas[base[t] : base[t] + tensors[t].delta.size] = tensors[t].delta
    return chosen
