"""A tenant's side of a game day: jobs submitted with a token through the farm's
gateway door (the scheduler's ``gateway`` call, the one the HTTP gateway makes), each
answer read as a tenant's client reads its HTTP status.

A tenant must never be told its token is bad because the farm is in trouble: during
an outage the right answer is "unavailable, retry" (503), and a job is submitted
again with the same idempotency key until it is accepted, so none is lost or made
twice.
"""

from __future__ import annotations

import json
import logging
import uuid
from collections.abc import Callable
from typing import Any

import ray

from qrt_ray import farm as farm_mod
from qrt_ray.errors import (
    AuthenticationError,
    DeviceUnavailableError,
    FarmBusyError,
    PermissionDeniedError,
    QuotaExceededError,
    RuntimeNotRunningError,
    StoreUnavailableError,
)

logger = logging.getLogger("qrt.gameday")

# how a tenant reads an answer: accepted (201), retry (503), refused (401, 403, or 429
# for a source locked out after refused tokens), throttled (429 of a quota), error
OUTCOMES = ("accepted", "retry", "refused", "throttled", "error")
SOURCE = "gameday"  # the source address the door is told (a name, not an address)
_CALL_S = 30.0  # a call left unanswered this long counts as an error


def outcome_of(exc: BaseException) -> str:
    """How a tenant's client reads a failed call (see ``OUTCOMES``)."""
    if isinstance(exc, FarmBusyError | StoreUnavailableError | RuntimeNotRunningError):
        return "retry"
    if isinstance(exc, DeviceUnavailableError | ray.exceptions.RayActorError):
        return "retry"
    if isinstance(exc, AuthenticationError | PermissionDeniedError):
        return "refused"
    if isinstance(exc, QuotaExceededError):
        return "refused" if exc.limit == "auth_failures" else "throttled"
    return "error"


class TenantClient:
    """Submits one job a call as a tenant, with a token, through the gateway door.

    Args:
        namespace: the farm's Ray namespace.
        token: the tenant's token.
        job: the JobSpec (as a dict, without ``idempotency_key``) each call submits.
    """

    def __init__(self, namespace: str, token: str, job: dict[str, Any]) -> None:
        self._namespace = namespace
        self._token = token
        self._job = job
        self._scheduler: Any = None
        self._key: str | None = None  # the job being submitted until it is accepted

    def submit(self) -> tuple[str, str | None, str]:
        """Submit the pending job (a new one after the last was accepted).

        Returns:
            (outcome, the job id when accepted, the message of a failed call).
        """
        if self._key is None:
            self._key = f"gameday-{uuid.uuid4().hex}"
        spec = json.dumps({**self._job, "idempotency_key": self._key})
        try:
            if self._scheduler is None:
                self._scheduler = farm_mod.find_scheduler(self._namespace)
            call = self._scheduler.gateway.remote(self._token, SOURCE, "submit", {"jobs": [spec]})
            (view,) = ray.get(call, timeout=_CALL_S)
        except ray.exceptions.RayTaskError as exc:
            cause = getattr(exc, "cause", None) or exc
            return outcome_of(cause), None, f"{type(cause).__name__}: {str(cause)[:160]}"
        except Exception as exc:  # the scheduler restarting, or a call that hung
            if isinstance(exc, ray.exceptions.RayActorError | RuntimeNotRunningError):
                self._scheduler = None
                return "retry", None, f"{type(exc).__name__}"
            return "error", None, f"{type(exc).__name__}: {str(exc)[:160]}"
        self._key = None
        return "accepted", str(view["job_id"]), ""


def open_tenant(rt: Any, tenant: str, lifetime_s: float) -> tuple[str, str]:
    """Make ``tenant`` (if new) and a submit+read token for it that expires after
    ``lifetime_s``; returns (token, token id). The operator's call, through Ray."""
    rt.administer("tenant_set", name=tenant)
    made = rt.administer(
        "token_create",
        tenant=tenant,
        user="gameday",
        scopes="submit,read",
        name="game day tenant",
        expires_in_s=lifetime_s,
    )
    return str(made["token"]), str(made["token_id"])


def close_tenant(rt: Any, token_id: str, note: Callable[[str], None]) -> None:
    """Revoke the game day's token (its jobs stay)."""
    try:
        rt.administer("token_revoke", token_id=token_id)
    except Exception as exc:  # the run's report matters more than the clean-up
        said = f"could not revoke the game day's token {token_id}: {type(exc).__name__}"
        logger.warning("%s (it expires by itself)", said)
        note(said)
