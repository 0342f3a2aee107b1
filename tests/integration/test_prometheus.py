"""The farm's telemetry checked the way an SRE team would run it: a real Prometheus
(Debian's, loopback only, a temp dir) scrapes a local farm under a mixed load with
faults (a device killed, a drifting device, a partial run), evaluates the generated
recording and alerting rules, and answers every dashboard panel's query.

Checked: M1-M10 against the store's ground truth (or, for M10, the calls made), every
panel query and recording rule evaluates (and has data where the load makes some),
and the fast burn-rate page fires when failures are injected and resolves after.
The rules are generated at ``TIME_SCALE`` (an hour becomes a minute) so the alert
fires and clears in seconds. With ``$QRT_OBS_ARTIFACTS`` set to a folder, the test
leaves there the figures, the alert timeline and HTML/text renders of the dashboards.
"""

from __future__ import annotations

import json
import math
import os
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import ray
from qiskit import QuantumCircuit

from qrt_ray import JobState, QuantumRuntime, tracing
from qrt_ray import farm as farm_mod
from qrt_ray.actors.canary_metrics import reductions
from qrt_ray.config import (
    CalibrationConfig,
    LinkConfig,
    PolicyConfig,
    SchedulingConfig,
    load_farm_config_text,
)
from qrt_ray.dashboards.generate import render_all
from qrt_ray.dashboards.queries import instantiate, panel_queries
from qrt_ray.errors import AuthenticationError
from qrt_ray.metrics import STAGE_BUCKETS
from qrt_ray.slo import load_slo_config, render_rules, rule_groups
from qrt_ray.store import SQLiteJobStore
from tests.circuits import DRIFTING_FARM, ghz
from tests.integration.ledger import wait_for
from tests.prometheus import Prometheus, free_port, need, prometheus

pytestmark = pytest.mark.integration

TIME_SCALE = 60.0  # rules: an hour of window is a minute here
FARM = load_farm_config_text(DRIFTING_FARM)  # manila drifts; canaries catch it
# The injected failures must not open nairobi's circuit breaker: its cooldown would
# hold the failing jobs back for a minute (the breaker has tests of its own).
POLICIES = PolicyConfig(
    scheduling=SchedulingConfig(slice_shots=1000),
    calibration=CalibrationConfig(canary_period_s=3, canary_shots=1000, max_chains=1),
    link=LinkConfig(breaker_failures=1000),
)


@pytest.fixture(scope="module")
def spans_file(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Path]:
    """Where this module's farm (and this process) write their spans: the farm takes
    the setting from the environment it starts in, as it would from an operator's."""
    path = tmp_path_factory.mktemp("spans") / "spans.jsonl"
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv(tracing.ENV_FILE, str(path))
        yield path
    tracing.shutdown()


@pytest.fixture(scope="module")
def rt(ray_head: object, store_path: Path, spans_file: Path) -> Iterator[QuantumRuntime]:
    need("prometheus")
    runtime = QuantumRuntime.local(
        FARM, store=store_path, policies=POLICIES, metrics_port=free_port()
    )
    yield runtime
    runtime.shutdown()


def _store(store_path: Path) -> SQLiteJobStore:
    return SQLiteJobStore(store_path)


def _artifacts() -> Path | None:
    folder = os.environ.get("QRT_OBS_ARTIFACTS")
    if not folder:
        return None
    path = Path(folder)
    path.mkdir(parents=True, exist_ok=True)
    return path


# == the load ========================================================================


def _mixed_load(rt: QuantumRuntime) -> list[Any]:
    """Jobs of every priority class and size over ~10 s, with a partial run and a
    device killed halfway (manila drifts all along: canaries catch it)."""
    nairobi = farm_mod.device_handle("nairobi", rt.namespace)
    jobs = []
    for i in range(12):
        if i == 2:
            ray.get(nairobi.inject_faults.remote(partial_fractions=[0.5]))
        if i == 6:
            ray.kill(nairobi, no_restart=False)  # Ray restarts it; its jobs go elsewhere
        for priority in (1, 5, 9):
            n = 2 + (i + priority) % 3
            jobs.append(rt.submit(ghz(n), shots=500 + 250 * (i % 4), priority=priority, seed=i))
        time.sleep(0.75)
    return jobs


