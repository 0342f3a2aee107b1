"""Which waiting job goes next: priority classes with aging, and per-tenant fair share.

Pure: no Ray, no clock (``now`` is an argument), no I/O. The farm simulator orders
device queues with :func:`next_job`; its property tests are the proof that priorities
are respected, fair share holds and nothing starves.

* **Aging.** A job's effective priority is its class (0-10) plus one level for every
  ``aging_s_per_level`` seconds it has waited, so a low-priority job eventually
  outranks any newer high-priority one and cannot wait forever.
* **Deadlines.** Within one effective level, a job with an earlier deadline goes first
  (earliest deadline first); jobs without one follow.
* **Fair share.** Among jobs of the same effective level, the tenant whose usage
  (seconds of device time received, divided by its share) is lowest goes first, so a
  tenant that floods the queue does not take the device from one that submits a job
  now and then.
* **Device cap.** While other tenants wait on a device, one tenant's circuits fill at
  most ``max_device_share`` of a batch (the device applies it when it takes a batch).
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass


@dataclass(frozen=True, slots=True)
class Waiting:
    """A waiting job as the queue policy sees it."""

    job_id: str
    tenant: str
    priority: int
    enqueued_at: float
    seq: int = 0
    deadline: float = math.inf  # when the job fails if not done (inf: no deadline)


def effective_priority(priority: int, waited_s: float, aging_s_per_level: float) -> float:
    """Priority class plus one level per ``aging_s_per_level`` seconds of waiting."""
    return priority + max(0.0, waited_s) / aging_s_per_level


def sort_key(
    job: Waiting,
    now: float,
    *,
    aging_s_per_level: float,
    usage: Mapping[str, float],
    shares: Mapping[str, float],
    fair_share: bool = True,
) -> tuple[float, float, float, float, int]:
    """Smaller is served first: (-whole effective level, deadline, tenant usage per
    share, arrival, seq)."""
    level = math.floor(effective_priority(job.priority, now - job.enqueued_at, aging_s_per_level))
    normalized = usage.get(job.tenant, 0.0) / shares.get(job.tenant, 1.0) if fair_share else 0.0
    return (-level, job.deadline, normalized, job.enqueued_at, job.seq)


def next_job(
    queue: Sequence[Waiting],
    now: float,
    *,
    aging_s_per_level: float,
    usage: Mapping[str, float],
    shares: Mapping[str, float],
    fair_share: bool = True,
) -> int:
    """Index in ``queue`` of the job to serve next.

    Raises:
        ValueError: the queue is empty.
    """
    if not queue:
        raise ValueError("queue is empty")
    return min(
        range(len(queue)),
        key=lambda i: sort_key(
            queue[i],
            now,
            aging_s_per_level=aging_s_per_level,
            usage=usage,
            shares=shares,
            fair_share=fair_share,
        ),
    )


def jain_index(values: Sequence[float]) -> float:
    """Jain's fairness index of non-negative values: 1 is perfectly even, 1/n worst."""
    xs = [v for v in values if v >= 0]
    if not xs or not any(xs):
        return 1.0
    return sum(xs) ** 2 / (len(xs) * sum(x * x for x in xs))
