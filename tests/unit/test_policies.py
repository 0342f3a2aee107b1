"""Placement policies, the fidelity estimator, costs and queue order as pure functions."""

from __future__ import annotations

import dataclasses
import math
from functools import cache

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from qiskit import QuantumCircuit, transpile

from qrt_ray.calibration import load_backend, snapshot_from_backend
from qrt_ray.config import load_policy_config
from qrt_ray.errors import DeviceUnavailableError, PlacementError
from qrt_ray.models import POLICY_NAMES, DeviceSnapshot, DeviceStatus
from qrt_ray.policies.costs import RunTimeModel, price_usd
from qrt_ray.policies.fidelity import (
    FidelityEstimator,
    esp_of_compiled,
    esp_upper_bound,
    estimate_fidelity,
    profile_circuit,
)
from qrt_ray.policies.placement import (
    Candidate,
    PlacementOptions,
    Weights,
    choose,
    composite_score,
    rank_round_robin,
    resolve_weights,
)
from qrt_ray.policies.placer import DeviceLoad, JobShape, Placer
from qrt_ray.policies.queueing import Waiting, jain_index, next_job
from tests.circuits import ghz

BACKENDS = {"manila": "FakeManilaV2", "nairobi": "FakeNairobiV2", "guadalupe": "FakeGuadalupeV2"}


@cache
def calibration(name: str):
    return snapshot_from_backend(name, load_backend(BACKENDS[name]), taken_at=0.0)


@cache
def backend(name: str):
    return load_backend(BACKENDS[name])


def snap(name: str, status: DeviceStatus = DeviceStatus.ONLINE, depth: int = 0) -> DeviceSnapshot:
    cal = calibration(name)
    price = {"manila": 0.00001, "nairobi": 0.000015, "guadalupe": 0.00003}[name]
    return DeviceSnapshot(
        name=name,
        status=status,
        num_qubits=cal.num_qubits,
        calibration=cal,
        queue_depth=depth,
        queued_shots=0,
        queue_limit=10,
        price_per_shot_usd=price,
        price_per_job_usd=price * 1000,
        simulator_method="test",
        gpu=False,
    )


def cand(device: str, fidelity: float, wait_s: float = 0.0, cost: float = 1.0, **kw) -> Candidate:
    return Candidate(device, 27, True, fidelity, cost, wait_s, 1.0, **kw)


def shape(circuit: QuantumCircuit, shots: int = 1000, key: str = "job-1") -> JobShape:
    return JobShape(
        key, (f"h-{circuit.name}-{circuit.num_qubits}",), (profile_circuit(circuit),), shots
    )


# == fidelity estimator ==============================================================


def test_profile_counts_pulses_pairs_and_unrolls_three_qubit_gates() -> None:
    qc = QuantumCircuit(3, 3)
    qc.h(0)
    qc.rz(0.3, 1)  # virtual: no pulse
    qc.cx(0, 1)
    qc.ccx(0, 1, 2)
    qc.measure([0, 1, 2], [0, 1, 2])
    p = profile_circuit(qc)
    assert p.active == (0, 1, 2) and p.measured == (True, True, True)
    assert p.pulses[0] >= 1 and p.pulses[1] >= 0
    pairs = {(i, j): c for i, j, c in p.pairs}
    assert pairs[(0, 1)] >= 1 and (0, 2) in pairs and (1, 2) in pairs  # ccx unrolled
    assert p.two_qubit_gates == 7  # one cx plus the six of a ccx


def test_estimate_is_a_probability_bounded_by_the_cheap_bound_and_layout_is_valid() -> None:
    for name in BACKENDS:
        cal = calibration(name)
        for n in (2, 3, 5):
            prof = profile_circuit(ghz(n))
            est = estimate_fidelity(prof, cal)
            assert 0 < est.esp <= esp_upper_bound(prof, cal) <= 1
            assert len(est.layout) == n and len(set(est.layout)) == n
            assert all(0 <= q < cal.num_qubits for q in est.layout)


@pytest.mark.parametrize("idle", [False, True], ids=["gates-only", "idle-decay"])
def test_the_cheap_bound_holds_for_every_workload_family_and_prunes(idle: bool) -> None:
    from qrt_ray.evaluation.simulator import circuit_pool

    pool = circuit_pool(12, 7, seed=3)
    slack = []
    for name in BACKENDS:
        cal = calibration(name)
        for _, prof in pool:
            if prof.num_qubits > cal.num_qubits:
                continue
            est = estimate_fidelity(prof, cal, idle_decoherence=idle)
            bound = esp_upper_bound(prof, cal, idle_decoherence=idle)
            assert est.esp <= bound + 1e-12, (name, prof)
            slack.append(bound - est.esp)
    assert len(slack) >= 20
    # distinct qubits and idle decay make the bound informative, not a vacuous 1
    assert max(slack) < 0.5 and sum(slack) / len(slack) < 0.25


