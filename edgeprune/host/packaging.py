"""Build `.edgepkg` packages on the host: the model, a manifest describing it, labels, the
preprocessing recipe and extra files, written as a deterministic zip (same inputs, same bytes).
"""

from __future__ import annotations

import hashlib
import json
import os
import zipfile
from pathlib import Path
from typing import Any

from .._io import atomic_open
from ..errors import EdgepruneError
from ..model import Model
from ..package import (
    FORMAT,
    FORMAT_VERSION,
    MANIFEST,
    MODEL,
    REFERENCE,
    PackageError,
    _check_name,
    model_problems,
    tensor_spec,
)
from ..preprocess import recipe_from_dict

_EPOCH = (1980, 1, 1, 0, 0, 0)  # zip's earliest date: fixed, so rebuilding gives the same bytes


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
) -> dict[str, Any]:
    """Write a package to `output` (atomically) and return its manifest.

    `files` maps names inside the package to files on disk; `reference` is the model's source
    reference (`edgeprune.reference`), stored as `reference.npz`.
    """
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
    manifest: dict[str, Any] = {
        "format": FORMAT,
        "format_version": FORMAT_VERSION,
        "name": name,
        "version": version,
        "description": description,
        "model": {"path": MODEL, "sha256": hashlib.sha256(data).hexdigest(), "bytes": len(data)},
        "inputs": [tensor_spec(model, i) for i in model.main.inputs],
        "outputs": [tensor_spec(model, i) for i in model.main.outputs],
        "labels": labels,
        "preprocessing": recipe_from_dict(recipe).to_dict() if recipe is not None else None,
        "files": {
            k: {"sha256": hashlib.sha256(v).hexdigest(), "bytes": len(v)} for k, v in extras.items()
        },
    }
    problems = model_problems(manifest, model)
    if problems:
        raise PackageError(f"cannot package {model_path}: {'; '.join(problems)}")
    members = {MANIFEST: json.dumps(manifest, indent=2).encode() + b"\n", MODEL: data, **extras}
    with atomic_open(output) as f, zipfile.ZipFile(f, "w", zipfile.ZIP_DEFLATED) as zf:
        for inside, content in members.items():
            info = zipfile.ZipInfo(inside, _EPOCH)
            info.compress_type = zipfile.ZIP_DEFLATED
            info.external_attr = 0o100644 << 16
            zf.writestr(info, content)
    return manifest
