"""The job store in SQL, written once for every database qrt-ray supports.

A backend (SQLite, PostgreSQL) supplies connections and the word that opens a write
transaction; everything else lives here. Statements use ``?`` placeholders and only
syntax both databases share (``ON CONFLICT DO NOTHING``, quoted ``"end"``).

One writer thread owns the write connection. Callers hand it small write functions
and block until the transaction holding theirs has committed; the writer takes the
functions waiting at that moment into one transaction, so one durable commit (one
fsync) makes many callers' changes durable at once: group commit. Each function runs
inside its own SAVEPOINT, so one failing write does not undo its neighbours. Reads
use one connection per thread.

A caller who waits on its write to be answered (a submit, a fetch) should not wait
behind the farm's bulk bookkeeping (a batch of 200 finished jobs is 200 moves): urgent
writes go first, in a transaction of their own when bulk writes wait too, and bulk
writes join a transaction only up to about ``_BULK_ROWS`` rows (at least one write,
whatever its size). An urgent write waits for the transaction in progress, then goes
next.
"""

from __future__ import annotations

import abc
import contextlib
import json
import logging
import math
import queue
import sqlite3
import sys
import threading
from collections import deque
from collections.abc import Callable, Sequence
from concurrent.futures import Future
from datetime import UTC, datetime
from typing import Any, NamedTuple, Protocol, TypeVar

from qrt_ray.access.audit import AuditEntry
from qrt_ray.errors import (
    IntegrityError,
    JobNotFoundError,
    StoreUnavailableError,
    ValidationError,
    brief,
)
from qrt_ray.lifecycle import ErrorClass, JobState
from qrt_ray.models import STORED, JobSpec
from qrt_ray.store.access import AccessTables, append_audit, insert_charges
from qrt_ray.store.base import (
    CalibrationRecord,
    CanaryRecord,
    FinishedJob,
    JobRecord,
    JobStore,
    MaintenanceWindow,
    ShotRecord,
    StateUpdate,
    TransitionEvent,
    sha256_hex,
)
from qrt_ray.store.batched import (
    IN_MAX,
    TRANSITION_COLUMNS,
    apply_moves,
    chunks,
    column_value,
    insert_rows,
)
from qrt_ray.store.retention import PurgedJob, RetentionTables, placeholders

logger = logging.getLogger("qrt.store")
T = TypeVar("T")
_MAX_GROUP = 512
# rows of bulk writes a transaction takes (at least one write, whatever its size)
_BULK_ROWS = 256
# blob bytes in one statement at most (each statement copies its values once more)
_BLOB_BYTES = 8 << 20
_BLOB_INSERT = "INSERT INTO blobs (sha256, size, data)"
_COLUMNS = (
    "job_id, state, spec_json, created_at, updated_at, device, calibration_id, error, "
    "result_sha256, placement_json, attempts, compile_json, recovery_json, error_class"
)
_FINAL = ("DONE", "FAILED", "CANCELLED")


class Cursor(Protocol):
    """What a statement returns: rows and how many rows it changed."""

    rowcount: int

    def fetchone(self) -> Any: ...

    def fetchall(self) -> list[Any]: ...


class Connection(Protocol):
    """The DB-API subset the store uses (``sqlite3.Connection`` is one as it is)."""

    @property
    def in_transaction(self) -> bool: ...

    def execute(self, sql: str, args: Sequence[Any] = ..., /) -> Cursor: ...

    def executemany(self, sql: str, rows: Sequence[Sequence[Any]], /) -> Any: ...

    def close(self) -> None: ...


Write = Callable[[Connection], Any]


class _Pending(NamedTuple):
    """A write waiting for the writer."""

    fn: Write
    future: Future
    urgent: bool
    rows: int


def is_database_error(exc: BaseException) -> bool:
    """Whether ``exc`` came from the database or the file under it (unreachable, locked,
    full), not from the code reading its rows."""
    if isinstance(exc, sqlite3.Error | OSError | StoreUnavailableError):
        return True
    psycopg = sys.modules.get("psycopg")  # not imported: no PostgreSQL store was opened
    return psycopg is not None and isinstance(exc, psycopg.Error)


