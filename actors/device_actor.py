"""Ray shell around :class:`~qrt_ray.actors.device.Device`: a worker thread drains its queue.

Each batch: ask the scheduler to persist RUNNING for it (work cancelled meanwhile is
dropped), run it in one simulator call per group, hand the runs back. The scheduler
owns the job store; the device only reports. Runs go back through a reporter thread,
in order, so the simulator starts the next batch while the scheduler stores the last
one's results (waiting for that cost the device about a fifth of its time on small
jobs); a bounded hand-off keeps a slow scheduler from piling results up in memory.
"""

from __future__ import annotations

import dataclasses
import logging
import math
import os
import queue
import threading
import time
import uuid
from collections.abc import Sequence
from typing import Any

import psutil
import ray

from qrt_ray import logs, tracing
from qrt_ray.actors.device import Device, FaultPlan, WorkItem
from qrt_ray.calibration import calibration_from_json
from qrt_ray.config import DeviceConfig, PolicyConfig, load_policy_config
from qrt_ray.errors import DeviceUnavailableError, StoreUnavailableError, ValidationError, brief
from qrt_ray.mitigation.readout import ReadoutCalibration
from qrt_ray.models import CalibrationSnapshot, DeviceSnapshot, DeviceStatus
from qrt_ray.policies.canary import CanaryResult, CanarySpec
from qrt_ray.results import RawRun
from qrt_ray.tuning import lower_priority, settle_heap

logger = logging.getLogger("qrt.device")
_RETRY_S = (0.1, 0.5, 1.0, 2.0, 5.0)
# Finished batches waiting to be reported; the device blocks when this many wait.
_REPORT_BACKLOG = 2
# Progress reports to the hung-batch watchdog: at most one per this many seconds.
_BEAT_S = 0.5
# How long a restarting device waits for the scheduler to hand back its calibration.
_RESTORE_WAIT_S = 10.0
# A job store refusing writes (a full disk, its database restarting) is waited out this
# long, pausing at most _STORE_PAUSE_S between tries. Meanwhile the device takes no new
# batch once its report backlog is full: the farm's backpressure.
_STORE_WAIT_S = 600.0
_STORE_PAUSE_S = 5.0
# Inside an injected network partition a call hangs this long at most, then fails
# (unless the partition healed meanwhile), as a call over a cut link does.
_PARTITION_HANG_S = 10.0


class PartitionedError(DeviceUnavailableError):
    """The device is cut off from the farm by an injected network partition."""


# what a call to the scheduler meets when it cannot reach it: retried with backoff
_UNREACHABLE = (ray.exceptions.RayActorError, ValueError, PartitionedError)
# how much less CPU priority the device's batch thread (the simulator's calls and the
# OpenMP threads they start, and the batch's own bookkeeping) has than the farm's
# control plane (see qrt_ray.tuning)
_SIMULATOR_NICE = 10


