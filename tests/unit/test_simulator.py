"""The farm simulator: real placement and queue policies in simulated time."""

from __future__ import annotations

import pytest

from qrt_ray.errors import ValidationError
from qrt_ray.evaluation.sim_check import check_estimates, spearman
from qrt_ray.evaluation.simulator import FarmSimulator, SimConfig
from qrt_ray.models import POLICY_NAMES


@pytest.fixture(scope="module")
def sim() -> FarmSimulator:
    return FarmSimulator(SimConfig(devices=8, jobs=400, circuits=10, max_qubits=8, seed=3))


def test_every_job_completes_once_under_every_policy(sim: FarmSimulator) -> None:
    last_arrival = max(job.arrival_s for job in sim.trace)
    for policy in POLICY_NAMES:
        report = sim.run(policy)
        assert report.done == report.jobs == 400 and report.rejected == 0
        # a job waits at least its own run: every tenant's slowdown is at least 1
        assert report.per_tenant_slowdown and min(report.per_tenant_slowdown.values()) >= 1
        assert report.makespan_s >= last_arrival
        assert report.p95_jct_s >= report.mean_jct_s * 0.5  # a few long jobs, not one


def test_policies_trade_fidelity_and_time_as_they_promise(sim: FarmSimulator) -> None:
    by = {p: sim.run(p) for p in ("least_busy", "best_fidelity", "composite", "round_robin")}
    assert by["best_fidelity"].mean_fidelity >= by["composite"].mean_fidelity
    assert by["composite"].mean_fidelity > by["round_robin"].mean_fidelity
    assert by["least_busy"].mean_jct_s <= by["composite"].mean_jct_s
    assert by["composite"].mean_jct_s < by["best_fidelity"].mean_jct_s


def test_a_trace_is_reproducible(sim: FarmSimulator) -> None:
    assert sim.run("composite").mean_jct_s == sim.run("composite").mean_jct_s


def test_bad_settings_name_the_field() -> None:
    with pytest.raises(ValidationError, match=r"load=0 must be in \(0, 2\]"):
        SimConfig(load=0).check()
    with pytest.raises(ValidationError, match="arrivals='steady'"):
        SimConfig(arrivals="steady").check()  # type: ignore[arg-type]


def test_spearman_ranks_with_ties_and_refuses_mismatched_lengths() -> None:
    assert spearman([1, 2, 3, 4], [10, 20, 30, 40]) == pytest.approx(1.0)
    assert spearman([1, 2, 3, 4], [4, 3, 2, 1]) == pytest.approx(-1.0)
    assert spearman([1, 1, 1], [1, 2, 3]) == 0.0  # no order on one side
    assert spearman([1, 2, 2, 3], [1, 2, 3, 4]) == pytest.approx(0.9486833)
    with pytest.raises(ValueError, match="differ in length"):
        spearman([1, 2], [1])


def test_simulated_fidelities_are_checked_by_real_noisy_runs() -> None:
    sim = FarmSimulator(SimConfig(devices=2, jobs=5, circuits=4, max_qubits=4))
    check = check_estimates(sim, circuits=2, devices_per_circuit=2, shots=500)
    assert len(check.pairs) == 4
    assert {p.device for p in check.pairs} == {s.name for s in sim.snapshots}
    for p in check.pairs:
        assert 0 < p.esp < 1 and 0 < p.measured <= 1
        # With probability ESP no error happens and the output is the ideal one, so
        # Hellinger fidelity >= ESP when the estimate is honest (a little sampling slack).
        assert p.measured >= p.esp - 0.05, p
    # the summary is the pairs' own: rank correlation, means and per-circuit agreement
    assert check.spearman_all == pytest.approx(
        spearman([p.esp for p in check.pairs], [p.measured for p in check.pairs])
    )
    assert check.mean_esp == pytest.approx(sum(p.esp for p in check.pairs) / 4)
    by_circuit: dict[str, list] = {}
    for p in check.pairs:
        by_circuit.setdefault(p.circuit, []).append(p)
    agree = [
        max(ps, key=lambda p: p.measured).measured - max(ps, key=lambda p: p.esp).measured <= 0.01
        for ps in by_circuit.values()
    ]
    assert check.best_device_agreement == pytest.approx(sum(agree) / len(agree))