def _auth_calls(rt: QuantumRuntime) -> tuple[int, int]:
    """A few calls through the gateway's door: bad tokens and a good one."""
    scheduler = farm_mod.find_scheduler(rt.namespace)
    rt.administer("tenant_set", name="sre-team")
    token = rt.administer("token_create", tenant="sre-team", user="sre", scopes="read")["token"]
    refused = accepted = 0
    for bad in ("qrt_000000000000_nope", "not-a-token", ""):
        with pytest.raises(ray.exceptions.RayTaskError) as info:
            ray.get(scheduler.gateway.remote(bad, "test", "whoami", {}))
        assert isinstance(info.value.as_instanceof_cause(), AuthenticationError)
        refused += 1
    for _ in range(2):
        ray.get(scheduler.gateway.remote(token, "test", "whoami", {}))
        accepted += 1
    return refused, accepted


# == the alert =======================================================================


def _inject(rt: QuantumRuntime, device: str, **faults: Any) -> None:
    """Set a device's injected faults, riding out a restart of its actor (the
    scheduler restarts a device that looks hung, which a loaded machine can make one
    look: the call then meets "the actor is restarting")."""
    deadline = time.monotonic() + 120
    while True:
        handle = farm_mod.device_handle(device, rt.namespace)
        try:
            ray.get(handle.inject_faults.remote(**faults), timeout=60)
            return
        except ray.exceptions.ActorUnavailableError:
            if time.monotonic() > deadline:
                raise
            time.sleep(0.5)


def _burn_alert(rt: QuantumRuntime, prom: Prometheus) -> list[tuple[float, str]]:
    """Fail jobs on nairobi until the fast burn page fires, then run clean work until
    it resolves. Returns the timeline: (seconds since the failures began, event)."""
    _inject(rt, "nairobi", link_errors=["permanent"] * 100)
    t0 = time.time()
    timeline: list[tuple[float, str]] = [(0.0, "failures injected on nairobi")]
    failing = [rt.submit(ghz(2), shots=300, device="nairobi", seed=k) for k in range(6)]
    states = rt.wait(failing, timeout_s=120)
    assert all(s is JobState.FAILED for s in states.values()), states
    timeline.append((time.time() - t0, f"{len(failing)} jobs FAILED (error class device)"))
    _inject(rt, "nairobi")  # the device heals
    seen: dict[str, float] = {}
    deadline = time.monotonic() + 90
    clean = 0
    while time.monotonic() < deadline:
        states_now = {a["state"] for a in _page(prom)}
        for state in ("pending", "firing"):
            if state in states_now and state not in seen:
                seen[state] = time.time() - t0
                timeline.append((seen[state], f"QrtSloBurnFast {state}"))
        if "firing" in seen and not states_now:
            timeline.append((time.time() - t0, "QrtSloBurnFast resolved"))
            return timeline
        if "firing" in seen:
            rt.submit(ghz(2), shots=200, seed=1000 + clean)  # clean work meanwhile
            clean += 1
        time.sleep(0.5)
    raise AssertionError(f"the burn alert did not fire and resolve: {timeline}")


def _page(prom: Prometheus) -> list[dict[str, Any]]:
    return [
        a
        for a in prom.alerts()
        if a["labels"].get("alertname") == "QrtSloBurnFast"
        and a["labels"].get("slo") == "job_success"
        and a["labels"].get("device") == "nairobi"
    ]


# == ground truth ====================================================================


def _bucket(value: float) -> int:
    """Index of the histogram bucket holding ``value``."""
    return next((i for i, b in enumerate(STAGE_BUCKETS) if value <= b), len(STAGE_BUCKETS))


def _percentile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[max(0, math.ceil(q * len(ordered)) - 1)]


