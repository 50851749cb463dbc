"""Channel dependency groups: which channels of a model can be removed, and only together.

Every activation tensor's channels (its last axis) are nodes; the op rules of `layers.CHANNEL_RULES`
join the channels that must be removed together — a residual ADD joins its inputs' channel c,
a depthwise convolution its input and output channel, a flatten every position of a channel —
with a union-find (the dependency groups of torch-pruning's DepGraph, over a TFLite graph). A group
is produced by the output channels of its layers and read by the input channels of the layers
that consume it. Ops without a rule, and the model's inputs and outputs, freeze their channels.

Removing a group is exact when every removed channel is constant where a consumer reads it (its
producers' weights are zero, so it outputs act(bias)) and that constant can be folded into the
consumer's bias (`exact`); `thin.thin` then writes the smaller model.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

from .layers import Layer, ReshapeChannels, channel_rule, scan
from .model import Model, producers


@dataclass
class Group:
    """One set of channels that can only be removed together.

    members: {tensor: its channels in the group}; producers / consumers: (layer, channels) of
    the layers writing / reading them (a depthwise layer is a producer whose input is a member);
    frozen: why the group must stay, "" if it may go."""

    index: int
    members: dict[int, np.ndarray] = field(default_factory=dict)
    producers: list[tuple[Layer, np.ndarray]] = field(default_factory=list)
    consumers: list[tuple[Layer, np.ndarray]] = field(default_factory=list)
    frozen: str = ""

    @property
    def weights(self) -> int:
        """Parameters of the producers' output channels in the group (what removing saves,
        before the consumers' share)."""
        return sum(int(np.prod(layer.weight_shape)) // layer.out_channels * c.size
                   for layer, c in self.producers)  # fmt: skip


