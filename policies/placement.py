"""Placement policies: rank the devices a job could run on, and say why.

Pure: no Ray, no clock, no I/O. A policy sees one :class:`Candidate` per device (its
estimated fidelity for the job, price, expected wait and run time, whether it takes
work now) and returns a :class:`~qrt_ray.models.Placement`: the chosen device, the
ranked list, and a per-device breakdown that ``qrt explain`` shows.

Policies:

* ``random``: a fitting device at random (seeded by the job, so reproducible).
* ``round_robin``: fitting devices in turn.
* ``least_busy``: the shortest expected wait.
* ``best_fidelity``: the highest estimated success probability.
* ``composite`` (the default): the highest
  ``w_f * ln(fidelity) - w_t * ln(completion_s) - w_c * ln(cost_usd) - w_d * completion_s``.
  Logarithms make the first three weights read as exchange rates between relative
  changes: with ``w_f = 1`` and ``w_t = 0.005`` (the default), halving the completion
  time is worth about 0.35% of fidelity. The delay weight ``w_d`` charges each second
  of expected completion the same: with ``w_d = 0.0003`` (the default) a minute costs
  about 1.8% of fidelity. A relative charge alone is scale-free (a queue of 1,000 s
  against 500 s weighs as 2 s against 1 s), so on a large farm jobs would queue for
  minutes behind the very best devices while most of the farm stays idle; the delay
  charge keeps them off long queues (see ``benchmarks/scheduling.py``).

Per job, ``optimize="fidelity"|"time"|"cost"`` picks a preset of weights, explicit
weights replace them, and ``min_fidelity`` / ``max_cost_usd`` remove devices before
ranking; when they remove every device the error says what the best device offers. A
job's deadline keeps it off devices expected to finish too late.
"""

from __future__ import annotations

import math
import random
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

from qrt_ray.errors import DeviceUnavailableError, PlacementError
from qrt_ray.models import (
    OPTIMIZE_GOALS,
    POLICY_NAMES,
    DeviceSnapshot,
    DeviceStatus,
    Placement,
)

POLICIES = POLICY_NAMES
# Floors keep the logarithms finite: a free device or an instant run is not infinitely
# better than a cheap or quick one.
MIN_COST_USD = 1e-4
MIN_SECONDS = 1e-3
MIN_FIDELITY = 1e-12
# a refusal names this many devices and counts the rest
_STATES_SHOWN = 10


@dataclass(frozen=True, slots=True)
class Weights:
    """Exchange rates of the composite score; each >= 0, not all 0.

    ``delay`` is per second of expected completion (the others per relative change).
    """

    fidelity: float = 1.0
    time: float = 0.005
    cost: float = 0.01
    delay: float = 0.0

    def __post_init__(self) -> None:
        for name in ("fidelity", "time", "cost", "delay"):
            value = getattr(self, name)
            if not (isinstance(value, int | float) and math.isfinite(value) and value >= 0):
                raise ValueError(f"weights.{name}={value!r} must be a finite number >= 0")
        if self.fidelity == self.time == self.cost == self.delay == 0:
            raise ValueError("weights are all 0; give at least one a positive value")

    def as_dict(self) -> dict[str, float]:
        """``{"fidelity": ..., "time": ..., "cost": ..., "delay": ...}``."""
        return {
            "fidelity": self.fidelity,
            "time": self.time,
            "cost": self.cost,
            "delay": self.delay,
        }


# Each goal still breaks ties by the others, a little.
PRESETS: dict[str, Weights] = {
    "fidelity": Weights(fidelity=1.0, time=0.001, cost=0.0001),
    "time": Weights(fidelity=0.01, time=1.0, cost=0.001),
    "cost": Weights(fidelity=0.01, time=0.001, cost=1.0),
}


