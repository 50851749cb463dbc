"""The reproducers of issue 13: each input once cost a traceback, a crash, an escape or unbounded
memory; now each is refused with exit 2 and one line (or handled), and writes behave."""

from __future__ import annotations

import os
import stat

import numpy as np
import pytest

from edgeprune import _io
from edgeprune.cli import main
from tests import hostile
from tests.models import build


def one_line(capsys, *argv) -> str:
    """Run the CLI; assert exit 2 with one `edgeprune: error:` line; return that line."""
    code = main([str(a) for a in argv])
    _, err = capsys.readouterr()
    lines = [line for line in err.splitlines() if line.strip() and "%|" not in line]
    assert code == 2, err
    assert len(lines) == 1 and lines[0].startswith("edgeprune: error: "), err
    assert "Traceback" not in err
    return lines[0]


@pytest.fixture
def samples(tmp_path):
    path = tmp_path / "samples.npy"
    np.save(path, np.random.default_rng(0).random((2, 16, 16, 3), np.float32))
    return path


@pytest.mark.parametrize(
    "name, commands",
    [
        ("unknown_bias_type", "inspect profile prune record"),
        ("dense_as_depthwise", "profile"),
        ("wrapping_shape", "inspect profile prune record"),
        ("no_inputs", "record"),
        ("constant_input", "record"),
    ],
)
def test_hostile_models_are_one_line(tmp_path, capsys, samples, name, commands):
    model = tmp_path / f"{name}.tflite"
    model.write_bytes(hostile.MODELS[name]())
    argv = hostile.model_commands(model, samples, tmp_path)
    for command in commands.split():
        one_line(capsys, *argv[command])
    assert not (tmp_path / "o.tflite").exists() and not (tmp_path / "m.npz").exists()


@pytest.mark.parametrize("name", ["opcode_of_another_op", "op_cycle"])
def test_inconsistent_graphs_inspect_and_profile_without_traceback(tmp_path, capsys, name):
    model = tmp_path / f"{name}.tflite"
    model.write_bytes(hostile.MODELS[name]())
    for command in ("inspect", "profile"):
        assert main([command, str(model)]) in (0, 2)
        assert "Traceback" not in capsys.readouterr().err


def test_output_through_a_missing_folder_is_one_line(tmp_path, capsys):
    model = tmp_path / "m.tflite"
    model.write_bytes(build("int8"))
    line = one_line(
        capsys, "prune", model, "--sparsity", "0.5", "--score", "magnitude", "-o",
        tmp_path / "y" / ".." / "o.tflite",
    )  # fmt: skip
    assert "no such directory" in line
    assert sorted(p.name for p in tmp_path.iterdir()) == ["m.tflite"]


@pytest.mark.parametrize("name", sorted(hostile.packages()))
def test_hostile_packages_are_one_line(tmp_path, capsys, name):
    pkg = tmp_path / f"{name}.edgepkg"
    pkg.write_bytes(hostile.packages()[name])
    if name not in ("ansi_name", "labels_no_outputs"):  # inspect needs only the model
        one_line(capsys, "inspect", pkg)
    line = one_line(capsys, "verify", pkg)
    assert "\x1b" not in line
    one_line(capsys, "unpack", pkg, "-o", tmp_path / "out")
    assert not (tmp_path / "out").exists()


@pytest.mark.parametrize(
    "name", ["strings", "void", "datetime", "structured", "nan", "inf", "npz_claims_4TB"]
)
def test_hostile_data_files_are_one_line(tmp_path, capsys, name):
    model = tmp_path / "m.tflite"
    model.write_bytes(build("int8"))
    data = hostile.data_files(tmp_path / "data")[name]
    line = one_line(capsys, "record", model, data, "-o", tmp_path / "m.npz", "-q")
    if name in ("nan", "inf"):
        assert "sample 0" in line if name == "nan" else "sample 1" in line
    assert not (tmp_path / "m.npz").exists()


def test_a_fifo_named_like_data_or_a_model_does_not_hang(tmp_path, capsys):
    fifo = tmp_path / "x.npy"
    os.mkfifo(fifo)
    model = tmp_path / "m.tflite"
    model.write_bytes(build("int8"))
    one_line(capsys, "record", model, fifo, "-o", tmp_path / "m.npz", "-q")
    fifo_model = tmp_path / "f.tflite"
    os.mkfifo(fifo_model)
    one_line(capsys, "inspect", fifo_model)


