"""Throughput of the device link: push over loopback SSH beside scp, and over a pty at 921600 baud.

    python benchmarks/link_perf.py [--size-mb 100] [--rounds 5]

Measures, then writes its section of benchmarks/RESULTS.md (between the link_perf markers):

(a) `edgeprune push` of one random file to the agent over SSH on 127.0.0.1 (a throw-away sshd
    from tests/device_rig.py), beside `scp` of the same file to the same server, alternating
    round by round, wall and sender CPU. All include connecting and authenticating; the push is
    timed as the `python -m edgeprune push` command and in-process (Device.put), beside
    paramiko's own SFTP client (the ceiling of paramiko file transfer) and paramiko alone
    sending the file into `cat > /dev/null`. Goal: the command >= 0.85x scp's speed. Also timed
    (each to its own destination): opening a session alone, and scp of one byte.
(b) push over a socat pty pair to `firmware_bridge serve --serial` at 921600 baud. A pty does not
    enforce a baud rate, so this is the protocol's ceiling over a tty; the same push through a
    relay that paces bytes at 921600 baud (8N1: 92,160 bytes/s) shows it against the UART limit.
"""

from __future__ import annotations

import argparse
import os
import resource
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

import common  # benchmarks/common.py; also puts the repository root on sys.path

from edgeprune.host.client import Device
from edgeprune.host.ssh_link import _connect
from edgeprune.host.transports import parse_url
from tests.device_rig import REPO, Faults, PtyPair, Relay, Sshd, have

SECTION = "link_perf"
SCP_TARGET = 0.85  # push MB/s / scp MB/s
BAUD = 921600
UART_LIMIT = BAUD / 10  # bytes/s on an 8N1 line
MB = 1e6


def log(msg: str) -> None:
    print(msg, file=sys.stderr, flush=True)


def random_file(path: Path, size: int) -> Path:
    with open(path, "wb") as f:
        for _ in range(0, size, 1 << 20):
            f.write(os.urandom(min(1 << 20, size - f.tell())))
    return path


def _children_cpu() -> float:
    usage = resource.getrusage(resource.RUSAGE_CHILDREN)
    return usage.ru_utime + usage.ru_stime


class Clock:
    """Times callables: wall seconds returned (for `common.interleave`), CPU seconds kept.

    CPU is the sender's: this process's (all threads) plus the children it waited for (the CLI,
    scp). The receiving side (sshd, the agent) runs on the same machine but is not counted.
    """

    def __init__(self) -> None:
        self.cpu: dict[str, list[float]] = {}

    def wrap(self, name: str, fn: Callable[[], object]) -> Callable[[], float]:
        def timed() -> float:
            cpu0, child0 = time.process_time(), _children_cpu()
            start = time.perf_counter()
            fn()
            wall = time.perf_counter() - start
            cpu = time.process_time() - cpu0 + _children_cpu() - child0
            self.cpu.setdefault(name, []).append(cpu)
            return wall

        return timed


