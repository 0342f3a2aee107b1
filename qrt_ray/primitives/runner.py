"""Execute: what the Sampler and Estimator share between construct and combine.

Farm jobs are submitted in one round trip; waiting polls so ``cancel()`` is heard;
readout figures are asked of each device once per run (the device reuses what it
measured for its current calibration); construct and combine steps fan out as Ray
tasks.
"""

from __future__ import annotations

import math
import operator
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any, Generic, TypeVar

import numpy as np
import ray

from qrt_ray import tracing
from qrt_ray.client import JobHandle, make_spec
from qrt_ray.dynamic import dynamic_reason
from qrt_ray.errors import JobTimeoutError, ValidationError
from qrt_ray.mitigation.readout import ReadoutCalibration
from qrt_ray.models import DecouplingSpec, JobResult, TwirlSpec
from qrt_ray.primitives.job import PrimitiveJob
from qrt_ray.primitives.modes import _Mode, fixed_device, resolve_mode
from qrt_ray.primitives.options import (
    DynamicalDecouplingOptions,
    TwirlingOptions,
    _PrimitiveOptions,
    copy_options,
)
from qrt_ray.tracing import job_traceparent

_POLL_S = 1.0
T = TypeVar("T")


@dataclass(frozen=True, slots=True)
class FarmRequest:
    """One farm job: circuits as OpenQASM text, shots per circuit, twirling."""

    circuits: tuple[str, ...]
    shots: int
    twirl: TwirlSpec | None = None
    dd: DecouplingSpec | None = None


