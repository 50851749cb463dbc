"""ActivationMap: streaming sums of |activation| per prunable layer, in memory independent of N.

For layer l, S_in is Σ_samples Σ_positions |x| at the input index each weight multiplies
(DESIGN.md, Eq. 1) and S_out[c] is Σ_samples Σ_positions |y[..., c]|. Per sample the map only adds
|t| into a preallocated running sum per watched tensor: float32 for float tensors, exact integers
(int16 for 8-bit ones) for quantized tensors. Before a float32 sum loses precision (`FOLD_EVERY`
samples) or an integer one could overflow (128 samples of 8-bit values), it is spilled into a
float64 total of the same shape, one cheap pass. The kernel-window and position sums that turn
those totals into S_in and S_out (several passes per layer) run only when the map is read: window
and position sums are linear, so folding the sum of all samples equals folding each one.
Memory: about two float64 copies of each watched tensor plus O(parameters), whatever the sample
count. `record` overlaps the sums of one sample with the next invocation on a second core.
"""

from __future__ import annotations

import json
import os
from collections.abc import Iterable, Mapping, Sequence
from concurrent.futures import Future, ThreadPoolExecutor
from typing import Any

import numpy as np

from ._io import atomic_open
from .data import check_npz_sizes
from .errors import EdgepruneError, UnsupportedError
from .layers import Layer, scan
from .model import Model
from .runtime import Runner

_FORMAT = 1
_NONNEGATIVE = ("RELU", "RELU6")
FOLD_EVERY = 64  # samples per float32 partial sum: relative rounding stays below 1e-5
# Watched values per sample from which `record` sums on a second thread by default: below, handing
# each sample over costs more than the sums (measured by benchmarks/core_perf.py).
OVERLAP_ELEMENTS = 1 << 18


