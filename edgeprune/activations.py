"""ActivationMap: streaming sums of |activation| per prunable layer, in memory independent of N.

For layer l, S_in is Σ_samples Σ_positions |x| at the input index each weight multiplies
(DESIGN.md, Eq. 1) and S_out[c] is Σ_samples Σ_positions |y[..., c]|. Per sample the map only adds
|t| into a float32 running sum per watched tensor; every `FOLD_EVERY` samples (and whenever S_in
or S_out is read) those partial sums are folded into float64 S_in and S_out. Window and position
sums are linear, so folding a sum of samples equals folding each one, at a fraction of the cost.
Memory: one float32 copy of each watched tensor plus O(parameters), whatever the sample count.
Quantized tensors are summed exactly as |q − zero_point| and scaled when folded.
"""

from __future__ import annotations

import json
import os
from collections.abc import Iterable, Sequence

import numpy as np

from ._io import atomic_open
from .errors import EdgepruneError, UnsupportedError
from .layers import Layer, scan
from .model import Model
from .runtime import Runner

_FORMAT = 1
_NONNEGATIVE = ("RELU", "RELU6")
FOLD_EVERY = 64  # samples per float32 partial sum: relative rounding stays below 1e-5


class _AbsSum:
    """Σ |values| of one tensor over recent samples and its batch axis, in its stored units."""

    __slots__ = ("scale", "zero_point", "nonnegative", "partial", "scratch")

    def __init__(self, model: Model, tensor: int, nonnegative: bool):
        t = model.tensor(tensor)
        q = t.quantization
        if q is not None and q.scale.size > 1:
            raise UnsupportedError(f"activation {t.name!r} is quantized per channel: not supported")
        self.scale = float(q.scale[0]) if q is not None else 1.0
        self.zero_point = int(q.zero_point[0]) if q is not None else None
        self.nonnegative = nonnegative and q is None
        shape = t.shape[1:] if len(t.shape) > 1 else t.shape
        self.partial = np.zeros(shape, np.float32)
        self.scratch = np.empty(shape, np.float32)

    def add(self, stored: np.ndarray) -> None:
        batched = stored.ndim > self.partial.ndim
        if batched and stored.shape[0] == 1:
            stored, batched = stored[0], False
        if self.zero_point is not None:
            stored = np.abs(np.subtract(stored, self.zero_point, dtype=np.int32))
        elif not self.nonnegative:
            stored = np.abs(stored) if batched else np.abs(stored, out=self.scratch)
        if batched:  # |x| first, then the sum over the batch
            stored = stored.sum(axis=0)
        np.add(self.partial, stored, out=self.partial)

    def fresh(self) -> _AbsSum:
        """A sum of the same tensor with nothing added yet."""
        new = object.__new__(_AbsSum)
        new.scale, new.zero_point, new.nonnegative = self.scale, self.zero_point, self.nonnegative
        new.partial, new.scratch = np.zeros_like(self.partial), np.empty_like(self.scratch)
        return new

    def take(self) -> np.ndarray:
        """The real-valued partial sum as float64; the partial sum starts again from zero."""
        real = self.partial.astype(np.float64) * self.scale
        self.partial[...] = 0
        return real


