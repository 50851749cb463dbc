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


# pip's own tags (packaging.tags.sys_tags) on Raspberry Pi OS bookworm 32-bit: CPython 3.11,
# glibc 2.36, armhf — as `device setup` reads them from the board's venv (setup.TAGS).
ARMV7_TAGS = {
    "platforms": [f"manylinux_2_{m}_armv7l" for m in range(36, 16, -1)]
    + ["manylinux2014_armv7l", "linux_armv7l"],
    "abis": ["cp311", "abi3", "none"],
    "interpreters": ["cp311", "cp3", "py311", "py3"],
}
# The same userland on a Pi 4/5 with the 64-bit kernel (Raspberry Pi OS's default since 2023):
# uname says aarch64, pip's tags say 32-bit ARM (armv8l, then armv7l).
ARMV8L_PLATFORMS = ["linux_armv8l", *ARMV7_TAGS["platforms"]]
AARCH64_PLATFORMS = [f"manylinux_2_{m}_aarch64" for m in range(36, 16, -1)] + ["linux_aarch64"]


def test_a_32_bit_arm_board_gets_tflite_runtime_and_piwheels():
    from edgeprune.host import install_plan

    for platforms in (ARMV7_TAGS["platforms"], ARMV8L_PLATFORMS):
        plan = install_plan.plan(platforms)
        assert plan.targets("/w/edgeprune.whl") == [
            "/w/edgeprune.whl",
            "tflite-runtime==2.14.0",
            "numpy>=1.23,<2",
        ]
        assert plan.index_args() == ["--extra-index-url", "https://www.piwheels.org/simple"]
        assert plan.runtime == "tflite-runtime"
    fleet = install_plan.plan(ARMV7_TAGS["platforms"], fleet=True, extra_index_url="")
    assert fleet.targets("e.whl")[0] == "e.whl[fleet]" and fleet.index_args() == []
    own = install_plan.plan(ARMV7_TAGS["platforms"], index_url="https://mirror/simple")
    assert own.index_args() == [
        "--index-url",
        "https://mirror/simple",
        "--extra-index-url",
        "https://www.piwheels.org/simple",
    ]
    # PyPI's tflite-runtime 2.14.0 wheel for armv7 is manylinux_2_34_armv7l: the board takes it.
    assert "manylinux_2_34_armv7l" in ARMV7_TAGS["platforms"]


def test_a_64_bit_board_gets_litert_from_pip_s_own_index():
    from edgeprune.host import install_plan

    plan = install_plan.plan(AARCH64_PLATFORMS, fleet=True)
    assert plan.targets("e.whl") == ["e.whl[litert,fleet]"] and plan.index_args() == []
    assert plan.runtime == "ai-edge-litert"
    extra = install_plan.plan(["manylinux_2_36_x86_64"], extra_index_url="https://x/simple")
    assert extra.index_args() == ["--extra-index-url", "https://x/simple"]


def test_a_serial_board_is_told_how_to_install_by_hand(capsys):
    assert main(["device", "setup", "serial:///dev/ttyACM0"]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "Set the board up once over ssh" in err
    wheel = err.split("edgeprune push NAME ")[1].split(",")[0]
    assert zipfile.is_zipfile(wheel)  # the wheel it names is there to push
    name = wheel.rsplit("/", 1)[1]
    assert f"~/.local/share/edgeprune/venv/bin/pip install ~/edgeprune/'{name}[litert]'" in err


@pytest.mark.parametrize(
    "argv, message",
    [
        (["--fleet"], "--fleet needs --superlink HOST:PORT"),
        (["--superlink", "h:1"], "--superlink needs --fleet"),
        (["--fleet", "--superlink", "h"], "give the SuperLink's Fleet API as HOST:PORT"),
        (["--fleet", "--superlink", "h:1", "--data", "a'b"], "cannot be in a SuperNode path"),
        (["--fleet", "--superlink", "h:1", "--superlink-ca", "/nope.pem"], "no such file here"),
    ],
)
def test_fleet_options_are_checked_before_connecting(argv, message, capsys):
    # An address nobody listens on: the options are refused before any connection.
    assert main(["device", "setup", "ssh://pi@127.0.0.1:1/w", *argv]) == 2
    err = capsys.readouterr().err
    assert message in err and err.count("\n") == 1
