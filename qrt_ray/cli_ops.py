"""The on-call's commands: ``qrt slo`` (objectives, budgets, burn rates, rules),
``qrt trace JOB`` (a job's stage waterfall) and ``qrt top`` (a live view of the farm).

All three read what the farm stores or serves, so they work with no Prometheus and
no tracing backend.
"""

from __future__ import annotations

import argparse
import math
import sys
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from prometheus_client.parser import text_string_to_metric_families

from qrt_ray import waterfall
from qrt_ray.errors import RuntimeNotRunningError, ValidationError
from qrt_ray.models import DeviceSnapshot
from qrt_ray.slo import (
    SloReport,
    alertmanager_route,
    evaluate_slos,
    load_slo_config,
    render_report,
    render_rules,
    report_dict,
)
from qrt_ray.tracing import job_trace_id

# == qrt slo ======================================================================


def cmd_slo(args: argparse.Namespace) -> int:
    """Per SLO: indicator, objective, budget left and burn rates; or the rules."""
    config = load_slo_config(args.slos)
    if args.action == "rules":
        if not (math.isfinite(args.time_scale) and args.time_scale > 0):
            raise ValidationError(f"--time-scale {args.time_scale:g}: use a number above 0")
        print(render_rules(config, time_scale=args.time_scale), end="")
        return 0
    if args.action == "alertmanager":
        print(alertmanager_route(), end="")
        return 0
    report = _slo_report(args, config)
    args.print(args, report_dict(report), render_report(report))
    return 0


def _slo_report(args: argparse.Namespace, config: Any) -> SloReport:
    """From the running farm, else straight from the store (``--store``, or the
    default one): the store holds every job's times, so no farm is needed."""
    if not args.store:
        try:
            rt = args.connect(args)
            return rt.administer("slo", config=config.model_dump_json())
        except (RuntimeNotRunningError, ConnectionError) as exc:
            print(f"{str(exc).split(';')[0]}; reading the store", file=sys.stderr)
    from qrt_ray.config import load_farm_config
    from qrt_ray.history import StoredHistory

    history = StoredHistory(args.store)
    try:
        devices = [d.name for d in load_farm_config(args.farm).devices]
        return evaluate_slos(config, history.store, now=time.time(), devices=devices)
    finally:
        history.close()


# == qrt gc =======================================================================


def cmd_gc(args: argparse.Namespace) -> int:
    """Remove finished jobs past the store's retention window (see
    :mod:`qrt_ray.store.retention`): the running farm's store, through the farm, or
    with ``--store`` (or no farm running) that store directly; a farm may be using it."""
    from qrt_ray.cli_access import duration_s
    from qrt_ray.config import load_policy_config

    cfg = load_policy_config(args.policies).retention
    keep_fetched = duration_s(args.keep_fetched) if args.keep_fetched else None
    keep_unfetched = duration_s(args.keep_unfetched) if args.keep_unfetched else None
    if args.policies is not None:  # that file's windows, where no flag names one
        keep_fetched = keep_fetched if keep_fetched is not None else cfg.keep_fetched_s
        keep_unfetched = keep_unfetched if keep_unfetched is not None else cfg.keep_unfetched_s
    for flag, value in (("--keep-fetched", keep_fetched), ("--keep-unfetched", keep_unfetched)):
        if value is not None and value <= 0:
            raise ValidationError(f"{flag} {value:g} s: must be above 0")
    rt = None if args.store else _farm_or_none(args)
    if rt is not None:
        data = rt.administer(
            "gc", keep_fetched_s=keep_fetched, keep_unfetched_s=keep_unfetched, dry_run=args.dry_run
        )
    else:
        data = _gc_locally(args, cfg, keep_fetched, keep_unfetched)
    args.print(args, data, _gc_text(data))
    return 0


def _farm_or_none(args: argparse.Namespace) -> Any:
    """The running farm, or None when none runs here (the store is read directly)."""
    try:
        return args.connect(args)
    except (RuntimeNotRunningError, ConnectionError):
        return None