class ActivationMap:
    """S_in and S_out per prunable layer of one model, accumulated one invocation at a time."""

    def __init__(self, model: Model, layers: Sequence[Layer] | None = None):
        self.layers = tuple(scan(model).layers if layers is None else layers)
        self.count = 0
        self._pending = 0
        nonnegative = {x.output for x in self.layers if x.activation in _NONNEGATIVE}
        self._sums = {
            t: _AbsSum(model, t, t in nonnegative)
            for layer in self.layers
            for t in (layer.input, layer.output)
        }
        # Statistics keyed by layer (its operator index), never by position in a list.
        self._s_in = {layer.op: np.zeros(layer.s_in_shape()) for layer in self.layers}
        self._s_out = {layer.op: np.zeros(layer.out_channels) for layer in self.layers}

    @property
    def watched(self) -> list[int]:
        """Tensors the runner must expose: every layer's input and output."""
        return list(self._sums)

    def update(self, stored: dict[int, np.ndarray], samples: int = 1) -> None:
        """Add one invocation: {tensor: stored values} as `Runner.run(sample, raw=True)` gives."""
        for tensor, total in self._sums.items():
            total.add(stored[tensor])
        self.count += samples
        self._pending += samples
        if self._pending >= FOLD_EVERY:
            self._fold()

    def _fold(self) -> None:
        """Move the partial sums into S_in and S_out."""
        if not self._pending:
            return
        sums = {t: total.take() for t, total in self._sums.items()}
        for layer in self.layers:
            layer.accumulate_s_in(sums[layer.input], self._s_in[layer.op])
            self._s_out[layer.op] += layer.s_out(sums[layer.output])
        self._pending = 0

    def _key(self, layer: Layer | int) -> int:
        """The operator index of `layer` (a Layer, or its position in `self.layers`)."""
        op = layer.op if isinstance(layer, Layer) else self.layers[layer].op
        if op not in self._s_in:
            raise EdgepruneError(f"layer op {op} is not in the activation map")
        return op

    def s_in(self, layer: Layer | int) -> np.ndarray:
        """S_in of `layer` (or of self.layers[i]): [kh, kw, c_in] for spatial layers, [in] for
        dense ones."""
        self._fold()
        return self._s_in[self._key(layer)].copy()

    def s_out(self, layer: Layer | int) -> np.ndarray:
        """S_out of `layer` (or of self.layers[i]): one sum per output channel."""
        self._fold()
        return self._s_out[self._key(layer)].copy()

    def merge(self, other: ActivationMap) -> ActivationMap:
        """A new map of both sample sets together (both maps must come from the same model)."""
        self._check_signature(_signature(other.layers))
        merged = object.__new__(ActivationMap)
        merged.__dict__.update(self.__dict__)
        merged._sums = {t: total.fresh() for t, total in self._sums.items()}
        merged._pending = 0
        merged.count = self.count + other.count
        merged._s_in = {x.op: self.s_in(x) + other.s_in(x) for x in self.layers}
        merged._s_out = {x.op: self.s_out(x) + other.s_out(x) for x in self.layers}
        return merged

    def _check_signature(self, signature: list) -> None:
        if signature != _signature(self.layers):
            raise EdgepruneError(
                "the activation map was recorded on a different model; record it again on this one"
            )

    # ----- files ---------------------------------------------------------------------------

    def save(self, path: str | os.PathLike) -> None:
        """Write S_in, S_out and the sample count as .npz, atomically."""
        meta = {"format": _FORMAT, "count": self.count, "layers": _signature(self.layers)}
        arrays = {"meta": np.array(json.dumps(meta))}
        for i, layer in enumerate(self.layers):  # the file's keys are positions in "layers"
            arrays[f"s_in_{i}"] = self.s_in(layer)
            arrays[f"s_out_{i}"] = self.s_out(layer)
        with atomic_open(path) as f:
            np.savez(f, **arrays)

    @classmethod
    def load(cls, path: str | os.PathLike, model: Model) -> ActivationMap:
        """Read a map saved by `save` and check that it belongs to `model`; it can keep growing."""
        amap = cls(model)
        try:
            npz = np.load(path, allow_pickle=False)
            if not isinstance(npz, np.lib.npyio.NpzFile) or "meta" not in npz.files:
                raise EdgepruneError(
                    f"{path} is not an activation map: make one with `edgeprune record`"
                )
            with npz:
                meta = json.loads(str(npz["meta"]))
                if meta.get("format") != _FORMAT:
                    raise EdgepruneError(
                        f"{path}: unknown activation map format {meta.get('format')}"
                    )
                amap._check_signature(meta["layers"])
                amap.count = int(meta["count"])
                for i, (op, _, _) in enumerate(meta["layers"]):  # position i -> layer op
                    amap._s_in[op] = _same_shape(npz[f"s_in_{i}"], amap._s_in[op], path)
                    amap._s_out[op] = _same_shape(npz[f"s_out_{i}"], amap._s_out[op], path)
        except (OSError, ValueError, KeyError) as e:
            raise EdgepruneError(f"cannot read activation map {path}: {e}") from e
        return amap


def _signature(layers: Sequence[Layer]) -> list:
    return [[layer.op, layer.opcode, list(layer.weight_shape)] for layer in layers]


def _same_shape(loaded: np.ndarray, expected: np.ndarray, path) -> np.ndarray:
    if loaded.shape != expected.shape:
        raise EdgepruneError(f"{path}: array of shape {loaded.shape}, expected {expected.shape}")
    return loaded.astype(np.float64)


def record(
    model: Model,
    samples: Iterable[np.ndarray],
    amap: ActivationMap | None = None,
    mode: str = "instrument",
    num_threads: int | None = None,
) -> ActivationMap:
    """Run `samples` through `model` once and accumulate their activations into a map."""
    amap = amap if amap is not None else ActivationMap(model)
    runner = Runner(model, amap.watched, mode=mode, num_threads=num_threads)
    for sample in samples:
        amap.update(runner.run(sample, raw=True))
    return amap
