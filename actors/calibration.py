"""The calibration manager: canaries, recalibration, maintenance and calibration history.

:class:`CalibrationManager` is plain asyncio over a job store and
:class:`CalibrationPorts`; ``actors/calibration_actor.py`` wraps it as a Ray actor and
tests drive it with :class:`LocalCalibrationPorts` and an injected clock. Each step,
for every device: restore its calibration if it restarted, keep any new calibration
in the store's history, and act on :func:`qrt_ray.policies.canary.decide`:

- canaries on schedule; a round that finds drift pauses the device (``CALIBRATING``:
  its running batch finishes, the scheduler moves its waiting work), then it is
  recalibrated (new calibration id and noise model) and verified by a second round;
  a verified device goes back to the status it had; ``offline_after`` failed
  verifications in a row make it ``OFFLINE`` with the reason;
- a calibration older than ``max_age_s`` is replaced the same way;
- inside a maintenance window the device is ``MAINTENANCE``; after it, recalibrated.
"""

from __future__ import annotations

import asyncio
import contextlib
import datetime
import logging
import math
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, replace
from typing import Any, Protocol

from qrt_ray.actors.device import Device
from qrt_ray.calibration import calibration_from_json, calibration_to_json
from qrt_ray.config import CalibrationConfig
from qrt_ray.errors import DeviceUnavailableError, ValidationError, brief
from qrt_ray.models import CalibrationSnapshot, DeviceSnapshot, DeviceStatus
from qrt_ray.policies.canary import (
    OFFLINE_REASON,
    Action,
    CalibrationState,
    CanaryResult,
    CanarySpec,
    Phase,
    RoundVerdict,
    after_canary,
    after_verification,
    age_reason,
    canary_round,
    decide,
    judge_round,
    resumed,
    start_recalibration,
)
from qrt_ray.store import CalibrationRecord, CanaryRecord, MaintenanceWindow

logger = logging.getLogger("qrt.calibration")


class CalibrationStore(Protocol):
    """The part of the job store the manager uses: a :class:`~qrt_ray.store.JobStore`
    in process, the scheduler's store reached through the scheduler under Ray."""

    def calibrations(self, device: str, limit: int = 20) -> list[CalibrationRecord]: ...
    def record_calibration(self, record: CalibrationRecord) -> bool: ...
    def canaries(self, device: str, limit: int = 20) -> list[CanaryRecord]: ...
    def record_canary(self, record: CanaryRecord) -> None: ...
    def add_maintenance(self, window: MaintenanceWindow) -> None: ...
    def remove_maintenance(self, window_id: str) -> bool: ...
    def maintenance_windows(
        self, device: str | None = None, ending_after: float | None = None
    ) -> list[MaintenanceWindow]: ...


# the status each phase holds a device in
_HELD = {
    Phase.RECALIBRATING: DeviceStatus.CALIBRATING,
    Phase.MAINTENANCE: DeviceStatus.MAINTENANCE,
    Phase.OFFLINE: DeviceStatus.OFFLINE,
}


class CalibrationPorts(Protocol):
    """What the manager does to devices."""

    async def snapshots(self) -> list[DeviceSnapshot]:
        """Devices that answered, now."""
        ...

    async def run_canaries(
        self,
        device: str,
        specs: Sequence[CanarySpec],
        shots: int,
        seed: int | None,
        versions: Mapping[str, Sequence[str]] | None = None,
    ) -> list[CanaryResult]:
        """Run canaries on a device, post-processed by each of ``versions`` (see
        :meth:`qrt_ray.actors.device.Device.run_canaries`)."""
        ...

    async def recalibrate(self, device: str) -> CalibrationSnapshot:
        """Retune and measure a device; returns its new calibration."""
        ...

    async def restore(self, device: str, calibration: CalibrationSnapshot) -> None:
        """Give a restarted device back its last calibration."""
        ...

    async def set_status(self, device: str, status: DeviceStatus, reason: str) -> None:
        """Set whether a device takes work, and why."""
        ...

    async def set_health(
        self, device: str, predicted: float, measured: float, at: float, degraded: str
    ) -> None:
        """Tell a device what its last canary round found."""
        ...

    async def busy(self, device: str) -> bool:
        """Whether a device still has a batch running."""
        ...