class ChannelGraph:
    """The channels of a model's activation tensors, joined by the op rules into groups."""

    def __init__(self, model: Model):
        self.model = model
        self.layers = {layer.op: layer for layer in scan(model).layers}
        self._writers = producers(model)
        self._base: dict[int, int] = {}
        n = 0
        for t in model.tensors:
            if not self.is_constant(t.index) and t.shape:
                self._base[t.index] = n
                n += t.shape[-1]
        self._parent = np.arange(n)
        self.frozen: dict[int, str] = {}  # tensor -> why its channels stay
        self.cut: dict[int, int] = {}  # constant tensor -> the tensor whose channels it follows
        self.reported: list[tuple[int, str, str]] = []  # (op index, opcode, why it freezes)
        self.values: dict[int, np.ndarray] = {}
        for t in (*model.main.inputs, *model.main.outputs):
            self.freeze(t, "model input or output")
        for op in model.operators:
            rule = channel_rule(op.opcode) if not op.custom else channel_rule("")
            reason = rule.link(self, op) if op.outputs else None
            if reason:
                self.reported.append((op.index, op.opcode, reason))
                for t in (*op.inputs, *op.outputs):
                    self.freeze(t, f"next to {op.opcode} (op {op.index}): {reason}")
        self._freeze_shared_dequantized()

    def _freeze_shared_dequantized(self) -> None:
        """Layers reading one stored weight through one DEQUANTIZE keep their channels: thinning
        copies a weight that several ops read (each gets its own cut), not a DEQUANTIZE op."""
        readers: dict[int, list[Layer]] = {}
        for layer in self.layers.values():
            readers.setdefault(layer.weight, []).append(layer)
        for shared in readers.values():
            ops = [self.model.operators[x.op] for x in shared]
            if len(shared) < 2 or all(o.inputs[x.weight_input] == x.weight
                                      for o, x in zip(ops, shared)):  # fmt: skip
                continue
            why = f"weight read by ops {', '.join(str(x.op) for x in shared)} via a DEQUANTIZE"
            for x in shared:
                self.reported.append((x.op, x.opcode, why))
                for t in (x.input, x.output):
                    self.freeze(t, f"next to {x.opcode} (op {x.op}): {why}")

    # ----- what the rules ask -------------------------------------------------------------

    def layer(self, op: int) -> Layer | None:
        return self.layers.get(op)

    def shape(self, t: int) -> tuple[int, ...]:
        return self.model.tensor(t).shape if t >= 0 else ()

    def width(self, t: int) -> int:
        shape = self.shape(t)
        return shape[-1] if shape else 1

    def size(self, t: int) -> int:
        return self.model.tensor(t).size

    def is_constant(self, t: int) -> bool:
        return t < 0 or self.model.is_constant(t)

    def constant_values(self, t: int) -> np.ndarray | None:
        return self.model.dequantized(t) if self.model.is_constant(t) else None

    def union(self, a: int, ca: np.ndarray, b: int, cb: np.ndarray) -> None:
        """Channels ca of tensor a and cb of tensor b go together (pairwise)."""
        if a not in self._base or b not in self._base:
            return
        for x, y in zip(self._base[a] + np.asarray(ca), self._base[b] + np.asarray(cb)):
            rx, ry = self._root(int(x)), self._root(int(y))
            if rx != ry:
                self._parent[max(rx, ry)] = min(rx, ry)

    def _root(self, x: int) -> int:
        parent = self._parent
        while parent[x] != x:
            parent[x] = parent[parent[x]]
            x = int(parent[x])
        return x

    def freeze(self, t: int, why: str) -> None:
        if t in self._base:
            self.frozen.setdefault(t, why)

    def cut_constant(self, constant: int, follows: int) -> None:
        """A constant with one value per channel of `follows` loses the removed channels too."""
        self.cut[constant] = follows

    def zero_channels(self, layer: Layer) -> np.ndarray:
        """Output channels of `layer` whose weights are all zero."""
        w = np.moveaxis(self.model.dequantized(layer.weight), layer.out_axis, 0)
        zero = ~w.reshape(layer.out_channels, -1).any(axis=1)
        if isinstance(layer, _Masked) and layer.channels is not None:
            zero[layer.channels] = True
        return zero

    def bias(self, layer: Layer) -> np.ndarray:
        if layer.bias is None:
            return np.zeros(layer.out_channels)
        b = self.model.dequantized(layer.bias).reshape(-1).copy()
        if isinstance(layer, _Masked) and layer.channels is not None and not layer.keep_bias:
            b[layer.channels] = 0
        return b

    def value(self, t: int) -> np.ndarray:
        """Per-channel constant values of tensor t (NaN: not constant), after `propagate`."""
        if t in self.values:
            return self.values[t]
        if t >= 0 and self.model.is_constant(t):
            v = self.model.dequantized(t)
            if v.size == 1:
                return np.full(self.width(t), float(v.reshape(())))
            if v.shape and v.size == v.shape[-1]:
                return v.reshape(-1)
        return np.full(self.width(t), np.nan)

    def channel_source(self, t: int) -> int:
        """The tensor whose channels t carries: a flatten's input for its output, else t."""
        writer = self._writers.get(t)
        flatten = writer is not None and isinstance(channel_rule(writer.opcode), ReshapeChannels)
        if flatten and writer.inputs[0] in self._base:
            x = writer.inputs[0]
            if self.width(x) != self.width(t) and self.width(t) % self.width(x) == 0:
                return x
        return t

    # ----- results ------------------------------------------------------------------------

    def groups(self) -> list[Group]:
        """The dependency groups, each with its members, producers, consumers and frozen reason."""
        by_root: dict[int, Group] = {}
        where: dict[int, dict[int, list[int]]] = {}
        for t, base in self._base.items():
            roots = [self._root(base + c) for c in range(self.width(t))]
            for c, r in enumerate(roots):
                where.setdefault(r, {}).setdefault(t, []).append(c)
        for r, members in where.items():
            g = Group(len(by_root), {t: np.array(c) for t, c in members.items()})
            g.frozen = next((self.frozen[t] for t in members if t in self.frozen), "")
            by_root[r] = g
        out = list(by_root.values())
        index = {t: {} for t in self._base}
        for g in out:
            for t, cs in g.members.items():
                for c in cs:
                    index[t][int(c)] = g
        for layer in self.layers.values():
            for c, g in index[layer.output].items():
                g.producers.append((layer, np.array([c])))
            if not layer.propagates_channels and layer.input in index:
                for c, g in index[layer.input].items():
                    g.consumers.append((layer, np.array([c])))
        for g in out:
            g.producers = _merge(g.producers)
            g.consumers = _merge(g.consumers)
            if not g.producers and not g.frozen:
                g.frozen = "no layer produces these channels"
        return out

    def propagate(self, masked: dict[int, np.ndarray] | None = None, bias: bool = True) -> None:
        """Per-channel constant values of every tensor, in execution order, as if the producer
        channels in `masked` ({layer op: channel indices}) had zero weights (and zero bias when
        `bias` is False); quantized tensors hold the values they can represent."""
        self.values = {}
        saved = {}
        if masked:
            saved = dict(self.layers)
            self.layers = {op: _Masked(layer, masked.get(op), bias) for op, layer in saved.items()}
        try:
            for op in self.model.operators:
                if not op.outputs or op.outputs[0] not in self._base:
                    continue
                rule = channel_rule(op.opcode) if not op.custom else channel_rule("")
                with np.errstate(all="ignore"):
                    v = np.asarray(rule.constant(self, op), np.float64).reshape(-1)
                if v.size != self.width(op.outputs[0]):
                    v = np.full(self.width(op.outputs[0]), np.nan)
                self.values[op.outputs[0]] = self._representable(op.outputs[0], v)
        finally:
            if saved:
                self.layers = saved

    def _representable(self, t: int, v: np.ndarray) -> np.ndarray:
        tensor = self.model.tensor(t)
        q = tensor.quantization
        if q is None or tensor.dtype is None or tensor.dtype.kind not in "iu" or q.scale.size > 1:
            return v
        info = np.iinfo(tensor.dtype)
        finite = np.isfinite(v)
        out = v.copy()
        out[finite] = q.dequantize(q.quantize(v[finite], tensor.dtype, info.min, info.max))
        return out


