"""A device's executor: runs batches of compiled work on its noisy simulator.

One simulator call per group of work that shares shots, seed, method, twirling and
decoupling (never one per circuit), split into pieces with a heartbeat between them;
a control link that can time out or reject a program; and the faults tests and chaos
drills inject. Plain Python: :class:`~qrt_ray.actors.device.Device` owns one.
"""

from __future__ import annotations

import random
import secrets
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from functools import partial
from typing import Any

from qrt_ray.actors.device_queue import WorkItem
from qrt_ray.aer import PieceResults, method_options, sim_method_for, simulate, touched_qubits
from qrt_ray.compiler import decode_compiled
from qrt_ray.config import LinkConfig
from qrt_ray.errors import ControlLinkError
from qrt_ray.mitigation.dd import pad_dynamical_decoupling
from qrt_ray.mitigation.twirling import copies_for, run_twirled, split_shots
from qrt_ray.models import CalibrationSnapshot, DecouplingSpec, TwirlSpec
from qrt_ray.noise import NoiseModelCache, target_from_snapshot
from qrt_ray.policies.health import backoff_delay
from qrt_ray.results import RawRun, RunError, counts_checksum, slice_seed, trim_counts

# A device runs a batch in simulator calls and reports progress between them (see
# Executor._run_in_pieces): at most this many circuits a call (batching gains little
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


@dataclass(frozen=True, slots=True)
class _Group:
    """Work items run by one simulator call: same shots, seed, method and options."""

    items: list[WorkItem]
    shots: int
    seed: int | None
    forced: str | None  # the method forced on the simulator (None: its own choice)
    options: dict[str, Any]
    twirl: TwirlSpec | None
    dd: DecouplingSpec | None


@dataclass(frozen=True, slots=True)
class _Setting:
    """What a batch runs on and what its runs report."""

    sim: Any
    calibration: CalibrationSnapshot
    method: str
    gpu: bool
    degraded: str


class Executor:
    """Runs batches for one device.

    Args:
        name: the device.
        target: the device's transpiler target as the backend describes it.
        noise: builds (and caches) the noisy simulator of a calibration.
        gpu: the device's GPU setting (``auto``, ``always``, ``never``).
        threads: CPU threads a simulator call may use.
        link: the control link's retry policy.
        clock: wall clock; ``sleep``: how backoff waits (both injected for tests).
    """

    def __init__(
        self,
        name: str,
        target: Any,
        noise: NoiseModelCache,
        *,
        gpu: str,
        threads: int,
        link: LinkConfig,
        clock: Callable[[], float] = time.time,
        sleep: Callable[[float], None] = time.sleep,
    ) -> None:
        self.name = name
        self.link = link
        self.faults = FaultPlan()
        # called after each simulator call of a batch (the actor tells the scheduler)
        self.on_progress: Callable[[], None] | None = None
        self.batches_run = 0
        self.circuits_run = 0
        self._target = target
        self._noise = noise
        self._gpu = gpu
        self._threads = threads
        self._clock = clock
        self._sleep = sleep
        self._rng = random.Random()

    def execute(
        self,
        batch: Sequence[WorkItem],
        calibration: CalibrationSnapshot,
        true_calibration: Callable[[], CalibrationSnapshot],
        degraded: str = "",
    ) -> list[RawRun]:
        """Run a batch compiled for ``calibration`` on the noise of ``true_calibration()``.

        A transient control-link error is retried up to ``link.retries`` times with
        exponential backoff and full jitter; after that, or on a permanent error, the
        batch's runs come back empty with the reason (``error_kind`` says which). Work
        compiled for another calibration is refused (the scheduler recompiles it).
        """
        cal = calibration
        if self.faults.hang_s > 0:
            stall, self.faults.hang_s = self.faults.hang_s, 0.0
            time.sleep(stall)
        failed = self._open_link()
        if failed is not None and failed.transient:
            return [self.no_run(item, cal, str(failed), kind=RunError.LINK) for item in batch]
        if failed is not None:  # the first program was rejected; the rest did not run
            return [
                self.no_run(batch[0], cal, str(failed), kind=RunError.PERMANENT),
                *(
                    self.no_run(item, cal, f"batch aborted on {self.name}: {failed}")
                    for item in batch[1:]
                ),
            ]
        sim, method, gpu = self._noise.get(
            true_calibration(), self._target, gpu=self._gpu, max_parallel_threads=self._threads
        )
        setting = _Setting(sim, cal, method, gpu, degraded)
        runs: list[RawRun] = []
        groups: dict[tuple[Any, ...], list[WorkItem]] = {}
        for item in batch:
            if item.calibration_id != cal.calibration_id:
                runs.append(self._refused(item, setting))
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
            group = _Group(items, shots, seed, forced, dict(options), twirl, dd)
            runs.extend(self._run_group(setting, group))
        self.batches_run += 1
        return runs

    def no_run(
        self,
        item: WorkItem,
        calibration: CalibrationSnapshot,
        error: str,
        *,
        method: str = "none",
        gpu: bool = False,
        kind: RunError = RunError.NONE,
    ) -> RawRun:
        """A run of ``item`` that produced no shots, and why; the scheduler reruns it."""
        return RawRun(
            job_id=item.job_id,
            attempt=item.attempt,
            device=self.name,
            calibration_id=calibration.calibration_id,
            calibration_taken_at=calibration.taken_at,
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

    def _run_group(self, setting: _Setting, group: _Group) -> list[RawRun]:
        cal, items, shots = setting.calibration, group.items, group.shots
        circuits = decode_compiled([c for item in items for c in item.circuits])
        options = group.options
        pad = None
        dd, twirl = group.dd, group.twirl
        if dd is not None:
            target = target_from_snapshot(cal, self._target)

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
        base_seed = group.seed if group.seed is not None else secrets.randbits(30)
        start = time.perf_counter()
        small = group.forced != "matrix_product_state" and all(
            item.active_qubits <= SMALL_CIRCUIT_QUBITS for item in items
        )
        run = partial(
            self._run_in_pieces,
            setting.sim,
            first=CALL_CIRCUITS if small else FIRST_CALL_CIRCUITS,
        )
        default_method = group.forced or setting.method
        if twirl is None:
            result = run(circuits, shots=shots, seed_simulator=base_seed, **options)
            all_counts = [dict(result.get_counts(i)) for i in range(len(circuits))]
            seeds = [int(r.seed_simulator) for r in result.results]
            ran_method = [str(r.metadata.get("method", default_method)) for r in result.results]
        else:
            all_counts, seeds, ran_method = run_twirled(
                setting.sim,
                circuits,
                shots,
                twirl,
                base_seed,
                options,
                default_method=default_method,
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
                    gpu=setting.gpu,
                    checksum=checksum,
                    first_shot=item.first_shot,
                    remaining=item.remaining,
                    ran_at=self._clock(),
                    degraded=setting.degraded,
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

    def _refused(self, item: WorkItem, setting: _Setting) -> RawRun:
        # A circuit compiled for another calibration would run with the wrong layout
        # assumptions; the scheduler recompiles rather than run it.
        cal = setting.calibration
        return self.no_run(
            item,
            cal,
            f"compiled for calibration {item.calibration_id} but {self.name} is at "
            f"{cal.calibration_id}; recompile",
            method=setting.method,
            gpu=setting.gpu,
            kind=RunError.CALIBRATION,
        )
