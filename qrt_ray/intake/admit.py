"""The intake gate: every circuit a user gives the farm passes here, and only here.

Text goes through :func:`parse_qasm`: the pre-scan (:mod:`qrt_ray.intake.scan`)
refuses what would cost too much or read a file, then the OpenQASM 2 or 3 parser runs
with no include path at all, then the circuit is checked for what no device can run.
Circuit objects go through :func:`check_circuit`. Anything a third-party parser
raises (a Rust panic included) becomes a :class:`~qrt_ray.errors.ValidationError`
that names the argument. The scheduler runs this in worker processes with a deadline
and a memory cap (:mod:`qrt_ray.intake.pool`); clients run it in process, to fail
early.
"""

from __future__ import annotations

import asyncio
import hashlib
import math
from collections.abc import Mapping, Sequence
from typing import Protocol

from qiskit import QuantumCircuit, qasm2, qasm3

from qrt_ray.dynamic import walk
from qrt_ray.errors import QrtError, ValidationError, brief
from qrt_ray.intake.gates import check_runnable, instructions_for, rename_impostors
from qrt_ray.intake.limits import IntakeLimits
from qrt_ray.intake.scan import QubitLimit, ScanReport, scan
from qrt_ray.profile import CircuitProfile, profile_circuit

DEFAULT_LIMITS = IntakeLimits()
# Text the scheduler admitted was checked against the farm's limits then; parsing it
# again (compile workers) keeps every other rule (no include path, user gates keep
# their definitions, the same standard classes) without judging its size twice.
_ADMITTED = IntakeLimits.model_construct(
    **{
        name: 2**62 if field.annotation is int else float("inf")
        for name, field in IntakeLimits.model_fields.items()
        if field.annotation in (int, float)
    }
)


def parse_qasm(
    text: str,
    *,
    arg: str = "circuit",
    limits: IntakeLimits | None = None,
    qubit_limit: QubitLimit | None = None,
    bind: Mapping[str, float] | None = None,
    bound: set[str] | None = None,
) -> QuantumCircuit:
    """Parse a user's OpenQASM 2 or 3 text into a circuit the farm can run.

    Args:
        text: the OpenQASM source.
        arg: how error messages name this circuit (``circuits[3]``).
        limits: the intake limits (default: the built-in defaults).
        qubit_limit: the most qubits allowed and why (default ``limits.max_qubits``).

    Returns:
        The circuit, with any user gate that shares a standard gate's name renamed.

    Raises:
        ValidationError: the text is empty, passes a limit, includes a file, does not
            parse, or asks for something no device runs; the message names ``arg``.
    """
    limits = limits or DEFAULT_LIMITS
    report = _scan(text, arg, limits, qubit_limit)
    circuit = _parse(text, report, arg)
    if bind:
        circuit = bind_named(circuit, bind, bound)
    return check_circuit(circuit, arg=arg, limits=limits, qubit_limit=qubit_limit)


def bind_named(
    circuit: QuantumCircuit, values: Mapping[str, float], bound: set[str] | None = None
) -> QuantumCircuit:
    """``circuit`` with its parameters named in ``values`` bound to them (an OpenQASM 3
    ``input float theta;`` is a parameter named ``theta``); the names it bound are
    added to ``bound``."""
    found = {p: float(values[p.name]) for p in circuit.parameters if p.name in values}
    if bound is not None:
        bound.update(p.name for p in found)
    return circuit.assign_parameters(found) if found else circuit


def parse_admitted(text: str, *, arg: str = "circuit") -> QuantumCircuit:
    """Parse text the scheduler already admitted, exactly as :func:`parse_qasm` did.

    Raises:
        ValidationError: as :func:`parse_qasm` (it passed once, so only a text that was
            never admitted fails).
    """
    return parse_qasm(text, arg=arg, limits=_ADMITTED)


def check_circuit(
    circuit: QuantumCircuit,
    *,
    arg: str = "circuit",
    limits: IntakeLimits | None = None,
    qubit_limit: QubitLimit | None = None,
) -> QuantumCircuit:
    """Check a circuit object (parsed or given) against what the farm can run.

    Returns:
        ``circuit``, or a copy whose user gates named like standard ones are renamed.

    Raises:
        ValidationError: too wide, no qubits or measurements, unbound parameters,
            control flow, opaque gates or non-finite angles.
    """
    limits = limits or DEFAULT_LIMITS
    limit = qubit_limit or QubitLimit(limits.max_qubits, "intake.max_qubits")
    if circuit.num_qubits == 0:
        raise ValidationError(f"{arg}: the circuit has no qubits")
    if circuit.num_qubits > limit.count:
        raise limit.error(
            f"{arg}: {circuit.num_qubits} qubits; the limit is {limit.count} qubits: {limit.why}"
        )
    if circuit.num_clbits > limits.max_clbits:
        raise ValidationError(
            f"{arg}: {circuit.num_clbits} classical bits; the limit is {limits.max_clbits} "
            "(intake.max_clbits)"
        )
    if len(circuit.data) > limits.max_gates:
        raise ValidationError(
            f"{arg}: {len(circuit.data)} operations; the limit is {limits.max_gates} "
            "(intake.max_gates): split the circuit"
        )
    if circuit.parameters:
        params = sorted(circuit.parameters, key=str)
        names = ", ".join(brief(p.name, 20) for p in params[:5])
        first = brief(params[0].name, 20)
        raise ValidationError(
            f"{arg}: unbound parameters ({names}); give each a value by name: "
            f"`qrt submit --param {first}=0.5`, submit(..., parameters={{'{first}': 0.5}}), "
            "or circuit.assign_parameters()"
        )
    if not _plain(circuit):
        try:
            circuit = rename_impostors(circuit)
            check_runnable(circuit, arg, limits.max_gates)
        except QrtError:
            raise
        except Exception as exc:  # a gate whose definition cannot be built, ...
            raise ValidationError(
                f"{arg}: the circuit's gates could not be read ({type(exc).__name__}: {brief(exc)})"
            ) from None
    if not any(inst.name == "measure" for inst in circuit.data) and not any(
        op.name == "measure"
        for op, _, _ in walk(circuit)  # measured inside control flow
    ):
        raise ValidationError(
            f"{arg}: the circuit measures nothing, so it would return no counts; "
            "add circuit.measure_all() or explicit measurements"
        )
    return circuit


