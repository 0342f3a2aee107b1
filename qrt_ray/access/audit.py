"""The audit chain: append-only records, each sealed with an HMAC over the one before.

Record ``n`` stores ``seal(n) = HMAC(audit key, seal(n-1) | record n)``. Editing a
record breaks its seal; removing one leaves a gap in the numbers and breaks the next
record's link; moving one breaks the links on both sides. The key lives outside the
database, so whoever can write the table cannot forge new seals. A cut-off tail
leaves a shorter chain that is still whole: :func:`verify` takes the head an
operator saved elsewhere (``qrt audit head``) to catch that too.

Records hold ids, names, reasons and figures: never a token, a secret or a circuit.
"""

from __future__ import annotations

import hashlib
import hmac
import json
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any

GENESIS = "0" * 64


@dataclass(frozen=True, slots=True)
class AuditEntry:
    """What happened, before it has a place in the chain.

    Attributes:
        actor: who did it: ``token:<id>``, ``operator`` (through Ray), ``farm``.
        action: what: ``token.create``, ``auth.refused``, ``quota.refused``,
            ``budget.alert``, ``job.create``, ``tenant.update``, ...
        tenant: the tenant it concerns ("" for none).
        subject: the job, token, tenant or device it was about.
        outcome: ``ok``, ``refused`` or ``alert``.
        detail: small facts (reasons, limits, figures); never secrets.
    """

    actor: str
    action: str
    tenant: str = ""
    subject: str = ""
    outcome: str = "ok"
    detail: Mapping[str, Any] = field(default_factory=dict)


@dataclass(frozen=True, slots=True)
class AuditRecord:
    """An entry in its place in the chain."""

    seq: int
    at: float
    entry: AuditEntry
    prev: str
    seal: str

    def view(self) -> dict[str, Any]:
        """The record as ``qrt audit`` shows it."""
        e = self.entry
        return {
            "seq": self.seq,
            "at": self.at,
            "actor": e.actor,
            "action": e.action,
            "tenant": e.tenant,
            "subject": e.subject,
            "outcome": e.outcome,
            "detail": dict(e.detail),
            "seal": self.seal,
        }


def body(seq: int, at: float, entry: AuditEntry) -> str:
    """The canonical text a seal covers (and the store keeps as the detail's JSON)."""
    return json.dumps(
        [
            seq,
            repr(float(at)),
            entry.actor,
            entry.action,
            entry.tenant,
            entry.subject,
            entry.outcome,
            dict(entry.detail),
        ],
        sort_keys=True,
        separators=(",", ":"),
        default=str,
    )


def seal(key: bytes, prev: str, seq: int, at: float, entry: AuditEntry) -> str:
    """The seal of record ``seq`` following a record sealed ``prev``."""
    data = (prev + "|" + body(seq, at, entry)).encode()
    return hmac.new(key, data, hashlib.sha256).hexdigest()


def chain(
    key: bytes, last: tuple[int, str] | None, at: float, entries: Iterable[AuditEntry]
) -> list[AuditRecord]:
    """Records for ``entries`` after the chain's last (seq, seal) (None: empty chain)."""
    seq, prev = last if last is not None else (0, GENESIS)
    out = []
    for entry in entries:
        seq += 1
        s = seal(key, prev, seq, at, entry)
        out.append(AuditRecord(seq, at, entry, prev, s))
        prev = s
    return out


@dataclass(frozen=True, slots=True)
class Verdict:
    """What :func:`verify` found: the records checked, the problems, the head."""

    checked: int
    problems: tuple[str, ...]
    head: tuple[int, str] | None

    @property
    def ok(self) -> bool:
        return not self.problems


def verify(
    key: bytes,
    records: Iterable[AuditRecord],
    expect_head: tuple[int, str] | None = None,
    max_problems: int = 20,
) -> Verdict:
    """Check every seal and link, in ``seq`` order as stored.

    Args:
        expect_head: a (seq, seal) saved earlier: the chain must still hold it, so a
            removed tail shows.
    """
    problems: list[str] = []
    prev, want_seq, checked = GENESIS, 1, 0
    head: tuple[int, str] | None = None
    seen: dict[int, str] = {}
    for r in records:
        checked += 1
        if r.seq != want_seq:
            problems.append(f"record {r.seq}: expected record {want_seq} here (removed or moved)")
        if r.prev != prev:
            problems.append(f"record {r.seq}: does not follow the record before it")
        if not hmac.compare_digest(seal(key, r.prev, r.seq, r.at, r.entry), r.seal):
            problems.append(f"record {r.seq}: its seal does not match its content (edited)")
        prev, want_seq, head = r.seal, r.seq + 1, (r.seq, r.seal)
        seen[r.seq] = r.seal
        if len(problems) >= max_problems:
            problems.append("... stopped after too many problems")
            break
    if expect_head is not None:
        seq, sealed = expect_head
        if seen.get(seq) != sealed:
            problems.append(
                f"record {seq} of the saved head is missing or different (a cut-off tail)"
            )
    return Verdict(checked, tuple(problems), head)
