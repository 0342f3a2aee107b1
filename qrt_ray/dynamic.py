"""Dynamic circuits: mid-circuit measurement, reset and classical control flow.

The devices run them as they are (Aer simulates ``if_else``, ``for_loop`` and
``switch_case`` with the device's noise), after two rewrites that keep what each shot
does:

- :func:`bound_while_loops`: a ``while`` loop becomes a ``for`` loop of at most
  :data:`MAX_WHILE_ITERATIONS` passes that leaves when the condition fails. A loop
  whose condition never fails would otherwise hold its device for ever; now it ends,
  and its shot reads what the last pass measured. The devices' targets have no
  ``while_loop`` either, so the rewrite is also what lets it compile.
- :func:`switch_to_if_else`: a ``switch`` becomes ``if``/``else`` chains, which
  OpenQASM 3 readers take (the farm carries circuits as OpenQASM text).

:func:`dynamic_reason` says why a circuit is dynamic (None when it is not): the
mitigations that assume every measurement is final (twirling, readout inversion,
dynamical decoupling, gate folding) refuse such circuits with that reason.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from typing import Any

from qiskit import QuantumCircuit
from qiskit.circuit import (
    BreakLoopOp,
    ClassicalRegister,
    Clbit,
    ContinueLoopOp,
    ControlFlowOp,
    ForLoopOp,
    IfElseOp,
    SwitchCaseOp,
    WhileLoopOp,
)
from qiskit.circuit.classical import expr
from qiskit.circuit.controlflow.switch_case import CASE_DEFAULT
from qiskit.transpiler import Target

from qrt_ray.errors import ValidationError

# passes a while loop may make per shot before it is left
MAX_WHILE_ITERATIONS = 1000


def with_loop_exits(target: Target) -> Target:
    """``target`` (changed in place) with ``break_loop`` and ``continue_loop`` where it
    has ``for_loop``: the devices' while loops run as for loops that break, and users'
    loops may break or continue too. Returns ``target``."""
    if "for_loop" in target:
        for name, op in (("break_loop", BreakLoopOp), ("continue_loop", ContinueLoopOp)):
            if name not in target:
                target.add_instruction(op, name=name)
    return target


def dynamic_reason(circuit: QuantumCircuit) -> str | None:
    """Why ``circuit`` is dynamic (control flow, reset, a measurement followed by more
    work on its qubit), or None when every measurement is final and nothing is reset."""
    done: set[object] = set()  # qubits measured: any later operation on them is mid-circuit
    for inst in circuit.data:  # names, not operations: those build a Python gate each
        name = inst.name
        if inst.is_control_flow():
            return f"it has control flow ({name})"
        if name == "reset":
            return "it resets a qubit"
        if name == "barrier":
            continue
        if any(q in done for q in inst.qubits):
            return "it measures a qubit before the circuit's end"
        if name == "measure":
            done.update(inst.qubits)
    return None


def _condition(target: object, value: object) -> expr.Expr:
    """``target == value`` as a classical expression (a bit compares to a bool)."""
    if isinstance(target, expr.Expr):
        return target if value is None else expr.equal(target, value)  # type: ignore[arg-type]
    if isinstance(target, Clbit):
        return expr.lift(target) if bool(value) else expr.logic_not(target)
    assert isinstance(target, ClassicalRegister)
    return expr.equal(target, int(value))  # type: ignore[call-overload]


def _map_blocks(
    circuit: QuantumCircuit, rewrite: Callable[[ControlFlowOp], ControlFlowOp]
) -> QuantumCircuit:
    """``circuit`` with ``rewrite(op)`` applied to every control-flow op, innermost first."""
    if not circuit.has_control_flow_op():
        return circuit
    out = circuit.copy_empty_like()
    for inst in circuit.data:
        op = inst.operation
        if isinstance(op, ControlFlowOp):
            op = op.replace_blocks([_map_blocks(b, rewrite) for b in op.blocks])
            op = rewrite(op)
        out._append(inst.replace(operation=op))
    return out


def bound_while_loops(
    circuit: QuantumCircuit, max_iterations: int = MAX_WHILE_ITERATIONS
) -> QuantumCircuit:
    """``circuit`` with every ``while`` loop made a ``for`` loop of at most
    ``max_iterations`` passes, each of which first leaves if the condition fails."""

    def rewrite(op: ControlFlowOp) -> ControlFlowOp:
        if not isinstance(op, WhileLoopOp):
            return op
        (body,) = op.blocks
        cond = op.condition
        test = _condition(*cond) if isinstance(cond, tuple) else _condition(cond, None)
        leave = body.copy_empty_like()
        leave.append(BreakLoopOp(body.num_qubits, body.num_clbits), body.qubits, body.clbits)
        guarded = body.copy_empty_like()
        guarded.append(IfElseOp(expr.logic_not(test), leave), body.qubits, body.clbits)
        guarded.compose(body, inplace=True)
        return ForLoopOp(range(max_iterations), None, guarded, label=op.label)

    return _map_blocks(circuit, rewrite)


def switch_to_if_else(circuit: QuantumCircuit) -> QuantumCircuit:
    """``circuit`` with every ``switch`` on a register or a bit written as a chain of
    ``if (target == value)`` / ``else`` (a case of several values repeats its body once
    per value), the condition form OpenQASM 3 readers take.

    Raises:
        ValidationError: a ``switch`` on a classical expression.
    """

    def rewrite(op: ControlFlowOp) -> ControlFlowOp:
        if not isinstance(op, SwitchCaseOp):
            return op
        target = op.target
        if isinstance(target, expr.Expr):
            raise ValidationError(
                "a switch on a classical expression cannot be carried to the devices; "
                "switch on a register or a bit, or write it as if/else"
            )
        default = None
        arms: list[tuple[int, QuantumCircuit]] = []
        for values, body in op.cases_specifier():
            for value in values:
                if value is CASE_DEFAULT:
                    default = body
                else:
                    arms.append((int(value), body))
        chain: ControlFlowOp | None = None
        for value, body in reversed(arms):
            if chain is None:
                chain = IfElseOp((target, value), body, default)
            else:
                rest = body.copy_empty_like()
                rest.append(chain, body.qubits, body.clbits)
                chain = IfElseOp((target, value), body, rest)
        if chain is None:  # only a default case: it always runs (target == target)
            assert default is not None
            return IfElseOp(expr.equal(expr.lift(True), expr.lift(True)), default)
        return chain

    return _map_blocks(circuit, rewrite)


def walk(circuit: QuantumCircuit) -> Iterator[tuple[Any, tuple[int, ...], tuple[int, ...]]]:
    """Every operation with the indices, in ``circuit``, of its qubits and clbits;
    control-flow blocks are entered (each block once: a loop's body counts as one pass,
    and both branches of an ``if``)."""
    yield from _walk(circuit, tuple(range(circuit.num_qubits)), tuple(range(circuit.num_clbits)))


def _walk(
    circuit: QuantumCircuit, qmap: tuple[int, ...], cmap: tuple[int, ...]
) -> Iterator[tuple[Any, tuple[int, ...], tuple[int, ...]]]:
    qubit = {q: qmap[i] for i, q in enumerate(circuit.qubits)}
    clbit = {c: cmap[i] for i, c in enumerate(circuit.clbits)}
    for inst in circuit.data:
        op = inst.operation
        qs = tuple(qubit[q] for q in inst.qubits)
        cs = tuple(clbit[c] for c in inst.clbits)
        if isinstance(op, ControlFlowOp):
            for block in op.blocks:  # a block's bits are the op's, in order
                yield from _walk(block, qs, cs)
            continue
        yield op, qs, cs
