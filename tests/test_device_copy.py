"""push/pull like scp on a real local:// agent: folders (-r), DIR/ targets, one-line errors for
missing parents, identical files not sent again, and `edgeprune ls` confined to the work dir."""

import json
import os
import shlex
import sys

import numpy as np
import pytest

from edgeprune.cli import main
from edgeprune.host.client import Device
from tests.cli_run import run
from tests.models import INPUT_SHAPES, random_inputs


@pytest.fixture
def box(tmp_path, monkeypatch):
    monkeypatch.setenv("EDGEPRUNE_CONFIG_DIR", str(tmp_path / "config"))
    monkeypatch.chdir(tmp_path)
    board = tmp_path / "board"
    assert main(["device", "add", "box", f"local://{board}"]) == 0
    return board


def tree(root):
    return sorted(
        (p.relative_to(root).as_posix(), p.read_bytes())
        for p in root.rglob("*")
        if p.is_file() and ".edgeprune" not in p.parts
    )


@pytest.fixture
def folder(tmp_path):
    src = tmp_path / "images"
    (src / "cats").mkdir(parents=True)
    for i in range(5):
        (src / f"{i}.jpg").write_bytes(os.urandom(1000 + i))
    (src / "cats" / "tom.jpg").write_bytes(os.urandom(300_000))
    return src


def test_a_folder_goes_with_r_and_unchanged_files_are_not_sent_again(box, folder, capsys):
    code, _, err = run(capsys, "push", "box", folder)
    assert code == 2 and err == f"edgeprune: error: {folder} is a directory: push it with -r\n"
    code, out, _ = run(capsys, "push", "box", folder, "-r", "-q")
    assert code == 0 and out.startswith("pushed") and "(6 files, " in out and "unchanged" not in out
    assert tree(box / "images") == tree(folder)

    (folder / "1.jpg").write_bytes(b"changed")
    stamp = (box / "images" / "cats" / "tom.jpg").stat().st_mtime_ns
    code, out, _ = run(capsys, "push", "box", folder, "-r", "-q", "--json")
    result = json.loads(out)
    assert code == 0 and result["skipped"] == 5 and len(result["files"]) == 6
    sent = [f["path"] for f in result["files"] if not f.get("skipped")]
    assert sent == ["images/1.jpg"] and (box / "images" / "1.jpg").read_bytes() == b"changed"
    assert (box / "images" / "cats" / "tom.jpg").stat().st_mtime_ns == stamp  # not rewritten

    code, out, _ = run(capsys, "push", "box", folder, "-r", "--as", "data/", "-q")
    assert code == 0 and tree(box / "data" / "images") == tree(folder)


def test_an_identical_file_is_not_re_sent(box, tmp_path, capsys):
    blob = tmp_path / "blob.bin"
    blob.write_bytes(os.urandom(2_000_000))
    assert run(capsys, "push", "box", blob, "-q")[0] == 0
    with Device(f"local://{box}") as device:  # ask the agent directly: nothing to send
        again = device.put(blob, "blob.bin")
    assert again["skipped"] is True and not any((box / ".edgeprune" / "partial").iterdir())
    code, out, _ = run(capsys, "push", "box", blob, "-q")
    assert code == 0 and "already there with the same content" in out and "not sent" in out


