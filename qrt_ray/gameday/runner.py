"""Run a game day against a running farm: a steady workload, the scenario's faults at
their times, the farm's reactions watched, then a report (:mod:`.report`).

The runner is the operator's tool: it holds Ray (it kills actors and breaks devices).
Its workload runs as the tenant ``gameday``, each job tagged with the run's id, so a
game day's jobs are told apart in bills and job lists. A scenario with an
``auth-outage`` also runs that tenant's own client beside it, with a token made for
the run and revoked after (:mod:`.tenant`). Nothing is cleaned up by
force: a drifted device is fixed by the farm's own recalibration, an outage ends by
itself, a killed actor is restarted by Ray. That is the point of the exercise.
"""

from __future__ import annotations

import logging
import random
import threading
import time
import uuid
from collections.abc import Callable, Sequence
from typing import Any

import ray

from qrt_ray import farm as farm_mod
from qrt_ray.errors import FarmBusyError, QrtError
from qrt_ray.gameday.nodes import lose_node
from qrt_ray.gameday.report import (
    Event,
    FaultOutcome,
    JobFacts,
    Report,
    job_summary,
    judge,
    latency_by_phase,
    slo_impact,
)
from qrt_ray.gameday.scenario import Scenario, Step
from qrt_ray.gameday.tenant import OUTCOMES, TenantClient, close_tenant, open_tenant
from qrt_ray.slo import load_slo_config, report_dict

logger = logging.getLogger("qrt.gameday")

TENANT = "gameday"
_POLL_S = 0.5


def _ghz(n: int) -> str:
    body = "".join(f"cx q[{k}],q[{k + 1}];" for k in range(n - 1))
    return f'OPENQASM 2.0;include "qelib1.inc";qreg q[{n}];creg c[{n}];h q[0];{body}measure q -> c;'