def measure_ssh(work: Path, src: Path, rounds: int) -> tuple[dict, dict]:
    """Wall seconds per round of each way to send `src` over SSH, and CPU seconds (`Clock`).

    Every variant writes its own destination file, checked against the source at the end.
    """
    sshd = Sshd(work / "sshd")
    os.environ["EDGEPRUNE_KNOWN_HOSTS"] = str(sshd.known_hosts)
    board = work / "board"
    url = sshd.url(board)
    tiny = work / "one_byte.bin"
    tiny.write_bytes(b"x")
    dests = {
        "CLI push": (src, board / "cmd.bin"),
        "in-process push": (src, board / "api.bin"),
        "paramiko SFTP": (src, work / "sftp_copy.bin"),
        "scp": (src, work / "scp_copy.bin"),
        "scp 1 byte": (tiny, work / "scp_tiny.bin"),
        "CLI push 1 byte": (tiny, board / "cmd_tiny.bin"),
    }

    def scp_argv(source: Path, dest: Path) -> list[str]:
        return [
            "scp", "-q", "-i", str(sshd.user_key), "-o", f"UserKnownHostsFile={sshd.known_hosts}",
            "-o", "StrictHostKeyChecking=yes", "-P", str(sshd.port), str(source),
            f"{sshd.user}@127.0.0.1:{dest}",
        ]  # fmt: skip

    def fresh(name: str) -> tuple[Path, Path]:
        source, dest = dests[name]
        dest.unlink(missing_ok=True)
        return source, dest

    def push() -> None:
        _, dest = fresh("in-process push")
        with Device(url) as device:
            device.put(src, dest.name)

    def push_command(name: str = "CLI push") -> None:
        source, dest = fresh(name)
        argv = [sys.executable, "-m", "edgeprune", "push", url, str(source), "--as", dest.name]
        argv.append("-q")
        env = {**os.environ, "PYTHONPATH": str(REPO)}
        subprocess.run(argv, check=True, cwd=REPO, env=env, stdout=subprocess.DEVNULL)

    def connect() -> None:
        with Device(url) as device:
            device.request(0x03, b"")  # PING

    def copy(name: str) -> None:
        subprocess.run(scp_argv(*fresh(name)), check=True)

    def sftp() -> None:
        """paramiko's own SFTP client into sshd's sftp server: paramiko's SFTP ceiling."""
        _, dest = fresh("paramiko SFTP")
        client = _connect(parse_url(url))
        try:
            with client.open_sftp() as session:
                session.put(str(src), str(dest))
        finally:
            client.close()

    def paramiko_raw() -> None:
        """The same bytes through paramiko into `cat > /dev/null`: no file written at all. Sent
        a packet's worth (32 KiB) at a time: paramiko's sendall re-slices a larger buffer."""
        client = _connect(parse_url(url))
        channel = client.get_transport().open_session()
        channel.exec_command("cat > /dev/null")
        with open(src, "rb") as f:
            while block := f.read(1 << 15):
                channel.sendall(block)
        channel.shutdown_write()
        channel.recv_exit_status()
        client.close()

    clock = Clock()
    try:
        push()  # warm the page cache and the agent's imports once
        variants = {
            "CLI push": push_command,
            "in-process push": push,
            "paramiko SFTP": sftp,
            "scp": lambda: copy("scp"),
            "paramiko to /dev/null": paramiko_raw,
            "connect": connect,
            "scp 1 byte": lambda: copy("scp 1 byte"),
            "CLI push 1 byte": lambda: push_command("CLI push 1 byte"),
        }
        wrapped = {name: clock.wrap(name, fn) for name, fn in variants.items()}
        times = common.interleave(wrapped, rounds, log, common.QuietGate(budget_s=20.0 * rounds))
    finally:
        sshd.stop()
    for name, (source, dest) in dests.items():
        assert common.file_digest(dest) == common.file_digest(source), name
    return times, clock.cpu


def measure_serial(work: Path, size: int, paced: bool) -> float:
    """Seconds to push `size` random bytes over ptys to a serial agent (paced like a UART?)."""
    src = random_file(work / f"serial-{size}.bin", size)
    host_side, agent_side = PtyPair.start(work, "h"), PtyPair.start(work, "a")
    rate = UART_LIMIT if paced else None
    relay = Relay(host_side.b, agent_side.a, Faults(rate=rate), Faults(rate=rate))
    agent = subprocess.Popen(
        [sys.executable, "-m", "firmware_bridge", "serve", "--serial", str(agent_side.b)]
        + ["--baud", str(BAUD), "--root", str(work / "serial-board")],
        env={**os.environ, "PYTHONPATH": str(REPO)},
    )
    try:
        with Device(f"serial://{host_side.a}?baud={BAUD}") as device:
            device.request(0x03, b"")  # PING: the agent is up before the clock starts
            start = time.perf_counter()
            device.put(src, src.name)
            seconds = time.perf_counter() - start
    finally:
        agent.terminate()
        agent.wait(10)
        relay.stop()
        host_side.stop()
        agent_side.stop()
    assert common.file_digest(work / "serial-board" / src.name) == common.file_digest(src)
    return seconds


