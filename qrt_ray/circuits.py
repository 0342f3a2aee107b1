"""Circuit intake: turn what a user gives into QASM text, parse it back, describe it.

A user's circuits enter the farm as OpenQASM text, never as pickled objects or QPY, so
nothing a user sends is ever unpickled or read as QPY by the runtime. (Compiled circuits,
which the farm makes itself, travel as QPY: see ``qrt_ray.compiler``.) The text is also
the circuit's identity: its sha256 keys the compile cache.
"""

from __future__ import annotations

import hashlib
import math
import re
from collections.abc import Iterable, Sequence
from pathlib import Path
from typing import Any

from qiskit import QuantumCircuit, qasm2, qasm3
from qiskit.circuit import Gate
from qiskit.circuit.library import get_standard_gate_name_mapping

from qrt_ray.errors import ValidationError
from qrt_ray.models import CircuitStats

_NON_GATES = frozenset({"measure", "barrier", "reset", "delay", "snapshot", "save_state"})


def _standard_instructions() -> tuple[qasm2.CustomInstruction, ...]:
    """qelib1's gates plus every other Qiskit standard gate, as their real classes.

    QASM 2 writes gates outside qelib1 (ecr, rzx, ...) as ``gate`` definitions. Parsed
    back naively they become look-alike custom gates that the transpiler cannot flip
    or match to the device's native gate, so a circuit that round-trips would fail to
    compile. Mapping the names back to the standard classes keeps them standard.
    """
    legacy = list(qasm2.LEGACY_CUSTOM_INSTRUCTIONS)
    known = {ci.name for ci in legacy}
    extra = []
    for name, gate in get_standard_gate_name_mapping().items():
        if name in known or not isinstance(gate, Gate) or gate.num_qubits == 0:
            continue
        extra.append(qasm2.CustomInstruction(name, len(gate.params), gate.num_qubits, type(gate)))
    return (*legacy, *extra)


_QASM2_INSTRUCTIONS = _standard_instructions()


def _qelib1_gates() -> frozenset[str]:
    """Names that mean the same gate in qelib1.inc and in Qiskit's standard library."""
    std = get_standard_gate_name_mapping()
    return frozenset(
        ci.name
        for ci in qasm2.LEGACY_CUSTOM_INSTRUCTIONS
        if ci.name != "delay" and ci.name in std and std[ci.name].base_class is ci.constructor
    )


_QELIB1 = _qelib1_gates()
_QASM2_WORDS = frozenset(
    {"OPENQASM", "include", "qreg", "creg", "gate", "opaque", "measure", "reset", "barrier"}
    | {"if", "pi", "U", "CX", "sin", "cos", "tan", "exp", "ln", "sqrt"}
)
_STANDARD = get_standard_gate_name_mapping()
# names a register cannot take in the fast writer (gate definitions may use them)
_RESERVED = _QASM2_WORDS | _QELIB1 | frozenset(_STANDARD) | {"c3sqrtx"}
# per standard gate outside qelib1: (its name in a QASM 2 call, the gate definitions
# it needs as (name, line)), or None where QASM 2 cannot carry it this way
_DEFINITIONS: dict[str, tuple[str, tuple[tuple[str, str], ...]] | None] = {}
_IDENTIFIER = re.compile(r"[a-z][A-Za-z0-9_]*\Z")


def _bit_names(registers: Sequence[Any], bits: Sequence[Any]) -> dict[Any, str] | None:
    """``bit -> "reg[i]"`` when every bit is in exactly one plainly named register."""
    names: dict[Any, str] = {}
    for reg in registers:
        if not _IDENTIFIER.match(reg.name) or reg.name in _RESERVED:
            return None
        for i, bit in enumerate(reg):
            if bit in names:
                return None
            names[bit] = f"{reg.name}[{i}]"
    return names if len(names) == len(bits) else None


