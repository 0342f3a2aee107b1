"""A tenant-facing farm without Ray: the in-process farm with its access control and
tenant API, on an injected clock."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator, Callable, Coroutine
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TypeVar

from qrt_ray.access.limits import TenancyConfig, TenantLimits
from qrt_ray.access.tokens import Scope
from qrt_ray.actors.access import Access
from qrt_ray.actors.device import Device
from qrt_ray.actors.scheduler import Scheduler
from qrt_ray.actors.tenant_api import TenantAPI
from qrt_ray.intake import IntakeLimits
from qrt_ray.store import JobStore
from tests.local_farm import drive, make
from tests.local_farm import spec as ghz_spec

T = TypeVar("T")
KEY = b"t" * 32
NOW = 1_796_541_385.0  # 2026-12-05 ~09:16 UTC: mid-day, mid-month


@dataclass
class Clock:
    now: float = NOW

    def __call__(self) -> float:
        return self.now


@dataclass
class Farm:
    store: JobStore
    devices: list[Device]
    sched: Scheduler
    access: Access
    api: TenantAPI
    clock: Clock
    tokens: dict[str, str] = field(default_factory=dict)
    access_scopes: tuple[Scope, ...] = (Scope.SUBMIT, Scope.READ)

    async def call(self, who: str, op: str, source: str = "10.0.0.1", **payload: Any) -> Any:
        return await self.api.call(self.tokens.get(who, who), source, op, payload)

    async def submit(self, who: str, n: int = 1, shots: int = 200, **kw: Any) -> list[dict]:
        jobs = [ghz_spec(3, shots, **kw).model_dump_json() for _ in range(n)]
        return await self.call(who, "submit", jobs=jobs)

    async def run_all(self) -> None:
        await drive(self.sched, self.devices)


@contextlib.asynccontextmanager
async def farm(
    tmp_path: Path,
    limits: TenantLimits | None = None,
    tenants: dict[str, dict[str, Any]] | None = None,
    store_url: str | None = None,
    **config: Any,
) -> AsyncIterator[Farm]:
    """Started: tenants acme and zenith (submit+read tokens 'a' and 'b'), a read-only
    token 'a_read' of acme, and an operator's admin token 'admin' (tenant ops)."""
    clock = Clock()  # one clock for all: quotas count jobs by when they were stored
    store, devices, sched = make(tmp_path, store_url=store_url, clock=clock)
    tenancy = TenancyConfig(default_limits=limits or TenantLimits(), **config)
    access = Access(store, KEY, tenancy, sched.metrics, sched.prices, clock=clock)
    sched.audit_key = access.audit_key
    sched.on_billed = access.billed
    by_name = {d.name: d for d in devices}

    async def readout(device: str, qubits: list[int], shots: int, age: float) -> Any:
        return await asyncio.to_thread(by_name[device].readout_calibration, qubits, shots, age)

    api = TenantAPI(sched, access, IntakeLimits(), wait_cap_s=5.0, readout=readout, clock=clock)
    await sched.start()
    f = Farm(store, devices, sched, access, api, clock)
    own = tenants or {}
    for tenant in ("acme", "zenith", "ops"):
        await access.set_tenant(tenant, own.get(tenant, {}), None)
    rw = (Scope.SUBMIT, Scope.READ)
    for name, tenant, scopes in (
        ("a", "acme", rw),
        ("b", "zenith", rw),
        ("a_read", "acme", (Scope.READ,)),
        ("admin", "ops", (Scope.ADMIN,)),
    ):
        made = await access.create_token(tenant, name, scopes)
        f.tokens[name] = made["token"]
        f.tokens[name + "_id"] = made["token_id"]
    try:
        yield f
    finally:
        await sched.stop()
        store.close()


def run(fn: Callable[[], Coroutine[Any, Any, T]]) -> T:
    async def main() -> T:
        return await fn()

    return asyncio.run(main())
