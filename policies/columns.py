"""A farm's devices as numpy columns, so that one placement decision over a thousand
devices costs a few array operations instead of a thousand Python objects.

:class:`FarmColumns` holds what placement reads of each device and does not change
until the device list does (size, status, queue room, prices, calibration id).
:class:`JobColumns` adds what one kind of job reads of each device and does not change
until a calibration does (the fidelity bound or the cached full estimate, the shot
duration). Per decision only the backlog and the learned run-time factors are read
anew. :mod:`qrt_ray.policies.placer` builds full
:class:`~qrt_ray.policies.placement.Candidate` objects from these for a short list
only: the devices branch and bound must estimate in full, and the best few the
explanation shows. Pure: no Ray, no clock, no I/O.
"""

from __future__ import annotations

import operator
from collections.abc import Iterator, Sequence
from dataclasses import dataclass

import numpy as np

from qrt_ray.models import DeviceSnapshot, DeviceStatus
from qrt_ray.policies.placement import MIN_COST_USD, MIN_FIDELITY, MIN_SECONDS, Weights


@dataclass(slots=True)
class JobColumns:
    """One kind of job (its distinct circuits) on every device of one farm.

    Attributes:
        fidelity: mean ESP over the circuits: the full estimate's where every one is
            cached, else the cheap upper bound (NaN where the device is too small).
        exact: whether ``fidelity`` and ``duration_s`` are the full estimate's.
        duration_s: mean shot duration (the estimate's, else the unrouted one).
    """

    fidelity: np.ndarray
    exact: np.ndarray
    duration_s: np.ndarray


class FarmColumns:
    """What placement reads of a list of device snapshots, as columns in list order.

    Built once per list (the snapshots are frozen, so a list of the same objects
    means the same figures): :meth:`same` says whether a list of loads still matches.

    Args:
        snapshots: the devices, in the order the loads list them.
    """

    def __init__(self, snapshots: Sequence[DeviceSnapshot]) -> None:
        self.snapshots = tuple(snapshots)
        self.names = tuple(s.name for s in self.snapshots)
        self.num_qubits = np.array([s.num_qubits for s in self.snapshots], dtype=np.int64)
        self.offline = np.array([s.status is DeviceStatus.OFFLINE for s in self.snapshots])
        self.accepting = np.array([s.accepting for s in self.snapshots])
        self.price_job = np.array([s.price_per_job_usd for s in self.snapshots], dtype=float)
        self.price_shot = np.array([s.price_per_shot_usd for s in self.snapshots], dtype=float)
        # each device's place in name order: ties are broken by name, as the policies do
        self.name_rank = np.empty(len(self.names), dtype=np.int64)
        self.name_rank[np.argsort(np.array(self.names, dtype=object), kind="stable")] = np.arange(
            len(self.names)
        )
        self.jobs: dict[tuple[str, ...], JobColumns] = {}

    def __len__(self) -> int:
        return len(self.names)

    def same(self, snapshots: Sequence[DeviceSnapshot]) -> bool:
        """Whether ``snapshots`` are this farm's very objects, in the same order."""
        mine = self.snapshots
        return len(snapshots) == len(mine) and all(map(operator.is_, snapshots, mine))

    def fits(self, width: int) -> np.ndarray:
        """Devices large enough for a ``width``-qubit job and not OFFLINE."""
        return (self.num_qubits >= width) & ~self.offline

    def cost_usd(self, shots: int, circuits: int) -> np.ndarray:
        """What each device would charge (see :func:`~qrt_ray.policies.costs.price_usd`)."""
        return self.price_job + self.price_shot * (shots * circuits)


def composite_scores(
    fidelity: np.ndarray,
    completion_s: np.ndarray,
    cost_usd: np.ndarray,
    w: Weights,
) -> np.ndarray:
    """:func:`~qrt_ray.policies.placement.composite_score` of many devices at once."""
    return (
        w.fidelity * np.log(np.maximum(fidelity, MIN_FIDELITY))
        - w.time * np.log(np.maximum(completion_s, MIN_SECONDS))
        - w.cost * np.log(np.maximum(cost_usd, MIN_COST_USD))
        - w.delay * completion_s
    )


def best_of(
    primary: np.ndarray,
    secondary: np.ndarray,
    name_rank: np.ndarray,
    among: np.ndarray,
    k: int,
) -> np.ndarray:
    """The ``k`` first indices of ``among`` (a mask) by ``primary``, then ``secondary``,
    then name, all ascending, in that order.

    Exact, ties included: every index whose ``primary`` is at most the ``k``-th
    smallest is sorted in full, so a farm of identical devices still gets the first by
    name; the rest of the farm costs one partition.
    """
    pool = np.flatnonzero(among)
    if len(pool) > k:
        kth = np.partition(primary[pool], k - 1)[k - 1]
        pool = pool[primary[pool] <= kth]
    order = np.lexsort((name_rank[pool], secondary[pool], primary[pool]))
    return pool[order][:k]


def descending(key: np.ndarray, among: np.ndarray, first: int = 16) -> Iterator[int]:
    """Indices of ``among`` (a mask) by ``key``, highest first (ties in index order):
    the ``first`` few from a partition, the rest sorted only if a caller reads on."""
    pool = np.flatnonzero(among)
    if len(pool) > first:
        kth = np.partition(-key[pool], first - 1)[first - 1]
        head = pool[-key[pool] <= kth]
        yield from head[np.argsort(-key[head], kind="stable")].tolist()
        tail = pool[-key[pool] > kth]
        yield from tail[np.argsort(-key[tail], kind="stable")].tolist()
        return
    yield from pool[np.argsort(-key[pool], kind="stable")].tolist()
