"""Ray shell around :class:`~qrt_ray.actors.scheduler.Scheduler`, and its Ray-backed ports."""

from __future__ import annotations

import asyncio
import functools
import logging
from collections.abc import Iterator, Mapping, Sequence
from typing import Any

import psutil
import ray

from qrt_ray import logs, tracing
from qrt_ray.access.audit import AuditEntry
from qrt_ray.actors import canary_metrics
from qrt_ray.actors.access import OPERATOR, Access
from qrt_ray.actors.admin import Admin
from qrt_ray.actors.device import WorkItem
from qrt_ray.actors.requests import decode_specs, device_arg, job_id_arg, job_ids_arg
from qrt_ray.actors.rollouts import Rollouts
from qrt_ray.actors.scheduler import Scheduler
from qrt_ray.actors.snapshot_poll import SnapshotPoller
from qrt_ray.actors.tenant_api import TenantAPI
from qrt_ray.actors.views import event_views, record_view
from qrt_ray.arguments import check_limit
from qrt_ray.compiler import CompiledCircuit, compile_circuits
from qrt_ray.config import PolicyConfig, load_policy_config
from qrt_ray.errors import DeviceUnavailableError, QrtError, ValidationError, brief
from qrt_ray.intake.pool import IntakePool
from qrt_ray.lifecycle import JobState
from qrt_ray.metrics import RuntimeMetrics, serve_farm_metrics
from qrt_ray.models import RESULTS_PER_CALL, DeviceSnapshot
from qrt_ray.names import CALIBRATION_NAME, device_actor_name
from qrt_ray.reports import new_key
from qrt_ray.results import RawRun
from qrt_ray.store import open_store
from qrt_ray.store.faults import StoreFaults
from qrt_ray.store.urls import store_label
from qrt_ray.tuning import quick_handoffs, settle_heap
from qrt_ray.versions import software_versions

logger = logging.getLogger("qrt.scheduler")

# Compile runs as Ray tasks, one CPU each, so a farm compiles on every core it has.
compile_task = ray.remote(num_cpus=1, max_retries=2)(compile_circuits)
traced_compile_task = ray.remote(num_cpus=1, max_retries=2)(tracing.traced_call)
_WARM_QASM = (
    'OPENQASM 2.0; include "qelib1.inc"; qreg q[1]; creg c[1]; h q[0]; measure q[0] -> c[0];'
)
# At most this many compile workers are warmed at start (one per CPU below it).
_MAX_WARM_WORKERS = 8
# canary rounds read back per device at start, to find its last passing one
_CANARY_LOOKBACK = 50
# The store operations the calibration manager may ask of the scheduler.
CALIBRATION_STORE_OPERATIONS = frozenset(
    {
        "calibrations",
        "record_calibration",
        "canaries",
        "record_canary",
        "maintenance_windows",
        "add_maintenance",
        "remove_maintenance",
        "canary_versions",  # the rollouts', not the store's: see calibration_store
    }
)


class DeviceHandles(Mapping[str, Any]):
    """The farm's device actors by name, each found when first asked for.

    A device not created yet (the farm is starting) raises ``LookupError`` like a
    missing key, and is looked for again next time.
    """

    def __init__(self, names: Sequence[str], namespace: str) -> None:
        self._names = list(names)
        self._namespace = namespace
        self._found: dict[str, Any] = {}

    def __getitem__(self, name: str) -> Any:
        if name not in self._found:
            if name not in self._names:
                raise KeyError(name)
            try:
                self._found[name] = ray.get_actor(
                    device_actor_name(name), namespace=self._namespace
                )
            except ValueError:
                raise KeyError(f"device {name} has no actor yet") from None
        return self._found[name]

    def __iter__(self) -> Iterator[str]:
        return iter(self._names)

    def __len__(self) -> int:
        return len(self._names)


