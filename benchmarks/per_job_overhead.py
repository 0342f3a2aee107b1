"""Per-job overhead: every way a user submits small jobs, against the simulator's limit.

One process, one run, the same circuits and the same noise model on every side:

- the limit: one batched ``AerSimulator.run`` of every circuit, transpiled beforehand
  (run only), and the same with the transpile counted (what a script pays); each the
  best of three calls;
- ``rt.submit_many`` then ``rt.results`` (one round trip each way);
- a plain loop of ``rt.submit()``, then ``h.result()`` for each handle (what most
  scripts do); each ``submit()`` is timed, on a farm busy with the jobs before it. On
  the default runtime (pipelined: ``submit()`` returns before the farm acknowledges;
  the acknowledgement follows on the handle), and on a synchronous one
  (``pipeline=False``: each ``submit()`` waits for the durable commit);
- each of those pinned to one device (``device=``) and unpinned (placement on);
- distinct random circuits (the compile cache cold) against transpile + run;
- the floor of any synchronous loop: two empty scheduler calls a job, one after
  another, while the farm runs the same jobs beside them (what a loop of submit() and
  result() pays in round trips alone, however little each call does);
- the CPU a job costs each process (user + system time of this process and every
  process it started, grouped: client, scheduler, device, compile tasks, intake
  parsers, Ray's daemons) over rounds of submit_many (or of the loop: ``--cpu-path``),
  beside the CPU direct Aer spends a circuit: on a machine whose cores are all busy,
  their ratio bounds what any path can reach.

Every job is its own durable job (SQLite, WAL, every transition persisted). Prints
circuits/s and the ratio to the limit per path, and submit() latency percentiles.
Asserts nothing: read the ratios (the machine is shared and noisy).

    python benchmarks/per_job_overhead.py                     # about 2 minutes
    python benchmarks/per_job_overhead.py --circuits 50 --distinct 200   # a quick look
    python benchmarks/per_job_overhead.py --distinct 0 --cpu-path loop  # a loop's CPU
"""

from __future__ import annotations

import argparse
import os
import statistics
import tempfile
import time
import warnings
from collections.abc import Callable, Sequence
from pathlib import Path

os.environ.setdefault("RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER", "0")
os.environ.setdefault("RAY_AUTH_MODE", "token")

import psutil
from qiskit import QuantumCircuit, transpile
from qiskit.circuit.random import random_circuit

from qrt_ray import QuantumRuntime, connect
from qrt_ray.calibration import load_backend, snapshot_from_backend
from qrt_ray.config import load_farm_config_text
from qrt_ray.farm import init_ray_loopback
from qrt_ray.noise import make_simulator
from qrt_ray.render import table
from qrt_ray.workloads import ghz_circuit

warnings.filterwarnings("ignore", category=DeprecationWarning)

BACKEND = "FakeManilaV2"
DEVICE = "manila"
FARM = f"""
name: overhead
devices:
  - {{name: {DEVICE}, backend: {BACKEND}, price_per_shot_usd: 0.00001,
     price_per_job_usd: 0.01, gpu: never}}
"""
SHOTS = 1000
OPT_LEVEL = 1


def distinct(n: int, first_seed: int) -> list[QuantumCircuit]:
    """5-qubit random circuits no earlier run compiled."""
    return [random_circuit(5, 4, measure=True, seed=first_seed + i) for i in range(n)]


def timed(fn: Callable[[], object]) -> float:
    start = time.perf_counter()
    fn()
    return time.perf_counter() - start


class Limit:
    """Direct batched Aer on the device's noise model: the physical limit here."""

    def __init__(self) -> None:
        self.backend = load_backend(BACKEND)
        snapshot = snapshot_from_backend(DEVICE, self.backend, taken_at=time.time())
        self.sim, _, _ = make_simulator(snapshot, self.backend.target, gpu="never")

    def compile(self, circuits: Sequence[QuantumCircuit]) -> list[QuantumCircuit]:
        return transpile(list(circuits), self.backend, optimization_level=OPT_LEVEL)

    def run(self, compiled: Sequence[QuantumCircuit]) -> None:
        result = self.sim.run(list(compiled), shots=SHOTS).result()
        assert all(sum(result.get_counts(i).values()) == SHOTS for i in range(len(compiled)))


