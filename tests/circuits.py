"""Circuits shared by the tests."""

from __future__ import annotations

from qiskit import QuantumCircuit


def ghz(n: int) -> QuantumCircuit:
    """An n-qubit GHZ circuit, measured: ideally half 0...0 and half 1...1."""
    qc = QuantumCircuit(n)
    qc.h(0)
    for i in range(n - 1):
        qc.cx(i, i + 1)
    qc.measure_all()
    return qc
