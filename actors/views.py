"""What clients see of stored jobs, transitions and calibrations, as plain data.

Pure (no Ray): the scheduler and calibration actors answer with these, and
:mod:`qrt_ray.history` reads the same views straight from the store when no farm runs.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from qrt_ray.calibration import calibration_from_json
from qrt_ray.models import CalibrationSnapshot
from qrt_ray.store import JobRecord
from qrt_ray.store.base import CalibrationRecord, CanaryRecord, TransitionEvent


def record_view(rec: JobRecord) -> dict[str, Any]:
    """A job record as plain data for clients."""
    return {
        "job_id": rec.job_id,
        "state": rec.state.value,
        "tenant": rec.tenant,
        "priority": rec.spec.priority,
        "shots": rec.spec.shots,
        "num_circuits": len(rec.spec.circuits),
        "tags": list(rec.spec.tags),
        "device": rec.device,
        "calibration_id": rec.calibration_id,
        "error": rec.error,
        "error_class": rec.error_class.value if rec.error_class else None,
        "created_at": rec.created_at,
        "updated_at": rec.updated_at,
        "attempts": rec.attempts,
        "placement": rec.placement,
        "compile_info": rec.compile_info,
        "recovery": rec.recovery,
        "result_sha256": rec.result_sha256,
    }


def event_views(events: Sequence[TransitionEvent]) -> list[dict[str, Any]]:
    """A job's stored transitions as plain data, oldest first."""
    return [
        {
            "seq": e.seq,
            "event": e.event,
            "from": e.from_state.value if e.from_state else None,
            "to": e.to_state.value,
            "at": e.at,
            "reason": e.reason,
        }
        for e in events
    ]


def calibration_history(
    records: Sequence[CalibrationRecord], rounds: Sequence[CanaryRecord]
) -> list[dict[str, Any]]:
    """A device's calibrations (newest first) with summary figures and the canary
    rounds run while each was current (``rounds`` newest first too)."""
    out = []
    until = float("inf")
    for r in records:
        cal = calibration_from_json(r.snapshot_json)
        mine = [
            c for c in rounds if c.calibration_id == r.calibration_id and r.taken_at <= c.at < until
        ]
        until = r.taken_at
        out.append(
            {
                "calibration_id": r.calibration_id,
                "taken_at": r.taken_at,
                "reason": r.reason,
                "mean_t1_us": 1e6 * sum(cal.t1_s) / cal.num_qubits,
                "mean_readout_error": sum(cal.readout_error) / cal.num_qubits,
                "mean_2q_error": mean_2q_error(cal),
                "canary_rounds": len(mine),
                "last_canary": (mine[0].predicted, mine[0].measured) if mine else None,
            }
        )
    return out


def mean_2q_error(cal: CalibrationSnapshot) -> float | None:
    """The mean error of a calibration's two-qubit gates (None: it has none)."""
    errors = [g.error for g in cal.gates if len(g.qubits) == 2]
    return sum(errors) / len(errors) if errors else None
