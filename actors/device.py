"""A quantum device: its status, its calibration and its queue; it runs batches through
its executor and probes through its probes.

:class:`Device` is plain Python (tests use it without Ray); :class:`DeviceActor` in
``actors/device_actor.py`` wraps it with a worker thread that drains the queue. The
queue's rules are in :mod:`~qrt_ray.actors.device_queue`, batch execution in
:mod:`~qrt_ray.actors.executor`, canaries and readout in :mod:`~qrt_ray.actors.probes`.
"""

from __future__ import annotations

import logging
import os
import secrets
import threading
import time
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import replace
from typing import Any

from qrt_ray.actors.device_queue import DeviceQueue, WorkItem
from qrt_ray.actors.executor import Executor, FaultPlan
from qrt_ray.actors.probes import Probes
from qrt_ray.aer import DM_MAX_ACTIVE_QUBITS, DM_SHOTS_FACTOR, MPS_MIN_ACTIVE_QUBITS
from qrt_ray.calibration import load_backend, snapshot_from_backend, with_recomputed_id
from qrt_ray.config import DeviceConfig, LinkConfig, SchedulingConfig
from qrt_ray.drift import DriftProcess, capped_error
from qrt_ray.dynamic import with_loop_exits
from qrt_ray.errors import DeviceUnavailableError, brief
from qrt_ray.mitigation.readout import ReadoutCalibration
from qrt_ray.models import CalibrationSnapshot, DeviceSnapshot, DeviceStatus
from qrt_ray.noise import NoiseModelCache, target_from_snapshot
from qrt_ray.policies.canary import CanaryResult, CanarySpec
from qrt_ray.reports import sign_run, sign_start
from qrt_ray.results import RawRun, RunError

logger = logging.getLogger("qrt.device")

__all__ = ["Device", "FaultPlan", "WorkItem"]


