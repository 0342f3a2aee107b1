"""SQLite job store: WAL, ``synchronous=FULL``, and group commit.

One writer thread owns the write connection. Callers hand it small write functions
and block until the transaction holding theirs has committed; the writer takes every
function waiting at that moment into one transaction, so one fsync makes many
callers' changes durable at once (group commit). Each function runs inside its own
SAVEPOINT, so one failing write does not undo its neighbours. Reads use one
connection per thread; WAL lets them run beside the writer.
"""

from __future__ import annotations

import json
import logging
import os
import queue
import sqlite3
import threading
import time
from collections.abc import Callable, Sequence
from concurrent.futures import Future
from pathlib import Path
from typing import Any, TypeVar

import platformdirs

from qrt_ray.errors import IntegrityError, JobNotFoundError, brief
from qrt_ray.lifecycle import JobState
from qrt_ray.models import STORED, JobSpec
from qrt_ray.private import private_dir, private_file
from qrt_ray.store.base import (
    CalibrationRecord,
    CanaryRecord,
    JobRecord,
    JobStore,
    MaintenanceWindow,
    ShotRecord,
    StateUpdate,
    TransitionEvent,
    sha256_hex,
)
from qrt_ray.store.migrations import migrate

logger = logging.getLogger("qrt.store")
T = TypeVar("T")
_MAX_GROUP = 512
_SETTABLE = ("device", "calibration_id", "error", "result_sha256", "placement", "attempts")
_COLUMNS = (
    "job_id, state, spec_json, created_at, updated_at, device, calibration_id, error, "
    "result_sha256, placement_json, attempts"
)


def _data_dir() -> Path:
    """qrt-ray's own data folder (the default store's home)."""
    return Path(platformdirs.user_data_dir("qrt-ray"))


def default_store_path() -> Path:
    """Where the job store lives unless told otherwise: ``$QRT_STORE`` or the data dir."""
    env = os.environ.get("QRT_STORE")
    if env:
        return Path(env)
    return _data_dir() / "jobs.sqlite3"


def open_store(url: str | Path | None = None) -> JobStore:
    """Open the store named by a path, a ``sqlite:///`` URL, or the default.

    Raises:
        ValidationError: the URL names a database this build cannot open.
    """
    from qrt_ray.errors import ValidationError

    if url is None:
        return SQLiteJobStore(default_store_path())
    text = str(url)
    if text.startswith("sqlite:///"):
        return SQLiteJobStore(Path(text.removeprefix("sqlite:///")))
    if "://" in text:
        raise ValidationError(
            f"store={text!r}: unsupported database URL; use a file path or sqlite:///PATH "
            "(PostgreSQL support is planned behind the same JobStore interface)"
        )
    return SQLiteJobStore(Path(text))


_LOCK_WAIT_S = 30.0


def _connect(path: Path) -> sqlite3.Connection:
    conn = sqlite3.connect(
        path, isolation_level=None, check_same_thread=False, timeout=_LOCK_WAIT_S
    )
    _enter_wal(conn)
    conn.execute("PRAGMA synchronous=FULL")
    conn.execute(f"PRAGMA busy_timeout={int(_LOCK_WAIT_S * 1000)}")
    return conn


def _enter_wal(conn: sqlite3.Connection) -> None:
    """Switch ``conn``'s database to WAL, waiting out other openers doing the same.

    Turning a new database to WAL takes an exclusive lock, and SQLite answers
    "database is locked" at once instead of calling the busy handler when another
    connection holds it (several actors open a fresh store together when a farm
    starts). So this retries for up to ``_LOCK_WAIT_S`` before giving up.
    """
    deadline = time.monotonic() + _LOCK_WAIT_S
    pause = 0.005
    while True:
        try:
            conn.execute("PRAGMA journal_mode=WAL")
            return
        except sqlite3.OperationalError as exc:
            if "locked" not in str(exc) or time.monotonic() >= deadline:
                raise
        time.sleep(pause)
        pause = min(pause * 2, 0.2)