def test_pull_targets_like_scp(box, folder, tmp_path, capsys):
    assert run(capsys, "push", "box", folder, "-r", "-q")[0] == 0
    code, _, err = run(capsys, "pull", "box", "images", "-q")
    assert (
        code == 2 and err == "edgeprune: error: images is a folder on the board: pull it with -r\n"
    )

    assert run(capsys, "pull", "box", "images", "-r", "-o", "copy", "-q")[0] == 0
    assert tree(tmp_path / "copy") == tree(folder)  # a new name: the copy itself
    assert run(capsys, "pull", "box", "images", "-r", "-o", "copy", "-q")[0] == 0
    assert tree(tmp_path / "copy" / "images") == tree(folder)  # an existing folder: into it

    code, out, _ = run(capsys, "pull", "box", "images/0.jpg", "-o", "fresh/", "-q")
    assert (
        code == 0 and (tmp_path / "fresh" / "0.jpg").read_bytes() == (folder / "0.jpg").read_bytes()
    )
    code, out, _ = run(capsys, "pull", "box", "images/0.jpg", "-o", "fresh/", "-q")
    assert code == 0 and "already there with the same content" in out

    for target in ("nope/deeper/", "nope/deeper/x.jpg"):
        code, out, err = run(capsys, "pull", "box", "images/0.jpg", "-o", target, "-q")
        assert code == 2 and out == "" and err.count("\n") == 1, err
        assert "the directory nope" in err and "does not exist" in err
    assert not (tmp_path / "nope").exists()
    (tmp_path / "afile").write_text("x")
    code, _, err = run(capsys, "pull", "box", "images/0.jpg", "-o", "afile/", "-q")
    assert code == 2 and "is not a directory" in err and err.count("\n") == 1


def test_ls_lists_the_work_directory_and_nothing_outside_it(box, folder, tmp_path, capsys):
    assert run(capsys, "push", "box", folder, "-r", "-q")[0] == 0
    (box / "escape").symlink_to(tmp_path)  # leads outside: never listed
    code, out, _ = run(capsys, "ls", "box")
    assert code == 0 and [line.split()[-1] for line in out.splitlines()] == ["images/"]
    code, out, _ = run(capsys, "ls", "box", "images", "-r", "--json")
    listed = json.loads(out)
    files = {e["path"]: e["size"] for e in listed["entries"] if e["type"] == "file"}
    assert files == {f"images/{p}": len(b) for p, b in tree(folder)}
    code, out, _ = run(capsys, "ls", "box", "images")
    assert code == 0 and "cats/" in out and "1,001  " in out and "tom.jpg" not in out
    for path, message in (("../", "outside the work directory"), (".edgeprune", "belongs to"),
                          ("ghost", "no such file")):  # fmt: skip
        code, out, err = run(capsys, "ls", "box", path)
        assert code == 2 and out == "" and message in err and err.count("\n") == 1, err


def test_options_may_stand_before_between_or_after_the_positionals(box, folder, capsys):
    assert run(capsys, "push", "-r", "-q", "box", folder)[0] == 0  # options first
    for argv in (("ls", "box", "-r", "images"), ("ls", "-r", "box", "images"),
                 ("ls", "box", "images", "-r")):  # fmt: skip
        code, out, err = run(capsys, *argv)
        assert code == 0 and err == "" and "cats/tom.jpg" in out, argv
        assert "images/" not in out  # `images` is the path listed, not lost to the default
    assert json.loads(run(capsys, "ls", "--json", "box", "-r", "images")[1])["path"] == "images"
    for i, argv in enumerate((("pull", "box", "-r", "images", "-o", "a/"),
                              ("pull", "-o", "b/", "box", "-q", "-r", "images"),
                              ("pull", "-r", "box", "images", "-q", "-o", "c/"))):  # fmt: skip
        assert run(capsys, *argv)[0] == 0, argv
        assert tree(folder.parent / "abc"[i] / "images") == tree(folder)
    assert run(capsys, "push", "box", "-q", folder / "0.jpg", "--as", "one.jpg")[0] == 0
    assert (box / "one.jpg").read_bytes() == (folder / "0.jpg").read_bytes()
    with pytest.raises(SystemExit):  # still one path at most
        main(["ls", "box", "-r", "images", "cats"])


