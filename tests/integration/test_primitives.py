"""Sampler and Estimator V2 contracts, sessions, batches and the backend facade, on a
real local farm (shared Ray). Modelled on Qiskit's own primitive tests: shapes of bit
arrays, broadcasting of parameter sweeps and observables, precision to shots, metadata.
"""

from __future__ import annotations

import math
import time
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest
from qiskit import ClassicalRegister, QuantumCircuit, QuantumRegister, transpile
from qiskit.circuit import Parameter
from qiskit.primitives import BitArray
from qiskit.providers import JobStatus
from qiskit.quantum_info import SparsePauliOp, Statevector

from qrt_ray import QuantumRuntime, ValidationError
from qrt_ray.config import FarmConfig
from qrt_ray.errors import JobCancelledError, MitigationError
from qrt_ray.primitives import Batch, Estimator, Sampler, Session, SessionClosedError
from tests.waiting import wait_until

pytestmark = pytest.mark.integration


@pytest.fixture(scope="module")
def rt(ray_head: object, small_farm: FarmConfig, store_path: Path) -> Iterator[QuantumRuntime]:
    runtime = QuantumRuntime.local(small_farm, store=store_path)
    yield runtime
    runtime.shutdown()


def _ghz(n: int, measure: bool = False) -> QuantumCircuit:
    qc = QuantumCircuit(n)
    qc.h(0)
    for i in range(n - 1):
        qc.cx(i, i + 1)
    if measure:
        qc.measure_all()
    return qc


def _ry_sweep() -> tuple[QuantumCircuit, Parameter]:
    theta = Parameter("theta")
    qc = QuantumCircuit(2)
    qc.ry(theta, 0)
    qc.cx(0, 1)
    return qc, theta


# -- Sampler ----------------------------------------------------------------------------


def test_sampler_bit_arrays_follow_the_pub_shape(rt: QuantumRuntime) -> None:
    qc, _ = _ry_sweep()
    qc.measure_all()
    values = np.linspace(0, np.pi, 6).reshape(2, 3, 1)
    sampler = Sampler(mode=rt, options={"seed_simulator": 5})
    job = sampler.run([(qc, values), _ghz(3, measure=True)], shots=300)
    assert job.job_id().startswith("prim-")
    result = job.result(timeout=300)
    assert job.status() is JobStatus.DONE and job.done()
    first, second = result[0], result[1]
    assert isinstance(first.data.meas, BitArray)
    assert first.data.meas.shape == (2, 3) and first.data.shape == (2, 3)
    assert first.data.meas.num_shots == 300 and first.data.meas.num_bits == 2
    assert second.data.meas.shape == () and second.data.meas.num_bits == 3
    # theta = 0 gives 00, theta = pi gives 11 (up to noise)
    assert first.data.meas[0, 0].get_counts().get("00", 0) > 250
    assert first.data.meas[1, 2].get_counts().get("11", 0) > 250
    assert sum(second.data.meas.get_counts().values()) == 300
    # exactly Qiskit's keys in metadata; the farm's own beside them in .qrt
    assert result.metadata == {"version": 2}
    assert result.qrt == {"primitive_job_id": job.job_id(), "mode": "runtime"}
    assert first.metadata == {"shots": 300, "circuit_metadata": qc.metadata}
    assert first.qrt["device"] in {"manila", "nairobi"}
    assert first.qrt["farm_job_id"] in job.farm_job_ids


def test_pubs_on_one_device_share_a_farm_job_and_a_pub_shares_its_qubits(
    rt: QuantumRuntime,
) -> None:
    qc, _ = _ry_sweep()
    qc.measure_all()
    sweep = (qc, np.linspace(0, np.pi, 4))
    job = Sampler(mode=rt.backend("nairobi")).run(
        [_ghz(3, measure=True), sweep, _ghz(2, measure=True)], shots=100
    )
    result = job.result(timeout=300)
    assert len(job.farm_job_ids) == 1  # one shots value, one device: one farm job
    spans = [r.qrt["farm_circuits"] for r in result]
    assert spans == [[0, 1], [1, 5], [5, 6]]
    assert {r.qrt["farm_job_id"] for r in result} == set(job.farm_job_ids)
    (farm,) = rt.results([rt.job(job.farm_job_ids[0])])
    assert farm.metadata.shots_requested == 100 and len(farm.circuits) == 6
    # the sweep's four bound circuits ran on the same physical qubits
    layouts = {tuple(c.layout) for c in farm.metadata.compile[1:5]}
    assert len(layouts) == 1
    assert result[1].data.meas.shape == (4,)
    assert result[1].data.meas[0].get_counts().get("00", 0) > 80  # theta = 0


