"""Thinning: write a smaller .tflite without the removed channel groups.

The producers of a removed group lose those output channels (weight, bias and per-channel
quantization), every consumer loses the matching input channels, the activation tensors between
them lose those channels from their shapes, reshapes get their new shape and per-channel constants
of elementwise ops are cut. A removed channel that was constant (act(bias) of zeroed weights) is
folded into the consumers' biases, so the thinned model computes what the channel-masked model
computes; with `Moments` the consumers are instead refit to the dense model (`repair`).

The flatbuffer is rewritten through the TFLite schema's object API (read -> objects -> write), as
LiteRT's flatbuffer_utils does; tensor and operator indices do not change.
"""

from __future__ import annotations

import copy
import importlib
from collections import Counter
from collections.abc import Iterable, Sized
from dataclasses import dataclass, field
from typing import Any

import flatbuffers
import numpy as np

from ._blas import one_thread
from .channels import (
    ChannelGraph,
    Group,
    analyze,
    exact,
    family_map,
    masked_channels,
    masked_groups,
    select,
)
from .choices import THIN_ALLOCATIONS as ALLOCATIONS
from .errors import EdgepruneError, RuntimeMissingError
from .layers import Layer, ReshapeChannels, channel_rule, producers, stored_constant
from .model import Model
from .operation import Context


def schema() -> Any:
    """The TFLite schema with its object API (shipped by ai-edge-litert); the `tflite` package
    has only the reader."""
    try:
        return importlib.import_module("ai_edge_litert.schema_py_generated")
    except ImportError as e:
        raise RuntimeMissingError(
            "thinning rewrites the flatbuffer with the TFLite schema's object API: "
            "pip install 'edgeprune[litert]' (ai-edge-litert)"
        ) from e


@dataclass
class ThinResult:
    """The thinned model and what happened to every group that was asked for."""

    model: Model
    removed: list[Group]
    kept: list[tuple[Group, str]] = field(default_factory=list)  # (group, why it stayed)
    channels_before: int = 0
    channels_after: int = 0
    repaired: list[int] = field(default_factory=list)  # layer ops refit by least squares
    frozen_ops: list[tuple[int, str, str]] = field(default_factory=list)  # (op, opcode, why)
    free_groups: int = 0


