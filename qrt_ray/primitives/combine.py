"""Combine: a farm job's counts become a PUB's data (pure; runs in Ray tasks).

Inputs and outputs are plain data (counts dicts, lists of floats, JSON-ready dicts),
so a task needs nothing pickled from the user. A mitigation step that cannot give a
trustworthy number raises :class:`MitigationError`: the primitive job then fails with
the reason, and raw data is never passed off as mitigated.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from qrt_ray.mitigation.observables import (
    MeasurementBasis,
    ReadoutInverse,
    ShotTable,
    counts_to_distribution,
    group_estimate,
)
from qrt_ray.mitigation.pipelines import DEFAULT_VERSIONS, pipeline
from qrt_ray.mitigation.readout import (
    MitigationError,
    ReadoutCalibration,
    nearest_probability_distribution,
)
from qrt_ray.mitigation.zne import extrapolate

# the extrapolator reported when a circuit had no 2-qubit gate to fold
NO_FOLDS = "none: no 2-qubit gates to fold, runs pooled"


@dataclass(frozen=True, slots=True)
class EstimatorPlan:
    """How an estimator PUB's circuits map back to its broadcast elements."""

    shape: tuple[int, ...]
    param_index: tuple[int, ...]  # per flattened element: its parameter set
    observables: tuple[dict[str, float], ...]  # per flattened element
    bases: tuple[tuple[MeasurementBasis, tuple[str, ...]], ...]
    factors: tuple[float, ...]
    keys: tuple[tuple[int, int, int], ...]  # per circuit: (param, basis, factor)
    reached_factors: tuple[float, ...]
    measure_mitigation: bool
    symmetric_readout: bool  # measurements were twirled: the readout error is symmetric
    extrapolators: tuple[str, ...] = ()


@dataclass(slots=True)
class EstimatorData:
    """The combined figures of one estimator PUB (flattened over its shape)."""

    evs: list[float]
    stds: list[float]
    evs_noise_factors: list[list[float]] = field(default_factory=list)
    stds_noise_factors: list[list[float]] = field(default_factory=list)
    extrapolator: list[str] = field(default_factory=list)
    clipped: int = 0
    mitigation_overhead: float = 1.0
    reached_factors: list[float] = field(default_factory=list)  # averaged over parameter sets
    # the unmitigated values (noise factor 1, no readout inverse), when anything was
    # mitigated: the correction each mitigated value made is its distance from these
    raw_evs: list[float] = field(default_factory=list)


def _readout_errors(
    cal: ReadoutCalibration, qubits: Sequence[int], symmetric: bool
) -> tuple[np.ndarray, np.ndarray]:
    """Errors per clbit; a clbit never measured (qubit -1) always reads 0, error-free."""
    read = [q for q in qubits if q >= 0]
    a, b = cal.errors_for(read)
    p01, p10 = np.zeros(len(qubits)), np.zeros(len(qubits))
    where = [k for k, q in enumerate(qubits) if q >= 0]
    p01[where], p10[where] = a, b
    if symmetric:  # twirled readout: each flip direction is taken half the time
        mean = (p01 + p10) / 2
        return mean, mean
    return p01, p10


def _measured_errors(
    measured: Sequence[int], readout: ReadoutCalibration, symmetric: bool
) -> tuple[np.ndarray, np.ndarray]:
    if not measured or all(q < 0 for q in measured):
        raise MitigationError(
            "readout mitigation needs the physical qubit of every measured bit; "
            "the compiled circuit does not say (recompile the job)"
        )
    return _readout_errors(readout, measured, symmetric)


@dataclass(frozen=True, slots=True)
class _Shots:
    """One circuit's raw shots and readout inverse (when mitigated)."""

    table: ShotTable
    inverse: ReadoutInverse | None


