"""Cluster scenarios, each run in a child process with its own local Ray cluster
(``ray.cluster_utils.Cluster``: a head and worker nodes as local processes, all on
127.0.0.1), apart from the test session's own Ray. Each prints one ``RESULT`` line of
JSON for the test to check.

Run one by hand: ``python -m tests.cluster.scenarios node_loss``.
"""

from __future__ import annotations

import json
import os
import sys
import tempfile
import time
from collections import Counter
from pathlib import Path
from typing import Any

os.environ["RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER"] = "0"

FARM = """
name: cluster
devices:
  - {name: manila, backend: FakeManilaV2, price_per_shot_usd: 0.00001,
     price_per_job_usd: 0.01, gpu: never, resources: {qrt_device: 1}}
  - {name: nairobi, backend: FakeNairobiV2, price_per_shot_usd: 0.00001,
     price_per_job_usd: 0.01, gpu: never, resources: {qrt_device: 1}}
"""
GHZ3 = (
    'OPENQASM 2.0;\ninclude "qelib1.inc";\nqreg q[3];\ncreg c[3];\n'
    "h q[0];\ncx q[0],q[1];\ncx q[1],q[2];\nmeasure q -> c;\n"
)
LOOPBACK = {"node_ip_address": "127.0.0.1", "dashboard_host": "127.0.0.1"}


def _cluster(workers: int, head_resources: dict[str, float] | None = None) -> Any:
    from ray.cluster_utils import Cluster

    from qrt_ray.farm import prepare_auth

    prepare_auth()
    cluster = Cluster(
        initialize_head=True,
        head_node_args={
            **LOOPBACK,
            "num_cpus": 1,
            "include_dashboard": False,
            "resources": head_resources or {},
        },
    )
    # two device slots per worker: a lost worker's device has somewhere to go
    nodes = [
        cluster.add_node(**LOOPBACK, num_cpus=1, resources={"qrt_device": 2})
        for _ in range(workers)
    ]
    cluster.wait_for_nodes()
    return cluster, nodes


def _actors(namespace: str) -> dict[str, dict[str, Any]]:
    """Alive named actors (this cluster runs one farm, in ``namespace``): node id and
    pid, from the GCS (no dashboard here)."""
    from ray._private import state

    out = {}
    for a in state.actors().values():
        if a.get("Name") and a["State"] == "ALIVE":
            out[a["Name"]] = {"node": a["Address"]["NodeID"], "pid": a["Pid"]}
    return out


def _on(device: str, rt: Any, states: tuple[str, ...]) -> dict[str, int]:
    """Jobs placed on ``device`` in one of ``states``: job id -> attempts."""
    return {
        j["job_id"]: j["attempts"]
        for j in rt.jobs(limit=1000)
        if j["device"] == device and j["state"] in states
    }


def _going_again(view: dict[str, Any], attempts_before: int) -> bool:
    """Whether a job caught by a node loss is done, or running again after it."""
    again = view["state"] in ("RUNNING", "POSTPROCESSING") and view["attempts"] > attempts_before
    return view["state"] == "DONE" or again


def _store_holders(store: Path) -> list[int]:
    """Pids of processes with the store file (or its WAL) open."""
    import psutil

    pids = []
    for proc in psutil.process_iter():
        try:
            if any(f.path.startswith(str(store)) for f in proc.open_files()):
                pids.append(proc.pid)
        except psutil.Error:
            continue
    return pids