def test_idle_decay_is_charged_only_when_asked() -> None:
    cal = calibration("guadalupe")
    prof = profile_circuit(ghz(8))  # a chain: early qubits wait for the later gates
    gates_only = estimate_fidelity(prof, cal)
    with_idle = estimate_fidelity(prof, cal, idle_decoherence=True)
    assert gates_only.breakdown["idle"] == 0.0
    assert with_idle.breakdown["idle"] > 0.0
    assert with_idle.esp < gates_only.esp
    ests = [FidelityEstimator(idle_decoherence=flag).estimate("h", prof, cal) for flag in (0, 1)]
    assert [e.breakdown["idle"] > 0 for e in ests] == [False, True]
    compiled = transpile(ghz(8), backend=load_backend("FakeGuadalupeV2"), seed_transpiler=1)
    assert esp_of_compiled(compiled, cal, idle_decoherence=True) < esp_of_compiled(compiled, cal)


def test_a_chain_embeds_without_swaps_where_the_coupling_map_has_a_path() -> None:
    est = estimate_fidelity(profile_circuit(ghz(5)), calibration("guadalupe"))
    assert est.swaps == 0
    edges = {tuple(sorted(e)) for e in calibration("guadalupe").coupling_map}
    chain = est.layout
    assert all(tuple(sorted((chain[i], chain[i + 1]))) in edges for i in range(4))


def test_estimate_tracks_the_esp_of_the_circuit_compiled_on_its_layout() -> None:
    cal = calibration("guadalupe")
    prof = profile_circuit(ghz(5))
    est = estimate_fidelity(prof, cal)
    compiled = transpile(
        ghz(5), backend("guadalupe"), initial_layout=list(est.layout), optimization_level=1
    )
    assert esp_of_compiled(compiled, cal) == pytest.approx(est.esp, rel=0.1)


def test_a_deeper_circuit_is_estimated_less_likely_to_succeed() -> None:
    cal = calibration("nairobi")
    assert (
        estimate_fidelity(profile_circuit(ghz(3)), cal).esp
        > estimate_fidelity(profile_circuit(ghz(6)), cal).esp
    )


def test_a_circuit_wider_than_the_device_is_refused() -> None:
    with pytest.raises(ValueError, match="has 6 qubits but manila has 5"):
        estimate_fidelity(profile_circuit(ghz(6)), calibration("manila"))


# == costs ============================================================================


def test_price_is_per_job_plus_per_shot_of_every_circuit() -> None:
    assert price_usd(0.5, 0.001, shots=100, circuits=3) == pytest.approx(0.8)


def test_run_time_model_learns_a_devices_speed_from_its_history() -> None:
    model = RunTimeModel(alpha=0.5, overhead_s=0.0, rep_delay_s=0.0)
    prior = model.predict("d", 1e-3, 1000, 1)
    assert prior == pytest.approx(1.0)
    for _ in range(20):
        model.observe("d", 1e-3, 1000, 1, seconds=3.0)
    assert model.predict("d", 1e-3, 1000, 1) == pytest.approx(3.0, rel=1e-6)
    assert model.predict("other", 1e-3, 1000, 1) == pytest.approx(1.0)
    assert model.correction("d").samples == 20


# == policies =========================================================================


def test_each_policy_ranks_by_what_it_promises() -> None:
    cands = [
        cand("a", 0.9, wait_s=10_000.0, cost=3.0),
        cand("b", 0.86, wait_s=0.0, cost=1.0),
        cand("c", 0.5, wait_s=5.0, cost=0.1),
    ]
    opts = PlacementOptions()
    w = Weights()
    assert choose("best_fidelity", cands, opts, weights=w).device == "a"
    assert choose("least_busy", cands, opts, weights=w).device == "b"
    # composite at the default weights: 10,000x the completion time and 3x the price of
    # "b" are worth about 5.9% of fidelity, more than a's 4.7% edge
    assert choose("composite", cands, opts, weights=w).device == "b"
    assert choose("composite", [cands[0], cand("b", 0.84)], opts, weights=w).device == "a"
    assert choose("composite", cands, opts, weights=Weights(0, 0, 1)).device == "c"
    assert [choose("round_robin", cands, opts, weights=w, turn=t).device for t in range(4)] == [
        "a",
        "b",
        "c",
        "a",
    ]
    picks = {choose("random", cands, opts, weights=w, seed=s).device for s in range(40)}
    assert picks == {"a", "b", "c"}
    assert (
        choose("random", cands, opts, weights=w, seed=3).device
        == choose("random", cands, opts, weights=w, seed=3).device
    )


