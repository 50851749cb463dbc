""".edgepkg packages: build, verify, unpack; every MODEL-taking command takes a package, with raw
.wav/image DATA preprocessed by its recipe (the host training features, bit for bit); hostile
archives refused with nothing written."""

import hashlib
import json
import os
import struct
import wave
import zipfile
from pathlib import Path

import numpy as np
import pytest

from edgeprune.activations import record
from edgeprune.cli import main
from edgeprune.host.packaging import build
from edgeprune.operations import open_model_and_samples
from edgeprune.package import Limits, Package, PackageError, unpack, verify
from edgeprune.preprocess import AudioRecipe, ImageRecipe, image_file_features
from edgeprune.rawdata import RawSamples
from tests.models import import_tensorflow

IMAGE_RECIPE = ImageRecipe(size=(16, 16), mean=(0.5, 0.5, 0.5), std=(0.25, 0.25, 0.25))
LABELS = [f"class {i}" for i in range(10)]


@pytest.fixture
def package(tflite_model, tmp_path):
    """The `mixed` float32 model (16x16x3 in, 10 out) with labels, an image recipe, a file."""
    notes = tmp_path / "notes.txt"
    notes.write_text("trained on nothing in particular\n")
    return build_mixed(tflite_model, tmp_path / "mixed.edgepkg", notes)


def build_mixed(tflite_model, path: Path, notes: Path) -> Path:
    """Package the `mixed` float32 model at `path` with LABELS, IMAGE_RECIPE and `notes`."""
    build(
        tflite_model("float32", "mixed"),
        path,
        name="mixed",
        version="1.2.0",
        labels=LABELS,
        recipe=IMAGE_RECIPE.to_dict(),
        files={"docs/notes.txt": notes},
    )
    return path


def images(directory: Path, n: int = 5) -> Path:
    from PIL import Image

    directory.mkdir(exist_ok=True)
    rng = np.random.default_rng(3)
    for i in range(n):
        pixels = rng.integers(0, 256, (20 + i, 24, 3), dtype=np.uint8)
        Image.fromarray(pixels).save(directory / f"img{i}.png")
    return directory


# ----- build, verify, unpack ----------------------------------------------------------------------


def test_build_verify_unpack(package, tflite_model, tmp_path):
    model_bytes = tflite_model("float32", "mixed").read_bytes()
    pkg = Package(package)
    assert pkg.model_bytes == model_bytes and pkg.labels == LABELS and pkg.recipe == IMAGE_RECIPE
    manifest = pkg.manifest
    assert manifest["model"]["sha256"] == hashlib.sha256(model_bytes).hexdigest()
    assert manifest["inputs"][0]["shape"] == [1, 16, 16, 3]
    assert manifest["outputs"][0]["shape"] == [1, 10]
    report = verify(package)
    assert report["ok"] and not report["problems"] and report["version"] == "1.2.0"
    written = unpack(package, tmp_path / "out")
    names = sorted(str(p.relative_to(tmp_path / "out")) for p in written)
    assert names == ["docs/notes.txt", "manifest.json", "model.tflite"]
    assert (tmp_path / "out/model.tflite").read_bytes() == model_bytes
    again = build_mixed(tflite_model, tmp_path / "again.edgepkg", tmp_path / "notes.txt")
    assert again.read_bytes() == package.read_bytes()  # deterministic


def test_build_refuses_inconsistent_packages(tflite_model, tmp_path):
    model = tflite_model("float32", "mixed")
    with pytest.raises(PackageError, match="3 labels for a model with 10 outputs"):
        build(model, tmp_path / "a.edgepkg", "m", "1", labels=["a", "b", "c"])
    wrong = ImageRecipe(size=(32, 32)).to_dict()
    with pytest.raises(PackageError, match=r"shape \[32, 32, 3\] but the model takes"):
        build(model, tmp_path / "b.edgepkg", "m", "1", recipe=wrong)
    assert not list(tmp_path.glob("*.edgepkg"))