@dataclass(frozen=True, slots=True)
class PlacementOptions:
    """What one job asks of placement (all optional).

    Attributes:
        policy: one of :data:`POLICIES`; ``None`` uses the farm's default.
        optimize: a goal from :data:`OPTIMIZE_GOALS`; picks preset weights.
        weights: explicit composite weights (win over ``optimize``).
        min_fidelity: devices estimated below this are not used.
        max_cost_usd: devices that would charge more are not used.
        device: run on this device only (it is checked, not ranked).
        deadline_s: seconds left before the job's deadline: devices expected to finish
            later are not used while one expected on time accepts work; if none is,
            the earliest expected finish wins.
    """

    policy: str | None = None
    optimize: str | None = None
    weights: Weights | None = None
    min_fidelity: float | None = None
    max_cost_usd: float | None = None
    device: str | None = None
    deadline_s: float | None = None

    def late(self, c: Candidate) -> bool:
        """Whether ``c`` is expected to finish after the deadline."""
        return self.deadline_s is not None and c.completion_s > self.deadline_s


@dataclass(frozen=True, slots=True)
class Candidate:
    """One device as a policy sees it for one job.

    Attributes:
        device: device name.
        num_qubits: its size.
        accepting: ONLINE with room in its queue.
        fidelity: estimated success probability of the job (mean over its circuits);
            an upper bound when ``estimated`` is False.
        cost_usd: what the job would be charged.
        wait_s: expected seconds before it starts.
        run_s: expected seconds it runs.
        estimated: whether ``fidelity`` is a full estimate (False: the cheap bound,
            because the device could not win).
        status: the device's status, for the explanation.
        detail: per-device extras for the explanation (layout, swaps, error sources).
    """

    device: str
    num_qubits: int
    accepting: bool
    fidelity: float
    cost_usd: float
    wait_s: float
    run_s: float
    estimated: bool = True
    status: str = DeviceStatus.ONLINE.value
    status_reason: str = ""
    detail: dict[str, Any] = field(default_factory=dict)

    @property
    def completion_s(self) -> float:
        """Expected seconds from now until the job's result."""
        return self.wait_s + self.run_s


def resolve_weights(options: PlacementOptions, default: Weights) -> Weights:
    """The composite weights a job uses: explicit, else its goal's preset, else the default.

    Raises:
        ValueError: ``optimize`` is not a known goal.
    """
    if options.weights is not None:
        return options.weights
    if options.optimize is not None:
        if options.optimize not in PRESETS:
            raise ValueError(
                f"optimize={options.optimize!r} is not a goal; "
                f"use one of {', '.join(OPTIMIZE_GOALS)}"
            )
        return PRESETS[options.optimize]
    return default


def composite_score(c: Candidate, w: Weights) -> float:
    """``w_f ln(fidelity) - w_t ln(completion_s) - w_c ln(cost_usd) - w_d completion_s``;
    higher is better."""
    return (
        w.fidelity * math.log(max(c.fidelity, MIN_FIDELITY))
        - w.time * math.log(max(c.completion_s, MIN_SECONDS))
        - w.cost * math.log(max(c.cost_usd, MIN_COST_USD))
        - w.delay * c.completion_s
    )


# == the policies: each orders accepting candidates, best first =======================


def rank_random(cands: Sequence[Candidate], seed: int) -> list[tuple[str, float]]:
    """A random order of the candidates, reproducible from ``seed``."""
    names = sorted(c.device for c in cands)
    random.Random(seed).shuffle(names)
    return [(n, float(len(names) - i)) for i, n in enumerate(names)]


def rank_round_robin(cands: Sequence[Candidate], turn: int) -> list[tuple[str, float]]:
    """Candidates by name, rotated so that turn ``turn`` starts at a new device."""
    names = sorted(c.device for c in cands)
    if not names:
        return []
    k = turn % len(names)
    order = names[k:] + names[:k]
    return [(n, float(len(order) - i)) for i, n in enumerate(order)]


def rank_least_busy(cands: Sequence[Candidate]) -> list[tuple[str, float]]:
    """Shortest expected wait first (then shortest run); the score is ``-wait_s``."""
    ordered = sorted(cands, key=lambda c: (c.wait_s, c.run_s, c.device))
    return [(c.device, -c.wait_s) for c in ordered]


def rank_best_fidelity(cands: Sequence[Candidate]) -> list[tuple[str, float]]:
    """Highest estimated fidelity first; the score is the fidelity."""
    ordered = sorted(cands, key=lambda c: (-c.fidelity, c.completion_s, c.device))
    return [(c.device, c.fidelity) for c in ordered]