def _gc_locally(
    args: argparse.Namespace, cfg: Any, keep_fetched: float | None, keep_unfetched: float | None
) -> dict[str, Any]:
    from qrt_ray.history import StoredHistory
    from qrt_ray.store.retention import collect_by_policy

    history = StoredHistory(args.store)
    try:

        def progress(so_far: Any) -> None:
            if not args.json and sys.stderr.isatty():
                print(f"\r  {so_far.jobs} jobs ...", end="", file=sys.stderr, flush=True)

        data = collect_by_policy(
            history.store,
            cfg,
            keep_fetched_s=keep_fetched,
            keep_unfetched_s=keep_unfetched,
            dry_run=args.dry_run,
            progress=progress,
        )
    finally:
        history.close()
    return {**data, "store": history.label}


def _gc_text(data: dict[str, Any]) -> str:
    dry = data["dry_run"]
    verb = "would remove" if dry else "removed"
    states = ", ".join(f"{n} {s}" for s, n in sorted(data["by_state"].items())) or "none"
    text = (
        f"{verb} {data['jobs']} finished jobs ({states}), {data['transitions']} transitions, "
        f"{data['shot_rows']} shot-ledger rows, {data['blobs']} blobs "
        f"({data['blob_bytes'] / 1e6:.1f} MB) and {data['canaries']} canary rounds "
        f"in {data['seconds']:.1f} s from {data['store']}\n"
        f"windows: {_span(data['keep_fetched_s'])} once fetched, "
        f"{_span(data['keep_unfetched_s'])} otherwise; the billing ledger and audit chain "
        "are kept"
    )
    before, after = data["store_bytes_before"], data["store_bytes_after"]
    if before is not None and after is not None:
        text += f"\nstore: {before / 1e6:.1f} MB before, {after / 1e6:.1f} MB after"
        if not dry and data["jobs"]:
            text += " (freed pages are reused; the file shrinks with VACUUM)"
    return text


def _span(seconds: float) -> str:
    """``7 days``, ``12 h``, ``90 s``."""
    if seconds >= 86_400:
        return f"{seconds / 86_400:g} days"
    if seconds >= 3_600:
        return f"{seconds / 3_600:g} h"
    return f"{seconds:g} s"


# == qrt integrity ================================================================


def cmd_integrity(args: argparse.Namespace) -> int:
    """Check the store's invariants (see :mod:`qrt_ray.store.integrity`): the running
    farm's store, or with ``--store`` (or no farm running) that one; exit 1 when any is
    broken."""
    rt = None if args.store else _farm_or_none(args)
    if rt is not None:
        data = rt.administer("integrity", deep=args.deep)
        text = data.pop("text")
    else:
        from qrt_ray.history import StoredHistory
        from qrt_ray.store.integrity import check_integrity

        history = StoredHistory(args.store)
        try:

            def progress(name: str) -> None:
                if not args.json and sys.stderr.isatty():
                    print(f"  checking {name} ...", file=sys.stderr, flush=True)

            report = check_integrity(history.store, deep=args.deep, progress=progress)
        finally:
            history.close()
        data, text = {"store": history.label, **report.as_dict()}, report.render()
    args.print(args, data, text)
    return 0 if data["ok"] else 1


# == qrt trace ====================================================================


def cmd_trace(args: argparse.Namespace) -> int:
    """A job's stage waterfall from its stored transitions."""
    rt = args.reader(args)
    handle = rt.job(args.job_id)
    info = handle.info()
    events = handle.events()
    found = waterfall.stages(events)
    trace_id = job_trace_id(args.job_id)
    data = {
        "job_id": args.job_id,
        "state": info["state"],
        "trace_id": trace_id,
        "stages": [
            {"stage": s.name, "start_s": s.start_s, "duration_s": s.duration_s, "then": s.detail}
            for s in found
        ],
    }
    args.print(args, data, waterfall.render(args.job_id, str(info["state"]), found, trace_id))
    return 0