def test_a_resume_map_whose_meta_is_a_list(tmp_path, capsys, samples):
    model = tmp_path / "m.tflite"
    model.write_bytes(build("int8"))
    bad = tmp_path / "bad.npz"
    np.savez(bad, meta=np.array("[1, 2]"))
    one_line(capsys, "record", model, samples, "-o", tmp_path / "m.npz", "--resume", bad, "-q")


def test_a_wav_header_claiming_more_than_the_file(tmp_path):
    import struct
    import wave

    from edgeprune.errors import EdgepruneError
    from edgeprune.preprocess.audio import read_wav

    path = tmp_path / "a.wav"
    with wave.open(str(path), "wb") as w:
        w.setnchannels(1), w.setsampwidth(2), w.setframerate(8000)
        w.writeframes(b"\0\0" * 100)
    data = bytearray(path.read_bytes())
    struct.pack_into("<I", data, 40, 0xFFFFFFF0)  # the data chunk's size
    path.write_bytes(data)
    with pytest.raises(EdgepruneError, match="claims"):
        read_wav(path)


@pytest.mark.host("PIL")
def test_an_image_over_the_pixel_limit(tmp_path, monkeypatch):
    from PIL import Image

    from edgeprune.errors import EdgepruneError
    from edgeprune.preprocess import image

    path = tmp_path / "big.png"
    Image.new("RGB", (300, 300)).save(path)
    monkeypatch.setattr(image, "MAX_PIXELS", 300 * 299)
    with pytest.raises(EdgepruneError, match="pixel limit"):
        image.read_image(path)


def test_a_ragged_recipe_mean_is_refused():
    from edgeprune.errors import EdgepruneError
    from edgeprune.preprocess import recipe_from_dict

    with pytest.raises(EdgepruneError, match="mean"):
        recipe_from_dict({"kind": "image", "mean": [[0.0], [1.0, 2.0]]})


# ----- writes -----------------------------------------------------------------------------------


def test_outputs_respect_the_umask_and_keep_a_replaced_mode(tmp_path):
    old = os.umask(0o027)
    try:
        _io.atomic_write_bytes(tmp_path / "new", b"1")
    finally:
        os.umask(old)
    assert stat.S_IMODE((tmp_path / "new").stat().st_mode) == 0o640
    (tmp_path / "old").write_bytes(b"0")
    (tmp_path / "old").chmod(0o604)
    _io.atomic_write_bytes(tmp_path / "old", b"1")
    assert stat.S_IMODE((tmp_path / "old").stat().st_mode) == 0o604


def test_temp_files_of_killed_writers_are_swept_by_the_next_write(tmp_path):
    target = tmp_path / "out.bin"
    stale = tmp_path / ".out.bin.abcd1234.tmp"  # no writer holds its lock
    stale.write_bytes(b"x" * 100)
    other = tmp_path / ".other.bin.abcd1234.tmp"  # another target's: not ours to delete
    other.write_bytes(b"x")
    with _io.atomic_open(target) as f:
        live = [p for p in tmp_path.iterdir() if p.name.startswith(".out.bin.")]
        assert len(live) == 1 and live[0] != stale  # the sweep ran, this writer's temp lives
        assert _io.sweep_temps(target) == []  # a live writer's temp is locked: kept
        f.write(b"new")
    assert sorted(p.name for p in tmp_path.iterdir()) == [".other.bin.abcd1234.tmp", "out.bin"]


def test_weights_overlapping_the_tables_are_not_written(tmp_path):
    from edgeprune.errors import ModelError
    from edgeprune.model import Model

    m = Model(build("int8"))
    layer_weight = next(t for t in m.tensors if m.is_constant(t) and t.shape == (8, 3, 3, 3))
    # Damage the tables through a "weight" view, as a buffer overlapping them would.
    view = np.frombuffer(m._data, np.uint8)
    view[:4] = 0  # the root offset
    with pytest.raises(ModelError, match="overlap"):
        m.save(tmp_path / "o.tflite")
    assert not (tmp_path / "o.tflite").exists()
    assert layer_weight is not None


# ----- the board agent --------------------------------------------------------------------------


def test_pushes_cannot_reach_the_agents_state_after_normalisation(board, tmp_path):
    from edgeprune.host.device_errors import RemoteError

    device, root = board
    lock = root / ".edgeprune" / "agent.lock"
    root.mkdir(exist_ok=True)
    (root / "state").symlink_to(root / ".edgeprune")
    src = tmp_path / "x"
    src.write_bytes(b"replacement")
    for target in (
        "x/../.edgeprune/agent.lock",
        "./.edgeprune/agent.lock",
        "state/agent.lock",
        "a/b/../../.edgeprune/partial/p",
    ):
        with pytest.raises(RemoteError) as e:
            device.put(src, target)
        assert e.value.code == "path", target
    assert lock.read_bytes() != b"replacement"
    assert not list((root / ".edgeprune" / "partial").iterdir())


