"""Compile for a device: each distinct circuit once per calibration, on the layout
placement chose, in chunks that run in parallel; then the work items the device queues.

Plain Python over the scheduler's ports (compile tasks in the actor, in-process
compiles in tests).
"""

from __future__ import annotations

import asyncio
import time
from collections import Counter
from collections.abc import Callable, Sequence
from dataclasses import dataclass

from qrt_ray.actors.admission import job_deadline
from qrt_ray.actors.device_queue import WorkItem
from qrt_ray.actors.ports import SchedulerPorts
from qrt_ray.compiler import CompileCache, CompiledCircuit, pinned_key
from qrt_ray.errors import DeviceUnavailableError
from qrt_ray.metrics import RuntimeMetrics
from qrt_ray.models import DeviceSnapshot, JobSpec
from qrt_ray.policies.fidelity import CircuitProfile, FidelityEstimate
from qrt_ray.policies.placer import JobShape, Placer
from qrt_ray.policies.simtime import CircuitWork
from qrt_ray.results import RawRun, missing_shots, shots_executed
from qrt_ray.store import JobRecord
from qrt_ray.tracing import job_traceparent

FIRST_CHUNK = 16
# a compiled circuit whose estimated success probability is below this gives mostly
# noise: counted as a compile warning
LOW_ESP = 0.1


def chunk_cap(index: int, chunk: int) -> int:
    """Circuits after which a placement pass's ``index``-th compile chunk for a device
    takes no more jobs: ``FIRST_CHUNK``, then doubling, up to ``chunk``.

    A job runs once all of its chunk is compiled, so a small first chunk starts the
    device early while larger ones (fewer tasks, fewer pass managers) follow.
    """
    return max(1, min(chunk, FIRST_CHUNK << min(index, 16)))


@dataclass(frozen=True, slots=True)
class ToCompile:
    """A job to compile: its spec and the shape placement worked from."""

    job_id: str
    spec: JobSpec
    shape: JobShape


class CompileStage:
    """Compiles jobs' circuits for a device through the ports, with a cache.

    Args:
        ports: where compiles run.
        placer: gives each circuit's layout on the device (cached by calibration).
        metrics: compile-cache hits and misses, compile seconds.
        optimization_level: the compiler's level.
        seed: the compiler's seed.
        chunk: circuits per compile task.
    """

    def __init__(
        self,
        ports: SchedulerPorts,
        placer: Placer,
        metrics: RuntimeMetrics,
        *,
        optimization_level: int,
        seed: int,
        chunk: int,
    ) -> None:
        self.ports = ports
        self.placer = placer
        self.metrics = metrics
        self.optimization_level = optimization_level
        self.seed = seed
        self.chunk = chunk
        self.cache = CompileCache()

    def cold_circuits(self, job: ToCompile, device: str, calibration_id: str) -> int:
        """How many of ``job``'s circuits would compile now for that calibration (not
        in the cache); a job whose circuits share a layout group counts them all."""
        if job.spec.layout_groups:
            return len(job.spec.circuits)
        return sum((h, device, calibration_id) not in self.cache for h in job.shape.hashes)

    async def compile(
        self, snap: DeviceSnapshot, jobs: Sequence[ToCompile]
    ) -> tuple[dict[str, list[CompiledCircuit]], str]:
        """Every job's circuits compiled for ``snap``'s calibration, and its id.

        Raises:
            DeviceUnavailableError: the device recalibrated during the compile.
        """
        device = snap.name
        cal_id = snap.calibration.calibration_id
        found: dict[str, CompiledCircuit] = {}
        todo: dict[str, str] = {}
        layouts: dict[str, tuple[int, ...] | None] = {}
        # placement's ESP for each key's layout; None: a group's shared layout, kept
        expected: dict[str, float | None] = {}
        keys: dict[str, list[str]] = {}  # per job: each circuit's compile key
        owner: dict[str, str] = {}  # the job whose trace a key's compile joins
        for job in jobs:
            shape = job.shape
            pins = group_layouts(job.spec, shape, lambda h, p: self.placer.full(h, p, snap))
            keys[job.job_id] = []
            for text, h, profile, pin in zip(
                job.spec.circuits, shape.hashes, shape.profiles, pins, strict=True
            ):
                key = h if pin is None else pinned_key(h, pin)
                keys[job.job_id].append(key)
                if key in found or key in todo:
                    continue
                hit = self.cache.get((key, device, cal_id))
                if hit is not None:
                    found[key] = hit
                    continue
                todo[key] = text
                owner[key] = job.job_id
                # The layout placement chose (cached by circuit and calibration), or
                # the one its layout group shares. Where placement's own needs SWAPs
                # the compiler uses its routing-aware layout instead, which usually
                # wins there (106 of 137 such random 5-qubit circuits on guadalupe),
                # but falls back to placement's when it reaches too little of the ESP
                # placement expected: alone it once put a 14-qubit GHZ on sherbrooke
                # onto a broken gate (ESP 0.0 where placement had estimated 0.79). A
                # group's circuits keep their shared layout: the compiler's choice
                # could differ from circuit to circuit.
                if pin is None:
                    estimate = self.placer.full(h, profile, snap)
                    layouts[key], expected[key] = estimate.layout, estimate.esp
                else:
                    layouts[key], expected[key] = pin, None
        self.metrics.compile_cache.labels(outcome="hit").inc(len(found))
        self.metrics.compile_cache.labels(outcome="miss").inc(len(todo))
        if todo:
            pending = list(todo)
            groups = [pending[i : i + self.chunk] for i in range(0, len(pending), self.chunk)]
            start = time.perf_counter()
            outs = await asyncio.gather(
                *(
                    self.ports.compile(
                        device,
                        [todo[k] for k in group],
                        optimization_level=self.optimization_level,
                        seed=self.seed,
                        layouts=[layouts[k] for k in group],
                        placement_esp=[expected[k] for k in group],
                        calibration_id=cal_id,
                        traceparent=job_traceparent(owner[group[0]]),
                    )
                    for group in groups
                )
            )
            self.metrics.compile_seconds.labels(device=device).observe(time.perf_counter() - start)
            for group, (got_cal, compiled) in zip(groups, outs, strict=True):
                if got_cal != cal_id:  # recalibrated under us: compile again next pass
                    raise DeviceUnavailableError(f"{device} recalibrated during compile")
                for key, c in zip(group, compiled, strict=True):
                    self.cache.put(c, key)
                    found[key] = c
                self._observe(device, compiled)
        out = {j: [found[k] for k in keys[j]] for j in keys}
        for circuits in out.values():
            for c in circuits:
                if c.info is not None and c.info.esp is not None:
                    self.metrics.placed_esp.labels(device=device).observe(c.info.esp)
        return out, cal_id

    def _observe(self, device: str, compiled: Sequence[CompiledCircuit]) -> None:
        """Count the compiles that deserve a look (the debug dashboard's warnings)."""
        warnings = self.metrics.compile_warnings
        for c in compiled:
            if c.info is None:
                continue
            if c.info.swaps_added:
                warnings.labels(device=device, kind="swaps").inc()
            if c.info.esp is not None and c.info.esp < LOW_ESP:
                warnings.labels(device=device, kind="low_esp").inc()


