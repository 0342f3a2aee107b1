"""Versioned schema of the job store, per database. Append new steps; never edit old ones.

Both databases walk the same numbered steps, so a schema version means the same
tables everywhere; each step is written in its database's own types.
"""

from __future__ import annotations

import sqlite3
from typing import Any

# 8 (both databases): the class of a failed job, for success rates and alerts by
# error class, and an index to find the jobs that ended in a time window.
_ERROR_CLASS = """
    ALTER TABLE jobs ADD COLUMN error_class TEXT;
    CREATE INDEX jobs_state_updated ON jobs (state, updated_at);
"""

# 9: retention. When a client first fetched a job's result, and a tombstone for each
# job removed by retention (so its id and idempotency key still answer clearly).
# 10: the served and candidate version of each post-processing method (rollouts).
_ROLLOUTS = """
    CREATE TABLE rollouts (
        method TEXT PRIMARY KEY,
        state_json TEXT NOT NULL,
        updated_at {real} NOT NULL
    );
"""

_RETENTION = """
    ALTER TABLE jobs ADD COLUMN fetched_at {real};
    CREATE TABLE purged_jobs (
        job_id TEXT PRIMARY KEY,
        tenant TEXT NOT NULL,
        idempotency_key TEXT,
        state TEXT NOT NULL,
        created_at {real} NOT NULL,
        ended_at {real} NOT NULL,
        purged_at {real} NOT NULL
    );
    CREATE UNIQUE INDEX purged_idempotency ON purged_jobs (tenant, idempotency_key)
        WHERE idempotency_key IS NOT NULL;
    CREATE INDEX purged_at ON purged_jobs (purged_at);
    CREATE INDEX shot_ledger_run ON shot_ledger (run_sha256);
    CREATE INDEX jobs_result ON jobs (result_sha256);
    CREATE INDEX canaries_at ON canaries (at);
"""

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
    # 4: what the compiler did and how a cut-short job was recovered get their own
    # columns (they used to ride inside placement_json).
    """
    ALTER TABLE jobs ADD COLUMN compile_json TEXT;
    ALTER TABLE jobs ADD COLUMN recovery_json TEXT;
    """,
    # 5: each transition names the event that made it (the job's story).
    """
    ALTER TABLE transitions ADD COLUMN event TEXT;
    """,
    # 6: the trust boundary: tenants, their users and API tokens (HMACs only), the
    # sealed audit chain, the billing ledger, budget alerts sent, and each job's
    # shots x circuits for the daily shot quota.
    """
    CREATE TABLE tenants (
        name TEXT PRIMARY KEY,
        limits_json TEXT NOT NULL,
        disabled INTEGER NOT NULL DEFAULT 0,
        created_at REAL NOT NULL,
        updated_at REAL NOT NULL
    );
    CREATE TABLE users (
        tenant TEXT NOT NULL,
        name TEXT NOT NULL,
        created_at REAL NOT NULL,
        PRIMARY KEY (tenant, name)
    );
    CREATE TABLE api_tokens (
        token_id TEXT PRIMARY KEY,
        tenant TEXT NOT NULL,
        user_name TEXT NOT NULL,
        name TEXT NOT NULL,
        scopes TEXT NOT NULL,
        secret_hmac TEXT NOT NULL,
        created_at REAL NOT NULL,
        expires_at REAL,
        revoked_at REAL,
        replaced_by TEXT
    );
    CREATE INDEX api_tokens_tenant ON api_tokens (tenant);
    CREATE TABLE audit_log (
        seq INTEGER PRIMARY KEY,
        at REAL NOT NULL,
        actor TEXT NOT NULL,
        action TEXT NOT NULL,
        tenant TEXT NOT NULL,
        subject TEXT NOT NULL,
        outcome TEXT NOT NULL,
        detail_json TEXT NOT NULL,
        prev TEXT NOT NULL,
        seal TEXT NOT NULL
    );
    CREATE TABLE ledger (
        job_id TEXT NOT NULL,
        line INTEGER NOT NULL,
        tenant TEXT NOT NULL,
        device TEXT NOT NULL,
        kind TEXT NOT NULL,
        shots INTEGER NOT NULL,
        device_s REAL NOT NULL,
        usd REAL NOT NULL,
        at REAL NOT NULL,
        PRIMARY KEY (job_id, line)
    );
    CREATE INDEX ledger_tenant_at ON ledger (tenant, at);
    CREATE TABLE budget_alerts (
        tenant TEXT NOT NULL,
        month TEXT NOT NULL,
        threshold REAL NOT NULL,
        at REAL NOT NULL,
        spent_usd REAL NOT NULL,
        budget_usd REAL NOT NULL,
        PRIMARY KEY (tenant, month, threshold)
    );
    ALTER TABLE jobs ADD COLUMN shots_total INTEGER;
    CREATE INDEX jobs_tenant_created ON jobs (tenant, created_at);
    """,
    # 7: (PostgreSQL only: SQLite's INTEGER already holds 64 bits)
    "",
    _ERROR_CLASS,
    _RETENTION.format(real="REAL"),
    _ROLLOUTS.format(real="REAL"),
)

