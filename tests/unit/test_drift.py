"""The drift model: reproducible, retuned by recalibration, and felt by the simulator."""

from __future__ import annotations

import statistics

import pytest
from qiskit.quantum_info import hellinger_fidelity

from qrt_ray.actors.device import Device, WorkItem
from qrt_ray.calibration import load_backend, snapshot_from_backend
from qrt_ray.circuits import to_qasm
from qrt_ray.compiler import compile_circuits
from qrt_ray.config import DeviceConfig, DriftConfig
from qrt_ray.drift import MAX_DRIFTED_ERROR, DriftProcess
from tests.circuits import ghz

HOUR = 3600.0


@pytest.fixture(scope="module")
def base():  # type: ignore[no-untyped-def]
    return snapshot_from_backend("nairobi", load_backend("FakeNairobiV2"), taken_at=0.0)


def _mean_gate_error(snap, gate: str = "cx") -> float:  # type: ignore[no-untyped-def]
    return statistics.fmean(snap.gate_errors(gate))


def test_same_seed_same_noise_whatever_the_order_of_questions(base) -> None:  # type: ignore[no-untyped-def]
    cfg = DriftConfig(seed=3)
    a, b = DriftProcess(base, cfg, start=0.0), DriftProcess(base, cfg, start=0.0)
    late, early = a.true_calibration(30 * HOUR), a.true_calibration(2 * HOUR)
    assert b.true_calibration(2 * HOUR) == early
    assert b.true_calibration(30 * HOUR) == late
    other = DriftProcess(base, DriftConfig(seed=4), start=0.0).true_calibration(30 * HOUR)
    assert other.calibration_id != late.calibration_id
    # drift time 0 is the base calibration itself: same parameters, same id
    assert a.true_calibration(0.0).calibration_id == base.calibration_id


def test_errors_trend_up_and_a_recalibration_retunes_them(base) -> None:  # type: ignore[no-untyped-def]
    cfg = DriftConfig(
        seed=1, error_trend_per_hour=0.05, tls_per_qubit_hour=0, coupler_per_edge_hour=0
    )
    drift = DriftProcess(base, cfg, start=0.0)
    day = drift.true_calibration(24 * HOUR)
    eve = drift.true_calibration(24 * HOUR - 1)
    assert _mean_gate_error(day) > 1.5 * _mean_gate_error(base)
    assert statistics.fmean(day.readout_error) > statistics.fmean(base.readout_error)
    measured = drift.recalibrate(24 * HOUR)
    assert measured.taken_at == 24 * HOUR
    assert [g.error for g in measured.gates] == [g.error for g in base.gates]
    # coherence is measured, not retuned: it keeps its drift
    assert measured.t1_s == day.t1_s
    # after the retune the errors drift again from the base values
    assert _mean_gate_error(drift.true_calibration(48 * HOUR)) > _mean_gate_error(base)
    # and the past is unchanged by a later recalibration
    assert drift.step_at(24 * HOUR - 1) < drift.step_at(24 * HOUR)
    assert drift.true_calibration(24 * HOUR - 1) == eve


def test_events_hit_one_qubit_or_coupler_and_pass(base) -> None:  # type: ignore[no-untyped-def]
    cfg = DriftConfig(
        seed=2,
        coherence_sd_per_hour=0,
        error_sd_per_hour=0,
        error_trend_per_hour=0,
        tls_per_qubit_hour=0.05,
        coupler_per_edge_hour=0.05,
        event_mean_h=2,
    )
    drift = DriftProcess(base, cfg, start=0.0)
    seen_tls = seen_coupler = ended = False
    before = {g.qubits: g.error for g in base.gates}
    active: set[int] = set()
    for hour in range(1, 49):
        now = hour * HOUR
        events, snap = drift.events(now), drift.true_calibration(now)
        tls = set(events["tls_qubits"])
        ended = ended or bool(active - tls)
        active = tls
        for q in tls:
            seen_tls = True
            assert snap.t1_s[q] == pytest.approx(base.t1_s[q] * cfg.tls_coherence_factor)
        assert all(snap.t1_s[q] == base.t1_s[q] for q in set(range(base.num_qubits)) - tls)
        for edge in events["bad_couplers"]:
            seen_coupler = True
            for g in (g for g in snap.gates if tuple(sorted(g.qubits)) == edge):
                b = before[g.qubits]
                expected = min(b * cfg.coupler_error_factor, max(b, MAX_DRIFTED_ERROR))
                assert g.error == pytest.approx(expected)
    assert seen_tls and seen_coupler and ended


def _drifting_nairobi(now: list[float]) -> Device:
    """nairobi drifting fast (3,600x), on the clock ``now[0]`` (hours)."""
    cfg = DeviceConfig(
        name="nairobi",
        backend="FakeNairobiV2",
        price_per_shot_usd=0,
        price_per_job_usd=0,
        gpu="never",
        drift=DriftConfig(seed=5, time_scale=3600, error_trend_per_hour=0.15),
    )
    return Device(cfg, max_parallel_threads=1, clock=lambda: now[0])


def test_a_drifted_device_runs_on_its_true_noise_and_keeps_reporting_the_old(tmp_path) -> None:  # type: ignore[no-untyped-def]
    now = [0.0]
    device = _drifting_nairobi(now)
    reported = device.calibration
    cal_id, target = device.compile_target()
    qasm = to_qasm(ghz(5))
    (compiled,) = compile_circuits([qasm], target, device="nairobi", calibration_id=cal_id)
    item = WorkItem("j", 1, cal_id, (compiled.payload,), 4000, 5, seed=9, active_qubits=5)
    ideal = {"00000": 0.5, "11111": 0.5}

    def fidelity() -> float:
        (run,) = device.execute([item])
        assert run.calibration_id == reported.calibration_id
        return hellinger_fidelity(ideal, run.counts[0])

    fresh = fidelity()
    now[0] = 24.0  # a day of drift at 3,600x
    assert device.calibration == reported  # the report did not move ...
    assert device.true_calibration().calibration_id != reported.calibration_id  # ... the device did
    drifted = fidelity()
    # seeded: 0.88 fresh, 0.07 after the day (docs/architecture.md, "Drift")
    assert fresh > 0.85 and drifted < 0.15
    new = device.recalibrate()
    assert new.calibration_id != reported.calibration_id
    assert device.true_calibration().calibration_id == new.calibration_id


def test_the_compile_target_is_built_once_per_calibration() -> None:
    now = [0.0]
    device = _drifting_nairobi(now)
    first_id, first = device.compile_target()
    again_id, again = device.compile_target()
    assert (again_id, again) == (first_id, first) and again is first
    now[0] = 24.0  # drifted, so the recalibration measures new values
    new = device.recalibrate()
    new_id, target = device.compile_target()
    assert new_id == new.calibration_id != first_id and target is not first
