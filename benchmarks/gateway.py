"""The tenants' HTTP gateway against the operators' Ray-native path, and a noisy
neighbour, on one local farm in one run.

Part 1, submit latency and throughput (the issue's goal: HTTP p50 <= 2x Ray-native).
The same one-circuit job (a 3-qubit GHZ, 100 shots) is submitted through
``QuantumRuntime.submit`` over Ray and through ``qrt_ray.connect(url, token)`` over
HTTP (Ray Serve on 127.0.0.1, token checked, tenant limits and budget checked, job
audited): first one call at a time, alternating the paths call by call so both see
the same farm; then ``--threads`` threads submitting as fast as they can for
``--seconds`` each path. The farm runs the jobs meanwhile (both paths alike).

Part 2, noisy neighbour. Tenant B submits a job every 0.25 s and waits for its result
(its latency: submit to result): alone; beside tenant A submitting at its limit
(``--a-rate`` jobs/s, from four threads); beside A trying ten times that; alone
again. Printed: B's p50/p95 in each phase (the goal: p95 beside the flood within
+10 % of alone; beside A at its limit is the fair baseline for what the throttled
excess itself costs, since A's accepted jobs share the devices), and what A got
(accepted, throttled with 429 and Retry-After).

    python benchmarks/gateway.py                 # about 3 minutes on 2 cores
    python benchmarks/gateway.py --calls 100 --seconds 5 --b-jobs 40
    python benchmarks/gateway.py --parts neighbour
"""

from __future__ import annotations

import argparse
import os
import socket
import statistics
import threading
import time
from collections.abc import Callable

os.environ.setdefault("RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER", "0")

import qrt_ray
from qrt_ray import QuantumRuntime
from qrt_ray.circuits import to_qasm
from qrt_ray.errors import QuotaExceededError
from qrt_ray.render import table
from qrt_ray.workloads import ghz_circuit

UNLIMITED = {"submit_rate_per_s": 100000.0, "submit_burst": 100000, "max_concurrent_jobs": 100000}


def _port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def pct(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, round(q * (len(ordered) - 1)))]


def latency_row(name: str, ms: list[float]) -> list[object]:
    return [name, len(ms), round(pct(ms, 0.5), 2), round(pct(ms, 0.95), 2),
            round(statistics.fmean(ms), 2)]  # fmt: skip


def throughput(submit: Callable[[], object], threads: int, seconds: float) -> float:
    done = [0] * threads
    end = time.monotonic() + seconds

    def work(i: int) -> None:
        while time.monotonic() < end:
            submit()
            done[i] += 1

    pool = [threading.Thread(target=work, args=(i,)) for i in range(threads)]
    started = time.monotonic()
    for t in pool:
        t.start()
    for t in pool:
        t.join()
    return sum(done) / (time.monotonic() - started)


def part_one(rt: QuantumRuntime, remote: QuantumRuntime, args: argparse.Namespace) -> None:
    circuit = to_qasm(ghz_circuit(3))
    for path in (rt, remote):  # warm both paths (connections, parsers, caches)
        for _ in range(10):
            path.submit(circuit, shots=100)
    ray_ms: list[float] = []
    http_ms: list[float] = []
    for _ in range(args.calls):
        for path, out in ((rt, ray_ms), (remote, http_ms)):
            start = time.perf_counter()
            path.submit(circuit, shots=100)
            out.append(1000 * (time.perf_counter() - start))
    print("\nsubmit latency, one call at a time (ms):")
    rows = [latency_row("Ray-native", ray_ms), latency_row("HTTP gateway", http_ms)]
    print(table(["path", "calls", "p50", "p95", "mean"], rows))
    ratio = pct(http_ms, 0.5) / pct(ray_ms, 0.5)
    print(f"HTTP/Ray p50 ratio: {ratio:.2f} (goal <= 2.00)")
    rates = {
        name: throughput(lambda p=path: p.submit(circuit, shots=100), args.threads, args.seconds)
        for name, path in (("Ray-native", rt), ("HTTP gateway", remote))
    }
    print(f"\nsubmit throughput, {args.threads} threads x {args.seconds:g} s (jobs/s):")
    print(table(["path", "jobs/s"], [[k, round(v, 1)] for k, v in rates.items()]))
    print(f"HTTP/Ray throughput ratio: {rates['HTTP gateway'] / rates['Ray-native']:.2f}")


def b_run(b: QuantumRuntime, jobs: int) -> list[float]:
    circuit = to_qasm(ghz_circuit(3))
    out = []
    for _ in range(jobs):
        start = time.perf_counter()
        b.submit(circuit, shots=100).result(timeout_s=120)
        out.append(1000 * (time.perf_counter() - start))
        time.sleep(max(0.0, 0.25 - (time.perf_counter() - start)))
    return out


