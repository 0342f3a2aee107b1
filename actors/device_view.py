"""The scheduler's view of its devices: their last snapshots as placement must see
them, the circuit breakers on their links, and the watchdog on their batches.

Plain Python, no Ray: the scheduler polls the devices through its ports and hands the
answers to :meth:`DeviceView.observe`, which says which devices restarted and which
stopped taking work or recalibrated; the scheduler moves their jobs.
"""

from __future__ import annotations

import logging
import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field, replace

from qrt_ray.config import FaultConfig, LinkConfig
from qrt_ray.metrics import RuntimeMetrics
from qrt_ray.models import DeviceSnapshot, DeviceStatus
from qrt_ray.policies.health import BatchWatch, CircuitBreaker
from qrt_ray.results import RawRun, RunError

logger = logging.getLogger("qrt.scheduler")

# A device that stopped taking work, or stopped for a while: the missing shots of a
# partial run cannot wait for it (they must run on the calibration that ran the rest).
_NOT_COMING_BACK = (
    DeviceStatus.CALIBRATING,
    DeviceStatus.DRAINING,
    DeviceStatus.MAINTENANCE,
    DeviceStatus.OFFLINE,
)


@dataclass(slots=True)
class Changes:
    """What a poll found: devices that restarted (their queues are lost), and devices
    that stopped taking work or recalibrated (their waiting work must move), each
    with the reason."""

    restarted: dict[str, str] = field(default_factory=dict)
    changed: dict[str, str] = field(default_factory=dict)


@dataclass(frozen=True, slots=True)
class GivenUp:
    """A device the watchdog gave up on, why, and the metric cause (hung or silent)."""

    device: str
    reason: str
    cause: str


def unreachable(snap: DeviceSnapshot, reason: str) -> DeviceSnapshot:
    """``snap`` as placement must see a device that is not answering or restarting."""
    return replace(snap, status=DeviceStatus.UNREACHABLE, status_reason=reason)


