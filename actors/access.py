"""Who is calling, what they may do, and whether their limits and budget allow it.

:class:`Access` sits in the scheduler's process, beside the store it reads: every
gateway call is one :meth:`Access.authenticate`, every submit one
:meth:`Access.admit`, and tenants, tokens and the audit chain change only through
it. Each refusal is counted by reason (``qrt_auth_refused_total``,
``qrt_quota_refused_total``) and sealed into the audit chain; the token itself never
reaches a log, a metric or a record, only its id.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import math
import time
from collections.abc import AsyncIterator, Callable, Iterator, Sequence
from dataclasses import dataclass
from typing import Any

from qrt_ray.access import audit as audit_mod
from qrt_ray.access.audit import AuditEntry
from qrt_ray.access.keys import derive
from qrt_ray.access.limits import (
    TenancyConfig,
    TenantLimits,
    TokenBucket,
    crossed,
    day_start,
    month_of,
    month_start,
    next_month,
)
from qrt_ray.access.refusals import RefusalLog
from qrt_ray.access.tokens import (
    AuthFailure,
    Scope,
    TokenRecord,
    check_name,
    new_token,
    secret_matches,
    split_token,
)
from qrt_ray.errors import (
    AuthenticationError,
    BudgetExceededError,
    DeviceUnavailableError,
    PermissionDeniedError,
    QuotaExceededError,
    StoreUnavailableError,
    ValidationError,
    brief,
)
from qrt_ray.metrics import RuntimeMetrics
from qrt_ray.models import JobSpec
from qrt_ray.policies.billing import Prices, upper_bound_usd
from qrt_ray.store.base import Charge
from qrt_ray.store.sql import SQLJobStore, is_database_error

logger = logging.getLogger("qrt.access")

OPERATOR = "operator"
_CACHE_S = 5.0  # how long a token or tenant read from the store is trusted
_OUTAGE_LOG_S = 10.0  # an outage of authentication is logged at most this often
_UNREADABLE_S = 1.0  # after a failed read, records are not asked for this long
_MAX_SOURCES = 10_000  # sources whose failures are remembered (oldest dropped)
_UNSEALED_KEPT = 10_000  # refusal records kept while the store refuses writes
_MESSAGES = {
    AuthFailure.MISSING: "no API token: send 'Authorization: Bearer <token>' "
    "(`qrt tokens create` makes one)",
    AuthFailure.MALFORMED: "the API token is not a qrt token (qrt_<id>_<secret>); "
    "copy it whole as `qrt tokens create` printed it",
    AuthFailure.UNKNOWN: "the API token is not valid; ask your operator for a new one",
    AuthFailure.EXPIRED: "the API token has expired; use its rotated successor or ask "
    "for a new one (`qrt tokens rotate`)",
    AuthFailure.REVOKED: "the API token was revoked; ask your operator for a new one",
    AuthFailure.TENANT_DISABLED: "your tenant is disabled; ask your operator",
}


@dataclass(frozen=True, slots=True)
class Principal:
    """An authenticated caller."""

    tenant: str
    user: str
    token_id: str
    scopes: tuple[Scope, ...]

    @property
    def admin(self) -> bool:
        return Scope.ADMIN in self.scopes

    @property
    def actor(self) -> str:
        return f"token:{self.token_id}"


class Access:
    """Tokens, tenants, limits, budgets and the audit chain over the job store."""

    def __init__(
        self,
        store: SQLJobStore,
        key: bytes,
        config: TenancyConfig,
        metrics: RuntimeMetrics,
        prices: Callable[[], Prices],
        clock: Callable[[], float] = time.time,
    ) -> None:
        self.store = store
        self._token_key = derive(key, "tokens")
        self.audit_key = derive(key, "audit")
        self.config = config
        self.metrics = metrics
        self._prices = prices
        self._clock = clock
        self._buckets: dict[str, TokenBucket] = {}
        self._failures: dict[str, tuple[int, int]] = {}  # source -> (minute, count)
        self._tokens: dict[str, tuple[float, TokenRecord | None]] = {}
        self._outage_logged_at = -_OUTAGE_LOG_S
        self._unreadable_until = -math.inf
        self._tenants: dict[str, tuple[float, Any]] = {}
        self._locks: dict[str, asyncio.Lock] = {}
        # spend admitted outside jobs and not billed yet (readouts running), by tenant
        self._held: dict[str, float] = {}
        # refusals sealed once a minute a kind (qrt_ray.access.refusals)
        self._refusals = RefusalLog()
        # refusal records the store could not take yet (sealed with the next ones)
        self._unsealed: list[AuditEntry] = []
        self._unsealed_logged_at = -_OUTAGE_LOG_S
        self._seal_again_at = 0.0  # no new try to seal them before this (the clock's time)

    # == authentication ================================================================

    async def authenticate(self, token: Any, source: str, scope: Scope) -> Principal:
        """The caller behind ``token``, allowed ``scope``.

        A source that presented ``auth_failures_per_min`` refused tokens this minute
        gets 429 for each further refused one (back off), while a good token from it
        still passes: sources behind one NAT or proxy do not lock each other out, and
        a 256-bit secret is not guessed by trying.

        Raises:
            AuthenticationError: missing, malformed, unknown, expired or revoked
                token, or a disabled tenant (HTTP 401).
            PermissionDeniedError: the token lacks ``scope`` (HTTP 403).
            QuotaExceededError: the token is refused and ``source`` has presented too
                many refused tokens this minute (HTTP 429 with Retry-After).
        """
        now = self._clock()
        source = str(source)[:80]
        parts = split_token(token)
        if parts is None:
            reason = AuthFailure.MISSING if not token else AuthFailure.MALFORMED
            await self._refuse(reason, source, "", now)
        assert parts is not None
        token_id, secret = parts
        record = await self._token(token_id, now)
        if not secret_matches(self._token_key, secret, record):
            await self._refuse(AuthFailure.UNKNOWN, source, token_id, now)
        assert record is not None
        status = record.status(now)
        if status != "active":
            await self._refuse(AuthFailure(status), source, token_id, now)
        tenant = await self._tenant(record.tenant, now, counted=True)
        if tenant is not None and tenant.disabled:
            await self._refuse(AuthFailure.TENANT_DISABLED, source, token_id, now)
        if not record.allows(scope):
            self._refuse_count(AuthFailure.SCOPE)
            detail = {"reason": "scope", "needs": scope.value, "source": source}
            entry = AuditEntry(
                f"token:{token_id}", "auth.refused", record.tenant, token_id, "refused", detail
            )
            await self._seal_once_a_minute(("scope", token_id, scope), entry, now)
            raise PermissionDeniedError(
                f"this call needs the {scope.value!r} scope; the token has "
                f"{', '.join(s.value for s in record.scopes)}"
            )
        self.metrics.auth_requests.labels(outcome="accepted").inc()
        return Principal(record.tenant, record.user, token_id, record.scopes)

    def _refuse_count(self, reason: AuthFailure) -> None:
        self.metrics.auth_requests.labels(outcome="refused").inc()
        self.metrics.auth_refused.labels(reason=reason.value).inc()

    async def _refuse(self, reason: AuthFailure, source: str, token_id: str, now: float) -> None:
        """Count, seal (once a minute a source and reason) and raise a refusal."""
        minute = int(now // 60)
        seen_minute, fails = self._failures.get(source, (minute, 0))
        fails = fails + 1 if seen_minute == minute else 1
        self._failures[source] = (minute, fails)
        if len(self._failures) > _MAX_SOURCES:
            self._failures.pop(next(iter(self._failures)))
        locked = fails > self.config.auth_failures_per_min
        self._refuse_count(AuthFailure.LOCKED_OUT if locked else reason)
        detail = {"reason": reason.value, "source": source}
        entry = AuditEntry("anonymous", "auth.refused", "", token_id, "refused", detail)
        await self._seal_once_a_minute(("auth", source, reason), entry, now)
        if locked:
            wait = 60 - now % 60
            raise QuotaExceededError(
                f"auth_failures: too many refused tokens from {source} this minute; "
                f"retry in {wait:.0f} s with a valid token ({_MESSAGES[reason]})",
                limit="auth_failures",
                retry_after_s=math.ceil(wait),
            )
        raise AuthenticationError(_MESSAGES[reason])

    async def _token(self, token_id: str, now: float) -> TokenRecord | None:
        cached = self._tokens.get(token_id)
        if cached is not None and now - cached[0] < _CACHE_S:
            return cached[1]
        record = await self._lookup(self.store.token, token_id, now, counted=True)
        if record is not None:  # unknown ids are not cached: they would fill memory
            self._tokens[token_id] = (now, record)
        return record

    async def _tenant(self, name: str, now: float, counted: bool = False) -> Any:
        cached = self._tenants.get(name)
        if cached is not None and now - cached[0] < _CACHE_S:
            return cached[1]
        row = await self._lookup(self.store.tenant, name, now, counted)
        self._tenants[name] = (now, row)
        return row

    async def _lookup(self, read: Callable[[str], Any], key: str, now: float, counted: bool) -> Any:
        """A token or tenant record read from the store for a tenant's call.

        A database that cannot be read is an outage of authentication, not a verdict
        on the caller: the call is answered "unavailable, retry" (HTTP 503), never
        refused, and the caller's source is not counted towards a lock-out. For
        ``_UNREADABLE_S`` after a failed read, calls are answered so without asking
        the database again (a crowd retrying does not queue reads on a database that
        is down). ``counted``: the call is authenticating (it counts in
        ``qrt_auth_requests_total``; a later read of the same call does not).

        Raises:
            StoreUnavailableError: the record could not be read.
        """
        cause: BaseException | None = None
        if now >= self._unreadable_until:
            try:
                return await asyncio.to_thread(read, key)
            except Exception as exc:
                if not is_database_error(exc):
                    raise  # a fault of this code or of a stored row: not an outage
                cause = exc
            self._unreadable_until = now + _UNREADABLE_S
            if time.monotonic() - self._outage_logged_at >= _OUTAGE_LOG_S:  # not each call
                self._outage_logged_at = time.monotonic()
                logger.error("authentication unavailable: %s: %s", type(cause).__name__, cause)
        if counted:
            self.metrics.auth_requests.labels(outcome="unavailable").inc()
        what = f" ({type(cause).__name__})" if cause is not None else ""
        raise StoreUnavailableError(
            f"authentication is unavailable: the farm cannot read its token records{what}; "
            "nothing was done, retry in a few seconds"
        ) from None

    async def limits(self, tenant: str) -> TenantLimits:
        """The tenant's limits: its own over the farm's defaults."""
        row = await self._tenant(tenant, self._clock())
        base = self.config.default_limits
        return base.merged(row.limits) if row is not None else base

    # == limits and budget ==============================================================

    @contextlib.asynccontextmanager
    async def admitting(self, tenant: str) -> AsyncIterator[None]:
        """Hold while checking a tenant's submit and storing it: submits of one tenant
        take turns, so two racing for the last of a budget never both win."""
        lock = self._locks.setdefault(tenant, asyncio.Lock())
        async with lock:
            yield

    async def admit(
        self,
        principal: Principal,
        specs: Sequence[JobSpec],
        live: Sequence[JobSpec],
        count_refusal: bool = True,
    ) -> int:
        """Check the tenant's limits and budget for ``specs``, beside the tenant's
        ``live`` jobs (not yet final). Call inside :meth:`admitting`.

        Args:
            principal: Who submits.
            specs: The jobs asked for.
            live: The tenant's jobs not yet final.
            count_refusal: Count and audit a refusal here. A caller that may still
                admit the call another way (a replay) passes False and calls
                :meth:`refused` should the refusal stand.

        Returns:
            The submit-rate tokens taken (:meth:`refund` gives back those of replays).

        Raises:
            QuotaExceededError: a limit refuses; the message names it and when to retry.
            BudgetExceededError: the month's budget cannot cover the jobs.
        """
        if not specs:
            return 0
        now = self._clock()
        tenant = principal.tenant
        limits = await self.limits(tenant)
        taken = 0
        try:
            self._check_rate(tenant, limits, len(specs), now)
            taken = len(specs) if limits.submit_rate_per_s is not None else 0
            cap = limits.max_concurrent_jobs
            if cap is not None and len(live) + len(specs) > cap:
                raise QuotaExceededError(
                    f"concurrent_jobs: {len(live)} of your jobs are not "
                    f"finished and the limit is {cap}; retry when some finish",
                    limit="concurrent_jobs",
                    retry_after_s=1.0,
                )
            await self._check_shots(tenant, limits, specs, now)
            await self._check_month(tenant, limits, specs, live, now)
        except QuotaExceededError as exc:
            self.refund(tenant, taken)
            if count_refusal:
                await self.refused(principal, exc, len(specs))
            raise
        return taken

    async def refused(self, principal: Principal, exc: QuotaExceededError, jobs: int) -> None:
        """Count and audit a refusal of ``jobs`` jobs (see :meth:`admit`)."""
        self.metrics.quota_refused.labels(tenant=principal.tenant, limit=exc.limit).inc()
        await self._seal_refusal(principal, exc, jobs, self._clock())

    async def _seal_refusal(
        self, principal: Principal, exc: QuotaExceededError, jobs: int, now: float
    ) -> None:
        action = "budget.refused" if isinstance(exc, BudgetExceededError) else "quota.refused"
        detail = {"limit": exc.limit, "jobs": jobs, "retry_after_s": round(exc.retry_after_s, 3)}
        entry = AuditEntry(principal.actor, action, principal.tenant, "", "refused", detail)
        await self._seal_once_a_minute((principal.tenant, exc.limit), entry, now)

    async def _seal_once_a_minute(self, key: Any, entry: AuditEntry, now: float) -> None:
        entries = self._refusals.add(key, entry, int(now // 60))
        if entries:
            await self._seal_refusals(entries, now)

    async def _seal_refusals(self, entries: Sequence[AuditEntry], now: float) -> None:
        """Seal refusal records, after any the store could not take before.

        A refusal is answered as a refusal even while the store refuses writes: its
        records wait here (at most ``_UNSEALED_KEPT``, the oldest dropped and said so)
        and are sealed with the next ones, or by :meth:`flush_refusals`. A write that
        landed though the store reported it failed is sealed again: the chain then
        holds the record twice, never not at all.
        """
        # taken before the write: calls running meanwhile neither seal these again nor
        # lose what they add
        waiting, self._unsealed = [*self._unsealed, *entries], []
        try:
            await self._audit(waiting, now)
        except Exception as exc:
            if not (is_database_error(exc) or isinstance(exc, StoreUnavailableError)):
                raise  # a fault of this code: kept, they would fail every call after
            waiting += self._unsealed  # oldest first
            dropped = max(0, len(waiting) - _UNSEALED_KEPT)
            self._unsealed = waiting[dropped:]
            self._seal_again_at = now + _UNREADABLE_S
            if dropped or time.monotonic() - self._unsealed_logged_at >= _OUTAGE_LOG_S:
                self._unsealed_logged_at = time.monotonic()
                logger.error(
                    "%d refusal records wait to be sealed (%d dropped): the store refuses "
                    "writes: %s",
                    len(self._unsealed),
                    dropped,
                    exc,
                )
            return

    def refusals_waiting(self) -> bool:
        """Whether refusal records wait to be sealed: counts of a minute that is over,
        or records the store could not take."""
        if self._unsealed and self._clock() >= self._seal_again_at:
            return True
        return self._refusals.waiting(int(self._clock() // 60))

    async def flush_refusals(self, force: bool = False) -> None:
        """Seal the counts of refusals of minutes that are over (all, with ``force``),
        and the records that wait for the store."""
        now = self._clock()
        entries = self._refusals.drain(int(now // 60), force)
        if entries or self._unsealed:
            await self._seal_refusals(entries, now)

    def refund(self, tenant: str, n: int) -> None:
        """Give back ``n`` submit-rate tokens (jobs that were replays, or a refused call)."""
        bucket = self._buckets.get(tenant)
        if bucket is not None and n > 0:
            bucket.tokens = min(float(bucket.burst), bucket.tokens + n)

    def _check_rate(self, tenant: str, limits: TenantLimits, n: int, now: float) -> None:
        if limits.submit_rate_per_s is None:
            return
        bucket = self._buckets.get(tenant)
        if bucket is None or (bucket.rate, bucket.burst) != (
            limits.submit_rate_per_s,
            limits.submit_burst,
        ):
            bucket = self._buckets[tenant] = TokenBucket.full(
                limits.submit_rate_per_s, limits.submit_burst, now
            )
        wait = bucket.take(n, now)
        if wait == 0.0:
            return
        if math.isinf(wait):
            raise QuotaExceededError(
                f"submit_rate: {n} jobs in one call is more than your burst of "
                f"{limits.submit_burst}; send at most {limits.submit_burst} a call",
                limit="submit_rate",
                retry_after_s=math.ceil(limits.submit_burst / limits.submit_rate_per_s),
            )
        raise QuotaExceededError(
            f"submit_rate: more than {limits.submit_rate_per_s:g} jobs/s (burst "
            f"{limits.submit_burst}); retry in {wait:.2f} s",
            limit="submit_rate",
            retry_after_s=wait,
        )

    async def _check_shots(
        self, tenant: str, limits: TenantLimits, specs: Sequence[JobSpec], now: float
    ) -> None:
        cap = limits.shots_per_day
        if cap is None:
            return
        asked = sum(s.shots * len(s.circuits) for s in specs)
        start = day_start(now)
        used = await asyncio.to_thread(self.store.shots_since, tenant, start)
        if used + asked <= cap:
            return
        if asked > cap:
            hint = f"{asked} shots x circuits is more than a whole day's {cap}; split the job"
        else:
            hint = f"used {used} of {cap} today, this asks {asked}; more at 00:00 UTC"
        raise QuotaExceededError(
            f"shots_per_day: {hint}",
            limit="shots_per_day",
            retry_after_s=math.ceil(start + 86400 - now),
        )

    async def _check_month(
        self,
        tenant: str,
        limits: TenantLimits,
        specs: Sequence[JobSpec],
        live: Sequence[JobSpec],
        now: float,
        extra_usd: float = 0.0,
    ) -> None:
        if limits.device_s_per_month is None and limits.budget_usd_per_month is None:
            return
        spent, device_s, _ = await asyncio.to_thread(
            self.store.spend, tenant, month_start(now), next_month(now)
        )
        retry = math.ceil(next_month(now) - now)
        cap_s = limits.device_s_per_month
        if cap_s is not None and device_s >= cap_s:
            raise QuotaExceededError(
                f"device_s_per_month: used {device_s:.1f} of {cap_s:g} device seconds "
                "this month; more on the 1st (UTC)",
                limit="device_s_per_month",
                retry_after_s=retry,
            )
        budget = limits.budget_usd_per_month
        if budget is None:
            return
        asked = self.reserved_usd(specs) + extra_usd
        held = self.reserved_usd(live) + self._held.get(tenant, 0.0)
        if spent + held + asked > budget + 1e-9:
            raise BudgetExceededError(
                f"budget: ${spent:.4f} billed and ${held:.4f} held by running "
                f"jobs of ${budget:g} this month; this needs up to ${asked:.4f} (at the "
                "dearest device it could run on: pin device= to a cheaper one, or wait "
                "for next month)",
                limit="budget",
                retry_after_s=retry,
            )

    def reserved_usd(self, live: Sequence[JobSpec]) -> float:
        """What a budget holds for jobs not yet final: each one's upper bound.

        Raises:
            DeviceUnavailableError: no device's price is known yet (HTTP 503).
        """
        if not live:
            return 0.0
        prices = self._prices()
        if not prices:
            raise DeviceUnavailableError(
                "no device of the farm has answered yet, so the job cannot be priced "
                "against your budget; retry in a few seconds"
            )
        return sum(upper_bound_usd(s.shots, len(s.circuits), prices, s.device) for s in live)

    @contextlib.contextmanager
    def holding(self, tenant: str, usd: float) -> Iterator[None]:
        """Hold ``usd`` of the tenant's budget while a spend admitted by
        :meth:`admit_spend` runs (until its ledger line is written)."""
        self._held[tenant] = self._held.get(tenant, 0.0) + usd
        try:
            yield
        finally:
            left = self._held[tenant] - usd
            if left > 1e-12:
                self._held[tenant] = left
            else:
                del self._held[tenant]

    async def admit_spend(self, principal: Principal, usd: float, live: Sequence[JobSpec]) -> None:
        """Check a call that spends ``usd`` without making a job (a readout
        calibration): one submit-rate token, the month's device seconds and budget.
        Call inside :meth:`admitting`, then run the spend inside :meth:`holding`.

        Raises:
            QuotaExceededError, BudgetExceededError: as :meth:`admit`.
        """
        now = self._clock()
        tenant = principal.tenant
        limits = await self.limits(tenant)
        taken = 0
        try:
            self._check_rate(tenant, limits, 1, now)
            taken = 1 if limits.submit_rate_per_s is not None else 0
            await self._check_month(tenant, limits, [], live, now, extra_usd=usd)
        except QuotaExceededError as exc:
            self.metrics.quota_refused.labels(tenant=tenant, limit=exc.limit).inc()
            await self._seal_refusal(principal, exc, 0, now)
            self.refund(tenant, taken)
            raise

    async def budget_alerts(self, tenant: str, spent: float, budget: float, now: float) -> None:
        """Raise the 50/80/100 % alerts ``spent`` has reached (each once a month)."""
        fractions = [1.0] if budget <= 0 else crossed(0.0, spent / budget)
        month = month_of(now)
        for threshold in fractions:
            entry = AuditEntry(
                "farm",
                "budget.alert",
                tenant,
                month,
                "alert",
                {"threshold": threshold, "spent_usd": round(spent, 6), "budget_usd": budget},
            )
            new = await asyncio.to_thread(
                self.store.record_alert,
                tenant,
                month,
                threshold,
                spent,
                budget,
                [entry],
                self.audit_key,
                now,
            )
            if new:
                self.metrics.budget_alerts.labels(tenant=tenant, threshold=f"{threshold:g}").inc()
                logger.warning(
                    "tenant %s reached %d %% of its %s budget ($%.4f of $%g)",
                    tenant,
                    round(threshold * 100),
                    month,
                    spent,
                    budget,
                )

    async def billed(self, charges: Sequence[Charge]) -> None:
        """After ledger lines landed: count them and raise budget alerts they cause."""
        tenants = {c.tenant for c in charges}
        for c in charges:
            self.metrics.billed_usd.labels(tenant=c.tenant).inc(c.usd)
            self.metrics.billed_shots.labels(tenant=c.tenant).inc(c.shots)
        now = self._clock()
        for tenant in tenants:
            budget = (await self.limits(tenant)).budget_usd_per_month
            if budget is None:
                continue
            spent, _, _ = await asyncio.to_thread(
                self.store.spend, tenant, month_start(now), next_month(now)
            )
            await self.budget_alerts(tenant, spent, budget, now)

    # == tenants, tokens, audit (the operator's side) ==================================

    async def _audit(self, entries: Sequence[AuditEntry], now: float | None = None) -> None:
        at = self._clock() if now is None else now
        await asyncio.to_thread(self.store.audited, None, entries, self.audit_key, at)

    async def audit(self, entries: Sequence[AuditEntry]) -> None:
        """Seal records into the chain (job ownership, admin actions)."""
        await self._audit(entries)

    async def audit_job(self, principal: Principal, rec: Any, action: str) -> None:
        """Seal what a caller did to a job (``job.cancel``)."""
        await self._audit([AuditEntry(principal.actor, action, rec.tenant, rec.job_id)])

    async def set_tenant(
        self, name: str, limits: dict[str, Any], disabled: bool | None, actor: str = OPERATOR
    ) -> dict[str, Any]:
        """Create a tenant or change its limits (given keys replace; None removes one
        so the default applies) or whether it is disabled.

        Raises:
            ValidationError: a bad name or limit.
        """
        name = check_name("tenant", name)
        now = self._clock()
        current = await asyncio.to_thread(self.store.tenant, name)
        own = dict(current.limits) if current is not None else {}
        for k, v in limits.items():
            if v is None:
                own.pop(k, None)
            else:
                own[k] = v
        try:
            effective = self.config.default_limits.merged(own)
        except Exception as exc:
            raise ValidationError(
                f"tenant {name}: invalid limits: {brief(str(exc), 300)}"
            ) from None
        off = current.disabled if (disabled is None and current is not None) else bool(disabled)
        entry = AuditEntry(
            actor,
            "tenant.create" if current is None else "tenant.update",
            name,
            name,
            "ok",
            {"limits": own, "disabled": off},
        )
        await asyncio.to_thread(
            self.store.audited,
            lambda conn: self.store.upsert_tenant(conn, name, own, off, now),
            [entry],
            self.audit_key,
            now,
        )
        self._tenants.pop(name, None)
        return {"tenant": name, "limits": own, "effective": effective.model_dump(), "disabled": off}

    async def tenants(self) -> list[dict[str, Any]]:
        """Every tenant with its own and effective limits and its users."""
        rows = await asyncio.to_thread(self.store.tenants)
        out = []
        for r in rows:
            users = await asyncio.to_thread(self.store.users, r.name)
            out.append(
                {
                    "tenant": r.name,
                    "limits": r.limits,
                    "effective": self.config.default_limits.merged(r.limits).model_dump(),
                    "disabled": r.disabled,
                    "users": users,
                    "created_at": r.created_at,
                }
            )
        return out

    async def create_token(
        self,
        tenant: str,
        user: str,
        scopes: Sequence[Scope],
        *,
        name: str = "",
        expires_in_s: float | None = None,
        actor: str = OPERATOR,
        rotated_from: str | None = None,
    ) -> dict[str, Any]:
        """Make a token (shown in the answer only, never again); the tenant must exist.

        Raises:
            ValidationError: unknown tenant, bad user name or lifetime.
        """
        tenant = check_name("tenant", tenant)
        user = check_name("user", user)
        if not scopes:
            raise ValidationError("scopes: give at least one of submit, read, admin")
        if expires_in_s is not None and not (0 < expires_in_s <= 10 * 365 * 86400):
            raise ValidationError(
                f"expires_in_s={brief(expires_in_s)}: expected seconds from 1 to 10 years"
            )
        if await asyncio.to_thread(self.store.tenant, tenant) is None:
            raise ValidationError(
                f"tenant={tenant!r} does not exist; create it first: qrt tenants create {tenant}"
            )
        now = self._clock()
        token, token_id, hashed = new_token(self._token_key)
        record = TokenRecord(
            token_id,
            tenant,
            user,
            str(name)[:80],
            tuple(scopes),
            hashed,
            now,
            None if expires_in_s is None else now + expires_in_s,
        )
        detail: dict[str, Any] = {
            "user": user,
            "scopes": [s.value for s in scopes],
            "expires_at": record.expires_at,
        }
        if rotated_from:
            detail["rotated_from"] = rotated_from

        def write(conn: Any) -> None:
            self.store.insert_user(conn, tenant, user, now)
            self.store.insert_token(conn, record)

        await asyncio.to_thread(
            self.store.audited,
            write,
            [AuditEntry(actor, "token.create", tenant, token_id, "ok", detail)],
            self.audit_key,
            now,
        )
        return {**record.view(now), "token": token}

    async def tokens(self, tenant: str | None = None) -> list[dict[str, Any]]:
        """Tokens (never their secrets), of one tenant or all."""
        now = self._clock()
        return [t.view(now) for t in await asyncio.to_thread(self.store.tokens, tenant)]

    async def _known_token(self, token_id: str) -> TokenRecord:
        record = await asyncio.to_thread(self.store.token, str(token_id)[:40])
        if record is None:
            raise ValidationError(
                f"token_id={brief(token_id)!r}: no such token (`qrt tokens list` shows ids)"
            )
        return record

    async def revoke_token(self, token_id: str, actor: str = OPERATOR) -> dict[str, Any]:
        """Revoke a token now (its next call is refused)."""
        record = await self._known_token(token_id)
        now = self._clock()
        if record.revoked_at is None:
            await asyncio.to_thread(
                self.store.audited,
                lambda conn: self.store.update_token(conn, record.token_id, revoked_at=now),
                [AuditEntry(actor, "token.revoke", record.tenant, record.token_id)],
                self.audit_key,
                now,
            )
        self._tokens.pop(record.token_id, None)
        return (await self._known_token(token_id)).view(now)

    async def rotate_token(
        self, token_id: str, overlap_s: float, actor: str = OPERATOR
    ) -> dict[str, Any]:
        """A new token like the old one; the old one keeps working for ``overlap_s``
        more seconds (0: stops now), so clients can switch without a gap.

        Raises:
            ValidationError: unknown or no longer active token, bad overlap.
        """
        if (
            isinstance(overlap_s, bool)
            or not isinstance(overlap_s, (int, float))
            or not (0 <= overlap_s <= 30 * 86400)
        ):
            raise ValidationError(
                f"overlap_s={brief(overlap_s)}: expected seconds from 0 to 30 days"
            )
        old = await self._known_token(token_id)
        now = self._clock()
        if old.status(now) != "active":
            raise ValidationError(
                f"token {old.token_id} is {old.status(now)}; only an active token rotates "
                "(create a new one instead)"
            )
        lifetime = None if old.expires_at is None else max(1.0, old.expires_at - old.created_at)
        new = await self.create_token(
            old.tenant,
            old.user,
            old.scopes,
            name=old.name,
            expires_in_s=lifetime,
            actor=actor,
            rotated_from=old.token_id,
        )
        ends = now + overlap_s
        ends = ends if old.expires_at is None else min(old.expires_at, ends)
        await asyncio.to_thread(
            self.store.audited,
            lambda conn: self.store.update_token(
                conn, old.token_id, expires_at=ends, replaced_by=new["token_id"]
            ),
            [
                AuditEntry(
                    actor,
                    "token.rotate",
                    old.tenant,
                    old.token_id,
                    "ok",
                    {"replaced_by": new["token_id"], "old_expires_at": ends},
                )
            ],
            self.audit_key,
            now,
        )
        self._tokens.pop(old.token_id, None)
        return new

    async def verify_audit(self, expect_head: tuple[int, str] | None = None) -> dict[str, Any]:
        """Check the whole chain (see :func:`qrt_ray.access.audit.verify`)."""
        records = await asyncio.to_thread(self.store.audit_records)
        verdict = audit_mod.verify(self.audit_key, records, expect_head)
        return {
            "ok": verdict.ok,
            "checked": verdict.checked,
            "problems": list(verdict.problems),
            "head": list(verdict.head) if verdict.head else None,
        }
