"""The store's integrity check: what must hold of it whatever happened to the farm.

Each check names an invariant the runtime promises and counts the rows that break it
(with a few examples). Load tests and chaos drills end with it; ``qrt integrity``
runs it on a store.

* ``database``: the engine's own check (SQLite ``quick_check``, ``integrity_check``
  when deep; PostgreSQL checks its pages itself).
* ``records``: every job row decodes.
* ``transitions``: each job's transitions are numbered from 0 without a gap, start
  with its submission (-> QUEUED), chain (each move starts where the last ended) and
  end in the job's state: no state change was lost or made twice.
* ``results``: every DONE job has a result, and its blob is stored.
* ``billing``: no job is billed more than once per device (one fee at most, and the
  shots billed for a DONE job are exactly its shots times its circuits); a job that
  has not ended is not billed yet.
* deep only, ``checksums``: every blob hashes to its address; ``shots``: every
  circuit of a DONE job's result holds exactly the shots asked; ``calibration``: the
  result comes from one calibration, the job's.
"""

from __future__ import annotations

import itertools
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from qrt_ray.lifecycle import JobState
from qrt_ray.models import STORED, JobSpec
from qrt_ray.store.base import sha256_hex

_EXAMPLES = 5
_BATCH = 2_000


@dataclass(slots=True)
class Check:
    """One invariant: how many rows were looked at and which broke it."""

    name: str
    checked: int = 0
    problems: int = 0
    examples: list[str] = field(default_factory=list)

    def fail(self, what: str) -> None:
        """Count one broken row (the first few are kept as examples)."""
        self.problems += 1
        if len(self.examples) < _EXAMPLES:
            self.examples.append(what)


@dataclass(slots=True)
class IntegrityReport:
    """Every check of one run."""

    checks: list[Check]
    deep: bool

    @property
    def ok(self) -> bool:
        """Whether nothing broke."""
        return all(c.problems == 0 for c in self.checks)

    def as_dict(self) -> dict[str, Any]:
        """Plain JSON."""
        return {
            "ok": self.ok,
            "deep": self.deep,
            "checks": [
                {
                    "name": c.name,
                    "checked": c.checked,
                    "problems": c.problems,
                    "examples": list(c.examples),
                }
                for c in self.checks
            ],
        }

    def render(self) -> str:
        """A line per check."""
        lines = []
        for c in self.checks:
            mark = "ok" if c.problems == 0 else f"{c.problems} PROBLEMS"
            lines.append(f"{c.name:<12} {c.checked:>9} checked  {mark}")
            lines.extend(f"    {e}" for e in c.examples)
        lines.append("store is consistent" if self.ok else "store has problems (see above)")
        return "\n".join(lines)


def check_integrity(
    store: Any, *, deep: bool = False, progress: Callable[[str], None] | None = None
) -> IntegrityReport:
    """Run every check on ``store`` (a :class:`~qrt_ray.store.sql.SQLJobStore`).

    Args:
        deep: also hash every blob and decode every DONE job's result.
        progress: called with each check's name as it starts.
    """
    read = store.read_sql
    say = progress or (lambda _name: None)
    checks = []

    say("database")
    checks.append(_database(store, deep))
    say("records")
    records, jobs = _records(read)
    checks.append(records)
    say("transitions")
    checks.append(_transitions(read, jobs))
    say("results")
    checks.append(_results(read))
    say("billing")
    checks.append(_billing(read, jobs))
    if deep:
        say("checksums")
        checks.append(_checksums(read))
        say("shots")
        checks.extend(_result_contents(store, read, jobs))
    return IntegrityReport(checks, deep)


def _database(store: Any, deep: bool) -> Check:
    check = Check("database")
    found = store.engine_check(deep)
    if found is None:
        return check  # PostgreSQL checksums its own pages as it reads them
    check.checked = 1
    for line in found:
        check.fail(line[:200])
    return check


# job id -> (state, shots x circuits, circuits, shots)
_Jobs = dict[str, tuple[JobState, int, int, int]]


def _records(read: Callable[..., list[Any]]) -> tuple[Check, _Jobs]:
    check = Check("records")
    jobs: _Jobs = {}
    last = ""
    while True:
        rows = read(
            "SELECT job_id, state, spec_json FROM jobs WHERE job_id > ? ORDER BY job_id LIMIT ?",
            (last, _BATCH),
        )
        if not rows:
            return check, jobs
        for job_id, state, spec_json in rows:
            check.checked += 1
            try:
                spec = JobSpec.model_validate_json(spec_json, context=STORED)
                jobs[job_id] = (
                    JobState(state),
                    spec.shots * len(spec.circuits),
                    len(spec.circuits),
                    spec.shots,
                )
            except (ValueError, TypeError, KeyError):
                check.fail(f"job {job_id}: its row does not decode")
        last = rows[-1][0]


