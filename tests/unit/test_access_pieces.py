"""The pure pieces of the trust boundary: tokens, the audit chain, the submit-rate
bucket, the calendar and the billing rule."""

from __future__ import annotations

import dataclasses
import math
import time

import pytest

from qrt_ray.access import audit
from qrt_ray.access.audit import AuditEntry
from qrt_ray.access.keys import derive, load_or_create
from qrt_ray.access.limits import (
    TenantLimits,
    TokenBucket,
    crossed,
    day_start,
    month_bounds,
    month_of,
    next_month,
)
from qrt_ray.access.tokens import (
    Scope,
    TokenRecord,
    check_name,
    new_token,
    parse_scopes,
    secret_hmac,
    secret_matches,
    split_token,
)
from qrt_ray.errors import ConfigError, ValidationError
from qrt_ray.policies.billing import job_charges, readout_charge, upper_bound_usd
from qrt_ray.results import RawRun

KEY = b"a" * 32


def record(hashed: str, **kw: object) -> TokenRecord:
    base = {
        "token_id": "0" * 12,
        "tenant": "acme",
        "user": "alice",
        "name": "",
        "scopes": (Scope.SUBMIT, Scope.READ),
        "secret_hmac": hashed,
        "created_at": 0.0,
    }
    return TokenRecord(**{**base, **kw})  # type: ignore[arg-type]


# -- tokens ------------------------------------------------------------------------------


def test_a_token_is_random_and_stored_only_as_its_hmac() -> None:
    token, token_id, hashed = new_token(KEY)
    other, _, _ = new_token(KEY)
    assert token != other and token.startswith(f"qrt_{token_id}_")
    parts = split_token(token)
    assert parts is not None and parts[0] == token_id
    secret = parts[1]
    assert secret not in hashed and hashed == secret_hmac(KEY, secret)
    assert secret_matches(KEY, secret, record(hashed))
    assert not secret_matches(
        KEY, secret[:-1] + ("A" if secret[-1] != "A" else "B"), record(hashed)
    )
    assert not secret_matches(b"b" * 32, secret, record(hashed))  # another farm's key
    assert not secret_matches(KEY, secret, None)  # unknown id: never a match


@pytest.mark.parametrize(
    "bad",
    [
        "",
        "qrt_",
        "Bearer x",
        "qrt_zzzzzzzzzzzz_" + "a" * 43,
        "qrt_" + "0" * 12 + "_" + "a" * 42,
        "x" * 10_000,
        None,
        12,
        b"qrt_",
    ],
)
def test_anything_but_a_token_is_refused_without_work(bad: object) -> None:
    assert split_token(bad) is None


def test_expiry_revocation_and_scopes() -> None:
    rec = record("h", expires_at=100.0)
    assert rec.status(99.9) == "active" and rec.status(100.0) == "expired"
    assert dataclasses.replace(rec, revoked_at=50.0).status(60.0) == "revoked"
    assert rec.allows(Scope.SUBMIT) and not rec.allows(Scope.ADMIN)
    admin = record("h", scopes=(Scope.ADMIN,))
    assert all(admin.allows(s) for s in Scope)
    assert "secret_hmac" not in rec.view(0.0)
    assert parse_scopes("read, SUBMIT") == (Scope.SUBMIT, Scope.READ)
    with pytest.raises(ValueError, match="use some of submit, read, admin"):
        parse_scopes("read,write")
    with pytest.raises(ValueError, match="none given"):
        parse_scopes("")
    with pytest.raises(ValidationError, match="tenant="):
        check_name("tenant", "a b")


