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


def shifted(model: Model, ref: Reference, samples: np.ndarray):
    """`model` after the prior stage on `samples` (the bias moved by T·log(π_target/π_source)),
    and the stage's shift."""
    from edgeprune import prior
    from edgeprune.stages import collect

    evidence = collect(model, samples, reference=ref)
    c = evidence.classifier
    shift = prior.estimate(evidence.fit_logits, ref, c.weight, c.bias)
    return c.rewrite(model, c.weight, c.bias + shift.logit_offset), shift


def test_a_rebound_reference_keeps_the_prior_the_model_was_given(validation, tmp_path):
    """A prior stage moves the model's bias to a user's prior; the reference rebound with that
    prior gives a second prior stage the model's real starting point: EM on a user of the same
    prior then finds no further move (without it, EM counts the first shift twice), and the
    prior survives the reference's file and a later rebind. (A prior stage alone leaves the
    temperature as it was.)"""
    from edgeprune import prior
    from edgeprune.stages import collect

    model, xs, labels = validation
    ref = build(model, iter(xs), labels)
    predicted = probabilities(model, xs).argmax(1)
    user = xs[np.isin(predicted, predicted[:3])]  # a few classes only: a strong label shift
    moved, shift = shifted(model, ref, user)
    assert shift.total_variation > 0.3

    def again(reference: Reference) -> np.ndarray:
        evidence = collect(moved, user, reference=reference)
        c = evidence.classifier
        return prior.estimate(evidence.fit_logits, reference, c.weight, c.bias).target

    bound = ref.rebind(moved, shift.model_prior)
    assert bound.temperature == pytest.approx(ref.temperature, rel=1e-6)
    np.testing.assert_allclose(bound.prior, shift.model_prior, atol=1e-12)
    np.testing.assert_allclose(again(bound), shift.target, atol=0.02)  # EM's own fixed point
    assert np.abs(again(ref.rebind(moved)) - shift.target).sum() > 0.05  # counted twice
    bound.save(tmp_path / "r.npz")
    read = Reference.load(tmp_path / "r.npz")
    np.testing.assert_allclose(read.prior, bound.prior, rtol=1e-12)
    assert read.temperature == bound.temperature
    np.testing.assert_allclose(read.rebind(moved).prior, bound.prior)  # kept by a later rebind
    with pytest.raises(EdgepruneError, match="positive numbers"):
        ref.rebind(moved, [1.0] * (ref.classes - 1))
