"""The V2 primitives contract as Qiskit's backend primitives and IBM Runtime's client
define it, checked on a real farm: result types and metadata keys, shots and precision
rules, registers, options as dataclasses and their copy rules, implicit sessions, the
job API, and dynamic circuits. Written for this project from those contracts; where
qrt-ray deliberately differs, docs/migrating.md says so and a test here pins it.
"""

from __future__ import annotations

import dataclasses
import math

import pytest
from qiskit import ClassicalRegister, QuantumCircuit, QuantumRegister
from qiskit.circuit import Parameter
from qiskit.primitives import BitArray, DataBin, PrimitiveResult, PubResult, SamplerPubResult
from qiskit.providers import JobStatus
from qiskit.quantum_info import SparsePauliOp

from qrt_ray import QuantumRuntime
from qrt_ray.primitives import Estimator, EstimatorOptions, Sampler, SamplerOptions, Session

pytestmark = pytest.mark.integration


def _bell() -> QuantumCircuit:
    qc = QuantumCircuit(2, name="bell")
    qc.h(0)
    qc.cx(0, 1)
    qc.measure_all()
    return qc


# -- Sampler: Qiskit's BackendSamplerV2 contract ---------------------------------------


def test_sampler_result_types_and_exact_metadata(rt: QuantumRuntime) -> None:
    qc = _bell()
    qc.metadata = {"experiment": 7}
    sampler = Sampler(mode=rt.backend("nairobi"), options={"seed_simulator": 11})
    result = sampler.run([qc, (qc, None, 30)], shots=20).result(timeout=300)
    assert isinstance(result, PrimitiveResult) and len(result) == 2
    assert isinstance(result[0], SamplerPubResult) and isinstance(result[0].data, DataBin)
    assert isinstance(result[0].data.meas, BitArray)
    assert result.metadata == {"version": 2}
    # run(shots=) is the default; a PUB's own shots win
    assert result[0].metadata == {"shots": 20, "circuit_metadata": {"experiment": 7}}
    assert result[1].metadata == {"shots": 30, "circuit_metadata": {"experiment": 7}}
    assert result[1].data.meas.num_shots == 30
    counts = result[0].data.meas.get_counts()
    assert counts.get("00", 0) + counts.get("11", 0) >= 16  # a Bell pair, some noise


def test_sampler_registers_empty_and_several(rt: QuantumRuntime) -> None:
    q = QuantumRegister(3)
    alpha, empty, beta = (
        ClassicalRegister(2, "alpha"),
        ClassicalRegister(0, "e"),
        ClassicalRegister(1, "beta"),
    )
    qc = QuantumCircuit(q, alpha, empty, beta)
    qc.x(0)
    qc.measure([0, 1], alpha)
    qc.x(2)
    qc.measure(2, beta)
    data = Sampler(mode=rt).run([qc], shots=100).result(timeout=300)[0].data
    assert data.alpha.num_bits == 2 and data.beta.num_bits == 1 and data.e.num_bits == 0
    assert data.e.array.shape == (100, 0)
    assert data.alpha.get_counts().get("01", 0) > 80 and data.beta.get_counts().get("1", 0) > 80


def test_sampler_bad_pubs_are_value_errors_naming_the_pub(rt: QuantumRuntime) -> None:
    qc = QuantumCircuit(1)
    qc.rx(Parameter("a"), 0)
    qc.ry(Parameter("b"), 0)
    qc.measure_all()
    sampler = Sampler(mode=rt)
    with pytest.raises(ValueError, match=r"pubs\[0\]"):
        sampler.run([(qc, [[1.0, 2.0, 3.0]])])  # three values for two parameters
    with pytest.raises(ValueError, match=r"pubs\[0\]"):
        sampler.run([(qc, [0.1, 0.2], -1)])  # negative shots
    with pytest.raises(ValueError, match="meas_level=1"):
        Sampler(mode=rt, options={"run_options": {"meas_level": 1}})


# -- Estimator: Qiskit's BackendEstimatorV2 contract -----------------------------------