def test_checking_a_secret_takes_as_long_whatever_is_wrong_with_it() -> None:
    """Constant time: a secret wrong in its first character, one wrong in its last
    and an unknown id all cost one HMAC and one full compare."""
    _, _, hashed = new_token(KEY)
    rec = record(hashed)
    good = "Q" * 43
    first_wrong = "R" + good[1:]
    last_wrong = good[:-1] + "R"
    cases = {"first": (first_wrong, rec), "last": (last_wrong, rec), "unknown": (good, None)}
    times: dict[str, list[float]] = {k: [] for k in cases}
    for _ in range(30):
        for name, (secret, r) in cases.items():
            start = time.perf_counter()
            for _ in range(200):
                secret_matches(KEY, secret, r)
            times[name].append(time.perf_counter() - start)
    # the fastest of each: what a check costs when nothing else on the machine gets in
    # the way (a median still moves with the load of a busy machine)
    fastest = {k: min(v) for k, v in times.items()}
    assert max(fastest.values()) < 1.5 * min(fastest.values()), fastest


def test_the_access_key_file_is_made_private_and_checked(tmp_path) -> None:
    path = tmp_path / "access.key"
    key = load_or_create(path)
    assert len(key) == 32 and load_or_create(path) == key
    assert path.stat().st_mode & 0o777 == 0o600
    assert derive(key, "tokens") != derive(key, "audit")
    path.chmod(0o644)
    with pytest.raises(ConfigError, match="chmod 600"):
        load_or_create(path)
    path.chmod(0o600)
    path.write_text("not a key")
    with pytest.raises(ConfigError, match="not a qrt access key") as err:
        load_or_create(path)
    assert "not a key" not in str(err.value)  # the file's content is never echoed


# -- the audit chain ---------------------------------------------------------------------


def _chain(n: int) -> list[audit.AuditRecord]:
    entries = [
        AuditEntry("operator", "token.create", "acme", f"t{i}", "ok", {"i": i}) for i in range(n)
    ]
    records: list[audit.AuditRecord] = []
    for e in entries:
        last = (records[-1].seq, records[-1].seal) if records else None
        records += audit.chain(KEY, last, 1000.0 + len(records), [e])
    return records


def test_an_intact_chain_verifies() -> None:
    records = _chain(6)
    verdict = audit.verify(KEY, records, expect_head=(6, records[-1].seal))
    assert verdict.ok and verdict.checked == 6 and verdict.head == (6, records[-1].seal)
    assert audit.verify(KEY, []).ok


def test_an_edit_a_removal_a_reorder_and_a_cut_tail_all_show() -> None:
    records = _chain(6)
    edited = list(records)
    e = edited[2]
    edited[2] = dataclasses.replace(e, entry=dataclasses.replace(e.entry, tenant="other"))
    assert any("edited" in p for p in audit.verify(KEY, edited).problems)

    removed = records[:2] + records[3:]
    assert any("removed or moved" in p for p in audit.verify(KEY, removed).problems)

    swapped = [records[0], records[2], records[1], *records[3:]]
    assert not audit.verify(KEY, swapped).ok

    # renumbering after a removal still breaks the link to the record before
    renumbered = records[:2] + [dataclasses.replace(r, seq=r.seq - 1) for r in records[3:]]
    assert not audit.verify(KEY, renumbered).ok

    head = (6, records[-1].seal)
    cut = records[:4]
    assert audit.verify(KEY, cut).ok  # a shorter chain is whole by itself...
    assert any("cut-off tail" in p for p in audit.verify(KEY, cut, expect_head=head).problems)

    # ...and whoever lacks the key cannot reseal an edit
    forged = audit.chain(b"z" * 32, (2, records[1].seal), 1.0, [records[2].entry])
    assert not audit.verify(KEY, [*records[:2], *forged, *records[3:]]).ok


# -- limits and the calendar ------------------------------------------------------------


def test_the_bucket_allows_its_burst_then_its_rate() -> None:
    b = TokenBucket.full(rate=2.0, burst=3, now=0.0)
    assert [b.take(1, 0.0) for _ in range(3)] == [0.0, 0.0, 0.0]
    assert b.take(1, 0.0) == pytest.approx(0.5)  # nothing taken: wait half a second
    assert b.take(1, 0.5) == 0.0
    assert math.isinf(b.take(4, 10.0))  # more than the bucket ever holds