class _Masked:
    """A layer seen with some output channels' weights zeroed (for `ChannelGraph.propagate`)."""

    def __init__(self, layer: Layer, channels: np.ndarray | None, bias: bool):
        self.layer, self.channels, self.keep_bias = layer, channels, bias

    def __getattr__(self, name):
        return getattr(self.layer, name)


def _merge(pairs: list[tuple[Layer, np.ndarray]]) -> list[tuple[Layer, np.ndarray]]:
    by_op: dict[int, tuple[Layer, list[np.ndarray]]] = {}
    for layer, c in pairs:
        by_op.setdefault(layer.op, (layer, []))[1].append(c)
    return [(layer, np.sort(np.concatenate(cs))) for layer, cs in by_op.values()]


def analyze(model: Model) -> tuple[ChannelGraph, list[Group]]:
    """The channel graph of `model` and its dependency groups."""
    graph = ChannelGraph(model)
    return graph, graph.groups()


def foldable(model: Model, layer: Layer) -> str:
    """Why a constant input channel cannot be folded exactly into `layer`'s bias ("" if it can):
    e.g. a padded window reads zeros at the border instead of the constant
    (`Layer.constant_input`)."""
    inputs = model.operators[layer.op].inputs
    at = layer.bias_input
    if at is None or len(inputs) <= at or inputs[at] < 0:
        return f"{layer.opcode} (op {layer.op}) has no bias to fold a constant into"
    why = layer.constant_input()
    return f"{layer.opcode} (op {layer.op}) {why}" if why else ""


def exact(graph: ChannelGraph, group: Group) -> str:
    """Why removing `group` would change the outputs of the model its values were propagated
    for ("" when it is exact): a consumer reads a non-constant or unfoldable value."""
    for layer, channels in group.consumers:
        v = graph.values.get(layer.input, graph.value(layer.input))[channels]
        if np.any(~np.isfinite(v)):
            return f"its channels are not constant where {layer.opcode} (op {layer.op}) reads them"
        if np.any(v != 0) and (why := foldable(graph.model, layer)):
            return why
    return ""


