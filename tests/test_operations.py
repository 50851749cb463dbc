"""Operations as the API: called from Python, their parameters checked once, the command line
generated from the same declarations, progress and cancel through the context."""

import argparse

import numpy as np
import pytest

from edgeprune import operation
from edgeprune import operations as ops
from edgeprune.cli import build_parser
from edgeprune.cli.arguments import add_operation
from edgeprune.errors import EdgepruneError
from edgeprune.operation import Cancelled, Context
from tests.models import INPUT_SHAPES, build, random_inputs


@pytest.fixture
def files(tmp_path):
    model = tmp_path / "m.tflite"
    model.write_bytes(build("int8"))
    data = tmp_path / "x.npy"
    np.save(data, random_inputs(9, INPUT_SHAPES["mixed"][1:], seed=2))
    return tmp_path, model, data


class Recording(Context):
    """Keeps every step of every bar; cancels once `stop_after` steps were shown."""

    def __init__(self, stop_after=None):
        self.steps, self.closed = [], []
        super().__init__(cancelled=lambda: stop_after is not None and len(self.steps) > stop_after)

    def show(self, bar):
        self.steps.append((bar.desc, bar.n, bar.total, bar.unit))

    def close(self, bar):
        self.closed.append(bar.desc)


def test_operations_are_functions_with_typed_results(files):
    tmp, model, data = files
    context = Recording()
    recorded = ops.record(context, model=model, data=data, output=tmp / "map.npz")
    assert isinstance(recorded, ops.RecordResult) and recorded.samples == 9
    assert context.steps[-1] == ("record", 9, 9, "sample") and context.closed == ["record"]
    pruned = ops.prune(model=model, map=tmp / "map.npz", sparsity=0.5, output=tmp / "p.tflite")
    assert isinstance(pruned, ops.PruneResult) and 0.45 < pruned.measured_sparsity < 0.55
    assert pruned.to_dict()["zero_weights"] == pruned.zero_weights > 0
    assert ops.PruneResult.from_dict(pruned.to_dict()) == pruned
    info = ops.inspect(model=tmp / "p.tflite")  # the file is real: inspect reads it back
    assert info.totals["sparsity"] == pytest.approx(pruned.measured_sparsity)


@pytest.mark.parametrize(
    "params, message",
    [
        ({"sparsity": 1.5}, "sparsity: a fraction between 0 and 1"),
        ({"sparsity": 0.5, "score": "best"}, "score is one of fine, magnitude, random"),
        ({"sparsity": 0.5, "colour": "red"}, "unknown parameter 'colour'"),
        ({}, "sparsity is required"),
        ({"sparsity": 0.5, "keep_classifier": "yes"}, "keep_classifier is true or false"),
    ],
)
def test_bad_parameters_are_one_line_errors_before_anything_runs(files, params, message):
    tmp, model, _ = files
    with pytest.raises(EdgepruneError) as e:
        ops.prune(model=model, output=tmp / "p.tflite", **params)
    assert message in str(e.value) and "\n" not in str(e.value)
    assert not (tmp / "p.tflite").exists()


def test_cancel_stops_at_a_progress_step_and_writes_nothing(files):
    tmp, model, data = files
    with pytest.raises(Cancelled):
        ops.record(Recording(stop_after=3), model=model, data=data, output=tmp / "map.npz")
    assert sorted(p.name for p in tmp.iterdir()) == ["m.tflite", "x.npy"]


def test_every_parameter_is_an_option_of_its_command(capsys):
    """The command line is generated: each declared parameter appears, with its choices."""
    parser = build_parser()
    for op in operation.registered().values():
        sub = argparse.ArgumentParser()
        add_operation(sub, op)
        dests = {a.dest: a for a in sub._actions}
        for param in op.params:
            assert param.name in dests, (op.name, param.name)
            if param.choices and param.type is str:
                assert tuple(dests[param.name].choices) == param.choices
        with pytest.raises(SystemExit) as e:  # the command exists: its --help exits 0
            parser.parse_args([*op.name.split(" "), "--help"])
        assert e.value.code == 0


def test_file_parameters_are_declared_for_confinement():
    """A board operation's free-text parameters either name a file (and say so: the agent
    confines exactly those) or are known plain values; a new path option without a role fails
    here instead of slipping past the confinement."""
    plain_text = {"input_shape", "energy"}
    for op in operation.registered().values():
        for param in op.params:
            free_text = param.type is str and not param.choices and param.role == "value"
            if op.board and free_text:
                assert param.name in plain_text, (op.name, param.name)
