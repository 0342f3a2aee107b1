"""Dynamic circuits: while loops bounded, switch written as if/else, same outcomes."""

from __future__ import annotations

import pytest
from qiskit import QuantumCircuit, qasm3, transpile
from qiskit_aer import AerSimulator
from qiskit_ibm_runtime.fake_provider import FakeManilaV2

from qrt_ray.circuits import to_qasm
from qrt_ray.dynamic import (
    bound_while_loops,
    dynamic_reason,
    switch_to_if_else,
    walk,
    with_loop_exits,
)
from qrt_ray.errors import ValidationError
from qrt_ray.intake import parse_qasm

SIM = AerSimulator()


def _counts(circuit: QuantumCircuit, shots: int = 2000) -> dict[str, int]:
    return SIM.run(transpile(circuit, SIM), shots=shots, seed_simulator=7).result().get_counts()


def test_a_repeat_until_success_loop_keeps_its_outcome() -> None:
    qc = QuantumCircuit(1, 1)
    qc.h(0)
    qc.measure(0, 0)
    with qc.while_loop((qc.clbits[0], 0)):  # until a 1 is read
        qc.h(0)
        qc.measure(0, 0)
    bounded = bound_while_loops(qc)
    assert "while_loop" not in bounded.count_ops() and "for_loop" in bounded.count_ops()
    assert _counts(bounded) == {"1": 2000}


def test_a_loop_that_never_ends_is_cut_at_its_most_passes() -> None:
    qc = QuantumCircuit(2, 2)
    qc.measure(0, 0)
    with qc.while_loop((qc.clbits[0], 0)):  # nothing writes c[0]: endless
        qc.x(1)
    qc.measure(1, 1)
    # 1000 passes of x: an even number, so qubit 1 ends in 0
    assert _counts(bound_while_loops(qc, max_iterations=1000), shots=50) == {"00": 50}
    assert _counts(bound_while_loops(qc, max_iterations=7), shots=50) == {"10": 50}


def test_switch_becomes_if_else_with_the_same_distribution() -> None:
    qc = QuantumCircuit(3, 2)
    qc.h([0, 1])
    qc.measure([0, 1], [0, 1])
    with qc.switch(qc.cregs[0]) as case:
        with case(0, 3):
            qc.x(2)
        with case(1):
            qc.h(2)
        with case(case.DEFAULT):
            qc.z(2)
    qc.measure_all()
    rewritten = switch_to_if_else(qc)
    assert "switch_case" not in rewritten.count_ops()
    back = qasm3.loads(qasm3.dumps(rewritten))  # what the farm carries and reads
    a, b = _counts(back, 8000), _counts(qc, 8000)
    for key in set(a) | set(b):
        assert abs(a.get(key, 0) - b.get(key, 0)) < 250, key
    flagged = QuantumCircuit(1, 1)
    flagged.measure(0, 0)
    with flagged.switch(flagged.clbits[0]) as case, case(case.DEFAULT):
        flagged.x(0)
    assert "if_else" in switch_to_if_else(flagged).count_ops()


def test_what_makes_a_circuit_dynamic() -> None:
    static = QuantumCircuit(2, 2)
    static.h(0)
    static.measure([0, 1], [0, 1])
    assert dynamic_reason(static) is None
    mid = QuantumCircuit(1, 2)
    mid.measure(0, 0)
    mid.x(0)
    mid.measure(0, 1)
    assert dynamic_reason(mid) == "it measures a qubit before the circuit's end"
    reset = QuantumCircuit(1, 1)
    reset.reset(0)
    reset.measure(0, 0)
    assert dynamic_reason(reset) == "it resets a qubit"
    flow = QuantumCircuit(2, 1)
    flow.measure(0, 0)
    with flow.if_test((flow.clbits[0], 1)):
        flow.cx(0, 1)
    assert dynamic_reason(flow) == "it has control flow (if_else)"
    assert [(op.name, q, c) for op, q, c in walk(flow)] == [
        ("measure", (0,), (0,)),
        ("cx", (0, 1), ()),
    ]


def test_dynamic_circuits_pass_intake_and_compile_for_a_device() -> None:
    qc = QuantumCircuit(2, 2)
    qc.h(0)
    qc.measure(0, 0)
    with qc.if_test((qc.clbits[0], 1)) as else_:
        qc.x(1)
    with else_:
        qc.h(1)
    qc.reset(0)
    with qc.for_loop(range(3)):
        qc.sx(0)
    with qc.while_loop((qc.clbits[0], 0)):
        qc.h(0)
        qc.measure(0, 0)
    qc.measure(1, 1)
    circuit = bound_while_loops(parse_qasm(to_qasm(qc)))
    target = with_loop_exits(FakeManilaV2().target)
    compiled = transpile(circuit, target=target, optimization_level=1, seed_transpiler=0)
    assert {"if_else", "for_loop"} <= set(compiled.count_ops())


def test_a_switch_on_an_expression_is_refused_with_the_reason() -> None:
    from qiskit.circuit.classical import expr

    qc = QuantumCircuit(1, 2)
    qc.measure(0, 0)
    with qc.switch(expr.bit_and(qc.cregs[0], 1)) as case, case(1):
        qc.x(0)
    qc.measure(0, 1)
    with pytest.raises(ValidationError, match="switch on a classical expression"):
        to_qasm(qc)