def test_sampler_registers_and_shot_precedence(rt: QuantumRuntime) -> None:
    a, b = QuantumRegister(2, "q"), ClassicalRegister(1, "alpha")
    c = ClassicalRegister(2, "beta")
    qc = QuantumCircuit(a, b, c)
    qc.x(0)
    qc.measure(0, b[0])
    qc.measure([0, 1], c)
    sampler = Sampler(mode=rt, options={"default_shots": 111})
    result = sampler.run([(qc, None, 70), qc], shots=90).result(timeout=300)
    assert result[0].data.alpha.num_shots == 70  # the PUB's own shots win
    assert result[1].data.beta.num_shots == 90  # then run()'s
    assert result[1].data.alpha.get_counts().get("1", 0) > 80
    assert result[1].data.beta.get_counts().get("01", 0) > 70


def test_sampler_seeded_runs_reproduce(rt: QuantumRuntime) -> None:
    sampler = Sampler(mode=rt.backend("manila"), options={"seed_simulator": 9})
    one = sampler.run([_ghz(3, measure=True)], shots=200).result(timeout=300)
    two = sampler.run([_ghz(3, measure=True)], shots=200).result(timeout=300)
    assert np.array_equal(one[0].data.meas.array, two[0].data.meas.array)


def test_runtime_settings_reach_the_farm_jobs(rt: QuantumRuntime) -> None:
    sampler = Sampler(mode=rt.backend("manila"))
    sampler.options.simulator.seed_simulator = 42
    sampler.options.environment.job_tags = ["exp-1"]
    job = sampler.run([_ghz(3, measure=True)], shots=200)
    job.result(timeout=300)
    (farm_job,) = job.farm_job_ids
    info = rt.job(farm_job).info()
    assert "exp-1" in info["tags"]
    assert rt.job(farm_job).result(timeout_s=60).metadata.seeds == (42,)


def test_sampler_readout_mitigation_gives_quasi_distributions(rt: QuantumRuntime) -> None:
    sampler = Sampler(mode=rt, options={"resilience": {"measure_mitigation": True}})
    result = sampler.run([_ghz(3, measure=True)], shots=2000).result(timeout=300)
    meta = result[0].qrt
    quasi = meta["quasi_dists"][0]
    raw = result[0].data.meas.get_counts()
    assert sum(quasi.values()) == pytest.approx(1.0, abs=1e-6)
    assert quasi["000"] + quasi["111"] > (raw.get("000", 0) + raw.get("111", 0)) / 2000
    nearest = meta["nearest_probability"][0]
    assert all(v >= 0 for v in nearest.values()) and sum(nearest.values()) == pytest.approx(1)
    assert meta["mitigation"]["readout"]["calibration_id"] == meta["calibration_id"]
    assert meta["mitigation"]["readout"]["version"] == rt.mitigation_versions()["readout"]


def test_sampler_refuses_bad_pubs_with_the_index(rt: QuantumRuntime) -> None:
    sampler = Sampler(mode=rt)
    a, b = Parameter("a"), Parameter("b")
    qc = QuantumCircuit(1)
    qc.ry(a, 0)
    qc.rz(b, 0)
    qc.measure_all()
    with pytest.raises(ValidationError, match=r"pubs\[0\]: Length"):
        sampler.run([(qc, [[1.0, 2.0, 3.0]])])  # three values for two parameters
    with pytest.raises(ValidationError, match="shots=0"):
        sampler.run([_ghz(2, measure=True)], shots=0)
    with pytest.raises(ValidationError, match="mode: pass a QuantumRuntime"):
        Sampler(mode="manila")


# -- Estimator --------------------------------------------------------------------------


