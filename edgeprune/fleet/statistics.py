"""What a board contributes to the fleet: the sums of its one data pass, as flat arrays.

A board runs `stages.collect` over its unlabeled samples and keeps only sums: the activation map
of the fit part (S_in, S_out per layer and the sample count: the arrays `ActivationMap.save`
writes, from `to_arrays`) and the sum of its penultimate features. Sums of boards add up to the
sums of the union, so the server's aggregate is the map a central pass over every board's fit
part records. Samples, logits and single features never leave the board (the prototype supports
and the prior's logit reservoir are per-sample: they stay on the board for its local
personalization).

The arrays travel in the order of `names`; the server turns the summed arrays back into an
`ActivationMap` through the map's own file format (`ActivationMap.from_arrays`), so the map's
code, not this module, decides what the sums mean.

SecAgg+ sums integers modulo 2^32 after clipping and quantizing each value (Flower's
`secaggplus_mod`). `encode` makes that exact: each float64 becomes a fixed-point integer (64
integer bits, 51 fractional bits) split into 23-bit limbs, which Flower's quantizer passes through
unchanged when the workflow's clipping range is 2^23 and its quantization range 2^24 (see
`SECAGG_SETTINGS`); `decode` carries the limbs back into float64. Up to 256 boards per round fit
the 32-bit modulus.
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Sequence
from dataclasses import dataclass

import numpy as np

from ..activations import ActivationMap
from ..classifier import Classifier
from ..model import Model
from ..stages import Evidence, collect

LIMB_BITS = 23
LIMBS = 5  # 115 bits: values below 2^64 with a resolution of 2^-51
FRACTION_BITS = LIMBS * LIMB_BITS - 64
MAX_BOARDS = 2**32 // 2 ** (LIMB_BITS + 1)
# SecAggPlusWorkflow settings under which Flower's quantization leaves a limb unchanged.
SECAGG_SETTINGS = {
    "clipping_range": float(2**LIMB_BITS),
    "quantization_range": 2 ** (LIMB_BITS + 1),
    "modulus_range": 2**32,
    "max_weight": 1.0,
}
FEATURES = "feature_sum"


@dataclass
class BoardSums:
    """One board's (or the fleet's) sums: named arrays, all additive."""

    names: list[str]
    arrays: list[np.ndarray]

    @property
    def map_count(self) -> int:
        """Samples in the activation map (the fit part)."""
        return int(round(float(self.arrays[self.names.index("count")][0])))

    def __add__(self, other: BoardSums) -> BoardSums:
        if other.names != self.names or any(
            a.shape != b.shape for a, b in zip(self.arrays, other.arrays)
        ):
            raise ValueError("the boards' statistics come from different models")
        return BoardSums(self.names, [a + b for a, b in zip(self.arrays, other.arrays)])

    def nbytes(self) -> int:
        return sum(a.nbytes for a in self.arrays)


def _map_arrays(amap: ActivationMap) -> tuple[list[str], list[np.ndarray], dict]:
    """The arrays of `amap`'s own file, in file order, with the file's metadata."""
    file = amap.to_arrays()
    meta = json.loads(str(file.pop("meta")))
    return list(file), [np.asarray(a, np.float64) for a in file.values()], meta


def board_sums(amap: ActivationMap, feature_sum: np.ndarray) -> BoardSums:
    """The sums a board sends: its map's arrays, the map's sample count, its feature sum."""
    names, arrays, meta = _map_arrays(amap)
    count = np.array([float(meta["count"])])
    return BoardSums([*names, "count", FEATURES], [*arrays, count, np.asarray(feature_sum, float)])


def measure(
    model: Model, samples: Iterable[np.ndarray], mode: str = "instrument"
) -> tuple[BoardSums, int]:
    """Run the one data pass (`stages.collect`) and keep only its sums; also the samples seen."""
    evidence = collect(model, samples, mode=mode)
    return sums_of(evidence), evidence.samples


def sums_of(evidence: Evidence) -> BoardSums:
    """The sums of one pass's evidence (`stages.collect`): what the board sends."""
    return board_sums(evidence.amap, evidence.feature_mean * evidence.amap.count)


