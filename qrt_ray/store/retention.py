"""Retention: the store keeps a finished job for a window, then removes it.

What goes: a job that ended (DONE, FAILED or CANCELLED) longer ago than its window,
with its transitions, its shot-ledger rows, and every blob (result, raw runs) no other
job still refers to; canary rounds older than the longest window. The window is
``keep_fetched_s`` once a client has fetched the job's result, and ``keep_unfetched_s``
while no one has (so a result is never removed before its owner could read it within
the longer window). A job that has not ended is never removed, however old.

What stays: a tombstone per removed job (its id, tenant, idempotency key, final state
and times), so asking for it again says it was removed and when, and its idempotency
key still refuses a second job (for ``keep_tombstones_s``, a year by default; a
tombstone is about 100 bytes); the billing ledger and the audit chain, which are
money and evidence and are never removed here; calibrations (small, and the history
of every device).

Every batch of removals is one transaction: a crash mid-way leaves each job either
whole or removed with its tombstone, never half.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from qrt_ray.errors import ValidationError
from qrt_ray.lifecycle import JobState

if TYPE_CHECKING:
    from qrt_ray.config import RetentionConfig
    from qrt_ray.store.base import JobStore

FINAL_STATES = tuple(s.value for s in JobState if s.is_final)


@dataclass(frozen=True, slots=True)
class PurgedJob:
    """What remains of a job retention removed."""

    job_id: str
    tenant: str
    state: JobState
    created_at: float
    ended_at: float
    purged_at: float


@dataclass(slots=True)
class GcReport:
    """What one garbage collection removed (or, on a dry run, would remove)."""

    jobs: int = 0
    transitions: int = 0
    shot_rows: int = 0
    blobs: int = 0
    blob_bytes: int = 0
    canaries: int = 0
    tombstones: int = 0
    dry_run: bool = False
    seconds: float = 0.0
    by_state: dict[str, int] = field(default_factory=dict)

    def as_dict(self) -> dict[str, Any]:
        """Plain JSON."""
        return {
            "jobs": self.jobs,
            "by_state": dict(self.by_state),
            "transitions": self.transitions,
            "shot_rows": self.shot_rows,
            "blobs": self.blobs,
            "blob_bytes": self.blob_bytes,
            "canaries": self.canaries,
            "tombstones": self.tombstones,
            "dry_run": self.dry_run,
            "seconds": round(self.seconds, 3),
        }


class RetentionTables:
    """Mixed into :class:`~qrt_ray.store.sql.SQLJobStore`."""

    _write: Callable[..., Any]
    _rows: Callable[..., list[Any]]
    _row: Callable[..., Any]

    def mark_fetched(self, job_ids: Sequence[str], at: float) -> int:
        """Record that clients fetched these jobs' results (the first fetch counts);
        returns how many were fetched for the first time."""
        ids = list(dict.fromkeys(job_ids))
        if not ids:
            return 0

        def write(conn: Any) -> int:
            marks = placeholders(len(ids))
            cur = conn.execute(
                f"UPDATE jobs SET fetched_at=? WHERE fetched_at IS NULL AND job_id IN ({marks})",
                (at, *ids),
            )
            return max(0, cur.rowcount)

        return self._write(write, urgent=True, rows=len(ids))  # a fetch waits on it

    def expired_jobs(
        self, now: float, keep_fetched_s: float, keep_unfetched_s: float, limit: int
    ) -> list[str]:
        """Ids of finished jobs past their window, oldest first, at most ``limit``."""
        rows = self._rows(
            f"SELECT job_id FROM jobs WHERE state IN ({placeholders(len(FINAL_STATES))}) "
            "AND updated_at < ? AND (fetched_at IS NOT NULL OR updated_at < ?) "
            "ORDER BY updated_at LIMIT ?",
            (*FINAL_STATES, now - keep_fetched_s, now - keep_unfetched_s, limit),
        )
        return [r[0] for r in rows]

    def purge_jobs(self, job_ids: Sequence[str], at: float, *, dry_run: bool = False) -> GcReport:
        """Remove finished jobs (and whatever only they refer to), leaving tombstones.

        A job that is not finished is skipped, whatever the caller passed: the state is
        read in the same transaction that removes the job. ``dry_run`` counts without
        removing (its transaction rolls back).
        """
        report = GcReport(dry_run=dry_run)
        if not job_ids:
            return report

        def write(conn: Any) -> GcReport:
            marks = placeholders(len(job_ids))
            # finished ones only, checked here: with the state in SQL, SQLite reads
            # through the state index, every finished job in the store, for each batch
            rows = conn.execute(
                "SELECT job_id, tenant, idempotency_key, state, created_at, updated_at, "
                f"result_sha256 FROM jobs WHERE job_id IN ({marks})",
                tuple(job_ids),
            ).fetchall()
            rows = [r for r in rows if r[3] in FINAL_STATES]
            if not rows:
                return report
            ids = [r[0] for r in rows]
            marks = placeholders(len(ids))
            blobs = {r[6] for r in rows if r[6]}
            blobs.update(
                r[0]
                for r in conn.execute(
                    f"SELECT run_sha256 FROM shot_ledger WHERE job_id IN ({marks}) "
                    "AND run_sha256 IS NOT NULL",
                    ids,
                ).fetchall()
            )
            for r in rows:
                report.by_state[r[3]] = report.by_state.get(r[3], 0) + 1
                conn.execute(
                    "INSERT INTO purged_jobs (job_id, tenant, idempotency_key, state, "
                    "created_at, ended_at, purged_at) VALUES (?,?,?,?,?,?,?) "
                    "ON CONFLICT DO NOTHING",
                    (r[0], r[1], r[2], r[3], r[4], r[5], at),
                )
            report.jobs = len(ids)
            report.transitions = _deleted(
                conn.execute(f"DELETE FROM transitions WHERE job_id IN ({marks})", ids)
            )
            report.shot_rows = _deleted(
                conn.execute(f"DELETE FROM shot_ledger WHERE job_id IN ({marks})", ids)
            )
            conn.execute(f"DELETE FROM jobs WHERE job_id IN ({marks})", ids)
            for sha in sorted(blobs):  # a blob another job still uses stays
                used = conn.execute(
                    "SELECT 1 FROM jobs WHERE result_sha256=? UNION ALL "
                    "SELECT 1 FROM shot_ledger WHERE run_sha256=? LIMIT 1",
                    (sha, sha),
                ).fetchone()
                if used is not None:
                    continue
                size = conn.execute("SELECT size FROM blobs WHERE sha256=?", (sha,)).fetchone()
                if size is None:
                    continue
                conn.execute("DELETE FROM blobs WHERE sha256=?", (sha,))
                report.blobs += 1
                report.blob_bytes += int(size[0])
            if dry_run:
                raise _DryRun(report)
            return report

        try:
            return self._write(write, rows=max(1, len(job_ids)))
        except _DryRun as done:
            return done.report

    def prune_canaries(self, before: float, *, dry_run: bool = False) -> int:
        """Remove canary rounds recorded before ``before``; returns how many."""
        if dry_run:
            (n,) = self._row("SELECT COUNT(*) FROM canaries WHERE at < ?", (before,))
            return int(n)
        return self._write(
            lambda conn: _deleted(conn.execute("DELETE FROM canaries WHERE at < ?", (before,)))
        )

    def prune_tombstones(self, before: float, *, dry_run: bool = False) -> int:
        """Remove tombstones of jobs removed before ``before``; returns how many."""
        if dry_run:
            (n,) = self._row("SELECT COUNT(*) FROM purged_jobs WHERE purged_at < ?", (before,))
            return int(n)
        return self._write(
            lambda conn: _deleted(
                conn.execute("DELETE FROM purged_jobs WHERE purged_at < ?", (before,))
            )
        )

    def purged(self, job_id: str) -> PurgedJob | None:
        """The tombstone of a job retention removed, if it was."""
        row = self._row(
            "SELECT job_id, tenant, state, created_at, ended_at, purged_at FROM purged_jobs "
            "WHERE job_id=?",
            (job_id,),
        )
        return None if row is None else _tombstone(row)

    def purged_by_key(self, tenant: str, idempotency_key: str) -> PurgedJob | None:
        """The tombstone of the removed job that held a tenant's idempotency key."""
        row = self._row(
            "SELECT job_id, tenant, state, created_at, ended_at, purged_at FROM purged_jobs "
            "WHERE tenant=? AND idempotency_key=?",
            (tenant, idempotency_key),
        )
        return None if row is None else _tombstone(row)