def test_estimator_broadcasts_observables_against_parameters(rt: QuantumRuntime) -> None:
    qc, _ = _ry_sweep()
    thetas = np.array([0.3, 1.2]).reshape(1, 2, 1)
    observables = [[SparsePauliOp("ZZ")], [SparsePauliOp("XX")], [SparsePauliOp(["ZI", "IZ"])]]
    est = Estimator(mode=rt, options={"resilience_level": 1, "seed_estimator": 3})
    job = est.run([(qc, observables, thetas)], precision=0.02)
    result = job.result(timeout=300)
    data = result[0].data
    assert data.evs.shape == (3, 2) and data.stds.shape == (3, 2)
    for i, obs in enumerate(observables):
        for j, theta in enumerate(thetas.ravel()):
            exact = Statevector(qc.assign_parameters([theta])).expectation_value(obs[0]).real
            # readout mitigated; a few cx errors remain: within 4 sigma plus a small bias
            assert abs(data.evs[i, j] - exact) < 4 * data.stds[i, j] + 0.06, (i, j)
    # exactly the keys Qiskit's backend estimator gives; the farm's own are in .qrt
    assert result[0].metadata == {
        "target_precision": 0.02,
        "shots": math.ceil(1 / 0.02**2),
        "circuit_metadata": qc.metadata,
    }
    assert result[0].qrt["device"] and result[0].qrt["farm_job_id"] in job.farm_job_ids
    assert 0.005 < float(np.mean(data.stds)) < 0.05


def test_estimator_levels_say_what_they_applied_and_cost(rt: QuantumRuntime) -> None:
    qc = _ghz(3)
    obs = SparsePauliOp("ZZZ")
    metas, evs, shots = {}, {}, {}
    for level in (0, 1, 2):
        options = {"resilience_level": level, "seed_estimator": 7}
        est = Estimator(mode=rt.backend("nairobi"), options=options)
        result = est.run([(qc, [SparsePauliOp("ZZI"), obs])]).result(timeout=300)
        metas[level], evs[level] = result[0].qrt, result[0].data.evs
        shots[level] = result[0].metadata["shots"]
    assert metas[0]["mitigation"]["readout"] is None and metas[0]["cost"]["extra_shots"] == 0
    m1 = metas[1]["mitigation"]
    assert m1["measure_mitigation"] and m1["measure_twirling"] and not m1["gate_twirling"]
    assert m1["readout"]["qubits"] and m1["zne"] is None
    m2 = metas[2]["mitigation"]
    assert m2["gate_twirling"] and m2["zne"]["noise_factors"] == [1.0, 3.0, 5.0]
    assert metas[2]["circuits"] == 3 * metas[0]["circuits"]
    assert metas[2]["cost"]["extra_shots"] >= 2 * shots[0] * metas[0]["circuits"]
    assert "evs_noise_factors" in result[0].data
    # a known answer whose raw value is biased: <ZZ> of a 3-qubit GHZ is 1, and noise
    # pulls the raw estimate below it; each level removes more of that bias (seeded)
    raw_bias = 1 - evs[0][0]
    assert raw_bias > 0.03, evs[0]
    assert abs(1 - evs[1][0]) < 0.4 * raw_bias, (evs[0][0], evs[1][0])
    assert abs(1 - evs[2][0]) < 0.4 * raw_bias, (evs[0][0], evs[2][0])
    # each mitigated level keeps the raw values it corrected; the raw <ZZ> is the
    # biased one, as level 0 measured it (the same shots, less mitigation)
    assert "raw_evs" not in metas[0]["mitigation"]
    for level in (1, 2):
        raw = metas[level]["mitigation"]["raw_evs"]
        assert len(raw) == 2 and raw[0] < evs[level][0]


def test_sampler_returns_zeros_for_a_circuit_that_measures_nothing(rt: QuantumRuntime) -> None:
    # as Qiskit's samplers: a warning and bits that stay 0, not a refusal; the PUBs
    # that do measure still run on the farm
    sampler = Sampler(mode=rt, options={"seed_simulator": 3})
    quiet = QuantumCircuit(2, 2)
    quiet.h(0)
    theta = Parameter("t")
    silent = QuantumCircuit(1, 1)
    silent.ry(theta, 0)
    with pytest.warns(UserWarning, match=r"pubs\[1\]: the circuit measures nothing"):
        job = sampler.run([_ghz(2, measure=True), quiet, (silent, [[0.1], [0.2], [0.3]])])
    result = job.result(timeout=300)
    assert result[0].data.meas.num_shots == 4096 and result[0].qrt["farm_job_id"]
    zeros = result[1].data.c
    assert zeros.num_shots == 4096 and zeros.num_bits == 2
    assert zeros.get_counts() == {"00": 4096}
    assert result[1].qrt["farm_job_id"] is None
    assert result[2].data.c.shape == (3,) and result[2].data.c.get_counts() == {"0": 3 * 4096}
    assert "measures nothing" in result[1].qrt["warnings"][0]


