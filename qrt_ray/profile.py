"""A logical circuit read once into the plain data placement needs (no device).

Physical 1-qubit pulses per qubit, how often each pair of qubits interacts (gates on
three or more qubits unrolled into their 2-qubit parts), which qubits are measured,
and a nominal duration. The intake computes it when a circuit is admitted;
:mod:`qrt_ray.policies.fidelity` scores it on each device.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from typing import Any

# Physical sx/x pulses a logical 1-qubit gate costs (rz and friends are virtual).
_VIRTUAL_1Q = frozenset({"rz", "z", "s", "sdg", "t", "tdg", "p", "u1", "id", "delay", "barrier"})
_ONE_PULSE_1Q = frozenset({"x", "sx", "sxdg", "h", "y", "u2"})
# Native 2-qubit gates a logical 2-qubit gate costs (after synthesis into cx/cz/ecr).
_TWO_Q_COST = {
    "cx": 1, "cz": 1, "ecr": 1, "cy": 1, "ch": 2, "swap": 3, "iswap": 2, "dcx": 2,
    "cp": 2, "cu1": 2, "crz": 2, "crx": 2, "cry": 2, "cu": 2, "cu3": 2, "csx": 2,
    "rzz": 2, "rxx": 2, "ryy": 2, "rzx": 2, "xx_plus_yy": 2, "xx_minus_yy": 2,
}  # fmt: skip
# Nominal durations, in units of one 2-qubit gate (an sx pulse is ~1/10 of a cx on
# IBM hardware); a device's median 2-qubit duration turns them into seconds.
_PULSE_UNITS = 0.1


@dataclass(frozen=True, slots=True)
class CircuitProfile:
    """A logical circuit as the estimator needs it; no Qiskit objects.

    Attributes:
        num_qubits: the circuit's qubits (active or not).
        active: logical qubits touched by a gate or measurement, ascending.
        pulses: physical 1-qubit pulses on each active qubit (same order as ``active``).
        measured: whether each active qubit is measured.
        pairs: ``(i, j, count)``: active-qubit indices ``i < j`` and how many native
            2-qubit gates they share.
        busy_units: nominal busy time of each active qubit (2-qubit gate = 1).
        duration_units: nominal length of the circuit's critical path.
    """

    num_qubits: int
    active: tuple[int, ...]
    pulses: tuple[float, ...]
    measured: tuple[bool, ...]
    pairs: tuple[tuple[int, int, int], ...]
    busy_units: tuple[float, ...]
    duration_units: float

    @property
    def two_qubit_gates(self) -> int:
        """Native 2-qubit gates before routing."""
        return sum(c for _, _, c in self.pairs)


def _pulses_1q(name: str, params: Sequence[Any]) -> float:
    if name in _VIRTUAL_1Q:
        return 0.0
    if name in _ONE_PULSE_1Q:
        return 1.0
    if name in ("u", "u3", "r") and params:
        theta = params[0]
        try:
            t = abs(float(theta)) % (2 * math.pi)
        except TypeError:  # unbound parameter: assume a general rotation
            return 2.0
        if t < 1e-9 or abs(t - 2 * math.pi) < 1e-9:
            return 0.0
        return 1.0 if abs(t - math.pi / 2) < 1e-9 or abs(t - 3 * math.pi / 2) < 1e-9 else 2.0
    return 2.0  # rx, ry, u, unitary: two sx pulses


def _flatten(instructions: Iterable[Any], qubit_map: Sequence[int], depth: int = 0):
    """Yield (name, params, physical-index qubits) with gates on 3+ qubits unrolled."""
    for inst in instructions:
        op = inst.operation
        qubits = [qubit_map[q] for q in inst.qubits] if qubit_map else []
        name = op.name
        if name in ("barrier", "delay") or not qubits:
            continue
        blocks = getattr(op, "blocks", None)
        if blocks is not None and depth < 8:  # control flow: each block once, on its qubits
            for block in blocks:
                index = {bit: i for i, bit in enumerate(block.qubits)}
                yield from _flatten((_Remap(i, index) for i in block.data), qubits, depth + 1)
            continue
        if len(qubits) >= 3 and name != "measure" and depth < 8:
            definition = getattr(op, "definition", None)
            if definition is not None:
                index = {bit: i for i, bit in enumerate(definition.qubits)}
                inner = [qubits[index[q]] for q in definition.qubits]
                yield from _flatten((_Remap(i, index) for i in definition.data), inner, depth + 1)
                continue
        yield name, op.params, qubits


class _Remap:
    """A definition's instruction seen with integer qubits (a tiny adapter for _flatten)."""

    __slots__ = ("operation", "qubits")

    def __init__(self, inst: Any, index: dict[Any, int]) -> None:
        self.operation = inst.operation
        self.qubits = [index[q] for q in inst.qubits]


def profile_circuit(circuit: Any) -> CircuitProfile:
    """Read a logical ``QuantumCircuit`` into a :class:`CircuitProfile`.

    Gates on three or more qubits are unrolled through their definitions; a 2-qubit
    gate counts as the native 2-qubit gates its synthesis needs (``cp`` two, ``swap``
    three). Control-flow blocks are entered, each once: a loop's body counts one
    pass, an ``if`` both of its branches.
    """
    n = circuit.num_qubits
    index = {bit: i for i, bit in enumerate(circuit.qubits)}
    top = [_Remap(inst, index) for inst in circuit.data]
    pulses = [0.0] * n
    measured = [False] * n
    touched = [False] * n
    busy = [0.0] * n
    clock = [0.0] * n
    pair_counts: dict[tuple[int, int], int] = {}
    for name, params, qubits in _flatten(top, list(range(n))):
        for q in qubits:
            touched[q] = True
        if name == "measure":
            measured[qubits[0]] = True
            continue
        if name == "reset":
            continue
        if len(qubits) == 1:
            p = _pulses_1q(name, params)
            q = qubits[0]
            pulses[q] += p
            busy[q] += p * _PULSE_UNITS
            clock[q] += p * _PULSE_UNITS
            continue
        cost = _TWO_Q_COST.get(name, 3) if len(qubits) == 2 else 3
        a, b = sorted(qubits[:2])
        pair_counts[(a, b)] = pair_counts.get((a, b), 0) + cost
        start = max(clock[a], clock[b])
        clock[a] = clock[b] = start + cost
        busy[a] += cost
        busy[b] += cost
    active = tuple(q for q in range(n) if touched[q])
    pos = {q: i for i, q in enumerate(active)}
    return CircuitProfile(
        num_qubits=n,
        active=active,
        pulses=tuple(pulses[q] for q in active),
        measured=tuple(measured[q] for q in active),
        pairs=tuple(sorted((pos[a], pos[b], c) for (a, b), c in pair_counts.items())),
        busy_units=tuple(busy[q] for q in active),
        duration_units=max(clock) if clock else 0.0,
    )


# == a calibration as cost matrices ===================================================
