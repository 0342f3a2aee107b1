from __future__ import annotations

import pytest
from qiskit import QuantumCircuit
from qiskit.circuit import Parameter

from qrt_ray.circuits import circuit_hash, coerce_circuits, parse_qasm, to_qasm
from qrt_ray.errors import ValidationError
from tests.circuits import ghz


def test_circuit_round_trips_through_qasm_text() -> None:
    text = to_qasm(ghz(4))
    back = parse_qasm(text)
    assert back.num_qubits == 4
    assert back.count_ops()["cx"] == 3
    assert circuit_hash(text) == circuit_hash(to_qasm(ghz(4)))
    assert circuit_hash(text) != circuit_hash(to_qasm(ghz(5)))


def test_qasm3_text_is_accepted() -> None:
    text = (
        'OPENQASM 3.0;\ninclude "stdgates.inc";\nqubit[2] q;\nbit[2] c;\n'
        "h q[0];\ncx q[0], q[1];\nc = measure q;\n"
    )
    assert parse_qasm(text).num_qubits == 2


def test_malformed_qasm_names_the_argument() -> None:
    with pytest.raises(ValidationError, match=r"circuits\[1\]: malformed OpenQASM"):
        coerce_circuits([to_qasm(ghz(2)), "OPENQASM 2.0;\nqreg q[2];\nfoo q[0];\n"])


def test_no_measurement_and_unbound_parameters_are_refused() -> None:
    qc = QuantumCircuit(2)
    qc.h(0)
    with pytest.raises(ValidationError, match="measures nothing"):
        to_qasm(qc)
    theta = Parameter("theta")
    pc = QuantumCircuit(1)
    pc.rx(theta, 0)
    pc.measure_all()
    with pytest.raises(ValidationError, match=r"unbound parameters.*theta"):
        to_qasm(pc)


def test_wrong_types_and_empty_input() -> None:
    with pytest.raises(ValidationError, match="expected a qiskit QuantumCircuit"):
        coerce_circuits([42])
    with pytest.raises(ValidationError, match="empty list"):
        coerce_circuits([])
    with pytest.raises(ValidationError, match="empty OpenQASM"):
        parse_qasm("   ")


def test_standard_gates_outside_qelib1_survive_the_round_trip() -> None:
    from qiskit.circuit.library import ECRGate, RZXGate

    qc = QuantumCircuit(2)
    qc.ecr(0, 1)
    qc.rzx(0.3, 0, 1)
    qc.measure_all()
    back = parse_qasm(to_qasm(qc))
    ops = [i.operation for i in back.data if i.operation.name in ("ecr", "rzx")]
    # real classes (not look-alike custom gates), so the transpiler can flip them
    assert isinstance(ops[0], ECRGate) and isinstance(ops[1], RZXGate)


def _qelib1_random(seed: int) -> QuantumCircuit:
    """A random circuit of qelib1 gates with arbitrary angles, on two named registers."""
    import numpy as np
    from qiskit import ClassicalRegister, QuantumRegister

    rng = np.random.default_rng(seed)
    qc = QuantumCircuit(QuantumRegister(2, "a"), QuantumRegister(3, "b"), ClassicalRegister(5, "m"))
    one = ["h", "x", "sx", "t", "sdg", "id"]
    for _ in range(40):
        kind = rng.integers(5)
        q = [int(i) for i in rng.choice(5, size=3, replace=False)]
        angle = float(rng.normal() * 10)
        if kind == 0:
            getattr(qc, one[rng.integers(len(one))])(q[0])
        elif kind == 1:
            qc.u(angle, -angle / 3, 1e-17 + angle, q[0])
        elif kind == 2:
            qc.cx(q[0], q[1])
            qc.crz(angle, q[1], q[2])
        elif kind == 3:
            qc.ccx(*q)
            qc.rzz(angle, q[0], q[2])
        else:
            qc.barrier(q[0], q[1])
            qc.reset(q[2])
    qc.measure(range(5), range(5))
    return qc


