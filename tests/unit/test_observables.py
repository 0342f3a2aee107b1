"""Measurement bases, parities and error bars of expectation values."""

from __future__ import annotations

import math

import numpy as np
import pytest
from qiskit import QuantumCircuit
from qiskit.quantum_info import SparsePauliOp, Statevector

from qrt_ray.errors import MitigationError
from qrt_ray.mitigation.observables import (
    ReadoutInverse,
    ShotTable,
    group_estimate,
    group_paulis,
)
from qrt_ray.mitigation.readout import mitigate_counts


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
    mean, var = group_estimate(
        ShotTable.from_frequencies(dist, total), {label: 1.0}, {label: basis.mask(label)}
    )
    assert mean == pytest.approx(exact, abs=1e-6)
    assert var == pytest.approx((1 - exact**2) / total, abs=1e-12)


def test_terms_read_from_the_same_shots_are_correlated() -> None:
    # Z0 and Z0Z1 on |00>+|11>: Z0 is random, Z0Z1 is always +1; their sum
    # Z0 + Z0Z1 is 2 or 0 with equal odds, variance 1
    dist = {"00": 0.5, "11": 0.5}
    masks = {"IZ": 0b01, "ZZ": 0b11}
    mean, var = group_estimate(ShotTable.from_frequencies(dist, 100), {"IZ": 1.0, "ZZ": 1.0}, masks)
    assert mean == pytest.approx(1.0)
    assert var == pytest.approx(1.0 / 100)


def _noisy(ideal: dict[str, float], p01: np.ndarray, p10: np.ndarray) -> dict[str, float]:
    """The exact distribution read through independent per-bit readout errors."""
    n = len(p01)
    out: dict[str, float] = {}
    for true, prob in ideal.items():
        for read in range(2**n):
            weight = prob
            for k in range(n):
                t, r = int(true[-1 - k]), read >> k & 1
                flip = p01[k] if t == 0 else p10[k]
                weight *= flip if t != r else 1 - flip
            key = format(read, f"0{n}b")
            out[key] = out.get(key, 0.0) + weight
    return out


def test_tensored_inverse_undoes_asymmetric_readout_exactly() -> None:
    rng = np.random.default_rng(4)
    ideal = dict(
        zip((format(i, "04b") for i in range(16)), rng.dirichlet(np.ones(16)), strict=True)
    )
    p01, p10 = np.array([0.02, 0.05, 0.01, 0.08]), np.array([0.07, 0.03, 0.12, 0.04])
    table = ShotTable.from_frequencies(_noisy(ideal, p01, p10), 1000)
    inverse = ReadoutInverse.from_errors(p01, p10)
    for mask in (0b0001, 0b0110, 0b1011, 0b1111):
        exact = sum(p * (-1) ** (int(k, 2) & mask).bit_count() for k, p in ideal.items())
        raw, _ = group_estimate(table, {"P": 1.0}, {"P": mask})
        mean, _ = group_estimate(table, {"P": 1.0}, {"P": mask}, inverse)
        assert mean == pytest.approx(exact, abs=1e-9)
        assert abs(raw - exact) > 1e-3  # readout really moved it


def test_wide_parity_with_unique_strings_is_restored() -> None:
    # a 20-qubit GHZ read in the X basis: even-parity strings, nearly all distinct in
    # 4,096 shots, so a solve on the observed strings has nothing to correct with
    rng = np.random.default_rng(7)
    n, shots, p = 20, 4096, 0.02
    strings = rng.integers(2, size=(shots, n))
    strings[:, 0] = strings[:, 1:].sum(axis=1) % 2  # parity +1
    read = strings ^ (rng.random((shots, n)) < p)
    counts: dict[str, int] = {}
    for row in read:
        key = "".join(str(b) for b in row[::-1])
        counts[key] = counts.get(key, 0) + 1
    dist = {k: v / shots for k, v in counts.items()}
    mask = 2**n - 1
    errors = np.full(n, p)
    mean, var = group_estimate(
        ShotTable.from_frequencies(dist, shots),
        {"X" * n: 1.0},
        {"X" * n: mask},
        ReadoutInverse.from_errors(errors, errors),
    )
    assert abs(mean - 1.0) < 4 * math.sqrt(var)
    assert math.sqrt(var) < 0.05
    subspace = mitigate_counts(counts, errors, errors).expectation(mask)
    assert subspace < 0.6  # what the observed-strings solve gives here (raw ~0.44)


