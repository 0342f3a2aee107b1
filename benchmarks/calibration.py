"""Calibration benchmark: no recalibration, fixed-interval, qrt's canaries, and an oracle.

Same devices, same drift (seeded), same workload for every strategy. Simulated time
runs in ticks of ``--tick-min`` minutes; at each tick the strategy acts, then every
device ONLINE runs the workload (a GHZ and a mirror circuit, compiled for its current
calibration) on its true, drifted noise with real noisy Aer runs, and each result's
Hellinger fidelity to the ideal distribution is kept.

- ``none``: the calibration taken at start, forever.
- ``fixed``: recalibrate every ``--fixed-h`` hours (one run per interval given).
- ``qrt``: the runtime's :class:`~qrt_ray.actors.calibration.CalibrationManager` (canaries
  every ``canary_period_s``, recalibration on drift or age, verification).
- ``oracle``: knows the true noise; recalibrates at the first tick where the
  calibration's prediction of the canaries is off by the drift threshold (the same
  test the canaries make, without shot noise or a schedule).
- ``ideal``: recalibrates at every tick, whatever it costs: the fidelity ceiling.

Device time spent calibrating is ``recalibration_s`` per recalibration plus canary
shots at ``shot_s`` each. Detection delay: for each drift event (a tick where the
oracle's exact test first fires since the last recalibration), the time until qrt
paused the device for drift, in canary periods; qrt detections with no event pending
(its noisy test fired before the exact one) are counted as early. The calibration
time target compares qrt with the cheapest fixed interval whose fidelity is at least
qrt's (or the best fixed interval, when none is as good).

    python benchmarks/calibration.py                     # nairobi + guadalupe, 24 h (~25 min)
    python benchmarks/calibration.py --scenario bursty   # event-driven drift instead
    python benchmarks/calibration.py --hours 12 --devices nairobi   # quicker
    python benchmarks/calibration.py --farm              # also a real local Ray farm

``--farm`` also runs ``none``, ``fixed`` and ``qrt`` on a real local farm (Ray,
device actors, the calibration actor) with drift accelerated ``--farm-scale`` times,
submitting GHZ jobs through the runtime for ``--farm-s`` wall seconds each.
"""

from __future__ import annotations

import argparse
import asyncio
import dataclasses
import json
import statistics
import sys
import tempfile
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

from qiskit import transpile
from qiskit.quantum_info import hellinger_fidelity

from qrt_ray.actors.calibration import CalibrationManager, LocalCalibrationPorts
from qrt_ray.actors.device import Device, WorkItem
from qrt_ray.circuits import parse_qasm
from qrt_ray.compiler import encode_compiled
from qrt_ray.config import CalibrationConfig, DeviceConfig, DriftConfig
from qrt_ray.policies.canary import CanaryResult, Phase, canary_round, judge_round
from qrt_ray.store import SQLiteJobStore

HOUR = 3600.0
BACKENDS = {
    "nairobi": "FakeNairobiV2",
    "manila": "FakeManilaV2",
    "kolkata": "FakeKolkataV2",
    "guadalupe": "FakeGuadalupeV2",
}
STRATEGIES = ("none", "fixed", "qrt", "oracle", "ideal")
# Shots of the oracle's exact canary test: shot noise far below the threshold.
ORACLE_SHOTS = 8_000
_GHZ = 4


@dataclass
class Outcome:
    """One strategy's run."""

    strategy: str
    fidelities: list[float] = field(default_factory=list)
    recalibrations: int = 0
    canary_rounds: int = 0
    calibration_s: float = 0.0
    delays_periods: list[float] = field(default_factory=list)
    early: int = 0
    undetected: int = 0
    offline: int = 0
    wall_s: float = 0.0

    @property
    def mean_fidelity(self) -> float:
        return statistics.fmean(self.fidelities) if self.fidelities else float("nan")


class Clock:
    """Simulated time, moved by the benchmark."""

    def __init__(self, t: float) -> None:
        self.t = t

    def __call__(self) -> float:
        return self.t


