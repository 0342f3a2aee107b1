"""A gate is standard by its class, not its name: writing and reading keep users' gates."""

from __future__ import annotations

import math

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from qiskit import QuantumCircuit
from qiskit.circuit import Gate
from qiskit.circuit.library import ECRGate, HGate, RZXGate, UnitaryGate
from qiskit.quantum_info import Operator

from qrt_ray.circuits import fast_qasm2, to_qasm
from qrt_ray.errors import ValidationError
from qrt_ray.intake import check_circuit, parse_qasm
from qrt_ray.intake.gates import rename_impostors, trusted


def user_gate(name: str, body: QuantumCircuit, params: tuple[float, ...] = ()) -> Gate:
    gate = Gate(name, body.num_qubits, list(params))
    gate.definition = body
    return gate


def x_named_h() -> Gate:
    body = QuantumCircuit(1)
    body.x(0)
    return user_gate("h", body)


def test_the_fast_writer_never_writes_a_users_gate_as_the_standard_one() -> None:
    qc = QuantumCircuit(1, 1)
    qc.append(x_named_h(), [0])
    qc.measure(0, 0)
    assert fast_qasm2(qc) is None  # not qelib1's h: the general writer takes it
    text = to_qasm(qc)
    assert "\nh q[0];" not in text and "gate h_1" in text
    back = parse_qasm(text)
    assert back.data[0].operation.name == "h_1"
    assert Operator(back.remove_final_measurements(inplace=False)).equiv(Operator.from_label("X"))


def test_standard_gates_stay_standard_through_the_text() -> None:
    qc = QuantumCircuit(2, 2)
    qc.h(0)
    qc.append(ECRGate(), [0, 1])
    qc.append(RZXGate(0.25), [1, 0])
    qc.measure([0, 1], [0, 1])
    back = parse_qasm(to_qasm(qc))
    kinds = [type(inst.operation).__name__ for inst in back.data]
    assert kinds[:3] == ["_SingletonHGate", "_SingletonECRGate", "RZXGate"]


def test_a_definition_that_only_looks_like_the_writers_stays_the_users() -> None:
    # the writer's rzx definition maps back to RZXGate; any other body does not
    written = to_qasm(_one(RZXGate(0.5), 2))
    assert "gate rzx(param0)" in written
    assert type(parse_qasm(written).data[0].operation) is RZXGate
    forged = written.replace("rz(param0) q1;", "rz(param0) q1; x q0;")
    op = parse_qasm(forged).data[0].operation
    assert op.name == "rzx_1" and not isinstance(op, RZXGate)


def test_impostors_are_renamed_inside_definitions_too() -> None:
    inner = x_named_h()
    body = QuantumCircuit(1)
    body.append(inner, [0])
    outer = user_gate("wrap", body)
    qc = QuantumCircuit(1)
    qc.append(outer, [0])
    clean = rename_impostors(qc)
    assert clean is not qc
    assert clean.data[0].operation.name == "wrap"
    assert clean.data[0].operation.definition.data[0].operation.name == "h_1"
    assert Operator(clean).equiv(Operator(qc))
    plain = QuantumCircuit(1)
    plain.h(0)
    assert rename_impostors(plain) is plain  # nothing to rename: no copy


def test_library_gates_are_trusted_and_user_gates_are_not() -> None:
    assert trusted(HGate()) and trusted(UnitaryGate([[0, 1], [1, 0]]))
    assert not trusted(x_named_h())


@pytest.mark.parametrize("value", [math.nan, math.inf, -math.inf])
def test_non_finite_angles_are_refused(value: float) -> None:
    qc = QuantumCircuit(1, 1)
    qc.rx(value, 0)
    qc.measure(0, 0)
    with pytest.raises(ValidationError, match="not a finite number"):
        check_circuit(qc, arg="circuits[0]")