def many(rt: QuantumRuntime, circuits: Sequence[QuantumCircuit], device: str | None) -> None:
    handles = rt.submit_many(list(circuits), shots=SHOTS, device=device)
    results = rt.results(handles, timeout_s=3600)
    assert all(r.metadata.shots_executed == SHOTS for r in results)


def loop(rt: QuantumRuntime, circuits: Sequence[QuantumCircuit], device: str | None) -> list[float]:
    """A plain loop of submit(), then result() for each; returns each submit's seconds."""
    handles, waits = [], []
    for qc in circuits:
        start = time.perf_counter()
        handles.append(rt.submit(qc, shots=SHOTS, device=device))
        waits.append(time.perf_counter() - start)
    for h in handles:
        assert h.result(timeout_s=3600).metadata.shots_executed == SHOTS
    return waits


def sync_floor(rt: QuantumRuntime, circuits: Sequence[QuantumCircuit], device: str) -> float:
    """Seconds for two empty scheduler round trips a job, one after another, while the
    farm runs the same jobs (submitted at once beside them)."""
    handles = rt.submit_many(list(circuits), shots=SHOTS, device=device)
    start = time.perf_counter()
    for _ in range(2 * len(circuits)):
        rt.store_label()
    seconds = time.perf_counter() - start
    rt.results(handles, timeout_s=3600)
    return seconds


def _group(proc: psutil.Process) -> str:
    """Which part of the farm a process of this run is."""
    try:
        cmd = proc.cmdline()
    except psutil.Error:
        return "gone"
    head = cmd[0] if cmd else proc.name()
    if head.startswith("ray::"):
        name = head[5:].split(".")[0].split(":")[0].strip()
        return {"SchedulerActor": "scheduler", "DeviceActor": "device"}.get(
            name, "compile and other tasks" if name != "IDLE" else "idle Ray workers"
        )
    text = " ".join(cmd)
    if "qrt_ray.intake" in text or "intake" in proc.name():
        return "intake parsers"
    return "Ray daemons (gcs, raylet, monitors)"


def _cpu_by_group() -> dict[str, float]:
    """CPU seconds (user + system) so far of this process and everything it started."""
    me = psutil.Process()
    out = {"client": sum(me.cpu_times()[:2])}
    for proc in me.children(recursive=True):
        try:
            spent = sum(proc.cpu_times()[:2])
        except psutil.Error:
            continue
        group = _group(proc)
        out[group] = out.get(group, 0.0) + spent
    return out


def cpu_budget(
    rt: QuantumRuntime, work: Sequence[QuantumCircuit], rounds: int, path: str = "submit_many"
) -> None:
    """CPU milliseconds a job costs each process group over ``rounds`` of ``path``
    (``submit_many`` + results, or the plain ``loop``) pinned to the device (the farm
    warm), beside the limit's own CPU."""
    before = _cpu_by_group()
    start = time.perf_counter()
    for _ in range(rounds):
        if path == "loop":
            loop(rt, work, DEVICE)
        else:
            many(rt, work, DEVICE)
    wall = time.perf_counter() - start
    after = _cpu_by_group()
    jobs = rounds * len(work)
    rows = []
    for group in sorted(after, key=lambda g: -(after[g] - before.get(g, 0.0))):
        spent = after[group] - before.get(group, 0.0)
        if spent > 0:
            rows.append([group, f"{1000 * spent / jobs:.2f}"])
    total = sum(after[g] - before.get(g, 0.0) for g in after)
    rows.append(["all processes", f"{1000 * total / jobs:.2f}"])
    rows.append(["(wall time a job)", f"{1000 * wall / jobs:.2f}"])
    what = "a plain loop of submit() + result()" if path == "loop" else "submit_many + results"
    print(f"\nCPU a job by process, {rounds} rounds of {what}, pinned:")
    print(table(["process", "CPU ms a job"], rows))


def limit_cpu(limit: Limit, compiled: Sequence[QuantumCircuit], rounds: int) -> float:
    """CPU milliseconds a circuit costs direct batched Aer (this process)."""
    me = psutil.Process()
    before = sum(me.cpu_times()[:2])
    for _ in range(rounds):
        limit.run(compiled)
    return 1000 * (sum(me.cpu_times()[:2]) - before) / (rounds * len(compiled))


