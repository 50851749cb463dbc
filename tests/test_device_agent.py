"""The agent through the local:// link (a real child process): transfers, confinement, RUN,
CANCEL, a killed agent, hostile frames, and what INFO says about the board."""

import hashlib
import importlib.metadata
import importlib.util
import os
import subprocess
import sys

import numpy as np
import pytest

from edgeprune.cli import main
from edgeprune.host.device_errors import RemoteError
from edgeprune.host.local_link import LocalLink
from edgeprune.host.transports import parse_url
from firmware_bridge import info
from firmware_bridge import protocol as p
from tests.device_rig import put_many_samples, record_killing_the_agent
from tests.models import INPUT_SHAPES, random_inputs


def sha(path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def leftovers(root) -> list[str]:
    """Files in the work directory other than the agent's own state."""
    found = []
    for directory, dirs, files in os.walk(root):
        dirs[:] = [d for d in dirs if d != ".edgeprune"]
        found += [os.path.relpath(os.path.join(directory, f), root) for f in files]
    return sorted(found)


def test_push_pull_round_trip_and_resume_after_an_interrupted_upload(board, tmp_path):
    device, root = board
    src = tmp_path / "blob.bin"
    src.write_bytes(os.urandom(3 * 2**20 + 123))
    digest = sha(src)
    # Interrupt an upload by hand after two chunks, then push the file normally.
    device.request(p.PUT_OPEN, {"path": "m/blob.bin", "size": src.stat().st_size, "sha256": digest})
    head = bytes.fromhex(digest)
    step = 2**20 - 64
    for offset in (0, step):
        chunk = src.read_bytes()[offset : offset + step]
        device.request(p.PUT_DATA, head + p.OFFSET.pack(offset) + chunk)
    assert not (root / "m" / "blob.bin").exists()
    device.reconnect()
    result = device.put(src, "m/blob.bin")
    assert result["resumed_from"] == 2 * step and result["sha256"] == digest
    assert sha(root / "m" / "blob.bin") == digest
    assert list((root / ".edgeprune" / "partial").iterdir()) == []

    back = device.get("m/blob.bin", tmp_path)
    assert back["path"] == str(tmp_path / "blob.bin") and sha(tmp_path / "blob.bin") == digest
    assert sorted(p.name for p in tmp_path.iterdir()) == ["blob.bin", "board"]


def test_paths_outside_the_work_directory_are_refused(board, tmp_path):
    device, root = board
    outside = tmp_path / "outside"
    outside.mkdir()
    (outside / "secret").write_text("not yours")
    root.mkdir(exist_ok=True)
    (root / "escape").symlink_to(outside)
    src = tmp_path / "x.bin"
    src.write_bytes(b"payload")
    for target in ("../x.bin", "/tmp/x.bin", "escape/x.bin", ".edgeprune/x.bin", "a/../../x"):
        with pytest.raises(RemoteError) as e:
            device.put(src, target)
        assert e.value.code == "path", target
    with pytest.raises(RemoteError) as e:
        device.get("escape/secret", tmp_path / "got")
    assert e.value.code == "path" and not (tmp_path / "got").exists()
    assert sorted(os.listdir(outside)) == ["secret"] and not (tmp_path / "x.bin.partial").exists()


def _raw_agent(root):
    link = LocalLink(parse_url(f"local://{root}"))
    decoder = p.Decoder()

    def exchange(data: bytes, replies: int) -> list:
        link.write(data)
        got = []
        while len(got) < replies:
            decoder.feed(link.read())
            got += [i for i in decoder.items() if isinstance(i, p.Frame)]
        return got

    return link, exchange


def test_hostile_frames_get_errors_and_the_agent_keeps_serving(tmp_path):
    link, exchange = _raw_agent(tmp_path / "board")
    try:
        hello = exchange(
            p.encode_json(p.HELLO, 1, {"versions": [p.VERSION], "max_payload": 4096}), 1
        )
        assert hello[0].json()["max_payload"] == 4096
        oversize = p.HEADER.pack(p.MAGIC, 1, p.PUT_DATA, 2, 1 << 31)
        oversize += (__import__("zlib").crc32(oversize)).to_bytes(4, "big")
        damaged = bytearray(p.encode(p.PING, 5, b"x" * 50))
        damaged[30] ^= 1
        burst = b"".join(
            [
                os.urandom(300).replace(b"EP", b"ep"),
                oversize + b"\0" * 5000,
                p.encode(p.RUN, 3, b"{not json"),
                p.encode(0x55, 4, b""),
                bytes(damaged),
                p.encode_json(p.HELLO, 6, {"versions": [7]}),
                p.encode(p.GET_DATA, 7, b'{"path": "x", "offset": -1, "length": 999999}'),
            ]
        )
        replies = exchange(burst, 6)
        codes = {r.request_id: r.json()["code"] for r in replies}
        assert codes == {
            2: "too_large",
            3: "bad_request",
            4: "unknown_type",
            5: "corrupt",
            6: "version",
            7: "bad_request",
        }
        assert exchange(p.encode(p.PING, 8), 1)[0].type == p.OK
        assert link.proc.poll() is None
    finally:
        link.close()
    assert link.proc.returncode == 0


@pytest.fixture
def model_and_data(tflite_model, tmp_path):
    data = tmp_path / "x.npy"
    np.save(data, random_inputs(40, INPUT_SHAPES["mixed"][1:], seed=3))
    return tflite_model("int8"), data


def test_record_prune_personalize_inspect_on_the_board_match_local_runs(
    board, model_and_data, tmp_path, capsys
):
    device, root = board
    model, data = model_and_data
    device.put(model, "m.tflite")
    device.put(data, "data/x.npy")
    events = []
    params = {"model": "m.tflite", "data": "data", "output": "maps/map.npz"}
    result = device.run("record", params, events.append)
    assert result == {
        "result": {"output": "maps/map.npz", "samples": 40, "layers": 6},
        "outputs": ["maps/map.npz"],
        "directories": [],
    }
    assert events[0] == {"kind": "started", "operation": "record", "outputs": ["maps/map.npz"]}
    progress = [e for e in events if e["kind"] == "progress"]
    assert progress[-1]["n"] == progress[-1]["total"] == 40 and progress[-1]["unit"] == "sample"
    args = ["--sparsity", "0.5", "--scope", "global", "-o", "p.tflite"]
    pruning = {"sparsity": 0.5, "scope": "global", "output": "p.tflite"}
    device.run("prune", {"model": "m.tflite", "map": "maps/map.npz", **pruning}, events.append)
    params = {"model": "m.tflite", "data": "data/x.npy", "output": "u.tflite", "report": "rep"}
    reply = device.run("personalize", params, print)
    assert reply["directories"] == ["rep"] and set(reply["outputs"]) == {"u.tflite", "rep"}
    inspected = device.run("inspect", {"model": "p.tflite"}, print)["result"]
    assert 0.45 < inspected["totals"]["sparsity"] < 0.55
    totals = device.run("profile", {"model": "p.tflite"}, print)["result"]["totals"]
    assert totals["effective_macs"] < totals["macs"]

    # The same commands here give byte-identical files.
    local = tmp_path / "local"
    local.mkdir()
    capsys.readouterr()
    assert main(["record", str(model), str(data), "-o", str(local / "map.npz"), "-q"]) == 0
    assert (
        main(["prune", str(model), str(local / "map.npz"), *args[:-1], str(local / "p.tflite")])
        == 0
    )
    device.get("p.tflite", tmp_path / "remote_p.tflite")
    assert sha(tmp_path / "remote_p.tflite") == sha(local / "p.tflite")
    assert {"m.tflite", "p.tflite", "u.tflite", "rep/report.json"} <= set(leftovers(root))


def test_a_meter_url_cannot_make_the_agent_open_files_or_connections(
    board, model_and_data, tmp_path
):
    """USB meters are pyserial URLs, which reach files (spy://…?file=) and sockets; the agent
    registers none, so bench on a board refuses them before opening anything."""
    device, root = board
    device.put(model_and_data[0], "m.tflite")
    target = tmp_path / "outside.txt"
    for meter in (f"um24c:spy://loop://?file={target}", "um25c:socket://127.0.0.1:9"):
        with pytest.raises(RemoteError) as e:
            device.run("bench", {"model": "m.tflite", "runs": 1, "energy": meter}, print)
        assert e.value.code == "failed" and "unknown energy meter" in str(e.value)
    assert not target.exists() and leftovers(root) == ["m.tflite"]


def test_unknown_operations_and_escaping_arguments_are_refused(board, model_and_data):
    device, root = board
    model, data = model_and_data
    device.put(model, "m.tflite")
    runnable = device.info()["operations"]
    assert {"inspect", "record", "prune", "personalize"} <= set(runnable)
    for name in ["sh", "convert", "push", "device add"]:
        with pytest.raises(RemoteError) as e:
            device.run(name, {"model": "m.tflite"}, print)
        assert e.value.code == "unknown_operation" and "this board runs inspect" in str(e.value)
    refused = [
        {"data": "x.npy", "output": "/tmp/map.npz"},
        {"data": "../x.npy", "output": "map.npz"},
        {"data": "x.npy", "output": "map.npz", "resume": "../../etc/passwd"},
    ]
    for params in refused:
        with pytest.raises(RemoteError) as e:
            device.run("record", {"model": "m.tflite", **params}, print)
        assert e.value.code == "path", params
    with pytest.raises(RemoteError) as e:
        device.run("record", {"model": "m.tflite"}, print)
    assert e.value.code == "bad_arguments" and "data is required" in str(e.value)
    for params, message in [
        ({"model": "m.tflite", "sparsity": 2, "output": "p.tflite"}, "between 0 and 1"),
        ({"model": "m.tflite", "sparsity": 0.5, "output": "p", "score": "x"}, "one of fine"),
        ({"model": "m.tflite", "sparsity": 0.5, "output": "p", "shell": "rm"}, "unknown"),
    ]:
        with pytest.raises(RemoteError) as e:
            device.run("prune", params, print)
        assert e.value.code == "bad_arguments" and message in str(e.value), params
    assert leftovers(root) == ["m.tflite"]


def test_cancel_stops_a_run_and_nothing_is_written(board, model_and_data):
    device, root = board
    device.put(model_and_data[0], "m.tflite")
    put_many_samples(root)
    seen = []

    def interrupt_on_progress(event):
        seen.append(event)
        if event["kind"] == "progress":
            raise KeyboardInterrupt  # what Ctrl-C does: Device.run sends CANCEL

    params = {"model": "m.tflite", "data": "many.npy", "output": "map.npz"}
    with pytest.raises(KeyboardInterrupt):
        device.run("record", params, interrupt_on_progress)
    progress = [e["n"] for e in seen if e["kind"] == "progress"]
    assert max(progress) < 40_000
    assert leftovers(root) == ["m.tflite", "many.npy"]
    assert device.request(p.PING, b"").type == p.OK  # same session, agent still serving


def test_an_agent_killed_mid_run_is_a_clear_error_and_leaves_nothing(board, model_and_data):
    device, root = board
    device.put(model_and_data[0], "m.tflite")
    put_many_samples(root)
    pid, error = record_killing_the_agent(device, "out/map.npz")
    assert "the agent exited (status -9)" in error
    # What a killed writer leaves (edgeprune's atomic temp names) is swept by the next agent.
    (root / "out").mkdir(exist_ok=True)
    (root / "out" / ".map.npz.k2j4_x9a.tmp").write_bytes(b"half")
    device.reconnect()
    assert device.info()["agent_pid"] != pid
    assert leftovers(root) == ["m.tflite", "many.npy"]


def test_info_reports_the_board_and_edge_tpu_from_system_files(board, tmp_path):
    device, _ = board
    here = device.info()
    assert here["python"] == ".".join(map(str, sys.version_info[:3]))
    assert here["runtime"]["name"] == "ai-edge-litert" and here["edgetpu"]["usable"] is False
    fake = tmp_path / "sysroot"
    usb = fake / "sys/bus/usb/devices/2-1"
    usb.mkdir(parents=True)
    (usb / "idVendor").write_text("18d1\n")
    (usb / "idProduct").write_text("9302\n")
    (fake / "proc/device-tree").mkdir(parents=True)
    (fake / "proc/device-tree/model").write_text("Raspberry Pi 5 Model B Rev 1.0\0")
    assert info.board_model(fake) == "Raspberry Pi 5 Model B Rev 1.0"
    tpu = info.edgetpu(fake)
    assert tpu["devices"] == ["usb 18d1:9302 (2-1)"] and tpu["usable"] is False
    assert "libedgetpu1-std" in tpu["hint"]
    lib = fake / "usr/lib/aarch64-linux-gnu"
    lib.mkdir(parents=True)
    (lib / "libedgetpu.so.1").write_bytes(b"")
    assert info.edgetpu(fake)["usable"] is True
    # The fleet: Flower's version (if this venv has it), the SuperNode set up and running or not.
    flwr = importlib.util.find_spec("flwr") and importlib.metadata.version("flwr")
    assert here["fleet"]["flwr"] == (flwr or None) and here["fleet"]["supernode_set_up"] is False
    home = tmp_path / "home"
    assert info.fleet(fake, home)["supernode_running"] is False
    (fake / "proc/4242").mkdir(parents=True)
    (fake / "proc/4242/cmdline").write_bytes(b"/v/bin/python\0/v/bin/flower-supernode\0--insecure")
    (home / info.SUPERNODE_SCRIPT).parent.mkdir(parents=True)
    (home / info.SUPERNODE_SCRIPT).write_text("#!/bin/sh\n")
    board = info.fleet(fake, home)
    assert board["supernode_set_up"] is True and board["supernode_running"] is True


def test_the_agent_starts_with_the_standard_library_only(tmp_path):
    """On a board the agent must start (and answer HELLO/INFO) before numpy is imported; of
    edgeprune it may load only the modules that import nothing else (errors, _io)."""
    code = (
        "import sys, firmware_bridge.serve, firmware_bridge.agent;"
        "light = {'edgeprune', 'edgeprune.errors', 'edgeprune._io'};"
        "heavy = {'numpy', 'paramiko', 'serial', 'tensorflow'} & set(sys.modules);"
        "heavy |= {m for m in sys.modules if m.startswith('edgeprune')} - light;"
        "sys.exit(f'imported {heavy}' if heavy else 0)"
    )
    subprocess.run(
        [sys.executable, "-c", code],
        check=True,
        cwd=tmp_path,
        env={**os.environ, "PYTHONPATH": str(__import__("pathlib").Path(__file__).parents[1])},
    )


def test_uploads_are_bounded_by_their_announced_size_and_the_free_disk(board):
    device, root = board
    digest = hashlib.sha256(b"0123456789").hexdigest()
    with pytest.raises(RemoteError) as e:
        device.request(p.PUT_OPEN, {"path": "huge.bin", "size": 10**18, "sha256": digest})
    assert e.value.code == "no_space" and "more bytes" in str(e.value)
    device.request(p.PUT_OPEN, {"path": "ten.bin", "size": 10, "sha256": digest})
    with pytest.raises(RemoteError) as e:
        device.request(p.PUT_DATA, bytes.fromhex(digest) + p.OFFSET.pack(0) + b"0123456789!")
    assert e.value.code == "bad_request"
    device.request(p.PUT_DATA, bytes.fromhex(digest) + p.OFFSET.pack(0) + b"0123456789")
    device.request(p.PUT_CLOSE, {"path": "ten.bin", "sha256": digest})
    assert (root / "ten.bin").read_bytes() == b"0123456789"


def test_keepalives_flow_while_a_request_takes_long(tmp_path):
    root = tmp_path / "board"
    root.mkdir()
    with open(root / "big.bin", "wb") as f:  # sparse: hashing it takes a while, writing it none
        f.truncate(128 << 20)
    argv = [sys.executable, "-m", "firmware_bridge", "serve", "--stdio", "--root", str(root)]
    agent = subprocess.Popen(
        [*argv, "--keepalive", "0.02"], stdin=subprocess.PIPE, stdout=subprocess.PIPE
    )
    decoder = p.Decoder()
    agent.stdin.write(p.encode_json(p.GET_OPEN, 9, {"path": "big.bin"}))
    agent.stdin.flush()
    kinds = []
    while not kinds or kinds[-1] != p.OK:
        decoder.feed(os.read(agent.stdout.fileno(), 65536))
        kinds += [item.type for item in decoder.items()]
    agent.stdin.close()
    assert agent.wait(10) == 0
    assert kinds.count(p.KEEPALIVE) >= 3 and set(kinds) == {p.KEEPALIVE, p.OK}
