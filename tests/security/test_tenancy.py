"""Tenants through the tenant API: isolation, tokens, limits, budgets, the ledger and
the audit chain, on the in-process farm (no Ray; the gateway's HTTP is tested in
tests/integration/test_gateway.py)."""

from __future__ import annotations

import asyncio
import dataclasses
import json
from pathlib import Path

import pytest

from qrt_ray.access.limits import TenantLimits, day_start
from qrt_ray.errors import (
    AuthenticationError,
    BudgetExceededError,
    DeviceUnavailableError,
    JobNotFoundError,
    PermissionDeniedError,
    QuotaExceededError,
    ResultNotReadyError,
    ValidationError,
)
from qrt_ray.lifecycle import JobState
from qrt_ray.store.base import StateUpdate
from tests.local_farm import spec as ghz_spec
from tests.metrics_text import sample
from tests.security.tenancy import farm, run

# every call that names a job, with the payload that names it
JOB_CALLS = {
    "job": lambda j: {"job_id": j},
    "events": lambda j: {"job_id": j},
    "cancel": lambda j: {"job_id": j},
    "results": lambda j: {"job_ids": [j]},
    "wait": lambda j: {"job_ids": [j], "timeout_s": 0},
}


def _metric(f, name: str, **labels: str) -> float:
    return sample(f.sched.metrics.exposition().decode(), name, **labels)


def test_a_tenant_cannot_see_touch_or_infer_another_tenants_jobs(tmp_path: Path) -> None:
    async def go() -> None:
        async with farm(tmp_path) as f:
            (mine,) = await f.submit("a", tags=("secret-project",))
            await f.run_all()
            job = mine["job_id"]
            assert mine["tenant"] == "acme"
            for op, payload in JOB_CALLS.items():
                with pytest.raises(JobNotFoundError) as foreign:
                    await f.call("b", op, **payload(job))
                with pytest.raises(JobNotFoundError) as unknown:
                    await f.call("b", op, **payload("job-0000000000000000"))
                # the same answer as for an id that never existed
                assert str(foreign.value).replace(job, "X") == str(unknown.value).replace(
                    "job-0000000000000000", "X"
                ), op
            listed = await f.call("b", "jobs")
            assert listed == []
            # asking for another tenant's jobs by name gives one's own
            assert await f.call("b", "jobs", tenant="acme") == []
            usage_b = await f.call("b", "usage")
            assert usage_b["tenant"] == "zenith" and usage_b["billed_usd"] == 0
            assert "secret-project" not in json.dumps(await f.call("b", "devices"))
            # the owner sees it whole; an admin token sees every tenant
            assert (await f.call("a", "job", job_id=job))["tags"] == ["secret-project"]
            assert [j["job_id"] for j in await f.call("admin", "jobs")] == [job]
            assert (await f.call("admin", "results", job_ids=[job]))[0]["job_id"] == job
            # B's cancel left A's job as it was
            assert (await f.call("a", "job", job_id=job))["state"] == "DONE"

    run(go)


def test_a_tenant_submits_only_as_itself(tmp_path: Path) -> None:
    async def go() -> None:
        async with farm(tmp_path) as f:
            with pytest.raises(ValidationError, match="submits as tenant 'acme'"):
                await f.submit("a", tenant="zenith")
            (job,) = await f.submit("a")  # the default label becomes the token's tenant
            assert job["tenant"] == "acme"
            # the same idempotency key in two tenants makes two jobs
            (ka,) = await f.submit("a", idempotency_key="k1")
            (kb,) = await f.submit("b", idempotency_key="k1")
            assert ka["job_id"] != kb["job_id"] and kb["tenant"] == "zenith"

    run(go)