def combine_estimator(
    plan: EstimatorPlan,
    counts: Sequence[Mapping[str, int]],
    measured: Sequence[Sequence[int]],
    readout: ReadoutCalibration | None,
    two_qubit: Sequence[int] | None = None,
) -> EstimatorData:
    """Expectation values and standard errors of every element of one PUB.

    ``two_qubit`` holds each compiled circuit's 2-qubit gate count (the noise factors
    reached are measured on them when given).

    Raises:
        MitigationError: readout mitigation or every extrapolator failed, or a value
            was not finite.
    """
    if plan.measure_mitigation and readout is None:
        raise MitigationError("readout mitigation was asked for but no readout calibration came")
    dists: dict[tuple[int, int, int], _Shots] = {}
    overheads = []
    for key, c, m in zip(plan.keys, counts, measured, strict=True):
        raw, shots = counts_to_distribution(c)
        inverse = None
        if plan.measure_mitigation and readout is not None:
            inverse = ReadoutInverse.from_errors(
                *_measured_errors(m, readout, plan.symmetric_readout)
            )
            overheads.append(inverse.overhead)
        dists[key] = _Shots(ShotTable.from_frequencies(raw, shots), inverse)
    masks = [{lab: basis.mask(lab) for lab in labels} for basis, labels in plan.bases]
    out = EstimatorData(evs=[], stds=[], mitigation_overhead=float(np.mean(overheads or [1.0])))
    if len(plan.factors) > 1:
        per_param = [reached_factors(plan, p, two_qubit) for p in sorted(set(plan.param_index))]
        out.reached_factors = [round(float(v), 4) for v in np.mean(per_param, axis=0)]
    mitigated = plan.measure_mitigation or len(plan.factors) > 1
    unamplified = min(range(len(plan.factors)), key=lambda f: plan.factors[f])
    for element, observable in enumerate(plan.observables):
        p = plan.param_index[element]
        per_factor = [
            _element_value(observable, dists, masks, p, f) for f in range(len(plan.factors))
        ]
        if mitigated:
            raw, _ = _element_value(observable, dists, masks, p, unamplified, mitigate=False)
            out.raw_evs.append(raw)
        values = [v for v, _ in per_factor]
        stds = [s for _, s in per_factor]
        if len(plan.factors) > 1:
            value, std, method = _extrapolate(plan, p, values, stds, two_qubit)
            out.evs_noise_factors.append(values)
            out.stds_noise_factors.append(stds)
            out.extrapolator.append(method)
        else:
            value, std = values[0], stds[0]
        bound = sum(abs(c) for c in observable.values())
        if not (math.isfinite(value) and math.isfinite(std)):
            raise MitigationError(f"element {element}: the mitigated value is not finite")
        if abs(value) > bound:
            value = math.copysign(bound, value)
            out.clipped += 1
        out.evs.append(value)
        out.stds.append(std)
    return out


def _element_value(
    observable: Mapping[str, float],
    dists: Mapping[tuple[int, int, int], _Shots],
    masks: Sequence[Mapping[str, int]],
    p: int,
    f: int,
    *,
    mitigate: bool = True,
) -> tuple[float, float]:
    identity = sum(c for lab, c in observable.items() if set(lab) <= {"I"})
    value, variance = identity, 0.0
    for b, basis_masks in enumerate(masks):
        coefficients = {lab: c for lab, c in observable.items() if lab in basis_masks}
        if not coefficients:
            continue
        data = dists[(p, b, f)]
        masks = {lab: basis_masks[lab] for lab in coefficients}
        inverse = data.inverse if mitigate else None
        mean, var = group_estimate(data.table, coefficients, masks, inverse)
        value += mean
        variance += var
    return value, math.sqrt(variance)


def _pool(values: Sequence[float], stds: Sequence[float]) -> tuple[float, float]:
    """Inverse-variance mean of estimates of one quantity, and its standard error."""
    weights = [1.0 / max(s, 1e-12) ** 2 for s in stds]
    total = sum(weights)
    return sum(w * v for w, v in zip(weights, values, strict=True)) / total, math.sqrt(1 / total)


