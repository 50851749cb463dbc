"""Build `.edgepkg` packages on the host: the model, a manifest describing it, labels, the
preprocessing recipe and extra files, written as a deterministic zip (same inputs, same bytes).
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

from ..errors import EdgepruneError
from ..model import Model
from ..package import (
    MANIFEST,
    MODEL,
    REFERENCE,
    PackageError,
    _check_name,
    model_problems,
)
from ..package_writer import manifest_for, write_members
from ..preprocess import recipe_from_dict


def read_labels(path: str | os.PathLike) -> list[str]:
    """Labels from a text file, one per line (blank lines ignored), or a JSON list."""
    try:
        text = Path(path).read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as e:
        raise EdgepruneError(f"cannot read labels from {path}: {e}") from e
    if text.lstrip().startswith("["):
        try:
            labels = json.loads(text)
        except json.JSONDecodeError as e:
            raise EdgepruneError(f"{path}: not a JSON list of labels: {e}") from e
        if isinstance(labels, list) and all(isinstance(x, str) for x in labels):
            return labels
        raise EdgepruneError(f"{path}: a JSON labels file must be a list of texts")
    return [line.strip() for line in text.splitlines() if line.strip()]


def read_recipe(path: str | os.PathLike) -> dict[str, Any]:
    """A recipe JSON file (an AudioRecipe's or ImageRecipe's to_dict()), checked and normalized."""
    try:
        d = json.loads(Path(path).read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as e:
        raise EdgepruneError(f"cannot read the recipe {path}: {e}") from e
    return recipe_from_dict(d).to_dict()


def build(
    model_path: str | os.PathLike,
    output: str | os.PathLike,
    name: str,
    version: str,
    labels: list[str] | None = None,
    recipe: dict[str, Any] | None = None,
    files: dict[str, str | os.PathLike] | None = None,
    description: str = "",
    reference: bytes | None = None,
    data: bytes | None = None,
) -> dict[str, Any]:
    """Write a package to `output` (atomically) and return its manifest.

    `files` maps names inside the package to files on disk; `reference` is the model's source
    reference (`edgeprune.reference`), stored as `reference.npz`; `data`, the model's bytes if
    they are not the file `model_path` (a model taken from another package).
    """
    if data is None:
        data = Path(model_path).read_bytes() if Path(model_path).is_file() else None
    if data is None:
        raise EdgepruneError(f"cannot read model {model_path}: no such file")
    model = Model(data, name=str(model_path))
    extras: dict[str, bytes] = {}
    for inside, src in sorted((files or {}).items()):
        why = _check_name(inside)
        if why or inside in (MANIFEST, MODEL):
            raise EdgepruneError(
                f"cannot store a file as {inside!r} in a package ({why or 'reserved'})"
            )
        try:
            extras[inside] = Path(src).read_bytes()
        except OSError as e:
            raise EdgepruneError(f"cannot read {src}: {e.strerror}") from e
    if reference is not None:
        extras[REFERENCE] = reference
    fields = {
        "name": name,
        "version": version,
        "description": description,
        "labels": labels,
        "preprocessing": recipe_from_dict(recipe).to_dict() if recipe is not None else None,
    }
    manifest = manifest_for(model, data, fields, extras)
    problems = model_problems(manifest, model)
    if problems:
        raise PackageError(f"cannot package {model_path}: {'; '.join(problems)}")
    members = {MANIFEST: json.dumps(manifest, indent=2).encode() + b"\n", MODEL: data, **extras}
    write_members(output, members)
    return manifest
