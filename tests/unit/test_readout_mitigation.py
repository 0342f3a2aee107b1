"""Readout mitigation on synthetic noise with known answers, and against mthree."""

from __future__ import annotations

import itertools
from collections import Counter

import mthree
import numpy as np
import pytest

import qrt_ray.mitigation.readout as readout
from qrt_ray.errors import MitigationError
from qrt_ray.mitigation.readout import (
    ReadoutCalibration,
    array_module,
    bit_matrix,
    mitigate_counts,
    nearest_probability_distribution,
)
from qrt_ray.mitigation.readout_cache import ReadoutCache


def _assignment(p01: np.ndarray, p10: np.ndarray) -> np.ndarray:
    """Full 2^n x 2^n assignment matrix, bit k of an index = qubit k."""
    full = np.array([[1.0]])
    for a, b in zip(p01, p10, strict=True):
        full = np.kron(np.array([[1 - a, b], [a, 1 - b]]), full)
    return full


def _label(index: int, n: int) -> str:
    return format(index, f"0{n}b")


def _noisy_counts(ideal: dict[str, float], p01, p10, shots, rng) -> dict[str, int]:
    keys = list(ideal)
    draws = rng.choice(len(keys), size=shots, p=[ideal[k] for k in keys])
    true = bit_matrix([keys[d] for d in draws])
    flips = np.where(true == 0, rng.random(true.shape) < p01, rng.random(true.shape) < p10)
    measured = true ^ flips
    return dict(Counter("".join(str(b) for b in row[::-1]) for row in measured))


@pytest.mark.parametrize("n", [1, 3, 6])
def test_exact_frequencies_are_mitigated_back_to_the_ideal(n: int) -> None:
    rng = np.random.default_rng(n)
    p01 = rng.uniform(0.01, 0.08, n)
    p10 = rng.uniform(0.02, 0.12, n)
    ideal = rng.dirichlet(np.ones(2**n))
    noisy = _assignment(p01, p10) @ ideal
    # integer counts with enough shots that rounding is below 1e-9
    shots = 10**12
    counts = {_label(i, n): round(v * shots) for i, v in enumerate(noisy)}

    quasi = mitigate_counts(counts, p01, p10)

    for i, v in enumerate(ideal):
        assert quasi.probabilities[_label(i, n)] == pytest.approx(v, abs=1e-6)
    assert quasi.solver == "direct"


def test_ghz_parity_is_restored_and_matches_mthree() -> None:
    rng = np.random.default_rng(7)
    n = 12
    p01 = rng.uniform(0.005, 0.04, n)
    p10 = rng.uniform(0.01, 0.06, n)
    counts = _noisy_counts({"0" * n: 0.5, "1" * n: 0.5}, p01, p10, 20_000, rng)
    ours = mitigate_counts(counts, p01, p10)
    m3 = mthree.M3Mitigation(None)
    m3.cals_from_matrices(
        [np.array([[1 - a, b], [a, 1 - b]]) for a, b in zip(p01, p10, strict=True)]
    )
    theirs = m3.apply_correction(counts, list(range(n)))

    mask = (1 << n) - 1
    raw = sum(c * (-1) ** (int(k, 2).bit_count() % 2) for k, c in counts.items()) / 20_000
    assert raw < 0.8  # readout error really did hurt
    assert ours.expectation(mask) == pytest.approx(1.0, abs=0.03)
    # mthree solves in float32; agreement to its precision
    for key in counts:
        assert ours.probabilities[key] == pytest.approx(theirs[key], abs=2e-4)
    assert sum(ours.probabilities.values()) == pytest.approx(1.0, abs=1e-6)


