"""Zero-noise extrapolation: amplify a circuit's noise by gate folding, then extrapolate.

Folding replaces a 2-qubit gate G by G (G^dagger G)^k, with barriers between the
copies so the compiler cannot cancel them. Noise factor lambda means the folded
circuit has lambda times the 2-qubit gates of the original (where most of the error
is); a factor between odd integers folds a seeded random subset of gates once more.
Folding is our own: it works on Qiskit circuits directly, where converting to another
framework and back loses barriers and standard gates.

Extrapolators: ``linear`` (least squares), ``richardson`` (the polynomial through
every point), ``polynomial_degree_2`` (least-squares quadratic) and ``exponential``
(a e^{-b lambda} fitted on log |y|, for decays like a GHZ parity). Each returns the
zero-noise value and its standard error propagated from the points' errors.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Literal

import numpy as np
from qiskit import QuantumCircuit

from qrt_ray.mitigation.readout import MitigationError

Extrapolator = Literal["linear", "richardson", "polynomial_degree_2", "exponential"]
EXTRAPOLATORS: tuple[str, ...] = ("linear", "richardson", "polynomial_degree_2", "exponential")
# noise factors each extrapolator needs
MIN_POINTS = {"linear": 2, "richardson": 2, "polynomial_degree_2": 3, "exponential": 2}


def two_qubit_form(circuit: QuantumCircuit) -> QuantumCircuit:
    """``circuit`` with every instruction on 3 or more qubits (ccx, library blocks,
    custom gates) written out in gates on at most 2, so folding sees every 2-qubit
    gate the device will run."""
    from qiskit.transpiler import PassManager
    from qiskit.transpiler.passes import HighLevelSynthesis, Unroll3qOrMore

    if all(inst.operation.num_qubits <= 2 for inst in circuit.data):
        return circuit
    return PassManager([HighLevelSynthesis(), Unroll3qOrMore()]).run(circuit)


def fold_gates(
    circuit: QuantumCircuit, factor: float, rng: np.random.Generator
) -> tuple[QuantumCircuit, float]:
    """Fold the 2-qubit gates of ``circuit`` to scale their number by ``factor`` (>= 1).

    Gates on 3 or more qubits are not folded: pass :func:`two_qubit_form` first.

    Returns:
        (folded circuit, the factor actually reached: 2-qubit gates after / before).

    Raises:
        MitigationError: ``factor`` < 1.
    """
    if not factor >= 1:
        raise MitigationError(f"noise factor {factor!r} is below 1; use factors >= 1")
    positions = [
        i
        for i, inst in enumerate(circuit.data)
        if inst.operation.num_qubits == 2 and inst.operation.name != "barrier" and not inst.clbits
    ]
    if not positions or factor == 1:
        return circuit.copy(), 1.0
    total = round((factor - 1) / 2 * len(positions))
    folds = dict.fromkeys(positions, total // len(positions))
    for i in rng.choice(positions, size=total % len(positions), replace=False):
        folds[int(i)] += 1
    out = circuit.copy_empty_like()
    for i, inst in enumerate(circuit.data):
        out.append(inst)
        for _ in range(folds.get(i, 0)):
            out.barrier(inst.qubits)
            out.append(inst.operation.inverse(), inst.qubits)
            out.barrier(inst.qubits)
            out.append(inst)
    return out, (len(positions) + 2 * total) / len(positions)


@dataclass(frozen=True, slots=True)
class Extrapolation:
    """A zero-noise estimate with its standard error and the fit behind it."""

    value: float
    stderr: float
    method: str
    factors: tuple[float, ...]
    values: tuple[float, ...]


def _linear_weights(factors: np.ndarray, degree: int) -> np.ndarray:
    """w with value(0) = w . y for a least-squares polynomial of ``degree``."""
    vander = np.vander(factors, degree + 1, increasing=True)
    return np.linalg.pinv(vander)[0]


def extrapolate(
    factors: Sequence[float],
    values: Sequence[float],
    stderrs: Sequence[float],
    method: str = "richardson",
) -> Extrapolation:
    """Extrapolate expectation values measured at ``factors`` to zero noise.

    Raises:
        MitigationError: too few points for the method, or an unknown method.
    """
    lam = np.asarray(factors, dtype=float)
    y = np.asarray(values, dtype=float)
    err = np.asarray(stderrs, dtype=float)
    if len(np.unique(lam)) != len(lam):
        raise MitigationError(f"noise factors {list(factors)} repeat a value; give distinct ones")
    needed = MIN_POINTS
    if method not in needed:
        raise MitigationError(f"extrapolator={method!r}: use one of {', '.join(EXTRAPOLATORS)}")
    if len(lam) < needed[method]:
        raise MitigationError(
            f"extrapolator={method!r} needs at least {needed[method]} noise factors, got {len(lam)}"
        )
    if method == "exponential":
        return _exponential(lam, y, err)
    degree = {"linear": 1, "richardson": len(lam) - 1, "polynomial_degree_2": 2}[method]
    w = _linear_weights(lam, degree)
    value = float(w @ y)
    stderr = float(math.sqrt(float((w**2) @ (err**2))))
    return Extrapolation(value, stderr, method, tuple(map(float, lam)), tuple(map(float, y)))


def _exponential(lam: np.ndarray, y: np.ndarray, err: np.ndarray) -> Extrapolation:
    """Fit log|y| linearly in lambda: y(0) = sign * exp(intercept).

    Each point is weighted by its inverse variance in log space, (y / err)^2, and
    points within two standard errors of 0 are left out: at a high noise factor a
    decayed signal is mostly shot noise, its log is meaningless, and an unweighted fit
    either let it drag the intercept or, once shot noise flipped its sign, gave up for
    the next extrapolator (linear, far off on an exponential decay). At least two
    points must remain, all of one sign.
    """
    clear = (np.abs(y) > 2 * err) & (np.abs(y) > 1e-9)
    if clear.sum() < 2:
        raise MitigationError(
            "exponential extrapolation needs two or more values clear of 0 (more than "
            f"two standard errors); got {[round(float(v), 4) for v in y]} "
            f"+- {[round(float(e), 4) for e in err]} (use linear or richardson)"
        )
    lam_k, y_k, err_k = lam[clear], y[clear], err[clear]
    sign = np.sign(y_k[0])
    if np.any(np.sign(y_k) != sign):
        raise MitigationError(
            "exponential extrapolation needs values of one sign, away from 0; "
            f"got {[round(float(v), 4) for v in y]} (use linear or richardson)"
        )
    log_err = err_k / np.abs(y_k)
    weights = 1.0 / np.maximum(log_err, 1e-12) ** 2 if np.any(log_err > 0) else None
    w = _weighted_linear_weights(lam_k, weights)
    log_value = float(w @ np.log(np.abs(y_k)))
    value = float(sign * math.exp(log_value))
    stderr = abs(value) * float(math.sqrt(float((w**2) @ (log_err**2))))
    return Extrapolation(value, stderr, "exponential", tuple(map(float, lam)), tuple(map(float, y)))


def _weighted_linear_weights(factors: np.ndarray, weights: np.ndarray | None) -> np.ndarray:
    """w with value(0) = w . y for a weighted least-squares line (None: unweighted)."""
    if weights is None:
        return _linear_weights(factors, 1)
    vander = np.vander(factors, 2, increasing=True)
    root = np.sqrt(weights)
    return (np.linalg.pinv(vander * root[:, None]) * root[None, :])[0]
