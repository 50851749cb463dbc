"""personalize: one pass split into fit and check parts, stages in one order, each kept only if the
check says so, a sweep cut from one map, rules that choose as documented, a report."""

import json
from pathlib import Path

import numpy as np
import pytest

from edgeprune import prune
from edgeprune.activations import record
from edgeprune.cli import main
from edgeprune.errors import EdgepruneError
from edgeprune.estimate import wilson_lower
from edgeprune.model import Model
from edgeprune.personalize import personalize, probabilities, write_report
from edgeprune.reference import build as build_reference
from edgeprune.stages import Reservoir
from tests.models import INPUT_SHAPES, build, random_inputs

SAMPLE = INPUT_SHAPES["mixed"][1:]


def one_pass(xs):
    """The samples as a generator: a second pass over it would see nothing."""
    yield from xs


def noisy_reference(model, n=300, noise=0.25, seed=24):
    """A reference from validation samples labelled as the model predicts, a share of them
    relabelled at random (so that the model is `1 − noise`-ish accurate on it)."""
    xs = random_inputs(n, SAMPLE, seed=seed)
    labels = probabilities(model, xs).argmax(1)
    rng = np.random.default_rng(seed)
    flip = rng.random(n) < noise
    labels[flip] = rng.integers(0, 10, int(flip.sum()))
    return build_reference(model, iter(xs), labels)


@pytest.fixture(scope="module")
def setting():
    model = Model(build("int8"))
    xs = random_inputs(40, SAMPLE, seed=21)
    rng = np.random.default_rng(0)
    labelled = (random_inputs(12, SAMPLE, seed=22), rng.integers(0, 10, 12))
    return model, xs, labelled


@pytest.fixture(scope="module")
def reference(setting):
    return noisy_reference(setting[0])


def test_candidates_are_the_masks_of_one_map(setting):
    model, xs, labelled = setting
    chosen, report = personalize(
        model,
        one_pass(xs),
        stages=("prune",),
        rule="labels",
        labelled=labelled,
        sparsities=(0.0, 0.3, 0.6),
    )
    assert report.samples == 40 and report.evaluated_on == 20
    amap = record(model, xs[::2])  # the fit part: every other sample
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
    """Without a reference a candidate is admissible when it changes no check prediction and
    the lower bound of that agreement reaches --agreement; the rules choose among them."""
    model, xs, _ = setting
    sweep = (0.0, 0.01, 0.02, 0.05, 0.2, 0.6)
    _, fid = personalize(model, xs, rule="fidelity", agreement=0.5, sparsities=sweep)
    for c in fid.candidates:
        assert c.admissible == (c.sparsity == 0 or (c.agreement == 1 and c.agreement_lower >= 0.5))
        assert c.agreement_lower < c.agreement or c.agreement == 0
    ok = [c.sparsity for c in fid.candidates if c.admissible]
    assert fid.best.sparsity == max(ok) and len(ok) > 1
    assert any(not c.admissible for c in fid.candidates)
    _, im = personalize(model, xs, rule="infomax", agreement=0.5, sparsities=sweep)
    assert im.best.infomax == max(c.infomax for c in im.candidates if c.admissible)
    chosen, fixed = personalize(model, xs, rule="fixed", fixed=0.02, agreement=0.0)
    assert fixed.best.sparsity == 0.02 and 0.015 < fixed.best.measured_sparsity < 0.04
    with pytest.raises(EdgepruneError, match="labelled"):
        personalize(model, xs, rule="labels")


def test_twenty_samples_are_too_few_to_prune_at_95_percent(setting):
    """10 check samples that all agree bound the agreement at 0.79 (Wilson, 95 %; README says
    so): the point estimate 100 % is not evidence enough."""
    model, xs, _ = setting
    _, report = personalize(model, xs[:20], stages=("prune",), sparsities=(0.0, 0.1))
    assert report.evaluated_on == 10
    assert wilson_lower(10, 10) == pytest.approx(0.79, abs=0.005)
    assert report.candidates[1].agreement_lower <= wilson_lower(10, 10) < 0.95
    assert report.best.sparsity == 0.0 and not report.stages[-1].applied


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


