"""The source reference: built from labelled validation data, saved, carried in a package, read
back unchanged, and refused for any other model or when damaged."""

import io
import zipfile

import numpy as np
import pytest

from edgeprune.cli import main
from edgeprune.errors import EdgepruneError
from edgeprune.model import Model
from edgeprune.package import Package
from edgeprune.personalize import probabilities
from edgeprune.reference import Reference, build
from tests.models import INPUT_SHAPES, random_inputs
from tests.models import build as build_model

SAMPLE = INPUT_SHAPES["mixed"][1:]


@pytest.fixture(scope="module")
def validation():
    model = Model(build_model("float32"))
    xs = random_inputs(120, SAMPLE, seed=31)
    labels = probabilities(model, xs).argmax(1)
    labels[::4] = (labels[::4] + 1) % 10  # a quarter wrong: the source is 75 % accurate
    return model, xs, labels


def same(a: Reference, b: Reference) -> None:
    assert a.model_sha256 == b.model_sha256 and a.temperature == b.temperature
    for key in ("confusion", "feature_means", "features", "labels"):
        np.testing.assert_allclose(getattr(a, key), getattr(b, key), rtol=1e-6)


def test_reference_describes_the_validation_data(validation):
    model, xs, labels = validation
    ref = build(model, iter(xs), labels)
    assert ref.size == 120 and ref.accuracy == pytest.approx(0.75)
    assert ref.confusion.sum(axis=1).tolist() == np.bincount(labels, minlength=10).tolist()
    assert len(ref.features) == 120 and ref.features.shape[1] == ref.feature_means.shape[1]
    assert ref.temperature > 1.0  # 25 % wrong with confident logits: calibration softens them


def test_reference_round_trips_through_a_package(validation, tmp_path, capsys):
    model, xs, labels = validation
    model.save(tmp_path / "m.tflite")
    np.savez(tmp_path / "val.npz", x=xs, y=labels)
    argv = ["package", str(tmp_path / "m.tflite"), "-o", str(tmp_path / "m.edgepkg")]
    argv += ["--name", "m", "--version", "1", "--reference", str(tmp_path / "val.npz")]
    assert main(argv) == 0
    assert "a source reference" in capsys.readouterr().out
    packaged = Package(tmp_path / "m.edgepkg").reference()
    same(packaged, build(model, iter(xs), labels))
    assert main(["verify", str(tmp_path / "m.edgepkg")]) == 0
    # The plain-file route gives the same reference.
    argv = ["reference", str(tmp_path / "m.tflite"), str(tmp_path / "val.npz")]
    assert main(argv + ["-o", str(tmp_path / "ref.npz"), "-q"]) == 0
    same(Reference.load(tmp_path / "ref.npz"), packaged)


def test_reference_is_refused_for_another_model(validation, tmp_path, capsys):
    model, xs, labels = validation
    ref = build(model, iter(xs), labels)
    other = Model(build_model("int8"))
    with pytest.raises(EdgepruneError, match="another model"):
        ref.check(other)
    ref.save(tmp_path / "ref.npz")
    other.save(tmp_path / "other.tflite")
    np.save(tmp_path / "x.npy", xs[:20])
    argv = ["personalize", str(tmp_path / "other.tflite"), str(tmp_path / "x.npy")]
    argv += ["-o", str(tmp_path / "o.tflite"), "--reference", str(tmp_path / "ref.npz"), "-q"]
    assert main(argv) == 2
    assert "built for another model" in capsys.readouterr().err
    assert not (tmp_path / "o.tflite").exists()


def test_damaged_references_and_packages_are_one_line_errors(validation, tmp_path, capsys):
    model, xs, labels = validation
    data = build(model, iter(xs), labels).to_bytes()
    ref = build(model, iter(xs), labels)
    empty = Reference(
        ref.model_sha256, ref.confusion, 1.0, ref.feature_means, ref.features[:0], ref.labels[:0]
    ).to_bytes()
    for bad in (
        data[: len(data) // 2],
        b"not a zip",
        data.replace(b"confusion", b"confusiom"),
        empty,
    ):
        with pytest.raises(EdgepruneError, match="reference"):
            Reference.from_bytes(bad)
    # A packaged reference altered after packaging: the package is refused.
    model.save(tmp_path / "m.tflite")
    np.savez(tmp_path / "val.npz", x=xs, y=labels)
    pkg = tmp_path / "m.edgepkg"
    argv = ["package", str(tmp_path / "m.tflite"), "-o", str(pkg), "--name", "m"]
    assert main(argv + ["--version", "1", "--reference", str(tmp_path / "val.npz")]) == 0
    members = {}
    with zipfile.ZipFile(pkg) as zf:
        for info in zf.infolist():
            members[info.filename] = zf.read(info)
    members["reference.npz"] = build(model, iter(xs[:60]), labels[:60]).to_bytes()
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w") as zf:
        for name, content in members.items():
            zf.writestr(name, content)
    pkg.write_bytes(buffer.getvalue())
    with pytest.raises(EdgepruneError, match="sha256"):
        Package(pkg)
