"""The ssh:// link against a real OpenSSH server on 127.0.0.1: host keys, key and agent auth, a
missing agent, a link cut mid-transfer, and an agent killed mid-RUN."""

import hashlib
import os
import subprocess
import sys
from pathlib import Path

import pytest

from edgeprune.host.client import Device
from edgeprune.host.device_errors import AgentMissingError, HostKeyError, LinkError
from edgeprune.host.transfers import RECONNECTS
from tests.device_rig import (
    SSHD,
    CuttingProxy,
    Sshd,
    have,
    put_many_samples,
    record_killing_the_agent,
)

pytestmark = [
    pytest.mark.host("paramiko"),
    pytest.mark.skipif(
        have(SSHD, "ssh-keygen", "ssh-agent", "ssh-add") is not None,
        reason="needs openssh-server and openssh-client (apt-get install openssh-server)",
    ),
]


@pytest.fixture(scope="module")
def sshd(tmp_path_factory):
    server = Sshd(tmp_path_factory.mktemp("sshd"))
    yield server
    server.stop()


@pytest.fixture
def known_hosts(sshd, monkeypatch):
    monkeypatch.setenv("EDGEPRUNE_KNOWN_HOSTS", str(sshd.known_hosts))
    return sshd.known_hosts


def sha(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def test_push_run_pull_with_a_key(sshd, known_hosts, tmp_path):
    root = tmp_path / "board"
    src = tmp_path / "blob.bin"
    src.write_bytes(os.urandom(5 * 2**20 + 7))
    with Device(sshd.url(root)) as device:
        info = device.info()
        assert info["workdir"] == str(root) and info["agent_pid"] != os.getpid()
        result = device.put(src, "in/blob.bin")
        assert result["size"] == src.stat().st_size and sha(root / "in" / "blob.bin") == sha(src)
        back = device.get("in/blob.bin", tmp_path / "back.bin")
    assert back["sha256"] == sha(src) == sha(tmp_path / "back.bin")


def test_authentication_through_ssh_agent(sshd, known_hosts, tmp_path, monkeypatch):
    monkeypatch.setenv("HOME", str(tmp_path))  # no ~/.ssh keys to fall back on
    monkeypatch.delenv("SSH_AUTH_SOCK", raising=False)
    with pytest.raises(LinkError) as e:
        Device(sshd.url(tmp_path / "b", key=False)).info()
    assert "authentication as" in str(e.value) and "ssh-copy-id" in str(e.value)

    sock = tmp_path / "agent.sock"
    agent = subprocess.Popen(["ssh-agent", "-D", "-a", str(sock)], stdout=subprocess.DEVNULL)
    try:
        env = {**os.environ, "SSH_AUTH_SOCK": str(sock)}
        for _ in range(100):
            if sock.exists():
                break
            __import__("time").sleep(0.02)
        subprocess.run(["ssh-add", "-q", str(sshd.user_key)], env=env, check=True)
        monkeypatch.setenv("SSH_AUTH_SOCK", str(sock))
        with Device(sshd.url(tmp_path / "b", key=False)) as device:
            assert device.info()["workdir"] == str(tmp_path / "b")
    finally:
        agent.terminate()
        agent.wait()


def test_unknown_and_changed_host_keys_are_refused(sshd, tmp_path, monkeypatch):
    empty = tmp_path / "known_hosts"
    empty.write_text("")
    monkeypatch.setenv("EDGEPRUNE_KNOWN_HOSTS", str(empty))
    with pytest.raises(HostKeyError) as e:
        Device(sshd.url(tmp_path / "b")).info()
    shown = subprocess.run(
        ["ssh-keygen", "-lf", str(sshd.host_key) + ".pub"], capture_output=True, text=True
    ).stdout.split()[1]
    message = str(e.value)
    assert shown.startswith("SHA256:") and shown in message
    assert f"ssh -p {sshd.port} {sshd.user}@127.0.0.1" in message and "answering yes" in message
    assert empty.read_text() == "" and not (tmp_path / "b").exists()

    other = subprocess.run(
        ["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-f", str(tmp_path / "other")], check=True
    )
    assert other.returncode == 0
    key = (tmp_path / "other.pub").read_text().split()[:2]
    empty.write_text(f"[127.0.0.1]:{sshd.port} {' '.join(key)}\n")
    with pytest.raises(HostKeyError) as e:
        Device(sshd.url(tmp_path / "b")).info()
    assert "CHANGED" in str(e.value) and "ssh-keygen -R" in str(e.value)


def test_a_board_without_python_or_agent_is_explained(sshd, known_hosts, tmp_path):
    with pytest.raises(AgentMissingError) as e:
        Device(sshd.url(tmp_path / "b", python="/opt/nowhere/python3")).info()
    assert "/opt/nowhere/python3 was not found on the board" in str(e.value)
    assert "apt-get install python3" in str(e.value)
    if not Path("/usr/bin/python3").exists():
        pytest.skip("no system python3 to stand for a board without edgeprune")
    # The bare port starts the board's python with no edgeprune on its path.
    url = sshd.url(tmp_path / "b", port=sshd.bare_port, python="/usr/bin/python3")
    with pytest.raises(AgentMissingError) as e:
        Device(url).info()
    assert "agent is not installed for /usr/bin/python3" in str(e.value)
    assert "edgeprune device setup" in str(e.value)


def _proxied(sshd, proxy, root) -> str:
    with open(sshd.known_hosts, "a") as f:
        f.write(sshd.known_hosts_line(proxy.port))
    return sshd.url(root).replace(f":{sshd.port}/", f":{proxy.port}/")


def test_a_link_cut_mid_push_reconnects_and_resumes(sshd, known_hosts, tmp_path):
    src = tmp_path / "model.bin"
    src.write_bytes(os.urandom(12 * 2**20))
    proxy = CuttingProxy(sshd.port, cut_after=5 * 2**20)
    try:
        with Device(_proxied(sshd, proxy, tmp_path / "board")) as device:
            result = device.put(src, "model.bin")
    finally:
        proxy.close()
    assert result["reconnects"] == 1 and result["resumed_from"] == 0
    assert 2**20 < result["reconnected_at"][0] < 5 * 2**20
    assert sha(tmp_path / "board" / "model.bin") == sha(src)
    assert proxy.sent[1] < src.stat().st_size - result["reconnected_at"][0] + 2**20


def test_a_link_that_stays_cut_fails_clearly_and_the_next_push_resumes(sshd, known_hosts, tmp_path):
    src = tmp_path / "model.bin"
    src.write_bytes(os.urandom(12 * 2**20))
    root = tmp_path / "board"
    # Every connection of the command is cut after 3 MiB: less than the file, all told.
    proxy = CuttingProxy(sshd.port, cut_after=3 * 2**20, cuts=RECONNECTS + 1)
    try:
        with pytest.raises(LinkError) as e, Device(_proxied(sshd, proxy, root)) as device:
            device.put(src, "model.bin")
    finally:
        proxy.close()
    assert "run the same push again to resume it" in str(e.value)
    assert not (root / "model.bin").exists()
    with Device(sshd.url(root)) as device:
        result = device.put(src, "model.bin")
    assert 0 < result["resumed_from"] < 12 * 2**20 and sha(root / "model.bin") == sha(src)


def test_an_agent_killed_mid_run_over_ssh(sshd, known_hosts, tmp_path, tflite_model):
    root = tmp_path / "board"
    root.mkdir()
    (root / "m.tflite").write_bytes(tflite_model("int8").read_bytes())
    put_many_samples(root)
    with Device(sshd.url(root)) as device:
        _, error = record_killing_the_agent(device, "map.npz")
    assert "record did not finish" in error and "the agent stopped" in error
    assert sorted(p.name for p in root.iterdir()) == [".edgeprune", "m.tflite", "many.npy"]


def test_a_host_alias_from_ssh_config_with_its_key_and_host_key_still_checked(
    sshd, known_hosts, tmp_path, monkeypatch
):
    """`ssh://myboard/...` as ssh reads ~/.ssh/config: HostName, Port, User, IdentityFile."""
    config = tmp_path / "ssh_config"
    config.write_text(
        f"Host myboard\n  HostName 127.0.0.1\n  Port {sshd.port}\n  User {sshd.user}\n"
        f"  IdentityFile {tmp_path / 'missing_key'}\n  IdentityFile {sshd.user_key}\n"
        "Host *\n  User nobody-else\n"
    )
    monkeypatch.setenv("EDGEPRUNE_SSH_CONFIG", str(config))
    monkeypatch.setenv("HOME", str(tmp_path))  # no ~/.ssh keys: the config's key must be used
    monkeypatch.delenv("SSH_AUTH_SOCK", raising=False)
    url = f"ssh://myboard{tmp_path / 'board'}?python={sys.executable}"
    with Device(url) as device:
        assert device.info()["workdir"] == str(tmp_path / "board")
        assert device.put(Path(__file__), "t.py")["size"] == Path(__file__).stat().st_size

    monkeypatch.setenv("EDGEPRUNE_KNOWN_HOSTS", str(tmp_path / "empty_known_hosts"))
    with pytest.raises(HostKeyError) as e:
        Device(url).info()
    assert f"[127.0.0.1]:{sshd.port} is not a known host" in str(e.value)
