"""Canaries and the calibration state machine: when a device has drifted, and what next.

A canary is a small circuit with a known answer, run on a chain of physical qubits:
a GHZ state (ideal outcomes all-0 and all-1), a mirror circuit (random layers, a
barrier, their inverse: ideal all-0) and a readout check (X on every qubit: ideal
all-1). The device runs each twice over: on its true noise (measured) and on the
noise its current calibration describes (predicted). A measured success probability
well below the predicted one means the calibration no longer describes the device.

:func:`decide`, :func:`after_canary` and :func:`after_verification` are the
calibration manager's state machine per device, pure functions of a
:class:`CalibrationState`, the clock and the config, so tests drive them without
Ray, devices or sleeping.
"""

from __future__ import annotations

import math
import random
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from enum import StrEnum

from qrt_ray.config import CalibrationConfig

# how the reason of a device the manager took OFFLINE begins
OFFLINE_REASON = "canaries still fail after"
# gate -> its inverse, for mirror circuits written as OpenQASM 2 text
_INVERSE = {"h": "h", "s": "sdg", "sdg": "s", "sx": "sxdg", "sxdg": "sx", "x": "x"}
_MIRROR_LAYERS = 2


@dataclass(frozen=True, slots=True)
class CanarySpec:
    """One canary circuit: logical QASM on ``len(qubits)`` qubits, laid out on ``qubits``."""

    name: str
    kind: str  # ghz | mirror | readout
    qubits: tuple[int, ...]
    qasm: str
    ideal: frozenset[str]


@dataclass(frozen=True, slots=True)
class CanaryResult:
    """One canary's success probability: predicted by the calibration, and measured."""

    name: str
    predicted: float
    measured: float
    shots: int
    # success after each error mitigation method (None: the method failed on it)
    mitigated: Mapping[str, float | None] = field(default_factory=dict)

    @property
    def gap(self) -> float:
        """How far the measured success falls below the predicted one."""
        return self.predicted - self.measured

    @property
    def z(self) -> float:
        """The gap in standard errors of the measured estimate (shot noise)."""
        p = min(max(self.predicted, 1e-6), 1 - 1e-6)
        return self.gap / math.sqrt(p * (1 - p) / max(self.shots, 1))


@dataclass(frozen=True, slots=True)
class RoundVerdict:
    """What one canary round says about a device."""

    drifted: bool
    suspicious: bool
    worst: CanaryResult | None
    reason: str

    @property
    def predicted(self) -> float:
        """The worst canary's predicted success (1.0 for an empty round)."""
        return self.worst.predicted if self.worst else 1.0

    @property
    def measured(self) -> float:
        """The worst canary's measured success (1.0 for an empty round)."""
        return self.worst.measured if self.worst else 1.0


# == which canaries ===================================================================


def chains(
    coupling_map: Sequence[tuple[int, int]], num_qubits: int, length: int
) -> list[tuple[int, ...]]:
    """Disjoint paths of up to ``length`` qubits along the coupling map, covering the device.

    Greedy from the lowest free qubit, always stepping to the lowest free neighbour;
    a qubit with no free neighbour forms a chain of one. Deterministic.
    """
    neighbours: dict[int, set[int]] = {q: set() for q in range(num_qubits)}
    for a, b in coupling_map:
        neighbours[a].add(b)
        neighbours[b].add(a)
    free = set(range(num_qubits))
    out: list[tuple[int, ...]] = []
    for start in range(num_qubits):
        if start not in free:
            continue
        path = [start]
        free.discard(start)
        while len(path) < length:
            nxt = sorted(neighbours[path[-1]] & free)
            if not nxt:
                break
            path.append(nxt[0])
            free.discard(nxt[0])
        out.append(tuple(path))
    return out


def canary_round(
    coupling_map: Sequence[tuple[int, int]],
    num_qubits: int,
    round_index: int,
    *,
    chain_length: int,
    max_chains: int,
) -> list[CanarySpec]:
    """The canaries of round ``round_index``: up to ``max_chains`` chains, in turn.

    Each chain of two or more qubits gets a GHZ, a mirror and a readout canary; a
    lone qubit gets the readout check. Successive rounds walk through the device's
    chains, so every qubit is checked every ``ceil(chains / max_chains)`` rounds.
    """
    every = chains(coupling_map, num_qubits, chain_length)
    every.sort(key=lambda c: (-len(c), c))
    if not every:
        return []
    take = min(max_chains, len(every))
    start = (round_index * take) % len(every)
    picked = [every[(start + i) % len(every)] for i in range(take)]
    specs: list[CanarySpec] = []
    for chain in picked:
        label = "-".join(str(q) for q in chain)
        if len(chain) > 1:
            specs.append(
                CanarySpec(
                    f"ghz[{label}]", "ghz", chain, ghz_qasm(len(chain)), _ghz_ideal(len(chain))
                )
            )
            specs.append(
                CanarySpec(
                    f"mirror[{label}]",
                    "mirror",
                    chain,
                    mirror_qasm(len(chain), seed=hash_seed(label)),
                    frozenset({"0" * len(chain)}),
                )
            )
        specs.append(
            CanarySpec(
                f"readout[{label}]",
                "readout",
                chain,
                readout_qasm(len(chain)),
                frozenset({"1" * len(chain)}),
            )
        )
    return specs


