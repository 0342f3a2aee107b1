"""Soak: a steady mixed load at a share of measured capacity, for a long time.

First the capacity: a burst of the mix (``--capacity-jobs`` jobs) on an idle farm, its
completion rate in jobs per second. Then ``--minutes`` of steady load at ``--load`` of
that rate: every 500 ms the client submits the jobs due by then (``submit_many``),
drawn from the mix:

* 70 %: 2-3 qubit GHZ, 100 shots, placed by the farm;
* 25 %: 5-qubit random circuits of depth 6, 1,000 shots, placed by the farm;
* 5 %: a 5-qubit GHZ pinned to nairobi, 4,000 shots.

Per minute it reports the latency (submit to DONE, from the store) p50 and p95 of the
jobs that finished in it, the unfinished jobs at its end, and each process's resident
memory. Then the trends: the least-squares slope of p50, p95 and of the unfinished
count over the minutes after warm-up (the first ``--warmup`` minutes), and each
process's memory growth from the end of warm-up to the end. Flat means: latency
slope below 2 % of its mean per minute, memory growth below 5 %, and the unfinished
count not rising by more than a minute's submissions over the run. Asserts nothing:
read the trends (the machine is shared). ``--pool`` draws the random circuits from a
fixed set: with every circuit new, the farm's bounded caches of compiled circuits and
estimates (20,000 and 50,000 entries) take longer than ten minutes to fill.

    python benchmarks/soak.py                       # 10 minutes at 80 %
    python benchmarks/soak.py --minutes 2 --capacity-jobs 500   # a quick look
"""

from __future__ import annotations

import argparse
import os
import random
import statistics
import sys
import tempfile
import time
from pathlib import Path

os.environ.setdefault("RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER", "0")
os.environ.setdefault("RAY_AUTH_MODE", "token")
sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from qiskit import QuantumCircuit
from qiskit.circuit.random import random_circuit

from benchmarks.burst import FARM, PeakMemory
from qrt_ray import JobHandle, QuantumRuntime
from qrt_ray.config import load_farm_config_text
from qrt_ray.errors import FarmBusyError
from qrt_ray.farm import init_ray_loopback
from qrt_ray.render import table
from qrt_ray.store import open_store
from qrt_ray.store.integrity import check_integrity
from qrt_ray.workloads import ghz_circuit

TICK_S = 0.5


def mix(rng: random.Random, pool: int = 0) -> tuple[QuantumCircuit, dict[str, object]]:
    """One job of the mix: (circuit, submit options); ``pool`` > 0 draws the random
    circuits from that many (so the farm's caches of circuits fill and stay full)."""
    draw = rng.random()
    if draw < 0.70:
        return ghz_circuit(rng.choice((2, 3))), {"shots": 100}
    if draw < 0.95:
        seed = rng.randrange(pool) if pool else rng.randrange(2**30)
        qc = random_circuit(5, 6, max_operands=2, measure=True, seed=seed)
        return qc, {"shots": 1000}
    return ghz_circuit(5), {"shots": 4000, "device": "nairobi"}


def submit_mixed(
    rt: QuantumRuntime, jobs: list[tuple[QuantumCircuit, dict[str, object]]]
) -> list[JobHandle]:
    """Submit jobs grouped by options (one call per group); a busy farm's refusal
    waits the time it names and tries again."""
    groups: dict[tuple[tuple[str, object], ...], list[QuantumCircuit]] = {}
    for qc, options in jobs:
        groups.setdefault(tuple(sorted(options.items())), []).append(qc)
    sent: list[JobHandle] = []
    for key, circuits in groups.items():
        while True:
            try:
                sent.extend(rt.submit_many(circuits, **dict(key)))
                break
            except FarmBusyError as exc:
                time.sleep(exc.retry_after_s)
    return sent


