"""A device's executor: runs batches of compiled work on its noisy simulator.

One simulator call per group of work that shares shots, seed, method, twirling and
decoupling (never one per circuit), split into pieces with a heartbeat between them;
a control link that can time out or reject a program; and the faults tests and chaos
drills inject. Plain Python: :class:`~qrt_ray.actors.device.Device` owns one.
"""

from __future__ import annotations

import dataclasses
import logging
import math
import os
import random
import secrets
import threading
import time
from collections import Counter, OrderedDict
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

from qiskit_aer import AerSimulator

from qrt_ray.actors.device_queue import WorkItem
from qrt_ray.aer import counts_of, method_options, sim_method_for, simulate, touched_qubits
from qrt_ray.compiler import compiled_stats, decode_compiled
from qrt_ray.config import ChaosConfig, LinkConfig
from qrt_ray.errors import ControlLinkError
from qrt_ray.mitigation.dd import pad_dynamical_decoupling
from qrt_ray.mitigation.twirling import copies_for, run_twirled, split_shots
from qrt_ray.models import CalibrationSnapshot, DecouplingSpec, TwirlSpec
from qrt_ray.noise import NoiseModelCache, target_from_snapshot
from qrt_ray.policies.health import backoff_delay
from qrt_ray.policies.simtime import (
    GPU,
    PIECE_TARGET_S,
    CallPace,
    CircuitWork,
    plan_pieces,
    prior_cost,
)
from qrt_ray.results import RawRun, RunError, counts_checksum, slice_seed, trim_counts

logger = logging.getLogger("qrt.device")

# A device runs a batch in simulator calls of about PIECE_TARGET_S each (see
# qrt_ray.policies.simtime.plan_pieces), at most this many circuits a call. Each call
# pays a fixed cost for the noise model's hand-over (a one-circuit call on guadalupe
# took 9 ms with the model restricted to the touched qubits, see `simulate`, and 54 ms
# with the whole device's; about 30 ms a call for 5-qubit GHZ circuits on manila), so
# small circuits gain from large calls: 200 of them at 1,000 shots on 2 cores took
# 535 ms in calls of 16, 273 ms in calls of 64 and 191 ms in one call.
CALL_CIRCUITS = 256
# Abandoned work remembered (job id -> attempt) until the batch running it reports.
_ABANDONED_KEPT = 10_000


