"""The agent as a child process here (`local://[/WORKDIR][?python=PY]`): tests, and a host that
is itself the board. It runs the agent of this very installation on its stdin and stdout.
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

from . import links
from .device_errors import DeviceError, LinkError


def _write_all(fd: int, data: bytes) -> None:
    view = memoryview(data)
    while view:
        view = view[os.write(fd, view) :]


class LocalLink(links.Link):
    """The agent as a child process of this machine, on its stdin/stdout."""

    parameters = ("python",)
    example = "local://"

    @classmethod
    def check(cls, url: links.LinkURL) -> None:
        links.refuse_host(url)
        links.check_agent_words(url)

    def __init__(self, url: links.LinkURL):
        import firmware_bridge

        self.label = url.text
        self.python = url.params.get("python", sys.executable)
        env = dict(os.environ)  # run the agent of this very installation
        source = str(Path(firmware_bridge.__file__).resolve().parents[1])
        env["PYTHONPATH"] = os.pathsep.join(filter(None, [source, env.get("PYTHONPATH")]))
        try:
            self.proc = subprocess.Popen(
                links.agent_argv(self.python, url.workdir),
                stdin=subprocess.PIPE,
                stdout=subprocess.PIPE,
                stderr=subprocess.PIPE,
                env=env,
                bufsize=0,
            )
        except OSError as e:
            raise links.explain_exit(self.label, self.python, 127, str(e)) from None
        self.stderr = links.StderrTail(self.proc.stderr.read)

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
        return links.explain_exit(self.label, self.python, status, self.stderr.text())
