"""Chaos drills: a workload on a real local farm, faults injected at random times from
a seed, and the same invariants checked at the end of every drill.

The invariants (what no fault may break):

* every job is final (DONE, FAILED or CANCELLED) within the drill's deadline, and a
  FAILED one says why: nothing lost, nothing stuck;
* every DONE job's result holds exactly the shots asked, per circuit;
* the shot ledger tiles each DONE job's shots once (no shot missing, none counted
  twice) on the result's one calibration;
* the store's deep integrity check is clean (transitions chained, no job billed twice,
  blobs intact).

Faults are Ray kills of the farm's actors (Ray restarts each: ``max_restarts=-1``),
network partitions between a device and the rest of the farm (each call into the
device and each report it sends hangs, then fails, until the partition heals; Ray's
own control plane still reaches it), and job-store faults in the scheduler: a few
writes that fail (before their commit, or after it) or writes slowed for a while.
Recovery is the time from a kill, or from a partition's or a slow store's end, until
the actor answers again.
"""

from __future__ import annotations

import contextlib
import itertools
import math
import random
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import ray

from qrt_ray import JobHandle, JobState, QuantumRuntime
from qrt_ray import farm as farm_mod
from qrt_ray.models import STORED, JobSpec
from qrt_ray.store import open_store
from qrt_ray.store.integrity import IntegrityReport, check_integrity
from tests.circuits import ghz

KINDS = ("device", "scheduler", "calibration", "partition", "store_fail", "store_slow")
# a partition lasts this long (seconds, drawn from the seed): from shorter than the
# scheduler's snapshot timeout to long enough that the device is taken for gone
PARTITION_S = (2.0, 20.0)
# a slow store: each write waits this long, for a time drawn from PARTITION_S
SLOW_WRITE_S = 0.2


@dataclass(frozen=True, slots=True, order=True)
class Fault:
    """One injection: when (seconds into the drill), what, which device (for a store
    fault: ``before`` or ``after`` the commit), and how long it lasts (a partition, a
    slow store) or how many writes fail."""

    at_s: float
    kind: str
    target: str = ""
    for_s: float = 0.0


def schedule(
    seed: int, counts: dict[str, int], span_s: float, devices: Sequence[str]
) -> list[Fault]:
    """``counts[kind]`` faults of each kind at random times in ``[0, span_s)``,
    reproducible from ``seed``; device kills and partitions pick a device at random."""
    rng = random.Random(seed)
    out = []
    for kind in KINDS:
        for _ in range(counts.get(kind, 0)):
            target = rng.choice(list(devices)) if kind in ("device", "partition") else ""
            at = round(rng.uniform(0, span_s), 3)
            for_s = 0.0
            if kind in ("partition", "store_slow"):
                for_s = round(rng.uniform(*PARTITION_S), 1)
            elif kind == "store_fail":
                target, for_s = rng.choice(("before", "after")), float(rng.randint(1, 3))
            out.append(Fault(at, kind, target, for_s))
    return sorted(out)


@dataclass(slots=True)
class DrillReport:
    """What one drill injected and what it found."""

    faults: list[Fault]
    jobs: int
    states: dict[str, int]
    lost: list[str]  # not final at the deadline
    failed_without_reason: list[str]
    wrong_shots: list[str]
    ledger_problems: list[str]
    integrity: IntegrityReport
    recovery_s: list[float] = field(default_factory=list)
    seconds: float = 0.0
    failures: dict[str, str] = field(default_factory=dict)  # FAILED job: class and error
    not_injected: list[str] = field(default_factory=list)  # faults the drill could not make

    @property
    def duplicated(self) -> int:
        """Shots or charges counted twice (the ledger and billing checks)."""
        billing = next(c.problems for c in self.integrity.checks if c.name == "billing")
        return len(self.ledger_problems) + billing

    def recovery_p95_s(self) -> float:
        """95th percentile of the recovery times (0 with no fault)."""
        if not self.recovery_s:
            return 0.0
        ordered = sorted(self.recovery_s)
        return ordered[min(len(ordered) - 1, int(0.95 * len(ordered)))]

    def problems(self) -> list[str]:
        """Every broken invariant, in words (empty: the drill passed)."""
        out = []
        if self.lost:
            out.append(f"{len(self.lost)} jobs not final: {self.lost[:5]}")
        if self.failed_without_reason:
            out.append(f"FAILED without a reason: {self.failed_without_reason[:5]}")
        if self.wrong_shots:
            out.append(f"wrong shots: {self.wrong_shots[:5]}")
        if self.ledger_problems:
            out.append(f"ledger: {self.ledger_problems[:5]}")
        if not self.integrity.ok:
            out.append(self.integrity.render())
        if self.not_injected:
            out.append(f"faults not injected: {self.not_injected[:5]}")
        return out

    def row(self) -> dict[str, Any]:
        """The drill table's row."""
        return {
            "faults": len(self.faults),
            "jobs": self.jobs,
            "states": dict(self.states),
            "lost": len(self.lost),
            "duplicated": self.duplicated,
            "recovery_p95_s": round(self.recovery_p95_s(), 2),
            "seconds": round(self.seconds, 1),
            "failures": dict(self.failures),
        }


