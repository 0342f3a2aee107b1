"""A device's queue of work: what waits, in which order it runs, and how big jobs yield.

Pure: no Aer, no Ray, no threads (the device holds the lock), no clock of its own (the
time comes in as an argument). The order is :func:`qrt_ray.policies.queueing.sort_key`'s:
priority class plus one level per ``aging_s_per_level`` seconds waited, an earlier
deadline within a level, then (with ``fair_share``) the tenant that has had the fewest
shots here per share, then arrival.
"""

from __future__ import annotations

import itertools
import math
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, replace

from qrt_ray.config import SchedulingConfig
from qrt_ray.models import DecouplingSpec, TwirlSpec
from qrt_ray.policies.queueing import Waiting, sort_key

# A slice by time runs at least this many shots (fewer would pay a batch's round trip
# for too little work).
MIN_SLICE_SHOTS = 100


@dataclass(frozen=True, slots=True)
class WorkItem:
    """One attempt of one job, compiled for one calibration of this device.

    ``circuits`` are the compiler's QPY payloads (:func:`~qrt_ray.compiler.decode_compiled`);
    ``active_qubits`` is the widest circuit's count of touched qubits. ``shots`` start
    at shot ``first_shot`` of the job (above 0 for the rest of a partial run or of a
    sliced job); ``remaining`` is what the attempt still has queued after this item.
    ``fixed_s`` and ``shot_s`` are the run-time model's prior for the whole item (its
    circuits at these shots take about ``fixed_s + shot_s * shots``; 0: unknown).
    """

    job_id: str
    attempt: int
    calibration_id: str
    circuits: tuple[bytes, ...]
    shots: int
    priority: int
    seed: int | None = None
    active_qubits: int = 0
    tenant: str = "default"
    first_shot: int = 0
    remaining: int = 0
    deadline: float = math.inf
    twirl: TwirlSpec | None = None
    dd: DecouplingSpec | None = None
    fixed_s: float = 0.0
    shot_s: float = 0.0
    dispatch: str = ""  # the scheduler's token for this hand-off (runs carry it back)
    traceparent: str = ""  # the job's trace (W3C): the run's span joins it
    noise: str = "device"  # "ideal": run without the device's noise (JobSpec.noise)
    # a suspect of crashing its simulator: runs in a batch of its own
    # (qrt_ray.policies.quarantine)
    solo: bool = False
    # the farm already dropped shots of this job (rerun whole on a new calibration):
    # it runs unsliced, so no pause between slices can cut it short again
    whole: bool = False


