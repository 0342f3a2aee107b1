"""Throughput of qrt-ray against the limit (direct batched Aer) and a naive Ray script.

One process, one run, three ways over the same circuits and the same noise model:

  (a) direct: ``transpile`` + one batched ``AerSimulator.run`` (no Ray, no durability);
      reported with and without the transpile, since qrt-ray compiles too.
  (b) naive Ray: one remote call per circuit (transpile + run in the task).
  (c) qrt-ray end to end: every circuit its own durable job (SQLite WAL, synchronous
      FULL, every transition persisted), submitted with ``submit_many``.

Workloads: small (5-qubit random circuits, 1000 shots, FakeManilaV2 noise) and large
(9-qubit hardware-efficient ansatz circuits, EfficientSU2 with linear entanglement and 40
repetitions, about 1 s of noisy simulation each on two cores, FakeGuadalupeV2). Quantum
volume circuits were tried first and dropped: routing spreads some of them over 14
physical qubits, where one circuit took 195 s instead of 0.8 s, so their cost depends on
the routing seed rather than on the runtime.
Then ``submit()`` latency on an idle farm. Prints a table of times and ratios; asserts
nothing (machines are shared and noisy: read the ratios).

    python benchmarks/throughput.py                # full run (about 2 minutes)
    python benchmarks/throughput.py --small 100 --large 4 --latency 30   # quick look
"""

from __future__ import annotations

import argparse
import os
import statistics
import tempfile
import time
import warnings
from collections.abc import Callable
from pathlib import Path

os.environ.setdefault("RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER", "0")
os.environ.setdefault("RAY_AUTH_MODE", "token")

import numpy as np
import ray
from qiskit import QuantumCircuit, transpile
from qiskit.circuit.library import efficient_su2
from qiskit.circuit.random import random_circuit
from qiskit_aer import AerSimulator

from qrt_ray import QuantumRuntime
from qrt_ray.calibration import load_backend
from qrt_ray.config import load_farm_config_text
from qrt_ray.farm import init_ray_loopback
from qrt_ray.fidelity import hellinger_fidelity
from qrt_ray.render import table
from qrt_ray.workloads import ideal_distribution

warnings.filterwarnings("ignore", category=DeprecationWarning)

FARM = """
name: bench
devices:
  - {name: manila, backend: FakeManilaV2,
     price_per_shot_usd: 0.00001, price_per_job_usd: 0.01, gpu: never}
  - {name: guadalupe, backend: FakeGuadalupeV2,
     price_per_shot_usd: 0.00003, price_per_job_usd: 0.04, gpu: never}
"""
SHOTS = 1000
OPT_LEVEL = 1
SEED_TRANSPILER = 11


def small_circuits(n: int) -> list[QuantumCircuit]:
    """5-qubit random circuits with measurements."""
    return [random_circuit(5, 5, measure=True, seed=i) for i in range(n)]


def large_circuits(n: int) -> list[QuantumCircuit]:
    """9-qubit ansatz circuits with random angles: about 1 s of noisy simulation each."""
    out = []
    for i in range(n):
        ansatz = efficient_su2(9, reps=40, entanglement="linear")
        angles = np.random.default_rng(100 + i).uniform(0, 2 * np.pi, ansatz.num_parameters)
        qc = ansatz.assign_parameters(angles)
        qc.measure_all()
        out.append(qc)
    return out


def timed(fn: Callable[[], object]) -> float:
    start = time.perf_counter()
    fn()
    return time.perf_counter() - start


def direct(
    circuits: list[QuantumCircuit], backend_name: str
) -> tuple[float, float, list[dict[str, int]]]:
    """(a): returns (transpile + run seconds, run-only seconds, counts)."""
    backend = load_backend(backend_name)
    sim = AerSimulator.from_backend(backend, max_parallel_threads=os.cpu_count() or 1)
    t0 = time.perf_counter()
    compiled = transpile(
        circuits, backend, optimization_level=OPT_LEVEL, seed_transpiler=SEED_TRANSPILER
    )
    t1 = time.perf_counter()
    result = sim.run(compiled, shots=SHOTS).result()
    t2 = time.perf_counter()
    counts = [result.get_counts(i) for i in range(len(circuits))]
    assert all(sum(c.values()) == SHOTS for c in counts)
    return t2 - t0, t2 - t1, counts


_SIMS: dict[str, AerSimulator] = {}


@ray.remote(num_cpus=1)
def _naive_one(circuit: QuantumCircuit, backend_name: str) -> dict[str, int]:
    backend = load_backend(backend_name)
    if backend_name not in _SIMS:  # a careful script at least reuses the noise model
        _SIMS[backend_name] = AerSimulator.from_backend(backend, max_parallel_threads=1)
    compiled = transpile(
        circuit, backend, optimization_level=OPT_LEVEL, seed_transpiler=SEED_TRANSPILER
    )
    return _SIMS[backend_name].run(compiled, shots=SHOTS).result().get_counts()