class DeviceView:
    """The devices as the scheduler last saw them, and how far it trusts them.

    Args:
        faults: when to give up on a hung or silent device, how long a partial run
            waits for its device.
        link: the circuit breaker's limits.
        clock: wall clock (injected for tests).
        metrics: where restarts, recalibrations, queue depths and breaker trips go.
    """

    def __init__(
        self,
        faults: FaultConfig,
        link: LinkConfig,
        clock: Callable[[], float],
        metrics: RuntimeMetrics,
    ) -> None:
        self.faults = faults
        self.link = link
        self.snapshots: list[DeviceSnapshot] = []
        self.watch = BatchWatch()
        # when the devices were last polled (monotonic); -inf: poll at the next chance
        self.polled_at = -math.inf
        self._clock = clock
        self._metrics = metrics
        self._breakers: dict[str, CircuitBreaker] = {}
        # devices seen UNREACHABLE, since when (partial runs wait a while for them)
        self._down_since: dict[str, float] = {}
        # devices that stopped answering polls with no batch in flight, since when
        self._silent_since: dict[str, float] = {}
        # devices given up on (hung), and why, until they come back as a new incarnation
        self._suspect: dict[str, str] = {}

    # -- reading ------------------------------------------------------------------------

    def get(self, device: str) -> DeviceSnapshot | None:
        """The device as last seen (None if unknown)."""
        return next((s for s in self.snapshots if s.name == device), None)

    def runs_work(self, device: str) -> bool:
        """Whether the device, as last seen, runs the work it holds."""
        snap = self.get(device)
        return snap is None or snap.status.runs_work

    def paused_why(self, device: str) -> str:
        """Why ``device``, as last seen, does not run the work it holds."""
        snap = self.get(device)
        return f"{device} is {snap.status.value}" if snap is not None else f"{device} is gone"

    def stranded(self, device: str) -> str | None:
        """Why the missing shots of a partial run cannot wait for ``device``, if so.

        They must run on the calibration that ran the rest: a device that is
        recalibrating, draining, in maintenance or offline will not give it back soon,
        and one unreachable for ``faults.partial_wait_s`` may never.
        """
        snap = self.get(device)
        if snap is None:
            return f"{device} is gone"
        if snap.status in _NOT_COMING_BACK:
            return f"{device} is {snap.status.value}"
        since = self._down_since.get(device)
        now = self._clock()
        if since is not None and now - since >= self.faults.partial_wait_s:
            return f"{device} unreachable for {now - since:.0f} s"
        return None

    # -- what the scheduler learns -------------------------------------------------------

    def look_again(self) -> None:
        """Poll at the next chance (a device recalibrated or tripped its breaker)."""
        self.polled_at = -math.inf

    def mark_unreachable(self, device: str, reason: str) -> None:
        """Placement sees ``device`` unreachable until its next answer."""
        self.snapshots = [unreachable(s, reason) if s.name == device else s for s in self.snapshots]

    def observe(self, got: Sequence[DeviceSnapshot], polled_at: float) -> Changes:
        """Take a poll's answers: returns which devices restarted and which changed.

        A device with a batch in flight that did not answer is busy, not lost: Aer
        holds the GIL through a simulator call (a call of wide matrix-product-state
        circuits held it for minutes), so a device actor running a batch cannot
        answer. Moving its queued work elsewhere then cost an attempt per missed poll
        (one level-2 job reached 13). The hung-batch watchdog, fed by progress between
        calls, judges a device with a batch in flight; a crash shows as a new
        incarnation.
        """
        before = {s.name: s for s in self.snapshots}
        now = {s.name: s for s in got}
        answered = set(now)
        self.polled_at = polled_at
        out = Changes()
        for name, old in before.items():
            snap = now.get(name)
            if snap is None and self.watch.running(name):
                now[name] = old
            elif snap is None:  # did not answer: it takes no new work until it does
                now[name] = unreachable(old, f"{name} is not answering")
                self._silent_since.setdefault(name, self._clock())
            elif old.incarnation and snap.incarnation != old.incarnation:
                out.restarted[name] = f"{name} restarted (its queue was lost)"
                if self._suspect.pop(name, None) is None:  # not a restart we asked for
                    self._metrics.device_restarts.labels(device=name, cause="restarted").inc()
        for name, reason in self._suspect.items():
            if name in now:
                now[name] = unreachable(now[name], reason)
        clock = self._clock()
        for name, breaker in self._breakers.items():
            if name in now and not breaker.allows(clock):
                now[name] = unreachable(now[name], breaker.reason(clock))
        for name, snap in now.items():
            if snap.status is DeviceStatus.UNREACHABLE:
                self._down_since.setdefault(name, clock)
            else:
                self._down_since.pop(name, None)
        for name in answered:
            self._silent_since.pop(name, None)
        self.snapshots = list(now.values())
        self._observe_health(before, clock)
        for snap in self.snapshots:
            self._metrics.queue_depth.labels(device=snap.name).set(snap.queue_depth)
            old = before.get(snap.name)
            if old is None or snap.name in out.restarted:
                continue
            # a draining device still runs what it holds: only other statuses move work
            if snap.status is not old.status and not snap.status.runs_work:
                out.changed[snap.name] = f"{snap.name} went {snap.status.value}"
            elif snap.calibration.calibration_id != old.calibration.calibration_id:
                out.changed[snap.name] = (
                    f"{snap.name} recalibrated ({old.calibration.calibration_id} -> "
                    f"{snap.calibration.calibration_id})"
                )
        return out

    def stopped(self, changed: dict[str, str]) -> list[str]:
        """Of the changed devices, those that take no work now (not only recalibrated)."""
        return [s.name for s in self.snapshots if s.name in changed and not s.status.runs_work]

    def give_up(self) -> list[GivenUp]:
        """Devices to restart: the oldest batch ran far past its expected time, or no
        poll was answered for ``faults.silent_restart_s`` with no batch in flight (a
        frozen process would otherwise hold its pinned work forever). Each is marked
        unreachable until it comes back as a new incarnation."""
        now = self._clock()
        f = self.faults
        out = [
            GivenUp(device, reason, "hung")
            for device, reason in self.watch.overdue(now, f.hung_batch_min_s, f.hung_batch_factor)
        ]
        out += [
            GivenUp(device, f"{device} has answered nothing for {now - since:.0f} s", "silent")
            for device, since in self._silent_since.items()
            if device not in self._suspect and now - since >= f.silent_restart_s
        ]
        for g in out:
            self._suspect[g.device] = g.reason
            self.mark_unreachable(g.device, g.reason)
            self._silent_since.pop(g.device, None)
            self._metrics.device_restarts.labels(device=g.device, cause=g.cause).inc()
        return out

    def link_outcome(self, device: str, runs: Sequence[RawRun], now: float) -> None:
        """Feed a delivery to the device's circuit breaker: one batch lost to its
        control link is one failure, a batch that ran closes a probing breaker."""
        lost = [r for r in runs if r.error_kind in (RunError.LINK, RunError.PERMANENT)]
        for run in lost:
            self._metrics.link_errors.labels(device=device, kind=run.error_kind).inc()
        breaker = self._breaker(device)
        if lost:
            if breaker.failure(now):
                self._metrics.breaker_trips.labels(device=device).inc()
                logger.warning("%s: %s", device, breaker.reason(now))
                self.look_again()  # stop placing there at once
        elif any(not r.error for r in runs):
            breaker.success(now)

    def _breaker(self, device: str) -> CircuitBreaker:
        if device not in self._breakers:
            link = self.link
            self._breakers[device] = CircuitBreaker(
                link.breaker_failures, link.breaker_window_s, link.breaker_cooldown_s
            )
        return self._breakers[device]

    def _observe_health(self, before: dict[str, DeviceSnapshot], now: float) -> None:
        """Calibration age, canaries and recalibrations of each device, as metrics."""
        for snap in self.snapshots:
            cal = snap.calibration
            self._metrics.calibration_age.labels(device=snap.name).set(max(0.0, now - cal.taken_at))
            self._metrics.calibration_time.labels(device=snap.name).set(cal.taken_at)
            for status in DeviceStatus:
                self._metrics.device_status.labels(snap.name, status.value).set(
                    1 if snap.status is status else 0
                )
            if snap.canary_measured is not None and snap.canary_predicted is not None:
                gauge = self._metrics.canary_success
                gauge.labels(device=snap.name, kind="measured").set(snap.canary_measured)
                gauge.labels(device=snap.name, kind="predicted").set(snap.canary_predicted)
            old = before.get(snap.name)
            if old is not None and (old.calibration.calibration_id, old.calibration.taken_at) != (
                cal.calibration_id,
                cal.taken_at,
            ):
                self._metrics.recalibrations.labels(device=snap.name).inc()