def test_limits_filter_devices_and_explain_when_none_is_left() -> None:
    cands = [cand("a", 0.9, cost=3.0), cand("b", 0.6, cost=1.0)]
    w = Weights()
    assert choose("composite", cands, PlacementOptions(min_fidelity=0.8), weights=w).device == "a"
    assert choose("best_fidelity", cands, PlacementOptions(max_cost_usd=2), weights=w).device == "b"
    with pytest.raises(PlacementError, match=r"min_fidelity=0.95 but the best estimate is 0.900"):
        choose("composite", cands, PlacementOptions(min_fidelity=0.95), weights=w)
    with pytest.raises(PlacementError, match=r"cheapest device, 'b', would charge 1.0000"):
        choose("composite", cands, PlacementOptions(max_cost_usd=0.5), weights=w)


def test_busy_devices_make_the_job_wait_not_fail() -> None:
    busy = [dataclasses.replace(cand("a", 0.9), accepting=False, status="CALIBRATING")]
    with pytest.raises(DeviceUnavailableError, match="a=CALIBRATING"):
        choose("composite", busy, PlacementOptions(), weights=Weights())


def test_goals_pick_preset_weights_and_explicit_weights_win() -> None:
    default = Weights()
    assert resolve_weights(PlacementOptions(), default) == default
    assert resolve_weights(PlacementOptions(optimize="cost"), default).cost == 1.0
    mine = Weights(0.5, 0.5, 0.0)
    assert resolve_weights(PlacementOptions(optimize="cost", weights=mine), default) == mine
    with pytest.raises(ValueError, match="optimize='speed' is not a goal"):
        resolve_weights(PlacementOptions(optimize="speed"), default)
    with pytest.raises(ValueError, match="weights are all 0"):
        Weights(0, 0, 0)
    with pytest.raises(ValueError, match=r"weights\.time=-1"):
        Weights(1, -1, 0)


def test_composite_score_reads_as_exchange_rates() -> None:
    w = Weights(fidelity=1.0, time=0.02, cost=0.0)
    base = cand("a", 0.9, wait_s=9.0)  # completion 10 s
    halved = cand("b", 0.9 * math.exp(-0.02 * math.log(2)), wait_s=4.0)  # 5 s
    assert composite_score(base, w) == pytest.approx(composite_score(halved, w))


def test_the_delay_weight_charges_every_second_alike() -> None:
    """A relative time weight prices 1,000 s against 500 s as 2 s against 1 s; the
    delay charge prices each second the same, so a long queue loses to a worse but
    idle device where a short one would not."""
    w = Weights(fidelity=1.0, time=0.005, cost=0.0, delay=0.001)
    best, worse = 0.91, 0.88  # ln(0.91 / 0.88): about 0.034
    assert composite_score(cand("a", best, wait_s=9.0), w) > composite_score(cand("b", worse), w)
    assert composite_score(cand("a", best, wait_s=99.0), w) < composite_score(cand("b", worse), w)
    relative = Weights(fidelity=1.0, time=0.005, cost=0.0)
    assert composite_score(cand("a", best, wait_s=99.0), relative) > composite_score(
        cand("b", worse), relative
    )
    with pytest.raises(ValueError, match=r"weights\.delay=-0\.1"):
        Weights(1, 0, 0, -0.1)
    assert Weights(0, 0, 0, 1.0).as_dict()["delay"] == 1.0


def test_a_jobs_weights_may_give_the_delay_alone() -> None:
    from qrt_ray.models import PlacementWeights

    assert PlacementWeights(delay=0.01).delay == 0.01
    with pytest.raises(ValueError, match="give fidelity, time, cost or delay"):
        PlacementWeights()
    assert load_policy_config().weights.delay > 0  # the default charges delay


def test_round_robin_of_nothing_is_empty() -> None:
    assert rank_round_robin([], 3) == []


