"""A sample cast to the model input's dtype, refused when its values cannot be what the input
holds: a float32 0–255 image given to a uint8 model whose input means [-1, 1] would otherwise be
clipped silently, and uint8 bytes given to an int8 input would wrap around.

Real inputs that only stray a little (the outliers every calibrated quantization clips) pass: a
sample is refused when more than `OUTSIDE` of its values fall outside the representable range.
"""

from __future__ import annotations

import numpy as np

from .errors import EdgepruneError
from .model import Tensor

OUTSIDE = 0.05  # the share of values beyond a quantized input's range that means a wrong scale
FIX = "or, for images, write a recipe (`edgeprune recipe MODEL -o R.json`) and pass --recipe R.json"


def to_input(sample: np.ndarray, t: Tensor) -> np.ndarray:
    """`sample` in the dtype of input tensor `t`: quantized if `t` is quantized and the sample is
    real-valued, cast if both are integers and the values fit; else EdgepruneError with the fix."""
    if sample.dtype == t.dtype:
        return sample
    integer = t.dtype.kind in "iu"
    if integer and sample.dtype.kind in "iub":
        return _integers(sample, t)
    if integer and t.quantization is not None and sample.dtype.kind == "f":
        return _quantize(sample, t)
    return sample.astype(t.dtype)


def _integers(sample: np.ndarray, t: Tensor) -> np.ndarray:
    info = np.iinfo(t.dtype)
    low, high = (int(sample.min()), int(sample.max())) if sample.size else (0, 0)
    if low < info.min or high > info.max:
        shift = " (int8 = uint8 − 128)" if (sample.dtype, t.dtype) == (np.uint8, np.int8) else ""
        raise EdgepruneError(
            f"the samples are {sample.dtype} in [{low}, {high}] but the model input is "
            f"{t.dtype} in [{info.min}, {info.max}]: they would wrap around; convert them to "
            f"{t.dtype}{shift}, or save real values as float32 for the model to quantize"
        )
    return sample.astype(t.dtype)


def _quantize(sample: np.ndarray, t: Tensor) -> np.ndarray:
    q, info = t.quantization, np.iinfo(t.dtype)
    low, high = sorted(float(v) for v in q.dequantize(np.array([info.min, info.max]))[:2])
    slack = 0.5 * float(np.max(q.scale))
    outside = np.count_nonzero((sample < low - slack) | (sample > high + slack))
    if sample.size and outside > OUTSIDE * sample.size:
        raise EdgepruneError(
            f"the samples range over [{float(sample.min()):.4g}, {float(sample.max()):.4g}] but "
            f"the model's {t.dtype} input holds real values in [{low:.4g}, {high:.4g}] "
            f"({outside / sample.size:.0%} of the values would be clipped): scale the data to "
            f"that range, save the raw {t.dtype} values as a {t.dtype} array, {FIX}"
        )
    return q.quantize(sample, t.dtype, info.min, info.max)
