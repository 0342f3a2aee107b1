"""Versioned schema of the SQLite job store. Append new steps; never edit old ones."""

from __future__ import annotations

import sqlite3

MIGRATIONS: tuple[str, ...] = (
    # 1: jobs, their transitions, content-addressed blobs and the shot ledger.
    """
    CREATE TABLE jobs (
        job_id TEXT PRIMARY KEY,
        tenant TEXT NOT NULL,
        idempotency_key TEXT,
        state TEXT NOT NULL,
        priority INTEGER NOT NULL,
        spec_json TEXT NOT NULL,
        created_at REAL NOT NULL,
        updated_at REAL NOT NULL,
        device TEXT,
        calibration_id TEXT,
        error TEXT,
        result_sha256 TEXT,
        placement_json TEXT,
        attempts INTEGER NOT NULL DEFAULT 0
    );
    CREATE UNIQUE INDEX jobs_idempotency ON jobs (tenant, idempotency_key)
        WHERE idempotency_key IS NOT NULL;
    CREATE INDEX jobs_state ON jobs (state);
    CREATE INDEX jobs_created ON jobs (created_at);
    CREATE TABLE transitions (
        job_id TEXT NOT NULL,
        seq INTEGER NOT NULL,
        from_state TEXT,
        to_state TEXT NOT NULL,
        at REAL NOT NULL,
        reason TEXT,
        PRIMARY KEY (job_id, seq)
    );
    CREATE TABLE blobs (
        sha256 TEXT PRIMARY KEY,
        size INTEGER NOT NULL,
        data BLOB NOT NULL
    );
    CREATE TABLE shot_ledger (
        job_id TEXT NOT NULL,
        attempt INTEGER NOT NULL,
        calibration_id TEXT NOT NULL,
        shots INTEGER NOT NULL,
        at REAL NOT NULL,
        run_sha256 TEXT,
        PRIMARY KEY (job_id, attempt)
    );
    """,
    # 2: a ledger row per run, not per attempt: an attempt that runs in slices
    # (preempted between batches) counts each slice once, keyed by its first shot.
    """
    CREATE TABLE shot_ledger_v2 (
        job_id TEXT NOT NULL,
        attempt INTEGER NOT NULL,
        first_shot INTEGER NOT NULL,
        calibration_id TEXT NOT NULL,
        shots INTEGER NOT NULL,
        at REAL NOT NULL,
        run_sha256 TEXT,
        PRIMARY KEY (job_id, attempt, first_shot)
    );
    INSERT INTO shot_ledger_v2
        SELECT job_id, attempt, 0, calibration_id, shots, at, run_sha256 FROM shot_ledger;
    DROP TABLE shot_ledger;
    ALTER TABLE shot_ledger_v2 RENAME TO shot_ledger;
    """,
    # 3: living devices: every calibration a device had, every canary it ran, and
    # scheduled maintenance windows.
    """
    CREATE TABLE calibrations (
        device TEXT NOT NULL,
        calibration_id TEXT NOT NULL,
        taken_at REAL NOT NULL,
        recorded_at REAL NOT NULL,
        reason TEXT NOT NULL,
        snapshot_json TEXT NOT NULL,
        PRIMARY KEY (device, calibration_id, taken_at)
    );
    CREATE INDEX calibrations_recent ON calibrations (device, taken_at);
    CREATE TABLE canaries (
        device TEXT NOT NULL,
        at REAL NOT NULL,
        calibration_id TEXT NOT NULL,
        predicted REAL NOT NULL,
        measured REAL NOT NULL,
        drifted INTEGER NOT NULL,
        detail_json TEXT NOT NULL
    );
    CREATE INDEX canaries_recent ON canaries (device, at);
    CREATE TABLE maintenance (
        window_id TEXT PRIMARY KEY,
        device TEXT NOT NULL,
        start REAL NOT NULL,
        end REAL NOT NULL,
        reason TEXT NOT NULL,
        created_at REAL NOT NULL
    );
    CREATE INDEX maintenance_device ON maintenance (device, end);
    """,
)

SCHEMA_VERSION = len(MIGRATIONS)


def migrate(conn: sqlite3.Connection) -> int:
    """Bring the database up to :data:`SCHEMA_VERSION`; returns the version it found.

    Safe when several processes open the store at once (the scheduler, the calibration
    manager and each device actor do): the version is read and every missing step
    applied inside one write transaction, so one process migrates and the others find
    the schema done. ``conn`` must be in autocommit mode (``isolation_level=None``).

    Raises:
        RuntimeError: the database is newer than this qrt-ray understands.
    """
    conn.execute("CREATE TABLE IF NOT EXISTS schema_version (version INTEGER NOT NULL)")
    conn.execute("BEGIN IMMEDIATE")
    try:
        row = conn.execute("SELECT version FROM schema_version").fetchone()
        found = row[0] if row else 0
        if found > SCHEMA_VERSION:
            raise RuntimeError(
                f"job store schema version {found} is newer than this qrt-ray supports "
                f"({SCHEMA_VERSION}); upgrade qrt-ray or point it at another store"
            )
        for version in range(found, SCHEMA_VERSION):
            for statement in _statements(MIGRATIONS[version]):
                conn.execute(statement)
        if found < SCHEMA_VERSION:
            conn.execute("DELETE FROM schema_version")
            conn.execute("INSERT INTO schema_version VALUES (?)", (SCHEMA_VERSION,))
        conn.execute("COMMIT")
    except BaseException:
        conn.execute("ROLLBACK")
        raise
    return found


def _statements(script: str) -> list[str]:
    """The SQL statements of a migration step, one by one (they hold no ';' in text)."""
    return [s.strip() for s in script.split(";") if s.strip()]