class _GroupCommitWriter:
    """The one thread that writes; batches waiting writes into one transaction.

    A connection the backend calls broken (the database restarted, the network
    dropped) fails the writes of that transaction and is opened again for the next.
    """

    def __init__(
        self, connect: Callable[[], Connection], begin: str, broken: Callable[[Exception], bool]
    ) -> None:
        self._connect = connect
        self._begin = begin
        self._broken = broken
        self._conn: Connection | None = connect()
        self._queue: queue.SimpleQueue[_Pending | None] = queue.SimpleQueue()
        self.commits = 0
        self.writes = 0
        self._closing = threading.Lock()
        self._closed = False
        self._thread = threading.Thread(target=self._run, name="qrt-store-writer", daemon=True)
        self._thread.start()

    def submit(
        self, fn: Callable[[Connection], T], urgent: bool = False, rows: int = 1
    ) -> Future[T]:
        """Queue a write of about ``rows`` rows; ``urgent`` ones (a caller waiting to
        be answered) go first."""
        fut: Future[T] = Future()
        with self._closing:
            if self._closed:
                fut.set_exception(RuntimeError("job store is closed"))
            else:
                self._queue.put(_Pending(fn, fut, urgent, rows))
        return fut

    def close(self) -> None:
        with self._closing:  # no write is queued behind the stop
            self._closed = True
            self._queue.put(None)
        self._thread.join()
        if self._conn is not None:
            self._conn.close()

    def _run(self) -> None:
        urgent: deque[_Pending] = deque()
        bulk: deque[_Pending] = deque()
        try:
            self._serve(urgent, bulk)
        finally:
            # stopped (or failed): no caller is left waiting on a write never run
            gone = RuntimeError("job store is closed")
            while True:
                try:
                    item = self._queue.get_nowait()
                except queue.Empty:
                    break
                if item is not None:
                    bulk.append(item)
            for pending in (*urgent, *bulk):
                if not pending.future.done():
                    pending.future.set_exception(gone)

    def _serve(self, urgent: deque[_Pending], bulk: deque[_Pending]) -> None:
        alone = False  # whether the last transaction held urgent writes only
        stop = False
        while not stop or urgent or bulk:
            if not stop:
                stop = self._take(urgent, bulk, block=not urgent and not bulk)
            group = [urgent.popleft() for _ in range(min(len(urgent), _MAX_GROUP))]
            # with urgent writes waiting, bulk ones join every other transaction
            alone = bool(group) and bool(bulk) and not alone
            rows = 0
            while bulk and not alone and rows < _BULK_ROWS and len(group) < _MAX_GROUP:
                rows += bulk[0].rows
                group.append(bulk.popleft())
            if group:
                self._commit(group)

    def _take(self, urgent: deque[_Pending], bulk: deque[_Pending], block: bool) -> bool:
        """Move the writes waiting in the queue into ``urgent`` and ``bulk`` (waiting for
        the first when ``block``); returns whether the writer was asked to stop."""
        while True:
            try:
                item = self._queue.get() if block else self._queue.get_nowait()
            except queue.Empty:
                return False
            if item is None:
                return True
            block = False
            (urgent if item.urgent else bulk).append(item)

    def _commit(self, group: list[_Pending]) -> None:
        outcomes: list[tuple[Future, bool, Any]] = []
        try:
            if self._conn is None:
                self._conn = self._connect()
            conn = self._conn
            conn.execute(self._begin)
            for fn, fut, _, _ in group:
                conn.execute("SAVEPOINT w")
                try:
                    value = fn(conn)
                except Exception as exc:
                    if self._broken(exc):
                        raise
                    conn.execute("ROLLBACK TO w")
                    outcomes.append((fut, False, exc))
                else:
                    outcomes.append((fut, True, value))
                conn.execute("RELEASE w")
            conn.execute("COMMIT")
        except Exception as exc:
            try:
                self._abandon(exc)
            except Exception:
                logger.exception("job store: rolling back a failed write failed; reconnecting")
                conn, self._conn = self._conn, None
                with contextlib.suppress(Exception):
                    if conn is not None:
                        conn.close()
            for pending in group:
                pending.future.set_exception(exc)
            return
        self.commits += 1
        self.writes += len(group)
        # Results are released only after COMMIT returned: durable before acted on.
        for fut, ok, value in outcomes:
            if ok:
                fut.set_result(value)
            else:
                fut.set_exception(value)

    def _abandon(self, exc: Exception) -> None:
        """Roll back what the failed transaction left, or drop a broken connection."""
        conn = self._conn
        if conn is None:
            return
        if self._broken(exc):
            logger.warning("job store connection lost (%s); reconnecting", type(exc).__name__)
            try:
                conn.close()
            finally:
                self._conn = None
            return
        if conn.in_transaction:
            conn.execute("ROLLBACK")