class RayPorts:
    """Scheduler ports over device actors and compile tasks."""

    def __init__(
        self, devices: Mapping[str, Any], snapshot_timeout_s: float = 10.0, namespace: str = ""
    ) -> None:
        self._devices = devices
        self._namespace = namespace
        self._targets: dict[tuple[str, str], Any] = {}
        self._snapshot_timeout_s = snapshot_timeout_s
        # each device's process as it last reported it (node, pid, start time)
        self._processes: dict[str, tuple[str, int, float]] = {}
        self._poll: SnapshotPoller[DeviceSnapshot] = SnapshotPoller(
            self._ask_snapshot, snapshot_timeout_s
        )

    async def _ask_snapshot(self, name: str) -> DeviceSnapshot:
        return await self._devices[name].snapshot.remote()

    async def snapshots(self) -> list[DeviceSnapshot]:
        """Snapshots of the devices, without waiting on one that hangs: a device still
        answering an earlier question is as it last was, until that question is
        ``snapshot_timeout_s`` old; then it is left out (the scheduler treats a device
        it knew and no longer hears from as taking no work). See
        :mod:`~qrt_ray.actors.snapshot_poll`."""
        got = await self._poll.round(list(self._devices))
        for name, snap in got.items():
            if snap.process is not None:
                self._processes[name] = snap.process
        return list(got.values())

    def device_names(self) -> list[str]:
        """The farm's devices by name, including those whose actor is not up yet."""
        return list(self._devices)

    async def restart(self, device: str) -> None:
        """Kill the device actor and let Ray start it again (its ``max_restarts``).

        Ray's kill is a message the actor's process must take; a frozen process takes
        none, so when that process runs on this node it is also killed by the OS.
        """
        self._targets = {k: v for k, v in self._targets.items() if k[0] != device}
        self._poll.lost(device)
        ray.kill(self._devices[device], no_restart=False)
        kill_process(self._processes.pop(device, None))

    async def request_calibration(self, device: str, reason: str) -> None:
        """Ask the farm's calibration manager to recalibrate a device (not waited for)."""
        try:
            manager = ray.get_actor(CALIBRATION_NAME, namespace=self._namespace)
        except ValueError:
            logger.warning("no calibration manager to recalibrate %s (%s)", device, reason)
            return
        manager.calibrate.remote(device, reason, 3600.0)

    async def _target(self, device: str, expected: str | None = None) -> tuple[str, Any]:
        # Asking the device ships a whole Target from an actor busy running batches,
        # for every compile chunk: the target of a known calibration is kept instead.
        # Compiling for a calibration the device has since left is caught when it
        # runs (it refuses work compiled for another calibration).
        if expected is not None and (device, expected) in self._targets:
            return expected, self._targets[(device, expected)]
        try:
            cal_id, target = await self._devices[device].compile_target.remote()
        except ray.exceptions.RayActorError as exc:
            # restarting (killed, or its node lost) or gone: not the job's fault, so
            # the job is placed again rather than failed
            raise DeviceUnavailableError(
                f"device {device} is unavailable for a compile ({type(exc).__name__}); "
                "placing the job again"
            ) from None
        key = (device, cal_id)
        if key not in self._targets:
            self._targets = {k: v for k, v in self._targets.items() if k[0] != device}
            self._targets[key] = ray.put(target)
        return cal_id, self._targets[key]

    async def warm_compilers(self, device: str, workers: int) -> None:
        """Run one tiny compile on each of ``workers`` workers at once.

        A fresh worker spends about a second importing the transpiler; paying that at
        farm start keeps it off the first jobs' latency.
        """
        try:
            await asyncio.gather(
                *(
                    self.compile(device, [_WARM_QASM], optimization_level=0, seed=0)
                    for _ in range(workers)
                )
            )
        except Exception:
            logger.warning("warming compile workers failed", exc_info=True)

    async def compile(
        self,
        device: str,
        texts: Sequence[str],
        *,
        optimization_level: int,
        seed: int,
        layouts: Sequence[Sequence[int] | None] | None = None,
        placement_esp: Sequence[float | None] | None = None,
        calibration_id: str | None = None,
        traceparent: str | None = None,
    ) -> tuple[str, list[CompiledCircuit]]:
        cal_id, target_ref = await self._target(device, calibration_id)
        # with tracing on, the task runs inside a span of the trace it was given and
        # exports where this process does
        config = tracing.current()
        call = (
            functools.partial(
                traced_compile_task.remote, traceparent, "compile.task", config, compile_circuits
            )
            if config is not None and traceparent
            else compile_task.remote
        )
        try:
            compiled = await call(
                list(texts),
                target_ref,
                device=device,
                calibration_id=cal_id,
                optimization_level=optimization_level,
                seed_transpiler=seed,
                initial_layouts=layouts,
                placement_esp=None if placement_esp is None else list(placement_esp),
                # calibration ids are hashes of the calibration: the pair names one target
                target_key=f"{device}@{cal_id}",
            )
        except (ray.exceptions.NodeDiedError, ray.exceptions.ObjectLostError) as exc:
            # the cluster lost the node under every try (an autoscaler took it away, or
            # it died): the job's fault it is not, so it is placed again, not failed
            self._targets.pop((device, cal_id), None)
            raise DeviceUnavailableError(
                f"the compile for {device} was lost with its node ({type(exc).__name__}); "
                "placing the job again"
            ) from None
        return cal_id, compiled

    async def enqueue(self, device: str, items: Sequence[WorkItem]) -> None:
        try:
            await self._devices[device].enqueue.remote(list(items))
        except ray.exceptions.RayActorError as exc:
            # restarting (its node lost) or gone: the work goes back to placement; if
            # the call did land, the old attempt is refused when its batch starts
            raise DeviceUnavailableError(
                f"device {device} is unavailable ({type(exc).__name__})"
            ) from None
        except ray.exceptions.RayTaskError as exc:
            # the device's own refusal (``device manila is CALIBRATING``): its words
            # go into the job's history, never the remote traceback around them
            cause = getattr(exc, "cause", None)
            if isinstance(cause, QrtError):
                raise cause from None
            raise

    async def drop(
        self, device: str, job_ids: Sequence[str], attempts: Mapping[str, int] | None = None
    ) -> list[str]:
        # Bounded: a hung device must not stall the scheduler. Work left behind is
        # refused at batch start, because its state was persisted first.
        ref = self._devices[device].drop.remote(list(job_ids), dict(attempts) if attempts else None)
        return await asyncio.wait_for(ref, timeout=self._snapshot_timeout_s)


