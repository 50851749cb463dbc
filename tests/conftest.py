"""Shared fixtures: small TFLite models built with TensorFlow, and seeded random inputs."""

from __future__ import annotations

from pathlib import Path

import pytest

from tests import models


@pytest.fixture(scope="session")
def tflite_model(tmp_path_factory):
    """Factory ``tflite_model(kind="float32", arch="mixed") -> Path`` of a converted model.

    Each (kind, arch) is built once per session (``tests.models.build`` caches the bytes) and
    written to a session temp dir; see ``tests/models.py`` for the kinds and archs.
    """
    directory = tmp_path_factory.mktemp("models")

    def make(kind: str = "float32", arch: str = "mixed") -> Path:
        path = directory / f"{arch}-{kind}.tflite"
        if not path.exists():
            path.write_bytes(models.build(kind, arch))
        return path

    return make


@pytest.fixture(scope="session")
def random_inputs():
    """``random_inputs(n, shape, seed=0)``: n seeded standard-normal float32 samples of shape."""
    return models.random_inputs
