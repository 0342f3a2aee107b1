"""A stateful property test of the whole job lifecycle on an in-process farm: hypothesis
draws sequences of submits, cancels, batches run, batches delivered after their device
restarted, device restarts and scheduler restarts, and after every step and at the end
checks what no sequence may break:

* a cancel that said it cancelled leaves the job CANCELLED, never DONE;
* a DONE job's result holds exactly its shots, and the shot ledger tiles them once;
* at the end, with the farm left to run, every job is final and the store's deep
  integrity check is clean.

Examples per run: ``QRT_STATEFUL_EXAMPLES`` (default 8, about 8 s in all).
"""

from __future__ import annotations

import asyncio
import os
import shutil
import tempfile
from pathlib import Path

from hypothesis import HealthCheck, settings
from hypothesis import strategies as st
from hypothesis.stateful import RuleBasedStateMachine, invariant, precondition, rule

from qrt_ray.actors.device import Device
from qrt_ray.actors.ports import LocalPorts
from qrt_ray.actors.scheduler import Scheduler
from qrt_ray.config import PolicyConfig, SchedulingConfig
from qrt_ray.lifecycle import JobState
from qrt_ray.results import decode_result
from qrt_ray.store import open_store
from qrt_ray.store.integrity import check_integrity
from tests.local_farm import FARM, REPORT_KEY, drive, spec

S = JobState
SCHEDULING = SchedulingConfig(slice_shots=300)  # big jobs run in slices: preemption points
NAMES = [d.name for d in FARM.devices]
EXAMPLES = int(os.environ.get("QRT_STATEFUL_EXAMPLES", "8"))
DRAIN_S = float(os.environ.get("QRT_STATEFUL_DRAIN_S", "20"))