def test_utc_calendar() -> None:
    t = 1796541385.0  # 2026-12-05 ~09:16 UTC
    assert month_of(t) == "2026-12"
    assert day_start(t) <= t < day_start(t) + 86400
    start, end = month_bounds("2026-12")
    assert start <= t < end == next_month(t)
    assert month_bounds("2026-02")[1] - month_bounds("2026-02")[0] == 28 * 86400
    with pytest.raises(ValueError, match="YYYY-MM"):
        month_bounds("12/2026")
    assert crossed(0.3, 0.85) == [0.5, 0.8] and crossed(0.85, 1.0) == [1.0]


def test_tenant_limits_merge_over_defaults() -> None:
    base = TenantLimits(max_concurrent_jobs=10, submit_rate_per_s=5)
    got = base.merged({"budget_usd_per_month": 7.5})
    assert got.max_concurrent_jobs == 10 and got.budget_usd_per_month == 7.5
    with pytest.raises(Exception, match="greater than or equal"):
        base.merged({"shots_per_day": -1})


# -- the billing rule -------------------------------------------------------------------


def run(device: str, shots: int, run_s: float = 0.5, first: int = 0) -> RawRun:
    return RawRun(
        job_id="j", attempt=1, device=device, calibration_id="c", calibration_taken_at=0.0,
        shots_requested=shots, counts=({"0": shots}, {"1": shots}), seeds=(1,), run_s=run_s,
        simulator_method="statevector", gpu=False, checksum="", first_shot=first,
    )  # fmt: skip


PRICES = {"a": (0.001, 0.1), "b": (0.01, 1.0)}


def test_a_job_pays_its_shots_where_they_ran_and_one_fee() -> None:
    lines = job_charges("j", "acme", 2, [run("a", 300), run("a", 200, first=300), run("b", 100)],
                        PRICES, 5.0)  # fmt: skip
    by_kind = {(c.kind, c.device): c for c in lines}
    assert by_kind["shots", "a"].shots == 1000 and by_kind["shots", "a"].usd == pytest.approx(1.0)
    assert by_kind["shots", "b"].shots == 200 and by_kind["shots", "b"].usd == pytest.approx(2.0)
    assert by_kind["fee", "a"].usd == 0.1  # the device that ran most of it
    assert len({c.line for c in lines}) == len(lines) == 3
    assert by_kind["shots", "a"].device_s == pytest.approx(1.0)


def test_a_job_that_ran_nothing_pays_nothing_and_the_bound_holds() -> None:
    assert job_charges("j", "acme", 1, [], PRICES, 0.0) == []
    assert upper_bound_usd(1000, 2, PRICES, None) == pytest.approx(1.0 + 20.0)
    assert upper_bound_usd(1000, 2, PRICES, "a") == pytest.approx(0.1 + 2.0)
    lines = job_charges("j", "acme", 2, [run("a", 1000)], PRICES, 0.0)
    assert sum(c.usd for c in lines) <= upper_bound_usd(1000, 2, PRICES, None)
    assert readout_charge("r", "acme", "b", 4000, PRICES, 0.0).usd == pytest.approx(40.0)
    # shots on the dearest device per shot and the fee of the dearest: a bound
    mixed = {"cheap_fee": (0.01, 0.1), "dear_fee": (0.001, 5.0)}
    bound = upper_bound_usd(1000, 1, mixed, None)
    split = [run("cheap_fee", 600), run("dear_fee", 400, first=600)]
    assert sum(c.usd for c in job_charges("j", "t", 1, split, mixed, 0.0)) <= bound
    assert bound == pytest.approx(5.0 + 1000 * 0.01)
    with pytest.raises(ValueError, match="no device's price"):
        upper_bound_usd(10, 1, {}, None)
