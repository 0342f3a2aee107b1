"""The Python API: :class:`QuantumRuntime`, :func:`connect`, and :class:`JobHandle`.

Everything a client sends is data: job specs as JSON with circuits as OpenQASM text.
Errors raised inside the farm reach the caller as the same ``QrtError`` subclass.
"""

from __future__ import annotations

import contextlib
import itertools
import logging
import os
import threading
import time
import uuid
import warnings
import weakref
from collections import OrderedDict
from collections.abc import Callable, Iterable, Mapping, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

import ray
from pydantic import ValidationError as PydanticValidationError

from qrt_ray import farm as farm_mod
from qrt_ray.arguments import check_limit, finite_number, whole_number
from qrt_ray.circuits import coerce_circuits
from qrt_ray.config import FarmConfig, PolicyConfig, load_farm_config, load_policy_config
from qrt_ray.early import AUTO_KEY, EarlyRefusals
from qrt_ray.errors import (
    DeviceUnavailableError,
    FarmBusyError,
    IntegrityError,
    JobCancelledError,
    JobFailedError,
    JobTimeoutError,
    QrtError,
    RuntimeNotRunningError,
    StaleCalibrationWarning,
    StoreUnavailableError,
    ValidationError,
    brief,
)
from qrt_ray.lifecycle import JobState
from qrt_ray.models import (
    MAX_PRIORITY,
    MAX_SHOTS,
    RESULTS_PER_CALL,
    DeviceSnapshot,
    JobResult,
    JobSpec,
    describe_errors,
)
from qrt_ray.pipeline import Ack, SubmitPipeline
from qrt_ray.results import decode_result
from qrt_ray.store.base import sha256_hex
from qrt_ray.store.urls import resolve_store_url

if TYPE_CHECKING:
    from qrt_ray.mitigation.readout import ReadoutCalibration
    from qrt_ray.primitives.backend import QrtBackend

logger = logging.getLogger("qrt.client")

# Results fetched per scheduler call: few calls, yet each message stays a few MB.
_RESULTS_PER_CALL = RESULTS_PER_CALL
# handles remembered for reading ahead, and results read ahead, at most
_UNREAD_KEPT = 4096
_AHEAD_BYTES = 64 << 20  # results read ahead and not asked for yet, at most (bytes)
_MAX_TAGS = 32


# How long a client keeps trying a scheduler that is restarting.
DEFAULT_RETRY_S = 60.0
# Calls asked again, with the same arguments, when the job store refused a write: each
# gives the same answer however often it lands (a submit carries its jobs' idempotency
# keys; the rest only read). A cancel is not: its answer says whether this call
# cancelled the job; nor a drain: a second try would audit it twice.
_SAFE_AGAIN = frozenset(
    {"submit", "job", "events", "wait", "collect", "collect_ahead", "results", "jobs"}
)


def _retry_s(value: Any) -> float:
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not 0 <= value <= 3600:
        raise ValidationError(
            f"retry_s={brief(value)}: expected seconds from 0 to 3600 (how long to keep "
            "trying a restarting scheduler)"
        )
    return float(value)


class Backoff:
    """Waits between tries of a call that meets a restarting farm: 0.1 s, doubling to
    2 s, for at most ``retry_s`` from the first failure."""

    def __init__(self, retry_s: float) -> None:
        self.retry_s = retry_s
        self._deadline: float | None = None
        self._pause = 0.1

    def wait(self) -> bool:
        """Sleep before the next try; False (at once) when it would pass the deadline."""
        if self._deadline is None:
            self._deadline = time.monotonic() + self.retry_s
        if time.monotonic() + self._pause > self._deadline:
            return False
        time.sleep(self._pause)
        self._pause = min(2 * self._pause, 2.0)
        return True


def _timeout(value: Any) -> float | None:
    """A caller's ``timeout_s``: None (no limit) or a finite number of seconds >= 0."""
    if value is None:
        return None
    seconds = finite_number("timeout_s", value)
    if seconds < 0:
        raise ValidationError(
            f"timeout_s={seconds:g}: expected 0 or more seconds (None waits without limit)"
        )
    return seconds


def _check_done(job_id: str, state: JobState, error: str | None, timeout_s: float | None) -> None:
    """Raise why a job that was waited for has no result (nothing when it is DONE)."""
    if state is JobState.FAILED:
        raise JobFailedError(job_id, error or "unknown")
    if state is JobState.CANCELLED:
        raise JobCancelledError(job_id)
    if state is not JobState.DONE:
        within = "" if timeout_s is None else f" within {timeout_s:g}s"
        raise JobTimeoutError(f"job {job_id} is still {state.value}; not done{within}")


def _verified(job_id: str, sha: str, data: bytes) -> JobResult:
    """A result whose bytes match the checksum the farm sent; its warnings raised as
    :class:`StaleCalibrationWarning`."""
    if sha256_hex(data) != sha:
        raise IntegrityError(f"job {job_id}: result failed its checksum in transit")
    result = decode_result(data)
    for note in result.metadata.warnings:
        warnings.warn(
            f"job {job_id} on {result.metadata.device} ({result.metadata.calibration_id}): {note}",
            StaleCalibrationWarning,
            stacklevel=3,
        )
    return result


def _auto_key() -> str:
    return f"{AUTO_KEY}{uuid.uuid4().hex}"


def _keyed(spec: JobSpec) -> JobSpec:
    """The spec with an idempotency key: a retried submit finds the job it stored."""
    return (
        spec if spec.idempotency_key else spec.model_copy(update={"idempotency_key": _auto_key()})
    )


def _unwrap(fn: Any, *args: Any, **kwargs: Any) -> Any:
    """Call an actor method and re-raise a QrtError from the farm as itself."""
    try:
        return ray.get(fn.remote(*args, **kwargs))
    except ray.exceptions.RayTaskError as exc:
        cause = exc.cause if hasattr(exc, "cause") else None
        if isinstance(cause, QrtError):
            raise cause from None
        raise