@pytest.mark.parametrize("seed", range(8))
def test_qelib1_circuits_read_back_exactly(seed: int) -> None:
    from qiskit import qasm2

    from qrt_ray.circuits import fast_qasm2

    qc = _qelib1_random(seed)
    text = to_qasm(qc)
    assert text == fast_qasm2(qc)  # the fast writer took it
    back = parse_qasm(text)
    assert back == qc  # same registers, gates, and angles to the last bit
    assert parse_qasm(qasm2.dumps(qc)).count_ops() == back.count_ops()


def test_every_standard_gate_reads_back_as_itself_through_the_fast_writer() -> None:
    import numpy as np
    from qiskit.circuit import Gate
    from qiskit.circuit.library import get_standard_gate_name_mapping
    from qiskit.quantum_info import Operator

    from qrt_ray.circuits import fast_qasm2, loads_qasm2

    rng = np.random.default_rng(7)
    written = 0
    for name, gate in get_standard_gate_name_mapping().items():
        if not isinstance(gate, Gate) or gate.num_qubits == 0:
            continue
        op = type(gate)(*rng.uniform(-3, 3, len(gate.params)))
        qc = QuantumCircuit(gate.num_qubits)
        qc.h(0)  # a qelib1 gate beside it, and the gate twice: one definition only
        qc.append(op, range(gate.num_qubits))
        qc.append(op, range(gate.num_qubits))
        text = fast_qasm2(qc)
        assert text is not None, name
        written += 1
        back = loads_qasm2(text)  # as parse_qasm reads it, without its checks
        assert [type(i.operation) for i in back.data] == [type(i.operation) for i in qc.data]
        assert Operator(back).equiv(Operator(qc)), name
    assert written > 40


def test_circuits_beyond_the_standard_gates_fall_back_to_the_full_writer() -> None:
    from qiskit import QuantumRegister
    from qiskit.circuit import Gate

    from qrt_ray.circuits import fast_qasm2

    own = QuantumCircuit(2)
    lookalike = QuantumCircuit(2, name="ecr")  # a user's gate that is named ecr
    lookalike.cz(0, 1)
    own.append(lookalike.to_gate(), [0, 1])
    own.append(Gate("mine", 1, []), [0])
    own.measure_all()
    keyword = QuantumCircuit(QuantumRegister(1, "gate"))  # a QASM keyword as a name
    keyword.measure_all()
    loose = QuantumCircuit(2, 2)  # bits in no register are fine for the full writer
    loose.add_bits([type(loose.qubits[0])()])
    loose.measure([0, 1], [0, 1])
    assert fast_qasm2(own) is None
    assert fast_qasm2(keyword) is None
    assert parse_qasm(to_qasm(keyword)).num_qubits == 1
    assert fast_qasm2(loose) is None


def test_text_written_here_is_not_parsed_again_but_user_text_is(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    import qrt_ray.circuits as circuits_module

    qc = QuantumCircuit(2)
    qc.h(0)
    qc.cx(0, 1)
    qc.measure_all()
    written = circuits_module.to_qasm(qc)
    parsed: list[str] = []
    real = circuits_module.parse_qasm

    def counting(text: str, *, arg: str = "circuit") -> QuantumCircuit:
        parsed.append(text)
        return real(text, arg=arg)

    monkeypatch.setattr(circuits_module, "parse_qasm", counting)
    assert circuits_module.coerce_circuits([written]) == [written]
    assert parsed == []  # the primitives write texts, then submit them: parsed once
    assert circuits_module.coerce_circuits([str(written)]) == [written]
    assert parsed == [written]  # text from anywhere else is checked on the client
    with pytest.raises(ValidationError, match=r"circuits\[0\]: malformed OpenQASM"):
        circuits_module.coerce_circuits(["OPENQASM 2.0; qreg q[1]; zz q[0];"])