def reached_factors(plan: EstimatorPlan, p: int, two_qubit: Sequence[int] | None) -> list[float]:
    """The noise factor each nominal factor reached for parameter set ``p``.

    From the compiled circuits when their 2-qubit gate counts are known (what the
    device ran, routing included): folded count over unfolded count, per basis, then
    averaged; otherwise the factor folding reached on the logical circuit.
    """
    out = []
    index = {k: i for i, k in enumerate(plan.keys)}
    for f in range(len(plan.factors)):
        ratios = []
        for (pp, b, ff), i in index.items():
            if pp != p or ff != f:
                continue
            base = two_qubit[index[(p, b, 0)]] if two_qubit else 0
            ratios.append(two_qubit[i] / base if base else plan.reached_factors[i])
        out.append(round(float(np.mean(ratios)), 6))
    return out


def _extrapolate(
    plan: EstimatorPlan,
    p: int,
    values: list[float],
    stds: list[float],
    two_qubit: Sequence[int] | None = None,
) -> tuple[float, float, str]:
    reached = reached_factors(plan, p, two_qubit)
    # factors that reached the same point (a small circuit rounds partial folds) are
    # one point: pool them
    points: dict[float, tuple[list[float], list[float]]] = {}
    for lam, v, s in zip(reached, values, stds, strict=True):
        points.setdefault(lam, ([], []))
        points[lam][0].append(v)
        points[lam][1].append(s)
    pooled = {lam: _pool(vs, ss) for lam, (vs, ss) in sorted(points.items())}
    if len(pooled) == 1:
        # nothing was folded (no 2-qubit gates): every factor ran the same circuit
        value, std = next(iter(pooled.values()))
        return value, std, NO_FOLDS
    lams = list(pooled)
    values = [v for v, _ in pooled.values()]
    stds = [s for _, s in pooled.values()]
    reasons = []
    for method in plan.extrapolators:
        try:
            fit = extrapolate(lams, values, stds, method)
        except MitigationError as exc:
            reasons.append(f"{method}: {exc}")
            continue
        if math.isfinite(fit.value) and math.isfinite(fit.stderr):
            return fit.value, fit.stderr, method
        reasons.append(f"{method}: not finite")
    raise MitigationError("zero-noise extrapolation failed: " + "; ".join(reasons))


def combine_sampler_quasi(
    counts: Sequence[Mapping[str, int]],
    measured: Sequence[Sequence[int]],
    readout: ReadoutCalibration,
    *,
    symmetric: bool,
    distance: int | None,
    project: bool,
    version: str = DEFAULT_VERSIONS["readout"],
) -> list[dict[str, Any]]:
    """Readout-mitigated quasi-distributions of a sampler PUB's circuits, by the
    farm's served ``version`` of readout mitigation
    (:mod:`qrt_ray.mitigation.pipelines`).

    Returns:
        Per circuit: ``quasi_dist`` (bitstring -> quasi-probability, registers joined
        without spaces), ``overhead``, and ``nearest_probability`` when ``project``.

    Raises:
        MitigationError: a circuit's measured qubits are unknown, or the solve failed.
    """
    apply = pipeline("readout", version).apply
    out = []
    for c, m in zip(counts, measured, strict=True):
        joined: dict[str, int] = {}
        for key, n in c.items():
            k = key.replace(" ", "")
            joined[k] = joined.get(k, 0) + n
        p01, p10 = _measured_errors(m, readout, symmetric)
        quasi = apply(joined, p01, p10, distance, None)
        dist = quasi.probabilities
        entry: dict[str, Any] = {"quasi_dist": dist, "overhead": quasi.mitigation_overhead}
        if project:
            entry["nearest_probability"] = nearest_probability_distribution(dist)
        out.append(entry)
    return out
