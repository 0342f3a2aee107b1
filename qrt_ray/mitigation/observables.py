"""Expectation values from counts: measurement bases, parities and standard errors.

Every Pauli term of a PUB's observables is assigned to one measurement basis: terms
that commute qubit by qubit share a basis, so a basis is one circuit per parameter set.
A basis measures only the qubits some of its terms act on.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass

import numpy as np
from qiskit import QuantumCircuit

from qrt_ray.errors import MitigationError
from qrt_ray.mitigation.readout import bit_matrix


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


@dataclass(frozen=True, slots=True)
class ReadoutInverse:
    """Per clbit, what a read 0 and a read 1 add to a readout-mitigated Z parity.

    With independent readout errors the assignment matrix is a tensor product of one
    2x2 matrix ``A_k`` per bit, and ``<Z_S>`` of the true state is exactly the mean
    over the shots of ``prod_{k in S} f_k(b_k)`` with ``f_k = z A_k^-1``:
    ``f(0) = (1 + p01 - p10) / d`` and ``f(1) = -(1 - p01 + p10) / d``,
    ``d = 1 - p01 - p10``. Symmetric (twirled) errors make it the raw parity times
    ``1 / prod d``. No system is solved, so it costs O(shots x bits) at any width.
    """

    zero: np.ndarray
    one: np.ndarray

    @classmethod
    def from_errors(cls, p01: Sequence[float], p10: Sequence[float]) -> ReadoutInverse:
        """The inverse of per-bit errors ``p01`` = P(1|0), ``p10`` = P(0|1).

        Raises:
            MitigationError: a bit's errors sum to 1 or more (it carries no
                information and cannot be inverted).
        """
        a, b = np.asarray(p01, dtype=float), np.asarray(p10, dtype=float)
        d = 1.0 - a - b
        if a.shape != b.shape or np.any(d <= 0) or not np.all(np.isfinite(d)):
            raise MitigationError(
                "readout errors p01 + p10 must stay below 1 on every measured qubit; "
                "the readout calibration is unusable (measure it again)"
            )
        return cls(zero=(1.0 + a - b) / d, one=-(1.0 - a + b) / d)

    @property
    def overhead(self) -> float:
        """The largest variance inflation of a mitigated parity: prod_k max |f_k|^2."""
        return float(np.prod(np.maximum(np.abs(self.zero), np.abs(self.one)) ** 2))


@dataclass(frozen=True, slots=True)
class ShotTable:
    """One circuit's distinct readouts (bit k of a row = clbit k) and their frequencies,
    built once for every term and element read from it."""

    bits: np.ndarray  # N x n bool
    frequencies: np.ndarray  # N, summing to 1
    shots: int

    @classmethod
    def from_frequencies(cls, raw: Mapping[str, float], shots: int) -> ShotTable:
        """The table of ``raw`` (bitstring -> frequency; spaces between registers ignored)."""
        keys = list(raw)
        bits = bit_matrix([k.replace(" ", "") for k in keys]).astype(bool)
        return cls(bits, np.array([raw[k] for k in keys], dtype=float), shots)


def group_estimate(
    table: ShotTable,
    coefficients: Mapping[str, float],
    masks: Mapping[str, int],
    inverse: ReadoutInverse | None = None,
) -> tuple[float, float]:
    """Mean and variance of sum_P c_P <P> from one measurement basis.

    Each shot's value is sum_P c_P times the parity of its masked bits, or, with
    ``inverse``, the readout-mitigated product ``prod f_k(b_k)`` in its place. The
    mean is that value's average over the raw frequencies and the variance its
    sample variance over the shots: terms in one basis are read from the same shots,
    so they are correlated.
    """
    bits, q = table.bits, table.frequencies
    if not len(q):
        return 0.0, 0.0
    per_string = np.zeros(len(q))
    for label, c in coefficients.items():
        cols = [k for k in range(bits.shape[1]) if masks[label] >> k & 1]
        if inverse is None:
            per_string += c * np.where(bits[:, cols].sum(axis=1) & 1, -1.0, 1.0)
        else:
            per_string += c * np.where(bits[:, cols], inverse.one[cols], inverse.zero[cols]).prod(
                axis=1
            )
    mean = float(q @ per_string)
    variance = max(float(q @ per_string**2) - mean**2, 0.0) / max(table.shots, 1)
    return mean, variance


def counts_to_distribution(counts: Mapping[str, int]) -> tuple[dict[str, float], int]:
    """Frequencies and total shots of a counts dict."""
    shots = int(sum(counts.values()))
    return {k: v / shots for k, v in counts.items()}, shots