def test_estimator_exact_metadata_grouping_and_measured_circuits(rt: QuantumRuntime) -> None:
    qc = QuantumCircuit(2)
    qc.h(0)
    qc.cx(0, 1)
    qc.metadata = {"name": "bell"}
    observables = SparsePauliOp.from_list([("ZZ", 1.0), ("XX", 1.0), ("ZI", 0.5)])
    values = {}
    for grouping in (True, False):
        options = {"seed_simulator": 5, "abelian_grouping": grouping, "resilience_level": 0}
        est = Estimator(mode=rt.backend("nairobi"), options=options)
        result = est.run([(qc, observables)], precision=0.03).result(timeout=300)
        assert result.metadata == {"version": 2}
        assert result[0].metadata == {
            "target_precision": 0.03,
            "shots": math.ceil(1 / 0.03**2),
            "circuit_metadata": {"name": "bell"},
        }
        # one basis per qubit-wise commuting group, or one per term
        assert result[0].qrt["circuits"] == (2 if grouping else 3)
        values[grouping] = float(result[0].data.evs)
    assert abs(values[True] - 2.0) < 0.25 and abs(values[False] - 2.0) < 0.25
    measured = qc.copy()
    measured.measure_all()  # a sampler's circuit: final measurements are dropped
    ev = Estimator(mode=rt).run([(measured, "ZZ")], precision=0.05).result(timeout=300)
    assert isinstance(ev[0], PubResult) and ev[0].data.evs > 0.7


def test_estimator_precision_zero_is_a_value_error(rt: QuantumRuntime) -> None:
    qc = QuantumCircuit(1)
    with pytest.raises(ValueError, match=r"pubs\[0\]\.precision=0"):
        Estimator(mode=rt).run([(qc, "Z", None, 0.0)])


# -- IBM Runtime client contract --------------------------------------------------------


def test_options_are_copied_dataclasses(rt: QuantumRuntime) -> None:
    opts = EstimatorOptions(resilience_level=0, default_precision=0.05)
    est = Estimator(mode=rt, options=opts)
    opts.resilience_level = 2  # the caller's object changes later: the primitive does not
    assert est.options.resilience_level == 0 and est.options is not opts
    tree = dataclasses.asdict(est.options)
    assert tree["resilience_level"] == 0 and "zne" in tree["resilience"]
    assert dataclasses.asdict(Sampler(mode=rt, options=SamplerOptions()).options)


def test_session_is_picked_up_and_the_job_api(rt: QuantumRuntime) -> None:
    with Session(rt.backend("manila")) as session:
        sampler = Sampler()  # no mode: the open session
        assert sampler.mode is session and sampler.backend().name == "manila"
        job = sampler.run([_bell()], shots=50)
        assert job.job_id().startswith("prim-")
        assert job.status() in {JobStatus.INITIALIZING, JobStatus.QUEUED, JobStatus.RUNNING}
        result = job.result(timeout=300)
        assert job.status() is JobStatus.DONE and job.done() and not job.running()
        assert not job.cancel()  # already final
        assert result[0].qrt["device"] == "manila"
    zne = Sampler(mode=rt)
    zne.options.resilience.zne_mitigation = True
    with pytest.raises(ValueError, match="zne_mitigation=True"):
        zne.run([_bell()])


# -- dynamic circuits --------------------------------------------------------------------


def test_dynamic_circuits_run_on_the_farm(rt: QuantumRuntime) -> None:
    qc = QuantumCircuit(3, 3)
    qc.x(0)
    qc.measure(0, 0)  # mid-circuit: reads 1
    with qc.if_test((qc.clbits[0], 1)) as else_:
        qc.x(1)  # taken
    with else_:
        qc.h(1)
    qc.reset(0)  # back to 0
    with qc.for_loop(range(2)):
        qc.x(2)  # twice: 0
    with qc.while_loop((qc.clbits[2], 0)):  # until qubit 2 reads 1
        qc.x(2)
        qc.measure(2, 2)
    with qc.switch(qc.clbits[0]) as case:
        with case(1):
            pass
        with case(case.DEFAULT):
            qc.x(1)
    qc.measure([0, 1], [0, 1])
    result = Sampler(mode=rt.backend("nairobi")).run([qc], shots=400).result(timeout=300)
    counts = result[0].data.c.get_counts()
    # c2 c1 c0 = 1 1 0: the branch, the reset, the loop that ends when it reads 1
    assert counts.get("110", 0) > 300, counts


