"""The simulator's run-time model, the pieces a device runs a batch in, and a device
that leaves cancelled work between pieces."""

from __future__ import annotations

import math
import threading
import time
from dataclasses import replace

import pytest

from qrt_ray.actors.device import Device
from qrt_ray.actors.device_queue import WorkItem
from qrt_ray.circuits import to_qasm
from qrt_ray.compiler import compile_circuits
from qrt_ray.policies.simtime import (
    DENSITY_MATRIX,
    MPS,
    STATEVECTOR,
    CallPace,
    CircuitWork,
    Correction,
    Piece,
    SimCost,
    SimTimeModel,
    estimated_work,
    plan_pieces,
    prior_cost,
    split_evenly,
)
from qrt_ray.workloads import brickwork
from qrt_ray.workloads import ghz_circuit as ghz
from tests.local_farm import FARM


def test_the_prior_follows_the_method_the_device_will_use() -> None:
    small = CircuitWork(5, 40, 10)
    dm = prior_cost(small, 2000, threads=2)
    assert dm.method == DENSITY_MATRIX and dm.fixed_s > 100 * dm.per_shot_s
    sv = prior_cost(CircuitWork(12, 200, 60), 1000, threads=2)
    assert sv.method == STATEVECTOR and sv.per_shot_s * 1000 > sv.fixed_s
    mps = prior_cost(CircuitWork(18, 200, 60), 1000, threads=2)
    assert mps.method == MPS
    # more qubits, gates, shots or entanglement never make it cheaper
    assert prior_cost(CircuitWork(13, 200, 60), 1000).seconds(1000) > sv.seconds(1000)
    assert prior_cost(CircuitWork(12, 400, 60), 1000, threads=2).seconds(1000) > sv.seconds(1000)
    tangled = prior_cost(CircuitWork(18, 200, 150), 1000, threads=2)
    assert tangled.per_shot_s > 3 * mps.per_shot_s
    moved = prior_cost(CircuitWork(18, 200, 60, bond_moves=80), 1000, threads=2)
    assert moved.per_shot_s > 10 * mps.per_shot_s  # the swaps that bring qubits together
    # threads share a statevector's work; the GPU prior is faster still
    assert prior_cost(CircuitWork(12, 200, 60), 1000, threads=1).seconds(1000) > sv.seconds(1000)
    assert prior_cost(CircuitWork(12, 200, 60), 1000, gpu=True).per_shot_s < sv.per_shot_s


def test_a_guess_before_compiling_counts_the_swaps_routing_will_add() -> None:
    plain = estimated_work(10, 20, 15)
    routed = estimated_work(10, 20, 15, swaps=4)
    assert routed.two_qubit_gates == plain.two_qubit_gates + 12
    assert routed.gates > plain.gates


def test_the_model_learns_a_device_that_is_slower_than_the_prior() -> None:
    model = SimTimeModel()
    works = [CircuitWork(12, 200, 60)]
    before, prior, method = model.predict("slow", works, 1000, threads=2)
    assert before == prior and model.correction("slow", method).samples == 0
    for _ in range(30):
        model.observe("slow", method, prior, 4 * prior)
    after, _, _ = model.predict("slow", works, 1000, threads=2)
    assert after == pytest.approx(4 * prior, rel=0.1)
    # per device and per method: the others keep the prior
    assert model.predict("other", works, 1000, threads=2)[0] == prior
    assert model.correction("slow", DENSITY_MATRIX).samples == 0


def test_the_model_learns_a_prior_that_grows_too_fast() -> None:
    # measured = prior ** 0.5 (in seconds): the intercept alone cannot fit both ends
    model = SimTimeModel(forget=1.0)
    for prior in [0.01, 0.1, 1.0, 10.0, 100.0] * 8:
        model.observe("d", MPS, prior, math.sqrt(prior))
    c = model.correction("d", MPS)
    assert c.slope == pytest.approx(-0.5, abs=0.1)
    assert c.apply(100.0) == pytest.approx(10.0, rel=0.3)
    assert c.apply(0.01) == pytest.approx(0.1, rel=0.3)


def test_bad_observations_teach_nothing() -> None:
    model = SimTimeModel()
    for seconds in (0.0, -1.0, math.inf, math.nan):
        model.observe("d", MPS, 1.0, seconds)
    model.observe("d", "no such method", 1.0, 2.0)
    model.observe("d", MPS, 0.0, 2.0)
    assert model.correction("d", MPS).samples == 0
    assert Correction().apply(3.0) == 3.0