def hash_seed(label: str) -> int:
    """A stable seed from a chain label (Python's hash() is salted): a chain keeps its
    mirror circuit, so its prediction is computed once per calibration."""
    return sum((i + 1) * ord(ch) for i, ch in enumerate(label)) * 7919


def _header(n: int) -> list[str]:
    return ["OPENQASM 2.0;", 'include "qelib1.inc";', f"qreg q[{n}];", f"creg c[{n}];"]


def _measure_all(n: int) -> list[str]:
    return [f"measure q[{i}] -> c[{i}];" for i in range(n)]


def ghz_qasm(n: int) -> str:
    """A GHZ state on ``n`` qubits along a line, measured."""
    lines = [*_header(n), "h q[0];", *(f"cx q[{i}],q[{i + 1}];" for i in range(n - 1))]
    return "\n".join([*lines, *_measure_all(n)])


def _ghz_ideal(n: int) -> frozenset[str]:
    return frozenset({"0" * n, "1" * n})


def mirror_qasm(n: int, *, seed: int, layers: int = _MIRROR_LAYERS) -> str:
    """Random Clifford layers on a line of ``n`` qubits, a barrier, then their inverse.

    The barrier keeps the compiler from cancelling the two halves; the ideal outcome
    is all-0.
    """
    rng = random.Random(seed)
    forward: list[str] = []
    for layer in range(layers):
        forward += [f"{rng.choice(sorted(_INVERSE))} q[{i}];" for i in range(n)]
        forward += [f"cx q[{i}],q[{i + 1}];" for i in range(layer % 2, n - 1, 2)]
    backward = []
    for line in reversed(forward):
        gate, rest = line.split(" ", 1)
        backward.append(f"{_INVERSE.get(gate, gate)} {rest}")
    barrier = "barrier " + ",".join(f"q[{i}]" for i in range(n)) + ";"
    return "\n".join([*_header(n), *forward, barrier, *backward, *_measure_all(n)])


def readout_qasm(n: int) -> str:
    """X on every qubit, measured: checks readout of 1 (and the X gates)."""
    return "\n".join([*_header(n), *(f"x q[{i}];" for i in range(n)), *_measure_all(n)])


def success_probability(counts: Mapping[str, int], ideal: frozenset[str]) -> float:
    """Fraction of shots that gave an ideal outcome (spaces in keys are ignored)."""
    total = sum(counts.values())
    if total == 0:
        return 0.0
    hit = sum(v for k, v in counts.items() if k.replace(" ", "") in ideal)
    return hit / total


# == is this drift? ===================================================================


def judge_round(results: Sequence[CanaryResult], config: CalibrationConfig) -> RoundVerdict:
    """Whether a round shows drift: some canary measured ``drift_threshold`` below its
    prediction and ``drift_z`` standard errors of shot noise. Half of that is
    suspicious (the next round comes sooner)."""
    if not results:
        return RoundVerdict(False, False, None, "no canaries")
    worst = max(results, key=lambda r: (r.gap, r.z))
    drifted = [r for r in results if r.gap >= config.drift_threshold and r.z >= config.drift_z]
    if drifted:
        w = max(drifted, key=lambda r: r.gap)
        return RoundVerdict(
            True,
            True,
            w,
            f"canary {w.name} measured {w.measured:.3f} where the calibration predicts "
            f"{w.predicted:.3f} ({w.z:.1f} standard errors)",
        )
    suspicious = worst.gap >= config.drift_threshold / 2 and worst.z >= config.drift_z / 2
    return RoundVerdict(
        False,
        suspicious,
        worst,
        f"worst canary {worst.name}: measured {worst.measured:.3f}, predicted "
        f"{worst.predicted:.3f}",
    )


# == the state machine ================================================================


class Phase(StrEnum):
    """Where the calibration manager is with one device."""

    MONITOR = "monitor"  # canaries on schedule
    RECALIBRATING = "recalibrating"  # paused (CALIBRATING): waits for its batch, retunes
    MAINTENANCE = "maintenance"  # inside a maintenance window
    OFFLINE = "offline"  # failed recalibrations; back only through `qrt resume`