class _GroupCommitWriter:
    """The one thread that writes; batches waiting writes into one transaction."""

    def __init__(self, conn: sqlite3.Connection) -> None:
        self._conn = conn
        self._queue: queue.SimpleQueue[tuple[Callable[[sqlite3.Connection], Any], Future] | None]
        self._queue = queue.SimpleQueue()
        self.commits = 0
        self.writes = 0
        self._thread = threading.Thread(target=self._run, name="qrt-store-writer", daemon=True)
        self._thread.start()

    def submit(self, fn: Callable[[sqlite3.Connection], T]) -> Future[T]:
        fut: Future[T] = Future()
        self._queue.put((fn, fut))
        return fut

    def close(self) -> None:
        self._queue.put(None)
        self._thread.join()

    def _run(self) -> None:
        while True:
            first = self._queue.get()
            if first is None:
                return
            group = [first]
            stop = False
            while len(group) < _MAX_GROUP:
                try:
                    item = self._queue.get_nowait()
                except queue.Empty:
                    break
                if item is None:
                    stop = True
                    break
                group.append(item)
            self._commit(group)
            if stop:
                return

    def _commit(self, group: list[tuple[Callable[[sqlite3.Connection], Any], Future]]) -> None:
        conn = self._conn
        outcomes: list[tuple[Future, bool, Any]] = []
        try:
            conn.execute("BEGIN IMMEDIATE")
            for fn, fut in group:
                conn.execute("SAVEPOINT w")
                try:
                    value = fn(conn)
                except Exception as exc:
                    conn.execute("ROLLBACK TO w")
                    outcomes.append((fut, False, exc))
                else:
                    outcomes.append((fut, True, value))
                conn.execute("RELEASE w")
            conn.execute("COMMIT")
        except Exception as exc:
            if conn.in_transaction:
                conn.execute("ROLLBACK")
            for _, fut in group:
                fut.set_exception(exc)
            return
        self.commits += 1
        self.writes += len(group)
        # Results are released only after COMMIT returned: durable before acted on.
        for fut, ok, value in outcomes:
            if ok:
                fut.set_result(value)
            else:
                fut.set_exception(value)


