"""Fixtures of the manager tests; helpers live in manager_test_helpers.py."""

from __future__ import annotations

from pathlib import Path

import pytest
from manager_test_helpers import SEED_TINY

from manager.collection import RunCollection
from manager.demo import build_demo


@pytest.fixture
def seed_demo(tmp_path: Path) -> RunCollection:
    """The seed profile's tree built from tiny Lorenz data (the names do not depend on the data)."""
    return build_demo(tmp_path, "seed", lorenz=SEED_TINY)
