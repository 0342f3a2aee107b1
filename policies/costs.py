"""What a job would cost, how long it would run, and how long it would wait, per device.

Pure functions and one small learner, no Ray and no clock:

* :func:`price_usd`: the farm config's ``price_per_job_usd`` plus
  ``price_per_shot_usd`` for every shot of every circuit.
* :class:`RunTimeModel`: expected run time from the physics of a shot (the compiled
  circuit's duration plus the device's repetition delay) times the shots, plus a
  per-job overhead, scaled by a per-device correction learned from that device's own
  history (an exponentially weighted mean of observed / predicted). A simulator and a
  QPU differ wildly in absolute speed; the correction makes the model honest for
  either without a separate model per kind.

The expected wait is the predicted run time of the work already placed on a device
(the scheduler and the simulator keep that backlog).
"""

from __future__ import annotations

import math
import threading
from dataclasses import dataclass

import numpy as np

# A superconducting device resets between shots: IBM's default repetition delay.
DEFAULT_REP_DELAY_S = 250e-6
DEFAULT_JOB_OVERHEAD_S = 0.5
_MIN_FACTOR, _MAX_FACTOR = 1e-3, 1e6


def price_usd(price_per_job: float, price_per_shot: float, shots: int, circuits: int) -> float:
    """Price of one job: per-job fee plus per-shot fee for every shot of every circuit."""
    return price_per_job + price_per_shot * shots * circuits


def physical_run_s(
    duration_s: float,
    shots: int,
    circuits: int,
    *,
    rep_delay_s: float = DEFAULT_REP_DELAY_S,
    overhead_s: float = DEFAULT_JOB_OVERHEAD_S,
) -> float:
    """Run time of a job on hardware: every shot of every circuit plus reset, plus overhead."""
    return overhead_s + circuits * shots * (duration_s + rep_delay_s)


@dataclass(frozen=True, slots=True)
class RunTimeCorrection:
    """A device's learned ratio of observed to physical run time.

    Attributes:
        factor: multiply :func:`physical_run_s` by this.
        samples: observations behind it (0: the prior, factor 1).
    """

    factor: float = 1.0
    samples: int = 0


class RunTimeModel:
    """Expected run time per device, corrected by what each device really took.

    Args:
        alpha: weight of the newest observation in the exponentially weighted mean
            (of log ratios, so one 10x outlier moves it as much as one 0.1x).
        rep_delay_s: reset time between shots.
        overhead_s: fixed cost of one job (load, compile hand-off, result).
    """

    def __init__(
        self,
        *,
        alpha: float = 0.2,
        rep_delay_s: float = DEFAULT_REP_DELAY_S,
        overhead_s: float = DEFAULT_JOB_OVERHEAD_S,
    ) -> None:
        if not 0 < alpha <= 1:
            raise ValueError(f"alpha={alpha} must be in (0, 1]")
        self.alpha = alpha
        self.rep_delay_s = rep_delay_s
        self.overhead_s = overhead_s
        # device -> (mean log ratio, samples, its exp: the factor predict multiplies by)
        self._learned: dict[str, tuple[float, int, float]] = {}
        # the factors as one array for the last device list asked (see factors())
        self._columns: tuple[tuple[str, ...], dict[str, int], np.ndarray] | None = None
        self._lock = threading.Lock()

    def correction(self, device: str) -> RunTimeCorrection:
        """The device's learned correction (the prior when it has no history)."""
        _, n, factor = self._learned.get(device, (0.0, 0, 1.0))
        return RunTimeCorrection(factor, n)

    def predict(self, device: str, duration_s: float, shots: int, circuits: int) -> float:
        """Expected seconds for ``circuits`` circuits of ``duration_s`` at ``shots`` each."""
        base = physical_run_s(
            duration_s, shots, circuits, rep_delay_s=self.rep_delay_s, overhead_s=self.overhead_s
        )
        # A plain dict read (atomic under the GIL): this runs once per device per decision.
        return base * self._learned.get(device, (0.0, 0, 1.0))[2]

    def factors(self, names: tuple[str, ...]) -> np.ndarray:
        """Each device's learned factor (1 without history), in ``names`` order.

        The array is kept for the last ``names`` asked (the same tuple object) and
        updated in place by :meth:`observe`, so a placement over a large farm reads it
        without a lookup per device. Read it, never write it.
        """
        with self._lock:
            if self._columns is None or self._columns[0] is not names:
                learned = self._learned
                values = [learned[n][2] if n in learned else 1.0 for n in names]
                position = {n: i for i, n in enumerate(names)}
                self._columns = (names, position, np.array(values, dtype=float))
            return self._columns[2]

    def observe(
        self, device: str, duration_s: float, shots: int, circuits: int, seconds: float
    ) -> None:
        """Learn from one finished run that took ``seconds``."""
        base = physical_run_s(
            duration_s, shots, circuits, rep_delay_s=self.rep_delay_s, overhead_s=self.overhead_s
        )
        if base <= 0 or seconds <= 0 or not math.isfinite(seconds):
            return
        ratio = min(_MAX_FACTOR, max(_MIN_FACTOR, seconds / base))
        with self._lock:
            log_f, n, _ = self._learned.get(device, (0.0, 0, 1.0))
            # The first observation replaces the prior outright.
            new = (
                math.log(ratio)
                if n == 0
                else (1 - self.alpha) * log_f + self.alpha * math.log(ratio)
            )
            self._learned[device] = (new, n + 1, math.exp(new))
            if self._columns is not None and device in self._columns[1]:
                self._columns[2][self._columns[1][device]] = math.exp(new)
