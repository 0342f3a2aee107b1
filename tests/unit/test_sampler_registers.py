"""Registers that share bits, or bits in none, are carried and read back bit by bit."""

from __future__ import annotations

import numpy as np
import pytest
from qiskit import ClassicalRegister, QuantumCircuit, QuantumRegister, qasm3
from qiskit.circuit import Clbit

from qrt_ray.errors import ValidationError
from qrt_ray.primitives.registers import LOOSE_BITS, carry, read_registers


def _aliased() -> QuantumCircuit:
    inner = QuantumCircuit(QuantumRegister(2), ClassicalRegister(1, "a"), ClassicalRegister(1, "b"))
    inner.x(0)
    inner.measure(0, 0)
    inner.measure(1, 1)
    with inner.if_test((inner.cregs[0], 1)):  # on a register that becomes an alias
        inner.x(1)
    outer = QuantumCircuit(3, 4)
    # the condition's register comes along as an alias of c[1]
    outer.compose(inner, [0, 1], [1, 3], inplace=True)
    return outer


def test_aliases_are_dropped_for_the_farm_and_rebuilt_from_the_bits() -> None:
    qc = _aliased()
    registers = [(r.name, r.size) for r in qc.cregs]
    assert len(registers) == 2 and registers[1][1] == 1
    carried = carry(qc)
    assert not carried.plain and [r.name for r in carried.circuit.cregs] == ["c"]
    qasm3.loads(qasm3.dumps(carried.circuit))  # the devices' reader takes it
    # counts of the farm circuit: c = 0b0010 (bit 1 set) 3 shots, 0b1000 1 shot
    rng = np.random.default_rng(0)
    got = read_registers({"0010": 3, "1000": 1}, carried, registers, rng)
    assert sorted(got["c"][:, 0].tolist()) == [2, 2, 2, 8]
    assert sorted(got[registers[1][0]][:, 0].tolist()) == [0, 1, 1, 1]  # c[1]


def test_bits_in_no_register_get_one_and_multibit_alias_conditions_are_refused() -> None:
    loose = QuantumCircuit([Clbit(), Clbit()], QuantumRegister(1))
    loose.add_register(ClassicalRegister(1, "r"))
    loose.measure(0, 2)
    carried = carry(loose)
    assert [r.name for r in carried.circuit.cregs] == ["r", LOOSE_BITS]
    got = read_registers({"00 1": 5}, carried, [("r", 1)], np.random.default_rng(0))
    assert got["r"].tolist() == [[1]] * 5
    two = QuantumCircuit(QuantumRegister(1), ClassicalRegister(2, "x"))
    with two.if_test((two.cregs[0], 3)):
        two.x(0)
    outer = QuantumCircuit(1, 4)
    outer.compose(two, [0], [0, 1], inplace=True)  # the condition's 2-bit alias of c
    with pytest.raises(ValidationError, match="shares bits with another register"):
        carry(outer)