def node_loss(jobs: int = 40, shots: int = 4000) -> dict[str, Any]:
    """Control plane on the head, devices spread; a worker removed mid-run and the
    scheduler killed mid-run: every job DONE with its shots, none lost."""
    import ray

    from qrt_ray import JobState, QuantumRuntime
    from qrt_ray.config import load_farm_config_text
    from qrt_ray.farm import CALIBRATION_NAME, SCHEDULER_NAME, find_scheduler

    cluster, workers = _cluster(2)
    store = Path(tempfile.mkdtemp()) / "jobs.sqlite3"
    out: dict[str, Any] = {}
    try:
        ray.init(address=cluster.address)
        head = ray.get_runtime_context().get_node_id()
        rt = QuantumRuntime.local(load_farm_config_text(FARM), store=store)
        ns = rt.namespace
        placed = _actors(ns)
        out["head"] = head
        out["placed"] = {k: v["node"] for k, v in placed.items()}
        out["workers"] = [w.node_id for w in workers]
        holders = _store_holders(store)
        out["store_holders"] = holders
        out["scheduler_pid"] = placed[SCHEDULER_NAME]["pid"]
        out["calibration_pid"] = placed[CALIBRATION_NAME]["pid"]
        out["device_pids"] = [v["pid"] for k, v in placed.items() if k.startswith("device:")]

        # a run in flight: once manila runs work, lose its node
        # half of them pinned to manila: it surely has work when its node goes
        handles = [
            rt.submit(GHZ3, shots=shots, seed=i, device="manila" if i % 2 else None)
            for i in range(jobs)
        ]
        victim = next(w for w in workers if w.node_id == placed["device:manila"]["node"])
        deadline = time.monotonic() + 120
        while not _on("manila", rt, ("RUNNING",)):
            assert time.monotonic() < deadline, "manila never ran a job"
            time.sleep(0.2)
        in_flight = _on("manila", rt, ("COMPILING", "PLACED", "RUNNING"))
        out["manila_in_flight_at_loss"] = len(in_flight)
        lost_at = time.monotonic()
        cluster.remove_node(victim)
        # the device comes back on the other worker, and its jobs run again
        while "device:manila" not in _actors(ns) and time.monotonic() - lost_at < 120:
            time.sleep(0.1)
        out["device_back_s"] = round(time.monotonic() - lost_at, 2)
        out["manila_now_on"] = _actors(ns).get("device:manila", {}).get("node")
        waiting = set(in_flight)
        while waiting and time.monotonic() - lost_at < 300:
            views = {j["job_id"]: j for j in rt.jobs(limit=1000)}
            waiting = {j for j in waiting if not _going_again(views[j], in_flight[j])}
            time.sleep(0.1)
        out["jobs_running_again_s"] = round(time.monotonic() - lost_at, 2)

        # and the scheduler killed mid-run: Ray restarts it, the client retries
        more = [rt.submit(GHZ3, shots=shots, seed=jobs + i) for i in range(jobs // 2)]
        time.sleep(1.0)
        ray.kill(find_scheduler(ns), no_restart=False)
        killed_at = time.monotonic()
        results = rt.results(handles + more, timeout_s=600)
        out["finished_s_after_kill"] = round(time.monotonic() - killed_at, 2)
        out["shots"] = [sum(r.counts().values()) for r in results]
        out["states"] = sorted({j["state"] for j in rt.jobs(limit=1000)})
        out["scheduler_pid_after"] = _actors(ns)[SCHEDULER_NAME]["pid"]
        out["scheduler_node_after"] = _actors(ns)[SCHEDULER_NAME]["node"]
        out["job_ids"] = [h.job_id for h in handles + more]
        out["done"] = sum(1 for h in handles + more if h.status() is JobState.DONE)
        rt.shutdown()
    finally:
        ray.shutdown()
        cluster.shutdown()
    out["store"] = str(store)
    return out


def import_order() -> dict[str, Any]:
    """``import ray`` before ``import qrt_ray``: an embedded farm still starts."""
    import ray  # noqa: F401  (first, on purpose)

    import qrt_ray
    from qrt_ray.config import load_farm_config_text

    farm = load_farm_config_text(FARM.replace("resources: {qrt_device: 1}", "resources: {}"))
    store = Path(tempfile.mkdtemp()) / "jobs.sqlite3"
    with qrt_ray.QuantumRuntime.local(farm, num_cpus=1, store=store) as rt:
        counts = rt.submit(GHZ3, shots=100).result(timeout_s=120).counts()
    return {"shots": sum(counts.values())}


def autoscaling(jobs: int = 240, shots: int = 2000) -> dict[str, Any]:
    """Ray's autoscaler with fake local nodes: the farm starts on a head with no
    workers and the autoscaler adds a device node; a burst of jobs never compiled
    before adds CPU nodes; the device node is killed mid-run and comes back; after
    the burst the CPU nodes go. The burst must outlast the autoscaler's reaction: 120
    jobs once compiled on the device node's one CPU before any CPU node was asked for,
    and 240 of depth 10 did once in a full suite's run on a fast machine; depth 16
    makes each compile about 1.6 times longer."""
    import ray
    from qiskit.circuit.random import random_circuit

    from qrt_ray import JobState, QuantumRuntime
    from qrt_ray.config import load_farm_config_text
    from qrt_ray.farm import init_ray_loopback, prepare_auth
    from tests.cluster.autoscaling import AutoscalingHead, NodeCounter, kill_node

    prepare_auth()
    root = Path(tempfile.mkdtemp())
    head = AutoscalingHead(
        root,
        {
            # room for both devices on one node, and for one node lost
            "device_node": {"resources": {"CPU": 1, "qrt_device": 2}, "max_workers": 2},
            "cpu_node": {"resources": {"CPU": 1}, "max_workers": 3},
        },
        idle_minutes=0.1,
    )
    head.start()
    out: dict[str, Any] = {"events": {}}
    counter = None
    try:
        init_ray_loopback(address=head.address)
        counter = NodeCounter()
        out["nodes_at_start"] = counter.now()
        rt = QuantumRuntime.local(load_farm_config_text(FARM), store=root / "jobs.sqlite3")
        out["events"]["farm_up"] = counter.elapsed()
        out["nodes_farm_up"] = counter.now()
        circuits = [
            random_circuit(5, 16, max_operands=2, measure=True, seed=1000 + i) for i in range(jobs)
        ]
        handles = [rt.submit(c, shots=shots, seed=i) for i, c in enumerate(circuits)]
        out["events"]["burst"] = counter.elapsed()
        # once a device has work placed or running, lose that device's node
        deadline = time.monotonic() + 180
        while True:
            views = rt.jobs(limit=1000)
            busy = {j["device"] for j in views if j["state"] in ("PLACED", "RUNNING")}
            if busy:
                break
            states = Counter(j["state"] for j in views)
            assert time.monotonic() < deadline, f"no device got work: {dict(states)}"
            time.sleep(0.2)
        hosts = {d.name: d.process[0] for d in rt.devices() if d.process is not None}
        assert busy & hosts.keys(), "no busy device reported the node it runs on"
        target = hosts[sorted(busy & hosts.keys())[0]]
        out["devices_on_killed_node"] = sorted(n for n, node in hosts.items() if node == target)
        out["in_flight_at_kill"] = sum(
            1 for j in rt.jobs(limit=1000) if j["state"] in ("COMPILING", "PLACED", "RUNNING")
        )
        out["killed_processes"] = kill_node(target)
        out["events"]["device_node_killed"] = counter.elapsed()
        results = rt.results(handles, timeout_s=600)
        out["events"]["all_done"] = counter.elapsed()
        out["shots"] = sorted({sum(r.counts().values()) for r in results})
        out["done"] = sum(1 for h in handles if h.status() is JobState.DONE)
        out["job_ids"] = [h.job_id for h in handles]
        # idle: the CPU nodes go, the device node stays (its actors hold it)
        deadline = time.monotonic() + 120
        while counter.now()[1] > 0 and time.monotonic() < deadline:
            time.sleep(0.5)
        out["events"]["cpu_nodes_gone"] = counter.elapsed()
        out["nodes_at_end"] = counter.now()
        rt.shutdown()
    finally:
        if counter is not None:
            out["samples"] = counter.stop()
            print_timeline(out["samples"], out["events"])
        ray.shutdown()
        head.stop()
    out["store"] = str(root / "jobs.sqlite3")
    return out


def head_lost(jobs: int = 30, shots: int = 20000) -> dict[str, Any]:
    """First life of a farm on a PostgreSQL store: jobs submitted, some DONE and some
    in flight, then the whole head node is lost at once (every Ray process SIGKILLed,
    nothing shut down). Prints the job ids and what each was doing."""
    import psutil
    import ray

    from qrt_ray import QuantumRuntime
    from qrt_ray.config import load_farm_config_text

    cluster, _ = _cluster(0, head_resources={"qrt_device": 2})
    ray.init(address=cluster.address)
    rt = QuantumRuntime.local(load_farm_config_text(FARM), store=os.environ["QRT_TEST_STORE"])
    # some jobs finished before the loss, the rest in flight or queued when it comes
    finished = [rt.submit(GHZ3, shots=shots, seed=i) for i in range(5)]
    rt.results(finished, timeout_s=120)
    handles = finished + [rt.submit(GHZ3, shots=shots, seed=i) for i in range(5, jobs)]
    rt.flush(timeout_s=120)  # every job acknowledged (stored) before the loss
    deadline = time.monotonic() + 120
    while True:
        states = Counter(j["state"] for j in rt.jobs(limit=1000))
        if states["RUNNING"] + states["PLACED"] >= 1:
            break
        assert time.monotonic() < deadline, f"no job in flight to lose: {dict(states)}"
        assert states["DONE"] < jobs, "every job finished before the head could be lost"
        time.sleep(0.02)
    # the head goes as a machine does: no shutdown, every process at once
    doomed = psutil.Process().children(recursive=True)
    for proc in doomed:
        proc.kill()
    psutil.wait_procs(doomed, timeout=30)
    return {"job_ids": [h.job_id for h in handles], "at_loss": _stored_states()}


def _stored_states() -> dict[str, str]:
    """Every job's state as the database holds it (no farm running)."""
    from qrt_ray.store import open_store

    store = open_store(os.environ["QRT_TEST_STORE"])
    try:
        return {r.job_id: r.state.value for r in store.list_jobs(limit=1000)}
    finally:
        store.close()


def new_head() -> dict[str, Any]:
    """A farm started on a new head with the same PostgreSQL URL: every job of the
    lost head is recovered and finished."""
    import ray

    from qrt_ray import JobState, QuantumRuntime
    from qrt_ray.config import load_farm_config_text

    job_ids = json.loads(os.environ["QRT_TEST_JOB_IDS"])
    out: dict[str, Any] = {}
    cluster, _ = _cluster(0, head_resources={"qrt_device": 2})
    try:
        ray.init(address=cluster.address)
        started = time.monotonic()
        store = os.environ["QRT_TEST_STORE"]
        with QuantumRuntime.local(load_farm_config_text(FARM), store=store) as rt:
            out["farm_up_s"] = round(time.monotonic() - started, 2)
            results = rt.results([rt.job(j) for j in job_ids], timeout_s=300)
            out["all_done_s"] = round(time.monotonic() - started, 2)
            out["shots"] = sorted({sum(r.counts().values()) for r in results})
            out["states"] = sorted({rt.job(j).status().value for j in job_ids})
            out["done"] = sum(1 for j in job_ids if rt.job(j).status() is JobState.DONE)
    finally:
        ray.shutdown()
        cluster.shutdown()
    return out


def gameday_node_loss() -> dict[str, Any]:
    """``qrt gameday node-loss``'s runner on a 3-node cluster (devices on the two
    workers): the node of manila, busy with work, dies mid-run; its device comes back
    on the other worker. The report, and the ledger and store checked after."""
    import ray

    from qrt_ray import QuantumRuntime
    from qrt_ray.config import load_farm_config_text
    from qrt_ray.gameday import render
    from qrt_ray.gameday.runner import GameDay
    from qrt_ray.gameday.scenario import load_scenario
    from qrt_ray.store import open_store
    from qrt_ray.store.integrity import check_integrity

    cluster, workers = _cluster(2)
    store = Path(tempfile.mkdtemp()) / "jobs.sqlite3"
    out: dict[str, Any] = {}
    try:
        ray.init(address=cluster.address)
        rt = QuantumRuntime.local(load_farm_config_text(FARM), store=store)
        ns = rt.namespace
        placed = _actors(ns)
        out["manila_node"] = placed["device:manila"]["node"]
        out["workers"] = [w.node_id for w in workers]
        # the packaged scenario, shortened, on the busy device
        day = load_scenario("node-loss").model_copy(update={"duration_s": 45.0, "drain_s": 240.0})
        step = day.steps[0].model_copy(update={"at_s": 15.0, "devices": ["manila"]})
        day = day.model_copy(update={"steps": [step]})
        report = GameDay(rt, day).run()
        out["text"] = render(report)
        out["passed"] = report.passed
        out["jobs"] = report.jobs
        out["faults"] = [
            {"fault": f.fault, "target": f.target, "detected_s": f.detected_s,
             "recovered_s": f.recovered_s, "detail": f.detail}
            for f in report.faults
        ]  # fmt: skip
        out["manila_now_on"] = _actors(ns).get("device:manila", {}).get("node")
        out["alive_nodes"] = sum(1 for n in ray.nodes() if n.get("Alive"))
        rt.shutdown()
    finally:
        ray.shutdown()
        cluster.shutdown()
    opened = open_store(store)
    try:
        integrity = check_integrity(opened, deep=True)
        out["integrity_ok"] = integrity.ok
        out["integrity"] = integrity.render()
    finally:
        opened.close()
    out["store"] = str(store)
    return out


def print_timeline(samples: list[tuple[float, int, int]], events: dict[str, float]) -> None:
    """Node counts over time, one line per change, with the scenario's events."""
    print("   t (s)  device nodes  cpu nodes  event")
    marks = sorted((t, name) for name, t in events.items())
    last = None
    for t, device, cpu in samples:
        while marks and marks[0][0] <= t:
            print(f"{marks[0][0]:8.1f}  {'':12}  {'':9}  {marks.pop(0)[1]}")
        if (device, cpu) != last:
            print(f"{t:8.1f}  {device:12d}  {cpu:9d}")
            last = (device, cpu)
    for t, name in marks:
        print(f"{t:8.1f}  {'':12}  {'':9}  {name}")


if __name__ == "__main__":
    scenarios = {
        "node_loss": node_loss,
        "import_order": import_order,
        "autoscaling": autoscaling,
        "head_lost": head_lost,
        "new_head": new_head,
        "gameday_node_loss": gameday_node_loss,
    }
    result = scenarios[sys.argv[1]]()
    print("RESULT " + json.dumps(result), flush=True)