class LocalCalibrationPorts:
    """In-process ports over plain devices (tests and the calibration benchmark)."""

    def __init__(self, devices: Sequence[Device]) -> None:
        self.devices = {d.name: d for d in devices}

    async def snapshots(self) -> list[DeviceSnapshot]:
        return [d.snapshot() for d in self.devices.values()]

    async def run_canaries(
        self,
        device: str,
        specs: Sequence[CanarySpec],
        shots: int,
        seed: int | None,
        versions: Mapping[str, Sequence[str]] | None = None,
    ) -> list[CanaryResult]:
        return await asyncio.to_thread(
            self.devices[device].run_canaries, specs, shots, seed, versions
        )

    async def recalibrate(self, device: str) -> CalibrationSnapshot:
        return self.devices[device].recalibrate()

    async def restore(self, device: str, calibration: CalibrationSnapshot) -> None:
        self.devices[device].restore_calibration(calibration)

    async def set_status(self, device: str, status: DeviceStatus, reason: str) -> None:
        self.devices[device].set_status(status, reason)

    async def set_health(
        self, device: str, predicted: float, measured: float, at: float, degraded: str
    ) -> None:
        self.devices[device].set_health(predicted, measured, at, degraded)

    async def busy(self, device: str) -> bool:
        return False  # the caller runs batches itself, between steps


@dataclass(slots=True)
class DeviceAccount:
    """Device time a device spent on calibration, and what the manager did."""

    canary_s: float = 0.0
    recalibration_s: float = 0.0
    canary_rounds: int = 0
    recalibrations: int = 0
    detections: int = 0

    @property
    def total_s(self) -> float:
        """Device seconds spent on canaries and recalibrations."""
        return self.canary_s + self.recalibration_s