def test_mitigations_that_assume_final_measurements_refuse_dynamic_circuits(
    rt: QuantumRuntime,
) -> None:
    qc = QuantumCircuit(1, 2)
    qc.measure(0, 0)
    with qc.if_test((qc.clbits[0], 0)):
        qc.x(0)
    qc.measure(0, 1)
    sampler = Sampler(mode=rt)
    sampler.options.twirling.enable_measure = True
    with pytest.raises(ValueError, match=r"pubs\[0\]: twirling.enable_measure cannot apply.*"):
        sampler.run([qc])
    estimator = Estimator(mode=rt)
    estimator.options.twirling.enable_gates = True
    with pytest.raises(ValueError, match="cannot apply to a dynamic circuit"):
        estimator.run([(qc, "Z")])


def test_the_estimator_measures_observables_after_a_dynamic_circuit(rt: QuantumRuntime) -> None:
    mid = QuantumCircuit(3, 1)
    mid.h(0)
    mid.measure(0, 0)  # collapses qubit 0; the branch copies it to qubit 2
    mid.cx(0, 1)
    with mid.if_test((mid.clbits[0], 1)):
        mid.x(2)
    est = Estimator(mode=rt.backend("nairobi"), options={"seed_simulator": 3})
    result = est.run([(mid, ["ZZI", "ZIZ", "IIZ", "XXI"])], precision=0.04).result(timeout=300)
    zz, zz_branch, z, xx = (float(v) for v in result[0].data.evs)
    # level 1 on a dynamic circuit: readout mitigation, no twirling (said in warnings)
    assert zz > 0.8 and zz_branch > 0.8 and abs(z) < 0.15 and abs(xx) < 0.2, (zz, zz_branch, z, xx)
    assert result[0].qrt["mitigation"]["measure_mitigation"]
    assert not result[0].qrt["mitigation"]["measure_twirling"]
    assert "left out measurement twirling" in " ".join(result[0].qrt["warnings"])


# -- ideal simulation ---------------------------------------------------------------------


def test_an_ideal_run_is_scheduled_recorded_and_noiseless(rt: QuantumRuntime) -> None:
    qc = QuantumCircuit(5)
    qc.h(0)
    for i in range(4):
        qc.cx(i, i + 1)
    ghz = qc.copy()
    ghz.measure_all()
    ideal = Sampler(mode=rt.backend("manila"), options={"simulator": {"noise_model": "ideal"}})
    job = ideal.run([ghz], shots=2000)
    result = job.result(timeout=300)
    counts = result[0].data.meas.get_counts()
    assert set(counts) == {"00000", "11111"}, counts  # no noise: no other string
    assert result[0].qrt["noise"] == "ideal"
    (farm_job,) = job.farm_job_ids
    assert rt.job(farm_job).result(timeout_s=60).metadata.noise == "ideal"  # recorded
    noisy = Sampler(mode=rt.backend("manila")).run([ghz], shots=2000).result(timeout=300)
    assert len(noisy[0].data.meas.get_counts()) > 2 and noisy[0].qrt["noise"] == "device"
    est = Estimator(mode=rt, options={"simulator": {"noise_model": "ideal"}})
    value = est.run([(qc, "ZZZZZ")], precision=0.05).result(timeout=300)[0]
    assert value.qrt["mitigation"]["readout"] is None and "nothing to mitigate" in str(
        value.qrt["warnings"]
    )
    est.options.resilience.zne_mitigation = True
    with pytest.raises(ValueError, match="nothing to mitigate"):
        est.run([(qc, "ZZZZZ")])


# -- IBM Runtime's client-side validation wording -----------------------------------------


