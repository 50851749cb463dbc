"""`.edgepkg` packages: a zip holding `model.tflite`, `manifest.json` and optional files.

The manifest names the model (name, version), pins its bytes (sha256), describes its inputs and
outputs, and carries the labels and the preprocessing recipe the device needs to turn raw .wav
or image files into model inputs. Packages arrive on boards from elsewhere, so everything here
treats the archive as hostile until checked: member names that escape the destination (absolute
paths, `..`, backslashes, drive letters), symlinks and other special files, encrypted members,
unknown compression methods, duplicate or overlapping entries, absurd declared sizes and
compression ratios are refused before a byte is extracted; every member is then read with a
hard cap on the bytes it may inflate to, and checked against the sha256 the manifest gives.
Unpacking writes into a fresh temporary directory that is renamed into place at the end, so a
refused or interrupted unpack leaves nothing behind.
"""

from __future__ import annotations

import hashlib
import json
import os
import re
import stat
import zipfile
import zlib
from dataclasses import dataclass
from pathlib import Path, PurePosixPath
from typing import Any

from . import reference
from ._io import atomic_directory, open_regular
from .errors import EdgepruneError
from .model import Model

FORMAT = "edgepkg"
FORMAT_VERSION = 1
MANIFEST = "manifest.json"
MODEL = "model.tflite"
REFERENCE = reference.FILENAME  # the source reference, when packaged
SUFFIX = ".edgepkg"
_HEX64 = re.compile(r"[0-9a-f]{64}")
_DRIVE = re.compile(r"^[A-Za-z]:")
_CHUNK = 1 << 20
MAX_NAME_BYTES = 512  # a member's path, so it fits under any destination's PATH_MAX
MAX_DEPTH = 32


class PackageError(EdgepruneError):
    """A package that is malformed, tampered with or unsafe to extract."""


@dataclass(frozen=True)
class Limits:
    """What a package may claim before it is refused unread."""

    members: int = 256
    member_bytes: int = 2 * 2**30  # the largest model the flatbuffer format holds, about
    total_bytes: int = 2 * 2**30
    ratio: int = 1000  # deflate cannot exceed ~1032:1 on real data; beyond it is a bomb
    # Beyond `small_bytes` in all, the members may hold at most `package_ratio` times the
    # archive's size: a 10 MB input then costs at most ~320 MB of memory to read.
    small_bytes: int = 64 << 20
    package_ratio: int = 32
    manifest_bytes: int = 1 << 20
    reference_bytes: int = reference.MAX_BYTES


LIMITS = Limits()


# ----- reading a zip safely ---------------------------------------------------------------------


def shown(name: str) -> str:
    """A member name safe to print: control characters (a terminal's escape sequences) escaped."""
    return "".join(c if c.isprintable() else repr(c)[1:-1] for c in name)


def _check_name(name: str) -> str | None:
    """Why `name` is not a safe relative path inside the package, or None."""
    if not name or "\x00" in name or "\\" in name:
        return "empty, NUL or backslash in the name"
    if name.startswith("/") or _DRIVE.match(name):
        return "absolute path"
    parts = PurePosixPath(name.rstrip("/")).parts
    if any(p in ("..", ".", "") for p in name.rstrip("/").split("/")) or not parts:
        return "'..', '.' or empty path component"
    if any(len(p.encode()) > 255 for p in parts):
        return "path component longer than 255 bytes"
    if len(name.encode()) > MAX_NAME_BYTES or len(parts) > MAX_DEPTH:
        return f"longer than {MAX_NAME_BYTES} bytes or {MAX_DEPTH} folders deep"
    return None


