"""The mixed workload: determinism, families, sizes, and ideals that match a simulator."""

from __future__ import annotations

import math
from collections import Counter
from collections.abc import Callable

import pytest
from qiskit import ClassicalRegister, QuantumCircuit, QuantumRegister, qasm2, transpile
from qiskit.circuit import Parameter
from qiskit_aer import AerSimulator

from qrt_ray.circuits import parse_qasm, to_qasm
from qrt_ray.errors import ValidationError
from qrt_ray.fidelity import hellinger_fidelity
from qrt_ray.workloads import (
    FAMILIES,
    FAMILY_MAX_QUBITS,
    MAX_IDEAL_QUBITS,
    WorkloadCircuit,
    generate_workload,
    ideal_distribution,
)


@pytest.fixture(scope="module")
def workload() -> list[WorkloadCircuit]:
    return generate_workload()


def _sample(
    workload: list[WorkloadCircuit], max_qubits: int, per_family: int
) -> list[WorkloadCircuit]:
    """Up to ``per_family`` circuits of each family, of distinct sizes <= max_qubits."""
    picked: list[WorkloadCircuit] = []
    for family in FAMILIES:
        sizes: set[int] = set()
        for c in workload:
            if c.family == family and c.num_qubits <= max_qubits and c.num_qubits not in sizes:
                sizes.add(c.num_qubits)
                picked.append(c)
            if len(sizes) == per_family:
                break
    return picked


def _simulate(circuit: QuantumCircuit, shots: int = 4000) -> dict[str, int]:
    # Aer runs only the gates it knows (random circuits hold dcx, ecr, ...); the
    # runtime always compiles first, so the test does too.
    simulator = AerSimulator(seed_simulator=11)
    compiled = transpile(circuit, simulator, optimization_level=0)
    return simulator.run(compiled, shots=shots).result().get_counts()


# -- generate_workload ---------------------------------------------------------------


def test_default_workload_shape(workload: list[WorkloadCircuit]) -> None:
    assert len(workload) == 120
    assert Counter(c.family for c in workload) == {f: 24 for f in FAMILIES}
    # Round-robin, in FAMILIES order.
    assert [c.family for c in workload[:10]] == list(FAMILIES) * 2
    assert len({c.name for c in workload}) == len(workload)


def test_qubit_range_and_family_caps(workload: list[WorkloadCircuit]) -> None:
    for c in workload:
        assert 3 <= c.num_qubits <= 20
        assert c.num_qubits <= FAMILY_MAX_QUBITS[c.family]
        assert c.circuit.num_qubits == c.num_qubits
        assert c.name.startswith(f"{c.family}-{c.num_qubits}")
    ghz_sizes = {c.num_qubits for c in workload if c.family == "ghz"}
    assert ghz_sizes == set(range(3, 21))  # spread over the whole range


def test_every_qubit_is_measured_into_its_clbit(workload: list[WorkloadCircuit]) -> None:
    for c in workload:
        circuit = c.circuit
        assert circuit.num_clbits == c.num_qubits
        pairs = {
            (circuit.find_bit(i.qubits[0]).index, circuit.find_bit(i.clbits[0]).index)
            for i in circuit.data
            if i.operation.name == "measure"
        }
        assert pairs == {(q, q) for q in range(c.num_qubits)}


def test_ideals_are_normalized_and_peaked(workload: list[WorkloadCircuit]) -> None:
    for c in workload:
        assert math.fsum(c.ideal.values()) == pytest.approx(1.0, abs=1e-9)
        assert all(len(k) == c.num_qubits and not k.strip("01") for k in c.ideal)
        assert min(c.ideal.values()) >= 1e-12
        assert max(c.ideal.values()) > 2 / 2**c.num_qubits, c.name


def test_family_shapes(workload: list[WorkloadCircuit]) -> None:
    for c in workload:
        n = c.num_qubits
        if c.family == "ghz":
            assert c.ideal == pytest.approx({"0" * n: 0.5, "1" * n: 0.5})
        elif c.family in ("qft", "grover"):
            assert max(c.ideal.values()) > 0.9, c.name


def test_deterministic_for_a_seed(workload: list[WorkloadCircuit]) -> None:
    again = generate_workload(seed=0)
    assert [c.name for c in again] == [c.name for c in workload]
    for a, b in zip(again, workload, strict=True):
        assert qasm2.dumps(a.circuit) == qasm2.dumps(b.circuit)
        assert a.ideal == b.ideal
    other = generate_workload(seed=1)
    assert [qasm2.dumps(c.circuit) for c in other] != [qasm2.dumps(c.circuit) for c in workload]