def test_opaque_gates_are_refused_inside_control_flow_too() -> None:
    qc = QuantumCircuit(1, 1)
    qc.append(Gate("mystery", 1, []), [0])
    qc.measure(0, 0)
    with pytest.raises(ValidationError, match="'mystery' is opaque"):
        check_circuit(qc)
    flow = QuantumCircuit(1, 1)
    flow.measure(0, 0)
    with flow.if_test((flow.clbits[0], 1)):
        flow.x(0)
    assert check_circuit(flow) is flow  # dynamic circuits run
    with flow.if_test((flow.clbits[0], 0)):
        flow.append(Gate("mystery", 1, []), [0])
    with pytest.raises(ValidationError, match="'mystery' is opaque"):
        check_circuit(flow)


def test_loops_count_toward_the_operations_limit() -> None:
    qc = QuantumCircuit(1, 1)
    with qc.for_loop(range(600)), qc.for_loop(range(600)):
        qc.x(0)
    qc.measure(0, 0)
    with pytest.raises(ValidationError, match=r"loops run about 360,602 operations per shot"):
        check_circuit(qc)
    spin = QuantumCircuit(1, 1)
    spin.measure(0, 0)
    with spin.while_loop((spin.clbits[0], 0)):  # counted at its most passes
        for _ in range(300):
            spin.x(0)
        spin.measure(0, 0)
    with pytest.raises(ValidationError, match="limit is 200,000"):
        check_circuit(spin)
    idle = QuantumCircuit(1, 1)
    with idle.for_loop(range(10**8)):  # an empty body: every pass is still a step
        pass
    idle.measure(0, 0)
    with pytest.raises(ValidationError, match=r"about 100,000,002 operations per shot"):
        check_circuit(idle)


def _one(gate: Gate, n: int) -> QuantumCircuit:
    qc = QuantumCircuit(n, n)
    qc.append(gate, range(n))
    qc.measure(range(n), range(n))
    return qc


# -- the property: write -> parse -> simulate equals the original ---------------------

NAMES = ["h", "x", "sx", "cx", "ecr", "rzx", "swap", "p", "u", "id", "rz", "mygate", "cx_1"]
ANGLE = st.floats(min_value=-math.pi, max_value=math.pi, allow_nan=False)


@st.composite
def gates_on(draw: st.DrawFn, n: int, depth: int = 0) -> list[tuple[object, list[int]]]:
    """A few operations on ``n`` qubits: standard ones and users' own gates."""
    ops: list[tuple[object, list[int]]] = []
    for _ in range(draw(st.integers(1, 4))):
        kind = draw(st.sampled_from(["h", "rz", "cx", "ecr", "rzx", "user"]))
        width = {"h": 1, "rz": 1, "cx": 2, "ecr": 2, "rzx": 2}.get(kind, draw(st.integers(1, 2)))
        if width > n:
            continue
        qubits = draw(st.permutations(range(n)))[:width]
        if kind == "h":
            ops.append((HGate(), qubits))
        elif kind == "rz":
            ops.append((("rz", draw(ANGLE)), qubits))
        elif kind == "cx":
            ops.append((("cx", None), qubits))
        elif kind == "ecr":
            ops.append((ECRGate(), qubits))
        elif kind == "rzx":
            ops.append((RZXGate(draw(ANGLE)), qubits))
        elif depth < 2:
            body = QuantumCircuit(width)
            for op, qs in draw(gates_on(width, depth + 1)):
                _append(body, op, qs)
            name = draw(st.sampled_from([m for m in NAMES]))
            ops.append((user_gate(name, body), qubits))
    return ops


def _append(qc: QuantumCircuit, op: object, qubits: list[int]) -> None:
    if isinstance(op, tuple):
        name, angle = op
        if name == "rz":
            qc.rz(angle, qubits[0])
        else:
            qc.cx(*qubits)
    else:
        qc.append(op, qubits)  # type: ignore[arg-type]


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.integers(1, 3).flatmap(lambda n: st.tuples(st.just(n), gates_on(n))))
def test_write_parse_simulate_equals_the_original(drawn: tuple[int, list]) -> None:
    n, ops = drawn
    qc = QuantumCircuit(n)
    for op, qubits in ops:
        _append(qc, op, qubits)
    measured = qc.copy()
    measured.measure_all()
    text = to_qasm(measured)
    back = parse_qasm(text).remove_final_measurements(inplace=False)
    assert Operator(back).equiv(Operator(qc)), text
