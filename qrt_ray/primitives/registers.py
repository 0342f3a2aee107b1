"""A Sampler circuit's classical registers, carried to the farm and read back.

The farm returns counts keyed by a circuit's registers (Qiskit's format: registers
last-first, separated by spaces). Registers that share bits (an alias made by
``compose``), and bits in no register, cannot be written as OpenQASM the devices read.
So :func:`carry` keeps each bit in exactly one register for the farm (the first
register that holds it, and one more register for bits in none), and
:func:`read_registers` rebuilds every register of the user's circuit from those counts,
aliases included.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass

import numpy as np
from qiskit import QuantumCircuit
from qiskit.circuit import ClassicalRegister, Clbit, ControlFlowOp, IfElseOp, WhileLoopOp

from qrt_ray.errors import ValidationError

# the register that holds a circuit's bits that are in no register of their own
LOOSE_BITS = "qrt_loose"


@dataclass(frozen=True, slots=True)
class Carried:
    """A circuit as the farm runs it, and where each user register's bits are.

    ``fields``: the sizes of the farm circuit's registers, in its order. ``sources``:
    per user register (in the user circuit's order), per bit from its least
    significant: (farm register index, bit position in it).
    """

    circuit: QuantumCircuit
    fields: tuple[int, ...]
    sources: tuple[tuple[tuple[int, int], ...], ...]
    plain: bool  # the farm circuit's registers are the user's, one for one


def carry(circuit: QuantumCircuit, arg: str = "circuit") -> Carried:
    """The circuit with registers that do not overlap, and how to read the user's back.

    Raises:
        ValidationError: a condition reads a register of several bits that overlaps
            another (no form the devices read can say it).
    """
    kept: list[ClassicalRegister] = []
    covered: set[Clbit] = set()
    for reg in circuit.cregs:
        if not any(bit in covered for bit in reg):
            kept.append(reg)
            covered.update(reg)
    loose = [bit for bit in circuit.clbits if bit not in covered]
    plain = not loose and len(kept) == len(circuit.cregs)
    out = circuit
    if not plain:
        names = {reg.name for reg in circuit.cregs}
        name = LOOSE_BITS
        while name in names:
            name += "_"
        extra = [ClassicalRegister(name=name, bits=loose)] if loose else []
        dropped = {reg for reg in circuit.cregs if reg not in kept}
        out = QuantumCircuit(circuit.qubits, *circuit.qregs, *kept, *extra)
        out.global_phase = circuit.global_phase
        out.metadata = circuit.metadata
        for inst in circuit.data:
            out._append(inst.replace(operation=_without(inst.operation, dropped, arg)))
        kept = kept + extra
    where: dict[Clbit, tuple[int, int]] = {}
    for f, reg in enumerate(kept):
        for k, bit in enumerate(reg):
            where[bit] = (f, k)
    sources = tuple(tuple(where[bit] for bit in reg) for reg in circuit.cregs)
    return Carried(out, tuple(reg.size for reg in kept), sources, plain)


def _without(op: object, dropped: set[ClassicalRegister], arg: str) -> object:
    """``op`` with conditions on ``dropped`` registers read from their one bit."""
    if not isinstance(op, ControlFlowOp):
        return op
    blocks = [_block_without(b, dropped, arg) for b in op.blocks]
    if isinstance(op, (IfElseOp, WhileLoopOp)):
        cond = op.condition
        if isinstance(cond, tuple) and cond[0] in dropped:
            reg, value = cond
            if reg.size != 1:
                raise ValidationError(
                    f"{arg}: a condition on register {reg.name!r}, which shares bits with "
                    "another register; condition on the register that owns the bits, or "
                    "on a single bit"
                )
            cond = (reg[0], value)
        if isinstance(op, IfElseOp):
            return IfElseOp(cond, blocks[0], blocks[1] if len(blocks) > 1 else None, op.label)
        return WhileLoopOp(cond, blocks[0], op.label)
    return op.replace_blocks(blocks)


def _block_without(
    block: QuantumCircuit, dropped: set[ClassicalRegister], arg: str
) -> QuantumCircuit:
    kept = [reg for reg in block.cregs if reg not in dropped]
    if len(kept) == len(block.cregs) and not any(
        isinstance(i.operation, ControlFlowOp) for i in block.data
    ):
        return block
    out = QuantumCircuit(block.qubits, block.clbits, *kept)
    for inst in block.data:
        out._append(inst.replace(operation=_without(inst.operation, dropped, arg)))
    return out


def read_registers(
    counts: Mapping[str, int],
    carried: Carried,
    registers: Sequence[tuple[str, int]],
    rng: np.random.Generator,
) -> dict[str, np.ndarray]:
    """Shuffled samples of each user register, as (shots, bytes) big-endian uint8
    arrays, from the farm's counts of the carried circuit.

    Counts keys hold the registers last-first, separated by spaces (Qiskit's format);
    the shots come out in a seeded random order.
    """
    keys = list(counts)
    order = rng.permutation(np.repeat(np.arange(len(keys)), [counts[k] for k in keys]))
    # registers sharing bits, or bits in none, are rebuilt bit by bit
    plain = carried.plain
    values = _plain_values(keys, registers) if plain else _carried_values(keys, carried)
    out = {}
    for (name, size), column in zip(registers, values, strict=True):
        nbytes = (size + 7) // 8  # 0 for a register of no bits, as BitArray expects
        raw = b"".join(v.to_bytes(nbytes, "big") for v in column)
        out[name] = np.frombuffer(raw, dtype=np.uint8).reshape(len(keys), nbytes)[order]
    return out


def _plain_values(keys: Sequence[str], registers: Sequence[tuple[str, int]]) -> list[list[int]]:
    """Per register, its value in each key: the registers are the keys' own words."""
    parts = [k.split(" ") if " " in k else [k] for k in keys]
    n = len(registers)
    return [
        [int(p[len(p) - 1 - r] if len(p) == n else p[0], 2) if size else 0 for p in parts]
        for r, (_, size) in enumerate(registers)
    ]


def _carried_values(keys: Sequence[str], carried: Carried) -> list[list[int]]:
    """Per user register, its value in each key, read bit by bit from where
    ``carried.sources`` says each of its bits went."""
    n = len(carried.fields)
    fields = []
    for key in keys:
        parts = key.split(" ") if " " in key else [key]
        # counts name the registers last-first; a register of no bits prints nothing
        fields.append(
            parts[::-1] if len(parts) == n else _split_fixed(key.replace(" ", ""), carried.fields)
        )
    out = []
    for source in carried.sources:
        column = []
        for parts in fields:
            value = 0
            for k, (f, pos) in enumerate(source):
                text = parts[f]
                if text[len(text) - 1 - pos] == "1":
                    value |= 1 << k
            column.append(value)
        out.append(column)
    return out


def _split_fixed(bits: str, sizes: Sequence[int]) -> list[str]:
    """A key without separators cut into registers (given first-first; the key holds
    them last-first)."""
    parts, end = [], len(bits)
    for size in sizes:
        parts.append(bits[end - size : end])
        end -= size
    return parts