def slope(values: list[float]) -> float:
    """Least-squares slope of ``values`` against their index (per minute)."""
    n = len(values)
    if n < 2:
        return 0.0
    xs = range(n)
    mx, my = (n - 1) / 2, statistics.fmean(values)
    return sum((x - mx) * (y - my) for x, y in zip(xs, values, strict=True)) / sum(
        (x - mx) ** 2 for x in xs
    )


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    p.add_argument("--minutes", type=float, default=10.0)
    p.add_argument("--load", type=float, default=0.8, help="share of measured capacity")
    p.add_argument("--capacity-jobs", type=int, default=3000)
    p.add_argument("--warmup", type=int, default=2, help="minutes left out of the trends")
    p.add_argument("--seed", type=int, default=5)
    p.add_argument(
        "--pool",
        type=int,
        default=0,
        help="draw the random circuits from this many (0: every one new)",
    )
    args = p.parse_args()

    rng = random.Random(args.seed)
    url = str(Path(tempfile.mkdtemp(prefix="qrt-soak-")) / "jobs.sqlite3")
    init_ray_loopback()
    rt = QuantumRuntime.local(load_farm_config_text(FARM), store=url)
    minutes: list[dict[str, float]] = []
    memory_by_minute: list[dict[str, int]] = []
    try:
        t0 = time.perf_counter()
        burst = [mix(rng, args.pool) for _ in range(args.capacity_jobs)]
        rt.wait(submit_mixed(rt, burst), timeout_s=3600)
        capacity = args.capacity_jobs / (time.perf_counter() - t0)
        rate = args.load * capacity
        print(f"capacity {capacity:.1f} jobs/s; soaking at {rate:.1f} jobs/s", flush=True)
        store = open_store(url)
        with PeakMemory(interval_s=5.0) as memory:
            start_wall = time.time()
            start = time.perf_counter()
            due = 0.0
            submitted = 0
            minute_end = start + 60.0
            while time.perf_counter() - start < args.minutes * 60:
                now = time.perf_counter()
                due += rate * TICK_S
                n = int(due) - submitted
                if n > 0:
                    submitted += len(submit_mixed(rt, [mix(rng, args.pool) for _ in range(n)]))
                if now >= minute_end:
                    memory.sample()
                    memory_by_minute.append(dict(memory.last))
                    counts = store.counts_by_state()
                    live = sum(v for k, v in counts.items() if not k.is_final)
                    minutes.append({"live": live, "submitted": submitted})
                    print(
                        f"  minute {len(minutes)}: {submitted} submitted, {live} unfinished",
                        flush=True,
                    )
                    minute_end += 60.0
                time.sleep(max(0.0, now + TICK_S - time.perf_counter()))
            if len(minutes) < int(args.minutes):  # the last minute ends with the loop
                memory.sample()
                memory_by_minute.append(dict(memory.last))
                counts = store.counts_by_state()
                live = sum(v for k, v in counts.items() if not k.is_final)
                minutes.append({"live": live, "submitted": submitted})
        while any(not k.is_final and v for k, v in store.counts_by_state().items()):
            time.sleep(1.0)  # the last minute's jobs finish
        finished = store.finished_jobs(start_wall, time.time() + 1)
        report = check_integrity(store)
        store.close()
    finally:
        rt.shutdown()
    for i, row in enumerate(minutes):
        lo, hi = start_wall + 60 * i, start_wall + 60 * (i + 1)
        lat = sorted(f.latency_s for f in finished if lo <= f.finished_at < hi)
        row["done"] = len(lat)
        row["p50"] = lat[len(lat) // 2] if lat else float("nan")
        row["p95"] = lat[int(len(lat) * 0.95)] if lat else float("nan")
    labels = sorted(memory_by_minute[-1]) if memory_by_minute else []
    print()
    print(
        table(
            ["minute", "done", "p50 s", "p95 s", "unfinished", *[f"{x} MB" for x in labels]],
            [
                [
                    i + 1,
                    int(r["done"]),
                    f"{r['p50']:.2f}",
                    f"{r['p95']:.2f}",
                    int(r["live"]),
                    *[f"{memory_by_minute[i].get(x, 0) / 2**20:.0f}" for x in labels],
                ]
                for i, r in enumerate(minutes)
            ],
        )
    )
    if minutes:
        achieved = minutes[-1]["submitted"] / (60 * len(minutes))
        print(
            f"\noffered {achieved:.1f} jobs/s: {achieved / capacity:.0%} of the measured "
            f"capacity ({capacity:.1f} jobs/s); the target was {args.load:.0%}"
        )
    after = minutes[args.warmup :]
    if len(after) >= 2:
        print()
        for name in ("p50", "p95"):
            values = [r[name] for r in after]
            mean = statistics.fmean(values)
            s = slope(values)
            flat = s < 0.02 * mean  # falling latency is no harm: only a rise counts
            print(
                f"{name}: mean {mean:.2f} s, slope {s:+.3f} s/min "
                f"({s / mean:+.1%} of the mean per minute) {'flat' if flat else 'NOT FLAT'}"
            )
        per_minute = rate * 60
        rise = after[-1]["live"] - after[0]["live"]
        print(
            f"unfinished: {after[0]['live']:.0f} -> {after[-1]['live']:.0f} "
            f"(slope {slope([r['live'] for r in after]):+.1f}/min; a minute's submissions "
            f"are {per_minute:.0f}) {'flat' if rise < per_minute else 'GROWING'}"
        )
        warm = memory_by_minute[args.warmup - 1] if args.warmup else memory_by_minute[0]
        for label in labels:
            a, b = warm.get(label, 0), memory_by_minute[-1].get(label, 0)
            growth = (b - a) / a if a else 0.0
            print(
                f"memory {label}: {a / 2**20:.0f} -> {b / 2**20:.0f} MB ({growth:+.1%}) "
                f"{'flat' if growth < 0.05 else 'GROWING'}"
            )
    if report is not None:
        print(f"integrity: {'clean' if report.ok else 'BROKEN'}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
