"""How good any placement could be on a simulated trace: an upper bound on mean fidelity
for a given makespan and utilisation, by linear programming.

A policy that keeps a farm busy must use its devices, good and bad alike: at 85 %
offered load, bounded waits need about 85 % of the farm's capacity, whatever the
policy. This module puts a number on that trade-off. Relax the trace to a
transportation problem: every job of a kind (circuit, shots) goes to some device that
fits it, no device works longer than the makespan ``M``, and, for a utilisation of at
least ``u``, the work done fills at least ``u`` of the devices' time up to ``M``.
Maximise the mean fidelity. Any real schedule with that makespan and utilisation is a
feasible point of the relaxation (arrival times and queueing only constrain it
further). The fidelities are the placement estimator's (the figure the simulator
reports for a job, cached with the simulator's own), and the run times the unrouted
ones at each device's hidden speed (no run is shorter, but for the simulator's
per-run noise of about 10 %), so the optimum bounds every policy from above.
"""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass

import numpy as np
from scipy.optimize import linprog
from scipy.sparse import coo_matrix, vstack

from qrt_ray.evaluation.simulator import FarmSimulator
from qrt_ray.policies.costs import physical_run_s
from qrt_ray.policies.fidelity import nominal_duration_s


@dataclass(frozen=True, slots=True)
class FidelityBound:
    """The best mean fidelity any placement of a trace could reach.

    Attributes:
        makespan_s: no device works past this.
        min_utilisation: busy share of the devices' time up to the makespan, at least.
        mean_fidelity: the bound (NaN when no placement meets both).
        devices_used: devices given any work in the optimum.
    """

    makespan_s: float
    min_utilisation: float
    mean_fidelity: float
    devices_used: int


class PlacementBound:
    """The relaxation of one simulator's trace, built once and solved per target.

    Args:
        sim: the simulator whose devices and trace are bounded.
    """

    def __init__(self, sim: FarmSimulator) -> None:
        prior = sim.policy_config.run_time
        kinds = Counter((job.circuit, job.shots) for job in sim.trace)
        self.kinds = sorted(kinds)
        self.counts = np.array([kinds[k] for k in self.kinds], dtype=float)
        self.jobs = int(self.counts.sum())
        self.devices = len(sim.snapshots)
        rows, cols, fid, secs = [], [], [], []
        for d, (snap, speed) in enumerate(zip(sim.snapshots, sim.speeds, strict=True)):
            cal = snap.calibration
            for k, (circuit, shots) in enumerate(self.kinds):
                name, profile = sim.pool[circuit]
                if profile.num_qubits > snap.num_qubits:
                    continue
                rows.append(k)
                cols.append(d)
                fid.append(sim.estimator.estimate(name, profile, cal).esp)
                duration = nominal_duration_s(profile, cal)
                secs.append(
                    speed
                    * physical_run_s(
                        duration,
                        shots,
                        1,
                        rep_delay_s=prior.rep_delay_s,
                        overhead_s=prior.job_overhead_s,
                    )
                )
        self._kind = np.array(rows)
        self._device = np.array(cols)
        self._fidelity = np.array(fid)
        self._seconds = np.array(secs)

    def solve(self, makespan_s: float, min_utilisation: float = 0.0) -> FidelityBound:
        """The bound for one makespan and utilisation."""
        n = len(self._fidelity)
        kinds, devices = len(self.kinds), self.devices
        # every job of a kind is placed somewhere
        a_eq = coo_matrix((np.ones(n), (self._kind, np.arange(n))), shape=(kinds, n))
        # no device works past the makespan ...
        a_cap = coo_matrix((self._seconds, (self._device, np.arange(n))), shape=(devices, n))
        # ... and the work fills at least min_utilisation of the devices' time
        a_use = coo_matrix(-self._seconds[np.newaxis, :])
        result = linprog(
            -self._fidelity,
            A_ub=vstack([a_cap, a_use]).tocsr(),
            b_ub=np.concatenate(
                [np.full(devices, makespan_s), [-min_utilisation * devices * makespan_s]]
            ),
            A_eq=a_eq.tocsr(),
            b_eq=self.counts,
            bounds=(0, None),
            method="highs",
        )
        if result.status != 0:
            return FidelityBound(makespan_s, min_utilisation, float("nan"), 0)
        used = len(set(self._device[result.x > 1e-9].tolist()))
        return FidelityBound(makespan_s, min_utilisation, -result.fun / self.jobs, used)