def _ground_truth(store: SQLiteJobStore, devices: list[str]) -> dict[str, Any]:
    finished = store.finished_jobs(0.0)
    done = [j for j in finished if j.state is JobState.DONE]
    failed = [j for j in finished if j.state is JobState.FAILED]
    latencies = [j.latency_s for j in done]
    cal_device = {c.calibration_id: d for d in devices for c in store.calibrations(d, 10_000)}
    shots: dict[str, float] = dict.fromkeys(devices, 0.0)
    for j in finished:
        circuits = len(store.get(j.job_id).spec.circuits)
        for run in store.shot_ledger(j.job_id):
            shots[cal_device[run.calibration_id]] += run.shots * circuits
    return {
        "success": len(done) / (len(done) + len(failed)),
        "p50": _percentile(latencies, 0.5),
        "p95": _percentile(latencies, 0.95),
        "shots": shots,
        "usd": sum(c.usd for c in store.charges()),
        "live": len(store.unfinished()),
        "done": len(done),
        "failed": len(failed),
    }


# == the test ========================================================================


def test_prometheus_sees_what_the_store_records(
    rt: QuantumRuntime, store_path: Path, tmp_path: Path
) -> None:
    config = load_slo_config()
    rules = render_rules(config, time_scale=TIME_SCALE, scrape_interval_s=1.0)
    target = rt.metrics_url.removeprefix("http://").removesuffix("/metrics")
    started = time.time()
    with prometheus(tmp_path / "prometheus", [target], rules) as prom:
        jobs = _mixed_load(rt)
        refused, accepted = _auth_calls(rt)
        states = rt.wait(jobs, timeout_s=240)
        assert all(s is JobState.DONE for s in states.values()), states
        wait_for(lambda: _recalibrated(rt), 120, what="manila's drift caught and fixed")
        timeline = _burn_alert(rt, prom)
        rt.wait([rt.job(j["job_id"]) for j in rt.jobs(limit=1000)], timeout_s=120)
        prom.scraped_after(time.time() + 0.5)
        figures = _check_metrics(prom, store_path, refused, accepted, time.time() - started)
        _check_rules_and_panels(prom, time.time() - started, rules)
        _keep(prom, figures, timeline, time.time() - started)
    seconds = {event: at for at, event in timeline}
    assert seconds["QrtSloBurnFast firing"] < seconds["QrtSloBurnFast resolved"]


def _recalibrated(rt: QuantumRuntime) -> bool:
    report = rt.calibration_report()["manila"]
    return report["detections"] >= 1 and report["recalibrations"] >= 1


def _check_metrics(
    prom: Prometheus, store_path: Path, refused: int, accepted: int, elapsed_s: float
) -> dict[str, Any]:
    store = _store(store_path)
    try:
        devices = [d.name for d in FARM.devices]
        truth = _ground_truth(store, devices)
        out: dict[str, Any] = {}
        # M1: the panel's own query over the whole run, and the raw counters
        m1 = prom.value(
            'sum(qrt_jobs_finished_total{outcome="done"}) / '
            'sum(qrt_jobs_finished_total{outcome!="cancelled"})'
        )
        assert m1 is not None and abs(m1 - truth["success"]) < 0.01, (m1, truth)
        out["M1 success rate"] = (m1, truth["success"])
        # M2, M3: p50 and p95 within one bucket of the store's exact percentiles
        for name, q in (("M2 latency p50 (s)", 0.5), ("M3 latency p95 (s)", 0.95)):
            got = prom.value(
                f"histogram_quantile({q}, sum by (le) "
                '(qrt_job_stage_duration_seconds_bucket{stage="end_to_end"}))'
            )
            want = truth["p50" if q == 0.5 else "p95"]
            assert got is not None and abs(_bucket(got) - _bucket(want)) <= 1, (name, got, want)
            out[name] = (got, want)
        # the same through the executive dashboard's own panels, over the whole run
        for title, got, want in _panel_figures(prom, elapsed_s, truth):
            out[f"panel: {title}"] = (got, want)
        out.update(_device_figures(prom, store, devices, truth))
        # M7: nothing waits now, as the store says; something waited during the load
        waiting = prom.value("sum(qrt_queue_waiting_jobs)")
        assert waiting == truth["live"] == 0
        peak = prom.value("max_over_time(sum(qrt_queue_waiting_jobs)[10m:1s])")
        assert peak is not None and peak > 0
        out["M7 waiting jobs now / peak"] = (f"{waiting:g} / {peak:g}", truth["live"])
        # M9: the ledger's dollars
        usd = prom.value("sum(qrt_billing_usd_total)")
        assert usd is not None and abs(usd - truth["usd"]) <= 1e-9 * max(1.0, truth["usd"])
        out["M9 billed USD"] = (usd, truth["usd"])
        # M10: every refused call counted, with the accepted ones
        got_refused = prom.value("sum(qrt_auth_refused_total)")
        got_requests = prom.value("sum(qrt_auth_requests_total)")
        assert (got_refused, got_requests) == (refused, refused + accepted)
        out["M10 auth refused / requests"] = (
            f"{got_refused:g} / {got_requests:g}",
            f"{refused} / {refused + accepted} (calls made)",
        )
        out["jobs done / failed"] = (None, f"{truth['done']} / {truth['failed']}")
        return out
    finally:
        store.close()


