"""The farm's topology: the one module that starts Ray and wires the actors together.

Named actors live in a Ray namespace: ``device:<name>`` per device and ``scheduler``.
``qrt up`` creates them detached in the ``qrt`` namespace so clients can attach by
name; the embedded runtime creates them in a private namespace tied to its driver.
"""

from __future__ import annotations

import contextlib
import logging
import os
import secrets
import socket
import stat
import tempfile
import time
import uuid
from pathlib import Path
from typing import Any

import ray

from qrt_ray.config import DeviceConfig, FarmConfig, PolicyConfig
from qrt_ray.errors import RuntimeNotRunningError
from qrt_ray.names import (
    CALIBRATION_NAME,
    DEFAULT_NAMESPACE,
    HEAD_RESOURCE,
    SCHEDULER_NAME,
    device_actor_name,
)
from qrt_ray.private import DIR_MODE, private_dir, private_file, write_private
from qrt_ray.reports import new_key
from qrt_ray.store.urls import check_store, resolve_store_url

logger = logging.getLogger("qrt.farm")

# Devices are mostly idle between batches and run Aer with their own threads; they
# reserve no CPU so compile tasks can use every core.
_DEVICE_CPUS = 0
_DEVICE_CONCURRENCY = 8


def _device_env() -> dict[str, str]:
    """Environment of device actor processes.

    Ray sets ``OMP_NUM_THREADS=1`` in workers that reserve no CPU, and Aer caps its
    per-circuit (state update) threads there whatever ``max_parallel_threads`` says:
    measured on 2 cores, six 9-qubit noisy circuits took 9.8 s instead of 5.5 s.
    """
    return {"OMP_NUM_THREADS": str(os.cpu_count() or 1), **telemetry_env()}


def telemetry_env() -> dict[str, str]:
    """The operator's telemetry settings (span exporters, log format), handed to every
    farm process: Ray starts actors with the environment of their node, not ours."""
    from qrt_ray.logs import ENV_FORMAT
    from qrt_ray.tracing import TracingConfig

    env = TracingConfig.from_env().env()
    if os.environ.get(ENV_FORMAT):
        env[ENV_FORMAT] = os.environ[ENV_FORMAT]
    return env


def _force_loopback() -> None:
    """Keep Ray on 127.0.0.1 even if ray was imported before qrt_ray set the variable."""
    os.environ.setdefault("RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER", "0")
    if os.environ["RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER"] == "0":
        from ray._private import ray_constants

        ray_constants.ENABLE_RAY_CLUSTER = False


def prepare_auth() -> None:
    """Token auth for the Ray this process is about to start or join.

    Clusters started by ``ray start`` (Ray >= 2.60) require a token, so the mode is
    ``token`` unless ``RAY_AUTH_MODE`` says otherwise (``disabled`` opts out). Ray
    caches the mode and the token when it is imported: both are read again here, so
    ``import ray`` before ``import qrt_ray`` works the same as after.
    """
    os.environ.setdefault("RAY_AUTH_MODE", "token")
    from ray._raylet import AuthenticationTokenLoader, Config

    Config.initialize("")  # Ray's cached settings, the auth mode among them
    AuthenticationTokenLoader.instance().reset_cache()


def ensure_auth_token() -> Path | None:
    """Make sure a Ray auth token exists before ``ray start`` needs one.

    Clusters started by ``ray start`` (Ray >= 2.60) refuse to start in token mode
    without a token, and a fresh machine has none. When ``RAY_AUTH_MODE`` is ``token``
    and no token is set (``RAY_AUTH_TOKEN``, the file at ``RAY_AUTH_TOKEN_PATH`` or
    ``~/.ray/auth_token``), write a new random one to ``~/.ray/auth_token``, readable by
    this user only.

    Returns:
        The token file written, or None when a token was already there or auth is off.
    """
    if os.environ.get("RAY_AUTH_MODE", "").lower() != "token":
        return None
    if os.environ.get("RAY_AUTH_TOKEN"):
        return None
    custom = os.environ.get("RAY_AUTH_TOKEN_PATH")
    path = Path(custom).expanduser() if custom else Path.home() / ".ray" / "auth_token"
    if path.is_file() and path.read_text().strip():
        private_file(path)  # one written by another tool may be readable by all
        return None
    private_dir(path.parent, tighten=not custom)
    write_private(path, secrets.token_hex(32))
    logger.info("generated a Ray auth token in %s", path)
    return path


