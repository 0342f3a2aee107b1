"""Ray shell around :class:`~qrt_ray.actors.calibration.CalibrationManager`, and its Ray ports."""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Mapping, Sequence
from typing import Any

import ray

from qrt_ray import logs
from qrt_ray.actors.calibration import CalibrationManager
from qrt_ray.actors.views import calibration_history
from qrt_ray.config import PolicyConfig, load_policy_config
from qrt_ray.errors import RuntimeNotRunningError
from qrt_ray.models import CalibrationSnapshot, DeviceSnapshot, DeviceStatus
from qrt_ray.names import SCHEDULER_NAME, device_actor_name
from qrt_ray.policies.canary import CanaryResult, CanarySpec

logger = logging.getLogger("qrt.calibration")
# Canaries run small circuits, but a device busy with a big batch answers slowly.
_CANARY_TIMEOUT_S = 300.0


class SchedulerStore:
    """The calibration history, canary rounds and maintenance windows, reached through
    the scheduler: the store's only owner, on the head node, never a file path here.

    Blocking (the manager calls it in a thread). While the scheduler restarts, a call
    waits and tries again, up to ``retry_s`` in all.
    """

    def __init__(self, scheduler_name: str, namespace: str, retry_s: float = 120.0) -> None:
        self._name = scheduler_name
        self._namespace = namespace
        self._retry_s = retry_s
        self._handle: Any = None

    def _call(self, operation: str, *args: Any) -> Any:
        deadline = time.monotonic() + self._retry_s
        pause = 0.2
        while True:
            try:
                if self._handle is None:
                    self._handle = ray.get_actor(self._name, namespace=self._namespace)
                ref = self._handle.calibration_store.remote(operation, *args)
                # a future, not ray.get: this runs in a worker thread of an async
                # actor, where ray.get would warn of blocking the event loop
                return ref.future().result(timeout=self._retry_s)
            except (ValueError, ray.exceptions.RayActorError, TimeoutError):
                self._handle = None
                if time.monotonic() + pause > deadline:
                    raise RuntimeNotRunningError(
                        f"the scheduler did not answer for {self._retry_s:g} s "
                        f"({operation}); the calibration store is out of reach"
                    ) from None
                time.sleep(pause)
                pause = min(2 * pause, 5.0)

    def __getattr__(self, operation: str) -> Any:
        if operation.startswith("_"):
            raise AttributeError(operation)
        return lambda *args: self._call(operation, *args)

    def close(self) -> None:
        """Nothing to close: the scheduler owns the store."""


class RayCalibrationPorts:
    """Calibration ports over device actors; a device that does not answer is skipped."""

    def __init__(self, devices: dict[str, Any], timeout_s: float) -> None:
        self._devices = devices
        self._timeout_s = timeout_s

    async def _call(
        self, device: str, method: str, *args: Any, timeout_s: float | None = None
    ) -> Any:
        ref = getattr(self._devices[device], method).remote(*args)
        return await asyncio.wait_for(ref, timeout=timeout_s or self._timeout_s)

    async def snapshots(self) -> list[DeviceSnapshot]:
        names = list(self._devices)
        got = await asyncio.gather(
            *(self._call(n, "snapshot") for n in names), return_exceptions=True
        )
        return [s for s in got if isinstance(s, DeviceSnapshot)]

    async def run_canaries(
        self,
        device: str,
        specs: Sequence[CanarySpec],
        shots: int,
        seed: int | None,
        versions: Mapping[str, Sequence[str]] | None = None,
    ) -> list[CanaryResult]:
        wanted = {m: list(v) for m, v in versions.items()} if versions else None
        return await self._call(
            device,
            "run_canaries",
            list(specs),
            shots,
            seed,
            wanted,
            timeout_s=_CANARY_TIMEOUT_S,
        )

    async def recalibrate(self, device: str) -> CalibrationSnapshot:
        return await self._call(device, "recalibrate_snapshot")

    async def restore(self, device: str, calibration: CalibrationSnapshot) -> None:
        await self._call(device, "restore_calibration", calibration)

    async def set_status(self, device: str, status: DeviceStatus, reason: str) -> None:
        await self._call(device, "set_status", status.value, reason)

    async def set_health(
        self, device: str, predicted: float, measured: float, at: float, degraded: str
    ) -> None:
        await self._call(device, "set_health", predicted, measured, at, degraded)

    async def busy(self, device: str) -> bool:
        stats = await self._call(device, "stats")
        return bool(stats["in_flight"])