def _workload() -> list[tuple[str, dict[str, float]]]:
    """(QASM, ideal distribution) of the circuits each device runs every tick."""
    from qrt_ray.policies.canary import ghz_qasm, mirror_qasm

    mirror = mirror_qasm(_GHZ, seed=1234, layers=3)
    half = {"0" * _GHZ: 0.5, "1" * _GHZ: 0.5}
    return [(ghz_qasm(_GHZ), half), (mirror, {"0" * _GHZ: 1.0})]


# Two kinds of drift. "steady": errors trend up at the same rate all the time (plus a
# random walk and the default, rare TLS and coupler events). "bursty": no trend; a
# random walk, and TLS and coupler events ten and five times as often as the default,
# lasting four hours on average.
SCENARIOS = {
    "steady": {"error_trend_per_hour": 0.05},
    "bursty": {
        "error_trend_per_hour": 0.0,
        "tls_per_qubit_hour": 0.02,
        "coupler_per_edge_hour": 0.005,
        "event_mean_h": 4.0,
    },
}


def _device_configs(names: Sequence[str], seed: int, scenario: str) -> list[DeviceConfig]:
    out = []
    for i, name in enumerate(names):
        drift = DriftConfig(seed=seed + i, **SCENARIOS[scenario])
        out.append(
            DeviceConfig(
                name=name,
                backend=BACKENDS[name],
                price_per_shot_usd=0.0,
                price_per_job_usd=0.0,
                gpu="never",
                drift=drift,
            )
        )
    return out