def _check_members(zf: zipfile.ZipFile, limits: Limits, path: str) -> list[zipfile.ZipInfo]:
    """The package's files, after refusing anything unsafe (see the module docstring)."""
    infos = zf.infolist()
    if len(infos) > limits.members:
        raise PackageError(
            f"{path}: {len(infos)} members; a package holds at most {limits.members}"
        )
    seen: set[str] = set()
    folders: set[str] = set()
    files, total = [], 0
    for info in infos:
        name = info.filename
        why = _check_name(name)
        if why:
            raise PackageError(
                f"{path}: unsafe member name {shown(name)[:80]!r} ({why}); refusing the package"
            )
        mode = info.external_attr >> 16
        kind = stat.S_IFMT(mode)
        if kind == stat.S_IFLNK:
            raise PackageError(f"{path}: member {name!r} is a symlink; packages hold plain files")
        if kind not in (0, stat.S_IFREG, stat.S_IFDIR):
            raise PackageError(f"{path}: member {name!r} is a special file; refusing the package")
        if info.flag_bits & 0x1:
            raise PackageError(f"{path}: member {name!r} is encrypted; packages are not")
        key = name.rstrip("/").lower()
        if key in seen:
            raise PackageError(f"{path}: member {name!r} appears twice; refusing the package")
        seen.add(key)
        parents = ["/".join(key.split("/")[:i]) for i in range(1, key.count("/") + 1)]
        if any(p in seen and p not in folders for p in parents):
            raise PackageError(f"{path}: member {shown(name)!r} is inside a file; refusing it")
        if info.is_dir():
            folders.add(key)
        else:
            clash = [p for p in seen if p.startswith(key + "/")]
            if clash:
                raise PackageError(
                    f"{path}: member {shown(name)!r} is a file and a folder; refusing the package"
                )
        folders.update(parents)
        if info.is_dir():
            continue
        if info.compress_type not in (zipfile.ZIP_STORED, zipfile.ZIP_DEFLATED):
            raise PackageError(
                f"{path}: member {name!r} uses compression method {info.compress_type}; "
                "packages use stored or deflate"
            )
        if info.file_size > limits.member_bytes:
            raise PackageError(
                f"{path}: member {name!r} claims {info.file_size:,} bytes, over the "
                f"{limits.member_bytes:,}-byte limit"
            )
        if info.file_size > limits.ratio * max(info.compress_size, 1) and info.file_size > 4096:
            raise PackageError(
                f"{path}: member {name!r} would inflate {info.compress_size:,} bytes to "
                f"{info.file_size:,} (over {limits.ratio}:1): a compression bomb"
            )
        total += info.file_size
        files.append(info)
    if total > limits.total_bytes:
        raise PackageError(
            f"{path}: members add up to {total:,} bytes, over the {limits.total_bytes:,} limit"
        )
    archive = zf.fp.seek(0, os.SEEK_END) if zf.fp is not None else 0
    if total > max(limits.small_bytes, limits.package_ratio * archive):
        raise PackageError(
            f"{path}: members add up to {total:,} bytes from a {archive:,}-byte archive (over "
            f"{limits.package_ratio}:1 beyond {limits.small_bytes:,} bytes): a compression bomb"
        )
    _check_overlaps(infos, path)
    return files


def _check_overlaps(infos: list[zipfile.ZipInfo], path: str) -> None:
    """Refuse entries whose data overlap (the trick of non-recursive zip bombs)."""
    spans = sorted(
        (i.header_offset, i.header_offset + 30 + len(i.orig_filename.encode()) + i.compress_size)
        for i in infos
    )
    for (_, end), (start, _) in zip(spans, spans[1:]):
        if start < end:
            raise PackageError(f"{path}: overlapping zip entries; refusing the package")


class _Discard:
    """A sink that keeps nothing: for hashing a member without holding it."""

    def write(self, data: bytes) -> None:
        pass


DISCARD = _Discard()


def _read_member(zf: zipfile.ZipFile, info: zipfile.ZipInfo, sink=None) -> tuple[bytes, str]:
    """A member's bytes (or streamed to `sink`), never more than it declared; (data, sha256)."""
    digest, chunks, size = hashlib.sha256(), bytearray(), 0
    try:
        with zf.open(info) as f:
            while True:
                chunk = f.read(_CHUNK)
                if not chunk:
                    break
                size += len(chunk)
                if size > info.file_size:
                    raise PackageError(f"member {info.filename!r} inflates past its declared size")
                digest.update(chunk)
                if sink is None:
                    chunks += chunk
                else:
                    sink.write(chunk)
    except (zipfile.BadZipFile, zlib.error, EOFError, NotImplementedError) as e:
        raise PackageError(f"member {info.filename!r} is damaged or lies about itself: {e}") from e
    if size != info.file_size:
        raise PackageError(f"member {info.filename!r} is truncated")
    return chunks, digest.hexdigest()


