"""Construct: PUBs become the circuits a farm job runs (pure; runs in Ray tasks).

A parametrized circuit crosses to a task as OpenQASM 3 text whose parameters are
renamed ``_qrt_p0, _qrt_p1, ...`` (the order of ``circuit.parameters``), with its
parameter values as raw float64 bytes: data only, never a pickled object. The task
binds each parameter set and, for the estimator, folds the circuit for ZNE, rotates
it into each measurement basis and measures the basis' qubits.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
from qiskit import QuantumCircuit, qasm3
from qiskit.circuit import ControlFlowOp, Gate, Parameter

from qrt_ray.circuits import fast_qasm2, loads_qasm2, to_qasm
from qrt_ray.dynamic import switch_to_if_else
from qrt_ray.errors import ValidationError
from qrt_ray.mitigation.observables import MeasurementBasis
from qrt_ray.mitigation.twirling import measure_with_flips
from qrt_ray.mitigation.zne import fold_gates, two_qubit_form

_CANONICAL = re.compile(r"_qrt_p(\d+)\Z")
# parameter sets bound per Ray task in a large sweep
SWEEP_CHUNK = 256


@dataclass(frozen=True, slots=True)
class Template:
    """A circuit whose parameters are renamed to canonical names, as QASM 3 text."""

    qasm: str
    num_parameters: int


def make_template(circuit: QuantumCircuit) -> Template:
    """Rename ``circuit``'s parameters to ``_qrt_p{i}`` and export it as OpenQASM 3.

    A circuit without parameters goes as OpenQASM 2 where it can: a task parses that
    in well under a millisecond, where OpenQASM 3 takes about 8 ms (and 170 ms the
    first time in a process).
    """
    if not circuit.parameters:
        text = fast_qasm2(circuit)
        if text is not None:
            return Template(text, 0)
    rename = {p: Parameter(f"_qrt_p{i}") for i, p in enumerate(circuit.parameters)}
    renamed = circuit.assign_parameters(rename) if rename else circuit
    return Template(qasm3.dumps(inline_instructions(renamed)), len(rename))


# operations OpenQASM 3 writes as they are, though they are not gates
_NOT_INLINED = frozenset({"measure", "reset", "barrier", "delay"})
# nesting of composite instructions unfolded before giving up (a deeper one is refused
# by the exporter, with its name)
_MAX_INLINE_ROUNDS = 16


def inline_instructions(circuit: QuantumCircuit) -> QuantumCircuit:
    """``circuit`` with composite non-gate instructions replaced by their definitions.

    ``qc.append(other_circuit, qubits)`` adds an ``Instruction`` (not a ``Gate``) when
    the appended circuit is not known to be unitary, and OpenQASM 3 cannot write a
    parametrized one; its definition can.
    """
    for _ in range(_MAX_INLINE_ROUNDS):
        names = {
            inst.operation.name
            for inst in circuit.data
            if not isinstance(inst.operation, (Gate, ControlFlowOp))
            and inst.operation.name not in _NOT_INLINED
            and inst.operation.definition is not None
        }
        if not names:
            break
        circuit = circuit.decompose(gates_to_decompose=sorted(names))
    return circuit


def load_template(template: Template) -> tuple[QuantumCircuit, list[Parameter]]:
    """Parse a template back; returns the circuit and its parameters in canonical order."""
    if template.qasm.startswith("OPENQASM 2"):
        if template.num_parameters:
            raise ValidationError("an OpenQASM 2 template cannot carry parameters")
        return loads_qasm2(template.qasm), []
    circuit = qasm3.loads(template.qasm)
    params: list[Parameter | None] = [None] * template.num_parameters
    for p in circuit.parameters:
        m = _CANONICAL.match(p.name)
        if m is None or int(m.group(1)) >= template.num_parameters:
            raise ValidationError(f"template parameter {p.name!r} is not canonical")
        params[int(m.group(1))] = p
    if any(p is None for p in params):
        raise ValidationError("a template parameter was lost in the OpenQASM 3 round trip")
    return circuit, params  # type: ignore[return-value]


def bind(
    circuit: QuantumCircuit, params: Sequence[Parameter], values: np.ndarray
) -> QuantumCircuit:
    """``circuit`` with ``values`` (one per parameter) bound."""
    if not params:
        return circuit
    return circuit.assign_parameters(dict(zip(params, values.tolist(), strict=True)))


# the register the estimator measures each basis into (a dynamic circuit keeps its own)
OBSERVABLE_REGISTER = "qrt_obs"


def estimator_view(circuit: QuantumCircuit, arg: str, dynamic: bool) -> QuantumCircuit:
    """The circuit the estimator measures observables after.

    Final measurements are dropped, as Qiskit's backend estimator does (a circuit
    written for a sampler can be estimated as it is): the estimator measures each
    observable itself. A static circuit loses its classical bits too; a dynamic one
    (mid-circuit measurement, reset, control flow) keeps them, since its branches read
    them. ``dynamic``: whether it is (:func:`~qrt_ray.dynamic.dynamic_reason`).
    """
    if not dynamic:
        return without_classical_bits(circuit, arg)
    return switch_to_if_else(_drop_final_measurements(circuit))


def _drop_final_measurements(circuit: QuantumCircuit) -> QuantumCircuit:
    """``circuit`` without the measurements after which nothing touches their qubit or
    reads their bit (Qiskit's ``remove_final_measurements`` also drops a measurement
    whose bit a later branch reads)."""
    later: set[object] = set()  # qubits and clbits something after this point uses
    keep = []
    for inst in reversed(circuit.data):
        bits = (*inst.qubits, *inst.clbits)
        final = inst.name == "measure" and not any(b in later for b in bits)
        if not final:
            keep.append(inst)
            later.update(bits)
    if len(keep) == len(circuit.data):
        return circuit
    out = circuit.copy_empty_like()
    for inst in reversed(keep):
        out._append(inst)
    return out


def without_classical_bits(circuit: QuantumCircuit, arg: str) -> QuantumCircuit:
    """The estimator's view of a static circuit: no measurements and no classical bits.

    Raises:
        ValidationError: the circuit measures mid-circuit, resets or conditions on
            classical bits.
    """
    if any(inst.operation.name == "measure" for inst in circuit.data):
        circuit = circuit.remove_final_measurements(inplace=False)
    out = QuantumCircuit(circuit.num_qubits, global_phase=circuit.global_phase)
    index = {q: i for i, q in enumerate(circuit.qubits)}
    for inst in circuit.data:
        if inst.clbits or inst.name in ("measure", "reset"):
            raise ValidationError(
                f"{arg}: the Estimator takes circuits without mid-circuit measurements, "
                f"resets or control flow ({inst.name!r} found): it measures each "
                "observable itself (final measurements are dropped). Run dynamic "
                "circuits with the Sampler"
            )
        out.append(inst.operation, [index[q] for q in inst.qubits])
    return out


def _values(values: bytes, count: int, n_params: int) -> np.ndarray:
    """(count, n_params) matrix from raw float64 bytes (0 columns: no parameters)."""
    array = np.frombuffer(values, dtype=np.float64)
    if array.size != count * n_params:
        raise ValidationError(
            f"parameter values hold {array.size} numbers, expected {count} x {n_params}"
        )
    return array.reshape(count, n_params)


@dataclass(frozen=True, slots=True)
class EstimatorCircuits:
    """What one estimator PUB runs: circuit k is (param set, basis, noise factor)."""

    qasm: tuple[str, ...]
    keys: tuple[tuple[int, int, int], ...]  # (param index, basis index, factor index)
    reached_factors: tuple[float, ...]  # per circuit: 2-qubit gates after / before folding


def estimator_circuits(
    template: Template,
    values: bytes,
    count: int,
    first_param: int,
    bases: Sequence[MeasurementBasis],
    factors: Sequence[float],
    fold_seed: int,
) -> EstimatorCircuits:
    """Bind, fold, rotate and measure one chunk of an estimator PUB's parameter sets.

    Args:
        template: the PUB's circuit (no measurements) as a template.
        values: float64 bytes, (count, number of parameters) row-major.
        count: parameter sets in this chunk.
        first_param: index of the chunk's first parameter set in the PUB.
        bases: the measurement bases every parameter set is measured in.
        factors: ZNE noise factors ((1.0,) without ZNE).
        fold_seed: seed of the random partial folds.
    """
    circuit, params = load_template(template)
    if len(factors) > 1:
        circuit = two_qubit_form(circuit)
    # a static circuit has no register of its own: its bases keep the usual name
    register = OBSERVABLE_REGISTER if circuit.num_clbits else "meas"
    array = _values(values, count, len(params))
    rng = np.random.default_rng(fold_seed)
    texts, keys, reached = [], [], []
    for row, vals in enumerate(array):
        bound = bind(circuit, params, vals)
        for f, factor in enumerate(factors):
            folded, got = fold_gates(bound, factor, rng)
            for b, basis in enumerate(bases):
                measured = measure_with_flips(
                    basis.rotate(folded), basis.qubits, 0, register=register
                )
                texts.append(to_qasm(measured, arg="estimator circuit"))
                keys.append((first_param + row, b, f))
                reached.append(got)
    return EstimatorCircuits(tuple(texts), tuple(keys), tuple(reached))


def sampler_circuits(template: Template, values: bytes, count: int) -> tuple[str, ...]:
    """Bind one chunk of a sampler PUB's parameter sets; returns OpenQASM texts."""
    circuit, params = load_template(template)
    array = _values(values, count, len(params))
    return tuple(to_qasm(bind(circuit, params, vals), arg="sampler circuit") for vals in array)