class Runner:
    """One strategy over simulated time."""

    def __init__(
        self,
        args: argparse.Namespace,
        strategy: str,
        config: CalibrationConfig,
        fixed_h: float = 0.0,
    ) -> None:
        self.args = args
        self.strategy = strategy
        self.fixed_h = fixed_h
        self.config = config
        self.clock = Clock(1_000_000.0)
        self.devices = [
            Device(c, clock=self.clock, max_parallel_threads=1)
            for c in _device_configs(args.devices, args.seed, args.scenario)
        ]
        self.workload = _workload()
        self._compiled: dict[tuple[str, str], list[bytes]] = {}
        self.outcome = Outcome(f"fixed {fixed_h:g} h" if strategy == "fixed" else strategy)
        self._tmp = tempfile.TemporaryDirectory()
        self.store = SQLiteJobStore(Path(self._tmp.name) / "jobs.sqlite3")
        self.manager = (
            CalibrationManager(
                self.store,
                LocalCalibrationPorts(self.devices),
                config,
                clock=self.clock,
                seed=args.seed,
            )
            if strategy == "qrt"
            else None
        )
        self._last_recal = {d.name: self.clock.t for d in self.devices}
        self._event_at: dict[str, float | None] = {d.name: None for d in self.devices}
        self._job = 0

    # -- strategies ---------------------------------------------------------------

    def _drifted(self, device: Device) -> bool:
        """The oracle's test: canaries' predicted success off by the threshold (exact)."""
        cal = device.calibration
        specs = canary_round(
            cal.coupling_map,
            cal.num_qubits,
            0,
            chain_length=self.config.chain_length,
            max_chains=10_000,  # every chain at once
        )
        results = device.run_canaries(specs, ORACLE_SHOTS, seed=7)
        exact = [CanaryResult(r.name, r.predicted, r.measured, 10**9) for r in results]
        return judge_round(exact, self.config).drifted

    def _recalibrate(self, device: Device) -> None:
        device.recalibrate()
        self.outcome.recalibrations += 1
        self.outcome.calibration_s += self.config.recalibration_s
        self._last_recal[device.name] = self.clock.t

    async def act(self) -> None:
        now = self.clock.t
        if self.strategy == "fixed":
            for d in self.devices:
                if now - self._last_recal[d.name] >= self.fixed_h * HOUR:
                    self._recalibrate(d)
        elif self.strategy == "ideal":
            for d in self.devices:
                self._recalibrate(d)
        elif self.strategy == "oracle":
            for d in self.devices:
                if self._drifted(d):
                    self._recalibrate(d)
        elif self.strategy == "qrt":
            assert self.manager is not None
            # drift events as the oracle would see them (seen, not acted on)
            for d in self.devices:
                if self._event_at[d.name] is None and self._drifted(d):
                    self._event_at[d.name] = now
            states = self.manager.states
            before = {n: (s.detected_at, s.phase) for n, s in states.items()}
            await self.manager.step()
            for d in self.devices:
                state = states[d.name]
                if state.detected_at is not None and before.get(d.name, (None,))[0] is None:
                    event = self._event_at[d.name]
                    if event is not None:
                        self.outcome.delays_periods.append(
                            (now - event) / self.config.canary_period_s
                        )
                    else:
                        self.outcome.early += 1
                    self._event_at[d.name] = None
            # A paused device finishes its (instant) batch and is retuned at once, so
            # its work waits for the new calibration instead of being skipped.
            for _ in range(2):
                if any(s.phase is Phase.RECALIBRATING for s in states.values()):
                    await self.manager.step()
            for d in self.devices:
                if (
                    states[d.name].phase is Phase.MONITOR
                    and before.get(d.name, (None, None))[1] is Phase.RECALIBRATING
                ):
                    self._event_at[d.name] = None  # retuned (for age, or after a pause)

    # -- workload -----------------------------------------------------------------

    def _compiled_for(self, device: Device) -> list[bytes]:
        key = (device.name, device.calibration.calibration_id)
        if key not in self._compiled:
            _, target = device.compile_target()
            circuits = [
                transpile(
                    parse_qasm(q),
                    target=target,
                    optimization_level=1,
                    seed_transpiler=11,
                )
                for q, _ in self.workload
            ]
            self._compiled[key] = [encode_compiled(c) for c in circuits]
        return self._compiled[key]

    def run_workload(self) -> None:
        from qrt_ray.models import DeviceStatus

        for device in self.devices:
            if device.status is not DeviceStatus.ONLINE:
                if device.status is DeviceStatus.OFFLINE:
                    self.outcome.offline += 1
                continue
            payloads = self._compiled_for(device)
            self._job += 1
            item = WorkItem(
                f"job-{self._job}",
                1,
                device.calibration.calibration_id,
                tuple(payloads),
                self.args.shots,
                5,
                seed=self._job,
                active_qubits=_GHZ,
            )
            (run,) = device.execute([item])
            for counts, (_, ideal) in zip(run.counts, self.workload, strict=True):
                self.outcome.fidelities.append(hellinger_fidelity(counts, ideal))

    async def run(self) -> Outcome:
        start = time.perf_counter()
        ticks = int(self.args.hours * 60 / self.args.tick_min)
        for _ in range(ticks):
            self.clock.t += self.args.tick_min * 60
            await self.act()
            self.run_workload()
        if self.manager is not None:
            for account in self.manager.accounts.values():
                self.outcome.recalibrations += account.recalibrations
                self.outcome.calibration_s += account.total_s
                self.outcome.canary_rounds += account.canary_rounds
            self.outcome.undetected = sum(1 for v in self._event_at.values() if v is not None)
        self.outcome.wall_s = time.perf_counter() - start
        self.store.close()
        self._tmp.cleanup()
        return self.outcome


def _table(outcomes: dict[str, Outcome]) -> str:
    lines = [
        "| strategy | mean fidelity | vs oracle | recalibrations | canary rounds "
        "| calibration device-h | vs matched fixed | wall s |",
        "|" + "---|" * 8,
    ]
    oracle = outcomes.get("oracle")
    fixed = next((o for k, o in outcomes.items() if k.startswith("fixed")), None)
    if "qrt" in outcomes:
        fixed = _matched_fixed(outcomes) or fixed
    for name, o in outcomes.items():
        vs_o = o.mean_fidelity / oracle.mean_fidelity if oracle else float("nan")
        vs_f = (
            o.calibration_s / fixed.calibration_s if fixed and fixed.calibration_s else float("nan")
        )
        lines.append(
            f"| {name} | {o.mean_fidelity:.4f} | {vs_o:.3f} | {o.recalibrations} "
            f"| {o.canary_rounds} | {o.calibration_s / HOUR:.2f} | {vs_f:.2f} | {o.wall_s:.0f} |"
        )
    return "\n".join(lines)


