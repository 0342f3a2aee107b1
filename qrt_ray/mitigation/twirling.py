"""Twirling: random Paulis that leave a circuit's ideal action unchanged but turn its
noise into a Pauli channel (gates) or a symmetric bit flip (measurements).

The device twirls compiled circuits (``run_twirled``): every Clifford 2-qubit gate
sits in a random Pauli frame written in native gates, and final measurements are
flipped in complementary pairs of copies and flipped back in the counts.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from functools import cache
from typing import Any

import numpy as np
from qiskit import QuantumCircuit
from qiskit.circuit import CircuitInstruction, ClassicalRegister
from qiskit.circuit.library import RZGate, XGate, get_standard_gate_name_mapping
from qiskit.quantum_info import Pauli

TWIRLABLE_GATES = frozenset({"cx", "cy", "cz", "ecr", "swap", "iswap", "dcx"})
_PAULIS = ("I", "X", "Y", "Z")


@cache
def _frame_table(gate_name: str) -> tuple[tuple[str, str], ...]:
    """For each 2-qubit Pauli P (16), the Pauli G P G^dagger: (before, after) labels.

    Labels are little-endian Qiskit labels: the right character acts on the gate's
    first qubit.
    """
    gate = get_standard_gate_name_mapping()[gate_name]
    table = []
    for a in _PAULIS:
        for b in _PAULIS:
            before = Pauli(a + b)
            after = before.evolve(gate, frame="s")  # G P G^dagger
            table.append((before.to_label(), after.to_label().lstrip("-i")))
    return tuple(table)


def measure_with_flips(
    circuit: QuantumCircuit, qubits: Sequence[int], flips: int, register: str = "meas"
) -> QuantumCircuit:
    """``circuit`` with ``qubits`` measured into a new register, X before each flipped one.

    Bit k of the register reads ``qubits[k]``; undo the flips with :func:`unflip_key`.
    """
    out = circuit.copy()
    creg = ClassicalRegister(len(qubits), register)
    out.add_register(creg)
    if qubits:
        out.barrier(qubits)  # the flips must not merge into the circuit's own gates
    for k, q in enumerate(qubits):
        if flips >> k & 1:
            out.x(q)
    for k, q in enumerate(qubits):
        out.measure(q, creg[k])
    return out


# -- twirling compiled (ISA) circuits on the device ----------------------------------


_X = XGate()
_Z = RZGate(np.pi)


def _append_native_pauli(data: Any, label: str, qubits: Sequence[object]) -> None:
    """A Pauli frame in the devices' native gates: X = x, Z = rz(pi), Y = x rz(pi).

    Appends to a circuit's ``_data`` directly: a copy appends hundreds of
    instructions, and ``QuantumCircuit.append`` checks and broadcasts each one, which
    made twirling cost ten times what the run of a small copy does.
    """
    for k, q in enumerate(qubits):
        p = label[-1 - k]
        if p in ("Z", "Y"):
            data.append(CircuitInstruction(_Z, (q,)))
        if p in ("X", "Y"):
            data.append(CircuitInstruction(_X, (q,)))


def final_measurements(circuit: QuantumCircuit) -> set[int]:
    """Indices of measurements whose qubit and clbit nothing touches afterwards."""
    done_q: set[object] = set()
    done_c: set[object] = set()
    final: set[int] = set()
    for i in range(len(circuit.data) - 1, -1, -1):
        inst = circuit.data[i]
        if inst.name == "barrier":
            continue
        if inst.name == "measure" and inst.qubits[0] not in done_q and inst.clbits[0] not in done_c:
            final.add(i)
        done_q.update(inst.qubits)
        done_c.update(inst.clbits)
    return final


class TwirlPlan:
    """What twirling needs of one compiled circuit, read once for all its copies.

    Attributes:
        circuit: the compiled circuit.
        steps: per instruction: the instruction, and its role: the gate's name for a
            Clifford 2-qubit gate to frame, ``"final"`` for a final measurement, else
            ``""``.
        bits: for each final measurement, in circuit order, its clbit's mask bit.
        gates: how many gates are framed.
    """

    __slots__ = ("bits", "circuit", "gates", "steps")

    def __init__(self, circuit: QuantumCircuit, *, gates: bool, measure: bool) -> None:
        final = final_measurements(circuit) if measure else set()
        self.circuit = circuit
        self.steps: list[tuple[CircuitInstruction, str]] = []
        self.bits: list[int] = []
        self.gates = 0
        for i, inst in enumerate(circuit.data):
            op = inst.operation
            if gates and op.name in TWIRLABLE_GATES and not op.params:
                self.steps.append((inst, op.name))
                self.gates += 1
            elif i in final:
                self.steps.append((inst, "final"))
                self.bits.append(1 << circuit.find_bit(inst.clbits[0]).index)
            else:
                self.steps.append((inst, ""))


def twirl_compiled(
    circuit: QuantumCircuit | TwirlPlan,
    rng: np.random.Generator,
    *,
    gates: bool,
    measure: bool,
    complement_of: int | None = None,
) -> tuple[QuantumCircuit, int]:
    """One randomization of a compiled circuit.

    Gates: each Clifford 2-qubit gate sits in a random Pauli frame (native gates).
    Measurements: each final measurement is preceded by X with probability 1/2, or,
    given ``complement_of`` (an earlier copy's mask), exactly where that copy had none;
    the returned mask (bit k = clbit k) says which bits to flip back. Callers that
    twirl one circuit many times pass its :class:`TwirlPlan` (made with the same
    ``gates`` and ``measure``), which reads the circuit once.
    """
    plan = circuit if isinstance(circuit, TwirlPlan) else None
    if plan is None:
        plan = TwirlPlan(circuit, gates=gates, measure=measure)  # type: ignore[arg-type]
    frames = rng.integers(16, size=plan.gates).tolist()
    if complement_of is None:
        flipped = [bool(f) for f in rng.integers(2, size=len(plan.bits))]
    else:
        flipped = [not complement_of & bit for bit in plan.bits]
    out = plan.circuit.copy_empty_like()
    data = out._data
    flips = 0
    g = m = 0
    for inst, role in plan.steps:
        if not role:
            data.append(inst)
        elif role == "final":
            if flipped[m]:
                data.append(CircuitInstruction(_X, (inst.qubits[0],)))
                flips |= plan.bits[m]
            m += 1
            data.append(inst)
        else:
            before, after = _frame_table(role)[frames[g]]
            g += 1
            _append_native_pauli(data, before, inst.qubits)
            data.append(inst)
            _append_native_pauli(data, after, inst.qubits)
    return out, flips


def unflip_key(key: str, flips: int) -> str:
    """A counts key (registers separated by spaces) with the flipped clbits restored."""
    if not flips:
        return key
    bits = key.replace(" ", "")
    value = format(int(bits, 2) ^ flips, f"0{len(bits)}b")
    if len(bits) == len(key):
        return value
    out, k = [], 0
    for ch in key:
        if ch == " ":
            out.append(" ")
        else:
            out.append(value[k])
            k += 1
    return "".join(out)


def copies_for(twirl: Any, shots: int) -> int:
    """Copies a twirled circuit runs as: with measurement twirling an even number (at
    least 2, shots allowing), so flips come in complementary pairs."""
    count = max(1, min(twirl.randomizations, shots))
    if twirl.measure and shots >= 2:
        count = max(2, count + count % 2)
        if count > shots:
            count -= 2
    return count


def split_shots(shots: int, randomizations: int) -> list[int]:
    """Shots of each randomization: as equal as possible, summing to ``shots``."""
    r = max(1, min(randomizations, shots))
    q, extra = divmod(shots, r)
    return [q + 1] * extra + [q] * (r - extra)


def merge_counts(parts: Sequence[tuple[dict[str, int], int]]) -> dict[str, int]:
    """Sum randomizations' counts after undoing each one's measurement flips."""
    out: dict[str, int] = {}
    for counts, flips in parts:
        for key, n in counts.items():
            fixed = unflip_key(key, flips)
            out[fixed] = out.get(fixed, 0) + n
    return out


def run_twirled(
    sim: Any,
    circuits: Sequence[QuantumCircuit],
    shots: int,
    twirl: Any,
    seed: int,
    options: dict[str, Any],
    default_method: str,
    prepare: Callable[[QuantumCircuit], QuantumCircuit] | None = None,
    run: Callable[..., Any] | None = None,
) -> tuple[list[dict[str, int]], list[int], list[str]]:
    """Run each circuit as ``twirl.randomizations`` random copies that split ``shots``.

    The copies run in at most two simulator calls (the copies that take one extra
    shot, and the rest). The randomizations come from ``seed``, so a seeded job
    reproduces. With measurement twirling the copies come in complementary pairs (at
    least one pair; an odd count is rounded up). ``prepare`` runs on each copy after
    it is twirled (dynamical decoupling pads the twirled circuit, so the twirl still
    sees the measurements as final). ``run(circuits, shots=, seed_simulator=, **options)``
    replaces ``sim.run(...).result()`` (a device runs long calls in pieces).

    Returns:
        (per circuit: the copies' counts summed in the circuit's own frame, the seed
        of its first copy, the method it ran with).
    """
    rng = np.random.default_rng(seed)
    copies_wanted = copies_for(twirl, shots)
    measure_pairs = twirl.measure and copies_wanted > 1
    per_copy = split_shots(shots, copies_wanted)
    copies: list[tuple[int, int, QuantumCircuit, int]] = []  # (circuit, shots, copy, flips)
    for index, circuit in enumerate(circuits):
        plan = TwirlPlan(circuit, gates=twirl.gates, measure=twirl.measure)
        previous = 0
        for k, copy_shots in enumerate(per_copy):
            # copies come in pairs with complementary measurement flips: every bit is
            # flipped in exactly half of them (to a shot), so the readout error of the
            # summed counts is exactly the mean of its two directions
            pair = previous if measure_pairs and k % 2 else None
            twirled, flips = twirl_compiled(
                plan, rng, gates=twirl.gates, measure=twirl.measure, complement_of=pair
            )
            previous = flips
            if prepare is not None:
                twirled = prepare(twirled)
            copies.append((index, copy_shots, twirled, flips))
    parts: list[list[tuple[dict[str, int], int]]] = [[] for _ in circuits]
    seeds = [0] * len(circuits)
    methods = [default_method] * len(circuits)
    execute = run or (lambda circuits, **kw: sim.run(circuits, **kw).result())
    for call, copy_shots in enumerate(sorted(set(per_copy), reverse=True)):
        chosen = [c for c in copies if c[1] == copy_shots]
        result = execute(
            [c[2] for c in chosen], shots=copy_shots, seed_simulator=seed + call, **options
        )
        for k, (index, _, _, flips) in enumerate(chosen):
            parts[index].append((dict(result.get_counts(k)), flips))
            if call == 0 and len(parts[index]) == 1:
                seeds[index] = int(result.results[k].seed_simulator)
                methods[index] = str(result.results[k].metadata.get("method", default_method))
    return [merge_counts(p) for p in parts], seeds, methods
