"""personalize reports progress over every long phase (recording, each stage, the prune sweep),
decides exactly as without it, and stops at a progress step when cancelled; `--sparsity` without
the prune stage is refused in one line."""

import numpy as np
import pytest

from edgeprune import operations as ops
from edgeprune.cli import main
from edgeprune.operation import Cancelled, Context
from edgeprune.personalize import DEFAULT_SPARSITIES
from tests.models import INPUT_SHAPES, random_inputs


class Recording(Context):
    """A context that keeps every bar's last (n, total), and cancels when told to."""

    def __init__(self, cancel_at: tuple[str, int] | None = None):
        super().__init__(cancelled=lambda: self.stop)
        self.seen: dict[str, tuple[int, int | None]] = {}
        self.cancel_at, self.stop = cancel_at, False

    def show(self, bar) -> None:
        self.seen[bar.desc] = (bar.n, bar.total)
        self.stop = self.stop or (bar.desc, bar.n) == self.cancel_at


@pytest.fixture
def inputs(tmp_path, tflite_model):
    data = tmp_path / "x.npy"
    np.save(data, random_inputs(40, INPUT_SHAPES["mixed"][1:], seed=3))
    return {"model": str(tflite_model("int8")), "data": str(data)}


def test_every_long_phase_has_a_bar_and_the_choice_is_unchanged(inputs, tmp_path):
    context = Recording()
    shown = ops.personalize(context, **inputs, output=str(tmp_path / "a.tflite"))
    silent = ops.personalize(Context(), **inputs, output=str(tmp_path / "b.tflite"))
    assert context.seen["record"] == (40, 40)
    assert context.seen["stages"] == (3, 3)
    sweep = len(DEFAULT_SPARSITIES)
    assert context.seen["prune sweep"] == (sweep, sweep)
    assert shown.report == silent.report
    assert (tmp_path / "a.tflite").read_bytes() == (tmp_path / "b.tflite").read_bytes()


def test_a_cancel_stops_the_sweep_and_writes_nothing(inputs, tmp_path):
    context = Recording(cancel_at=("prune sweep", 2))
    with pytest.raises(Cancelled):
        ops.personalize(context, **inputs, output=str(tmp_path / "c.tflite"))
    assert context.seen["prune sweep"] == (2, len(DEFAULT_SPARSITIES))
    assert not (tmp_path / "c.tflite").exists()


def test_a_sparsity_needs_the_prune_stage(inputs, tmp_path, capsys):
    argv = ["personalize", inputs["model"], inputs["data"], "-o", str(tmp_path / "d.tflite")]
    assert main([*argv, "--sparsity", "0.5", "--stages", "prior", "-q"]) == 2
    err = capsys.readouterr().err
    assert err == "edgeprune: error: a sparsity needs the prune stage: add prune to --stages\n"
