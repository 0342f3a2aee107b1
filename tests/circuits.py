"""Circuits and the small farm shared by the tests."""

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


# Two small devices: quick to build, different enough for placement to choose.
SMALL_FARM = """
name: test
devices:
  - {name: manila, backend: FakeManilaV2,
     price_per_shot_usd: 0.00001, price_per_job_usd: 0.01, gpu: never}
  - {name: nairobi, backend: FakeNairobiV2,
     price_per_shot_usd: 0.00002, price_per_job_usd: 0.02, gpu: never}
"""