def test_an_optional_positional_after_options_and_remote_passing_the_rest_through():
    from edgeprune.cli import build_parser

    args = build_parser().parse_args(
        ["prune", "m.tflite", "--sparsity", ".5", "-o", "p", "map.npz"]
    )
    assert (args.model, args.map, args.sparsity) == ("m.tflite", "map.npz", ".5")
    remote = build_parser().parse_args(["remote", "box", "prune", "-o", "x", "m.tflite", "-q"])
    assert remote.args == ["-o", "x", "m.tflite", "-q"]  # passed through whole, parsed on send


def test_remote_tells_a_pull_command_that_works_for_a_report_folder(box, tflite_model, capsys):
    np.save(box.parent / "x.npy", random_inputs(12, INPUT_SHAPES["mixed"][1:], seed=5))
    for path, name in ((tflite_model("int8"), "m.tflite"), (box.parent / "x.npy", "x.npy")):
        assert run(capsys, "push", "box", path, "--as", name, "-q")[0] == 0
    argv = ["remote", "box", "personalize", "m.tflite", "x.npy", "-o", "u.tflite", "--report"]
    code, _, err = run(capsys, *argv, "rep with space")
    assert code == 0
    hints = [line.split("`")[1] for line in err.splitlines() if "fetch it with" in line]
    assert hints == ["edgeprune pull box u.tflite", "edgeprune pull -r box 'rep with space'"]
    for hint in hints:
        assert main(shlex.split(hint)[1:]) == 0
    assert (box.parent / "rep with space" / "report.json").is_file()
    assert (box.parent / "u.tflite").read_bytes() == (box / "u.tflite").read_bytes()


def test_empty_folders(box, tmp_path, capsys):
    (tmp_path / "empty").mkdir()
    code, out, err = run(capsys, "push", "box", tmp_path / "empty", "-r")
    assert code == 2 and out == "" and err.endswith("empty holds no files: nothing to push\n")
    (box / "nothing" / "inside").mkdir(parents=True)
    code, out, _ = run(capsys, "pull", "box", "nothing", "-r", "-o", "got", "-q")
    assert code == 0 and out == "pulled box:nothing -> got/ (0 files, 0 bytes)\n"
    assert (tmp_path / "got" / "inside").is_dir()


HOSTILE_AGENT = """
import sys
import firmware_bridge.files as files
import firmware_bridge.listing as listing

honest = listing.listing

def lying(workdir, name, recursive, budget):
    out = honest(workdir, name, recursive, budget)
    out["entries"].append({"path": "rep/../../escaped.txt", "type": "file", "size": 2, "mtime": 0})
    return out

listing.listing = lying
honest_resolve = files.WorkDir.resolve

def resolve(self, name, **kw):  # and serves that path (with another file's bytes)
    if isinstance(name, str) and name.endswith("escaped.txt"):
        name = "rep/report.json"
    return honest_resolve(self, name, **kw)

files.WorkDir.resolve = resolve
from firmware_bridge.__main__ import main
sys.exit(main(sys.argv[3:]))  # argv: -m firmware_bridge serve --stdio --root DIR
"""


def test_a_board_that_lists_a_path_outside_the_folder_cannot_make_pull_write_there(
    tmp_path, monkeypatch, capsys
):
    """A real agent process whose LIST lies: pull -r refuses in one line and writes nothing."""
    monkeypatch.chdir(tmp_path)
    (tmp_path / "agent.py").write_text(HOSTILE_AGENT)
    python = tmp_path / "python"
    python.write_text(f'#!/bin/sh\nexec {sys.executable} {tmp_path / "agent.py"} "$@"\n')
    python.chmod(0o755)
    board = tmp_path / "board"
    (board / "rep").mkdir(parents=True)
    (board / "rep" / "report.json").write_text("{}")
    (tmp_path / "out").mkdir()
    code, out, err = run(capsys, "pull", f"local://{board}?python={python}", "rep", "-r", "-o",
                         "out/")  # fmt: skip
    assert code == 2 and out == "" and err.count("\n") == 1, err
    assert "'rep/../../escaped.txt', which is not inside rep" in err
    assert not list(tmp_path.rglob("escaped.txt"))
