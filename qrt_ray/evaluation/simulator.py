"""A discrete-event farm simulator that drives qrt-ray's real placement and queue policies.

Placement is studied here at scales one machine cannot run for real: tens to a
thousand devices and up to millions of jobs, in simulated time. What is real and what
is modelled:

* **Real:** every placement decision is made by :class:`~qrt_ray.policies.placer.Placer`, the
  engine the runtime's scheduler uses (the same fidelity estimator, price, run-time
  model and policies), and every device queue is ordered by
  :func:`~qrt_ray.policies.queueing.next_job` (priority with aging, per-tenant fair share).
  The run-time model learns each device's speed from the runs it sees, as it does in
  the runtime.
* **Modelled:** devices are the default farm's calibrations (fake IBM backends),
  cloned and perturbed per device (each clone's gate, readout and coherence numbers
  scaled by a seeded random factor, so every device has its own calibration id). A
  job's true run time is the physical model (shots x (circuit duration + reset) +
  overhead) times the device's hidden speed factor and some per-run noise. A job's
  fidelity is the estimator's ESP on the device it ran on; the placement benchmark
  checks the estimator against real noisy simulation.

Arrivals are Poisson at a rate that offers a chosen share of the farm's capacity, or
bursty (alternating periods at 1.8x and 0.2x the mean rate); tenants differ in how much they
submit.
"""

from __future__ import annotations

import dataclasses
import hashlib
import heapq
import math
import statistics
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Literal

import numpy as np

from qrt_ray.calibration import load_backend, snapshot_from_backend, with_recomputed_id
from qrt_ray.config import FarmConfig, PolicyConfig, load_farm_config, load_policy_config
from qrt_ray.errors import DeviceUnavailableError, PlacementError, ValidationError
from qrt_ray.models import CalibrationSnapshot, DeviceSnapshot, DeviceStatus, GateCalibration
from qrt_ray.policies.costs import physical_run_s
from qrt_ray.policies.fidelity import CircuitProfile, FidelityEstimator, profile_circuit
from qrt_ray.policies.placement import PlacementOptions
from qrt_ray.policies.placer import DeviceLoad, JobShape, Placer
from qrt_ray.policies.queueing import Waiting, jain_index, next_job

Arrivals = Literal["poisson", "bursty"]
_SHOTS = (500, 1000, 2000, 4000)
_PRIORITIES = ((2, 0.2), (5, 0.7), (8, 0.1))
# Share of the jobs each tenant submits: one heavy tenant, the rest light.
_HEAVY_TENANT_SHARE = 0.5
# A shot of a typical pool circuit, to size the arrival rate (the reset dominates).
_TYPICAL_SHOT_S = 5e-6


@dataclass(frozen=True, slots=True)
class SimConfig:
    """One simulated experiment.

    Attributes:
        devices: devices in the farm (clones of the default farm's, perturbed).
        jobs: jobs to submit.
        load: offered work as a share of the farm's capacity (0.85: 85 % busy if
            spread perfectly).
        arrivals: ``"poisson"`` or ``"bursty"``.
        tenants: tenants; the first submits half the jobs, the rest share the other half.
        circuits: distinct circuits the jobs draw from.
        max_qubits: widest circuit.
        seed: everything random follows from it.
    """

    devices: int = 20
    jobs: int = 5000
    load: float = 0.85
    arrivals: Arrivals = "poisson"
    tenants: int = 4
    circuits: int = 40
    max_qubits: int = 12
    seed: int = 7

    def check(self) -> None:
        """Raise :class:`ValidationError` naming the first bad field."""
        if not 1 <= self.devices <= 10_000:
            raise ValidationError(f"devices={self.devices} must be 1..10000")
        if not 1 <= self.jobs <= 10_000_000:
            raise ValidationError(f"jobs={self.jobs} must be 1..10000000")
        if not 0 < self.load <= 2:
            raise ValidationError(f"load={self.load} must be in (0, 2] (share of capacity)")
        if self.arrivals not in ("poisson", "bursty"):
            raise ValidationError(f"arrivals={self.arrivals!r} must be 'poisson' or 'bursty'")
        if not 1 <= self.tenants <= 1000:
            raise ValidationError(f"tenants={self.tenants} must be 1..1000")
        if not 1 <= self.circuits <= 1000:
            raise ValidationError(f"circuits={self.circuits} must be 1..1000")
        if not 3 <= self.max_qubits <= 20:
            raise ValidationError(f"max_qubits={self.max_qubits} must be 3..20")