def test_cli_package_verify_unpack(tflite_model, tmp_path, capsys):
    labels = tmp_path / "labels.txt"
    labels.write_text("\n".join(LABELS) + "\n")
    recipe = tmp_path / "recipe.json"
    recipe.write_text(json.dumps(IMAGE_RECIPE.to_dict()))
    pkg = tmp_path / "m.edgepkg"
    argv = ["package", str(tflite_model("int8", "mixed")), "-o", str(pkg), "--name", "m"]
    argv += ["--version", "2", "--labels", str(labels), "--recipe", str(recipe), "--json"]
    assert main(argv) == 0
    assert json.loads(capsys.readouterr().out)["manifest"]["labels"] == LABELS
    assert main(["verify", str(pkg)]) == 0
    assert "ok:" in capsys.readouterr().out
    assert main(["unpack", str(pkg), "-o", str(tmp_path / "x")]) == 0
    assert main(["unpack", str(pkg), "-o", str(tmp_path / "x")]) == 2  # not empty any more
    assert "not an empty directory" in capsys.readouterr().err


# ----- every MODEL-taking command takes a package -------------------------------------------------


@pytest.mark.host("PIL")
def test_commands_take_a_package_and_raw_images(package, tmp_path, capsys):
    folder = images(tmp_path / "pictures")
    model, samples, _ = open_model_and_samples(str(package), str(folder))
    assert isinstance(samples, RawSamples) and len(samples) == 5
    expected = [image_file_features(p, IMAGE_RECIPE) for p in sorted(folder.iterdir())]
    got = list(samples)
    assert all(np.array_equal(a, b) for a, b in zip(got, expected))
    # The map recorded from the package's raw images is the map of the features made by hand.
    by_hand = record(model, expected)
    assert main(["record", str(package), str(folder), "-o", str(tmp_path / "m.npz"), "-q"]) == 0
    assert "recorded 5 samples" in capsys.readouterr().out
    with np.load(tmp_path / "m.npz") as saved:
        for i in range(len(by_hand.layers)):
            assert np.allclose(saved[f"s_in_{i}"], by_hand.s_in(i))
    for argv in (
        ["inspect", str(package), "--json"],
        ["profile", str(package), "--json"],
        ["bench", str(package), "--runs", "3", "-q", "--json"],
        ["prune", str(package), "--sparsity", "0.5", "--score", "magnitude", "-o", "p.tflite"],
    ):
        os.chdir(tmp_path)
        assert main(argv) == 0, argv
        capsys.readouterr()
    # .npy DATA still works with a package.
    np.save(tmp_path / "x.npy", np.stack(expected))
    _, arrays, _ = open_model_and_samples(str(package), str(tmp_path / "x.npy"))
    assert len(arrays) == 5


def write_wav(path: Path, samples: np.ndarray, rate: int = 8000) -> None:
    with wave.open(str(path), "wb") as w:
        w.setnchannels(1)
        w.setsampwidth(2)
        w.setframerate(rate)
        w.writeframes(np.asarray(samples, "<i2").tobytes())


def fsdd_recordings(directory: Path) -> list[Path]:
    """Ten FSDD recordings of one speaker when the data set is here, else synthetic digits."""
    from benchmarks import fsdd

    directory.mkdir()
    try:
        source = fsdd.recordings_dir()
        picked = sorted(source.glob("*_theo_*.wav"))[:10]
    except SystemExit:
        picked = []
    if picked:
        for p in picked:
            (directory / p.name).write_bytes(p.read_bytes())
    else:
        rng = np.random.default_rng(0)
        for d in range(10):
            t = np.arange(4000 + 300 * d) / 8000
            tone = 8000 * np.sin(2 * np.pi * (300 + 80 * d) * t) + rng.normal(0, 300, t.size)
            write_wav(directory / f"{d}_synthetic_{d}.wav", tone)
    return sorted(directory.iterdir())


