"""Shared fixtures: the small TFLite test models (committed under tests/fixtures/, see
tests/models.py) and seeded random inputs; and the skips of the `tensorflow` and `host` markers.

The markers (registered in pyproject.toml) say which tests are not the on-device core's:

``tensorflow``      needs TensorFlow (conversion, TensorFlow as the reference computation).
``host(*modules)``  needs the host side: libraries of the [host] extra (the named modules, e.g.
                    ``host("serial")``) or host tools (sshd, socat, javac; those tests skip
                    themselves when the tool is missing).

A marked test whose modules are not installed is skipped, not failed; the core suite is
``pytest -m "not tensorflow and not host"`` (scripts/test_core.sh runs it with only
``edgeprune[litert]`` and pytest installed).
"""

from __future__ import annotations

import functools
import importlib.util
from pathlib import Path

import pytest

from tests import models


@functools.cache
def _missing(module: str) -> bool:
    return importlib.util.find_spec(module) is None


@pytest.hookimpl(tryfirst=True)
def pytest_runtest_setup(item):
    needs = [m for mark in item.iter_markers("host") for m in mark.args]
    if item.get_closest_marker("tensorflow") is not None:
        needs.append("tensorflow")
    missing = sorted({m for m in needs if _missing(m)})
    if missing:
        pytest.skip(f"needs {', '.join(missing)} (pip install -e '.[host]')")


@pytest.fixture(scope="session", autouse=True)
def _cache_dir(tmp_path_factory):
    """The record of vetted models (edgeprune/vetted.py) in a folder of the test session, never
    the user's own cache; child processes (CLI runs, agents) inherit it."""
    import os

    from edgeprune import vetted

    before = os.environ.get("EDGEPRUNE_CACHE_DIR")
    os.environ["EDGEPRUNE_CACHE_DIR"] = str(tmp_path_factory.mktemp("cache"))
    vetted.forget_memo()
    yield
    if before is None:
        os.environ.pop("EDGEPRUNE_CACHE_DIR", None)
    else:
        os.environ["EDGEPRUNE_CACHE_DIR"] = before
    vetted.forget_memo()


@pytest.fixture
def config(tmp_path, monkeypatch):
    """A fresh edgeprune config folder (the device registry) for one test."""
    directory = tmp_path / "config"
    monkeypatch.setenv("EDGEPRUNE_CONFIG_DIR", str(directory))
    return directory


@pytest.fixture
def board(tmp_path):
    """(a Device on local:// — a real agent process — with its own work directory, that
    directory)."""
    from edgeprune.host.client import Device

    root = tmp_path / "board"
    with Device(f"local://{root}") as device:
        yield device, root


@pytest.fixture(scope="session")
def tflite_model(tmp_path_factory):
    """Factory ``tflite_model(kind="float32", arch="mixed") -> Path`` of a converted model.

    Each (kind, arch) is read (committed) or built once per session (``tests.models.build``
    caches the bytes) and written to a session temp dir; see ``tests/models.py`` for the kinds
    and archs.
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