def twirl_spec(
    twirling: TwirlingOptions, shots: int, *, gates: bool, measure: bool
) -> TwirlSpec | None:
    """The farm's twirling for a PUB, from the options (``auto``: about 128 shots each)."""
    measure = measure and shots >= 2  # one shot cannot be split into complementary flips
    if not (gates or measure):
        return None
    if twirling.num_randomizations != "auto":
        count = int(twirling.num_randomizations)
    elif twirling.shots_per_randomization != "auto":
        count = math.ceil(shots / int(twirling.shots_per_randomization))
    else:
        count = min(32, max(1, shots // 128))
    return TwirlSpec(gates=gates, measure=measure, randomizations=max(1, min(count, shots, 1024)))


def dd_spec(options: DynamicalDecouplingOptions) -> DecouplingSpec | None:
    """The farm's decoupling for these options (None when off).

    Raises:
        ValidationError: a sequence these devices cannot play.
    """
    if not options.enable:
        return None
    if options.sequence_type != "XX":
        raise ValidationError(
            f"dynamical_decoupling.sequence_type={options.sequence_type!r}: it needs pulses "
            "(an X about -x, a Y) that these devices' native gates (x, sx, rz) do not play "
            "as one pulse; use 'XX'"
        )
    return DecouplingSpec(sequence="XX", scheduling=options.scheduling_method)


# Where the mode fixes the device, requests that agree on shots and twirling share a
# farm job of up to this many circuits (a compile chunk): one admission, placement,
# durable record and result for them all, and one simulator call even when seeded
# (a seeded job runs in a call of its own). A job per one-circuit PUB paid each of
# those per PUB. Where the scheduler chooses devices, every request keeps a job of
# its own, so that the farm can spread them.
PACK_CIRCUITS = 64
# The first shared job of a run holds at most this many circuits, the next twice as
# many, and so on up to PACK_CIRCUITS: a job runs only once all its circuits are
# compiled, so a small first job sets the device going while the rest compile.
PACK_FIRST = 16


@dataclass(frozen=True, slots=True)
class Submitted:
    """Farm jobs of one primitive run, and where each request's circuits are in them."""

    handles: tuple[JobHandle, ...]
    slices: tuple[tuple[int, int, int], ...]  # per request: (job index, first, end)


def pack(requests: Sequence[FarmRequest], devices: Sequence[str | None]) -> list[list[int]]:
    """Requests grouped into farm jobs, in order of their first request.

    Requests share a job only when they are bound for the same fixed device with the
    same shots, twirling and decoupling. The k-th shared job of such a kind holds at
    most ``PACK_FIRST * 2**k`` circuits, never more than ``PACK_CIRCUITS`` (a larger
    request gets a job of its own).
    """
    groups: list[list[int]] = []
    # per kind of request: (its open group, circuits in it, that group's cap)
    open_group: dict[tuple[Any, ...], tuple[int, int, int]] = {}
    opened: dict[tuple[Any, ...], int] = {}  # per kind: shared groups opened so far
    for i, (req, device) in enumerate(zip(requests, devices, strict=True)):
        size = len(req.circuits)
        if device is None or size >= PACK_CIRCUITS:
            groups.append([i])
            continue
        key = (device, req.shots, req.twirl, req.dd)
        found = open_group.get(key)
        if found is not None and found[1] + size <= found[2]:
            groups[found[0]].append(i)
            open_group[key] = (found[0], found[1] + size, found[2])
            continue
        k = opened.get(key, 0)
        opened[key] = k + 1
        groups.append([i])
        open_group[key] = (len(groups) - 1, size, min(PACK_CIRCUITS, PACK_FIRST << k))
    return groups


def noise_of(options: _PrimitiveOptions) -> str:
    """The farm's ``noise`` for these options: ``ideal`` or the ``device``'s."""
    return "ideal" if options.simulator.noise_model == "ideal" else "device"


def requested(options: _PrimitiveOptions, *paths: str) -> list[str]:
    """The option paths (``"twirling.enable_gates"``) set to True, in the given order."""
    return [path for path in paths if operator.attrgetter(path)(options) is True]


def refuse_mitigation_when_ideal(options: _PrimitiveOptions, asked: Sequence[str]) -> None:
    """An ideal simulation has no noise to mitigate: explicit requests are refused.

    Raises:
        ValidationError: naming the options that were asked for.
    """
    if asked and noise_of(options) == "ideal":
        raise ValidationError(
            f"{', '.join(asked)}: simulator.noise_model='ideal' runs without noise, so "
            "there is nothing to mitigate; turn them off, or drop noise_model"
        )


def refuse_decoupling_of_dynamic_circuits(
    options: _PrimitiveOptions, circuits: Sequence[Any]
) -> None:
    """Decoupling pads idle times it can only know in a circuit without branches.

    Raises:
        ValidationError: ``dynamical_decoupling.enable`` with a dynamic circuit.
    """
    if not options.dynamical_decoupling.enable:
        return
    for i, circuit in enumerate(circuits):
        reason = dynamic_reason(circuit)
        if reason is not None:
            raise ValidationError(
                f"pubs[{i}]: Dynamical decoupling currently cannot be used with dynamic "
                f"circuits ({reason}); set dynamical_decoupling.enable = False"
            )


def submit(
    job: PrimitiveJob,
    mode: _Mode,
    requests: Sequence[FarmRequest],
    options: _PrimitiveOptions,
    seed: int | None,
) -> Submitted:
    """Submit the requests' farm jobs in one round trip (``run`` admitted it)."""
    tags = (*mode.tags, job.job_id(), *(options.environment.job_tags or ()))
    devices = [mode.device_for(req.circuits, req.shots) for req in requests]
    groups = pack(requests, devices)
    specs = []
    slices: list[tuple[int, int, int]] = [(0, 0, 0)] * len(requests)
    for g, members in enumerate(groups):
        first = requests[members[0]]
        circuits: list[str] = []
        groups_of: list[int] = []
        for n, i in enumerate(members):
            slices[i] = (g, len(circuits), len(circuits) + len(requests[i].circuits))
            circuits.extend(requests[i].circuits)
            groups_of.extend([n] * len(requests[i].circuits))
        try:
            specs.append(
                make_spec(
                    circuits,
                    shots=first.shots,
                    priority=options.priority,
                    tenant=options.tenant,
                    device=devices[members[0]],
                    max_execution_time_s=options.max_execution_time,
                    tags=tags,
                    seed=None if seed is None else (seed + g) % 2**31,
                    twirling=first.twirl,
                    dynamical_decoupling=first.dd,
                    # a PUB's circuits (parameter sets, bases, noise factors) run on
                    # the same qubits, as they would after one transpile by hand
                    layout_groups=tuple(groups_of),
                    noise=noise_of(options),
                )
            )
        except ValidationError as exc:
            where = ", ".join(f"pubs[{i}]" for i in members)
            raise ValidationError(f"{where}: {exc}") from None
    job.check_cancelled()
    handles = mode.runtime.submit_specs(specs)
    job.add_handles(handles)
    return Submitted(tuple(handles), tuple(slices))


def wait_results(
    job: PrimitiveJob, mode: _Mode, submitted: Submitted, timeout_s: float | None
) -> list[JobResult]:
    """Wait for every farm job (listening for cancel); each request's verified result,
    in order (a request's share of a job it shares: its circuits and their compiles)."""
    rt = mode.runtime
    handles = list(submitted.handles)
    waited = 0.0
    while True:
        job.check_cancelled()
        states = rt.wait(handles, _POLL_S)
        if all(s.is_final for s in states.values()):
            break
        waited += _POLL_S
        if timeout_s is not None and waited >= timeout_s:
            raise JobTimeoutError(f"{job.job_id()}: farm jobs not done within {timeout_s:g} s")
    whole = rt.results(list(submitted.handles))
    job.note_results(whole)
    out = []
    for g, start, end in submitted.slices:
        result = whole[g]
        if (start, end) != (0, len(result.circuits)):
            meta = result.metadata
            result = result.model_copy(
                update={
                    "circuits": result.circuits[start:end],
                    "metadata": meta.model_copy(update={"compile": meta.compile[start:end]}),
                }
            )
        out.append(result)
    return out


def fetch_readout(
    mode: _Mode, results: Sequence[JobResult], shots: int, max_age_s: float
) -> dict[str, tuple[ReadoutCalibration, int]]:
    """Per device: readout errors of every physical qubit the results read.

    Each device is asked once; it measures only what it has not measured for its
    current calibration within ``max_age_s``.
    """
    wanted: dict[str, set[int]] = {}
    for r in results:
        qubits = wanted.setdefault(r.metadata.device, set())
        for info in r.metadata.compile:
            qubits.update(q for q in info.measured_qubits if q >= 0)
    return {
        device: mode.runtime.readout_calibration(device, sorted(qubits), shots, max_age_s)
        for device, qubits in wanted.items()
    }


def fan_out(
    fn: Callable[..., T],
    calls: Sequence[tuple[Any, ...]],
    jobs: Sequence[str | None] | None = None,
) -> list[T]:
    """Run ``fn(*args)`` for each call as Ray tasks (inline when there is one).

    ``jobs``: per call, the job whose result it works on. With tracing on
    (:mod:`qrt_ray.tracing`), each call is a ``mitigation.<fn>`` span in that job's
    trace, wherever it runs.
    """
    tracing.configure()  # from this process's environment, once
    config = tracing.current()
    local = len(calls) <= 1 or not ray.is_initialized()
    if config is None:
        if local:
            return [fn(*args) for args in calls]
        task = _remote(fn)
        return ray.get([task.remote(*args) for args in calls])
    name = f"mitigation.{fn.__name__.lstrip('_')}"
    parents = [job_traceparent(j) if j else None for j in (jobs or [None] * len(calls))]
    if local:
        return [
            tracing.traced_call(parent, name, None, fn, *args)
            for parent, args in zip(parents, calls, strict=True)
        ]
    traced = _remote(tracing.traced_call)
    return ray.get(
        [
            traced.remote(parent, name, config, fn, *args)
            for parent, args in zip(parents, calls, strict=True)
        ]
    )


_REMOTES: dict[Callable[..., Any], Any] = {}


def _remote(fn: Callable[..., Any]) -> Any:
    if fn not in _REMOTES:
        # One CPU, as compile tasks take: at most one task per core, so they run in the
        # farm's warm workers. Half a CPU let Ray start extra workers that each paid
        # Qiskit's imports (about 2 s) and were stopped again once idle.
        _REMOTES[fn] = ray.remote(num_cpus=1, max_retries=2)(fn)
    return _REMOTES[fn]


def values_matrix(pub: Any) -> np.ndarray:
    """The PUB's parameter values as a (sets, parameters) float64 matrix."""
    params = list(pub.circuit.parameters)
    if not params:
        return np.zeros((max(int(np.prod(pub.parameter_values.shape)), 1), 0))
    array = pub.parameter_values.as_array(params)
    return np.ascontiguousarray(array.reshape(-1, len(params)), dtype=np.float64)


def readout_note(
    cal: ReadoutCalibration, spent: int, result: JobResult
) -> tuple[dict[str, Any], list[str]]:
    """The readout section of a PUB's metadata, and a warning if it came from a
    calibration other than the one the job ran on."""
    section = {
        "calibration_id": cal.calibration_id,
        "measured_at": cal.measured_at,
        "shots_per_preparation": cal.shots,
        "qubits": list(cal.qubits),
        "reused": spent == 0,
        "shots_spent_now": spent,
    }
    notes = []
    if cal.calibration_id != result.metadata.calibration_id:
        notes.append(
            f"readout errors were measured on calibration {cal.calibration_id}, but the "
            f"job ran on {result.metadata.calibration_id} (the device was recalibrated "
            "in between)"
        )
    return section, notes


def finish(mode: _Mode, execute: Callable[..., T], job: PrimitiveJob, *args: Any) -> T:
    """Run ``execute(job, mode, *args)``; the mode hears that the run is over, however
    it ends."""
    try:
        return execute(job, mode, *args)
    finally:
        mode.finished()


OptionsT = TypeVar("OptionsT", bound=_PrimitiveOptions)


class PrimitiveBase(Generic[OptionsT]):
    """What the Sampler and the Estimator share: a mode and validated options."""

    _options_type: type[OptionsT]

    def __init__(self, mode: Any = None, options: OptionsT | dict[str, Any] | None = None) -> None:
        self._mode = resolve_mode(mode)
        if isinstance(options, self._options_type):
            # a copy: changing the caller's object later must not change this primitive
            self._options: OptionsT = copy_options(options)
        else:
            self._options = self._options_type()
            self._options.update(**(options or {}))

    @property
    def options(self) -> OptionsT:
        """The options; set fields on it (validated at once)."""
        return self._options

    @property
    def mode(self) -> Any:
        """Where the jobs go."""
        return self._mode

    def backend(self) -> Any:
        """The backend (``rt.backend(name)``) the jobs run on, or None when the
        scheduler picks a device per job (a runtime or a Batch on the whole farm, a
        Session before its first run)."""
        device = fixed_device(self._mode)
        if device is None and self._mode.noise == "ideal":
            return self._mode.runtime.backend("ideal")
        return self._mode.runtime.backend(device) if device else None

    def _run_options(self) -> OptionsT:
        """A copy of the options for one run (a mode made from rt.backend("ideal")
        makes it noiseless)."""
        options = copy_options(self._options)
        if self._mode.noise == "ideal":
            options.simulator.noise_model = "ideal"
        return options