def test_refused_tokens_say_why_and_are_counted_and_audited(tmp_path: Path) -> None:
    async def go() -> None:
        async with farm(tmp_path) as f:
            forged = "qrt_" + f.tokens["a_id"] + "_" + "A" * 43
            cases = {
                "missing": "",
                "malformed": "Bearer nonsense",
                "unknown": forged,
            }
            for reason, token in cases.items():
                with pytest.raises(AuthenticationError) as err:
                    await f.api.call(token, "10.9.9.9", "jobs", {})
                assert "qrt_" not in str(err.value) or reason == "malformed"
                assert _metric(f, "qrt_auth_refused_total", reason=reason) == 1
            with pytest.raises(PermissionDeniedError, match="needs the 'submit' scope"):
                await f.submit("a_read")
            assert _metric(f, "qrt_auth_refused_total", reason="scope") == 1
            records = f.store.audit_records()
            refused = [r for r in records if r.entry.action == "auth.refused"]
            assert [r.entry.detail["reason"] for r in refused] == [
                "missing", "malformed", "unknown", "scope",
            ]  # fmt: skip
            assert refused[2].entry.subject == f.tokens["a_id"]  # the id, never the secret
            text = json.dumps([r.view() for r in records])
            for token in f.tokens.values():  # no secret anywhere in the chain
                assert not token.startswith("qrt_") or token[17:] not in text
            assert (await f.access.verify_audit())["ok"]

    run(go)


def test_expiry_revocation_and_rotation_with_overlap(tmp_path: Path) -> None:
    async def go() -> None:
        async with farm(tmp_path) as f:
            short = await f.access.create_token("acme", "ci", f.access_scopes, expires_in_s=60)
            await f.api.call(short["token"], "h", "jobs", {})
            f.clock.now += 61
            with pytest.raises(AuthenticationError, match="expired"):
                await f.api.call(short["token"], "h", "jobs", {})

            await f.access.revoke_token(f.tokens["b_id"])
            with pytest.raises(AuthenticationError, match="revoked"):
                await f.call("b", "jobs")  # at once, though tokens are cached

            new = await f.access.rotate_token(f.tokens["a_id"], overlap_s=300)
            assert new["tenant"] == "acme" and new["scopes"] == ["submit", "read"]
            await f.call("a", "jobs")  # the old one still works inside the overlap
            await f.api.call(new["token"], "h", "jobs", {})
            f.clock.now += 301
            with pytest.raises(AuthenticationError, match="expired"):
                await f.call("a", "jobs")
            await f.api.call(new["token"], "h", "jobs", {})
            with pytest.raises(ValidationError, match="only an active token rotates"):
                await f.access.rotate_token(f.tokens["a_id"], overlap_s=0)
            actions = [r.entry.action for r in f.store.audit_records()]
            assert {"token.revoke", "token.rotate", "token.create"} <= set(actions)

    run(go)


def test_brute_force_is_throttled_and_never_floods_the_chain(tmp_path: Path) -> None:
    async def go() -> None:
        async with farm(tmp_path, auth_failures_per_min=5) as f:
            f.clock.now = f.clock.now - f.clock.now % 60 + 1  # a minute's start
            for i in range(5):
                with pytest.raises(AuthenticationError):
                    await f.api.call(f"qrt_{i:012x}_" + "B" * 43, "6.6.6.6", "jobs", {})
            for i in range(40):  # past the limit: told to back off, with when
                with pytest.raises(QuotaExceededError) as locked:
                    await f.api.call(f"qrt_{i:012x}_" + "C" * 43, "6.6.6.6", "jobs", {})
            assert locked.value.limit == "auth_failures" and 0 < locked.value.retry_after_s <= 60
            # a good token from that source still passes (one NAT, many tenants), and
            # other sources are not slowed
            await f.call("a", "jobs", source="6.6.6.6")
            await f.call("b", "jobs", source="10.0.0.1")
            assert _metric(f, "qrt_auth_refused_total", reason="unknown") == 5
            assert _metric(f, "qrt_auth_refused_total", reason="locked_out") == 40
            f.clock.now += 60
            with pytest.raises(AuthenticationError):  # a new minute: 401 again
                await f.api.call("qrt_" + "0" * 12 + "_" + "D" * 43, "6.6.6.6", "jobs", {})
            await f.call("a", "jobs")  # seals the last minute's count
            refused = [r.entry for r in f.store.audit_records() if r.entry.action == "auth.refused"]
            # 45 refusals in the first minute: its first sealed at once, the rest counted
            first_minute = [e for e in refused if e.detail.get("source") == "6.6.6.6"]
            assert len(first_minute) == 3  # first, the count of 44, the next minute's first
            assert sum(e.detail.get("more_refusals", 0) for e in first_minute) == 44

    run(go)