class SQLJobStore(AccessTables, RetentionTables, JobStore):
    """Every :class:`JobStore` method in portable SQL, over a backend's connections."""

    #: the statement that opens a write transaction
    begin_sql = "BEGIN"
    #: whether that transaction holds the whole database's write lock, so that what it
    #: reads cannot change before it writes: a batch's moves and ledger lines are then
    #: decided from one read and written in a few statements of many rows (see
    #: :mod:`qrt_ray.store.batched`); otherwise each is its own statement, decided by
    #: the database row by row
    locked_writes = False

    def __init__(self) -> None:
        self._writer = _GroupCommitWriter(self._connect, self.begin_sql, self._broken)
        self._local = threading.local()
        self._closed = False

    # -- what a backend supplies --------------------------------------------------------

    @abc.abstractmethod
    def _connect(self) -> Connection:
        """A new connection in autocommit mode (transactions are opened explicitly)."""

    def _broken(self, exc: Exception) -> bool:
        """Whether ``exc`` means the connection is gone (then it is opened again)."""
        return False

    # -- plumbing ---------------------------------------------------------------------

    def _write(self, fn: Callable[[Connection], T], urgent: bool = False, rows: int = 1) -> T:
        """Run ``fn`` in the writer's next transaction that takes it; returns once that
        transaction has committed. ``urgent``: a caller waits to be answered (it goes
        before bulk bookkeeping); ``rows``: about how many rows it writes."""
        if self._closed:
            raise RuntimeError("job store is closed")
        return self._writer.submit(fn, urgent, rows).result()

    def _rows(self, sql: str, args: Sequence[Any] = ()) -> list[Any]:
        """Run a read on this thread's connection; a broken one is reopened once."""
        for attempt in (1, 2):
            conn = getattr(self._local, "conn", None)
            if conn is None:
                conn = self._local.conn = self._connect()
            try:
                return conn.execute(sql, args).fetchall()
            except Exception as exc:
                if attempt == 2 or not self._broken(exc):
                    raise
                self._local.conn = None
                conn.close()
        raise AssertionError("unreachable")

    def _row(self, sql: str, args: Sequence[Any] = ()) -> Any:
        rows = self._rows(sql, args)
        return rows[0] if rows else None

    def read_sql(self, sql: str, args: Sequence[Any] = ()) -> list[Any]:
        """Rows of one read-only statement, for maintenance tools (``qrt gc``, the
        integrity check); never pass it user input."""
        return self._rows(sql, args)

    @property
    def commit_count(self) -> int:
        """Transactions committed so far (fewer than writes when group commit works)."""
        return self._writer.commits

    @property
    def write_count(self) -> int:
        """Write calls made durable so far."""
        return self._writer.writes

    # -- jobs -------------------------------------------------------------------------

    def admit(
        self, records: Sequence[JobRecord], audit: tuple[str, bytes, float] | None = None
    ) -> list[tuple[JobRecord, bool]]:
        def write(conn: Connection) -> list[tuple[JobRecord, bool]]:
            out = _admit_all(conn, records, self.locked_writes)
            if audit is not None:
                actor, key, at = audit
                append_audit(conn, key, at, [_ownership(actor, r) for r, new in out if new])
            return out

        return self._write(write, urgent=True)

    def apply(self, updates: Sequence[StateUpdate], blobs: Sequence[bytes] = ()) -> list[bool]:
        if not updates:
            return []
        digests = [sha256_hex(b) for b in blobs]

        # one transaction: a failure writes none of them (the caller mirrors all or none)
        def write(conn: Connection) -> list[bool]:
            _insert_blobs(conn, blobs, digests)
            if not self.locked_writes:
                return [_apply_one(conn, u) for u in updates]
            applied = apply_moves(conn, updates)
            # the bills land with their moves or not at all
            moved = zip(updates, applied, strict=True)
            insert_charges(conn, [c for u, ok in moved if ok for c in u.charges])
            return applied

        return self._write(write, rows=len(updates) + len(blobs))

    def get(self, job_id: str) -> JobRecord:
        found = self._row(f"SELECT {_COLUMNS} FROM jobs WHERE job_id=?", (job_id,))
        if found is None:
            gone = self.purged(job_id)
            if gone is not None:
                raise JobNotFoundError(purged_message(gone))
            raise JobNotFoundError(f"job_id={brief(job_id)!r}: no such job")
        try:
            return _record(found)
        except (ValueError, TypeError, KeyError):
            raise IntegrityError(
                f"job {brief(job_id)}: its stored record does not decode; it cannot be shown"
            ) from None

    def find_by_key(self, tenant: str, idempotency_key: str) -> JobRecord | None:
        row = self._row(
            f"SELECT {_COLUMNS} FROM jobs WHERE tenant=? AND idempotency_key=?",
            (tenant, idempotency_key),
        )
        return _record(row) if row else None

    def _rows_in(self, sql: str, values: Sequence[Any], before: Sequence[Any] = ()) -> list[Any]:
        """Rows of ``sql``, whose ``IN ({in})`` takes ``values`` (after the arguments
        ``before``), in lists of at most ``IN_MAX``. A list is padded to a power of two
        by repeating its last value, so a database that prepares each statement sees a
        few shapes, not one per length."""
        rows: list[Any] = []
        wanted = list(dict.fromkeys(values))
        for start in range(0, len(wanted), IN_MAX):
            part = wanted[start : start + IN_MAX]
            size = min(IN_MAX, 1 << (len(part) - 1).bit_length())
            part += [part[-1]] * (size - len(part))
            rows += self._rows(sql.replace("{in}", ",".join("?" * size)), [*before, *part])
        return rows

    def find_by_keys(self, keys: Sequence[tuple[str, str]]) -> dict[tuple[str, str], JobRecord]:
        by_tenant: dict[str, list[str]] = {}
        for tenant, key in dict.fromkeys(keys):
            by_tenant.setdefault(tenant, []).append(key)
        out: dict[tuple[str, str], JobRecord] = {}
        sql = (
            f"SELECT idempotency_key, {_COLUMNS} FROM jobs "
            "WHERE tenant=? AND idempotency_key IN ({in})"
        )
        for tenant, wanted in by_tenant.items():
            for key, *row in self._rows_in(sql, wanted, (tenant,)):
                out[(tenant, key)] = _record(row)
        return out

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
        rows = self._rows(
            f"SELECT {_COLUMNS} FROM jobs {clause} ORDER BY created_at DESC, job_id LIMIT ?",
            (*args, int(limit)),
        )
        out = []
        for row in rows:
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
        rows = self._rows(
            f"SELECT {_COLUMNS} FROM jobs WHERE state NOT IN (?,?,?) ORDER BY created_at, job_id",
            _FINAL,
        )
        out: list[JobRecord | tuple[str, JobState, str]] = []
        for row in rows:
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

    def finished_jobs(
        self, since: float, until: float | None = None, *, limit: int = 1_000_000
    ) -> list[FinishedJob]:
        rows = self._rows(
            "SELECT job_id, tenant, state, error_class, device, priority, created_at, "
            "updated_at FROM jobs WHERE state IN (?,?,?) AND updated_at >= ? AND updated_at < ? "
            "ORDER BY updated_at, job_id LIMIT ?",
            (*_FINAL, float(since), math.inf if until is None else float(until), int(limit)),
        )
        return [
            FinishedJob(
                r[0],
                r[1],
                JobState(r[2]),
                ErrorClass(r[3]) if r[3] else None,
                r[4],
                int(r[5]),
                float(r[6]),
                float(r[7]),
            )
            for r in rows
        ]

    def transitions_since(self, since: float, *, limit: int = 1_000_000) -> list[TransitionEvent]:
        rows = self._rows(
            "SELECT job_id, seq, from_state, to_state, at, reason, event FROM transitions "
            "WHERE at >= ? ORDER BY at, job_id, seq LIMIT ?",
            (float(since), int(limit)),
        )
        return [
            TransitionEvent(
                r[0], r[1], JobState(r[2]) if r[2] else None, JobState(r[3]), r[4], r[5], r[6]
            )
            for r in rows
        ]

    def events(self, job_id: str) -> list[TransitionEvent]:
        rows = self._rows(
            "SELECT job_id, seq, from_state, to_state, at, reason, event FROM transitions "
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
                event=r[6],
            )
            for r in rows
        ]

    def counts_by_state(self) -> dict[JobState, int]:
        rows = self._rows("SELECT state, COUNT(*) FROM jobs GROUP BY state")
        return {JobState(s): int(n) for s, n in rows}

    # -- blobs ------------------------------------------------------------------------

    def put_blob(self, data: bytes) -> str:
        return self.put_blobs([data])[0]

    def put_blobs(self, blobs: Sequence[bytes]) -> list[str]:
        """Store many blobs in one durable write; returns their sha256 in order."""
        digests = [sha256_hex(b) for b in blobs]

        def write(conn: Connection) -> list[str]:
            _insert_blobs(conn, blobs, digests)
            return digests

        return self._write(write, rows=len(blobs)) if blobs else []

    def get_blob(self, sha256: str) -> bytes:
        row = self._row("SELECT data FROM blobs WHERE sha256=?", (sha256,))
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

    def get_blobs(self, sha256s: Sequence[str]) -> list[bytes]:
        found = {
            sha: bytes(data)
            for sha, data in self._rows_in(
                "SELECT sha256, data FROM blobs WHERE sha256 IN ({in})", sha256s
            )
        }
        out = []
        for sha in sha256s:
            data = found.get(sha)
            if data is None:
                raise IntegrityError(f"result blob {sha} is missing from the job store")
            actual = sha256_hex(data)
            if actual != sha:
                raise IntegrityError(
                    f"result blob {sha} failed its checksum (content hashes to {actual}); "
                    "the stored result is corrupt and will not be returned"
                )
            out.append(data)
        return out

    def result_sizes(self, job_ids: Sequence[str]) -> dict[str, int]:
        # the state is checked here, not in SQL: given both, SQLite reads through the
        # state index, every DONE job in the store, instead of the ids asked for
        sql = (
            "SELECT j.job_id, j.state, b.size FROM jobs j JOIN blobs b "
            "ON b.sha256 = j.result_sha256 WHERE j.job_id IN ({in})"
        )
        return {
            job_id: int(size)
            for job_id, state, size in self._rows_in(sql, job_ids)
            if state == JobState.DONE.value
        }

    def result_refs(self, job_ids: Sequence[str]) -> dict[str, tuple[JobState, str | None]]:
        sql = "SELECT job_id, state, result_sha256 FROM jobs WHERE job_id IN ({in})"
        try:
            return {
                job_id: (JobState(state), sha) for job_id, state, sha in self._rows_in(sql, job_ids)
            }
        except ValueError:  # a state this code does not know: the row is not readable
            raise IntegrityError("a stored job has an unknown state; it cannot be read") from None

    # -- shot ledger ------------------------------------------------------------------

    def record_shots(
        self, records: Sequence[ShotRecord], blobs: Sequence[bytes] = ()
    ) -> list[bool]:
        digests = [sha256_hex(b) for b in blobs]

        def write(conn: Connection) -> list[bool]:
            _insert_blobs(conn, blobs, digests)
            if not self.locked_writes:
                return [_count_one(conn, r) for r in records]
            # a run already counted (same job, attempt and first shot) is not counted
            # again: the lines held now, read with one statement, say which are new
            ids = list(dict.fromkeys(r.job_id for r in records))
            held: set[tuple[str, int, int]] = set()
            for part in chunks(ids, IN_MAX):
                held.update(
                    (row[0], row[1], row[2])
                    for row in conn.execute(
                        "SELECT job_id, attempt, first_shot FROM shot_ledger "
                        f"WHERE job_id IN ({placeholders(len(part))})",
                        list(part),
                    ).fetchall()
                )
            fresh = []
            for r in records:
                key = (r.job_id, r.attempt, r.first_shot)
                fresh.append(key not in held)
                held.add(key)
            insert_rows(
                conn,
                "INSERT INTO shot_ledger (job_id, attempt, first_shot, calibration_id, "
                "shots, at, run_sha256)",
                [_ledger_row(r) for r, new in zip(records, fresh, strict=True) if new],
                "ON CONFLICT DO NOTHING",  # the read decided; the key still guards
            )
            return fresh

        if not records:
            return []
        return self._write(write, rows=len(records) + len(blobs))

    def shot_ledger(self, job_id: str) -> list[ShotRecord]:
        rows = self._rows(
            "SELECT job_id, attempt, calibration_id, shots, at, run_sha256, first_shot "
            "FROM shot_ledger WHERE job_id=? ORDER BY attempt, first_shot",
            (job_id,),
        )
        return [ShotRecord(*r) for r in rows]

    # -- devices: calibration history, canaries, maintenance ---------------------------

    def record_calibration(self, record: CalibrationRecord) -> bool:
        def write(conn: Connection) -> bool:
            cur = conn.execute(
                "INSERT INTO calibrations (device, calibration_id, taken_at, recorded_at, "
                "reason, snapshot_json) VALUES (?,?,?,?,?,?) ON CONFLICT DO NOTHING",
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
        rows = self._rows(
            "SELECT device, calibration_id, taken_at, recorded_at, reason, snapshot_json "
            "FROM calibrations WHERE device=? ORDER BY taken_at DESC, recorded_at DESC LIMIT ?",
            (device, limit),
        )
        return [CalibrationRecord(*r) for r in rows]

    def record_canary(self, record: CanaryRecord) -> None:
        args = (
            record.device,
            record.at,
            record.calibration_id,
            record.predicted,
            record.measured,
            int(record.drifted),
            json.dumps(record.detail, sort_keys=True),
        )

        def write(conn: Connection) -> None:
            conn.execute(
                "INSERT INTO canaries (device, at, calibration_id, predicted, measured, "
                "drifted, detail_json) VALUES (?,?,?,?,?,?,?)",
                args,
            )

        self._write(write)

    def canaries(self, device: str, limit: int = 20) -> list[CanaryRecord]:
        rows = self._rows(
            "SELECT device, at, calibration_id, predicted, measured, drifted, detail_json "
            "FROM canaries WHERE device=? ORDER BY at DESC LIMIT ?",
            (device, limit),
        )
        return [
            CanaryRecord(r[0], r[1], r[2], r[3], r[4], bool(r[5]), json.loads(r[6])) for r in rows
        ]

    def save_rollout(self, method: str, state_json: str, at: float) -> None:
        self._write(
            lambda conn: conn.execute(
                "INSERT INTO rollouts (method, state_json, updated_at) VALUES (?,?,?) "
                "ON CONFLICT (method) DO UPDATE SET state_json=?, updated_at=?",
                (method, state_json, at, state_json, at),
            )
        )

    def rollouts(self) -> dict[str, str]:
        rows = self._rows("SELECT method, state_json FROM rollouts ORDER BY method", ())
        return {r[0]: r[1] for r in rows}

    def add_maintenance(self, window: MaintenanceWindow) -> None:
        w = window

        def write(conn: Connection) -> None:
            conn.execute(
                'INSERT INTO maintenance (window_id, device, start, "end", reason, created_at) '
                "VALUES (?,?,?,?,?,?)",
                (w.window_id, w.device, w.start, w.end, w.reason, w.created_at),
            )

        self._write(write)

    def remove_maintenance(self, window_id: str) -> bool:
        return self._write(
            lambda conn: (
                conn.execute("DELETE FROM maintenance WHERE window_id=?", (window_id,)).rowcount
                == 1
            )
        )

    def maintenance_windows(
        self, device: str | None = None, ending_after: float | None = None
    ) -> list[MaintenanceWindow]:
        query = 'SELECT window_id, device, start, "end", reason, created_at FROM maintenance'
        where, args = [], []
        if device is not None:
            where.append("device=?")
            args.append(device)
        if ending_after is not None:
            where.append('"end">?')
            args.append(ending_after)
        if where:
            query += " WHERE " + " AND ".join(where)
        rows = self._rows(query + " ORDER BY start", args)
        return [MaintenanceWindow(*r) for r in rows]

    def close(self) -> None:
        if self._closed:
            return
        self._closed = True
        self._writer.close()


def _ownership(actor: str, rec: JobRecord) -> AuditEntry:
    """The audit record of a job coming to belong to its tenant."""
    detail = {"shots": rec.spec.shots, "circuits": len(rec.spec.circuits)}
    return AuditEntry(actor, "job.create", rec.tenant, rec.job_id, "ok", detail)


def _admit_all(
    conn: Connection, records: Sequence[JobRecord], locked: bool
) -> list[tuple[JobRecord, bool]]:
    """Insert QUEUED jobs; for each, it and whether it is new (a job holding its
    idempotency key already is returned instead).

    New jobs go in with a few statements of many rows. Where the transaction does not
    hold the database's write lock (``locked``), each job with a key goes in alone
    (the insert decides between two processes admitting the same key); under the
    lock, the keys held now are read for all of them at once, and only a key named
    twice in ``records`` goes in alone.
    """
    keys = [(r.tenant, r.spec.idempotency_key) for r in records]
    counts: dict[tuple[str, str | None], int] = {}
    for key in keys:
        counts[key] = counts.get(key, 0) + 1
    alone = {key for key, n in counts.items() if key[1] is not None and (n > 1 or not locked)}
    held, gone = _held_keys(conn, [k for k in counts if k[1] is not None and k not in alone])
    # ids already stored (rows only for those): a job is refused where a row at a
    # time would refuse it, so the first failing job in order names the error
    batched = [r.job_id for r, key in zip(records, keys, strict=True) if key not in alone]
    taken = _stored_ids(conn, batched)
    out: list[tuple[JobRecord, bool]] = []
    fresh: list[JobRecord] = []
    for rec, key in zip(records, keys, strict=True):
        if key in alone and rec.job_id not in taken:
            pair = _admit_one(conn, rec)
        elif key in gone:
            raise _purged_key(key[1] or "", gone[key])
        elif key in held:
            pair = (held[key], False)
        elif rec.job_id in taken:
            raise IntegrityError(f"job {brief(rec.job_id)}: a job with this id is already stored")
        else:
            pair = (rec, True)
            fresh.append(rec)
        if pair[1]:
            taken.add(rec.job_id)
        out.append(pair)
    insert_rows(
        conn,
        "INSERT INTO jobs (job_id, tenant, idempotency_key, state, priority, spec_json, "
        "created_at, updated_at, shots_total)",
        [_job_row(rec) for rec in fresh],
    )
    insert_rows(
        conn,
        f"INSERT INTO transitions ({TRANSITION_COLUMNS})",
        [_first_transition(rec) for rec in fresh],
    )
    return out


def _stored_ids(conn: Connection, job_ids: Sequence[str]) -> set[str]:
    """Which of ``job_ids`` are stored now (a statement per slice; a row for each found)."""
    found: set[str] = set()
    wanted = list(dict.fromkeys(job_ids))
    for part in chunks(wanted, IN_MAX):
        rows = conn.execute(
            f"SELECT job_id FROM jobs WHERE job_id IN ({placeholders(len(part))})", list(part)
        ).fetchall()
        found.update(row[0] for row in rows)
    return found


def _held_keys(
    conn: Connection, keys: Sequence[tuple[str, str | None]]
) -> tuple[dict[tuple[str, str | None], JobRecord], dict[tuple[str, str | None], Sequence[Any]]]:
    """The jobs holding these (tenant, idempotency key)s now, and the purged jobs that
    held them; a statement per table and tenant (rows only for keys in use)."""
    by_tenant: dict[str, list[str]] = {}
    for tenant, key in keys:
        by_tenant.setdefault(tenant, []).append(key or "")
    held: dict[tuple[str, str | None], JobRecord] = {}
    gone: dict[tuple[str, str | None], Sequence[Any]] = {}
    for tenant, names in by_tenant.items():
        for part in chunks(names, IN_MAX - 1):
            marks = placeholders(len(part))
            for row in conn.execute(
                "SELECT idempotency_key, job_id, tenant, state, created_at, ended_at, purged_at "
                "FROM purged_jobs WHERE tenant=? AND idempotency_key IS NOT NULL "
                f"AND idempotency_key IN ({marks})",
                [tenant, *part],
            ).fetchall():
                gone[(tenant, row[0])] = row[1:]
            for row in conn.execute(
                f"SELECT {_COLUMNS}, idempotency_key FROM jobs WHERE tenant=? "
                f"AND idempotency_key IS NOT NULL AND idempotency_key IN ({marks})",
                [tenant, *part],
            ).fetchall():
                held[(tenant, row[-1])] = _record(row[:-1])
    return held, gone


def _purged_key(key: str, gone: Sequence[Any]) -> ValidationError:
    """The error for reusing ``key``, last held by ``gone`` (a purged_jobs row:
    job_id, tenant, state, created_at, ended_at, purged_at)."""
    return ValidationError(
        f"idempotency_key={brief(key)!r} was used by job {gone[0]}, which ended "
        f"{gone[2]} and was removed by retention at {_utc(gone[5])}; a key names "
        "one job for good: submit with a new key"
    )


def _job_row(rec: JobRecord) -> tuple[Any, ...]:
    """A new job's row, QUEUED."""
    return (
        rec.job_id,
        rec.tenant,
        rec.spec.idempotency_key,
        JobState.QUEUED.value,
        rec.spec.priority,
        rec.spec.model_dump_json(),
        rec.created_at,
        rec.created_at,
        rec.spec.shots * len(rec.spec.circuits),
    )


def _first_transition(rec: JobRecord) -> tuple[Any, ...]:
    """A new job's first transition: submitted, QUEUED."""
    return (rec.job_id, 0, None, JobState.QUEUED.value, rec.created_at, "submitted", "submitted")


def _admit_one(conn: Connection, rec: JobRecord) -> tuple[JobRecord, bool]:
    """Insert one QUEUED job, or return the job already holding its idempotency key.

    The insert itself decides (a unique index on tenant and key), so two processes
    admitting the same key at once still make one job.
    """
    key = rec.spec.idempotency_key
    if key is not None:
        gone = conn.execute(
            "SELECT job_id, tenant, state, created_at, ended_at, purged_at FROM purged_jobs "
            "WHERE tenant=? AND idempotency_key=?",
            (rec.tenant, key),
        ).fetchone()
        if gone is not None:
            raise _purged_key(key, gone)
    cur = conn.execute(
        "INSERT INTO jobs (job_id, tenant, idempotency_key, state, priority, spec_json, "
        "created_at, updated_at, shots_total) VALUES (?,?,?,?,?,?,?,?,?) ON CONFLICT DO NOTHING",
        _job_row(rec),
    )
    if cur.rowcount == 1:
        conn.execute(
            f"INSERT INTO transitions ({TRANSITION_COLUMNS}) VALUES (?,?,?,?,?,?,?)",
            _first_transition(rec),
        )
        return rec, True
    if key is not None:
        row = conn.execute(
            f"SELECT {_COLUMNS} FROM jobs WHERE tenant=? AND idempotency_key=?",
            (rec.tenant, key),
        ).fetchone()
        if row is not None:
            return _record(row), False
    raise IntegrityError(f"job {brief(rec.job_id)}: a job with this id is already stored")


def _insert_blobs(conn: Connection, blobs: Sequence[bytes], digests: Sequence[str]) -> None:
    """Store ``blobs`` under their sha256 ``digests`` (one already there is kept), in
    statements of at most ``_BLOB_BYTES`` of data (one blob larger than that alone)."""
    group: list[tuple[str, int, bytes]] = []
    size = 0
    for d, b in zip(digests, blobs, strict=True):
        if group and size + len(b) > _BLOB_BYTES:
            insert_rows(conn, _BLOB_INSERT, group, "ON CONFLICT DO NOTHING")
            group, size = [], 0
        group.append((d, len(b), bytes(b)))
        size += len(b)
    insert_rows(conn, _BLOB_INSERT, group, "ON CONFLICT DO NOTHING")


def _ledger_row(r: ShotRecord) -> tuple[Any, ...]:
    return (r.job_id, r.attempt, r.first_shot, r.calibration_id, r.shots, r.at, r.run_sha256)


def _count_one(conn: Connection, r: ShotRecord) -> bool:
    """Write one ledger line; returns whether it is new (not counted before)."""
    cur = conn.execute(
        "INSERT INTO shot_ledger (job_id, attempt, first_shot, calibration_id, shots, at, "
        "run_sha256) VALUES (?,?,?,?,?,?,?) ON CONFLICT DO NOTHING",
        _ledger_row(r),
    )
    return cur.rowcount == 1


def _apply_one(conn: Connection, u: StateUpdate) -> bool:
    sets = ["state=?", "updated_at=?"]
    args: list[Any] = [u.to_state.value, u.at]
    for name, value in u.fields.items():
        column, stored = column_value(name, value)
        sets.append(f"{column}=?")
        args.append(stored)
    cur = conn.execute(
        f"UPDATE jobs SET {', '.join(sets)} WHERE job_id=? AND state=?",
        (*args, u.job_id, u.from_state.value),
    )
    if cur.rowcount != 1:
        return False
    # numbered after the job's last event; the UPDATE holds the job's row until
    # commit, so no other writer numbers this job meanwhile
    conn.execute(
        f"INSERT INTO transitions ({TRANSITION_COLUMNS}) "
        "VALUES (?, (SELECT COALESCE(MAX(seq), -1) + 1 FROM transitions WHERE job_id=?), "
        "?,?,?,?,?)",
        (u.job_id, u.job_id, u.from_state.value, u.to_state.value, u.at, u.reason, u.event),
    )
    # the bill lands with the completion or not at all
    insert_charges(conn, u.charges)
    return True


def _utc(at: float) -> str:
    return datetime.fromtimestamp(at, tz=UTC).strftime("%Y-%m-%d %H:%M:%S UTC")


def purged_message(gone: PurgedJob) -> str:
    """What asking for a job retention removed answers."""
    return (
        f"job {gone.job_id} ended {gone.state.value} at {_utc(gone.ended_at)} and was "
        f"removed by retention at {_utc(gone.purged_at)} (finished jobs are kept for the "
        "store's retention window; see `qrt gc --help`)"
    )


def _record(row: Sequence[Any]) -> JobRecord:
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
        compile_info=json.loads(row[11]) if row[11] else None,
        recovery=json.loads(row[12]) if row[12] else None,
        error_class=ErrorClass(row[13]) if row[13] else None,
    )