class SQLiteJobStore(JobStore):
    """The default job store: one SQLite file in WAL mode with ``synchronous=FULL``."""

    def __init__(self, path: str | Path) -> None:
        self.path = Path(path)
        # jobs, circuits and results are the tenants' data: owner-only, and the WAL
        # and shared-memory files SQLite makes beside it copy the database's mode
        private_dir(self.path.parent, tighten=self.path.parent == _data_dir())
        private_file(self.path)
        for suffix in ("-wal", "-shm", "-journal"):
            extra = self.path.with_name(self.path.name + suffix)
            if extra.exists():
                private_file(extra)
        write_conn = _connect(self.path)
        migrate(write_conn)
        self._writer = _GroupCommitWriter(write_conn)
        self._write_conn = write_conn
        self._local = threading.local()
        self._closed = False

    # -- plumbing ---------------------------------------------------------------------

    def _write(self, fn: Callable[[sqlite3.Connection], T]) -> T:
        if self._closed:
            raise RuntimeError("job store is closed")
        return self._writer.submit(fn).result()

    def _read(self) -> sqlite3.Connection:
        conn = getattr(self._local, "conn", None)
        if conn is None:
            conn = _connect(self.path)
            self._local.conn = conn
        return conn

    @property
    def commit_count(self) -> int:
        """Transactions committed so far (fewer than writes when group commit works)."""
        return self._writer.commits

    @property
    def write_count(self) -> int:
        """Write calls made durable so far."""
        return self._writer.writes

    # -- jobs -------------------------------------------------------------------------

    def admit(self, records: Sequence[JobRecord]) -> list[tuple[JobRecord, bool]]:
        def write(conn: sqlite3.Connection) -> list[tuple[JobRecord, bool]]:
            out: list[tuple[JobRecord, bool]] = []
            for rec in records:
                key = rec.spec.idempotency_key
                if key is not None:
                    row = conn.execute(
                        f"SELECT {_COLUMNS} FROM jobs WHERE tenant=? AND idempotency_key=?",
                        (rec.tenant, key),
                    ).fetchone()
                    if row is not None:
                        out.append((_record(row), False))
                        continue
                conn.execute(
                    "INSERT INTO jobs (job_id, tenant, idempotency_key, state, priority, "
                    "spec_json, created_at, updated_at) VALUES (?,?,?,?,?,?,?,?)",
                    (
                        rec.job_id,
                        rec.tenant,
                        key,
                        JobState.QUEUED.value,
                        rec.spec.priority,
                        rec.spec.model_dump_json(),
                        rec.created_at,
                        rec.created_at,
                    ),
                )
                conn.execute(
                    "INSERT INTO transitions VALUES (?,?,?,?,?,?)",
                    (rec.job_id, 0, None, JobState.QUEUED.value, rec.created_at, "submitted"),
                )
                out.append((rec, True))
            return out

        return self._write(write)

    def apply(self, updates: Sequence[StateUpdate]) -> list[bool]:
        def write(conn: sqlite3.Connection) -> list[bool]:
            return [_apply_one(conn, u) for u in updates]

        return self._write(write) if updates else []

    def get(self, job_id: str) -> JobRecord:
        row = self._read().execute(f"SELECT {_COLUMNS} FROM jobs WHERE job_id=?", (job_id,))
        found = row.fetchone()
        if found is None:
            raise JobNotFoundError(f"job_id={brief(job_id)!r}: no such job")
        try:
            return _record(found)
        except (ValueError, TypeError, KeyError):
            raise IntegrityError(
                f"job {brief(job_id)}: its stored record does not decode; it cannot be shown"
            ) from None

    def find_by_key(self, tenant: str, idempotency_key: str) -> JobRecord | None:
        row = (
            self._read()
            .execute(
                f"SELECT {_COLUMNS} FROM jobs WHERE tenant=? AND idempotency_key=?",
                (tenant, idempotency_key),
            )
            .fetchone()
        )
        return _record(row) if row else None

    def list_jobs(
        self,
        *,
        states: Sequence[JobState] | None = None,
        tenant: str | None = None,
        limit: int = 100,
    ) -> list[JobRecord]:
        where: list[str] = []
        args: list[Any] = []
        if states:
            where.append(f"state IN ({','.join('?' * len(states))})")
            args.extend(s.value for s in states)
        if tenant is not None:
            where.append("tenant=?")
            args.append(tenant)
        clause = f"WHERE {' AND '.join(where)}" if where else ""
        rows = self._read().execute(
            f"SELECT {_COLUMNS} FROM jobs {clause} ORDER BY created_at DESC, job_id LIMIT ?",
            (*args, int(limit)),
        )
        out = []
        for row in rows.fetchall():
            try:
                out.append(_record(row))
            except (ValueError, TypeError, KeyError):
                logger.error("job %s: its stored record does not decode; not listed", row[0])
        return out

    def unfinished(self) -> list[JobRecord]:
        return [r for r in self._unfinished_rows() if isinstance(r, JobRecord)]

    def unreadable(self) -> list[tuple[str, JobState, str]]:
        return [r for r in self._unfinished_rows() if not isinstance(r, JobRecord)]

    def _unfinished_rows(self) -> list[JobRecord | tuple[str, JobState, str]]:
        finals = ("DONE", "FAILED", "CANCELLED")
        rows = self._read().execute(
            f"SELECT {_COLUMNS} FROM jobs WHERE state NOT IN (?,?,?) ORDER BY created_at, job_id",
            finals,
        )
        out: list[JobRecord | tuple[str, JobState, str]] = []
        for row in rows.fetchall():
            try:
                out.append(_record(row))
            except (ValueError, TypeError, KeyError) as exc:  # pydantic's error is a ValueError
                try:
                    state = JobState(row[1])
                except ValueError:
                    logger.error("job %s has an unknown state %r; left as it is", row[0], row[1])
                    continue
                why = f"its stored record does not decode ({type(exc).__name__})"
                logger.error("job %s: %s", row[0], why)
                out.append((row[0], state, why))
        return out

    def events(self, job_id: str) -> list[TransitionEvent]:
        rows = self._read().execute(
            "SELECT job_id, seq, from_state, to_state, at, reason FROM transitions "
            "WHERE job_id=? ORDER BY seq",
            (job_id,),
        )
        return [
            TransitionEvent(
                job_id=r[0],
                seq=r[1],
                from_state=JobState(r[2]) if r[2] else None,
                to_state=JobState(r[3]),
                at=r[4],
                reason=r[5],
            )
            for r in rows.fetchall()
        ]

    def counts_by_state(self) -> dict[JobState, int]:
        rows = self._read().execute("SELECT state, COUNT(*) FROM jobs GROUP BY state")
        return {JobState(s): n for s, n in rows.fetchall()}

    # -- blobs ------------------------------------------------------------------------

    def put_blob(self, data: bytes) -> str:
        digest = sha256_hex(data)

        def write(conn: sqlite3.Connection) -> str:
            conn.execute(
                "INSERT OR IGNORE INTO blobs (sha256, size, data) VALUES (?,?,?)",
                (digest, len(data), data),
            )
            return digest

        return self._write(write)

    def put_blobs(self, blobs: Sequence[bytes]) -> list[str]:
        """Store many blobs in one durable write; returns their sha256 in order."""
        digests = [sha256_hex(b) for b in blobs]

        def write(conn: sqlite3.Connection) -> list[str]:
            conn.executemany(
                "INSERT OR IGNORE INTO blobs (sha256, size, data) VALUES (?,?,?)",
                [(d, len(b), b) for d, b in zip(digests, blobs, strict=True)],
            )
            return digests

        return self._write(write) if blobs else []

    def get_blob(self, sha256: str) -> bytes:
        row = self._read().execute("SELECT data FROM blobs WHERE sha256=?", (sha256,)).fetchone()
        if row is None:
            raise IntegrityError(f"result blob {sha256} is missing from the job store")
        data = bytes(row[0])
        actual = sha256_hex(data)
        if actual != sha256:
            raise IntegrityError(
                f"result blob {sha256} failed its checksum (content hashes to {actual}); "
                "the stored result is corrupt and will not be returned"
            )
        return data

    # -- shot ledger ------------------------------------------------------------------

    def record_shots(self, records: Sequence[ShotRecord]) -> list[bool]:
        def write(conn: sqlite3.Connection) -> list[bool]:
            out = []
            for r in records:
                cur = conn.execute(
                    "INSERT OR IGNORE INTO shot_ledger (job_id, attempt, first_shot, "
                    "calibration_id, shots, at, run_sha256) VALUES (?,?,?,?,?,?,?)",
                    (
                        r.job_id,
                        r.attempt,
                        r.first_shot,
                        r.calibration_id,
                        r.shots,
                        r.at,
                        r.run_sha256,
                    ),
                )
                out.append(cur.rowcount == 1)
            return out

        return self._write(write) if records else []

    def shot_ledger(self, job_id: str) -> list[ShotRecord]:
        rows = self._read().execute(
            "SELECT job_id, attempt, calibration_id, shots, at, run_sha256, first_shot "
            "FROM shot_ledger WHERE job_id=? ORDER BY attempt, first_shot",
            (job_id,),
        )
        return [ShotRecord(*r) for r in rows.fetchall()]

    # -- devices: calibration history, canaries, maintenance ---------------------------

    def record_calibration(self, record: CalibrationRecord) -> bool:
        def write(conn: sqlite3.Connection) -> bool:
            cur = conn.execute(
                "INSERT OR IGNORE INTO calibrations (device, calibration_id, taken_at, "
                "recorded_at, reason, snapshot_json) VALUES (?,?,?,?,?,?)",
                (
                    record.device,
                    record.calibration_id,
                    record.taken_at,
                    record.recorded_at,
                    record.reason,
                    record.snapshot_json,
                ),
            )
            return cur.rowcount == 1

        return self._write(write)

    def calibrations(self, device: str, limit: int = 20) -> list[CalibrationRecord]:
        rows = self._read().execute(
            "SELECT device, calibration_id, taken_at, recorded_at, reason, snapshot_json "
            "FROM calibrations WHERE device=? ORDER BY taken_at DESC, recorded_at DESC LIMIT ?",
            (device, limit),
        )
        return [CalibrationRecord(*r) for r in rows.fetchall()]

    def record_canary(self, record: CanaryRecord) -> None:
        def write(conn: sqlite3.Connection) -> None:
            conn.execute(
                "INSERT INTO canaries (device, at, calibration_id, predicted, measured, "
                "drifted, detail_json) VALUES (?,?,?,?,?,?,?)",
                (
                    record.device,
                    record.at,
                    record.calibration_id,
                    record.predicted,
                    record.measured,
                    int(record.drifted),
                    json.dumps(record.detail, sort_keys=True),
                ),
            )

        self._write(write)

    def canaries(self, device: str, limit: int = 20) -> list[CanaryRecord]:
        rows = self._read().execute(
            "SELECT device, at, calibration_id, predicted, measured, drifted, detail_json "
            "FROM canaries WHERE device=? ORDER BY at DESC LIMIT ?",
            (device, limit),
        )
        return [
            CanaryRecord(r[0], r[1], r[2], r[3], r[4], bool(r[5]), json.loads(r[6]))
            for r in rows.fetchall()
        ]

    def add_maintenance(self, window: MaintenanceWindow) -> None:
        def write(conn: sqlite3.Connection) -> None:
            conn.execute(
                "INSERT INTO maintenance (window_id, device, start, end, reason, created_at) "
                "VALUES (?,?,?,?,?,?)",
                (
                    window.window_id,
                    window.device,
                    window.start,
                    window.end,
                    window.reason,
                    window.created_at,
                ),
            )

        self._write(write)

    def remove_maintenance(self, window_id: str) -> bool:
        def write(conn: sqlite3.Connection) -> bool:
            cur = conn.execute("DELETE FROM maintenance WHERE window_id=?", (window_id,))
            return cur.rowcount == 1

        return self._write(write)

    def maintenance_windows(
        self, device: str | None = None, ending_after: float | None = None
    ) -> list[MaintenanceWindow]:
        query = "SELECT window_id, device, start, end, reason, created_at FROM maintenance"
        where, args = [], []
        if device is not None:
            where.append("device=?")
            args.append(device)
        if ending_after is not None:
            where.append("end>?")
            args.append(ending_after)
        if where:
            query += " WHERE " + " AND ".join(where)
        rows = self._read().execute(query + " ORDER BY start", args)
        return [MaintenanceWindow(*r) for r in rows.fetchall()]

    def close(self) -> None:
        if self._closed:
            return
        self._closed = True
        self._writer.close()
        self._write_conn.close()


