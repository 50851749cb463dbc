"""The laptop-to-Raspberry-Pi path on an emulated Pi (Debian bookworm arm64 under qemu-user,
its own sshd on 127.0.0.1; tests/pi_rig.py), driven through the command line as a user would:

device add -> (the agent is missing: the error names `device setup`) -> device setup (the board's
pip) -> device setup again (up to date) -> device setup --offline (wheels from the laptop, into a
second venv) -> device info (no mismatch) -> push an .edgepkg and a folder of raw .wav
recordings -> remote personalize through the package's recipe -> pull the model and report ->
remote bench -> the core's own test suite (scripts/test_core.sh, no TensorFlow) on the board,
less the few pure-numpy statistics tests marked `slow` (minutes on x86, hours under qemu).

Slow, so it runs only with EDGEPRUNE_EMULATED_PI=1: on a 2-core machine the user's path takes
about 8 minutes and the core suite under qemu more than 20; needs root, the cached root
filesystem (`bash scripts/pi_rootfs.sh`) and network to PyPI from the board.
"""

from __future__ import annotations

import io
import json
import os
import shutil
import subprocess
import tarfile
import time
from pathlib import Path

import pytest

from edgeprune.cli import main
from tests import pi_rig

REPO = Path(__file__).resolve().parents[1]
DEMO = REPO / "examples" / "fsdd_demo"
# The core suite as scripts/test_core.sh selects it, less the statistics marked slow (pure numpy,
# hours under qemu); failures listed at the end.
CORE = "-m 'not tensorflow and not host and not slow' -rfE"

pytestmark = [
    pytest.mark.emulated_pi,
    pytest.mark.host("paramiko"),
    pytest.mark.skipif(pi_rig.missing() is not None, reason=str(pi_rig.missing())),
]


@pytest.fixture(scope="module")
def pi(tmp_path_factory):
    board = pi_rig.EmulatedPi(tmp_path_factory.mktemp("pi"))
    yield board
    board.stop()
    if not board.mounted and not os.environ.get("EDGEPRUNE_KEEP_PI"):
        shutil.rmtree(board.root, ignore_errors=True)


def cli(capsys, *argv) -> str:
    """Run one edgeprune command; its stdout (it must succeed)."""
    code = main([str(a) for a in argv])
    out, err = capsys.readouterr()
    assert code == 0, f"edgeprune {' '.join(map(str, argv))}: {err}"
    return out