def test_upload_opens_alone_leave_no_partial_files(board):
    from firmware_bridge import protocol as p

    device, root = board
    for i in range(200):
        digest = f"{i:064x}"
        device.request(p.PUT_OPEN, {"path": f"u{i}", "size": 10, "sha256": digest})
    assert list((root / ".edgeprune" / "partial").iterdir()) == []


def test_a_model_that_crashes_the_runtime_is_one_line_and_the_agent_survives(
    board, tmp_path, capsys, samples
):
    model = tmp_path / "crash.tflite"
    model.write_bytes(hostile.optional_weight())
    line = one_line(capsys, "record", model, samples, "-o", tmp_path / "m.npz", "-q")
    assert hostile.OPTIONAL_WEIGHT_FAILS in line and str(model) in line
    device, root = board
    device.put(model, "crash.tflite")
    device.put(samples, "s.npy")
    from edgeprune.host.device_errors import RemoteError

    with pytest.raises(RemoteError, match=hostile.OPTIONAL_WEIGHT_FAILS.split()[0]):
        device.run("record", {"model": "crash.tflite", "data": "s.npy", "output": "m.npz"}, print)
    assert device.run("inspect", {"model": "crash.tflite"}, print)  # the same agent still answers


def test_the_memory_plan_is_linear_in_whole_run_tensors(monkeypatch):
    """32,000 graph inputs (alive for the whole run) once took minutes: now a few seconds even on
    an emulated board."""
    import time
    from types import SimpleNamespace

    from edgeprune import profile

    ops = 1000
    allocations = [profile.Allocation((i,), 100, 0, ops) for i in range(32_000)]
    allocations += [profile.Allocation((40_000 + i,), 64, i, i + 1) for i in range(ops - 1)]
    monkeypatch.setattr(profile, "lifetimes", lambda model, shapes: allocations)
    start = time.perf_counter()
    plan = profile.plan_memory(SimpleNamespace(operators=[None] * ops), [])
    assert time.perf_counter() - start < 10.0  # quadratic took minutes
    whole = 32_000 * 128  # 100 bytes each at 64-byte alignment
    assert plan.arena_bytes == whole + 128 and plan.peak_live_bytes == 32_000 * 100 + 128


def test_record_refuses_a_model_whose_declared_shapes_need_too_much_memory(
    tmp_path, capsys, samples
):
    data = hostile.model("int8")
    from edgeprune.model import Model

    m = Model(bytes(data))
    out = m.operators[0].outputs[0]  # the first conv's output [1, 8, 8, 8]
    hostile._set_vector(data, hostile.tensors(data)[out], 0, [1, 8, 2**15, 2**15])
    model = tmp_path / "huge.tflite"
    model.write_bytes(data)
    line = one_line(capsys, "record", model, samples, "-o", tmp_path / "m.npz", "-q")
    assert "would need about" in line and "GiB" in line and "--max-memory 2.0 GiB" in line
    line = one_line(capsys, "record", build_path(tmp_path), samples, "-o", tmp_path / "m.npz",
                    "-q", "--max-memory", "1k")  # fmt: skip
    assert "KiB" in line


def build_path(tmp_path):
    path = tmp_path / "int8.tflite"
    path.write_bytes(build("int8"))
    return path


def test_an_npz_bomb_as_a_resume_map_is_refused_before_it_is_read(tmp_path, capsys, samples):
    import zipfile

    bomb = tmp_path / "bomb.npz"
    with zipfile.ZipFile(bomb, "w", zipfile.ZIP_DEFLATED) as zf:
        zf.writestr("s_in_0.npy", bytes(300 << 20))  # ~300 KB inflating to 300 MiB
    line = one_line(
        capsys, "record", build_path(tmp_path), samples, "-o", tmp_path / "m.npz", "-q",
        "--resume", bomb,
    )  # fmt: skip
    assert "inflate" in line


def test_an_unpacked_folder_respects_the_umask(tmp_path):
    old = os.umask(0o022)
    try:
        with _io.atomic_directory(tmp_path / "d") as d:
            (d / "f").write_bytes(b"1")
    finally:
        os.umask(old)
    assert stat.S_IMODE((tmp_path / "d").stat().st_mode) == 0o755
