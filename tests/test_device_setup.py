"""`edgeprune device setup`'s parts that need no board: the wheel of the running edgeprune (whole,
reproducible, installable, carrying its build digest), the URL it rewrites, the mismatch that
`device info` reports, and the links it refuses. The set-up itself runs on the emulated Pi
(tests/test_emulated_pi.py)."""

from __future__ import annotations

import json
import subprocess
import sys
import zipfile

import pytest

from edgeprune.cli import main
from edgeprune.host import setup
from firmware_bridge import info

pytestmark = pytest.mark.host()  # the laptop's side of the link, not the on-device core


def test_wheel_is_reproducible_installable_and_carries_its_digest(tmp_path):
    wheel, digest = setup.build_wheel(tmp_path / "a")
    again, digest_again = setup.build_wheel(tmp_path / "b")
    assert wheel.read_bytes() == again.read_bytes() and digest == digest_again
    assert wheel.name == f"edgeprune-0.1.0+{digest[:12]}-py3-none-any.whl"
    names = zipfile.ZipFile(wheel).namelist()
    assert "firmware_bridge/__main__.py" in names and "edgeprune/host/setup.py" in names
    assert not [n for n in names if "__pycache__" in n or n.endswith(".pyc")]
    meta = zipfile.ZipFile(wheel).read(f"edgeprune-0.1.0+{digest[:12]}.dist-info/METADATA")
    assert b'Requires-Dist: ai-edge-litert==2.3.0; extra == "litert"' in meta

    venv = tmp_path / "venv"
    subprocess.run([sys.executable, "-m", "venv", "--without-pip", str(venv)], check=True)
    subprocess.run(
        [sys.executable, "-m", "pip", "--python", str(venv / "bin/python"), "install",
         "--quiet", "--no-deps", "--no-index", str(wheel)],
        check=True,
    )  # fmt: skip
    code = (
        "import json; from firmware_bridge import info; print(json.dumps(info.edgeprune_build()))"
    )
    out = subprocess.run(
        [str(venv / "bin/python"), "-c", code], cwd=tmp_path, capture_output=True, text=True
    )
    assert json.loads(out.stdout) == {"version": f"0.1.0+{digest[:12]}", "digest": digest}
    assert (venv / "bin/edgeprune").exists()


def test_url_gets_the_venv_python():
    url = "ssh://pi@host:2222/~/w?python=python3&key=/k/id"
    assert setup._with_python(url, "/home/pi/v/bin/python") == (
        "ssh://pi@host:2222/~/w?python=/home/pi/v/bin/python&key=/k/id"
    )
    assert setup._with_python("ssh://h", "/v/bin/python") == "ssh://h?python=/v/bin/python"


def test_mismatch_names_both_builds():
    ours = info.edgeprune_build()
    assert setup.mismatch({"edgeprune_build": dict(ours)}) is None
    other = {"version": "0.1.0+0123456789ab", "digest": "0123456789ab" + "0" * 52}
    text = setup.mismatch({"edgeprune": other["version"], "edgeprune_build": other})
    assert text.startswith("the board runs edgeprune 0.1.0+0123456789ab, this laptop ")
    old = setup.mismatch({"edgeprune": "0.0.9"})  # a board from before build digests
    assert "the board runs edgeprune 0.0.9" in old


def test_device_info_reports_versions_without_warning_on_the_same_build(tmp_path, capsys):
    assert main(["device", "info", f"local://{tmp_path / 'w'}", "--json"]) == 0
    shown = json.loads(capsys.readouterr().out)
    assert shown["mismatch"] is None and shown["laptop"]["digest"]
    assert shown["info"]["edgeprune_build"]["digest"] == shown["laptop"]["digest"]


@pytest.mark.parametrize("url", ["local:///tmp/x", "serial:///dev/ttyACM0"])
def test_setup_needs_ssh(url, capsys):
    assert main(["device", "setup", url]) == 2
    err = capsys.readouterr().err
    assert "device setup installs over SSH" in err and err.count("\n") == 1