def report(size: int, rounds: int, ssh, cpu: dict[str, list[float]], serial: dict) -> str:
    wall = ssh.picked()
    cpu = {name: ssh.pick(values) for name, values in cpu.items()}
    fixed = {"push": common.median(wall["connect"]), "scp": common.median(wall["scp 1 byte"])}
    scp = wall["scp"]
    rows = []
    for name, label in (
        ("CLI push", "`edgeprune push` (the command)"),
        ("in-process push", "`Device.put` (in-process)"),
        ("paramiko SFTP", "paramiko's SFTP client `put` (into sshd's sftp)"),
        ("scp", "`scp` (OpenSSH)"),
        ("paramiko to /dev/null", "paramiko alone: the file into `cat > /dev/null`"),
    ):
        speed = common.median(common.paired_ratios(scp, wall[name]))  # t_scp / t = rate ratio
        cpu_ratio = common.median(common.paired_ratios(cpu[name], cpu["scp"]))
        seconds = common.median(wall[name])
        rows.append(
            f"| {label} | {seconds:.2f} | {size / MB / seconds:.0f} | {speed:.2f}x "
            f"| {common.median(cpu[name]):.2f} | {cpu_ratio:.2f}x |"
        )
        if name == "CLI push":
            cli_ratio = speed
    net = {k: size / MB / (common.median(wall[v]) - fixed[k])
           for k, v in (("push", "in-process push"), ("scp", "scp"))}  # fmt: skip
    ok = cli_ratio >= SCP_TARGET
    pty_size, pty_s = serial["pty"]
    paced_size, paced_s = serial["paced"]
    paced_rate = paced_size / paced_s
    lines = [
        "## Device link throughput (`benchmarks/link_perf.py`)",
        "",
        f"Command: `{common.command()}`  ",
        f"Date: {common.now()}  ",
        f"Code: {common.source_state()}",
        "",
        common.machine_markdown(common.machine()),
        "",
        f"### Push over loopback SSH beside scp ({size / MB:.0f} MB random file, {rounds} "
        f"rounds, interleaved; medians; {ssh.describe()})",
        "",
        "Each figure includes connecting and authenticating (and, for the push, starting the "
        "agent on the board) and ends when the file is on the board; the push's is "
        "sha256-checked and fsynced. sshd, the agent and the sender share the same 2 cores. "
        "CPU is the sender's (this process and the children it waited for), not the server's. "
        "Ratios are medians of the per-round ratios.",
        "",
        "| transfer | wall s | MB/s | speed vs scp | sender CPU s | CPU vs scp |",
        "|---|---:|---:|---:|---:|---:|",
        *rows,
        "",
        f"Goal: `edgeprune push` >= {SCP_TARGET}x scp's speed through the CLI: "
        f"{cli_ratio:.2f}x, {common.verdict(ok, ssh.from_quiet)}.",
        "",
        "Fixed costs (medians of the same rounds): opening a session (SSH handshake, starting "
        f"the Python agent on the board, HELLO, one PING) takes {fixed['push']:.2f} s; scp of "
        f"a 1-byte file takes {fixed['scp']:.2f} s ({common.median(cpu['scp 1 byte']):.2f} s "
        "sender CPU); `edgeprune push` of a 1-byte file takes "
        f"{common.median(wall['CLI push 1 byte']):.2f} s "
        f"({common.median(cpu['CLI push 1 byte']):.2f} s sender CPU: starting Python, importing "
        "edgeprune and paramiko, the session). Without the session's cost the in-process push "
        f"moves {net['push']:.0f} MB/s and scp (without its 1-byte time) {net['scp']:.0f} MB/s.",
        "",
        "### Push over a pty at 921600 baud",
        "",
        "| link | bytes | seconds | throughput | vs the 8N1 limit of 92.16 kB/s |",
        "|---|---:|---:|---:|---:|",
        f"| pty pair (socat), unpaced | {pty_size:,} | {pty_s:.2f} | "
        f"{pty_size / pty_s / MB:.2f} MB/s | (a pty does not enforce baud rates) |",
        f"| pty pair + relay paced at 921600 baud | {paced_size:,} | {paced_s:.2f} | "
        f"{paced_rate / 1e3:.1f} kB/s | {paced_rate / UART_LIMIT:.1%} |",
        "",
        "Over a real UART at 921600 baud expect the paced figure: the rest of the limit goes to "
        "frame headers, CRCs, PUT_DATA's sha256 and offset (60 bytes per 8 KiB chunk), the "
        "connection's HELLO/PUT_OPEN/PUT_CLOSE round trips and the sha256 check at the end.",
    ]
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--size-mb", type=int, default=100, help="file pushed over SSH (MB)")
    parser.add_argument("--rounds", type=int, default=5, help="alternating rounds over SSH")
    args = parser.parse_args(argv)
    missing = have("/usr/sbin/sshd", "scp", "socat")
    if missing:
        parser.error(f"{missing} is missing: apt-get install openssh-server socat")
    size = args.size_mb * 1_000_000
    with tempfile.TemporaryDirectory() as tmp:
        work = Path(tmp)
        (work / "sshd").mkdir()
        src = random_file(work / "file.bin", size)
        log(f"SSH: push vs scp of {size / MB:.0f} MB, {args.rounds} rounds")
        ssh, cpu = measure_ssh(work, src, args.rounds)
        log("serial: unpaced pty, then paced at 921600 baud")
        serial = {
            "pty": (4 << 20, measure_serial(work, 4 << 20, paced=False)),
            "paced": (256 << 10, measure_serial(work, 256 << 10, paced=True)),
        }
    text = report(size, args.rounds, ssh, cpu, serial)
    common.write_section(SECTION, text)
    print(text)
    return 0


if __name__ == "__main__":
    sys.exit(main())