@one_thread()  # many small products: idle OpenBLAS threads spin (see _blas)
def shrink(
    model: Model,
    amount: float = 0.0,
    score: str = "magnitude",
    amap: Any = None,
    samples: Iterable[np.ndarray] | None = None,
    masked: bool = False,
    zero_bias: bool = True,
    protect: Iterable[int] = (),
    passes: int = 2,
    allocation: str = "uniform",
    settle: bool = False,
    progress: Context | None = None,
) -> ThinResult:
    """Thin `model`: remove `amount` of the model's free channel groups with the lowest scores
    (or, with `masked`, the groups whose weights are already zero), then repair the consumers on
    `samples` (unlabeled) when they are given: a first pass through the dense model, and with
    `passes` = 2 a second one through both the dense and the refit thinned model, refitting each
    layer to the inputs it really receives. The layers (op indices) in `protect` keep all their
    input channels, and are refit last, to the inputs the repaired model gives them.

    `allocation` says how many groups each family (a layer's channels, a residual stream) loses:
    "uniform" the same share of each; "global" (needs `samples`) as many as the greedy removal
    by relative refit error takes from it (`allocate.greedy`; with score "reconstruction" its
    groups, with another score that many of the family's lowest); "macs" as global, until the
    model's MACs are down to what uniform would leave, by refit error per MAC saved. For the same
    share of channels, global measured more accurate on CIFAR ResNet-8 (+3.6 points at 25 %) with a
    smaller file, but it removes fewer MACs there (and is less accurate than uniform at the same
    MACs), so uniform, the faster model, stays the default; macs, at no more than uniform's
    MACs, measured more accurate on CIFAR and FSDD at 50 %, no less at 25 % on FSDD, where it
    removes fewer channels (benchmarks/RESULTS.md, "Thinning").

    `settle` (needs `samples`; `passes` is then not read) repairs one depth level per pass until
    every layer is settled: pass k + 1 refits the layers with k refit layers on their longest
    path from the input (themselves included), whose inputs no longer change, and keeps those
    fits (the deeper layers keep the bias fold until their own pass: nothing the next pass reads
    depends on them); the k×k convolutions it settles are refit over their whole input windows
    (`repair.Windows`). Fitting a window to inputs that still change made the fits swing from
    pass to pass (held-out error 0.46, 2.31, 0.44, 2.18 over passes 1-4 of a random-weight CNN);
    settled, they cannot. A pass per level: slower (MobileNetV2 at 50 %: 8.9 against 2.5 s of
    CPU), and more accurate on CIFAR ResNet-8, no better on FSDD (benchmarks/RESULTS.md,
    "Thinning").

    `progress` (an operation's Context) gets a bar per pass over the samples."""
    if settle and samples is None:
        raise EdgepruneError("settling the repair needs samples (--data)")
    graph, groups = analyze(model)
    protect = set(protect)
    for g in groups:
        if not g.frozen and any(x.op in protect for x, _ in g.consumers):
            g.frozen = "read by a protected layer"
    candidates = masked_groups(graph, groups) if masked else [g for g in groups if not g.frozen]
    moments = scores = None
    if allocation not in ALLOCATIONS:
        raise EdgepruneError(f"allocation {allocation!r}: choose one of {', '.join(ALLOCATIONS)}")
    if samples is not None:
        from .repair import reconstruction_scores, record_moments

        samples = samples if passes < 2 and not settle else list(samples)  # read again
        progress = progress or Context()
        total = len(samples) if isinstance(samples, Sized) else None

        def each(what: str) -> Iterable[np.ndarray]:
            """The samples for one more pass over them, behind a progress bar."""
            return progress.iterate(samples, f"repair: {what}", total, "sample")

        sources = {
            x.input: graph.channel_source(x.input) for g in candidates for x, _ in g.consumers
        }
        moments = record_moments(model, each("statistics"), sources.values())
        moments.sources = sources
        if score == "reconstruction" and allocation == "uniform":
            scores = reconstruction_scores(graph, candidates, moments)
    elif score == "reconstruction":
        raise EdgepruneError("score 'reconstruction' needs samples (--data)")
    elif allocation != "uniform" and not masked:
        raise EdgepruneError(f"allocation {allocation!r} needs samples (--data)")
    if masked:
        chosen = candidates
    elif allocation != "uniform":
        from .allocate import greedy, uniform_macs

        families = family_map(groups)
        count = int(round(amount * sum(len(f) for f in families.values())))
        left = (
            uniform_macs(graph, list(families.values()), amount) if allocation == "macs" else None
        )
        chosen = greedy(graph, [g for f in families.values() for g in f], moments, count,
                        list(families.values()), left)  # fmt: skip
        if score != "reconstruction":  # the greedy set the budgets; the score picks the groups
            key = {g.index: k for k, f in families.items() for g in f}
            budgets = Counter(key[g.index] for g in chosen)
            chosen = select(graph, groups, amount, score, amap, None, dict(budgets))
    else:
        chosen = select(graph, groups, amount, score, amap, scores)
    result = thin(model, graph, chosen, zero_bias, moments, masked)
    if moments is not None and (passes > 1 or settle) and result.removed:
        from .repair import by_window, levels, record_cross

        graph.propagate(None if masked else masked_channels(result.removed), not zero_bias)
        refit = {x.op: x for g in result.removed for x, _ in g.consumers}
        level = levels(model, refit) if settle else {}
        settled: dict[int, tuple] = {}
        deepest = max(level.values(), default=0)
        for k in range(1, deepest + 1 if settle else passes):
            # Settling, pass k + 1 settles the layers of level k (their inputs are final now),
            # the k×k convs over whole windows. The deeper ones keep the bias fold until their
            # pass: what the next pass reads comes from levels up to k only.
            now = {op for op, at in level.items() if at == k}
            windows = {op for op in now if by_window(refit[op])}
            what = f"level {k} of {deepest}" if settle else f"pass {k + 1}"
            fitted = now if settle else set(refit)
            by_offset = {refit[op].input for op in fitted - windows}
            read = {t: s for t, s in sources.items() if t in by_offset}
            cross = record_cross(model, result.model, each(what), read,
                                 [refit[op] for op in windows])  # fmt: skip
            cross.settled, cross.settling = settled, now
            result = _rewrite(model, graph, result.removed, result.kept, cross)
        # Last, the protected layers (the classifier) that lost no input but read changed
        # inputs: refit to what the repaired model now gives them (nothing after them moves).
        last = {x.input: graph.channel_source(x.input) for x in graph.layers.values()
                if x.op in protect and x.input not in model.main.inputs}  # fmt: skip
        if last:
            cross = record_cross(model, result.model, each("classifier"), last)
            final = _rewrite(result.model, ChannelGraph(result.model), [], [], cross, protect)
            final.model.name = result.model.name
            result.model, result.repaired = final.model, [*result.repaired, *final.repaired]
    result.frozen_ops = list(graph.reported)
    result.free_groups = sum(not g.frozen for g in groups)
    return result


