"""A device's measured readout errors, kept per calibration and refreshed only when stale.

A device measures P(1|0) and P(0|1) of the qubits a job read by running two small
circuits (all prepared in 0, all prepared in 1) on what the device really is now. The
figures are reused by every later job on the same calibration until they are older
than the caller allows; a new calibration starts afresh.
"""

from __future__ import annotations

import threading
from collections.abc import Callable, Sequence
from dataclasses import dataclass

from qrt_ray.mitigation.readout import ReadoutCalibration

# measure(qubits, shots, seed) -> (p01 per qubit, p10 per qubit)
MeasureFn = Callable[[Sequence[int], int, int | None], tuple[list[float], list[float]]]


@dataclass(frozen=True, slots=True)
class _QubitReadout:
    p01: float
    p10: float
    shots: int
    measured_at: float


class ReadoutCache:
    """Per-qubit readout errors of the current calibration, thread-safe."""

    def __init__(self, measure: MeasureFn, clock: Callable[[], float]) -> None:
        self._measure = measure
        self._clock = clock
        self._lock = threading.Lock()
        self._calibration_id = ""
        self._qubits: dict[int, _QubitReadout] = {}
        self.shots_spent = 0

    def get(
        self,
        device: str,
        calibration_id: str,
        qubits: Sequence[int],
        *,
        shots: int,
        max_age_s: float,
        seed: int | None = None,
        measure: MeasureFn | None = None,
    ) -> tuple[ReadoutCalibration, int]:
        """Readout errors of ``qubits``, measuring those missing or older than ``max_age_s``
        (with ``measure`` where given, else the cache's own: e.g. on one moment of the
        device that a caller's other circuits ran on).

        Returns:
            (the calibration of exactly ``qubits``, device shots spent now: 0 if reused).
        """
        wanted = sorted(set(qubits))
        with self._lock:
            if calibration_id != self._calibration_id:
                self._calibration_id = calibration_id
                self._qubits = {}
            now = self._clock()
            stale = [
                q
                for q in wanted
                if q not in self._qubits or now - self._qubits[q].measured_at > max_age_s
            ]
            spent = 0
            if stale:
                p01, p10 = (measure or self._measure)(stale, shots, seed)
                for q, a, b in zip(stale, p01, p10, strict=True):
                    self._qubits[q] = _QubitReadout(a, b, shots, now)
                spent = 2 * shots
                self.shots_spent += spent
            entries = [self._qubits[q] for q in wanted]
        return (
            ReadoutCalibration(
                device=device,
                calibration_id=calibration_id,
                qubits=tuple(wanted),
                p01=tuple(e.p01 for e in entries),
                p10=tuple(e.p10 for e in entries),
                shots=min(e.shots for e in entries) if entries else shots,
                measured_at=min(e.measured_at for e in entries) if entries else now,
            ),
            spent,
        )