class Device:
    """One device: calibration, priority queue, and batched noisy execution."""

    def __init__(
        self,
        config: DeviceConfig,
        *,
        max_parallel_threads: int = 0,
        clock: Callable[[], float] = time.time,
        noise_cache: NoiseModelCache | None = None,
        scheduling: SchedulingConfig | None = None,
        link: LinkConfig | None = None,
        drift_start: float | None = None,
        sleep: Callable[[float], None] = time.sleep,
        report_key: bytes | None = None,
    ) -> None:
        self.config = config
        # signs every run this device reports (the farm's key; see qrt_ray.reports)
        self.report_key = report_key
        self.name = config.name
        self.status = DeviceStatus.ONLINE
        self.status_reason = ""
        self.degraded = ""
        self.canary: tuple[float, float, float] | None = None  # predicted, measured, at
        self.incarnation = secrets.token_hex(6)
        self._clock = clock
        self._threads = max_parallel_threads or os.cpu_count() or 1
        self._backend = load_backend(config.backend)
        self._target: tuple[str, Any] | None = None  # (calibration id, its target)
        self.calibration: CalibrationSnapshot = snapshot_from_backend(
            config.name, self._backend, taken_at=clock()
        )
        # drift_start: when the farm started, so a restarted device drifts on from
        # where it was instead of from its base calibration
        self._drift = (
            DriftProcess(
                self.calibration,
                config.drift,
                start=drift_start if drift_start is not None else clock(),
            )
            if config.drift
            else None
        )
        self._noise = noise_cache or NoiseModelCache()
        self.scheduling = scheduling or SchedulingConfig()
        self.queue = DeviceQueue(self.scheduling)
        self._lock = threading.Lock()
        self.executor = Executor(
            self.name,
            self._backend.target,
            self._noise,
            gpu=config.gpu,
            threads=self._threads,
            link=link or LinkConfig(),
            clock=clock,
            sleep=sleep,
            chaos=config.chaos,
        )
        self.probes = Probes(
            self.name,
            self._backend.target,
            self._noise,
            lambda: self.calibration,
            self.true_calibration,
            gpu=config.gpu,
            threads=self._threads,
            clock=clock,
        )

    # -- what the executor keeps, as the device's own -----------------------------------

    @property
    def faults(self) -> FaultPlan:
        """Faults to inject into the next runs (tests and chaos drills only)."""
        return self.executor.faults

    @faults.setter
    def faults(self, plan: FaultPlan) -> None:
        self.executor.faults = plan

    @property
    def link(self) -> LinkConfig:
        """The control link's retry policy."""
        return self.executor.link

    @property
    def on_progress(self) -> Callable[[], None] | None:
        """Called after each simulator call of a batch (the actor tells the scheduler)."""
        return self.executor.on_progress

    @on_progress.setter
    def on_progress(self, callback: Callable[[], None] | None) -> None:
        self.executor.on_progress = callback

    @property
    def batches_run(self) -> int:
        """Batches this device ran."""
        return self.executor.batches_run

    @property
    def circuits_run(self) -> int:
        """Circuits this device ran."""
        return self.executor.circuits_run

    # -- facts for placement and compile ----------------------------------------------

    def snapshot(self) -> DeviceSnapshot:
        """What placement needs to know about this device now."""
        with self._lock:
            depth, queued_shots = len(self.queue), self.queue.queued_shots
        method, gpu = self.simulator_info()
        return DeviceSnapshot(
            name=self.name,
            status=self.status,
            num_qubits=self.calibration.num_qubits,
            calibration=self.calibration,
            queue_depth=depth,
            queued_shots=queued_shots,
            queue_limit=self.config.queue_limit,
            price_per_shot_usd=self.config.price_per_shot_usd,
            price_per_job_usd=self.config.price_per_job_usd,
            simulator_method=method,
            gpu=gpu,
            incarnation=self.incarnation,
            status_reason=self.status_reason,
            canary_predicted=self.canary[0] if self.canary else None,
            canary_measured=self.canary[1] if self.canary else None,
            canary_at=self.canary[2] if self.canary else None,
            degraded=self.degraded,
            threads=self.cpu_threads(),
        )

    def simulator_info(self) -> tuple[str, bool]:
        """(method description, uses GPU) of the simulator, without building it."""
        from qrt_ray.noise import gpu_available

        gpu = self.config.gpu != "never" and gpu_available()
        if gpu:
            return "statevector (GPU)", True
        return (
            f"density matrix while 2^qubits < {DM_SHOTS_FACTOR} x shots (to "
            f"{DM_MAX_ACTIVE_QUBITS} qubits), else statevector; MPS from "
            f"{MPS_MIN_ACTIVE_QUBITS} qubits (CPU, {self.cpu_threads()} threads)",
            False,
        )

    def cpu_threads(self) -> int:
        """CPU threads one circuit can use: Aer's own cap and OpenMP's, whichever is lower."""
        omp = os.environ.get("OMP_NUM_THREADS", "")
        return min(self._threads, int(omp)) if omp.isdigit() and int(omp) > 0 else self._threads

    def compile_target(self):
        """The transpiler target of the current calibration, with its id."""
        cal = self.calibration
        found = self._target
        if found is None or found[0] != cal.calibration_id:
            # built once per calibration: a 16-qubit target takes about 40 ms
            found = self._target = (
                cal.calibration_id,
                with_loop_exits(target_from_snapshot(cal, self._backend.target)),
            )
        return found

    # -- queue ------------------------------------------------------------------------

    def enqueue(self, items: Iterable[WorkItem]) -> int:
        """Add work; returns the queue depth.

        Raises:
            DeviceUnavailableError: the device is not ONLINE or its queue is full.
        """
        items = list(items)
        with self._lock:
            if self.status is not DeviceStatus.ONLINE:
                raise DeviceUnavailableError(f"device {self.name} is {self.status.value}")
            if len(self.queue) + len(items) > self.config.queue_limit:
                raise DeviceUnavailableError(
                    f"device {self.name}: queue full ({self.config.queue_limit} jobs)"
                )
            self.queue.add(items, self._clock())
            return len(self.queue)

    def drop(self, job_ids: Iterable[str], attempts: Mapping[str, int] | None = None) -> list[str]:
        """Remove work of these jobs (cancelled or moved); returns the job ids whose
        queued work was removed.

        Queued work goes at once; a batch running their work leaves it out from its
        next piece (see :meth:`Executor.abandon`), so the device is free for other work
        within about a piece. With ``attempts``, only work of exactly that attempt of
        each job goes.
        """
        job_ids = list(job_ids)
        self.executor.abandon(job_ids, dict(attempts) if attempts else None)
        with self._lock:
            return self.queue.drop(job_ids, attempts)

    def take_batch(self) -> list[WorkItem]:
        """Pop the work to run next (see :meth:`DeviceQueue.take`).

        Nothing is taken unless the device runs work: a paused, calibrating or offline
        device keeps its queue (the scheduler moves it elsewhere).
        """
        with self._lock:
            if not self.status.runs_work:
                return []
            return self.queue.take(self._clock(), self.config.max_batch_circuits)

    def restart(self) -> None:
        """Forget the queue and start a new incarnation, as a restarted actor does.

        For in-process farms (tests, simulations); a real device actor restarts by
        being killed and recreated by Ray.
        """
        with self._lock:
            self.queue.clear()
            self.faults = FaultPlan()
            self.status = DeviceStatus.ONLINE
            self.status_reason = ""
            self.degraded = ""
            self.canary = None
            self.incarnation = secrets.token_hex(6)

    def set_status(self, status: DeviceStatus, reason: str = "") -> None:
        """Change whether the device takes work; a batch already running finishes."""
        with self._lock:
            self.status = status
            self.status_reason = reason

    def set_health(self, predicted: float, measured: float, at: float, degraded: str) -> None:
        """What the last canary round found; ``degraded`` (non-empty) marks results."""
        with self._lock:
            self.canary = (predicted, measured, at)
            self.degraded = degraded

    def true_calibration(self) -> CalibrationSnapshot:
        """The device's true parameters now: what the simulator runs on.

        Without drift they are the reported calibration; with drift they move away
        from it until the device is recalibrated.
        """
        true = (
            self.calibration if self._drift is None else self._drift.true_calibration(self._clock())
        )
        factor = self.faults.hidden_error * self.faults.drift_error
        if factor == 1.0:
            return true
        return with_recomputed_id(
            replace(
                true,
                readout_error=tuple(capped_error(e, factor) for e in true.readout_error),
                gates=tuple(replace(g, error=capped_error(g.error, factor)) for g in true.gates),
            )
        )

    def recalibrate(self) -> CalibrationSnapshot:
        """Retune and measure the device now; the result becomes its calibration.

        Returns:
            The new calibration (a new id when anything changed).
        """
        now = self._clock()
        if self._drift is None:
            measured = replace(self.calibration, taken_at=now)
        else:
            measured = self._drift.recalibrate(now)
        self.set_calibration(measured)
        self.faults.drift_error = 1.0  # a retune fixes drift (hidden faults stay)
        with self._lock:
            self.degraded = ""
        return measured

    def restore_calibration(self, calibration: CalibrationSnapshot) -> None:
        """Take back a calibration this device had before it restarted.

        With drift, the calibration's time is when the device was last retuned, so
        the true noise drifts on from there (the process only depends on the seed,
        the time and the retunes).
        """
        self.set_calibration(calibration)
        if self._drift is not None:
            self._drift.retuned_at(calibration.taken_at)

    def set_calibration(self, calibration: CalibrationSnapshot) -> None:
        """Replace the calibration; queued work compiled for the old one is refused."""
        if (
            calibration.device != self.name
            or calibration.num_qubits != self.calibration.num_qubits
            or set(calibration.coupling_map) != set(self.calibration.coupling_map)
        ):
            raise ValueError(
                f"calibration of {calibration.device} ({calibration.num_qubits} qubits) "
                f"does not describe device {self.name} ({self.calibration.num_qubits} qubits)"
            )
        with self._lock:
            old, self.calibration = self.calibration, calibration
            self.probes.keep_only(calibration.calibration_id)
        if old.calibration_id != calibration.calibration_id:
            # the old calibration's simulator is not needed again (one whose parameters
            # equal the true noise's is rebuilt by the next batch that wants it)
            self._noise.invalidate(self.name, old.calibration_id)

    def has_runnable_work(self) -> bool:
        """Whether :meth:`take_batch` would return work now (queued and ONLINE)."""
        with self._lock:
            return bool(len(self.queue)) and self.status.runs_work

    @property
    def queue_depth(self) -> int:
        """Jobs waiting in this device's queue."""
        with self._lock:
            return len(self.queue)

    # -- execution --------------------------------------------------------------------

    def execute(self, batch: Sequence[WorkItem]) -> list[RawRun]:
        """Run a batch on the device's true noise (see :meth:`Executor.execute`); the
        runs come back signed."""
        runs = self.executor.execute(batch, self.calibration, self.true_calibration, self.degraded)
        return [self._signed(r) for r in runs]

    def execute_reporting(self, batch: Sequence[WorkItem]) -> list[RawRun]:
        """:meth:`execute`, with a simulator that raised reported as a run of each
        item that produced no shots (``RunError.SIMULATOR``: every job of the batch is
        then a suspect of crashing it; see :mod:`qrt_ray.policies.quarantine`)."""
        try:
            return self.execute(batch)
        except Exception as exc:
            logger.exception("device %s: simulator failed", self.name)
            error = f"simulator error: {brief(str(exc), 300)}"
            return [self.no_run(i, error, kind=RunError.SIMULATOR) for i in batch]

    def no_run(self, item: WorkItem, error: str, *, kind: RunError = RunError.NONE) -> RawRun:
        """A run of ``item`` that produced no shots, and why (signed); the scheduler
        reruns it."""
        return self._signed(self.executor.no_run(item, self.calibration, error, kind=kind))

    def claim(self, batch: Sequence[WorkItem]) -> tuple[list[tuple[str, int, str]], str]:
        """What to tell the scheduler before running ``batch``: its (job, attempt,
        dispatch token)s and this device's signature over them (empty without a key)."""
        entries = [(i.job_id, i.attempt, i.dispatch) for i in batch]
        key = self.report_key
        return entries, sign_start(key, self.name, entries) if key is not None else ""

    def _signed(self, run: RawRun) -> RawRun:
        return run if self.report_key is None else sign_run(self.report_key, run)

    # -- probes (beside the queue) ------------------------------------------------------

    def run_canaries(
        self,
        specs: Sequence[CanarySpec],
        shots: int,
        seed: int | None = None,
        versions: Mapping[str, Sequence[str]] | None = None,
    ) -> list[CanaryResult]:
        """Run canaries on the true noise and predict them from the calibration (see
        :meth:`Probes.run_canaries`)."""
        return self.probes.run_canaries(specs, shots, seed, versions)

    def readout_calibration(
        self, qubits: Sequence[int], shots: int, max_age_s: float, seed: int | None = None
    ) -> tuple[ReadoutCalibration, int]:
        """Readout errors of these qubits on the current calibration (see
        :meth:`Probes.readout_calibration`)."""
        return self.probes.readout_calibration(qubits, shots, max_age_s, seed)
