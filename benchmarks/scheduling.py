"""Scheduling benchmark: every placement policy on the same simulated trace, side by side.

Runs the farm simulator (``qrt_ray.evaluation.simulator``: the runtime's real placement
engine and queue policy in simulated time) on one trace of jobs over a farm of devices
cloned from the default farm, once per policy, and prints mean and p95 job completion
time (JCT), mean estimated fidelity, mean cost, device utilisation and Jain's fairness
index across tenants (of 1 / mean slowdown), with the ratios set as targets.

Then, in order:

* **speed**: placement decisions per second of the default policy at 20, 200 and 1000
  devices (estimate caches warm, one core), the short list against a candidate for
  every device on the same trace, and whether the two made the same choices;
* **Pareto fronts** at 20 and 1000 devices: mean fidelity against mean JCT over the
  composite's delay charge and its relative time weight, with best_fidelity and
  least_busy at the ends; the front and its knee are marked;
* **bounds**: the best mean fidelity any placement could reach on each trace for a
  given makespan and utilisation (``qrt_ray.evaluation.bound``, a linear program);
* **the estimator check**: the simulated fidelities against real noisy Aer runs on a
  sample of the trace's (circuit, device) pairs (``qrt_ray.evaluation.sim_check``).

    python benchmarks/scheduling.py                          # everything (~10 min)
    python benchmarks/scheduling.py --jobs 1000 --pareto-devices 20 --skip-reference
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import math
import sys
import time
from pathlib import Path

from qrt_ray.evaluation.bound import FidelityBound, PlacementBound
from qrt_ray.evaluation.sim_check import EstimateCheck, check_estimates
from qrt_ray.evaluation.simulator import FarmSimulator, SimConfig, SimReport
from qrt_ray.models import POLICY_NAMES
from qrt_ray.policies.placement import PlacementOptions, Weights

# the mean JCT the default should stay within on a large farm
JCT_TARGET_S = 60.0
# the knee keeps this share of the best mean fidelity on the front
KNEE_SHARE = 0.97


def _table(reports: list[SimReport]) -> str:
    head = (
        "| policy | done | mean JCT s | p95 JCT s | mean fidelity | mean cost USD "
        "| utilisation | fairness (Jain) | decisions/s |"
    )
    lines = [head, "|" + "---|" * 9]
    for r in reports:
        lines.append(
            f"| {r.policy} | {r.done}/{r.jobs} | {r.mean_jct_s:.1f} | {r.p95_jct_s:.1f} "
            f"| {r.mean_fidelity:.3f} | {r.mean_cost_usd:.3f} | {r.utilisation:.2f} "
            f"| {r.fairness:.3f} | {r.decisions_per_s:.0f} |"
        )
    return "\n".join(lines)


def _targets(by: dict[str, SimReport]) -> list[tuple[str, float, str, bool]]:
    comp, best, rr = by["composite"], by["best_fidelity"], by["round_robin"]
    jct = comp.mean_jct_s / best.mean_jct_s
    fid = comp.mean_fidelity / best.mean_fidelity
    over_rr = comp.mean_fidelity / rr.mean_fidelity - 1
    return [
        ("composite JCT / best_fidelity JCT", jct, "<= 0.5", jct <= 0.5),
        ("composite fidelity / best_fidelity fidelity", fid, ">= 0.97", fid >= 0.97),
        ("composite fidelity over round_robin", over_rr, ">= +15%", over_rr >= 0.15),
        ("composite fairness (Jain)", comp.fairness, ">= 0.9", comp.fairness >= 0.9),
    ]


def _speed(devices: int, jobs: int, seed: int, reference: bool) -> dict[str, float]:
    """Decisions per second of the default policy, estimate caches warm, one core: the
    short list, and (``reference``) a candidate for every device, on the same trace."""
    sim = FarmSimulator(SimConfig(devices=devices, jobs=jobs, seed=seed))
    sim.run("composite")  # warm the estimate caches
    short = sim.run("composite")
    out = {"devices": devices, "jobs": jobs, "short_list": short.decisions_per_s}
    if reference:
        full = sim.run("composite", short_list=False)
        out["full_list"] = full.decisions_per_s
        out["same_choices"] = float(full.choices_sha256 == short.choices_sha256)
    return out


# The composite weights the Pareto sweep tries: the delay charge per second with the
# default relative weights, and the relative time weight alone (the old default's axis).
DELAYS = (0.0, 0.0001, 0.0003, 0.0005, 0.001, 0.003, 0.01, 0.03)
TIME_WEIGHTS = (0.02, 0.05, 0.2, 1.0)


@dataclasses.dataclass(frozen=True)
class Point:
    """One policy setting on one trace."""

    label: str
    report: SimReport
    front: bool = False
    knee: bool = False


def pareto(reports: list[tuple[str, SimReport]], share: float = KNEE_SHARE) -> list[Point]:
    """Mark the Pareto front (no other setting has both higher mean fidelity and lower
    mean JCT) and the knee chosen on it: the shortest mean JCT that keeps ``share`` of
    the best mean fidelity on the front. (Past it, fidelity falls faster than time: on
    the 20-device trace, going from 97 % to 96 % of the best fidelity saves 24 s of
    JCT, and from 98.5 % to 97 % saves 72 s.)"""
    points = []
    for label, r in reports:
        dominated = any(
            o.mean_fidelity >= r.mean_fidelity
            and o.mean_jct_s <= r.mean_jct_s
            and (o.mean_fidelity > r.mean_fidelity or o.mean_jct_s < r.mean_jct_s)
            for _, o in reports
        )
        points.append(Point(label, r, front=not dominated))
    front = [p for p in points if p.front]
    best = max(p.report.mean_fidelity for p in front)
    good = [p for p in front if p.report.mean_fidelity >= share * best]
    knee = min(good, key=lambda p: p.report.mean_jct_s)
    return [dataclasses.replace(p, knee=True) if p is knee else p for p in points]


def _sweep(devices: int, jobs: int, load: float, seed: int) -> tuple[FarmSimulator, list[Point]]:
    sim = FarmSimulator(SimConfig(devices=devices, jobs=jobs, load=load, seed=seed))
    runs: list[tuple[str, SimReport]] = []
    for policy in ("best_fidelity", "least_busy"):
        runs.append((policy, sim.run(policy)))
    default = Weights(**sim.policy_config.weights.model_dump())
    for delay in DELAYS:
        w = dataclasses.replace(default, delay=delay)
        label = f"composite delay={delay:g}" + (" (default)" if w == default else "")
        runs.append((label, sim.run("composite", PlacementOptions(weights=w), label=label)))
        print(f"  {devices} devices: {label}", file=sys.stderr, flush=True)
    for t in TIME_WEIGHTS:
        w = Weights(fidelity=1.0, time=t, cost=default.cost)
        label = f"composite time={t:g} delay=0"
        runs.append((label, sim.run("composite", PlacementOptions(weights=w), label=label)))
    return sim, pareto(runs)


def _front_table(points: list[Point], best: float) -> str:
    lines = [
        "| setting | mean JCT s | p95 JCT s | mean fidelity | of best_fidelity's "
        "| utilisation | front |",
        "|" + "---|" * 7,
    ]
    for p in sorted(points, key=lambda p: p.report.mean_jct_s):
        r = p.report
        mark = "knee" if p.knee else ("yes" if p.front else "")
        lines.append(
            f"| {p.label} | {r.mean_jct_s:.1f} | {r.p95_jct_s:.1f} | {r.mean_fidelity:.4f} "
            f"| {r.mean_fidelity / best:.3f} | {r.utilisation:.3f} | {mark} |"
        )
    return "\n".join(lines)


def _bounds(sim: FarmSimulator, jct_target_s: float) -> list[FidelityBound]:
    """The best mean fidelity any placement could reach on ``sim``'s trace: with the
    makespan at the end of its arrivals (no backlog left), with the JCT target's worth
    of backlog, and with five times that; last, the best with utilisation >= 50 %
    (over makespans up to twice the arrivals' span: beyond, 50 % of the devices' time
    is more work than the trace brings at 85 % offered load)."""
    bound = PlacementBound(sim)
    end = sim.trace[-1].arrival_s
    out = [bound.solve(m) for m in (end, end + jct_target_s, end + 5 * jct_target_s)]
    busy = [bound.solve(end * f, 0.5) for f in (1.0, 1.2, 1.4, 1.6, 1.8, 2.0)]
    out.append(max(busy, key=lambda b: -1.0 if math.isnan(b.mean_fidelity) else b.mean_fidelity))
    return out


def _check(sim: FarmSimulator, circuits: int, seed: int) -> EstimateCheck:
    """The simulator's fidelities (the estimator's ESP) against real noisy runs."""
    t0 = time.perf_counter()
    check = check_estimates(
        sim,
        circuits=circuits,
        devices_per_circuit=4,
        seed=seed,
        progress=lambda done, total: print(f"  noisy run {done}/{total}", file=sys.stderr),
    )
    print(
        f"simulated fidelity (ESP) vs real noisy simulation, {len(check.pairs)} "
        f"(circuit, device) pairs of this trace, 2,000 shots each "
        f"({time.perf_counter() - t0:.0f} s):"
    )
    print("| circuit | device | ESP (simulated) | Hellinger fidelity (measured) |")
    print("| --- | --- | --- | --- |")
    for p in check.pairs:
        print(f"| {p.circuit} | {p.device} | {p.esp:.3f} | {p.measured:.3f} |")
    print(
        f"mean ESP {check.mean_esp:.3f}, mean measured {check.mean_measured:.3f}; "
        f"Spearman over all pairs {check.spearman_all:.3f}, within a circuit "
        f"{check.spearman_within:.3f}; highest-ESP device measured best (within 0.01) "
        f"for {check.best_device_agreement:.0%} of circuits"
    )
    return check


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--jobs", type=int, default=5000)
    parser.add_argument("--devices", type=int, default=20)
    parser.add_argument("--load", type=float, default=0.85)
    parser.add_argument("--arrivals", choices=("poisson", "bursty"), default="poisson")
    parser.add_argument("--seed", type=int, default=7)
    parser.add_argument("--skip-speed", action="store_true", help="skip the speed section")
    parser.add_argument(
        "--speed-devices",
        type=lambda v: [int(x) for x in v.split(",")],
        default=[20, 200, 1000],
        help="farm sizes of the speed section (comma-separated)",
    )
    parser.add_argument("--speed-jobs", type=int, default=1000, help="jobs per speed run")
    parser.add_argument(
        "--skip-reference",
        action="store_true",
        help="time the short list only (a candidate for every device is slow at 1000)",
    )
    parser.add_argument(
        "--pareto-devices",
        type=lambda v: [int(x) for x in v.split(",") if x],
        default=[20, 1000],
        help="farm sizes whose Pareto front is swept ('' skips it)",
    )
    parser.add_argument(
        "--skip-bound", action="store_true", help="skip the linear-programming bounds"
    )
    parser.add_argument(
        "--check-circuits",
        type=int,
        default=6,
        help="circuits whose simulated fidelities are checked by real noisy runs "
        "(4 devices each; 0 skips the check)",
    )
    parser.add_argument("--json", type=Path, help="also write the figures here")
    args = parser.parse_args(argv)

    cfg = SimConfig(
        devices=args.devices,
        jobs=args.jobs,
        load=args.load,
        arrivals=args.arrivals,
        seed=args.seed,
    )
    start = time.perf_counter()
    sim = FarmSimulator(cfg)
    print(
        f"trace: {cfg.jobs} jobs, {cfg.devices} devices, load {cfg.load}, {cfg.arrivals} "
        f"arrivals, {cfg.tenants} tenants, {cfg.circuits} circuits of 3-{cfg.max_qubits} "
        f"qubits (setup {time.perf_counter() - start:.1f} s)",
        flush=True,
    )
    reports = []
    for policy in POLICY_NAMES:
        reports.append(sim.run(policy))
        print(f"  {policy}: {reports[-1].wall_s:.1f} s", file=sys.stderr, flush=True)
    print()
    print(_table(reports))
    print()
    by = {r.policy: r for r in reports}
    results = _targets(by)
    for name, value, target, ok in results:
        print(f"{name}: {value:.3f} (target {target}) {'PASS' if ok else 'FAIL'}")
    speed: list[dict[str, float]] = []
    if not args.skip_speed:
        print()
        print(
            "placement decisions/s, default policy, estimate caches warm, one core "
            f"({args.speed_jobs} jobs): the short list against a candidate for every device"
        )
        print("| devices | short list | every device | ratio | same choices |")
        print("| --- | --- | --- | --- | --- |")
        for devices in args.speed_devices:
            row = _speed(devices, args.speed_jobs, args.seed, reference=not args.skip_reference)
            speed.append(row)
            full = row.get("full_list")
            print(
                f"| {devices} | {row['short_list']:.0f} "
                + (
                    f"| {full:.0f} | {row['short_list'] / full:.1f}x "
                    f"| {'yes' if row['same_choices'] else 'NO'} |"
                    if full
                    else "| - | - | - |"
                )
            )
        big = [r for r in speed if r["devices"] >= 1000]
        if big:
            ok = big[0]["short_list"] >= 1000
            print(
                f"decisions/s at {big[0]['devices']:.0f} devices: {big[0]['short_list']:.0f} "
                f"(target >= 1000) {'PASS' if ok else 'FAIL'}"
            )
    fronts: dict[int, list[Point]] = {}
    bounds: dict[int, list[FidelityBound]] = {}
    for devices in args.pareto_devices:
        print()
        swept, points = _sweep(devices, args.jobs, args.load, args.seed)
        fronts[devices] = points
        best = next(p.report for p in points if p.label == "best_fidelity")
        end = swept.trace[-1].arrival_s
        print(
            f"Pareto front, {devices} devices, {args.jobs} jobs at {args.load:.0%} offered "
            f"load (the trace's arrivals end at {end:.1f} s):"
        )
        print(_front_table(points, best.mean_fidelity))
        if not args.skip_bound:
            bounds[devices] = _bounds(swept, JCT_TARGET_S)
            print()
            print("the best mean fidelity any placement could reach (LP relaxation):")
            print(
                "| makespan s | utilisation at least | mean fidelity at most | of best_fidelity's |"
            )
            print("| --- | --- | --- | --- |")
            for b in bounds[devices]:
                share = b.mean_fidelity / best.mean_fidelity
                print(
                    f"| {b.makespan_s:.1f} | {b.min_utilisation:.0%} | {b.mean_fidelity:.4f} "
                    f"| {share:.3f} |"
                )
        default = next(p for p in points if p.label.endswith("(default)"))
        fid = default.report.mean_fidelity / best.mean_fidelity
        print(
            f"default at {devices} devices: {fid:.3f} of best_fidelity's fidelity (target "
            f">= 0.97), mean JCT {default.report.mean_jct_s:.1f} s (target <= "
            f"{JCT_TARGET_S:.0f}), utilisation {default.report.utilisation:.3f} (target >= 0.5)"
            + ("; it is the knee" if default.knee else "")
        )
    check = None
    if args.check_circuits:
        print()
        check = _check(sim, args.check_circuits, args.seed)
    if args.json:
        args.json.write_text(
            json.dumps(
                {
                    "config": dataclasses.asdict(cfg),
                    "reports": [r.row() for r in reports],
                    "targets": [
                        {"name": n, "value": v, "target": t, "pass": ok} for n, v, t, ok in results
                    ],
                    "speed": speed,
                    "pareto": {
                        str(d): [
                            {"label": p.label, "front": p.front, "knee": p.knee, **p.report.row()}
                            for p in pts
                        ]
                        for d, pts in fronts.items()
                    },
                    "bounds": {
                        str(d): [dataclasses.asdict(b) for b in bs] for d, bs in bounds.items()
                    },
                    "estimate_check": dataclasses.asdict(check) if check else None,
                },
                indent=2,
                default=str,
            )
        )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
