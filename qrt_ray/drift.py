"""How a device's true noise drifts away from its last calibration.

A real device's T1/T2, gate and readout errors change by the hour, and now and then
a qubit collapses (a two-level-system defect takes its coherence) or a coupler goes
bad. Its *reported* calibration changes only when it is recalibrated. The farm's
devices play this with :class:`DriftProcess`: the simulator runs on
:meth:`DriftProcess.true_calibration`, placement and compile see the reported one,
and the gap between them is what canaries must find.

The model, per step of ``step_s`` drift seconds (``dt`` hours):

- **Coherence** of each qubit wanders as a mean-reverting log-multiplier on T1 and
  T2 (Ornstein-Uhlenbeck, ``coherence_sd_per_hour``, memory ``coherence_memory_h``).
  Calibration measures it but cannot change it.
- **Gate and readout errors** each take a log-multiplier that grows by
  ``error_trend_per_hour`` plus a random walk (``error_sd_per_hour``): controls
  detune after a calibration. A recalibration retunes them: the multiplier returns
  to 1.
- **Events.** A qubit starts a TLS event at ``tls_per_qubit_hour`` (T1 and T2 times
  ``tls_coherence_factor``); a coupler (an edge of the coupling map) goes bad at
  ``coupler_per_edge_hour`` (its two-qubit gate errors times
  ``coupler_error_factor``). Events last ``event_mean_h`` on average, and a
  recalibration does not end them.

Every step draws from its own generator seeded by ``(seed, step)``, so the process
is a pure function of the seed, the drift time and the recalibration times, whatever
order it is asked in.
"""

from __future__ import annotations

import dataclasses
import math
import threading
from dataclasses import dataclass

import numpy as np

from qrt_ray.calibration import with_recomputed_id
from qrt_ray.config import DriftConfig
from qrt_ray.models import CalibrationSnapshot

# Drifted errors stay below this (a base value above it is kept as it is): a
# depolarizing error beyond it no longer describes a working gate.
MAX_DRIFTED_ERROR = 0.5
_SNAPSHOT_CACHE = 64


@dataclass(slots=True)
class _State:
    step: int
    coherence: np.ndarray  # log-multiplier per qubit (T1 and T2)
    gate: np.ndarray  # log-multiplier per gate instance (base.gates order)
    readout: np.ndarray  # log-multiplier per qubit
    tls: np.ndarray  # bool per qubit
    coupler: np.ndarray  # bool per edge (self._edges order)

    def copy(self) -> _State:
        return _State(
            self.step,
            self.coherence.copy(),
            self.gate.copy(),
            self.readout.copy(),
            self.tls.copy(),
            self.coupler.copy(),
        )


