"""The ``qrt`` command line: run a farm, submit circuits, follow jobs.

Every command prints a readable table by default and JSON with ``--json`` (errors
too). Exit codes, the same for every command (:data:`EXIT_CODES`):

- 0: done;
- 1: the operation failed (a job failed or was cancelled, a wait timed out, a device
  could not take the work);
- 2: bad input: an argument, a file or a name (an unknown device) that can never work
  as given; the message says what to change;
- 3: no farm could be reached;
- 130: interrupted (Ctrl-C); a job being waited for keeps running.
"""

from __future__ import annotations

import argparse
import contextlib
import dataclasses
import datetime
import json
import math
import os
import shutil
import signal
import subprocess
import sys
import textwrap
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

from qrt_ray import cli_access, cli_changes, cli_ops, logs
from qrt_ray.errors import (
    JobNotFoundError,
    JobTimeoutError,
    PlacementError,
    QrtError,
    RuntimeNotRunningError,
    ValidationError,
    brief,
)
from qrt_ray.lifecycle import JobState
from qrt_ray.metrics import DEFAULT_METRICS_PORT
from qrt_ray.models import OPTIMIZE_GOALS, POLICY_NAMES, DeviceSnapshot
from qrt_ray.render import table

DEFAULT_PORT = 6379  # Ray's own default for a head
EXIT_OK, EXIT_FAILED, EXIT_BAD_INPUT, EXIT_NO_FARM, EXIT_INTERRUPTED = 0, 1, 2, 3, 130
EXIT_CODES = {
    EXIT_OK: "done",
    EXIT_FAILED: "the operation failed (job failed or cancelled, wait timed out, device busy)",
    EXIT_BAD_INPUT: "bad input: an argument, file or name that can never work as given",
    EXIT_NO_FARM: "no farm could be reached",
    EXIT_INTERRUPTED: "interrupted (Ctrl-C); a job being waited for keeps running",
}
# outcomes `qrt result` shows per circuit unless --all
TOP_OUTCOMES = 8
# how often `qrt submit --wait` looks at the job's state (seconds)
_POLL_S = 1.0
_RAY_HEAD = [
    "ray",
    "start",
    "--head",
    "--node-ip-address=127.0.0.1",
    "--dashboard-host=127.0.0.1",
    "--disable-usage-stats",
]


def _connect(args: argparse.Namespace) -> Any:
    from qrt_ray.client import connect

    # one command, a few calls: each answered before the command prints it
    url = getattr(args, "url", None)
    if url:
        token = args.token or os.environ.get("QRT_TOKEN", "")
        return connect(url, token=token, pipeline=False)
    return connect(args.address, namespace=args.namespace, pipeline=False)


def _reader(args: argparse.Namespace) -> Any:
    """The farm, or when none runs the history in its store (said on stderr): jobs,
    states, results, explanations and calibrations are stored, so they outlive it."""
    if getattr(args, "url", None):  # a tenant's gateway: no store to fall back on
        return _connect(args)
    try:
        return _connect(args)
    except (RuntimeNotRunningError, ConnectionError) as exc:
        from qrt_ray.history import StoredHistory

        history = StoredHistory(getattr(args, "store", None))
        reason = str(exc).split(";")[0]
        print(
            f"{reason}; reading the history in the store at {history.label}",
            file=sys.stderr,
        )
        return history


def _print(args: argparse.Namespace, data: Any, text: str) -> None:
    print(json.dumps(data, indent=2, default=str) if args.json else text)


def _params(pairs: list[str] | None) -> dict[str, float]:
    """``--param NAME=VALUE`` options as a mapping (the values checked as numbers)."""
    out: dict[str, float] = {}
    for pair in pairs or []:
        name, sep, value = pair.partition("=")
        name = name.strip()
        try:
            number = float(value)
        except ValueError:
            number = math.nan
        if not sep or not name or not math.isfinite(number):
            raise ValidationError(
                f"--param {brief(pair, 60)!r}: expected NAME=VALUE with a finite number, "
                "e.g. --param theta=0.5"
            )
        if name in out:
            raise ValidationError(f"--param {brief(name, 40)!r}: given twice; give it once")
        out[name] = number
    return out


def _read_circuits(paths: list[str], parameters: dict[str, float] | None = None) -> list[str]:
    """The OpenQASM files named on the command line, as text.

    Raises:
        ValidationError: a file is missing, larger than a circuit may be, or not UTF-8
            text (the message names the file and the byte, never its content).
    """
    from qrt_ray.circuits import WrittenQasm, coerce_circuits
    from qrt_ray.intake.admit import DEFAULT_LIMITS

    limit = DEFAULT_LIMITS.max_qasm_bytes
    texts = []
    for p in paths:
        path = Path(p)
        if not path.is_file():
            raise ValidationError(f"FILE={p!r}: no such file; pass an OpenQASM 2/3 file")
        size = path.stat().st_size
        if size > limit:
            raise ValidationError(
                f"FILE={p!r}: {size} bytes; a circuit may have at most {limit} "
                "(intake.max_qasm_bytes)"
            )
        data = path.read_bytes()[: limit + 1]
        try:
            texts.append(data.decode("utf-8"))
        except UnicodeDecodeError as exc:
            raise ValidationError(
                f"FILE={p!r}: not UTF-8 text (byte {exc.start} is {data[exc.start]:#04x}); "
                "save the circuit as UTF-8 OpenQASM"
            ) from None
    # checked here, before any farm is reached: a bad file fails fast, farm or not
    if parameters:  # bound here: the farm gets plain circuits
        return coerce_circuits(texts, parameters=parameters)
    for p, text in zip(paths, texts, strict=True):
        try:
            coerce_circuits(text)
        except ValidationError as exc:
            raise ValidationError(f"FILE={p!r}: {exc}") from None
    return [WrittenQasm(t) for t in texts]  # checked once here; the scheduler checks again


# -- farm lifecycle -------------------------------------------------------------------