POSTGRES_MIGRATIONS: tuple[str, ...] = (
    # 1: as SQLite's step 1, in PostgreSQL's types.
    """
    CREATE TABLE jobs (
        job_id TEXT PRIMARY KEY,
        tenant TEXT NOT NULL,
        idempotency_key TEXT,
        state TEXT NOT NULL,
        priority INTEGER NOT NULL,
        spec_json TEXT NOT NULL,
        created_at DOUBLE PRECISION NOT NULL,
        updated_at DOUBLE PRECISION NOT NULL,
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
        at DOUBLE PRECISION NOT NULL,
        reason TEXT,
        PRIMARY KEY (job_id, seq)
    );
    CREATE TABLE blobs (
        sha256 TEXT PRIMARY KEY,
        size BIGINT NOT NULL,
        data BYTEA NOT NULL
    );
    CREATE TABLE shot_ledger (
        job_id TEXT NOT NULL,
        attempt INTEGER NOT NULL,
        calibration_id TEXT NOT NULL,
        shots BIGINT NOT NULL,
        at DOUBLE PRECISION NOT NULL,
        run_sha256 TEXT,
        PRIMARY KEY (job_id, attempt)
    );
    """,
    # 2: a ledger row per run (job, attempt, first shot).
    """
    ALTER TABLE shot_ledger ADD COLUMN first_shot INTEGER NOT NULL DEFAULT 0;
    ALTER TABLE shot_ledger DROP CONSTRAINT shot_ledger_pkey;
    ALTER TABLE shot_ledger ADD PRIMARY KEY (job_id, attempt, first_shot);
    """,
    # 3: calibration history, canary rounds and maintenance windows.
    """
    CREATE TABLE calibrations (
        device TEXT NOT NULL,
        calibration_id TEXT NOT NULL,
        taken_at DOUBLE PRECISION NOT NULL,
        recorded_at DOUBLE PRECISION NOT NULL,
        reason TEXT NOT NULL,
        snapshot_json TEXT NOT NULL,
        PRIMARY KEY (device, calibration_id, taken_at)
    );
    CREATE INDEX calibrations_recent ON calibrations (device, taken_at);
    CREATE TABLE canaries (
        device TEXT NOT NULL,
        at DOUBLE PRECISION NOT NULL,
        calibration_id TEXT NOT NULL,
        predicted DOUBLE PRECISION NOT NULL,
        measured DOUBLE PRECISION NOT NULL,
        drifted INTEGER NOT NULL,
        detail_json TEXT NOT NULL
    );
    CREATE INDEX canaries_recent ON canaries (device, at);
    CREATE TABLE maintenance (
        window_id TEXT PRIMARY KEY,
        device TEXT NOT NULL,
        start DOUBLE PRECISION NOT NULL,
        "end" DOUBLE PRECISION NOT NULL,
        reason TEXT NOT NULL,
        created_at DOUBLE PRECISION NOT NULL
    );
    CREATE INDEX maintenance_device ON maintenance (device, "end");
    """,
    # 4: as SQLite's step 4.
    """
    ALTER TABLE jobs ADD COLUMN compile_json TEXT;
    ALTER TABLE jobs ADD COLUMN recovery_json TEXT;
    """,
    # 5: as SQLite's step 5.
    """
    ALTER TABLE transitions ADD COLUMN event TEXT;
    """,
    # 6: as SQLite's step 6.
    """
    CREATE TABLE tenants (
        name TEXT PRIMARY KEY,
        limits_json TEXT NOT NULL,
        disabled INTEGER NOT NULL DEFAULT 0,
        created_at DOUBLE PRECISION NOT NULL,
        updated_at DOUBLE PRECISION NOT NULL
    );
    CREATE TABLE users (
        tenant TEXT NOT NULL,
        name TEXT NOT NULL,
        created_at DOUBLE PRECISION NOT NULL,
        PRIMARY KEY (tenant, name)
    );
    CREATE TABLE api_tokens (
        token_id TEXT PRIMARY KEY,
        tenant TEXT NOT NULL,
        user_name TEXT NOT NULL,
        name TEXT NOT NULL,
        scopes TEXT NOT NULL,
        secret_hmac TEXT NOT NULL,
        created_at DOUBLE PRECISION NOT NULL,
        expires_at DOUBLE PRECISION,
        revoked_at DOUBLE PRECISION,
        replaced_by TEXT
    );
    CREATE INDEX api_tokens_tenant ON api_tokens (tenant);
    CREATE TABLE audit_log (
        seq INTEGER PRIMARY KEY,
        at DOUBLE PRECISION NOT NULL,
        actor TEXT NOT NULL,
        action TEXT NOT NULL,
        tenant TEXT NOT NULL,
        subject TEXT NOT NULL,
        outcome TEXT NOT NULL,
        detail_json TEXT NOT NULL,
        prev TEXT NOT NULL,
        seal TEXT NOT NULL
    );
    CREATE TABLE ledger (
        job_id TEXT NOT NULL,
        line INTEGER NOT NULL,
        tenant TEXT NOT NULL,
        device TEXT NOT NULL,
        kind TEXT NOT NULL,
        shots INTEGER NOT NULL,
        device_s DOUBLE PRECISION NOT NULL,
        usd DOUBLE PRECISION NOT NULL,
        at DOUBLE PRECISION NOT NULL,
        PRIMARY KEY (job_id, line)
    );
    CREATE INDEX ledger_tenant_at ON ledger (tenant, at);
    CREATE TABLE budget_alerts (
        tenant TEXT NOT NULL,
        month TEXT NOT NULL,
        threshold DOUBLE PRECISION NOT NULL,
        at DOUBLE PRECISION NOT NULL,
        spent_usd DOUBLE PRECISION NOT NULL,
        budget_usd DOUBLE PRECISION NOT NULL,
        PRIMARY KEY (tenant, month, threshold)
    );
    ALTER TABLE jobs ADD COLUMN shots_total INTEGER;
    CREATE INDEX jobs_tenant_created ON jobs (tenant, created_at);
    """,
    # 7: shots x circuits reach 10^10 (a million shots of ten thousand circuits): past
    # a 32-bit INTEGER, which refused such a job.
    """
    ALTER TABLE jobs ALTER COLUMN shots_total TYPE BIGINT;
    ALTER TABLE ledger ALTER COLUMN shots TYPE BIGINT;
    """,
    _ERROR_CLASS,
    _RETENTION.format(real="DOUBLE PRECISION"),
    _ROLLOUTS.format(real="DOUBLE PRECISION"),
)

