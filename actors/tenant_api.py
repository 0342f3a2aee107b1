"""What a tenant can do through the gateway, each call scoped to its own jobs.

:class:`TenantAPI` answers the gateway's calls in the scheduler's process: it asks
:class:`~qrt_ray.actors.access.Access` who the caller is, checks the scope the call
needs, and runs it against the scheduler with the caller's tenant filled in. A job
of another tenant is answered exactly as an unknown id is (``JobNotFoundError``, HTTP
404), so a tenant cannot tell another's job exists; job ids carry 64 random bits,
so they cannot be guessed either. An ``admin`` token sees every tenant.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import json
import time
import uuid
from collections.abc import Awaitable, Callable
from typing import Any

from qrt_ray.access.audit import AuditEntry
from qrt_ray.access.limits import day_start, month_bounds, month_of, next_month
from qrt_ray.access.tokens import Scope
from qrt_ray.actors.access import Access, Principal
from qrt_ray.actors.requests import decode_specs, job_id_arg, job_ids_arg
from qrt_ray.actors.scheduler import Scheduler
from qrt_ray.actors.views import event_views, record_view
from qrt_ray.arguments import check_limit
from qrt_ray.calibration import calibration_to_json
from qrt_ray.errors import (
    IntegrityError,
    JobNotFoundError,
    QuotaExceededError,
    ResultNotReadyError,
    ValidationError,
    brief,
)
from qrt_ray.intake import IntakeLimits
from qrt_ray.lifecycle import JobState
from qrt_ray.models import JobSpec
from qrt_ray.policies.billing import readout_charge
from qrt_ray.store import JobRecord

Handler = Callable[[Principal, dict[str, Any]], Awaitable[Any]]
# open wait calls: each holds a scheduler call slot for up to wait_cap_s
WAITS_PER_TENANT = 8
WAITS_IN_ALL = 200


def not_found(job_id: str) -> JobNotFoundError:
    """The one answer for an unknown job and another tenant's job."""
    return JobNotFoundError(f"no job {brief(job_id, 40)!r} (check the id: `qrt jobs` lists yours)")


