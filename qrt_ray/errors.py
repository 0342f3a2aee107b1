"""One error hierarchy for everything a user of qrt-ray can meet.

Every message names the argument (or the thing) that is wrong, the bad value, and
what to do about it. Callers catch ``QrtError`` to handle any of them.
"""

from __future__ import annotations

from typing import Any

# The most characters of a user's value an error message repeats.
BRIEF_CHARS = 60


def brief(value: Any, limit: int = BRIEF_CHARS) -> str:
    """A user's value as an error message may show it: at most ``limit`` characters.

    Strings are shown as they are (control characters escaped), anything else by its
    ``repr``; a longer value is cut and says how long it was, so a 1 MB argument
    never comes back in full.
    """
    text = value if isinstance(value, str) else _short_repr(value, limit)
    shown = "".join(c if c.isprintable() else _escape(c) for c in text[: limit + 1])
    if len(text) <= limit and len(shown) <= limit:
        return shown
    return f"{shown[: max(1, limit - 20)]}... ({len(text)} characters)"


def _escape(char: str) -> str:
    return char.encode("unicode_escape", "backslashreplace").decode("ascii")


def _short_repr(value: Any, limit: int) -> str:
    """``repr`` of a value, without building it in full for long strings and bytes."""
    if isinstance(value, (bytes, bytearray)) and len(value) > limit:
        return repr(bytes(value[:limit])) + "..."
    try:
        return repr(value)
    except Exception:  # a hostile __repr__
        return f"<{type(value).__name__}>"


class QrtError(Exception):
    """Base class of every error raised by qrt-ray."""


class ValidationError(QrtError, ValueError):
    """An argument or a config value is invalid; the message names it and the fix."""


class ConfigError(ValidationError):
    """A config file (farm, policies, tenants) is invalid; the message names the field."""


class PlacementError(QrtError):
    """No device can ever run the job as asked; the message says what would fit."""


class DeviceUnavailableError(QrtError):
    """The named device exists but cannot take work now (offline, maintenance, full)."""


class ControlLinkError(QrtError):
    """The link to a device's control electronics failed.

    ``transient`` errors (a timeout, a dropped connection) are retried with backoff;
    a permanent one (the device rejects the program) fails the job at once.
    """

    def __init__(self, message: str, *, transient: bool) -> None:
        super().__init__(message)
        self.transient = transient


class StaleCalibrationWarning(UserWarning):
    """A result came from a device whose canaries had found it drifted from the
    calibration the result names: its fidelity may be below what that promises."""


class JobNotFoundError(QrtError, KeyError):
    """No job with that id (or idempotency key) is known to the runtime."""

    def __str__(self) -> str:  # KeyError would otherwise repr() the message
        return str(self.args[0]) if self.args else ""


class JobFailedError(QrtError):
    """The job ended FAILED; ``reason`` says why."""

    def __init__(self, job_id: str, reason: str) -> None:
        super().__init__(f"job {job_id} failed: {reason}")
        self.job_id = job_id
        self.reason = reason


class JobCancelledError(QrtError):
    """The job was cancelled before it produced a result."""

    def __init__(self, job_id: str, reason: str = "cancelled") -> None:
        super().__init__(f"job {job_id} was cancelled: {reason}")
        self.job_id = job_id
        self.reason = reason


class JobTimeoutError(QrtError, TimeoutError):
    """Waiting for a job's result took longer than the caller's ``timeout_s``."""


class IllegalTransitionError(QrtError):
    """A job was asked to move between two states the lifecycle does not allow."""


class IntegrityError(QrtError):
    """Stored data failed its checksum: it is never returned as if it were good."""


class RuntimeNotRunningError(QrtError):
    """No qrt farm is reachable at the given address or namespace."""


class StoreUnavailableError(QrtError):
    """The job store's database cannot be reached (the message never holds a password)."""


class MitigationWarning(UserWarning):
    """A mitigated value had to be adjusted (e.g. clipped to the observable's range)."""


class MitigationError(QrtError):
    """A mitigation step could not give a trustworthy result; the job fails with it."""


class AuthenticationError(QrtError):
    """The caller's API token is missing, unknown, expired or revoked (HTTP 401).

    The message says which and what to do; it never holds the token.
    """


class PermissionDeniedError(QrtError):
    """The caller's token lacks the scope the call needs (HTTP 403)."""


class QuotaExceededError(QrtError):
    """A tenant limit refused the call (HTTP 429): which limit, and when to retry.

    Attributes:
        limit: the limit's name (``submit_rate``, ``concurrent_jobs``,
            ``shots_per_day``, ``device_s_per_month``, ``auth_failures``).
        retry_after_s: seconds until a retry can succeed (the HTTP ``Retry-After``).
    """

    def __init__(self, message: str, *, limit: str, retry_after_s: float) -> None:
        super().__init__(message)
        self.limit = limit
        self.retry_after_s = retry_after_s

    def __reduce__(self) -> tuple[Any, ...]:  # keyword arguments survive Ray's pickling
        return (_rebuild_quota, (type(self), str(self), self.limit, self.retry_after_s))


class BudgetExceededError(QuotaExceededError):
    """The tenant's monthly budget cannot cover the job (HTTP 402); running jobs
    finish, new ones wait for next month or a larger budget."""


def _rebuild_quota(
    cls: type[QuotaExceededError], message: str, limit: str, retry_after_s: float
) -> QuotaExceededError:
    return cls(message, limit=limit, retry_after_s=retry_after_s)


class FarmBusyError(QuotaExceededError):
    """The farm cannot take the call now (HTTP 503 with ``Retry-After``): nothing of
    it was stored; submit again after ``retry_after_s``.

    ``limit`` says why: ``max_live_jobs`` (the farm holds as many unfinished jobs as
    it is configured to; they will have finished by then) or ``devices_unheard`` (its
    scheduler has just started and some devices have not answered it yet, so it
    cannot tell whether one of them could run the job; a client rides this one out
    for its ``retry_s``, like a restart).
    """


class InsecureConnectionError(QrtError):
    """The gateway's TLS certificate could not be verified: nothing was sent.

    Trust the farm's CA with ``ca_file=`` (or ``$QRT_CA_FILE``); never turn checks off.
    """


class ResultNotReadyError(QrtError):
    """The job has no result yet (it is not DONE): wait for it (HTTP 409)."""
