"""The operator's calls: tenants, tokens, usage, monthly bills, the audit chain, the
service level objectives and post-processing rollouts.

Operators reach these through Ray (``qrt tenants``, ``qrt tokens``, ``qrt bill``,
``qrt audit``): holding the Ray token is the operator's credential. Every change is
sealed into the audit chain as the ``operator``'s.
"""

from __future__ import annotations

import asyncio
import math
from collections.abc import Awaitable, Callable
from typing import Any

from qrt_ray.access.limits import month_bounds, month_of
from qrt_ray.access.tokens import parse_scopes
from qrt_ray.actors.rollouts import Rollouts
from qrt_ray.actors.tenant_api import TenantAPI, usage
from qrt_ray.errors import ValidationError, brief
from qrt_ray.slo import SloConfig, SloReport, evaluate_slos, load_slo_config
from qrt_ray.store.integrity import check_integrity
from qrt_ray.store.retention import collect_by_policy


class Admin:
    """Operator operations by name: ``call(operation, args)``."""

    def __init__(
        self, api: TenantAPI, rollouts: Rollouts | None = None, store_label: str = ""
    ) -> None:
        self.api = api
        self.access = api.access
        self.rollouts = rollouts
        self.store_label = store_label
        self._ops: dict[str, Callable[..., Awaitable[Any]]] = {
            "tenant_set": self._tenant_set,
            "tenants": self._tenants,
            "token_create": self._token_create,
            "tokens": self._tokens,
            "token_revoke": self._token_revoke,
            "token_rotate": self._token_rotate,
            "usage": self._usage,
            "bill": self._bill,
            "audit_verify": self._audit_verify,
            "audit_tail": self._audit_tail,
            "slo": self._slo,
            "rollouts": self._rollouts,
            "rollout_start": self._rollout_start,
            "rollout_rollback": self._rollout_rollback,
            "gc": self._gc,
            "integrity": self._integrity,
        }

    async def call(self, operation: str, args: Any) -> Any:
        """Run one operation.

        Raises:
            ValidationError: unknown operation or bad arguments.
        """
        fn = self._ops.get(operation) if isinstance(operation, str) else None
        if fn is None:
            raise ValidationError(
                f"operation={brief(operation, 40)!r}: use one of {', '.join(sorted(self._ops))}"
            )
        if not isinstance(args, dict):
            raise ValidationError(f"args: expected an object, got {type(args).__name__}")
        try:
            return await fn(**args)
        except TypeError as exc:
            raise ValidationError(f"{operation}: {brief(str(exc), 200)}") from None

    async def _tenant_set(
        self, name: str, limits: dict[str, Any] | None = None, disabled: bool | None = None
    ) -> dict[str, Any]:
        return await self.access.set_tenant(name, dict(limits or {}), disabled)

    async def _tenants(self) -> list[dict[str, Any]]:
        return await self.access.tenants()

    async def _token_create(
        self,
        tenant: str,
        user: str,
        scopes: Any = "submit,read",
        name: str = "",
        expires_in_s: float | None = None,
    ) -> dict[str, Any]:
        try:
            picked = parse_scopes(scopes)
        except ValueError as exc:
            raise ValidationError(str(exc)) from None
        return await self.access.create_token(
            tenant, user, picked, name=name, expires_in_s=expires_in_s
        )

    async def _tokens(self, tenant: str | None = None) -> list[dict[str, Any]]:
        return await self.access.tokens(tenant)

    async def _token_revoke(self, token_id: str) -> dict[str, Any]:
        return await self.access.revoke_token(token_id)

    async def _token_rotate(self, token_id: str, overlap_s: float = 86400.0) -> dict[str, Any]:
        return await self.access.rotate_token(token_id, overlap_s)

    async def _slo(self, config: str | None = None) -> SloReport:
        """Each SLO's indicator, budget left and burn rates, from the store
        (``config``: slos.yaml as JSON; None: the packaged one)."""
        try:
            cfg = SloConfig.model_validate_json(config) if config else load_slo_config()
        except ValueError as exc:
            raise ValidationError(f"slo config: {brief(str(exc), 300)}") from None
        sched = self.api.scheduler
        devices = sorted({s.name for s in sched.view.snapshots} | set(sched.prices()))
        return await asyncio.to_thread(
            evaluate_slos, cfg, self.api.store, now=self.api._clock(), devices=devices
        )

    async def _gc(
        self,
        keep_fetched_s: float | None = None,
        keep_unfetched_s: float | None = None,
        dry_run: bool = False,
    ) -> dict[str, Any]:
        """Remove finished jobs past their retention window from the farm's store
        (``qrt gc``); None windows: the farm's own ``retention`` policy."""
        for name, value in (
            ("keep_fetched_s", keep_fetched_s),
            ("keep_unfetched_s", keep_unfetched_s),
        ):
            if value is not None and not _seconds(value):
                raise ValidationError(f"{name}={brief(value, 40)}: expected seconds above 0")
        if not isinstance(dry_run, bool):
            raise ValidationError(f"dry_run: expected true or false, got {brief(dry_run, 20)}")
        data = await asyncio.to_thread(
            collect_by_policy,
            self.api.store,
            self.api.scheduler.retention,
            keep_fetched_s=keep_fetched_s,
            keep_unfetched_s=keep_unfetched_s,
            dry_run=dry_run,
        )
        return {**data, "store": self.store_label}

    async def _integrity(self, deep: bool = False) -> dict[str, Any]:
        """Check the farm's store's invariants (``qrt integrity``)."""
        if not isinstance(deep, bool):
            raise ValidationError(f"deep: expected true or false, got {brief(deep, 20)}")
        report = await asyncio.to_thread(check_integrity, self.api.store, deep=deep)
        return {"store": self.store_label, **report.as_dict(), "text": report.render()}

    def _book(self) -> Rollouts:
        if self.rollouts is None:
            raise ValidationError("rollouts: this farm keeps no post-processing versions")
        return self.rollouts

    async def _rollouts(self) -> list[dict[str, Any]]:
        """Each post-processing method: served version, candidate, phase, why."""
        return self._book().view()

    async def _rollout_start(self, method: str, version: str) -> dict[str, Any]:
        """Run ``version`` of ``method`` on canaries beside the served one."""
        return await self._book().start(method, version)

    async def _rollout_rollback(self, method: str, reason: str = "") -> dict[str, Any]:
        """Stop a candidate in shadow, or undo the last promotion."""
        if not isinstance(reason, str):
            raise ValidationError(f"reason: expected text, got {type(reason).__name__}")
        return await self._book().rollback(method, reason)

    async def _usage(self, tenant: str, month: str | None = None) -> dict[str, Any]:
        return await usage(self.api, tenant, month)

    async def _bill(self, month: str | None = None) -> dict[str, Any]:
        """Per tenant and device: jobs, shots, device seconds and USD of ``month``,
        with every ledger line (for ``--csv``)."""
        month = month or month_of(self.api._clock())
        try:
            start, end = month_bounds(month)
        except ValueError as exc:
            raise ValidationError(str(exc)) from None
        lines = await asyncio.to_thread(self.api.store.charges, None, start, end)
        rows: dict[tuple[str, str], dict[str, Any]] = {}
        for c in lines:
            row = rows.setdefault(
                (c.tenant, c.device),
                {
                    "tenant": c.tenant,
                    "device": c.device,
                    "jobs": set(),
                    "shots": 0,
                    "device_s": 0.0,
                    "usd": 0.0,
                },
            )
            if c.kind != "mitigation":
                row["jobs"].add(c.job_id)
            row["shots"] += c.shots
            row["device_s"] += c.device_s
            row["usd"] += c.usd
        summary = [
            {
                **r,
                "jobs": len(r["jobs"]),
                "usd": round(r["usd"], 6),
                "device_s": round(r["device_s"], 3),
            }
            for _, r in sorted(rows.items())
        ]
        totals: dict[str, float] = {}
        for c in lines:
            totals[c.tenant] = totals.get(c.tenant, 0.0) + c.usd
        return {
            "month": month,
            "rows": summary,
            "totals": {t: round(v, 6) for t, v in sorted(totals.items())},
            "lines": [
                {
                    "job_id": c.job_id,
                    "line": c.line,
                    "tenant": c.tenant,
                    "device": c.device,
                    "kind": c.kind,
                    "shots": c.shots,
                    "device_s": c.device_s,
                    "usd": c.usd,
                    "at": c.at,
                }
                for c in lines
            ],
        }

    async def _audit_verify(self, expect_head: list[Any] | None = None) -> dict[str, Any]:
        head = None
        if expect_head is not None:
            if (
                not isinstance(expect_head, (list, tuple))
                or len(expect_head) != 2
                or not isinstance(expect_head[0], int)
                or not isinstance(expect_head[1], str)
            ):
                raise ValidationError(
                    f"expect_head={brief(expect_head)}: expected SEQ:SEAL as `qrt audit head` "
                    "printed it"
                )
            head = (expect_head[0], expect_head[1])
        return await self.access.verify_audit(head)

    async def _audit_tail(self, limit: int = 50, after: int | None = None) -> list[dict[str, Any]]:
        store = self.api.store
        if after is None:
            top = await asyncio.to_thread(store.audit_head)
            after = max(0, (top[0] if top else 0) - int(limit))
        records = await asyncio.to_thread(store.audit_records, int(after), int(limit))
        return [r.view() for r in records]


def _seconds(value: Any) -> bool:
    """A finite number of seconds above 0 (not a bool)."""
    return (
        isinstance(value, int | float)
        and not isinstance(value, bool)
        and math.isfinite(value)
        and value > 0
    )
