"""Which gates are Qiskit's standard ones, and keeping a user's own gates their own.

A gate is standard when its *class* is the standard class, never because of its name:
a user may define a gate called ``h`` that is really an X. Such a gate keeps its own
definition under a name no standard gate, device or transpiler rule answers to
(``h`` becomes ``h_1``), on the way out (the OpenQASM writer) and on the way in (the
parser), so it is decomposed from what the user wrote and never run as the gate it is
named after.
"""

from __future__ import annotations

import functools
import math
import numbers
from typing import Any

import numpy as np
from qiskit import QuantumCircuit, qasm2
from qiskit.circuit import (
    CONTROL_FLOW_OP_NAMES,
    BreakLoopOp,
    ContinueLoopOp,
    ControlFlowOp,
    ForLoopOp,
    Gate,
    Instruction,
    ParameterExpression,
    SwitchCaseOp,
    WhileLoopOp,
)
from qiskit.circuit.classical import expr
from qiskit.circuit.library import get_standard_gate_name_mapping

from qrt_ray.dynamic import MAX_WHILE_ITERATIONS
from qrt_ray.errors import ValidationError, brief

STANDARD: dict[str, Any] = get_standard_gate_name_mapping()
_LEGACY = {ci.name: ci.constructor for ci in qasm2.LEGACY_CUSTOM_INSTRUCTIONS}
# names a user's gate may not keep: what devices, the transpiler's translation rules or
# the QASM 2 writer take for a standard operation
RESERVED = (
    frozenset(STANDARD)
    | frozenset(_LEGACY)
    | CONTROL_FLOW_OP_NAMES
    | {
        "barrier",
        "measure",
        "reset",
        "delay",
        "unitary",
        "mcx",
        "U",
        "CX",
    }
)
_PLAIN = frozenset({"barrier", "measure", "reset", "delay", "global_phase"})


def _standard_instructions() -> tuple[qasm2.CustomInstruction, ...]:
    """qelib1's gates plus every other Qiskit standard gate, as their real classes.

    QASM 2 writes gates outside qelib1 (ecr, rzx, ...) as ``gate`` definitions. Parsed
    back naively they become look-alike custom gates that the transpiler cannot flip
    or match to the device's native gate, so a circuit that round-trips would fail to
    compile. Mapping the names back to the standard classes keeps them standard; the
    parser does so only for a definition that is exactly the one the writer wrote
    (:func:`instructions_for`).
    """
    legacy = list(qasm2.LEGACY_CUSTOM_INSTRUCTIONS)
    known = {ci.name for ci in legacy}
    extra = []
    for name, gate in STANDARD.items():
        if name in known or not isinstance(gate, Gate) or gate.num_qubits == 0:
            continue
        extra.append(qasm2.CustomInstruction(name, len(gate.params), gate.num_qubits, type(gate)))
    return (*legacy, *extra)


QASM2_INSTRUCTIONS = _standard_instructions()


def _qelib1_gates() -> frozenset[str]:
    """Names that mean the same gate in qelib1.inc and in Qiskit's standard library."""
    return frozenset(
        ci.name
        for ci in qasm2.LEGACY_CUSTOM_INSTRUCTIONS
        if ci.name != "delay"
        and ci.name in STANDARD
        and STANDARD[ci.name].base_class is ci.constructor
    )


QELIB1 = _qelib1_gates()
# per standard gate outside qelib1: (its name in a QASM 2 call, the gate definitions
# it needs as (name, line)), or None where QASM 2 cannot carry it this way
_DEFINITIONS: dict[str, tuple[str, tuple[tuple[str, str], ...]] | None] = {}


def is_standard(op: Any) -> bool:
    """Whether ``op`` is the standard operation its name says (compared by class)."""
    name = op.name
    found = STANDARD.get(name)
    if found is not None:
        return op.base_class is found.base_class
    legacy = _LEGACY.get(name)
    return legacy is not None and op.base_class is getattr(legacy, "base_class", legacy)


def trusted(op: Any) -> bool:
    """Whether ``op`` is what its name says: a standard gate, or a gate of Qiskit's
    library (``UnitaryGate``, ``MCXGate``, ...), whose names the library itself sets.

    Plain ``Gate``/``Instruction`` objects, controlled or parsed user gates and user
    subclasses are not: their names are whatever the user chose.
    """
    if op.name in _PLAIN or is_standard(op):
        return True
    return type(op).__module__.startswith("qiskit.circuit.library")