def circuit_hash(text: str) -> str:
    """The circuit's identity: sha256 of its QASM text."""
    return hashlib.sha256(text.encode()).hexdigest()


def describe(
    text: str, *, arg: str, limits: IntakeLimits, qubit_limit: QubitLimit | None = None
) -> tuple[str, CircuitProfile]:
    """What the scheduler needs of an admitted circuit: its hash and its profile.

    Raises:
        ValidationError, PlacementError: as :func:`parse_qasm`.
    """
    circuit = parse_qasm(text, arg=arg, limits=limits, qubit_limit=qubit_limit)
    return circuit_hash(text), profile_circuit(circuit)


def _plain(circuit: QuantumCircuit) -> bool:
    """Whether every operation is a standard gate with finite angles, a measurement, a
    reset or a barrier: nothing to rename or refuse (one cheap pass, no Python gate
    objects built for standard gates)."""
    if not (isinstance(circuit.global_phase, float) and math.isfinite(circuit.global_phase)):
        return False
    for inst in circuit.data:
        if inst.is_standard_gate():
            if not all(isinstance(p, float) and math.isfinite(p) for p in inst.params):
                return False  # the full check says what is wrong
        elif inst.name not in ("measure", "barrier", "reset"):
            return False
    return True


def _scan(text: str, arg: str, limits: IntakeLimits, qubit_limit: QubitLimit | None) -> ScanReport:
    if not isinstance(text, str):
        raise ValidationError(f"{arg}: expected OpenQASM text (str), got {type(text).__name__}")
    if len(text) > limits.max_qasm_bytes:  # a character is at least a byte
        raise ValidationError(
            f"{arg}: {len(text)} characters of OpenQASM; the limit is {limits.max_qasm_bytes} "
            "bytes (intake.max_qasm_bytes): split the circuit into several jobs"
        )
    try:
        text.encode("utf-8")
    except UnicodeEncodeError as exc:
        raise ValidationError(
            f"{arg}: not valid UTF-8 text (a lone surrogate at character {exc.start}); "
            "send the text as it was read, decoded as UTF-8"
        ) from None
    if not text.strip():
        raise ValidationError(f"{arg}: empty OpenQASM text; pass a circuit or QASM source")
    try:
        return scan(text, limits, qubit_limit)
    except QrtError as exc:
        raise type(exc)(f"{arg}: {exc}") from None


def _parse(text: str, report: ScanReport, arg: str) -> QuantumCircuit:
    version = report.version
    try:
        if version == 3:
            return qasm3.loads(text)
        return qasm2.loads(
            text,
            include_path=(),  # nothing is ever looked up on disk
            custom_instructions=instructions_for(
                report.defined, report.definitions, report.includes
            ),
        )
    except (KeyboardInterrupt, SystemExit):
        raise
    except RecursionError:
        raise ValidationError(
            f"{arg}: the OpenQASM {version} parser ran out of stack: an expression or "
            "definition is nested too deep; simplify it"
        ) from None
    except MemoryError:
        raise ValidationError(
            f"{arg}: the OpenQASM {version} parser ran out of memory; the circuit is too "
            "large for the intake (intake.memory_mb)"
        ) from None
    except ZeroDivisionError:
        raise ValidationError(
            f"{arg}: division by zero in an expression of the OpenQASM {version} text"
        ) from None
    except BaseException as exc:  # parsers' own errors, and Rust panics (BaseException)
        raise ValidationError(f"{arg}: {_describe_parse_error(text, version, exc)}") from None


def _describe_parse_error(text: str, version: int, exc: BaseException) -> str:
    lines = str(exc).strip().splitlines()
    first = brief(lines[0], 200) if lines else type(exc).__name__
    message = f"malformed OpenQASM {version}: {first}"
    if not text.lstrip().startswith("OPENQASM"):
        message += "; start the text with 'OPENQASM 2.0;' or 'OPENQASM 3.0;'"
    elif type(exc).__name__ == "PanicException":
        message += " (the parser failed on this text; check the line named)"
    return message


class Intake(Protocol):
    """Where the scheduler has circuits checked: never on its own event loop."""

    async def describe(
        self, texts: Sequence[str], args: Sequence[str], qubit_limit: QubitLimit
    ) -> list[tuple[str, CircuitProfile]]:
        """(sha256, profile) of each text, in order.

        Raises:
            ValidationError, PlacementError: the first text refused, named by its arg.
        """
        ...


class InlineIntake:
    """The intake gate in a thread of this process: no deadline, no memory cap.

    For tests and tools; a farm's scheduler uses :class:`~qrt_ray.intake.pool.IntakePool`.
    """

    def __init__(self, limits: IntakeLimits | None = None) -> None:
        self.limits = limits or DEFAULT_LIMITS

    async def describe(
        self, texts: Sequence[str], args: Sequence[str], qubit_limit: QubitLimit
    ) -> list[tuple[str, CircuitProfile]]:
        def run() -> list[tuple[str, CircuitProfile]]:
            return [
                describe(text, arg=arg, limits=self.limits, qubit_limit=qubit_limit)
                for text, arg in zip(texts, args, strict=True)
            ]

        return await asyncio.to_thread(run)