class DeviceQueue:
    """Work waiting on one device, taken a batch at a time.

    Args:
        scheduling: order, fair share, the per-tenant cap and the slice size.
    """

    def __init__(self, scheduling: SchedulingConfig) -> None:
        self.scheduling = scheduling
        self._waiting: list[tuple[Waiting, WorkItem]] = []  # arrival order
        self._seq = itertools.count()
        self._served: dict[str, float] = {}  # shots run per tenant: fair-share usage
        self.queued_shots = 0

    def __len__(self) -> int:
        return len(self._waiting)

    def add(self, items: Iterable[WorkItem], now: float) -> None:
        """Queue work that arrived at ``now``.

        A job's new hand-off replaces what is still queued of an older one (a
        scheduler that restarted, or moved the job back, hands it off again): the
        older one would only run shots the scheduler no longer counts.
        """
        items = list(items)
        self.drop(item.job_id for item in items)
        for item in items:
            waiting = Waiting(
                item.job_id, item.tenant, item.priority, now, next(self._seq), item.deadline
            )
            self._waiting.append((waiting, item))
            self.queued_shots += item.shots * len(item.circuits)

    def drop(self, job_ids: Iterable[str], attempts: Mapping[str, int] | None = None) -> list[str]:
        """Remove queued work of these jobs; returns the job ids removed.

        With ``attempts``, only work of exactly that attempt of each job goes.
        """
        doomed = set(job_ids)

        def gone(item: WorkItem) -> bool:
            if item.job_id not in doomed:
                return False
            return attempts is None or attempts.get(item.job_id) == item.attempt

        removed = [item.job_id for _, item in self._waiting if gone(item)]
        if removed:
            self._waiting = [e for e in self._waiting if not gone(e[1])]
            self.queued_shots = sum(i.shots * len(i.circuits) for _, i in self._waiting)
        return removed

    def clear(self) -> None:
        """Forget everything queued (the device restarted)."""
        self._waiting.clear()
        self.queued_shots = 0

    def take(self, now: float, max_circuits: int) -> list[WorkItem]:
        """Pop the work to run next, up to ``max_circuits`` circuits.

        While several tenants wait, one tenant's circuits fill at most
        ``max_device_share`` of the batch. A job asking for more than ``slice_shots``
        shots runs one slice now and leaves the rest queued with its original arrival
        time, so work that ranks higher and arrives meanwhile goes first at the next
        batch boundary (preemption); a running batch is never cut. A ``whole`` item
        (one the farm already cut short and rerun) is never sliced. A ``solo`` item
        (a suspect of crashing its simulator) runs in a batch of its own.
        """
        batch: list[WorkItem] = []
        if not self._waiting:
            return batch
        rules = self.scheduling
        usage = dict(self._served)
        order = sorted(
            range(len(self._waiting)),
            key=lambda i: sort_key(
                self._waiting[i][0],
                now,
                aging_s_per_level=rules.aging_s_per_level,
                usage=usage,
                shares=rules.tenant_shares,
                fair_share=rules.fair_share,
            ),
        )
        capacity = max_circuits
        shared = len({w.tenant for w, _ in self._waiting}) > 1
        tenant_cap = rules.max_device_share * capacity
        per_tenant: dict[str, int] = {}
        n = 0
        taken: set[int] = set()
        for i in order:
            waiting, item = self._waiting[i]
            width = len(item.circuits)
            if batch and n + width > capacity:
                break
            if batch and shared and per_tenant.get(item.tenant, 0) + width > tenant_cap:
                continue  # this tenant has its share of the batch; others first
            if batch and item.solo:
                continue  # a suspect waits for a batch of its own
            piece, rest = self._slice(item)
            if rest is None:
                taken.add(i)
            else:
                self._waiting[i] = (waiting, rest)
            batch.append(piece)
            n += width
            per_tenant[item.tenant] = per_tenant.get(item.tenant, 0) + width
            self.queued_shots -= piece.shots * width
            self._served[item.tenant] = self._served.get(item.tenant, 0.0) + piece.shots
            if item.solo:
                break
        self._waiting = [e for i, e in enumerate(self._waiting) if i not in taken]
        return batch

    def slice_size(self, item: WorkItem) -> int:
        """The most shots of ``item`` one batch runs (0: all of them): ``slice_shots``,
        and for trajectories (shots costing more than the fixed part) about ``slice_s``
        seconds' worth by the item's prior, at least :data:`MIN_SLICE_SHOTS`; a ``whole``
        item, 0."""
        if item.whole:
            return 0
        rules = self.scheduling
        size = rules.slice_shots
        if rules.slice_s > 0 and item.shot_s > 0 and item.shot_s * item.shots > item.fixed_s:
            budget = max(rules.slice_s - item.fixed_s, rules.slice_s / 2)
            by_time = max(MIN_SLICE_SHOTS, int(budget / item.shot_s))
            size = min(size, by_time) if size else by_time
        return size

    def _slice(self, item: WorkItem) -> tuple[WorkItem, WorkItem | None]:
        """(what runs now, what stays queued or None) under :meth:`slice_size`."""
        size = self.slice_size(item)
        if not size or item.shots <= size:
            return item, None
        rest_shots = item.shots - size
        piece = replace(item, shots=size, remaining=rest_shots)
        rest = replace(item, shots=rest_shots, first_shot=item.first_shot + size)
        return piece, rest
