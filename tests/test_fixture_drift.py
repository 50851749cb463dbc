"""The models committed under tests/fixtures/ are exactly what tests/models.py builds."""

import pytest

from tests import models


def test_every_committed_model_is_present_and_read_without_tensorflow():
    for kind, arch in models.COMMITTED:
        path = models.fixture_path(kind, arch)
        assert path.is_file(), f"{path} missing: run python -m tests.models --write"
        assert models.build(kind, arch) == path.read_bytes()


@pytest.mark.tensorflow
@pytest.mark.parametrize("kind, arch", models.COMMITTED, ids=lambda v: v)
def test_committed_model_equals_a_fresh_build(kind, arch):
    fresh = models.convert_model(kind, arch)
    assert fresh == models.fixture_path(kind, arch).read_bytes(), (
        f"tests/fixtures/{arch}_{kind}.tflite differs from a fresh build: "
        "run python -m tests.models --write and commit the result"
    )