def check_reachable(address: str, timeout_s: float = 3.0) -> None:
    """Fail fast when nothing listens at a ``host:port`` Ray address.

    ``ray.init`` waits about a minute for a GCS that is not there; a dead address
    should be said at once. ``auto`` is checked as ``$RAY_ADDRESS`` when that names a
    ``host:port``; other forms (``auto`` alone, ``ray://``) are left to Ray.

    Raises:
        ConnectionError: nothing accepts a connection at ``address``.
    """
    if address == "auto":
        address = os.environ.get("RAY_ADDRESS") or address
    host, sep, port = address.rpartition(":")
    if not sep or not port.isdigit() or "/" in address:
        return
    try:
        socket.create_connection((host or "127.0.0.1", int(port)), timeout=timeout_s).close()
    except OSError as exc:
        raise ConnectionError(
            f"no Ray cluster answers at address {address!r} ({exc.strerror or exc}); "
            "start one with `qrt up`, or pass the address of a running head"
        ) from None


def init_ray_loopback(address: str | None = None, num_cpus: int | None = None) -> bool:
    """Connect to (or start) Ray, bound to 127.0.0.1 when started here.

    Returns:
        True if this call started a new local Ray (the caller should shut it down).
    """
    if ray.is_initialized():
        return False
    _force_loopback()
    prepare_auth()
    if address:
        check_reachable(address)
        ray.init(address=address, logging_level=logging.WARNING, log_to_driver=False)
        return False
    # a local Ray in token mode makes a token if there is none, readable by everyone
    # on the machine: make it here, owner-only
    if ensure_auth_token() is not None:
        prepare_auth()  # the new token, not the cached absence of one
    ray.init(
        address="local",
        num_cpus=num_cpus,
        include_dashboard=False,
        _node_ip_address="127.0.0.1",
        _temp_dir=str(private_ray_root()),
        logging_level=logging.WARNING,
        log_to_driver=False,
        configure_logging=False,
    )
    return True


def private_root() -> Path:
    """``/tmp/qrt-ray-<uid>``, mode 0700: where Ray heads qrt-ray starts keep their
    sessions, and the records of the heads ``qrt up`` started.

    A session holds the logs (job ids, tenants, error messages with users' data) and
    the object store's and raylet's sockets. Ray makes its folders readable and
    writable by every user (and makes them so again as it goes), so the private folder
    is the one above them: nobody else can enter. If another user made that path
    first, a fresh private folder is used instead.
    """
    root = Path(tempfile.gettempdir()) / f"qrt-ray-{os.geteuid()}"
    with contextlib.suppress(FileExistsError):
        root.mkdir(mode=DIR_MODE)
    info = root.lstat()
    if root.is_symlink() or info.st_uid != os.geteuid():
        return Path(tempfile.mkdtemp(prefix="qrt-ray-"))
    if stat.S_IMODE(info.st_mode) != DIR_MODE:
        os.chmod(root, DIR_MODE)
    return root


def private_ray_root() -> Path:
    """An embedded Ray's temp folder, inside :func:`private_root` (Ray makes this one,
    and every folder below it, world-writable)."""
    return private_root() / "ray"


def private_store_path() -> Path:
    """A new job store file for one embedded farm, in the private folder (see
    :func:`remove_store_file`)."""
    folder = private_root() / "stores"
    with contextlib.suppress(FileExistsError):
        folder.mkdir(mode=DIR_MODE)
    return folder / f"farm-{os.getpid()}-{secrets.token_hex(4)}.sqlite3"


def remove_store_file(path: Path) -> None:
    """Remove a SQLite store and its write-ahead log files."""
    for suffix in ("", "-wal", "-shm"):
        with contextlib.suppress(OSError):
            Path(f"{path}{suffix}").unlink()