def thin(
    model: Model,
    graph: ChannelGraph,
    groups: list[Group],
    zero_bias: bool = True,
    moments: Any = None,
    masked: bool = False,
) -> ThinResult:
    """Remove `groups` from `model`.

    The reference is the channel-masked model: the groups' producers with zero weights, and
    zero biases when `zero_bias` (masked=True: `model` is already masked, use it as it is).
    Groups whose removal would not be exact are kept and listed, unless `moments` (a
    `repair.Moments` recorded on the dense model) refits their consumers."""
    wanted = [g for g in groups if not g.frozen]
    kept = [(g, g.frozen) for g in groups if g.frozen]
    graph.propagate(None if masked else masked_channels(wanted), bias=not zero_bias)
    removed = []
    for g in wanted:
        why = exact(graph, g)
        if (
            why
            and moments is not None
            and all(moments.has(layer.input) for layer, _ in g.consumers)
        ):
            why = ""
        (kept.append((g, why)) if why else removed.append(g))
    return _rewrite(model, graph, removed, kept, moments)


def _rewrite(model, graph, removed, kept, moments, refit: Iterable[int] = ()) -> ThinResult:
    """Write the model without the channels of `removed`; with `moments`, refit the layers that
    lost input channels, and the layers (op indices) in `refit` whatever they lost."""
    refit = set(refit)
    fb = schema()
    root = fb.ModelT.InitFromPackedBuf(model.to_bytes(), 0)
    sg = root.subgraphs[0]
    drop: dict[int, set[int]] = {}
    for g in removed:
        for t, cs in g.members.items():
            drop.setdefault(t, set()).update(int(c) for c in cs)
    keep = {
        t: np.setdiff1d(np.arange(graph.width(t)), sorted(cs)) for t, cs in drop.items()
    }  # fmt: skip
    writer = _Writer(root, model)
    writers = producers(model)
    for t, k in keep.items():
        writer.set_width(t, k.size)
    repaired = []
    for layer in graph.layers.values():
        op = sg.operators[layer.op]
        out_keep = keep.get(layer.output)
        in_keep = keep.get(layer.input) if not layer.propagates_channels else None
        if in_keep is None and layer.op in refit and moments.covers(layer.input):
            in_keep = np.arange(graph.width(layer.input))
        if out_keep is None and in_keep is None:
            continue
        weight = layer.weight
        if op.inputs[layer.weight_input] == weight:  # a weight other ops read too: a copy
            weight = writer.own(op, layer.weight_input)  # (behind a DEQUANTIZE: frozen)
        w = writer.array(weight)
        bias_t, bias_dq = _bias(model, writers, layer)
        if bias_t >= 0 and bias_t == bias_dq:  # a bias tensor other ops read too gets a copy
            bias_t = bias_dq = writer.own(op, layer.bias_input)
        if in_keep is not None:
            fit = None
            if moments is not None:
                fit = moments.refit(layer, model, in_keep, moments.sources.get(layer.input))
            if fit is None:
                delta = _fold(model, graph, layer, w, in_keep)
                if bias_t >= 0 and np.any(delta):
                    b = writer.array(bias_t)
                    writer.put(bias_t, b + (np.round(delta) if b.dtype.kind in "iu" else delta))
            else:
                w = writer.refit(layer, weight, bias_t, *fit)
                repaired.append(layer.op)
            w = np.take(w, in_keep, axis=layer.in_axis)
        if out_keep is not None:
            w = np.take(w, out_keep, axis=layer.out_axis)
            writer.cut(weight, layer.out_axis, out_keep)
            if bias_t >= 0:
                writer.put(bias_t, np.take(writer.array(bias_t), out_keep, axis=0))
                writer.cut(bias_t, 0, out_keep)
            if layer.output_shape_input is not None:  # TRANSPOSE_CONV's output shape
                shape_t = writer.own(op, layer.output_shape_input)
                writer.put(shape_t, [*writer.array(shape_t)[:-1], out_keep.size])
        writer.put(weight, w)
        if bias_dq >= 0 and bias_dq != bias_t:
            writer.set_shape(bias_dq, writer.array(bias_t).shape)
        dq = op.inputs[layer.weight_input]
        if dq != weight:  # a DEQUANTIZE between the stored weight and the layer
            writer.set_shape(dq, w.shape)
    for constant, follows in graph.cut.items():
        if follows in keep:
            values = writer.array(constant)
            writer.put(constant, np.take(values, keep[follows], axis=-1))
    for op_t, op in zip(sg.operators, model.operators):
        rule = channel_rule(op.opcode)
        if isinstance(rule, ReshapeChannels) and op.outputs[0] in keep:
            writer.reshape(op_t, op, rule.shape_input)
    data = writer.finish()
    thinned = Model(data, name=f"{model.name} (thinned)")
    before = sum(graph.width(t) for t in drop)
    return ThinResult(thinned, removed, kept, before, sum(k.size for k in keep.values()), repaired)


