"""What the scheduler needs from the rest of the farm, as one small interface.

The Ray actor supplies ports that call device actors and compile tasks; unit tests
supply in-process ports over plain :class:`~qrt_ray.actors.device.Device` objects, so the
scheduler's whole logic runs without Ray.
"""

from __future__ import annotations

import asyncio
from collections.abc import Iterable, Mapping, Sequence
from typing import Any, Protocol

from qrt_ray.actors.device import Device, WorkItem
from qrt_ray.compiler import CompiledCircuit, compile_circuits
from qrt_ray.models import DeviceSnapshot
from qrt_ray.results import RawRun


class SchedulerPorts(Protocol):
    """Effects the scheduler performs on devices and compilers."""

    async def snapshots(self) -> list[DeviceSnapshot]:
        """Current snapshot of every device."""
        ...

    def device_names(self) -> list[str]:
        """The name of every device of the farm, answering or not."""
        ...

    async def compile(
        self,
        device: str,
        texts: Sequence[str],
        *,
        optimization_level: int,
        seed: int,
        layouts: Sequence[Sequence[int] | None] | None = None,
        placement_esp: Sequence[float | None] | None = None,
        calibration_id: str | None = None,
        traceparent: str | None = None,
    ) -> tuple[str, list[CompiledCircuit]]:
        """Compile for a device's current calibration; returns (calibration id, compiled).

        ``layouts`` gives each circuit's initial layout, or None to let the compiler
        choose; ``placement_esp`` gives per circuit the ESP placement expected from its
        layout, which lets the compiler choose its own where that layout needs SWAPs
        (None: keep the layout). See :func:`~qrt_ray.compiler.compile_circuits`.
        ``calibration_id`` is the calibration the caller expects: a target already at
        hand for it is used without asking the device (which may be busy running).
        ``traceparent``: the trace the compile task's span joins (a job it compiles for).
        """
        ...

    async def enqueue(self, device: str, items: Sequence[WorkItem]) -> None:
        """Hand work to a device's queue."""
        ...

    async def drop(
        self, device: str, job_ids: Sequence[str], attempts: Mapping[str, int] | None = None
    ) -> list[str]:
        """Remove queued work from a device; returns the job ids whose work was removed.

        With ``attempts``, only work of exactly that attempt of each job is removed, so
        a newer attempt already queued is left alone.
        """
        ...

    async def restart(self, device: str) -> None:
        """Restart a device that stopped finishing its work; its queue is lost."""
        ...

    async def request_calibration(self, device: str, reason: str) -> None:
        """Ask for a device to be recalibrated soon (returns without waiting)."""
        ...


class DeviceCallbacks(Protocol):
    """What a device tells the scheduler about a batch (the scheduler's side)."""

    async def batch_started(
        self, device: str, attempts: Sequence[Sequence[Any]], signature: str = ""
    ) -> list[str]: ...

    async def batch_finished(self, device: str, runs: Sequence[RawRun]) -> None: ...


async def run_ready_batches(scheduler: DeviceCallbacks, devices: Iterable[Device]) -> bool:
    """Each device runs one batch if it has one, as its actor would (signed claim,
    the work the scheduler keeps, the runs back); returns whether any ran. In-process
    farms (tests, benchmarks) are driven by this."""
    progressed = False
    for dev in devices:
        batch = dev.take_batch()
        if not batch:
            continue
        keep = set(await scheduler.batch_started(dev.name, *dev.claim(batch)))
        runs = dev.execute_reporting([i for i in batch if i.job_id in keep])
        await scheduler.batch_finished(dev.name, runs)
        progressed = True
    return progressed


class LocalPorts:
    """In-process ports over plain devices; the caller drives execution (tests, sims)."""

    def __init__(self, devices: Sequence[Device]) -> None:
        self.devices = {d.name: d for d in devices}

    async def snapshots(self) -> list[DeviceSnapshot]:
        return [d.snapshot() for d in self.devices.values()]

    def device_names(self) -> list[str]:
        return list(self.devices)

    async def compile(
        self,
        device: str,
        texts: Sequence[str],
        *,
        optimization_level: int,
        seed: int,
        layouts: Sequence[Sequence[int] | None] | None = None,
        placement_esp: Sequence[float | None] | None = None,
        calibration_id: str | None = None,
        traceparent: str | None = None,
    ) -> tuple[str, list[CompiledCircuit]]:
        cal_id, target = self.devices[device].compile_target()
        compiled = await asyncio.to_thread(
            compile_circuits,
            texts,
            target,
            device=device,
            calibration_id=cal_id,
            optimization_level=optimization_level,
            seed_transpiler=seed,
            initial_layouts=layouts,
            placement_esp=None if placement_esp is None else list(placement_esp),
        )
        return cal_id, compiled

    async def enqueue(self, device: str, items: Sequence[WorkItem]) -> None:
        self.devices[device].enqueue(items)

    async def drop(
        self, device: str, job_ids: Sequence[str], attempts: Mapping[str, int] | None = None
    ) -> list[str]:
        return self.devices[device].drop(job_ids, attempts)

    async def restart(self, device: str) -> None:
        self.devices[device].restart()

    async def request_calibration(self, device: str, reason: str) -> None:
        self.devices[device].recalibrate()
