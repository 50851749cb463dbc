"""Real parts for the device-link tests and benchmark: an sshd on 127.0.0.1, socat pty pairs, a
TCP proxy that can cut a connection, and a relay between ptys that drops or flips bytes.

sshd runs as whoever runs the tests (root in CI) with throw-away host and user keys on free
unprivileged ports. Port `port` gives the agent this checkout (PYTHONPATH); port `bare_port` gives
it nothing, for the "agent not installed" case.
"""

from __future__ import annotations

import contextlib
import os
import pwd
import shutil
import signal
import socket
import subprocess
import sys
import threading
import time
import tty
from dataclasses import dataclass, field
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
SSHD = "/usr/sbin/sshd"


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _wait_for(check, what: str, timeout: float = 10.0) -> None:
    deadline = time.monotonic() + timeout
    while not check():
        if time.monotonic() > deadline:
            raise RuntimeError(f"timed out waiting for {what}")
        time.sleep(0.02)


def _accepts(port: int) -> bool:
    with socket.socket() as s:
        return s.connect_ex(("127.0.0.1", port)) == 0


def keygen(path: Path) -> Path:
    subprocess.run(
        ["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-C", "edgeprune-test", "-f", str(path)],
        check=True,
    )
    return path


class Sshd:
    """An OpenSSH server for one test session; `url()` builds device URLs that reach it.

    Each of `homes` gets a port of its own (`home_ports`) whose sessions have that HOME and no
    PYTHONPATH: several "boards" with their own ~ on one server (device setup on a group)."""

    def __init__(self, directory: Path, homes: tuple[Path, ...] = ()):
        self.dir = directory
        self.user = pwd.getpwuid(os.getuid()).pw_name
        self.host_key = keygen(directory / "host_key")
        self.user_key = keygen(directory / "user_key")
        (directory / "authorized_keys").write_text((directory / "user_key.pub").read_text())
        self.port, self.bare_port = free_port(), free_port()
        self.home_ports = [free_port() for _ in homes]
        self.known_hosts = directory / "known_hosts"
        self.known_hosts.write_text(
            "".join(self.known_hosts_line(p) for p in (self.port, self.bare_port, *self.home_ports))
        )
        per_home = "".join(
            f"Match LocalPort {port}\n  SetEnv HOME={home}\n"
            for port, home in zip(self.home_ports, homes)
        )
        config = directory / "sshd_config"
        config.write_text(
            f"ListenAddress 127.0.0.1\nPort {self.port}\nPort {self.bare_port}\n"
            + "".join(f"Port {port}\n" for port in self.home_ports)
            + f"HostKey {self.host_key}\nAuthorizedKeysFile {directory}/authorized_keys\n"
            "PermitRootLogin prohibit-password\nPasswordAuthentication no\n"
            "KbdInteractiveAuthentication no\nUsePAM no\nStrictModes no\nPidFile none\n"
            "Subsystem sftp internal-sftp\nLogLevel ERROR\n"
            f"Match LocalPort {self.port}\n  SetEnv PYTHONPATH={REPO}\n" + per_home
        )
        if os.getuid() == 0:
            Path("/run/sshd").mkdir(mode=0o755, exist_ok=True)  # privilege separation dir
        with open(directory / "sshd.log", "wb") as log:  # the child keeps its own copy
            self.proc = subprocess.Popen(
                [SSHD, "-D", "-e", "-f", str(config)], stdout=log, stderr=subprocess.STDOUT
            )
        _wait_for(lambda: _accepts(self.port) or self.proc.poll() is not None, "sshd")
        if self.proc.poll() is not None:
            raise RuntimeError(f"sshd did not start: {(directory / 'sshd.log').read_text()}")

    def known_hosts_line(self, port: int) -> str:
        key = (self.dir / "host_key.pub").read_text().split()[:2]
        return f"[127.0.0.1]:{port} {' '.join(key)}\n"

    def url(
        self,
        workdir: Path,
        port: int | None = None,
        python: str = sys.executable,
        key: bool = True,
    ) -> str:
        query = f"?python={python}" + (f"&key={self.user_key}" if key else "")
        return f"ssh://{self.user}@127.0.0.1:{port or self.port}{workdir}{query}"

    def stop(self) -> None:
        self.proc.terminate()
        self.proc.wait(10)


def have(*programs: str) -> str | None:
    """The first of `programs` that is missing, if any."""
    return next((p for p in programs if not (shutil.which(p) or Path(p).exists())), None)


