"""Small farms on the session's loopback Ray head (``tests/ray_head.py``)."""

from __future__ import annotations

from pathlib import Path

import pytest

from qrt_ray.config import FarmConfig, load_farm_config_text
from tests.circuits import SMALL_FARM


@pytest.fixture(scope="session")
def small_farm() -> FarmConfig:
    """Two small devices: fast to start, enough to test placement and faults."""
    return load_farm_config_text(SMALL_FARM)


@pytest.fixture(scope="module")
def store_path(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A fresh job store file for one test module's farm."""
    return tmp_path_factory.mktemp("store") / "jobs.sqlite3"
