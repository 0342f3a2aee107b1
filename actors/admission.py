"""Admission: the checks a job passes before it is stored.

Sizes first (jobs per call, circuits and bytes per job), then every circuit through
the intake gate (each distinct text once, parsed off the event loop), then whether any
device of the farm could ever run it. Plain Python, no Ray and no store: the scheduler
stores what passes.
"""

from __future__ import annotations

import asyncio
import math
from collections import OrderedDict
from collections.abc import Sequence

from qrt_ray.errors import ValidationError
from qrt_ray.intake import IntakeLimits, QubitLimit
from qrt_ray.intake.admit import Intake, circuit_hash
from qrt_ray.intake.pool import Described
from qrt_ray.intake.scan import farm_qubit_limit
from qrt_ray.models import DeviceSnapshot, JobSpec
from qrt_ray.policies.fidelity import CircuitProfile
from qrt_ray.policies.placement import PlacementOptions, Weights
from qrt_ray.policies.placer import DeviceLoad, JobShape, Placer
from qrt_ray.store import JobRecord

# a call whose circuits hold fewer characters is sized and hashed on the event loop
# (about 10 us a kB; a thread hop costs 0.1-0.4 ms on a busy 2-core machine)
_INLINE_CHARS = 64 * 1024
# texts whose intake description is kept (about 1 kB each)
_KNOWN_TEXTS = 4096


class Admission:
    """Checks jobs against the intake limits and the farm's devices.

    Args:
        limits: the intake's size limits.
        placer: the placement engine (asked whether any device could run a job).
        intake: parses and profiles circuits (a pool of parser processes in the actor).
    """

    def __init__(self, limits: IntakeLimits, placer: Placer, intake: Intake) -> None:
        self.limits = limits
        self.placer = placer
        self.intake = intake
        # texts the intake gate passed, by (sha256, qubit limit): the same text under
        # the same limits is described the same, so a script that submits one circuit
        # in a loop pays for its check once (refusals are never kept)
        self._known: OrderedDict[tuple[str, int], Described] = OrderedDict()

    def check_count(self, specs: Sequence[JobSpec]) -> list[str]:
        """Each job's name in error messages (``job``, or ``jobs[i]`` in a batch).

        Raises:
            ValidationError: more jobs in one call than ``intake.max_jobs_per_call``.
        """
        if len(specs) > self.limits.max_jobs_per_call:
            raise ValidationError(
                f"{len(specs)} jobs in one call; the limit is {self.limits.max_jobs_per_call} "
                "(intake.max_jobs_per_call): submit them in several calls"
            )
        return [f"jobs[{i}]" if len(specs) > 1 else "job" for i in range(len(specs))]

    async def shapes(
        self,
        specs: Sequence[JobSpec],
        wheres: Sequence[str],
        job_ids: Sequence[str],
        devices: Sequence[DeviceSnapshot],
    ) -> list[JobShape]:
        """Every job's circuits checked by the intake gate (each distinct text once),
        profiled for placement.

        Raises:
            ValidationError: a job passes a size limit, or a circuit is refused (the
                message names it).
            PlacementError: a circuit is wider than every device.
        """
        limit = self.qubit_limit(devices)
        if sum(len(t) for spec in specs for t in spec.circuits) <= _INLINE_CHARS:
            unique, args, picks = distinct_texts(specs, wheres, self.limits)
            digests = [circuit_hash(t) for t in unique]
        else:  # large: sized and hashed off the event loop
            unique, args, picks, digests = await asyncio.to_thread(
                _distinct_and_hashed, specs, wheres, self.limits
            )
        known = {d: self._known.get((d, limit.count)) for d in digests}
        missing = [i for i, d in enumerate(digests) if known[d] is None]
        if missing:
            got = await self.intake.describe(
                [unique[i] for i in missing], [args[i] for i in missing], limit
            )
            for i, found in zip(missing, got, strict=True):
                known[digests[i]] = found
                self._remember((digests[i], limit.count), found)
        described = [known[d] for d in digests]
        return [
            job_shape(job_id, spec, where, [described[k] for k in pick])
            for spec, where, job_id, pick in zip(specs, wheres, job_ids, picks, strict=True)
        ]

    def _remember(self, key: tuple[str, int], described: Described) -> None:
        self._known[key] = described
        self._known.move_to_end(key)
        while len(self._known) > _KNOWN_TEXTS:
            self._known.popitem(last=False)

    def check_feasible(
        self, spec: JobSpec, shape: JobShape, where: str, devices: Sequence[DeviceSnapshot]
    ) -> None:
        """Fail at submit, not later, when no device could ever run the job: too wide,
        or limits (``min_fidelity``, ``max_cost_usd``) no device meets even when idle.
        Devices that are busy or paused do not count against it: the job waits.

        Raises:
            ValidationError: naming the job and why no device fits.
        """
        try:
            idle = [DeviceLoad(s) for s in devices]
            self.placer.check(shape, idle, placement_options(spec))
        except ValueError as exc:
            raise ValidationError(f"{where}: {exc}") from None

    def qubit_limit(self, devices: Sequence[DeviceSnapshot]) -> QubitLimit:
        """The most qubits a circuit may declare: the widest device, within the intake's
        own limit."""
        return farm_qubit_limit(devices, self.limits.max_qubits)


