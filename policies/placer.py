"""The placement engine the scheduler and the farm simulator share.

:class:`Placer` is plain Python: it holds what placement learns or caches (fidelity
estimates, each device's run-time correction, the round-robin turn) and turns a job
and the devices' current state into :class:`~qrt_ray.policies.placement.Candidate`s for the
pure policies in :mod:`qrt_ray.policies.placement`. Only the devices that could win get a full
layout search: the cheap :func:`~qrt_ray.policies.fidelity.esp_upper_bound` of every other
device already scores below the best full estimate (branch and bound, so the choice
is the one a full search of every device would make).
"""

from __future__ import annotations

import hashlib
import math
import operator
import threading
from collections.abc import Sequence
from dataclasses import dataclass, replace
from typing import Any

import numpy as np

from qrt_ray.config import PolicyConfig
from qrt_ray.errors import PlacementError
from qrt_ray.models import DeviceSnapshot, DeviceStatus, Placement
from qrt_ray.policies.columns import (
    FarmColumns,
    JobColumns,
    best_of,
    composite_scores,
    descending,
)
from qrt_ray.policies.costs import RunTimeModel, price_usd
from qrt_ray.policies.fidelity import (
    CircuitProfile,
    FidelityEstimate,
    FidelityEstimator,
)
from qrt_ray.policies.placement import (
    Candidate,
    PlacementOptions,
    Weights,
    check_fits,
    check_limits,
    choose,
    composite_score,
    resolve_weights,
    within_limits,
)
from qrt_ray.policies.simtime import CircuitWork, SimCost, SimTimeModel, estimated_work

# On a farm of more devices, a decision's explanation shows this many of them (the best
# of its ranking), and only the devices that could win are estimated in full.
SHORT_LIST = 10
_BACKLOG = operator.attrgetter("backlog_s")
_SHORT_LIST_POLICIES = frozenset({"composite", "best_fidelity", "least_busy"})
# kinds of job (distinct circuits) whose columns a farm keeps
_JOB_COLUMNS_KEPT = 4096

# A job's fidelity is the mean over its distinct circuits; beyond this many, the first
# ones stand for the rest (the explanation says so).
MAX_ESTIMATED_CIRCUITS = 16


@dataclass(frozen=True, slots=True)
class JobShape:
    """What placement needs of a job.

    Attributes:
        key: a stable id (the job id): seeds the random policy.
        hashes: each circuit's hash, in order.
        profiles: each circuit's profile, in order.
        shots: shots per circuit.
    """

    key: str
    hashes: tuple[str, ...]
    profiles: tuple[CircuitProfile, ...]
    shots: int

    @property
    def width(self) -> int:
        """Qubits of the widest circuit."""
        return max(p.num_qubits for p in self.profiles)

    def distinct(self) -> list[tuple[str, CircuitProfile]]:
        """Distinct circuits, at most :data:`MAX_ESTIMATED_CIRCUITS` of them."""
        seen: dict[str, CircuitProfile] = {}
        for h, p in zip(self.hashes, self.profiles, strict=True):
            if h not in seen:
                seen[h] = p
                if len(seen) == MAX_ESTIMATED_CIRCUITS:
                    break
        return list(seen.items())


@dataclass(frozen=True, slots=True)
class DeviceLoad:
    """A device snapshot plus the seconds of work already placed on it."""

    snapshot: DeviceSnapshot
    backlog_s: float = 0.0