# == qrt top ======================================================================


@dataclass(frozen=True, slots=True)
class Frame:
    """What one refresh of ``qrt top`` shows."""

    at: float
    devices: list[dict[str, Any]]
    slos: list[dict[str, Any]]


def shots_by_device(metrics_text: str) -> dict[str, float]:
    """Shots executed so far per device, from the farm's metrics."""
    out: dict[str, float] = {}
    for family in text_string_to_metric_families(metrics_text):
        for s in family.samples:
            if s.name == "qrt_device_shots_total":
                device = s.labels.get("device", "")
                out[device] = out.get(device, 0.0) + s.value
    return out


def frame(
    snapshots: Sequence[DeviceSnapshot],
    shots: Mapping[str, float],
    before: tuple[float, Mapping[str, float]] | None,
    report: SloReport | None,
    now: float,
) -> Frame:
    """One view of the farm: per device its status, calibration age, queue and shot
    rate since ``before`` (time, shots then); per SLO its 1 h burn and budget left."""
    devices = []
    for s in sorted(snapshots, key=lambda d: d.name):
        rate = None
        if before is not None and now > before[0]:
            rate = max(0.0, shots.get(s.name, 0.0) - before[1].get(s.name, 0.0)) / (now - before[0])
        devices.append(
            {
                "device": s.name,
                "status": s.status.value,
                "calibration_age_s": max(0.0, now - s.calibration.taken_at),
                "queue": s.queue_depth,
                "running": s.running_jobs,
                "shots_per_s": rate,
            }
        )
    slos = []
    for slo in report.slos if report is not None else ():
        hour = next((w for w in slo.windows if w.window == "1h"), None)
        slos.append(
            {
                "slo": slo.name,
                "objective": slo.objective,
                "burn_1h": hour.burn if hour else None,
                "budget_left": slo.budget_left,
            }
        )
    return Frame(now, devices, slos)


def render_frame(f: Frame) -> Any:
    """The frame as rich renderables (two tables)."""
    from rich.console import Group
    from rich.table import Table

    dev = Table(title=f"qrt top  {time.strftime('%H:%M:%S', time.localtime(f.at))}")
    for col in ("device", "status", "cal. age", "queue", "running", "shots/s"):
        dev.add_column(col, justify="left" if col in ("device", "status") else "right")
    for d in f.devices:
        style = "" if d["status"] == "ONLINE" else "bold red"
        rate = "-" if d["shots_per_s"] is None else f"{d['shots_per_s']:.0f}"
        dev.add_row(
            d["device"],
            f"[{style}]{d['status']}[/]" if style else d["status"],
            _age(d["calibration_age_s"]),
            str(d["queue"]),
            str(d["running"]),
            rate,
        )
    slo = Table(title="SLO burn")
    for col in ("slo", "objective", "burn 1h", "budget left"):
        slo.add_column(col, justify="left" if col == "slo" else "right")
    for s in f.slos:
        burn = s["burn_1h"]
        hot = burn is not None and burn > 1
        text = "no data" if burn is None else f"{burn:.2f}x"
        budget = "-" if s["budget_left"] is None else f"{s['budget_left']:.0%}"
        slo.add_row(
            s["slo"], f"{s['objective']:.2%}", f"[bold red]{text}[/]" if hot else text, budget
        )
    return Group(dev, slo)


def _age(seconds: float) -> str:
    if seconds < 120:
        return f"{seconds:.0f} s"
    if seconds < 7200:
        return f"{seconds / 60:.0f} min"
    return f"{seconds / 3600:.1f} h"