@pytest.mark.parametrize(
    ("direct_max", "dense_max", "solver"),
    [
        (4, 10_000, "gmres-dense"),
        (4, 8, "gmres-matrix-free"),
    ],
)
def test_iterative_solvers_agree_with_the_direct_one(
    monkeypatch: pytest.MonkeyPatch, direct_max: int, dense_max: int, solver: str
) -> None:
    rng = np.random.default_rng(3)
    n = 8
    p01, p10 = rng.uniform(0.01, 0.05, n), rng.uniform(0.02, 0.08, n)
    ideal = {
        k: v
        for k, v in zip(
            (_label(i, n) for i in range(2**n)), rng.dirichlet(np.ones(2**n) * 0.3), strict=True
        )
    }
    counts = _noisy_counts(ideal, p01, p10, 5000, rng)
    direct = mitigate_counts(counts, p01, p10)
    monkeypatch.setattr(readout, "DIRECT_MAX", direct_max)
    monkeypatch.setattr(readout, "DENSE_MAX", dense_max)
    monkeypatch.setattr(readout, "_BLOCK_ROWS", 16)

    iterative = mitigate_counts(counts, p01, p10)

    assert iterative.solver == solver and iterative.iterations > 0
    for key in counts:
        assert iterative.probabilities[key] == pytest.approx(direct.probabilities[key], abs=1e-5)


def test_distance_truncation_keeps_mass_and_stays_close() -> None:
    rng = np.random.default_rng(5)
    n = 10
    p01, p10 = rng.uniform(0.01, 0.03, n), rng.uniform(0.01, 0.04, n)
    counts = _noisy_counts({"0" * n: 0.5, "1" * n: 0.5}, p01, p10, 8000, rng)
    full = mitigate_counts(counts, p01, p10)
    near = mitigate_counts(counts, p01, p10, distance=2)
    assert sum(near.probabilities.values()) == pytest.approx(1.0, abs=1e-5)
    mask = (1 << n) - 1
    assert near.expectation(mask) == pytest.approx(full.expectation(mask), abs=0.02)


def test_hundred_qubit_strings_are_handled() -> None:
    rng = np.random.default_rng(11)
    n = 100
    p01, p10 = np.full(n, 0.002), np.full(n, 0.004)
    counts = _noisy_counts({"0" * n: 0.5, "1" * n: 0.5}, p01, p10, 3000, rng)
    quasi = mitigate_counts(counts, p01, p10)
    mask = (1 << n) - 1
    raw = sum(c * (-1) ** (int(k, 2).bit_count() % 2) for k, c in counts.items()) / 3000
    assert quasi.expectation(mask) > raw + 0.1
    assert np.isfinite(list(quasi.probabilities.values())).all()


def test_bad_inputs_are_named() -> None:
    with pytest.raises(MitigationError, match="different lengths"):
        bit_matrix(["01", "1"])
    with pytest.raises(MitigationError, match="only hold 0 and 1"):
        bit_matrix(["0x", "11"])
    with pytest.raises(MitigationError, match="3 bits but readout errors"):
        mitigate_counts({"011": 5}, [0.01], [0.01])
    with pytest.raises(MitigationError, match="empty"):
        mitigate_counts({}, [], [])
    with pytest.raises(MitigationError, match=r"p10=0\.6"):
        ReadoutCalibration("d", "c", (0,), (0.01,), (0.6,), 100, 0.0)
    cal = ReadoutCalibration("d", "c", (0, 2), (0.01, 0.02), (0.03, 0.04), 100, 0.0)
    with pytest.raises(MitigationError, match=r"lacks qubits \[1\]"):
        cal.errors_for([1, 2])
    assert cal.errors_for([2, 0])[0].tolist() == [0.02, 0.01]


def test_nearest_probability_distribution_is_the_l2_projection() -> None:
    quasi = {"00": 0.6, "01": 0.5, "10": -0.05, "11": -0.05}
    got = nearest_probability_distribution(quasi)
    assert sum(got.values()) == pytest.approx(1.0)
    assert all(v >= 0 for v in got.values())
    assert got == pytest.approx({"00": 0.55, "01": 0.45})
    # no feasible point is closer
    rng = np.random.default_rng(0)
    x = np.array([quasi[k] for k in quasi])
    best = np.array([got.get(k, 0.0) for k in quasi])
    for _ in range(500):
        other = rng.dirichlet(np.ones(4))
        assert np.linalg.norm(x - best) <= np.linalg.norm(x - other) + 1e-12
    valid = {"0": 0.25, "1": 0.75}
    assert nearest_probability_distribution(valid) == pytest.approx(valid)