def _bias(model: Model, writers, layer: Layer) -> tuple[int, int]:
    """(stored bias constant, the tensor the op reads) of a layer, or -1s when it has none."""
    op = model.operators[layer.op]
    at = layer.bias_input
    if at is None or len(op.inputs) <= at or op.inputs[at] < 0:
        return -1, -1
    stored = stored_constant(model, op.inputs[at], writers)
    return (stored, op.inputs[at]) if stored is not None else (-1, -1)


def _fold(model: Model, graph: ChannelGraph, layer: Layer, w: np.ndarray, in_keep) -> np.ndarray:
    """What the removed (constant) input channels added to each output: Σ w · value, in the
    bias's stored units (exact integers for a quantized layer)."""
    gone = np.setdiff1d(np.arange(w.shape[layer.in_axis]), in_keep)
    v = graph.values.get(layer.input, graph.value(layer.input))[gone]
    v = np.where(np.isfinite(v), v, 0.0)
    if not np.any(v):
        return np.zeros(layer.out_channels)
    x = model.tensor(layer.input).quantization
    wq = model.tensor(layer.weight).quantization
    stored = np.take(w, gone, axis=layer.in_axis)
    if x is not None and wq is not None and w.dtype.kind in "iu":
        # Integer kernel: Σ q_w · (q_x − zp_x), with q_x − zp_x = round(value / scale_x).
        steps = np.round(v / float(x.scale[0]))
        return _contract(layer, stored.astype(np.float64) - wq.zero_like(stored.ndim), steps)
    real = stored.astype(np.float64) if wq is None else wq.dequantize(stored)
    return _contract(layer, real, v)


def _contract(layer: Layer, w: np.ndarray, v: np.ndarray) -> np.ndarray:
    """Σ over every axis but the output one of w · v (v along the input axis)."""
    shape = [1] * w.ndim
    shape[layer.in_axis] = -1
    return (w * v.reshape(shape)).sum(axis=tuple(a for a in range(w.ndim) if a != layer.out_axis))