class DeviceActor:
    """One device as a Ray actor (threaded: snapshots answer while a batch runs)."""

    def __init__(
        self,
        config_json: str,
        scheduler_name: str,
        namespace: str,
        policies_json: str | None = None,
        drift_start: float | None = None,
        report_key_hex: str | None = None,
    ) -> None:
        logs.setup_actor()
        tracing.configure()  # from the environment the farm gave this actor
        policies = (
            PolicyConfig.model_validate_json(policies_json)
            if policies_json
            else load_policy_config()
        )
        # drift_start is the farm's start time, the same after Ray restarts this actor
        self.device = Device(
            DeviceConfig.model_validate_json(config_json),
            scheduling=policies.scheduling,
            link=policies.link,
            drift_start=drift_start,
            # signs every run it reports: the farm's key (see qrt_ray.reports)
            report_key=bytes.fromhex(report_key_hex) if report_key_hex else None,
        )
        self._scheduler_name = scheduler_name
        self._namespace = namespace
        self._scheduler: Any = None
        self._restore_last_calibration()
        self._cv = threading.Condition()
        self._stopped = False
        self._in_flight = 0  # batches taken from the queue whose runs are not reported yet
        self._reports: queue.Queue[list[RawRun]] = queue.Queue(maxsize=_REPORT_BACKLOG)
        self._last_beat = -math.inf
        self._cut_until = 0.0  # an injected network partition lasts until then (unix s)
        self.device.on_progress = self._progress
        self._process = (
            ray.get_runtime_context().get_node_id(),
            os.getpid(),
            psutil.Process().create_time(),
        )
        settle_heap()  # Qiskit and the device stay for the process's life (qrt_ray.tuning)
        threading.Thread(target=self._drain_forever, name="qrt-device", daemon=True).start()
        threading.Thread(target=self._report_forever, name="qrt-report", daemon=True).start()

    def _restore_last_calibration(self) -> None:
        """Take back the last calibration this device had (after a crash, or on a new
        node after its old one was lost), from the history the scheduler keeps.

        The scheduler owns the store; when it is not there yet (the farm is starting)
        or does not answer soon, the backend's calibration stays and the calibration
        manager restores the stored one on its next pass.
        """
        try:
            scheduler = ray.get_actor(self._scheduler_name, namespace=self._namespace)
        except ValueError:
            return  # no scheduler: a device started on its own (drills, tests)
        try:
            stored = ray.get(
                scheduler.last_calibration.remote(self.device.name), timeout=_RESTORE_WAIT_S
            )
        except Exception:
            logger.warning("%s could not fetch its calibration", self.device.name, exc_info=True)
            return
        if stored is not None:
            self.device.restore_calibration(calibration_from_json(stored))
            logger.info("%s restored its last stored calibration", self.device.name)

    def ready(self) -> str:
        """Liveness check; returns the device name."""
        return self.device.name

    def snapshot(self) -> DeviceSnapshot:
        """Placement snapshot of the device, with the process it runs in."""
        self._reach()
        return dataclasses.replace(self.device.snapshot(), process=self._process)

    def compile_target(self) -> tuple[str, Any]:
        """(calibration id, transpiler target) of the current calibration."""
        self._reach()
        return self.device.compile_target()

    def enqueue(self, items: Sequence[WorkItem]) -> int:
        """Queue work and wake the worker; returns the queue depth."""
        self._reach()
        depth = self.device.enqueue(items)
        with self._cv:
            self._cv.notify()
        return depth

    def drop(self, job_ids: Sequence[str], attempts: dict[str, int] | None = None) -> list[str]:
        """Remove these jobs' work (only these attempts, if given): queued work at once,
        running work from the batch's next piece."""
        self._reach()
        return self.device.drop(job_ids, attempts)

    def set_status(self, status: str, reason: str = "") -> None:
        """Change whether the device takes work (``ONLINE``, ``MAINTENANCE``, ...), and why.

        The scheduler notices on its next look and moves waiting work elsewhere.
        """
        self._reach()
        self.device.set_status(DeviceStatus(status), reason)
        with self._cv:
            self._cv.notify()

    def set_calibration(self, calibration: CalibrationSnapshot) -> str:
        """Replace the device's calibration; returns its id.

        Waiting work compiled for the old one goes back to placement.
        """
        self._reach()
        self.device.set_calibration(calibration)
        return calibration.calibration_id

    def recalibrate(self) -> str:
        """Retune and measure the device now; returns the new calibration id.

        Waiting work compiled for the old calibration goes back to placement.
        """
        self._reach()
        return self.device.recalibrate().calibration_id

    def recalibrate_snapshot(self) -> CalibrationSnapshot:
        """Retune and measure the device now; returns the new calibration."""
        self._reach()
        return self.device.recalibrate()

    def restore_calibration(self, calibration: CalibrationSnapshot) -> None:
        """Take back the calibration the device had before it restarted."""
        self._reach()
        self.device.restore_calibration(calibration)

    def run_canaries(
        self,
        specs: Sequence[CanarySpec],
        shots: int,
        seed: int | None,
        versions: dict[str, list[str]] | None = None,
    ) -> list[CanaryResult]:
        """Run canary circuits; see :meth:`qrt_ray.actors.device.Device.run_canaries`."""
        self._reach()
        return self.device.run_canaries(specs, shots, seed, versions)

    def readout_calibration(
        self, qubits: Sequence[int], shots: int, max_age_s: float, seed: int | None = None
    ) -> tuple[ReadoutCalibration, int]:
        """Measured readout errors; see :meth:`qrt_ray.actors.device.Device.readout_calibration`."""
        self._reach()
        return self.device.readout_calibration(qubits, shots, max_age_s, seed)

    def set_health(self, predicted: float, measured: float, at: float, degraded: str) -> None:
        """What the last canary round found; a non-empty ``degraded`` marks results."""
        self._reach()
        self.device.set_health(predicted, measured, at, degraded)

    def inject_faults(
        self,
        partial_fractions: Sequence[float] = (),
        corrupt: int = 0,
        hang_s: float = 0.0,
        link_errors: Sequence[str] = (),
        hidden_error: float = 1.0,
    ) -> None:
        """Make the next runs partial or corrupt, the next batch stall, its control
        link fail, or the device worse than any calibration says (chaos tests and
        drills)."""
        self.device.faults = FaultPlan(
            list(partial_fractions), corrupt, hang_s, list(link_errors), hidden_error
        )

    def inject_fault(self, kind: str, value: float) -> None:
        """One fault of a game day or drill, leaving the others as they are: ``drift``
        (errors ``value`` times the calibration's until the next recalibration),
        ``outage`` (the control link answers nothing for ``value`` seconds from now) or
        ``partition`` (the device is cut off from the farm for ``value`` seconds: each
        call into it and each report it sends hangs, then fails; its queued work runs
        on, and its reports are retried).

        Raises:
            ValidationError: an unknown kind or a value out of range.
        """
        plan = self.device.faults
        number = isinstance(value, int | float) and not isinstance(value, bool)
        if kind == "drift" and number and 1.0 <= value <= 100.0:
            plan.drift_error = float(value)
        elif kind == "outage" and number and 0.0 <= value <= 86_400.0:
            plan.link_down_until = time.time() + float(value)
        elif kind == "partition" and number and 0.0 <= value <= 86_400.0:
            self._cut_until = time.time() + float(value)
            logger.warning("device %s: cut off from the farm for %.1f s", self.device.name, value)
        else:
            raise ValidationError(
                f"fault {brief(kind, 20)!r}={brief(value, 20)}: use drift (1 to 100 times "
                "the errors), outage or partition (0 to 86400 s)"
            )

    def stats(self) -> dict[str, int]:
        """Batches and circuits run so far, and batches taken but not yet reported."""
        return {
            "batches": self.device.batches_run,
            "circuits": self.device.circuits_run,
            "in_flight": self._in_flight,
            "queued": self.device.queue_depth,
        }

    def stop(self) -> None:
        """Stop taking work (queued work stays until the actor exits)."""
        self._stopped = True
        with self._cv:
            self._cv.notify()

    def _reach(self) -> None:
        """Let a call through, unless an injected partition cuts the device off: then
        it hangs (until the partition heals, at most ``_PARTITION_HANG_S``) and fails
        if it has not healed.

        Raises:
            PartitionedError: the partition still holds.
        """
        left = self._cut_until - time.time()
        if left <= 0:
            return
        time.sleep(min(left, _PARTITION_HANG_S))
        if self._cut_until > time.time():
            raise PartitionedError(f"device {self.device.name}: unreachable (network partition)")

    # -- worker -----------------------------------------------------------------------

    def _sched(self) -> Any:
        if self._scheduler is None:
            self._scheduler = ray.get_actor(self._scheduler_name, namespace=self._namespace)
        return self._scheduler

    def _call(self, method: str, *args: Any) -> Any:
        # The scheduler persists before answering; if it is briefly unreachable, or its
        # store refuses writes, the device retries with backoff rather than dropping
        # results (batch starts and reports are idempotent: the shot ledger counts a
        # run once, and a start of a job already RUNNING there runs on).
        actor_pauses = iter(_RETRY_S)
        store_until: float | None = None
        pause = 0.1
        while True:
            try:
                self._reach()
                return ray.get(getattr(self._sched(), method).remote(*args))
            except Exception as exc:
                if store_refused(exc):
                    now = time.monotonic()
                    store_until = store_until if store_until is not None else now + _STORE_WAIT_S
                    if now >= store_until:
                        raise
                    logger.warning(
                        "scheduler %s: the job store refused a write; retrying in %.1fs",
                        method,
                        pause,
                    )
                    time.sleep(pause)
                    pause = min(pause * 2, _STORE_PAUSE_S)
                    continue
                if not isinstance(
                    exc, ray.exceptions.RayActorError | ValueError | PartitionedError
                ):
                    raise
                delay = next(actor_pauses, None)
                if delay is None:
                    raise
                logger.warning("scheduler %s failed (%s); retrying in %.1fs", method, exc, delay)
                self._scheduler = None
                time.sleep(delay)

    def _drain_forever(self) -> None:
        lower_priority(_SIMULATOR_NICE)  # the simulator's threads start from this one
        while not self._stopped:
            with self._cv:
                if not self.device.has_runnable_work():  # empty, or paused with a queue
                    self._cv.wait(timeout=0.5)
            with self._cv:
                batch = self.device.take_batch()
                if not batch:
                    continue
                self._in_flight += 1
            try:
                if not self._run_batch(batch):
                    self._batch_reported()
            except Exception:
                self._batch_reported()
                logger.exception("device %s: batch failed", self.device.name)

    def _progress(self) -> None:
        # fire and forget: a heartbeat lost is only a heartbeat late; at most one per
        # _BEAT_S (a batch of small circuits finishes pieces faster than that)
        now = time.monotonic()
        if now - self._last_beat < _BEAT_S or self._cut_until > time.time():
            return
        self._last_beat = now
        try:
            self._sched().batch_progress.remote(self.device.name)
        except Exception:
            logger.debug("device %s: progress not sent", self.device.name, exc_info=True)

    def _batch_reported(self) -> None:
        with self._cv:
            self._in_flight -= 1

    def _run_batch(self, batch: list[WorkItem]) -> bool:
        """Run a batch; returns whether its runs were handed to the reporter."""
        keep = set(self._call("batch_started", self.device.name, *self.device.claim(batch)))
        batch = [i for i in batch if i.job_id in keep]
        if not batch:
            return False
        started = time.time()
        runs = self.device.execute_reporting(batch)
        if tracing.enabled():
            self._spans(batch, runs, started, time.time())
        self._reports.put(runs)
        return True

    def _spans(
        self, batch: list[WorkItem], runs: list[RawRun], started: float, ended: float
    ) -> None:
        """One ``device.run`` span per item of a batch, in its job's trace."""
        batch_id = uuid.uuid4().hex[:12]
        method = {r.job_id: (r.simulator_method, r.error) for r in runs}
        for item in batch:
            sim, error = method.get(item.job_id, ("", None))
            attrs = {
                "qrt.job_id": item.job_id,
                "qrt.tenant": item.tenant,
                "qrt.device": self.device.name,
                "qrt.calibration_id": item.calibration_id,
                "qrt.attempt": item.attempt,
                "qrt.batch_id": batch_id,
                "qrt.batch_size": len(batch),
                "qrt.method": sim,
                "qrt.shots": item.shots,
                "qrt.error": error,
            }
            tracing.span_between(item.traceparent, "device.run", started, ended, attrs)

    def _report_forever(self) -> None:
        while True:
            runs = self._reports.get()
            try:
                self._call("batch_finished", self.device.name, runs)
            except Exception:
                # The jobs stay RUNNING in the store; the scheduler's recovery and
                # deadlines take them from there. Their runs are not counted.
                logger.exception("device %s: could not report %d runs", self.device.name, len(runs))
            finally:
                self._batch_reported()


def store_refused(exc: BaseException) -> bool:
    """Whether a call to the scheduler failed because its job store refused a write
    (raised there as :class:`StoreUnavailableError`; Ray hands it back wrapped)."""
    return isinstance(exc, StoreUnavailableError) or isinstance(
        getattr(exc, "cause", None), StoreUnavailableError
    )
