"""Suite-wide: tests of the real model skip, saying why, where TensorFlow is not installed (a
queue-only install, `pip install .` without the model extra)."""

from __future__ import annotations

import importlib.util

import pytest

_NO_MODEL = "needs TensorFlow (the package's model extra)"
MODEL_INSTALLED = importlib.util.find_spec("tensorflow") is not None


def pytest_runtest_setup(item: pytest.Item) -> None:
    if not MODEL_INSTALLED and item.get_closest_marker("tf") is not None:
        pytest.skip(_NO_MODEL)


@pytest.fixture(scope="session")
def model_installed() -> None:
    """For fixtures that start the model (a fixture cannot carry the `tf` marker)."""
    if not MODEL_INSTALLED:
        pytest.skip(_NO_MODEL)