_INTEGERS = {"shots": (1, MAX_SHOTS), "priority": (0, MAX_PRIORITY), "seed": (0, 2**31 - 1)}
_NUMBERS = ("max_execution_time_s", "min_fidelity", "max_cost_usd", "max_calibration_age_s")
_NAMES = ("tenant", "device", "idempotency_key", "policy", "optimize", "noise")


def make_spec(circuits: Any, *, shots: int, **fields: Any) -> JobSpec:
    """Build and validate a JobSpec, with errors that name the argument.

    Nothing is coerced: ``shots=True`` or ``"100"`` is refused, not read as a number.

    Raises:
        ValidationError: an argument has the wrong type or is out of range; the message
            names it, shows (a cut-short copy of) the value and says what is expected.
    """
    parameters = fields.pop("parameters", None)
    clean = {k: v for k, v in fields.items() if v is not None}
    clean["shots"] = shots
    for name, (lo, hi) in _INTEGERS.items():
        if name in clean:
            clean[name] = whole_number(name, clean[name], lo, hi)
    for name in _NUMBERS:
        if name in clean:
            clean[name] = finite_number(name, clean[name])
    for name in _NAMES:
        value = clean.get(name)
        if value is not None and not isinstance(value, str):
            raise ValidationError(
                f"{name}={brief(value)}: expected text (str), got {type(value).__name__}"
            )
    if "tags" in clean:
        clean["tags"] = _tags(clean["tags"])
    if "weights" in clean:
        clean["weights"] = _weights(clean["weights"])
    if "layout_groups" in clean:
        clean["layout_groups"] = tuple(clean["layout_groups"])
    texts = coerce_circuits(circuits, parameters=parameters)
    try:
        return JobSpec(circuits=tuple(texts), **clean)
    except PydanticValidationError as exc:
        raise ValidationError(f"invalid job: {describe_errors(exc)}") from None


def _tags(tags: Any) -> tuple[str, ...]:
    if isinstance(tags, (str, bytes)) or not isinstance(tags, Iterable):
        hint = f"; wrap it: tags=[{brief(tags)!r}]" if isinstance(tags, str) else ""
        raise ValidationError(
            f"tags={brief(tags)}: expected a list of strings, got {type(tags).__name__}{hint}"
        )
    out = tuple(itertools.islice(tags, _MAX_TAGS + 1))
    if len(out) > _MAX_TAGS:
        raise ValidationError(f"tags: more than {_MAX_TAGS} tags; keep at most {_MAX_TAGS}")
    for tag in out:
        if not isinstance(tag, str):
            raise ValidationError(
                f"tags: each tag must be a string, got {type(tag).__name__} ({brief(tag)})"
            )
    return out


def _weights(weights: Any) -> dict[str, float]:
    if not isinstance(weights, Mapping):
        raise ValidationError(
            f"weights={brief(weights)}: expected a mapping such as "
            f'{{"fidelity": 1, "time": 0.05}}, got {type(weights).__name__}'
        )
    return {str(k)[:40]: finite_number(f"weights[{brief(k, 20)!r}]", v) for k, v in weights.items()}


class JobHandle:
    """A submitted job: poll it, wait for its result, cancel it, read its history.

    A handle from a pipelined runtime (the default) may not be acknowledged yet:
    :meth:`accepted` waits for that, and every other call waits for it first and
    raises the farm's refusal (or its store's failure) if the job was not accepted.
    """

    def __init__(
        self, runtime: QuantumRuntime, job_id: str | None = None, *, ack: Ack | None = None
    ) -> None:
        if (job_id is None) == (ack is None):
            raise ValueError("JobHandle: give exactly one of job_id and ack")
        self._rt = runtime
        self._job_id = job_id
        self._ack = ack

    @property
    def job_id(self) -> str:
        """The job's id; for a pipelined submit, once the farm has stored the job.

        Raises:
            QrtError: the farm refused the job or could not store it.
        """
        return self.accepted()

    def __repr__(self) -> str:
        if self._job_id is None:
            assert self._ack is not None
            now = self._ack.job_id_now
            return f"JobHandle({now!r})" if now else "JobHandle(<not yet acknowledged>)"
        return f"JobHandle({self._job_id!r})"

    @property
    def idempotency_key(self) -> str | None:
        """A pipelined job's idempotency key (None for a synchronous handle): after a
        refusal that may have been stored all the same (``StoreUnavailableError``),
        submitting again with it finds the job instead of making a second one."""
        return None if self._ack is None else self._ack.key

    def accepted(self, timeout_s: float | None = None) -> str:
        """Wait until the farm has durably stored the job; returns its id.

        From that moment the job is never lost. A synchronous submit returns only
        then, so for its handles this returns at once.

        Raises:
            JobTimeoutError: not acknowledged within ``timeout_s`` (ask again).
            QrtError: the farm refused the job (the error a synchronous ``submit()``
                would have raised: ``PlacementError``, ``QuotaExceededError`` ...) or
                could not store it (``StoreUnavailableError``).
        """
        timeout_s = _timeout(timeout_s)
        if self._job_id is None:
            assert self._ack is not None
            self._job_id = self._ack.wait(timeout_s)
        return self._job_id

    def info(self) -> dict[str, Any]:
        """The job's record: state, device, calibration, placement, error, and for a
        QUEUED job ``waiting``: why placement could not place it yet (None if not)."""
        return self._rt._call("job", self.job_id)

    def status(self) -> JobState:
        """The job's current lifecycle state."""
        return JobState(self.info()["state"])

    def placement(self) -> dict[str, Any] | None:
        """Why the job went where it went: ranking and per-device breakdown."""
        return self.info()["placement"]

    def events(self) -> list[dict[str, Any]]:
        """Every lifecycle transition: the event that made it, its time and reason."""
        return self._rt._call("events", self.job_id)

    def cancel(self) -> bool:
        """Cancel the job if it is not final; returns whether it was cancelled now."""
        _, changed = self._rt._call("cancel", self.job_id)
        return changed

    def result(self, timeout_s: float | None = None) -> JobResult:
        """Wait for the job and return its verified result.

        Raises:
            JobFailedError: the job failed; ``reason`` says why.
            JobCancelledError: the job was cancelled.
            JobTimeoutError: not final within ``timeout_s``.
            IntegrityError: the result failed its checksum.
        """
        return self._rt.results([self], timeout_s=timeout_s)[0]