class Neighbour:
    """Tenant A submitting from four threads at ``rate`` jobs/s in all, counting what
    it gets back."""

    def __init__(self, a: QuantumRuntime, rate: float) -> None:
        self.a = a
        self.rate = rate
        self.got = {"accepted": 0, "throttled": 0, "clear": 0, "other": 0}
        self._stop = threading.Event()
        self._lock = threading.Lock()
        self._threads = [threading.Thread(target=self._run) for _ in range(4)]
        self.seconds = 0.0

    def __enter__(self) -> Neighbour:
        self._started = time.monotonic()
        for t in self._threads:
            t.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        for t in self._threads:
            t.join()
        self.seconds = time.monotonic() - self._started

    def _run(self) -> None:
        circuit = to_qasm(ghz_circuit(3))
        pause = 4 / self.rate
        while not self._stop.is_set():
            t0 = time.perf_counter()
            try:
                self.a.submit(circuit, shots=100)
                kind, clear = "accepted", False
            except QuotaExceededError as exc:
                kind = "throttled"
                clear = exc.retry_after_s > 0 and exc.limit == "submit_rate"
            except Exception:
                kind, clear = "other", False
            with self._lock:
                self.got[kind] += 1
                self.got["clear"] += clear
            self._stop.wait(max(0.0, pause - (time.perf_counter() - t0)))

    def line(self, limit: float) -> str:
        g = self.got
        tried = sum(g[k] for k in ("accepted", "throttled", "other")) / self.seconds
        return (
            f"A tried {tried:.1f} jobs/s against a limit of {limit:g}: {g['accepted']} "
            f"accepted, {g['throttled']} throttled (429; {g['clear']} named the limit and "
            f"a retry time), {g['other']} other errors"
        )


def part_two(rt: QuantumRuntime, url: str, args: argparse.Namespace) -> None:
    rt.administer("tenant_set", name="bench-b", limits=UNLIMITED)
    limits = {"submit_rate_per_s": args.a_rate, "submit_burst": max(1, int(args.a_rate))}
    rt.administer("tenant_set", name="bench-a", limits=limits)
    b_token = rt.administer("token_create", tenant="bench-b", user="b")["token"]
    a_token = rt.administer("token_create", tenant="bench-a", user="a")["token"]
    # synchronous submits: each call's own cost and answer (429s included) are measured
    b = qrt_ray.connect(url, token=b_token, pipeline=False)
    a = qrt_ray.connect(url, token=a_token, pipeline=False)
    alone = b_run(b, args.b_jobs)
    with Neighbour(a, args.a_rate) as polite:
        beside_polite = b_run(b, args.b_jobs)
    with Neighbour(a, 10 * args.a_rate) as flood:
        beside_flood = b_run(b, args.b_jobs)
    again = b_run(b, args.b_jobs)
    print("\nnoisy neighbour: tenant B's job latency, submit to result (ms):")
    rows = [
        latency_row("alone", alone),
        latency_row("beside A at its limit", beside_polite),
        latency_row("beside A at 10x its limit", beside_flood),
        latency_row("alone again", again),
    ]
    print(table(["B", "jobs", "p50", "p95", "mean"], rows))
    base = pct(alone + again, 0.95)
    flood_p95 = pct(beside_flood, 0.95)
    print(f"B p95 beside the flood / alone: {flood_p95 / base:.3f} (the goal, <= 1.10)")
    print(
        f"B p95 beside the flood / beside A at its limit: "
        f"{flood_p95 / pct(beside_polite, 0.95):.3f} (what the throttled excess costs B)"
    )
    print("A at its limit: " + polite.line(args.a_rate))
    print("A flooding:     " + flood.line(args.a_rate))


def main() -> None:
    p = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    p.add_argument("--calls", type=int, default=300, help="latency calls per path")
    p.add_argument("--threads", type=int, default=8)
    p.add_argument("--seconds", type=float, default=10.0, help="throughput run per path")
    p.add_argument("--b-jobs", type=int, default=80, help="tenant B's jobs per phase")
    p.add_argument("--a-rate", type=float, default=5.0, help="tenant A's limit, jobs/s")
    p.add_argument(
        "--parts", nargs="+", default=["latency", "neighbour"], choices=["latency", "neighbour"]
    )
    args = p.parse_args()
    from qrt_ray.gateway import start_gateway

    with QuantumRuntime.local(attach=False, pipeline=False) as rt:
        url = start_gateway(rt.namespace, port=_port())
        rt.administer("tenant_set", name="bench", limits=UNLIMITED)
        token = rt.administer("token_create", tenant="bench", user="bench")["token"]
        remote = qrt_ray.connect(url, token=token, pipeline=False)
        print(f"farm up; gateway at {url}")
        if "latency" in args.parts:
            part_one(rt, remote, args)
        if "neighbour" in args.parts:
            part_two(rt, url, args)
        from ray import serve

        serve.shutdown()


if __name__ == "__main__":
    main()
