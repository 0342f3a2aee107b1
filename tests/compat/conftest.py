"""One small farm for the V2 contract tests (the session's loopback Ray head)."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from qrt_ray import QuantumRuntime
from qrt_ray.config import load_farm_config_text
from tests.circuits import SMALL_FARM


@pytest.fixture(scope="package")
def rt(ray_head: object, tmp_path_factory: pytest.TempPathFactory) -> Iterator[QuantumRuntime]:
    store: Path = tmp_path_factory.mktemp("compat") / "jobs.sqlite3"
    runtime = QuantumRuntime.local(load_farm_config_text(SMALL_FARM), store=store)
    yield runtime
    runtime.shutdown()
