"""Chaos drills on a real local farm (see ``tests/chaos/drill.py``).

The fast subset runs with every test run: a few kills of each actor, a network
partition and job-store faults over one workload. The full drills (100 device kills,
50 scheduler kills, calibration manager kills, 30 partitions, 60 store faults) run by
command::

    python -m pytest tests/chaos -m chaos_full -p no:randomly
"""

from __future__ import annotations

import json
import os
from collections.abc import Iterator
from pathlib import Path

import pytest

from qrt_ray import JobState, QuantumRuntime
from qrt_ray.config import (
    ChaosConfig,
    FaultConfig,
    PolicyConfig,
    SchedulingConfig,
    load_farm_config_text,
)
from tests.chaos.drill import PARTITION_S, crash_drill, run_drill, schedule
from tests.circuits import SMALL_FARM, ghz

pytestmark = pytest.mark.integration

ROOT = Path(__file__).resolve().parents[2]
# every device crashes its process on a job with this seed (no drill job uses it)
POISON_SEED = 2**31 - 7
FARM = load_farm_config_text(SMALL_FARM)
FARM = FARM.model_copy(
    update={
        "devices": [
            d.model_copy(update={"chaos": ChaosConfig(poison_seed=POISON_SEED)})
            for d in FARM.devices
        ]
    }
)
DEVICES = [d.name for d in FARM.devices]
# a killed device is noticed within seconds: a batch unanswered for 20 s is hung, a
# device that answers no poll for 15 s is restarted
POLICIES = PolicyConfig(
    scheduling=SchedulingConfig(slice_shots=1000),
    faults=FaultConfig(
        hung_batch_min_s=20, hung_batch_factor=2, snapshot_timeout_s=5, silent_restart_s=15
    ),
)


@pytest.fixture(scope="module")
def farm(ray_head: object, tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple]:
    store = tmp_path_factory.mktemp("chaos") / "jobs.sqlite3"
    rt = QuantumRuntime.local(FARM, store=store, policies=POLICIES)
    yield rt, store
    rt.shutdown()


def _drill(farm: tuple, counts: dict[str, int], *, jobs: int, span_s: float, seed: int):
    rt, store = farm
    faults = schedule(seed, counts, span_s, DEVICES)
    report = run_drill(rt, store, faults, jobs=jobs, shots=2000, seed=seed)
    print(json.dumps({"drill": counts, **report.row()}))
    assert not report.problems(), "\n".join(report.problems())
    assert len(report.recovery_s) == len(faults)
    return report


def test_kills_a_partition_and_store_faults_lose_nothing_and_count_nothing_twice(
    farm: tuple,
) -> None:
    counts = {
        "device": 2, "scheduler": 1, "calibration": 1, "partition": 1,
        "store_fail": 2, "store_slow": 1,
    }  # fmt: skip
    report = _drill(farm, counts, jobs=40, span_s=15.0, seed=11)
    # none of these faults fails a job here
    assert report.states.get("DONE", 0) == report.jobs, report.failures


def test_a_poison_job_that_crashes_its_device_is_dead_lettered(farm: tuple) -> None:
    """A job whose circuit kills the device process each time it runs: its batch-mates
    finish, it is dead-lettered with the reason, and the device serves others."""
    rt, _ = farm
    before = {d.name: d.incarnation for d in rt.devices()}
    poison = rt.submit(ghz(3), shots=500, seed=POISON_SEED, device="manila")
    mates = [rt.submit(ghz(3), shots=500, seed=k, device="manila") for k in range(5)]
    states = rt.wait([poison, *mates], timeout_s=240)
    info = poison.info()
    assert states[poison.job_id] is JobState.FAILED, info
    assert info["error_class"] == "poison" and "dead-lettered" in info["error"], info
    assert all(states[m.job_id] is JobState.DONE for m in mates), [m.info() for m in mates]
    manila = next(d for d in rt.devices() if d.name == "manila")
    assert manila.incarnation != before["manila"]  # it really crashed, and came back
    after = rt.submit(ghz(3), shots=500, seed=99, device="manila")
    assert after.result(timeout_s=120).counts()  # and serves others


@pytest.mark.chaos_full
@pytest.mark.timeout(7200)
@pytest.mark.parametrize(
    ("counts", "jobs", "span_s"),
    [
        ({"device": 100}, 600, 1500.0),
        ({"scheduler": 50}, 400, 900.0),
        ({"calibration": 20}, 200, 400.0),
        ({"partition": 30}, 300, 900.0),
        ({"store_fail": 40, "store_slow": 20}, 300, 600.0),
    ],
    ids=[
        "device-kills-100",
        "scheduler-kills-50",
        "calibration-kills-20",
        "partitions-30",
        "store-faults-60",
    ],
)
def test_full_drill(farm: tuple, counts: dict[str, int], jobs: int, span_s: float) -> None:
    _drill(farm, counts, jobs=jobs, span_s=span_s, seed=sum(counts.values()))


def test_the_schedule_is_reproducible_from_its_seed() -> None:
    counts = {"device": 5, "scheduler": 2, "partition": 3}
    a = schedule(3, counts, 60.0, DEVICES)
    assert a == schedule(3, counts, 60.0, DEVICES)
    assert a != schedule(4, counts, 60.0, DEVICES)
    assert [f.at_s for f in a] == sorted(f.at_s for f in a) and len(a) == 10
    assert {f.target for f in a if f.kind in ("device", "partition")} <= set(DEVICES)
    cuts = [f.for_s for f in a if f.kind == "partition"]
    assert len(cuts) == 3 and all(PARTITION_S[0] <= s <= PARTITION_S[1] for s in cuts)
    assert all(f.for_s == 0.0 for f in a if f.kind != "partition")
    store = schedule(5, {"store_fail": 6, "store_slow": 2}, 60.0, DEVICES)
    fails = [f for f in store if f.kind == "store_fail"]
    assert {f.target for f in fails} <= {"before", "after"}
    assert all(1 <= f.for_s <= 3 for f in fails)


def _crash(store_url: str, runs: int) -> None:
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    report = crash_drill(store_url, runs=runs, per_run=8, seed=runs, cwd=ROOT, env=env)
    print(
        json.dumps(
            {
                "drill": "kill -9",
                "runs": report.runs,
                "killed": report.killed,
                "acknowledged": report.acknowledged,
                "lost": len(report.lost),
                "stored": report.jobs_stored,
                "seconds": round(report.seconds, 1),
            }
        )
    )
    assert not report.problems(), "\n".join(report.problems())
    assert report.killed >= runs // 2 and report.acknowledged > 0


def test_kill_9_mid_write_loses_no_acknowledged_job(tmp_path: Path) -> None:
    _crash(str(tmp_path / "jobs.sqlite3"), 2)


@pytest.mark.chaos_full
@pytest.mark.timeout(14_400)
def test_kill_9_a_thousand_times(store_url: str) -> None:
    _crash(store_url, 1000)