def _answers(fn: Callable[[], Any], deadline: float) -> bool:
    while time.monotonic() < deadline:
        try:
            fn()
            return True
        except Exception:
            time.sleep(0.2)
    return False


def inject(rt: QuantumRuntime, fault: Fault, timeout_s: float = 120.0) -> float:
    """Kill one actor (Ray restarts it), or cut a device off for ``fault.for_s``, and
    wait until it answers again; returns the seconds from the kill, or the healing,
    until it did (``timeout_s`` if it never did)."""
    ns = rt.namespace
    started = time.monotonic()
    deadline = started + timeout_s
    if fault.kind == "device":
        handle = farm_mod.device_handle(fault.target, ns)
        ray.kill(handle, no_restart=False)
        back = _answers(lambda: ray.get(handle.snapshot.remote(), timeout=5), deadline)
    elif fault.kind == "scheduler":
        ray.kill(farm_mod.find_scheduler(ns), no_restart=False)
        back = _answers(lambda: rt.jobs(limit=1), deadline)
    elif fault.kind == "partition":
        handle = farm_mod.device_handle(fault.target, ns)

        def cut() -> None:  # the device may be restarting from a kill just before
            ray.get(handle.inject_fault.remote("partition", fault.for_s), timeout=5)

        if not _answers(cut, deadline):
            raise RuntimeError(f"could not cut {fault.target} off within {timeout_s:g} s")
        started = time.monotonic()
        healed = started + fault.for_s
        time.sleep(max(0.0, healed - time.monotonic()))
        # the scheduler may have restarted the device meanwhile (it went silent): its
        # new actor answers at once
        back = _answers(lambda: ray.get(handle.snapshot.remote(), timeout=5), healed + timeout_s)
        return time.monotonic() - healed if back else timeout_s
    elif fault.kind in ("store_fail", "store_slow"):

        def hurt() -> None:  # the scheduler may be restarting from a kill just before
            sched = farm_mod.find_scheduler(ns)
            if fault.kind == "store_fail":
                call = sched.inject_store_fault.remote("fail", fault.for_s, fault.target == "after")
            else:
                call = sched.inject_store_fault.remote("slow", SLOW_WRITE_S, for_s=fault.for_s)
            ray.get(call, timeout=5)

        if not _answers(hurt, deadline):
            raise RuntimeError(f"could not break the store within {timeout_s:g} s")
        started = time.monotonic()
        over = started + (fault.for_s if fault.kind == "store_slow" else 0.0)
        time.sleep(max(0.0, over - time.monotonic()))
        back = _answers(lambda: rt.jobs(limit=1), over + timeout_s)
        return time.monotonic() - over if back else timeout_s
    elif fault.kind == "calibration":
        handle = farm_mod.calibration_handle(ns)
        ray.kill(handle, no_restart=False)
        back = _answers(lambda: ray.get(handle.report.remote(), timeout=5), deadline)
    else:
        raise ValueError(f"fault kind {fault.kind!r}; use one of {KINDS}")
    return time.monotonic() - started if back else timeout_s