def head_record(port: int) -> Path:
    """Where ``qrt up`` records the head it started on ``port`` (its temp folder)."""
    return private_root() / f"head-{port}.json"


def recorded_heads() -> list[str]:
    """Addresses of the Ray heads ``qrt up`` started on this machine that answer now
    (``$RAY_ADDRESS`` first, when it names one ``host:port``)."""
    import json

    found: list[str] = []
    env = os.environ.get("RAY_ADDRESS", "")
    if env and env != "auto" and "://" not in env:
        found.append(env)
    for record in sorted(private_root().glob("head-*.json")):
        try:
            address = str(json.loads(record.read_text())["address"])
        except (OSError, ValueError, KeyError, TypeError):
            continue
        if address not in found:
            found.append(address)
    answering = []
    for address in found:
        try:
            check_reachable(address, timeout_s=0.5)
        except ConnectionError:
            continue
        answering.append(address)
    return answering


def attach_running_farm(namespace: str = DEFAULT_NAMESPACE) -> tuple[str, Any] | None:
    """Connect this process to the farm ``qrt up`` runs on this machine, if one runs.

    Returns:
        (its Ray address, its scheduler's handle), or None (no such farm: Ray is left
        as it was found, not initialized).
    """
    if ray.is_initialized():
        return None
    for address in recorded_heads():
        try:
            init_ray_loopback(address=address)
            return address, find_scheduler(namespace)
        except (RuntimeNotRunningError, ConnectionError):
            ray.shutdown()
        except Exception:  # a head that answers the port but is not a usable Ray
            logger.debug("could not attach to %s", address, exc_info=True)
            ray.shutdown()
    return None


def stop_head(port: int) -> bool:
    """Stop the Ray head ``qrt up`` started on ``port``, and nothing else.

    Returns:
        False when there is no record of such a head.
    """
    import json

    record = head_record(port)
    try:
        facts = json.loads(record.read_text())
        temp_dir, address = facts["temp_dir"], facts["address"]
    except (OSError, ValueError, KeyError, TypeError):
        return False
    stop_head_processes(temp_dir, address)
    record.unlink(missing_ok=True)
    return True


def stop_head_processes(temp_dir: str, address: str) -> None:
    """Stop the processes of the Ray head at ``address`` whose sessions are in ``temp_dir``.

    They are the ones whose command line names the temp folder (Ray's agents rename
    themselves, so the folder, not the name, marks them), and the Ray client server,
    which names the head's address instead. Their whole trees are taken before any is
    stopped, or orphaned agents outlive the head.
    """
    import psutil

    client_server = f"ray.util.client.server --address={address} "
    doomed: dict[int, psutil.Process] = {}
    for proc in psutil.process_iter(["cmdline"]):
        with contextlib.suppress(psutil.Error):
            line = " ".join(proc.info["cmdline"] or []) + " "
            if (temp_dir in line or client_server in line) and proc.pid != os.getpid():
                for p in [proc, *proc.children(recursive=True)]:
                    doomed[p.pid] = p
    for proc in doomed.values():
        with contextlib.suppress(psutil.Error):
            proc.terminate()
    # the head keeps its state in memory: a process still up 5 s after SIGTERM is
    # stuck, not saving anything, and is killed
    _, alive = psutil.wait_procs(list(doomed.values()), timeout=5)
    for proc in alive:
        with contextlib.suppress(psutil.Error):
            proc.kill()