def test_a_twirled_job_pays_each_copy_s_evolution() -> None:
    model = SimTimeModel()
    works = [CircuitWork(6, 50, 10)]
    one = model.job_prior(works, 2000, threads=2)
    four = model.job_prior(works, 2000, threads=2, copies=4)
    assert one.method == four.method == DENSITY_MATRIX
    assert four.fixed_s == pytest.approx(4 * one.fixed_s)
    assert four.per_shot_s == pytest.approx(one.per_shot_s)


def test_split_evenly() -> None:
    assert split_evenly(10, 3) == [4, 3, 3]
    assert sum(split_evenly(1001, 7)) == 1001


def test_pieces_group_small_circuits_and_split_long_trajectories() -> None:
    small = SimCost(DENSITY_MATRIX, 0.01, 0.0)
    long_sv = SimCost(STATEVECTOR, 0.0, 0.002)  # 2 s at 1,000 shots
    long_dm = SimCost(DENSITY_MATRIX, 3.0, 0.0)
    plan = plan_pieces([small] * 3 + [long_sv, small, long_dm], 1000, target_s=0.5)
    assert plan == [
        Piece((0, 1, 2), 1000),
        *(Piece((3,), 250) for _ in range(4)),
        Piece((4,), 1000),
        Piece((5,), 1000),  # a density matrix's shots come from one evolution
    ]
    # every circuit's shots are all there, once
    for i in range(6):
        assert sum(p.shots for p in plan if i in p.circuits) == 1000
    assert len(plan_pieces([small] * 100, 1000, target_s=10, max_circuits=64)) == 2
    # never fewer than min_shots a piece
    assert plan_pieces([long_sv], 40, target_s=0.001, min_shots=16) == [
        Piece((0,), 20),
        Piece((0,), 20),
    ]
    # long density matrices still share a call, two at a time, with two threads
    assert plan_pieces([long_dm] * 5, 1000, target_s=0.5, min_circuits=2) == [
        Piece((0, 1), 1000),
        Piece((2, 3), 1000),
        Piece((4,), 1000),
    ]
    with pytest.raises(ValueError, match="target_s"):
        plan_pieces([small], 10, target_s=0)


def _slow_item(device: Device, circuits: int) -> WorkItem:
    """A job of ``circuits`` deep 5-qubit circuits: tens of milliseconds each."""
    qc = brickwork(5, 40)
    cal_id, target = device.compile_target()
    (compiled,) = compile_circuits([to_qasm(qc)], target, device=device.name, calibration_id=cal_id)
    assert compiled.payload is not None
    return WorkItem("long", 1, cal_id, (compiled.payload,) * circuits, 500, 0, 1, 5)


def test_a_device_leaves_cancelled_work_between_pieces(monkeypatch: pytest.MonkeyPatch) -> None:
    import qrt_ray.actors.executor as executor_mod

    monkeypatch.setattr(executor_mod, "PIECE_TARGET_S", 0.05)  # pieces of a few circuits
    device = Device(FARM.devices[0], max_parallel_threads=1)
    item = _slow_item(device, 3)
    start = time.perf_counter()
    device.execute([item])
    one_batch = time.perf_counter() - start  # warm: noise model built, circuits known
    per_circuit = max(one_batch / 3, 1e-3)
    item = _slow_item(device, max(60, int(30 / per_circuit)))
    whole_s = len(item.circuits) * per_circuit  # 30 s or more if it ran to the end
    runs: list = []
    worker = threading.Thread(target=lambda: runs.extend(device.execute([item])))
    worker.start()
    time.sleep(0.3)
    cancelled = time.perf_counter()
    assert device.drop(["long"]) == []  # nothing queued: it was running
    worker.join(timeout=60)
    freed = time.perf_counter() - cancelled
    assert not worker.is_alive()
    # it finishes the piece in flight (a few circuits), never the job: a tenth
    # of the whole job's time leaves room for a loaded machine's slow pieces
    assert freed < whole_s / 10, (
        f"the device ran on {freed:.2f} s of {whole_s:.1f} s after the cancel"
    )
    (run,) = runs
    assert run.counts == () and "cancelled or moved" in (run.error or "")
    # the next attempt of the same job, and other jobs, run as usual
    again = device.execute([WorkItem("next", 1, item.calibration_id, item.circuits[:2], 100, 0)])
    assert [sum(c.values()) for c in again[0].counts] == [100, 100]