def _standard_definition(op: Any) -> tuple[str, tuple[tuple[str, str], ...]] | None:
    """How QASM 2 carries a standard gate outside qelib1 (ecr, rzx, iswap, ...).

    Qiskit's exporter writes these gates' definitions with generic parameters
    (``gate rzx(param0) q0,q1 { ... }``), so each is exported once, from a sample
    instance, and reused; the parser maps the names back to the standard classes.
    """
    name = op.name
    if name not in _DEFINITIONS:
        _DEFINITIONS[name] = None
        gate = _STANDARD.get(name)
        if isinstance(gate, Gate) and gate.num_qubits > 0:
            sample = QuantumCircuit(gate.num_qubits)
            sample.append(type(gate)(*([0.5] * len(gate.params))), range(gate.num_qubits))
            try:
                lines = qasm2.dumps(sample).splitlines()
            except Exception:
                lines = []
            gates = [ln for ln in lines if ln.startswith("gate ")]
            defs = tuple((ln.split()[1].split("(")[0], ln) for ln in gates)
            if lines and all(ln.endswith("}") for _, ln in defs):
                _DEFINITIONS[name] = (lines[-1].split()[0].split("(")[0], defs)
    found = _DEFINITIONS[name]
    if found is None or op.base_class is not _STANDARD[name].base_class:
        return None  # a user's own gate that merely shares a standard name
    return found


def fast_qasm2(circuit: QuantumCircuit) -> str | None:
    """OpenQASM 2 for circuits of Qiskit's standard gates, 6-10x faster than
    ``qasm2.dumps``.

    Angles are written with ``repr``, so they read back bit for bit. Returns None for
    anything else (custom gates, control flow, aliased or unnamed bits); the caller
    then uses ``qasm2.dumps``.
    """
    qnames = _bit_names(circuit.qregs, circuit.qubits)
    cnames = _bit_names(circuit.cregs, circuit.clbits)
    if qnames is None or cnames is None:
        return None
    body = []
    defined: dict[str, str] = {}
    for inst in circuit.data:
        op = inst.operation
        name = op.name
        qubits = ",".join(qnames[q] for q in inst.qubits)
        if name == "measure":
            body.append(f"measure {qubits} -> {cnames[inst.clbits[0]]};")
            continue
        if name in ("barrier", "reset"):
            body.append(f"{name} {qubits};")
            continue
        if name not in _QELIB1:
            found = _standard_definition(op)
            if found is None:
                return None
            name, defs = found
            for gate_name, line in defs:
                defined.setdefault(gate_name, line)
        if not op.params:
            body.append(f"{name} {qubits};")
            continue
        values = []
        for p in op.params:
            value = float(p)
            if not math.isfinite(value):
                return None
            values.append(repr(value))
        body.append(f"{name}({','.join(values)}) {qubits};")
    lines = ["OPENQASM 2.0;", 'include "qelib1.inc";', *defined.values()]
    lines += [f"qreg {r.name}[{r.size}];" for r in circuit.qregs]
    lines += [f"creg {r.name}[{r.size}];" for r in circuit.cregs]
    return "\n".join(lines + body) + "\n"


def circuit_hash(text: str) -> str:
    """The circuit's identity: sha256 of its QASM text."""
    return hashlib.sha256(text.encode()).hexdigest()


class WrittenQasm(str):
    """OpenQASM text :func:`to_qasm` wrote from a circuit it had checked: handed to
    :func:`to_qasm` again (the primitives write texts, then submit them), it is not
    parsed a second time on the client. The scheduler parses every text it admits."""

    __slots__ = ()


def to_qasm(circuit: QuantumCircuit | str, *, arg: str = "circuits[0]") -> str:
    """Serialize a circuit to OpenQASM text (2 where it can, else 3); validate text input.

    Args:
        circuit: a ``QuantumCircuit``, or OpenQASM 2/3 source text.
        arg: how to name this circuit in error messages.

    Returns:
        The text: a :class:`WrittenQasm` when written here from a checked circuit. One
        handed back in is returned as it is, without parsing it again (a writer bug
        would then surface at the scheduler, which parses every text it admits).

    Raises:
        ValidationError: not a circuit, malformed QASM, unbound parameters, or no
            measurement.
    """
    if isinstance(circuit, WrittenQasm):
        return circuit
    if isinstance(circuit, str):
        text = circuit
        parse_qasm(text, arg=arg)  # fail early, on the caller's side, with the line
        return text
    if isinstance(circuit, Path):
        raise ValidationError(f"{arg}: got a path; pass its text: Path(...).read_text()")
    if not isinstance(circuit, QuantumCircuit):
        raise ValidationError(
            f"{arg}: expected a qiskit QuantumCircuit or OpenQASM 2/3 text, got "
            f"{type(circuit).__name__}"
        )
    _check_circuit(circuit, arg)
    fast = fast_qasm2(circuit)
    if fast is not None:
        return WrittenQasm(fast)
    try:
        return WrittenQasm(qasm2.dumps(circuit))
    except Exception:
        try:
            return WrittenQasm(qasm3.dumps(circuit))
        except Exception as exc:
            raise ValidationError(f"{arg}: cannot be written as OpenQASM: {exc}") from exc