def _open_zip(path: str | os.PathLike) -> zipfile.ZipFile:
    try:
        if not stat.S_ISREG(os.stat(path).st_mode):  # a FIFO would block the open
            raise PackageError(f"{path} is not a regular file")
        return zipfile.ZipFile(path)
    except FileNotFoundError:
        raise PackageError(f"cannot read package {path}: no such file") from None
    except (zipfile.BadZipFile, OSError, ValueError) as e:
        raise PackageError(f"{path} is not a readable .edgepkg (zip) file: {e}") from e


# ----- the manifest -----------------------------------------------------------------------------


def _spec_problems(specs: Any, what: str) -> list[str]:
    if not isinstance(specs, list) or not specs:
        return [f"{what} must be a non-empty list"]
    problems = []
    for i, s in enumerate(specs):
        ok = (
            isinstance(s, dict)
            and isinstance(s.get("name"), str)
            and isinstance(s.get("shape"), list)
            and all(isinstance(d, int) for d in s["shape"])
            and isinstance(s.get("type"), str)
        )
        if not ok:
            problems.append(f"{what}[{i}] needs name (text), shape (integers) and type (text)")
    return problems


def manifest_problems(manifest: Any) -> list[str]:
    """Everything wrong with a manifest's structure (empty when it is well formed)."""
    if not isinstance(manifest, dict):
        return ["the manifest is not a JSON object"]
    problems = []
    if manifest.get("format") != FORMAT:
        problems.append(f"format must be {FORMAT!r}")
    version = manifest.get("format_version")
    if not isinstance(version, int) or version < 1:
        problems.append("format_version must be a positive integer")
    elif version > FORMAT_VERSION:
        problems.append(
            f"format_version {version} is newer than this edgeprune reads ({FORMAT_VERSION}): "
            "upgrade edgeprune on this machine"
        )
    for key in ("name", "version"):
        value = manifest.get(key)
        if not isinstance(value, str) or not value.strip() or len(value) > 200:
            problems.append(f"{key} must be a non-empty text of at most 200 characters")
    model = manifest.get("model")
    if not (
        isinstance(model, dict)
        and model.get("path") == MODEL
        and isinstance(model.get("sha256"), str)
        and _HEX64.fullmatch(model["sha256"])
        and isinstance(model.get("bytes"), int)
    ):
        problems.append(f"model must be {{path: {MODEL!r}, sha256: 64 hex digits, bytes}}")
    problems += _spec_problems(manifest.get("inputs"), "inputs")
    problems += _spec_problems(manifest.get("outputs"), "outputs")
    labels = manifest.get("labels")
    if labels is not None and not (
        isinstance(labels, list) and all(isinstance(x, str) for x in labels)
    ):
        problems.append("labels must be null or a list of texts")
    recipe = manifest.get("preprocessing")
    if recipe is not None:
        from .preprocess import recipe_from_dict

        try:
            recipe_from_dict(recipe)
        except EdgepruneError as e:
            problems.append(f"preprocessing: {e}")
    files = manifest.get("files", {})
    if not isinstance(files, dict) or not all(
        isinstance(v, dict)
        and isinstance(v.get("sha256"), str)
        and _HEX64.fullmatch(v["sha256"])
        and isinstance(v.get("bytes"), int)
        and _check_name(k) is None
        and k not in (MANIFEST, MODEL)
        for k, v in files.items()
    ):
        problems.append("files must map safe member names to {sha256, bytes}")
    return problems


def tensor_spec(model: Model, index: int) -> dict[str, Any]:
    """A model input or output as the manifest describes it."""
    t = model.tensor(index)
    spec: dict[str, Any] = {"name": t.name, "shape": list(t.shape), "type": t.type_name}
    if t.quantization is not None and t.quantization.scale.size == 1:
        spec["scale"] = float(t.quantization.scale[0])
        spec["zero_point"] = int(t.quantization.zero_point[0])
    return spec