def _matched_fixed(outcomes: dict[str, Outcome]) -> Outcome | None:
    """The cheapest fixed interval whose fidelity is at least qrt's (or, when none
    reaches it, the fixed interval with the highest fidelity)."""
    qrt = outcomes["qrt"]
    fixed = [o for k, o in outcomes.items() if k.startswith("fixed")]
    good = [o for o in fixed if o.mean_fidelity >= qrt.mean_fidelity]
    if good:
        return min(good, key=lambda o: o.calibration_s)
    return max(fixed, key=lambda o: o.mean_fidelity) if fixed else None


def _targets(outcomes: dict[str, Outcome]) -> list[tuple[str, float, str, bool]]:
    qrt, oracle = outcomes["qrt"], outcomes["oracle"]
    fid = qrt.mean_fidelity / oracle.mean_fidelity
    fixed = _matched_fixed(outcomes)
    cost = qrt.calibration_s / fixed.calibration_s if fixed else float("nan")
    name = fixed.strategy if fixed else "none as good"
    delay = statistics.median(qrt.delays_periods) if qrt.delays_periods else float("nan")
    return [
        ("qrt fidelity / oracle fidelity", fid, ">= 0.98", fid >= 0.98),
        (f"qrt calibration time / {name}'s", cost, "<= 0.50", cost <= 0.5),
        ("median detection delay (canary periods)", delay, "<= 3", delay <= 3),
    ]


def simulate(args: argparse.Namespace) -> dict[str, Outcome]:
    """Every strategy in simulated time; returns their outcomes."""
    config = CalibrationConfig(
        canary_period_s=args.period_min * 60,
        max_age_s=args.max_age_h * HOUR,
        recalibration_s=args.recalibration_s,
    )
    outcomes = {}
    runs = [
        (strategy, h)
        for strategy in args.strategies
        for h in (args.fixed_h if strategy == "fixed" else [0.0])
    ]
    for strategy, fixed_h in runs:
        runner = Runner(args, strategy, config, fixed_h)
        print(f"-- {runner.outcome.strategy} ...", file=sys.stderr, flush=True)
        o = asyncio.run(runner.run())
        outcomes[o.strategy] = o
        print(
            f"   fidelity {o.mean_fidelity:.4f}, {o.recalibrations} recalibrations, "
            f"{o.wall_s:.0f} s",
            file=sys.stderr,
            flush=True,
        )
    return outcomes


# == a real local farm ==================================================================