SCHEMA_VERSION = len(MIGRATIONS)
assert len(POSTGRES_MIGRATIONS) == SCHEMA_VERSION, "every database walks the same steps"

# pg_advisory_xact_lock key that serialises migrations across processes ("qrt-ray")
_POSTGRES_MIGRATION_LOCK = 0x7172742D726179


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
    return _walk(conn, MIGRATIONS)


def migrate_postgres(conn: Any) -> int:
    """:func:`migrate` for PostgreSQL, on a store connection in autocommit mode.

    A transaction-scoped advisory lock makes concurrent openers (several processes,
    several heads pointed at one database) take turns; DDL is transactional there, so
    a migration that fails leaves the schema as it found it.
    """
    conn.execute("BEGIN")
    try:
        conn.execute("SELECT pg_advisory_xact_lock(?)", (_POSTGRES_MIGRATION_LOCK,))
        conn.execute("CREATE TABLE IF NOT EXISTS schema_version (version INTEGER NOT NULL)")
    except BaseException:
        conn.execute("ROLLBACK")
        raise
    return _walk(conn, POSTGRES_MIGRATIONS)


def _walk(conn: Any, steps: tuple[str, ...]) -> int:
    """Inside the open transaction: apply every step past the stored version, commit."""
    try:
        row = conn.execute("SELECT version FROM schema_version").fetchone()
        found = row[0] if row else 0
        if found > SCHEMA_VERSION:
            raise RuntimeError(
                f"job store schema version {found} is newer than this qrt-ray supports "
                f"({SCHEMA_VERSION}); upgrade qrt-ray or point it at another store"
            )
        for version in range(found, SCHEMA_VERSION):
            for statement in _statements(steps[version]):
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