def model_problems(manifest: dict[str, Any], model: Model) -> list[str]:
    """Where the manifest's description disagrees with the model it ships."""
    problems = []
    for key, indices in (("inputs", model.main.inputs), ("outputs", model.main.outputs)):
        actual = [tensor_spec(model, i) for i in indices]
        declared = manifest.get(key)
        if [(s["shape"], s["type"]) for s in actual] != [
            (s.get("shape"), s.get("type")) for s in declared
        ]:
            problems.append(f"{key} in the manifest do not match the model's: {actual}")
    if not model.main.inputs or not model.main.outputs:
        return problems + ["the model needs at least one input and one output"]
    labels = manifest.get("labels")
    if labels is not None:
        classes = model.tensor(model.main.outputs[0]).shape[-1]
        if len(labels) != classes:
            problems.append(f"{len(labels)} labels for a model with {classes} outputs")
    recipe = manifest.get("preprocessing")
    if recipe is not None:
        from .preprocess import recipe_from_dict

        shape = recipe_from_dict(recipe).shape
        wanted = model.tensor(model.main.inputs[0]).shape[1:]
        if tuple(shape) != tuple(wanted):
            problems.append(
                f"the preprocessing recipe makes inputs of shape {list(shape)} but the model "
                f"takes {list(wanted)}"
            )
    return problems


# ----- packages ---------------------------------------------------------------------------------


class Package:
    """An opened, checked package: its manifest, model bytes, recipe and labels."""

    def __init__(self, path: str | os.PathLike, limits: Limits = LIMITS):
        self.path = str(path)
        with _open_zip(path) as zf:
            files = {i.filename: i for i in _check_members(zf, limits, self.path)}
            if MANIFEST not in files or MODEL not in files:
                raise PackageError(f"{self.path}: a package needs {MANIFEST} and {MODEL}")
            if files[MANIFEST].file_size > limits.manifest_bytes:
                raise PackageError(f"{self.path}: {MANIFEST} is implausibly large")
            raw, _ = _read_member(zf, files[MANIFEST])
            try:
                self.manifest = json.loads(raw.decode("utf-8"))
            except RecursionError:
                raise PackageError(f"{self.path}: {MANIFEST} is nested too deeply") from None
            except ValueError as e:  # bad UTF-8 or JSON, an integer of thousands of digits
                raise PackageError(f"{self.path}: {MANIFEST} is not valid JSON: {e}") from e
            problems = manifest_problems(self.manifest)
            if problems:
                raise PackageError(f"{self.path}: bad manifest: {'; '.join(problems)}")
            # Hashed while streamed before it is kept: a member that lies costs no memory.
            if files[MODEL].file_size != self.manifest["model"]["bytes"]:
                raise PackageError(
                    f"{self.path}: {MODEL} holds {files[MODEL].file_size:,} bytes but the manifest "
                    f"says {self.manifest['model']['bytes']:,}: the package was altered"
                )
            _, digest = _read_member(zf, files[MODEL], sink=DISCARD)
            if digest == self.manifest["model"]["sha256"]:
                self.model_bytes, digest = _read_member(zf, files[MODEL])
            self.reference_bytes = None
            declared = self.manifest.get("files", {}).get(REFERENCE)
            if declared is not None and REFERENCE in files:
                if files[REFERENCE].file_size > limits.reference_bytes:
                    raise PackageError(f"{self.path}: {REFERENCE} is implausibly large")
                self.reference_bytes, ref_digest = _read_member(zf, files[REFERENCE])
                if ref_digest != declared["sha256"]:
                    digest = None  # the package was altered: the same refusal as for the model
        if digest != self.manifest["model"]["sha256"]:
            raise PackageError(
                f"{self.path}: {MODEL} or {REFERENCE} does not match the sha256 in the manifest: "
                "the package was altered or damaged; rebuild it with `edgeprune package`"
            )

    @property
    def name(self) -> str:
        return self.manifest["name"]

    @property
    def labels(self) -> list[str] | None:
        return self.manifest.get("labels")

    @property
    def recipe(self):
        """The preprocessing recipe (AudioRecipe or ImageRecipe), or None."""
        from .preprocess import recipe_from_dict

        d = self.manifest.get("preprocessing")
        return recipe_from_dict(d) if d is not None else None

    def model(self) -> Model:
        return Model(self.model_bytes, name=f"{self.path}:{MODEL}")

    def reference(self) -> reference.Reference | None:
        """The packaged source reference (checked against the packaged model), or None."""
        if self.reference_bytes is None:
            return None
        ref = reference.Reference.from_bytes(self.reference_bytes, f"{self.path}:{REFERENCE}")
        ref.check(self.model())
        return ref


