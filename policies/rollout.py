"""Canary rollout of a post-processing version (failure mode F10): pure state.

A candidate version of a method (say readout mitigation ``2``) first runs in
**shadow**: on every canary round, beside the served version, on the same counts of
circuits whose answer is known. User jobs still get the served version. Each round
compares the two on each canary:

* the candidate failed where the served version gave a value: **rolled back**;
* a canary's two values differ by more than ``max_divergence``: **rolled back**
  (the candidate's outputs diverge, whichever is nearer the known answer: a change
  this large needs a person to look before it reaches users). A value is a success
  probability, so where the served version's lies outside [0, 1] (an inverse that
  over-corrects on readout figures a little off) the candidate is measured from the
  nearer of that value and the bound it passed: a candidate that stays a probability
  is not blamed for the served version's excess, and one that matches the served
  version is not blamed for agreeing. A value far from both, even between them,
  still diverges;
* otherwise the round agrees. After ``promote_after_rounds`` agreeing rounds that
  compared at least ``min_canaries`` canaries in all, the candidate is **promoted**:
  it serves user jobs, and the version it replaced is kept as ``previous``.

Rounds without the candidate's values (a device that ran before the rollout began)
change nothing. A rolled-back candidate stays out until an operator starts a rollout
again; ``rollback`` by hand puts ``previous`` back after a promotion.
"""

from __future__ import annotations

import math
from collections.abc import Iterable
from dataclasses import asdict, dataclass, replace
from enum import StrEnum
from typing import Any

from qrt_ray.config import RolloutConfig


class Phase(StrEnum):
    """Where a method's rollout stands."""

    STEADY = "steady"  # one version, nothing in flight
    SHADOW = "shadow"  # the candidate runs on canaries only
    PROMOTED = "promoted"  # the candidate passed and now serves user jobs
    ROLLED_BACK = "rolled_back"  # the candidate was stopped; the served version stays


class Verdict(StrEnum):
    """What one canary round says about the candidate."""

    NONE = "none"  # no canary compared both versions
    AGREE = "agree"
    DIVERGE = "diverge"
    FAIL = "fail"


@dataclass(frozen=True, slots=True)
class Rollout:
    """One method's versions and rollout, as stored.

    Attributes:
        served: the version user jobs get.
        candidate: the version in shadow, or the last one tried.
        previous: the version ``served`` replaced at the last promotion.
        agreed_rounds: agreeing rounds of the candidate so far.
        compared: canaries compared so far.
        worst_gap: the largest gap (:func:`gap`) between the two versions on one
            canary so far.
        reason: why the phase is what it is.
    """

    method: str
    served: str
    phase: Phase = Phase.STEADY
    candidate: str | None = None
    previous: str | None = None
    agreed_rounds: int = 0
    compared: int = 0
    worst_gap: float = 0.0
    reason: str = ""
    changed_at: float = 0.0

    def versions(self) -> list[str]:
        """Versions a canary round runs: the served one first, then the candidate."""
        if self.phase is Phase.SHADOW and self.candidate and self.candidate != self.served:
            return [self.served, self.candidate]
        return [self.served]

    def to_json(self) -> dict[str, Any]:
        """A JSON-ready dict (the store keeps it as text)."""
        return asdict(self)

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> Rollout:
        """The stored form back."""
        return cls(**{**data, "phase": Phase(data["phase"])})


def start(state: Rollout, candidate: str, now: float) -> Rollout:
    """Put ``candidate`` in shadow beside the served version.

    Raises:
        ValueError: the candidate is already served, or another is in shadow.
    """
    if candidate == state.served:
        raise ValueError(f"{state.method} {candidate} is already served; nothing to roll out")
    if state.phase is Phase.SHADOW and state.candidate != candidate:
        raise ValueError(
            f"{state.method} {state.candidate} is already in shadow; roll it back first"
        )
    return replace(
        state,
        phase=Phase.SHADOW,
        candidate=candidate,
        agreed_rounds=0,
        compared=0,
        worst_gap=0.0,
        reason=f"in shadow beside {state.served} since the operator started it",
        changed_at=now,
    )