class _Abandoned(Exception):
    """Every job of a simulator call was cancelled or moved while it ran."""


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
    # gate and readout errors are this many times the calibration's until the device
    # is next recalibrated (a drift canaries should find and a retune fixes)
    drift_error: float = 1.0
    # every batch meets a control link that times out until this unix time (an outage)
    link_down_until: float = 0.0


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
    noise: str = "device"


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
        chaos: ChaosConfig | None = None,
    ) -> None:
        self.name = name
        self.link = link
        self.faults = FaultPlan()
        self._chaos = chaos  # built-in faults (drills): a poison job's seed
        # called after each simulator call of a batch (the actor tells the scheduler)
        self.on_progress: Callable[[], None] | None = None
        self.batches_run = 0
        self.circuits_run = 0
        self.pace = CallPace()  # how fast full simulator calls run against the prior
        self._target = target
        self._noise = noise
        self._gpu = gpu
        self._threads = threads
        self._clock = clock
        self._sleep = sleep
        self._rng = random.Random()
        self._ideal: Any = None
        # work the scheduler cancelled or moved: job id -> attempt (None: every attempt)
        self._abandoned: OrderedDict[str, int | None] = OrderedDict()
        self._abandoned_lock = threading.Lock()

    def abandon(self, job_ids: Sequence[str], attempts: dict[str, int] | None = None) -> None:
        """Stop running these jobs' work (only these attempts, if given) at the next
        piece: the scheduler cancelled or moved it, so nothing it produces would count.
        """
        with self._abandoned_lock:
            for job_id in job_ids:
                self._abandoned[job_id] = attempts.get(job_id) if attempts else None
                self._abandoned.move_to_end(job_id)
            while len(self._abandoned) > _ABANDONED_KEPT:
                self._abandoned.popitem(last=False)

    def is_abandoned(self, item: WorkItem) -> bool:
        """Whether ``item``'s work was cancelled or moved (see :meth:`abandon`)."""
        with self._abandoned_lock:
            if item.job_id not in self._abandoned:
                return False
            attempt = self._abandoned[item.job_id]
            return attempt is None or attempt == item.attempt

    def _forget_abandoned(self, batch: Sequence[WorkItem]) -> None:
        with self._abandoned_lock:
            for item in batch:
                self._abandoned.pop(item.job_id, None)

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
        self._poison(batch)
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
            key = (item.shots, seed, forced, options, item.twirl, item.dd, item.noise)
            groups.setdefault(key, []).append(item)
        for (shots, seed, forced, options, twirl, dd, noise), items in groups.items():
            group = _Group(items, shots, seed, forced, dict(options), twirl, dd, noise)
            run_on = setting
            if noise == "ideal":  # the device's gates and layout, none of its noise
                run_on = dataclasses.replace(setting, sim=self._ideal_simulator())
            runs.extend(self._run_group(run_on, group))
        self._forget_abandoned(batch)
        self.batches_run += 1
        return runs

    def _poison(self, batch: Sequence[WorkItem]) -> None:
        """A drill's poison job crashes the simulator (the device's config says which)."""
        chaos = self._chaos
        if chaos is None or not any(i.seed == chaos.poison_seed for i in batch):
            return
        if chaos.effect == "crash":
            logger.error("%s: poison job in the batch; the simulator crashes", self.name)
            os._exit(70)  # what a segfault in the simulator does to the device process
        raise RuntimeError(f"the simulator crashed on {self.name} (a drill's poison job)")

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
            dispatch=item.dispatch,
            error_kind=kind,
            ran_at=self._clock(),
        )

    def _open_link(self) -> ControlLinkError | None:
        """Talk to the control electronics; returns the error that stopped it, if any."""
        if self._clock() < self.faults.link_down_until:
            return ControlLinkError(
                f"control link of {self.name}: no answer (the device is down)", transient=True
            )
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
        owners = [k for k, item in enumerate(items) for _ in item.circuits]
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
        default_method = group.forced or setting.method
        calls = _Calls(self, setting, group)
        try:
            if twirl is None:
                got = calls.run(
                    circuits, shots=shots, seed_simulator=base_seed, owners=owners, **options
                )
                all_counts = [got.counts[i] for i in range(len(circuits))]
                seeds = got.seeds
                ran_method = [m or default_method for m in got.methods]
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
                    run=calls.run,
                )
        except _Abandoned:
            return [self._dropped(item, setting) for item in items]
        elapsed = time.perf_counter() - start
        self.circuits_run += len(circuits)
        runs = []
        offset = 0
        # the call's time, shared by what each job's circuits were expected to cost
        weights = calls.weights or [1.0] * len(circuits)
        total_weight = sum(weights) or 1.0
        for k, item in enumerate(items):
            n = len(item.circuits)
            if k in calls.gone:
                runs.append(self._dropped(item, setting))
                offset += n
                continue
            counts = all_counts[offset : offset + n]
            counts = self._apply_partial_fault(counts, shots)
            checksum = counts_checksum(counts)
            if self.faults.corrupt > 0:
                self.faults.corrupt -= 1
                first = next(iter(counts[0]))
                counts[0][first] += 1  # payload no longer matches what was checksummed
            share = sum(weights[offset : offset + n]) / total_weight
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
                    run_s=elapsed * share,
                    # Aer picks a method per circuit; record the one this job ran with
                    simulator_method=ran_method[offset],
                    gpu=setting.gpu,
                    checksum=checksum,
                    first_shot=item.first_shot,
                    remaining=item.remaining,
                    ran_at=self._clock(),
                    degraded=setting.degraded,
                    dispatch=item.dispatch,
                    noise=group.noise,
                )
            )
            offset += n
        return runs

    def _ideal_simulator(self) -> Any:
        """The noiseless simulator of jobs that ask for one (made once)."""
        if self._ideal is None:
            self._ideal = AerSimulator(max_parallel_threads=self._threads)
        return self._ideal

    def _dropped(self, item: WorkItem, setting: _Setting) -> RawRun:
        return self.no_run(
            item,
            setting.calibration,
            f"abandoned on {self.name}: the job was cancelled or moved while it ran",
            method=setting.method,
            gpu=setting.gpu,
        )

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


def circuit_work(circuit: Any) -> CircuitWork:
    """What the run-time model needs of one circuit, counted as the compiler counts it
    for the scheduler's figure (:func:`~qrt_ray.compiler.compiled_stats`)."""
    stats = compiled_stats(circuit, {})
    return CircuitWork(stats.active_qubits, stats.gates, stats.two_qubit_gates, stats.bond_moves)