class QuantumRuntime:
    """A client of a qrt farm: embedded (``local()``) or attached (``connect()``)."""

    _READS_AHEAD = True  # result() takes later jobs' finished results along

    def __init__(
        self,
        scheduler: Any,
        namespace: str,
        *,
        owns_ray: bool,
        owns_farm: bool,
        devices: list[str],
        retry_s: float = DEFAULT_RETRY_S,
        pipeline: bool = True,
    ) -> None:
        self._scheduler = scheduler
        self.retry_s = _retry_s(retry_s)
        self.namespace = namespace
        self._owns_ray = owns_ray
        self._owns_farm = owns_farm
        self._device_names = devices
        self._closed = False
        self._actor_handles: list[Any] = []
        self._private_store: Path | None = None  # a store of its own, removed at shutdown
        if not isinstance(pipeline, bool):
            raise ValidationError(f"pipeline={brief(pipeline)}: expected True or False")
        self._pipeline = (
            SubmitPipeline(self._store_specs, wait_s=self.retry_s) if pipeline else None
        )
        # a pipelined submit refuses at once what the farm would refuse on sight
        self._early = EarlyRefusals(self._devices_once) if pipeline else None
        # handles from submit() whose result was not read yet, in submit order (weakly:
        # a dropped handle is not read ahead), and results read ahead for them
        self._unread: OrderedDict[int, weakref.ref[JobHandle]] = OrderedDict()
        self._ahead: dict[str, tuple[str, bytes]] = {}
        self._ahead_lock = threading.Lock()  # results() may run in several threads
        self._served: list[str] = []  # read ahead, since handed out: to mark fetched

    @property
    def pipelined(self) -> bool:
        """Whether :meth:`submit` returns before the farm acknowledges the job."""
        return self._pipeline is not None

    def _call(self, method: str, *args: Any) -> Any:
        """Call the scheduler; while it restarts, find it again and retry with backoff
        for up to ``retry_s`` seconds from the first failure (a long wait that meets a
        restart gets the whole ``retry_s``). A callable argument is evaluated per try.

        Raises:
            RuntimeNotRunningError: the scheduler did not come back in time.
            StoreUnavailableError: the job store kept refusing writes for ``retry_s``
                (only calls that are safe to ask again wait it out).
        """

        def find() -> Any:
            self._scheduler = farm_mod.find_scheduler(self.namespace)
            return self._scheduler

        return self._retrying("scheduler", lambda: self._scheduler, find, method, args)

    def _manager_call(self, method: str, *args: Any) -> Any:
        """Ask the calibration manager something that is safe to ask twice, riding out
        its restarts as :meth:`_call` does the scheduler's."""

        def find() -> Any:
            return farm_mod.calibration_handle(self.namespace)

        return self._retrying("calibration manager", find, find, method, args)

    def _retrying(
        self,
        what: str,
        current: Callable[[], Any],
        find: Callable[[], Any],
        method: str,
        args: tuple[Any, ...],
    ) -> Any:
        backoff = Backoff(self.retry_s)
        handle = current()
        while True:
            now_args = [a() if callable(a) else a for a in args]
            try:
                return _unwrap(getattr(handle, method), *now_args)
            except ray.exceptions.RayActorError as exc:
                logger.info("%s unavailable (%s); retrying %s", what, type(exc).__name__, method)
                if not backoff.wait():
                    raise RuntimeNotRunningError(
                        f"the farm's {what} in namespace {self.namespace!r} did not come "
                        f"back within {self.retry_s:g} s ({type(exc).__name__}); nothing "
                        "submitted is lost: try again when it runs (`qrt devices`)"
                    ) from None
                with contextlib.suppress(RuntimeNotRunningError):
                    handle = find()
            except StoreUnavailableError as exc:
                # the farm acknowledged nothing; a brief store outage (a database
                # restarting, a full disk being freed) is ridden out like a restart
                if method not in _SAFE_AGAIN or not backoff.wait():
                    raise
                logger.info("job store unavailable (%s); retrying %s", exc, method)
            except FarmBusyError as exc:
                # a scheduler just (re)started that has not heard from every device:
                # the end of a restart, ridden out like one (nothing was stored)
                if exc.limit != "devices_unheard" or not backoff.wait():
                    raise
                logger.info("the farm's devices are not all answering yet; retrying %s", method)

    # -- construction -----------------------------------------------------------------

    @classmethod
    def local(
        cls,
        farm: FarmConfig | str | Path | None = None,
        *,
        store: str | Path | None = None,
        num_cpus: int | None = None,
        optimization_level: int = 1,
        metrics_port: int | None = None,
        policies: PolicyConfig | str | Path | None = None,
        retry_s: float = DEFAULT_RETRY_S,
        attach: bool | None = None,
        pipeline: bool = True,
    ) -> QuantumRuntime:
        """The farm ``qrt up`` runs on this machine, or an embedded one on a
        loopback-only local Ray.

        One farm per machine by default: when nothing of its own is asked for (no
        ``farm``, ``policies``, ``store``, ``num_cpus`` or ``metrics_port``), a farm
        started by ``qrt up`` is used if one runs (said in a log line; its jobs go
        into its store, and :meth:`shutdown` leaves it running). Otherwise this starts
        a farm of its own, which stops with :meth:`shutdown`; without ``store`` (and
        ``$QRT_STORE``) its jobs go into a store of its own, removed with it, so they
        never mix with the shared farm's history.

        Args:
            farm: a FarmConfig, a path to a farm YAML, or None for the default farm.
            policies: placement and scheduling policy: a PolicyConfig, a path to a
                policies YAML (``configs/policies.yaml`` is the example), or None for
                the packaged default.
            store: job store: a SQLite path, or a ``postgresql://`` URL (default:
                ``$QRT_STORE``, else a private file that lives as long as the farm).
            num_cpus: CPUs Ray may use (default: all).
            optimization_level: Qiskit preset level for compiles (0-3).
            metrics_port: serve Prometheus metrics on 127.0.0.1 at this port (default:
                9464, or a free port when another farm has it; 0: no endpoint).
                :attr:`metrics_url` says where they are.
            retry_s: how long a call keeps trying while the scheduler restarts (or
                the job store refuses writes).
            attach: True: use the ``qrt up`` farm whenever one runs (the other
                arguments then only describe the farm to start when none does);
                False: always start one; None (default): as above.
            pipeline: :meth:`submit` returns before the farm acknowledges the job (a
                loop pays a round trip per batch, not per job; the farm's refusals
                come from the handle: see :meth:`JobHandle.accepted` and
                :meth:`flush`). False: each submit waits for the farm's answer.
        """
        retry = _retry_s(retry_s)
        own = farm is not None or policies is not None or store is not None
        own = own or metrics_port is not None or num_cpus is not None
        if attach or (attach is None and not own):
            found = farm_mod.attach_running_farm()
            if found is not None:
                address, scheduler = found
                rt = cls(
                    scheduler,
                    farm_mod.DEFAULT_NAMESPACE,
                    owns_ray=True,  # this process's connection, not the head
                    owns_farm=False,
                    devices=[],
                    retry_s=retry,
                    pipeline=pipeline,
                )
                logger.warning(
                    "attached to the qrt farm running at %s (its store keeps these jobs); "
                    "QuantumRuntime.local(attach=False) starts a farm of its own",
                    address,
                )
                return rt
        config = farm if isinstance(farm, FarmConfig) else load_farm_config(farm)
        policy = policies if isinstance(policies, PolicyConfig) else load_policy_config(policies)
        if not 0 <= optimization_level <= 3:
            raise ValidationError(f"optimization_level={optimization_level}: use 0, 1, 2 or 3")
        private = None
        if store is None and not resolve_store_url(None):
            private = farm_mod.private_store_path()
            store = private
        owns_ray = farm_mod.init_ray_loopback(num_cpus=num_cpus)
        try:
            ns, scheduler, handles = farm_mod.start_farm(
                config,
                store_url=str(store) if store else None,
                optimization_level=optimization_level,
                metrics_port=metrics_port,
                policies=policy,
                # a store that outlives the farm keeps its tokens and audit chain valid
                access_key=None if private is not None else farm_mod.access_key(),
            )
        except BaseException:
            if owns_ray:
                ray.shutdown()
            if private is not None:
                farm_mod.remove_store_file(private)
            raise
        rt = cls(
            scheduler,
            ns,
            owns_ray=owns_ray,
            owns_farm=True,
            devices=[d.name for d in config.devices],
            retry_s=retry,
            pipeline=pipeline,
        )
        rt._private_store = private
        # the farm's actors live as long as these handles (the scheduler's too: the one
        # a retry finds again by name does not keep it alive)
        rt._actor_handles = [scheduler, *handles]
        return rt

    # -- submission -------------------------------------------------------------------

    def submit(
        self,
        circuits: Any,
        *,
        shots: int = 1024,
        priority: int = 5,
        device: str | None = None,
        idempotency_key: str | None = None,
        max_execution_time_s: float | None = None,
        tags: Sequence[str] | None = None,
        tenant: str = "default",
        seed: int | None = None,
        policy: str | None = None,
        optimize: str | None = None,
        weights: Mapping[str, float] | None = None,
        min_fidelity: float | None = None,
        max_cost_usd: float | None = None,
        max_calibration_age_s: float | None = None,
        parameters: Mapping[str, float] | None = None,
        noise: str = "device",
    ) -> JobHandle:
        """Submit one job of one or more circuits.

        It returns as soon as the job is checked here and queued for the farm (the
        runtime is pipelined by default): one thread sends what has queued in one
        call, so a loop of submits pays a round trip per batch, not per job. The job
        is the farm's, never lost, once :meth:`JobHandle.accepted` returns; the
        handle's ``result()``, ``job_id`` and every other call wait for that first
        and raise the farm's refusal (a quota, a store that failed) there. Bad
        arguments, a job no device could ever run, and an idempotency key this
        runtime used for another request are refused here at once
        (:mod:`qrt_ray.early`). A runtime made with ``pipeline=False`` returns only
        once the job is durably QUEUED, and raises every refusal itself.

        Args:
            circuits: a QuantumCircuit, OpenQASM 2/3 text, or a list of them.
            shots: shots per circuit (1 to 1,000,000).
            priority: 0 (lowest) to 10; higher runs first.
            device: run on this device instead of letting the scheduler choose.
            idempotency_key: the same key returns the same job, never a second one.
            max_execution_time_s: fail the job if not done this long after submission.
            tags: free-form labels kept with the job.
            tenant: who the job belongs to.
            seed: simulator seed, for exactly reproducible counts.
            policy: placement policy for this job (``random``, ``round_robin``,
                ``least_busy``, ``best_fidelity`` or ``composite``; default: the farm's).
            optimize: ``"fidelity"``, ``"time"`` or ``"cost"``: preset composite weights.
            weights: explicit composite weights, e.g. ``{"fidelity": 1, "time": 0.05}``
                (keys not given are 0).
            min_fidelity: only devices whose estimated fidelity is at least this.
            max_cost_usd: only devices that would charge at most this.
            max_calibration_age_s: run only on a calibration at most this old (the
                job waits for, or moves to, a device recalibrated recently enough).
            parameters: values by name for the circuits' parameters: an OpenQASM 3
                ``input float theta;`` or a circuit's ``Parameter("theta")``, e.g.
                ``{"theta": 0.5}`` (every name must bind in some circuit).
            noise: ``"device"`` (the device's calibrated noise) or ``"ideal"`` (the
                device's gates and coupling map without noise: a pipeline checked
                before it spends noisy shots; placed, recorded and billed as any job).

        Raises:
            ValidationError: an argument is invalid (the message names it), or the
                idempotency key went with a different request.
            PlacementError: no device in the farm could ever run it (too wide, or an
                unknown or too small ``device``); or none meets ``min_fidelity`` /
                ``max_cost_usd`` (the message says what would: from the handle when
                pipelined).
        """
        spec = make_spec(
            circuits,
            shots=shots,
            priority=priority,
            device=device,
            idempotency_key=idempotency_key,
            max_execution_time_s=max_execution_time_s,
            tags=tags,
            tenant=tenant,
            seed=seed,
            policy=policy,
            optimize=optimize,
            weights=weights,
            min_fidelity=min_fidelity,
            max_cost_usd=max_cost_usd,
            max_calibration_age_s=max_calibration_age_s,
            parameters=parameters,
            noise=noise,
        )
        if self._pipeline is None or self._early is None:
            return self.submit_specs([spec])[0]
        self._early.check(spec)
        keyed = _keyed(spec)
        ack = self._pipeline.put(keyed)
        self._early.sent(keyed, ack)
        return self._unread_handle(JobHandle(self, ack=ack))

    def estimate(
        self,
        circuits: Any,
        *,
        shots: int = 1024,
        device: str | None = None,
        optimize: str | None = None,
        weights: Mapping[str, float] | None = None,
    ) -> list[dict[str, Any]]:
        """What a job would get on each device, without running anything.

        Args:
            circuits: as for :meth:`submit`.
            shots: shots per circuit.
            device: estimate this device only.
            optimize, weights: as for :meth:`submit`; they order the list.

        Returns:
            One dict per fitting device, best first: ``device``, ``fidelity`` (estimated
            success probability), ``cost_usd``, ``wait_s``, ``run_s``,
            ``completion_s``, ``swaps``, ``layout``, ``errors`` (expected errors by
            source), ``accepting``.

        Raises:
            ValidationError: an argument is invalid.
            PlacementError: no device could ever run the circuits.
        """
        spec = make_spec(
            circuits,
            shots=shots,
            device=device,
            optimize=optimize,
            weights=weights,
        )
        return self._call("estimate", spec.model_dump_json())

    def submit_many(self, jobs: Iterable[Any], **options: Any) -> list[JobHandle]:
        """Submit many jobs in one round trip: each element becomes its own durable job.

        Args:
            jobs: each element is what ``submit`` takes as ``circuits``.
            **options: ``submit``'s keyword arguments, applied to every job
                (``idempotency_key`` is not allowed here; give keys per job via submit).
        """
        if "idempotency_key" in options:
            raise ValidationError("submit_many: idempotency_key is per job; use submit()")
        shots = options.pop("shots", 1024)
        options.setdefault("tenant", "default")
        specs = []
        for i, circuits in enumerate(jobs):
            try:
                specs.append(make_spec(circuits, shots=shots, **options))
            except ValidationError as exc:
                raise ValidationError(f"jobs[{i}]: {exc}") from None
        if not specs:
            raise ValidationError("jobs: empty; pass at least one job")
        return self.submit_specs(specs)

    def submit_specs(self, specs: Sequence[JobSpec]) -> list[JobHandle]:
        """Submit jobs already built as :class:`~qrt_ray.models.JobSpec` (the primitives
        build theirs); :meth:`submit` is the way in for circuits and options.

        Every job gets an idempotency key if it has none, so a submission retried after
        a scheduler restart finds the jobs the first try made instead of making them
        again.

        Raises:
            ValidationError: the farm refuses a spec (nothing is stored then).
        """
        job_ids = self._store_specs([_keyed(s) for s in specs])
        return [self._unread_handle(JobHandle(self, job_id)) for job_id in job_ids]

    def _unread_handle(self, handle: JobHandle) -> JobHandle:
        with self._ahead_lock:
            self._unread[id(handle)] = weakref.ref(handle)
            while len(self._unread) > _UNREAD_KEPT:
                self._unread.popitem(last=False)
        return handle

    def _store_specs(self, specs: Sequence[JobSpec]) -> list[str]:
        """Store keyed specs in one scheduler call; their job ids, in order."""
        return [v["job_id"] for v in self._call("submit", [s.model_dump_json() for s in specs])]

    def flush(self, timeout_s: float | None = None) -> None:
        """Wait until the farm has answered every pipelined submit so far (accepted or
        refused: each handle's :meth:`JobHandle.accepted` says which). Returns at once
        for a runtime without a pipeline.

        Raises:
            JobTimeoutError: submits still unanswered after ``timeout_s``.
        """
        timeout_s = _timeout(timeout_s)
        if self._pipeline is not None and not self._pipeline.flush(timeout_s):
            raise JobTimeoutError(
                f"{self._pipeline.pending()} pipelined submits still unanswered after "
                f"{timeout_s:g}s; the farm is slow or restarting: flush again"
            )

    # -- waiting and results ----------------------------------------------------------

    def wait(
        self, handles: Sequence[JobHandle], timeout_s: float | None = None
    ) -> dict[str, JobState]:
        """Wait until every job is final (or the timeout passes); returns their states.

        ``timeout_s`` bounds the wait for the jobs to finish, so ``timeout_s=0`` polls.
        A pipelined submit not yet acknowledged (a state needs the job's id) is waited
        for up to ``retry_s`` past it: an answer normally comes within milliseconds.

        Raises:
            JobTimeoutError: a pipelined submit still unanswered then.
            QrtError: the farm refused one of the pipelined submits (its error).
        """
        timeout_s = _timeout(timeout_s)
        end = None if timeout_s is None else time.monotonic() + timeout_s
        ids = self._job_ids(handles, end)
        got = self._wait_ids(ids, None if end is None else max(0.0, end - time.monotonic()))
        return {k: JobState(v) for k, v in got.items()}

    def _wait_ids(self, job_ids: Sequence[str], timeout_s: float | None) -> dict[str, str]:
        # a scheduler restart mid-wait costs a retry, not the caller's whole timeout
        end = None if timeout_s is None else time.monotonic() + timeout_s
        return self._call(
            "wait",
            list(job_ids),
            lambda: None if end is None else max(0.0, end - time.monotonic()),
        )

    def results(
        self, handles: Sequence[JobHandle], timeout_s: float | None = None
    ) -> list[JobResult]:
        """Wait for many jobs and return their verified results, in order.

        Raises:
            JobFailedError, JobCancelledError, JobTimeoutError, IntegrityError: as for
            :meth:`JobHandle.result`, for the first job that has no result.
        """
        timeout_s = _timeout(timeout_s)
        end = None if timeout_s is None else time.monotonic() + timeout_s
        ids = self._job_ids(handles, end)
        with self._ahead_lock:
            for h in handles:
                self._unread.pop(id(h), None)
            early = [self._ahead.pop(job_id, None) for job_id in ids]
            read_ahead = all(e is not None for e in early)  # by an earlier result()
            if read_ahead:
                self._served.extend(ids)  # marked fetched with the next read-ahead
                del self._served[:-_RESULTS_PER_CALL]
        out: list[JobResult] = []  # plain loops: a warning's stacklevel reaches the caller
        if read_ahead:
            for job_id, blob in zip(ids, early, strict=True):
                assert blob is not None
                out.append(_verified(job_id, *blob))
            return out
        if len(ids) == 1 and self._READS_AHEAD:
            got = self._collect_ahead(ids[0], end)
            if got is not None:
                ((state, blob, error),) = got
                _check_done(ids[0], JobState(state), error, timeout_s)
                return [_verified(ids[0], *blob)]
        left = None if end is None else max(0.0, end - time.monotonic())
        if len(ids) <= _RESULTS_PER_CALL:  # waited for and fetched in one round trip
            try:
                got = self._call(
                    "collect",
                    ids,
                    lambda: None if end is None else max(0.0, end - time.monotonic()),
                )
            except AttributeError:  # a farm started before collect: two round trips
                got = None
            if got is not None:
                for job_id, (state, _, error) in zip(ids, got, strict=True):
                    _check_done(job_id, JobState(state), error, timeout_s)
                for job_id, (_, blob, _) in zip(ids, got, strict=True):
                    out.append(_verified(job_id, *blob))
                return out
            left = None if end is None else max(0.0, end - time.monotonic())
        states = self.wait(handles, left)
        for h in handles:
            state = states[h.job_id]
            error = (h.info().get("error") or "unknown") if state is JobState.FAILED else None
            _check_done(h.job_id, state, error, timeout_s)
        for start in range(0, len(ids), _RESULTS_PER_CALL):
            chunk = ids[start : start + _RESULTS_PER_CALL]
            for job_id, (sha, data) in zip(chunk, self._call("results", chunk), strict=True):
                out.append(_verified(job_id, sha, data))
        return out

    def _job_ids(self, handles: Sequence[JobHandle], end: float | None) -> list[str]:
        """Each handle's job id, its refusal raised. A pipelined one's acknowledgement
        is waited for up to ``retry_s`` past the caller's ``end`` (monotonic; None: no
        limit): a caller's timeout bounds the wait for its jobs, not their submit, so a
        poll right after ``submit()`` gets an answer rather than a timeout."""
        if end is not None:
            end = max(end, time.monotonic() + self.retry_s)
        return [
            h.accepted(None if end is None else max(0.0, end - time.monotonic())) for h in handles
        ]

    def _collect_ahead(
        self, job_id: str, end: float | None
    ) -> list[tuple[str, tuple[str, bytes] | None, str | None]] | None:
        """``collect`` one job until ``end`` (monotonic), and take the results of later
        handles of this runtime that are DONE by then (kept until their ``result()``
        asks): a loop of ``result()`` calls pays a round trip per batch of finished
        jobs. None when there is nothing to read ahead, or the farm predates it."""
        ahead: dict[str, None] = {}
        with self._ahead_lock:
            dropped = []
            for key, ref in self._unread.items():
                h = ref()
                if h is None:
                    dropped.append(key)
                    continue
                known = h._job_id if h._ack is None else h._ack.job_id_now
                if known is not None and known != job_id and known not in self._ahead:
                    ahead[known] = None
                    if len(ahead) >= _RESULTS_PER_CALL:
                        break
            for key in dropped:
                del self._unread[key]
            served, self._served = self._served, []
        if not ahead and not served:
            return None
        try:
            got, extra = self._call(
                "collect_ahead",
                [job_id],
                lambda: None if end is None else max(0.0, end - time.monotonic()),
                list(ahead),
                served,
            )
        except AttributeError:  # a farm started before collect_ahead
            return None
        with self._ahead_lock:
            self._ahead.update(extra)
            held = sum(len(data) for _, data in self._ahead.values())
            while self._ahead and (len(self._ahead) > _UNREAD_KEPT or held > _AHEAD_BYTES):
                _, data = self._ahead.pop(next(iter(self._ahead)))  # none asked: oldest
                held -= len(data)
        return got

    # -- queries ----------------------------------------------------------------------

    def job(self, job_id: str) -> JobHandle:
        """A handle to an existing job. Raises JobNotFoundError for unknown ids."""
        if not isinstance(job_id, str):
            raise ValidationError(f"job_id={brief(job_id)}: expected text (str)")
        self._call("job", job_id)
        return JobHandle(self, job_id)

    def jobs(
        self, *, state: str | JobState | None = None, tenant: str | None = None, limit: int = 50
    ) -> list[dict[str, Any]]:
        """Jobs, newest first, optionally filtered by state and tenant.

        Args:
            state: only jobs in this state.
            tenant: only this tenant's jobs.
            limit: at most this many (1 to 10,000).

        Raises:
            ValidationError: an unknown state, or ``limit`` out of range.
        """
        limit = check_limit(limit)
        states = None
        if state is not None:
            try:
                states = [JobState(str(getattr(state, "value", state)).upper()).value]
            except ValueError:
                names = ", ".join(s.value for s in JobState)
                raise ValidationError(f"state={brief(state)!r}: use one of {names}") from None
        if tenant is not None and not isinstance(tenant, str):
            raise ValidationError(f"tenant={brief(tenant)}: expected text (str)")
        return self._call("jobs", states, tenant, limit)

    def store_label(self) -> str:
        """The job store the farm uses (a path, or a URL with its password hidden)."""
        return self._call("store_label")

    def devices(self) -> list[DeviceSnapshot]:
        """Every device: status, size, queue, calibration, price, simulator."""
        return self._call("devices")

    def _devices_once(self, timeout_s: float) -> list[DeviceSnapshot]:
        """Every device of the farm in one try, without riding out a restart.

        Raises:
            RuntimeNotRunningError: no scheduler to ask, or some of the farm's devices
                have not answered it since it started (a refusal judged on the others
                could be wrong).
            ray.exceptions.GetTimeoutError: the scheduler did not answer within
                ``timeout_s``.
        """
        if self._closed or self._scheduler is None:
            raise RuntimeNotRunningError("no scheduler to ask")
        try:
            ask = self._scheduler.devices_judged
        except AttributeError:  # a farm older than the client: its devices as they are
            return list(ray.get(self._scheduler.devices.remote(), timeout=timeout_s))
        devices, unheard = ray.get(ask.remote(), timeout=timeout_s)
        if unheard:
            raise RuntimeNotRunningError(f"{len(unheard)} devices have not answered yet")
        return list(devices)

    def _device(self, name: str) -> Any:
        known = [d.name for d in self.devices()]
        if name not in known:
            raise ValidationError(
                f"device={brief(name)!r} is not a device of this farm; devices: {', '.join(known)}"
            )
        return farm_mod.device_handle(name, self.namespace)

    def calibrate(self, device: str, timeout_s: float = 600.0) -> tuple[str, str]:
        """Recalibrate a device now: pause it, let its batch finish, measure its true
        noise into a new calibration, verify it with canaries, and resume it.

        Work waiting on it that was compiled for the old calibration is placed again.

        Returns:
            (old calibration id, new calibration id); equal when nothing had drifted.

        Raises:
            ValidationError: no such device.
            DeviceUnavailableError: canaries still fail after the recalibration (the
                message says whether the device is retrying or OFFLINE), or it did not
                finish within ``timeout_s``.
        """
        handle = self._device(device)
        old = ray.get(handle.snapshot.remote()).calibration.calibration_id
        manager = farm_mod.calibration_handle(self.namespace)
        try:
            got = _unwrap(manager.calibrate, device, "requested by an operator", timeout_s)
        except ray.exceptions.RayTaskError as exc:
            if isinstance(getattr(exc, "cause", None), TimeoutError):
                raise DeviceUnavailableError(
                    f"{device} is still recalibrating after {timeout_s:g} s; the "
                    "calibration manager keeps at it (see `qrt devices`)"
                ) from None
            raise
        if got["phase"] != "monitor":
            raise DeviceUnavailableError(
                f"{device} was recalibrated but is {got['phase']}: {got['reason']}"
            )
        return old, ray.get(handle.snapshot.remote()).calibration.calibration_id

    def calibrations(self, device: str, limit: int = 20) -> list[dict[str, Any]]:
        """A device's calibration history, newest first: id, time, reason, summary
        figures and how its canaries went (at most ``limit``, 1 to 10,000)."""
        limit = check_limit(limit)
        self._device(device)
        return self._manager_call("history", device, limit)

    def calibration_report(self) -> dict[str, dict[str, Any]]:
        """Per device: the calibration manager's phase and reason, its last canary
        round, and the device time spent on canaries and recalibrations."""
        return self._manager_call("report")

    def schedule_maintenance(
        self, device: str, start: float, end: float, reason: str = "maintenance"
    ) -> dict[str, Any]:
        """Take a device out of service from ``start`` to ``end`` (unix seconds).

        Inside the window it is MAINTENANCE: it takes no work, and work waiting on it
        is placed elsewhere. After it, the device is recalibrated before it is ONLINE.

        Raises:
            ValidationError: unknown device, or ``end`` not after ``start`` and now.
        """
        self._device(device)
        manager = farm_mod.calibration_handle(self.namespace)
        return _unwrap(manager.schedule_maintenance, device, start, end, reason)

    def maintenance(self, device: str | None = None) -> list[dict[str, Any]]:
        """Maintenance windows not yet over (of one device, or all)."""
        return self._manager_call("maintenance", device)

    def cancel_maintenance(self, window_id: str) -> bool:
        """Cancel a maintenance window; returns whether there was one with that id."""
        manager = farm_mod.calibration_handle(self.namespace)
        return ray.get(manager.cancel_maintenance.remote(window_id))

    def backend(self, name: str) -> QrtBackend:
        """One device as a Qiskit ``BackendV2``: ``transpile(c, backend)``, ``backend.run``.

        ``"ideal"`` gives the farm as a noiseless simulator instead
        (:class:`~qrt_ray.primitives.backend.QrtIdealBackend`): no coupling map, so a
        transpiled circuit keeps its width, and every job runs without noise on the
        device placement picks.

        Raises:
            ValidationError: no such device.
        """
        from qrt_ray.primitives.backend import IDEAL, QrtBackend, QrtIdealBackend

        if name == IDEAL:
            return QrtIdealBackend(self)  # type: ignore[return-value]
        self._device(name)
        return QrtBackend(self, name)

    def backends(self) -> list[QrtBackend]:
        """Every device of the farm as a Qiskit backend."""
        from qrt_ray.primitives.backend import QrtBackend

        return [QrtBackend(self, d.name) for d in self.devices()]

    def readout_calibration(
        self, device: str, qubits: Sequence[int], shots: int, max_age_s: float
    ) -> tuple[ReadoutCalibration, int]:
        """A device's measured readout errors of ``qubits`` (what readout mitigation
        divides out), measured now unless it has them for its current calibration
        within ``max_age_s``; returns them and the shots spent measuring.

        Raises:
            MitigationError: a qubit cannot be read reliably.
        """
        handle = farm_mod.device_handle(device, self.namespace)
        return _unwrap(handle.readout_calibration, list(qubits), shots, max_age_s)

    def mitigation_versions(self) -> dict[str, str]:
        """The post-processing version of each method the farm serves now (what
        ``qrt rollout`` moves): ``{"readout": "1"}``."""
        return dict(self._call("mitigation_versions"))

    def drain(self, device: str) -> None:
        """Stop giving a device new work; what it already holds still runs (sealed
        into the audit chain as the operator's)."""
        self._device(device)
        self._call("set_device_status", device, "DRAINING")

    def resume(self, device: str) -> None:
        """Put a drained (or paused) device back ONLINE (audited)."""
        self._device(device)
        self._call("set_device_status", device, "ONLINE")

    def administer(self, operation: str, **args: Any) -> Any:
        """An operator's call on tenants, tokens, usage, bills or the audit chain
        (what ``qrt tenants``, ``qrt tokens``, ``qrt usage``, ``qrt bill`` and ``qrt
        audit`` do): ``tenant_set``, ``tenants``, ``token_create``, ``tokens``,
        ``token_rotate``, ``token_revoke``, ``usage``, ``bill``, ``audit_verify``,
        ``audit_tail``. Needs Ray: holding it is the operator's credential.

        Raises:
            ValidationError: unknown operation or bad arguments.
        """
        return self._call("administer", operation, args)

    def metrics_text(self) -> str:
        """The scheduler's Prometheus metrics in text format."""
        return self._call("metrics_text").decode()

    @property
    def metrics_url(self) -> str | None:
        """Where the farm serves its Prometheus metrics (None: the endpoint is off)."""
        return self._call("metrics_address")

    # -- shutdown ---------------------------------------------------------------------

    def shutdown(self) -> None:
        """Stop the farm if this runtime started it, and Ray if it started that too."""
        if self._closed:
            return
        self._closed = True
        if self._pipeline is not None:
            self._pipeline.close()  # what was submitted is sent before the farm stops
        if self._owns_farm:
            farm_mod.stop_farm(self.namespace, self._device_names)
        if self._owns_ray:
            ray.shutdown()
        if self._private_store is not None:
            farm_mod.remove_store_file(self._private_store)

    def __enter__(self) -> QuantumRuntime:
        return self

    def __exit__(self, *exc: object) -> None:
        self.shutdown()


