"""Image front end in NumPy: resize, colour order, scale and per-channel normalization.

The one implementation used on the host (training) and on the device, so both compute the same
model inputs. :func:`features` does, in this order:

1. Resize to ``recipe.size`` (height, width) by bilinear interpolation with half-pixel centres
   and no antialiasing (``align_corners=False``): output pixel ``i`` samples the input at
   ``(i + 0.5) * in / out - 0.5``, clamped to the image. This is ``tf.image.resize(...,
   "bilinear")`` (TF2, ``antialias=False``); an image that already has the size is unchanged.
2. Colour order: images come in as RGB (as :func:`read_image` returns them); ``"BGR"`` reverses
   the channels.
3. ``x * scale``, then ``(x - mean) / std`` per channel (in the recipe's colour order).

Only :func:`read_image` needs Pillow, imported when called.
"""

from __future__ import annotations

import dataclasses
import os
from typing import Any

import numpy as np

from ..errors import EdgepruneError
from . import _recipe

RESIZES = ("bilinear",)
# The most pixels an image file may have (4096 x 4096): decoding costs about 20 bytes a pixel
# (RGB, then float32), so this bounds one image at ~340 MB. Pillow's own bomb check is weaker.
MAX_PIXELS = 1 << 24
COLOR_ORDERS = ("RGB", "BGR")


@dataclasses.dataclass(frozen=True)
class ImageRecipe:
    """Everything that determines the model input made from an image (see module docstring)."""

    size: tuple[int, int] = (32, 32)  # (height, width) of the model input
    resize: str = "bilinear"  # half-pixel centres, no antialias (tf.image.resize)
    color_order: str = "RGB"  # channel order the model expects
    scale: float = 1.0 / 255.0
    mean: tuple[float, float, float] = (0.0, 0.0, 0.0)  # per channel, after scaling
    std: tuple[float, float, float] = (1.0, 1.0, 1.0)

    def __post_init__(self) -> None:
        # Lists (from JSON) become tuples, so recipes compare and hash by value.
        problems = []
        for name in ("size", "mean", "std"):
            value = getattr(self, name)
            if isinstance(value, (list, np.ndarray)):
                value = tuple(np.asarray(value, dtype=object).reshape(-1).tolist())
                object.__setattr__(self, name, value)
            if not isinstance(value, tuple) or not all(
                isinstance(v, (int, float, np.integer, np.floating)) and not isinstance(v, bool)
                for v in value
            ):
                raise EdgepruneError(f"invalid ImageRecipe: {name} must be a list of numbers")
        if (
            len(self.size) != 2
            or not all(isinstance(v, (int, np.integer)) and v > 0 for v in self.size)
            or any(isinstance(v, bool) for v in self.size)
        ):
            problems.append(f"size must be (height, width), positive integers (got {self.size!r})")
        if self.resize not in RESIZES:
            problems.append(f"resize must be one of {RESIZES} (got {self.resize!r})")
        if self.color_order not in COLOR_ORDERS:
            problems.append(f"color_order must be one of {COLOR_ORDERS} (got {self.color_order!r})")
        if len(self.mean) != 3 or len(self.std) != 3:
            problems.append("mean and std need one value per channel (3)")
        elif not all(s > 0 for s in self.std):
            problems.append(f"std values must be > 0 (got {self.std!r})")
        if not self.scale > 0:
            problems.append(f"scale must be > 0 (got {self.scale!r})")
        if problems:
            raise EdgepruneError("invalid ImageRecipe: " + "; ".join(problems))

    @property
    def shape(self) -> tuple[int, int, int]:
        """Shape of :func:`features`' output: (height, width, 3)."""
        return (*self.size, 3)

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready dict, with ``"kind": "image"``; :meth:`from_dict` reads it back."""
        d = dataclasses.asdict(self)
        for name in ("size", "mean", "std"):
            d[name] = list(d[name])
        return {"kind": "image", **d}

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> ImageRecipe:
        return _recipe.from_dict(cls, d, "image")


def _axis(in_size: int, out_size: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Lower and upper source indices and the weight of the upper one, per output index."""
    src = (np.arange(out_size) + 0.5) * (in_size / out_size) - 0.5
    floor = np.floor(src)
    lower = np.maximum(floor, 0).astype(np.intp)
    upper = np.minimum(np.ceil(src), in_size - 1).astype(np.intp)
    return lower, upper, src - floor


