"""Raw results from devices: checksums, partial-run accounting, and the final result.

All pure functions. A device returns a :class:`RawRun` per (job, attempt) with a
checksum over its counts; the collector verifies it, works out missing shots, and
only merges runs made on one calibration.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from enum import StrEnum

from qrt_ray.errors import IntegrityError
from qrt_ray.models import CircuitResult, CompileInfo, JobResult, ResultMetadata


class RunError(StrEnum):
    """Why a run produced no shots, which decides what the scheduler does next."""

    NONE = ""  # it ran (or failed in a way the collector judges: a bad checksum)
    LINK = "link"  # the control link failed after its retries: rerun, counts an attempt
    PERMANENT = "permanent"  # the device rejected the program: the job fails at once
    CALIBRATION = "calibration"  # compiled for a calibration the device has left: recompile,
    # costing no attempt
    SIMULATOR = "simulator"  # the simulator raised under the batch: every job of it is
    # a suspect (qrt_ray.policies.quarantine)


@dataclass(frozen=True, slots=True)
class RawRun:
    """What a device returns for one run of one attempt of one job.

    A job with more shots than the device's slice runs in several slices of one
    attempt: ``first_shot`` is the index of the slice's first shot within the job (it
    keys the shot ledger and derives the slice's seed), ``remaining`` the shots of the
    attempt still waiting in the device queue after this slice.
    """

    job_id: str
    attempt: int
    device: str
    calibration_id: str
    calibration_taken_at: float
    shots_requested: int
    counts: tuple[dict[str, int], ...]
    seeds: tuple[int, ...]
    run_s: float
    simulator_method: str
    gpu: bool
    checksum: str
    error: str | None = None
    first_shot: int = 0
    remaining: int = 0
    error_kind: RunError = RunError.NONE  # why ``error`` happened
    ran_at: float = 0.0  # wall-clock seconds when the run finished
    # non-empty when canaries had found the device drifted from its calibration
    degraded: str = ""
    # the scheduler's token for the hand-off this run answers, and the device's
    # signature over the run (see qrt_ray.reports)
    dispatch: str = ""
    signature: str = ""
    noise: str = "device"  # "ideal": simulated without noise (JobSpec.noise)


def slice_seed(seed: int | None, first_shot: int, attempt: int = 1) -> int | None:
    """The simulator seed of a run of ``attempt`` that starts at shot ``first_shot``.

    A run from shot 0 uses the job's own seed (an unsliced job reproduces with it, and
    a whole rerun has no kept shots to repeat); every later slice, and every rerun of
    missing shots, gets its own seed derived from (seed, attempt, first shot), so no
    run repeats the samples of a run whose shots are kept. None stays None (random).
    """
    if seed is None or first_shot == 0:
        return seed
    digest = hashlib.sha256(f"{seed}:{attempt}:{first_shot}".encode()).digest()
    return int.from_bytes(digest[:4], "big") % 2**30


def counts_checksum(counts: Sequence[Mapping[str, int]]) -> str:
    """sha256 over a canonical encoding of per-circuit counts."""
    payload = json.dumps([dict(sorted(c.items())) for c in counts], separators=(",", ":"))
    return hashlib.sha256(payload.encode()).hexdigest()


def verify_run(run: RawRun) -> None:
    """Raise IntegrityError if the run's counts do not match their checksum."""
    actual = counts_checksum(run.counts)
    if actual != run.checksum:
        raise IntegrityError(
            f"job {run.job_id} attempt {run.attempt} on {run.device}: result payload "
            f"checksum mismatch (got {actual[:12]}, device sent {run.checksum[:12]})"
        )


def shots_executed(run: RawRun) -> int:
    """Shots every circuit of the run completed (a partial circuit caps the whole run)."""
    return min(sum(c.values()) for c in run.counts) if run.counts else 0


def missing_shots(requested: int, runs: Sequence[RawRun]) -> int:
    """Shots still to run after these runs (never negative)."""
    return max(0, requested - sum(shots_executed(r) for r in runs))


