"""The `edgeprune` command line: inspect, record, prune, --json, and one-line user errors."""

import json
import subprocess
import sys

import numpy as np
import pytest

from edgeprune.model import Model
from tests.cli_run import run
from tests.models import INPUT_SHAPES, build, random_inputs


@pytest.fixture
def files(tmp_path):
    model = tmp_path / "model.tflite"
    model.write_bytes(build("int8"))
    data = tmp_path / "data"
    data.mkdir()
    xs = random_inputs(7, INPUT_SHAPES["mixed"][1:], seed=11)
    np.save(data / "stack.npy", xs[:5])  # a stack of 5 samples
    np.save(data / "one.npy", xs[5])  # one sample without its batch axis
    np.savez(data / "more.npz", a=xs[6][None])  # one sample with its batch axis
    return tmp_path, model, data


def test_inspect_record_prune(files, capsys):
    tmp, model, data = files
    code, out, _ = run(capsys, "inspect", model, "--json")
    info = json.loads(out)
    assert code == 0 and [r["opcode"] for r in info["layers"]][:3] == [
        "CONV_2D",
        "CONV_2D",
        "DEPTHWISE_CONV_2D",
    ]
    assert info["totals"]["params"] == sum(r["params"] for r in info["layers"])
    code, out, _ = run(capsys, "inspect", model)
    assert code == 0 and "per-channel (axis 0)" in out and "total" in out

    map1, map2, pruned_model = tmp / "map.npz", tmp / "map2.npz", tmp / "p.tflite"
    code, out, _ = run(capsys, "record", model, data, "-o", map1, "-q")
    assert code == 0 and "recorded 7 samples" in out
    code, out, _ = run(
        capsys, "record", model, data / "one.npy", "-o", map2, "--resume", map1, "-q"
    )
    assert code == 0 and "recorded 8 samples" in out

    code, out, _ = run(
        capsys, "prune", model, map1, "--sparsity", "0.4", "-o", pruned_model, "--json"
    )
    result = json.loads(out)
    assert code == 0 and abs(result["measured_sparsity"] - 0.4) < 0.02
    pruned = json.loads(run(capsys, "inspect", pruned_model, "--json")[1])
    assert pruned["totals"]["nonzero"] == result["weights"] - result["zero_weights"]


@pytest.mark.parametrize(
    "argv,message",
    [
        (["inspect", "{tmp}/truncated.tflite"], "corrupt or truncated"),
        (["inspect", "{tmp}/nothing.tflite"], "cannot read model"),
        (
            [
                "prune",
                "{model}",
                "--score",
                "magnitude",
                "--sparsity",
                "0.5",
                "-o",
                "{tmp}/no/m.tflite",
            ],
            "cannot write",
        ),
        (
            ["record", "{model}", "{tmp}/bad.npy", "-o", "{tmp}/out.npz"],
            "does not fit the model input",
        ),
        (
            ["prune", "{model}", "--sparsity", "0.5", "-o", "{tmp}/out.tflite"],
            "needs an activation map",
        ),
        (
            ["prune", "{model}", "{tmp}/bad.npy", "--sparsity", "0.5", "-o", "{tmp}/out.tflite"],
            "not an activation map",
        ),
    ],
)
def test_user_errors_are_one_line_and_write_nothing(files, capsys, argv, message):
    tmp, model, _ = files
    (tmp / "truncated.tflite").write_bytes(model.read_bytes()[:3000])
    np.save(tmp / "bad.npy", np.zeros((3, 5)))
    before = set(tmp.iterdir())
    code, _, err = run(capsys, *(a.format(tmp=tmp, model=model) for a in argv))
    assert code == 2
    assert err.count("\n") == 1 and err.startswith("edgeprune: error: ") and message in err
    assert set(tmp.iterdir()) == before


def test_console_entry_point_without_traceback(files):
    tmp, model, _ = files
    bad = tmp / "bad.tflite"
    bad.write_bytes(b"\x00" * 64)
    proc = subprocess.run(
        [sys.executable, "-m", "edgeprune", "inspect", str(bad)], capture_output=True, text=True
    )
    assert (
        proc.returncode == 2 and "Traceback" not in proc.stderr and "not a .tflite" in proc.stderr
    )
    pruned = tmp / "p.tflite"
    proc = subprocess.run(
        [
            sys.executable,
            "-m",
            "edgeprune",
            "prune",
            str(model),
            "--score",
            "magnitude",
            "--sparsity",
            "0.3",
            "-o",
            str(pruned),
        ],
        capture_output=True,
        text=True,
    )
    assert proc.returncode == 0, proc.stderr
    Model.load(pruned)


def test_core_imports_without_host_libraries():
    """The on-device core imports with TensorFlow, paramiko, pyserial and matplotlib unavailable,
    and without any interpreter it says which pip command to run."""
    code = (
        "import sys\n"
        "host = ('tensorflow', 'paramiko', 'serial', 'matplotlib')\n"
        "for name in host + ('ai_edge_litert', 'tflite_runtime'):\n"
        "    sys.modules[name] = None\n"
        "import edgeprune, edgeprune.cli\n"
        "from edgeprune.runtime import interpreter_class\n"
        "from edgeprune.errors import RuntimeMissingError\n"
        "try:\n"
        "    interpreter_class()\n"
        "except RuntimeMissingError as e:\n"
        "    print(e)\n"
    )
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert proc.returncode == 0, proc.stderr
    assert "pip install" in proc.stdout and "ai-edge-litert" in proc.stdout