def rank_earliest_finish(cands: Sequence[Candidate]) -> list[tuple[str, float]]:
    """Earliest expected completion first; the score is ``-completion_s``.

    Used when every device is expected to miss a job's deadline.
    """
    ordered = sorted(cands, key=lambda c: (c.completion_s, -c.fidelity, c.device))
    return [(c.device, -c.completion_s) for c in ordered]


def rank_composite(cands: Sequence[Candidate], weights: Weights) -> list[tuple[str, float]]:
    """Highest :func:`composite_score` first."""
    scored = [(composite_score(c, weights), c.device) for c in cands]
    scored.sort(key=lambda t: (-t[0], t[1]))
    return [(name, score) for score, name in scored]


# == choosing =========================================================================


def check_fits(width: int, devices: Sequence[DeviceSnapshot], pinned: str | None) -> None:
    """Raise :class:`PlacementError` when no device could ever run a ``width``-qubit job.

    Raises:
        PlacementError: no devices, the pinned device is unknown or too small, or every
            device is too small; the message says what would fit.
    """
    if not devices:
        raise PlacementError("the farm has no devices; start one with `qrt up`")
    if pinned is not None:
        named = [d for d in devices if d.name == pinned]
        if not named:
            known = ", ".join(sorted(d.name for d in devices))
            raise PlacementError(f"device={pinned!r}: no such device; the farm has: {known}")
        if named[0].num_qubits < width:
            big = ", ".join(sorted(d.name for d in devices if d.num_qubits >= width)) or "none"
            raise PlacementError(
                f"device={pinned!r} has {named[0].num_qubits} qubits but the job needs "
                f"{width}; devices that fit: {big}"
            )
        return
    if not fitting_devices(width, devices):
        widest = max(devices, key=lambda d: d.num_qubits)
        raise PlacementError(
            f"the job needs {width} qubits but the widest device, {widest.name!r}, "
            f"has {widest.num_qubits}; split the circuit or add a larger device"
        )


def fitting_devices(width: int, devices: Sequence[DeviceSnapshot]) -> list[DeviceSnapshot]:
    """Devices large enough for the circuit and not OFFLINE (they may be busy)."""
    return [d for d in devices if d.num_qubits >= width and d.status is not DeviceStatus.OFFLINE]


def _limits_error(cands: Sequence[Candidate], options: PlacementOptions) -> PlacementError:
    best_f = max(cands, key=lambda c: c.fidelity)
    cheapest = min(cands, key=lambda c: c.cost_usd)
    parts = []
    if options.min_fidelity is not None:
        parts.append(
            f"min_fidelity={options.min_fidelity:g} but the best estimate is "
            f"{best_f.fidelity:.3f} on {best_f.device!r}"
        )
    if options.max_cost_usd is not None:
        parts.append(
            f"max_cost_usd={options.max_cost_usd:g} but the cheapest device, "
            f"{cheapest.device!r}, would charge {cheapest.cost_usd:.4f}"
        )
    both = " and ".join(parts)
    return PlacementError(
        f"no device meets the job's limits: {both}; relax the limit, use fewer shots or "
        f"circuits, or simplify the circuit"
    )


def check_limits(cands: Sequence[Candidate], options: PlacementOptions) -> list[Candidate]:
    """The candidates within the job's limits.

    Raises:
        PlacementError: none fits, or the limits rule out every device (the message
            says what the best device offers).
    """
    if not cands:
        raise PlacementError("no device fits the job")
    allowed = [c for c in cands if within_limits(c, options)]
    if not allowed:
        raise _limits_error(cands, options)
    return allowed


def within_limits(c: Candidate, options: PlacementOptions) -> bool:
    """Whether a candidate meets the job's ``min_fidelity`` and ``max_cost_usd``."""
    if options.max_cost_usd is not None and c.cost_usd > options.max_cost_usd + 1e-12:
        return False
    # A bound below the floor rules a device out as surely as an estimate.
    return not (options.min_fidelity is not None and c.fidelity < options.min_fidelity)