def test_a_placement_carries_the_chosen_devices_figures_as_fields() -> None:
    placer = Placer(load_policy_config())
    loads = [DeviceLoad(snap(n)) for n in BACKENDS]
    placement = placer.place(shape(ghz(4)), loads, PlacementOptions(policy="composite"))
    chosen = placement.explanation["chosen"]
    assert chosen["device"] == placement.device
    assert placement.run_s > 0 and placement.shot_duration_s > 0
    assert round(placement.run_s, 3) == chosen["run_s"]
    assert placement.shot_duration_s == chosen["shot_duration_s"]
    assert round(placement.fidelity, 6) == chosen["fidelity"]  # the exact estimate
    assert round(placement.cost_usd, 6) == chosen["cost_usd"]


# == the placer: branch and bound gives the full search's answer =======================


def test_placer_with_pruning_chooses_as_the_full_search_does() -> None:
    placer = Placer(load_policy_config())
    loads = [DeviceLoad(snap(n)) for n in BACKENDS]
    for n in (2, 3, 4, 5):
        job = shape(ghz(n))
        for policy in ("best_fidelity", "composite"):
            chosen = placer.place(job, loads, PlacementOptions(policy=policy)).device
            full = placer.candidates(
                job,
                loads,
                policy=policy,
                weights=placer.default_weights,
                options=PlacementOptions(),
                exhaustive=True,
            )
            if policy == "best_fidelity":
                assert chosen == max(full, key=lambda c: c.fidelity).device
            else:
                best = max(full, key=lambda c: composite_score(c, placer.default_weights))
                assert chosen == best.device


def test_placer_refuses_jobs_no_device_could_ever_run() -> None:
    placer = Placer(load_policy_config())
    loads = [DeviceLoad(snap("manila")), DeviceLoad(snap("nairobi"))]
    with pytest.raises(PlacementError, match="widest device, 'nairobi', has 7"):
        placer.place(shape(ghz(9)), loads, PlacementOptions())
    with pytest.raises(PlacementError, match="device='manila' has 5 qubits but the job needs 6"):
        placer.place(shape(ghz(6)), loads, PlacementOptions(device="manila"))


def test_estimate_lists_every_fitting_device_with_full_figures() -> None:
    placer = Placer(load_policy_config())
    loads = [DeviceLoad(snap(n), backlog_s=10.0 * i) for i, n in enumerate(BACKENDS)]
    cands = placer.estimate(shape(ghz(4)), loads, PlacementOptions())
    assert {c.device for c in cands} == set(BACKENDS)
    assert all(c.estimated and 0 < c.fidelity <= 1 and c.cost_usd > 0 for c in cands)
    assert {c.device: c.wait_s for c in cands}["guadalupe"] == 20.0


# == property tests ===================================================================

DEVICE_NAMES = st.lists(st.sampled_from(sorted(BACKENDS)), min_size=1, max_size=3, unique=True)
STATUSES = st.sampled_from(list(DeviceStatus))


@settings(max_examples=40, deadline=None)
@given(
    width=st.integers(2, 17),
    names=DEVICE_NAMES,
    statuses=st.lists(STATUSES, min_size=3, max_size=3),
    policy=st.sampled_from(POLICY_NAMES),
    backlog=st.lists(st.floats(0, 1e4), min_size=3, max_size=3),
)
def test_placement_never_picks_a_device_that_cannot_run_the_job(
    width: int, names: list[str], statuses: list[DeviceStatus], policy: str, backlog: list[float]
) -> None:
    placer = Placer(load_policy_config())
    loads = [DeviceLoad(snap(n, s), b) for n, s, b in zip(names, statuses, backlog, strict=False)]
    try:
        placement = placer.place(shape(ghz(width)), loads, PlacementOptions(policy=policy))
    except (PlacementError, DeviceUnavailableError):
        fits = [ld for ld in loads if ld.snapshot.num_qubits >= width]
        assert not any(ld.snapshot.accepting for ld in fits)
        return
    chosen = next(ld.snapshot for ld in loads if ld.snapshot.name == placement.device)
    assert chosen.num_qubits >= width
    assert chosen.accepting


WAITING = st.builds(
    Waiting,
    job_id=st.uuids().map(str),
    tenant=st.sampled_from(["t0", "t1", "t2"]),
    priority=st.integers(0, 10),
    enqueued_at=st.floats(0, 100),
)


@settings(max_examples=200, deadline=None)
@given(queue=st.lists(WAITING, min_size=1, max_size=20))
def test_without_waiting_the_highest_priority_goes_first(queue: list[Waiting]) -> None:
    # Aging at one level per 10^9 s: only priority classes (and fair share within one) count.
    i = next_job(queue, 100.0, aging_s_per_level=1e9, usage={}, shares={})
    assert queue[i].priority == max(w.priority for w in queue)


