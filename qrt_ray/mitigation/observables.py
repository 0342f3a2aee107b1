"""Expectation values from counts: measurement bases, parities and standard errors.

Every Pauli term of a PUB's observables is assigned to one measurement basis: terms
that commute qubit by qubit share a basis, so a basis is one circuit per parameter set.
A basis measures only the qubits some of its terms act on.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass

import numpy as np
from qiskit import QuantumCircuit


@dataclass(frozen=True, slots=True)
class MeasurementBasis:
    """One measurement setting: which qubits, each read in X, Y or Z."""

    qubits: tuple[int, ...]  # circuit qubits measured, clbit k reads qubits[k]
    axes: tuple[str, ...]  # "X" | "Y" | "Z" per measured qubit

    def rotate(self, circuit: QuantumCircuit) -> QuantumCircuit:
        """``circuit`` followed by the rotations that map each axis onto Z."""
        out = circuit.copy()
        for q, axis in zip(self.qubits, self.axes, strict=True):
            if axis == "X":
                out.h(q)
            elif axis == "Y":
                out.sdg(q)
                out.h(q)
        return out

    def mask(self, label: str) -> int:
        """Clbit mask of a Pauli label's support in this basis (label is little-endian)."""
        position = {q: k for k, q in enumerate(self.qubits)}
        mask = 0
        for q, p in enumerate(reversed(label)):
            if p != "I":
                mask |= 1 << position[q]
        return mask


def _fits(label: str, axes: dict[int, str]) -> bool:
    return all(p == "I" or axes.get(q, p) == p for q, p in enumerate(reversed(label)))


def group_paulis(labels: Iterable[str]) -> list[tuple[MeasurementBasis, list[str]]]:
    """Greedy qubit-wise-commuting grouping, heaviest terms first (fewer bases).

    Returns:
        [(basis, labels measured in it)], each label in exactly one basis; the
        identity needs no basis and is left out.
    """
    unique = sorted(
        {lab for lab in labels if set(lab) - {"I"}}, key=lambda s: (-sum(c != "I" for c in s), s)
    )
    groups: list[tuple[dict[int, str], list[str]]] = []
    for label in unique:
        for axes, members in groups:
            if _fits(label, axes):
                members.append(label)
                axes.update({q: p for q, p in enumerate(reversed(label)) if p != "I"})
                break
        else:
            axes = {q: p for q, p in enumerate(reversed(label)) if p != "I"}
            groups.append((axes, [label]))
    out = []
    for axes, members in groups:
        qubits = tuple(sorted(axes))
        out.append((MeasurementBasis(qubits, tuple(axes[q] for q in qubits)), members))
    return out


def _parities(keys: list[str], mask: int) -> np.ndarray:
    return np.array([-1.0 if (int(k, 2) & mask).bit_count() & 1 else 1.0 for k in keys])


def group_estimate(
    distribution: Mapping[str, float],
    raw: Mapping[str, float],
    shots: int,
    coefficients: Mapping[str, float],
    masks: Mapping[str, int],
    gains: Mapping[str, float] | None = None,
) -> tuple[float, float]:
    """Mean and variance of sum_P c_P <P> from one measurement basis.

    The mean is read from ``distribution`` (readout-mitigated quasi-probabilities, or
    the raw frequencies). The variance is that of the per-shot value of
    sum_P c_P g_P P on the raw frequencies, over the shots: terms in one basis are
    read from the same shots, so they are correlated, and readout mitigation divides
    each term by what readout error shrinks it by, ``g_P = 1 / prod (1 - p01 - p10)``
    over its qubits (exact for twirled readout; 1 when unmitigated).
    """
    keys = list(distribution)
    p = np.array([distribution[k] for k in keys], dtype=float)
    per_string = np.zeros(len(keys))
    for label, c in coefficients.items():
        per_string += c * _parities(keys, masks[label])
    mean = float(p @ per_string)
    raw_keys = list(raw)
    q = np.array([raw[k] for k in raw_keys], dtype=float)
    scaled = np.zeros(len(raw_keys))
    for label, c in coefficients.items():
        g = 1.0 if gains is None else gains[label]
        scaled += c * g * _parities(raw_keys, masks[label])
    raw_mean = float(q @ scaled)
    variance = max(float(q @ scaled**2) - raw_mean**2, 0.0) / max(shots, 1)
    return mean, variance


def readout_gain(mask: int, p01: np.ndarray, p10: np.ndarray) -> float:
    """1 / prod over the masked bits of (1 - p01 - p10): readout's shrink of a parity."""
    bits = [k for k in range(len(p01)) if mask >> k & 1]
    shrink = float(np.prod([1.0 - p01[k] - p10[k] for k in bits])) if bits else 1.0
    return 1.0 / shrink if shrink > 0 else float("inf")


def counts_to_distribution(counts: Mapping[str, int]) -> tuple[dict[str, float], int]:
    """Frequencies and total shots of a counts dict."""
    shots = int(sum(counts.values()))
    return {k: v / shots for k, v in counts.items()}, shots