def standard_definition(op: Any) -> tuple[str, tuple[tuple[str, str], ...]] | None:
    """How QASM 2 carries a standard gate outside qelib1 (ecr, rzx, iswap, ...).

    Qiskit's exporter writes these gates' definitions with generic parameters
    (``gate rzx(param0) q0,q1 { ... }``), so each is exported once, from a sample
    instance, and reused; the parser maps exactly these definitions back to the
    standard classes. None for a gate that is not the standard one of its name.
    """
    name = op.name
    if name not in STANDARD or op.base_class is not STANDARD[name].base_class:
        return None  # a user's own gate that merely shares a standard name
    return _definition_of(name)


def _definition_of(name: str) -> tuple[str, tuple[tuple[str, str], ...]] | None:
    if name not in _DEFINITIONS:
        _DEFINITIONS[name] = None
        gate = STANDARD.get(name)
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
    return _DEFINITIONS[name]


@functools.cache
def canonical_lines() -> dict[str, str]:
    """Every definition line the writer emits for standard gates, as written, mapped to
    the name of the gate it defines."""
    out: dict[str, str] = {}
    for name in STANDARD:
        if name in QELIB1:
            continue
        found = _definition_of(name)
        for gate_name, line in found[1] if found else ():
            out[line] = gate_name
    return out


@functools.cache
def canonical_definitions() -> dict[str, str]:
    """Every definition line the writer emits for standard gates, keyed by gate name,
    as the pre-scan normalizes definitions (tokens joined by single spaces)."""
    from qrt_ray.intake.scan import tokens

    return {
        name: " ".join(t.text for t in tokens(line)) for line, name in canonical_lines().items()
    }


def instructions_for(
    defined: set[str], definitions: dict[str, str], includes: set[str]
) -> list[Any]:
    """The standard gates a QASM 2 parse may map names to, given the text's own gates.

    A name the text defines itself maps to the standard class only when the text is
    what the writer emits: it includes qelib1 (so the gates the definitions call are
    qelib1's) and every gate it defines is exactly the writer's definition of a
    standard gate. Otherwise no name it defines is mapped, and each stays the user's
    gate (the parser would swap in the standard class).
    """
    if not defined:
        return list(QASM2_INSTRUCTIONS)
    canon = canonical_definitions()
    writers = "qelib1.inc" in includes and all(
        name in definitions and canon.get(name) == definitions[name] for name in defined
    )
    return [ci for ci in QASM2_INSTRUCTIONS if ci.name not in defined or writers]


# -- a user's own gates keep their own definitions ------------------------------------


def rename_impostors(circuit: QuantumCircuit) -> QuantumCircuit:
    """``circuit`` with every non-standard gate that has a reserved name renamed.

    Definitions are searched too. Returns ``circuit`` itself when nothing needs a new
    name, else a copy.
    """
    renamer = _Renamer(circuit)
    data = [renamer.operation(inst.operation) for inst in circuit.data]
    if not renamer.changed:
        return circuit
    out = circuit.copy_empty_like()
    for inst, op in zip(circuit.data, data, strict=True):
        out._append(inst.replace(operation=op))
    return out


class _Renamer:
    def __init__(self, circuit: QuantumCircuit) -> None:
        self.taken = set(RESERVED) | {inst.operation.name for inst in circuit.data}
        self.names: dict[str, str] = {}
        self.circuits: dict[int, tuple[QuantumCircuit, QuantumCircuit]] = {}
        self.changed = False

    def operation(self, op: Any) -> Any:
        if isinstance(op, ControlFlowOp):  # user gates inside its blocks are renamed too
            blocks = [self.circuit(block) for block in op.blocks]
            if all(a is b for a, b in zip(blocks, op.blocks, strict=True)):
                return op
            self.changed = True
            return op.replace_blocks(blocks)
        if trusted(op) or not isinstance(op, Instruction):
            return op
        definition = op.definition
        clean = definition if definition is None else self.circuit(definition)
        name = self.new_name(op.name) if op.name in RESERVED else op.name
        if clean is definition and name == op.name:
            return op
        self.changed = True
        # the definition is bound to this op's parameters already: the new op needs none
        # (and some, such as a controlled power's matrix, are no valid gate parameter)
        if isinstance(op, Gate):
            new: Instruction = Gate(name, op.num_qubits, [], label=op.label)
        else:
            new = Instruction(name, op.num_qubits, op.num_clbits, [])
        new.definition = clean
        return new

    def circuit(self, definition: QuantumCircuit) -> QuantumCircuit:
        key = id(definition)
        if key not in self.circuits:  # keeps the original alive, so ids stay unique
            data = [self.operation(inst.operation) for inst in definition.data]
            if all(a is b.operation for a, b in zip(data, definition.data, strict=True)):
                clean = definition
            else:
                clean = definition.copy_empty_like()
                for inst, op in zip(definition.data, data, strict=True):
                    clean._append(inst.replace(operation=op))
            self.circuits[key] = (definition, clean)
        return self.circuits[key][1]

    def new_name(self, name: str) -> str:
        if name not in self.names:
            k = 1
            while f"{name}_{k}" in self.taken:
                k += 1
            self.names[name] = f"{name}_{k}"
            self.taken.add(self.names[name])
        return self.names[name]


