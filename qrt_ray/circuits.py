"""Circuits as text: write what a user gives as OpenQASM, name it by its hash.

A user's circuits enter the farm as OpenQASM text, never as pickled objects or QPY, so
nothing a user sends is ever unpickled or read as QPY by the runtime. (Compiled circuits,
which the farm makes itself, travel as QPY: see ``qrt_ray.compiler``.) The text is also
the circuit's identity: its sha256 keys the compile cache. Every circuit, text or
object, is checked by the intake gate (:mod:`qrt_ray.intake`) on the way in.
"""

from __future__ import annotations

import itertools
import math
import re
from collections.abc import Iterable, Mapping, Sequence
from pathlib import Path
from typing import Any

from qiskit import QuantumCircuit, qasm2, qasm3

from qrt_ray.arguments import finite_number
from qrt_ray.dynamic import switch_to_if_else
from qrt_ray.errors import QrtError, ValidationError, brief
from qrt_ray.intake import check_circuit, parse_qasm
from qrt_ray.intake.admit import bind_named
from qrt_ray.intake.admit import circuit_hash as circuit_hash  # the identity, re-exported
from qrt_ray.intake.gates import (
    QASM2_INSTRUCTIONS,
    QELIB1,
    STANDARD,
    is_standard,
    standard_definition,
)
from qrt_ray.models import MAX_CIRCUITS_PER_JOB

# Names one submit may bind (a circuit declares at most intake.max_parameters a gate,
# but a job may bind one per circuit).
_MAX_BOUND_PARAMETERS = 10_000

_NON_GATES = frozenset({"measure", "barrier", "reset", "delay", "snapshot", "save_state"})
_QASM2_WORDS = frozenset(
    {"OPENQASM", "include", "qreg", "creg", "gate", "opaque", "measure", "reset", "barrier"}
    | {"if", "pi", "U", "CX", "sin", "cos", "tan", "exp", "ln", "sqrt"}
)
# names a register cannot take in the fast writer (gate definitions may use them)
_RESERVED = _QASM2_WORDS | QELIB1 | frozenset(STANDARD) | {"c3sqrtx"}
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


def fast_qasm2(circuit: QuantumCircuit) -> str | None:
    """OpenQASM 2 for circuits of Qiskit's standard gates, 6-10x faster than
    ``qasm2.dumps``.

    Angles are written with ``repr``, so they read back bit for bit. A gate counts as
    standard by its class, never its name. Returns None for anything else (custom
    gates, control flow, aliased or unnamed bits); the caller then uses ``qasm2.dumps``.
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
        if name in QELIB1:
            if not is_standard(op):
                return None  # a user's gate named like a qelib1 one: written in full
        else:
            found = standard_definition(op)
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
        ValidationError: not a circuit, or a circuit the intake gate refuses
            (:mod:`qrt_ray.intake`): malformed QASM, a limit passed, unbound
            parameters, no measurement, something no device runs.
    """
    if isinstance(circuit, WrittenQasm):
        return circuit
    if isinstance(circuit, str):
        text = circuit
        parse_qasm(text, arg=arg)  # fail early, on the caller's side, with the line
        return text
    if isinstance(circuit, Path):
        raise ValidationError(f"{arg}: got a path; pass its text: Path(...).read_text()")
    if isinstance(circuit, (bytes, bytearray)):
        raise ValidationError(f"{arg}: got bytes; pass OpenQASM text: data.decode('utf-8')")
    if not isinstance(circuit, QuantumCircuit):
        raise ValidationError(
            f"{arg}: expected a qiskit QuantumCircuit or OpenQASM 2/3 text, got "
            f"{type(circuit).__name__}"
        )
    circuit = check_circuit(circuit, arg=arg)  # user gates named like standard ones renamed
    fast = fast_qasm2(circuit)
    if fast is not None:
        return WrittenQasm(fast)
    try:
        if circuit.has_control_flow_op():  # OpenQASM 2 conditions are not read: blocks are
            raise ValueError("control flow")
        return WrittenQasm(qasm2.dumps(circuit))
    except Exception:
        try:
            # OpenQASM 3 readers take if/else but not switch: written as if/else chains
            return WrittenQasm(qasm3.dumps(switch_to_if_else(circuit)))
        except QrtError:
            raise
        except Exception as exc:
            raise ValidationError(f"{arg}: cannot be written as OpenQASM: {exc}") from exc