def _panel_figures(
    prom: Prometheus, elapsed_s: float, truth: dict[str, Any]
) -> list[tuple[str, float, float]]:
    """The executive dashboard's success and latency panels over the whole run,
    against the store: success within 1 %, p50 and p95 within one bucket."""
    board = json.loads(render_all()["qrt-executive.json"])
    window = f"{math.ceil(elapsed_s) + 30}s"
    out = []
    for _, title, expr in panel_queries(board):
        if title not in ("Job success rate", "End-to-end latency p50 / p95"):
            continue
        got = prom.value(instantiate(expr, rate_interval="15s", range=window))
        assert got is not None, title
        if title == "Job success rate":
            assert abs(got - truth["success"]) < 0.01, (got, truth["success"])
            out.append((title, got, truth["success"]))
            continue
        want = truth["p50" if "0.5," in expr else "p95"]
        assert abs(_bucket(got) - _bucket(want)) <= 1, (expr, got, want)
        out.append((f"{title} ({'p50' if '0.5,' in expr else 'p95'}, s)", got, want))
    assert len(out) == 3, out
    return out


def _device_figures(
    prom: Prometheus, store: SQLiteJobStore, devices: list[str], truth: dict[str, Any]
) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for d in devices:
        cals = store.calibrations(d, 200)
        canaries = store.canaries(d, 500)
        # M4: the calibration in force and the last passing canary are stored ones
        taken = prom.value(f'qrt_device_calibration_timestamp_seconds{{device="{d}"}}')
        assert taken in {c.taken_at for c in cals}, (d, taken)
        passed = prom.value(f'qrt_device_canary_last_success_timestamp_seconds{{device="{d}"}}')
        assert passed in {c.at for c in canaries if not c.drifted}, (d, passed)
        out[f"M4 {d} calibration age / since passing canary (s)"] = (
            prom.value(f'time() - qrt_device_calibration_timestamp_seconds{{device="{d}"}}'),
            f"{time.time() - max(c.taken_at for c in cals):.1f} / "
            f"{time.time() - max(c.at for c in canaries if not c.drifted):.1f}",
        )
        # M5: the canary figures the gauge shows are a stored round's
        measured = prom.value(f'qrt_device_canary_success{{device="{d}",kind="measured"}}')
        predicted = prom.value(f'qrt_device_canary_success{{device="{d}",kind="predicted"}}')
        assert (predicted, measured) in {(c.predicted, c.measured) for c in canaries}, d
        out[f"M5 {d} canary measured / predicted"] = (
            f"{measured:.3f} / {predicted:.3f}",
            "a stored round",
        )
        # M6: shots executed per device, as the shot ledger counts them
        shots = prom.value(f'sum(qrt_device_shots_total{{device="{d}"}})')
        assert shots == truth["shots"][d], (d, shots, truth["shots"][d])
        out[f"M6 {d} shots"] = (shots, truth["shots"][d])
        # M8: the readout mitigation's error reduction of a stored round
        m8 = prom.value(
            f'qrt_mitigation_error_reduction_ratio{{device="{d}",method="readout",level="1"}}'
        )
        stored = {
            r.mean
            for c in canaries
            for r in reductions(c.detail.get("canaries", []))
            if r.method == "readout" and r.mean is not None
        }
        assert m8 is not None and any(abs(m8 - s) < 1e-9 for s in stored), (d, m8)
        out[f"M8 {d} readout error reduction"] = (m8, "a stored round")
    return out