class _Merged:
    """Per circuit: counts summed over its pieces, the first piece's seed and method."""

    def __init__(self, size: int) -> None:
        self.counts: list[dict[str, int]] = [{} for _ in range(size)]
        self.seeds = [0] * size
        self.methods: list[str | None] = [None] * size
        self._seen = [False] * size

    def add(self, index: int, counts: dict[str, int], seed: int, method: str | None) -> None:
        if not self._seen[index]:
            self._seen[index] = True
            self.seeds[index], self.methods[index] = seed, method
            self.counts[index] = dict(counts)
            return
        merged = Counter(self.counts[index])
        merged.update(counts)
        self.counts[index] = dict(merged)

    # read as a simulator result (run_twirled reads these two)
    @property
    def results(self) -> list[Any]:
        return [
            _SeedOnly(seed, method) for seed, method in zip(self.seeds, self.methods, strict=True)
        ]

    def get_counts(self, index: int) -> dict[str, int]:
        return self.counts[index]


@dataclass(frozen=True, slots=True)
class _SeedOnly:
    seed_simulator: int
    method: str | None

    @property
    def metadata(self) -> dict[str, Any]:
        return {} if self.method is None else {"method": self.method}


class _Calls:
    """The simulator calls of one group, in pieces of about ``PIECE_TARGET_S``.

    Between pieces it reports progress (the watchdog sees a slow batch is not a hung
    one) and leaves out the circuits of jobs abandoned meanwhile; once every job of
    the group is gone it stops (:class:`_Abandoned`). ``gone`` holds the indices of
    the group's items left out; ``weights``, each of the group's circuits' predicted
    seconds (set by a call of the group's own circuits, not of twirled copies), share
    the group's time between its jobs.
    """

    def __init__(self, executor: Executor, setting: _Setting, group: _Group) -> None:
        self._executor = executor
        self._setting = setting
        self._group = group
        self.gone: set[int] = set()
        self.weights: list[float] = []

    def _check(self) -> None:
        items = self._group.items
        self.gone.update(k for k, item in enumerate(items) if self._executor.is_abandoned(item))
        if len(self.gone) == len(items):
            raise _Abandoned

    def run(
        self,
        circuits: Sequence[Any],
        *,
        shots: int,
        seed_simulator: int,
        owners: Sequence[int] | None = None,
        **options: Any,
    ) -> _Merged:
        """``sim.run(circuits, ...).result()`` in pieces (see
        :func:`~qrt_ray.policies.simtime.plan_pieces`); piece k is seeded
        ``seed_simulator + k``. ``owners[i]`` is the group item circuit ``i`` belongs to
        (None: the circuits are copies of several items', as twirling makes)."""
        executor, setting = self._executor, self._setting
        forced = self._group.forced
        method = GPU if setting.gpu and forced is None else forced
        costs = [
            prior_cost(
                circuit_work(c), shots, gpu=setting.gpu, threads=executor._threads, method=method
            )
            for c in circuits
        ]
        if owners is not None:  # the group's own circuits (twirled copies share equally)
            self.weights = [c.seconds(shots) for c in costs]
        merged = _Merged(len(circuits))
        # the prior's error depends on how large the circuits are (a call's fixed
        # cost weighs on small ones): learned per method and power of two of a
        # circuit's predicted seconds
        alone = sum(c.seconds(shots) for c in costs) / max(1, len(costs))
        size = math.floor(math.log2(max(alone, 1e-6)))
        pace_key = f"{method or (costs[0].method if costs else '')}:{size}"
        # seeded work splits as the prior plans it, so it reproduces; the rest in pieces
        # of about PIECE_TARGET_S of this device's real time
        seeded = self._group.seed is not None
        target_s = PIECE_TARGET_S / (1.0 if seeded else executor.pace.ratio(pace_key))
        for k, piece in enumerate(
            plan_pieces(
                costs,
                shots,
                target_s=target_s,
                max_circuits=CALL_CIRCUITS,
                min_circuits=executor._threads,
            )
        ):
            if k:
                self._check()
            wanted = [i for i in piece.circuits if owners is None or owners[i] not in self.gone]
            if not wanted:
                continue
            started = time.perf_counter()
            result = simulate(
                setting.sim,
                [circuits[i] for i in wanted],
                shots=piece.shots,
                seed_simulator=seed_simulator + k,
                **options,
            )
            prior_s = sum(costs[i].seconds(piece.shots) for i in wanted)
            if prior_s >= PIECE_TARGET_S / 2:  # a call of about a piece's size
                executor.pace.observe(pace_key, prior_s, time.perf_counter() - started)
            for j, i in enumerate(wanted):
                r = result.results[j]
                counts = counts_of(result, j, label=i)
                merged.add(i, counts, int(r.seed_simulator), r.metadata.get("method"))
            if executor.on_progress is not None:
                executor.on_progress()
        return merged