class Action(StrEnum):
    """What the manager does next for a device."""

    NONE = "none"
    CANARY = "canary"  # run a canary round
    PAUSE = "pause"  # set CALIBRATING; running work finishes, waiting work moves
    RECALIBRATE = "recalibrate"  # the device is idle: retune it and verify
    ENTER_MAINTENANCE = "enter_maintenance"
    LEAVE_MAINTENANCE = "leave_maintenance"  # recalibrate, then back ONLINE
    RESUMED = "resumed"  # an operator put an OFFLINE device back ONLINE


@dataclass(slots=True)
class CalibrationState:
    """The manager's memory of one device."""

    device: str
    phase: Phase = Phase.MONITOR
    next_canary_at: float = 0.0
    round: int = 0
    drift_round: int = 0  # the round whose chains a recalibration is verified on
    failures: int = 0
    reason: str = ""
    last: RoundVerdict | None = None
    detected_at: float | None = None  # when drift was first seen (until retuned)
    history: list[str] = field(default_factory=list)


def decide(
    state: CalibrationState,
    now: float,
    *,
    online: bool,
    calibration_age_s: float,
    in_maintenance: bool,
    busy: bool,
    config: CalibrationConfig,
) -> Action:
    """The next action for one device.

    Args:
        state: the manager's memory of the device.
        now: the clock.
        online: the device reports ONLINE or DRAINING (runs work).
        calibration_age_s: age of its current calibration.
        in_maintenance: a maintenance window covers ``now``.
        busy: it still has a batch running.
        config: thresholds and periods.
    """
    if state.phase is Phase.OFFLINE:  # out of service until an operator resumes it
        return Action.RESUMED if online else Action.NONE
    if in_maintenance:
        return Action.NONE if state.phase is Phase.MAINTENANCE else Action.ENTER_MAINTENANCE
    if state.phase is Phase.MAINTENANCE:
        return Action.LEAVE_MAINTENANCE
    if state.phase is Phase.RECALIBRATING:
        return Action.NONE if busy else Action.RECALIBRATE
    if not online:
        return Action.NONE  # paused by someone else: no canaries, no retune
    if calibration_age_s > config.max_age_s:
        return Action.PAUSE
    if now >= state.next_canary_at:
        return Action.CANARY
    return Action.NONE


def age_reason(calibration_age_s: float, config: CalibrationConfig) -> str:
    """Why a device is recalibrated for age."""
    return f"calibration is {calibration_age_s / 3600:.1f} h old (max_age_s={config.max_age_s:g})"


def after_canary(
    state: CalibrationState, verdict: RoundVerdict, now: float, config: CalibrationConfig
) -> Action:
    """Take in a monitoring round; returns PAUSE when the device must be recalibrated."""
    state.last = verdict
    state.drift_round = state.round
    state.round += 1
    if verdict.drifted:
        state.detected_at = state.detected_at if state.detected_at is not None else now
        state.phase = Phase.RECALIBRATING
        state.reason = f"drift: {verdict.reason}"
        return Action.PAUSE
    period = config.canary_period_s / 4 if verdict.suspicious else config.canary_period_s
    state.next_canary_at = now + period
    return Action.NONE


def start_recalibration(state: CalibrationState, reason: str) -> None:
    """The device is being paused to be recalibrated, for ``reason``."""
    state.phase = Phase.RECALIBRATING
    state.reason = reason


def after_verification(
    state: CalibrationState, verdict: RoundVerdict, now: float, config: CalibrationConfig
) -> bool:
    """Take in the round run right after a recalibration; returns whether the device
    may go back ONLINE. ``offline_after`` failures in a row make it OFFLINE. The round
    counter does not move: every verification re-runs the chains that found drift."""
    state.last = verdict
    if not verdict.drifted:
        state.phase = Phase.MONITOR
        state.failures = 0
        state.detected_at = None
        state.reason = ""
        state.next_canary_at = now + config.canary_period_s
        return True
    state.failures += 1
    if state.failures >= config.offline_after:
        state.phase = Phase.OFFLINE
        state.reason = (
            f"{OFFLINE_REASON} {state.failures} recalibrations in a row; last: {verdict.reason}"
        )
    else:
        state.reason = f"recalibration {state.failures} did not fix it: {verdict.reason}"
    return False


def resumed(state: CalibrationState, now: float) -> None:
    """An operator put the device back: monitor it again, with a canary soon."""
    state.phase = Phase.MONITOR
    state.failures = 0
    state.reason = ""
    state.next_canary_at = now