class GameDay:
    """One run of a scenario against the farm ``rt`` (a connected runtime).

    Args:
        rt: the farm, reached through Ray.
        scenario: what to run.
        progress: called with each timeline event as it happens (None: quiet).
    """

    def __init__(
        self, rt: Any, scenario: Scenario, progress: Callable[[Event], None] | None = None
    ) -> None:
        self.rt = rt
        self.scenario = scenario
        self.progress = progress
        self.run_id = uuid.uuid4().hex[:8]
        self.tag = f"gameday:{scenario.name}:{self.run_id}"
        self.rng = random.Random(scenario.seed)
        self.timeline: list[Event] = []
        self.faults: list[FaultOutcome] = []
        self.submitted: list[str] = []
        self.refused = 0
        self._lock = threading.Lock()
        self._stop = threading.Event()  # the workload stops
        self._watch_done = threading.Event()  # the watcher stops (after the drain)
        # open drift, outage and partition faults: (outcome, the elapsed time the
        # fault itself ends: an outage's or partition's end, 0 for drift)
        self._open: list[tuple[FaultOutcome, float]] = []
        self._t0 = 0.0
        self._devices: dict[str, Any] = {}  # device -> its last snapshot seen
        # the tenant's side (scenarios with an auth-outage): its answers by outcome,
        # and open auth outages (outcome, the elapsed time the outage ends)
        self._tenant: TenantClient | None = None
        self.tenant_calls: dict[str, int] = {}
        self._auth_open: list[tuple[FaultOutcome, float]] = []
        self._notes: list[str] = []

    # == the run =======================================================================

    def run(self) -> Report:
        """Run the scenario; returns its report (the farm keeps running)."""
        sc = self.scenario
        slos_before = self._slo()
        self._devices = {d.name: d for d in self.rt.devices()}
        for step in sc.steps:  # refused before any load, not at the step's time
            if step.fault == "node-loss":
                self._node_targets(step, pick=False)
        if not any(step.fault == "auth-outage" for step in sc.steps):
            return self._run(slos_before)
        token, token_id = open_tenant(self.rt, TENANT, sc.duration_s + sc.drain_s + 600)
        try:
            w = sc.workload
            job = {
                "circuits": [_ghz(w.qubits)],
                "shots": w.shots,
                "priority": w.priority,
                "tenant": TENANT,
                "tags": [self.tag, "tenant"],
            }
            self._tenant = TenantClient(self.rt.namespace, token, job)
            self.tenant_calls = dict.fromkeys(OUTCOMES, 0)
            return self._run(slos_before)
        finally:
            close_tenant(self.rt, token_id, self._notes.append)

    def _run(self, slos_before: list[dict[str, Any]]) -> Report:
        sc = self.scenario
        self._t0 = time.time()
        self._event(
            "note", sc.name, f"game day {self.run_id} starts ({len(self._devices)} devices)"
        )
        threads = [
            threading.Thread(target=self._workload, name="gameday-load", daemon=True),
            threading.Thread(target=self._watch, name="gameday-watch", daemon=True),
        ]
        if self._tenant is not None:
            threads.append(
                threading.Thread(target=self._tenant_load, name="gameday-tenant", daemon=True)
            )
        for t in threads:
            t.start()
        waiters: list[threading.Thread] = []
        try:
            for index, step in enumerate(sorted(sc.steps, key=lambda s: s.at_s)):
                self._sleep_until(step.at_s)
                waiters += self._inject(index, step)
            self._sleep_until(sc.duration_s)
        finally:
            self._stop.set()
            threads[0].join()
            for t in threads[2:]:
                t.join()
        self._event("note", sc.name, "workload stopped; draining")
        deadline = time.monotonic() + sc.drain_s
        self._drain(sc.drain_s)
        for w in waiters:
            w.join(timeout=max(0.0, deadline - time.monotonic()))
        # a fault may outlast the load (a breaker's cooldown, a slow recalibration):
        # watch on until each has recovered, within the drain time
        while time.monotonic() < deadline and any(f.recovered_s is None for f, _ in self._open):
            time.sleep(_POLL_S)
        self._stop_watch(threads[1])
        return self._report(slos_before)

    def _elapsed(self) -> float:
        return time.time() - self._t0

    def _sleep_until(self, at_s: float) -> None:
        while (left := at_s - self._elapsed()) > 0:
            time.sleep(min(left, 0.2))

    def _event(self, kind: str, subject: str, what: str) -> None:
        event = Event(round(self._elapsed(), 2), kind, subject, what)
        with self._lock:
            self.timeline.append(event)
        if self.progress is not None:
            self.progress(event)

    # == load ==========================================================================

    def _submit(self, count: int, tag: str) -> list[str]:
        w = self.scenario.workload
        try:
            handles = self.rt.submit_many(
                [_ghz(w.qubits)] * count,
                shots=w.shots,
                priority=w.priority,
                tenant=TENANT,
                tags=[self.tag, tag],
            )
        except FarmBusyError as exc:
            with self._lock:
                self.refused += count
            self._event("reaction", "farm", f"refused {count} jobs as busy: {str(exc)[:120]}")
            return []
        ids = [h.job_id for h in handles]
        with self._lock:
            self.submitted.extend(ids)
        return ids

    def _workload(self) -> None:
        period = 1.0 / self.scenario.workload.rate_per_s
        due = time.monotonic()
        while not self._stop.is_set():
            try:
                self._submit(1, "load")
            except QrtError as exc:  # the scheduler restarting beyond the client's retry
                self._event("reaction", "farm", f"submit failed: {str(exc)[:160]}")
            due += period
            self._stop.wait(max(0.0, due - time.monotonic()))

    def _tenant_load(self) -> None:
        """The tenant's client: a job a call (at most two a second), the same job
        again after a "retry" until it is accepted."""
        assert self._tenant is not None
        period = 1.0 / min(self.scenario.workload.rate_per_s, 2.0)
        due = time.monotonic()
        last = None
        while not self._stop.is_set():
            outcome, job_id, message = self._tenant.submit()
            with self._lock:
                self.tenant_calls[outcome] += 1
                if job_id is not None:
                    self.submitted.append(job_id)
            if outcome != last:
                said = f": {message}" if message else ""
                self._event("reaction", "tenant", f"submit answered {outcome}{said}")
                last = outcome
            self._track_auth(outcome, self._elapsed())
            due = max(due + period, time.monotonic())  # a slow answer is not made up for
            self._stop.wait(max(0.0, due - time.monotonic()))

    def _track_auth(self, outcome: str, t: float) -> None:
        """Mark open auth outages: noticed at the tenant's first answer that is not an
        acceptance, recovered at its first acceptance after the outage ended."""
        with self._lock:
            open_now = [(f, end) for f, end in self._auth_open if f.recovered_s is None]
        for f, ends_at in open_now:
            if t < f.at_s:
                continue
            if f.detected_s is None and outcome != "accepted":
                f.detected_s = t - f.at_s
                what = f"auth-outage noticed after {f.detected_s:.1f} s"
                self._event("reaction", "tenants", what)
            if outcome == "accepted" and t >= ends_at:
                f.recovered_s = t - f.at_s
                if f.detected_s is None:
                    f.detail += "; no tenant call met it (each token is trusted 5 s)"
                what = f"auth-outage over after {f.recovered_s:.1f} s"
                self._event("recovered", "tenants", what)

    # == watching ======================================================================

    def _watch(self) -> None:
        while not self._stop.is_set() or not self._watch_done.is_set():
            try:
                seen = {d.name: d for d in self.rt.devices()}
            except Exception as exc:  # the scheduler may be down: that is a finding too
                self._event(
                    "reaction", "scheduler", f"devices not answering ({type(exc).__name__})"
                )
                time.sleep(1.0)
                continue
            for name, now in seen.items():
                before = self._devices.get(name)
                if before is None:
                    continue
                if now.status is not before.status:
                    reason = f" ({now.status_reason[:100]})" if now.status_reason else ""
                    self._event(
                        "reaction", name, f"{before.status.value} -> {now.status.value}{reason}"
                    )
                if now.calibration.taken_at != before.calibration.taken_at:
                    cal = now.calibration.calibration_id
                    self._event("reaction", name, f"recalibrated: {cal}")
                if now.incarnation != before.incarnation:
                    self._event("reaction", name, "device actor restarted")
                self._track(name, now)
            with self._lock:
                self._devices.update(seen)
            time.sleep(_POLL_S)

    def _stop_watch(self, thread: threading.Thread) -> None:
        self._watch_done.set()
        thread.join(timeout=10)

    def _track(self, name: str, snap: Any) -> None:
        """Mark detection and recovery of open drift, outage and partition faults on
        ``name``: detected when the farm stops treating it as ONLINE; a drift recovered
        when it is ONLINE on a calibration taken after the fault, an outage or a
        partition when it is ONLINE after it ended."""
        t = self._elapsed()
        online = snap.status.value == "ONLINE"
        for f, ends_at in self._open:
            if f.target != name or f.recovered_s is not None:
                continue
            if f.detected_s is None and not online:
                f.detected_s = t - f.at_s
                self._event("reaction", name, f"{f.fault} noticed after {f.detected_s:.1f} s")
            fixed = (
                snap.calibration.taken_at > self._t0 + f.at_s
                if f.fault == "drift"
                else t >= ends_at
            )
            if online and fixed:
                f.recovered_s = t - f.at_s
                if f.detected_s is None and f.fault == "drift":
                    # recalibrated, so found: paused and back between two looks
                    f.detected_s = f.recovered_s
                    f.detail += f"; paused and back within one {_POLL_S:g} s poll"
                elif f.detected_s is None:
                    f.detail += "; never noticed: no work of the farm reached it"
                self._event("recovered", name, f"{f.fault} over after {f.recovered_s:.1f} s")

    # == faults ========================================================================

    def _targets(self, step: Step, among: Sequence[str] | None = None) -> list[str]:
        names = sorted(self._devices if among is None else among)
        if isinstance(step.devices, list):
            unknown = [d for d in step.devices if d not in self._devices]
            if unknown:
                raise QrtError(f"devices {unknown}: not devices of this farm ({', '.join(names)})")
            return list(step.devices)
        count = {"all": len(names), "half": max(1, len(names) // 2)}.get(
            str(step.devices), step.devices if isinstance(step.devices, int) else 1
        )
        return self.rng.sample(names, min(int(count), len(names)))

    def _inject(self, index: int, step: Step) -> list[threading.Thread]:
        at = self._elapsed()
        ns = self.rt.namespace
        if step.fault == "burst":
            self._event("fault", "farm", f"burst of {step.jobs} jobs")
            outcome = FaultOutcome(index, "burst", "farm", at, detail=f"{step.jobs} jobs")
            self.faults.append(outcome)
            ids = self._submit(step.jobs, f"burst-{index}")
            waiter = threading.Thread(target=self._burst_done, args=(outcome, ids), daemon=True)
            waiter.start()
            return [waiter]
        if step.fault == "node-loss":
            return self._lose_nodes(index, step, at)
        if step.fault == "auth-outage":
            sched = farm_mod.find_scheduler(ns)
            ray.get(sched.inject_store_fault.remote("auth", step.for_s), timeout=30)
            at = self._elapsed()  # from when it took hold
            outcome = FaultOutcome(
                index, "auth-outage", "tenants", at, detail=f"{step.for_s:g} s token records unread"
            )
            with self._lock:
                self.faults.append(outcome)
                self._auth_open.append((outcome, at + step.for_s))
            self._event("fault", "tenants", f"auth-outage: {outcome.detail}")
            return []
        if step.fault == "kill" and step.actor != "device":
            target = step.actor
            handle = (
                farm_mod.find_scheduler(ns)
                if target == "scheduler"
                else farm_mod.calibration_handle(ns)
            )
            return [self._kill(index, target, handle, at)]
        waiters = []
        for name in self._targets(step):
            handle = farm_mod.device_handle(name, ns)
            if step.fault == "kill":
                waiters.append(self._kill(index, name, handle, at))
                continue
            if step.fault == "drift":
                detail, value, ends = (
                    f"errors x{step.factor:g} until recalibrated",
                    step.factor,
                    0.0,
                )
            else:
                what = "down" if step.fault == "outage" else "cut off from the farm"
                detail, value, ends = f"{step.for_s:g} s {what}", step.for_s, at + step.for_s
            ray.get(handle.inject_fault.remote(step.fault, value), timeout=30)
            outcome = FaultOutcome(index, step.fault, name, at, detail=detail)
            with self._lock:
                self.faults.append(outcome)
                self._open.append((outcome, ends))
            self._event("fault", name, f"{step.fault}: {detail}")
        return waiters

    def _kill(self, index: int, target: str, handle: Any, at: float) -> threading.Thread:
        outcome = FaultOutcome(index, "kill", target, at, detail="Ray kill, restarted by Ray")
        self.faults.append(outcome)
        self._event("fault", target, "killed")
        ray.kill(handle, no_restart=False)
        probe = handle.snapshot if target in self._devices else None

        def back() -> None:
            deadline = time.monotonic() + self.scenario.drain_s + self.scenario.duration_s
            while time.monotonic() < deadline:
                try:
                    if probe is not None:
                        ray.get(probe.remote(), timeout=5)
                    elif target == "scheduler":
                        self.rt.jobs(limit=1)
                    else:
                        ray.get(handle.report.remote(), timeout=5)
                    outcome.recovered_s = self._elapsed() - at
                    self._event(
                        "recovered", target, f"answers again after {outcome.recovered_s:.1f} s"
                    )
                    return
                except Exception:  # still restarting
                    time.sleep(0.2)

        waiter = threading.Thread(target=back, daemon=True)
        waiter.start()
        return waiter

    def _node_targets(self, step: Step, pick: bool = True) -> dict[str, list[str]]:
        """The worker nodes a node-loss step loses, each with its devices: the named
        devices, or as many picked among those that run on a worker node (with
        ``pick`` False, only checked: nothing is drawn from the seed).

        Raises:
            QrtError: a named device runs on the scheduler's node (never lost), or no
                device runs on a worker node (a farm on one machine).
        """
        control = ray.get(farm_mod.find_scheduler(self.rt.namespace).node.remote(), timeout=30)
        where = {
            d.name: d.process[0] for d in self.rt.devices() if d.process is not None
        }  # fmt: skip
        workers = sorted(n for n, node in where.items() if node != control)
        if not workers:
            raise QrtError(
                "node-loss: every device runs on the scheduler's node, which a game day "
                "never loses; run the farm on a cluster with devices on worker nodes "
                "(their resources)"
            )
        named = step.devices if isinstance(step.devices, list) else []
        on_control = [n for n in named if where.get(n, control) == control]
        if on_control:
            raise QrtError(
                f"node-loss: devices {on_control} run on the scheduler's node (or do not "
                f"say where), which a game day never loses; name devices on worker nodes "
                f"({', '.join(workers)})"
            )
        by_node: dict[str, list[str]] = {}
        for name in self._targets(step, among=workers) if pick else []:
            by_node.setdefault(where[name], []).append(name)
        return by_node

    def _lose_nodes(self, index: int, step: Step, at: float) -> list[threading.Thread]:
        """Lose the worker nodes the step's devices run on; each is recovered when all
        its devices answer again from another node."""
        by_node = self._node_targets(step)
        waiters = []
        for node, names in by_node.items():
            outcome = FaultOutcome(
                index, "node-loss", f"node {node[:12]}", at, detail=f"with {', '.join(names)}"
            )
            with self._lock:
                self.faults.append(outcome)
            self._event("fault", outcome.target, f"lost with {', '.join(names)}")
            killed = lose_node(node)
            if killed is not None:
                outcome.detail += f"; {killed} processes killed"
            waiter = threading.Thread(
                target=self._back_elsewhere, args=(outcome, node, names), daemon=True
            )
            waiter.start()
            waiters.append(waiter)
        return waiters

    def _back_elsewhere(self, outcome: FaultOutcome, node: str, names: Sequence[str]) -> None:
        """Wait until every one of ``names`` answers from a node other than ``node``."""
        ns = self.rt.namespace
        left = set(names)
        deadline = time.monotonic() + self.scenario.drain_s + self.scenario.duration_s
        while left and time.monotonic() < deadline:
            for name in sorted(left):
                try:
                    snap = ray.get(farm_mod.device_handle(name, ns).snapshot.remote(), timeout=5)
                except Exception:  # still being restarted
                    if outcome.detected_s is None:
                        outcome.detected_s = self._elapsed() - outcome.at_s
                    continue
                if snap.process is not None and snap.process[0] != node:
                    left.discard(name)
                    self._event("reaction", name, f"back on node {snap.process[0][:12]}")
            if left:
                time.sleep(0.2)
        if not left:
            outcome.recovered_s = self._elapsed() - outcome.at_s
            self._event(
                "recovered", outcome.target, f"its devices answer again after "
                f"{outcome.recovered_s:.1f} s"
            )  # fmt: skip

    def _burst_done(self, outcome: FaultOutcome, ids: Sequence[str]) -> None:
        if not ids:
            outcome.detail += ", refused as busy"
            outcome.recovered_s = 0.0
            return
        handles = [self.rt.job(j) for j in ids]
        left = self.scenario.duration_s + self.scenario.drain_s
        states = self.rt.wait(handles, timeout_s=left)
        if all(s.is_final for s in states.values()):
            outcome.recovered_s = self._elapsed() - outcome.at_s
            self._event("recovered", "farm", f"burst drained after {outcome.recovered_s:.1f} s")

    # == after =========================================================================

    def _drain(self, drain_s: float) -> None:
        with self._lock:
            ids = list(self.submitted)
        if not ids:
            return
        states = self.rt.wait([self.rt.job(j) for j in ids], timeout_s=drain_s)
        left = sum(1 for s in states.values() if not s.is_final)
        self._event("note", "farm", f"drained: {len(ids) - left} of {len(ids)} jobs final")

    def _facts(self) -> list[JobFacts]:
        mine = set(self.submitted)
        rows = self.rt.jobs(tenant=TENANT, limit=10_000)
        return [
            JobFacts(
                r["job_id"],
                r["state"],
                int(r["priority"]),
                float(r["created_at"]),
                float(r["updated_at"]),
                r.get("error_class"),
            )
            for r in rows
            if r["job_id"] in mine
        ]

    def _slo(self) -> list[dict[str, Any]]:
        config = {s.name: s for s in load_slo_config().slos}
        report = report_dict(self.rt.administer("slo"))
        out = []
        for s in report["slos"]:
            c = config.get(s["name"])
            out.append(
                {
                    **s,
                    "threshold_s": getattr(c, "threshold_s", None),
                    "priority": getattr(c, "priority", None),
                }
            )
        return out

    def _report(self, slos_before: list[dict[str, Any]]) -> Report:
        facts = self._facts()
        jobs = job_summary(facts, len(self.submitted))
        first = min((f.at_s for f in self.faults), default=self.scenario.duration_s)
        last = max(
            (f.at_s + (f.recovered_s or 0.0) for f in self.faults), default=self.scenario.duration_s
        )
        latency = latency_by_phase(facts, self._t0, first, last)
        slos = slo_impact(slos_before, self._slo(), facts)
        notes = list(self._notes)
        if len(facts) < len(self.submitted):
            notes.append(
                f"{len(self.submitted) - len(facts)} jobs were not in the farm's list of "
                f"the newest 10,000 {TENANT} jobs; they count as lost"
            )
        return Report(
            scenario=self.scenario.name,
            description=self.scenario.description,
            started_at=self._t0,
            seconds=self._elapsed(),
            timeline=sorted(self.timeline, key=lambda e: e.t),
            faults=self.faults,
            jobs=jobs,
            latency=latency,
            slos=slos,
            checks=judge(self.scenario, jobs, self.faults, latency, self.tenant_calls),
            refused=self.refused,
            notes=notes,
            tenant=dict(self.tenant_calls),
        )