def activation_map(model: Model, sums: BoardSums) -> ActivationMap:
    """The `ActivationMap` of summed statistics, read through the map's own file format."""
    template = ActivationMap(model)
    names, arrays, meta = _map_arrays(template)
    by_name = dict(zip(sums.names, sums.arrays))
    meta["count"] = sums.map_count
    out = {"meta": np.array(json.dumps(meta))}
    for name, empty in zip(names, arrays):
        out[name] = np.asarray(by_name[name], np.float64).reshape(empty.shape)
    return ActivationMap.from_arrays(out, model, "the fleet's sums")


def layout(model: Model) -> tuple[list[str], list[tuple[int, ...]], list[bool]]:
    """Names, shapes and signedness of the arrays a board sends for `model`."""
    names, arrays, _ = _map_arrays(ActivationMap(model))
    features = int(Classifier.of(model).weight.shape[1])
    names = [*names, "count", FEATURES]
    shapes = [*(a.shape for a in arrays), (1,), (features,)]
    return names, shapes, [name == FEATURES for name in names]


def max_relative_difference(a: ActivationMap, b: ActivationMap) -> float:
    """The largest |a − b| / |b| over every S_in and S_out entry (entries of b below 1e-12 of
    its array's largest count as that floor): how far a fleet map is from a central one."""
    worst = 0.0
    for layer in b.layers:
        for x, y in ((a.s_in(layer), b.s_in(layer)), (a.s_out(layer), b.s_out(layer))):
            scale = np.maximum(np.abs(y), 1e-12 * max(float(np.abs(y).max()), 1e-30))
            worst = max(worst, float(np.max(np.abs(x - y) / scale)))
    return worst


def feature_mean(sums: BoardSums) -> np.ndarray:
    """The fleet's mean penultimate feature over every board's fit part."""
    return sums.arrays[sums.names.index(FEATURES)] / max(sums.map_count, 1)


# ----- exact integer encoding for secure aggregation -------------------------------------------


def signed(sums: BoardSums) -> list[bool]:
    """Which arrays may hold negative values (the feature sum); the map's sums cannot."""
    return [name == FEATURES for name in sums.names]


def _limbs(a: np.ndarray) -> list[np.ndarray]:
    if np.any(a < 0) or np.any(a >= 2.0**64) or not np.all(np.isfinite(a)):
        raise ValueError("secure aggregation encodes values in [0, 2^64) only")
    fixed = [int(v) for v in np.round(np.ldexp(a.ravel(), FRACTION_BITS)).astype(object)]
    mask = (1 << LIMB_BITS) - 1
    return [
        np.array([(v >> (i * LIMB_BITS)) & mask for v in fixed], np.float64).reshape(a.shape)
        for i in range(LIMBS)
    ]


def _value(parts: Sequence[np.ndarray], shape: tuple[int, ...]) -> np.ndarray:
    size = int(np.prod(shape, dtype=np.int64))
    total = [0] * size
    for i, part in enumerate(parts):
        ints = np.rint(np.asarray(part, np.float64).ravel()).astype(np.int64)
        for j in range(size):
            total[j] += int(ints[j]) << (i * LIMB_BITS)
    values = np.array([float(v) for v in total], np.float64)
    return np.ldexp(values, -FRACTION_BITS).reshape(shape)


def encode(arrays: Sequence[np.ndarray], signs: Sequence[bool]) -> list[np.ndarray]:
    """Each array as LIMBS arrays of integers in [0, 2^23) (stored as float64, as Flower's
    quantizer takes them): its fixed-point value, least significant limb first. A signed array
    goes as its positive and its negative part (LIMBS each): the parts sum separately, and the
    fleet's value is their difference, as exact as the sum of the values."""
    out = []
    for a, sign in zip(arrays, signs):
        a = np.asarray(a, np.float64)
        out += [*_limbs(np.maximum(a, 0)), *_limbs(np.maximum(-a, 0))] if sign else _limbs(a)
    return out


def decode(
    limbs: Sequence[np.ndarray], shapes: Sequence[tuple[int, ...]], signs: Sequence[bool]
) -> list[np.ndarray]:
    """Summed limbs back into float64 arrays of `shapes` (carries resolved exactly)."""
    out, k = [], 0
    for shape, sign in zip(shapes, signs):
        value = _value(limbs[k : k + LIMBS], shape)
        k += LIMBS
        if sign:
            value = value - _value(limbs[k : k + LIMBS], shape)
            k += LIMBS
        out.append(value)
    return out