@dataclass
class PtyPair:
    """Two connected ptys made by socat; `a` and `b` are their paths."""

    a: Path
    b: Path
    proc: subprocess.Popen

    @classmethod
    def start(cls, directory: Path, name: str) -> PtyPair:
        a, b = directory / f"{name}-a", directory / f"{name}-b"
        proc = subprocess.Popen(
            ["socat", f"pty,raw,echo=0,link={a}", f"pty,raw,echo=0,link={b}"],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        _wait_for(lambda: a.exists() and b.exists(), "socat ptys")
        return cls(a, b, proc)

    def stop(self) -> None:
        self.proc.terminate()
        self.proc.wait(10)


@dataclass
class Faults:
    """What a relay does to one direction: byte indexes to drop or flip, and a pace in bytes/s."""

    drop: set[int] = field(default_factory=set)
    flip: set[int] = field(default_factory=set)
    rate: float | None = None
    seen: int = 0
    done: list[str] = field(default_factory=list)


class Relay:
    """Copies bytes between two pty paths, in both directions, applying `Faults`."""

    def __init__(self, left: Path, right: Path, to_right: Faults, to_left: Faults):
        self.fds = [os.open(p, os.O_RDWR | os.O_NOCTTY) for p in (left, right)]
        for fd in self.fds:
            tty.setraw(fd)
        self._stop = threading.Event()
        self.threads = [
            threading.Thread(target=self._pump, args=(self.fds[0], self.fds[1], to_right)),
            threading.Thread(target=self._pump, args=(self.fds[1], self.fds[0], to_left)),
        ]
        for t in self.threads:
            t.daemon = True
            t.start()

    def _pump(self, src: int, dst: int, faults: Faults) -> None:
        import select

        busy_until = 0.0  # when the paced wire has sent everything it was given
        while not self._stop.is_set():
            ready, _, _ = select.select([src], [], [], 0.1)
            if not ready:
                continue
            try:
                data = bytearray(os.read(src, 4096))
            except OSError:
                return
            out = bytearray()
            for i, byte in enumerate(data, faults.seen):
                if i in faults.drop:
                    faults.done.append(f"dropped byte {i}")
                    continue
                if i in faults.flip:
                    faults.done.append(f"flipped byte {i}")
                    byte ^= 0x5A
                out.append(byte)
            faults.seen += len(data)
            if faults.rate:  # pace like a UART: bytes leave one after another at `rate`
                busy_until = max(busy_until, time.monotonic()) + len(out) / faults.rate
                time.sleep(max(0.0, busy_until - time.monotonic()))
            try:
                os.write(dst, bytes(out))
            except OSError:
                return

    def stop(self) -> None:
        self._stop.set()
        for t in self.threads:
            t.join(2)
        for fd in self.fds:
            os.close(fd)


class CuttingProxy:
    """A TCP proxy to 127.0.0.1:`target`; the first `cuts` connections are cut after
    `cut_after` bytes from the client. Counts the client bytes of every connection."""

    def __init__(self, target: int, cut_after: int, cuts: int = 1):
        self.target, self.cut_after, self.cuts = target, cut_after, cuts
        self.sent: list[int] = []  # client bytes per connection
        self.server = socket.create_server(("127.0.0.1", 0))
        self.port = self.server.getsockname()[1]
        threading.Thread(target=self._accept, daemon=True).start()

    def _accept(self) -> None:
        while True:
            try:
                client, _ = self.server.accept()
            except OSError:
                return
            upstream = socket.create_connection(("127.0.0.1", self.target))
            index = len(self.sent)
            self.sent.append(0)
            limit = self.cut_after if index < self.cuts else None
            pair = (client, upstream)
            threading.Thread(target=self._pump, args=(pair, index, limit), daemon=True).start()
            threading.Thread(target=self._back, args=(pair,), daemon=True).start()

    def _pump(self, pair, index: int, limit: int | None) -> None:
        client, upstream = pair
        try:
            while data := client.recv(65536):
                if limit is not None and self.sent[index] + len(data) > limit:
                    break  # the cut: both sides see the connection drop
                self.sent[index] += len(data)
                upstream.sendall(data)
        except OSError:
            pass
        for s in pair:
            with contextlib.suppress(OSError):
                s.shutdown(socket.SHUT_RDWR)
            s.close()

    def _back(self, pair) -> None:
        client, upstream = pair
        try:
            while data := upstream.recv(65536):
                client.sendall(data)
        except OSError:
            pass

    def close(self) -> None:
        self.server.close()


# ----- a run to kill ------------------------------------------------------------------------------


def put_many_samples(root: Path) -> None:
    """A sparse .npy of 40,000 zero samples of the `mixed` model's input (16x16x3) on the board:
    recording it takes seconds, writing it none (it is made in place: the tests are about RUN)."""
    import numpy as np

    root.mkdir(exist_ok=True)
    shape = (40_000, 16, 16, 3)
    np.lib.format.open_memmap(root / "many.npy", mode="w+", dtype=np.float32, shape=shape).flush()


def record_killing_the_agent(device, output: str) -> tuple[int, str]:
    """Run `record` of m.tflite on many.npy into `output` and SIGKILL the device's agent at the
    first progress event: the killed agent's pid and the LinkError's message, for the test."""
    from edgeprune.host.device_errors import LinkError

    pid = device.info()["agent_pid"]

    def kill_on_progress(event):
        if event["kind"] == "progress":
            os.kill(pid, signal.SIGKILL)

    try:
        device.run(
            "record", {"model": "m.tflite", "data": "many.npy", "output": output}, kill_on_progress
        )
    except LinkError as e:
        return pid, str(e)
    raise AssertionError("record finished although its agent was killed")
