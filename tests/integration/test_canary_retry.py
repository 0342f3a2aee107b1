"""The calibration manager under Ray: a suspicious canary round (below its prediction,
but not by the drift threshold) brings the next round forward to a quarter period."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest
import ray

from qrt_ray import QuantumRuntime
from qrt_ray.config import CalibrationConfig, PolicyConfig, load_farm_config_text
from qrt_ray.farm import device_handle
from qrt_ray.store import CanaryRecord, SQLiteJobStore
from tests.circuits import SMALL_FARM
from tests.waiting import wait_until

pytestmark = pytest.mark.integration

# long enough that a round slowed by a busy machine (8.8 s seen in CI) still tells a
# quarter period from a whole one
PERIOD_S = 24.0
FARM = load_farm_config_text(SMALL_FARM.split("  - {name: nairobi")[0])  # manila alone
# drifted needs a gap of 0.99, which no canary can show: a worse device is suspicious
POLICIES = PolicyConfig(
    calibration=CalibrationConfig(
        canary_period_s=PERIOD_S, canary_shots=500, max_chains=1, drift_threshold=0.99
    )
)


@pytest.fixture(scope="module")
def rt(ray_head: object, store_path: Path) -> Iterator[QuantumRuntime]:
    runtime = QuantumRuntime.local(FARM, store=store_path, policies=POLICIES)
    yield runtime
    runtime.shutdown()


def _rounds(store_path: Path) -> list[CanaryRecord]:
    store = SQLiteJobStore(store_path)
    try:
        return sorted(store.canaries("manila", 50), key=lambda r: r.at)
    finally:
        store.close()


def test_a_suspicious_round_brings_the_next_one_forward(
    rt: QuantumRuntime, store_path: Path
) -> None:
    # far worse than its calibration says, from outside the calibration's view
    ray.get(device_handle("manila", rt.namespace).inject_faults.remote(hidden_error=60.0))
    wait_until(
        lambda: len(_rounds(store_path)) >= 2, timeout_s=PERIOD_S * 3, what="two canary rounds"
    )
    first, second = _rounds(store_path)[:2]
    # the first round was suspicious: its worst canary fell at least half the threshold
    assert first.predicted - first.measured >= 0.99 / 2 and not first.drifted, first
    # so the next came a quarter period after its start, or as soon as it ended if it
    # took longer (about 1 s on an idle machine), never a whole period after
    gap = second.at - first.at
    assert PERIOD_S / 4 - 0.5 <= gap < PERIOD_S * 3 / 4, gap
    report = rt.calibration_report()["manila"]
    assert report["detections"] == 0 and report["recalibrations"] == 0  # never drifted
