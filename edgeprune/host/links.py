"""Links to a board's agent, addressed by URL as pyserial's `serial_for_url` addresses ports.

    ssh://[user@]host[:port][/WORKDIR][?python=PY&key=FILE]   the agent over an SSH exec channel
    serial:///dev/ttyUSB0[?baud=921600]                         the agent on a serial port
    local://[/WORKDIR][?python=PY]                               the agent as a child process here

A link moves bytes and says, when it ends, why; framing and retries are the client's job. Each
scheme's module is imported only when a URL of that scheme is opened (paramiko, pyserial).
"""

from __future__ import annotations

import collections
import os
import re
import subprocess
import sys
import threading
from dataclasses import dataclass, field
from pathlib import Path
from urllib.parse import parse_qsl, unquote, urlsplit

from firmware_bridge import protocol

from .device_errors import AgentMissingError, DeviceError, LinkError

SCHEMES = ("ssh", "serial", "local")
PARAMETERS = {"ssh": ("python", "key"), "serial": ("baud",), "local": ("python",)}
# What may go into the command line the host sends to the board: plain path characters only.
_SAFE_WORD = re.compile(r"^[A-Za-z0-9_@%+=:,./~-]+$")
STDERR_KEPT = 8192  # bytes of the agent's stderr kept to explain a failure


@dataclass(frozen=True)
class LinkURL:
    """A parsed device URL."""

    scheme: str
    user: str | None = None
    host: str | None = None
    port: int | None = None
    path: str = ""
    params: dict[str, str] = field(default_factory=dict)
    text: str = ""

    @property
    def workdir(self) -> str | None:
        """The agent's work directory from the URL path ("/~/x" means "~/x"), if given."""
        if self.scheme == "serial" or not self.path.strip("/"):
            return None
        return self.path[1:] if self.path.startswith("/~") else self.path


def safe_word(value: str, what: str) -> str:
    """`value` if it can go on the agent's command line as one plain word, else DeviceError."""
    if not _SAFE_WORD.match(value) or value.startswith("-"):
        raise DeviceError(f"{what} {value!r} has characters a device URL does not allow")
    return value


def parse_url(text: str) -> LinkURL:
    """Parse and check a device URL; DeviceError with the accepted forms when it is wrong."""
    parts = urlsplit(text)
    scheme = parts.scheme.lower()
    if scheme not in SCHEMES or "://" not in text:
        raise DeviceError(
            f"{text!r} is not a device URL: use ssh://user@host[:port], "
            "serial:///dev/ttyX?baud=N or local://"
        )
    params = dict(parse_qsl(parts.query, keep_blank_values=True))
    unknown = sorted(set(params) - set(PARAMETERS[scheme]))
    if unknown:
        allowed = ", ".join(PARAMETERS[scheme])
        raise DeviceError(
            f"{text}: unknown parameter {unknown[0]!r} (a {scheme} URL takes {allowed})"
        )
    try:
        port = parts.port
    except ValueError:
        raise DeviceError(f"{text}: the port must be a number") from None
    url = LinkURL(
        scheme,
        unquote(parts.username or "") or None,
        parts.hostname,
        port,
        unquote(parts.path),
        params,
        text,
    )
    if scheme in ("local", "serial") and parts.netloc:
        raise DeviceError(
            f"{text}: a {scheme} URL has no host; write the path after three slashes, "
            f"e.g. {scheme}:///{parts.netloc}{parts.path}"
        )
    if scheme == "ssh" and not url.host:
        raise DeviceError(f"{text}: an ssh URL needs a host, e.g. ssh://pi@raspberrypi.local")
    if scheme == "serial" and not url.path:
        raise DeviceError(f"{text}: a serial URL needs a port, e.g. serial:///dev/ttyACM0")
    if scheme == "serial" and not params.get("baud", str(protocol.DEFAULT_BAUD)).isdigit():
        raise DeviceError(f"{text}: baud must be a whole number, e.g. ?baud=921600")
    for key in ("python",):
        if key in params:
            safe_word(params[key], key)
    if url.workdir:
        safe_word(url.workdir, "work directory")
    return url


def agent_argv(python: str, workdir: str | None) -> list[str]:
    """The command that starts the agent on stdio (the same on the board and here)."""
    argv = [python, "-m", "firmware_bridge", "serve", "--stdio"]
    return argv + ["--root", workdir] if workdir else argv


