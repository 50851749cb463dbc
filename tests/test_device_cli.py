"""`edgeprune device|push|pull|remote` end to end on a local:// board, and their one-line errors."""

import json
import os
import subprocess
import sys

import numpy as np
import pytest

from tests.cli_run import run
from tests.models import INPUT_SHAPES, random_inputs


def test_device_registry(config, tmp_path, capsys):
    url = f"local://{tmp_path / 'board'}"
    assert run(capsys, "device", "list")[1].startswith("no devices in")
    assert run(capsys, "device", "add", "box", url) == (0, f"added box: {url}\n", "")
    code, _, err = run(capsys, "device", "add", "box", "local://")
    assert code == 2 and err.count("\n") == 1 and "exists" in err and "--replace" in err
    assert run(capsys, "device", "add", "pi", "ssh://pi@raspberrypi.local:2222/~/ep")[0] == 0
    code, out, _ = run(capsys, "device", "list", "--json")
    assert json.loads(out)["devices"] == {"box": url, "pi": "ssh://pi@raspberrypi.local:2222/~/ep"}
    stored = json.loads((config / "devices.json").read_text())
    assert stored["devices"]["box"] == {"url": url} and os.listdir(config) == ["devices.json"]

    code, out, _ = run(capsys, "device", "info", "box")
    assert code == 0 and "operations inspect, record, prune, thin, personalize" in out
    assert "edge tpu   no Edge TPU" in out

    assert run(capsys, "device", "remove", "pi")[0] == 0
    assert list(json.loads(run(capsys, "device", "list", "--json")[1])["devices"]) == ["box"]


@pytest.mark.parametrize(
    "argv,message",
    [
        (["device", "add", "x", "http://host"], "is not a device URL"),
        (["device", "add", "x", "ssh://host?pasword=1"], "unknown parameter 'pasword'"),
        (["device", "add", "x", "serial:///dev/ttyS0?baud=fast"], "baud must be a whole number"),
        (["device", "add", "x", "local:///a;rm -rf ~"], "characters a device URL does not allow"),
        (["device", "add", "../x", "local://"], "a device name is"),
        (["device", "add", "x", "serial://dev/ttyUSB0"], "e.g. serial:///dev/ttyUSB0"),
        (["device", "remove", "ghost"], "no device named 'ghost'"),
        (["push", "ghost", "f.bin"], "edgeprune device add ghost URL"),
        pytest.param(
            ["device", "info", "serial:///dev/edgeprune-no-such-port"],
            "cannot open",
            marks=pytest.mark.host("serial"),
        ),
    ],
)
def test_user_errors_are_one_line(config, capsys, argv, message):
    code, out, err = run(capsys, *argv)
    assert code == 2 and out == "" and err.count("\n") == 1 and message in err, err


def test_push_remote_pull_through_the_command_line(config, tmp_path, capsys, tflite_model):
    board = tmp_path / "board"
    assert run(capsys, "device", "add", "box", f"local://{board}")[0] == 0
    data = tmp_path / "x.npy"
    np.save(data, random_inputs(12, INPUT_SHAPES["mixed"][1:], seed=5))
    code, out, _ = run(capsys, "push", "box", tflite_model("int8"), "--as", "m.tflite", "--json")
    assert code == 0 and json.loads(out)["path"] == "m.tflite"
    code, out, _ = run(capsys, "push", "box", data, "-q")
    assert code == 0 and out.startswith(f"pushed {data} -> box:x.npy (")

    code, out, err = run(capsys, "remote", "box", "record", "m.tflite", "x.npy", "-o", "map.npz")
    assert code == 0 and out == "recorded 12 samples over 6 layers -> map.npz\n"
    # stderr is not a terminal here: no bars, only the hint (bars: tests/test_cli_terminal.py)
    assert err.splitlines() == ["map.npz is on box; fetch it with `edgeprune pull box map.npz`"]
    code, out, _ = run(capsys, "remote", "box", "record", "--help")
    assert code == 0 and out.startswith("usage: edgeprune remote box record")

    code, _, err = run(capsys, "remote", "box", "record", "nothere.tflite", "x.npy", "-o", "y.npz")
    assert code == 2 and err.splitlines() == [
        "edgeprune: error: box: cannot read model nothere.tflite: No such file or directory"
    ]
    code, _, err = run(capsys, "remote", "box", "format-disk")
    assert code == 2 and "'format-disk' does not run on a board" in err and err.count("\n") == 1

    out_dir = tmp_path / "fetched"
    out_dir.mkdir()
    code, out, _ = run(capsys, "pull", "box", "map.npz", "-o", out_dir, "-q")
    assert code == 0 and (out_dir / "map.npz").read_bytes() == (board / "map.npz").read_bytes()
    assert os.listdir(out_dir) == ["map.npz"]


def test_device_commands_need_no_ssh_or_serial_library_until_used(config, tmp_path):
    code = (
        "import sys\n"
        "for name in ('paramiko', 'serial', 'tensorflow', 'matplotlib'):\n"
        "    sys.modules[name] = None\n"
        "from edgeprune.cli import main\n"
        f"assert main(['device', 'add', 'box', 'local://{tmp_path / 'b'}']) == 0\n"
        f"assert main(['push', 'box', {str(tmp_path / 'f')!r}, '-q']) == 0\n"
    )
    (tmp_path / "f").write_bytes(b"abc")
    env = {**os.environ, "EDGEPRUNE_CONFIG_DIR": str(config)}
    done = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True)
    assert done.returncode == 0, done.stderr
    assert (tmp_path / "b" / "f").read_bytes() == b"abc"


@pytest.mark.parametrize("argv", [["--help"], ["device", "list"], ["push", "--help"]])
def test_the_cli_starts_without_numpy_the_model_reader_or_tqdm(config, argv):
    """--help and the device commands build their options from the declarations alone."""
    code = (
        "import sys\n"
        "from edgeprune.cli import main\n"
        f"try:\n    main({argv!r})\nexcept SystemExit:\n    pass\n"
        "heavy = ('numpy', 'tflite', 'flatbuffers', 'tqdm', 'paramiko', 'serial', 'matplotlib')\n"
        "print(sorted(m for m in heavy if m in sys.modules))\n"
    )
    env = {**os.environ, "EDGEPRUNE_CONFIG_DIR": str(config)}
    done = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True)
    assert done.returncode == 0, done.stderr
    assert done.stdout.splitlines()[-1] == "[]"