def test_a_disabled_tenant_is_refused(tmp_path: Path) -> None:
    async def go() -> None:
        async with farm(tmp_path) as f:
            await f.access.set_tenant("acme", {}, True)
            with pytest.raises(AuthenticationError, match="disabled"):
                await f.call("a", "jobs")
            await f.access.set_tenant("acme", {}, False)
            await f.call("a", "jobs")

    run(go)


def test_limits_hold_exactly_at_the_edge(tmp_path: Path) -> None:
    limits = TenantLimits(shots_per_day=1000, max_concurrent_jobs=3)

    async def go() -> None:
        async with farm(tmp_path, limits) as f:
            await f.submit("a", n=2, shots=250)  # 500 of 1000
            await f.submit("a", n=1, shots=500)  # exactly 1000: allowed
            with pytest.raises(QuotaExceededError) as err:
                await f.submit("b", n=4, shots=10)  # zenith: 4 > 3 concurrent
            assert err.value.limit == "concurrent_jobs"
            with pytest.raises(QuotaExceededError) as err:
                await f.submit("a", n=1, shots=1)
            assert err.value.limit == "concurrent_jobs"  # checked first: 3 running
            await f.run_all()
            with pytest.raises(QuotaExceededError) as err:
                await f.submit("a", n=1, shots=1)  # 1001 shots today
            assert err.value.limit == "shots_per_day"
            assert err.value.retry_after_s == pytest.approx(
                day_start(f.clock.now) + 86400 - f.clock.now, abs=1
            )
            assert "used 1000 of 1000 today" in str(err.value)
            # a replay of a job admitted earlier is answered, never counted again
            f.clock.now += 86400
            (first,) = await f.submit("a", shots=1000, idempotency_key="once")
            (again,) = await f.submit("a", shots=1000, idempotency_key="once")
            assert again["job_id"] == first["job_id"] and not again["created"]
            assert _metric(f, "qrt_quota_refused_total", tenant="acme", limit="shots_per_day") == 1
            assert (
                _metric(f, "qrt_quota_refused_total", tenant="zenith", limit="concurrent_jobs") == 1
            )

    run(go)


def test_the_submit_rate_throttles_with_a_retry_after(tmp_path: Path) -> None:
    limits = TenantLimits(submit_rate_per_s=2.0, submit_burst=4)

    async def go() -> None:
        async with farm(tmp_path, limits) as f:
            await f.submit("a", n=4)
            with pytest.raises(QuotaExceededError) as err:
                await f.submit("a")
            assert err.value.limit == "submit_rate"
            assert err.value.retry_after_s == pytest.approx(0.5)
            await f.submit("b", n=4)  # another tenant has its own bucket
            f.clock.now += 0.5
            await f.submit("a")
            with pytest.raises(QuotaExceededError, match="more than your burst"):
                await f.submit("a", n=5)
            # retries of a submit with its idempotency key never use up the rate
            f.clock.now += 10  # a full bucket: 4
            (first,) = await f.submit("a", idempotency_key="retry-me")
            for _ in range(5):  # not refused: each replay's token is given back
                (again,) = await f.submit("a", idempotency_key="retry-me")
                assert again["job_id"] == first["job_id"]
            await f.submit("a", n=3)  # the 3 left after the one real job
            (again,) = await f.submit("a", idempotency_key="retry-me")  # an empty bucket
            assert again["job_id"] == first["job_id"] and not again["created"]
            with pytest.raises(QuotaExceededError):
                await f.submit("a")
            # a tenant hammering its limit does not flood the audit chain: the first
            # refusal of a minute is sealed at once, the rest as one count
            for _ in range(50):
                with pytest.raises(QuotaExceededError):
                    await f.submit("a")
            f.clock.now += 60
            await f.call("a", "jobs")
            records = [r.entry for r in f.store.audit_records()]
            refused = [e for e in records if e.action == "quota.refused" and e.tenant == "acme"]
            summary = [e.detail["more_refusals"] for e in refused if "more_refusals" in e.detail]
            assert len(refused) == 2 and len(summary) == 1  # one minute: first + count
            counted = _metric(f, "qrt_quota_refused_total", tenant="acme", limit="submit_rate")
            assert counted == 1 + summary[0] and counted > 50  # every refusal is in it

    run(go)


