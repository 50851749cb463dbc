"""ActivationMap: streaming sums of |activation| per prunable layer, in memory independent of N.

For layer l, S_in is Σ_samples Σ_positions |x| at the input index each weight multiplies
(DESIGN.md, Eq. 1) and S_out[c] is Σ_samples Σ_positions |y[..., c]|. For spatial ops the map keeps
Σ_samples |x| at input resolution and folds the kernel windows when S_in is read: the window sums
are linear, so this equals folding every sample, at a fraction of the per-sample cost.
"""

from __future__ import annotations

import json
import os
from collections.abc import Iterable, Sequence

import numpy as np

from ._io import atomic_open
from .errors import EdgepruneError
from .layers import Layer, Scan, scan
from .model import Model
from .runtime import Runner

_FORMAT = 1


class ActivationMap:
    """S_in and S_out per layer of one model, accumulated one sample (or batch) at a time."""

    def __init__(self, model: Model, layers: Sequence[Layer] | None = None):
        self.layers = tuple(scan(model).layers if layers is None else layers)
        self.count = 0
        self._output_hw = [model.tensor(layer.output).shape[1:3] for layer in self.layers]
        self._raw: list[np.ndarray | None] = [None] * len(self.layers)
        self._s_in = [np.zeros(self._s_in_shape(layer)) for layer in self.layers]
        self._s_out = [np.zeros(layer.weight_shape[layer.out_axis]) for layer in self.layers]

    @staticmethod
    def _s_in_shape(layer: Layer) -> tuple[int, ...]:
        if layer.spatial:
            channels = layer.weight_shape[3] // layer.depth_multiplier
            return (*layer.kernel, channels)
        return (layer.in_features,)

    @property
    def watched(self) -> list[int]:
        """Tensors the runner must expose: every layer's input and output."""
        return list(dict.fromkeys(t for layer in self.layers for t in (layer.input, layer.output)))

    def update(self, activations: dict[int, np.ndarray], samples: int = 1) -> None:
        """Add one invocation's tensors ({tensor index: real values}) holding `samples` samples."""
        for i, layer in enumerate(self.layers):
            reduced = layer.reduce_input(np.abs(activations[layer.input]))
            if self._raw[i] is None:
                self._raw[i] = np.zeros(reduced.shape)
            self._raw[i] += reduced
            self._s_out[i] += layer.reduce_output(np.abs(activations[layer.output]))
        self.count += samples

    def s_in(self, i: int) -> np.ndarray:
        """S_in of layer i: [kh, kw, c_in] for spatial layers, [in] for dense ones."""
        raw = self._raw[i]
        if raw is None:
            return self._s_in[i].copy()
        return self._s_in[i] + self.layers[i].fold_input(raw, self._output_hw[i])

    def s_out(self, i: int) -> np.ndarray:
        return self._s_out[i].copy()

    def merge(self, other: ActivationMap) -> ActivationMap:
        """The map of both sample sets together (maps must come from the same model)."""
        self._check_signature(_signature(other.layers))
        merged = ActivationMap.__new__(ActivationMap)
        merged.layers, merged._output_hw = self.layers, self._output_hw
        merged.count = self.count + other.count
        merged._raw = [None] * len(self.layers)
        merged._s_in = [self.s_in(i) + other.s_in(i) for i in range(len(self.layers))]
        merged._s_out = [a + b for a, b in zip(self._s_out, other._s_out)]
        return merged

    def _check_signature(self, signature: list) -> None:
        if signature != _signature(self.layers):
            raise EdgepruneError(
                "the activation map was recorded on a different model; record it again on this one"
            )

    # ----- files ---------------------------------------------------------------------------

    def save(self, path: str | os.PathLike) -> None:
        """Write the map as .npz, atomically."""
        arrays = {
            "meta": np.array(
                json.dumps(
                    {
                        "format": _FORMAT,
                        "count": self.count,
                        "layers": _signature(self.layers),
                    }
                )
            )
        }
        for i in range(len(self.layers)):
            arrays[f"s_in_{i}"] = self.s_in(i)
            arrays[f"s_out_{i}"] = self._s_out[i]
        with atomic_open(path) as f:
            np.savez(f, **arrays)

    @classmethod
    def load(cls, path: str | os.PathLike, model: Model) -> ActivationMap:
        """Read a map saved by `save` and check that it belongs to `model`."""
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
                    amap._s_in[i] = _same_shape(npz[f"s_in_{i}"], amap._s_in[i], path)
                    amap._s_out[i] = _same_shape(npz[f"s_out_{i}"], amap._s_out[i], path)
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
    layers: Scan | None = None,
) -> ActivationMap:
    """Run `samples` through `model` once and accumulate their activations into a map."""
    if amap is None:
        amap = ActivationMap(model, (layers or scan(model)).layers)
    runner = Runner(model, amap.watched, mode=mode)
    for sample in samples:
        amap.update(runner.run(sample))
    return amap