def job_deadline(rec: JobRecord) -> float:
    """When the job's ``max_execution_time_s`` runs out (inf when it has none)."""
    limit = rec.spec.max_execution_time_s
    return rec.created_at + limit if limit else math.inf


def placement_options(
    spec: JobSpec, *, device: str | None = None, deadline_s: float | None = None
) -> PlacementOptions:
    """A job spec's placement options.

    Args:
        spec: the job.
        device: overrides the spec's pinned device.
        deadline_s: seconds left before the job's ``max_execution_time_s`` runs out.
    """
    weights = None
    if spec.weights is not None:
        weights = Weights(**spec.weights.model_dump())
    return PlacementOptions(
        policy=spec.policy,
        optimize=spec.optimize,
        weights=weights,
        min_fidelity=spec.min_fidelity,
        max_cost_usd=spec.max_cost_usd,
        device=device if device is not None else spec.device,
        deadline_s=deadline_s,
    )


def distinct_texts(
    specs: Sequence[JobSpec], wheres: Sequence[str], limits: IntakeLimits
) -> tuple[list[str], list[str], list[list[int]]]:
    """Each distinct circuit text once (with the name of its first use), and per job
    the index of each of its circuits among them; job sizes checked on the way.

    Raises:
        ValidationError: a job has too many circuits or too many bytes of them.
    """
    index: dict[str, int] = {}
    unique: list[str] = []
    args: list[str] = []
    picks: list[list[int]] = []
    for spec, where in zip(specs, wheres, strict=True):
        if len(spec.circuits) > limits.max_circuits:
            raise ValidationError(
                f"{where}.circuits: {len(spec.circuits)} circuits; the limit is "
                f"{limits.max_circuits} (intake.max_circuits): split them over several jobs"
            )
        size = sum(len(t.encode("utf-8", "surrogatepass")) for t in spec.circuits)
        if size > limits.max_job_bytes:
            raise ValidationError(
                f"{where}.circuits: {size} bytes of OpenQASM in one job; the limit is "
                f"{limits.max_job_bytes} (intake.max_job_bytes): split them over several jobs"
            )
        pick = []
        for k, text in enumerate(spec.circuits):
            if text not in index:
                index[text] = len(unique)
                unique.append(text)
                args.append(f"{where}.circuits[{k}]")
            pick.append(index[text])
        picks.append(pick)
    return unique, args, picks


def _distinct_and_hashed(
    specs: Sequence[JobSpec], wheres: Sequence[str], limits: IntakeLimits
) -> tuple[list[str], list[str], list[list[int]], list[str]]:
    unique, args, picks = distinct_texts(specs, wheres, limits)
    return unique, args, picks, [circuit_hash(t) for t in unique]


def job_shape(
    job_id: str,
    spec: JobSpec,
    where: str,
    described: Sequence[tuple[str, CircuitProfile]],
) -> JobShape:
    """A job's shape from its circuits' (hash, profile), checking its layout groups.

    Raises:
        ValidationError: circuits of one layout group differ in width.
    """
    hashes = tuple(h for h, _ in described)
    profiles = tuple(p for _, p in described)
    if spec.layout_groups is not None:
        width: dict[int, int] = {}
        for k, (group, profile) in enumerate(zip(spec.layout_groups, profiles, strict=True)):
            if width.setdefault(group, profile.num_qubits) != profile.num_qubits:
                raise ValidationError(
                    f"{where}.circuits[{k}]: {profile.num_qubits} qubits in layout group "
                    f"{group}, whose first circuit has {width[group]}; circuits that share "
                    "a layout need the same number of qubits"
                )
    return JobShape(job_id, hashes, profiles, spec.shots)