class _Writer:
    """Edits to the object tree of a model: constant data, shapes and quantization."""

    def __init__(self, root, model: Model):
        self.root, self.model = root, model
        self.sg = root.subgraphs[0]
        self.data: dict[int, np.ndarray] = {}
        self.origin: dict[int, int] = {}  # tensor copies made by `own` -> the original
        self.readers: dict[int, int] | None = None

    def own(self, op_t, position: int) -> int:
        """The tensor at `position` of operator `op_t`, as a copy of its own when other
        operators read it too (the converter shares identical constants, e.g. zero biases)."""
        t = int(op_t.inputs[position])
        if self.readers is None:
            self.readers = {}
            for op in self.sg.operators:
                for i in op.inputs if op.inputs is not None else ():
                    self.readers[int(i)] = self.readers.get(int(i), 0) + 1
        if self.readers.get(t, 0) <= 1:
            return t
        self.readers[t] -= 1
        self.sg.tensors.append(copy.deepcopy(self.sg.tensors[t]))
        new = len(self.sg.tensors) - 1
        inputs = np.array(op_t.inputs, np.int32)  # the object API's vectors are read-only
        inputs[position] = new
        op_t.inputs = inputs
        self.origin[new] = self.origin.get(t, t)
        return new

    def tensor(self, t: int):
        """The model's tensor `t` stands for (a copy made by `own` stands for its original)."""
        return self.model.tensor(self.origin.get(t, t))

    def array(self, t: int) -> np.ndarray:
        """The current stored values of constant tensor t."""
        if t not in self.data:
            self.data[t] = np.array(self.model.tensor_data(self.origin.get(t, t)))
        return self.data[t]

    def put(self, t: int, values: np.ndarray) -> None:
        dtype = self.tensor(t).dtype
        self.data[t] = np.asarray(values).astype(dtype)
        self.set_shape(t, self.data[t].shape)

    def set_shape(self, t: int, shape) -> None:
        tensor = self.sg.tensors[t]
        tensor.shape = np.asarray(shape, np.int32)
        if tensor.shapeSignature is not None and len(tensor.shapeSignature) == len(shape):
            sig = np.asarray(tensor.shapeSignature, np.int32).copy()
            sig[sig >= 0] = np.asarray(shape, np.int32)[sig >= 0]
            tensor.shapeSignature = sig

    def set_width(self, t: int, width: int) -> None:
        shape = np.asarray(self.sg.tensors[t].shape, np.int32).copy()
        shape[-1] = width
        self.set_shape(t, shape)

    def cut(self, t: int, axis: int, keep: np.ndarray) -> None:
        """Cut per-channel quantization parameters of t along `axis`."""
        q = self.sg.tensors[t].quantization
        if q is None or q.scale is None or len(q.scale) <= 1 or q.quantizedDimension != axis:
            return
        q.scale = np.asarray(q.scale, np.float32)[keep]
        if q.zeroPoint is not None and len(q.zeroPoint) > 1:
            q.zeroPoint = np.asarray(q.zeroPoint, np.int64)[keep]

    def set_scale(self, t: int, scale: np.ndarray) -> None:
        q = self.sg.tensors[t].quantization
        q.scale = np.asarray(scale, np.float32)
        q.zeroPoint = np.zeros(len(q.scale), np.int64)

    def refit(
        self, layer: Layer, weight: int, bias_t: int, w: np.ndarray, delta: np.ndarray
    ) -> np.ndarray:
        """Store refit real weights `w` of `layer` (its weight tensor, or that tensor's copy:
        `weight`) and add `delta` to the real bias: integer weights are requantized per output
        channel (symmetric, as the converter does) and their bias with them. Returns the new
        stored weights."""
        wt = self.tensor(weight)
        q = wt.quantization
        if q is None or wt.dtype.kind == "f":
            if bias_t >= 0:
                self.put(bias_t, self.array(bias_t) + delta)
            return w.astype(wt.dtype)
        moved = np.moveaxis(w, layer.out_axis, 0).reshape(layer.out_channels, -1)
        if q.scale.size > 1:
            scale = np.abs(moved).max(axis=1) / 127.0
        else:
            scale = np.full(layer.out_channels, np.abs(moved).max() / 127.0)
        scale = np.where(scale > 0, scale, q.scale.astype(np.float64).max())
        shape = [1] * w.ndim
        shape[layer.out_axis] = -1
        scales = scale.reshape(shape) if q.scale.size > 1 else scale[0]
        stored = np.clip(np.round(w / scales), -127, 127).astype(wt.dtype)
        self.set_scale(weight, scale if q.scale.size > 1 else scale[:1])
        bt = self.tensor(bias_t) if bias_t >= 0 else None
        if bt is not None and bt.quantization is None:  # dynamic range: a float bias
            self.put(bias_t, self.array(bias_t) + delta)
        elif bt is not None:
            real = bt.quantization.dequantize(self.array(bias_t).reshape(-1)) + delta
            s_x = float(self.model.tensor(layer.input).quantization.scale[0])
            s_b = s_x * scale
            self.put(bias_t, np.round(real / s_b))
            self.set_scale(bias_t, s_b if q.scale.size > 1 or bt.quantization.scale.size > 1
                           else s_b[:1])  # fmt: skip
        return stored

    def reshape(self, op_t, op, shape_input: int | None) -> None:
        """Give a RESHAPE the new shape of its output (keeping -1 where it had one)."""
        new = np.asarray(self.sg.tensors[op.outputs[0]].shape, np.int32)

        def fit(old):
            old = np.asarray(old, np.int32)
            return np.where(old < 0, old, new) if old.size == new.size else new

        options = op_t.builtinOptions
        if options is not None and getattr(options, "newShape", None) is not None:
            options.newShape = fit(options.newShape)
        shape_t = op.inputs[shape_input] if shape_input is not None else -1
        if shape_t >= 0 and self.model.is_constant(shape_t):
            self.put(shape_t, fit(self.model.tensor_data(shape_t)))

    def finish(self) -> bytes:
        fb = schema()
        users: dict[int, int] = {}
        for sg in self.root.subgraphs:
            for tensor in sg.tensors:
                users[tensor.buffer] = users.get(tensor.buffer, 0) + 1
        for t, values in self.data.items():
            tensor = self.sg.tensors[t]
            old = tensor.buffer
            users[old] -= 1
            if users[old] == 0:
                self.root.buffers[old].data = None
            buffer = fb.BufferT()
            buffer.data = np.ascontiguousarray(values).view(np.uint8).reshape(-1)
            self.root.buffers.append(buffer)
            tensor.buffer = len(self.root.buffers) - 1
        builder = flatbuffers.Builder(self.model.nbytes + 4096)
        builder.Finish(self.root.Pack(builder), file_identifier=b"TFL3")
        return bytes(builder.Output())