class FarmSequences(RuleBasedStateMachine):
    """One in-process farm per example; rules are what users and faults do to it."""

    def __init__(self) -> None:
        super().__init__()
        self.tmp = Path(tempfile.mkdtemp(prefix="qrt-stateful-"))
        self.loop = asyncio.new_event_loop()
        self.store = open_store(self.tmp / "jobs.sqlite3")
        self.devices = {
            d.name: Device(d, max_parallel_threads=1, scheduling=SCHEDULING, report_key=REPORT_KEY)
            for d in FARM.devices
        }
        self.sched = self._scheduler()
        self._run(self.sched.start())
        self.shots: dict[str, int] = {}
        self.cancelled: set[str] = set()
        self.seed = 0

    def _scheduler(self) -> Scheduler:
        return Scheduler(
            self.store,
            LocalPorts(list(self.devices.values())),
            policy_config=PolicyConfig(scheduling=SCHEDULING),
            report_key=REPORT_KEY,
        )

    def _run(self, coro):  # type: ignore[no-untyped-def]
        return self.loop.run_until_complete(coro)

    # == what users do =================================================================

    @rule(
        count=st.integers(1, 3),
        shots=st.sampled_from([100, 400, 900]),
        device=st.sampled_from([None, *NAMES]),
    )
    def submit(self, count: int, shots: int, device: str | None) -> None:
        specs = []
        for _ in range(count):
            self.seed += 1
            specs.append(spec(3, shots=shots, seed=self.seed, device=device))
        for rec, created in self._run(self.sched.submit(specs)):
            assert created
            self.shots[rec.job_id] = shots

    @precondition(lambda self: bool(self.shots))
    @rule(data=st.data())
    def cancel(self, data: st.DataObject) -> None:
        job_id = data.draw(st.sampled_from(sorted(self.shots)))
        state, changed = self._run(self.sched.cancel(job_id))
        if changed:
            assert state is S.CANCELLED
            self.cancelled.add(job_id)

    # == what devices and faults do ====================================================

    @rule(device=st.sampled_from(NAMES))
    def run_batch(self, device: str) -> None:
        """A device runs its next batch and reports it (as its actor does)."""
        dev = self.devices[device]
        batch = dev.take_batch()
        if not batch:
            return
        keep = set(self._run(self.sched.batch_started(device, *dev.claim(batch))))
        runs = dev.execute_reporting([i for i in batch if i.job_id in keep])
        self._run(self.sched.batch_finished(device, runs))

    @rule(device=st.sampled_from(NAMES))
    def run_batch_across_a_restart(self, device: str) -> None:
        """A batch starts, the device restarts under it, then its runs arrive late."""
        dev = self.devices[device]
        batch = dev.take_batch()
        if not batch:
            return
        keep = set(self._run(self.sched.batch_started(device, *dev.claim(batch))))
        dev.restart()
        self._run(self.sched._refresh_snapshots(force=True))
        runs = dev.execute_reporting([i for i in batch if i.job_id in keep])
        self._run(self.sched.batch_finished(device, runs))

    @rule(device=st.sampled_from(NAMES))
    def restart_device(self, device: str) -> None:
        self.devices[device].restart()
        self._run(self.sched._refresh_snapshots(force=True))

    @rule()
    def restart_scheduler(self) -> None:
        """The scheduler dies and a new one recovers from the store (the devices keep
        what they hold, as actors on other nodes would). Its store closes with it: a
        dead process writes nothing after it died."""
        self._run(self.sched.stop())
        self.store.close()
        self.store = open_store(self.tmp / "jobs.sqlite3")
        self.sched = self._scheduler()
        self._run(self.sched.start())

    @rule()
    def let_the_loop_run(self) -> None:
        self._run(asyncio.sleep(0.05))  # placement, compiles, hand-offs

    # == what must hold ================================================================

    @invariant()
    def cancelled_stays_cancelled_and_done_is_exact(self) -> None:
        for job_id in self.cancelled:
            assert self.store.get(job_id).state is S.CANCELLED, job_id
        for job_id, shots in self.shots.items():
            rec = self.store.get(job_id)
            if rec.state is S.DONE:
                _exact(self.store, job_id, shots)

    def teardown(self) -> None:
        try:
            self._run(drive(self.sched, list(self.devices.values()), until_s=DRAIN_S))
            for job_id, shots in self.shots.items():
                rec = self.store.get(job_id)
                assert rec.state.is_final, (job_id, rec.state)
                if rec.state is S.FAILED:
                    assert rec.error, job_id
                if rec.state is S.DONE:
                    _exact(self.store, job_id, shots)
            report = check_integrity(self.store, deep=True)
            assert report.ok, report.as_dict()
        finally:
            self._run(self.sched.stop())
            self.store.close()
            self.loop.close()
            shutil.rmtree(self.tmp, ignore_errors=True)


def _exact(store, job_id: str, shots: int) -> None:  # type: ignore[no-untyped-def]
    """The result holds exactly ``shots``; no run is in the ledger twice, and the runs
    the result used (its calibration, from the attempt it was last rerun whole at)
    tile 0..shots once."""
    rec = store.get(job_id)
    result = decode_result(store.get_blob(rec.result_sha256))
    assert sum(result.counts().values()) == shots, job_id
    rows = store.shot_ledger(job_id)
    keys = [(r.attempt, r.first_shot) for r in rows]
    assert len(set(keys)) == len(keys), (job_id, keys)
    first = (rec.recovery or {}).get("runs_from_attempt") or 0
    kept = [r for r in rows if r.calibration_id == rec.calibration_id and r.attempt >= first]
    spans = sorted((r.first_shot, r.first_shot + r.shots) for r in kept)
    edge = 0
    for start, end in spans:
        assert start == edge, (job_id, spans)
        edge = end
    assert edge == shots, (job_id, spans)


FarmSequences.TestCase.settings = settings(
    max_examples=EXAMPLES,
    stateful_step_count=25,
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow],
)
test_farm_sequences = FarmSequences.TestCase