class CalibrationActor:
    """The farm's calibration manager as an async Ray actor."""

    def __init__(
        self,
        device_names: Sequence[str],
        namespace: str,
        policies_json: str | None = None,
    ) -> None:
        logs.setup_actor()
        policies = (
            PolicyConfig.model_validate_json(policies_json)
            if policies_json
            else load_policy_config()
        )
        devices = {
            n: ray.get_actor(device_actor_name(n), namespace=namespace) for n in device_names
        }
        self.store = SchedulerStore(SCHEDULER_NAME, namespace)
        self.config = policies.calibration
        ports = RayCalibrationPorts(devices, timeout_s=policies.faults.snapshot_timeout_s)
        self.manager = CalibrationManager(
            self.store,
            ports,
            self.config,
            devices=list(device_names),
            versions=self.store.canary_versions,
        )
        # Ray runs an async actor's constructor inside its event loop: starting here
        # also restarts the loop when Ray brings the actor back after a crash.
        self.start()

    def ready(self) -> bool:
        """Liveness check."""
        return True

    def start(self) -> None:
        """Start the loop if enabled (one pass a second; canaries on their own period)."""
        if self.config.enabled:
            self.manager.start(interval_s=1.0)

    async def calibrate(self, device: str, reason: str, timeout_s: float) -> dict[str, str]:
        """Pause, recalibrate and verify a device; returns the phase it ended in and why."""
        phase = await self.manager.calibrate(device, reason, timeout_s)
        return {"phase": phase, "reason": self.manager.states[device].reason}

    async def schedule_maintenance(
        self, device: str, start: float, end: float, reason: str
    ) -> dict[str, Any]:
        """Schedule a maintenance window."""
        w = await self.manager.schedule_maintenance(device, start, end, reason)
        return _window_view(w)

    async def cancel_maintenance(self, window_id: str) -> bool:
        """Cancel a maintenance window; the device comes back (recalibrated) if inside it."""
        removed = await asyncio.to_thread(self.store.remove_maintenance, window_id)
        self.manager.wake()
        return removed

    async def maintenance(self, device: str | None = None) -> list[dict[str, Any]]:
        """Maintenance windows not yet over."""
        windows = await asyncio.to_thread(self.store.maintenance_windows, device, time.time())
        return [_window_view(w) for w in windows]

    async def history(self, device: str, limit: int = 20) -> list[dict[str, Any]]:
        """A device's calibrations, newest first, with summary figures and the canary
        rounds run while each was current (at most ``limit``, 1 to 10,000)."""
        from qrt_ray.arguments import check_limit

        records = await asyncio.to_thread(self.store.calibrations, device, check_limit(limit))
        rounds = await asyncio.to_thread(self.store.canaries, device, 500)
        return calibration_history(records, rounds)

    async def report(self) -> dict[str, dict[str, Any]]:
        """Per device: phase, reason, last canary round, device time spent calibrating."""
        return self.manager.report()

    async def shutdown(self) -> None:
        """Stop the loop."""
        await self.manager.stop()
        await asyncio.to_thread(self.store.close)


def _window_view(w: Any) -> dict[str, Any]:
    return {
        "window_id": w.window_id,
        "device": w.device,
        "start": w.start,
        "end": w.end,
        "reason": w.reason,
    }
