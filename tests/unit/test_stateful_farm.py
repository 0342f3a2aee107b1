"""A stateful property test of the whole job lifecycle on an in-process farm: hypothesis
draws sequences of submits, cancels, batches run, batches delivered after their device
restarted, device restarts, scheduler restarts and job-store writes that fail (before
their commit, as on a full disk, or after it, as when a database connection drops
before the answer), and after every step and at the end checks what no sequence may
break:

* a cancel that said it cancelled leaves the job CANCELLED, never DONE;
* a DONE job's result holds exactly its shots, and the runs it used tile them once
  (a run executed twice across a failed store write stays in the ledger, used once);
* at the end, with the farm left to run, every job the store holds (acknowledged or
  not) is final, and the store's deep integrity check is clean.

Examples per run: ``QRT_STATEFUL_EXAMPLES`` (default 8, about 8 s in all). With store
faults drawn it found a job billed twice, jobs asking a device for zero shots and a
cancel that never returned (each fixed and pinned by a deterministic test in
``test_jobflow.py`` or ``test_fault_recovery.py``); ``QRT_STATEFUL_STORE_FAULTS=0``
leaves them out.
"""

from __future__ import annotations

import asyncio
import os
import shutil
import tempfile
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import TypeVar

from hypothesis import HealthCheck, settings
from hypothesis import strategies as st
from hypothesis.stateful import RuleBasedStateMachine, invariant, precondition, rule

from qrt_ray.actors.collector import tiling
from qrt_ray.actors.device import Device
from qrt_ray.actors.ports import LocalPorts
from qrt_ray.actors.scheduler import Scheduler
from qrt_ray.config import PolicyConfig, SchedulingConfig
from qrt_ray.errors import StoreUnavailableError
from qrt_ray.lifecycle import JobState
from qrt_ray.results import decode_result
from qrt_ray.store import open_store
from qrt_ray.store.faults import StoreFaults
from qrt_ray.store.integrity import check_integrity
from tests.local_farm import FARM, REPORT_KEY, drive, spec

S = JobState
SCHEDULING = SchedulingConfig(slice_shots=300)  # big jobs run in slices: preemption points
NAMES = [d.name for d in FARM.devices]
EXAMPLES = int(os.environ.get("QRT_STATEFUL_EXAMPLES", "8"))
DRAIN_S = float(os.environ.get("QRT_STATEFUL_DRAIN_S", "20"))
STORE_FAULTS = os.environ.get("QRT_STATEFUL_STORE_FAULTS", "1") != "0"
T = TypeVar("T")