def cmd_up(args: argparse.Namespace) -> int:
    """Start a farm as detached actors, on a Ray address or a new local head."""
    from qrt_ray import farm as farm_mod
    from qrt_ray.config import load_farm_config, load_policy_config
    from qrt_ray.store.urls import check_store, resolve_store_url

    config = load_farm_config(args.farm)
    policies = load_policy_config(args.policies)
    # a wrong store fails here, in a second, before any Ray is started
    store = check_store(resolve_store_url(args.store))
    address, started = args.address, False
    if address in (None, "local"):
        address, started = _start_head(args)
    try:
        farm_mod.init_ray_loopback(address=address)
        wanted = sorted(d.name for d in config.devices)
        running = farm_mod.running_farm(args.namespace)
        if running is not None and running == wanted and not args.replace:
            _print(
                args,
                {"namespace": args.namespace, "devices": running, "started": False},
                f"a farm with these devices is already up in Ray namespace "
                f"{args.namespace!r}: {', '.join(running)}; nothing started",
            )
            return EXIT_OK
        if running is not None and not args.replace:
            raise ValidationError(
                f"another farm is up in Ray namespace {args.namespace!r} (devices: "
                f"{', '.join(running) or 'none'}); this farm has {', '.join(wanted)}. "
                "Stop it with `qrt down`, start beside it with --namespace, or replace "
                "it with `qrt up --replace` (its jobs stay in its store)"
            )
        if running is not None:
            print(f"replacing the farm in Ray namespace {args.namespace!r}", file=sys.stderr)
            farm_mod.stop_farm(args.namespace)
        ns, scheduler, _ = farm_mod.start_farm(
            config,
            namespace=args.namespace,
            store_url=store,
            detached=True,
            optimization_level=args.optimization_level,
            metrics_port=0 if args.no_metrics else args.metrics_port,
            policies=policies,
            access_key=farm_mod.access_key(),
        )
    except BaseException:
        if started:  # a head this call started does not outlive its failure
            farm_mod.stop_head(args.port)
        raise
    names = ", ".join(d.name for d in config.devices)
    gateway = None
    if args.gateway_port:
        from qrt_ray.gateway import start_gateway

        gateway = start_gateway(ns, port=args.gateway_port)
        print(
            f"gateway for tenants at {gateway} (`qrt tokens create` makes tokens)", file=sys.stderr
        )
    import ray

    metrics = ray.get(scheduler.metrics_address.remote())
    _print(
        args,
        {
            "namespace": ns,
            "devices": [d.name for d in config.devices],
            "gateway": gateway,
            "metrics": metrics,
        },
        f"farm {config.name!r} is up in Ray namespace {ns!r}: {names}\n"
        f"metrics: {metrics or 'off'}\n"
        "submit with `qrt submit FILE.qasm --wait`, or from Ray: "
        "`RAY_AUTH_MODE=token ray job submit --address http://127.0.0.1:8265 --working-dir . "
        "-- qrt submit FILE.qasm --wait`",
    )
    return 0


def _start_head(args: argparse.Namespace) -> tuple[str, bool]:
    """``ray start --head`` on 127.0.0.1 at ``--port``, its sessions in qrt-ray's private
    folder; recorded so that ``qrt down --stop-ray`` stops this head and no other.

    Returns:
        The head's address, and whether this call started it (False: one was there).
    """
    from qrt_ray import farm as farm_mod

    if shutil.which("ray") is None:
        raise QrtError("the `ray` command is not on PATH; install qrt-ray into this env")
    farm_mod.prepare_auth()  # token mode unless RAY_AUTH_MODE says otherwise
    farm_mod.ensure_auth_token()
    env = {**os.environ, "RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER": "0"}
    temp_dir = farm_mod.private_root() / f"head-{args.port}"
    started = subprocess.run(
        [
            *_RAY_HEAD,
            f"--port={args.port}",
            f"--temp-dir={temp_dir}",
            *(["--num-cpus", str(args.num_cpus)] if args.num_cpus else []),
        ],
        env=env,
        capture_output=True,
        text=True,
        check=False,
    )
    if started.returncode != 0 and "already" not in started.stderr + started.stdout:
        raise QrtError(f"`ray start --head` failed:\n{started.stderr.strip()[-2000:]}")
    if started.returncode == 0:
        record = {"address": f"127.0.0.1:{args.port}", "temp_dir": str(temp_dir)}
        farm_mod.head_record(args.port).write_text(json.dumps(record))
    return f"127.0.0.1:{args.port}", started.returncode == 0


def cmd_down(args: argparse.Namespace) -> int:
    """Stop the farm's actors (jobs stay in the store); --stop-ray stops the local head."""
    import ray

    from qrt_ray import farm as farm_mod

    stopped = False
    try:
        farm_mod.init_ray_loopback(address=args.address)
        if farm_mod.running_farm(args.namespace) is None:
            message = f"no farm runs in Ray namespace {args.namespace!r}; nothing to stop"
        else:
            farm_mod.stop_farm(args.namespace)
            stopped = True
            message = f"farm in namespace {args.namespace!r} stopped"
            if _stop_gateway(args.namespace):
                message += ", and its gateway"
        ray.shutdown()
    except ConnectionError as exc:
        message = str(exc) if "no Ray cluster answers" in str(exc) else "no Ray cluster is running"
    if args.stop_ray:
        port = _port_of(args.address)
        if port is None or not farm_mod.stop_head(port):
            where = f" at port {port}" if port is not None else ""
            _print(
                args,
                {"stopped": stopped, "ray_stopped": False},
                f"{message}; no Ray head started by `qrt up` runs here{where}, so no Ray "
                "was stopped (stop another cluster with `ray stop`)",
            )
            return 1
        message += f"; the Ray head `qrt up` started at port {port} is stopped"
    _print(args, {"stopped": stopped, "ray_stopped": args.stop_ray}, message)
    return 0


def _stop_gateway(namespace: str) -> bool:
    """Stop the farm's gateway if Serve runs one for it (Serve is imported only when
    its controller runs)."""
    import ray

    from qrt_ray.names import SERVE_CONTROLLER

    try:
        ray.get_actor(SERVE_CONTROLLER, namespace="serve")
    except ValueError:
        return False
    from qrt_ray.gateway import stop_gateway

    return stop_gateway(namespace)


def _port_of(address: str | None) -> int | None:
    """The port of ``host:port`` (``auto`` and None: ``$RAY_ADDRESS``'s, else 6379)."""
    if address in (None, "auto"):
        address = os.environ.get("RAY_ADDRESS") or None
        if address in (None, "auto"):
            return DEFAULT_PORT
    tail = address.rsplit(":", 1)[-1]
    return int(tail) if tail.isdigit() else None


def cmd_demo(args: argparse.Namespace) -> int:
    """Run the demo workload on the running farm, or an embedded one."""
    from qrt_ray.client import QuantumRuntime
    from qrt_ray.demo import format_report, run_demo

    if args.report and not Path(args.report).parent.is_dir():
        raise ValidationError(f"--report {args.report!r}: that folder does not exist")

    print(
        "using the farm `qrt up` runs, else starting "
        f"{args.farm or 'the default farm'} on 127.0.0.1 ...",
        file=sys.stderr,
    )
    start = time.monotonic()
    with QuantumRuntime.local(args.farm, store=args.store) as rt:
        devices = rt.devices()
        print(
            f"farm ready in {time.monotonic() - start:.1f}s: "
            + ", ".join(f"{d.name}({d.num_qubits}q)" for d in devices),
            file=sys.stderr,
        )
        print(f"submitting {args.jobs} jobs x {args.shots} shots ...", file=sys.stderr)
        report = run_demo(
            rt, num_jobs=args.jobs, shots=args.shots, seed=args.seed, max_qubits=args.max_qubits
        )
    if args.json:
        rows = [dataclasses.asdict(r) for r in report["rows"]]
        print(json.dumps({**report, "rows": rows}, indent=2, default=str))
    else:
        print(format_report(report))
    if args.report:
        from qrt_ray.plots import demo_report_html

        Path(args.report).write_text(demo_report_html(report, format_report(report)))
        print(f"wrote {args.report}", file=sys.stderr)
    return 0 if report["done"] == report["jobs"] else 1


