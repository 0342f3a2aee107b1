"""Ray shell around :class:`~actors.device.Device`: a worker thread drains its queue.

Each batch: ask the scheduler to persist RUNNING for it (work cancelled meanwhile is
dropped), run it in one simulator call per group, hand the runs back. The scheduler
owns the job store; the device only reports.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Sequence
from typing import Any

import ray

from actors.device import Device, FaultPlan, WorkItem
from qrt_ray.config import DeviceConfig
from qrt_ray.models import DeviceSnapshot
from qrt_ray.results import RawRun, counts_checksum

logger = logging.getLogger("qrt.device")
_RETRY_S = (0.1, 0.5, 1.0, 2.0, 5.0)


class DeviceActor:
    """One device as a Ray actor (threaded: snapshots answer while a batch runs)."""

    def __init__(self, config_json: str, scheduler_name: str, namespace: str) -> None:
        self.device = Device(DeviceConfig.model_validate_json(config_json))
        self._scheduler_name = scheduler_name
        self._namespace = namespace
        self._scheduler: Any = None
        self._cv = threading.Condition()
        self._stopped = False
        threading.Thread(target=self._drain_forever, name="qrt-device", daemon=True).start()

    def ready(self) -> str:
        """Liveness check; returns the device name."""
        return self.device.name

    def snapshot(self) -> DeviceSnapshot:
        """Placement snapshot of the device."""
        return self.device.snapshot()

    def compile_target(self) -> tuple[str, Any]:
        """(calibration id, transpiler target) of the current calibration."""
        return self.device.compile_target()

    def enqueue(self, items: Sequence[WorkItem]) -> int:
        """Queue work and wake the worker; returns the queue depth."""
        depth = self.device.enqueue(items)
        with self._cv:
            self._cv.notify()
        return depth

    def drop(self, job_ids: Sequence[str]) -> list[str]:
        """Remove queued work of these jobs."""
        return self.device.drop(job_ids)

    def inject_faults(self, partial_fractions: Sequence[float] = (), corrupt: int = 0) -> None:
        """Make the next runs partial or corrupt (chaos tests and drills)."""
        self.device.faults = FaultPlan(list(partial_fractions), corrupt)

    def stats(self) -> dict[str, int]:
        """Batches and circuits run so far."""
        return {"batches": self.device.batches_run, "circuits": self.device.circuits_run}

    def stop(self) -> None:
        """Stop taking work (queued work stays until the actor exits)."""
        self._stopped = True
        with self._cv:
            self._cv.notify()

    # -- worker -----------------------------------------------------------------------

    def _sched(self) -> Any:
        if self._scheduler is None:
            self._scheduler = ray.get_actor(self._scheduler_name, namespace=self._namespace)
        return self._scheduler

    def _call(self, method: str, *args: Any) -> Any:
        # The scheduler persists before answering; if it is briefly unreachable the
        # device retries with backoff rather than dropping results.
        for delay in (*_RETRY_S, None):
            try:
                return ray.get(getattr(self._sched(), method).remote(*args))
            except (ray.exceptions.RayActorError, ValueError) as exc:
                if delay is None:
                    raise
                logger.warning("scheduler %s failed (%s); retrying in %.1fs", method, exc, delay)
                self._scheduler = None
                time.sleep(delay)
        return None

    def _drain_forever(self) -> None:
        while not self._stopped:
            with self._cv:
                if self.device.queue_depth == 0:
                    self._cv.wait(timeout=0.5)
            batch = self.device.take_batch()
            if not batch:
                continue
            try:
                self._run_batch(batch)
            except Exception:
                logger.exception("device %s: batch failed", self.device.name)

    def _run_batch(self, batch: list[WorkItem]) -> None:
        keep = set(
            self._call("batch_started", self.device.name, [(i.job_id, i.attempt) for i in batch])
        )
        batch = [i for i in batch if i.job_id in keep]
        if not batch:
            return
        try:
            runs = self.device.execute(batch)
        except Exception as exc:
            logger.exception("device %s: simulator failed", self.device.name)
            runs = [self._failed_run(i, exc) for i in batch]
        self._call("batch_finished", self.device.name, runs)

    def _failed_run(self, item: WorkItem, exc: Exception) -> RawRun:
        cal = self.device.calibration
        return RawRun(
            item.job_id,
            item.attempt,
            self.device.name,
            cal.calibration_id,
            cal.taken_at,
            item.shots,
            (),
            (),
            0.0,
            "none",
            False,
            counts_checksum([]),
            error=f"simulator error: {exc}",
        )