class Placer:
    """Candidates, decisions and estimates for jobs on a farm.

    Args:
        config: the policy config (default policy, weights, run-time priors).
        estimator: fidelity cache to share (a new one by default).
        simulated: the devices are simulators, so a job's run time is the simulator's
            (:class:`~qrt_ray.policies.simtime.SimTimeModel`); False for a model of
            hardware-speed devices (the farm simulator's), where it is the physics of
            its shots (:class:`~qrt_ray.policies.costs.RunTimeModel`).
        short_list: decide from numpy columns and a short list of candidates
            (False: a candidate for every fitting device, the reference the short
            list is tested and benchmarked against).
    """

    def __init__(
        self,
        config: PolicyConfig,
        estimator: FidelityEstimator | None = None,
        *,
        simulated: bool = True,
        short_list: bool = True,
    ) -> None:
        self.config = config
        self.estimator = estimator if estimator is not None else FidelityEstimator()
        self.simulated = simulated
        self.short_list = short_list
        self.sim_time = SimTimeModel()
        self.run_time = RunTimeModel(
            alpha=config.run_time.learning_rate,
            rep_delay_s=config.run_time.rep_delay_s,
            overhead_s=config.run_time.job_overhead_s,
        )
        self.default_weights = Weights(**config.weights.model_dump())
        self._turn = 0
        self._lock = threading.Lock()
        self._farm: FarmColumns | None = None

    # -- per (circuit, device) facts ---------------------------------------------------

    def full(self, h: str, profile: CircuitProfile, snap: DeviceSnapshot) -> FidelityEstimate:
        """The full (cached) estimate of one circuit on one device."""
        return self.estimator.estimate(h, profile, snap.calibration)

    def _bound(
        self, h: str, profile: CircuitProfile, snap: DeviceSnapshot
    ) -> tuple[float, float, bool]:
        """(ESP, shot duration, exact) for the pre-filter.

        The full estimate's own figures when it is already cached (exact, so branch and
        bound prunes at once on a warm cache); else the cheap bound and the unrouted
        duration, an ESP no lower and a duration no longer than the full estimate's.
        """
        key = (h, snap.calibration.calibration_id)
        known = self.estimator.cached(*key)
        if known is not None:
            return known.esp, known.duration_s, True
        found = self.estimator.bound(h, profile, snap.calibration)
        return (*found, False)

    def _cheap(
        self, circuits: list[tuple[str, CircuitProfile]], snap: DeviceSnapshot
    ) -> tuple[float, float, bool]:
        """(mean ESP, mean shot duration, all exact) of :meth:`_bound` over ``circuits``."""
        found = [self._bound(h, p, snap) for h, p in circuits]
        return (
            sum(b for b, _, _ in found) / len(found),
            sum(d for _, d, _ in found) / len(found),
            all(known for _, _, known in found),  # figures exact, detail not built
        )

    # -- candidates ----------------------------------------------------------------------

    def _candidate(
        self,
        job: JobShape,
        load: DeviceLoad,
        exact: bool,
        circuits: list[tuple[str, CircuitProfile]] | None = None,
        bound: tuple[float, float, bool] | None = None,
    ) -> Candidate:
        """One device's candidate: with its full estimate when ``exact``, else with the
        cheap figures (``bound``: (fidelity, shot duration, exact) already read)."""
        snap = load.snapshot
        circuits = circuits if circuits is not None else job.distinct()
        detail: dict[str, Any] = {}
        swaps = [0] * len(circuits)
        if exact and bound is None:
            ests = [self.full(h, p, snap) for h, p in circuits]
            fidelity = sum(e.esp for e in ests) / len(ests)
            duration = sum(e.duration_s for e in ests) / len(ests)
            swaps = [e.swaps for e in ests]
            first = ests[0]
            detail = {
                "swaps": first.swaps,
                "layout": list(first.layout),
                "errors": first.breakdown,
            }
        else:
            fidelity, duration, exact = bound if bound is not None else self._cheap(circuits, snap)
        detail["shot_duration_s"] = duration
        if len(set(job.hashes)) > len(circuits):
            detail["estimated_circuits"] = len(circuits)
        n = len(job.hashes)
        physical = self.run_time.predict(snap.name, duration, job.shots, n)
        if self.simulated:
            works = [_work(p, s) for (_, p), s in zip(circuits, swaps, strict=True)]
            run_s, _, method = self.sim_time.predict(
                snap.name, works, job.shots, gpu=snap.gpu, threads=snap.threads
            )
            run_s *= n / len(circuits)  # the distinct circuits stand for all of them
            learned = self.sim_time.correction(snap.name, method).samples
            detail["run_model"] = {
                "method": method,
                "source": f"learned from {learned} runs" if learned else "prior",
            }
            detail["physical_run_s"] = round(physical, 3)
        else:
            run_s = physical
        return Candidate(
            device=snap.name,
            num_qubits=snap.num_qubits,
            accepting=snap.accepting,
            fidelity=fidelity,
            cost_usd=price_usd(snap.price_per_job_usd, snap.price_per_shot_usd, job.shots, n),
            wait_s=max(0.0, load.backlog_s),
            run_s=run_s,
            estimated=exact,
            status=snap.status.value,
            status_reason=_why_not_accepting(snap),
            detail=detail,
        )

    def candidates(
        self,
        job: JobShape,
        loads: Sequence[DeviceLoad],
        *,
        policy: str,
        weights: Weights,
        options: PlacementOptions,
        exhaustive: bool = False,
    ) -> list[Candidate]:
        """One candidate per device that fits (size, not OFFLINE, the pinned one if any).

        Devices that cannot win under ``policy`` keep their cheap fidelity bound unless
        ``exhaustive``; the chosen device always has a full estimate.
        """
        fits = [
            ld
            for ld in loads
            if ld.snapshot.num_qubits >= job.width
            and ld.snapshot.status is not DeviceStatus.OFFLINE
            and (options.device is None or ld.snapshot.name == options.device)
        ]
        if exhaustive or options.min_fidelity is not None or len(fits) == 1:
            return [self._candidate(job, ld, exact=True) for ld in fits]
        circuits = job.distinct()
        bounds = [self._candidate(job, ld, exact=False, circuits=circuits) for ld in fits]
        if policy in ("composite", "best_fidelity"):
            scores = [_bnb_score(policy, b, weights) for b in bounds]
            order = sorted(range(len(bounds)), key=lambda i: -scores[i])
            out = list(bounds)
            best = float("-inf")
            # only devices the policy may choose among: within the job's limits (a
            # bound's price is exact) and accepting work
            open_ = [b.accepting and within_limits(b, options) for b in bounds]
            some_on_time = any(
                o and not options.late(b) for o, b in zip(open_, bounds, strict=True)
            )
            for i in order:
                if not open_[i]:
                    continue
                # A bound's run time is never above the full estimate's (no SWAPs), so a
                # device late on its bound is late for sure, and loses to any on time.
                if some_on_time and options.late(bounds[i]):
                    continue
                if scores[i] < best:
                    break  # sorted: no later device can win either
                out[i] = self._candidate(job, fits[i], exact=True, circuits=circuits)
                best = max(best, _bnb_score(policy, out[i], weights))
            return out
        return bounds

    # -- decisions -----------------------------------------------------------------------

    def place(
        self, job: JobShape, loads: Sequence[DeviceLoad], options: PlacementOptions
    ) -> Placement:
        """Choose a device for ``job`` now.

        Raises:
            PlacementError: no device could ever run the job (too wide, unknown or
                too small pinned device, limits no device meets).
            DeviceUnavailableError: devices qualify, but none accepts work now.
            ValueError: an unknown policy or goal in ``options``.
        """
        policy = options.policy or self.config.policy
        weights = resolve_weights(options, self.default_weights)
        short = self._short_list(job, loads, policy=policy, weights=weights, options=options)
        if short is None:  # the full list: rare options, and every refusal
            check_fits(job.width, [ld.snapshot for ld in loads], options.device)
            check_in_service(job.width, [ld.snapshot for ld in loads], options.device)
            cands = self.candidates(job, loads, policy=policy, weights=weights, options=options)
            fitting = len(cands)
        else:
            cands, fitting = short
        with self._lock:
            turn = self._turn
        seed = int.from_bytes(hashlib.sha256(job.key.encode()).digest()[:4], "big")
        placement = choose(policy, cands, options, weights=weights, turn=turn, seed=seed)
        if policy == "round_robin":
            with self._lock:
                self._turn += 1
        chosen = next(c for c in cands if c.device == placement.device)
        if fitting > len(cands):
            placement = replace(
                placement,
                explanation={
                    **placement.explanation,
                    "devices_shown": len(cands),
                    "devices_fitting": fitting,
                },
            )
        if "layout" not in chosen.detail:  # chosen on a bound or a cached figure
            exact = self._candidate(
                job, next(ld for ld in loads if ld.snapshot.name == chosen.device), exact=True
            )
            explanation = dict(placement.explanation)
            explanation["chosen"] = {
                **explanation["chosen"],
                "fidelity": round(exact.fidelity, 6),
                "fidelity_is_bound": False,
                **exact.detail,
            }
            placement = replace(placement, explanation=explanation, fidelity=exact.fidelity)
        return placement

    # -- the short list: placement on a large farm ---------------------------------------

    def _farm_columns(self, snapshots: list[DeviceSnapshot]) -> FarmColumns:
        farm = self._farm
        if farm is None or not farm.same(snapshots):
            farm = self._farm = FarmColumns(snapshots)
        return farm

    def _job_columns(
        self,
        farm: FarmColumns,
        job: JobShape,
        circuits: list[tuple[str, CircuitProfile]],
        fits: np.ndarray,
    ) -> JobColumns:
        key = tuple(h for h, _ in circuits)
        found = farm.jobs.get(key)
        if found is not None:
            return found
        n = len(farm)
        fidelity = np.full(n, np.nan)
        duration = np.full(n, np.nan)
        exact = np.zeros(n, dtype=bool)
        for i in np.flatnonzero(fits):
            fidelity[i], duration[i], exact[i] = self._cheap(circuits, farm.snapshots[i])
        made = JobColumns(fidelity, exact, duration)
        if len(farm.jobs) >= _JOB_COLUMNS_KEPT:
            farm.jobs.pop(next(iter(farm.jobs)))
        farm.jobs[key] = made
        return made

    def _run_columns(
        self,
        farm: FarmColumns,
        idx: np.ndarray,
        job: JobShape,
        circuits: list[tuple[str, CircuitProfile]],
        duration: np.ndarray,
    ) -> np.ndarray:
        """Expected run seconds on the devices ``idx``, as a bound candidate has them."""
        n = len(job.hashes)
        rt = self.run_time
        if not self.simulated:
            base = rt.overhead_s + n * job.shots * (duration + rt.rep_delay_s)
            return base * rt.factors(farm.names)[idx]
        works = [_work(p, 0) for _, p in circuits]
        scale = n / len(circuits)
        priors: dict[tuple[bool, int], SimCost] = {}  # one per kind of device
        out = np.empty(len(idx))
        for k, i in enumerate(idx):
            snap = farm.snapshots[i]
            kind = (snap.gpu, snap.threads)
            if kind not in priors:
                priors[kind] = self.sim_time.job_prior(
                    works, job.shots, gpu=snap.gpu, threads=snap.threads
                )
            out[k] = self.sim_time.expected_s(snap.name, priors[kind], job.shots) * scale
        return out

    def _short_list(
        self,
        job: JobShape,
        loads: Sequence[DeviceLoad],
        *,
        policy: str,
        weights: Weights,
        options: PlacementOptions,
    ) -> tuple[list[Candidate], int] | None:
        """The candidates :func:`choose` needs to make the decision the full list would,
        from numpy columns: the devices branch and bound estimates in full, the best
        :data:`SHORT_LIST` of the ranking, and on a farm of at most that many, every
        fitting device.

        Returns:
            The short list, and how many devices fit the job. None where the full list
            is needed: a pinned device, ``min_fidelity`` (every device is estimated in
            full), the random and round-robin policies (they rank every name), and
            every refusal (its message comes from the full list).
        """
        if (
            not self.short_list
            or policy not in _SHORT_LIST_POLICIES
            or options.device is not None
            or options.min_fidelity is not None
        ):
            return None
        farm = self._farm_columns([ld.snapshot for ld in loads])
        fits = farm.fits(job.width)
        idx = np.flatnonzero(fits)
        if len(idx) == 0:
            return None
        circuits = job.distinct()
        cols = self._job_columns(farm, job, circuits, fits)
        fidelity = cols.fidelity[idx]
        run_s = self._run_columns(farm, idx, job, circuits, cols.duration_s[idx])
        wait = np.fromiter(map(_BACKLOG, loads), dtype=float, count=len(loads))[idx]
        completion = np.maximum(wait, 0.0) + run_s
        cost = farm.cost_usd(job.shots, len(job.hashes))[idx]
        allowed = np.ones(len(idx), dtype=bool)
        if options.max_cost_usd is not None:
            allowed = cost <= options.max_cost_usd + 1e-12
        ready = allowed & farm.accepting[idx]
        if not ready.any():
            return None
        late = (
            completion > options.deadline_s
            if options.deadline_s is not None
            else np.zeros(len(idx), dtype=bool)
        )
        on_time = ready & ~late
        pool = on_time if on_time.any() else ready
        ranker = policy if on_time.any() else "earliest_finish"
        names = farm.name_rank[idx]
        full: dict[int, Candidate] = {}  # position in idx -> the full estimate
        if policy in ("composite", "best_fidelity"):
            if policy == "composite":
                key = composite_scores(fidelity, completion, cost, weights)
            else:
                key = fidelity
            best = -math.inf
            for k in descending(key, pool):
                if key[k] < best:
                    break  # sorted: no later device can win either
                cand = self._candidate(job, loads[idx[k]], exact=True, circuits=circuits)
                full[k] = cand
                best = max(best, _bnb_score(policy, cand, weights))
                cols.fidelity[idx[k]] = cand.fidelity
                cols.duration_s[idx[k]] = cand.detail["shot_duration_s"]
                cols.exact[idx[k]] = True
                fidelity[k] = cand.fidelity
                completion[k] = cand.completion_s
                late[k] = options.late(cand)
            if ranker != "earliest_finish":
                # a full estimate can run longer than its bound (SWAPs): late after all
                pool = pool & ~late
                if not pool.any():
                    return None
        if ranker == "composite":
            score = composite_scores(fidelity, completion, cost, weights)
            order = best_of(-score, np.zeros(len(idx)), names, pool, SHORT_LIST)
        elif ranker == "best_fidelity":
            order = best_of(-fidelity, completion, names, pool, SHORT_LIST)
        elif ranker == "least_busy":
            order = best_of(np.maximum(wait, 0.0), run_s, names, pool, SHORT_LIST)
        else:
            order = best_of(completion, -fidelity, names, pool, SHORT_LIST)
        shown = range(len(idx)) if len(idx) <= SHORT_LIST else order[:SHORT_LIST]
        cands = [
            full[k]
            if k in full
            else self._candidate(
                job,
                loads[idx[k]],
                False,
                circuits,
                bound=(
                    float(fidelity[k]),
                    float(cols.duration_s[idx[k]]),
                    bool(cols.exact[idx[k]]),
                ),
            )
            for k in shown
        ]
        return cands, len(idx)

    def check(self, job: JobShape, loads: Sequence[DeviceLoad], options: PlacementOptions) -> None:
        """Raise now if no device could ever run ``job`` (busy devices do not count).

        Nothing is decided or learned: the round-robin turn does not move.

        Raises:
            PlacementError: too wide, an unknown or too small pinned device, or limits
                (``min_fidelity``, ``max_cost_usd``) that no device meets.
            ValueError: an unknown policy or goal in ``options``.
        """
        check_fits(job.width, [ld.snapshot for ld in loads], options.device)
        if options.min_fidelity is None and options.max_cost_usd is None:
            return
        policy = options.policy or self.config.policy
        weights = resolve_weights(options, self.default_weights)
        check_limits(
            self.candidates(job, loads, policy=policy, weights=weights, options=options), options
        )

    def estimate(
        self, job: JobShape, loads: Sequence[DeviceLoad], options: PlacementOptions
    ) -> list[Candidate]:
        """Every fitting device with a full estimate, best composite score first.

        Raises:
            PlacementError: no device could ever run the job.
        """
        check_fits(job.width, [ld.snapshot for ld in loads], options.device)
        weights = resolve_weights(options, self.default_weights)
        cands = self.candidates(
            job, loads, policy="composite", weights=weights, options=options, exhaustive=True
        )
        return sorted(cands, key=lambda c: (-composite_score(c, weights), c.device))