# -- what a device can run ------------------------------------------------------------


def check_runnable(circuit: QuantumCircuit, arg: str, max_operations: int = 200_000) -> None:
    """Refuse what no device of the farm can run, with the reason.

    Opaque gates (no definition to decompose), angles that are not finite numbers, a
    ``switch`` on a classical expression, and control flow whose loops would run more
    than ``max_operations`` operations per shot (a ``while`` loop counts as
    :data:`~qrt_ray.dynamic.MAX_WHILE_ITERATIONS` passes, the most it makes).

    Raises:
        ValidationError: naming ``arg``, the operation and what to do.
    """
    checker = _Checker(arg)
    operations = checker.circuit(circuit)
    if operations > max_operations:
        raise ValidationError(
            f"{arg}: its loops run about {operations:,} operations per shot; the limit is "
            f"{max_operations:,} (intake.max_gates): run fewer iterations"
        )


class _Checker:
    def __init__(self, arg: str) -> None:
        self.arg = arg
        self.seen: dict[int, QuantumCircuit] = {}

    def circuit(self, circuit: QuantumCircuit, inside: str = "") -> int:
        """Check ``circuit``; returns the operations one pass of it runs (loops counted
        as often as they run)."""
        if id(circuit) in self.seen:
            return 1  # a definition checked already (gate definitions are not loops)
        self.seen[id(circuit)] = circuit
        if not _finite(circuit.global_phase):
            where = f" of gate {brief(inside, 40)!r}" if inside else ""
            raise ValidationError(
                f"{self.arg}: the global phase{where} is not a finite number "
                f"({brief(circuit.global_phase, 30)}); angles must be finite"
            )
        return sum(self.operation(inst.operation, inside) for inst in circuit.data)

    def control_flow(self, op: ControlFlowOp, inside: str) -> int:
        """Check every block; returns the operations the op runs at most."""
        if isinstance(op, SwitchCaseOp) and isinstance(op.target, expr.Expr):
            raise ValidationError(
                f"{self.arg}: a switch on a classical expression cannot be carried to the "
                "devices; switch on a register or a bit, or write it as if/else"
            )
        passes = 1
        if isinstance(op, ForLoopOp):
            passes = len(op.params[0])
        elif isinstance(op, WhileLoopOp):
            passes = MAX_WHILE_ITERATIONS
        inner = [self.circuit(block, inside) for block in op.blocks]
        # each pass costs the simulator a step, even with an empty body
        return 1 + passes * max([1, *inner])

    def operation(self, op: Any, inside: str) -> int:
        where = f" (inside gate {brief(inside, 40)!r})" if inside else ""
        if isinstance(op, ControlFlowOp):
            return self.control_flow(op, inside)
        for p in op.params:
            if not _finite(p):
                raise ValidationError(
                    f"{self.arg}: {brief(op.name, 40)}{where} has a parameter that is not a "
                    f"finite number ({brief(p, 30)}); angles must be finite"
                )
        if trusted(op) or isinstance(op, (BreakLoopOp, ContinueLoopOp)):
            return 1
        definition = getattr(op, "definition", None)
        if definition is None:
            raise ValidationError(
                f"{self.arg}: gate {brief(op.name, 40)!r}{where} is opaque (declared without a "
                "definition), so no device can run it; define it from standard gates"
            )
        self.circuit(definition, op.name)
        return 1


def _finite(p: Any) -> bool:
    """Whether a parameter is a finite number (unbound and non-numeric ones pass: they
    are judged elsewhere)."""
    try:
        if isinstance(p, ParameterExpression):
            return bool(p.parameters) or math.isfinite(abs(complex(p)))
        if isinstance(p, numbers.Number):
            return math.isfinite(abs(complex(p)))  # type: ignore[arg-type]
        if isinstance(p, np.ndarray):
            return bool(np.isfinite(p).all()) if p.dtype.kind in "fciu" else True
    except (TypeError, ValueError, OverflowError):
        return False
    return True
