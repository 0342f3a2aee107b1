"""The farm on one node against a 3-node local Ray cluster, and recovery from a node loss.

Both layouts are ``ray.cluster_utils.Cluster`` on 127.0.0.1 with the same CPUs in all:

  (1) one node: a head with 3 CPUs that offers the devices' ``qrt_device``;
  (3) three nodes: a head with 1 CPU (the control plane) and two workers with 1 CPU
      and ``qrt_device`` each (the devices spread over them).

The same workload runs on each: ``--jobs`` jobs (500) over 20 distinct random 5-qubit
circuits, 1,000 shots each, submitted with ``submit_many`` and waited for. On this
2-core machine every node shares the same two cores, so the ratio shows what spreading
over nodes costs (more raylets, object transfers between nodes), not a speedup.

The 3-node layout runs the workload twice: with the default SQLite store on the head,
and with a PostgreSQL store (a throwaway server on this machine, Unix socket, the
server's durable defaults), the store that outlives the head.

Then a node loss on the 3-node layout (``tests.cluster.scenarios.node_loss``): a worker
removed while its device has jobs in flight; reported are the seconds until the device
runs again on the other worker and until all its jobs run again, and the jobs lost.

    python benchmarks/cluster.py               # about 4 minutes
    python benchmarks/cluster.py --jobs 100    # quick look
"""

from __future__ import annotations

import argparse
import os
import sys
import tempfile
import time
from pathlib import Path

os.environ["RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER"] = "0"
sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # the tests' scenarios

import ray
from qiskit.circuit.random import random_circuit
from ray.cluster_utils import Cluster

from qrt_ray import JobState, QuantumRuntime
from qrt_ray.config import load_farm_config_text
from qrt_ray.farm import prepare_auth
from tests.cluster.scenarios import FARM, LOOPBACK, node_loss
from tests.postgres import PostgresServer, ThrowawayPostgres


def run_layout(nodes: int, jobs: int, store_url: str | None = None) -> dict[str, float]:
    """Jobs per second of the workload on a cluster of ``nodes`` nodes (3 CPUs in all),
    on ``store_url`` (None: a fresh SQLite file)."""
    prepare_auth()
    head_cpus = 3 if nodes == 1 else 1
    head_resources = {"qrt_device": 2} if nodes == 1 else {}
    cluster = Cluster(
        initialize_head=True,
        head_node_args={
            **LOOPBACK,
            "num_cpus": head_cpus,
            "resources": head_resources,
            "include_dashboard": False,
        },
    )
    for _ in range(nodes - 1):
        cluster.add_node(**LOOPBACK, num_cpus=1, resources={"qrt_device": 1})
    cluster.wait_for_nodes()
    store = store_url or str(Path(tempfile.mkdtemp()) / "jobs.sqlite3")
    try:
        ray.init(address=cluster.address, logging_level="WARNING", log_to_driver=False)
        circuits = [random_circuit(5, 8, max_operands=2, measure=True, seed=i) for i in range(20)]
        with QuantumRuntime.local(load_farm_config_text(FARM), store=store) as rt:
            warm = rt.submit_many(circuits[:4], shots=100)
            rt.wait(warm, timeout_s=300)
            start = time.perf_counter()
            handles = rt.submit_many([circuits[i % len(circuits)] for i in range(jobs)], shots=1000)
            states = rt.wait(handles, timeout_s=1200)
            elapsed = time.perf_counter() - start
        done = sum(1 for s in states.values() if s is JobState.DONE)
    finally:
        ray.shutdown()
        cluster.shutdown()
    return {"seconds": elapsed, "jobs_per_s": jobs / elapsed, "done": done}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--jobs", type=int, default=500)
    args = parser.parse_args()
    one = run_layout(1, args.jobs)
    three = run_layout(3, args.jobs)
    server = ThrowawayPostgres()
    try:
        three_pg = run_layout(3, args.jobs, PostgresServer(server.url()).new_database())
    finally:
        server.stop()
    print(f"\n{args.jobs} jobs, 1,000 shots, 20 distinct 5-qubit circuits, 3 CPUs in all")
    print(f"{'layout':<34}{'seconds':>10}{'jobs/s':>10}{'done':>8}")
    rows = (
        ("1 node, SQLite", one),
        ("3 nodes (head + 2), SQLite", three),
        ("3 nodes (head + 2), PostgreSQL", three_pg),
    )
    for name, got in rows:
        print(f"{name:<34}{got['seconds']:>10.1f}{got['jobs_per_s']:>10.1f}{got['done']:>8.0f}")
    print(f"throughput ratio, 3 nodes / 1 node: {three['jobs_per_s'] / one['jobs_per_s']:.2f}")
    print(
        "throughput ratio, PostgreSQL / SQLite store on 3 nodes: "
        f"{three_pg['jobs_per_s'] / three['jobs_per_s']:.2f}"
    )

    loss = node_loss()
    lost = len(loss["job_ids"]) - loss["done"]
    print("\nnode loss on 3 nodes (60 jobs of 4,000 shots; scheduler also killed mid-run)")
    print(f"  jobs in flight on the lost worker's device: {loss['manila_in_flight_at_loss']}")
    print(f"  device running again on the other worker:   {loss['device_back_s']:.1f} s")
    print(f"  all its jobs running again:                 {loss['jobs_running_again_s']:.1f} s")
    print(f"  results back after the scheduler was killed: {loss['finished_s_after_kill']:.1f} s")
    print(f"  jobs lost: {lost} of {len(loss['job_ids'])}")


if __name__ == "__main__":
    main()