def work_item(
    rec: JobRecord,
    runs: Sequence[RawRun],
    circuits: Sequence[CompiledCircuit],
    cal_id: str,
    *,
    whole: bool = False,
) -> WorkItem:
    """The device's work for a job's current attempt: only the shots still missing,
    numbered on from those already counted; ``whole``: never sliced (see
    :class:`~qrt_ray.actors.device_queue.WorkItem`)."""
    spec = rec.spec
    return WorkItem(
        rec.job_id,
        rec.attempts,
        cal_id,
        tuple(c.payload for c in circuits if c.payload is not None),
        missing_shots(spec.shots, runs),
        spec.priority,
        spec.seed,
        max(c.active_qubits for c in circuits),
        spec.tenant,
        first_shot=sum(shots_executed(r) for r in runs),
        deadline=job_deadline(rec),
        twirl=spec.twirling,
        dd=spec.dynamical_decoupling,
        traceparent=job_traceparent(rec.job_id),
        noise=spec.noise,
        whole=whole,
    )


def compiled_work(circuit: CompiledCircuit) -> CircuitWork:
    """What the simulator will do with a compiled circuit, for the run-time model (a
    circuit compiled before gates were counted is guessed from its two-qubit gates)."""
    info = circuit.info
    two = info.two_qubit_gates if info is not None else 0
    gates = info.gates if info is not None and info.gates else 3 * two + circuit.active_qubits
    moves = info.bond_moves if info is not None else 0
    return CircuitWork(circuit.active_qubits, gates, two, moves)


def group_layouts(
    spec: JobSpec,
    shape: JobShape,
    estimate: Callable[[str, CircuitProfile], FidelityEstimate],
) -> list[tuple[int, ...] | None]:
    """Each circuit's shared layout: its layout group's first circuit's, from
    ``estimate``. None where there is nothing to share (no groups, or a group of one
    circuit): such a circuit is compiled as any other."""
    if spec.layout_groups is None:
        return [None] * len(spec.circuits)
    sizes = Counter(spec.layout_groups)
    first: dict[int, tuple[int, ...]] = {}
    out: list[tuple[int, ...] | None] = []
    for group, h, profile in zip(spec.layout_groups, shape.hashes, shape.profiles, strict=True):
        if sizes[group] == 1:
            out.append(None)
            continue
        if group not in first:
            first[group] = tuple(estimate(h, profile).layout)
        out.append(first[group])
    return out
