"""Scheduling benchmark: every placement policy on the same simulated trace, side by side.

Runs the farm simulator (``qrt_ray.evaluation.simulator``: the runtime's real
placement engine and queue policy in simulated time) on one trace of jobs over a farm of
devices cloned from
the default farm, once per policy, and prints mean and p95 job completion time (JCT),
mean estimated fidelity, mean cost, device utilisation and Jain's fairness index across
tenants (of 1 / mean slowdown). Then the ratios the issue sets as targets, and the
scheduler's speed: placement decisions per second at 20 and 200 devices (cache warm)
and the simulator's jobs per second at 1000 devices (cold, then warm caches). Last,
the simulated fidelities are checked on a sample of the trace's (circuit, device)
pairs by real noisy Aer runs (``qrt_ray.evaluation.sim_check``).

    python benchmarks/scheduling.py                 # 5,000 jobs, 20 devices
    python benchmarks/scheduling.py --jobs 1000     # quicker
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import sys
import time
from pathlib import Path

from qrt_ray.evaluation.sim_check import EstimateCheck, check_estimates
from qrt_ray.evaluation.simulator import FarmSimulator, SimConfig, SimReport
from qrt_ray.models import POLICY_NAMES


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


def _speed(devices: int, jobs: int, seed: int) -> float:
    """Decisions per second of the composite policy on a warm placer, one core."""
    sim = FarmSimulator(SimConfig(devices=devices, jobs=jobs, seed=seed))
    sim.run("composite")  # warm the estimate caches
    return sim.run("composite").decisions_per_s


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
        "--big-jobs", type=int, default=300, help="jobs for the 1000-device speed run"
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
    speed: dict[str, float] = {}
    if not args.skip_speed:
        print()
        speed["decisions_per_s_20_devices"] = _speed(20, 2000, args.seed)
        speed["decisions_per_s_200_devices"] = _speed(200, 2000, args.seed)
        t0 = time.perf_counter()
        big = FarmSimulator(SimConfig(devices=1000, jobs=args.big_jobs, seed=args.seed))
        speed["simulator_setup_s_1000_devices"] = time.perf_counter() - t0
        t0 = time.perf_counter()
        big.run("composite")
        speed["simulator_jobs_per_s_1000_devices"] = args.big_jobs / (time.perf_counter() - t0)
        t0 = time.perf_counter()
        big.run("composite")  # the same trace again: every estimate it needs is cached
        speed["simulator_jobs_per_s_1000_devices_warm"] = args.big_jobs / (time.perf_counter() - t0)
        ok = speed["decisions_per_s_20_devices"] >= 2000
        print(
            f"placement decisions/s, 20 devices, cache warm: "
            f"{speed['decisions_per_s_20_devices']:.0f} (target >= 2000) "
            f"{'PASS' if ok else 'FAIL'}"
        )
        print(f"placement decisions/s, 200 devices: {speed['decisions_per_s_200_devices']:.0f}")
        print(
            f"simulator jobs/s, 1000 devices, {args.big_jobs} jobs, cold caches: "
            f"{speed['simulator_jobs_per_s_1000_devices']:.1f}, cache warm: "
            f"{speed['simulator_jobs_per_s_1000_devices_warm']:.1f} "
            f"(setup {speed['simulator_setup_s_1000_devices']:.1f} s)"
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
                    "estimate_check": dataclasses.asdict(check) if check else None,
                },
                indent=2,
                default=str,
            )
        )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