@pytest.mark.tensorflow
def test_device_features_equal_host_training_features(tmp_path, monkeypatch):
    """benchmarks/fsdd.py trains on `load_fsdd` features; a package carrying its recipe makes
    the same features from the raw .wav files on the device: equal, not close."""
    from benchmarks import fsdd

    files = fsdd_recordings(tmp_path / "recordings")
    monkeypatch.setattr(fsdd, "CACHE", tmp_path / "cache")
    X, _, _, _ = fsdd.load_fsdd(tmp_path, fsdd.RECIPE)
    host = dict(zip([p.name for p in fsdd.list_recordings(tmp_path)], X))

    tf = import_tensorflow()
    frames, bins, _ = fsdd.RECIPE.shape
    kernel = tf.constant(np.ones((3, 3, 1, 2)) * 0.1, tf.float32)
    weights = tf.constant(np.ones((2, 10)), tf.float32)

    def net(x):
        h = tf.reduce_mean(tf.nn.relu(tf.nn.conv2d(x, kernel, 1, "SAME")), axis=(1, 2))
        return h @ weights

    fn = tf.function(net, input_signature=[tf.TensorSpec((1, frames, bins, 1), tf.float32)])
    converter = tf.lite.TFLiteConverter.from_concrete_functions([fn.get_concrete_function()])
    model_path = tmp_path / "digits.tflite"
    model_path.write_bytes(converter.convert())
    pkg = tmp_path / "digits.edgepkg"
    build(model_path, pkg, "digits", "1", recipe=fsdd.RECIPE.to_dict())

    model, samples, _ = open_model_and_samples(str(pkg), str(tmp_path / "recordings"))
    assert isinstance(samples.recipe, AudioRecipe) and samples.recipe == fsdd.RECIPE
    device = dict(zip([p.name for p in samples.files], samples))
    assert sorted(device) == sorted(p.name for p in files) == sorted(host)
    for name in host:
        assert device[name].dtype == host[name].dtype == np.float32
        assert np.array_equal(device[name], host[name]), name


# ----- hostile archives ---------------------------------------------------------------------------


def zip_with(path: Path, members, manifest_ok: bool = True, **changes) -> Path:
    """A real package (the `mixed` model, its true manifest) plus `members` ((ZipInfo|name,
    data)), each declared in the manifest with its true sha256, so only its hostility fails."""
    from edgeprune.model import Model
    from edgeprune.package import tensor_spec
    from tests.models import build as build_model

    model = build_model("float32", "mixed")
    m = Model(model)
    files = {}
    for info, data in members:
        name = info.filename if isinstance(info, zipfile.ZipInfo) else info
        data = data.encode() if isinstance(data, str) else data
        files[name] = {"sha256": hashlib.sha256(data).hexdigest(), "bytes": len(data)}
    manifest = {
        "format": "edgepkg",
        "format_version": 1,
        "name": "evil",
        "version": "1",
        "model": {
            "path": "model.tflite",
            "sha256": hashlib.sha256(model).hexdigest(),
            "bytes": len(model),
        },
        "inputs": [tensor_spec(m, i) for i in m.main.inputs],
        "outputs": [tensor_spec(m, i) for i in m.main.outputs],
        "labels": None,
        "preprocessing": None,
        "files": {k: v for k, v in files.items() if k not in ("model.tflite", "manifest.json")},
        **changes,
    }
    with zipfile.ZipFile(path, "w", zipfile.ZIP_DEFLATED) as zf:
        zf.writestr("manifest.json", json.dumps(manifest) if manifest_ok else "{not json")
        zf.writestr("model.tflite", model)
        for info, data in members:
            zf.writestr(info, data)
    return path


def symlink(name: str, target: str) -> zipfile.ZipInfo:
    info = zipfile.ZipInfo(name)
    info.external_attr = 0o120777 << 16
    return info, target


def patch_central(path: Path, name: bytes, **fields) -> None:
    """Rewrite fields of `name`'s central directory record: size, offset (little-endian)."""
    data = bytearray(path.read_bytes())
    at = data.rfind(b"PK\x01\x02", 0, data.rfind(name))
    if "size" in fields:
        struct.pack_into("<I", data, at + 24, fields["size"])
    if "offset" in fields:
        struct.pack_into("<I", data, at + 42, fields["offset"])
    path.write_bytes(bytes(data))