# -- jobs -----------------------------------------------------------------------------


def cmd_submit(args: argparse.Namespace) -> int:
    """Submit one job made of the given QASM files."""
    texts = _read_circuits(args.files, _params(args.param))
    rt = _connect(args)
    handle = rt.submit(
        texts,
        shots=args.shots,
        priority=args.priority,
        device=args.device,
        idempotency_key=args.idempotency_key,
        tenant=args.tenant,
        max_execution_time_s=args.max_execution_time_s,
        max_calibration_age_s=args.max_calibration_age_s,
        tags=args.tag or None,
        optimize=args.optimize,
        min_fidelity=args.min_fidelity,
        max_cost_usd=args.max_cost_usd,
        noise="ideal" if args.ideal else "device",
    )
    if not args.wait:
        _print(args, {"job_id": handle.job_id}, handle.job_id)
        return 0
    job_id = handle.job_id
    # the id first, on stderr (stdout keeps the result, or the JSON, alone)
    print(f"job {job_id} submitted; waiting (Ctrl-C stops waiting, not the job)", file=sys.stderr)
    try:
        result = _wait_with_progress(handle, args.timeout)
    except JobTimeoutError as exc:
        print(f"{exc}; follow it with `qrt status {job_id}`", file=sys.stderr)
        return EXIT_FAILED
    except KeyboardInterrupt:
        print(
            f"\nstopped waiting; job {job_id} keeps running. Follow it: qrt status {job_id}; "
            f"its result: qrt result {job_id} --timeout 600; cancel it: qrt cancel {job_id}",
            file=sys.stderr,
        )
        return EXIT_INTERRUPTED
    return _show_result(args, job_id, result)


def _wait_with_progress(handle: Any, timeout_s: float) -> Any:
    """The job's result, printing each state it reaches on stderr while it is waited for.

    Raises:
        JobTimeoutError: not final within ``timeout_s``.
        JobFailedError, JobCancelledError: the job ended without a result.
    """
    start = time.monotonic()
    last: list[Any] = [None]

    def show(state: Any) -> None:
        if state is not last[0]:
            print(
                f"  {time.monotonic() - start:7.1f} s  {state.value}", file=sys.stderr, flush=True
            )
            last[0] = state

    with _ctrl_c_flag() as interrupted:
        while True:
            if interrupted():
                raise KeyboardInterrupt
            state = handle.status()
            show(state)
            left = timeout_s - (time.monotonic() - start)
            try:
                result = handle.result(
                    timeout_s=0 if state.is_final else max(0.0, min(_POLL_S, left))
                )
            except JobTimeoutError:
                if interrupted():
                    raise KeyboardInterrupt from None
                if left > _POLL_S:
                    continue
                raise JobTimeoutError(
                    f"job {handle.job_id} is {handle.status().value} after {timeout_s:g} s "
                    "(--timeout)"
                ) from None
            show(JobState.DONE)
            return result


@contextlib.contextmanager
def _ctrl_c_flag() -> Iterator[Callable[[], bool]]:
    """Within the block, Ctrl-C sets a flag that a wait loop reads between its polls
    (at most ``_POLL_S`` apart); the previous handler comes back after it.

    The default handler raises ``KeyboardInterrupt`` wherever the main thread is, and
    a library's blocking call it lands in may swallow it (a wait on a busy machine once
    ran to the job's end through a Ctrl-C); a flag cannot be lost. A second Ctrl-C
    raises at once (a call riding out a farm restart would otherwise finish first).
    Outside the main thread no handler can be set, and the flag never goes up.
    """
    hit = threading.Event()
    if threading.current_thread() is not threading.main_thread():
        yield hit.is_set
        return

    def on_ctrl_c(_sig: int, _frame: object) -> None:
        if hit.is_set():  # a second Ctrl-C: the first was not heard in time
            raise KeyboardInterrupt
        hit.set()

    previous = signal.signal(signal.SIGINT, on_ctrl_c)
    try:
        yield hit.is_set
    finally:
        signal.signal(signal.SIGINT, previous)


def _show_result(args: argparse.Namespace, job_id: str, result: Any) -> int:
    if args.json:
        print(json.dumps({"job_id": job_id, **json.loads(result.model_dump_json())}, indent=2))
        return 0
    if getattr(args, "csv", False):
        print("circuit,bitstring,count,probability")
        for i, circ in enumerate(result.circuits):
            for k, v in sorted(circ.counts.items(), key=lambda kv: (-kv[1], kv[0])):
                print(f"{i},{k},{v},{circ.probabilities[k]:.6g}")
        return 0
    meta = result.metadata
    print(
        f"job {job_id}: DONE on {meta.device} (calibration {meta.calibration_id}"
        f"{', simulated without noise' if meta.noise == 'ideal' else ''}), "
        f"{meta.shots_executed} shots, seeds {list(meta.seeds)[:4]}"
    )
    show_all = getattr(args, "all", False)
    for i, circ in enumerate(result.circuits):
        ranked = sorted(circ.counts.items(), key=lambda kv: (-kv[1], kv[0]))
        shown = ranked if show_all else ranked[:TOP_OUTCOMES]
        print(f"circuit {i}: {len(ranked)} distinct outcomes")
        print(
            table(
                ["bitstring", "count", "probability"],
                [[k, v, circ.probabilities[k]] for k, v in shown],
            )
        )
        hidden = len(ranked) - len(shown)
        if hidden:
            share = sum(v for _, v in ranked[len(shown) :]) / max(1, sum(circ.counts.values()))
            print(
                f"... {hidden} more outcomes ({share:.1%} of the shots) not shown: "
                "--all shows every one, --csv prints them as CSV"
            )
    return 0


def cmd_status(args: argparse.Namespace) -> int:
    """Show a job's state and its lifecycle transitions."""
    rt = _reader(args)
    handle = rt.job(args.job_id)
    info = handle.info()
    events = handle.events()
    text = [
        f"job {info['job_id']}: {info['state']}  device={info['device'] or '-'}  "
        f"calibration={info['calibration_id'] or '-'}  attempts={info['attempts']}"
    ]
    if info["error"]:
        cls = f" ({info['error_class']})" if info.get("error_class") else ""
        text.append(f"error{cls}: {info['error']}")
    if info.get("waiting"):
        text.append(f"waiting: {info['waiting']}")
    t0 = events[0]["at"] if events else 0.0
    text.append(
        table(
            ["+s", "event", "from", "to", "reason"],
            [[e["at"] - t0, e.get("event"), e["from"], e["to"], e["reason"]] for e in events],
        )
    )
    _print(args, {**info, "events": events}, "\n".join(text))
    return 0


def cmd_result(args: argparse.Namespace) -> int:
    """Print a job's verified result."""
    rt = _reader(args)
    handle = rt.job(args.job_id)
    return _show_result(args, args.job_id, handle.result(timeout_s=args.timeout))