def naive_ray(circuits: list[QuantumCircuit], backend_name: str) -> float:
    """(b): one remote call per circuit."""
    ray.get(_naive_one.remote(circuits[0], backend_name))  # warm the workers' caches
    ray.get([_naive_one.remote(circuits[0], backend_name) for _ in range(2)])

    def go() -> None:
        counts = ray.get([_naive_one.remote(c, backend_name) for c in circuits])
        assert all(sum(c.values()) == SHOTS for c in counts)

    return timed(go)


def qrt(
    rt: QuantumRuntime, circuits: list[QuantumCircuit], device: str
) -> tuple[float, list[dict[str, int]]]:
    """(c): each circuit its own durable job; returns (seconds, counts)."""
    rt.submit(circuits[0], shots=SHOTS, device=device).result(timeout_s=300)  # warm caches
    counts: list[dict[str, int]] = []

    def go() -> None:
        handles = rt.submit_many(circuits, shots=SHOTS, device=device)
        results = rt.results(handles, timeout_s=3600)
        assert all(r.metadata.shots_executed == SHOTS for r in results)
        counts.extend(r.counts() for r in results)

    return timed(go), counts


def quality(circuits: list[QuantumCircuit], counts: list[dict[str, int]]) -> float:
    """Mean Hellinger fidelity of counts against each circuit's noiseless distribution.

    (a) and (c) sample the same noise model, so theirs should match to shot noise; a
    fast runtime that returned wrong answers would show here, not in the times.
    """
    pairs = zip(circuits, counts, strict=True)
    return statistics.fmean(hellinger_fidelity(c, ideal_distribution(qc)) for qc, c in pairs)


def submit_latency(rt: QuantumRuntime, n: int) -> list[float]:
    """submit() wall time on an idle farm (each job finishes before the next submit)."""
    qc = QuantumCircuit(3)
    qc.h(0)
    qc.cx(0, 1)
    qc.cx(1, 2)
    qc.measure_all()
    out = []
    for _ in range(n):
        t = time.perf_counter()
        handle = rt.submit(qc, shots=100, device="manila")
        out.append(time.perf_counter() - t)
        handle.result(timeout_s=60)
    return out


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    p.add_argument("--small", type=int, default=500, help="small circuits (default 500)")
    p.add_argument("--large", type=int, default=20, help="large circuits (default 20)")
    p.add_argument("--latency", type=int, default=200, help="submit() calls timed (default 200)")
    args = p.parse_args()

    small, large = small_circuits(args.small), large_circuits(args.large)
    init_ray_loopback()
    store = Path(tempfile.mkdtemp(prefix="qrt-bench-")) / "jobs.sqlite3"
    # synchronous: submit() latency is the durable commit's (a pipelined submit only queues)
    rt = QuantumRuntime.local(load_farm_config_text(FARM), store=store, pipeline=False)
    rows = []
    try:
        if small:
            direct(small[:5], "FakeManilaV2")  # warm imports and noise model
        for label, circuits, backend, device in (
            (f"small x{len(small)}", small, "FakeManilaV2", "manila"),
            (f"large x{len(large)}", large, "FakeGuadalupeV2", "guadalupe"),
        ):
            if not circuits:
                continue
            a_total, a_run, a_counts = direct(circuits, backend)
            b = naive_ray(circuits, backend)
            c, c_counts = qrt(rt, circuits, device)
            n = len(circuits)
            qa, qc = quality(circuits, a_counts), quality(circuits, c_counts)
            rows.append([label, a_total, a_run, b, c, n / c, a_total / c, a_run / c, b / c, qa, qc])
            print(
                f"{label}: direct {a_total:.2f}s (run only {a_run:.2f}s), naive Ray {b:.2f}s, "
                f"qrt-ray {c:.2f}s",
                flush=True,
            )
        lat = sorted(submit_latency(rt, args.latency)) if args.latency else []
    finally:
        rt.shutdown()
        ray.shutdown()
    print()
    print(
        table(
            [
                "workload",
                "(a) direct s",
                "(a) run-only s",
                "(b) naive Ray s",
                "(c) qrt-ray s",
                "(c) circuits/s",
                "(c)/(a) tput",
                "(c)/(a run-only)",
                "(c)/(b) tput",
                "(a) fidelity",
                "(c) fidelity",
            ],
            rows,
        )
    )
    print(
        "\n(c)/(a) tput = throughput of qrt-ray relative to direct batched Aer "
        "(transpile + run); 1.0 means no overhead. (a)/(c) fidelity = mean Hellinger "
        "fidelity of the counts against the noiseless answer: the same noise model, so "
        "they should agree."
    )
    if lat:
        p50 = statistics.median(lat) * 1000
        p99 = lat[min(len(lat) - 1, int(0.99 * len(lat)))] * 1000
        print(
            f"submit() latency on an idle farm over {len(lat)} calls: "
            f"p50 {p50:.1f} ms, p99 {p99:.1f} ms, max {lat[-1] * 1000:.1f} ms"
        )


if __name__ == "__main__":
    main()