def resize_bilinear(image: np.ndarray, size: tuple[int, int]) -> np.ndarray:
    """[H, W, C] image resized to ``size`` = (height, width) as float32, bilinear with half-pixel
    centres and no antialias (``tf.image.resize`` bilinear)."""
    x = np.asarray(image, dtype=np.float32)
    (h, w), (oh, ow) = x.shape[:2], size
    if (h, w) == (oh, ow):
        return x
    top, bottom, wy = _axis(h, oh)
    left, right, wx = _axis(w, ow)
    wx = wx.astype(np.float32)[np.newaxis, :, np.newaxis]
    wy = wy.astype(np.float32)[:, np.newaxis, np.newaxis]
    rows_top, rows_bottom = x[top], x[bottom]
    upper = rows_top[:, left] + (rows_top[:, right] - rows_top[:, left]) * wx
    lower = rows_bottom[:, left] + (rows_bottom[:, right] - rows_bottom[:, left]) * wx
    return upper + (lower - upper) * wy


def features(image: np.ndarray, recipe: ImageRecipe) -> np.ndarray:
    """Model input made from one RGB image [H, W, 3] (uint8 0..255 normally), as float32
    ``[height, width, 3]``; see the module docstring for the steps."""
    x = np.asarray(image)
    if x.ndim != 3 or x.shape[2] != 3 or x.shape[0] == 0 or x.shape[1] == 0:
        raise EdgepruneError(
            f"expected an RGB image of shape [height, width, 3], got shape {x.shape} "
            "(read files with edgeprune.preprocess.read_image, which converts to RGB)"
        )
    if x.dtype.kind not in "uif":
        raise EdgepruneError(f"expected an image of numbers (uint8 normally), got {x.dtype}")
    y = resize_bilinear(x, recipe.size)
    if recipe.color_order == "BGR":
        y = y[:, :, ::-1]
    mean = np.asarray(recipe.mean, dtype=np.float32)
    std = np.asarray(recipe.std, dtype=np.float32)
    y = (y * np.float32(recipe.scale) - mean) / std
    return np.ascontiguousarray(y, dtype=np.float32)


def read_image(path: str | os.PathLike) -> np.ndarray:
    """An image file as an RGB uint8 array [height, width, 3] (any format Pillow reads; grey,
    palette and RGBA images are converted to RGB, alpha dropped)."""
    try:
        from PIL import Image, UnidentifiedImageError
    except ImportError as e:
        raise EdgepruneError(
            "reading image files needs Pillow: `pip install pillow` "
            "(or pass decoded uint8 arrays to edgeprune.preprocess.image.features)"
        ) from e
    try:
        with Image.open(os.fspath(path)) as img:
            width, height = img.size
            if width * height > MAX_PIXELS:
                raise EdgepruneError(
                    f"{path}: {width} x {height} pixels, over the {MAX_PIXELS:,}-pixel limit "
                    "of edgeprune.preprocess.image.MAX_PIXELS: downscale the image"
                )
            return np.asarray(img.convert("RGB"), dtype=np.uint8)
    except UnidentifiedImageError as e:
        raise EdgepruneError(f"{path}: not an image file Pillow can read") from e
    except Image.DecompressionBombError as e:
        raise EdgepruneError(f"{path}: too many pixels ({e})") from e
    except OSError as e:
        raise EdgepruneError(f"cannot read image {path}: {e.strerror or e}") from e


def file_features(path: str | os.PathLike, recipe: ImageRecipe) -> np.ndarray:
    """:func:`features` of an image file."""
    return features(read_image(path), recipe)
