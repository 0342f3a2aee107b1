"""Measurement bases, parities and error bars of expectation values."""

from __future__ import annotations

import math

import numpy as np
import pytest
from qiskit import QuantumCircuit
from qiskit.quantum_info import SparsePauliOp, Statevector

from qrt_ray.mitigation.observables import group_estimate, group_paulis, readout_gain


def _exact_counts(circuit: QuantumCircuit, qubits: tuple[int, ...], shots: int) -> dict[str, int]:
    probs = Statevector(circuit).probabilities_dict(qargs=list(qubits))
    return {k: round(v * shots) for k, v in probs.items() if round(v * shots)}


def test_every_term_gets_one_compatible_basis() -> None:
    labels = ["ZZII", "IZZI", "XXII", "IIXX", "ZIIZ", "YYYY", "IIII", "XIXI"]
    groups = group_paulis(labels)
    seen = [lab for _, members in groups for lab in members]
    assert sorted(seen) == sorted(lab for lab in labels if lab != "IIII")
    for basis, members in groups:
        axes = dict(zip(basis.qubits, basis.axes, strict=True))
        for lab in members:
            for q, p in enumerate(reversed(lab)):
                assert p == "I" or axes[q] == p
    assert len(groups) <= 4


@pytest.mark.parametrize("label", ["ZZ", "XX", "YY", "XZ", "IY"])
def test_rotated_parities_give_exact_expectations(label: str) -> None:
    bell = QuantumCircuit(2)
    bell.h(0)
    bell.cx(0, 1)
    bell.s(1)
    exact = Statevector(bell).expectation_value(SparsePauliOp(label)).real
    [(basis, _members)] = group_paulis([label])
    counts = _exact_counts(basis.rotate(bell), basis.qubits, 10**8)
    total = sum(counts.values())
    dist = {k: v / total for k, v in counts.items()}
    mean, var = group_estimate(dist, dist, total, {label: 1.0}, {label: basis.mask(label)})
    assert mean == pytest.approx(exact, abs=1e-6)
    assert var == pytest.approx((1 - exact**2) / total, abs=1e-12)


def test_terms_read_from_the_same_shots_are_correlated() -> None:
    # Z0 and Z0Z1 on |00>+|11>: Z0 is random, Z0Z1 is always +1; their sum
    # Z0 + Z0Z1 is 2 or 0 with equal odds, variance 1
    dist = {"00": 0.5, "11": 0.5}
    masks = {"IZ": 0b01, "ZZ": 0b11}
    mean, var = group_estimate(dist, dist, 100, {"IZ": 1.0, "ZZ": 1.0}, masks)
    assert mean == pytest.approx(1.0)
    assert var == pytest.approx(1.0 / 100)


def test_readout_gain_scales_the_variance() -> None:
    p01, p10 = np.array([0.05, 0.1]), np.array([0.05, 0.1])
    gain = readout_gain(0b11, p01, p10)
    assert gain == pytest.approx(1 / (0.9 * 0.8))
    raw = {"00": 0.5, "01": 0.5}
    _, var = group_estimate(raw, raw, 1, {"ZZ": 1.0}, {"ZZ": 0b11}, {"ZZ": gain})
    assert var == pytest.approx(gain**2)
    assert math.isinf(readout_gain(0b1, np.array([0.5]), np.array([0.5])))
