"""A quantum device: its calibration, its queue, and a noisy simulator that runs batches.

:class:`Device` is plain Python (tests use it without Ray); :class:`DeviceActor` in
``actors/device_actor.py`` wraps it with a worker thread that drains the queue.
"""

from __future__ import annotations

import os
import random
import secrets
import threading
import time
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field, replace
from functools import partial
from typing import Any

from qrt_ray.actors.device_queue import DeviceQueue, WorkItem
from qrt_ray.aer import (
    DM_MAX_ACTIVE_QUBITS,
    DM_SHOTS_FACTOR,
    MPS_MIN_ACTIVE_QUBITS,
    PieceResults,
    method_options,
    sim_method_for,
    simulate,
    touched_qubits,
)
from qrt_ray.calibration import load_backend, snapshot_from_backend, with_recomputed_id
from qrt_ray.compiler import decode_compiled
from qrt_ray.config import DeviceConfig, LinkConfig, SchedulingConfig
from qrt_ray.drift import DriftProcess, capped_error
from qrt_ray.errors import ControlLinkError, DeviceUnavailableError, ValidationError
from qrt_ray.mitigation.dd import pad_dynamical_decoupling
from qrt_ray.mitigation.readout import ReadoutCalibration
from qrt_ray.mitigation.readout_cache import ReadoutCache
from qrt_ray.mitigation.twirling import copies_for, run_twirled, split_shots
from qrt_ray.models import (
    CalibrationSnapshot,
    DecouplingSpec,
    DeviceSnapshot,
    DeviceStatus,
    TwirlSpec,
)
from qrt_ray.noise import NoiseModelCache, target_from_snapshot
from qrt_ray.policies.canary import CanaryResult, CanarySpec, success_probability
from qrt_ray.policies.health import backoff_delay
from qrt_ray.results import RawRun, RunError, counts_checksum, slice_seed, trim_counts

# The prediction of a canary samples the calibration's own noise this many times more
# than the canary itself, so its error is small beside the canary's shot noise.
_PREDICTION_SHOTS_FACTOR = 8


# A device runs a batch in simulator calls and reports progress between them (see
# Device._run_in_pieces): at most this many circuits a call (batching gains little
# beyond a few dozen), the first call this many, and later calls sized to last
# about this long at the pace of the one before.
CALL_CIRCUITS = 64
FIRST_CALL_CIRCUITS = 16
# Circuits touching at most this many qubits are run CALL_CIRCUITS at a time from the
# first call: a density matrix or statevector that small takes milliseconds a circuit,
# about what a simulator call costs on its own (Aer hands it the noise model as JSON:
# a one-circuit call on guadalupe took 9 ms with the model restricted to the touched
# qubits, see `simulate`, and 54 ms with the whole device's).
SMALL_CIRCUIT_QUBITS = 7
CALL_TARGET_S = 20.0


# (shots per circuit, simulator seed, forced method, twirling, decoupling): one
# simulator call each
GroupKey = tuple[int, int | None, str | None, TwirlSpec | None, DecouplingSpec | None]


