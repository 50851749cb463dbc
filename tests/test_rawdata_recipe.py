"""Raw data everywhere: `edgeprune recipe`, --recipe on a plain .tflite, a dtype/range mismatch
refused with the fix, and `personalize -o X.edgepkg` keeping labels, recipe and reference."""

import json

import numpy as np
import pytest

from edgeprune.classifier import Classifier
from edgeprune.cli import main
from edgeprune.host.packaging import build as build_package
from edgeprune.model import Model
from edgeprune.package import Package, verify
from edgeprune.personalize import probabilities
from edgeprune.preprocess import image_features, image_file_features, load_recipe
from edgeprune.reference import build as build_reference
from edgeprune.reference import model_digest
from edgeprune.runtime import Runner
from tests.cli_run import run
from tests.models import INPUT_SHAPES, build, random_inputs

PIL = pytest.importorskip("PIL.Image")


def one_line_error(code, err, *words):
    assert code == 2 and "Traceback" not in err and len(err.strip().splitlines()) == 1, err
    for w in words:
        assert w in err, err


@pytest.fixture
def images(tmp_path):
    """Twenty 16×16 RGB pictures (the conv_head and mixed models' input size)."""
    folder = tmp_path / "images"
    folder.mkdir()
    rng = np.random.default_rng(0)
    base = rng.integers(0, 256, (16, 16, 3))
    for i in range(20):
        noise = rng.integers(-40, 40, (16, 16, 3))
        picture = np.clip(base + noise, 0, 255).astype(np.uint8)
        PIL.fromarray(picture).save(folder / f"{i:02d}.png")
    return folder


def test_recipe_from_model_gives_the_pixel_bytes(tmp_path, images, capsys):
    model = tmp_path / "m.tflite"
    model.write_bytes(build("int8"))
    recipe = tmp_path / "r.json"
    code, out, _ = run(capsys, "recipe", model, "-o", recipe, "--from-model")
    assert code == 0 and "16x16x3" in out
    r = load_recipe(recipe)
    runner = Runner(Model.load(model))
    picture = images / "03.png"
    fed = runner._feed(image_file_features(picture, r))[0]
    expected = np.asarray(PIL.open(picture).convert("RGB")).astype(np.int16) - 128
    np.testing.assert_array_equal(fed, expected)  # int8 input: the bytes, minus 128
    code, out, _ = run(capsys, "record", model, images, "--recipe", recipe, "-o", tmp_path / "a")
    assert code == 0 and "recorded 20 samples" in out


def test_recipe_refusals_are_one_line(tmp_path, images, capsys):
    float_model, model = tmp_path / "f.tflite", tmp_path / "m.tflite"
    float_model.write_bytes(build("float32"))
    model.write_bytes(build("int8"))
    code, _, err = run(capsys, "recipe", float_model, "-o", tmp_path / "r.json", "--from-model")
    one_line_error(code, err, "not quantized", "--mean")
    code, _, err = run(capsys, "recipe", model, "-o", tmp_path / "r.json", "--kind", "audio")
    one_line_error(code, err, "(frames, bins, 1)", "[16, 16, 3]")
    code, _, err = run(capsys, "record", model, images, "-o", tmp_path / "map")
    one_line_error(code, err, "need a recipe", "--recipe", "edgeprune recipe")
    assert not (tmp_path / "r.json").exists() and not (tmp_path / "map").exists()


def test_help_says_what_data_may_be(capsys):
    for command in ("record", "personalize"):
        with pytest.raises(SystemExit):
            main([command, "--help"])
        out = capsys.readouterr().out
        assert "image files" in out and ".wav" in out and "--recipe" in out


def test_range_and_dtype_mismatches_are_errors_with_the_fix(tmp_path, capsys):
    model = tmp_path / "u8.tflite"
    model.write_bytes(build("uint8"))  # uint8 input: reals in [-4, 4]
    pixels = np.random.default_rng(1).integers(0, 256, (4, 16, 16, 3))
    np.save(tmp_path / "float_pixels.npy", pixels.astype(np.float32))
    code, _, err = run(capsys, "record", model, tmp_path / "float_pixels.npy", "-o", tmp_path / "m")
    one_line_error(code, err, "[0, 255]", "would be clipped", "uint8 array", "--recipe")
    # The raw bytes as a uint8 array go in as they are.
    np.save(tmp_path / "bytes.npy", pixels.astype(np.uint8))
    code, out, _ = run(capsys, "record", model, tmp_path / "bytes.npy", "-o", tmp_path / "m")
    assert code == 0 and "recorded 4 samples" in out
    int8 = tmp_path / "i8.tflite"
    int8.write_bytes(build("int8"))
    code, _, err = run(capsys, "record", int8, tmp_path / "bytes.npy", "-o", tmp_path / "m")
    one_line_error(code, err, "wrap around", "uint8 − 128")
    # Real values of the right scale, with the outliers calibration clips, pass.
    np.save(tmp_path / "real.npy", random_inputs(8, INPUT_SHAPES["mixed"][1:], seed=2))
    code, out, _ = run(capsys, "record", int8, tmp_path / "real.npy", "-o", tmp_path / "m")
    assert code == 0, out