def test_racing_submits_never_overspend_the_budget(tmp_path: Path, store_url: str) -> None:
    # the dearest device (nairobi) bounds a job: 0.02 + 200 shots x 0.00002 = 0.024
    async def go() -> None:
        async with farm(
            tmp_path, tenants={"acme": {"budget_usd_per_month": 0.1}}, store_url=store_url
        ) as f:
            calls = [f.submit("a") for _ in range(12)]
            got = await asyncio.gather(*calls, return_exceptions=True)
            admitted = [g for g in got if isinstance(g, list)]
            refused = [g for g in got if isinstance(g, BudgetExceededError)]
            assert len(admitted) == 4 and len(refused) == 8  # 4 x 0.024 <= 0.1 < 5 x 0.024
            assert refused[0].limit == "budget" and refused[0].retry_after_s > 0
            assert "pin device=" in str(refused[0])
            await f.run_all()
            usage = await f.call("a", "usage")
            assert 0 < usage["billed_usd"] <= 0.1 and usage["held_usd"] == 0
            assert usage["billed_usd"] == pytest.approx(sum(c.usd for c in f.store.charges("acme")))
            # the jobs are billed what they cost, which their holds bounded
            with pytest.raises(BudgetExceededError):
                await f.submit("a")  # 0.096 billed at most + 0.024 > 0.1

    run(go)


def test_budget_alerts_fire_once_at_50_80_and_100_percent(tmp_path: Path) -> None:
    async def go() -> None:
        # manila: 0.01 + 500 x 0.00001 = 0.015 a job
        async with farm(tmp_path, tenants={"acme": {"budget_usd_per_month": 0.06}}) as f:
            for _ in range(4):
                await f.submit("a", shots=500, device="manila")
                await f.run_all()
            alerts = (await f.call("a", "usage"))["alerts"]
            assert [a["threshold"] for a in alerts] == [0.5, 0.8, 1.0]
            with pytest.raises(BudgetExceededError):
                await f.submit("a", shots=500, device="manila")
            assert len((await f.call("a", "usage"))["alerts"]) == 3  # once each
            assert _metric(f, "qrt_budget_alerts_total", tenant="acme", threshold="0.8") == 1
            actions = [r.entry.action for r in f.store.audit_records()]
            assert actions.count("budget.alert") == 3 and "budget.refused" in actions

    run(go)


def test_the_ledger_reconciles_exactly_with_the_job_store(tmp_path: Path, store_url: str) -> None:
    async def go() -> None:
        async with farm(tmp_path, store_url=store_url) as f:
            done = await f.submit("a", n=3, shots=300)
            done += await f.submit("b", n=2, shots=700, device="nairobi")
            (never,) = await f.submit("a", shots=100)
            await f.call("a", "cancel", job_id=never["job_id"])
            await f.run_all()
            prices = f.sched.prices()
            charges = f.store.charges()
            by_job: dict[str, list] = {}
            for c in charges:
                by_job.setdefault(c.job_id, []).append(c)
            assert set(by_job) == {j["job_id"] for j in done}  # the cancelled job ran nothing
            for j in done:
                rec = f.store.get(j["job_id"])
                assert rec.state is JobState.DONE
                ledger = f.store.shot_ledger(rec.job_id)
                lines = by_job[rec.job_id]
                shots = sum(c.shots for c in lines if c.kind == "shots")
                assert shots == sum(r.shots for r in ledger) * len(rec.spec.circuits)
                assert shots == rec.spec.shots * len(rec.spec.circuits)
                fee = [c for c in lines if c.kind == "fee"]
                assert len(fee) == 1 and fee[0].device == rec.device
                per_shot, per_job = prices[rec.device]
                assert sum(c.usd for c in lines) == pytest.approx(per_job + per_shot * shots)
                assert all(c.tenant == rec.tenant for c in lines)
            # a final move delivered twice bills once: the ledger lands with the move,
            # and the second is refused by the state compare-and-set
            first = by_job[done[0]["job_id"]]
            again = StateUpdate(
                done[0]["job_id"], JobState.POSTPROCESSING, JobState.DONE, 0.0,
                charges=tuple(dataclasses.replace(c, line=c.line + 10) for c in first),
            )  # fmt: skip
            assert f.store.apply([again]) == [False]
            assert len(f.store.charges()) == len(charges)
            billed = sum(c.usd for c in charges)
            assert sum(f.store.spend(t, 0, 2e10)[0] for t in ("acme", "zenith")) == pytest.approx(
                billed
            )

    run(go)


