"""`edgeprune device group` and the device verbs on a group, end to end on local:// boards: all
boards at once, one table, exit 2 naming the board that failed while the others completed."""

import json
import threading

import numpy as np
import pytest

from edgeprune.host import groups
from edgeprune.operation import Context
from tests.cli_run import run
from tests.models import INPUT_SHAPES, random_inputs


@pytest.fixture
def lab(config, tmp_path, capsys):
    """Group `lab`: boards a and b (local://), and c whose work directory is a file (it fails)."""
    (tmp_path / "not-a-dir").write_text("x")
    urls = {
        "a": f"local://{tmp_path / 'a'}",
        "b": f"local://{tmp_path / 'b'}",
        "c": f"local://{tmp_path / 'not-a-dir'}",
    }
    for name, url in urls.items():
        assert run(capsys, "device", "add", name, url)[0] == 0
    assert run(capsys, "device", "group", "add", "lab", "a", "b", "c") == (
        0,
        "group lab: a, b, c\n",
        "",
    )
    return tmp_path


def test_group_registry(config, tmp_path, capsys):
    assert run(capsys, "device", "group", "list")[1].startswith("no groups in")
    assert run(capsys, "device", "add", "a", f"local://{tmp_path}")[0] == 0
    code, _, err = run(capsys, "device", "group", "add", "g", "a", "ghost")
    assert code == 2 and "no board named 'ghost'" in err and err.count("\n") == 1
    assert run(capsys, "device", "group", "add", "g", "a")[0] == 0
    code, _, err = run(capsys, "device", "group", "add", "g", "a")
    assert code == 2 and "--replace" in err
    code, _, err = run(capsys, "device", "add", "g", "local://")
    assert code == 2 and "is a group" in err
    code, _, err = run(capsys, "device", "remove", "a")
    assert code == 2 and "in group(s) g" in err
    code, out, _ = run(capsys, "device", "group", "list", "--json")
    assert json.loads(out)["groups"] == {"g": ["a"]}
    # device add/remove keep the groups
    assert run(capsys, "device", "add", "b", "local://")[0] == 0
    assert json.loads((config / "devices.json").read_text())["groups"] == {"g": ["a"]}
    assert run(capsys, "device", "group", "remove", "g")[0] == 0
    assert run(capsys, "device", "remove", "a")[0] == 0


def test_push_remote_pull_on_a_group(lab, capsys, tflite_model):
    tmp_path = lab
    data = tmp_path / "x.npy"
    np.save(data, random_inputs(6, INPUT_SHAPES["mixed"][1:], seed=5))
    code, out, err = run(capsys, "push", "lab", data, "-q")
    assert code == 2
    lines = out.splitlines()
    assert lines[0] == "push on lab (3 boards): 2 ok, 1 failed"
    rows = {line.split()[0]: line for line in lines[2:]}
    assert set(rows) == {"a", "b", "c"} and "FAILED" in rows["c"] and " ok " in rows["a"]
    assert f"pushed {data} -> a:x.npy" in rows["a"]
    assert err.splitlines() == ["edgeprune: error: push failed on 1 of 3 boards of lab: c"]
    assert (tmp_path / "a" / "x.npy").read_bytes() == data.read_bytes()
    assert (tmp_path / "b" / "x.npy").read_bytes() == data.read_bytes()

    run(capsys, "push", "lab", tflite_model("int8"), "--as", "m.tflite", "-q")
    code, out, _ = run(capsys, "remote", "lab", "record", "m.tflite", "x.npy", "-o", "map.npz")
    assert code == 2 and "2 ok, 1 failed" in out
    assert "recorded 6 samples over 6 layers -> map.npz" in out

    code, out, _ = run(capsys, "pull", "lab", "map.npz", "-o", tmp_path / "got", "--json")
    assert code == 2
    result = json.loads(out)
    assert [b["ok"] for b in result["boards"]] == [True, True, False]
    for board in ("a", "b"):  # each board's copy in its own folder
        got = tmp_path / "got" / board / "map.npz"
        assert got.read_bytes() == (tmp_path / board / "map.npz").read_bytes()

    code, out, _ = run(capsys, "device", "info", "lab", "--json")
    assert code == 2 and [b["board"] for b in json.loads(out)["boards"]] == ["a", "b", "c"]


def test_boards_run_at_once_within_the_pool(monkeypatch):
    """The pool runs boards concurrently (never more than POOL) and a failure stops no one."""
    monkeypatch.setattr(groups, "POOL", 3)
    running, peak, lock = [0], [0], threading.Lock()
    barrier = threading.Barrier(3, timeout=10)

    class Done:
        def to_dict(self):
            return {}

        def problem(self):
            return None

    def one(context, board):
        with lock:
            running[0] += 1
            peak[0] = max(peak[0], running[0])
        try:
            if board in ("b0", "b1", "b2"):
                barrier.wait()  # only passes if three boards run at the same time
            if board == "b3":
                raise OSError("link down")
            return Done()
        finally:
            with lock:
                running[0] -= 1

    boards = [f"b{i}" for i in range(6)]
    result = groups.run_group(Context(), "g", "push", boards, one)
    assert peak[0] == 3 and result.failed == ["b3"]
    assert [b["board"] for b in result.boards] == boards
    assert result.problem() == "push failed on 1 of 6 boards of g: b3"
