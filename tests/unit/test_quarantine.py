"""Poison jobs: a job whose circuits crash its simulator is found by running suspects
alone and dead-lettered; the jobs that shared its batch still finish."""

from __future__ import annotations

import asyncio
from pathlib import Path

from qrt_ray.actors.device import Device
from qrt_ray.actors.device_queue import DeviceQueue, WorkItem
from qrt_ray.actors.ports import LocalPorts
from qrt_ray.actors.scheduler import Scheduler
from qrt_ray.config import ChaosConfig, PolicyConfig, SchedulingConfig
from qrt_ray.lifecycle import ErrorClass, JobState
from qrt_ray.models import DeviceStatus
from qrt_ray.policies.quarantine import Quarantine
from qrt_ray.store import open_store
from tests.local_farm import FARM, REPORT_KEY, drive, spec

POISON_SEED = 666


def test_a_crash_in_company_makes_suspects_and_a_crash_alone_counts() -> None:
    q = Quarantine(poison_after=2)
    assert not q.crashed("a", alone=False) and not q.crashed("b", alone=False)
    assert q.is_suspect("a") and q.is_suspect("b") and q.failures_alone("a") == 0
    assert not q.crashed("a", alone=True)  # once alone: still only a suspect
    assert q.crashed("a", alone=True)  # twice alone: poison
    q.forget("a")
    assert not q.is_suspect("a") and len(q) == 1


def _item(job: str, solo: bool = False) -> WorkItem:
    return WorkItem(job, 1, "cal", (b"x",), 100, 5, solo=solo)


def test_a_suspect_runs_in_a_batch_of_its_own() -> None:
    queue = DeviceQueue(SchedulingConfig())
    queue.add([_item("a"), _item("s", solo=True), _item("b"), _item("c")], now=0.0)
    first = [i.job_id for i in queue.take(now=1.0, max_circuits=100)]
    assert first == ["a", "b", "c"]  # the suspect waits for a batch of its own
    assert [i.job_id for i in queue.take(now=1.0, max_circuits=100)] == ["s"]
    queue.add([_item("s2", solo=True), _item("d")], now=2.0)
    assert [i.job_id for i in queue.take(now=3.0, max_circuits=100)] == ["s2"]
    assert [i.job_id for i in queue.take(now=3.0, max_circuits=100)] == ["d"]


def test_a_poison_job_is_dead_lettered_and_its_batch_mates_finish(tmp_path: Path) -> None:
    chaos = ChaosConfig(poison_seed=POISON_SEED, effect="raise")
    scheduling = SchedulingConfig()
    devices = [
        Device(
            d.model_copy(update={"chaos": chaos}),
            max_parallel_threads=1,
            scheduling=scheduling,
            report_key=REPORT_KEY,
        )
        for d in FARM.devices
    ]
    store = open_store(tmp_path / "jobs.sqlite3")
    sched = Scheduler(
        store,
        LocalPorts(devices),
        policy_config=PolicyConfig(scheduling=scheduling),
        report_key=REPORT_KEY,
    )

    async def main() -> None:
        await sched.start()
        # one batch on manila: the poison job among four others
        admitted = await sched.submit(
            [spec(3, seed=POISON_SEED, device="manila")]
            + [spec(3, seed=k, device="manila") for k in range(4)]
        )
        ids = [rec.job_id for rec, _ in admitted]
        await drive(sched, devices, until_s=120)
        poison, *others = [await sched.get(j) for j in ids]
        assert poison.state is JobState.FAILED and poison.error_class is ErrorClass.POISON
        assert "dead-lettered" in (poison.error or "")
        assert "simulator" in (poison.error or "")
        for rec in others:
            assert rec.state is JobState.DONE, rec.error
            assert rec.attempts <= 2  # one attempt lost with the poison job, at most
        assert all(d.status is DeviceStatus.ONLINE for d in devices)
        assert len(sched.quarantine) == 0  # final jobs are forgotten
        await sched.stop()

    asyncio.run(main())