def merge_runs(runs: Sequence[RawRun]) -> tuple[dict[str, int], ...]:
    """Add up counts of runs of the same job on the same calibration.

    Raises:
        IntegrityError: runs come from different calibration ids or circuit counts;
            shots from different calibrations are never aggregated.
    """
    if not runs:
        raise IntegrityError("no runs to merge")
    cal_ids = {r.calibration_id for r in runs}
    if len(cal_ids) != 1:
        raise IntegrityError(
            f"job {runs[0].job_id}: refusing to merge shots from calibrations {sorted(cal_ids)}"
        )
    width = len(runs[0].counts)
    if any(len(r.counts) != width for r in runs):
        raise IntegrityError(f"job {runs[0].job_id}: runs disagree on the number of circuits")
    merged: list[dict[str, int]] = [{} for _ in range(width)]
    for run in runs:
        for target, part in zip(merged, run.counts, strict=True):
            for key, n in part.items():
                target[key] = target.get(key, 0) + n
    return tuple(merged)


def trim_counts(counts: Mapping[str, int], shots: int) -> dict[str, int]:
    """Drop surplus shots deterministically so a circuit has exactly ``shots``."""
    total = sum(counts.values())
    if total <= shots:
        return dict(counts)
    out = dict(counts)
    surplus = total - shots
    for key in sorted(out, key=lambda k: (-out[k], k)):
        take = min(surplus, out[key])
        out[key] -= take
        surplus -= take
        if surplus == 0:
            break
    return {k: v for k, v in out.items() if v}


def build_result(
    job_id: str,
    runs: Sequence[RawRun],
    compile_infos: Sequence[CompileInfo],
    versions: Mapping[str, str],
    shots: int,
    recovery: str | None = None,
) -> JobResult:
    """The job's final result (``shots`` per circuit) from its runs on one calibration.

    ``recovery`` says how a job cut short was completed (its missing shots rerun on
    the same calibration, or the whole job rerun on a new one).
    """
    first = runs[0]
    merged = merge_runs(runs)
    circuits = []
    for counts in merged:
        exact = trim_counts(counts, shots)
        total = sum(exact.values())
        circuits.append(
            CircuitResult(
                counts=dict(sorted(exact.items())),
                shots=total,
                probabilities={k: v / total for k, v in sorted(exact.items())},
            )
        )
    meta = ResultMetadata(
        job_id=job_id,
        device=first.device,
        calibration_id=first.calibration_id,
        calibration_taken_at=first.calibration_taken_at,
        shots_requested=shots,
        shots_executed=min(c.shots for c in circuits),
        seeds=tuple(s for r in runs for s in r.seeds),
        attempts=len({r.attempt for r in runs}),
        runs=len(runs),
        simulator_method=first.simulator_method,
        gpu=first.gpu,
        run_s=sum(r.run_s for r in runs),
        compile=tuple(compile_infos),
        versions=dict(versions),
        calibration_age_s=max(0.0, max(r.ran_at for r in runs) - first.calibration_taken_at)
        if any(r.ran_at for r in runs)
        else 0.0,
        warnings=tuple(dict.fromkeys(r.degraded for r in runs if r.degraded)),
        recovery=recovery,
        noise="ideal" if first.noise == "ideal" else "device",
    )
    return JobResult(circuits=tuple(circuits), metadata=meta)


def encode_result(result: JobResult) -> bytes:
    """Canonical JSON bytes of a result: what the store hashes and keeps."""
    return result.model_dump_json().encode()


def decode_result(data: bytes) -> JobResult:
    """Parse stored result bytes (JSON, validated; never unpickled)."""
    return JobResult.model_validate_json(data)


def encode_run(run: RawRun) -> bytes:
    """Canonical JSON bytes of a raw run, kept in the shot ledger's blob."""
    # its fields are plain values, tuples and dicts of them: read them as they are
    # (``dataclasses.asdict`` deep-copied every count of every circuit first)
    fields = {f.name: getattr(run, f.name) for f in dataclasses.fields(run)}
    return json.dumps(fields, sort_keys=True, separators=(",", ":")).encode()


def decode_run(data: bytes) -> RawRun:
    """Parse a raw run stored by :func:`encode_run` (JSON; never unpickled)."""
    raw = json.loads(data)
    raw["counts"] = tuple({str(k): int(v) for k, v in c.items()} for c in raw["counts"])
    raw["seeds"] = tuple(int(s) for s in raw["seeds"])
    raw["error_kind"] = RunError(raw.get("error_kind", ""))
    return RawRun(**raw)