def _apply_one(conn: sqlite3.Connection, u: StateUpdate) -> bool:
    sets = ["state=?", "updated_at=?"]
    args: list[Any] = [u.to_state.value, u.at]
    for name, value in u.fields.items():
        if name not in _SETTABLE:
            raise ValueError(f"StateUpdate.fields: {name!r} is not settable")
        if name == "placement":
            sets.append("placement_json=?")
            args.append(json.dumps(value, sort_keys=True))
        else:
            sets.append(f"{name}=?")
            args.append(value)
    cur = conn.execute(
        f"UPDATE jobs SET {', '.join(sets)} WHERE job_id=? AND state=?",
        (*args, u.job_id, u.from_state.value),
    )
    if cur.rowcount != 1:
        return False
    conn.execute(
        "INSERT INTO transitions SELECT ?, COALESCE(MAX(seq), -1) + 1, ?, ?, ?, ? "
        "FROM transitions WHERE job_id=?",
        (u.job_id, u.from_state.value, u.to_state.value, u.at, u.reason, u.job_id),
    )
    return True


def _record(row: tuple[Any, ...]) -> JobRecord:
    return JobRecord(
        job_id=row[0],
        state=JobState(row[1]),
        spec=JobSpec.model_validate_json(row[2], context=STORED),
        created_at=row[3],
        updated_at=row[4],
        device=row[5],
        calibration_id=row[6],
        error=row[7],
        result_sha256=row[8],
        placement=json.loads(row[9]) if row[9] else None,
        attempts=row[10],
    )