def choose(
    policy: str,
    cands: Sequence[Candidate],
    options: PlacementOptions,
    *,
    weights: Weights,
    turn: int = 0,
    seed: int = 0,
) -> Placement:
    """Apply the job's limits, rank with ``policy`` and explain the decision.

    With a deadline, devices expected to finish late are left out while one expected
    on time accepts work; when none is, the earliest expected finish wins and the
    explanation says ``late``.

    Args:
        policy: one of :data:`POLICIES`.
        cands: every device that fits the job (accepting or not).
        options: the job's placement options.
        weights: composite weights after :func:`resolve_weights`.
        turn: round-robin counter.
        seed: random policy's seed (e.g. derived from the job id).

    Raises:
        PlacementError: the limits rule out every device (the message says what the
            best device offers), or nothing fits.
        DeviceUnavailableError: devices qualify but none accepts work now; wait.
        ValueError: ``policy`` is unknown.
    """
    allowed = check_limits(cands, options)
    ready = [c for c in allowed if c.accepting]
    if not ready:
        states = ", ".join(
            f"{c.device}={c.status}" + (f" ({c.status_reason})" if c.status_reason else "")
            for c in allowed[:_STATES_SHOWN]
        )
        if len(allowed) > _STATES_SHOWN:
            states += f" and {len(allowed) - _STATES_SHOWN} more"
        raise DeviceUnavailableError(f"no fitting device is accepting work now: {states}")
    on_time = [c for c in ready if not options.late(c)]
    ranker = policy
    if on_time:
        ready = on_time
    else:  # every device is expected late: the earliest finish is the best hope
        ranker = "earliest_finish"
    rankers: dict[str, Callable[[], list[tuple[str, float]]]] = {
        "random": lambda: rank_random(ready, seed),
        "round_robin": lambda: rank_round_robin(ready, turn),
        "least_busy": lambda: rank_least_busy(ready),
        "best_fidelity": lambda: rank_best_fidelity(ready),
        "composite": lambda: rank_composite(ready, weights),
        "earliest_finish": lambda: rank_earliest_finish(ready),
    }
    if policy not in POLICIES:
        raise ValueError(f"policy={policy!r} is unknown; use one of {', '.join(POLICIES)}")
    ranking = rankers[ranker]()
    by_name = {c.device: c for c in cands}
    chosen = by_name[ranking[0][0]]
    return Placement(
        device=chosen.device,
        run_s=chosen.run_s,
        shot_duration_s=float(chosen.detail.get("shot_duration_s", 0.0)),
        fidelity=chosen.fidelity,
        cost_usd=chosen.cost_usd,
        ranking=tuple((name, round(score, 6)) for name, score in ranking),
        explanation={
            "policy": policy,
            "weights": weights.as_dict() if policy == "composite" else None,
            "limits": {
                "min_fidelity": options.min_fidelity,
                "max_cost_usd": options.max_cost_usd,
                "deadline_s": options.deadline_s,
            },
            "pinned": options.device,
            "late": ranker == "earliest_finish",
            "chosen": describe(chosen),
            "devices": [
                {
                    **describe(c),
                    "excluded": _exclusion(c, options),
                }
                for c in sorted(cands, key=lambda c: c.device)
            ],
        },
    )


def _exclusion(c: Candidate, options: PlacementOptions) -> str | None:
    if not within_limits(c, options):
        return "outside the job's limits"
    if not c.accepting:
        return f"not accepting work ({c.status})"
    if options.late(c):
        return f"expected to finish after the deadline ({options.deadline_s:.1f} s left)"
    return None


def describe(c: Candidate) -> dict[str, Any]:
    """A candidate as plain JSON for the job's stored explanation."""
    return {
        "device": c.device,
        "fidelity": round(c.fidelity, 6),
        "fidelity_is_bound": not c.estimated,
        "cost_usd": round(c.cost_usd, 6),
        "wait_s": round(c.wait_s, 3),
        "run_s": round(c.run_s, 3),
        "completion_s": round(c.completion_s, 3),
        **c.detail,
    }