class _DryRun(Exception):
    """Rolls a dry run's transaction back, carrying what it counted."""

    def __init__(self, report: GcReport) -> None:
        super().__init__("dry run")
        self.report = report


def _deleted(cursor: Any) -> int:
    return max(0, cursor.rowcount)


def _tombstone(row: Sequence[Any]) -> PurgedJob:
    return PurgedJob(row[0], row[1], JobState(row[2]), row[3], row[4], row[5])


def placeholders(n: int) -> str:
    """``?,?,...`` for ``n`` arguments."""
    return ",".join("?" * n)


def collect_garbage(
    store: JobStore,
    *,
    keep_fetched_s: float,
    keep_unfetched_s: float,
    batch: int = 500,
    keep_tombstones_s: float | None = None,
    now: float | None = None,
    dry_run: bool = False,
    progress: Callable[[GcReport], None] | None = None,
) -> GcReport:
    """Remove every finished job past its window, ``batch`` jobs a transaction, and
    canary rounds older than the longer window.

    Args:
        store: the job store.
        keep_fetched_s: a fetched result's window, from the job's end.
        keep_unfetched_s: the window of a result no one has fetched (and of jobs that
            have none: failed, cancelled).
        batch: jobs removed per transaction (each holds the write lock briefly).
        keep_tombstones_s: a removed job's tombstone is kept this long after its
            removal (None: for good); after it, its id is unknown and its idempotency
            key free again.
        now: the clock (wall time by default).
        dry_run: count, remove nothing.
        progress: called with the running totals after each batch.
    """
    started = time.perf_counter()
    now = time.time() if now is None else now
    total = GcReport(dry_run=dry_run)
    # a dry run removes nothing, so it lists every expired job at once; a real run
    # asks again after each batch (the removed ones no longer show)
    pending = store.expired_jobs(now, keep_fetched_s, keep_unfetched_s, 2**62) if dry_run else []
    while True:
        if dry_run:
            ids, pending = pending[:batch], pending[batch:]
        else:
            ids = store.expired_jobs(now, keep_fetched_s, keep_unfetched_s, batch)
        if not ids:
            break
        part = store.purge_jobs(ids, now, dry_run=dry_run)
        total.jobs += part.jobs
        total.transitions += part.transitions
        total.shot_rows += part.shot_rows
        total.blobs += part.blobs
        total.blob_bytes += part.blob_bytes
        for state, n in part.by_state.items():
            total.by_state[state] = total.by_state.get(state, 0) + n
        if progress is not None:
            progress(total)
        if part.jobs == 0 and not dry_run:
            break  # they moved on meanwhile: stop rather than spin
    total.canaries = store.prune_canaries(
        now - max(keep_fetched_s, keep_unfetched_s), dry_run=dry_run
    )
    if keep_tombstones_s is not None:
        total.tombstones = store.prune_tombstones(now - keep_tombstones_s, dry_run=dry_run)
    total.seconds = time.perf_counter() - started
    return total