def test_sampler_keeps_a_register_of_no_bits(rt: QuantumRuntime) -> None:
    qc = QuantumCircuit(QuantumRegister(2, "q"), ClassicalRegister(2, "c"))
    qc.add_register(ClassicalRegister(0, "empty"))
    qc.h(0)
    qc.cx(0, 1)
    qc.measure([0, 1], [0, 1])
    result = Sampler(mode=rt).run([qc], shots=300).result(timeout=300)
    data = result[0].data
    assert data.empty.num_bits == 0 and data.empty.num_shots == 300
    assert data.empty.array.shape == (300, 0)
    assert set(data.c.get_counts()) <= {"00", "01", "10", "11"} and data.c.num_shots == 300


def test_primitives_made_inside_a_session_run_in_it(rt: QuantumRuntime) -> None:
    # as IBM Runtime: no mode inside `with Session(...)` means that session
    with pytest.raises(ValidationError, match="mode: pass a QuantumRuntime"):
        Sampler()
    with Session(rt.backend("manila")) as session:
        sampler, est = Sampler(), Estimator()
        assert sampler.mode is session and est.mode is session
        assert sampler.backend().name == "manila"
        with Batch(rt) as batch:  # the innermost block wins, and gives its place back
            assert Sampler().mode is batch and Sampler().backend() is None
        assert Sampler().mode is session
        result = sampler.run([_ghz(2, measure=True)], shots=100).result(timeout=300)
        assert result[0].qrt["device"] == "manila"
    with pytest.raises(ValidationError, match="mode: pass a QuantumRuntime"):
        Sampler()  # the block is closed
    assert Sampler(mode=rt).backend() is None
    assert Sampler(mode=rt.backend("nairobi")).backend().name == "nairobi"


def test_estimator_drops_final_measurements(rt: QuantumRuntime) -> None:
    # a circuit written for the sampler is estimated as it is, like Qiskit's backend
    # estimator: its final measurements are dropped, the observable measured instead
    est = Estimator(mode=rt.backend("manila"), options={"resilience_level": 0})
    result = est.run([(_ghz(2, measure=True), ["ZZ", "XX"])], precision=0.05).result(timeout=300)
    zz, xx = result[0].data.evs
    assert zz > 0.7 and xx > 0.7  # a Bell pair: both near 1 on a noisy device


def test_options_given_are_copied(rt: QuantumRuntime) -> None:
    from qrt_ray.primitives import SamplerOptions

    options = SamplerOptions(default_shots=123)
    sampler = Sampler(mode=rt, options=options)
    options.default_shots = 999  # the caller's object, changed later
    assert sampler.options.default_shots == 123 and sampler.options is not options


def test_sampler_refuses_zne_it_cannot_apply(rt: QuantumRuntime) -> None:
    sampler = Sampler(mode=rt, options={"resilience": {"zne_mitigation": True}})
    with pytest.raises(ValidationError, match="zne_mitigation=True: the Sampler returns bits"):
        sampler.run([_ghz(2, measure=True)])


def test_estimator_refuses_bad_pubs(rt: QuantumRuntime) -> None:
    est = Estimator(mode=rt)
    with pytest.raises(ValidationError, match=r"pubs\[0\]"):
        est.run([(_ghz(2), "ZZZ")])
    with pytest.raises(ValidationError, match="precision=0"):
        est.run([(_ghz(2), "ZZ")], precision=0)
    # a PUB's own precision too: a clear error, not a division by zero
    with pytest.raises(ValidationError, match=r"pubs\[1\]\.precision=0\.0: The precision value"):
        est.run([(_ghz(2), "ZZ"), (_ghz(2), "ZZ", None, 0.0)])
    with pytest.raises(ValidationError, match="resilience_level"):
        est.options.resilience_level = 3


def test_a_failing_mitigation_fails_the_job_with_the_reason(rt: QuantumRuntime) -> None:
    # 48 CNOTs that cancel in pairs (barriers keep the compiler from removing them)
    # leave |0000>, so ideally <ZZZZ> = 1. On manila, readout-mitigated and twirled,
    # folds 1, 3 and 5 gave 0.69, 0.33 and 0.17 (+- 0.02). Shifted by -0.5 the values
    # change sign far from 0, so no exponential decay fits, and the job must fail
    # rather than return unmitigated values. (A 4-qubit GHZ's <XXXX> - 0.85 decayed
    # too little: where placement's layout needs a SWAP, which folding does not
    # amplify, its last points sat within two standard errors of 0, and the fit
    # succeeded on the rest.)
    identity = QuantumCircuit(4)
    for _ in range(8):
        for a, b in ((0, 1), (1, 2), (2, 3)):
            identity.cx(a, b)
            identity.barrier()
            identity.cx(a, b)
            identity.barrier()
    est = Estimator(
        mode=rt.backend("manila"),
        options={"resilience_level": 2, "resilience": {"zne": {"extrapolator": "exponential"}}},
    )
    job = est.run([(identity, SparsePauliOp(["ZZZZ", "IIII"], [1.0, -0.5]))])
    with pytest.raises(MitigationError, match="zero-noise extrapolation failed: exponential"):
        job.result(timeout=300)
    assert job.status() is JobStatus.ERROR


