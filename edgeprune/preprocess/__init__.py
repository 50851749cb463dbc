"""Front ends in NumPy: turn a WAV file or an image into the model input the source model was
trained on, identically on the host and on the device (no TensorFlow, no librosa, no scipy).

A recipe (:class:`AudioRecipe`, :class:`ImageRecipe`) holds every parameter; it round-trips
through ``to_dict()`` / :func:`recipe_from_dict` (JSON) so it can ship with the model.
"""

from __future__ import annotations

import json
import os
from typing import Any

from ..errors import EdgepruneError
from . import audio, image
from .audio import AudioRecipe, read_wav, wav_features
from .image import ImageRecipe, read_image
from .image import file_features as image_file_features

audio_features = audio.features
image_features = image.features


MAX_RECIPE_BYTES = 1 << 20  # a recipe is a few hundred bytes of JSON


def load_recipe(path: str | os.PathLike) -> AudioRecipe | ImageRecipe:
    """A recipe from its JSON file (as `edgeprune recipe` writes it), checked field by field."""
    try:
        with open(path, "rb") as f:
            raw = f.read(MAX_RECIPE_BYTES + 1)
        if len(raw) > MAX_RECIPE_BYTES:
            raise ValueError("larger than a recipe can be")
        d = json.loads(raw.decode("utf-8"))
    except (OSError, ValueError, RecursionError) as e:
        raise EdgepruneError(f"cannot read the recipe {path}: {e}") from e
    return recipe_from_dict(d)


def front_end_ms(recipe: AudioRecipe | ImageRecipe, runs: int = 20) -> dict[str, Any]:
    """What the recipe's front end costs per input, timed on a synthetic raw input of the usual
    size (a recording of the recipe's length, a 480×640 camera frame): min and median ms."""
    import time

    import numpy as np

    rng = np.random.default_rng(0)
    if isinstance(recipe, AudioRecipe):
        raw = rng.uniform(-0.5, 0.5, recipe.length).astype(np.float32)
        what = f"{recipe.length} samples at {recipe.sample_rate} Hz"
        run = audio.features
    else:
        raw = rng.integers(0, 256, (480, 640, 3), dtype=np.uint8)
        what = "a 480x640 RGB picture"
        run = image.features
    times = []
    for _ in range(max(runs, 1)):
        start = time.perf_counter()
        run(raw, recipe)
        times.append((time.perf_counter() - start) * 1e3)
    return {"input": what, "runs": len(times), "min": min(times), "p50": float(np.median(times))}


def recipe_from_dict(d: dict[str, Any]) -> AudioRecipe | ImageRecipe:
    """An audio or image recipe from its ``to_dict()``, dispatched on ``d["kind"]``."""
    kinds = {"audio": AudioRecipe, "image": ImageRecipe}
    kind = d.get("kind") if isinstance(d, dict) else None
    if kind not in kinds:
        raise EdgepruneError(f"a recipe needs 'kind': 'audio' or 'image' (got {kind!r})")
    return kinds[kind].from_dict(d)


__all__ = [
    "AudioRecipe",
    "ImageRecipe",
    "audio",
    "audio_features",
    "image",
    "image_features",
    "image_file_features",
    "load_recipe",
    "read_image",
    "read_wav",
    "recipe_from_dict",
    "wav_features",
]
