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

# SMALL_FARM with manila drifting fast: one wall second is one hour of drift, and its
# errors grow 30 % an hour, so canaries every few seconds find it within seconds.
DRIFTING_FARM = SMALL_FARM.replace(
    "price_per_shot_usd: 0.00001, price_per_job_usd: 0.01, gpu: never}",
    "price_per_shot_usd: 0.00001, price_per_job_usd: 0.01, gpu: never, "
    "drift: {seed: 4, time_scale: 3600, error_trend_per_hour: 0.3, "
    "tls_per_qubit_hour: 0, coupler_per_edge_hour: 0}}",
)