def test_symmetric_inverse_scales_the_variance_by_the_gain() -> None:
    p01 = p10 = np.array([0.05, 0.1])
    gain = 1 / (0.9 * 0.8)
    inverse = ReadoutInverse.from_errors(p01, p10)
    assert inverse.overhead == pytest.approx(gain**2)
    raw = {"00": 0.5, "01": 0.5}
    mean, var = group_estimate(
        ShotTable.from_frequencies(raw, 1), {"ZZ": 1.0}, {"ZZ": 0b11}, inverse
    )
    assert mean == pytest.approx(0.0)
    assert var == pytest.approx(gain**2)
    with pytest.raises(MitigationError, match="p01 \\+ p10"):
        ReadoutInverse.from_errors([0.5], [0.5])


def _plan(factors, extrapolators):  # type: ignore[no-untyped-def]
    from qrt_ray.primitives.combine import EstimatorPlan

    [(basis, labels)] = group_paulis(["ZZ"])
    return EstimatorPlan(
        shape=(),
        param_index=(0,),
        observables=({"ZZ": 1.0},),
        bases=((basis, tuple(labels)),),
        factors=factors,
        keys=tuple((0, 0, f) for f in range(len(factors))),
        reached_factors=factors,
        measure_mitigation=False,
        symmetric_readout=False,
        extrapolators=extrapolators,
    )


def test_combine_extrapolates_and_falls_back_then_fails_with_the_reasons() -> None:
    from qrt_ray.errors import MitigationError
    from qrt_ray.primitives.combine import combine_estimator

    # <ZZ> = 0.8, 0.4, -0.2 at factors 1, 3, 5: not one sign
    counts = [{"00": 900, "01": 100}, {"00": 700, "01": 300}, {"00": 400, "01": 600}]
    measured = [(0, 1)] * 3
    linear = combine_estimator(
        _plan((1.0, 3.0, 5.0), ("exponential", "linear")), counts, measured, None
    )
    assert linear.extrapolator == ["linear"]
    # the least-squares line reaches 1 + 1/60 at 0: above <ZZ>'s range, so clipped to 1
    assert linear.evs == [1.0] and linear.clipped == 1
    assert linear.evs_noise_factors == [
        [pytest.approx(0.8), pytest.approx(0.4), pytest.approx(-0.2)]
    ]
    with pytest.raises(MitigationError, match="exponential: exponential extrapolation needs"):
        combine_estimator(_plan((1.0, 3.0, 5.0), ("exponential",)), counts, measured, None)
    inside = [{"00": 900, "01": 100}, {"00": 800, "01": 200}]
    fit = combine_estimator(_plan((1.0, 3.0), ("linear",)), inside, measured[:2], None)
    assert fit.evs == [pytest.approx(0.9)] and fit.clipped == 0


def test_circuits_without_two_qubit_gates_pool_their_runs() -> None:
    from qrt_ray.primitives.combine import NO_FOLDS, EstimatorPlan, combine_estimator

    plan = _plan((1.0, 3.0), ("exponential",))
    flat = EstimatorPlan(
        **{**{f: getattr(plan, f) for f in plan.__slots__}, "reached_factors": (1.0, 1.0)}
    )
    counts = [{"00": 900, "01": 100}, {"00": 700, "01": 300}]
    got = combine_estimator(flat, counts, [(0, 1)] * 2, None)
    assert got.extrapolator == [NO_FOLDS]
    # <ZZ> is 0.8 and 0.4 over 1,000 shots each, with variances (1 - ev^2) / shots: the
    # inverse-variance mean is 0.68 (a plain mean, or the pooled counts, would be 0.6)
    var = [(1 - 0.8**2) / 1000, (1 - 0.4**2) / 1000]
    weights = [1 / v for v in var]
    expected = (0.8 * weights[0] + 0.4 * weights[1]) / sum(weights)
    assert expected == pytest.approx(0.68, abs=1e-3)
    assert got.evs == [pytest.approx(expected, rel=1e-9)]
    assert got.stds == [pytest.approx((1 / sum(weights)) ** 0.5, rel=1e-9)]


def test_noise_factors_that_reach_the_same_point_are_pooled() -> None:
    from qrt_ray.primitives.combine import combine_estimator

    # factors 1, 1.2, 3 on a small circuit: 1.2 rounds to no extra fold, so the first
    # two are one point; the fit runs over the two distinct points
    plan = _plan((1.0, 1.2, 3.0), ("linear",))
    counts = [{"00": 900, "01": 100}, {"00": 900, "01": 100}, {"00": 800, "01": 200}]
    # compiled 2-qubit gate counts: 4, 4, 12 -> reached factors 1, 1, 3
    got = combine_estimator(plan, counts, [(0, 1)] * 3, None, [4, 4, 12])
    assert got.reached_factors == [1.0, 1.0, 3.0]
    assert got.evs == [pytest.approx(0.9)] and got.extrapolator == ["linear"]
