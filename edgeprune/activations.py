"""ActivationMap: streaming sums of |activation| per prunable layer, in memory independent of N.

For layer l, S_in is Σ_samples Σ_positions |x| at the input index each weight multiplies
(DESIGN.md, Eq. 1) and S_out[c] is Σ_samples Σ_positions |y[..., c]|. The map keeps one running
Σ_samples |t| per watched tensor t (its size, not N, bounds the memory) and derives S_in and S_out
from it when they are read: the kernel-window and position sums are linear, so folding once
equals folding every sample, at a fraction of the per-sample cost. Quantized tensors are summed
as |q − zero_point| and scaled when read.
"""

from __future__ import annotations

import copy
import json
import os
from collections.abc import Iterable, Sequence

import numpy as np

from ._io import atomic_open
from .errors import EdgepruneError
from .layers import Layer, scan
from .model import Model
from .runtime import Runner

_FORMAT = 1
_NONNEGATIVE = ("RELU", "RELU6")


class _AbsSum:
    """Σ_samples |values| of one tensor, summed over its batch axis, in its stored units."""

    __slots__ = ("scale", "zero_point", "nonnegative", "total")

    def __init__(self, model: Model, tensor: int, nonnegative: bool):
        q = model.tensor(tensor).quantization
        self.scale = float(q.scale[0]) if q is not None else 1.0
        self.zero_point = int(q.zero_point[0]) if q is not None else None
        self.nonnegative = nonnegative and q is None
        self.total: np.ndarray | None = None

    def add(self, stored: np.ndarray) -> None:
        if self.zero_point is not None:
            stored = np.abs(stored.astype(np.int32) - self.zero_point)
        elif not self.nonnegative:
            stored = np.abs(stored)
        if stored.ndim > 1:
            stored = stored[0] if stored.shape[0] == 1 else stored.sum(axis=0)
        if self.total is None:
            self.total = stored.astype(np.float64)
        else:
            np.add(self.total, stored, out=self.total)

    def emptied(self) -> _AbsSum:
        """A sum of the same tensor with nothing added yet."""
        empty = copy.copy(self)
        empty.total = None
        return empty

    def real(self, shape: tuple[int, ...]) -> np.ndarray:
        return self.total * self.scale if self.total is not None else np.zeros(shape)


class ActivationMap:
    """S_in and S_out per prunable layer of one model, accumulated one invocation at a time."""

    def __init__(self, model: Model, layers: Sequence[Layer] | None = None):
        self.layers = tuple(scan(model).layers if layers is None else layers)
        self.count = 0
        nonnegative = {x.output for x in self.layers if x.activation in _NONNEGATIVE}
        self._sums = {
            t: _AbsSum(model, t, t in nonnegative)
            for layer in self.layers
            for t in (layer.input, layer.output)
        }
        self._shapes = {t: model.tensor(t).shape[1:] for t in self._sums}
        # S_in / S_out loaded from a file or merged from other maps, added to what _sums holds.
        self._base_in = [None] * len(self.layers)
        self._base_out = [None] * len(self.layers)

    @property
    def watched(self) -> list[int]:
        """Tensors the runner must expose: every layer's input and output."""
        return list(self._sums)

    def update(self, stored: dict[int, np.ndarray], samples: int = 1) -> None:
        """Add one invocation: {tensor: stored values} as `Runner.run(sample, raw=True)` gives."""
        for tensor, total in self._sums.items():
            total.add(stored[tensor])
        self.count += samples

    def _sum(self, tensor: int) -> np.ndarray:
        return self._sums[tensor].real(self._shapes[tensor])

    def s_in(self, i: int) -> np.ndarray:
        """S_in of layer i: [kh, kw, c_in] for spatial layers, [in] for dense ones."""
        layer = self.layers[i]
        s_in = layer.s_in(self._sum(layer.input))
        return s_in if self._base_in[i] is None else s_in + self._base_in[i]

    def s_out(self, i: int) -> np.ndarray:
        """S_out of layer i: one sum per output channel."""
        layer = self.layers[i]
        s_out = layer.s_out(self._sum(layer.output))
        return s_out if self._base_out[i] is None else s_out + self._base_out[i]

    def merge(self, other: ActivationMap) -> ActivationMap:
        """A new map of both sample sets together (both maps must come from the same model)."""
        self._check_signature(_signature(other.layers))
        merged = object.__new__(ActivationMap)
        merged.layers, merged._shapes = self.layers, self._shapes
        merged._sums = {t: total.emptied() for t, total in self._sums.items()}
        merged.count = self.count + other.count
        merged._base_in = [self.s_in(i) + other.s_in(i) for i in range(len(self.layers))]
        merged._base_out = [self.s_out(i) + other.s_out(i) for i in range(len(self.layers))]
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
        for i in range(len(self.layers)):
            arrays[f"s_in_{i}"] = self.s_in(i)
            arrays[f"s_out_{i}"] = self.s_out(i)
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
                for i in range(len(amap.layers)):
                    amap._base_in[i] = _same_shape(npz[f"s_in_{i}"], amap.s_in(i), path)
                    amap._base_out[i] = _same_shape(npz[f"s_out_{i}"], amap.s_out(i), path)
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
