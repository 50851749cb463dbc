"""Start the agent on a link: share the work directory, clean up after a crash, wire the bytes.

Several agents may serve a work directory at once (flocks on `.edgeprune/agent.alive`, released
by the kernel when an agent dies); cleaning up killed predecessors' temp files is done only by
an agent that starts alone, so it never takes a live writer's file; a marker file that only a
clean exit removes says whether there is anything to clean. Two uploads to one path, or one
RUN beside another, are refused by the agents' shared claims (`files.py`, `agent.py`).
"""

from __future__ import annotations

import contextlib
import fcntl
import os
import select
import sys
import time
from collections.abc import Iterator
from pathlib import Path

from .agent import STALL, Agent
from .files import WorkDir
from .protocol import EXIT_BUSY, EXIT_UNUSABLE

LOCK_WAIT = 10.0  # seconds to wait for another agent to finish starting (its sweep)
PIPE_SIZE = 1 << 20  # bytes a stdio pipe may hold (Linux's default limit for any user)
TICK = 1.0  # seconds a read waits before the agent checks for a stalled frame


def default_root() -> str:
    return os.environ.get("EDGEPRUNE_WORKDIR") or "~/edgeprune"


def _log(message: str) -> None:
    print(f"firmware_bridge: {message}", file=sys.stderr, flush=True)


@contextlib.contextmanager
def owned(root: str) -> Iterator[WorkDir | None]:
    """The work directory, shared with the other agents serving it and swept when none is.

    Several sessions (two SSH logins, a serial port and an SSH login) may serve one work
    directory at once; each holds a shared flock on `.edgeprune/agent.alive` while it runs. An
    agent that starts alone (it gets that lock exclusively) knows every temp file of an atomic
    write is a dead writer's, and sweeps them if a marker (`agent.running.<pid>`, removed only by
    a clean exit) says an agent died. `agent.lock` serializes the start-ups, so no agent sweeps
    while another starts; None if it stays held for LOCK_WAIT seconds.
    """
    Path(root).mkdir(parents=True, exist_ok=True)
    workdir = WorkDir(root)
    starting = os.open(workdir.state / "agent.lock", os.O_RDWR | os.O_CREAT, 0o600)
    alive = os.open(workdir.state / "agent.alive", os.O_RDWR | os.O_CREAT, 0o600)
    running = workdir.state / f"agent.running.{os.getpid()}"
    try:
        deadline = time.monotonic() + LOCK_WAIT
        while True:
            try:
                fcntl.flock(starting, fcntl.LOCK_EX | fcntl.LOCK_NB)
                break
            except BlockingIOError:
                if time.monotonic() > deadline:
                    _log(f"another agent keeps starting on {workdir.root}; try again")
                    yield None
                    return
                time.sleep(0.1)
        try:
            fcntl.flock(alive, fcntl.LOCK_EX | fcntl.LOCK_NB)
            markers = list(workdir.state.glob("agent.running*"))  # all of dead agents
            for name in workdir.sweep(everywhere=bool(markers)):
                _log(f"removed {name}, left behind by an agent that was stopped mid-write")
            for marker in markers:
                marker.unlink()
        except BlockingIOError:
            pass  # other agents serve it: their temp files are in use
        fcntl.flock(alive, fcntl.LOCK_SH)
        running.touch()
        fcntl.flock(starting, fcntl.LOCK_UN)
        os.chdir(workdir.root)  # operations see paths relative to the work directory
        yield workdir
        running.unlink()
    finally:
        workdir.end_session()
        os.close(alive)
        os.close(starting)


def _write_all(fd: int, data: bytes) -> None:
    view = memoryview(data)
    while view:
        view = view[os.write(fd, view) :]


def serve_stdio(root: str, keepalive: float, stall: float = STALL) -> int:
    """Serve the frames on stdin/stdout. Anything else printing to stdout goes to stderr."""
    frames_in, frames_out = os.dup(0), os.dup(1)
    for fd in (frames_in, frames_out):  # fewer, larger reads and writes: fewer wake-ups
        with contextlib.suppress(OSError, AttributeError):  # not a pipe, or not Linux
            fcntl.fcntl(fd, fcntl.F_SETPIPE_SZ, PIPE_SIZE)
    devnull = os.open(os.devnull, os.O_RDONLY)
    os.dup2(devnull, 0)
    os.dup2(2, 1)  # stray prints (ours, a library's, C code's) must not corrupt the frames
    with owned(root) as workdir:
        if workdir is None:
            return EXIT_BUSY

        def read() -> bytes | None:
            if not select.select([frames_in], [], [], TICK)[0]:
                return None
            return os.read(frames_in, 1 << 20)

        agent = Agent(
            workdir,
            read=read,
            write=lambda data: _write_all(frames_out, data),
            keepalive=keepalive,
            stall=stall,
        )
        agent.serve()
    return 0


def serve_serial(root: str, port: str, baud: int, keepalive: float, stall: float = STALL) -> int:
    """Serve the frames on a serial port (any pyserial URL) until it disappears."""
    import serial

    try:
        link = serial.serial_for_url(port, baudrate=baud, timeout=TICK, exclusive=True)
    except (serial.SerialException, ValueError) as e:
        _log(f"cannot open {port}: {e}")
        return EXIT_UNUSABLE

    def read() -> bytes | None:
        try:
            data = link.read(1)
            return data + link.read(link.in_waiting) if data else None  # None: nothing yet
        except serial.SerialException as e:
            _log(f"{port} is gone: {e}")
            return b""

    with owned(root) as workdir, link:
        if workdir is None:
            return EXIT_BUSY
        _log(f"serving {workdir.root} on {port} at {baud} baud")
        while Agent(workdir, read, link.write, keepalive=keepalive, stall=stall).serve():
            _log("a new session starts on the same port")  # a stalled frame ended the last
    return 0
