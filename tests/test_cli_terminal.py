"""The command line as a terminal user meets it: progress bars only on a terminal, a closed pipe
(`| head`) ends it quietly, and the byte counts of a remote run's progress reach the bars."""

import fcntl
import os
import pty
import struct
import subprocess
import sys
import termios
import threading

import numpy as np
import pytest

from tests.models import INPUT_SHAPES, random_inputs


def edgeprune(*argv, env, stderr, cwd=None):
    argv = [sys.executable, "-m", "edgeprune", *map(str, argv)]
    return subprocess.run(argv, env=env, stdout=subprocess.PIPE, stderr=stderr, cwd=cwd)


def on_a_terminal(*argv, env) -> tuple[int, str]:
    """Run with stderr on a pty (a terminal, as a user's); (exit code, what it drew there)."""
    leader, follower = pty.openpty()
    fcntl.ioctl(follower, termios.TIOCSWINSZ, struct.pack("HHHH", 24, 100, 0, 0))  # 100 columns
    seen = bytearray()

    def drain():
        while True:
            try:
                data = os.read(leader, 4096)
            except OSError:  # EIO: the last writer closed the terminal
                return
            if not data:
                return
            seen.extend(data)

    reader = threading.Thread(target=drain)
    reader.start()
    try:
        done = edgeprune(*argv, env=env, stderr=follower)
    finally:
        os.close(follower)
        reader.join(10)
        os.close(leader)
    return done.returncode, seen.decode(errors="replace")


@pytest.fixture
def board(tmp_path, tflite_model):
    env = {**os.environ, "EDGEPRUNE_CONFIG_DIR": str(tmp_path / "config")}
    board = tmp_path / "board"
    board.mkdir()
    (board / "m.tflite").write_bytes(tflite_model("int8").read_bytes())
    np.save(board / "x.npy", random_inputs(12, INPUT_SHAPES["mixed"][1:], seed=5))
    subprocess.run([sys.executable, "-m", "edgeprune", "device", "add", "box", f"local://{board}"],
                   env=env, check=True, capture_output=True)  # fmt: skip
    return env


def test_bars_are_drawn_on_a_terminal_and_never_into_a_pipe(board):
    argv = ["remote", "box", "record", "m.tflite", "x.npy", "-o", "map.npz"]
    code, drawn = on_a_terminal(*argv, env=board)
    assert code == 0 and "box: record" in drawn and "sample" in drawn  # the board's progress
    piped = edgeprune(*argv, env=board, stderr=subprocess.PIPE)
    err = piped.stderr.decode()
    assert piped.returncode == 0 and err.splitlines() == [
        "map.npz is on box; fetch it with `edgeprune pull box map.npz`"
    ]
    code, drawn = on_a_terminal(*argv, "-q", env=board)
    assert code == 0 and "box: record" not in drawn


def test_a_closed_pipe_ends_the_command_quietly(tflite_model):
    """`edgeprune inspect m.tflite --json | head -1`: the reader is gone before the output is."""
    argv = [sys.executable, "-m", "edgeprune", "inspect", str(tflite_model("int8")), "--json"]
    proc = subprocess.Popen(argv, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    proc.stdout.close()
    err = proc.stderr.read()
    assert proc.wait() == 141 and err == b""  # 128 + SIGPIPE, as `yes | head` reports; no traceback