@settings(max_examples=100, deadline=None)
@given(
    low_priority=st.integers(0, 9),
    arrivals=st.lists(st.integers(0, 10), min_size=1, max_size=50),
    aging=st.floats(1, 120),
)
def test_aging_means_no_job_starves(low_priority: int, arrivals: list[int], aging: float) -> None:
    """A low-priority job is served within a bounded time while higher-priority jobs keep
    arriving faster than they are served."""
    old = Waiting("old", "t0", low_priority, 0.0, 0)
    queue = [old]
    now = 0.0
    # Only jobs that arrived within (10 - p) aging periods of it can ever outrank it, and
    # two arrive per step while one is served: it is served within twice that span.
    bound = 2 * (10 - low_priority + 1) * aging
    for k in range(int(bound) + 10):
        priority = arrivals[k % len(arrivals)]
        now += 1.0
        queue.append(Waiting(f"j{k}", "t1", priority, now, k + 1))
        queue.append(Waiting(f"j{k}b", "t1", priority, now, k + 1))
        served = queue.pop(next_job(queue, now, aging_s_per_level=aging, usage={}, shares={}))
        if served.job_id == "old":
            assert now <= bound + 2.0
            return
    pytest.fail(f"the priority-{low_priority} job starved past {now} s (bound {bound} s)")


@settings(max_examples=100, deadline=None)
@given(heavy=st.integers(5, 40), light=st.integers(1, 5), share_heavy=st.floats(0.5, 4.0))
def test_fair_share_serves_tenants_in_proportion_to_their_shares(
    heavy: int, light: int, share_heavy: float
) -> None:
    """Two backlogged tenants of equal priority: device time divides by their shares."""
    queue = [Waiting(f"h{i}", "heavy", 5, float(i), i) for i in range(heavy * 10)]
    queue += [Waiting(f"l{i}", "light", 5, 1000.0 + i, 10_000 + i) for i in range(light * 10)]
    usage = {"heavy": 0.0, "light": 0.0}
    shares = {"heavy": share_heavy, "light": 1.0}
    served = {"heavy": 0, "light": 0}
    for _ in range(min(heavy, light) * 10):
        job = queue.pop(next_job(queue, 0.0, aging_s_per_level=1e9, usage=usage, shares=shares))
        usage[job.tenant] += 1.0
        served[job.tenant] += 1
        # both stay backlogged, so service per share stays level, within one job
        gap = served["heavy"] / share_heavy - served["light"]
        assert abs(gap) <= max(1.0, 1.0 / share_heavy) + 1e-9, served


def test_jain_index_is_one_when_even_and_one_over_n_when_one_takes_all() -> None:
    assert jain_index([2.0, 2.0, 2.0]) == pytest.approx(1.0)
    assert jain_index([1.0, 0.0, 0.0, 0.0]) == pytest.approx(0.25)


# == deadlines =======================================================================


def test_a_deadline_keeps_a_job_off_devices_expected_late() -> None:
    best_but_slow = cand("slow", 0.95, wait_s=100.0)  # completes in 101 s
    fast = cand("fast", 0.80, wait_s=5.0)  # completes in 6 s
    weights = Weights(fidelity=1.0, time=0.0, cost=0.0)
    free = choose("composite", [best_but_slow, fast], PlacementOptions(), weights=weights)
    assert free.device == "slow" and not free.explanation["late"]
    timed = choose(
        "composite", [best_but_slow, fast], PlacementOptions(deadline_s=50.0), weights=weights
    )
    assert timed.device == "fast" and not timed.explanation["late"]
    slow_row = next(d for d in timed.explanation["devices"] if d["device"] == "slow")
    assert slow_row["excluded"] == "expected to finish after the deadline (50.0 s left)"
    assert timed.explanation["limits"]["deadline_s"] == 50.0


def test_when_every_device_is_late_the_earliest_finish_wins_and_says_so() -> None:
    cands = [cand("slow", 0.95, wait_s=100.0), cand("fast", 0.80, wait_s=5.0)]
    weights = Weights(fidelity=1.0, time=0.0, cost=0.0)
    placed = choose("best_fidelity", cands, PlacementOptions(deadline_s=2.0), weights=weights)
    assert placed.device == "fast" and placed.explanation["late"] is True
    assert [name for name, _ in placed.ranking] == ["fast", "slow"]
