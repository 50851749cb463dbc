"""Samples from raw recordings and pictures (.wav, images), turned into model inputs on the
device by the preprocessing recipe a package ships — the same `edgeprune.preprocess` code the
host trained with, so the board computes exactly the features the model learned from.
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from pathlib import Path

import numpy as np

from .data import SUFFIXES, Samples
from .errors import EdgepruneError
from .preprocess import AudioRecipe, ImageRecipe, image_file_features, wav_features

AUDIO_SUFFIXES = (".wav",)
IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg", ".bmp", ".gif", ".webp", ".ppm", ".tif", ".tiff")


class RawSamples:
    """The .wav or image files under a file or folder (sorted by name), as model inputs."""

    def __init__(
        self,
        path: str | os.PathLike,
        recipe: AudioRecipe | ImageRecipe,
        input_shape: tuple[int, ...],
    ):
        path = Path(path)
        suffixes = AUDIO_SUFFIXES if isinstance(recipe, AudioRecipe) else IMAGE_SUFFIXES
        kind = "audio (.wav)" if isinstance(recipe, AudioRecipe) else "image"
        if path.is_dir():
            self.files = sorted(p for p in path.iterdir() if p.suffix.lower() in suffixes)
        elif path.is_file() and path.suffix.lower() in suffixes:
            self.files = [path]
        else:
            raise EdgepruneError(f"{path}: not a {kind} file or a folder of them")
        if not self.files:
            raise EdgepruneError(f"{path}: no {kind} files here for the package's {kind} recipe")
        if tuple(recipe.shape) != tuple(input_shape[1:]):
            raise EdgepruneError(
                f"the recipe makes inputs of shape {list(recipe.shape)} but the model takes "
                f"{list(input_shape[1:])}: the package is inconsistent (run `edgeprune verify`)"
            )
        self.recipe = recipe

    def __len__(self) -> int:
        return len(self.files)

    def __iter__(self) -> Iterator[np.ndarray]:
        for f in self.files:
            if isinstance(self.recipe, AudioRecipe):
                yield wav_features(f, self.recipe)
            else:
                yield image_file_features(f, self.recipe)


def _raw_files(p: Path) -> bool:
    """Is `p` a .wav/image file, or a folder holding some?"""
    raw = AUDIO_SUFFIXES + IMAGE_SUFFIXES
    if p.is_dir():
        return any(q.suffix.lower() in raw for q in p.iterdir())
    return p.suffix.lower() in raw


def open_samples(
    path: str | os.PathLike,
    input_shape: tuple[int, ...],
    recipe: AudioRecipe | ImageRecipe | None = None,
) -> Samples | RawSamples:
    """DATA as commands take it: .npy/.npz arrays, or — with a recipe — raw .wav/image files."""
    p = Path(path)
    arrays = p.suffix in SUFFIXES or (p.is_dir() and any(q.suffix in SUFFIXES for q in p.iterdir()))
    if recipe is None and not arrays and _raw_files(p):
        raise EdgepruneError(
            f"{path}: raw .wav or image files need a recipe to become model inputs: pass "
            "--recipe FILE (write one with `edgeprune recipe MODEL -o FILE`) or use a package "
            "that has one"
        )
    if recipe is None or arrays:
        return Samples(path, input_shape)
    return RawSamples(path, recipe, input_shape)