def _seconds(value: Any, most: float) -> bool:
    """Whether ``value`` is a number of seconds in (0, most]."""
    number = isinstance(value, int | float) and not isinstance(value, bool)
    return number and 0 < value <= most


def kill_process(process: tuple[str, int, float] | None) -> bool:
    """SIGKILL a device's process if it runs on this node and is still that process
    (its start time matches: a pid may have been reused). Returns whether it did."""
    if process is None:
        return False
    node, pid, started = process
    if node != ray.get_runtime_context().get_node_id():
        return False
    try:
        proc = psutil.Process(pid)
        if abs(proc.create_time() - started) > 1.0:
            return False
        proc.kill()
    except psutil.Error:
        return False
    logger.warning("killed the process %d of a device that no longer answered", pid)
    return True


class SchedulerActor:
    """The farm's scheduler as an async Ray actor."""

    def __init__(
        self,
        store_url: str | None,
        device_names: Sequence[str],
        namespace: str,
        optimization_level: int = 1,
        metrics_port: int | None = None,
        policies_json: str | None = None,
        report_key_hex: str | None = None,
        access_key_hex: str | None = None,
    ) -> None:
        # found by name when first used: the scheduler starts before its devices
        devices = self._device_handles = DeviceHandles(device_names, namespace)
        logs.setup_actor()
        tracing.configure()
        self.metrics = RuntimeMetrics()
        self.metrics.build_info.labels(version=software_versions().get("qrt-ray", "?")).set(1)
        self._metrics_port = serve_farm_metrics(self.metrics, metrics_port)
        # chaos drills inject store faults here (inject_store_fault); none by default
        self._store_faults = StoreFaults()
        self.store = self._store_faults.wrap(open_store(store_url))
        self._store_label = store_label(store_url)
        policies = (
            PolicyConfig.model_validate_json(policies_json)
            if policies_json
            else load_policy_config()
        )
        self.ports = RayPorts(
            devices, snapshot_timeout_s=policies.faults.snapshot_timeout_s, namespace=namespace
        )
        self._first_device = device_names[0]
        self._warming: asyncio.Task[None] | None = None
        self.limits = policies.intake
        # users' circuits are parsed in these processes, never on this actor's loop
        self.intake = IntakePool(policies.intake)
        self.intake.start()
        self.scheduler = Scheduler(
            self.store,
            self.ports,
            optimization_level=optimization_level,
            metrics=self.metrics,
            policy_config=policies,
            intake=self.intake,
            # the farm's report key: only device actors and this actor have it
            report_key=bytes.fromhex(report_key_hex) if report_key_hex else None,
        )
        # the trust boundary: tokens, limits, budgets, the ledger's alerts, the audit
        # chain (a farm started without a key gets one that lasts as long as it does)
        access_key = bytes.fromhex(access_key_hex) if access_key_hex else new_key()
        self.access = Access(
            self.store, access_key, policies.tenancy, self.metrics, self.scheduler.prices
        )
        self.scheduler.audit_key = self.access.audit_key
        self.scheduler.on_billed = self.access.billed
        # post-processing versions: served to clients, rolled out on canaries (F10)
        self.rollouts = Rollouts(self.store, policies.rollout, self.metrics, self.access.audit)
        self.tenant_api = TenantAPI(
            self.scheduler,
            self.access,
            policies.intake,
            wait_cap_s=policies.tenancy.wait_cap_s,
            readout=self._readout,
            served=self.rollouts.served,
        )
        self.admin = Admin(self.tenant_api, self.rollouts, self._store_label)
        self.scheduler.telemetry.known_devices(device_names)
        settle_heap()  # before any job: see qrt_ray.tuning
        quick_handoffs()  # the store writer waits less for the GIL (qrt_ray.tuning)

        # Ray runs an async actor's constructor on its event loop: the actor starts
        # itself, so one Ray restarts after a crash recovers with nobody asking.
        self._starting = asyncio.get_running_loop().create_task(self._start())

    async def _start(self) -> int:
        await asyncio.to_thread(self.rollouts.load)
        history = {
            d: await asyncio.to_thread(self.store.canaries, d, _CANARY_LOOKBACK)
            for d in self._device_handles
        }
        canary_metrics.last_passes(self.metrics, history)
        recovered = await self.scheduler.start()
        if recovered:
            logger.info("recovered %d unfinished jobs from the store", recovered)
        workers = max(1, min(_MAX_WARM_WORKERS, int(ray.cluster_resources().get("CPU", 1))))
        self._warming = asyncio.create_task(self.ports.warm_compilers(self._first_device, workers))
        return recovered

    async def _started(self) -> None:
        """Wait until recovery is done (at once after that): no call sees half a state."""
        await asyncio.shield(self._starting)

    async def start(self) -> int:
        """Wait for the actor's own start: unfinished jobs recovered, the control loop
        running, compile workers warming in the background (one per CPU of the
        cluster). Returns how many jobs were recovered."""
        return await asyncio.shield(self._starting)

    async def last_calibration(self, device: str) -> str | None:
        """A device's newest stored calibration as JSON (a starting device asks).

        Answered before recovery is done: recovery may be waiting for that device.
        """
        history = await asyncio.to_thread(self.store.calibrations, device_arg(device), 1)
        return history[0].snapshot_json if history else None

    async def calibration_store(self, operation: str, *args: Any) -> Any:
        """The calibration manager's way to the store, which only this actor opens:
        calibration history, canary rounds and maintenance windows; and the
        post-processing versions each canary round runs (``canary_versions``)."""
        if operation not in CALIBRATION_STORE_OPERATIONS:
            raise ValidationError(
                f"operation={brief(operation)}: use one of "
                f"{', '.join(sorted(CALIBRATION_STORE_OPERATIONS))}"
            )
        await self._started()
        if operation == "canary_versions":
            return self.rollouts.canary_versions()
        got = await asyncio.to_thread(getattr(self.store, operation), *args)
        if operation == "record_canary":
            canary_metrics.observe_round(self.metrics, args[0])
            await self.rollouts.observe(args[0])
        elif operation == "add_maintenance":
            (w,) = args
            detail = {"start": w.start, "end": w.end, "reason": w.reason[:200]}
            await self.access.audit(
                [
                    AuditEntry(
                        OPERATOR, "maintenance.add", "", f"{w.device}/{w.window_id}", "ok", detail
                    )
                ]
            )
        elif operation == "remove_maintenance" and got:
            await self.access.audit([AuditEntry(OPERATOR, "maintenance.remove", "", str(args[0]))])
        return got

    async def mitigation_versions(self) -> dict[str, str]:
        """The post-processing version of each method user jobs get."""
        await self._started()
        return self.rollouts.served()

    async def submit(self, spec_jsons: list[str]) -> list[dict[str, Any]]:
        """Admit jobs given as JobSpec JSON (data only; never pickled circuits).

        Everything is checked here again, whoever calls: the types and sizes of the
        request, each spec (strict JSON), and every circuit (the intake gate).
        """
        await self._started()
        specs = await _decoded(spec_jsons, self.limits)
        admitted = await self.scheduler.submit(specs)
        return [{**record_view(rec), "created": created} for rec, created in admitted]

    async def estimate(self, spec_json: str) -> list[dict[str, Any]]:
        """Per-device estimates for a JobSpec given as JSON; runs nothing."""
        await self._started()
        specs = await _decoded([spec_json], self.limits)
        return await self.scheduler.estimate(specs[0])

    async def job(self, job_id: str) -> dict[str, Any]:
        """One job's record, with why it waits (``waiting``) if it is QUEUED."""
        await self._started()
        job_id = job_id_arg(job_id)
        rec = await self.scheduler.get(job_id)
        return {**record_view(rec), "waiting": self.scheduler.waiting(job_id)}

    async def jobs(
        self, states: list[str] | None = None, tenant: str | None = None, limit: int = 100
    ) -> list[dict[str, Any]]:
        """Jobs, newest first (at most ``limit``, 1 to 10,000)."""
        await self._started()
        limit = check_limit(limit)
        if states is not None and (
            not isinstance(states, list) or not all(isinstance(s, str) for s in states)
        ):
            raise ValidationError(f"states={brief(states)}: expected a list of state names")
        if tenant is not None and not isinstance(tenant, str):
            raise ValidationError(f"tenant={brief(tenant)}: expected text (str)")
        try:
            wanted = [JobState(s) for s in states or []]
        except ValueError:
            names = ", ".join(s.value for s in JobState)
            raise ValidationError(f"states={brief(states)}: use some of {names}") from None
        recs = await self.scheduler.list_jobs(wanted, tenant=tenant, limit=limit)
        return [record_view(r) for r in recs]

    async def events(self, job_id: str) -> list[dict[str, Any]]:
        """The job's lifecycle transitions."""
        await self._started()
        await self.scheduler.get(job_id_arg(job_id))  # raises JobNotFoundError for unknown ids
        return event_views(await asyncio.to_thread(self.store.events, job_id))

    async def wait(self, job_ids: list[str], timeout_s: float | None) -> dict[str, str]:
        """Block until the jobs are final or the timeout passes; returns their states."""
        await self._started()
        got = await self.scheduler.wait(job_ids_arg(job_ids), _timeout_arg(timeout_s))
        return {k: v.value for k, v in got.items()}

    async def collect(
        self, job_ids: list[str], timeout_s: float | None
    ) -> list[tuple[str, tuple[str, bytes] | None, str | None]]:
        """Wait as :meth:`wait` does, then each job's outcome, in order: its state, and
        either every result as (sha256, bytes) when all are DONE, or else the error of
        the first job that is not DONE if it FAILED (what the client raises; nothing
        is fetched, nor marked fetched, for a call that will raise). What a client's
        ``result()`` needs, in one round trip instead of two (at most
        ``_COLLECT_JOBS`` jobs a call)."""
        got, _ = await self._collect(job_ids, timeout_s, [])
        return got

    async def _collect(
        self, job_ids: list[str], timeout_s: float | None, served: list[str]
    ) -> tuple[list[tuple[str, tuple[str, bytes] | None, str | None]], bool]:
        """:meth:`collect`, marking ``served`` fetched with the results it fetches (one
        write); returns its answer and whether ``served`` was marked."""
        await self._started()
        ids = job_ids_arg(job_ids)
        if len(ids) > _COLLECT_JOBS:
            raise ValidationError(
                f"job_ids: {len(ids)} jobs; collect at most {_COLLECT_JOBS} a call"
            )
        states = await self.scheduler.wait(ids, _timeout_arg(timeout_s))
        first = next((j for j in ids if states[j] is not JobState.DONE), None)
        if first is None:
            blobs = await self.scheduler.result_blobs(ids, also_fetched=served) if ids else []
            return [("DONE", blob, None) for blob in blobs], bool(ids)
        failed = states[first] is JobState.FAILED
        error = (await self.scheduler.get(first)).error if failed else None
        return [(states[j].value, None, error if j == first else None) for j in ids], False

    async def collect_ahead(
        self,
        job_ids: list[str],
        timeout_s: float | None,
        ahead: list[str],
        served: list[str] | None = None,
    ) -> tuple[
        list[tuple[str, tuple[str, bytes] | None, str | None]], dict[str, tuple[str, bytes]]
    ]:
        """:meth:`collect`, and the results of those of ``ahead`` that are DONE now (not
        waited for), by job id, while they add up to at most 8 MiB: a loop of
        ``result()`` calls reads ahead, so it pays a round trip per batch of finished
        jobs instead of one per job. Results read ahead are not marked fetched until
        the client says it ``served`` them (with its next call)."""
        if not isinstance(ahead, list) or len(ahead) > _COLLECT_JOBS:
            raise ValidationError(
                f"ahead: expected a list of at most {_COLLECT_JOBS} job ids, got "
                f"{len(ahead) if isinstance(ahead, list) else type(ahead).__name__}"
            )
        ahead_ids = job_ids_arg(ahead)
        if served and (not isinstance(served, list) or len(served) > _COLLECT_JOBS):
            raise ValidationError(f"served: expected at most {_COLLECT_JOBS} job ids")
        # results read ahead earlier, handed to the caller since, are marked fetched
        # with this call's own (or alone, when this call fetches none)
        handed = job_ids_arg(served) if served else []
        got, marked = await self._collect(job_ids, timeout_s, handed)  # waits for the farm
        if handed and not marked:
            await self.scheduler.mark_fetched(handed)
        asked = set(job_ids)
        try:
            ready = await self.scheduler.done_now(
                [j for j in ahead_ids if j not in asked], _AHEAD_BYTES
            )
            blobs = await self.scheduler.result_blobs(ready, mark=False) if ready else []
        except Exception as exc:  # reading ahead is a favour: it never fails the call
            logger.info("read-ahead of %d results skipped: %s", len(ahead_ids), exc)
            return got, {}
        return got, dict(zip(ready, blobs, strict=True))

    async def results(self, job_ids: list[str]) -> list[tuple[str, bytes]]:
        """(sha256, JSON bytes) of DONE jobs' results, in order."""
        await self._started()
        return await self.scheduler.result_blobs(job_ids_arg(job_ids))

    async def cancel(self, job_id: str) -> tuple[str, bool]:
        """Cancel a job; returns (state, changed)."""
        await self._started()
        rec = await self.scheduler.get(job_id_arg(job_id))
        state, changed = await self.scheduler.cancel(rec.job_id)
        if changed:  # through Ray: an operator's (tenants cancel through the gateway)
            await self.access.audit([AuditEntry(OPERATOR, "job.cancel", rec.tenant, rec.job_id)])
        return state.value, changed

    async def set_device_status(self, device: str, status: str) -> None:
        """Drain a device or put it back ONLINE (an operator's call, audited)."""
        await self._started()
        if status not in ("DRAINING", "ONLINE"):
            raise ValidationError(f"status={brief(status)}: use DRAINING or ONLINE")
        name = device_arg(device)
        if name not in set(self._device_handles):  # names, without looking actors up
            raise ValidationError(f"device={brief(name)!r} is not a device of this farm")
        await self._device_handles[name].set_status.remote(status)
        action = "device.drain" if status == "DRAINING" else "device.resume"
        await self.access.audit([AuditEntry(OPERATOR, action, "", name)])

    async def inject_store_fault(
        self, kind: str, value: float, after: bool = False, for_s: float = 0.0
    ) -> None:
        """Chaos drills: ``fail`` makes the job store's next ``value`` writes fail
        (after their commit with ``after``, else before it); ``slow`` makes each write
        wait ``value`` seconds first, for the next ``for_s`` seconds; ``auth`` makes
        every read of a token or tenant record fail for ``value`` seconds (an outage
        of authentication); ``clear`` heals them all at once (a drill's end).

        Raises:
            ValidationError: an unknown kind or a value out of range.
        """
        number = isinstance(value, int | float) and not isinstance(value, bool)
        if kind == "fail" and number and value == int(value) and 1 <= value <= 1000:
            self._store_faults.fail(int(value), bool(after))
        elif kind == "slow" and number and 0 < value <= 30 and _seconds(for_s, 3600):
            self._store_faults.slow(float(value), float(for_s))
        elif kind == "auth" and number and 0 < value <= 3600:
            self._store_faults.cut_auth(float(value))
        elif kind == "clear":
            self._store_faults.clear()
            logger.warning("job store faults cleared")
            return
        else:
            raise ValidationError(
                f"store fault {brief(kind, 20)!r}={brief(value, 20)}: use fail (1 to 1000 "
                "writes), slow (0 to 30 s a write, for 0 to 3600 s), auth (0 to 3600 s) "
                "or clear"
            )
        logger.warning(
            "job store fault injected: %s %g%s", kind, value, f" for {for_s:g} s" if for_s else ""
        )

    async def node(self) -> str:
        """The id of the Ray node this actor runs on (the farm's control plane)."""
        return ray.get_runtime_context().get_node_id()

    async def store_label(self) -> str:
        """The store this farm keeps its jobs in (passwords hidden)."""
        return self._store_label

    async def devices(self) -> list[DeviceSnapshot]:
        """Snapshots of all devices."""
        await self._started()
        return await self.scheduler.devices()

    async def devices_judged(self) -> tuple[list[DeviceSnapshot], list[str]]:
        """Snapshots of the devices that answered, and the names of the farm's devices
        that have not answered since the scheduler started: while there are any, a job
        none of the answering devices could run may fit one of them."""
        await self._started()
        return await self.scheduler.devices(), self.scheduler.unheard()

    async def batch_started(
        self, device: str, attempts: list[tuple[str, int, str]], signature: str = ""
    ) -> list[str]:
        """Device callback: persist RUNNING; returns the jobs to run (the device's
        signed claim, see :meth:`Scheduler.batch_started`)."""
        await self._started()
        return await self.scheduler.batch_started(device, attempts, signature)

    async def batch_progress(self, device: str) -> None:
        """A device finished a simulator call of its running batch (it is not hung)."""
        await self._started()
        self.scheduler.batch_progress(device)

    async def batch_finished(self, device: str, runs: list[RawRun]) -> None:
        """Device callback: count and complete runs."""
        await self._started()
        await self.scheduler.batch_finished(device, runs)

    async def gateway(self, token: Any, source: str, operation: str, payload: Any) -> Any:
        """The gateway's one door: a tenant's call, with its token (see
        :class:`~qrt_ray.actors.tenant_api.TenantAPI`)."""
        await self._started()
        return await self.tenant_api.call(token, source, operation, payload)

    async def _readout(
        self, device: str, qubits: list[int], shots: int, max_age_s: float
    ) -> tuple[Any, int]:
        handle = self._device_handles[device]
        return await handle.readout_calibration.remote(qubits, shots, max_age_s)

    async def administer(self, operation: str, args: dict[str, Any]) -> Any:
        """An operator's call on tenants, tokens, usage, bills and the audit chain
        (whoever holds Ray is the operator; see :class:`~qrt_ray.actors.admin.Admin`)."""
        await self._started()
        return await self.admin.call(operation, args)

    async def metrics_address(self) -> str | None:
        """Where this farm serves ``/metrics`` (None: the endpoint is off)."""
        if self._metrics_port is None:
            return None
        return f"http://127.0.0.1:{self._metrics_port}/metrics"

    async def metrics_text(self) -> bytes:
        """Prometheus exposition of the scheduler's metrics."""
        return self.metrics.exposition()

    async def shutdown(self) -> None:
        """Stop the loop, the parser processes and the store."""
        if self._warming is not None:
            self._warming.cancel()
        await self.access.flush_refusals(force=True)
        await self.scheduler.stop()
        await asyncio.to_thread(self.intake.close)
        await asyncio.to_thread(self.store.close)