@dataclass(frozen=True, slots=True)
class SimJob:
    """One submitted job of the trace."""

    job_id: str
    arrival_s: float
    tenant: str
    priority: int
    circuit: int
    shots: int


@dataclass(slots=True)
class _SimDevice:
    snapshot: DeviceSnapshot
    speed: float
    queue: list[Waiting] = field(default_factory=list)
    busy_until: float = 0.0
    busy_s: float = 0.0
    running: str | None = None


@dataclass(frozen=True, slots=True)
class SimReport:
    """What one policy did with one trace."""

    policy: str
    jobs: int
    done: int
    rejected: int
    mean_jct_s: float
    p95_jct_s: float
    mean_fidelity: float
    mean_cost_usd: float
    utilisation: float
    fairness: float
    makespan_s: float
    wall_s: float
    decisions_per_s: float
    per_tenant_slowdown: dict[str, float]
    # sha256 of the device chosen for each job, in arrival order: two runs that made
    # the same choices have the same digest
    choices_sha256: str = ""

    def row(self) -> dict[str, object]:
        """The report as a flat dict (for tables and JSON)."""
        return dataclasses.asdict(self)


def _perturbed(
    cal: CalibrationSnapshot, name: str, rng: np.random.Generator
) -> CalibrationSnapshot:
    """A clone of ``cal`` for device ``name`` with errors scaled by a device-wide factor
    and a per-qubit jitter (coherence times divided by the same factor)."""
    scale = float(rng.lognormal(0.0, 0.25))
    jitter = rng.lognormal(0.0, 0.1, size=cal.num_qubits)
    gates = tuple(
        GateCalibration(
            g.gate,
            g.qubits,
            min(0.5, g.error * scale * float(jitter[g.qubits[0]])),
            g.duration_s,
        )
        for g in cal.gates
    )
    return with_recomputed_id(
        dataclasses.replace(
            cal,
            device=name,
            gates=gates,
            readout_error=tuple(
                min(0.5, e * scale * float(j))
                for e, j in zip(cal.readout_error, jitter, strict=True)
            ),
            t1_s=tuple(t / scale for t in cal.t1_s),
            t2_s=tuple(t / scale for t in cal.t2_s),
        )
    )


def build_devices(n: int, farm: FarmConfig, seed: int) -> tuple[list[DeviceSnapshot], list[float]]:
    """``n`` device snapshots cloned round-robin from ``farm``'s devices, and their hidden
    speed factors."""
    rng = np.random.default_rng(seed)
    bases = []
    for dev in farm.devices:
        backend = load_backend(dev.backend)
        bases.append((dev, snapshot_from_backend(dev.name, backend, taken_at=0.0)))
    snaps, speeds = [], []
    for i in range(n):
        dev, cal = bases[i % len(bases)]
        name = f"{dev.name}-{i:04d}"
        snaps.append(
            DeviceSnapshot(
                name=name,
                status=DeviceStatus.ONLINE,
                num_qubits=cal.num_qubits,
                calibration=_perturbed(cal, name, rng),
                queue_depth=0,
                queued_shots=0,
                queue_limit=10**9,
                price_per_shot_usd=dev.price_per_shot_usd,
                price_per_job_usd=dev.price_per_job_usd,
                simulator_method="simulated",
                gpu=False,
            )
        )
        speeds.append(float(rng.lognormal(0.0, 0.3)))
    return snaps, speeds


def circuit_pool(count: int, max_qubits: int, seed: int) -> list[tuple[str, CircuitProfile]]:
    """``count`` distinct circuits from the demo workload families, profiled."""
    from qrt_ray.workloads import generate_workload

    pool = generate_workload(count, min_qubits=3, max_qubits=max_qubits, seed=seed)
    return [(w.name, profile_circuit(w.circuit)) for w in pool]