def _ledger_problem(store: Any, job_id: str, shots: int) -> str | None:
    """Whether the shot ledger tiles a DONE job's shots once on its calibration."""
    done = store.get(job_id)
    rows = store.shot_ledger(job_id)
    keys = [(r.attempt, r.first_shot) for r in rows]
    if len(set(keys)) != len(keys):
        return f"{job_id}: a run counted twice"
    kept = [r for r in rows if r.calibration_id == done.calibration_id]
    first = (done.recovery or {}).get("runs_from_attempt")
    if first is not None:
        kept = [r for r in kept if r.attempt >= first]
    spans = sorted((r.first_shot, r.first_shot + r.shots) for r in kept)
    if not spans or spans[0][0] != 0 or spans[-1][1] != shots:
        return f"{job_id}: runs cover {spans[:3]}..., not 0..{shots}"
    if any(a[1] != b[0] for a, b in itertools.pairwise(spans)):
        return f"{job_id}: runs overlap or leave a gap: {spans[:6]}"
    return None


def _heal_store(rt: QuantumRuntime) -> None:
    """Clear the job store's injected faults (a scheduler restarting meanwhile starts
    with none)."""
    with contextlib.suppress(Exception):
        ray.get(
            farm_mod.find_scheduler(rt.namespace).inject_store_fault.remote("clear", 0), timeout=30
        )


def run_drill(
    rt: QuantumRuntime,
    store_url: str | Path,
    faults: Sequence[Fault],
    *,
    jobs: int,
    shots: int,
    seed: int,
    deadline_s: float = 600.0,
) -> DrillReport:
    """Submit ``jobs`` GHZ jobs (placed by the farm) in batches spread over the faults'
    schedule, inject ``faults`` on it from a thread, wait for every job and every
    fault's recovery, and check the invariants.

    ``deadline_s`` bounds the whole drill; it is stretched to the last fault's end
    plus 300 s, so a long schedule is injected whole.
    """
    rng = random.Random(seed)
    started = time.monotonic()
    last_at = max((f.at_s for f in faults), default=0.0)
    deadline_s = max(deadline_s, max((f.at_s + f.for_s for f in faults), default=0.0) + 300)
    batches = max(1, math.ceil(jobs / 20))
    recovery: list[float] = []
    not_injected: list[str] = []

    stop = threading.Event()

    def chaos() -> None:
        for fault in faults:
            if stop.wait(max(0.0, started + fault.at_s - time.monotonic())):
                return
            try:
                recovery.append(inject(rt, fault))
            except Exception as exc:  # the drill goes on; the report says so
                not_injected.append(f"{fault}: {type(exc).__name__}: {str(exc)[:200]}")

    injector = threading.Thread(target=chaos, name="chaos", daemon=True)
    injector.start()
    handles: list[JobHandle] = []
    try:
        for k, i in enumerate(range(0, jobs, 20)):  # spread so faults meet work
            time.sleep(max(0.0, started + k * last_at / batches - time.monotonic()))
            batch = [ghz(rng.choice((2, 3))) for _ in range(min(20, jobs - i))]
            handles.extend(rt.submit_many(batch, shots=shots, seed=seed + i))
        rt.wait(handles, timeout_s=max(1.0, deadline_s - (time.monotonic() - started)))
    except BaseException:
        # no fault outlives the drill: the farm goes on to other tests
        stop.set()
        injector.join(timeout=180)
        _heal_store(rt)
        raise
    injector.join(timeout=max(1.0, deadline_s - (time.monotonic() - started)))
    stop.set()  # an injector still running past the deadline injects nothing more
    _heal_store(rt)  # failing writes injected late, and not met yet, go too
    store = open_store(store_url)
    try:
        records = {h.job_id: store.get(h.job_id) for h in handles}
        states: dict[str, int] = {}
        for rec in records.values():
            states[rec.state.value] = states.get(rec.state.value, 0) + 1
        lost = [j for j, r in records.items() if not r.state.is_final]
        no_reason = [j for j, r in records.items() if r.state is JobState.FAILED and not r.error]
        failures = {
            j: f"{r.error_class.value if r.error_class else '?'}: {(r.error or '')[:300]}"
            for j, r in records.items()
            if r.state is JobState.FAILED
        }
        done = [j for j, r in records.items() if r.state is JobState.DONE]
        wrong = []
        for h in (h for h in handles if h.job_id in set(done)):
            counts = h.result(timeout_s=60).counts()
            if sum(counts.values()) != shots:
                wrong.append(h.job_id)
        ledger = [p for j in done if (p := _ledger_problem(store, j, shots)) is not None]
        integrity = check_integrity(store, deep=True)
    finally:
        store.close()
    return DrillReport(
        list(faults),
        len(handles),
        states,
        lost,
        no_reason,
        wrong,
        ledger,
        integrity,
        recovery,
        time.monotonic() - started,
        failures,
        not_injected,
    )


