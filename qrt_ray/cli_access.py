"""``qrt`` commands of the trust boundary: tenants, tokens, usage, bills, the audit
chain and the gateway. Tenant and token changes, bills and the audit chain are the
operator's (through Ray); ``qrt usage`` works for a tenant over ``--url`` too.
"""

from __future__ import annotations

import argparse
import csv
import io
import re
import sys
import time
from collections.abc import Callable
from typing import Any

from qrt_ray.errors import ValidationError, brief
from qrt_ray.render import table

_UNITS = {"s": 1, "m": 60, "h": 3600, "d": 86400, "w": 7 * 86400}
# CLI flag -> TenantLimits field
LIMIT_FLAGS = {
    "budget_usd": "budget_usd_per_month",
    "max_concurrent": "max_concurrent_jobs",
    "shots_per_day": "shots_per_day",
    "device_s_per_month": "device_s_per_month",
    "rate": "submit_rate_per_s",
    "burst": "submit_burst",
}


def duration_s(text: str) -> float:
    """Seconds of ``90``, ``90s``, ``15m``, ``12h``, ``30d`` or ``2w``.

    Raises:
        ValidationError: anything else.
    """
    match = re.fullmatch(r"\s*(\d+(?:\.\d+)?)\s*([smhdw]?)\s*", str(text))
    if not match:
        raise ValidationError(
            f"duration {brief(text)!r}: expected a number with s, m, h, d or w (e.g. 30d)"
        )
    return float(match.group(1)) * _UNITS[match.group(2) or "s"]


def _when(at: float | None) -> str:
    return "-" if at is None else time.strftime("%Y-%m-%d %H:%M", time.localtime(at))


def _limits(args: argparse.Namespace) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for flag, field in LIMIT_FLAGS.items():
        value = getattr(args, flag, None)
        if value is not None:
            out[field] = value
    for name in getattr(args, "clear", None) or []:
        field = LIMIT_FLAGS.get(name.replace("-", "_"), name)
        out[field] = None
    return out


def cmd_tenants(args: argparse.Namespace) -> int:
    """Create, change or list tenants."""
    rt = args.connect(args)
    if args.action == "list":
        rows = rt.administer("tenants")
        lines = [
            [
                t["tenant"],
                "disabled" if t["disabled"] else "active",
                _money(t["effective"]["budget_usd_per_month"]),
                _num(t["effective"]["max_concurrent_jobs"]),
                _num(t["effective"]["shots_per_day"]),
                _num(t["effective"]["submit_rate_per_s"]),
                ", ".join(t["users"]) or "-",
            ]
            for t in rows
        ]
        headers = ["tenant", "status", "budget/month", "concurrent", "shots/day", "jobs/s", "users"]
        args.print(args, rows, table(headers, lines) if lines else "no tenants yet")
        return 0
    if not args.name:
        raise ValidationError(f"qrt tenants {args.action}: give the tenant's NAME")
    disabled = {"disable": True, "enable": False}.get(args.action)
    got = rt.administer("tenant_set", name=args.name, limits=_limits(args), disabled=disabled)
    eff = got["effective"]
    text = (
        f"tenant {got['tenant']} ({'disabled' if got['disabled'] else 'active'}): budget "
        f"{_money(eff['budget_usd_per_month'])}/month, {_num(eff['max_concurrent_jobs'])} "
        f"concurrent jobs, {_num(eff['shots_per_day'])} shots/day, "
        f"{_num(eff['submit_rate_per_s'])} jobs/s (burst {eff['submit_burst']})"
    )
    args.print(args, got, text)
    return 0


def cmd_tokens(args: argparse.Namespace) -> int:
    """Create, list, rotate or revoke API tokens."""
    rt = args.connect(args)
    if args.action == "list":
        rows = rt.administer("tokens", tenant=args.tenant)
        lines = [
            [
                t["token_id"],
                t["tenant"],
                t["user"],
                ",".join(t["scopes"]),
                t["status"],
                _when(t["created_at"]),
                _when(t["expires_at"]),
                t["name"] or "-",
            ]
            for t in rows
        ]
        headers = ["id", "tenant", "user", "scopes", "status", "created", "expires", "name"]
        args.print(args, rows, table(headers, lines) if lines else "no tokens")
        return 0
    if args.action == "create":
        if not args.tenant or not args.user:
            raise ValidationError("qrt tokens create: give --tenant and --user")
        got = rt.administer(
            "token_create",
            tenant=args.tenant,
            user=args.user,
            scopes=args.scopes,
            name=args.name or "",
            expires_in_s=duration_s(args.expires_in) if args.expires_in else None,
        )
    else:
        if not args.token_id:
            raise ValidationError(f"qrt tokens {args.action}: give the token's ID")
        if args.action == "revoke":
            got = rt.administer("token_revoke", token_id=args.token_id)
            args.print(args, got, f"token {got['token_id']} is {got['status']}")
            return 0
        got = rt.administer(
            "token_rotate", token_id=args.token_id, overlap_s=duration_s(args.overlap)
        )
    text = (
        f"token {got['token_id']} for {got['user']} of tenant {got['tenant']} "
        f"({', '.join(got['scopes'])}; expires {_when(got['expires_at'])}):\n\n"
        f"  {got['token']}\n\n"
        "It is shown only now: keep it in a secret store (clients read $QRT_TOKEN)."
    )
    if args.action == "rotate":
        text += f"\nThe old token {args.token_id} works for {args.overlap} more."
    args.print(args, got, text)
    return 0