def on_farm(args: argparse.Namespace) -> dict[str, Outcome]:
    """none / fixed / qrt on a real local Ray farm with accelerated drift."""
    import ray

    from qrt_ray import QuantumRuntime
    from qrt_ray import farm as farm_mod
    from qrt_ray.config import FarmConfig, PolicyConfig

    scale = args.farm_scale
    period_s = args.period_min * 60 / scale
    ghz, ideal = _workload()[0]
    outcomes = {}
    for strategy in ("none", "fixed", "qrt"):
        print(f"-- farm {strategy} ...", file=sys.stderr, flush=True)
        devices = tuple(
            c.model_copy(update={"drift": c.drift.model_copy(update={"time_scale": scale})})
            for c in _device_configs(args.devices, args.seed, args.scenario)
            if c.drift is not None
        )
        farm = FarmConfig(name="calibration-bench", devices=devices)
        policies = PolicyConfig(
            calibration=CalibrationConfig(
                enabled=strategy == "qrt",
                canary_period_s=period_s,
                max_age_s=args.max_age_h * HOUR / scale,
                recalibration_s=args.recalibration_s,
            )
        )
        with tempfile.TemporaryDirectory() as tmp:
            rt = QuantumRuntime.local(farm, store=Path(tmp) / "jobs.sqlite3", policies=policies)
            try:
                outcome = Outcome(strategy)
                start = time.monotonic()
                last_fixed = start
                jobs = []
                while time.monotonic() - start < args.farm_s:
                    if (
                        strategy == "fixed"
                        and time.monotonic() - last_fixed >= args.farm_fixed_h * HOUR / scale
                    ):
                        for name in args.devices:  # straight to the device: no canaries
                            ray.get(farm_mod.device_handle(name, rt.namespace).recalibrate.remote())
                            outcome.recalibrations += 1
                            outcome.calibration_s += args.recalibration_s
                        last_fixed = time.monotonic()
                    for name in args.devices:
                        jobs.append(rt.submit(ghz, shots=args.shots, device=name))
                    time.sleep(args.tick_min * 60 / scale)
                import warnings

                with warnings.catch_warnings():
                    warnings.simplefilter("ignore")
                    results = rt.results(jobs, timeout_s=600)
                outcome.fidelities = [hellinger_fidelity(r.counts(), ideal) for r in results]
                if strategy == "qrt":
                    for rep in rt.calibration_report().values():
                        outcome.recalibrations += rep["recalibrations"]
                        outcome.canary_rounds += rep["canary_rounds"]
                        outcome.calibration_s += rep["calibration_device_s"]
                outcome.wall_s = time.monotonic() - start
                outcomes[strategy] = outcome
            finally:
                rt.shutdown()
    return outcomes


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    p.add_argument("--devices", nargs="+", default=["nairobi", "guadalupe"], choices=BACKENDS)
    p.add_argument("--hours", type=float, default=24.0)
    p.add_argument("--tick-min", type=float, default=15.0, help="minutes between workload runs")
    p.add_argument("--period-min", type=float, default=30.0, help="qrt's canary period")
    p.add_argument(
        "--fixed-h", type=float, nargs="+", default=[1.0, 2.0, 4.0, 8.0], help="fixed intervals"
    )
    p.add_argument("--max-age-h", type=float, default=24.0)
    p.add_argument("--recalibration-s", type=float, default=900.0)
    p.add_argument("--scenario", choices=sorted(SCENARIOS), default="steady", help="drift kind")
    p.add_argument("--shots", type=int, default=1000)
    p.add_argument("--seed", type=int, default=3)
    p.add_argument("--strategies", nargs="+", default=list(STRATEGIES), choices=STRATEGIES)
    p.add_argument("--farm", action="store_true", help="also run on a real local farm")
    p.add_argument("--farm-scale", type=float, default=1800.0, help="drift speed-up on the farm")
    p.add_argument("--farm-s", type=float, default=60.0, help="wall seconds per farm strategy")
    p.add_argument("--farm-fixed-h", type=float, default=2.0, help="fixed interval on the farm")
    p.add_argument("--json", action="store_true")
    p.add_argument("--farm-only", action="store_true", help="only the real local farm")
    args = p.parse_args()
    args.farm = args.farm or args.farm_only
    outcomes = {} if args.farm_only else simulate(args)
    if outcomes:
        _report(args, outcomes)
    farm = {}
    if args.farm:
        farm = on_farm(args)
        print(
            f"\n## real local farm, {args.scenario} drift x{args.farm_scale:g}: "
            f"{', '.join(args.devices)}, {args.farm_s:g} s each\n"
        )
        print(_table(farm))
    if args.json:
        print(json.dumps({k: dataclasses.asdict(v) for k, v in {**outcomes, **farm}.items()}))


def _report(args: argparse.Namespace, outcomes: dict[str, Outcome]) -> None:
    print(
        f"## simulated, {args.scenario} drift: {', '.join(args.devices)}, {args.hours:g} h, "
        f"canaries every {args.period_min:g} min\n"
    )
    print(_table(outcomes))
    if {"qrt", "oracle"} <= set(outcomes) and any(k.startswith("fixed") for k in outcomes):
        print()
        for name, value, target, ok in _targets(outcomes):
            print(f"- {name}: {value:.3f} (target {target}) {'PASS' if ok else 'FAIL'}")
        q = outcomes["qrt"]
        for name, o in outcomes.items():
            if name.startswith("fixed") and o.calibration_s:
                print(
                    f"- qrt against {name}: fidelity {q.mean_fidelity / o.mean_fidelity:.3f}x, "
                    f"calibration time {q.calibration_s / o.calibration_s:.2f}x"
                )
        print(
            f"- drift events (exact test) caught by qrt: {len(q.delays_periods)}, delays in "
            f"canary periods {[round(d, 1) for d in q.delays_periods]}; still undetected at "
            f"the end: {q.undetected}; qrt detections before the exact test fired: {q.early}"
        )


if __name__ == "__main__":
    main()