def cmd_cancel(args: argparse.Namespace) -> int:
    """Cancel a job that has not finished."""
    rt = _connect(args)
    handle = rt.job(args.job_id)
    changed = handle.cancel()
    state = handle.status().value
    _print(
        args,
        {"job_id": args.job_id, "cancelled": changed, "state": state},
        f"job {args.job_id}: {'cancelled' if changed else f'already {state}'}",
    )
    return 0


def cmd_jobs(args: argparse.Namespace) -> int:
    """List jobs, newest first."""
    rt = _reader(args)
    jobs = rt.jobs(state=args.state, tenant=args.tenant, limit=args.limit)
    rows = [
        [
            j["job_id"],
            j["state"],
            j["tenant"],
            j["priority"],
            j["num_circuits"],
            j["shots"],
            j["device"],
            time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(j["created_at"])),
        ]
        for j in jobs
    ]
    _print(
        args,
        jobs,
        table(["job", "state", "tenant", "prio", "circuits", "shots", "device", "created"], rows),
    )
    return 0


def _age(seconds: float) -> str:
    """A calibration's age, short: 42s, 17m, 5.2h, 3.1d."""
    if seconds < 60:
        return f"{max(seconds, 0):.0f}s"
    if seconds < 3600:
        return f"{seconds / 60:.0f}m"
    if seconds < 86400:
        return f"{seconds / 3600:.1f}h"
    return f"{seconds / 86400:.1f}d"


def _canary(d: DeviceSnapshot) -> str:
    """The last canary round, short: measured success, and measured less predicted."""
    if d.canary_measured is None or d.canary_predicted is None:
        return "-"
    return f"{d.canary_measured:.3f} ({d.canary_measured - d.canary_predicted:+.3f})"


def _running(d: DeviceSnapshot) -> str:
    """The batch running on a device, short: "2 jobs, 4m" or "-"."""
    if not d.running_jobs:
        return "-"
    jobs = f"{d.running_jobs} job" + ("s" if d.running_jobs != 1 else "")
    return jobs if d.running_s is None else f"{jobs}, {_age(d.running_s)}"


def _price(usd: float) -> str:
    """A price in US dollars with its significant digits (prices go down to 1e-5)."""
    return f"{usd:.4g}"


_DEVICES_LEGEND = (
    "running: jobs in the batch running now, and for how long; queued: jobs waiting for "
    "the device (in its queue or being compiled for it). age: since the calibration was "
    "measured. canary: measured success of the worst canary circuit, and (in brackets) "
    "measured less what the calibration predicts: below 0, worse than predicted. Prices in US "
    "dollars. --wide adds calibration ids, simulator methods and status reasons; --json "
    "gives everything."
)


def cmd_devices(args: argparse.Namespace) -> int:
    """List devices: status, size, running batch, queue, calibration, canary, price."""
    rt = _connect(args)
    devices = rt.devices()
    now = time.time()
    headers = ["device", "status", "qubits", "running", "queued", "age", "canary"]
    headers += ["$/1k shots", "$/job", "sim"]
    rows = []
    for d in devices:
        row = [
            d.name,
            d.status.value,
            d.num_qubits,
            _running(d),
            d.queue_depth,
            _age(now - d.calibration.taken_at),
            _canary(d),
            _price(d.price_per_shot_usd * 1000),
            _price(d.price_per_job_usd),
            "GPU" if d.gpu else "CPU",
        ]
        if args.wide:
            row += [d.calibration.calibration_id, d.simulator_method, d.status_reason or "-"]
        rows.append(row)
    if args.wide:
        headers += ["calibration", "method", "reason"]
    data = [
        {
            "name": d.name,
            "status": d.status.value,
            "num_qubits": d.num_qubits,
            "running_jobs": d.running_jobs,
            "running_s": None if d.running_s is None else round(d.running_s, 1),
            "queue_depth": d.queue_depth,
            "queued_shots": d.queued_shots,
            "calibration_id": d.calibration.calibration_id,
            "calibration_age_s": round(now - d.calibration.taken_at, 1),
            "status_reason": d.status_reason,
            "canary_measured": d.canary_measured,
            "canary_predicted": d.canary_predicted,
            "canary_age_s": None if d.canary_at is None else round(now - d.canary_at, 1),
            "drift": None
            if d.canary_measured is None or d.canary_predicted is None
            else round(d.canary_predicted - d.canary_measured, 4),
            "degraded": d.degraded,
            "price_per_shot_usd": d.price_per_shot_usd,
            "price_per_job_usd": d.price_per_job_usd,
            "gpu": d.gpu,
            "simulator": d.simulator_method,
        }
        for d in devices
    ]
    legend = textwrap.fill(_DEVICES_LEGEND, width=min(100, shutil.get_terminal_size().columns))
    _print(args, data, table(headers, rows) + "\n\n" + legend)
    return 0


def cmd_calibrate(args: argparse.Namespace) -> int:
    """Recalibrate a device now (paused while its batch finishes, then verified)."""
    old, new = _connect(args).calibrate(args.device, timeout_s=args.timeout)
    what = "unchanged (nothing had drifted)" if old == new else f"{old} -> {new}"
    _print(args, {"device": args.device, "old": old, "new": new}, f"{args.device}: {what}")
    return 0


def cmd_calibrations(args: argparse.Namespace) -> int:
    """A device's calibration history, newest first."""
    history = _reader(args).calibrations(args.device, limit=args.limit)
    now = time.time()
    rows = [
        [
            h["calibration_id"],
            _age(now - h["taken_at"]) + " ago",
            f"{h['mean_t1_us']:.0f}",
            f"{h['mean_readout_error']:.4f}",
            "-" if h["mean_2q_error"] is None else f"{h['mean_2q_error']:.4f}",
            h["canary_rounds"],
            "-"
            if h["last_canary"] is None
            else f"{h['last_canary'][1]:.3f} / {h['last_canary'][0]:.3f}",
            h["reason"],
        ]
        for h in history
    ]
    headers = ["calibration", "taken", "T1 us", "readout", "2q error", "canaries"]
    headers += ["last canary meas/pred", "reason"]
    _print(args, history, table(headers, rows))
    return 0


def _when(text: str, now: float) -> float:
    """A time given as ``now``, ``+30m``/``+2h``/``+1d``/``+90s``, unix seconds, or ISO 8601."""
    text = text.strip()
    if text == "now":
        return now
    units = {"s": 1, "m": 60, "h": 3600, "d": 86400}
    if text.startswith("+") and text[-1:] in units:
        try:
            value = now + float(text[1:-1]) * units[text[-1]]
        except ValueError:
            value = math.nan
        if math.isfinite(value):
            return value
    try:
        value = float(text)
    except ValueError:
        value = math.nan
    if math.isfinite(value):
        return value
    try:
        moment = datetime.datetime.fromisoformat(text)
    except ValueError:
        raise ValidationError(
            f"time {text!r}: use now, +30m / +2h / +1d, unix seconds, or ISO 8601 "
            "such as 2026-12-24T08:00"
        ) from None
    if moment.tzinfo is None:
        moment = moment.astimezone()  # local time, as a person types it
    return moment.timestamp()


