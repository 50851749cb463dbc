"""personalize: one pass, a sweep cut from one map, rules that choose as documented, a report."""

import json

import numpy as np
import pytest

from edgeprune import prune
from edgeprune.activations import record
from edgeprune.classifier import Classifier
from edgeprune.cli import main
from edgeprune.errors import EdgepruneError
from edgeprune.model import Model
from edgeprune.personalize import Reservoir, personalize, probabilities, write_report
from edgeprune.runtime import Runner
from tests.models import INPUT_SHAPES, build, random_inputs

SAMPLE = INPUT_SHAPES["mixed"][1:]


def one_pass(xs):
    """The samples as a generator: a second pass over it would see nothing."""
    yield from xs


@pytest.fixture(scope="module")
def setting():
    model = Model(build("int8"))
    xs = random_inputs(40, SAMPLE, seed=21)
    rng = np.random.default_rng(0)
    labelled = (random_inputs(12, SAMPLE, seed=22), rng.integers(0, 10, 12))
    return model, xs, labelled


def test_candidates_are_the_masks_of_one_map(setting):
    model, xs, labelled = setting
    chosen, report = personalize(
        model, one_pass(xs), rule="labels", labelled=labelled, sparsities=(0.0, 0.3, 0.6)
    )
    assert report.samples == 40 and report.evaluated_on == 40
    amap = record(model, xs)
    scores = prune.compute_scores(model, amap.layers, amap, keep_classifier=True)
    for c in report.candidates:
        expected = prune.apply(model, scores.masks(c.sparsity)) if c.sparsity else model
        zeros, total = prune.measured_sparsity(expected, amap.layers)
        assert c.measured_sparsity == pytest.approx(zeros / total)
        accuracy = np.mean(probabilities(expected, labelled[0]).argmax(1) == labelled[1])
        assert c.labelled_accuracy == pytest.approx(accuracy)
    best = max(report.candidates, key=lambda c: c.labelled_accuracy).labelled_accuracy
    assert report.best.labelled_accuracy == best
    source_agreement = report.candidates[0].agreement
    assert source_agreement == 1.0


def test_rules_choose_as_documented(setting):
    model, xs, _ = setting
    sweep = (0.0, 0.2, 0.4, 0.6, 0.8)
    _, fid = personalize(model, xs, rule="fidelity", agreement=0.9, sparsities=sweep)
    ok = [c.sparsity for c in fid.candidates if c.agreement >= 0.9]
    assert fid.best.sparsity == max(ok)
    _, im = personalize(model, xs, rule="infomax", sparsities=sweep)
    assert im.best.infomax == max(c.infomax for c in im.candidates)
    chosen, fixed = personalize(model, xs, rule="fixed", fixed=0.5)
    assert fixed.best.sparsity == 0.5 and 0.45 < fixed.best.measured_sparsity < 0.6
    with pytest.raises(EdgepruneError, match="labelled"):
        personalize(model, xs, rule="labels")


def test_reservoir_is_bounded_and_uniform():
    counts = np.zeros(100)
    for seed in range(300):
        r = Reservoir(10, seed)
        for i in range(100):
            r.add(i)
        assert len(r.items) == 10 and r.seen == 100
        counts[r.items] += 1
    # Every item is kept with probability 1/10: 30 of 300 runs, give or take sampling noise.
    assert counts.min() > 10 and counts.max() < 55


def test_report_files_and_cli(setting, tmp_path, capsys):
    model, xs, labelled = setting
    _, report = personalize(model, xs, sparsities=(0.0, 0.5), test=labelled)
    written = write_report(report, tmp_path / "r", "out.tflite")
    assert {p.name for p in written} == {"report.json", "report.md", "sweep.png"}
    assert json.loads((tmp_path / "r" / "report.json").read_text())["rule"] == "fidelity"
    assert (tmp_path / "r" / "sweep.png").read_bytes()[:4] == b"\x89PNG"

    model_path = tmp_path / "m.tflite"
    model.save(model_path)
    np.save(tmp_path / "x.npy", xs)
    np.savez(tmp_path / "test.npz", x=labelled[0], y=labelled[1])
    argv = ["personalize", model_path, tmp_path / "x.npy", "-o", tmp_path / "p.tflite", "-q"]
    argv += ["--test", tmp_path / "test.npz", "--report", tmp_path / "rep", "--rule", "infomax"]
    assert main([str(a) for a in argv]) == 0
    out = capsys.readouterr().out
    assert "held-out accuracy: source" in out and "sweep.png" in out
    Model.load(tmp_path / "p.tflite")
    np.savez(tmp_path / "bad.npz", x=labelled[0], y=labelled[1][:3])
    argv = ["personalize", model_path, tmp_path / "x.npy", "-o", tmp_path / "q.tflite"]
    assert main([str(a) for a in argv + ["--test", tmp_path / "bad.npz"]]) == 2
    assert not (tmp_path / "q.tflite").exists()


def test_int8_rewrite_is_checked_against_its_float_computation(setting):
    model, xs, _ = setting
    test_x = random_inputs(60, SAMPLE, seed=23)
    test = (test_x, probabilities(model, test_x).argmax(1))
    chosen, report = personalize(model, one_pass(xs), test=test)
    final = report.stages[-1]
    assert final.name == "prototypes"
    agreement = final.details["argmax_as_float"]
    assert 0.9 <= agreement <= 1.0
    # Accuracies can differ only on the samples where the two argmaxes differ.
    assert abs(final.test_accuracy - final.details["float_test_accuracy"]) <= 1 - agreement + 1e-9
    # The float computation is the stored layer's: its dequantized weights give the same argmax
    # except where requantizing moved a near-tie.
    c = Classifier.of(chosen)
    runner = Runner(chosen, [c.layer.input])
    reference = [c.logits(runner.run(x)[c.layer.input]).argmax() for x in test_x]
    assert np.mean(np.array(reference) == test[1]) == pytest.approx(
        final.details["float_test_accuracy"], abs=0.05
    )