def test_the_chain_records_ownership_and_catches_tampering(tmp_path: Path, store_url: str) -> None:
    async def go() -> None:
        async with farm(tmp_path, store_url=store_url) as f:
            (job,) = await f.submit("a")
            created = [r for r in f.store.audit_records() if r.entry.action == "job.create"]
            assert [(r.entry.subject, r.entry.tenant) for r in created] == [(job["job_id"], "acme")]
            assert created[0].entry.actor == f"token:{f.tokens['a_id']}"
            head = f.store.audit_head()
            assert (await f.access.verify_audit())["ok"]
            conn = f.store._connect()
            try:
                conn.execute("UPDATE audit_log SET tenant='zenith' WHERE seq=?", (created[0].seq,))
                got = await f.access.verify_audit()
                assert not got["ok"] and "edited" in got["problems"][0]
                conn.execute("UPDATE audit_log SET tenant='acme' WHERE seq=?", (created[0].seq,))
                assert (await f.access.verify_audit())["ok"]
                conn.execute("DELETE FROM audit_log WHERE seq=?", (head[0],))
                assert (await f.access.verify_audit())["ok"]  # a cut tail alone looks whole
                got = await f.access.verify_audit(head)
                assert not got["ok"] and "cut-off tail" in got["problems"][0]
                conn.execute("DELETE FROM audit_log WHERE seq=2")
                assert not (await f.access.verify_audit())["ok"]
            finally:
                conn.close()

    run(go)


def test_a_call_mixing_replays_and_new_jobs_pays_for_the_new_ones(tmp_path: Path) -> None:
    limits = TenantLimits(submit_rate_per_s=0.001, submit_burst=3)

    async def go() -> None:
        async with farm(tmp_path, limits) as f:
            (old,) = await f.submit("a", idempotency_key="old")  # 2 tokens left
            jobs = [ghz_spec(3, 200, idempotency_key="old").model_dump_json()] * 3
            jobs.append(ghz_spec(3, 200, idempotency_key="new").model_dump_json())
            got = await f.call("a", "submit", jobs=jobs)  # 4 > 2 left: checked again
            assert [g["created"] for g in got] == [False, False, False, True]
            assert got[0]["job_id"] == old["job_id"]
            await f.submit("a", idempotency_key="third")  # the last token
            with pytest.raises(QuotaExceededError):  # the new job was paid for
                await f.submit("a", idempotency_key="fourth")

    run(go)


def test_readouts_are_held_against_the_budget_and_billed(tmp_path: Path) -> None:
    # manila: 0.00001 a shot; two preparations of 4000 shots: at most 0.08
    async def go() -> None:
        async with farm(tmp_path, tenants={"acme": {"budget_usd_per_month": 0.1}}) as f:
            got = await f.call("a", "readout", device="manila", qubits=[0, 1], shots=4000,
                               max_age_s=0)  # fmt: skip
            assert got["spent"] == 8000 and list(got["calibration"]["qubits"]) == [0, 1]
            lines = [c for c in f.store.charges("acme") if c.kind == "mitigation"]
            assert len(lines) == 1 and lines[0].usd == pytest.approx(got["spent"] * 0.00001)
            with pytest.raises(BudgetExceededError):  # 0.08 billed + 0.08 held > 0.1
                await f.call("a", "readout", device="manila", qubits=[0], shots=4000,
                             max_age_s=0)  # fmt: skip
            with pytest.raises(ValidationError, match="not a device"):
                await f.call("a", "readout", device="nowhere", qubits=[0], shots=4000)
            with pytest.raises(PermissionDeniedError):
                await f.call("a_read", "readout", device="manila", qubits=[0], shots=4000)

    run(go)