# -- modes ------------------------------------------------------------------------------


def test_a_session_keeps_its_device_and_closes(rt: QuantumRuntime) -> None:
    qc, _ = _ry_sweep()
    with Session(rt, idle_timeout=600) as session:
        est = Estimator(mode=session, options={"resilience_level": 0, "default_precision": 0.05})
        devices = set()
        for value in (0.1, 0.5, 0.9):
            result = est.run([(qc, "ZZ", [value])]).result(timeout=300)
            devices.add(result[0].qrt["device"])
        assert devices == {session.device}
        assert session.details()["calibrations"]
    with pytest.raises(SessionClosedError, match="closed"):
        est.run([(qc, "ZZ", [0.2])])
    idle = Session(rt.backend("manila"), idle_timeout=0.2)
    time.sleep(0.4)
    with pytest.raises(SessionClosedError, match="idle"):
        Sampler(mode=idle).run([_ghz(2, measure=True)])


def test_a_batch_runs_many_pubs_in_parallel_jobs(rt: QuantumRuntime) -> None:
    circuits = [_ghz(n, measure=True) for n in (2, 3, 4, 2, 3, 4)]
    with Batch(rt) as batch:
        job = Sampler(mode=batch).run(circuits, shots=200)
    # runs admitted before the batch closed still finish
    result = job.result(timeout=300)
    assert len(result) == 6 and len(job.farm_job_ids) == 6
    assert all(r.data.meas.num_shots == 200 for r in result)
    infos = [rt.job(j).info() for j in job.farm_job_ids]
    assert all(batch.session_id in info["tags"] for info in infos)


def test_cancel_reaches_the_farm_jobs(rt: QuantumRuntime) -> None:
    job = Sampler(mode=rt).run([_ghz(4, measure=True)] * 3, shots=200_000)
    wait_until(lambda: job.farm_job_ids, what="the Sampler's farm jobs")
    assert job.cancel()
    with pytest.raises(JobCancelledError):
        job.result(timeout=120)
    assert job.status() is JobStatus.CANCELLED


def test_backend_facade_transpiles_and_runs(rt: QuantumRuntime) -> None:
    backend = rt.backend("nairobi")
    assert backend.num_qubits == 7 and backend.target.num_qubits == 7
    isa = transpile(_ghz(3, measure=True), backend, seed_transpiler=1)
    assert set(isa.count_ops()) <= set(backend.operation_names) | {"measure", "barrier"}
    job = backend.run(isa, shots=500)
    counts = job.result(timeout=300).get_counts()
    assert sum(counts.values()) == 500
    assert job.status() is JobStatus.DONE
    assert rt.job(job.job_id()).info()["device"] == "nairobi"
    with pytest.raises(ValidationError, match="unknown options"):
        backend.run(isa, shots=10, memory=True)
    with pytest.raises(ValidationError, match="not a device"):
        rt.backend("nowhere")


def test_a_large_sweep_is_bound_in_ray_tasks(rt: QuantumRuntime) -> None:
    # 600 parameter sets: more than one construct chunk, so binding fans out
    qc, _ = _ry_sweep()
    qc.measure_all()
    thetas = np.linspace(0, np.pi, 600).reshape(600, 1)
    result = Sampler(mode=rt, options={"seed_simulator": 1}).run([(qc, thetas)], shots=20)
    data = result.result(timeout=300)[0].data.meas
    assert data.shape == (600,) and data.num_shots == 20
    # the sweep order survives the chunking: |00> at the start, |11> at the end
    assert data[0].get_counts().get("00", 0) >= 16
    assert data[599].get_counts().get("11", 0) >= 16


def test_identity_observables_need_no_circuit(rt: QuantumRuntime) -> None:
    est = Estimator(mode=rt)
    result = est.run([(_ghz(2), [SparsePauliOp("II", 2.5), SparsePauliOp("II")])]).result(60)
    assert result[0].data.evs.tolist() == [2.5, 1.0]
    assert result[0].data.stds.tolist() == [0.0, 0.0]
    assert result[0].qrt["circuits"] == 0
