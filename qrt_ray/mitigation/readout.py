"""Readout mitigation: invert per-qubit assignment errors on the observed bitstrings only.

The full assignment matrix of n qubits has 4^n entries; like M3, this solves the
reduced system over the N bitstrings that were actually observed (columns scaled to
sum to 1 on that subspace), so it scales to 100+ qubits. What is our own is how the
reduced matrix is built: with independent per-qubit errors its logarithm is

    log A[i, j] = C + (S u)_i + (S v)_j + (S diag(w) S^T)_ij

for the N x n bit matrix S of the observed strings, so the whole N x N matrix (and the
Hamming distances, for truncation) comes from two matrix products. That runs on BLAS,
or on CuPy when a GPU is present, instead of an element-by-element loop.

Small systems (N <= ``DIRECT_MAX``) are solved directly; larger ones by GMRES with a
Jacobi preconditioner, on the dense matrix up to ``DENSE_MAX`` and matrix-free (rows
built block by block on each product) beyond that.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from qrt_ray.errors import MitigationError

DIRECT_MAX = 256
DENSE_MAX = 6144
_BLOCK_ROWS = 1024
GPU_MIN_ROWS = 1024
_PROB_FLOOR = 1e-12


@dataclass(frozen=True, slots=True)
class ReadoutCalibration:
    """Measured readout errors of some physical qubits of one device calibration.

    ``p01[k]`` is P(read 1 | prepared 0) of ``qubits[k]``; ``p10[k]`` is
    P(read 0 | prepared 1).
    """

    device: str
    calibration_id: str
    qubits: tuple[int, ...]
    p01: tuple[float, ...]
    p10: tuple[float, ...]
    shots: int  # shots per preparation (2 circuits were run)
    measured_at: float  # unix seconds

    def __post_init__(self) -> None:
        if not len(self.qubits) == len(self.p01) == len(self.p10):
            raise ValueError("qubits, p01 and p10 must have the same length")
        for name, values in (("p01", self.p01), ("p10", self.p10)):
            for v in values:
                if not 0.0 <= v < 0.5:
                    raise MitigationError(
                        f"readout calibration of {self.device}: {name}={v:g} is not in "
                        "[0, 0.5); the qubit cannot be read reliably, so readout "
                        "mitigation cannot be applied"
                    )

    def errors_for(self, physical: Sequence[int]) -> tuple[np.ndarray, np.ndarray]:
        """(p01, p10) arrays for these physical qubits, in that order.

        Raises:
            MitigationError: a qubit was not calibrated.
        """
        index = {q: k for k, q in enumerate(self.qubits)}
        missing = [q for q in physical if q not in index]
        if missing:
            raise MitigationError(
                f"readout calibration of {self.device} lacks qubits {missing}; "
                "refresh it with those qubits"
            )
        ks = [index[q] for q in physical]
        return np.array([self.p01[k] for k in ks]), np.array([self.p10[k] for k in ks])


@dataclass(frozen=True, slots=True)
class QuasiDistribution:
    """Mitigated quasi-probabilities over bitstrings (may hold small negative values).

    ``stddev_upper_bound`` bounds the standard error of any expectation value of a
    +-1 observable computed from this distribution with ``shots`` shots.
    """

    probabilities: dict[str, float]
    shots: int
    mitigation_overhead: float  # (sum |x|)^2: the variance inflation of mitigated values
    solver: str = "direct"
    iterations: int = 0
    extra: dict[str, Any] = field(default_factory=dict)

    @property
    def stddev_upper_bound(self) -> float:
        """sqrt(overhead / shots): a bound on the standard error of a +-1 expectation."""
        return math.sqrt(self.mitigation_overhead / max(self.shots, 1))

    def nearest_probability_distribution(self) -> dict[str, float]:
        """The closest probability distribution in L2 distance (negative mass removed)."""
        return nearest_probability_distribution(self.probabilities)

    def expectation(self, mask: int) -> float:
        """<Z...Z> on the bits set in ``mask`` (bit k = the k-th bit from the right)."""
        return sum(
            p * (-1.0 if (int(s, 2) & mask).bit_count() % 2 else 1.0)
            for s, p in self.probabilities.items()
        )


def bit_matrix(bitstrings: Sequence[str]) -> np.ndarray:
    """N x n uint8 matrix; column k holds bit k counted from the right (clbit k).

    Raises:
        MitigationError: strings of different lengths or with characters other than 0/1.
    """
    if not bitstrings:
        return np.zeros((0, 0), dtype=np.uint8)
    n = len(bitstrings[0])
    if any(len(b) != n for b in bitstrings):
        raise MitigationError("bitstrings have different lengths; pass one register's bits")
    raw = np.frombuffer("".join(bitstrings).encode("ascii"), dtype=np.uint8)
    bits = raw.reshape(len(bitstrings), n) - ord("0")
    if bits.max(initial=0) > 1:
        raise MitigationError("bitstrings may only hold 0 and 1 (no spaces or hex)")
    return np.ascontiguousarray(bits[:, ::-1])


def _log_terms(
    p01: np.ndarray, p10: np.ndarray
) -> tuple[float, np.ndarray, np.ndarray, np.ndarray]:
    """(C, u, v, w) of the log-assignment expansion for per-qubit errors."""
    p01 = np.clip(p01, _PROB_FLOOR, 1 - _PROB_FLOOR)
    p10 = np.clip(p10, _PROB_FLOOR, 1 - _PROB_FLOOR)
    l00, l10 = np.log1p(-p01), np.log(p01)  # read 0 | true 0, read 1 | true 0
    l01, l11 = np.log(p10), np.log1p(-p10)  # read 0 | true 1, read 1 | true 1
    return float(l00.sum()), l10 - l00, l01 - l00, l11 - l10 - l01 + l00


class _ReducedMatrix:
    """The column-normalized assignment matrix restricted to the observed strings.

    Entries are built in float32 (as M3 does: they are products of probabilities,
    and exp() dominates the cost) and solved against in float64.
    """

    def __init__(
        self, bits: np.ndarray, p01: np.ndarray, p10: np.ndarray, distance: int, xp: Any
    ) -> None:
        self.xp = xp
        self.n_rows = bits.shape[0]
        self.truncate = distance < bits.shape[1]
        self.distance = distance
        f32 = xp.float32
        self.S = xp.asarray(bits, dtype=f32)
        c, u, v, w = _log_terms(p01, p10)
        self.row_term = (self.S @ xp.asarray(u, dtype=f32)) + f32(c)  # measured string i
        self.col_term = self.S @ xp.asarray(v, dtype=f32)  # true string j
        self.Sw = self.S * xp.asarray(w, dtype=f32)
        self.weight = self.S.sum(axis=1)
        self._col_norm: Any = None

    def _block(self, start: int, stop: int) -> Any:
        log_a = self.Sw[start:stop] @ self.S.T
        log_a += self.row_term[start:stop, None]
        log_a += self.col_term[None, :]
        block = self.xp.exp(log_a, out=log_a)
        if self.truncate:
            overlap = self.S[start:stop] @ self.S.T
            hamming = self.weight[start:stop, None] + self.weight[None, :] - 2 * overlap
            block[hamming > self.distance + 0.5] = 0.0
        return block

    def _blocks(self) -> Any:
        for start in range(0, self.n_rows, _BLOCK_ROWS):
            stop = min(start + _BLOCK_ROWS, self.n_rows)
            yield start, self._block(start, stop)

    @property
    def col_norm(self) -> Any:
        """Column sums over the subspace (one pass over the blocks, computed once)."""
        if self._col_norm is None:
            total = self.xp.zeros(self.n_rows, dtype=self.xp.float64)
            for _, block in self._blocks():
                total += block.sum(axis=0, dtype=self.xp.float64)
            self._col_norm = self.xp.maximum(total, 1e-300)
        return self._col_norm

    def dense(self) -> Any:
        """The whole normalized matrix, built in one pass."""
        matrix = self.xp.concatenate([b for _, b in self._blocks()], axis=0)
        self._col_norm = self.xp.maximum(matrix.sum(axis=0, dtype=self.xp.float64), 1e-300)
        matrix /= self._col_norm.astype(matrix.dtype)
        return matrix

    def matvec(self, x: Any) -> Any:
        """A @ x without holding A (rows built block by block)."""
        y = self.xp.empty(self.n_rows, dtype=self.xp.float64)
        scaled = (x / self.col_norm).astype(self.xp.float32)
        for start, block in self._blocks():
            y[start : start + block.shape[0]] = block @ scaled
        return y

    def diagonal(self) -> Any:
        """The diagonal: every qubit read as prepared."""
        log_d = self.row_term + self.col_term + (self.Sw * self.S).sum(axis=1)
        return self.xp.exp(log_d.astype(self.xp.float64)) / self.col_norm


def assignment_matrix(
    bits: np.ndarray, p01: Sequence[float], p10: Sequence[float], distance: int | None = None
) -> np.ndarray:
    """The column-normalized assignment matrix on the observed strings (N x N, float64,
    NumPy), Hamming-truncated at ``distance`` (None: exact)."""
    dist = bits.shape[1] if distance is None else max(0, min(distance, bits.shape[1]))
    matrix = _ReducedMatrix(bits, np.asarray(p01, float), np.asarray(p10, float), dist, np)
    return matrix.dense().astype(np.float64)


def array_module(use_gpu: bool | None = None) -> Any:
    """CuPy when asked for (or, with None, when a GPU is usable), else NumPy."""
    if use_gpu is False:
        return np
    try:
        import cupy  # type: ignore[import-not-found]

        if cupy.cuda.runtime.getDeviceCount() > 0:
            return cupy
    except Exception:  # no cupy, no driver, no device: all mean "use the CPU"
        if use_gpu:
            raise MitigationError(
                "use_gpu=True but CuPy cannot see a GPU; install qrt-ray[gpu] on a GPU machine"
            ) from None
    return np


def _to_host(xp: Any, a: Any) -> np.ndarray:
    return a.get() if hasattr(a, "get") else np.asarray(a)


def solve_quasi(
    bits: np.ndarray,
    probabilities: np.ndarray,
    p01: np.ndarray,
    p10: np.ndarray,
    *,
    distance: int | None = None,
    use_gpu: bool | None = False,
    tol: float = 1e-6,
    max_iter: int = 200,
) -> tuple[np.ndarray, str, int]:
    """Solve A x = p on the observed strings.

    Args:
        bits: N x n matrix of the observed strings (``bit_matrix``), rows unique.
        probabilities: their measured frequencies (N, summing to 1).
        p01, p10: per-column readout errors (n each).
        distance: keep only entries between strings at most this Hamming distance
            apart (None: all, which is exact on the subspace).
        use_gpu: True to require CuPy, None to use it when present and the system has
            more than ``GPU_MIN_ROWS`` strings, False for NumPy.

    Returns:
        (quasi-probabilities, solver name, iterations).
    """
    n_rows, n_bits = bits.shape
    if n_rows == 0:
        return np.zeros(0), "none", 0
    # a GPU pays off only on large systems; None uses one there when present
    xp = array_module(use_gpu) if use_gpu or (use_gpu is None and n_rows > GPU_MIN_ROWS) else np
    dist = n_bits if distance is None else max(0, min(distance, n_bits))
    matrix = _ReducedMatrix(bits, p01, p10, dist, xp)
    p = xp.asarray(probabilities, dtype=xp.float64)
    if n_rows <= DIRECT_MAX:
        x = xp.linalg.solve(matrix.dense().astype(xp.float64), p)
        return _to_host(xp, x), "direct", 0
    dense = matrix.dense() if n_rows <= DENSE_MAX else None
    x, iterations, converged = _gmres(
        (lambda v: dense @ v.astype(xp.float32)) if dense is not None else matrix.matvec,
        matrix.diagonal(),
        p,
        xp,
        tol,
        max_iter,
    )
    if not converged:
        raise MitigationError(
            f"readout mitigation did not converge in {iterations} GMRES iterations on "
            f"{n_rows} bitstrings; try resilience.readout_distance (e.g. 3)"
        )
    return _to_host(xp, x), "gmres-dense" if dense is not None else "gmres-matrix-free", iterations


def _gmres(
    matvec: Any, diagonal: Any, b: Any, xp: Any, tol: float, max_iter: int, restart: int = 30
) -> tuple[Any, int, bool]:
    """Right-preconditioned restarted GMRES (Jacobi), on NumPy or CuPy arrays."""
    inv_diag = 1.0 / diagonal
    x = b * inv_diag  # the Jacobi guess is already close: A is near the identity
    b_norm = float(xp.linalg.norm(b)) or 1.0
    iterations = 0
    while True:
        r = b - matvec(x)
        beta = float(xp.linalg.norm(r))
        if beta / b_norm < tol:
            return x, iterations, True
        if iterations >= max_iter:
            return x, iterations, False
        basis = [r / beta]
        h = np.zeros((restart + 1, restart))
        k_used = 0
        for k in range(restart):
            iterations += 1
            w = matvec(basis[k] * inv_diag)
            for i in range(k + 1):
                h[i, k] = float(xp.dot(basis[i], w))
                w = w - h[i, k] * basis[i]
            h[k + 1, k] = float(xp.linalg.norm(w))
            k_used = k + 1
            e1 = np.zeros(k_used + 1)
            e1[0] = beta
            y, *_ = np.linalg.lstsq(h[: k_used + 1, :k_used], e1, rcond=None)
            residual = np.linalg.norm(h[: k_used + 1, :k_used] @ y - e1)
            if h[k + 1, k] < 1e-14 or residual / b_norm < tol or iterations >= max_iter:
                break
            basis.append(w / h[k + 1, k])
        update = sum(float(y[i]) * basis[i] for i in range(k_used))
        x = x + update * inv_diag


def observed(
    counts: Mapping[str, int], p01: Sequence[float], p10: Sequence[float]
) -> tuple[int, list[str], np.ndarray, np.ndarray]:
    """(shots, the observed bitstrings, their bit matrix, their frequencies) of one
    circuit's counts, checked against its readout errors.

    Raises:
        MitigationError: the counts are empty, or their width and the errors' differ.
    """
    shots = int(sum(counts.values()))
    if shots <= 0:
        raise MitigationError("counts are empty; nothing to mitigate")
    strings = list(counts)
    bits = bit_matrix(strings)
    if bits.shape[1] != len(p01) or len(p01) != len(p10):
        raise MitigationError(
            f"counts have {bits.shape[1]} bits but readout errors were given for "
            f"{len(p01)} qubits; give one (p01, p10) per clbit"
        )
    return shots, strings, bits, np.array([counts[s] for s in strings], dtype=float) / shots


def mitigate_counts(
    counts: Mapping[str, int],
    p01: Sequence[float],
    p10: Sequence[float],
    *,
    distance: int | None = None,
    use_gpu: bool | None = False,
) -> QuasiDistribution:
    """Readout-mitigated quasi-distribution of one circuit's counts.

    Args:
        counts: bitstring -> count; bit k from the right is clbit k.
        p01, p10: readout errors of the qubit read into each clbit (clbit order).
        distance: Hamming truncation (None: exact on the observed subspace).
        use_gpu: as for :func:`solve_quasi`.

    Raises:
        MitigationError: the counts or errors do not fit each other, or the solve did
            not give finite numbers.
    """
    shots, strings, bits, freqs = observed(counts, p01, p10)
    x, solver, iterations = solve_quasi(
        bits,
        freqs,
        np.asarray(p01, float),
        np.asarray(p10, float),
        distance=distance,
        use_gpu=use_gpu,
    )
    if not np.all(np.isfinite(x)):
        raise MitigationError(
            f"readout mitigation of {bits.shape[1]} bits produced non-finite values "
            f"({solver}); the calibration may be singular"
        )
    overhead = float(np.abs(x).sum()) ** 2
    return QuasiDistribution(
        probabilities=dict(zip(strings, (float(v) for v in x), strict=True)),
        shots=shots,
        mitigation_overhead=overhead,
        solver=solver,
        iterations=iterations,
    )


def nearest_probability_distribution(quasi: Mapping[str, float]) -> dict[str, float]:
    """Project quasi-probabilities onto the probability simplex (closest in L2).

    Sort descending and find the largest k whose shifted values stay positive
    (the standard simplex projection); the others become 0.
    """
    if not quasi:
        return {}
    keys = list(quasi)
    values = np.array([quasi[k] for k in keys], dtype=float)
    total = values.sum()
    if not np.isfinite(total):
        raise MitigationError("quasi-probabilities hold NaN or inf; nothing to project")
    order = np.sort(values)[::-1]
    cumulative = np.cumsum(order) - 1.0
    ks = np.arange(1, len(order) + 1)
    k = int(np.nonzero(order - cumulative / ks > 0)[0][-1]) + 1
    shift = cumulative[k - 1] / k
    projected = np.maximum(values - shift, 0.0)
    return {key: float(p) for key, p in zip(keys, projected, strict=True) if p > 0}
