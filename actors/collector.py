"""Result collector: turns a device's raw runs into ledger entries and decisions.

For each run it verifies the checksum, counts the shots once in the ledger (keyed by
job and attempt, so a retried delivery is never counted twice), and decides whether
the job is complete, needs its missing shots re-queued, or must rerun. Pure decisions;
the scheduler persists them.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from enum import StrEnum

from qrt_ray.errors import IntegrityError
from qrt_ray.models import CompileInfo, JobResult
from qrt_ray.results import RawRun, build_result, missing_shots, shots_executed, verify_run


class Outcome(StrEnum):
    """What a run means for its job."""

    COMPLETE = "complete"  # every shot is in: build the result
    PARTIAL = "partial"  # some shots missing: re-queue only those
    RERUN = "rerun"  # the run is unusable (corrupt payload, wrong calibration)


class Cause(StrEnum):
    """Why a run is to be rerun (RERUN verdicts); NONE for the others."""

    NONE = ""
    DEVICE = "device"  # the device reported an error instead of counts
    CHECKSUM = "checksum"  # the counts do not match their checksum
    CALIBRATION_CHANGED = "calibration_changed"  # earlier runs were on another calibration


@dataclass(frozen=True, slots=True)
class Verdict:
    """The collector's decision on one run."""

    outcome: Outcome
    reason: str
    accepted: bool  # whether the run's shots count toward the job
    missing: int = 0
    cause: Cause = Cause.NONE


def judge_run(run: RawRun, requested: int, earlier: Sequence[RawRun]) -> Verdict:
    """Decide what one run means, given the runs of the job accepted before it.

    Args:
        run: the run just delivered.
        requested: shots per circuit the job asked for.
        earlier: runs already accepted for this job (all on one calibration).
    """
    if run.error:
        return Verdict(Outcome.RERUN, run.error, accepted=False, cause=Cause.DEVICE)
    try:
        verify_run(run)
    except IntegrityError as exc:
        return Verdict(
            Outcome.RERUN, f"{exc}; rerunning its shots", accepted=False, cause=Cause.CHECKSUM
        )
    if earlier and earlier[0].calibration_id != run.calibration_id:
        return Verdict(
            Outcome.RERUN,
            f"calibration changed from {earlier[0].calibration_id} to {run.calibration_id} "
            "between partial runs; shots of two calibrations are never merged",
            accepted=False,
            cause=Cause.CALIBRATION_CHANGED,
        )
    missing = missing_shots(requested, [*earlier, run])
    if missing:
        got = requested - missing
        return Verdict(
            Outcome.PARTIAL,
            f"partial run: {got}/{requested} shots; re-queued the {missing} missing shots",
            accepted=True,
            missing=missing,
        )
    return Verdict(Outcome.COMPLETE, f"{shots_executed(run)} shots in", accepted=True)


def tiling(spans: Sequence[tuple[int, int, int]]) -> list[int]:
    """Which of a job's counted runs its result uses: given each run's (first shot,
    shots, attempt), the indices of those that cover the shots from 0 once, the
    earliest attempt first where two cover the same shots.

    Two runs can cover the same shots when a device's report was written to the
    ledger and its job placed again before the scheduler took that report in (a
    store write that failed after its commit): both ran, and both stay in the
    ledger as executions, but a result and a bill count those shots once.
    """
    order = sorted(range(len(spans)), key=lambda i: (spans[i][0], spans[i][2]))
    kept: list[int] = []
    edge = 0
    for i in order:
        first, shots, _ = spans[i]
        if first < edge:
            continue  # shots already covered by an earlier run
        kept.append(i)
        edge = first + shots
    return sorted(kept)


def finish(
    job_id: str,
    runs: Sequence[RawRun],
    compile_infos: Sequence[Mapping[str, object]],
    versions: Mapping[str, str],
    shots: int,
    discarded_shots: int = 0,
) -> JobResult:
    """Build the final, reproducible result of a job (``shots`` per circuit) from its runs.

    ``discarded_shots`` counts shots of earlier runs on another calibration that were
    dropped (the job was rerun whole); the result's ``recovery`` says so, or that the
    missing shots of a partial run were rerun on the same calibration.
    """
    infos = [CompileInfo.model_validate(c) for c in compile_infos]
    return build_result(job_id, runs, infos, versions, shots, recovery_note(runs, discarded_shots))


def recovery_note(runs: Sequence[RawRun], discarded_shots: int) -> str | None:
    """How a job that was cut short was completed, or None if it ran straight through."""
    if not runs:
        return None
    cal = runs[0].calibration_id
    if discarded_shots:
        return (
            f"rerun whole on calibration {cal}: {discarded_shots} shots from an earlier "
            "calibration were discarded, never merged"
        )
    first = min(r.attempt for r in runs)
    rerun = sum(shots_executed(r) for r in runs if r.attempt != first)
    if rerun:
        return f"{rerun} missing shots rerun on the same calibration {cal}"
    return None