def test_client_side_validations_use_the_hardware_runtimes_words(rt: QuantumRuntime) -> None:
    est = Estimator(mode=rt)
    two = QuantumCircuit(2)
    with pytest.raises(ValueError, match="The precision value must be strictly greater than 0"):
        est.run([(two, "ZZ")], precision=0)
    with pytest.raises(ValueError, match="Empty observables array is not allowed"):
        est.run([(two, [])])
    for bad in (["Y0"], {"1X": 2}, [["rZ", "YY"]]):
        with pytest.raises(ValueError, match="Observable"):
            est.run([(two, bad)])
    dynamic = QuantumCircuit(3, 1)
    dynamic.h(0)
    dynamic.measure(0, 0)
    with dynamic.if_test((dynamic.clbits[0], 1)):
        dynamic.x(1)
    est.options.dynamical_decoupling.enable = True
    words = "Dynamical decoupling currently cannot be used with dynamic circuits"
    with pytest.raises(ValueError, match=words):
        est.run([(dynamic, "XXX")])
    sampler = Sampler(mode=rt, options={"dynamical_decoupling": {"enable": True}})
    with pytest.raises(ValueError, match=words):
        sampler.run([dynamic])
    plain = Sampler(mode=rt)
    odd = QuantumCircuit(QuantumRegister(2), ClassicalRegister(2, "not-an-identifier"))
    odd.measure([0, 1], [0, 1])
    with pytest.raises(ValueError, match="Classical register names must be valid identifiers"):
        plain.run([odd])
    keyword = QuantumCircuit(QuantumRegister(2), ClassicalRegister(2, "lambda"))
    keyword.measure([0, 1], [0, 1])
    with pytest.raises(ValueError, match="Classical register names cannot be Python keywords"):
        plain.run([keyword])


def test_the_backend_surface_older_code_calls(rt: QuantumRuntime) -> None:
    backend = rt.backend("manila")
    config = backend.configuration()
    assert config.n_qubits == 5 == backend.num_qubits and config.backend_name == "manila"
    assert "cx" in config.basis_gates and [0, 1] in config.coupling_map
    assert config.conditional and config.to_dict()["max_shots"] >= 100_000
    props = backend.properties()
    assert 0 < props.t1(0) < 1 and 0 < props.readout_error(4) < 0.5
    assert 0 < props.gate_error("cx", [0, 1]) < 0.2 and props.gate_length("sx", 0) > 0
    assert props.calibration_id == backend.calibration_id
    with pytest.raises(ValueError, match="qubits 0 to 4"):
        props.t1(9)
    with pytest.raises(ValueError, match="not a calibrated gate"):
        props.gate_error("cx", [0, 4])
    status = backend.status()
    assert status.operational and status.pending_jobs >= 0 and status.status_msg == "active"
    assert backend.options.shots == 1024 and backend.target.num_qubits == 5


def test_job_metrics_usage_inputs_and_default_shots_precision(rt: QuantumRuntime) -> None:
    qc = QuantumCircuit(2)
    qc.h(0)
    qc.cx(0, 1)
    est = Estimator(mode=rt.backend("nairobi"), options={"default_shots": 100})
    job = est.run([(qc, "ZZ"), (qc, "XX")])
    assert job.inputs["pubs"] == 2 and job.inputs["options"]["default_shots"] == 100
    result = job.result(timeout=300)
    # default_shots wins over default_precision, and the precision it gives is said
    assert ("target_precision", 0.1) in result[0].metadata.items()
    assert result[0].metadata["shots"] == 100
    assert job.backend().name == "nairobi" and job.usage() > 0
    metrics = job.metrics()
    assert metrics["devices"] == ["nairobi"] and metrics["timestamps"]["finished"]
    assert metrics["usage"]["seconds"] == job.usage() and metrics["shots"] >= 200


def test_the_ideal_backend_keeps_width_and_runs_without_noise(rt: QuantumRuntime) -> None:
    from qiskit.transpiler.preset_passmanagers import generate_preset_pass_manager

    ideal = rt.backend("ideal")  # in place of AerSimulator()
    qc = QuantumCircuit(2)
    qc.h(0)
    qc.cx(0, 1)
    isa = generate_preset_pass_manager(optimization_level=1, backend=ideal).run(qc)
    assert isa.num_qubits == 2 and isa.layout is None  # no coupling map: no layout
    ev = Estimator(mode=ideal).run([(isa, ["ZZ", "XX", "ZI"])]).result(timeout=300)[0]
    assert ev.qrt["noise"] == "ideal" and ev.qrt["device"] in {"manila", "nairobi"}
    zz, xx, zi = (float(v) for v in ev.data.evs)
    assert abs(zz - 1) < 0.05 and abs(xx - 1) < 0.05 and abs(zi) < 0.06
    measured = isa.copy()
    measured.measure_all()
    with Session(ideal) as session:
        counts = Sampler().run([measured], shots=500).result(timeout=300)[0].data.meas
        assert set(counts.get_counts()) <= {"00", "11"} and session.noise == "ideal"
    job = ideal.run(measured, shots=100)
    assert set(job.result(timeout=300).get_counts()) <= {"00", "11"}