def pct(values: Sequence[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, round(q * (len(ordered) - 1)))]


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    p.add_argument("--circuits", type=int, default=200, help="GHZ jobs per path (default 200)")
    p.add_argument(
        "--distinct", type=int, default=2000, help="random circuits, cache cold (default 2000)"
    )
    p.add_argument(
        "--cpu-rounds",
        type=int,
        default=5,
        help="rounds for the CPU budget by process (0: skip; default 5)",
    )
    p.add_argument(
        "--cpu-path",
        choices=("submit_many", "loop"),
        default="submit_many",
        help="the path the CPU rounds take (default submit_many)",
    )
    args = p.parse_args()

    limit = Limit()
    work = [ghz_circuit(5) for _ in range(args.circuits)]
    compiled = limit.compile(work)
    limit.run(compiled[:5])  # warm Aer and the noise model
    init_ray_loopback()
    store = Path(tempfile.mkdtemp(prefix="qrt-overhead-")) / "jobs.sqlite3"
    rows: list[list[object]] = []
    latencies: dict[str, list[float]] = {}
    with QuantumRuntime.local(load_farm_config_text(FARM), store=store) as rt:
        many(rt, work[:5], DEVICE)  # warm the farm: workers, compile cache, noise model
        # the limit is the best of three: a first batch pays one-time costs
        run_only = min(timed(lambda: limit.run(compiled)) for _ in range(3))
        with_transpile = min(timed(lambda: limit.run(limit.compile(work))) for _ in range(3))
        n = len(work)
        rows.append(["direct Aer, run only (the limit)", n / run_only, 1.0, "-"])
        rows.append(
            ["direct Aer, transpile + run", n / with_transpile, run_only / with_transpile, "-"]
        )
        synced = connect(namespace=rt.namespace, pipeline=False)  # the same farm
        for device, where in ((DEVICE, "pinned"), (None, "placed")):
            t = timed(lambda d=device: many(rt, work, d))
            rows.append([f"submit_many + results, {where}", n / t, run_only / t, "-"])
            for client, how in ((rt, " (pipelined: default)"), (synced, " synchronous")):
                waits: list[float] = []
                t = timed(lambda c=client, d=device, w=waits: w.extend(loop(c, work, d)))
                latencies[f"{where}{how}"] = waits
                p99 = pct(waits, 0.99) * 1000
                rows.append(
                    [
                        f"loop of submit() + result(), {where}{how}",
                        n / t,
                        run_only / t,
                        f"{p99:.1f}",
                    ]
                )
        synced.shutdown()
        t = sync_floor(rt, work, DEVICE)
        rows.append(["floor: 2 empty round trips a job, farm busy", n / t, run_only / t, "-"])
        if args.distinct:
            fresh = distinct(args.distinct, 10_000)
            cold_limit = timed(lambda: limit.run(limit.compile(fresh)))
            t = timed(lambda: many(rt, fresh, DEVICE))
            m = len(fresh)
            rows.append(
                ["direct Aer, transpile + run, distinct circuits", m / cold_limit, 1.0, "-"]
            )
            rows.append(
                [f"submit_many + results, {m} distinct (cache cold)", m / t, cold_limit / t, "-"]
            )
        if args.cpu_rounds:
            cpu_budget(rt, work, args.cpu_rounds, args.cpu_path)
            per = limit_cpu(limit, compiled, args.cpu_rounds)
            print(f"direct Aer, run only: {per:.2f} CPU ms a circuit (this process)")
    header = ["path", "circuits/s", "vs limit", "submit p99 ms"]
    print(table(header, [[r[0], f"{r[1]:.0f}", f"{r[2]:.2f}", r[3]] for r in rows]))
    for where, waits in latencies.items():
        ms = [w * 1000 for w in waits]
        print(
            f"submit() {where}: p50 {statistics.median(ms):.2f} ms, p95 {pct(ms, 0.95):.2f} ms, "
            f"p99 {pct(ms, 0.99):.2f} ms, max {max(ms):.2f} ms over {len(ms)} calls"
        )


if __name__ == "__main__":
    main()