def connect(
    address: str | None = "auto",
    *,
    token: str | None = None,
    namespace: str = farm_mod.DEFAULT_NAMESPACE,
    retry_s: float = DEFAULT_RETRY_S,
    ca_file: str | None = None,
    pipeline: bool = True,
) -> QuantumRuntime:
    """Attach to a farm: through its HTTP gateway with an API token (tenants), or
    through Ray to the actors ``qrt up`` started (operators).

    Args:
        address: ``https://host:port`` (or ``http://``) of the farm's gateway; or a Ray
            address (``auto`` finds the local cluster; ``ray://host:10001``).
        token: the API token for a gateway (default: ``$QRT_TOKEN``).
        namespace: the farm's Ray namespace (Ray only).
        retry_s: how long a call keeps trying while the farm restarts (or its job
            store refuses writes).
        ca_file: CA certificates to trust for an ``https`` gateway (default:
            ``$QRT_CA_FILE``, else the system's).
        pipeline: :meth:`QuantumRuntime.submit` returns before the farm acknowledges
            the job (default); see :meth:`JobHandle.accepted`. False: each submit
            waits for the farm's answer.

    Raises:
        RuntimeNotRunningError: no farm runs there.
        AuthenticationError: the gateway refused the token (the message says why).
    """
    retry = _retry_s(retry_s)
    if isinstance(address, str) and address.startswith(("http://", "https://")):
        from qrt_ray.remote import ENV_CA_FILE, ENV_TOKEN, connect_http

        return connect_http(
            address,
            token if token is not None else os.environ.get(ENV_TOKEN, ""),
            retry_s=retry,
            ca_file=ca_file or os.environ.get(ENV_CA_FILE) or None,
            pipeline=pipeline,
        )
    if token is not None:
        raise ValidationError(
            "token: API tokens are for a gateway URL (connect('https://host:8000', "
            "token=...)); a Ray address is the operator's way in and takes none"
        )
    farm_mod.init_ray_loopback(address=address)
    scheduler = farm_mod.find_scheduler(namespace)
    return QuantumRuntime(
        scheduler,
        namespace,
        owns_ray=False,
        owns_farm=False,
        devices=[],
        retry_s=retry,
        pipeline=pipeline,
    )