def is_package(path: str | os.PathLike) -> bool:
    """A .edgepkg by name, or any zip file (a .tflite never starts with a zip signature)."""
    p = Path(path)
    if p.suffix == SUFFIX:
        return True
    try:
        with open(p, "rb", opener=open_regular) as f:
            return f.read(4) == b"PK\x03\x04"
    except OSError:
        return False


def open_model(path: str | os.PathLike) -> tuple[Model, Package | None]:
    """MODEL as commands take it: a .tflite file, or a package (then also the package)."""
    if is_package(path):
        package = Package(path)
        return package.model(), package
    return Model.load(path), None


def load_model(path: str | os.PathLike) -> Model:
    """The model of a .tflite file or of a package."""
    return open_model(path)[0]


def verify(path: str | os.PathLike) -> dict[str, Any]:
    """Every check a package must pass: safe structure, manifest, sha256 of every file, a model
    that parses and matches its description, a recipe and labels that fit it."""
    checks: list[str] = []
    try:
        package = Package(path)
        checks.append(f"structure safe; {MODEL} sha256 matches the manifest")
        model = package.model()
        checks.append(f"{MODEL} parses: {len(model.operators)} operators")
        problems = model_problems(package.manifest, model)
        with _open_zip(path) as zf:
            members = {i.filename: i for i in zf.infolist() if not i.is_dir()}
            declared = package.manifest.get("files", {})
            extra = set(members) - set(declared) - {MANIFEST, MODEL}
            if extra:
                names = ", ".join(map(shown, sorted(extra)))
                problems.append(f"members not in the manifest: {names}")
            for name, entry in declared.items():
                if name not in members:
                    problems.append(f"{shown(name)} is in the manifest but not in the package")
                    continue
                _, digest = _read_member(zf, members[name], sink=DISCARD)
                if digest != entry["sha256"] or members[name].file_size != entry["bytes"]:
                    problems.append(f"{shown(name)} does not match its sha256 in the manifest")
        checks.append(f"{len(declared)} extra file(s) checked")
    except EdgepruneError as e:
        return {"package": str(path), "ok": False, "checks": checks, "problems": [str(e)]}
    return {
        "package": str(path),
        "ok": not problems,
        "name": package.name,
        "version": package.manifest["version"],
        "checks": checks,
        "problems": problems,
    }


def unpack(path: str | os.PathLike, dest: str | os.PathLike) -> list[Path]:
    """Extract a verified package into `dest` (new, or an empty directory); the files written.

    Files are written into a temporary directory beside `dest`, checked against the manifest's
    sha256, and only then renamed to `dest`: a refused package leaves nothing behind.
    """
    report = verify(path)
    if not report["ok"]:
        raise PackageError(f"{path}: {'; '.join(report['problems'])}")
    manifest = Package(path).manifest
    expected = {MODEL: manifest["model"]["sha256"]}
    expected.update({k: v["sha256"] for k, v in manifest.get("files", {}).items()})
    dest = Path(dest)
    if dest.is_symlink() or (dest.exists() and (not dest.is_dir() or any(dest.iterdir()))):
        raise PackageError(f"{dest} exists and is not an empty directory: choose a new one")
    dest.parent.mkdir(parents=True, exist_ok=True)
    written = []
    with atomic_directory(dest) as tmp, _open_zip(path) as zf:
        for info in _check_members(zf, LIMITS, str(path)):
            target = tmp.joinpath(*PurePosixPath(info.filename).parts)
            flags = os.O_WRONLY | os.O_CREAT | os.O_EXCL | getattr(os, "O_NOFOLLOW", 0)
            try:
                target.parent.mkdir(parents=True, exist_ok=True)
                with os.fdopen(os.open(target, flags, 0o644), "wb") as out:
                    _, digest = _read_member(zf, info, sink=out)
            except OSError as e:  # a full disk, a name this file system refuses
                raise PackageError(f"cannot unpack {shown(info.filename)!r}: {e.strerror}") from e
            if info.filename in expected and digest != expected[info.filename]:
                raise PackageError(f"{path}: {info.filename} changed while unpacking")
            written.append(dest / target.relative_to(tmp))
    return written