def cmd_maintenance(args: argparse.Namespace) -> int:
    """Schedule, list or cancel maintenance windows."""
    rt = _connect(args)
    if args.cancel:
        if not rt.cancel_maintenance(args.cancel):
            raise ValidationError(f"--cancel {args.cancel}: no such maintenance window")
        _print(args, {"cancelled": args.cancel}, f"cancelled {args.cancel}")
        return 0
    if args.start or args.end:
        if not (args.device and args.start and args.end):
            raise ValidationError("give DEVICE, --start and --end to schedule a window")
        now = time.time()
        window = rt.schedule_maintenance(
            args.device, _when(args.start, now), _when(args.end, now), args.reason
        )
        start = datetime.datetime.fromtimestamp(window["start"]).isoformat(timespec="minutes")
        end = datetime.datetime.fromtimestamp(window["end"]).isoformat(timespec="minutes")
        _print(
            args,
            window,
            f"{window['window_id']}: {args.device} in maintenance {start} to {end}; "
            "recalibrated after",
        )
        return 0
    windows = rt.maintenance(args.device)
    rows = [
        [
            w["window_id"],
            w["device"],
            datetime.datetime.fromtimestamp(w["start"]).isoformat(timespec="minutes"),
            datetime.datetime.fromtimestamp(w["end"]).isoformat(timespec="minutes"),
            w["reason"],
        ]
        for w in windows
    ]
    _print(args, windows, table(["window", "device", "start", "end", "reason"], rows))
    return 0


def cmd_drain(args: argparse.Namespace) -> int:
    """Stop new work to a device; with --wait, until its queue is empty."""
    rt = _connect(args)
    rt.drain(args.device)
    deadline = time.monotonic() + args.timeout
    left = -1
    while args.wait:
        snap = next(d for d in rt.devices() if d.name == args.device)
        running = rt.jobs(state="RUNNING", limit=10_000)
        left = snap.queue_depth + sum(1 for j in running if j.get("device") == args.device)
        if left == 0 or time.monotonic() > deadline:
            break
        time.sleep(1.0)
    if args.wait and left:
        print(f"qrt drain: {args.device} still holds {left} jobs after {args.timeout:g} s")
        return 1
    text = f"{args.device} is DRAINING: it takes no new work" + (
        " and has finished what it held" if args.wait else "; `--wait` waits until it is empty"
    )
    _print(args, {"device": args.device, "status": "DRAINING", "left": max(left, 0)}, text)
    return 0


def cmd_resume(args: argparse.Namespace) -> int:
    """Put a device back ONLINE."""
    _connect(args).resume(args.device)
    _print(args, {"device": args.device, "status": "ONLINE"}, f"{args.device} is ONLINE")
    return 0


# -- pictures -----------------------------------------------------------------------


def cmd_plot(args: argparse.Namespace) -> int:
    """Draw a job's outcome histogram or a device's calibration drift to a file."""
    from qrt_ray import plots

    out = plots.check_output(args.out or f"{args.name}.png")
    rt = _reader(args)
    if args.what == "result":
        figure = plots.result_figure(rt.job(args.name).result(timeout_s=0), args.circuit)
    else:
        figure = plots.drift_figure(args.name, rt.calibrations(args.name, limit=args.limit))
    plots.save(figure, out)
    _print(args, {"file": str(out)}, f"wrote {out}")
    return 0


# -- configuration and completion ---------------------------------------------------


def cmd_config(args: argparse.Namespace) -> int:
    """Where qrt finds its farm, store, policies and Ray, and whether a farm runs."""
    import importlib.resources

    from qrt_ray.config import load_policy_config
    from qrt_ray.store.urls import store_label

    packaged = importlib.resources.files("qrt_ray") / "configs"
    policies = load_policy_config()
    env_address = os.environ.get("RAY_ADDRESS")
    info: dict[str, Any] = {
        "farm_file": str(packaged / "farm.yaml"),
        "policies_file": str(packaged / "policies.yaml"),
        "default_policy": policies.policy,
        "weights": policies.weights.model_dump(),
        "store": store_label(None),
        "store_from": "$QRT_STORE" if os.environ.get("QRT_STORE") else "default",
        "ray_address": args.address,
        "ray_address_env": env_address,
        "namespace": args.namespace,
        "farm_running": False,
        "devices": [],
    }
    try:
        rt = _connect(args)
        info["devices"] = [d.name for d in rt.devices()]
        info["farm_running"] = True
        info["store"] = rt.store_label()
        info["store_from"] = "the running farm"
    except (RuntimeNotRunningError, ConnectionError) as exc:
        info["farm_error"] = str(exc)
    running = (
        f"yes: {len(info['devices'])} devices ({', '.join(info['devices'])})"
        if info["farm_running"]
        else f"no ({info.get('farm_error', '').split(';')[0]})"
    )
    rows = [
        ["farm running", running],
        ["store", f"{info['store']} ({info['store_from']}; --store or $QRT_STORE to change)"],
        ["farm file", f"{info['farm_file']} (packaged; `qrt up --farm FILE` to change)"],
        ["policies", f"{info['policies_file']} (packaged; `qrt up --policies FILE`)"],
        ["default policy", f"{info['default_policy']} (weights: {_pairs(info['weights'])})"],
        [
            "Ray address",
            f"{args.address}" + (f" ($RAY_ADDRESS={env_address})" if env_address else ""),
        ],
        ["namespace", args.namespace],
    ]
    _print(args, info, table(["setting", "value"], rows))
    return 0


def cmd_completion(args: argparse.Namespace) -> int:
    """Print a shell completion script: ``eval "$(qrt completion bash)"``."""
    print(completion_script(build_parser(), args.shell))
    return 0


def completion_script(parser: argparse.ArgumentParser, shell: str) -> str:
    """A completion script for ``shell`` (bash or zsh): commands, then each command's
    options, then file names."""
    sub = next(a for a in parser._actions if isinstance(a, argparse._SubParsersAction))
    commands = sorted(sub.choices)
    cases = []
    for name in commands:
        options = sorted(
            opt
            for action in sub.choices[name]._actions
            for opt in action.option_strings
            if opt.startswith("--")
        )
        cases.append(f'    {name}) opts="{" ".join(options)}" ;;')
    body = "\n".join(
        [
            "_qrt() {",
            '  local cur="${COMP_WORDS[COMP_CWORD]}" opts=""',
            '  if [ "$COMP_CWORD" -eq 1 ]; then',
            f'    COMPREPLY=( $(compgen -W "{" ".join(commands)} --help --version" -- "$cur") )',
            "    return",
            "  fi",
            '  case "${COMP_WORDS[1]}" in',
            *cases,
            "  esac",
            '  if [[ "$cur" == -* ]]; then',
            '    COMPREPLY=( $(compgen -W "$opts" -- "$cur") )',
            "  else",
            '    COMPREPLY=( $(compgen -f -- "$cur") )',
            "  fi",
            "}",
            "complete -o filenames -F _qrt qrt",
        ]
    )
    if shell == "zsh":
        return "autoload -U +X bashcompinit && bashcompinit\n" + body
    return body


