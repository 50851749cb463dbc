"""Writing `.edgepkg` packages: the deterministic zip (same members, same bytes), and the package
of a personalized model, which keeps what its source package had — labels, recipe, description —
and a source reference bound to the new model where one still describes it.

The host builds packages from a model and loose files (`edgeprune.host.packaging`); the board
writes the personalized package itself (`personalize -o X.edgepkg`), so this lives in the core.
"""

from __future__ import annotations

import hashlib
import json
import os
import zipfile
from typing import Any

from ._io import atomic_open
from .errors import EdgepruneError
from .model import Model
from .package import FORMAT, FORMAT_VERSION, MANIFEST, MODEL, REFERENCE, Package, tensor_spec
from .reference import Reference

_EPOCH = (1980, 1, 1, 0, 0, 0)  # zip's earliest date: fixed, so rebuilding gives the same bytes


def write_members(output: str | os.PathLike, members: dict[str, bytes]) -> None:
    """A zip of `members` (name → bytes) written atomically, with fixed dates and modes."""
    with atomic_open(output) as f, zipfile.ZipFile(f, "w", zipfile.ZIP_DEFLATED) as zf:
        for inside, content in members.items():
            info = zipfile.ZipInfo(inside, _EPOCH)
            info.compress_type = zipfile.ZIP_DEFLATED
            info.external_attr = 0o100644 << 16
            zf.writestr(info, content)


def manifest_for(model: Model, data: bytes, fields: dict[str, Any], extras: dict[str, bytes]):
    """The manifest of a package holding `model` (its bytes `data`) and `extras`."""
    return {
        "format": FORMAT,
        "format_version": FORMAT_VERSION,
        **fields,
        "model": {"path": MODEL, "sha256": hashlib.sha256(data).hexdigest(), "bytes": len(data)},
        "inputs": [tensor_spec(model, i) for i in model.main.inputs],
        "outputs": [tensor_spec(model, i) for i in model.main.outputs],
        "files": {
            k: {"sha256": hashlib.sha256(v).hexdigest(), "bytes": len(v)} for k, v in extras.items()
        },
    }


def write_personalized(
    output: str | os.PathLike,
    model: Model,
    source: Package | None,
    recipe=None,
    reference: Reference | None = None,
    name: str = "",
) -> dict[str, Any]:
    """Package the personalized `model`: the source package's labels, recipe and description
    (`recipe`, an Audio/ImageRecipe, replaces the source's), and `reference` if given (already
    bound to `model`). Returns the manifest."""
    data = model.to_bytes()
    m = source.manifest if source is not None else {}
    if recipe is None and source is not None:
        recipe = source.recipe
    if not (name or m.get("name")):
        raise EdgepruneError("a package needs a name")
    extras = {REFERENCE: reference.to_bytes()} if reference is not None else {}
    fields = {
        "name": m.get("name") or name,
        "version": f"{m['version']}+personalized" if m.get("version") else "personalized",
        "description": m.get("description", ""),
        "labels": m.get("labels"),
        "preprocessing": recipe.to_dict() if recipe is not None else None,
    }
    manifest = manifest_for(model, data, fields, extras)
    members = {MANIFEST: json.dumps(manifest, indent=2).encode() + b"\n", MODEL: data, **extras}
    write_members(output, members)
    return manifest