def masked_channels(groups: list[Group]) -> dict[int, np.ndarray]:
    """{layer op: output channels} of the producers of `groups`."""
    out: dict[int, list[np.ndarray]] = {}
    for g in groups:
        for layer, c in g.producers:
            out.setdefault(layer.op, []).append(c)
    return {op: np.unique(np.concatenate(cs)) for op, cs in out.items()}


def mask(model: Model, groups: list[Group], bias: bool = False) -> Model:
    """A copy of `model` whose producers of `groups` have zero weights (and zero biases unless
    `bias`): the channel-masked model the thinned one must equal."""
    masked = model.copy()
    layers = {layer.op: layer for g in groups for layer, _ in g.producers}
    for op, channels in masked_channels(groups).items():
        layer = layers[op]
        data = masked.tensor_data(layer.weight)
        q = masked.tensor(layer.weight).quantization
        index = [slice(None)] * data.ndim
        index[layer.out_axis] = channels
        zero = 0 if q is None else q.zero_point[channels if q.scale.size > 1 else 0]
        shape = [1] * data.ndim
        shape[layer.out_axis] = -1
        data[tuple(index)] = np.reshape(zero, shape) if np.ndim(zero) else zero
        if not bias and layer.bias is not None:
            masked.tensor_data(layer.bias).reshape(-1)[channels] = 0
    return masked


def masked_groups(graph: ChannelGraph, groups: list[Group]) -> list[Group]:
    """The free groups whose producers all have zero weights already (a channel-pruned model)."""
    zero = {op: graph.zero_channels(layer) for op, layer in graph.layers.items()}
    return [
        g
        for g in groups
        if not g.frozen and all(zero[layer.op][c].all() for layer, c in g.producers)
    ]


def family_map(groups: list[Group]) -> dict[tuple[int, ...], list[Group]]:
    """The free groups by family: groups with the same producer layers (one layer's channels, or
    one residual stream), keyed by those layers' op indices."""
    families: dict[tuple[int, ...], list[Group]] = {}
    for g in groups:
        if not g.frozen:
            families.setdefault(tuple(sorted(x.op for x, _ in g.producers)), []).append(g)
    return families


def select(
    graph: ChannelGraph,
    groups: list[Group],
    amount: float,
    score: str = "magnitude",
    amap=None,
    scores: dict[int, float] | None = None,
    budgets: dict[tuple[int, ...], int] | None = None,
) -> list[Group]:
    """The groups with the lowest scores in each family (groups with the same producer layers:
    one layer's channels, or one residual stream): the `amount` fraction of each family's free
    groups, at least one left in each; or, with `budgets` ({family key: groups to remove}, from
    the global allocation, `allocate.greedy`), that many. A group's score sums, over its
    producers, the channel's L1 weight norm ("magnitude") or its S_out ("fine", from an
    activation map), each divided by its layer's mean so that layers compare; or it is given,
    {group index: score} in `scores`."""
    per_layer: dict[int, np.ndarray] = {}
    for op, layer in graph.layers.items() if scores is None else ():
        if score == "fine":
            s = np.asarray(amap.s_out(layer), np.float64)
        else:
            w = np.abs(np.moveaxis(graph.model.dequantized(layer.weight), layer.out_axis, 0))
            s = w.reshape(layer.out_channels, -1).sum(axis=1)
        per_layer[op] = s / s.mean() if s.mean() > 0 else s
    chosen = []
    for key, members in family_map(groups).items():
        if scores is not None:
            values = [scores.get(g.index, 0.0) for g in members]
        else:
            values = [sum(float(per_layer[layer.op][c].mean()) for layer, c in g.producers)
                      for g in members]  # fmt: skip
        ranked = sorted(zip(values, members), key=lambda pair: (pair[0], pair[1].index))
        n = int(round(amount * len(members))) if budgets is None else budgets.get(key, 0)
        chosen.extend(g for _, g in ranked[: min(n, len(members) - 1)])
    return chosen