# -- placement ------------------------------------------------------------------------


_METHOD_SHORT = {
    "density_matrix": "DM",
    "statevector": "SV",
    "matrix_product_state": "MPS",
    "gpu": "GPU",
}


def _run_model(d: dict[str, Any]) -> str:
    """Where a run-time figure comes from: "MPS prior", "DM 12 runs"."""
    model = d.get("run_model")
    if not isinstance(model, dict):
        return "-"
    method = _METHOD_SHORT.get(str(model.get("method")), str(model.get("method")))
    source = str(model.get("source", ""))
    return f"{method} {source.removeprefix('learned from ')}".strip()


def _placement_rows(devices: list[dict[str, Any]]) -> list[list[Any]]:
    return [
        [
            d["device"],
            f"{d['fidelity']:.3f}{' (bound)' if d.get('fidelity_is_bound') else ''}",
            d["cost_usd"],
            d["wait_s"],
            d["run_s"],
            _run_model(d),
            d.get("physical_run_s", "-"),
            d.get("swaps", "-"),
            d.get("excluded") or ("" if d.get("accepting", True) else "busy"),
        ]
        for d in devices
    ]


_PLACEMENT_HEAD = [
    "device", "fidelity", "cost $", "wait s", "run s", "run model", "on QPU s", "swaps", "note",
]  # fmt: skip
_RUN_NOTE = (
    "run s: the simulator's expected time for this job, from its model of the method "
    "the device will use (DM density matrix, SV statevector, MPS matrix product state), "
    "as the prior alone or corrected by that device's last runs; on QPU s: what the same "
    "shots would take on the physical device (circuit duration and reset per shot), the "
    "figure a bill for QPU time would quote."
)


_EXPLAIN_NOTES = (
    "rank and score: the policy's order, best first, and its own measure (higher is "
    "better). Composite scores are w_fidelity ln(fidelity) - w_time ln(seconds) - "
    "w_cost ln(USD), so they are often negative; only their order matters. A fidelity "
    "marked (bound) is an upper bound: enough to show that device could not win, so "
    "its full estimate was not made. Devices without a rank were left out (see note)."
)


def _pairs(values: dict[str, Any] | None) -> str:
    """A small mapping as "a 1, b 0.5" (unset values left out; "none" when empty)."""
    shown = [
        f"{k} {v:g}" if isinstance(v, float | int) and not isinstance(v, bool) else f"{k} {v}"
        for k, v in (values or {}).items()
        if v is not None
    ]
    return ", ".join(shown) or "none"


def _ranked_rows(devices: list[dict[str, Any]], ranking: list[Any]) -> list[list[Any]]:
    """Placement rows with each device's rank and score, best first; unranked last."""
    rank = {name: (i + 1, score) for i, (name, score) in enumerate(ranking)}
    rows = [
        [*rank.get(d["device"], ("-", None)), *row]
        for d, row in zip(devices, _placement_rows(devices), strict=True)
    ]
    return sorted(rows, key=lambda r: (r[0] == "-", r[0] if r[0] != "-" else 0, r[2]))


def cmd_explain(args: argparse.Namespace) -> int:
    """Show why a job went where it went (policy, weights, ranking, per-device figures)
    and its story (each event, the move it made, and why)."""
    rt = _reader(args)
    handle = rt.job(args.job_id)
    info = handle.info()
    placement = info.get("placement")
    if not placement:
        _print(
            args,
            {"job_id": args.job_id, "placement": None},
            f"job {args.job_id} ({info['state']}) has not been placed yet",
        )
        return 0
    chosen = placement.get("chosen", {})
    weights = placement.get("weights")
    pinned = placement.get("pinned")
    lines = [
        f"job {args.job_id}: {info['state']} on {placement['device']}",
        f"policy: {placement.get('policy')}"
        + (f" (weights: {_pairs(weights)})" if weights else ""),
        f"limits: {_pairs(placement.get('limits'))}" + (f"; pinned to {pinned}" if pinned else ""),
        f"chosen: fidelity {chosen.get('fidelity', 0):.3f}, cost ${chosen.get('cost_usd', 0):.4f}, "
        f"expected wait {chosen.get('wait_s', 0):.1f} s + run {chosen.get('run_s', 0):.1f} s, "
        f"layout {chosen.get('layout')}, {chosen.get('swaps', '?')} swaps",
        f"expected errors per shot by source: {_pairs(chosen.get('errors'))}",
        table(
            ["rank", "score", *_PLACEMENT_HEAD],
            _ranked_rows(placement.get("devices", []), placement.get("ranking", [])),
        ),
        textwrap.fill(_EXPLAIN_NOTES, width=min(100, shutil.get_terminal_size().columns)),
        textwrap.fill(_RUN_NOTE, width=min(100, shutil.get_terminal_size().columns)),
    ]
    if placement.get("late"):
        lines.insert(
            1,
            "no device was expected to finish before the deadline: the earliest finish won",
        )
    events = handle.events()
    t0 = events[0]["at"] if events else 0.0
    lines.append("story:")
    lines.append(
        table(
            ["+s", "event", "from", "to", "why"],
            [[e["at"] - t0, e.get("event"), e["from"], e["to"], e["reason"]] for e in events],
        )
    )
    out = {"job_id": args.job_id, "placement": placement, "events": events}
    _print(args, out, "\n".join(lines))
    return 0


def cmd_estimate(args: argparse.Namespace) -> int:
    """Estimate fidelity, cost, wait and run time on every device, without running."""
    texts = _read_circuits(args.files)
    rt = _connect(args)
    rows = rt.estimate(texts, shots=args.shots, device=args.device, optimize=args.optimize)
    text = table(_PLACEMENT_HEAD, _placement_rows(rows))
    text += "\n" + textwrap.fill(_RUN_NOTE, width=min(100, shutil.get_terminal_size().columns))
    listed = {r["device"] for r in rows}
    missing = sorted(d.name for d in rt.devices() if d.name not in listed)
    if missing:
        text += (
            f"\nnot listed, as they cannot run this job (too few qubits, OFFLINE, or not "
            f"the --device asked for): {', '.join(missing)}"
        )
    _print(args, rows, text)
    return 0


