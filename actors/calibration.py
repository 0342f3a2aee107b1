"""The calibration manager: canaries, recalibration, maintenance and calibration history.

:class:`CalibrationManager` is plain asyncio over a job store and
:class:`CalibrationPorts`; ``actors/calibration_actor.py`` wraps it as a Ray actor and
tests drive it with :class:`LocalCalibrationPorts` and an injected clock. Each step,
for every device: restore its calibration if it restarted, keep any new calibration
in the store's history, and act on :func:`policies.canary.decide`:

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
import logging
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, replace
from typing import Any, Protocol

from actors.device import Device
from policies.canary import (
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
from qrt_ray.calibration import calibration_from_json, calibration_to_json
from qrt_ray.config import CalibrationConfig
from qrt_ray.errors import ValidationError
from qrt_ray.models import CalibrationSnapshot, DeviceSnapshot, DeviceStatus
from qrt_ray.store import CalibrationRecord, CanaryRecord, JobStore, MaintenanceWindow

logger = logging.getLogger("qrt.calibration")
_RUNS_WORK = (DeviceStatus.ONLINE, DeviceStatus.DRAINING)


class CalibrationPorts(Protocol):
    """What the manager does to devices."""

    async def snapshots(self) -> list[DeviceSnapshot]:
        """Devices that answered, now."""
        ...

    async def run_canaries(
        self, device: str, specs: Sequence[CanarySpec], shots: int, seed: int | None
    ) -> list[CanaryResult]:
        """Run canaries on a device (see :meth:`actors.device.Device.run_canaries`)."""
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
        self, device: str, specs: Sequence[CanarySpec], shots: int, seed: int | None
    ) -> list[CanaryResult]:
        return await asyncio.to_thread(self.devices[device].run_canaries, specs, shots, seed)

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
        store: JobStore,
        ports: CalibrationPorts,
        config: CalibrationConfig,
        *,
        clock: Callable[[], float] = time.time,
        seed: int | None = None,
    ) -> None:
        self.store = store
        self.ports = ports
        self.config = config
        self._clock = clock
        self._seed = seed
        self.states: dict[str, CalibrationState] = {}
        self.accounts: dict[str, DeviceAccount] = {}
        self._incarnations: dict[str, str] = {}
        # device -> (calibration id, taken at) last kept in the history
        self._recorded: dict[str, tuple[str, float]] = {}
        self._resume_to: dict[str, DeviceStatus] = {}
        self._started = False
        self._task: asyncio.Task[None] | None = None
        self._stopping = False
        self._changed = asyncio.Event()

    # == the loop =====================================================================

    async def start(self, interval_s: float = 1.0) -> None:
        """Run :meth:`step` every ``interval_s`` seconds until :meth:`stop`."""
        self._stopping = False
        self._task = asyncio.create_task(self._run_forever(interval_s), name="qrt-calibration")

    async def stop(self) -> None:
        """Stop the loop."""
        self._stopping = True
        if self._task is not None:
            self._task.cancel()
            await asyncio.gather(self._task, return_exceptions=True)

    async def _run_forever(self, interval_s: float) -> None:
        while not self._stopping:
            try:
                await self.step()
            except asyncio.CancelledError:
                raise
            except Exception:
                logger.exception("calibration step failed")
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._changed.wait(), timeout=interval_s)
            self._changed.clear()

    async def step(self) -> None:
        """One pass over every device that answers."""
        now = self._clock()
        snaps = await self.ports.snapshots()
        windows = await asyncio.to_thread(self.store.maintenance_windows, None, now)
        for snap in snaps:
            try:
                await self._step_device(snap, now, windows)
            except Exception:
                logger.exception("calibration of %s failed this step", snap.name)
        self._started = True

    async def _step_device(
        self, snap: DeviceSnapshot, now: float, windows: list[MaintenanceWindow]
    ) -> None:
        name = snap.name
        state = self.states.get(name)
        if state is None:
            state = self.states[name] = CalibrationState(
                name, next_canary_at=now + self.config.canary_period_s
            )
            self.accounts[name] = DeviceAccount()
        known = self._incarnations.get(name)
        self._incarnations[name] = snap.incarnation
        if known is None or known != snap.incarnation:
            snap = await self._restore(snap, state, first=known is None)
        await self._keep(snap.calibration, "observed")
        window = next((w for w in windows if w.device == name and w.covers(now)), None)
        busy = state.phase is Phase.RECALIBRATING and await self.ports.busy(name)
        action = decide(
            state,
            now,
            online=snap.status in _RUNS_WORK,
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
            await self._pause(
                name, snap, state, age_reason(now - snap.calibration.taken_at, self.config)
            )
        elif action is Action.CANARY:
            await self._canary(name, snap, state, now)
        elif action is Action.RECALIBRATE:
            await self._recalibrate(name, snap, state)

    # == actions ======================================================================

    async def _pause(
        self, name: str, snap: DeviceSnapshot, state: CalibrationState, reason: str
    ) -> None:
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
        results = await self.ports.run_canaries(name, specs, self.config.canary_shots, seed)
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
        new = await self.ports.recalibrate(name)
        account = self.accounts[name]
        account.recalibrations += 1
        account.recalibration_s += self.config.recalibration_s
        await self._keep(new, state.reason or "recalibrated")
        now = self._clock()
        verify_snap = replace(snap, calibration=new)
        # verify on the chains that found the drift (the round before this one)
        verdict, results = await self._round(name, verify_snap, max(state.round - 1, 0))
        await self._record_round(name, new.calibration_id, verdict, results, now)
        ok = after_verification(state, verdict, now, self.config)
        await self.ports.set_health(
            name, verdict.predicted, verdict.measured, now, "" if ok else verdict.reason
        )
        if ok:
            back = self._resume_to.pop(name, DeviceStatus.ONLINE)
            await self.ports.set_status(name, back, "")
            logger.info("%s recalibrated (%s) and verified", name, new.calibration_id)
        elif state.phase is Phase.OFFLINE:
            self._resume_to.pop(name, None)
            await self.ports.set_status(name, DeviceStatus.OFFLINE, state.reason)
            logger.error("%s OFFLINE: %s", name, state.reason)
        else:
            await self.ports.set_status(name, DeviceStatus.CALIBRATING, state.reason)

    async def _restore(
        self, snap: DeviceSnapshot, state: CalibrationState, *, first: bool
    ) -> DeviceSnapshot:
        """A device (re)started: give it its last stored calibration and, after a
        restart, the status the manager holds for it.

        On the manager's first sight this also restores a farm that was stopped and
        started again: the device keeps the calibration it had, with its age.
        """
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
        held = {
            Phase.RECALIBRATING: DeviceStatus.CALIBRATING,
            Phase.MAINTENANCE: DeviceStatus.MAINTENANCE,
            Phase.OFFLINE: DeviceStatus.OFFLINE,
        }.get(state.phase)
        if held is not None and not first:
            await self.ports.set_status(snap.name, held, state.reason)
            snap = replace(snap, status=held)
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
                {"name": r.name, "predicted": r.predicted, "measured": r.measured, "shots": r.shots}
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
            The phase it ended in (``monitor`` when verified).

        Raises:
            ValidationError: no such device.
            TimeoutError: it did not finish within ``timeout_s``.
        """
        snap = await self._snapshot(device)
        state = self.states.setdefault(device, CalibrationState(device))
        self.accounts.setdefault(device, DeviceAccount())
        await self._pause(device, snap, state, reason)
        self._changed.set()
        deadline = time.monotonic() + timeout_s
        while state.phase is Phase.RECALIBRATING:
            if time.monotonic() > deadline:
                raise TimeoutError(f"{device} did not finish recalibrating in {timeout_s:g} s")
            if self._task is None:  # no loop running (tests, benchmarks): drive it here
                await self.step()
            else:
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
        await self._snapshot(device)
        now = self._clock()
        if not end > start:
            raise ValidationError(f"end={end:g} must be after start={start:g}")
        if end <= now:
            raise ValidationError("the window is already over; give an end in the future")
        window = MaintenanceWindow(
            f"mw-{int(now * 1000):x}-{device}", device, start, end, reason or "maintenance", now
        )
        await asyncio.to_thread(self.store.add_maintenance, window)
        self._changed.set()
        return window

    async def _snapshot(self, device: str) -> DeviceSnapshot:
        snaps = await self.ports.snapshots()
        for snap in snaps:
            if snap.name == device:
                return snap
        names = ", ".join(s.name for s in snaps)
        raise ValidationError(f"device={device!r} is not a device of this farm; devices: {names}")

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
        return out


def _resumable(status: DeviceStatus) -> DeviceStatus:
    """The status to return to after a pause (a draining device keeps draining)."""
    return status if status in _RUNS_WORK else DeviceStatus.ONLINE
