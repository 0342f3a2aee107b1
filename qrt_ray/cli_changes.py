"""Safe changes and game days: ``qrt rollout`` (a post-processing version on canaries
before users get it) and ``qrt gameday`` (a named scenario of faults against a running
farm, and a report of how it coped).
"""

from __future__ import annotations

import argparse
import json
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from qrt_ray.errors import ValidationError
from qrt_ray.render import table

# == qrt rollout ====================================================================


def cmd_rollout(args: argparse.Namespace) -> int:
    """Show each post-processing method's versions, start a rollout or roll back."""
    rt = args.connect(args)
    if args.action == "start":
        if not args.method or not args.version:
            raise ValidationError("qrt rollout start METHOD VERSION: give both")
        got = rt.administer("rollout_start", method=args.method, version=args.version)
        args.print(
            args,
            got,
            f"{got['method']} {got['candidate']}: in shadow beside {got['served']}; it runs "
            "on every canary round and serves user jobs only once promoted",
        )
        return 0
    if args.action == "rollback":
        if not args.method or args.version:
            raise ValidationError("qrt rollout rollback METHOD: give the method only")
        got = rt.administer("rollout_rollback", method=args.method, reason=args.reason or "")
        args.print(args, got, f"{got['method']}: serving {got['served']} ({got['reason']})")
        return 0
    rows = rt.administer("rollouts")
    args.print(args, rows, render_rollouts(rows))
    return 0


def render_rollouts(rows: list[dict[str, Any]]) -> str:
    """One row per method, then the versions each knows."""
    head = ["method", "served", "phase", "candidate", "rounds", "canaries", "gap", "since"]
    body = [
        [
            r["method"],
            r["served"],
            r["phase"],
            r["candidate"] or "-",
            r["agreed_rounds"],
            r["compared"],
            f"{r['worst_gap']:.4f}",
            time.strftime("%Y-%m-%d %H:%M", time.gmtime(r["changed_at"]))
            if r["changed_at"]
            else "-",
        ]
        for r in rows
    ]
    lines = [table(head, body)]
    for r in rows:
        if r["reason"]:
            lines.append(f"{r['method']}: {r['reason']}")
        for version, info in r.get("versions", {}).items():
            mark = " (drill)" if info["drill"] else ""
            lines.append(f"  {r['method']} {version}{mark}: {info['summary']}")
    return "\n".join(lines)


# == qrt gameday ====================================================================


def cmd_gameday(args: argparse.Namespace) -> int:
    """Run a game-day scenario against the running farm; exit 1 if it failed."""
    from qrt_ray.gameday import load_scenario, packaged, render
    from qrt_ray.gameday.runner import GameDay

    if args.list or not args.scenario:
        names = packaged()
        rows = [[n, load_scenario(n).description.strip()[:90]] for n in names]
        args.print(args, names, table(["scenario", "what"], rows))
        return 0
    scenario = load_scenario(args.scenario)
    rt = args.connect(args)

    def progress(event: Any) -> None:
        if not args.json:
            print(f"{event.t:7.1f}s  {event.kind:<9} {event.subject:<12} {event.what}", flush=True)

    report = GameDay(rt, scenario, progress).run()
    text = render(report)
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    stem = time.strftime("%Y%m%dT%H%M%SZ", time.gmtime(report.started_at))
    md = out / f"gameday-{scenario.name}-{stem}.md"
    md.write_text(text, encoding="utf-8")
    (out / f"gameday-{scenario.name}-{stem}.json").write_text(
        json.dumps(report.to_json(), indent=2), encoding="utf-8"
    )
    args.print(args, report.to_json(), f"{text}\nreport: {md}")
    return 0 if report.passed else 1


def register(add: Callable[..., argparse.ArgumentParser]) -> None:
    """Add the commands to ``qrt``'s parser (``add`` as ``build_parser`` defines it)."""
    r = add(
        "rollout",
        cmd_rollout,
        "post-processing versions: show, start a canary rollout, roll back",
    )
    r.add_argument(
        "action",
        nargs="?",
        default="status",
        choices=["status", "start", "rollback"],
        help="status (default); start METHOD VERSION: run it on canaries beside the "
        "served one, promoted when they agree; rollback METHOD: stop it, or undo the "
        "last promotion",
    )
    r.add_argument("method", nargs="?", metavar="METHOD", help="e.g. readout")
    r.add_argument("version", nargs="?", metavar="VERSION", help="e.g. 2")
    r.add_argument("--reason", help="rollback: why (kept in the audit chain)")

    g = add("gameday", cmd_gameday, "run a game-day scenario of faults against the farm")
    g.add_argument(
        "scenario",
        nargs="?",
        metavar="SCENARIO",
        help="a packaged scenario (see --list) or a scenario YAML file",
    )
    g.add_argument("--list", action="store_true", help="list the packaged scenarios")
    g.add_argument("--out", default=".", help="folder for the report (.md and .json)")