def test_only_the_dropped_attempt_is_left_out() -> None:
    device = Device(FARM.devices[0], max_parallel_threads=1)
    item = _slow_item(device, 2)
    device.drop(["long"], {"long": 7})  # another attempt: this one runs on
    (run,) = device.execute([item])
    assert [sum(c.values()) for c in run.counts] == [500, 500]
    # what a device remembers is bounded and forgets a batch's jobs once it ran
    assert not device.executor.is_abandoned(item)


def test_a_twirled_group_shares_its_whole_time_between_its_jobs() -> None:
    from qrt_ray.models import TwirlSpec

    device = Device(FARM.devices[0], max_parallel_threads=1)
    twirl = TwirlSpec(gates=True, measure=True, randomizations=4)
    a = replace(_slow_item(device, 1), twirl=twirl)
    b = replace(a, job_id="other", circuits=a.circuits * 2)
    device.execute([a])  # warm: noise model built
    start = time.perf_counter()
    runs = device.execute([a, b])
    wall = time.perf_counter() - start
    assert [sum(c.values()) for r in runs for c in r.counts] == [500] * 3
    total = sum(r.run_s for r in runs)
    assert 0.5 * wall <= total <= wall  # every job's share of the group's one time


def test_call_pace_learns_faster_calls_only_and_smooths() -> None:
    pace = CallPace(weight=0.5)
    assert pace.ratio("density_matrix") == 1.0
    pace.observe("density_matrix", 1.0, 0.2)
    assert pace.ratio("density_matrix") == pytest.approx(0.2)
    pace.observe("density_matrix", 1.0, 0.8)  # halfway in logs: sqrt(0.2 * 0.8)
    assert pace.ratio("density_matrix") == pytest.approx(0.4)
    pace.observe("statevector", 0.5, 2.0)  # slower than the prior: never below its plan
    assert pace.ratio("statevector") == 1.0
    pace.observe("statevector", 1.0, 1e-9)  # absurdly fast: held at the floor
    assert pace.ratio("statevector") == pytest.approx(math.sqrt(pace.floor))
    for bad in (0.0, -1.0, math.nan, math.inf):
        pace.observe("matrix_product_state", 1.0, bad)
    assert pace.ratio("matrix_product_state") == 1.0


def _ghz_items(device: Device, jobs: int, seed: int | None) -> list[WorkItem]:
    cal_id, target = device.compile_target()
    (compiled,) = compile_circuits(
        [to_qasm(ghz(5))], target, device=device.name, calibration_id=cal_id
    )
    assert compiled.payload is not None
    return [
        WorkItem(f"j{i}", 1, cal_id, (compiled.payload,), 1000, 5, seed=seed) for i in range(jobs)
    ]


def test_unseeded_work_runs_in_pieces_of_the_device_s_real_pace(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    import qrt_ray.actors.executor as executor_mod

    calls: list[int] = []
    real = executor_mod.simulate

    def counted(sim: object, circuits: list, **kw: object) -> object:
        calls.append(len(circuits))
        return real(sim, circuits, **kw)

    monkeypatch.setattr(executor_mod, "simulate", counted)
    device = Device(FARM.devices[0], max_parallel_threads=1)
    # the prior over-prices small circuits in a shared call: several pieces at first
    device.execute(_ghz_items(device, 200, None))
    first = list(calls)
    assert len(first) >= 2 and sum(first) == 200
    learned = device.executor.pace._log_ratio
    assert len(learned) == 1 and next(iter(learned.values())) < 0  # faster than the prior
    calls.clear()
    runs = device.execute(_ghz_items(device, 200, None))
    assert [sum(r.counts[0].values()) for r in runs] == [1000] * 200
    # bigger pieces at the learned pace (how many fewer depends on how fast this
    # machine is right now: a loaded one learns a pace nearer the prior's)
    assert max(calls) > max(first) and len(calls) <= len(first) and sum(calls) == 200
    # seeded work keeps the prior's plan, so the same seed gives the same counts
    calls.clear()
    seeded = device.execute(_ghz_items(device, 200, 7))
    assert calls == first
    calls.clear()
    assert [r.counts for r in device.execute(_ghz_items(device, 200, 7))] == [
        r.counts for r in seeded
    ]