class TenantAPI:
    """The gateway's operations, keyed by name: ``call(token, source, op, payload)``."""

    def __init__(
        self,
        scheduler: Scheduler,
        access: Access,
        limits: IntakeLimits,
        *,
        wait_cap_s: float,
        readout: Callable[[str, list[int], int, float], Awaitable[Any]] | None = None,
        served: Callable[[], dict[str, str]] | None = None,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self.scheduler = scheduler
        self.access = access
        self.store = scheduler.store
        self.limits = limits
        self.wait_cap_s = wait_cap_s
        self._clock = clock
        self._readout = readout
        self._served = served
        self._waits: dict[str, int] = {}  # open wait calls by tenant
        self._ops: dict[str, tuple[Scope, Handler]] = {
            "whoami": (Scope.READ, self._whoami),
            "submit": (Scope.SUBMIT, self._submit),
            "cancel": (Scope.SUBMIT, self._cancel),
            "estimate": (Scope.READ, self._estimate),
            "job": (Scope.READ, self._job),
            "jobs": (Scope.READ, self._jobs),
            "events": (Scope.READ, self._events),
            "wait": (Scope.READ, self._wait),
            "results": (Scope.READ, self._results),
            "devices": (Scope.READ, self._devices),
            "usage": (Scope.READ, self._usage),
            "readout": (Scope.SUBMIT, self._readout_call),
            "mitigation": (Scope.READ, self._mitigation),
        }

    @property
    def operations(self) -> list[str]:
        return sorted(self._ops)

    async def call(self, token: Any, source: str, operation: str, payload: Any) -> Any:
        """Authenticate ``token`` for ``operation`` and run it for its tenant.

        Raises:
            ValidationError: unknown operation or a bad payload (checked after the
                token, so an anonymous caller learns nothing of the API's shape).
            AuthenticationError, PermissionDeniedError, QuotaExceededError: as
                :meth:`Access.authenticate` and :meth:`Access.admit`.
            JobNotFoundError: no such job of the caller's tenant.
        """
        scope, handler = self._ops.get(operation, (Scope.READ, None))  # type: ignore[arg-type]
        if self.access.refusals_waiting():
            await self.access.flush_refusals()
        principal = await self.access.authenticate(token, source, scope)
        if handler is None:
            raise ValidationError(
                f"operation={brief(operation, 40)!r}: use one of {', '.join(self.operations)}"
            )
        if not isinstance(payload, dict):
            raise ValidationError(f"payload: expected an object, got {type(payload).__name__}")
        return await handler(principal, payload)

    # -- ownership ---------------------------------------------------------------------

    async def _owned(self, principal: Principal, job_id: Any) -> JobRecord:
        job_id = job_id_arg(job_id)
        try:
            rec = await self.scheduler.get(job_id)
        except JobNotFoundError:
            raise not_found(job_id) from None
        except IntegrityError:  # a record that cannot be read proves no owner
            if principal.admin:
                raise
            raise not_found(job_id) from None
        if not principal.admin and rec.tenant != principal.tenant:
            raise not_found(job_id)
        return rec

    def _as_owner(self, principal: Principal, spec: JobSpec, where: str) -> JobSpec:
        """The spec with the caller's tenant: a tenant submits only as itself."""
        if spec.tenant in ("default", principal.tenant):
            return spec.model_copy(update={"tenant": principal.tenant})
        if principal.admin:
            return spec
        raise ValidationError(
            f"{where}.tenant={spec.tenant!r}: your token submits as tenant "
            f"{principal.tenant!r}; leave tenant out"
        )

    # -- operations --------------------------------------------------------------------

    async def _whoami(self, p: Principal, _: dict[str, Any]) -> dict[str, Any]:
        return {
            "tenant": p.tenant,
            "user": p.user,
            "token_id": p.token_id,
            "scopes": [s.value for s in p.scopes],
        }

    async def _submit(self, p: Principal, payload: dict[str, Any]) -> list[dict[str, Any]]:
        specs = await asyncio.to_thread(decode_specs, _texts(payload.get("jobs")), self.limits)
        where = "jobs[{}]" if len(specs) > 1 else "job"
        specs = [self._as_owner(p, s, where.format(i)) for i, s in enumerate(specs)]
        tenants = {s.tenant for s in specs}
        if len(tenants) > 1:
            raise ValidationError("jobs: one call submits for one tenant")
        tenant = tenants.pop()
        who = dataclasses.replace(p, tenant=tenant)
        await self.scheduler.ensure_snapshots()  # prices, for the budget
        async with self.access.admitting(tenant):
            live = self.scheduler.live_specs(tenant)
            charged = specs
            try:
                taken = await self.access.admit(who, specs, live, count_refusal=False)
            except QuotaExceededError as exc:
                # a replay is answered, never counted twice: refused as a whole, the
                # call is checked again without the jobs it already made (looked up
                # only now, so the usual call pays no lookup); a refusal counts once,
                # and only if it stands
                charged = [s for s in specs if not await self._replay(tenant, s)]
                if len(charged) == len(specs):
                    await self.access.refused(who, exc, len(specs))
                    raise
                taken = await self.access.admit(who, charged, live)
            try:
                admitted = await self.scheduler.submit(specs, actor=p.actor)
            except BaseException:
                self.access.refund(tenant, taken)  # refused or not stored: tokens go back
                raise
            # the rate tokens of charged jobs that turned out to be replays go back
            ids = {id(s) for s in charged}
            replays = sum(
                1 for s, (_, created) in zip(specs, admitted, strict=True)
                if not created and id(s) in ids
            )  # fmt: skip
            self.access.refund(tenant, min(replays, taken))
        return [{**record_view(rec), "created": created} for rec, created in admitted]

    async def _replay(self, tenant: str, spec: JobSpec) -> bool:
        if not spec.idempotency_key:
            return False
        found = await asyncio.to_thread(self.store.find_by_key, tenant, spec.idempotency_key)
        return found is not None

    async def _cancel(self, p: Principal, payload: dict[str, Any]) -> dict[str, Any]:
        rec = await self._owned(p, payload.get("job_id"))
        state, changed = await self.scheduler.cancel(rec.job_id)
        if changed:
            await self.access.audit_job(p, rec, "job.cancel")
        return {"job_id": rec.job_id, "state": state.value, "cancelled": changed}

    async def _estimate(self, p: Principal, payload: dict[str, Any]) -> list[dict[str, Any]]:
        specs = await asyncio.to_thread(decode_specs, _texts([payload.get("job")]), self.limits)
        return await self.scheduler.estimate(self._as_owner(p, specs[0], "job"))

    async def _job(self, p: Principal, payload: dict[str, Any]) -> dict[str, Any]:
        rec = await self._owned(p, payload.get("job_id"))
        return {**record_view(rec), "waiting": self.scheduler.waiting(rec.job_id)}

    async def _jobs(self, p: Principal, payload: dict[str, Any]) -> list[dict[str, Any]]:
        limit = check_limit(payload.get("limit", 50))
        states = payload.get("states")
        if states is not None and (
            not isinstance(states, list) or not all(isinstance(s, str) for s in states)
        ):
            raise ValidationError(f"states={brief(states)}: expected a list of state names")
        try:
            wanted = [JobState(s.upper()) for s in states or []]
        except ValueError:
            names = ", ".join(s.value for s in JobState)
            raise ValidationError(f"states={brief(states)}: use some of {names}") from None
        tenant = payload.get("tenant")
        if not p.admin or tenant is None:
            tenant = p.tenant if not p.admin else None
        if tenant is not None and not isinstance(tenant, str):
            raise ValidationError(f"tenant={brief(tenant)}: expected text (str)")
        recs = await self.scheduler.list_jobs(wanted, tenant=tenant, limit=limit)
        return [record_view(r) for r in recs]

    async def _events(self, p: Principal, payload: dict[str, Any]) -> list[dict[str, Any]]:
        rec = await self._owned(p, payload.get("job_id"))
        return event_views(await asyncio.to_thread(self.store.events, rec.job_id))

    async def _many(self, p: Principal, ids: Any) -> list[JobRecord]:
        """The caller's jobs by id (at most 1000), each as :meth:`_owned` finds it."""
        ids = job_ids_arg(ids)
        if len(ids) > 1000:
            raise ValidationError(f"job_ids: {len(ids)} ids; at most 1000 a call")
        return [await self._owned(p, job_id) for job_id in ids]

    async def _wait(self, p: Principal, payload: dict[str, Any]) -> dict[str, str]:
        ids = [r.job_id for r in await self._many(p, payload.get("job_ids"))]
        timeout = payload.get("timeout_s", self.wait_cap_s)
        if isinstance(timeout, bool) or not isinstance(timeout, (int, float)) or not timeout >= 0:
            raise ValidationError(f"timeout_s={brief(timeout)}: expected seconds >= 0")
        # a held wait holds one of the scheduler's call slots: a tenant gets a few at
        # a time, and all tenants together leave most slots to the farm itself
        mine = self._waits.get(p.tenant, 0)
        if mine >= WAITS_PER_TENANT or sum(self._waits.values()) >= WAITS_IN_ALL:
            raise QuotaExceededError(
                f"waits: {mine} of your waits are open (at most {WAITS_PER_TENANT} at once); "
                "wait for many jobs in one call (job_ids) instead",
                limit="waits",
                retry_after_s=1.0,
            )
        self._waits[p.tenant] = mine + 1
        try:
            got = await self.scheduler.wait(ids, min(float(timeout), self.wait_cap_s))
        finally:
            self._waits[p.tenant] -= 1
            if not self._waits[p.tenant]:
                del self._waits[p.tenant]
        return {k: v.value for k, v in got.items()}

    async def _results(self, p: Principal, payload: dict[str, Any]) -> list[dict[str, str]]:
        recs = await self._many(p, payload.get("job_ids"))
        for rec in recs:
            if rec.state is not JobState.DONE:
                raise ResultNotReadyError(
                    f"job {rec.job_id} is {rec.state.value}, not DONE: no result yet "
                    "(wait for it: POST /v1/wait)"
                )
        ids = [r.job_id for r in recs]
        blobs = await self.scheduler.result_blobs(ids)
        return [
            {"job_id": j, "sha256": sha, "data": data.decode()}
            for j, (sha, data) in zip(ids, blobs, strict=True)
        ]

    async def _devices(self, p: Principal, _: dict[str, Any]) -> list[dict[str, Any]]:
        return [device_view(s) for s in await self.scheduler.devices()]

    async def _mitigation(self, p: Principal, payload: dict[str, Any]) -> dict[str, Any]:
        """The post-processing version of each method the farm serves now (a client
        applies these: ``{"versions": {"readout": "1"}}``)."""
        return {"versions": self._served() if self._served is not None else {}}

    async def _readout_call(self, p: Principal, payload: dict[str, Any]) -> dict[str, Any]:
        """A device's readout errors for mitigation; shots measured for it are billed
        to the caller's tenant as a ``mitigation`` line."""
        device = payload.get("device")
        qubits = payload.get("qubits")
        shots = payload.get("shots")
        age = payload.get("max_age_s", 3600.0)
        await self.scheduler.ensure_snapshots()
        known = set(self.scheduler.prices())
        if not isinstance(device, str) or device not in known:
            raise ValidationError(f"device={brief(device)!r}: not a device of this farm")
        if (
            not isinstance(qubits, list)
            or len(qubits) > 1024
            or not all(isinstance(q, int) and not isinstance(q, bool) and q >= 0 for q in qubits)
        ):
            raise ValidationError(f"qubits={brief(qubits)}: expected up to 1024 qubit indices")
        if isinstance(shots, bool) or not isinstance(shots, int) or not 100 <= shots <= 1_000_000:
            raise ValidationError(f"shots={brief(shots)}: expected 100 to 1,000,000")
        if isinstance(age, bool) or not isinstance(age, (int, float)) or not age >= 0:
            raise ValidationError(f"max_age_s={brief(age)}: expected seconds >= 0")
        if self._readout is None:
            raise ValidationError("readout: this farm measures no readout errors")
        # two preparations of ``shots`` each at most, held against the budget like a job
        bound = 2 * shots * self.scheduler.prices().get(device, (0.0, 0.0))[0]
        with contextlib.ExitStack() as held:
            async with self.access.admitting(p.tenant):
                live = self.scheduler.live_specs(p.tenant)
                await self.access.admit_spend(p, bound, live)
                held.enter_context(self.access.holding(p.tenant, bound))
            return await self._measure(p, device, qubits, shots, float(age))

    async def _measure(
        self, p: Principal, device: str, qubits: list[int], shots: int, age: float
    ) -> dict[str, Any]:
        assert self._readout is not None
        cal, spent = await self._readout(device, qubits, shots, age)
        if spent:
            now = self._clock()
            charge = readout_charge(
                f"readout-{uuid.uuid4().hex[:16]}",
                p.tenant,
                device,
                spent,
                self.scheduler.prices(),
                now,
            )
            await asyncio.to_thread(
                self.store.add_charges,
                [charge],
                [
                    AuditEntry(
                        p.actor,
                        "readout.measure",
                        p.tenant,
                        charge.job_id,
                        "ok",
                        {"device": device, "shots": spent, "usd": charge.usd},
                    )
                ],
                self.access.audit_key,
                now,
            )
            await self.access.billed([charge])
        return {"calibration": dataclasses.asdict(cal), "spent": spent}

    async def _usage(self, p: Principal, payload: dict[str, Any]) -> dict[str, Any]:
        tenant = payload.get("tenant") if p.admin and payload.get("tenant") else p.tenant
        return await usage(self, tenant, payload.get("month"))


async def usage(api: TenantAPI, tenant: str, month: Any) -> dict[str, Any]:
    """A tenant's month: billed, held by running jobs, its limits and alerts."""
    now = api._clock()
    month = month_of(now) if month is None else month
    try:
        start, end = month_bounds(month)
    except ValueError as exc:
        raise ValidationError(str(exc)) from None
    store = api.store
    spent, device_s, shots = await asyncio.to_thread(store.spend, tenant, start, end)
    limits = await api.access.limits(tenant)
    live = api.scheduler.live_specs(tenant)
    budget = limits.budget_usd_per_month
    return {
        "tenant": tenant,
        "month": month,
        "billed_usd": round(spent, 6),
        "device_s": round(device_s, 3),
        "shots": shots,
        "running_jobs": len(live),
        "held_usd": round(api.access.reserved_usd(live), 6),
        "budget_usd": budget,
        "budget_used": None if not budget else round(spent / budget, 4),
        "shots_today": await asyncio.to_thread(store.shots_since, tenant, day_start(now)),
        "limits": limits.model_dump(),
        "alerts": await asyncio.to_thread(store.alerts, tenant, month),
        "resets_at": next_month(start),
    }


def _texts(jobs: Any) -> Any:
    """Specs as JSON texts (an HTTP body holds them as objects); anything else is
    passed on for :func:`decode_specs` to refuse."""
    if isinstance(jobs, list):
        return [json.dumps(j) if isinstance(j, dict) else j for j in jobs]
    return jobs


def device_view(snap: Any) -> dict[str, Any]:
    """A device as a tenant sees it: everything but where its process runs."""
    data = {f.name: getattr(snap, f.name) for f in dataclasses.fields(snap)}
    data.pop("process", None)
    data["status"] = snap.status.value
    data["calibration"] = calibration_to_json(snap.calibration)
    return data