@pytest.mark.host("matplotlib")
def test_report_files_and_cli(setting, tmp_path, capsys):
    model, xs, labelled = setting
    _, report = personalize(model, xs, stages=("prune",), sparsities=(0.0, 0.5), test=labelled)
    written = write_report(report, tmp_path / "r", "out.tflite")
    assert {p.name for p in written} == {"report.json", "report.md"}
    assert json.loads((tmp_path / "r" / "report.json").read_text())["rule"] == "fidelity"

    model_path = tmp_path / "m.tflite"
    model.save(model_path)
    np.save(tmp_path / "x.npy", xs)
    np.savez(tmp_path / "test.npz", x=labelled[0], y=labelled[1])
    argv = ["personalize", model_path, tmp_path / "x.npy", "-o", tmp_path / "p.tflite", "-q"]
    argv += ["--test", tmp_path / "test.npz", "--report", tmp_path / "rep", "--rule", "infomax"]
    assert main([str(a) for a in argv]) == 0
    out = capsys.readouterr().out
    assert "held-out accuracy: source" in out and "sweep.png" in out
    assert (tmp_path / "rep" / "sweep.png").read_bytes()[:4] == b"\x89PNG"
    assert "no source reference" in out and "prototypes: skipped (needs a source reference)" in out
    Model.load(tmp_path / "p.tflite")
    np.savez(tmp_path / "bad.npz", x=labelled[0], y=labelled[1][:3])
    argv = ["personalize", model_path, tmp_path / "x.npy", "-o", tmp_path / "q.tflite"]
    assert main([str(a) for a in argv + ["--test", tmp_path / "bad.npz"]]) == 2
    assert not (tmp_path / "q.tflite").exists()


def test_int8_rewrite_is_checked_against_its_float_computation(setting, reference):
    """The report compares the proposed int8 final layer with its float computation, kept or
    not (here not: the test labels are the source's own predictions, which any change loses,
    and the estimate sees it)."""
    model, xs, _ = setting
    test_x = random_inputs(60, SAMPLE, seed=23)
    test = (test_x, probabilities(model, test_x).argmax(1))
    chosen, report = personalize(
        model, one_pass(xs), stages=("prototypes",), reference=reference, test=test
    )
    final = report.stages[-1]
    assert final.name == "prototypes"
    assert final.proposed_test_accuracy < 1.0 and not final.applied
    assert final.check["delta"] < 0 and final.test_accuracy == 1.0
    assert chosen.to_bytes() == model.to_bytes()  # refused: not a byte changed
    agreement = final.details["argmax_as_float"]
    assert 0.9 <= agreement <= 1.0
    # Accuracies can differ only on the samples where the two argmaxes differ.
    gap = abs(final.proposed_test_accuracy - final.details["float_test_accuracy"])
    assert gap <= 1 - agreement + 1e-9


def test_a_refused_stage_leaves_the_model_byte_identical(setting, reference):
    model, xs, _ = setting
    # A tolerance below −1 no estimate can meet: the check refuses whatever is proposed.
    for stages in (("prototypes",), ("prior", "prototypes")):
        chosen, report = personalize(model, xs, stages=stages, reference=reference, tolerance=-2)
        assert chosen.to_bytes() == model.to_bytes()
        final = report.stages[-1]
        assert not final.applied and final.check is not None and not final.check["kept"]
        assert final.reason == "the estimated accuracy would drop"


def test_a_stage_is_kept_only_when_its_estimate_does_not_drop(setting, reference):
    model, xs, _ = setting
    _, report = personalize(model, xs, reference=reference)
    for stage in report.stages[1:]:
        if stage.check is not None:
            c = stage.check  # both estimators: the bound of one, the direction of the other
            expected = c["delta"] >= 0 and c["lower"] >= -0.01 and c["second_delta"] >= 0
            assert stage.applied == expected, stage
    assert report.stages[0].estimated_accuracy is not None