class FarmSequences(RuleBasedStateMachine):
    """One in-process farm per example; rules are what users and faults do to it."""

    def __init__(self) -> None:
        super().__init__()
        self.tmp = Path(tempfile.mkdtemp(prefix="qrt-stateful-"))
        self.loop = asyncio.new_event_loop()
        self.faults = StoreFaults()
        self.store = self.faults.wrap(open_store(self.tmp / "jobs.sqlite3"))
        self.devices = {
            d.name: Device(d, max_parallel_threads=1, scheduling=SCHEDULING, report_key=REPORT_KEY)
            for d in FARM.devices
        }
        self.sched = self._scheduler()
        self._start()
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

    def _retried(self, call: Callable[[], Awaitable[T]]) -> T:
        """What a device or Ray does with a call the store refused: try it again (each
        try uses up one failing write, so this ends)."""
        for _ in range(10):
            try:
                return self._run(call())
            except StoreUnavailableError:
                continue
        raise AssertionError("the store kept refusing writes")

    def _start(self) -> None:
        self._retried(self.sched.start)  # a start that fails is restarted by Ray

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
        try:
            admitted = self._run(self.sched.submit(specs))
        except StoreUnavailableError:
            return  # not acknowledged (the store may hold them all the same)
        for rec, created in admitted:
            assert created
            self.shots[rec.job_id] = shots

    @precondition(lambda self: self.seed > 0)
    @rule(data=st.data())
    def cancel(self, data: st.DataObject) -> None:
        # an index, not a sampled id: which submits the store took depends on timing,
        # and hypothesis needs the same draws (and rules) for the same choices
        pick = data.draw(st.integers(0, 63))
        known = sorted(self.shots)
        if not known:
            return
        job_id = known[pick % len(known)]
        try:
            state, changed = self._run(self.sched.cancel(job_id))
        except StoreUnavailableError:
            return  # the user is told it did not take
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
        claim = dev.claim(batch)
        keep = set(self._retried(lambda: self.sched.batch_started(device, *claim)))
        runs = dev.execute_reporting([i for i in batch if i.job_id in keep])
        self._retried(lambda: self.sched.batch_finished(device, runs))

    @rule(device=st.sampled_from(NAMES))
    def run_batch_across_a_restart(self, device: str) -> None:
        """A batch starts, the device restarts under it, then its runs arrive late."""
        dev = self.devices[device]
        batch = dev.take_batch()
        if not batch:
            return
        claim = dev.claim(batch)
        keep = set(self._retried(lambda: self.sched.batch_started(device, *claim)))
        dev.restart()
        self._retried(lambda: self.sched._refresh_snapshots(force=True))
        runs = dev.execute_reporting([i for i in batch if i.job_id in keep])
        self._retried(lambda: self.sched.batch_finished(device, runs))

    @rule(device=st.sampled_from(NAMES))
    def restart_device(self, device: str) -> None:
        self.devices[device].restart()
        self._retried(lambda: self.sched._refresh_snapshots(force=True))

    @rule()
    def restart_scheduler(self) -> None:
        """The scheduler dies and a new one recovers from the store (the devices keep
        what they hold, as actors on other nodes would). Its store closes with it: a
        dead process writes nothing after it died."""
        self._run(self.sched.stop())
        self.store.close()
        self.store = self.faults.wrap(open_store(self.tmp / "jobs.sqlite3"))
        self.sched = self._scheduler()
        self._start()

    @precondition(lambda self: STORE_FAULTS)
    @rule(writes=st.integers(1, 3), after=st.booleans())
    def store_refuses_writes(self, writes: int, after: bool) -> None:
        """The store's next writes fail: a full disk (nothing written) or, with
        ``after``, a connection lost between the commit and its answer."""
        self.faults.left = writes
        self.faults.after = after

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
            self._drain()
            stored = [str(r[0]) for r in self.store.read_sql("SELECT job_id FROM jobs")]
            assert set(self.shots) <= set(stored)
            for job_id in stored:
                rec = self.store.get(job_id)
                assert rec.state.is_final, (job_id, rec.state, _story(self.store, job_id))
                if rec.state is S.FAILED:
                    assert rec.error, job_id
                if rec.state is S.DONE:
                    _exact(self.store, job_id, rec.spec.shots)
            report = check_integrity(self.store, deep=True)
            assert report.ok, report.render()
        finally:
            self._run(self.sched.stop())
            self.store.close()
            self.loop.close()
            shutil.rmtree(self.tmp, ignore_errors=True)

    def _drain(self) -> None:
        """Let the farm run, its store healthy again, until every job it holds is final
        (a job whose admission failed after its commit is found by the scheduler)."""
        self.faults.left = 0
        deadline = self.loop.time() + DRAIN_S
        devices = list(self.devices.values())
        while self.loop.time() < deadline:
            self._run(drive(self.sched, devices, until_s=max(0.1, deadline - self.loop.time())))
            self._run(asyncio.sleep(0.1))  # a pass of the loop: failed writes read back
            if not self.sched.live_count() and not self.store.unfinished():
                return


def _story(store, job_id: str) -> list[str]:  # type: ignore[no-untyped-def]
    """The job's stored moves and ledger, for a failure's message."""
    moves = [f"{e.from_state} -> {e.to_state}: {e.reason[:80]}" for e in store.events(job_id)]
    runs = [(r.attempt, r.first_shot, r.shots) for r in store.shot_ledger(job_id)]
    return [*moves, f"ledger {runs}"]


def _exact(store, job_id: str, shots: int) -> None:  # type: ignore[no-untyped-def]
    """The result holds exactly ``shots``; no run is in the ledger twice, and the runs
    the result used (its calibration, from the attempt it was last rerun whole at,
    one per shot range: ``collector.tiling``) tile 0..shots once."""
    rec = store.get(job_id)
    result = decode_result(store.get_blob(rec.result_sha256))
    assert sum(result.counts().values()) == shots, job_id
    rows = store.shot_ledger(job_id)
    keys = [(r.attempt, r.first_shot) for r in rows]
    assert len(set(keys)) == len(keys), (job_id, keys)
    first = (rec.recovery or {}).get("runs_from_attempt") or 0
    kept = [r for r in rows if r.calibration_id == rec.calibration_id and r.attempt >= first]
    used = [kept[i] for i in tiling([(r.first_shot, r.shots, r.attempt) for r in kept])]
    spans = sorted((r.first_shot, r.first_shot + r.shots) for r in used)
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