@dataclass(slots=True)
class FaultPlan:
    """Faults to inject into the next runs (tests and chaos drills only)."""

    partial_fractions: list[float] = field(default_factory=list)
    corrupt: int = 0
    hang_s: float = 0.0  # the next batch stalls this long before it runs (once)
    # control-link errors the next batch attempts meet, in order: "transient" or
    # "permanent"
    link_errors: list[str] = field(default_factory=list)
    # gate and readout errors are this many times what any calibration measures: a
    # fault recalibration cannot see or fix (canaries keep failing)
    hidden_error: float = 1.0


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
    ) -> None:
        self.config = config
        self.name = config.name
        self.status = DeviceStatus.ONLINE
        self.status_reason = ""
        self.degraded = ""
        self.canary: tuple[float, float, float] | None = None  # predicted, measured, at
        self.link = link or LinkConfig()
        self._sleep = sleep
        self._rng = random.Random()
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
        self._predicted: dict[tuple[str, str, str], float] = {}
        self._canary_circuits: dict[str, Any] = {}
        self._noise = noise_cache or NoiseModelCache()
        self.scheduling = scheduling or SchedulingConfig()
        self.queue = DeviceQueue(self.scheduling)
        self._lock = threading.Lock()
        self.faults = FaultPlan()
        # called after each simulator call of a batch (the actor tells the scheduler)
        self.on_progress: Callable[[], None] | None = None
        self.batches_run = 0
        self.circuits_run = 0
        self._readout = ReadoutCache(self._measure_readout, clock)

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
                target_from_snapshot(cal, self._backend.target),
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
        """Remove queued work of these jobs (cancelled or moved); returns what was removed.

        With ``attempts``, only work of exactly that attempt of each job goes.
        """
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
        factor = self.faults.hidden_error
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
            # canary predictions hold for one calibration only
            self._predicted = {
                k: v for k, v in self._predicted.items() if k[0] == calibration.calibration_id
            }
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
        """Run a batch: one simulator call per (shots, seed) group, never one per circuit.

        A transient control-link error is retried up to ``link.retries`` times with
        exponential backoff and full jitter; after that, or on a permanent error, the
        batch's runs come back empty with the reason (``error_kind`` says which).
        """
        if self.faults.hang_s > 0:
            stall, self.faults.hang_s = self.faults.hang_s, 0.0
            time.sleep(stall)
        failed = self._open_link()
        if failed is not None and failed.transient:
            return [self.no_run(item, str(failed), kind=RunError.LINK) for item in batch]
        if failed is not None:  # the first program was rejected; the rest did not run
            return [
                self.no_run(batch[0], str(failed), kind=RunError.PERMANENT),
                *(
                    self.no_run(item, f"batch aborted on {self.name}: {failed}")
                    for item in batch[1:]
                ),
            ]
        cal = self.calibration  # what the work was compiled for, and results name
        sim, method, gpu = self._noise.get(
            self.true_calibration(),
            self._backend.target,
            gpu=self.config.gpu,
            max_parallel_threads=self._threads,
        )
        runs: list[RawRun] = []
        groups: dict[GroupKey, list[WorkItem]] = {}
        for item in batch:
            if item.calibration_id != cal.calibration_id:
                runs.append(self._refused(item, cal, method, gpu))
                continue
            run_shots = item.shots
            if item.twirl is not None:
                run_shots = split_shots(item.shots, copies_for(item.twirl, item.shots))[0]
            forced = None if gpu else sim_method_for(item.active_qubits, run_shots)
            options = tuple(method_options(forced, item.active_qubits).items())
            seed = slice_seed(item.seed, item.first_shot, item.attempt)
            key = (item.shots, seed, forced, options, item.twirl, item.dd)
            groups.setdefault(key, []).append(item)
        for (shots, seed, forced, options, twirl, dd), items in groups.items():
            runs.extend(
                self._run_group(
                    sim, cal, items, shots, seed, method, gpu, forced, dict(options), twirl, dd
                )
            )
        self.batches_run += 1
        return runs

    def _open_link(self) -> ControlLinkError | None:
        """Talk to the control electronics; returns the error that stopped it, if any."""
        for retry in range(self.link.retries + 1):
            if not self.faults.link_errors:
                return None
            kind = self.faults.link_errors.pop(0)
            if kind == "permanent":
                return ControlLinkError(
                    f"control link of {self.name}: the device rejected the program (permanent)",
                    transient=False,
                )
            if retry == self.link.retries:
                return ControlLinkError(
                    f"control link of {self.name}: timed out {retry + 1} times in a row",
                    transient=True,
                )
            self._sleep(
                backoff_delay(retry, self.link.backoff_s, self.link.backoff_max_s, self._rng)
            )
        return None

    def run_canaries(
        self, specs: Sequence[CanarySpec], shots: int, seed: int | None = None
    ) -> list[CanaryResult]:
        """Run canary circuits on the true noise; predict them from the calibration.

        Each canary is compiled onto its own qubits. The prediction samples the
        current calibration's noise model (``_PREDICTION_SHOTS_FACTOR`` times the
        shots, once per calibration and canary); the measurement runs what the device
        really is now. Canaries do not go through the queue: a device actor runs them
        on another thread, beside any batch in progress (they are a few small
        circuits).
        """
        cal = self.calibration
        circuits = [self._canary_circuit(spec) for spec in specs]
        measured = self._sample(self.true_calibration(), specs, circuits, shots, seed)
        todo = [
            i
            for i, spec in enumerate(specs)
            if (cal.calibration_id, spec.name, spec.qasm) not in self._predicted
        ]
        if todo:
            got = self._sample(
                cal,
                [specs[i] for i in todo],
                [circuits[i] for i in todo],
                shots * _PREDICTION_SHOTS_FACTOR,
                seed=1,
            )
            for i, p in zip(todo, got, strict=True):
                self._predicted[(cal.calibration_id, specs[i].name, specs[i].qasm)] = p
        return [
            CanaryResult(
                spec.name, self._predicted[(cal.calibration_id, spec.name, spec.qasm)], m, shots
            )
            for spec, m in zip(specs, measured, strict=True)
        ]

    def readout_calibration(
        self, qubits: Sequence[int], shots: int, max_age_s: float, seed: int | None = None
    ) -> tuple[ReadoutCalibration, int]:
        """Readout errors of these physical qubits on the current calibration.

        Figures measured for this calibration less than ``max_age_s`` ago are reused;
        the others are measured now (two circuits, beside any batch in progress, like
        canaries).

        Returns:
            (the readout calibration, device shots spent measuring now: 0 if reused).

        Raises:
            ValidationError: a qubit is not on this device.
        """
        bad = [q for q in qubits if not 0 <= q < self.calibration.num_qubits]
        if bad:
            raise ValidationError(
                f"qubits {bad} are not on {self.name} (qubits 0-{self.calibration.num_qubits - 1})"
            )
        cal = self.calibration
        return self._readout.get(
            self.name, cal.calibration_id, qubits, shots=shots, max_age_s=max_age_s, seed=seed
        )

    def _measure_readout(
        self, qubits: Sequence[int], shots: int, seed: int | None
    ) -> tuple[list[float], list[float]]:
        """P(1|0) and P(0|1) of each qubit, measured on the true noise now."""
        from qiskit import ClassicalRegister, QuantumCircuit

        circuits = []
        for prepare_one in (False, True):
            qc = QuantumCircuit(self.calibration.num_qubits)
            creg = ClassicalRegister(len(qubits), "c")
            qc.add_register(creg)
            if prepare_one:
                qc.x(list(qubits))
            qc.measure(list(qubits), creg)
            circuits.append(qc)
        # independent qubits in product states: a matrix product state is exact and
        # cheap for any number of them, where a (GPU) statevector would need 2^n
        sim, _, _ = self._noise.get(
            self.true_calibration(),
            self._backend.target,
            gpu="never",
            max_parallel_threads=self._threads,
        )
        result = simulate(
            sim,
            circuits,
            shots=shots,
            seed_simulator=seed,
            **method_options("matrix_product_state"),
        )
        n = len(qubits)
        ones = [[0] * n, [0] * n]
        for which in (0, 1):
            for key, count in result.get_counts(which).items():
                bits = key.replace(" ", "")
                for k in range(n):
                    if bits[n - 1 - k] == "1":
                        ones[which][k] += count
        p01 = [c / shots for c in ones[0]]
        p10 = [1 - c / shots for c in ones[1]]
        return p01, p10

    def _canary_circuit(self, spec: CanarySpec) -> Any:
        hit = self._canary_circuits.get(spec.name + spec.qasm)
        if hit is None:
            from qiskit import transpile

            from qrt_ray.circuits import parse_qasm

            hit = transpile(
                parse_qasm(spec.qasm, arg=spec.name),
                target=self._backend.target,
                initial_layout=list(spec.qubits),
                optimization_level=1,
                seed_transpiler=0,
            )
            self._canary_circuits[spec.name + spec.qasm] = hit
        return hit

    def _sample(
        self,
        calibration: CalibrationSnapshot,
        specs: Sequence[CanarySpec],
        circuits: Sequence[Any],
        shots: int,
        seed: int | None,
    ) -> list[float]:
        sim, _, gpu = self._noise.get(
            calibration,
            self._backend.target,
            gpu=self.config.gpu,
            max_parallel_threads=self._threads,
        )
        out: list[float | None] = [None] * len(specs)
        by_method: dict[str | None, list[int]] = {}
        for i, spec in enumerate(specs):
            method = None if gpu else sim_method_for(len(spec.qubits), shots)
            by_method.setdefault(method, []).append(i)
        for method, idx in by_method.items():
            options = method_options(method, max(len(specs[i].qubits) for i in idx))
            result = simulate(
                sim, [circuits[i] for i in idx], shots=shots, seed_simulator=seed, **options
            )
            for k, i in enumerate(idx):
                out[i] = success_probability(result.get_counts(k), specs[i].ideal)
        return [float(p) for p in out]  # type: ignore[arg-type]

    def _run_group(
        self,
        sim: Any,
        cal: CalibrationSnapshot,
        items: list[WorkItem],
        shots: int,
        seed: int | None,
        method: str,
        gpu: bool,
        forced: str | None,
        options: dict[str, Any],
        twirl: TwirlSpec | None = None,
        dd: DecouplingSpec | None = None,
    ) -> list[RawRun]:
        circuits = decode_compiled([c for item in items for c in item.circuits])
        pad = None
        if dd is not None:
            target = target_from_snapshot(cal, self._backend.target)

            def pad(circuit: Any) -> Any:
                return pad_dynamical_decoupling(
                    circuit, target, sequence=dd.sequence, scheduling=dd.scheduling
                )

            if twirl is None:
                circuits = [pad(c) for c in circuits]
        if twirl is None or pad is None:
            # the circuits as they run, or twirled copies, which touch the qubits their
            # circuit does: read them once here (decoupling pads each twirled copy, so
            # those calls read their own)
            options = {**options, "qubits": touched_qubits(circuits)}
        base_seed = seed if seed is not None else secrets.randbits(30)
        start = time.perf_counter()
        small = forced != "matrix_product_state" and all(
            item.active_qubits <= SMALL_CIRCUIT_QUBITS for item in items
        )
        run = partial(
            self._run_in_pieces, sim, first=CALL_CIRCUITS if small else FIRST_CALL_CIRCUITS
        )
        if twirl is None:
            result = run(circuits, shots=shots, seed_simulator=base_seed, **options)
            all_counts = [dict(result.get_counts(i)) for i in range(len(circuits))]
            seeds = [int(r.seed_simulator) for r in result.results]
            ran_method = [str(r.metadata.get("method", forced or method)) for r in result.results]
        else:
            all_counts, seeds, ran_method = run_twirled(
                sim,
                circuits,
                shots,
                twirl,
                base_seed,
                options,
                default_method=forced or method,
                prepare=pad,
                run=run,
            )
        elapsed = time.perf_counter() - start
        self.circuits_run += len(circuits)
        runs = []
        offset = 0
        for item in items:
            n = len(item.circuits)
            counts = all_counts[offset : offset + n]
            counts = self._apply_partial_fault(counts, shots)
            checksum = counts_checksum(counts)
            if self.faults.corrupt > 0:
                self.faults.corrupt -= 1
                first = next(iter(counts[0]))
                counts[0][first] += 1  # payload no longer matches what was checksummed
            runs.append(
                RawRun(
                    job_id=item.job_id,
                    attempt=item.attempt,
                    device=self.name,
                    calibration_id=cal.calibration_id,
                    calibration_taken_at=cal.taken_at,
                    shots_requested=shots,
                    counts=tuple(counts),
                    seeds=tuple(seeds[offset : offset + n]),
                    run_s=elapsed * n / len(circuits),
                    # Aer picks a method per circuit; record the one this job ran with
                    simulator_method=ran_method[offset],
                    gpu=gpu,
                    checksum=checksum,
                    first_shot=item.first_shot,
                    remaining=item.remaining,
                    ran_at=self._clock(),
                    degraded=self.degraded,
                )
            )
            offset += n
        return runs

    def _run_in_pieces(
        self,
        sim: Any,
        circuits: Sequence[Any],
        *,
        shots: int,
        seed_simulator: int,
        first: int = FIRST_CALL_CIRCUITS,
        **options: Any,
    ) -> PieceResults:
        """``sim.run(circuits, ...).result()`` in several calls, calling ``on_progress``
        after each.

        The scheduler takes a batch that runs far longer than expected without progress
        for a hung device; these heartbeats tell it a long batch is slow, not stuck (a
        20-qubit level-2 estimator job ran over 300 s where the run-time model expected
        11 s, and was restarted as hung over and over). The first call takes ``first``
        circuits (``CALL_CIRCUITS`` for small ones, see ``SMALL_CIRCUIT_QUBITS``); each
        next one as many as the last call's pace fits in ``CALL_TARGET_S``, at most
        ``CALL_CIRCUITS``. Piece k is seeded ``seed_simulator + k``, so a seeded run
        reproduces.
        """
        pieces = []
        begin, size, k = 0, min(first, CALL_CIRCUITS), 0
        while begin < len(circuits):
            chunk = list(circuits[begin : begin + size])
            start = time.perf_counter()
            pieces.append(
                simulate(sim, chunk, shots=shots, seed_simulator=seed_simulator + k, **options)
            )
            per_circuit = max(time.perf_counter() - start, 1e-6) / len(chunk)
            if self.on_progress is not None:
                self.on_progress()
            begin, k = begin + len(chunk), k + 1
            size = max(1, min(CALL_CIRCUITS, int(CALL_TARGET_S / per_circuit)))
        return PieceResults(pieces)

    def _apply_partial_fault(
        self, counts: list[dict[str, int]], shots: int
    ) -> list[dict[str, int]]:
        if not self.faults.partial_fractions:
            return counts
        keep = max(0, int(shots * self.faults.partial_fractions.pop(0)))
        return [trim_counts(c, keep) for c in counts]

    def _refused(self, item: WorkItem, cal: CalibrationSnapshot, method: str, gpu: bool) -> RawRun:
        # A circuit compiled for another calibration would run with the wrong layout
        # assumptions; the scheduler recompiles rather than run it.
        return self.no_run(
            item,
            f"compiled for calibration {item.calibration_id} but {self.name} is at "
            f"{cal.calibration_id}; recompile",
            method=method,
            gpu=gpu,
            kind=RunError.CALIBRATION,
        )

    def no_run(
        self,
        item: WorkItem,
        error: str,
        *,
        method: str = "none",
        gpu: bool = False,
        kind: RunError = RunError.NONE,
    ) -> RawRun:
        """A run of ``item`` that produced no shots, and why; the scheduler reruns it."""
        cal = self.calibration
        return RawRun(
            job_id=item.job_id,
            attempt=item.attempt,
            device=self.name,
            calibration_id=cal.calibration_id,
            calibration_taken_at=cal.taken_at,
            shots_requested=item.shots,
            counts=(),
            seeds=(),
            run_s=0.0,
            simulator_method=method,
            gpu=gpu,
            checksum=counts_checksum([]),
            error=error,
            first_shot=item.first_shot,
            remaining=item.remaining,
            error_kind=kind,
            ran_at=self._clock(),
        )