def hostile(tmp_path: Path):
    """(description, archive path, expected message) for every kind of hostile package."""
    d = tmp_path / "hostile"
    d.mkdir()
    cases = [
        ("traversal", zip_with(d / "a.edgepkg", [("../evil.txt", b"x")]), "unsafe member name"),
        ("deep traversal", zip_with(d / "b.edgepkg", [("ok/../../evil", b"x")]), "'..'"),
        ("absolute", zip_with(d / "c.edgepkg", [("/tmp/evil.txt", b"x")]), "absolute"),
        ("backslash", zip_with(d / "d.edgepkg", [("..\\evil.txt", b"x")]), "backslash"),
        ("drive", zip_with(d / "e.edgepkg", [("C:evil.txt", b"x")]), "absolute"),
        ("symlink", zip_with(d / "f.edgepkg", [symlink("link", "/etc/passwd")]), "symlink"),
        ("duplicate", zip_with(d / "g.edgepkg", [("model.tflite", b"again")]), "twice"),
        (
            "bomb",
            zip_with(d / "h.edgepkg", [("zeros.bin", bytes(30 * 2**20))]),
            "compression bomb",
        ),
        (
            "many members",
            zip_with(d / "i.edgepkg", [(f"f{i}", b"x") for i in range(300)]),
            "at most 256",
        ),
        ("bad manifest", zip_with(d / "j.edgepkg", [], manifest_ok=False), "not valid JSON"),
    ]
    big = zip_with(d / "k.edgepkg", [("big.bin", b"y" * 5000)])
    patch_central(big, b"big.bin", size=0xFFFFFFF0)  # claims 4 GiB
    cases.append(("absurd size", big, "over the"))
    liar = zip_with(d / "l.edgepkg", [("small.bin", b"z" * 100_000)])
    patch_central(liar, b"small.bin", size=1000)  # inflates to far more than it declares
    cases.append(("lying size", liar, "small.bin"))
    overlap = zip_with(d / "m.edgepkg", [("one.bin", b"1" * 1000), ("two.bin", b"2" * 1000)])
    with zipfile.ZipFile(overlap) as zf:
        first = zf.getinfo("one.bin").header_offset
    patch_central(overlap, b"two.bin", offset=first)
    cases.append(("overlap", overlap, "overlapping"))
    encrypted = zip_with(d / "n.edgepkg", [("secret.bin", b"s")])
    data = bytearray(encrypted.read_bytes())
    at = data.rfind(b"PK\x01\x02", 0, data.rfind(b"secret.bin"))
    data[at + 8] |= 0x1
    encrypted.write_bytes(bytes(data))
    cases.append(("encrypted", encrypted, "encrypted"))
    return cases


@pytest.mark.filterwarnings("ignore:Duplicate name")
def test_hostile_archives_are_refused_and_nothing_is_written(tmp_path):
    outside = tmp_path / "evil.txt"
    for what, path, message in hostile(tmp_path):
        dest = tmp_path / "dest" / what.replace(" ", "_")
        with pytest.raises(PackageError, match=message):
            unpack(path, dest)
        assert not dest.exists(), what
        assert not outside.exists() and not Path("/tmp/evil.txt").exists(), what
        assert not list((tmp_path / "dest").glob(".*")), what  # no temporary left behind
        report = verify(path)
        assert not report["ok"], what


def test_tampered_model_and_files(package, tmp_path, capsys):
    with zipfile.ZipFile(package) as zf:
        members = {i.filename: zf.read(i) for i in zf.infolist()}
    model = bytearray(members["model.tflite"])
    model[-1] ^= 0xFF
    for name, changed in (("model.tflite", bytes(model)), ("docs/notes.txt", b"edited\n")):
        tampered = tmp_path / f"tampered-{name.replace('/', '_')}.edgepkg"
        with zipfile.ZipFile(tampered, "w") as zf:
            for member, data in members.items():
                zf.writestr(member, changed if member == name else data)
        assert not verify(tampered)["ok"]
        assert main(["verify", str(tampered)]) == 2
        assert "sha256" in capsys.readouterr().err
        with pytest.raises(PackageError, match="sha256"):
            unpack(tampered, tmp_path / "never")
        assert not (tmp_path / "never").exists()
    assert main(["profile", str(tmp_path / "tampered-model.tflite.edgepkg")]) == 2


def test_limits_and_destinations(package, tmp_path):
    with pytest.raises(PackageError, match="over the 1,000-byte limit"):
        Package(package, Limits(member_bytes=1000))
    (tmp_path / "elsewhere").mkdir()
    (tmp_path / "link").symlink_to(tmp_path / "elsewhere")
    with pytest.raises(PackageError, match="not an empty directory"):
        unpack(package, tmp_path / "link")
    assert not list((tmp_path / "elsewhere").iterdir())
    with pytest.raises(PackageError, match="upgrade edgeprune"):
        Package(zip_with(tmp_path / "newer.edgepkg", [], format_version=2))
