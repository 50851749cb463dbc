"""The record of vetted models (issue 13): the interpreter's child-process probe runs on models
that are not edgeprune's own, once; models it passed and edgeprune's rewrites of them skip it.
The record lives in a folder of each test, never in the user's cache."""

import hashlib
import platform

import numpy as np
import pytest

from edgeprune import runtime, vetted
from edgeprune.model import Model
from edgeprune.runtime import Runner
from tests import hostile
from tests.cli_run import run
from tests.models import INPUT_SHAPES, build, random_inputs


def sha(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


@pytest.fixture
def record(tmp_path, monkeypatch):
    """A fresh, empty record for one test (and no model probed in this process yet); a list
    that counts the probe's child processes."""
    monkeypatch.setenv("EDGEPRUNE_CACHE_DIR", str(tmp_path / "cache"))
    monkeypatch.delenv("EDGEPRUNE_PROBE", raising=False)
    vetted.forget_memo()
    monkeypatch.setattr(runtime, "_probed", set())
    children = []
    real = runtime.subprocess.run

    def counted(argv, *args, **kwargs):
        children.append(argv)
        return real(argv, *args, **kwargs)

    monkeypatch.setattr(runtime.subprocess, "run", counted)
    yield tmp_path / "cache" / vetted.FILE, children
    vetted.forget_memo()


def test_a_model_is_probed_once_and_then_remembered_across_processes(record):
    path, children = record
    model = Model(build("int8"))
    Runner(model)
    assert len(children) == 1 and path.read_text() == sha(model.to_bytes()) + "\n"
    runtime._probed.clear()  # as a new process would start
    vetted.forget_memo()
    Runner(Model(build("int8")))
    assert len(children) == 1


def test_edgeprunes_rewrites_of_a_vetted_model_skip_the_probe_and_its_writes_are_recorded(
    record, tmp_path
):
    path, children = record
    model = Model(build("int8"))
    Runner(model)
    rewritten = model.copy()
    layer = rewritten.tensor(rewritten.main.operators[0].inputs[1])
    rewritten.tensor_data(layer.index)[...] = 0
    Runner(rewritten)  # derived from a vetted model: no child
    assert len(children) == 1
    rewritten.save(tmp_path / "r.tflite")
    assert sha((tmp_path / "r.tflite").read_bytes()) in path.read_text().split()


def test_a_hostile_model_is_never_recorded_nor_anything_written_from_it(record, tmp_path, capsys):
    path, _ = record
    crash = tmp_path / "crash.tflite"
    crash.write_bytes(hostile.optional_weight())
    data = tmp_path / "x.npy"
    np.save(data, random_inputs(2, INPUT_SHAPES["mixed"][1:], seed=1))
    code, _, err = run(capsys, "record", crash, data, "-o", tmp_path / "m.npz")
    assert code == 2 and hostile.OPTIONAL_WEIGHT_FAILS in err
    # prune never runs the interpreter: its output is not vetted, and is probed when run
    run(capsys, "prune", crash, "--sparsity", "0.5", "--score", "magnitude", "-o", tmp_path / "p")
    assert not path.exists() or not path.read_text().strip()
    for again in [crash, tmp_path / "p"] if (tmp_path / "p").exists() else [crash]:
        code, _, err = run(capsys, "record", again, data, "-o", tmp_path / "m.npz")
        assert code == 2 and hostile.OPTIONAL_WEIGHT_FAILS in err


def test_with_the_probe_off_nothing_is_vetted(record, monkeypatch):
    path, children = record
    monkeypatch.setenv("EDGEPRUNE_PROBE", "0")
    model = Model(build("int8"))
    Runner(model)
    assert not model.vetted and not children and not path.exists()


def test_a_corrupt_or_oversized_record_is_ignored_and_the_record_stays_bounded(record, monkeypatch):
    path, children = record
    path.parent.mkdir(parents=True)
    forged = sha(build("int8"))
    # Garbage, a digest glued to other bytes, a line too long: none of it counts.
    path.write_bytes(b"\x00\xff" * 1000 + b"\n" + forged.encode() + b"x\n" + b"a" * 10**6)
    Runner(Model(build("int8")))
    assert len(children) == 1
    assert path.read_text() == forged + "\n"
    monkeypatch.setattr(vetted, "LIMIT", 5)
    for i in range(12):
        vetted.remember(sha(bytes([i])))
    lines = path.read_text().split()
    assert lines == [sha(bytes([i])) for i in range(7, 12)]


def test_a_rewrite_the_interpreter_refuses_is_named_as_edgeprunes_not_the_users(record):
    from edgeprune.classifier import Classifier
    from edgeprune.errors import EdgepruneError

    model = Model(build("int8"), name="user.tflite")
    Runner(model)
    c = Classifier.of(model)
    # Logits scaled by 1e8, as silent recordings once made the prototype layer: unpreparable.
    broken = c.rewrite(model, c.weight * 1e8, c.bias * 1e8)
    if platform.machine() != "x86_64":
        pytest.skip("LiteRT's aarch64 kernels prepare this rewrite; its x86-64 XNNPACK refuses it")
    with pytest.raises(EdgepruneError, match="cannot load edgeprune's rewrite of user.tflite"):
        Runner(broken)