def _transitions(read: Callable[..., list[Any]], jobs: _Jobs) -> Check:
    check = Check("transitions")
    last = ""
    seen: set[str] = set()

    def judge(job_id: str, moves: list[tuple[int, str | None, str]]) -> None:
        check.checked += 1
        seen.add(job_id)
        if job_id not in jobs:
            check.fail(f"job {job_id}: transitions of a job that is not stored")
            return
        if [m[0] for m in moves] != list(range(len(moves))):
            check.fail(f"job {job_id}: transitions numbered {[m[0] for m in moves]}")
            return
        if moves[0][1] is not None or moves[0][2] != JobState.QUEUED.value:
            check.fail(f"job {job_id}: does not start with its submission")
            return
        for (_, _, before), (seq, frm, _) in itertools.pairwise(moves):
            if frm != before:
                check.fail(f"job {job_id}: move {seq} starts from {frm}, not {before}")
                return
        if moves[-1][2] != jobs[job_id][0].value:
            check.fail(
                f"job {job_id}: transitions end in {moves[-1][2]}, the job is "
                f"{jobs[job_id][0].value}"
            )

    while True:
        rows = read(
            "SELECT job_id, seq, from_state, to_state FROM transitions WHERE job_id IN "
            "(SELECT job_id FROM jobs WHERE job_id > ? ORDER BY job_id LIMIT ?) "
            "ORDER BY job_id, seq",
            (last, _BATCH),
        )
        if not rows:
            break
        current, moves = rows[0][0], []
        for job_id, seq, frm, to in rows:
            if job_id != current:
                judge(current, moves)
                current, moves = job_id, []
            moves.append((seq, frm, to))
        judge(current, moves)
        last = rows[-1][0]
    for job_id in sorted(set(jobs) - seen)[: _EXAMPLES + 1]:
        check.fail(f"job {job_id}: no transitions at all")
    orphans = read(
        "SELECT COUNT(DISTINCT job_id) FROM transitions WHERE job_id NOT IN "
        "(SELECT job_id FROM jobs)"
    )[0][0]
    for _ in range(int(orphans)):
        check.fail("transitions of a job that is not stored")
    return check


def _results(read: Callable[..., list[Any]]) -> Check:
    check = Check("results")
    check.checked = int(
        read("SELECT COUNT(*) FROM jobs WHERE state=?", (JobState.DONE.value,))[0][0]
    )
    for (job_id,) in read(
        "SELECT job_id FROM jobs WHERE state=? AND result_sha256 IS NULL",
        (JobState.DONE.value,),
    ):
        check.fail(f"job {job_id}: DONE without a result")
    for job_id, sha in read(
        "SELECT j.job_id, j.result_sha256 FROM jobs j LEFT JOIN blobs b "
        "ON b.sha256 = j.result_sha256 WHERE j.result_sha256 IS NOT NULL AND b.sha256 IS NULL"
    ):
        check.fail(f"job {job_id}: result blob {sha[:12]} is missing")
    return check


def _billing(read: Callable[..., list[Any]], jobs: _Jobs) -> Check:
    check = Check("billing")
    rows = read(
        "SELECT job_id, SUM(CASE WHEN kind='fee' THEN 1 ELSE 0 END), "
        "SUM(CASE WHEN kind='shots' THEN shots ELSE 0 END), COUNT(*) FROM ledger "
        "WHERE kind IN ('fee', 'shots') GROUP BY job_id"
    )
    for job_id, fees, shots, _lines in rows:
        check.checked += 1
        if int(fees) > 1:
            check.fail(f"job {job_id}: {fees} fees")
        found = jobs.get(job_id)
        if found is None:
            continue  # removed by retention: its bill stays
        state, asked, _, _ = found
        if not state.is_final:
            check.fail(f"job {job_id}: billed while {state.value}")
        elif state is JobState.DONE and int(shots) != asked:
            check.fail(f"job {job_id}: billed {shots} shots x circuits, asked {asked}")
    return check


def _checksums(read: Callable[..., list[Any]]) -> Check:
    check = Check("checksums")
    last = ""
    while True:
        rows = read(
            "SELECT sha256, size, data FROM blobs WHERE sha256 > ? ORDER BY sha256 LIMIT ?",
            (last, 200),
        )
        if not rows:
            return check
        for sha, size, data in rows:
            check.checked += 1
            data = bytes(data)
            if sha256_hex(data) != sha or len(data) != int(size):
                check.fail(f"blob {sha[:12]}: its bytes do not hash to its address")
        last = rows[-1][0]


def _result_contents(store: Any, read: Callable[..., list[Any]], jobs: _Jobs) -> list[Check]:
    from qrt_ray.results import decode_result

    shots_check, cal_check = Check("shots"), Check("calibration")
    rows = read(
        "SELECT job_id, result_sha256, calibration_id FROM jobs WHERE state=? "
        "AND result_sha256 IS NOT NULL",
        (JobState.DONE.value,),
    )
    for job_id, sha, calibration_id in rows:
        try:
            result = decode_result(store.get_blob(sha))
        except Exception as exc:  # corrupt or missing: counted by checksums/results
            shots_check.fail(f"job {job_id}: result unreadable ({type(exc).__name__})")
            continue
        shots_check.checked += 1
        cal_check.checked += 1
        asked = jobs[job_id][3] if job_id in jobs else None
        for i, circuit in enumerate(result.circuits):
            total = sum(circuit.counts.values())
            if asked is not None and total != asked:
                shots_check.fail(f"job {job_id}: circuit {i} holds {total} shots, asked {asked}")
                break
        if result.metadata.calibration_id != calibration_id:
            cal_check.fail(
                f"job {job_id}: result from calibration {result.metadata.calibration_id}, "
                f"the job records {calibration_id}"
            )
    return [shots_check, cal_check]