def cmd_usage(args: argparse.Namespace) -> int:
    """A tenant's month: billed, held by running jobs, limits, alerts."""
    from qrt_ray.remote import RemoteRuntime

    rt = args.connect(args)
    if isinstance(rt, RemoteRuntime):  # a tenant over the gateway: its own tenant
        got = rt.usage(args.month)
    else:
        if not args.tenant:
            raise ValidationError("qrt usage: give --tenant (or --url and a tenant's token)")
        got = rt.administer("usage", tenant=args.tenant, month=args.month)
    budget = got["budget_usd"]
    used = "" if not budget else f" of {_money(budget)} ({100 * got['budget_used']:.1f} %)"
    alerts = ", ".join(f"{round(a['threshold'] * 100)} %" for a in got["alerts"]) or "none"
    text = "\n".join(
        [
            f"tenant {got['tenant']}, {got['month']} (UTC):",
            f"  billed     {_money(got['billed_usd'])}{used}",
            f"  held       {_money(got['held_usd'])} by {got['running_jobs']} running job(s)",
            f"  shots      {got['shots']} billed, {got['shots_today']} submitted today",
            f"  device     {got['device_s']:.1f} s",
            f"  alerts     {alerts}",
        ]
    )
    args.print(args, got, text)
    return 0


def cmd_bill(args: argparse.Namespace) -> int:
    """A month's chargeback: per tenant and device, or every ledger line as CSV."""
    rt = args.connect(args)
    got = rt.administer("bill", month=args.month)
    if args.csv:
        out = io.StringIO()
        fields = ["job_id", "line", "tenant", "device", "kind", "shots", "device_s", "usd", "at"]
        writer = csv.DictWriter(out, fieldnames=fields, lineterminator="\n")
        writer.writeheader()
        writer.writerows(got["lines"])
        sys.stdout.write(out.getvalue())
        return 0
    rows = [
        [r["tenant"], r["device"], r["jobs"], r["shots"], r["device_s"], _money(r["usd"])]
        for r in got["rows"]
    ]
    totals = "\n".join(f"  {t}: {_money(v)}" for t, v in got["totals"].items())
    headers = ["tenant", "device", "jobs", "shots", "device s", "usd"]
    body = (
        table(headers, rows) + f"\n\ntotals {got['month']}:\n{totals}"
        if rows
        else (f"nothing billed in {got['month']}")
    )
    args.print(args, {k: v for k, v in got.items() if k != "lines"}, body)
    return 0


def cmd_audit(args: argparse.Namespace) -> int:
    """Verify the audit chain, print its head, or show its last records."""
    rt = args.connect(args)
    if args.action == "verify":
        head = None
        if args.head:
            seq, _, seal = args.head.partition(":")
            if not seq.isdigit() or len(seal) != 64:
                raise ValidationError(f"--head {brief(args.head)!r}: expected SEQ:SEAL")
            head = [int(seq), seal]
        got = rt.administer("audit_verify", expect_head=head)
        if got["ok"]:
            text = f"audit chain intact: {got['checked']} records"
            if got["head"]:
                text += f", head {got['head'][0]}:{got['head'][1]}"
        else:
            text = "audit chain BROKEN:\n" + "\n".join(f"  {p}" for p in got["problems"])
        args.print(args, got, text)
        return 0 if got["ok"] else 1
    if args.action == "head":
        got = rt.administer("audit_verify")
        head = got["head"]
        args.print(args, got, f"{head[0]}:{head[1]}" if head else "the chain is empty")
        return 0 if got["ok"] else 1
    records = rt.administer("audit_tail", limit=args.limit)
    rows = [
        [
            r["seq"],
            _when(r["at"]),
            r["actor"],
            r["action"],
            r["tenant"] or "-",
            r["subject"] or "-",
            r["outcome"],
        ]
        for r in records
    ]
    headers = ["seq", "at", "actor", "action", "tenant", "subject", "outcome"]
    args.print(args, records, table(headers, rows) if rows else "the chain is empty")
    return 0


