"""API tokens: random, shown once, stored as an HMAC, scoped, expiring, revocable.

A token reads ``qrt_<id>_<secret>``: the id (12 hex digits) finds the stored record
and is safe to show and log; the secret (256 random bits) is never stored. The store
keeps ``HMAC-SHA256(access key, secret)``, so a copy of the database alone does not
let anyone use a token, and the check compares in constant time. A token whose id is
unknown still costs one HMAC and one compare, so timing does not tell a real id from
a made-up one.
"""

from __future__ import annotations

import enum
import hashlib
import hmac
import re
import secrets
from dataclasses import dataclass

from qrt_ray.errors import ValidationError, brief
from qrt_ray.models import TENANT_PATTERN

PREFIX = "qrt_"
_ID_HEX = 12
_SECRET_BYTES = 32
_SHAPE = re.compile(r"^qrt_([0-9a-f]{12})_([A-Za-z0-9_-]{43})$")
# compared against when the id is unknown: same work, never a match
_DECOY = "0" * 64


class Scope(enum.StrEnum):
    """What a token may do. ``admin`` covers every tenant and implies the others."""

    SUBMIT = "submit"
    READ = "read"
    ADMIN = "admin"


class AuthFailure(enum.StrEnum):
    """Why a token was refused (the ``reason`` label of the auth error metric)."""

    MISSING = "missing"
    MALFORMED = "malformed"
    UNKNOWN = "unknown"
    EXPIRED = "expired"
    REVOKED = "revoked"
    SCOPE = "scope"
    LOCKED_OUT = "locked_out"
    TENANT_DISABLED = "tenant_disabled"


@dataclass(frozen=True, slots=True)
class TokenRecord:
    """A token as stored: never its secret, only the secret's HMAC."""

    token_id: str
    tenant: str
    user: str
    name: str
    scopes: tuple[Scope, ...]
    secret_hmac: str
    created_at: float
    expires_at: float | None = None
    revoked_at: float | None = None
    # set on the old token when it was rotated: the new token's id
    replaced_by: str | None = None

    def status(self, now: float) -> str:
        """``active``, ``expired`` or ``revoked`` at ``now``."""
        if self.revoked_at is not None and self.revoked_at <= now:
            return "revoked"
        if self.expires_at is not None and self.expires_at <= now:
            return "expired"
        return "active"

    def allows(self, scope: Scope) -> bool:
        """Whether the token may make a call that needs ``scope``."""
        return Scope.ADMIN in self.scopes or scope in self.scopes

    def view(self, now: float) -> dict[str, object]:
        """What ``qrt tokens list`` shows: everything but the HMAC."""
        return {
            "token_id": self.token_id,
            "tenant": self.tenant,
            "user": self.user,
            "name": self.name,
            "scopes": [s.value for s in self.scopes],
            "created_at": self.created_at,
            "expires_at": self.expires_at,
            "revoked_at": self.revoked_at,
            "replaced_by": self.replaced_by,
            "status": self.status(now),
        }


def secret_hmac(key: bytes, secret: str) -> str:
    """The stored form of a token's secret."""
    return hmac.new(key, secret.encode(), hashlib.sha256).hexdigest()


def new_token(key: bytes) -> tuple[str, str, str]:
    """A fresh token: (the token to show once, its id, the HMAC to store)."""
    token_id = secrets.token_hex(_ID_HEX // 2)
    secret = secrets.token_urlsafe(_SECRET_BYTES)
    return f"{PREFIX}{token_id}_{secret}", token_id, secret_hmac(key, secret)


def split_token(token: object) -> tuple[str, str] | None:
    """(id, secret) of a well-formed token; None for anything else (never raises)."""
    if not isinstance(token, str) or len(token) > 100:
        return None
    match = _SHAPE.match(token)
    return (match.group(1), match.group(2)) if match else None


def secret_matches(key: bytes, secret: str, record: TokenRecord | None) -> bool:
    """Whether ``secret`` is the record's, compared in constant time (a missing
    record costs the same work and never matches)."""
    stored = record.secret_hmac if record is not None else _DECOY
    same = hmac.compare_digest(secret_hmac(key, secret), stored)
    return same and record is not None


def parse_scopes(text: object) -> tuple[Scope, ...]:
    """Scopes from ``"submit,read"`` (or a list of names), in a fixed order.

    Raises:
        ValueError: an unknown scope, or none; the message lists the known ones.
    """
    names = text.split(",") if isinstance(text, str) else text
    if not isinstance(names, (list, tuple)):
        raise ValueError(f"scopes: expected names such as 'submit,read', got {type(text).__name__}")
    known = {s.value: s for s in Scope}
    picked: set[Scope] = set()
    for raw in names:
        name = str(raw).strip().lower()
        if not name:
            continue
        if name not in known:
            raise ValueError(
                f"scopes: {str(raw)[:20]!r} is not a scope; use some of {', '.join(known)}"
            )
        picked.add(known[name])
    if not picked:
        raise ValueError(f"scopes: none given; use some of {', '.join(known)}")
    return tuple(s for s in Scope if s in picked)


def check_name(what: str, value: object) -> str:
    """A tenant or user name as the farm accepts it: what a job's ``tenant`` may be
    (names reach metric labels, logs and the audit chain).

    Raises:
        ValidationError: anything else; the message names ``what``.
    """
    if not isinstance(value, str) or not TENANT_PATTERN.fullmatch(value):
        raise ValidationError(
            f"{what}={brief(value)!r}: use 1-64 letters, digits and _ . @ : + -, "
            "starting with a letter or digit"
        )
    return value