# the most jobs one collect() answers (their results travel in one reply)
_COLLECT_JOBS = RESULTS_PER_CALL
# results read ahead in one call at most (bytes): wide results are not fetched unasked
_AHEAD_BYTES = 8 << 20


def _timeout_arg(timeout_s: Any) -> float | None:
    if timeout_s is not None and (
        isinstance(timeout_s, bool) or not isinstance(timeout_s, (int, float)) or not timeout_s >= 0
    ):
        raise ValidationError(f"timeout_s={brief(timeout_s)}: expected seconds >= 0 or None")
    return timeout_s


# a request of fewer characters is decoded on the event loop: about 30 us a kB, where a
# thread hop costs 0.1-0.4 ms on a busy 2-core machine (a one-job submit pays it)
_INLINE_REQUEST_CHARS = 64 * 1024


async def _decoded(spec_jsons: Any, limits: Any) -> list[Any]:
    """The request's JobSpecs (see ``decode_specs``), decoded off the event loop unless
    the request is small."""
    if (
        isinstance(spec_jsons, list)
        and all(isinstance(s, str) for s in spec_jsons)
        and sum(len(s) for s in spec_jsons) <= _INLINE_REQUEST_CHARS
    ):
        return decode_specs(spec_jsons, limits)
    return await asyncio.to_thread(decode_specs, spec_jsons, limits)