class CalibrationManager:
    """Keeps every device's calibration honest; see the module docstring."""

    def __init__(
        self,
        store: CalibrationStore,
        ports: CalibrationPorts,
        config: CalibrationConfig,
        *,
        clock: Callable[[], float] = time.time,
        seed: int | None = None,
        devices: Sequence[str] | None = None,
        versions: Callable[[], Mapping[str, Sequence[str]]] | None = None,
    ) -> None:
        self.store = store
        # the post-processing versions each canary round runs (None: the defaults)
        self._versions = versions
        self.ports = ports
        self.config = config
        self._clock = clock
        self._seed = seed
        self._names = list(devices) if devices is not None else None
        self.states: dict[str, CalibrationState] = {}
        self.accounts: dict[str, DeviceAccount] = {}
        self._incarnations: dict[str, str] = {}
        # device -> (calibration id, taken at) last kept in the history
        self._recorded: dict[str, tuple[str, float]] = {}
        self._resume_to: dict[str, DeviceStatus] = {}
        self._working: dict[str, asyncio.Task[None]] = {}  # a device's step in progress
        self._task: asyncio.Task[None] | None = None
        self._stopping = False
        self._changed = asyncio.Event()

    # == the loop =====================================================================

    def start(self, interval_s: float = 1.0) -> None:
        """Run :meth:`step` every ``interval_s`` seconds until :meth:`stop` (idempotent;
        call it from a running event loop)."""
        if self._task is not None and not self._task.done():
            return
        self._stopping = False
        self._task = asyncio.get_running_loop().create_task(
            self._run_forever(interval_s), name="qrt-calibration"
        )

    def wake(self) -> None:
        """Run the next pass now (a request or a maintenance window changed)."""
        self._changed.set()

    @property
    def running(self) -> bool:
        """Whether the loop runs."""
        return self._task is not None and not self._task.done()

    async def stop(self) -> None:
        """Stop the loop and any device step in progress."""
        self._stopping = True
        tasks = [t for t in (self._task, *self._working.values()) if t is not None]
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)

    async def _run_forever(self, interval_s: float) -> None:
        while not self._stopping:
            try:
                await self.step(wait=False)
            except asyncio.CancelledError:
                raise
            except Exception:
                logger.exception("calibration step failed")
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._changed.wait(), timeout=interval_s)
            self._changed.clear()

    async def step(self, *, wait: bool = True, only: str | None = None) -> None:
        """One pass over every device that answers (or only ``only``).

        Each device steps on its own: a device still busy with a canary round or a
        recalibration from an earlier pass is skipped, so one slow device holds up no
        other. With ``wait`` the pass returns when every device it started is done
        (tests and benchmarks); the loop does not wait.
        """
        snaps = await self.ports.snapshots()
        if only is not None:
            snaps = [s for s in snaps if s.name == only]
        windows = await asyncio.to_thread(self.store.maintenance_windows, None, self._clock())
        started = []
        for snap in snaps:
            if snap.name in self._working:
                continue
            task = asyncio.create_task(self._guarded(snap, windows))
            self._working[snap.name] = task
            task.add_done_callback(lambda _t, n=snap.name: self._working.pop(n, None))
            started.append(task)
        if wait and started:
            await asyncio.gather(*started)

    async def _guarded(self, snap: DeviceSnapshot, windows: list[MaintenanceWindow]) -> None:
        try:
            await self._step_device(snap, self._clock(), windows)
        except asyncio.CancelledError:
            raise
        except Exception:
            logger.exception("calibration of %s failed this step", snap.name)

    def _state(self, snap: DeviceSnapshot, now: float) -> CalibrationState:
        """The manager's memory of a device; on first sight, rebuilt from its status
        (the manager itself may have restarted while the device was paused)."""
        state = self.states.get(snap.name)
        if state is not None:
            return state
        state = CalibrationState(snap.name, next_canary_at=now + self.config.canary_period_s)
        if snap.status is DeviceStatus.CALIBRATING:
            state.phase, state.reason = Phase.RECALIBRATING, snap.status_reason or "resumed"
        elif snap.status is DeviceStatus.MAINTENANCE and snap.status_reason.startswith(
            "maintenance window"
        ):
            state.phase, state.reason = Phase.MAINTENANCE, snap.status_reason
        elif snap.status is DeviceStatus.OFFLINE and snap.status_reason.startswith(OFFLINE_REASON):
            state.phase, state.reason = Phase.OFFLINE, snap.status_reason
        self.states[snap.name] = state
        self.accounts.setdefault(snap.name, DeviceAccount())
        return state

    async def _step_device(
        self, snap: DeviceSnapshot, now: float, windows: list[MaintenanceWindow]
    ) -> None:
        name = snap.name
        state = self._state(snap, now)
        known = self._incarnations.get(name)
        if known is None or known != snap.incarnation:
            snap = await self._restore(snap, state, first=known is None)
            self._incarnations[name] = snap.incarnation  # only once restored
        await self._keep(snap.calibration, "observed")
        snap = await self._hold(snap, state)
        window = next((w for w in windows if w.device == name and w.covers(now)), None)
        busy = state.phase is Phase.RECALIBRATING and await self.ports.busy(name)
        action = decide(
            state,
            now,
            online=snap.status.runs_work,
            calibration_age_s=now - snap.calibration.taken_at,
            in_maintenance=window is not None,
            busy=busy,
            config=self.config,
        )
        if action is Action.NONE:
            return
        if action is Action.ENTER_MAINTENANCE:
            assert window is not None
            self._resume_to.setdefault(name, _resumable(snap.status))
            state.phase = Phase.MAINTENANCE
            state.reason = f"maintenance window {window.window_id}: {window.reason}"
            await self.ports.set_status(name, DeviceStatus.MAINTENANCE, state.reason)
        elif action is Action.LEAVE_MAINTENANCE:
            await self._pause(name, snap, state, "maintenance window ended")
        elif action is Action.RESUMED:
            resumed(state, now)
            logger.info("%s back online by an operator", name)
        elif action is Action.PAUSE:
            reason = age_reason(now - snap.calibration.taken_at, self.config)
            await self._pause(name, snap, state, reason)
        elif action is Action.CANARY:
            try:
                await self._canary(name, snap, state, now)
            except Exception:
                # try again sooner than a full period, but not every second
                state.next_canary_at = now + self.config.canary_period_s / 4
                raise
        elif action is Action.RECALIBRATE:
            await self._recalibrate(name, snap, state)

    async def _hold(self, snap: DeviceSnapshot, state: CalibrationState) -> DeviceSnapshot:
        """Re-assert the status the manager's phase means, if the device lost it (a
        failed call, a restart). An OFFLINE device an operator put back ONLINE is left
        for :func:`decide` to see as resumed."""
        held = _HELD.get(state.phase)
        if held is None or snap.status is held:
            return snap
        if state.phase is Phase.OFFLINE and snap.status.runs_work:
            return snap
        await self.ports.set_status(snap.name, held, state.reason)
        return replace(snap, status=held, status_reason=state.reason)

    # == actions ======================================================================

    async def _pause(
        self, name: str, snap: DeviceSnapshot, state: CalibrationState, reason: str
    ) -> None:
        if state.phase is not Phase.RECALIBRATING:
            state.drift_round = state.round
        start_recalibration(state, reason)
        self._resume_to.setdefault(name, _resumable(snap.status))
        await self.ports.set_status(name, DeviceStatus.CALIBRATING, reason)
        logger.info("%s paused to recalibrate: %s", name, reason)

    async def _round(
        self, name: str, snap: DeviceSnapshot, round_index: int
    ) -> tuple[RoundVerdict, list[CanaryResult]]:
        cal = snap.calibration
        specs = canary_round(
            cal.coupling_map,
            cal.num_qubits,
            round_index,
            chain_length=self.config.chain_length,
            max_chains=self.config.max_chains,
        )
        seed = None if self._seed is None else self._seed + round_index * 7919 + len(name)
        versions = await asyncio.to_thread(self._versions) if self._versions else None
        results = await self.ports.run_canaries(
            name, specs, self.config.canary_shots, seed, versions
        )
        account = self.accounts[name]
        account.canary_rounds += 1
        account.canary_s += len(specs) * self.config.canary_shots * self.config.shot_s
        return judge_round(results, self.config), results

    async def _canary(
        self, name: str, snap: DeviceSnapshot, state: CalibrationState, now: float
    ) -> None:
        verdict, results = await self._round(name, snap, state.round)
        await self._record_round(name, snap.calibration.calibration_id, verdict, results, now)
        action = after_canary(state, verdict, now, self.config)
        degraded = verdict.reason if verdict.drifted else ""
        await self.ports.set_health(name, verdict.predicted, verdict.measured, now, degraded)
        if action is Action.PAUSE:
            self.accounts[name].detections += 1
            self._resume_to.setdefault(name, _resumable(snap.status))
            await self.ports.set_status(name, DeviceStatus.CALIBRATING, state.reason)
            logger.warning("%s drifted: %s", name, verdict.reason)

    async def _recalibrate(self, name: str, snap: DeviceSnapshot, state: CalibrationState) -> None:
        now = self._clock()
        try:
            new = await self.ports.recalibrate(name)
        except Exception as exc:
            logger.exception("recalibrating %s failed", name)
            failed = RoundVerdict(True, True, None, f"recalibration failed: {exc!r}")
            after_verification(state, failed, now, self.config)
            await self._after_verification(name, state, ok=False)
            return
        account = self.accounts[name]
        account.recalibrations += 1
        account.recalibration_s += self.config.recalibration_s
        await self._keep(new, state.reason or "recalibrated")
        now = self._clock()
        # verify on the chains that found the drift
        try:
            verdict, results = await self._round(
                name, replace(snap, calibration=new), state.drift_round
            )
        except Exception as exc:
            logger.exception("verifying %s failed", name)
            verdict, results = RoundVerdict(True, True, None, f"verification failed: {exc!r}"), []
        await self._record_round(name, new.calibration_id, verdict, results, now)
        ok = after_verification(state, verdict, now, self.config)
        await self.ports.set_health(
            name, verdict.predicted, verdict.measured, now, "" if ok else verdict.reason
        )
        await self._after_verification(name, state, ok=ok)
        if ok:
            logger.info("%s recalibrated (%s) and verified", name, new.calibration_id)

    async def _after_verification(self, name: str, state: CalibrationState, *, ok: bool) -> None:
        if ok:
            back = self._resume_to.pop(name, DeviceStatus.ONLINE)
            await self.ports.set_status(name, back, "")
        elif state.phase is Phase.OFFLINE:
            self._resume_to.pop(name, None)
            await self.ports.set_status(name, DeviceStatus.OFFLINE, state.reason)
            logger.error("%s OFFLINE: %s", name, state.reason)
        else:
            await self.ports.set_status(name, DeviceStatus.CALIBRATING, state.reason)

    async def _restore(
        self, snap: DeviceSnapshot, state: CalibrationState, *, first: bool
    ) -> DeviceSnapshot:
        """A device restarted: make sure it has its last stored calibration.

        A device actor reads it from the store itself when it starts; this covers
        devices that cannot (in-process farms). On first sight nothing is restored:
        the device may have been recalibrated while the manager was away.
        """
        if first:
            return snap
        history = await asyncio.to_thread(self.store.calibrations, snap.name, 1)
        if history:
            last = calibration_from_json(history[0].snapshot_json)
            fits = (
                last.num_qubits == snap.calibration.num_qubits
                and last.coupling_map == snap.calibration.coupling_map
            )
            if not fits:
                logger.warning(
                    "stored calibration %s does not fit %s; keeping its own",
                    last.calibration_id,
                    snap.name,
                )
            elif (last.calibration_id, last.taken_at) != (
                snap.calibration.calibration_id,
                snap.calibration.taken_at,
            ):
                await self.ports.restore(snap.name, last)
                logger.info("%s restored calibration %s", snap.name, last.calibration_id)
                snap = replace(snap, calibration=last)
        return snap

    async def _keep(self, cal: CalibrationSnapshot, reason: str) -> None:
        if self._recorded.get(cal.device) == (cal.calibration_id, cal.taken_at):
            return
        record = CalibrationRecord(
            cal.device,
            cal.calibration_id,
            cal.taken_at,
            self._clock(),
            reason,
            calibration_to_json(cal),
        )
        await asyncio.to_thread(self.store.record_calibration, record)
        self._recorded[cal.device] = (cal.calibration_id, cal.taken_at)

    async def _record_round(
        self,
        name: str,
        calibration_id: str,
        verdict: RoundVerdict,
        results: list[CanaryResult],
        now: float,
    ) -> None:
        detail = {
            "reason": verdict.reason,
            "canaries": [
                {
                    "name": r.name,
                    "predicted": r.predicted,
                    "measured": r.measured,
                    "shots": r.shots,
                    "mitigated": dict(r.mitigated),
                }
                for r in results
            ],
        }
        record = CanaryRecord(
            name, now, calibration_id, verdict.predicted, verdict.measured, verdict.drifted, detail
        )
        await asyncio.to_thread(self.store.record_canary, record)

    # == requests =====================================================================

    async def calibrate(self, device: str, reason: str, timeout_s: float = 600.0) -> str:
        """Recalibrate a device now (pause, let its batch finish, retune, verify).

        Returns:
            The phase it ended in: ``monitor`` when verified, ``recalibrating`` while
            recalibrations that canaries fail are retried, ``offline`` after too many.

        Raises:
            ValidationError: no such device.
            DeviceUnavailableError: the device is not answering.
            TimeoutError: it did not finish within ``timeout_s``.
        """
        snap = await self._snapshot(device)
        now = self._clock()
        state = self._state(snap, now)
        if state.phase is Phase.RECALIBRATING:
            pass  # already under way: wait for it
        else:
            state.drift_round = state.round
            await self._pause(device, snap, state, reason)
        self._changed.set()
        deadline = time.monotonic() + timeout_s
        failures = state.failures
        while state.phase is Phase.RECALIBRATING and state.failures == failures:
            if time.monotonic() > deadline:
                raise TimeoutError(f"{device} did not finish recalibrating in {timeout_s:g} s")
            if not self.running:  # no loop (tests, benchmarks, manager disabled)
                await self.step(only=device)
            await asyncio.sleep(0.05)
        return state.phase.value

    async def schedule_maintenance(
        self, device: str, start: float, end: float, reason: str
    ) -> MaintenanceWindow:
        """Schedule a maintenance window; the device takes no work inside it.

        Raises:
            ValidationError: unknown device, ``end`` not after ``start``, or a window
                that is already over.
        """
        await self._known(device)
        now = self._clock()
        if not (math.isfinite(start) and math.isfinite(end)):
            raise ValidationError("start and end must be finite times")
        if not end > start:
            raise ValidationError(f"end ({_iso(end)}) must be after start ({_iso(start)})")
        if end <= now:
            raise ValidationError(
                f"the window ends at {_iso(end)}, already past; give an end in the future"
            )
        window = MaintenanceWindow(
            f"mw-{int(now * 1000):x}-{device}", device, start, end, reason or "maintenance", now
        )
        await asyncio.to_thread(self.store.add_maintenance, window)
        self._changed.set()
        return window

    async def _known(self, device: str) -> list[DeviceSnapshot]:
        """Check the device belongs to the farm; returns the snapshots that answered."""
        snaps = await self.ports.snapshots()
        names = self._names if self._names is not None else [s.name for s in snaps]
        if device not in names:
            raise ValidationError(
                f"device={brief(device)!r} is not a device of this farm; devices: "
                f"{', '.join(names)}"
            )
        return snaps

    async def _snapshot(self, device: str) -> DeviceSnapshot:
        for snap in await self._known(device):
            if snap.name == device:
                return snap
        raise DeviceUnavailableError(f"device {device} is not answering; try again later")

    def report(self) -> dict[str, dict[str, Any]]:
        """Per device: phase, reason, next canary, last round and device time spent."""
        out: dict[str, dict[str, Any]] = {}
        for name, state in self.states.items():
            account = self.accounts.get(name, DeviceAccount())
            out[name] = {
                "phase": state.phase.value,
                "reason": state.reason,
                "next_canary_at": state.next_canary_at,
                "failures": state.failures,
                "last_predicted": state.last.predicted if state.last else None,
                "last_measured": state.last.measured if state.last else None,
                "canary_rounds": account.canary_rounds,
                "recalibrations": account.recalibrations,
                "detections": account.detections,
                "calibration_device_s": account.total_s,
            }
        for name in self._names or []:
            # a farm device the first pass has not reached yet is listed, not left out
            out.setdefault(
                name,
                {
                    "phase": "unseen",
                    "reason": "not seen by the calibration manager yet",
                    "next_canary_at": None,
                    "failures": 0,
                    "last_predicted": None,
                    "last_measured": None,
                    "canary_rounds": 0,
                    "recalibrations": 0,
                    "detections": 0,
                    "calibration_device_s": 0.0,
                },
            )
        return out


def _iso(t: float) -> str:
    return datetime.datetime.fromtimestamp(t).isoformat(timespec="minutes")


def _resumable(status: DeviceStatus) -> DeviceStatus:
    """The status to return to after a pause (a draining device keeps draining)."""
    return status if status.runs_work else DeviceStatus.ONLINE
