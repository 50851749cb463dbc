"""A fleet on this machine: Flower's own processes on 127.0.0.1, for tests and benchmarks.

`LocalFleet` starts `flower-superlink` and one `flower-supernode` per simulated board (each
naming its own samples in its node config), and `run` submits the fleet app with `flwr run`,
exactly the commands docs/DEVICES.md gives for real boards — in insecure mode, which only the
loopback excuses. Every process gets its own session, so stopping one stops its ClientApps too
(a board losing power).
"""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

BIN = Path(sys.executable).parent
APP = Path(__file__).resolve().parent / "app"


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def toml_value(value: Any) -> str:
    """`value` as a TOML literal for `flwr run -c`."""
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, str | os.PathLike):
        text = str(value)
        if "'" in text or "\n" in text:
            raise ValueError(f"{text!r}: quotes and newlines are not allowed in a run config")
        return f"'{text}'"
    return repr(value)


def wait_for(path: Path, text: str, proc: subprocess.Popen, seconds: float) -> None:
    end = time.monotonic() + seconds
    while time.monotonic() < end:
        if path.exists() and text in path.read_text(errors="replace"):
            return
        if proc.poll() is not None:
            raise RuntimeError(f"{proc.args[0]} exited:\n{path.read_text(errors='replace')}")
        time.sleep(0.2)
    raise RuntimeError(f"no {text!r} in {path} after {seconds} s")


_wait_for = wait_for  # the name tests/test_device_setup_fleet.py imports


class LocalFleet:
    """A SuperLink and its SuperNodes under `root` (logs, FLWR_HOME, reports)."""

    def __init__(self, root: str | os.PathLike, start_timeout: float = 60):
        self.root, self.procs = Path(root), []
        self.start_timeout = start_timeout
        self.port = free_port()
        home = self.root / "flwr"
        home.mkdir(parents=True, exist_ok=True)
        self.env = {**os.environ, "FLWR_HOME": str(home), "PATH": f"{BIN}:{os.environ['PATH']}"}
        self.env["FLWR_DISABLE_UPDATE_CHECK"] = "1"  # no call home from tests or CI
        (home / "config.toml").write_text(
            '[superlink]\ndefault = "fleet"\n\n'
            f'[superlink.fleet]\naddress = "127.0.0.1:{self.port}"\ninsecure = true\n'
        )
        log = self.root / "superlink.log"
        args = ["--insecure", "--host", "127.0.0.1", "--port", str(self.port)]
        self.link = self._start(
            "flower-superlink", [*args, "--disable-runtime-dependency-installation"], log
        )
        wait_for(log, "Uvicorn running", self.link, start_timeout)

    def _start(self, exe: str, args: list[str], log: Path) -> subprocess.Popen:
        with open(log, "wb") as out:
            proc = subprocess.Popen(
                [str(BIN / exe), *args],
                stdout=out,
                stderr=subprocess.STDOUT,
                env=self.env,
                cwd=self.root,
                start_new_session=True,
            )
        self.procs.append(proc)
        return proc

    def node(
        self, name: str, data: str | os.PathLike, out: str | os.PathLike | None = None
    ) -> subprocess.Popen:
        """Start a SuperNode for board `name` whose samples are `data` (saving the delivered
        fleet model to `out`, if given); wait until it joined."""
        log = self.root / f"{name}.log"
        args = ["--insecure", "--superlink", f"127.0.0.1:{self.port}", "--port", str(free_port())]
        config = f"data={toml_value(os.fspath(data))}"
        if out is not None:
            config += f" out={toml_value(os.fspath(out))}"
        proc = self._start("flower-supernode", [*args, "--node-config", config], log)
        wait_for(log, "SuperNode ID", proc, self.start_timeout)
        return proc

    def run(self, model: str | os.PathLike, timeout: float = 600, **config: Any) -> dict:
        """`flwr run` the fleet app with this run config (keys as in the app's pyproject.toml,
        '-' for '_'); the server's JSON report, with the command's wall time in `wall_seconds`."""
        report = self.root / f"report-{time.monotonic_ns()}.json"
        config = {"model": os.fspath(model), "report": str(report), **config}
        overrides = " ".join(f"{k.replace('_', '-')}={toml_value(v)}" for k, v in config.items())
        start = time.perf_counter()
        done = subprocess.run(
            [str(BIN / "flwr"), "run", str(APP), "fleet", "--stream", "-c", overrides],
            env=self.env,
            cwd=self.root,
            capture_output=True,
            text=True,
            timeout=timeout,
        )
        wall = time.perf_counter() - start
        if done.returncode != 0 or not report.exists():
            raise RuntimeError(f"flwr run failed:\n{done.stdout}{done.stderr}")
        result = json.loads(report.read_text())
        result["wall_seconds"] = wall
        return result

    @staticmethod
    def kill(proc: subprocess.Popen) -> None:
        """Stop `proc` and everything it started at once (SIGKILL to its session)."""
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGKILL)
        proc.wait()

    def close(self) -> None:
        for proc in reversed(self.procs):
            if proc.poll() is None:
                os.killpg(proc.pid, signal.SIGTERM)
        for proc in self.procs:
            try:
                proc.wait(10)
            except subprocess.TimeoutExpired:
                self.kill(proc)

    def __enter__(self) -> LocalFleet:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
