"""Versions of a post-processing pipeline, by method: what a rollout switches between.

A change to how results are post-processed is a release like any other, and the one
kind whose bugs return wrong numbers instead of errors (failure mode F10). So each
version of a pipeline is named here, and the farm serves one version per method to
user jobs while a candidate runs beside it on canaries with known answers
(:mod:`qrt_ray.policies.rollout`, :mod:`qrt_ray.actors.rollouts`).

Readout versions (counts and per-clbit readout errors in, quasi-distribution out):

- ``1``: solve the assignment matrix on the observed bitstrings
  (:func:`~qrt_ray.mitigation.readout.mitigate_counts`). May return small negative
  quasi-probabilities.
- ``2``: iterative Bayesian unfolding on the same reduced matrix: a probability
  distribution (never negative), the method of choice where a later step needs one.
  Above :data:`IBU_MAX_STRINGS` observed strings it falls back to version 1's solver,
  and says so in ``solver``.
- ``drill-overcorrect``: deliberately wrong, for game days and tests. It corrects for
  three times the measured readout errors (a unit slip a release could ship). It can
  only be rolled out, where canaries catch it; nothing makes it a default.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass

import numpy as np

from qrt_ray.errors import MitigationError, ValidationError, brief
from qrt_ray.mitigation.readout import (
    QuasiDistribution,
    assignment_matrix,
    mitigate_counts,
    observed,
)

# (counts, p01, p10, distance, use_gpu) -> quasi-distribution
ReadoutFn = Callable[
    [Mapping[str, int], Sequence[float], Sequence[float], int | None, bool | None],
    QuasiDistribution,
]

# Unfolding holds the dense matrix and takes hundreds of products with it: past this
# many observed strings version 2 hands over to version 1's solver.
IBU_MAX_STRINGS = 1024
_IBU_TOL = 1e-9  # L1 change of the estimate between iterations at which it stops
_IBU_MAX_ITER = 2000
_DRILL_FACTOR = 3.0


@dataclass(frozen=True, slots=True)
class Pipeline:
    """One version of one post-processing method.

    Attributes:
        method: what it post-processes (``readout``).
        version: its name within the method.
        summary: one line on what it does differently.
        apply: the function.
        drill: deliberately wrong (game days, tests): may be rolled out, never served
            as a default.
    """

    method: str
    version: str
    summary: str
    apply: ReadoutFn
    drill: bool = False


def _inverse(
    counts: Mapping[str, int],
    p01: Sequence[float],
    p10: Sequence[float],
    distance: int | None,
    use_gpu: bool | None,
) -> QuasiDistribution:
    return mitigate_counts(counts, p01, p10, distance=distance, use_gpu=use_gpu)


def unfold_counts(
    counts: Mapping[str, int],
    p01: Sequence[float],
    p10: Sequence[float],
    distance: int | None = None,
    use_gpu: bool | None = False,
) -> QuasiDistribution:
    """Readout mitigation by iterative Bayesian unfolding on the observed bitstrings.

    Each step re-weighs the estimate ``x`` by how well ``A x`` explains the measured
    frequencies ``f``: ``x <- x * A^T (f / A x)``, from ``x = f``. The result stays a
    probability distribution. Above :data:`IBU_MAX_STRINGS` strings version 1's
    solver answers instead (``solver`` names it).

    Raises:
        MitigationError: as :func:`~qrt_ray.mitigation.readout.mitigate_counts`.
    """
    if len(counts) > IBU_MAX_STRINGS:
        return mitigate_counts(counts, p01, p10, distance=distance, use_gpu=use_gpu)
    shots, strings, bits, f = observed(counts, p01, p10)
    a = assignment_matrix(bits, p01, p10, distance)
    x = f.copy()
    iterations = 0
    for iterations in range(1, _IBU_MAX_ITER + 1):  # noqa: B007 (reported below)
        explained = np.maximum(a @ x, 1e-300)
        nxt = x * (a.T @ (f / explained))
        total = nxt.sum()
        if not np.isfinite(total) or total <= 0:
            raise MitigationError(
                f"readout unfolding of {bits.shape[1]} bits produced non-finite values; "
                "the calibration may be singular"
            )
        nxt /= total
        change = float(np.abs(nxt - x).sum())
        x = nxt
        if change < _IBU_TOL:
            break
    return QuasiDistribution(
        probabilities=dict(zip(strings, (float(v) for v in x), strict=True)),
        shots=shots,
        mitigation_overhead=1.0,  # a distribution: sum |x| = 1
        solver="ibu",
        iterations=iterations,
    )


def _overcorrect(
    counts: Mapping[str, int],
    p01: Sequence[float],
    p10: Sequence[float],
    distance: int | None,
    use_gpu: bool | None,
) -> QuasiDistribution:
    def worse(errors: Sequence[float]) -> list[float]:
        return [min(float(e) * _DRILL_FACTOR, 0.45) for e in errors]

    return mitigate_counts(counts, worse(p01), worse(p10), distance=distance, use_gpu=use_gpu)


_PIPELINES: dict[str, dict[str, Pipeline]] = {}

# what a farm serves before any rollout, per method
DEFAULT_VERSIONS: dict[str, str] = {"readout": "1"}


def register(pipeline: Pipeline) -> None:
    """Add a version (a library user's own, in the processes that run it).

    Raises:
        ValueError: the method and version are taken by another function.
    """
    versions = _PIPELINES.setdefault(pipeline.method, {})
    held = versions.get(pipeline.version)
    if held is not None and held.apply is not pipeline.apply:
        raise ValueError(f"pipeline {pipeline.method} {pipeline.version} is already registered")
    versions[pipeline.version] = pipeline


def methods() -> dict[str, list[str]]:
    """Every method and its versions."""
    return {m: sorted(v) for m, v in sorted(_PIPELINES.items())}


def versions_of(method: str) -> dict[str, Pipeline]:
    """A method's versions by name (empty for an unknown method)."""
    return dict(_PIPELINES.get(method, {}))


def pipeline(method: str, version: str) -> Pipeline:
    """The named version of a method.

    Raises:
        ValidationError: no such method or version (the message lists those known).
    """
    versions = _PIPELINES.get(method) if isinstance(method, str) else None
    if versions is None:
        raise ValidationError(
            f"method={brief(method, 40)!r}: not a post-processing method; "
            f"use one of {', '.join(sorted(_PIPELINES))}"
        )
    found = versions.get(version) if isinstance(version, str) else None
    if found is None:
        raise ValidationError(
            f"version={brief(version, 40)!r}: {method} has no such version; "
            f"use one of {', '.join(sorted(versions))}"
        )
    return found


def shadow_key(method: str, version: str) -> str:
    """The key a candidate's canary value is recorded under, beside the method's own
    (which holds the served version's)."""
    return f"{method}@{version}"


register(Pipeline("readout", "1", "assignment-matrix solve on the observed strings", _inverse))
register(Pipeline("readout", "2", "iterative Bayesian unfolding (never negative)", unfold_counts))
register(
    Pipeline(
        "readout",
        "drill-overcorrect",
        "DELIBERATELY WRONG: corrects three times the readout error (drills)",
        _overcorrect,
        drill=True,
    )
)