def cmd_top(args: argparse.Namespace) -> int:
    """A live view of the devices and the SLO burn, refreshed in place."""
    from rich.console import Console
    from rich.live import Live

    if not (math.isfinite(args.interval) and args.interval > 0):
        raise ValidationError(f"--interval {args.interval:g}: use a number of seconds above 0")
    rt = args.connect(args)
    console = Console()
    config = load_slo_config(args.slos).model_dump_json()
    state: dict[str, Any] = {"before": None, "report": None, "report_at": 0.0}

    def next_frame() -> Frame:
        now = time.time()
        shots = shots_by_device(rt.metrics_text())
        if state["report"] is None or now - state["report_at"] >= _SLO_EVERY_S:
            state["report"], state["report_at"] = rt.administer("slo", config=config), now
        f = frame(rt.devices(), shots, state["before"], state["report"], now)
        state["before"] = (now, shots)
        return f

    if args.once:
        console.print(render_frame(next_frame()))
        return 0
    return _live(Live, console, next_frame, args.interval)


# the SLO report reads the store's last 30 days: not on every refresh
_SLO_EVERY_S = 10.0


def _live(live: Any, console: Any, next_frame: Callable[[], Frame], interval: float) -> int:
    with live(render_frame(next_frame()), console=console, refresh_per_second=4) as view:
        try:
            while True:
                time.sleep(interval)
                view.update(render_frame(next_frame()))
        except KeyboardInterrupt:
            return 0


def register(add: Callable[..., argparse.ArgumentParser], reader: Any) -> None:
    """Add the commands to ``qrt``'s parser (``add`` as ``build_parser`` defines it)."""
    s = add("slo", cmd_slo, "SLOs: indicator, budget left, burn rates; or their Prometheus rules")
    s.add_argument(
        "action",
        nargs="?",
        default="report",
        choices=["report", "rules", "alertmanager"],
        help="report (default): from the store; rules: Prometheus recording and alerting "
        "rules (qrt slo rules > rules.yml); alertmanager: a route grouping the alerts",
    )
    s.add_argument("--slos", type=Path, help="SLO file (default: the packaged slos.yaml)")
    s.add_argument(
        "--time-scale",
        type=float,
        default=1.0,
        help="rules: divide every window by this (a drill that fires in seconds)",
    )
    s.add_argument("--store", help="read this store, not the running farm's")
    s.add_argument("--farm", help="farm YAML naming the devices (with --store)")

    g = add("gc", cmd_gc, "remove finished jobs past the store's retention window")
    g.add_argument(
        "--store",
        help="collect in this store directly (default: the running farm's, through it; "
        "with no farm running, the default store)",
    )
    g.add_argument(
        "--policies",
        type=Path,
        help="policy file whose retention: windows apply (default: the farm's own)",
    )
    g.add_argument(
        "--keep-fetched",
        metavar="AGE",
        help="keep a job whose result was fetched this long after it ended (e.g. 7d)",
    )
    g.add_argument(
        "--keep-unfetched",
        metavar="AGE",
        help="keep a job whose result no one fetched this long (e.g. 30d)",
    )
    g.add_argument("--dry-run", action="store_true", help="count what would go; remove nothing")

    i = add("integrity", cmd_integrity, "check the job store's invariants (exit 1 if broken)")
    i.add_argument(
        "--store",
        help="check this store directly (default: the running farm's, through it; with "
        "no farm running, the default store)",
    )
    i.add_argument(
        "--deep",
        action="store_true",
        help="also hash every blob and read every result (shots, calibration)",
    )

    t = add("trace", cmd_trace, "a job's stage waterfall from its stored transitions")
    t.add_argument("job_id", metavar="JOB")
    t.add_argument("--store", help="job store when no farm runs")
    t.set_defaults(reader=reader)

    top = add("top", cmd_top, "a live view of devices and SLO burn")
    top.add_argument("--interval", type=float, default=2.0, help="seconds between refreshes")
    top.add_argument("--once", action="store_true", help="print one view and exit")
    top.add_argument("--slos", type=Path, help="SLO file (default: the packaged slos.yaml)")