@pytest.fixture
def source_package(tmp_path, images):
    """A conv-head int8 classifier packaged with labels, its own-quantization image recipe and a
    source reference (labels: the model's own predictions on held-out pictures)."""
    model_path = tmp_path / "src.tflite"
    model_path.write_bytes(build("int8", "conv_head"))
    model = Model.load(model_path)
    assert main(["recipe", str(model_path), "-o", str(tmp_path / "r.json"), "--from-model"]) == 0
    recipe = load_recipe(tmp_path / "r.json")
    rng = np.random.default_rng(7)
    pictures = [np.asarray(PIL.open(images / f"{i:02d}.png")).astype(int) for i in range(20)]
    held_out = [
        image_features(
            np.clip(pictures[i % 20] + rng.integers(-60, 60, (16, 16, 3)), 0, 255), recipe
        )
        for i in range(120)
    ]
    reference = build_reference(model, held_out, probabilities(model, held_out).argmax(axis=1))
    path = tmp_path / "src.edgepkg"
    labels = [f"class {i}" for i in range(10)]
    build_package(model_path, path, "birds", "1.0", labels=labels, recipe=recipe.to_dict(),
                  reference=reference.to_bytes())  # fmt: skip
    return path, labels


@pytest.mark.parametrize("stages", ["prior,prototypes", "prior,prototypes,prune"])
def test_personalized_package_keeps_labels_recipe_reference(
    tmp_path, images, source_package, stages, capsys
):
    path, labels = source_package
    out = tmp_path / "mine.edgepkg"
    code, stdout, err = run(
        capsys, "personalize", path, images, "-o", out, "--stages", stages, "--json", "-q"
    )
    assert code == 0, err
    report = json.loads(stdout)["report"]
    assert verify(out)["ok"]
    package, source = Package(out), Package(path)
    assert package.labels == labels and package.recipe == source.recipe
    assert package.manifest["version"] == "1.0+personalized"
    changed = {s["name"] for s in report["stages"] if s["applied"]} - {"source"}
    if changed <= {"prior", "prototypes"}:
        ref = package.reference()  # bound to the personalized model: the check passes
        assert ref is not None and ref.model_sha256 == model_digest(package.model())
        assert ref.confusion.sum() == source.reference().confusion.sum()
    else:
        assert package.reference() is None
        assert any("holds no reference" in n for n in report["notes"])
    # The package personalizes again, as any package does.
    code, _, err = run(capsys, "personalize", out, images, "-o", tmp_path / "again.tflite", "-q")
    assert code == 0, err


def test_plain_tflite_with_recipe_to_a_package_and_package_of_a_package(
    tmp_path, images, source_package, capsys
):
    model = tmp_path / "plain.tflite"
    model.write_bytes(build("int8", "conv_head"))
    recipe = tmp_path / "r.json"
    assert run(capsys, "recipe", model, "-o", recipe, "--from-model")[0] == 0
    out = tmp_path / "plain.edgepkg"
    code, _, err = run(capsys, "personalize", model, images, "--recipe", recipe, "-o", out,
                       "--stages", "prune", "-q")  # fmt: skip
    assert code == 0, err
    package = Package(out)
    assert package.name == "plain" and package.recipe == load_recipe(recipe)
    # `package` takes a package: its labels, recipe and reference are kept.
    path, labels = source_package
    again = tmp_path / "again.edgepkg"
    code, _, err = run(capsys, "package", path, "-o", again, "--name", "birds", "--version", "2")
    assert code == 0, err
    repackaged, source = Package(again), Package(path)
    assert repackaged.labels == labels and repackaged.recipe == source.recipe
    assert repackaged.model_bytes == source.model_bytes
    assert repackaged.reference_bytes == source.reference_bytes


def test_rebind_describes_a_rewritten_final_layer():
    model = Model(build("int8", "conv_head"))
    x = random_inputs(200, INPUT_SHAPES["conv_head"][1:], seed=3)
    ref = build_reference(model, x, probabilities(model, x).argmax(axis=1))
    c = Classifier.of(model)
    rewritten = c.rewrite(model, c.weight[::-1].copy(), c.bias[::-1].copy())  # classes reversed
    bound = ref.rebind(rewritten)
    bound.check(rewritten)  # bound to the new model's bytes
    assert np.array_equal(bound.confusion.sum(axis=1), ref.confusion.sum(axis=1))  # same truth
    predicted = Classifier.of(rewritten).logits(ref.features).argmax(axis=1)
    assert bound.accuracy == pytest.approx(np.mean(predicted == ref.labels), abs=0.05)
    assert bound.accuracy < ref.accuracy


def test_bench_times_the_recipe_front_end(tmp_path, capsys):
    model, recipe = tmp_path / "m.tflite", tmp_path / "r.json"
    model.write_bytes(build("int8"))
    assert run(capsys, "recipe", model, "-o", recipe, "--from-model")[0] == 0
    code, out, err = run(capsys, "bench", model, "--runs", "2", "--recipe", recipe, "--json")
    assert code == 0, err
    front = json.loads(out)["front_end"]
    assert front["input"] == "a 480x640 RGB picture" and 0 < front["min"] <= front["p50"]
    other = tmp_path / "small.json"
    other.write_text(json.dumps({**json.loads(recipe.read_text()), "size": [8, 8]}))
    code, _, err = run(capsys, "bench", model, "--runs", "2", "--recipe", other)
    one_line_error(code, err, "[8, 8, 3]", "[16, 16, 3]")