def test_laptop_to_emulated_pi(pi, tmp_path, monkeypatch, capsys):
    monkeypatch.setenv("EDGEPRUNE_CONFIG_DIR", str(tmp_path / "config"))
    monkeypatch.setenv("EDGEPRUNE_KNOWN_HOSTS", str(pi.known_hosts))
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "cache"))
    times = {}

    cli(capsys, "device", "add", "pi", pi.url())
    # A fresh board: python3 is there, edgeprune is not; the error says what to run.
    assert main(["device", "info", "pi"]) == 2
    assert "edgeprune device setup" in capsys.readouterr().err

    start = time.monotonic()
    out = cli(capsys, "device", "setup", "pi", "-q")
    times["setup"] = time.monotonic() - start
    venv_python = "/home/pi/.local/share/edgeprune/venv/bin/python"
    assert "installed edgeprune 0.1.0+" in out and "ai-edge-litert 2.3.0" in out, out
    assert "aarch64, Python 3.11" in out and venv_python in out, out
    devices = json.loads(cli(capsys, "device", "list", "--json"))["devices"]
    assert devices["pi"].startswith(f"ssh://pi@127.0.0.1:{pi.port}?python={venv_python}&key=")
    assert pi.path(venv_python).exists()

    start = time.monotonic()
    out = cli(capsys, "device", "setup", "pi", "-q")
    times["setup again"] = time.monotonic() - start
    assert "up to date" in out, out
    # --offline: the laptop downloads the wheels for the board's own tags and pushes them; the
    # board's pip installs with --no-index (no network), here into a second, fresh venv.
    start = time.monotonic()
    out = cli(capsys, "device", "setup", "pi", "--offline", "--venv", "~/offline-venv", "-q")
    times["setup --offline"] = time.monotonic() - start
    assert "from wheels pushed from here" in out and "ai-edge-litert 2.3.0" in out, out
    pushed = {p.name for p in pi.path("~/.cache/edgeprune/wheels").iterdir()}
    assert any(n.startswith("numpy-") and n.endswith("aarch64.whl") for n in pushed), pushed
    assert any(n.startswith("ai_edge_litert-") and "aarch64" in n for n in pushed), pushed
    devices = json.loads(cli(capsys, "device", "list", "--json"))["devices"]
    assert "?python=/home/pi/offline-venv/bin/python&" in devices["pi"], devices
    info = json.loads(cli(capsys, "device", "info", "pi", "--json"))
    assert info["mismatch"] is None and info["info"]["machine"] == "aarch64"
    assert info["info"]["edgeprune_build"]["digest"] == info["laptop"]["digest"]
    assert "warning" not in cli(capsys, "device", "info", "pi")

    # The laptop packages the demo model with its recipe; the board gets it and raw recordings.
    package = tmp_path / "digits.edgepkg"
    cli(capsys, "package", DEMO / "model.tflite", "-o", package, "--name", "digits",
        "--version", "1", "--recipe", DEMO / "recipe.json")  # fmt: skip
    start = time.monotonic()
    cli(capsys, "push", "pi", package, "-q")
    cli(capsys, "push", "pi", DEMO / "reference.npz", "-q")
    george = tmp_path / "george"  # 4 raw recordings of each digit
    george.mkdir()
    wavs = [w for d in range(10) for w in sorted(DEMO.glob(f"unlabeled/{d}_*.wav"))[:4]]
    for wav in wavs:
        shutil.copyfile(wav, george / wav.name)
    cli(capsys, "push", "pi", george, "-r", "-q")
    times["push"] = time.monotonic() - start
    assert sorted(p.name for p in pi.path("~/edgeprune/george").iterdir()) == sorted(
        w.name for w in wavs
    )

    start = time.monotonic()
    out = cli(capsys, "remote", "pi", "personalize", "digits.edgepkg", "george", "-o",
              "me.tflite", "--reference", "reference.npz", "--report", "rep", "-q")  # fmt: skip
    times["remote personalize"] = time.monotonic() - start
    assert "me.tflite" in out, out

    back = tmp_path / "back"
    back.mkdir()
    for name in ("me.tflite", "rep/report.json", "rep/report.md"):
        cli(capsys, "pull", "pi", name, "-o", back / Path(name).name, "-q")
    report = json.loads((back / "report.json").read_text())
    assert report["samples"] == len(wavs), report.get("samples")
    assert (back / "me.tflite").read_bytes() == pi.path("~/edgeprune/me.tflite").read_bytes()
    from edgeprune.model import Model

    Model.load(back / "me.tflite")  # a whole, loadable model

    start = time.monotonic()
    bench = json.loads(cli(capsys, "remote", "pi", "bench", "me.tflite", "--json"))
    times["remote bench"] = time.monotonic() - start
    assert bench["latency_ms"]["p50"] > 0 and bench["runs"] > 0, bench

    # The core's own tests on the emulated aarch64 board, as scripts/test_core.sh runs them: the
    # checkout's files (tracked and new, not ignored) sent over SSH as a tar stream.
    start = time.monotonic()
    from edgeprune.host.setup import Shell
    from edgeprune.host.transports import parse_url

    listed = subprocess.run(
        ["git", "-C", str(REPO), "ls-files", "-z", "--cached", "--others", "--exclude-standard"],
        check=True,
        capture_output=True,
    ).stdout.split(b"\0")
    stream = io.BytesIO()
    with tarfile.open(fileobj=stream, mode="w") as tar:
        for rel in filter(None, (f.decode() for f in listed)):
            if (REPO / rel).is_file():
                tar.add(REPO / rel, arcname=rel)
    tree = "/home/pi/edgeprune-src"
    shell = Shell(parse_url(pi.url()))
    try:
        shell.check(["sh", "-c", f"mkdir -p {tree} && tar -x -C {tree}"], "unpacking the checkout",
                    stdin=stream.getvalue())  # fmt: skip
        status, out, err = shell.run(
            ["sh", "-c", f"cd {tree} && VENV=/tmp/core-venv bash scripts/test_core.sh {CORE} 2>&1"]
        )
    finally:
        shell.close()
    times["core suite on the board"] = time.monotonic() - start
    print("\nemulated Pi timings (s):", {k: round(v) for k, v in times.items()})
    failed = [line for line in out.splitlines() if line.startswith(("FAILED", "ERROR"))]
    assert status == 0, "\n".join(failed) or out[-3000:]
    assert " passed" in out and " failed" not in out, out[-2000:]