def test_custom_range_leaves_out_families_that_do_not_fit() -> None:
    jobs = generate_workload(24, min_qubits=5, max_qubits=8, seed=3)
    assert len(jobs) == 24
    assert all(5 <= c.num_qubits <= 8 for c in jobs)
    # Grover stops at 4 qubits, so it sits this range out.
    assert {c.family for c in jobs} == set(FAMILIES) - {"grover"}
    assert generate_workload(0) == []


@pytest.mark.parametrize(
    ("kwargs", "match"),
    [
        ({"num_jobs": -1}, "num_jobs"),
        ({"min_qubits": 1}, "min_qubits"),
        ({"min_qubits": 9, "max_qubits": 8}, "max_qubits: 8 is below"),
        ({"max_qubits": MAX_IDEAL_QUBITS + 1}, "too wide"),
    ],
)
def test_bad_arguments_raise(kwargs: dict[str, int], match: str) -> None:
    with pytest.raises(ValidationError, match=match):
        generate_workload(**kwargs)


def test_noiseless_simulation_matches_ideal(workload: list[WorkloadCircuit]) -> None:
    # A wrong bit order would score near 0 on every family but GHZ.
    sample = _sample(workload, max_qubits=8, per_family=3)
    assert {c.family for c in sample} == set(FAMILIES)
    for c in sample:
        counts = _simulate(c.circuit)
        assert hellinger_fidelity(counts, c.ideal) > 0.97, c.name


def test_circuits_survive_the_qasm_round_trip(workload: list[WorkloadCircuit]) -> None:
    # Circuits reach devices as OpenQASM text; what comes back must have the same ideal.
    for c in _sample(workload, max_qubits=10, per_family=8):
        back = ideal_distribution(parse_qasm(to_qasm(c.circuit)))
        assert back.keys() == c.ideal.keys(), c.name
        assert back == pytest.approx(c.ideal, abs=1e-9), c.name


# -- ideal_distribution --------------------------------------------------------------


def test_bit_order_is_qiskits() -> None:
    circuit = QuantumCircuit(3, 3)
    circuit.x(0)
    circuit.measure(range(3), range(3))
    assert ideal_distribution(circuit) == {"001": pytest.approx(1.0)}


def test_measurement_map_and_unmeasured_clbits() -> None:
    circuit = QuantumCircuit(2, 4)
    circuit.x(0)
    circuit.h(1)
    circuit.measure(0, 3)
    circuit.measure(1, 1)
    ideal = ideal_distribution(circuit)
    assert ideal == pytest.approx({"1000": 0.5, "1010": 0.5})
    counts = _simulate(circuit, shots=2000)
    assert set(counts) == set(ideal)


def test_multiple_registers_give_keys_without_spaces() -> None:
    qr = QuantumRegister(3)
    low, high = ClassicalRegister(1, "low"), ClassicalRegister(2, "high")
    circuit = QuantumCircuit(qr, low, high)
    circuit.x(2)
    circuit.h(0)
    circuit.measure(qr, [*low, *high])
    ideal = ideal_distribution(circuit)
    assert ideal == pytest.approx({"100": 0.5, "101": 0.5})
    assert hellinger_fidelity(_simulate(circuit, shots=2000), ideal) > 0.99


def test_barriers_before_measurement_are_fine() -> None:
    circuit = QuantumCircuit(2)
    circuit.h(0)
    circuit.cx(0, 1)
    circuit.measure_all()  # adds a barrier
    assert ideal_distribution(circuit) == pytest.approx({"00": 0.5, "11": 0.5})


def _mid_circuit_measure() -> QuantumCircuit:
    circuit = QuantumCircuit(1, 1)
    circuit.measure(0, 0)
    circuit.x(0)
    circuit.measure(0, 0)
    return circuit


def _with_reset() -> QuantumCircuit:
    circuit = QuantumCircuit(1, 1)
    circuit.h(0)
    circuit.reset(0)
    circuit.measure(0, 0)
    return circuit


def _unbound() -> QuantumCircuit:
    circuit = QuantumCircuit(1, 1)
    circuit.rx(Parameter("theta"), 0)
    circuit.measure(0, 0)
    return circuit


@pytest.mark.parametrize(
    ("make", "match"),
    [
        (lambda: QuantumCircuit(2, 2), "measures nothing"),
        (_mid_circuit_measure, "measured and then used again"),
        (_with_reset, "'reset' has no single noiseless outcome"),
        (_unbound, "unbound parameters"),
        (lambda: QuantumCircuit(MAX_IDEAL_QUBITS + 1, 1), "too wide"),
    ],
)
def test_ideal_distribution_rejects(make: Callable[[], QuantumCircuit], match: str) -> None:
    with pytest.raises(ValidationError, match=match):
        ideal_distribution(make())
