"""Issue 13 against a live agent process: frames that cost it CPU or hold its session, and
concurrent pushes to one path from two clients."""

import os
import select
import subprocess
import sys
import time
import zlib
from pathlib import Path

from firmware_bridge import protocol as p
from tests.hostile import overlapping_headers

REPO = Path(__file__).resolve().parents[1]


def _header(type_: int, request_id: int, length: int) -> bytes:
    head = p.HEADER.pack(p.MAGIC, p.VERSION, type_, request_id, length)
    return head + zlib.crc32(head).to_bytes(4, "big")


def _agent(root: Path, *options: str) -> subprocess.Popen:
    argv = [sys.executable, "-m", "firmware_bridge", "serve", "--stdio", "--root", str(root)]
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    return subprocess.Popen(
        [*argv, *options], stdin=subprocess.PIPE, stdout=subprocess.PIPE, env=env
    )


def _replies(agent: subprocess.Popen, until: int, timeout: float = 60) -> list[p.Frame]:
    """Frames from the agent until the one with request id `until` (or the agent's end)."""
    decoder, got = p.Decoder(p.HARD_MAX_PAYLOAD), []
    deadline = time.monotonic() + timeout
    while (left := deadline - time.monotonic()) > 0:
        if not select.select([agent.stdout], [], [], left)[0]:
            break
        data = os.read(agent.stdout.fileno(), 1 << 20)
        if not data:
            break
        decoder.feed(data)
        got += [i for i in decoder.items() if isinstance(i, p.Frame) and i.type != p.KEEPALIVE]
        if any(f.request_id == until for f in got):
            break
    return got


def _cpu_seconds(agent: subprocess.Popen) -> float:
    _, status, usage = os.wait4(agent.pid, 0)
    agent.returncode = os.waitstatus_to_exitcode(status)
    return usage.ru_utime + usage.ru_stime


def test_the_decoder_resynchronizes_over_overlapping_headers_in_linear_time():
    decoder = p.Decoder()
    data = overlapping_headers() + p.encode(p.PING, 9)
    start = time.process_time()
    items = []
    for i in range(0, len(data), 1 << 16):
        decoder.feed(data[i : i + (1 << 16)])
        items += list(decoder.items())
    spent = time.process_time() - start
    assert spent < 0.5, f"{spent:.2f} s of CPU for 2 MiB of overlapping headers"
    assert isinstance(items[-1], p.Frame) and items[-1].request_id == 9
    assert all(isinstance(i, p.Damaged) and i.reason == "crc" for i in items[:-1])


def test_a_request_announcing_more_than_its_kind_carries_is_refused_at_its_header():
    decoder = p.Decoder(limits={p.PING: 1024})
    decoder.feed(_header(p.PING, 3, 1 << 20) + p.encode(p.PING, 4))
    items = list(decoder.items())
    assert [(type(i).__name__, i.request_id) for i in items] == [("Damaged", 3), ("Frame", 4)]
    assert items[0].reason == "too_large"


def test_overlapping_headers_cost_a_live_agent_little_cpu(tmp_path):
    agent = _agent(tmp_path / "board")
    attack = overlapping_headers()
    agent.stdin.write(attack + p.encode(p.PING, 99))
    agent.stdin.flush()
    replies = _replies(agent, until=99)
    agent.stdin.close()
    cpu = _cpu_seconds(agent)
    assert agent.returncode == 0
    assert replies[-1].request_id == 99 and replies[-1].type == p.OK
    assert {r.json()["code"] for r in replies[:-1]} == {"corrupt"}
    # Before: 13 s of CPU on an idle machine. Now the agent's start-up and 2 MiB of reading;
    # bounded generously for a loaded 2-core machine.
    assert cpu < 2.0, f"the agent spent {cpu:.2f} s of CPU"


def test_a_frame_that_never_completes_ends_the_session_with_an_error(tmp_path):
    agent = _agent(tmp_path / "board", "--stall", "0.5")
    started = time.monotonic()
    # A JSON request announcing 1 MiB is refused at its header, without waiting for the bytes.
    agent.stdin.write(_header(p.PING, 5, 1 << 20) + p.encode(p.PING, 6))
    agent.stdin.flush()
    first = _replies(agent, until=6)
    assert [(r.request_id, r.json().get("code")) for r in first] == [(5, "too_large"), (6, None)]
    # A PUT_DATA may announce 1 MiB; 100 bytes come and then nothing: ERROR stalled, the end.
    agent.stdin.write(_header(p.PUT_DATA, 7, 1 << 20) + bytes(100))
    agent.stdin.flush()
    stalled = _replies(agent, until=7, timeout=30)
    assert [(r.request_id, r.json()["code"]) for r in stalled] == [(7, "stalled")]
    assert "announced 1048576 bytes and 100 came" in stalled[0].json()["message"]
    assert agent.wait(10) == 0  # the session ended with the link still open
    assert time.monotonic() - started < 20