def test_stages_run_in_one_order_or_are_refused(setting, tmp_path, capsys):
    model, xs, _ = setting
    with pytest.raises(EdgepruneError, match="prior,prune"):
        personalize(model, xs, stages=("prune", "prior"))
    with pytest.raises(EdgepruneError, match="unknown stage"):
        personalize(model, xs, stages=("prior", "magic"))
    with pytest.raises(EdgepruneError, match="needs the prune stage"):
        personalize(model, xs, stages=("prior",), rule="fixed", fixed=0.5)
    model.save(tmp_path / "m.tflite")
    np.save(tmp_path / "x.npy", xs)
    base = ["personalize", str(tmp_path / "m.tflite"), str(tmp_path / "x.npy")]
    base += ["-o", str(tmp_path / "o.tflite")]
    assert main(base + ["--stages", "prune,prototypes"]) == 2
    assert main(base + ["--stages", "prior", "--sparsity", "0.5"]) == 2
    err = capsys.readouterr().err
    assert "give them as prototypes,prune" in err and "add prune to --stages" in err
    assert not (tmp_path / "o.tflite").exists()


def test_with_a_reference_pruning_changes_no_check_prediction(setting, reference):
    """The model before pruning judges a pruned candidate (its calibrated probability of the
    candidate's prediction): a changed prediction always lowers that estimate, so admissible
    sparsities agree on every check sample."""
    model, xs, _ = setting
    sweep = (0.0, 0.05, 0.1, 0.3, 0.6)
    _, report = personalize(
        model, xs, stages=("prune",), reference=reference, agreement=0.0, sparsities=sweep
    )
    for c in report.candidates[1:]:
        assert c.admissible == (c.agreement == 1.0), c
        assert c.estimated_accuracy <= report.candidates[0].estimated_accuracy + 0.01
    assert any(c.agreement < 1.0 for c in report.candidates)


@pytest.mark.parametrize("kind", ["int8", "float32"])
def test_silent_recordings_personalize_and_keep_the_model(kind):
    """All-zero samples (silence) make every feature the same: the prototype layer's logits are
    rounding noise, once scaled by ~1e8 to fill the int8 output, a layer XNNPACK refused to
    prepare ("the interpreter cannot load <source>", blaming the user's model). Now the stage is
    judged like any other, and the model is never made worse."""
    model = Model(build(kind))
    silence = np.zeros((40, *SAMPLE), np.float32)
    chosen, report = personalize(model, one_pass(silence), reference=noisy_reference(model))
    assert [s.name for s in report.stages] == ["source", "prior", "prototypes", "prune"]
    kept = [s.name for s in report.stages[1:] if s.applied]
    assert kept or chosen.to_bytes() == model.to_bytes()


def test_silent_recordings_through_the_command_line_and_a_board(board, tmp_path, capsys):
    from tests.cli_run import run

    device, root = board
    demo = Path(__file__).resolve().parents[1] / "examples" / "fsdd_demo"
    shape = np.load(demo / "unlabeled.npy", mmap_mode="r").shape[1:]
    silence = tmp_path / "silence.npy"
    np.save(silence, np.zeros((16, *shape), np.float32))
    argv = ["personalize", demo / "model.tflite", silence, "--reference", demo / "reference.npz"]
    code, out, err = run(capsys, *argv, "-o", tmp_path / "p.tflite", "-q")
    assert code == 0 and "cannot load" not in err, err
    Model.load(tmp_path / "p.tflite")
    for name in ("model.tflite", "reference.npz"):
        device.put(demo / name, name)
    device.put(silence, "silence.npy")
    params = {"model": "model.tflite", "data": "silence.npy", "reference": "reference.npz"}
    reply = device.run("personalize", {**params, "output": "p.tflite"}, lambda event: None)
    assert reply["outputs"] == ["p.tflite"]
    assert (root / "p.tflite").read_bytes() == (tmp_path / "p.tflite").read_bytes()
