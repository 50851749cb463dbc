"""What every link to a board's agent is made of; the transports build on it, never the reverse.

A link moves bytes and says, when it ends, why; framing and retries are the client's job. Each
kind of link (ssh_link, serial_link, local_link) subclasses `Link` and is registered under its
URL scheme in `transports`, which parses device URLs and opens them. This module knows no
scheme: it holds the parsed URL, the base class and the helpers the transports share (the
agent's command line, its stderr, why it exited).
"""

from __future__ import annotations

import collections
import re
import threading
from dataclasses import dataclass, field
from urllib.parse import urlsplit

from firmware_bridge import protocol

from .device_errors import AgentMissingError, DeviceError, LinkError

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
        """The agent's work directory from the URL path ("/~/x" means "~/x"), if given (for the
        links that start the agent; a serial URL's path is its port)."""
        if not self.path.strip("/"):
            return None
        return self.path[1:] if self.path.startswith("/~") else self.path


def safe_word(value: str, what: str) -> str:
    """`value` if it can go on the agent's command line as one plain word, else DeviceError."""
    if not _SAFE_WORD.match(value) or value.startswith("-"):
        raise DeviceError(f"{what} {value!r} has characters a device URL does not allow")
    return value


def refuse_host(url: LinkURL) -> None:
    """DeviceError if a URL of a scheme that has no host (local, serial) names one."""
    parts = urlsplit(url.text)
    if parts.netloc:
        raise DeviceError(
            f"{url.text}: a {url.scheme} URL has no host; write the path after three slashes, "
            f"e.g. {url.scheme}:///{parts.netloc}{parts.path}"
        )


def check_agent_words(url: LinkURL) -> None:
    """DeviceError unless the URL's python and work directory can go on the agent's command line."""
    if "python" in url.params:
        safe_word(url.params["python"], "python")
    if url.workdir:
        safe_word(url.workdir, "work directory")


def agent_argv(python: str, workdir: str | None) -> list[str]:
    """The command that starts the agent on stdio (the same on the board and here)."""
    argv = [python, "-m", "firmware_bridge", "serve", "--stdio"]
    return argv + ["--root", workdir] if workdir else argv


class Link:
    """Bytes to and from an agent. `read` blocks and returns b"" once the link has ended.

    A subclass is opened with a parsed URL of its scheme, which `transports` checked with the
    subclass's `parameters` and `check` first.
    """

    parameters: tuple[str, ...] = ()  # the query parameters its URLs take
    example = ""  # what its URLs look like, for the message about a URL that is none
    lossy = False  # may bytes be lost or damaged in transit (serial)? then the client resends
    rate: float | None = None  # bytes per second of the wire, if it has one
    chunk_size = 256 << 10  # bytes of file per PUT_DATA / GET_DATA
    window = 8  # chunks in flight
    label = ""

    @classmethod
    def check(cls, url: LinkURL) -> None:
        """DeviceError saying what to write if `url` (of this scheme) cannot name such a link."""

    def read(self) -> bytes:
        raise NotImplementedError

    def write(self, data: bytes) -> None:
        raise NotImplementedError

    def write_parts(self, parts) -> None:
        """Write byte strings (or memoryviews) one after the other; a link that can send them
        without joining them first overrides this."""
        self.write(b"".join(parts))

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
            f"{label}: the edgeprune agent is not installed for {python} on the board; install "
            "it from this laptop with `edgeprune device setup DEVICE` (it builds this "
            "edgeprune's wheel, installs it with its runtime into a venv on the board and points "
            "the device at that venv's python; --offline if the board has no internet)"
        )
    if status == protocol.EXIT_BUSY:
        return LinkError(
            f"{label}: another agent kept starting on that work directory for 10 s (cleaning "
            "up after a crash); try again, or give this device another work directory in its URL"
        )
    last = [line for line in stderr.strip().splitlines() if line.strip()][-1:] or ["no output"]
    if status is None:
        return LinkError(f"{label}: the agent stopped (killed, or the link dropped): {last[0]}")
    return LinkError(f"{label}: the agent exited (status {status}): {last[0]}")