def make_trace(cfg: SimConfig, mean_run_s: float, n_devices: int) -> list[SimJob]:
    """The jobs of one experiment, with arrival times that offer ``cfg.load`` of capacity."""
    rng = np.random.default_rng(cfg.seed + 1)
    rate = cfg.load * n_devices / mean_run_s
    weights = [_HEAVY_TENANT_SHARE] + [(1 - _HEAVY_TENANT_SHARE) / max(1, cfg.tenants - 1)] * (
        cfg.tenants - 1
    )
    if cfg.tenants == 1:
        weights = [1.0]
    prio_values = [p for p, _ in _PRIORITIES]
    prio_probs = [w for _, w in _PRIORITIES]
    jobs = []
    t = 0.0
    for i in range(cfg.jobs):
        if cfg.arrivals == "bursty":
            # On/off every 200 jobs: bursts at 1.8x the mean rate, calm at 0.2x (9x apart).
            burst = (i // 200) % 2 == 0
            t += float(rng.exponential(1 / (rate * (1.8 if burst else 0.2))))
        else:
            t += float(rng.exponential(1 / rate))
        jobs.append(
            SimJob(
                job_id=f"sim-{i:07d}",
                arrival_s=t,
                tenant=f"tenant-{int(rng.choice(cfg.tenants, p=weights))}",
                priority=int(rng.choice(prio_values, p=prio_probs)),
                circuit=int(rng.integers(cfg.circuits)),
                shots=int(rng.choice(_SHOTS)),
            )
        )
    return jobs


class FarmSimulator:
    """Runs traces through the real placement engine and queue policy in simulated time.

    Args:
        config: the experiment.
        policy_config: weights, aging and run-time priors (the packaged default if None).
        farm: the farm whose devices are cloned (the packaged default if None).
        progress: called with (jobs placed, jobs in all) now and then.
    """

    def __init__(
        self,
        config: SimConfig,
        policy_config: PolicyConfig | None = None,
        farm: FarmConfig | None = None,
        progress: Callable[[int, int], None] | None = None,
    ) -> None:
        config.check()
        self.config = config
        self.policy_config = policy_config or load_policy_config()
        self.farm = farm or load_farm_config()
        self.snapshots, self.speeds = build_devices(config.devices, self.farm, config.seed)
        self.pool = circuit_pool(config.circuits, config.max_qubits, config.seed)
        self.progress = progress
        # Estimates are pure functions of (circuit, calibration): every run shares them.
        self.estimator = FidelityEstimator()
        prior = self.policy_config.run_time  # before any device history
        self.mean_run_s = statistics.fmean(
            physical_run_s(
                _TYPICAL_SHOT_S,
                shots,
                1,
                rep_delay_s=prior.rep_delay_s,
                overhead_s=prior.job_overhead_s,
            )
            for shots in _SHOTS
        )
        self.trace = make_trace(config, self.mean_run_s, config.devices)

    def run(
        self,
        policy: str,
        options: PlacementOptions | None = None,
        *,
        short_list: bool = True,
        label: str | None = None,
    ) -> SimReport:
        """Play the trace with ``policy``.

        Each run gets a fresh placer (no run-time learning or round-robin turn carried
        over) that shares the simulator's fidelity estimate cache.

        Args:
            policy: the placement policy.
            options: placement options every job carries (weights, limits).
            short_list: see :class:`~qrt_ray.policies.placer.Placer`.
            label: the report's name (the policy's by default).
        """
        placer = Placer(self.policy_config, self.estimator, simulated=False, short_list=short_list)
        sched = self.policy_config.scheduling
        shares = dict(sched.tenant_shares)
        base = options or PlacementOptions()
        opts = dataclasses.replace(base, policy=policy)
        rng = np.random.default_rng(self.config.seed + 2)
        devices = [_SimDevice(s, sp) for s, sp in zip(self.snapshots, self.speeds, strict=True)]
        by_name = {d.snapshot.name: d for d in devices}
        backlog = {d.snapshot.name: 0.0 for d in devices}
        usage: dict[str, float] = {}
        predicted: dict[str, tuple[str, float, float, float, float]] = {}
        started: dict[str, float] = {}
        jobs = {j.job_id: j for j in self.trace}
        events: list[tuple[float, int, str, str]] = []
        seq = 0
        for job in self.trace:
            heapq.heappush(events, (job.arrival_s, seq, "arrive", job.job_id))
            seq += 1
        jct: list[float] = []
        fids: list[float] = []
        costs: list[float] = []
        slow: dict[str, list[float]] = {}
        rejected = 0
        chosen = hashlib.sha256()
        decide_s = 0.0
        decisions = 0
        now = 0.0
        wall = time.perf_counter()

        def start_next(dev: _SimDevice) -> None:
            nonlocal seq
            if dev.running is not None or not dev.queue:
                return
            i = next_job(
                dev.queue,
                now,
                aging_s_per_level=sched.aging_s_per_level,
                usage=usage,
                shares=shares,
                fair_share=sched.fair_share,
            )
            waiting = dev.queue.pop(i)
            job = jobs[waiting.job_id]
            duration = predicted[job.job_id][2]
            physical = physical_run_s(
                duration,
                job.shots,
                1,
                rep_delay_s=placer.run_time.rep_delay_s,
                overhead_s=placer.run_time.overhead_s,
            )
            true_s = physical * dev.speed * float(rng.lognormal(0.0, 0.1))
            dev.running = job.job_id
            started[job.job_id] = now
            dev.busy_until = now + true_s
            dev.busy_s += true_s
            heapq.heappush(events, (now + true_s, seq, "done", job.job_id))
            seq += 1

        while events:
            now, _, kind, job_id = heapq.heappop(events)
            job = jobs[job_id]
            if kind == "arrive":
                name, h = self.pool[job.circuit]
                shape = JobShape(job.job_id, (name,), (h,), job.shots)
                loads = [DeviceLoad(d.snapshot, backlog[d.snapshot.name]) for d in devices]
                t0 = time.perf_counter()
                try:
                    placement = placer.place(shape, loads, opts)
                except (PlacementError, DeviceUnavailableError):
                    rejected += 1
                    continue
                finally:
                    decide_s += time.perf_counter() - t0
                    decisions += 1
                dev = by_name[placement.device]
                chosen.update(f"{job_id}={placement.device}\n".encode())
                run_s = placement.run_s
                predicted[job_id] = (
                    dev.snapshot.name,
                    run_s,
                    placement.shot_duration_s,
                    placement.fidelity,
                    placement.cost_usd,
                )
                backlog[dev.snapshot.name] += run_s
                dev.queue.append(Waiting(job_id, job.tenant, job.priority, now, decisions))
                start_next(dev)
                if self.progress and decisions % 10_000 == 0:
                    self.progress(decisions, len(self.trace))
            else:
                name, run_s, duration, fidelity, cost = predicted.pop(job_id)
                dev = by_name[name]
                backlog[name] = max(0.0, backlog[name] - run_s)
                dev.running = None
                length = now - started.pop(job_id)
                placer.run_time.observe(name, duration, job.shots, 1, length)
                usage[job.tenant] = usage.get(job.tenant, 0.0) + length
                jct.append(now - job.arrival_s)
                fids.append(fidelity)
                costs.append(cost)
                slow.setdefault(job.tenant, []).append((now - job.arrival_s) / max(length, 1e-9))
                start_next(dev)
        wall = time.perf_counter() - wall
        makespan = max((d.busy_until for d in devices), default=0.0)
        per_tenant = {t: statistics.fmean(v) for t, v in sorted(slow.items())}
        return SimReport(
            policy=label or policy,
            jobs=len(self.trace),
            done=len(jct),
            rejected=rejected,
            mean_jct_s=statistics.fmean(jct) if jct else math.nan,
            p95_jct_s=float(np.percentile(jct, 95)) if jct else math.nan,
            mean_fidelity=statistics.fmean(fids) if fids else math.nan,
            mean_cost_usd=statistics.fmean(costs) if costs else math.nan,
            utilisation=sum(d.busy_s for d in devices) / (len(devices) * makespan)
            if makespan
            else 0.0,
            fairness=jain_index([1 / s for s in per_tenant.values() if s > 0]),
            makespan_s=makespan,
            wall_s=wall,
            decisions_per_s=decisions / decide_s if decide_s else math.inf,
            per_tenant_slowdown=per_tenant,
            choices_sha256=chosen.hexdigest(),
        )