class DriftProcess:
    """The true noise of one device over time, starting from its base calibration.

    Args:
        base: the calibration the device starts with (drift time 0).
        config: rates and the time scale.
        start: wall-clock seconds at which drift time 0 falls.
    """

    def __init__(self, base: CalibrationSnapshot, config: DriftConfig, start: float) -> None:
        self.base = base
        self.config = config
        self.start = start
        self._edges = sorted({tuple(sorted(g.qubits)) for g in base.gates if len(g.qubits) == 2})
        self._edge_of_gate = [
            self._edges.index(tuple(sorted(g.qubits))) if len(g.qubits) == 2 else -1
            for g in base.gates
        ]
        self._retunes: list[int] = []
        self._state = self._initial()
        self._snapshots: dict[int, CalibrationSnapshot] = {}
        # a device actor asks from several threads (batches, canaries, restores)
        self._lock = threading.RLock()

    # -- time -------------------------------------------------------------------------

    def step_at(self, now: float) -> int:
        """The drift step that wall-clock time ``now`` falls in (0 before ``start``)."""
        drift_s = max(0.0, (now - self.start) * self.config.time_scale)
        return int(drift_s // self.config.step_s)

    def wall_time_of(self, step: int) -> float:
        """Wall-clock seconds at which ``step`` begins."""
        return self.start + step * self.config.step_s / self.config.time_scale

    # -- what the device really is --------------------------------------------------

    def true_calibration(self, now: float) -> CalibrationSnapshot:
        """The device's true parameters at ``now`` (what the simulator must use)."""
        with self._lock:
            return self._true_calibration(now)

    def _true_calibration(self, now: float) -> CalibrationSnapshot:
        step = self.step_at(now)
        snap = self._snapshots.get(step)
        if snap is None:
            snap = self._snapshot(self._state_at(step))
            if len(self._snapshots) >= _SNAPSHOT_CACHE:
                self._snapshots.pop(next(iter(self._snapshots)))
            self._snapshots[step] = snap
        return snap

    def recalibrate(self, now: float) -> CalibrationSnapshot:
        """Retune the device at ``now`` and measure it: the new reported calibration.

        Gate and readout errors return to their base values; coherence and ongoing
        events stay as they are (a calibration measures them, it cannot fix them).
        Later steps drift on from here.
        """
        with self._lock:
            return self._recalibrate(now)

    def _recalibrate(self, now: float) -> CalibrationSnapshot:
        step = self.step_at(now)
        if step not in self._retunes:
            self._retunes.append(step)
            self._retunes.sort()
            # states and snapshots from this step on were computed without the retune
            self._snapshots = {k: v for k, v in self._snapshots.items() if k < step}
            if self._state.step >= step:
                self._state = self._initial()
        measured = self._true_calibration(now)
        return dataclasses.replace(measured, taken_at=float(now))

    def retuned_at(self, when: float) -> None:
        """Note a retune at wall time ``when`` (a calibration restored after a restart)."""
        self.recalibrate(when)

    def events(self, now: float) -> dict[str, list]:
        """Events in progress at ``now``: TLS qubits and bad couplers."""
        with self._lock:
            state = self._state_at(self.step_at(now))
        return {
            "tls_qubits": [int(q) for q in np.flatnonzero(state.tls)],
            "bad_couplers": [self._edges[int(e)] for e in np.flatnonzero(state.coupler)],
        }

    # -- the process ------------------------------------------------------------------

    def _initial(self) -> _State:
        n, g, e = self.base.num_qubits, len(self.base.gates), len(self._edges)
        return _State(
            0,
            np.zeros(n),
            np.zeros(g),
            np.zeros(n),
            np.zeros(n, dtype=bool),
            np.zeros(e, dtype=bool),
        )

    def _state_at(self, step: int) -> _State:
        if step < self._state.step:
            self._state = self._initial()  # asked about the past: replay from 0
        state = self._state
        while state.step < step:
            self._advance(state)
        return state.copy()

    def _advance(self, state: _State) -> None:
        cfg = self.config
        dt = cfg.step_s / 3600.0
        rng = np.random.default_rng((cfg.seed, state.step + 1))
        n, e = len(state.coherence), len(state.coupler)
        keep = math.exp(-dt / cfg.coherence_memory_h)
        sd = math.sqrt(dt)
        state.coherence = state.coherence * keep + cfg.coherence_sd_per_hour * sd * (
            rng.standard_normal(n)
        )
        state.gate = (
            state.gate
            + cfg.error_trend_per_hour * dt
            + cfg.error_sd_per_hour * sd * (rng.standard_normal(len(state.gate)))
        )
        state.readout = (
            state.readout
            + cfg.error_trend_per_hour * dt
            + (cfg.error_sd_per_hour * sd * rng.standard_normal(n))
        )
        ends = 1.0 - math.exp(-dt / cfg.event_mean_h)
        tls_starts = rng.random(n) < 1.0 - math.exp(-cfg.tls_per_qubit_hour * dt)
        tls_ends = rng.random(n) < ends
        state.tls = np.where(state.tls, ~tls_ends, tls_starts)
        coupler_starts = rng.random(e) < 1.0 - math.exp(-cfg.coupler_per_edge_hour * dt)
        coupler_ends = rng.random(e) < ends
        state.coupler = np.where(state.coupler, ~coupler_ends, coupler_starts)
        state.step += 1
        if state.step in self._retunes:
            state.gate[:] = 0.0
            state.readout[:] = 0.0

    def _snapshot(self, state: _State) -> CalibrationSnapshot:
        base, cfg = self.base, self.config
        coherence = np.exp(state.coherence) * np.where(state.tls, cfg.tls_coherence_factor, 1.0)
        t1 = [float(t) * float(c) for t, c in zip(base.t1_s, coherence, strict=True)]
        # one factor for T1 and T2 keeps T2 <= 2 T1 wherever the base calibration had it
        t2 = [float(t) * float(c) for t, c in zip(base.t2_s, coherence, strict=True)]
        readout = [
            capped_error(float(r), math.exp(float(m)))
            for r, m in zip(base.readout_error, state.readout, strict=True)
        ]
        gates = []
        for gate, log_m, edge in zip(base.gates, state.gate, self._edge_of_gate, strict=True):
            factor = math.exp(float(log_m))
            if edge >= 0 and state.coupler[edge]:
                factor *= cfg.coupler_error_factor
            gates.append(dataclasses.replace(gate, error=capped_error(gate.error, factor)))
        snap = dataclasses.replace(
            base,
            taken_at=self.wall_time_of(state.step),
            t1_s=tuple(t1),
            t2_s=tuple(t2),
            readout_error=tuple(readout),
            gates=tuple(gates),
        )
        return with_recomputed_id(snap)


def capped_error(base: float, factor: float) -> float:
    """``base`` times ``factor``, kept below :data:`MAX_DRIFTED_ERROR` (or ``base``)."""
    return min(base * factor, max(base, MAX_DRIFTED_ERROR))
