"""A recipe from a few choices and the model it is for: what `edgeprune recipe` writes, so raw
images or .wav files can feed a plain .tflite (`--recipe FILE`) without a package.

An image recipe takes its size from the model's input unless given; its normalization is either
mean/std (after `scale`) or the model's own input quantization: a uint8/int8 model made for raw
pixel bytes (Coral's, MobileNet's quantized releases) gets exactly the bytes of the picture.
An audio recipe is checked to make the model's input shape.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from ..errors import EdgepruneError
from ..model import Tensor
from .audio import AudioRecipe
from .image import ImageRecipe


def _triple(values: tuple[float, ...] | None, default: float) -> tuple[float, float, float]:
    values = values or (default,)
    if len(values) == 1:
        return (values[0],) * 3
    if len(values) != 3:
        raise EdgepruneError(f"give one value or three (one per channel), not {len(values)}")
    return tuple(values)


def image_recipe(
    model_input: Tensor,
    size: tuple[int, ...] | None = None,
    mean: tuple[float, ...] | None = None,
    std: tuple[float, ...] | None = None,
    scale: float | None = None,
    from_model: bool = False,
    bgr: bool = False,
) -> ImageRecipe:
    """The image recipe for `model_input` (NHWC, 3 channels) with these choices."""
    shape = tuple(model_input.shape)
    if len(shape) != 4 or shape[-1] != 3:
        raise EdgepruneError(
            f"an image recipe makes H×W×3 inputs; the model's input is {list(shape)}"
        )
    size = tuple(size) if size else shape[1:3]
    if len(size) != 2 or size != shape[1:3]:
        raise EdgepruneError(f"--size {size} does not match the model's input {list(shape)}")
    if from_model:
        if mean is not None or std is not None or scale is not None:
            raise EdgepruneError("--from-model sets the normalization: drop --mean/--std/--scale")
        q = model_input.quantization
        if q is None or model_input.dtype.kind not in "iu":
            raise EdgepruneError(
                f"the model's input is {model_input.type_name}, not quantized: there is no input "
                "quantization to read; give --mean and --std (e.g. --scale 1 --mean 127.5 --std "
                "127.5 for inputs in [-1, 1])"
            )
        # Pixel p (0–255) must become the stored value p − offset: real = (p − offset − z) · s.
        offset = 128 if model_input.dtype == np.int8 else 0
        s, z = float(q.scale[0]), int(q.zero_point[0])
        mean, std, scale = (offset + z,), (1.0 / s,), 1.0
    return ImageRecipe(
        size=size,
        color_order="BGR" if bgr else "RGB",
        scale=1.0 / 255.0 if scale is None else float(scale),
        mean=_triple(mean, 0.0),
        std=_triple(std, 1.0),
    )


def audio_recipe(model_input: Tensor, **fields: Any) -> AudioRecipe:
    """The audio recipe with these fields (the others at their defaults), refused unless it
    makes the model's input shape."""
    recipe = AudioRecipe(**{k: v for k, v in fields.items() if v is not None})
    shape = tuple(model_input.shape[1:])
    if tuple(recipe.shape) != shape:
        raise EdgepruneError(
            f"the recipe makes inputs of shape {list(recipe.shape)} (frames, bins, 1) but the "
            f"model takes {list(shape)}: adjust --length/--hop-length (frames) or --mel-bins "
            "(bins)"
        )
    return recipe
