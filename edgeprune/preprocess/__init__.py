"""Front ends in NumPy: turn a WAV file or an image into the model input the source model was
trained on, identically on the host and on the device (no TensorFlow, no librosa, no scipy).

A recipe (:class:`AudioRecipe`, :class:`ImageRecipe`) holds every parameter; it round-trips
through ``to_dict()`` / :func:`recipe_from_dict` (JSON) so it can ship with the model.
"""

from __future__ import annotations

from typing import Any

from ..errors import EdgepruneError
from . import audio, image
from .audio import AudioRecipe, read_wav, wav_features
from .image import ImageRecipe, read_image
from .image import file_features as image_file_features

audio_features = audio.features
image_features = image.features


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
    "read_image",
    "read_wav",
    "recipe_from_dict",
    "wav_features",
]
