"""The serial:// link over socat pty pairs, with a relay between host and agent that drops and
flips bytes: transfers still arrive sha256-identical, and operations still run."""

import hashlib
import os
import subprocess
import sys

import pytest

from edgeprune.host import session
from edgeprune.host.client import Device
from tests.device_rig import REPO, Faults, PtyPair, Relay, have

pytestmark = [
    pytest.mark.host("serial"),
    pytest.mark.skipif(have("socat") is not None, reason="needs socat"),
]
BAUD = 921600


@pytest.fixture
def serial_board(tmp_path, monkeypatch):
    """make(to_agent=Faults(), to_host=Faults()) -> (device URL, work directory).

    host ⇄ pty pair ⇄ relay (faults) ⇄ pty pair ⇄ `firmware_bridge serve --serial`
    """
    monkeypatch.setattr(session, "RESEND_AFTER", 0.4)  # keep the tests quick; 1 s by default
    started = []

    def make(to_agent: Faults | None = None, to_host: Faults | None = None):
        host_side, agent_side = PtyPair.start(tmp_path, "h"), PtyPair.start(tmp_path, "a")
        relay = Relay(host_side.b, agent_side.a, to_agent or Faults(), to_host or Faults())
        root = tmp_path / "board"
        with open(tmp_path / "agent.log", "wb") as log:
            agent = subprocess.Popen(
                [sys.executable, "-m", "firmware_bridge", "serve", "--serial", str(agent_side.b)]
                + ["--baud", str(BAUD), "--root", str(root)],
                env={**os.environ, "PYTHONPATH": str(REPO)},
                stderr=log,
            )
        started.append((agent, relay, host_side, agent_side))
        return f"serial://{host_side.a}?baud={BAUD}", root

    yield make
    for agent, relay, *pairs in started:
        agent.terminate()
        agent.wait(10)
        relay.stop()
        for pair in pairs:
            pair.stop()


def sha(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def test_push_pull_and_run_over_a_clean_serial_link(serial_board, tmp_path, tflite_model):
    url, root = serial_board()
    payload = os.urandom(150_000)
    (tmp_path / "blob.bin").write_bytes(payload)
    with Device(url) as device:
        assert device.info()["workdir"] == str(root)
        device.put(tmp_path / "blob.bin", "blob.bin")
        device.put(tflite_model("int8"), "m.tflite")
        result = device.run("inspect", {"model": "m.tflite"}, print)["result"]
        got = device.get("blob.bin", tmp_path / "back.bin")
    assert "CONV_2D" in result["operators"]
    assert sha((root / "blob.bin").read_bytes()) == sha(payload) == got["sha256"]
    assert (tmp_path / "back.bin").read_bytes() == payload


def test_dropped_and_flipped_bytes_both_ways_are_recovered(serial_board, tmp_path):
    to_agent = Faults(drop={3_000, 70_000}, flip={30_000, 120_000})
    to_host = Faults(drop={40_000}, flip={12_000, 90_000})  # hit while pulling
    url, root = serial_board(to_agent, to_host)
    payload = os.urandom(160_000)
    (tmp_path / "blob.bin").write_bytes(payload)
    with Device(url) as device:
        pushed = device.put(tmp_path / "blob.bin", "blob.bin")
        pulled = device.get("blob.bin", tmp_path / "back.bin")
    assert len(to_agent.done) == 4 and len(to_host.done) == 3  # every fault really happened
    assert pushed["sha256"] == pulled["sha256"] == sha(payload)
    assert (root / "blob.bin").read_bytes() == payload == (tmp_path / "back.bin").read_bytes()


def test_a_cable_pulled_mid_push_is_survived(serial_board, tmp_path):
    lost = range(60_000, 110_000)  # 50 kB that never arrive, as if the cable were out
    to_agent = Faults(drop=lost)
    url, root = serial_board(to_agent)
    payload = os.urandom(200_000)
    (tmp_path / "blob.bin").write_bytes(payload)
    with Device(url) as device:
        device.put(tmp_path / "blob.bin", "blob.bin")
    assert len(to_agent.done) == len(lost)
    assert (root / "blob.bin").read_bytes() == payload
    assert list((root / ".edgeprune" / "partial").iterdir()) == []


def test_a_port_with_no_agent_behind_it_says_so(tmp_path, monkeypatch):
    monkeypatch.setattr(session, "SILENCE", 1.5)
    monkeypatch.setattr(session, "STARTUP", 1.5)
    monkeypatch.setattr(session, "RESEND_AFTER", 0.3)
    pair = PtyPair.start(tmp_path, "empty")
    try:
        with pytest.raises(session.LinkError) as e:
            Device(f"serial://{pair.a}?baud={BAUD}").info()
    finally:
        pair.stop()
    assert "no agent answered" in str(e.value) and "firmware_bridge serve" in str(e.value)