def test_readout_cache_reuses_within_age_and_calibration() -> None:
    calls: list[list[int]] = []
    now = [1000.0]

    def measure(qubits, shots, seed):  # type: ignore[no-untyped-def]
        calls.append(list(qubits))
        return [0.01 * (q + 1) for q in qubits], [0.02] * len(qubits)

    cache = ReadoutCache(measure, lambda: now[0])
    cal, spent = cache.get("dev", "cal-1", [3, 1], shots=500, max_age_s=60)
    assert (cal.qubits, spent, calls) == ((1, 3), 1000, [[1, 3]])
    assert cal.p01 == (0.02, 0.04)

    _, spent = cache.get("dev", "cal-1", [1], shots=500, max_age_s=60)
    assert spent == 0 and len(calls) == 1  # reused

    _, spent = cache.get("dev", "cal-1", [1, 4], shots=500, max_age_s=60)
    assert calls[-1] == [4] and spent == 1000  # only the missing qubit

    now[0] += 61
    cache.get("dev", "cal-1", [1], shots=500, max_age_s=60)
    assert calls[-1] == [1]  # stale: measured again

    cache.get("dev", "cal-2", [4], shots=500, max_age_s=60)
    assert calls[-1] == [4]  # a new calibration starts afresh
    assert cache.shots_spent == 4 * 1000


def test_all_two_qubit_distributions_round_trip() -> None:
    p01, p10 = np.array([0.05, 0.1]), np.array([0.08, 0.02])
    a = _assignment(p01, p10)
    for corner in itertools.product([0, 1], repeat=2):
        ideal = np.zeros(4)
        ideal[corner[0] * 2 + corner[1]] = 1.0
        noisy = a @ ideal
        counts = {_label(i, 2): round(v * 10**9) for i, v in enumerate(noisy)}
        quasi = mitigate_counts(counts, p01, p10)
        assert max(abs(quasi.probabilities[_label(i, 2)] - ideal[i]) for i in range(4)) < 1e-6


def test_numpy_is_used_without_a_gpu() -> None:
    assert array_module(False) is np


@pytest.mark.gpu
def test_gpu_solve_matches_numpy() -> None:
    cupy = pytest.importorskip("cupy")
    if cupy.cuda.runtime.getDeviceCount() == 0:
        pytest.skip("no CUDA device")
    rng = np.random.default_rng(2)
    n = 20
    p01, p10 = rng.uniform(0.01, 0.04, n), rng.uniform(0.01, 0.05, n)
    counts = _noisy_counts({"0" * n: 0.5, "1" * n: 0.5}, p01, p10, 8000, rng)
    cpu = mitigate_counts(counts, p01, p10, use_gpu=False)
    gpu = mitigate_counts(counts, p01, p10, use_gpu=True)
    for key in counts:
        assert gpu.probabilities[key] == pytest.approx(cpu.probabilities[key], abs=1e-5)


def test_strings_of_uneven_length_and_a_stalled_solve_are_refused(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    with pytest.raises(MitigationError, match="different lengths"):
        bit_matrix(["01", "0", "111"])  # 6 characters, as 3 x 2 would have
    rng = np.random.default_rng(9)
    n = 10
    p01, p10 = np.full(n, 0.1), np.full(n, 0.1)
    counts = _noisy_counts({"0" * n: 0.5, "1" * n: 0.5}, p01, p10, 3000, rng)
    monkeypatch.setattr(readout, "DIRECT_MAX", 4)
    with pytest.raises(MitigationError, match="did not converge in 1 GMRES"):
        readout.solve_quasi(
            bit_matrix(list(counts)),
            np.array(list(counts.values())) / 3000,
            p01,
            p10,
            max_iter=1,
            tol=1e-14,
        )