def _bound(value: float) -> float:
    """The nearest value in [0, 1]."""
    return min(max(value, 0.0), 1.0)


def gap(served: float, candidate: float) -> float:
    """How far a candidate's value lies from the served one's: success probabilities,
    so from a served value past 0 or 1 the candidate is measured to the nearer of that
    value and the bound it passed (see the module). Inside [0, 1]: the plain
    difference."""
    return min(abs(candidate - served), abs(candidate - _bound(served)))


def judge(
    pairs: Iterable[tuple[float | None, float | None]], max_divergence: float
) -> tuple[Verdict, int, float, str]:
    """Compare (served, candidate) values of one round's canaries: success
    probabilities, the gap as :func:`gap` measures it (see the module).

    Returns:
        (verdict, canaries compared, largest gap, why).
    """
    compared = 0
    worst = 0.0
    for k, (served, candidate) in enumerate(pairs):
        if served is None or not math.isfinite(served):
            continue  # the served version failed too: nothing to compare against
        if candidate is None or not math.isfinite(candidate):
            return Verdict.FAIL, compared + 1, worst, f"the candidate failed on canary {k}"
        compared += 1
        apart = gap(served, candidate)
        worst = max(worst, apart)
        if apart > max_divergence:
            bound = f" (or {_bound(served):g})" if not 0 <= served <= 1 else ""
            return (
                Verdict.DIVERGE,
                compared,
                worst,
                f"canary {k}: candidate {candidate:.4f} vs served {served:.4f}{bound} "
                f"(gap {apart:.4f} > {max_divergence:g})",
            )
    if compared == 0:
        return Verdict.NONE, 0, 0.0, ""
    return Verdict.AGREE, compared, worst, ""


def observe(
    state: Rollout,
    pairs: Iterable[tuple[float | None, float | None]],
    config: RolloutConfig,
    now: float,
    where: str = "",
) -> Rollout:
    """The rollout after one canary round's (served, candidate) pairs.

    ``where`` names the round (device) in the reason of a rollback.
    """
    if state.phase is not Phase.SHADOW:
        return state
    verdict, compared, worst, why = judge(pairs, config.max_divergence)
    if verdict is Verdict.NONE:
        return state
    seen = replace(
        state,
        compared=state.compared + compared,
        worst_gap=max(state.worst_gap, worst),
    )
    if verdict is not Verdict.AGREE:
        at = f" on {where}" if where else ""
        return replace(
            seen, phase=Phase.ROLLED_BACK, reason=f"rolled back{at}: {why}", changed_at=now
        )
    seen = replace(seen, agreed_rounds=seen.agreed_rounds + 1)
    if seen.agreed_rounds >= config.promote_after_rounds and seen.compared >= config.min_canaries:
        return replace(
            seen,
            phase=Phase.PROMOTED,
            served=seen.candidate or seen.served,
            previous=seen.served,
            reason=(
                f"promoted after {seen.agreed_rounds} agreeing rounds, {seen.compared} "
                f"canaries, largest gap {seen.worst_gap:.4f}"
            ),
            changed_at=now,
        )
    return seen


def rollback(state: Rollout, now: float, reason: str) -> Rollout:
    """Stop the candidate in shadow, or put back the version a promotion replaced.

    Raises:
        ValueError: nothing to roll back.
    """
    if state.phase is Phase.SHADOW:
        return replace(state, phase=Phase.ROLLED_BACK, reason=reason, changed_at=now)
    if state.phase is Phase.PROMOTED and state.previous:
        return replace(
            state,
            phase=Phase.ROLLED_BACK,
            served=state.previous,
            candidate=state.served,
            previous=None,
            reason=reason,
            changed_at=now,
        )
    raise ValueError(
        f"{state.method}: nothing to roll back (phase {state.phase.value}, serving {state.served})"
    )
