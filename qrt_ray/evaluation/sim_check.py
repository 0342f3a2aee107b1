"""The farm simulator's fidelities, checked against real noisy simulation on a sample.

The simulator scores a job by the estimator's ESP on the (perturbed, cloned) device it
ran on. Here a sample of (circuit, device) pairs from one simulator is run for real:
each circuit compiled for the clone's calibration (Qiskit level 3) and simulated by
Aer with the noise model built from that same calibration, then scored by Hellinger
fidelity against its noiseless output. ESP is the probability that no error happens;
a noisy shot can still land on a right answer, so the measured fidelity sits above
ESP, by how much depends on the circuit. What placement needs is the order: for one
circuit, does a higher ESP mean a better device? So the check reports the rank
correlation within each circuit as well as across all pairs.
"""

from __future__ import annotations

import statistics
from collections.abc import Callable, Sequence
from dataclasses import dataclass

import numpy as np
from qiskit import transpile
from qiskit.transpiler import Target
from scipy.stats import rankdata

from qrt_ray.aer import sim_method_for
from qrt_ray.calibration import load_backend
from qrt_ray.evaluation.simulator import FarmSimulator
from qrt_ray.fidelity import hellinger_fidelity
from qrt_ray.models import DeviceSnapshot
from qrt_ray.noise import make_simulator, target_from_snapshot
from qrt_ray.policies.fidelity import profile_circuit
from qrt_ray.workloads import WorkloadCircuit, generate_workload


@dataclass(frozen=True, slots=True)
class PairCheck:
    """One (circuit, device) pair: the estimate and the real noisy run."""

    circuit: str
    device: str
    esp: float
    measured: float


@dataclass(frozen=True, slots=True)
class EstimateCheck:
    """What the sample showed.

    Attributes:
        pairs: every pair checked.
        spearman_all: rank correlation of ESP with measured fidelity over all pairs.
        spearman_within: mean over circuits of the rank correlation across its devices.
        mean_esp: mean estimated ESP.
        mean_measured: mean measured Hellinger fidelity.
        best_device_agreement: share of circuits whose highest-ESP device also measured
            best (or within 0.01 of the best).
    """

    pairs: tuple[PairCheck, ...]
    spearman_all: float
    spearman_within: float
    mean_esp: float
    mean_measured: float
    best_device_agreement: float


def spearman(xs: Sequence[float], ys: Sequence[float]) -> float:
    """Spearman's rank correlation (average ranks for ties); 0 when either side is flat."""
    if len(xs) != len(ys):
        raise ValueError(f"xs and ys differ in length ({len(xs)} vs {len(ys)})")
    if len(xs) < 2:
        return 0.0

    rx, ry = rankdata(xs), rankdata(ys)  # ties share their mean rank
    if rx.std() == 0 or ry.std() == 0:
        return 0.0
    return float(np.corrcoef(rx, ry)[0, 1])


def check_estimates(
    sim: FarmSimulator,
    *,
    circuits: int = 6,
    devices_per_circuit: int = 4,
    shots: int = 2000,
    seed: int = 0,
    progress: Callable[[int, int], None] | None = None,
) -> EstimateCheck:
    """Run a sample of ``sim``'s (circuit, device) pairs as real noisy simulations.

    Args:
        sim: the simulator whose devices and circuit pool are checked.
        circuits: circuits of the pool to sample.
        devices_per_circuit: fitting devices sampled per circuit.
        shots: shots per noisy run.
        seed: sampling and simulator seed.
        progress: called with (pairs done, pairs in all).
    """
    cfg = sim.config
    pool = generate_workload(cfg.circuits, min_qubits=3, max_qubits=cfg.max_qubits, seed=cfg.seed)
    rng = np.random.default_rng(seed)
    bases = {dev.name: load_backend(dev.backend).target for dev in sim.farm.devices}
    picks = rng.choice(len(pool), size=min(circuits, len(pool)), replace=False)
    plan = []
    for index in picks:
        work = pool[int(index)]
        fitting = [s for s in sim.snapshots if s.num_qubits >= work.num_qubits]
        size = min(devices_per_circuit, len(fitting))
        chosen = rng.choice(len(fitting), size=size, replace=False)
        plan.extend((work, fitting[int(j)]) for j in chosen)
    pairs = []
    for done, (work, snap) in enumerate(plan):
        pairs.append(_check_pair(sim, work, snap, bases, shots, seed))
        if progress:
            progress(done + 1, len(plan))
    by_circuit: dict[str, list[PairCheck]] = {}
    for p in pairs:
        by_circuit.setdefault(p.circuit, []).append(p)
    within = [
        spearman([p.esp for p in group], [p.measured for p in group])
        for group in by_circuit.values()
        if len(group) > 1
    ]
    agree = [
        max(group, key=lambda p: p.esp).measured >= max(p.measured for p in group) - 0.01
        for group in by_circuit.values()
    ]
    return EstimateCheck(
        pairs=tuple(pairs),
        spearman_all=spearman([p.esp for p in pairs], [p.measured for p in pairs]),
        spearman_within=statistics.fmean(within) if within else 0.0,
        mean_esp=statistics.fmean(p.esp for p in pairs),
        mean_measured=statistics.fmean(p.measured for p in pairs),
        best_device_agreement=sum(agree) / len(agree),
    )


def _check_pair(
    sim: FarmSimulator,
    work: WorkloadCircuit,
    snap: DeviceSnapshot,
    bases: dict[str, Target],
    shots: int,
    seed: int,
) -> PairCheck:
    cal = snap.calibration
    base_name = snap.name.rsplit("-", 1)[0]  # clones are named <farm device>-<index>
    # The simulator keys its estimates by circuit name: share its cache.
    esp = sim.estimator.estimate(work.name, profile_circuit(work.circuit), cal).esp
    target = target_from_snapshot(cal, bases[base_name])
    compiled = transpile(work.circuit, target=target, optimization_level=3, seed_transpiler=seed)
    simulator, _, _ = make_simulator(cal, bases[base_name], gpu="never")
    active = len({compiled.find_bit(q).index for g in compiled.data for q in g.qubits})
    method = sim_method_for(active, shots)
    counts = (
        simulator.run(compiled, shots=shots, seed_simulator=seed, method=method)
        .result()
        .get_counts()
    )
    return PairCheck(work.name, snap.name, esp, hellinger_fidelity(counts, work.ideal))