def _check_rules_and_panels(prom: Prometheus, elapsed_s: float, rules: str) -> None:
    """Every recording rule has had data, and every panel query evaluates."""
    window = f"{math.ceil(elapsed_s) + 30}s"
    import yaml

    records = sorted(
        {r["record"] for g in yaml.safe_load(rules)["groups"] for r in g["rules"] if "record" in r}
    )
    assert len(records) >= 2
    empty = [r for r in records if not prom.query(f"count_over_time({r}[{window}])")]
    # canary_fidelity's short windows hold no round at times, but each rule name is
    # shared by every SLO: every one must have evaluated with data
    assert not empty, empty
    for text in render_all().values():
        for query in panel_queries(json.loads(text)):
            expr = instantiate(query[2], rate_interval="15s", range=window)
            prom.query(expr)  # raises on a PromQL error


def _keep(prom: Prometheus, figures: dict[str, Any], timeline: list[Any], elapsed: float) -> None:
    folder = _artifacts()
    if folder is None:
        return
    from qrt_ray.dashboards.render import Window, render_text, write_html

    dashboards = [json.loads(t) for t in render_all().values()]
    window = Window(time.time(), span_s=elapsed + 30, scrape_s=1.0)
    write_html(prom.url, dashboards, folder, window)
    (folder / "dashboards.txt").write_text(render_text(prom.url, dashboards, window))
    rows = {k: [str(v[0]), str(v[1])] for k, v in figures.items()}
    (folder / "figures.json").write_text(
        json.dumps({"metrics": rows, "alert_timeline": timeline}, indent=2)
    )
    (folder / "rule_groups.txt").write_text(
        "\n".join(g["name"] for g in rule_groups(load_slo_config(), time_scale=TIME_SCALE))
    )


# == one trace per job ===============================================================


def test_one_trace_per_job_crosses_actor_and_task_boundaries(
    rt: QuantumRuntime, store_path: Path, spans_file: Path
) -> None:
    from qrt_ray.primitives import Sampler

    sampler = Sampler(mode=rt, options={"resilience": {"measure_mitigation": True}})
    fresh = QuantumCircuit(3)  # compiled nowhere yet: its compile task runs for it
    fresh.h(0)
    fresh.rz(0.123456, 0)
    fresh.cx(0, 1)
    fresh.cx(1, 2)
    fresh.measure_all()
    job = sampler.run([fresh, ghz(2)], shots=1000)
    job.result(timeout=300)
    job_id = job.farm_job_ids[0]
    tracing.flush()
    trace_id, root_id = (
        f"{x:0{w}x}" for x, w in zip(tracing.job_ids(job_id), (32, 16), strict=True)
    )

    def spans() -> list[dict[str, Any]]:
        lines = spans_file.read_text().splitlines() if spans_file.exists() else []
        return [s for s in map(json.loads, lines) if s["trace_id"] == trace_id]

    wanted = {
        "submit",
        "admission",
        "placement",
        "compile.task",
        "device_wait",
        "device.run",
        "result_collection",
        "qrt.job",
        "mitigation.quasi",
    }
    wait_for(lambda: wanted <= {s["name"] for s in spans()}, 30, what="every span of the job")
    found = spans()
    (root,) = [s for s in found if s["name"] == "qrt.job"]
    assert root["span_id"] == root_id and root["parent_id"] is None
    assert all(s["parent_id"] == root_id for s in found if s is not root)
    # the scheduler, a compile worker, the device actor and this process
    assert len({s["pid"] for s in found}) >= 3
    run = next(s for s in found if s["name"] == "device.run")
    store = _store(store_path)
    try:
        rec = store.get(job_id)
        events = store.events(job_id)
    finally:
        store.close()
    assert run["attributes"]["qrt.calibration_id"] == rec.calibration_id
    assert run["attributes"]["qrt.batch_id"] and run["attributes"]["qrt.method"]
    assert root["attributes"]["qrt.tenant"] == rec.tenant
    # the stage spans are the stored stays, to the nanosecond's rounding
    stay = next(s for s in found if s["name"] == "device_wait")
    placed = next(e for e in events if e.to_state is JobState.PLACED)
    running = next(e for e in events if e.to_state is JobState.RUNNING)
    assert abs(stay["start_ns"] / 1e9 - placed.at) < 1e-6
    assert abs(stay["end_ns"] / 1e9 - running.at) < 1e-6