def start_farm(
    farm: FarmConfig,
    *,
    namespace: str | None = None,
    store_url: str | None = None,
    detached: bool = False,
    optimization_level: int = 1,
    metrics_port: int | None = None,
    policies: PolicyConfig | None = None,
    devices_ready_s: float = 120.0,
    access_key: bytes | None = None,
) -> tuple[str, Any, list[Any]]:
    """Create the device actors and the control plane, recover jobs, start the loop.

    The scheduler and the calibration manager run on the head node and Ray restarts
    them whenever they die (they rebuild from the store); only the scheduler opens the
    store. Devices are spread over the nodes that offer their resources; a device
    whose node is lost restarts on another one, or waits until one appears.
    ``policies`` (placement and scheduling; None: the packaged ``qrt_ray.policies.yaml``)
    travels to every actor as JSON.

    Args:
        devices_ready_s: how long to wait for devices to start; devices still waiting
            for a node (an autoscaler adding one) are left to come up later.
        access_key: the key of tokens and the audit chain (:func:`access_key`);
            None: a fresh one that lasts as long as this farm (a farm whose store
            goes with it).

    Returns:
        (namespace, scheduler handle, device handles). Non-detached actors live only
        while their creator holds these handles, so the caller must keep them.
    """
    from qrt_ray.actors.calibration_actor import CalibrationActor
    from qrt_ray.actors.device_actor import DeviceActor
    from qrt_ray.actors.scheduler_actor import SchedulerActor

    ns = namespace or f"qrt-local-{uuid.uuid4().hex[:8]}"
    # resolved here, where the operator set it, not in a worker's environment
    store_url = check_store(resolve_store_url(store_url))
    lifetime = "detached" if detached else None
    policies_json = policies.model_dump_json() if policies is not None else None
    started_at = time.time()  # drift time 0 of every device, kept across actor restarts
    # runs are signed with this key: the scheduler and the device actors get it (as
    # constructor arguments, which Ray keeps for their restarts); clients never do
    report_key = new_key().hex()
    # the scheduler first: it owns the store, and starting devices ask it for the
    # calibration they last had
    scheduler = _control_plane(SchedulerActor, SCHEDULER_NAME, ns, lifetime, 1000).remote(
        store_url,
        [d.name for d in farm.devices],
        ns,
        optimization_level,
        metrics_port,
        policies_json,
        report_key,
        access_key.hex() if access_key is not None else None,
    )
    devices = [
        ray.remote(DeviceActor)
        .options(**device_options(dev, ns, lifetime))
        .remote(dev.model_dump_json(), SCHEDULER_NAME, ns, policies_json, started_at, report_key)
        for dev in farm.devices
    ]
    # the calibration manager starts beside them (its process takes seconds to
    # start): its first look at the store waits until the scheduler has recovered
    calibration = _control_plane(CalibrationActor, CALIBRATION_NAME, ns, lifetime, 100).remote(
        [d.name for d in farm.devices], ns, policies_json
    )
    _wait_for_devices(farm, devices, devices_ready_s)
    recovered = ray.get(scheduler.start.remote())
    if recovered:
        logger.info("recovered %d unfinished jobs", recovered)
    ray.get(calibration.ready.remote())
    return ns, scheduler, [*devices, calibration]


def access_key() -> bytes:
    """The farm's access key, from ``$QRT_ACCESS_KEY_FILE`` or the file beside the
    default store in qrt-ray's data folder, made on first use (see
    :mod:`qrt_ray.access.keys`)."""
    from qrt_ray.access.keys import ENV_FILE, load_or_create
    from qrt_ray.private import private_dir
    from qrt_ray.store.sqlite import default_store_path

    named = os.environ.get(ENV_FILE)
    if named:
        return load_or_create(Path(named))
    folder = default_store_path().parent
    private_dir(folder)
    return load_or_create(folder / "access.key")


def device_options(dev: DeviceConfig, namespace: str, lifetime: str | None) -> dict[str, Any]:
    """Ray options of a device actor: its resources (a GPU for ``gpu: require``, the
    custom ones of farm.yaml), spread over the nodes that have them, restarted by Ray
    after a crash, a kill by the watchdog or the loss of its node."""
    return {
        "name": device_actor_name(dev.name),
        "namespace": namespace,
        "lifetime": lifetime,
        "num_cpus": _DEVICE_CPUS,
        "num_gpus": 1 if dev.gpu == "require" else 0,
        "resources": dict(dev.resources),
        "scheduling_strategy": "SPREAD",
        "max_concurrency": _DEVICE_CONCURRENCY,
        # without limit: the watchdog's restarts and lost nodes both count here
        "max_restarts": -1,
        "max_task_retries": 0,
        "get_if_exists": True,
        "runtime_env": {"env_vars": _device_env()},
    }