def check_in_service(width: int, snapshots: Sequence[DeviceSnapshot], pinned: str | None) -> None:
    """Raise when every device that fits the job (or its pinned one) is OFFLINE: out of
    service until an operator brings it back, so waiting for it would never end.

    Raises:
        PlacementError: naming the device (or devices) and why they are offline.
    """
    fitting = [
        s for s in snapshots if s.num_qubits >= width and (pinned is None or s.name == pinned)
    ]
    if fitting and all(s.status is DeviceStatus.OFFLINE for s in fitting):
        names = ", ".join(
            f"{s.name} ({s.status_reason})" if s.status_reason else s.name for s in fitting
        )
        which = "the pinned device" if pinned else "every device that fits the job"
        raise PlacementError(
            f"{which} is OFFLINE: {names}; pin another device, or submit again once an "
            "operator has brought it back (`qrt calibrate DEVICE`)"
        )


def _why_not_accepting(snap: DeviceSnapshot) -> str:
    """Why a device takes no work now, in words ("" when it does)."""
    if snap.accepting:
        return ""
    if snap.status_reason:
        return snap.status_reason
    if snap.status is DeviceStatus.ONLINE:
        return f"queue full ({snap.queue_depth} of {snap.queue_limit} jobs)"
    return ""


def _bnb_score(policy: str, c: Candidate, weights: Weights) -> float:
    """What branch and bound maximises for ``policy``: an upper bound on it from a
    device's cheap figures never falls below its full estimate's."""
    return composite_score(c, weights) if policy == "composite" else c.fidelity


def _work(profile: CircuitProfile, swaps: int) -> CircuitWork:
    """A circuit's simulator work guessed from its profile and placement's SWAPs."""
    return estimated_work(len(profile.active), profile.two_qubit_gates, sum(profile.pulses), swaps)
