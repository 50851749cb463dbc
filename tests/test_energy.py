"""Energy meters, each driven through the code that reads the real instrument: fake sysfs trees
(RAPL, INA2xx hwmon), a fake `vcgencmd` printing recorded output, a socat pty pair speaking the
UM25C protocol; idle power subtracted; the estimate from MACs and bytes."""

import os
import struct
import subprocess
import sys
import threading
import time
from pathlib import Path

import numpy as np
import pytest

from edgeprune.energy import MeterError, auto_meter, open_meter, per_inference
from edgeprune.energy.estimate import PJ_DRAM_BYTE, PJ_MAC, PJ_SRAM_BYTE, estimate
from edgeprune.host.usbmeter import decode
from edgeprune.model import Model
from edgeprune.profile import profile
from tests.device_rig import PtyPair, have
from tests.models import build

REPO = Path(__file__).resolve().parents[1]


def write(path: Path, value) -> None:
    """Replace a sysfs-like file in one step (a kernel attribute never reads half-written)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.tmp")
    tmp.write_text(f"{value}\n")
    os.replace(tmp, path)


@pytest.fixture
def sysfs(tmp_path, monkeypatch):
    root = tmp_path / "sys"
    (root / "class").mkdir(parents=True)
    monkeypatch.setenv("EDGEPRUNE_SYSFS", str(root))
    monkeypatch.setenv("PATH", str(tmp_path / "nobin"))  # no vcgencmd unless a test adds one
    return root


# ----- RAPL ---------------------------------------------------------------------------------------

RANGE_UJ = 262143328850


def rapl_tree(root: Path, start0: int, start1: int) -> tuple[Path, Path]:
    powercap = root / "class" / "powercap"
    p0, p1 = powercap / "intel-rapl:0", powercap / "intel-rapl:1"
    for zone, name, start in ((p0, "package-0", start0), (p1, "package-1", start1)):
        write(zone / "name", name)
        write(zone / "energy_uj", start)
        write(zone / "max_energy_range_uj", RANGE_UJ)
    # A sub-zone (the cores) is part of its package: never added again.
    write(powercap / "intel-rapl:0:0" / "name", "core")
    write(powercap / "intel-rapl:0:0" / "energy_uj", 999_000_000)
    return p0 / "energy_uj", p1 / "energy_uj"


def test_rapl_sums_packages_and_survives_wrap_around(sysfs):
    c0, c1 = rapl_tree(sysfs, RANGE_UJ - 1_500_000, 10_000_000)
    meter = open_meter("rapl")
    assert "package-0, package-1" in meter.method

    def work():
        write(c0, 2_000_000)  # wrapped: 1.5 J before the wrap + 2 J after
        write(c1, 13_250_000)  # 3.25 J

    reading = meter.measure(work)
    assert reading.joules == pytest.approx(1.5 + 2.0 + 3.25, abs=1e-6)


def test_rapl_root_only_permission_is_explained(tmp_path):
    """energy_uj unreadable, as it is for users since Linux 5.10. Root reads any file, so as root
    the command runs without the capabilities that bypass file permissions (setpriv)."""
    c0, _ = rapl_tree(tmp_path / "sys", 5, 7)
    c0.chmod(0)
    model = tmp_path / "model.tflite"
    model.write_bytes(build("float32", "mixed"))
    argv = [sys.executable, "-m", "edgeprune", "bench", str(model), "--energy", "rapl", "-q"]
    if os.geteuid() == 0:
        if have("setpriv"):
            pytest.skip("needs setpriv (util-linux) to drop root's file-permission override")
        argv = ["setpriv", "--bounding-set=-dac_override,-dac_read_search", *argv]
    env = {**os.environ, "EDGEPRUNE_SYSFS": str(tmp_path / "sys"), "PYTHONPATH": str(REPO)}
    done = subprocess.run(argv + ["--runs", "2"], capture_output=True, text=True, env=env)
    assert done.returncode == 2, done.stderr
    err = done.stderr.strip().splitlines()
    assert len(err) == 1 and "root only" in err[0] and "chmod a+r" in err[0], done.stderr


def test_rapl_absent_is_a_clear_error(sysfs):
    with pytest.raises(MeterError, match="no RAPL energy counters"):
        open_meter("rapl")


# ----- hwmon (INA2xx) -----------------------------------------------------------------------------


def test_hwmon_ina226_power_is_integrated_and_idle_subtracted(sysfs):
    write(sysfs / "class/hwmon/hwmon0/name", "coretemp")  # not a power sensor
    write(sysfs / "class/hwmon/hwmon0/temp1_input", 45000)
    power = sysfs / "class/hwmon/hwmon1/power1_input"
    write(sysfs / "class/hwmon/hwmon1/name", "ina226")
    write(power, 1_000_000)  # 1 W (hwmon power is in µW)
    meter = open_meter("hwmon")
    assert meter.name == "hwmon:ina226"
    idle = meter.measure(lambda: time.sleep(0.3))
    assert idle.watts == pytest.approx(1.0) and idle.samples >= 3

    def inference():
        write(power, 3_000_000)  # 3 W while inferring
        time.sleep(0.01)

    result = per_inference(meter, inference, idle_seconds=0.3, min_seconds=2.0)
    # (3 W - 1 W idle) x the time of one inference, up to the sensor's first stale sample.
    per_call = result["active_seconds"] / result["inferences"]
    assert result["idle_watts"] == pytest.approx(1.0)
    assert result["active_watts"] == pytest.approx(3.0, rel=0.03)
    assert result["joules_per_inference"] == pytest.approx(2.0 * per_call, rel=0.05)
    assert result["inferences"] >= 50 and result["active_seconds"] >= 2.0


def test_hwmon_ina3221_current_times_voltage(sysfs):
    d = sysfs / "class/hwmon/hwmon2"
    write(d / "name", "ina3221")
    write(d / "curr1_input", 500)  # mA
    write(d / "in1_input", 5000)  # mV
    meter = open_meter("hwmon:ina3221")
    assert meter.read_watts() == pytest.approx(2.5)
    with pytest.raises(MeterError, match="named 'ina219'"):
        open_meter("hwmon:ina219")


# ----- Raspberry Pi 5 PMIC ------------------------------------------------------------------------

# The layout `vcgencmd pmic_read_adc` prints on a Pi 5 (values of our own): currents then volts,
# rails matched by name, EXT5V and BATT without a current. Each rail: the ADC channels of its
# current and its voltage, its amps and its volts.
RAIL_TABLE = """\
3V7_WL_SW   0   8   0.0517  3.7088
3V3_SYS     1   9   0.0731  3.3127
1V8_SYS     2  10   0.1492  1.8093
DDR_VDD2    3  11   0.0912  1.1031
DDR_VDDQ    4  12   0.0154  0.6012
1V1_SYS     5  13   0.1874  1.1057
0V8_SW      6  14   0.3311  0.8019
VDD_CORE    7  15   2.4120  0.8514
0V8_AON    16  19   0.0042  0.8003
3V3_DAC    17  20   0.0001  3.3098
3V3_ADC    18  21   0.0004  3.3071
HDMI       22  23   0.0198  5.0912
"""
RAILS = {
    rail: (int(i), int(j), float(a), float(v))
    for rail, i, j, a, v in (line.split() for line in RAIL_TABLE.splitlines())
}


def pmic_output(scale: float = 1.0) -> str:
    lines = [
        f"{rail + '_A':>12} current({i})={a * scale:.8f}A" for rail, (i, _, a, _) in RAILS.items()
    ]
    lines += [f"{rail + '_V':>12} volt({j})={v:.8f}V" for rail, (_, j, _, v) in RAILS.items()]
    lines += ["     EXT5V_V volt(24)=5.10240000V", "      BATT_V volt(25)=0.00000000V"]
    return "\n".join(lines) + "\n"


def fake_vcgencmd(directory: Path, body: str) -> Path:
    directory.mkdir(exist_ok=True)
    script = directory / "vcgencmd"
    script.write_text(f"#!/bin/sh\n{body}\n")
    script.chmod(0o755)
    return script


def test_pi5_pmic_sums_rails_and_integrates(sysfs, tmp_path, monkeypatch):
    recorded = tmp_path / "adc.txt"
    recorded.write_text(pmic_output())
    bin_dir = tmp_path / "bin"
    fake_vcgencmd(bin_dir, f'[ "$1" = pmic_read_adc ] || exit 1\ncat "{recorded}"')
    monkeypatch.setenv("PATH", f"{bin_dir}:/usr/bin:/bin")
    expected = sum(a * v for _, _, a, v in RAILS.values())
    meter, reasons = auto_meter()  # no RAPL, no INA sensor: the PMIC is found
    assert meter.name == "pi5-pmic" and len(reasons) == 2
    assert meter.read_watts() == pytest.approx(expected, rel=1e-6)
    assert "12 rails" in meter.method
    reading = meter.measure(lambda: time.sleep(0.5))
    # at least two reads over the half second (a slow board spawns vcgencmd in ~0.15 s)
    assert reading.watts == pytest.approx(expected, rel=1e-6) and reading.samples >= 2


def test_pi5_pmic_errors_are_explained(sysfs, tmp_path, monkeypatch):
    with pytest.raises(MeterError, match="vcgencmd not found"):
        open_meter("pi5-pmic")
    bin_dir = tmp_path / "bin"
    monkeypatch.setenv("PATH", f"{bin_dir}:/usr/bin:/bin")
    fake_vcgencmd(bin_dir, 'echo "error=1 error_msg=\\"Command not registered\\""; exit 255')
    with pytest.raises(MeterError, match="Command not registered"):
        open_meter("pi5-pmic")
    fake_vcgencmd(bin_dir, "echo 'EXT5V_V volt(24)=5.1V'")  # a Pi 4's firmware: no rails
    with pytest.raises(MeterError, match="not a Raspberry Pi 5"):
        open_meter("pi5-pmic")


# ----- UM25C over a pty pair ----------------------------------------------------------------------


def um_frame(volts_raw: int, amps_raw: int) -> bytes:
    frame = bytearray(130)
    frame[0:2] = b"\x09\xc9"
    struct.pack_into(">HHI", frame, 2, volts_raw, amps_raw, volts_raw * amps_raw // 10000)
    frame[128:130] = b"\xff\xf1"
    return bytes(frame)


class FakeMeter(threading.Thread):
    """Answers every 0xF0 with a frame, as the meter does over Bluetooth SPP."""

    def __init__(self, path: Path, frame: bytes):
        super().__init__(daemon=True)
        import serial

        self.port = serial.Serial(str(path), 9600, timeout=0.1)
        self.frame, self.requests, self.stop = frame, 0, threading.Event()

    def run(self):
        while not self.stop.is_set():
            if self.port.read(1) == b"\xf0":
                self.requests += 1
                self.port.write(self.frame)


@pytest.mark.skipif(have("socat") is not None, reason="needs socat")
@pytest.mark.host("serial")
def test_um25c_over_serial(tmp_path):
    pair = PtyPair.start(tmp_path, "um25c")
    fake = FakeMeter(pair.b, um_frame(5123, 4567))  # 5.123 V, 0.4567 A
    fake.start()
    try:
        meter = open_meter(f"um25c:{pair.a}")
        assert meter.read_watts() == pytest.approx(5.123 * 0.4567)
        reading = meter.measure(lambda: time.sleep(0.6))
        assert reading.joules == pytest.approx(5.123 * 0.4567 * reading.seconds, rel=1e-6)
        assert fake.requests >= 3
        meter.close()
        fake.stop.set()
        fake.join()
        with pytest.raises(MeterError, match="answered 0 of 130 bytes"):
            open_meter(f"um25c:{pair.a}")  # nobody answers now
    finally:
        fake.stop.set()
        fake.port.close()
        pair.stop()


def test_um_decoding_and_bad_specs():
    assert decode(um_frame(512, 456), "um24c") == pytest.approx((5.12, 0.456))
    with pytest.raises(MeterError, match="130"):
        decode(b"\x00" * 20, "um25c")
    with pytest.raises(MeterError, match="say where"):
        open_meter("um25c")
    with pytest.raises(MeterError, match="unknown energy meter"):
        open_meter("joulescope")


# ----- estimate -----------------------------------------------------------------------------------


@pytest.mark.parametrize("kind", ["float32", "int8"])
def test_estimate_from_macs_and_bytes(kind):
    model = Model(build(kind, "mixed"))
    info = profile(model)
    shapes = [t.shape for t in model.tensors]
    result = estimate(model, info, shapes)
    moved = 0
    for op in model.operators:
        for i in (*op.inputs, *op.outputs):
            t = model.tensor(i) if i >= 0 else None
            if t is not None and not model.is_constant(t):
                moved += t.size * t.dtype.itemsize
    precision = "int8" if kind == "int8" else "float32"
    compute = 29600 * PJ_MAC[precision] * 1e-12
    memory = (info["totals"]["weight_bytes"] * PJ_DRAM_BYTE[1] + moved * PJ_SRAM_BYTE) * 1e-12
    assert result["activation_bytes"] == moved
    assert result["compute_joules"] == pytest.approx(compute)
    assert result["joules_per_inference"] == pytest.approx(compute + memory)
    low, high = result["range_joules"]
    assert low < result["joules_per_inference"] < high
    assert result["macs_by_precision"] == {precision: 29600}


# ----- through `edgeprune bench` ------------------------------------------------------------------


def test_bench_energy_cli(sysfs, tflite_model, capsys):
    import json

    from edgeprune.cli import main

    write(sysfs / "class/hwmon/hwmon0/name", "ina219")
    write(sysfs / "class/hwmon/hwmon0/power1_input", 2_000_000)
    model = tflite_model("float32", "mixed")
    argv = ["bench", str(model), "--runs", "5", "-q", "--json", "--idle-seconds", "0.2"]
    assert main([*argv, "--energy", "auto"]) == 0
    energy = json.loads(capsys.readouterr().out)["energy"]
    # A constant 2 W: all of it is idle power, nothing is left per inference.
    assert energy["meter"] == "hwmon:ina219" and energy["idle_watts"] == pytest.approx(2.0)
    assert abs(energy["joules_per_inference"]) < 1e-9
    assert energy["gross_joules_per_inference"] > 0
    assert main([*argv, "--energy", "estimate"]) == 0
    energy = json.loads(capsys.readouterr().out)["energy"]
    assert energy["meter"] == "estimate" and "Horowitz" in energy["source"]
    assert np.isfinite(energy["joules_per_inference"])


def test_usb_meters_are_registered_by_the_host_side_only():
    """The core opens the USB meters only once edgeprune.host.usbmeter registered them: it
    never imports the host side itself, and says what is missing."""
    code = (
        "import sys\n"
        "from edgeprune.energy import MeterError, open_meter\n"
        "try:\n"
        "    open_meter('um25c:/dev/null')\n"
        "except MeterError as e:\n"
        "    print(e)\n"
        "print(any(m.startswith('edgeprune.host') for m in sys.modules))\n"
    )
    out = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, check=True, cwd=REPO
    ).stdout
    assert "need the host extra" in out and out.strip().endswith("False")