def test_a_tenant_holds_only_a_few_waits_at_once(tmp_path: Path) -> None:
    async def go() -> None:
        async with farm(tmp_path) as f:
            (job,) = await f.submit("a")  # never driven: it stays QUEUED
            waits = [f.call("a", "wait", job_ids=[job["job_id"]], timeout_s=0.5) for _ in range(9)]
            got = await asyncio.gather(*waits, return_exceptions=True)
            refused = [g for g in got if isinstance(g, QuotaExceededError)]
            assert len(refused) == 1 and refused[0].limit == "waits"
            answered = [g[job["job_id"]] for g in got if isinstance(g, dict)]
            assert len(answered) == 8 and "DONE" not in answered
            await f.call("b", "jobs")  # others are not held up
            with pytest.raises(ResultNotReadyError, match="not DONE"):
                await f.call("a", "results", job_ids=[job["job_id"]])

    run(go)


def test_a_budget_is_never_checked_against_unknown_prices(tmp_path: Path) -> None:
    async def go() -> None:
        async with farm(tmp_path, tenants={"acme": {"budget_usd_per_month": 1.0}}) as f:
            f.access._prices = dict  # no prices: as before any device has answered
            with pytest.raises(DeviceUnavailableError, match="cannot be priced"):
                await f.submit("a")
            await f.submit("b")  # a tenant with no budget is not held up

    run(go)


def test_a_refusal_while_the_store_refuses_writes_is_answered_and_sealed_later(
    tmp_path: Path,
) -> None:
    """A bad token is refused as bad (401) even when the audit chain cannot be written;
    its record waits and is sealed once the store writes again."""
    from qrt_ray.store.faults import StoreFaults

    async def go() -> None:
        async with farm(tmp_path) as f:
            faults = StoreFaults()
            faults.wrap(f.store)
            forged = "qrt_" + f.tokens["a_id"] + "_" + "B" * 43
            faults.fail(1000)  # every write fails: a full disk
            for source in ("10.1.1.1", "10.1.1.2"):
                with pytest.raises(AuthenticationError):
                    await f.api.call(forged, source, "jobs", {})
            assert f.access.refusals_waiting() is False  # no new try within the second
            faults.left = 0  # the disk is freed
            f.clock.now += 2
            assert f.access.refusals_waiting() is True
            await f.call("b", "whoami")  # the next call seals what waited
            sealed = [r for r in f.store.audit_records() if r.entry.action == "auth.refused"]
            assert sorted(r.entry.detail["source"] for r in sealed) == ["10.1.1.1", "10.1.1.2"]
            assert f.access.refusals_waiting() is False
            assert (await f.access.verify_audit())["ok"]

    run(go)


def test_an_auth_outage_says_retry_never_refuses_and_heals(tmp_path: Path) -> None:
    """Token and tenant records that cannot be read are an outage of authentication,
    not a verdict on the caller: 503 and retry, no lock-out; a token checked within the
    cache's 5 s still passes, none older (fail closed)."""
    from qrt_ray.errors import StoreUnavailableError
    from qrt_ray.gateway import error_response
    from qrt_ray.store.faults import StoreFaults

    async def go() -> None:
        async with farm(tmp_path) as f:
            faults = StoreFaults()
            faults.wrap(f.store)
            await f.call("a", "whoami")  # a's token is checked now
            faults.cut_auth(3600)
            assert (await f.call("a", "whoami"))["tenant"] == "acme"  # checked < 5 s ago
            f.clock.now += 6  # past the cache: nothing checked recently passes
            for who in ("a", "b"):
                for _ in range(15):  # 30 from one source: past the 20 refusals a minute
                    with pytest.raises(StoreUnavailableError, match="retry in a few") as err:
                        await f.call(who, "submit", jobs=[ghz_spec(3, 100).model_dump_json()])
            answer = error_response(err.value)
            assert answer.status_code == 503 and answer.headers["Retry-After"] == "1"
            assert _metric(f, "qrt_auth_requests_total", outcome="unavailable") == 30
            assert _metric(f, "qrt_auth_refused_total", reason="locked_out") == 0
            faults.auth_cut_until = 0.0  # healed, but for a second after a failed read
            with pytest.raises(StoreUnavailableError):  # the records are not asked for
                await f.call("b", "whoami")
            f.clock.now += 2
            assert await f.call("admin", "jobs") == []  # nothing was stored meanwhile
            (job,) = await f.submit("b")  # the same source, not locked out
            assert job["tenant"] == "zenith"
            # a bad token is still refused as bad once the records can be read
            with pytest.raises(AuthenticationError):
                await f.call("qrt_0000000000000000_" + "x" * 43, "whoami")

    run(go)