def cmd_simulate(args: argparse.Namespace) -> int:
    """Run the farm simulator: placement policies on a simulated farm and trace."""
    from qrt_ray.evaluation.simulator import FarmSimulator, SimConfig

    cfg = SimConfig(
        devices=args.devices,
        jobs=args.jobs,
        load=args.load,
        arrivals=args.arrivals,
        tenants=args.tenants,
        seed=args.seed,
    )
    cfg.check()
    sim = FarmSimulator(
        cfg,
        progress=lambda done, total: print(
            f"  {done}/{total} jobs placed", file=sys.stderr, flush=True
        ),
    )
    reports = [sim.run(p) for p in args.policy or POLICY_NAMES]
    rows = [
        [
            r.policy,
            f"{r.done}/{r.jobs}",
            r.mean_jct_s,
            r.p95_jct_s,
            r.mean_fidelity,
            r.mean_cost_usd,
            r.utilisation,
            r.fairness,
        ]
        for r in reports
    ]
    _print(
        args,
        [r.row() for r in reports],
        table(
            [
                "policy",
                "done",
                "mean JCT s",
                "p95 JCT s",
                "fidelity",
                "cost $",
                "utilisation",
                "fairness",
            ],
            rows,
        ),
    )
    return 0


# -- parser ---------------------------------------------------------------------------


def build_parser() -> argparse.ArgumentParser:
    """The argument parser of ``qrt``."""
    p = argparse.ArgumentParser(
        prog="qrt",
        description="qrt-ray: a quantum runtime on Ray",
        epilog="exit codes: " + "; ".join(f"{k} {v}" for k, v in EXIT_CODES.items()),
    )
    p.add_argument("--version", action="version", version=f"%(prog)s {_version()}")
    p.add_argument(
        "--log-format",
        choices=logs.FORMATS,
        help=f"log lines as text or JSON objects (default ${logs.ENV_FORMAT}, else text)",
    )
    sub = p.add_subparsers(dest="command", required=True, metavar="COMMAND")

    def add(name: str, fn: Any, help_: str, *, remote: bool = True) -> argparse.ArgumentParser:
        sp = sub.add_parser(name, help=help_, description=help_, formatter_class=_Help)
        sp.set_defaults(fn=fn)
        sp.add_argument("--json", action="store_true", help="print JSON")
        if remote:
            sp.add_argument(
                "--address",
                default="auto",
                help="Ray address of the farm (default: auto, the local cluster)",
            )
            sp.add_argument("--namespace", default="qrt", help="the farm's Ray namespace")
            sp.add_argument(
                "--url",
                default=os.environ.get("QRT_URL"),
                help="the farm's gateway (https://host:port; default $QRT_URL): a "
                "tenant's way in, with an API token",
            )
            sp.add_argument(
                "--token",
                default=None,
                help="API token for --url (default $QRT_TOKEN, which keeps it out of "
                "the process list)",
            )
        sp.set_defaults(connect=_connect, print=_print)
        return sp

    up = add(
        "up", cmd_up, "start a farm (a new local Ray head unless --address is given)", remote=False
    )
    up.add_argument("--address", default=None, help="Ray address to start the farm on")
    up.add_argument("--namespace", default="qrt")
    up.add_argument("--farm", help="farm YAML (default: the packaged default farm)")
    up.add_argument(
        "--policies", help="placement and scheduling policy YAML (default: the packaged one)"
    )
    up.add_argument(
        "--store",
        help="job store: a SQLite path, or postgresql://USER@HOST:PORT/DB for a store that "
        "outlives the head (default: $QRT_STORE, else a SQLite file in the data dir)",
    )
    up.add_argument("--num-cpus", type=int, help="CPUs for a new local Ray head")
    up.add_argument(
        "--port",
        type=int,
        default=DEFAULT_PORT,
        help="GCS port of a new local Ray head (default %(default)s)",
    )
    up.add_argument(
        "--replace",
        action="store_true",
        help="stop a farm already up in the namespace and start this one",
    )
    up.add_argument("--optimization-level", type=int, default=1, choices=[0, 1, 2, 3])
    up.add_argument(
        "--metrics-port",
        type=int,
        help=f"serve Prometheus metrics on 127.0.0.1 at this port (default {DEFAULT_METRICS_PORT})",
    )
    up.add_argument(
        "--no-metrics", action="store_true", help="serve no metrics endpoint (default: on)"
    )
    up.add_argument(
        "--gateway-port",
        type=int,
        help="also serve the tenants' HTTP gateway on 127.0.0.1 at this port",
    )

    down = add("down", cmd_down, "stop the farm's actors", remote=True)
    down.add_argument(
        "--stop-ray",
        action="store_true",
        help="also stop the Ray head `qrt up` started (at --address; no other Ray)",
    )

    demo = add("demo", cmd_demo, "run a mixed workload on a local farm and report", remote=False)
    demo.add_argument("--jobs", type=int, default=120, help="number of jobs (default 120)")
    demo.add_argument("--shots", type=int, default=2000, help="shots per job (default 2000)")
    demo.add_argument("--seed", type=int, default=7)
    demo.add_argument(
        "--max-qubits", type=int, default=20, help="widest circuit (default 20; 3 or more)"
    )
    demo.add_argument("--farm", help="farm YAML (default: the packaged default farm)")
    demo.add_argument(
        "--store", help="job store path (default: the running farm's, else one of its own)"
    )
    demo.add_argument("--report", help="also write the report as HTML with charts to this file")

    cli_access.register(add)
    cli_ops.register(add, _reader)
    cli_changes.register(add)

    s = add("submit", cmd_submit, "submit one job of OpenQASM files")
    s.add_argument("files", nargs="+", metavar="FILE.qasm")
    s.add_argument("--shots", type=int, default=1024, help="shots per circuit")
    s.add_argument("--priority", type=int, default=5, help="0 (lowest) to 10")
    s.add_argument("--device", help="run only on this device (default: placement chooses)")
    s.add_argument("--tenant", default="default", help="who the job is for")
    s.add_argument("--idempotency-key", help="the same key and request make the same job")
    s.add_argument("--max-execution-time-s", type=float, help="fail the job after this long")
    s.add_argument(
        "--max-calibration-age-s", type=float, help="run only on a calibration this fresh"
    )
    s.add_argument("--tag", action="append", help="a label for the job (repeat)")
    s.add_argument("--optimize", choices=OPTIMIZE_GOALS, help="what placement favours")
    s.add_argument("--min-fidelity", type=float, help="refuse devices expected below this")
    s.add_argument("--max-cost-usd", type=float, help="refuse devices that cost more")
    s.add_argument(
        "--ideal",
        action="store_true",
        help="simulate without noise on the device's gates and coupling map",
    )
    s.add_argument(
        "--param",
        action="append",
        metavar="NAME=VALUE",
        help="bind a circuit parameter (an OpenQASM 3 `input float NAME;`) (repeat)",
    )
    s.add_argument("--wait", action="store_true", help="wait, show progress, print the result")
    s.add_argument("--timeout", type=float, default=600, help="seconds to wait (with --wait)")
    _result_options(s)

    for name, fn, help_ in (
        ("status", cmd_status, "show a job and its transitions"),
        ("result", cmd_result, "print a job's result"),
        ("cancel", cmd_cancel, "cancel a job"),
    ):
        sp = add(name, fn, help_)
        sp.add_argument("job_id", metavar="JOB")
        if name == "result":
            sp.add_argument(
                "--timeout",
                type=float,
                default=0,
                help="seconds to wait for it to finish (0: don't wait)",
            )
            _result_options(sp)

    ex = add("explain", cmd_explain, "why a job went to its device")
    ex.add_argument("job_id", metavar="JOB")
    for sp in (ex, sub.choices["status"], sub.choices["result"]):
        _history_store_option(sp)

    es = add("estimate", cmd_estimate, "estimate a job on every device without running it")
    es.add_argument("files", nargs="+", metavar="FILE.qasm")
    es.add_argument("--shots", type=int, default=1024)
    es.add_argument("--device")
    es.add_argument("--optimize", choices=OPTIMIZE_GOALS)

    sim = add(
        "simulate", cmd_simulate, "study placement policies on a simulated farm", remote=False
    )
    sim.add_argument("--devices", type=int, default=20, help="devices (default 20)")
    sim.add_argument("--jobs", type=int, default=5000, help="jobs in the trace (default 5000)")
    sim.add_argument("--load", type=float, default=0.85, help="offered share of capacity")
    sim.add_argument("--arrivals", choices=["poisson", "bursty"], default="poisson")
    sim.add_argument("--tenants", type=int, default=4)
    sim.add_argument("--seed", type=int, default=7)
    sim.add_argument(
        "--policy",
        action="append",
        choices=POLICY_NAMES,
        help="policy to run (repeat; default: all)",
    )

    pl = add("plot", cmd_plot, "draw a job's histogram or a device's drift to a PNG/SVG/PDF")
    pl.add_argument("what", choices=["result", "drift"], help="result JOB, or drift DEVICE")
    pl.add_argument("name", metavar="JOB|DEVICE")
    pl.add_argument("--out", help="file to write (default: JOB.png or DEVICE.png)")
    pl.add_argument("--circuit", type=int, default=0, help="which circuit of the job")
    pl.add_argument("--limit", type=int, default=50, help="calibrations to draw (drift)")
    _history_store_option(pl)
    add("config", cmd_config, "where the farm file, store, policies and Ray are")
    comp = add(
        "completion",
        cmd_completion,
        'print a shell completion script: eval "$(qrt completion bash)"',
        remote=False,
    )
    comp.add_argument("shell", choices=["bash", "zsh"])
    j = add("jobs", cmd_jobs, "list jobs, newest first")
    j.add_argument("--state")
    j.add_argument("--tenant")
    j.add_argument("--limit", type=int, default=20)
    _history_store_option(j)
    dv = add("devices", cmd_devices, "list the farm's devices")
    dv.add_argument(
        "--wide", action="store_true", help="add calibration ids, methods, status reasons"
    )
    cal = add("calibrate", cmd_calibrate, "recalibrate a device now (paused, then verified)")
    cal.add_argument("device", metavar="DEVICE")
    cal.add_argument("--timeout", type=float, default=600, help="seconds to wait")
    hist = add("calibrations", cmd_calibrations, "a device's calibration history")
    hist.add_argument("device", metavar="DEVICE")
    hist.add_argument("--limit", type=int, default=20)
    _history_store_option(hist)
    mt = add(
        "maintenance",
        cmd_maintenance,
        "schedule (DEVICE --start --end), list, or --cancel maintenance windows",
    )
    mt.add_argument("device", metavar="DEVICE", nargs="?")
    mt.add_argument("--start", help="now, +30m, +2h, unix seconds or ISO 8601")
    mt.add_argument("--end", help="as --start")
    mt.add_argument("--reason", default="maintenance")
    mt.add_argument("--cancel", metavar="WINDOW", help="cancel this window")
    dr = add("drain", cmd_drain, "stop new work to a device; what it holds still runs")
    dr.add_argument("device", metavar="DEVICE")
    dr.add_argument("--wait", action="store_true", help="wait until it holds no work")
    dr.add_argument("--timeout", type=float, default=600, help="seconds to wait (--wait)")
    rs = add("resume", cmd_resume, "put a drained or paused device back ONLINE")
    rs.add_argument("device", metavar="DEVICE")
    return p


