"""The store's tables of the trust boundary: tenants, users, tokens, the audit chain,
the billing ledger and budget alerts.

A change and its audit record go in one transaction (:meth:`AccessTables.audited`),
so no change is made unaudited and no record tells of a change that never landed.
Every seal is computed in the writer thread from the chain's last record, so records
are numbered and linked in the order they commit.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any, TypeVar

from qrt_ray.access.audit import AuditEntry, AuditRecord, chain
from qrt_ray.access.tokens import Scope, TokenRecord
from qrt_ray.store.base import Charge
from qrt_ray.store.batched import insert_rows

T = TypeVar("T")

_TOKEN_COLUMNS = (
    "token_id, tenant, user_name, name, scopes, secret_hmac, created_at, expires_at, "
    "revoked_at, replaced_by"
)
_LEDGER_COLUMNS = "job_id, line, tenant, device, kind, shots, device_s, usd, at"


@dataclass(frozen=True, slots=True)
class TenantRow:
    """A tenant as stored: its own limits (over the farm's defaults) and whether it
    may call at all."""

    name: str
    limits: dict[str, Any]
    disabled: bool
    created_at: float
    updated_at: float


def append_audit(conn: Any, key: bytes, at: float, entries: Sequence[AuditEntry]) -> None:
    """Seal ``entries`` onto the chain inside the open transaction."""
    if not entries:
        return
    row = conn.execute("SELECT seq, seal FROM audit_log ORDER BY seq DESC LIMIT 1").fetchone()
    last = (row[0], row[1]) if row else None
    rows = [
        (
            r.seq,
            r.at,
            r.entry.actor,
            r.entry.action,
            r.entry.tenant,
            r.entry.subject,
            r.entry.outcome,
            json.dumps(dict(r.entry.detail), sort_keys=True, default=str),
            r.prev,
            r.seal,
        )
        for r in chain(key, last, at, entries)
    ]
    insert_rows(
        conn,
        "INSERT INTO audit_log (seq, at, actor, action, tenant, subject, outcome, "
        "detail_json, prev, seal)",
        rows,
    )


def insert_charges(conn: Any, charges: Sequence[Charge]) -> None:
    """Write ledger lines; a line already there (same job and line) is kept as it is."""
    insert_rows(
        conn,
        f"INSERT INTO ledger ({_LEDGER_COLUMNS})",
        [
            (c.job_id, c.line, c.tenant, c.device, c.kind, c.shots, c.device_s, c.usd, c.at)
            for c in charges
        ],
        "ON CONFLICT DO NOTHING",
    )


class AccessTables:
    """Mixed into :class:`~qrt_ray.store.sql.SQLJobStore`."""

    _write: Callable[..., Any]
    _rows: Callable[..., list[Any]]
    _row: Callable[..., Any]

    # -- one change, one audit record, one transaction ----------------------------------

    def audited(
        self,
        change: Callable[[Any], T] | None,
        entries: Sequence[AuditEntry],
        key: bytes,
        at: float,
    ) -> T | None:
        """Run ``change(conn)`` (if any) and seal ``entries`` in one transaction."""

        def write(conn: Any) -> T | None:
            out = change(conn) if change is not None else None
            append_audit(conn, key, at, entries)
            return out

        return self._write(write)

    def audit_records(self, after: int = 0, limit: int | None = None) -> list[AuditRecord]:
        """The chain from record ``after + 1`` on, in order."""
        sql = (
            "SELECT seq, at, actor, action, tenant, subject, outcome, detail_json, prev, seal "
            "FROM audit_log WHERE seq > ? ORDER BY seq"
        )
        args: list[Any] = [after]
        if limit is not None:
            sql += " LIMIT ?"
            args.append(limit)
        return [
            AuditRecord(
                r[0],
                r[1],
                AuditEntry(r[2], r[3], r[4], r[5], r[6], json.loads(r[7])),
                r[8],
                r[9],
            )
            for r in self._rows(sql, args)
        ]

    def audit_head(self) -> tuple[int, str] | None:
        """(seq, seal) of the chain's last record."""
        row = self._row("SELECT seq, seal FROM audit_log ORDER BY seq DESC LIMIT 1")
        return (row[0], row[1]) if row else None

    # -- tenants and users --------------------------------------------------------------

    @staticmethod
    def upsert_tenant(
        conn: Any, name: str, limits: dict[str, Any], disabled: bool, at: float
    ) -> None:
        conn.execute(
            "INSERT INTO tenants (name, limits_json, disabled, created_at, updated_at) "
            "VALUES (?,?,?,?,?) ON CONFLICT (name) DO UPDATE SET limits_json=?, disabled=?, "
            "updated_at=?",
            (
                name,
                json.dumps(limits, sort_keys=True),
                int(disabled),
                at,
                at,
                json.dumps(limits, sort_keys=True),
                int(disabled),
                at,
            ),
        )

    @staticmethod
    def insert_user(conn: Any, tenant: str, name: str, at: float) -> None:
        conn.execute(
            "INSERT INTO users (tenant, name, created_at) VALUES (?,?,?) ON CONFLICT DO NOTHING",
            (tenant, name, at),
        )

    def tenant(self, name: str) -> TenantRow | None:
        row = self._row(
            "SELECT name, limits_json, disabled, created_at, updated_at FROM tenants WHERE name=?",
            (name,),
        )
        return _tenant(row) if row else None

    def tenants(self) -> list[TenantRow]:
        rows = self._rows(
            "SELECT name, limits_json, disabled, created_at, updated_at FROM tenants ORDER BY name"
        )
        return [_tenant(r) for r in rows]

    def users(self, tenant: str) -> list[str]:
        return [
            r[0]
            for r in self._rows("SELECT name FROM users WHERE tenant=? ORDER BY name", (tenant,))
        ]

    # -- tokens -------------------------------------------------------------------------

    @staticmethod
    def insert_token(conn: Any, rec: TokenRecord) -> None:
        conn.execute(
            f"INSERT INTO api_tokens ({_TOKEN_COLUMNS}) VALUES (?,?,?,?,?,?,?,?,?,?)",
            (
                rec.token_id,
                rec.tenant,
                rec.user,
                rec.name,
                ",".join(s.value for s in rec.scopes),
                rec.secret_hmac,
                rec.created_at,
                rec.expires_at,
                rec.revoked_at,
                rec.replaced_by,
            ),
        )

    @staticmethod
    def update_token(conn: Any, token_id: str, **fields: Any) -> None:
        allowed = {"expires_at", "revoked_at", "replaced_by"}
        if not fields or set(fields) - allowed:
            raise ValueError(f"update_token: set some of {sorted(allowed)}")
        sets = ", ".join(f"{k}=?" for k in fields)
        conn.execute(f"UPDATE api_tokens SET {sets} WHERE token_id=?", (*fields.values(), token_id))

    def token(self, token_id: str) -> TokenRecord | None:
        row = self._row(f"SELECT {_TOKEN_COLUMNS} FROM api_tokens WHERE token_id=?", (token_id,))
        return _token(row) if row else None

    def tokens(self, tenant: str | None = None) -> list[TokenRecord]:
        if tenant is None:
            rows = self._rows(f"SELECT {_TOKEN_COLUMNS} FROM api_tokens ORDER BY created_at")
        else:
            rows = self._rows(
                f"SELECT {_TOKEN_COLUMNS} FROM api_tokens WHERE tenant=? ORDER BY created_at",
                (tenant,),
            )
        return [_token(r) for r in rows]

    # -- usage, ledger, alerts ---------------------------------------------------------

    def shots_since(self, tenant: str, since: float) -> int:
        """Shots x circuits of the tenant's jobs submitted since ``since``: all they
        asked for, but of a job that ended FAILED or CANCELLED only what it ran."""
        asked = self._row(
            "SELECT COALESCE(SUM(shots_total), 0) FROM jobs WHERE tenant=? AND created_at>=? "
            "AND state NOT IN ('FAILED', 'CANCELLED')",
            (tenant, since),
        )
        ran = self._row(
            "SELECT COALESCE(SUM(l.shots), 0) FROM ledger l JOIN jobs j ON j.job_id=l.job_id "
            "WHERE j.tenant=? AND j.created_at>=? AND j.state IN ('FAILED', 'CANCELLED') "
            "AND l.kind='shots'",
            (tenant, since),
        )
        return int(asked[0]) + int(ran[0])

    def charges(
        self, tenant: str | None = None, start: float | None = None, end: float | None = None
    ) -> list[Charge]:
        """Ledger lines, oldest first, of one tenant (None: all) in [start, end)."""
        where, args = _window(tenant, start, end)
        rows = self._rows(
            f"SELECT {_LEDGER_COLUMNS} FROM ledger{where} ORDER BY at, job_id, line", args
        )
        return [Charge(*r) for r in rows]

    def spend(self, tenant: str, start: float, end: float) -> tuple[float, float, int]:
        """(USD, device seconds, shots) billed to ``tenant`` in [start, end)."""
        where, args = _window(tenant, start, end)
        row = self._row(
            f"SELECT COALESCE(SUM(usd), 0), COALESCE(SUM(device_s), 0), "
            f"COALESCE(SUM(shots), 0) FROM ledger{where}",
            args,
        )
        return float(row[0]), float(row[1]), int(row[2])

    def add_charges(
        self, charges: Sequence[Charge], entries: Sequence[AuditEntry], key: bytes, at: float
    ) -> None:
        """Write ledger lines outside a job's completion (readout measured for a tenant)."""
        self.audited(lambda conn: insert_charges(conn, charges), entries, key, at)

    def record_alert(
        self,
        tenant: str,
        month: str,
        threshold: float,
        spent: float,
        budget: float,
        entries: Sequence[AuditEntry],
        key: bytes,
        at: float,
    ) -> bool:
        """Record a budget alert once per (tenant, month, threshold); True if new."""

        def write(conn: Any) -> bool:
            cur = conn.execute(
                "INSERT INTO budget_alerts (tenant, month, threshold, at, spent_usd, budget_usd) "
                "VALUES (?,?,?,?,?,?) ON CONFLICT DO NOTHING",
                (tenant, month, threshold, at, spent, budget),
            )
            if cur.rowcount != 1:
                return False
            append_audit(conn, key, at, entries)
            return True

        return bool(self._write(write))

    def alerts(self, tenant: str, month: str) -> list[dict[str, Any]]:
        rows = self._rows(
            "SELECT threshold, at, spent_usd, budget_usd FROM budget_alerts "
            "WHERE tenant=? AND month=? ORDER BY threshold",
            (tenant, month),
        )
        return [
            {"threshold": r[0], "at": r[1], "spent_usd": r[2], "budget_usd": r[3]} for r in rows
        ]


def _window(tenant: str | None, start: float | None, end: float | None) -> tuple[str, list[Any]]:
    clauses, args = [], []
    for sql, value in (("tenant=?", tenant), ("at>=?", start), ("at<?", end)):
        if value is not None:
            clauses.append(sql)
            args.append(value)
    return (" WHERE " + " AND ".join(clauses) if clauses else ""), args


def _tenant(row: Sequence[Any]) -> TenantRow:
    return TenantRow(row[0], json.loads(row[1]), bool(row[2]), row[3], row[4])


def _token(row: Sequence[Any]) -> TokenRecord:
    return TokenRecord(
        token_id=row[0],
        tenant=row[1],
        user=row[2],
        name=row[3],
        scopes=tuple(Scope(s) for s in row[4].split(",") if s),
        secret_hmac=row[5],
        created_at=row[6],
        expires_at=row[7],
        revoked_at=row[8],
        replaced_by=row[9],
    )
