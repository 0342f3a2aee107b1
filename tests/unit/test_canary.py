"""Canary choice, drift judgement, the calibration state machine, backoff and the
circuit breaker: pure functions and small classes, no devices."""

from __future__ import annotations

import itertools
import random

import pytest

from qrt_ray.calibration import load_backend, snapshot_from_backend
from qrt_ray.circuits import parse_qasm
from qrt_ray.config import CalibrationConfig
from qrt_ray.policies.canary import (
    Action,
    CalibrationState,
    CanaryResult,
    Phase,
    after_canary,
    after_verification,
    canary_round,
    chains,
    decide,
    judge_round,
    mirror_qasm,
    success_probability,
)
from qrt_ray.policies.health import CircuitBreaker, backoff_delay

CFG = CalibrationConfig(canary_period_s=100.0, drift_threshold=0.04, drift_z=3.0, offline_after=2)


def test_chains_are_disjoint_paths_that_cover_the_device() -> None:
    cal = snapshot_from_backend("kolkata", load_backend("FakeKolkataV2"))
    found = chains(cal.coupling_map, cal.num_qubits, 4)
    qubits = [q for c in found for q in c]
    assert sorted(qubits) == list(range(cal.num_qubits))
    edges = {tuple(sorted(e)) for e in cal.coupling_map}
    for chain in found:
        assert 1 <= len(chain) <= 4
        assert all(tuple(sorted(p)) in edges for p in itertools.pairwise(chain))


def test_rounds_take_turns_so_every_chain_is_checked() -> None:
    cal = snapshot_from_backend("kolkata", load_backend("FakeKolkataV2"))
    every = chains(cal.coupling_map, cal.num_qubits, 4)
    seen: set[tuple[int, ...]] = set()
    rounds = -(-len(every) // 3)
    for r in range(rounds):
        specs = canary_round(cal.coupling_map, cal.num_qubits, r, chain_length=4, max_chains=3)
        assert len({s.qubits for s in specs}) == 3
        seen |= {s.qubits for s in specs}
    assert seen == set(every)


def test_mirror_canaries_are_their_own_inverse() -> None:
    from qiskit.quantum_info import Statevector

    qc = parse_qasm(mirror_qasm(4, seed=9))
    qc.remove_final_measurements()
    assert Statevector(qc).probabilities_dict()["0000"] == pytest.approx(1.0)
    assert success_probability({"0000": 90, "0101": 10}, frozenset({"0000"})) == 0.9


def _r(predicted: float, measured: float, shots: int = 2000) -> CanaryResult:
    return CanaryResult("c", predicted, measured, shots)


def test_drift_needs_both_the_threshold_and_the_statistics() -> None:
    assert judge_round([_r(0.90, 0.85)], CFG).drifted  # 0.05 and 7.5 sigma
    assert not judge_round([_r(0.90, 0.85, shots=20)], CFG).drifted  # too few shots
    calm = judge_round([_r(0.90, 0.89), _r(0.95, 0.96)], CFG)
    assert not calm.drifted and not calm.suspicious
    assert judge_round([_r(0.90, 0.875)], CFG).suspicious  # half the threshold
    assert "predicts 0.900" in judge_round([_r(0.90, 0.85)], CFG).reason


def test_state_machine_detects_pauses_retunes_and_gives_up() -> None:
    state = CalibrationState("d", next_canary_at=100.0)
    common = {"online": True, "in_maintenance": False, "busy": False, "config": CFG}
    assert decide(state, 50.0, calibration_age_s=0, **common) is Action.NONE
    assert decide(state, 100.0, calibration_age_s=0, **common) is Action.CANARY
    # a suspicious round brings the next one forward
    assert after_canary(state, judge_round([_r(0.9, 0.875)], CFG), 100.0, CFG) is Action.NONE
    assert state.next_canary_at == 125.0
    assert after_canary(state, judge_round([_r(0.9, 0.8)], CFG), 125.0, CFG) is Action.PAUSE
    assert state.phase is Phase.RECALIBRATING and state.detected_at == 125.0
    assert decide(state, 126.0, calibration_age_s=0, **{**common, "busy": True}) is Action.NONE
    assert decide(state, 127.0, calibration_age_s=0, **common) is Action.RECALIBRATE
    bad = judge_round([_r(0.9, 0.7)], CFG)
    assert not after_verification(state, bad, 128.0, CFG)
    assert state.phase is Phase.RECALIBRATING
    assert not after_verification(state, bad, 129.0, CFG)
    assert state.phase is Phase.OFFLINE and "2 recalibrations" in state.reason
    assert decide(state, 130.0, calibration_age_s=0, **{**common, "online": False}) is Action.NONE
    # a maintenance window does not bring an OFFLINE device back
    off = {**common, "online": False, "in_maintenance": True}
    assert decide(state, 130.0, calibration_age_s=0, **off) is Action.NONE
    assert decide(state, 131.0, calibration_age_s=0, **common) is Action.RESUMED


def test_age_and_maintenance_come_first() -> None:
    state = CalibrationState("d", next_canary_at=1e9)
    common = {"online": True, "busy": False, "config": CFG}
    too_old = CFG.max_age_s + 1
    assert (
        decide(state, 0.0, calibration_age_s=too_old, in_maintenance=False, **common)
        is Action.PAUSE
    )
    assert (
        decide(state, 0.0, calibration_age_s=0, in_maintenance=True, **common)
        is Action.ENTER_MAINTENANCE
    )
    state.phase = Phase.MAINTENANCE
    assert decide(state, 0.0, calibration_age_s=0, in_maintenance=True, **common) is Action.NONE
    assert (
        decide(state, 0.0, calibration_age_s=0, in_maintenance=False, **common)
        is Action.LEAVE_MAINTENANCE
    )
    # a device someone else paused gets no canaries
    other = CalibrationState("e")
    assert (
        decide(
            other,
            0.0,
            calibration_age_s=0,
            in_maintenance=False,
            online=False,
            busy=False,
            config=CFG,
        )
        is Action.NONE
    )


def test_backoff_grows_is_capped_and_jittered() -> None:
    rng = random.Random(1)
    draws = [[backoff_delay(k, 0.1, 1.0, rng) for _ in range(200)] for k in range(6)]
    for k, d in enumerate(draws):
        assert all(0 <= x <= min(1.0, 0.1 * 2**k) for x in d)
    assert len(set(draws[3])) > 150  # jittered, not one fixed delay
    assert max(draws[5]) > 0.9  # reaches the cap


def test_circuit_breaker_opens_cools_down_and_probes() -> None:
    breaker = CircuitBreaker(failures=3, window_s=10.0, cooldown_s=30.0)
    assert not breaker.failure(0.0) and not breaker.failure(1.0)
    assert not breaker.failure(20.0)  # the first two fell out of the window
    assert not breaker.failure(21.0)
    assert breaker.failure(22.0)  # three within 10 s: open
    assert not breaker.allows(30.0) and "circuit breaker open" in breaker.reason(30.0)
    assert breaker.state(52.0) == "half-open" and breaker.allows(52.0)
    assert breaker.failure(53.0)  # the probe failed: open again at once
    assert not breaker.allows(60.0)
    breaker.success(90.0)  # half-open again by now; the probe ran
    assert breaker.state(90.0) == "closed" and breaker.trips == 2
