"""Truncated and mutated copies of real models: a clear ModelError or a consistent model, never a
crash, hang or unchecked exception."""

import contextlib
import io
import os
import shutil
import signal
import struct
import subprocess
import sys
import time

import numpy as np
import pytest

from edgeprune._io import atomic_write_bytes
from edgeprune.cli import main
from edgeprune.errors import EdgepruneError, ModelError
from edgeprune.layers import scan
from edgeprune.model import Model
from tests import hostile
from tests.models import build

CASES_PER_KIND = 150  # × 4 kinds = 600 mutated or truncated files


def mutations(data: bytes, rng: np.random.Generator, n: int):
    """Truncations, random bit flips and hostile 32-bit words (offsets, lengths)."""
    hostile = [
        0,
        1,
        0x7FFFFFFF,
        0x80000000,
        0xFFFFFFFF,
        len(data),
        len(data) - 4,
        0xFFFF,
    ]
    for i in range(n):
        buf = bytearray(data)
        how = i % 3
        if how == 0:
            buf = buf[: int(rng.integers(0, len(data)))]
        elif how == 1:
            for at in rng.integers(0, len(buf), int(rng.integers(1, 9))):
                buf[at] ^= 1 << int(rng.integers(0, 8))
        else:
            # Words in the flatbuffer's structure (the first and last 20%, where tables live).
            region = int(len(buf) * 0.2)
            at = int(
                rng.choice(
                    [
                        rng.integers(0, region),
                        rng.integers(len(buf) - region, len(buf) - 4),
                    ]
                )
            )
            at -= at % 4
            struct.pack_into("<I", buf, at, int(rng.choice(hostile)))
        yield bytes(buf)


def exercise(data: bytes) -> str:
    """Parse and use a model the way the core does; returns 'ok' or 'rejected'."""
    try:
        model = Model(data)
    except ModelError as e:
        assert str(e) and "\n" not in str(e)
        return "rejected"
    for t in model.tensors:
        if model.is_constant(t) and t.dtype is not None and not t.sparse:
            values = model.tensor_data(t)
            assert values.shape == t.shape  # sizes were checked against the buffers
    with contextlib.suppress(EdgepruneError):
        scan(model)
    return "ok"


class _Timeout(Exception):
    pass


def _alarm(*_):
    raise _Timeout


@pytest.mark.parametrize("kind", ["float32", "dynamic", "int8", "float16"])
def test_fuzzed_models_fail_cleanly(kind):
    data = build(kind)
    rng = np.random.default_rng(42)
    outcomes = {"ok": 0, "rejected": 0}
    previous = signal.signal(signal.SIGALRM, _alarm)
    try:
        for case in mutations(data, rng, CASES_PER_KIND):
            signal.alarm(5)  # a parse must never hang
            outcomes[exercise(case)] += 1
            signal.alarm(0)
    finally:
        signal.alarm(0)
        signal.signal(signal.SIGALRM, previous)
    assert sum(outcomes.values()) == CASES_PER_KIND
    # Every truncation is caught; the mutations are a mix of harmless and rejected.
    assert outcomes["rejected"] >= CASES_PER_KIND // 3