class _Help(argparse.HelpFormatter):
    """Help that names each option's default (where it has one worth naming)."""

    def _get_help_string(self, action: argparse.Action) -> str | None:
        text = action.help or ""
        default = action.default
        if (
            "%(default)" in text
            or "default" in text
            or default in (None, False, argparse.SUPPRESS)
            or not action.option_strings
        ):
            return text
        return f"{text} (default: %(default)s)"


def _result_options(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--all", action="store_true", help=f"show every outcome, not only the top {TOP_OUTCOMES}"
    )
    parser.add_argument(
        "--csv", action="store_true", help="print circuit,bitstring,count,probability rows"
    )


def _history_store_option(sp: argparse.ArgumentParser) -> None:
    sp.add_argument(
        "--store",
        help="with no farm running, read history from this job store (default: "
        "$QRT_STORE, else the SQLite file in the data dir, as `qrt up` picks)",
    )


def _version() -> str:
    from importlib.metadata import PackageNotFoundError, version

    try:
        return version("qrt-ray")
    except PackageNotFoundError:  # run from a checkout that was never installed
        return "unknown (not installed)"


def main(argv: list[str] | None = None) -> int:
    """Entry point of ``qrt``; returns one of :data:`EXIT_CODES`."""
    args = build_parser().parse_args(argv)
    try:
        logs.setup(args.log_format)
    except ValueError as exc:
        print(f"qrt: ${logs.ENV_FORMAT}: {exc}", file=sys.stderr)
        return EXIT_BAD_INPUT
    if args.log_format:
        # the farm processes this command starts log the same way
        os.environ[logs.ENV_FORMAT] = args.log_format
    try:
        return args.fn(args)
    except (ValidationError, PlacementError, JobNotFoundError) as exc:
        return _fail(args, exc, EXIT_BAD_INPUT, str(exc))
    except RuntimeNotRunningError as exc:
        return _fail(args, exc, EXIT_NO_FARM, str(exc))
    except QrtError as exc:
        return _fail(args, exc, EXIT_FAILED, str(exc))
    except ConnectionError as exc:
        return _fail(
            args, exc, EXIT_NO_FARM, f"cannot reach Ray ({exc}); is a farm up? try `qrt up`"
        )
    except KeyboardInterrupt:
        print(f"\nqrt {args.command}: interrupted", file=sys.stderr)
        return EXIT_INTERRUPTED


def _fail(args: argparse.Namespace, exc: Exception, code: int, message: str) -> int:
    """Report an error: one line on stderr, or a JSON object on stdout with --json."""
    if getattr(args, "json", False):
        error = {"command": args.command, "type": type(exc).__name__, "message": message}
        print(json.dumps({"error": {**error, "exit_code": code}}, indent=2))
    else:
        print(f"qrt {args.command}: {message}", file=sys.stderr)
    return code


if __name__ == "__main__":
    sys.exit(main())