def _wait_for_devices(farm: FarmConfig, devices: list[Any], timeout_s: float) -> None:
    """Wait for the devices to start; say which still wait for a node, and what for.

    A device whose start failed (its constructor raised) fails the farm's start.
    """
    refs = {d.ready.remote(): cfg for d, cfg in zip(devices, farm.devices, strict=True)}
    ready, waiting = ray.wait(list(refs), num_returns=len(refs), timeout=timeout_s)
    ray.get(ready)
    for ref in waiting:
        cfg = refs[ref]
        need = {**cfg.resources, **({"GPU": 1.0} if cfg.gpu == "require" else {})}
        logger.warning(
            "device %s is not up after %.0f s: no node offers %s yet; it starts when "
            "one joins (its jobs wait)",
            cfg.name,
            timeout_s,
            need or "room for it",
        )


def _control_plane(
    cls: type, name: str, namespace: str, lifetime: str | None, concurrency: int
) -> Any:
    """A named control-plane actor class: on the head node, restarted by Ray without
    limit, found again if it exists."""
    return ray.remote(cls).options(
        name=name,
        namespace=namespace,
        lifetime=lifetime,
        num_cpus=0,
        resources={HEAD_RESOURCE: 0.001},
        max_restarts=-1,
        max_concurrency=concurrency,
        get_if_exists=True,
        # an empty runtime env would still set these actors apart from warm workers
        runtime_env={"env_vars": env} if (env := telemetry_env()) else None,
    )


def find_scheduler(namespace: str = DEFAULT_NAMESPACE) -> Any:
    """The running farm's scheduler handle.

    Raises:
        RuntimeNotRunningError: no farm runs in that namespace.
    """
    return _named_actor(
        SCHEDULER_NAME,
        namespace,
        f"no qrt farm in Ray namespace {namespace!r}; start one with `qrt up`",
    )


def calibration_handle(namespace: str) -> Any:
    """The farm's calibration manager.

    Raises:
        RuntimeNotRunningError: the farm has none (an older farm, or not running).
    """
    return _named_actor(
        CALIBRATION_NAME,
        namespace,
        f"no calibration manager in Ray namespace {namespace!r}; restart the farm",
    )


def _named_actor(name: str, namespace: str, missing: str) -> Any:
    try:
        return ray.get_actor(name, namespace=namespace)
    except ValueError as exc:
        raise RuntimeNotRunningError(missing) from exc


def device_handle(name: str, namespace: str) -> Any:
    """A device actor's handle (for drills and tests)."""
    return ray.get_actor(device_actor_name(name), namespace=namespace)


def _shut_down(name: str, namespace: str) -> None:
    """Ask a named actor to shut down cleanly (30 s at most), then kill it."""
    try:
        handle = ray.get_actor(name, namespace=namespace)
    except ValueError:
        return
    try:
        ray.get(handle.shutdown.remote(), timeout=30)
    except Exception:
        logger.warning("%s did not shut down cleanly", name, exc_info=True)
    ray.kill(handle, no_restart=True)


def running_farm(namespace: str) -> list[str] | None:
    """The devices of the farm running in ``namespace`` (sorted), or None when no
    farm's actors are there. Needs a connected Ray."""
    actors = [
        a["name"]
        for a in ray.util.list_named_actors(all_namespaces=True)
        if a["namespace"] == namespace
    ]
    if not actors:
        return None
    return sorted(a.removeprefix("device:") for a in actors if a.startswith("device:"))


def stop_farm(namespace: str, device_names: list[str] | None = None) -> None:
    """Stop the scheduler (closing its store) and kill the farm's actors."""
    # the calibration manager first: it may be pausing devices the scheduler uses
    _shut_down(CALIBRATION_NAME, namespace)
    _shut_down(SCHEDULER_NAME, namespace)
    names = device_names
    if names is None:
        names = [
            a["name"].removeprefix("device:")
            for a in ray.util.list_named_actors(all_namespaces=True)
            if a["namespace"] == namespace and a["name"].startswith("device:")
        ]
    for name in names:
        try:
            ray.kill(ray.get_actor(device_actor_name(name), namespace=namespace), no_restart=True)
        except ValueError:
            continue
