"""The Java core of android_demo reproduces the Python core: golden vectors written here, read by
the Java tests (compiled with javac, run with Debian's JUnit 4; no Gradle, no downloads)."""

from __future__ import annotations

import re
import shutil
import subprocess
from pathlib import Path

import numpy as np
import pytest

from edgeprune.layers import scan
from edgeprune.model import Model
from tests import java_golden

RUN_TESTS = Path(__file__).resolve().parents[1] / "android_demo" / "core" / "run_tests.sh"

pytestmark = [
    pytest.mark.host,
    pytest.mark.skipif(
        shutil.which("javac") is None,
        reason="javac is not installed: apt-get install default-jdk-headless junit4 (.ci/run does)",
    ),
]


@pytest.fixture(scope="module")
def golden(tmp_path_factory) -> Path:
    return java_golden.write(tmp_path_factory.mktemp("java-golden"))


def run_java(golden_dir: Path, *classes: str) -> subprocess.CompletedProcess:
    return subprocess.run(
        ["bash", str(RUN_TESTS), str(golden_dir), *classes],
        capture_output=True,
        text=True,
        timeout=300,
    )


def test_java_core_reproduces_maps_masks_and_pruned_bytes(golden):
    result = run_java(golden)
    output = result.stdout + result.stderr
    assert result.returncode == 0, output
    ran = re.search(r"^OK \((\d+) tests\)$", result.stdout, re.MULTILINE)
    assert ran and int(ran.group(1)) >= 14, output


def test_vectors_exercise_what_they_claim(golden):
    """Pruned bytes differ from the source where masks drop weights, and the uint8 model's
    dropped weights are stored as its non-zero zero points (not as 0)."""
    for kind in java_golden.KINDS:
        source = (golden / "models" / kind / "model.tflite").read_bytes()
        for case in (golden / "models" / kind / "cases").iterdir():
            keep = np.frombuffer((case / "keep.bin").read_bytes(), np.uint8)
            assert 0 < keep.sum() < keep.size, case
            assert (case / "pruned.tflite").read_bytes() != source, case
    model = Model((golden / "models" / "uint8" / "model.tflite").read_bytes())
    pruned = Model(
        (golden / "models" / "uint8" / "cases" / "weight-layer" / "pruned.tflite").read_bytes()
    )
    zero_points = set()
    for layer in scan(model).layers:
        q = model.tensor(layer.weight).quantization
        changed = model.tensor_data(layer.weight) != pruned.tensor_data(layer.weight)
        assert np.all(pruned.tensor_data(layer.weight)[changed] == q.zero_point[0])
        zero_points.add(int(q.zero_point[0]))
    assert zero_points - {0}
    assert len(list((golden / "audio").iterdir())) == 3


def test_java_golden_test_fails_on_a_wrong_byte_or_map(golden, tmp_path):
    """Negative control: one flipped byte of a pruned model and one changed activation make the
    Java golden tests fail, with messages that point at them."""
    root = tmp_path / "broken"
    shutil.copytree(golden / "models" / "uint8", root / "models" / "uint8")
    pruned = root / "models" / "uint8" / "cases" / "weight-global" / "pruned.tflite"
    data = bytearray(pruned.read_bytes())
    data[len(data) // 2] ^= 0x01
    pruned.write_bytes(bytes(data))
    activations = root / "models" / "uint8" / "activations.bin"
    data = bytearray(activations.read_bytes())
    data[0] = (data[0] + 50) % 256  # the first input pixel of the first sample
    activations.write_bytes(bytes(data))
    result = run_java(root, "dev.edgeprune.core.GoldenTest")
    output = result.stdout + result.stderr
    assert result.returncode != 0, output
    assert "Failures: 2" in output, output
    assert "first differing byte of the pruned model" in output, output
    assert "S_in" in output, output