class _AbsSum:
    """Σ |values| of one tensor over all samples since the last take, in its stored units.

    Float tensors add |x| into a float32 running sum (x itself where a fused ReLU makes it
    non-negative). Quantized tensors are summed exactly as integers, without int32 or float
    temporaries, in the narrowest accumulator that cannot overflow (int16 for 8-bit values: 128
    rows of at most 255): a preallocated buffer takes q − zero_point and its absolute value is
    added in place; where zero_point is the type's minimum (ReLU outputs) |q − zero_point| is
    q − zero_point, so q itself is added and rows × zero_point subtracted when taken. Every
    `capacity` rows the running sum spills into a float64 carry.
    """

    __slots__ = (
        "scale",
        "zero_point",
        "shift",
        "capacity",
        "rows",
        "filled",
        "partial",
        "scratch",
        "carry",
    )

    def __init__(self, model: Model, tensor: int, nonnegative: bool):
        t = model.tensor(tensor)
        q = t.quantization
        if q is not None and q.scale.size > 1:
            raise UnsupportedError(f"activation {t.name!r} is quantized per channel: not supported")
        shape = t.shape[1:] if len(t.shape) > 1 else t.shape
        self.rows = self.filled = 0  # rows since the last take; rows in `partial` since a spill
        self.carry = np.zeros(shape)  # float64
        if q is None or t.dtype.kind not in "iu":
            self.scale, self.zero_point, self.shift = 1.0, None, nonnegative and q is None
            self.capacity = FOLD_EVERY  # float32 rounding, not overflow, bounds a float sum
            self.partial = np.zeros(shape, np.float32)
            self.scratch = np.empty(shape, np.float32)
            return
        info = np.iinfo(t.dtype)
        self.scale, self.zero_point = float(q.scale[0]), int(q.zero_point[0])
        self.shift = self.zero_point == info.min  # q ≥ zero_point: add q, subtract later
        span = max(-int(info.min), int(info.max)) if self.shift else int(info.max) - int(info.min)
        acc = next(d for d in (np.int16, np.int32, np.int64) if np.iinfo(d).max // span >= 64)
        self.capacity = int(np.iinfo(acc).max // span)
        self.partial = np.zeros(shape, acc)
        self.scratch = None if self.shift else np.empty(shape, acc)

    def add(self, stored: np.ndarray) -> None:
        """Add one invocation's stored values (with or without their batch axis)."""
        if stored.ndim > self.partial.ndim:
            for row in stored.reshape(-1, *self.partial.shape):
                self._add_row(row)
        else:
            self._add_row(stored.reshape(self.partial.shape))

    def _add_row(self, stored: np.ndarray) -> None:
        if self.filled == self.capacity:
            self.spill()
        self.filled += 1
        self.rows += 1
        partial = self.partial
        if self.zero_point is not None:
            if self.shift:
                np.add(partial, stored, out=partial)
                return
            np.subtract(stored, self.zero_point, out=self.scratch, dtype=self.scratch.dtype)
            stored = np.abs(self.scratch, out=self.scratch)
        elif not self.shift:
            stored = np.abs(stored, out=self.scratch)
        np.add(partial, stored, out=partial)

    def spill(self) -> None:
        """Move the partial sum into the float64 carry (one pass; integers stay exact below
        2**53): before a float32 sum loses precision or an integer one could overflow."""
        if not self.filled:
            return
        self.carry += self.partial
        self.partial[...] = 0
        self.filled = 0

    def fresh(self) -> _AbsSum:
        """A sum of the same tensor with nothing added yet."""
        new = object.__new__(_AbsSum)
        for name in self.__slots__:
            setattr(new, name, getattr(self, name))
        new.rows = new.filled = 0
        new.carry = np.zeros_like(self.carry)
        new.partial = np.zeros_like(self.partial)
        new.scratch = None if self.scratch is None else np.empty_like(self.scratch)
        return new

    def take(self) -> np.ndarray:
        """The real-valued partial sum as float64; the partial sum starts again from zero."""
        real = self.carry + self.partial
        self.partial[...] = 0
        self.carry[...] = 0
        if self.zero_point is not None:
            if self.shift and self.rows:
                real -= self.rows * self.zero_point
            real *= self.scale
        self.rows = self.filled = 0
        return real


class ActivationMap:
    """S_in and S_out per prunable layer of one model, accumulated one invocation at a time."""

    def __init__(self, model: Model, layers: Sequence[Layer] | None = None):
        self.layers = tuple(scan(model).layers if layers is None else layers)
        self.count = 0
        self._pending = 0  # samples added since S_in and S_out were last computed
        nonnegative = {x.output for x in self.layers if x.activation in _NONNEGATIVE}
        self._sums = {
            t: _AbsSum(model, t, t in nonnegative)
            for layer in self.layers
            for t in (layer.input, layer.output)
        }
        # Statistics keyed by layer (its operator index), never by position in a list.
        self._s_in = {layer.op: np.zeros(layer.s_in_shape()) for layer in self.layers}
        self._s_out = {layer.op: np.zeros(layer.out_channels) for layer in self.layers}

    def elements(self) -> int:
        """Activation values summed per sample (all watched tensors)."""
        return sum(total.partial.size for total in self._sums.values())

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

    def _fold(self) -> None:
        """Move the running sums into S_in and S_out (kernel windows, positions): once when the
        map is read, not every few samples, as the window sums cost several passes."""
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

    def to_arrays(self) -> dict[str, np.ndarray]:
        """The map as the named arrays of its file: "meta" (JSON) and S_in, S_out per layer."""
        meta = {"format": _FORMAT, "count": self.count, "layers": _signature(self.layers)}
        arrays = {"meta": np.array(json.dumps(meta))}
        for i, layer in enumerate(self.layers):  # the file's keys are positions in "layers"
            arrays[f"s_in_{i}"] = self.s_in(layer)
            arrays[f"s_out_{i}"] = self.s_out(layer)
        return arrays

    def save(self, path: str | os.PathLike) -> None:
        """Write S_in, S_out and the sample count as .npz, atomically."""
        with atomic_open(path) as f:
            np.savez(f, **self.to_arrays())

    @classmethod
    def load(cls, path: str | os.PathLike, model: Model) -> ActivationMap:
        """Read a map saved by `save` and check that it belongs to `model`; it can keep growing."""
        check_npz_sizes(path)  # a bomb is refused before np.load inflates it
        try:
            npz = np.load(path, allow_pickle=False)
            if not isinstance(npz, np.lib.npyio.NpzFile) or "meta" not in npz.files:
                raise EdgepruneError(
                    f"{path} is not an activation map: make one with `edgeprune record`"
                )
            with npz:
                return cls.from_arrays(npz, model, str(path))
        except (OSError, ValueError, KeyError, TypeError, AttributeError, RecursionError) as e:
            raise EdgepruneError(f"cannot read activation map {path}: {e}") from e

    @classmethod
    def from_arrays(
        cls, arrays: Mapping[str, Any], model: Model, source: str = "map"
    ) -> ActivationMap:
        """The map of `model` whose file arrays are `arrays` (as `to_arrays` gives, or an open
        .npz); `source` names them in errors. It can keep growing."""
        amap = cls(model)
        meta = json.loads(str(arrays["meta"]))
        if not isinstance(meta, dict) or meta.get("format") != _FORMAT:
            raise EdgepruneError(
                f"{source}: not an activation map of format {_FORMAT}: make one with "
                "`edgeprune record`"
            )
        amap._check_signature(meta["layers"])
        amap.count = int(meta["count"])
        for i, (op, _, _) in enumerate(meta["layers"]):  # position i -> layer op
            amap._s_in[op] = _same_shape(arrays[f"s_in_{i}"], amap._s_in[op], source)
            amap._s_out[op] = _same_shape(arrays[f"s_out_{i}"], amap._s_out[op], source)
        return amap


def _signature(layers: Sequence[Layer]) -> list:
    return [[layer.op, layer.opcode, list(layer.weight_shape)] for layer in layers]


def _same_shape(loaded: np.ndarray, expected: np.ndarray, path) -> np.ndarray:
    if loaded.shape != expected.shape:
        raise EdgepruneError(f"{path}: array of shape {loaded.shape}, expected {expected.shape}")
    return loaded.astype(np.float64)


def free_core() -> bool:
    """Whether this process may run on more than one core (the sums can overlap the invoke)."""
    try:
        return len(os.sched_getaffinity(0)) > 1
    except AttributeError:  # not on Linux
        return (os.cpu_count() or 1) > 1


class _Overlapped:
    """Sums one invocation's tensors on a worker thread while the next one runs.

    Two runners of the same model take turns: the worker sums one runner's tensors (zero-copy
    views, valid until that runner runs again) while the other runner invokes the next sample, so
    nothing is copied. A runner runs again only after the worker has finished with it. NumPy and
    the interpreter release the GIL in their loops, so both proceed at once on two cores; the
    worker adds the samples in order, so the map equals the one summed in line.
    """

    def __init__(self, amap: ActivationMap, runners: Sequence[Runner]):
        self.amap = amap
        self.runners = tuple(runners)
        self.turn = 0
        self.pool = ThreadPoolExecutor(1, thread_name_prefix="edgeprune-sums")
        self.pending: Future | None = None

    def run(self, sample: np.ndarray) -> None:
        """Invoke on `sample` and hand its tensors to the worker."""
        stored = self.runners[self.turn].run(sample, raw=True)  # this runner's sums are done
        self.wait()  # the worker is done with the other runner's tensors
        self.pending = self.pool.submit(self.amap.update, stored)
        del stored  # only the worker holds the views now: the runner may run once it is done
        self.turn = (self.turn + 1) % len(self.runners)

    def wait(self) -> None:
        if self.pending is not None:
            pending, self.pending = self.pending, None
            pending.result()

    def close(self) -> None:
        try:
            self.wait()
        finally:
            self.pool.shutdown()


def record(
    model: Model,
    samples: Iterable[np.ndarray],
    amap: ActivationMap | None = None,
    mode: str = "instrument",
    num_threads: int | None = None,
    overlap: bool | None = None,
) -> ActivationMap:
    """Run `samples` through `model` once and accumulate their activations into a map.

    overlap: sum one sample's activations on a second thread while the next sample runs (the
    default where a second core is free and the activations are large enough for the hand-over
    to pay: the same map, sooner); False sums in this thread.
    """
    amap = amap if amap is not None else ActivationMap(model)
    if overlap is None:
        overlap = free_core() and amap.elements() >= OVERLAP_ELEMENTS
    runners = [
        Runner(model, amap.watched, mode=mode, num_threads=num_threads)
        for _ in range(2 if overlap else 1)
    ]
    if not overlap:
        for sample in samples:
            amap.update(runners[0].run(sample, raw=True))
        return amap
    sums = _Overlapped(amap, runners)
    try:
        for sample in samples:
            sums.run(sample)
    finally:  # also when the samples stop early (cancel): every sample run is in the map
        sums.close()
    return amap