def loads_qasm2(text: str) -> QuantumCircuit:
    """OpenQASM 2 text the farm wrote itself, parsed with standard gates kept standard
    (no checks that the circuit can run: see :func:`parse_qasm` for user input)."""
    return qasm2.loads(text, custom_instructions=_QASM2_INSTRUCTIONS)


def parse_qasm(text: str, *, arg: str = "circuit") -> QuantumCircuit:
    """Parse OpenQASM 2 or 3 text into a circuit, with errors that name the argument.

    Raises:
        ValidationError: the text does not parse, or the circuit cannot run as given.
    """
    if not isinstance(text, str) or not text.strip():
        raise ValidationError(f"{arg}: empty OpenQASM text; pass a circuit or QASM source")
    head = text.lstrip()[:64]
    try:
        if head.startswith("OPENQASM 3"):
            circuit = qasm3.loads(text)
        else:
            circuit = qasm2.loads(text, custom_instructions=_QASM2_INSTRUCTIONS)
    except Exception as exc:
        first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        raise ValidationError(
            f"{arg}: malformed OpenQASM: {first}. Start the text with 'OPENQASM 2.0;' or "
            "'OPENQASM 3.0;' and check the line named."
        ) from exc
    _check_circuit(circuit, arg)
    return circuit


def _check_circuit(circuit: QuantumCircuit, arg: str) -> None:
    if circuit.num_qubits == 0:
        raise ValidationError(f"{arg}: the circuit has no qubits")
    if circuit.parameters:
        names = ", ".join(sorted(p.name for p in circuit.parameters)[:5])
        raise ValidationError(
            f"{arg}: unbound parameters ({names}); bind them with circuit.assign_parameters()"
        )
    if not any(inst.name == "measure" for inst in circuit.data):
        raise ValidationError(
            f"{arg}: the circuit measures nothing, so it would return no counts; "
            "add circuit.measure_all() or explicit measurements"
        )


def circuit_stats(circuit: QuantumCircuit) -> CircuitStats:
    """Gate counts and depth of a logical circuit, for placement."""
    one = two = multi = meas = 0
    for inst in circuit.data:
        name = inst.name
        if name == "measure":
            meas += 1
            continue
        if name in _NON_GATES:
            continue
        n = len(inst.qubits)
        if n == 1:
            one += 1
        elif n == 2:
            two += 1
        else:
            multi += 1
    return CircuitStats(
        num_qubits=circuit.num_qubits,
        num_clbits=circuit.num_clbits,
        depth=circuit.depth(),
        one_qubit_gates=one,
        two_qubit_gates=two,
        multi_qubit_gates=multi,
        measurements=meas,
    )


def coerce_circuits(circuits: Any) -> list[str]:
    """Accept one circuit or a sequence of them; return their QASM texts.

    Raises:
        ValidationError: nothing given, or any element is not a circuit.
    """
    if isinstance(circuits, (QuantumCircuit, str)):
        items: Sequence[Any] = [circuits]
    elif isinstance(circuits, Iterable):
        items = list(circuits)
    else:
        raise ValidationError(
            f"circuits: expected a QuantumCircuit, QASM text, or a list of them; got "
            f"{type(circuits).__name__}"
        )
    if not items:
        raise ValidationError("circuits: empty list; pass at least one circuit")
    return [to_qasm(c, arg=f"circuits[{i}]") for i, c in enumerate(items)]