def loads_qasm2(text: str) -> QuantumCircuit:
    """OpenQASM 2 text the farm wrote itself, parsed with standard gates kept standard
    (no checks that the circuit can run: see :func:`qrt_ray.intake.parse_qasm` for user
    input). No include is ever looked up on disk."""
    return qasm2.loads(text, include_path=(), custom_instructions=QASM2_INSTRUCTIONS)


def coerce_circuits(
    circuits: Any,
    *,
    max_circuits: int = MAX_CIRCUITS_PER_JOB,
    parameters: Mapping[str, Any] | None = None,
) -> list[str]:
    """Accept one circuit or a sequence of them; return their QASM texts.

    Args:
        circuits: a circuit (object or OpenQASM text) or a sequence of them.
        max_circuits: the most a job may hold.
        parameters: values by name for the circuits' parameters (OpenQASM 3 ``input``
            declarations, or a circuit's ``Parameter``s), bound before they are
            written; every name must bind in some circuit.

    Raises:
        ValidationError: nothing given, too many, any element is not a circuit, a
            parameter value is not a finite number, or a name binds nothing.
    """
    if isinstance(circuits, (QuantumCircuit, str)):
        items: list[Any] = [circuits]
    elif isinstance(circuits, (bytes, bytearray, Path)) or not isinstance(circuits, Iterable):
        kind = "a path" if isinstance(circuits, Path) else type(circuits).__name__
        raise ValidationError(
            f"circuits: expected a QuantumCircuit, OpenQASM text, or a list of them; got {kind}"
        )
    else:
        items = list(itertools.islice(circuits, max_circuits + 1))
    if not items:
        raise ValidationError("circuits: empty list; pass at least one circuit")
    if len(items) > max_circuits:
        raise ValidationError(
            f"circuits: more than {max_circuits} circuits in one job; the limit is "
            f"{max_circuits}: split them over several jobs (submit_many)"
        )
    if not parameters:
        return [to_qasm(c, arg=f"circuits[{i}]") for i, c in enumerate(items)]
    values = _parameter_values(parameters)
    bound: set[str] = set()
    texts = []
    for i, c in enumerate(items):
        arg = f"circuits[{i}]"
        if isinstance(c, str):
            c = parse_qasm(c, arg=arg, bind=values, bound=bound)
        elif isinstance(c, QuantumCircuit):
            c = bind_named(c, values, bound)
        texts.append(to_qasm(c, arg=arg))
    unused = sorted(set(values) - bound)
    if unused:
        raise ValidationError(
            f"parameters: {', '.join(repr(brief(n, 40)) for n in unused[:5])} bind nothing: "
            "no circuit has an input or parameter of that name; check the spelling"
        )
    return texts


def _parameter_values(parameters: Any) -> dict[str, float]:
    """Parameter values by name, each a finite real number."""
    if not isinstance(parameters, Mapping):
        raise ValidationError(
            f"parameters={brief(parameters)}: expected a mapping of names to numbers, "
            "e.g. {'theta': 0.5}"
        )
    if len(parameters) > _MAX_BOUND_PARAMETERS:
        raise ValidationError(
            f"parameters: {len(parameters)} names; at most {_MAX_BOUND_PARAMETERS} may be bound"
        )
    out = {}
    for name, value in parameters.items():
        if not isinstance(name, str) or not name:
            raise ValidationError(f"parameters: the name {brief(name)!r} is not a name (str)")
        out[name] = finite_number(f"parameters[{brief(name, 40)!r}]", value)
    return out