def cmd_gateway(args: argparse.Namespace) -> int:
    """Start or stop the farm's HTTP gateway (Ray Serve)."""
    from qrt_ray import farm as farm_mod
    from qrt_ray.gateway import start_gateway, stop_gateway

    farm_mod.init_ray_loopback(address=args.address)
    if args.action == "down":
        stopped = stop_gateway(args.namespace)
        text = "gateway stopped" if stopped else f"no gateway runs for namespace {args.namespace!r}"
        args.print(args, {"stopped": stopped}, text)
        return 0
    farm_mod.find_scheduler(args.namespace)  # a gateway needs a farm behind it
    url = start_gateway(
        args.namespace,
        host=args.host,
        port=args.port,
        tls_cert=args.tls_cert,
        tls_key=args.tls_key,
    )
    args.print(
        args,
        {"url": url},
        f"gateway up at {url} (OpenAPI: {url}/docs); tenants connect with "
        f"qrt_ray.connect({url!r}, token=...) or `qrt --url {url} ...`",
    )
    return 0


def _money(value: float | None) -> str:
    return "-" if value is None else f"${value:,.4f}".rstrip("0").rstrip(".")


def _num(value: float | None) -> str:
    return "-" if value is None else f"{value:g}"


def register(add: Callable[..., argparse.ArgumentParser]) -> None:
    """Add the commands to ``qrt``'s parser (``add`` as ``build_parser`` defines it)."""
    t = add("tenants", cmd_tenants, "create, change or list tenants and their limits")
    t.add_argument("action", choices=["list", "create", "set", "disable", "enable"])
    t.add_argument("name", nargs="?", metavar="NAME")
    t.add_argument("--budget-usd", type=float, dest="budget_usd", help="USD per month")
    t.add_argument("--max-concurrent", type=int, help="jobs not yet final at once")
    t.add_argument("--shots-per-day", type=int, help="shots x circuits per UTC day")
    t.add_argument("--device-s-per-month", type=float, help="billed device seconds a month")
    t.add_argument("--rate", type=float, help="jobs per second (token bucket)")
    t.add_argument("--burst", type=int, help="jobs at once (bucket depth)")
    t.add_argument(
        "--clear",
        action="append",
        metavar="LIMIT",
        help="drop the tenant's own value of LIMIT "
        "(budget_usd, max_concurrent, shots_per_day, device_s_per_month, rate, burst)",
    )

    k = add("tokens", cmd_tokens, "create, list, rotate or revoke API tokens")
    k.add_argument("action", choices=["create", "list", "rotate", "revoke"])
    k.add_argument("token_id", nargs="?", metavar="ID", help="the token (rotate, revoke)")
    k.add_argument("--tenant", help="the token's tenant (create; filter for list)")
    k.add_argument("--user", help="who holds it (create)")
    k.add_argument("--scopes", default="submit,read", help="submit, read, admin (comma list)")
    k.add_argument("--name", help="a label, e.g. what the token is for")
    k.add_argument("--expires-in", help="lifetime: 90d, 12h, ... (default: no expiry)")
    k.add_argument("--overlap", default="1d", help="how long the old token still works (rotate)")

    u = add("usage", cmd_usage, "a tenant's month: billed, held, limits, budget alerts")
    u.add_argument("--tenant", help="whose (operators; a tenant's token means its own)")
    u.add_argument("--month", help="YYYY-MM (default: this month, UTC)")

    b = add("bill", cmd_bill, "a month's chargeback per tenant and device")
    b.add_argument("--month", help="YYYY-MM (default: this month, UTC)")
    b.add_argument("--csv", action="store_true", help="every ledger line as CSV")

    a = add("audit", cmd_audit, "verify the audit chain, print its head, show its tail")
    a.add_argument("action", choices=["verify", "head", "tail"])
    a.add_argument("--head", help="SEQ:SEAL saved earlier (`qrt audit head`): catches a cut tail")
    a.add_argument("-n", "--limit", type=int, default=30, help="records to show (tail)")

    g = add("gateway", cmd_gateway, "start or stop the farm's HTTP gateway (Ray Serve)")
    g.add_argument("action", choices=["up", "down"])
    g.add_argument("--host", default="127.0.0.1", help="address to listen on (loopback)")
    g.add_argument("--port", type=int, default=8000, help="port (default %(default)s)")
    g.add_argument("--tls-cert", help="PEM certificate: serve HTTPS")
    g.add_argument("--tls-key", help="PEM private key of --tls-cert")