@dataclass(slots=True)
class CrashReport:
    """What the kill -9 drill found."""

    runs: int
    killed: int
    acknowledged: int
    lost: list[str]  # acknowledged, then missing or not DONE at the end
    jobs_stored: int
    ledger_problems: list[str]
    integrity: IntegrityReport
    seconds: float
    keys: int = 0  # distinct idempotency keys the runs could have submitted

    def problems(self) -> list[str]:
        """Every broken invariant, in words."""
        out = []
        if self.lost:
            out.append(f"{len(self.lost)} acknowledged jobs lost or not DONE: {self.lost[:5]}")
        if self.jobs_stored < self.acknowledged or self.jobs_stored > self.keys:
            out.append(
                f"{self.jobs_stored} jobs stored for {self.acknowledged} acknowledged and "
                f"{self.keys} keys submitted at most"
            )
        if self.ledger_problems:
            out.append(f"ledger: {self.ledger_problems[:5]}")
        if not self.integrity.ok:
            out.append(self.integrity.render())
        return out


def crash_drill(
    store_url: str, *, runs: int, per_run: int, seed: int, cwd: Path, env: dict[str, str]
) -> CrashReport:
    """``runs`` short runs of a whole runtime on one store, each killed with SIGKILL at
    a random moment (from ``seed``) while it submits and runs jobs, then one run left to
    finish everything; checks that every acknowledged job is DONE, none was made
    twice, the ledger and the store are consistent."""
    rng = random.Random(seed)
    started = time.monotonic()
    acked: dict[str, str] = {}
    killed = 0

    def child(run: int, jobs: int) -> subprocess.Popen[str]:
        return subprocess.Popen(
            [sys.executable, "-m", "tests.chaos.crash_child", store_url, str(run), str(jobs)],
            cwd=cwd,
            env=env,
            stdout=subprocess.PIPE,
            stderr=subprocess.DEVNULL,
            text=True,
        )

    def read(proc: subprocess.Popen[str], seen: list[int], moved: threading.Condition) -> None:
        assert proc.stdout is not None
        for line in proc.stdout:
            with moved:
                if line.startswith("ACK "):
                    _, job_id, key = line.split()
                    acked[job_id] = key
                    seen[0] += 1
                moved.notify_all()
        with moved:
            seen[0] = per_run + 1  # the child is gone
            moved.notify_all()

    for run in range(runs):
        proc = child(run, per_run)
        seen, moved = [0], threading.Condition()
        reader = threading.Thread(target=read, args=(proc, seen, moved), daemon=True)
        reader.start()
        # killed after a random number of its submits were acknowledged, a moment
        # later: while it stores submits, transitions, runs and results
        after = rng.randint(0, per_run)
        with moved:
            moved.wait_for(lambda: seen[0] >= after, timeout=120)  # noqa: B023
        time.sleep(rng.uniform(0.0, 0.3))
        if proc.poll() is None:
            proc.send_signal(signal.SIGKILL)
            killed += 1
        proc.wait(timeout=60)
        reader.join(timeout=10)
    final = child(runs, 0)
    final.communicate(timeout=600)
    store = open_store(store_url)
    try:
        lost = []
        for job_id in acked:
            try:
                if store.get(job_id).state is not JobState.DONE:
                    lost.append(job_id)
            except Exception:
                lost.append(job_id)
        rows = store.read_sql("SELECT job_id, spec_json FROM jobs")
        ledger = []
        for job_id, spec_json in rows:
            shots = JobSpec.model_validate_json(spec_json, context=STORED).shots
            if store.get(job_id).state is JobState.DONE:
                problem = _ledger_problem(store, job_id, shots)
                if problem:
                    ledger.append(problem)
        integrity = check_integrity(store, deep=True)
    finally:
        store.close()
    return CrashReport(
        runs,
        killed,
        len(acked),
        lost,
        len(rows),
        ledger,
        integrity,
        time.monotonic() - started,
        runs * per_run,
    )