class Link:
    """Bytes to and from an agent. `read` blocks and returns b"" once the link has ended."""

    lossy = False  # may bytes be lost or damaged in transit (serial)? then the client resends
    rate: float | None = None  # bytes per second of the wire, if it has one
    chunk_size = 256 << 10  # bytes of file per PUT_DATA / GET_DATA
    window = 8  # chunks in flight
    label = ""

    def read(self) -> bytes:
        raise NotImplementedError

    def write(self, data: bytes) -> None:
        raise NotImplementedError

    def close(self) -> None:
        raise NotImplementedError

    def failure(self) -> DeviceError:
        """Why the link ended, as the error to raise (called once `read` returned b"")."""
        return LinkError(f"the link to {self.label} closed")


class StderrTail:
    """Keeps the last bytes of an agent's stderr, read by a daemon thread."""

    def __init__(self, read):
        self._tail: collections.deque[bytes] = collections.deque()
        self._size = 0
        self._thread = threading.Thread(target=self._drain, args=(read,), daemon=True)
        self._thread.start()

    def _drain(self, read) -> None:
        try:
            while data := read(4096):
                self._tail.append(data)
                self._size += len(data)
                while self._size > STDERR_KEPT and len(self._tail) > 1:
                    self._size -= len(self._tail.popleft())
        except (OSError, EOFError, ValueError):
            pass

    def text(self, wait: float = 1.0) -> str:
        self._thread.join(wait)
        return b"".join(self._tail).decode(errors="replace")


def explain_exit(label: str, python: str, status: int | None, stderr: str) -> DeviceError:
    """The error for an agent that exited: missing Python, missing agent, busy, or other."""
    if status == 127 or re.search(rf"{re.escape(python)}.*(not found|No such file)", stderr):
        return AgentMissingError(
            f"{label}: {python} was not found on the board; install Python 3.10 or newer there "
            "(Debian/Raspberry Pi OS: apt-get install python3 python3-venv), or give its path "
            "in the URL as ?python=/path/to/python3"
        )
    if "No module named firmware_bridge" in stderr or "No module named 'firmware_bridge'" in stderr:
        return AgentMissingError(
            f"{label}: the edgeprune agent is not installed for {python} on the board; there, run "
            f"`{python} -m pip install 'edgeprune[litert]'` (for a venv, point the URL at it: "
            "?python=/path/to/venv/bin/python), then try again"
        )
    if status == protocol.EXIT_BUSY:
        return LinkError(
            f"{label}: another agent is serving that work directory; wait for it to finish, or "
            "give this device another work directory in its URL"
        )
    last = [line for line in stderr.strip().splitlines() if line.strip()][-1:] or ["no output"]
    if status is None:
        return LinkError(f"{label}: the agent stopped (killed, or the link dropped): {last[0]}")
    return LinkError(f"{label}: the agent exited (status {status}): {last[0]}")


def _write_all(fd: int, data: bytes) -> None:
    view = memoryview(data)
    while view:
        view = view[os.write(fd, view) :]


class LocalLink(Link):
    """The agent as a child process of this machine, on its stdin/stdout."""

    def __init__(self, url: LinkURL):
        import firmware_bridge

        self.label = url.text
        self.python = url.params.get("python", sys.executable)
        env = dict(os.environ)  # run the agent of this very installation
        source = str(Path(firmware_bridge.__file__).resolve().parents[1])
        env["PYTHONPATH"] = os.pathsep.join(filter(None, [source, env.get("PYTHONPATH")]))
        try:
            self.proc = subprocess.Popen(
                agent_argv(self.python, url.workdir),
                stdin=subprocess.PIPE,
                stdout=subprocess.PIPE,
                stderr=subprocess.PIPE,
                env=env,
                bufsize=0,
            )
        except OSError as e:
            raise explain_exit(self.label, self.python, 127, str(e)) from None
        self.stderr = StderrTail(self.proc.stderr.read)

    def read(self) -> bytes:
        try:
            return os.read(self.proc.stdout.fileno(), 1 << 20)
        except (OSError, ValueError):
            return b""

    def write(self, data: bytes) -> None:
        try:
            _write_all(self.proc.stdin.fileno(), data)
        except (OSError, ValueError) as e:
            raise LinkError(f"the link to {self.label} is closed: {e}") from None

    def close(self) -> None:
        if self.proc.stdin and not self.proc.stdin.closed:
            self.proc.stdin.close()  # the agent ends at end of file
        try:
            self.proc.wait(10)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()
        self.proc.stdout.close()

    def failure(self) -> DeviceError:
        try:
            status = self.proc.wait(2)
        except subprocess.TimeoutExpired:
            status = None
        return explain_exit(self.label, self.python, status, self.stderr.text())


def open_link(url: str | LinkURL) -> Link:
    """Open the link a device URL names."""
    url = parse_url(url) if isinstance(url, str) else url
    if url.scheme == "ssh":
        from .ssh_link import SshLink

        return SshLink(url)
    if url.scheme == "serial":
        from .serial_link import SerialLink

        return SerialLink(url)
    return LocalLink(url)
