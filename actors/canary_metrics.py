"""What canary rounds say about the devices, as metrics: the last passing round (M4)
and how much error mitigation removes from circuits with known answers (M8).

The calibration manager records each round through the scheduler (the store's only
owner), which hands the record here. A canary's ideal success probability is 1 (its
answer is known), so the error of a success probability ``p`` is ``1 - p``; the
relative error reduction of a method is ``1 - mitigated error / raw error``.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Any

from qrt_ray.metrics import RuntimeMetrics
from qrt_ray.store import CanaryRecord

# Below this raw error there is nothing to reduce: shot noise alone decides the ratio.
MIN_RAW_ERROR = 0.01
# method -> the resilience level it belongs to (readout: level 1, as in Qiskit Runtime)
METHOD_LEVELS = {"readout": "1"}


@dataclass(frozen=True, slots=True)
class Reduction:
    """One method's effect on one round: mean relative error reduction over the
    canaries that had an error to reduce, and how many improved, got worse, failed."""

    method: str
    level: str
    mean: float | None
    improved: int
    worse: int
    failed: int


def reductions(canaries: Iterable[Mapping[str, Any]]) -> list[Reduction]:
    """The relative error reduction of each mitigation method over a round's canaries
    (each a dict with ``measured`` and ``mitigated``: method -> success, or None where
    the method failed)."""
    per: dict[str, tuple[list[float], int]] = {}
    for c in canaries:
        raw_error = 1.0 - float(c["measured"])
        for method, value in (c.get("mitigated") or {}).items():
            ratios, failed = per.get(method, ([], 0))
            if value is None:
                per[method] = (ratios, failed + 1)
                continue
            if raw_error >= MIN_RAW_ERROR:
                ratios.append(1.0 - abs(1.0 - float(value)) / raw_error)
            per[method] = (ratios, failed)
    out = []
    for method in sorted(per):
        ratios, failed = per[method]
        mean = sum(ratios) / len(ratios) if ratios else None
        improved = sum(1 for r in ratios if r > 0)
        out.append(
            Reduction(
                method,
                METHOD_LEVELS.get(method, "1"),
                mean,
                improved,
                len(ratios) - improved,
                failed,
            )
        )
    return out


def observe_round(metrics: RuntimeMetrics, record: CanaryRecord) -> None:
    """Count a recorded canary round and set the device's canary gauges."""
    device = record.device
    metrics.canary_rounds.labels(device, "drift" if record.drifted else "pass").inc()
    if not record.drifted:
        metrics.canary_last_pass.labels(device).set(record.at)
    for r in reductions(record.detail.get("canaries", [])):
        if r.mean is not None:
            metrics.mitigation_reduction.labels(device, r.method, r.level).set(r.mean)
        for outcome, n in (("improved", r.improved), ("worse", r.worse), ("failed", r.failed)):
            if n:
                metrics.mitigation_runs.labels(device, r.method, r.level, outcome).inc(n)


def last_passes(metrics: RuntimeMetrics, history: Mapping[str, list[CanaryRecord]]) -> None:
    """Set each device's last passing round from stored history (newest first), so a
    restarted scheduler does not report devices as never checked."""
    for device, records in history.items():
        passed = next((r for r in records if not r.drifted), None)
        if passed is not None:
            metrics.canary_last_pass.labels(device).set(passed.at)