def test_every_truncation_is_rejected():
    data = build("int8")
    for cut in range(0, len(data), max(1, len(data) // 97)):
        with pytest.raises(ModelError):
            Model(data[:cut])


# ----- issue 13: bounded runs of each attack class (FUZZ_SCALE=10 for a bigger run) -----------

SCALE = int(os.environ.get("FUZZ_SCALE", "1"))


def _cli(capsys, *argv) -> None:
    """Exit 0, or exit 2 with one `edgeprune: error:` line; never an exception."""
    code = main([str(a) for a in argv])
    err = capsys.readouterr().err
    lines = [x for x in err.splitlines() if x.strip() and "%|" not in x and "INFO:" not in x]
    assert code in (0, 2), err
    assert code == 0 or (len(lines) == 1 and lines[0].startswith("edgeprune: error: ")), err


def test_mutated_models_through_every_model_command(tmp_path, capsys):
    data = tmp_path / "s.npy"
    np.save(data, np.zeros((1, 16, 16, 3), np.float32))
    rng = np.random.default_rng(13)
    commands = ["inspect", "profile", "prune", "record", "compare"]
    for i, case in enumerate(mutations(build("int8"), rng, 20 * SCALE)):
        model = tmp_path / f"m{i}.tflite"
        model.write_bytes(case)
        command = commands[i % len(commands)]
        _cli(capsys, *hostile.model_commands(model, data, tmp_path)[command])
    assert not [p for p in tmp_path.iterdir() if p.name.endswith(".tmp")]


def test_mutated_packages_verify_and_unpack_cleanly(tmp_path, capsys):
    from tests import hostile

    good = hostile.package(labels=[str(i) for i in range(10)])
    rng = np.random.default_rng(7)
    for i, case in enumerate(mutations(good, rng, 30 * SCALE)):
        pkg = tmp_path / f"p{i}.edgepkg"
        pkg.write_bytes(case)
        for argv in (["verify", pkg], ["inspect", pkg], ["unpack", pkg, "-o", tmp_path / "u"]):
            _cli(capsys, *argv)
        if (tmp_path / "u").exists():  # unpacked: only what the package holds
            assert sorted(p.name for p in (tmp_path / "u").iterdir()) == [
                "manifest.json", "model.tflite"
            ]  # fmt: skip
            shutil.rmtree(tmp_path / "u")


def test_mutated_data_files_are_refused_or_recorded(tmp_path, capsys):
    model = tmp_path / "m.tflite"
    model.write_bytes(build("int8"))
    buf = io.BytesIO()
    np.save(buf, np.random.default_rng(0).random((2, 16, 16, 3), np.float32))
    zipped = io.BytesIO()
    np.savez_compressed(zipped, x=np.random.default_rng(1).random((2, 16, 16, 3), np.float32))
    rng = np.random.default_rng(3)
    for suffix, good in ((".npy", buf.getvalue()), (".npz", zipped.getvalue())):
        for i, case in enumerate(mutations(good, rng, 15 * SCALE)):
            data = tmp_path / f"d{i}{suffix}"
            data.write_bytes(case)
            _cli(capsys, "record", model, data, "-o", tmp_path / "m.npz", "-q")


def _fields(rng: np.random.Generator) -> object:
    return [
        "x", "../x", "/etc/passwd", ".edgeprune/agent.lock", "a/../.edgeprune/x", "", "\0",
        "x" * 4097, 5, -1, 2**70, 1.5, None, True, [], {}, ["a"], {"a": 1}, "0" * 64,
    ][int(rng.integers(0, 19))]  # fmt: skip


def test_malformed_requests_to_a_live_agent_are_request_errors(tmp_path):
    from edgeprune.host.local_link import LocalLink
    from edgeprune.host.transports import parse_url
    from firmware_bridge import protocol as p

    root = tmp_path / "board"
    root.mkdir()
    (tmp_path / "outside").write_text("keep")
    (root / "x").write_text("x")
    link = LocalLink(parse_url(f"local://{root}"))
    decoder = p.Decoder()

    def exchange(frame: bytes) -> p.Frame:
        link.write(frame)
        while True:
            decoder.feed(link.read())
            got = [i for i in decoder.items() if isinstance(i, p.Frame)]
            if got:
                return got[0]

    types = [p.PUT_OPEN, p.PUT_CLOSE, p.GET_OPEN, p.GET_DATA, p.CANCEL, p.PING]
    types += [p.LIST] if hasattr(p, "LIST") else []
    keys = ["path", "size", "sha256", "offset", "length", "request_id", "recursive"]
    rng = np.random.default_rng(11)
    try:
        exchange(p.encode_json(p.HELLO, 1, {"versions": [p.VERSION], "max_payload": 65536}))
        for request_id in range(2, 2 + 150 * SCALE):
            body = {k: _fields(rng) for k in rng.choice(keys, int(rng.integers(0, 5)))}
            kind = types[int(rng.integers(0, len(types)))]
            reply = exchange(p.encode_json(kind, request_id, body))
            assert reply.request_id == request_id
            if reply.type == p.ERROR:
                assert reply.json()["code"] != "internal", (kind, body, reply.json())
        assert exchange(p.encode(p.PING, 99_999, b"")).type != p.ERROR
    finally:
        link.close()
    assert (tmp_path / "outside").read_text() == "keep"
    assert sorted(os.listdir(tmp_path)) == ["board", "outside"]


_WRITER = """
import sys
from edgeprune._io import atomic_write_bytes
k = 0
while True:
    k = k % 250 + 1
    atomic_write_bytes(sys.argv[1], bytes([k]) * (8 << 20))
"""


def test_kill_9_during_writes_leaves_old_or_new_and_the_next_write_sweeps(tmp_path):
    target = tmp_path / "out.bin"
    target.write_bytes(bytes([0]) * (8 << 20))
    rng = np.random.default_rng(5)
    for _ in range(4 * SCALE):
        proc = subprocess.Popen([sys.executable, "-c", _WRITER, str(target)])
        time.sleep(float(rng.uniform(0.3, 1.0)))
        proc.send_signal(signal.SIGKILL)
        proc.wait()
        content = target.read_bytes()
        assert len(content) == 8 << 20 and content == content[:1] * len(content)  # not torn
    atomic_write_bytes(target, b"final")
    assert sorted(os.listdir(tmp_path)) == ["out.bin"]  # killed writers' temps swept


def test_every_operator_under_every_opcode(tmp_path, capsys):
    """Each operator re-pointed at each op code of the model: operands that do not fit their
    op code are one line (the MAC rules once raised IndexError)."""
    from edgeprune.model import _U32, OperatorSlot
    from tests import hostile

    for kind in ["int8", "float32", "float16", "dynamic"][: 1 + SCALE // 3]:
        data0 = hostile.model(kind)
        m = Model(bytes(data0))
        for index in range(len(m.operators)):
            for code in range(len(m.opcodes)):
                data = bytearray(data0)
                at = hostile.operators(data)[index].field(OperatorSlot.OPCODE_INDEX)
                if not at:
                    continue
                _U32.pack_into(data, at, code)
                model = tmp_path / "x.tflite"
                model.write_bytes(data)
                _cli(capsys, "inspect", model)
                _cli(capsys, "profile", model)