def collect_by_policy(
    store: JobStore,
    retention: RetentionConfig,
    *,
    keep_fetched_s: float | None = None,
    keep_unfetched_s: float | None = None,
    dry_run: bool = False,
    progress: Callable[[GcReport], None] | None = None,
) -> dict[str, Any]:
    """:func:`collect_garbage` with ``retention``'s windows where none is given, as
    ``qrt gc`` runs it: the report as plain data, with the windows used and the
    store's size before and after.

    Raises:
        ValidationError: the unfetched window is shorter than the fetched one.
    """
    fetched = retention.keep_fetched_s if keep_fetched_s is None else keep_fetched_s
    unfetched = retention.keep_unfetched_s if keep_unfetched_s is None else keep_unfetched_s
    if unfetched < fetched:
        raise ValidationError(
            f"keep_unfetched_s={unfetched:g} is shorter than keep_fetched_s={fetched:g}; "
            "make the unfetched window at least the fetched one"
        )
    before = store.data_bytes()
    report = collect_garbage(
        store,
        keep_fetched_s=fetched,
        keep_unfetched_s=unfetched,
        batch=retention.batch,
        keep_tombstones_s=max(retention.keep_tombstones_s, unfetched),
        dry_run=dry_run,
        progress=progress,
    )
    return {
        **report.as_dict(),
        "keep_fetched_s": fetched,
        "keep_unfetched_s": unfetched,
        "store_bytes_before": before,
        "store_bytes_after": store.data_bytes(),
    }
