"""The farm simulator: real placement and queue policies in simulated time."""

from __future__ import annotations

import pytest

from qrt_ray.errors import ValidationError
from qrt_ray.models import POLICY_NAMES
from qrt_ray.simulator import FarmSimulator, SimConfig


@pytest.fixture(scope="module")
def sim() -> FarmSimulator:
    return FarmSimulator(SimConfig(devices=8, jobs=400, circuits=10, max_qubits=8, seed=3))


def test_every_job_completes_once_under_every_policy(sim: FarmSimulator) -> None:
    for policy in POLICY_NAMES:
        report = sim.run(policy)
        assert report.done == report.jobs == 400 and report.rejected == 0
        assert 0 < report.mean_fidelity <= 1
        assert report.mean_jct_s > 0 and report.p95_jct_s >= report.mean_jct_s * 0.5
        assert 0 < report.utilisation <= 1
        assert 0 < report.fairness <= 1


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
