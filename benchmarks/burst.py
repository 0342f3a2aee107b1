"""Burst: a very large number of tiny jobs submitted as fast as the client can.

A local farm (two small devices, its own store) takes ``--jobs`` one-circuit jobs (2-3
qubit GHZ, ``--shots`` shots each), submitted with ``submit_many`` in calls of
``--chunk`` as fast as the client can make them; a call the farm refuses as busy
waits the ``retry_after_s`` it names and is sent again. Then every result is fetched
and checked (shots as asked), and the store's integrity check runs (deep: every blob
hashed, every result read).

Prints the submit rate, the completion rate (jobs DONE per second from the first
submit to the last DONE), the peak resident memory of each process (client,
scheduler, devices, Ray's own), the store's size, and the integrity check. Asserts
that every job is DONE with its shots and the store is consistent.

    python benchmarks/burst.py                      # 100,000 jobs (about 15 minutes)
    python benchmarks/burst.py --jobs 5000          # a quick look
    python benchmarks/burst.py --store postgresql://user@127.0.0.1/qrt
"""

from __future__ import annotations

import argparse
import os
import tempfile
import threading
import time
from pathlib import Path

os.environ.setdefault("RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER", "0")
os.environ.setdefault("RAY_AUTH_MODE", "token")

import psutil

from qrt_ray import QuantumRuntime
from qrt_ray.config import load_farm_config_text
from qrt_ray.errors import FarmBusyError
from qrt_ray.farm import init_ray_loopback
from qrt_ray.render import table
from qrt_ray.store import open_store
from qrt_ray.store.integrity import check_integrity
from qrt_ray.workloads import ghz_circuit

FARM = """
name: burst
devices:
  - {name: manila, backend: FakeManilaV2,
     price_per_shot_usd: 0.00001, price_per_job_usd: 0.01, gpu: never}
  - {name: nairobi, backend: FakeNairobiV2,
     price_per_shot_usd: 0.000015, price_per_job_usd: 0.01, gpu: never}
"""


def process_label(proc: psutil.Process) -> str | None:
    """What a process is, for the memory table (None: not the farm's)."""
    try:
        cmd = " ".join(proc.cmdline())
    except (psutil.NoSuchProcess, psutil.AccessDenied):
        return None
    try:
        parent = proc.parent()
        if parent is not None and "ray::SchedulerActor" in " ".join(parent.cmdline()):
            return "intake parser"  # the scheduler's circuit-parsing processes
    except (psutil.NoSuchProcess, psutil.AccessDenied):
        return None
    for marker, label in (
        ("ray::SchedulerActor", "scheduler"),
        ("ray::DeviceActor", "device"),
        ("ray::CalibrationActor", "calibration manager"),
        ("ray::", "other Ray worker"),
        ("raylet", "raylet"),
        ("gcs_server", "gcs_server"),
    ):
        if marker in cmd:
            return label
    return None


class PeakMemory:
    """Samples the resident memory of the client and every farm process once a second
    and keeps each one's peak (by label, the largest process of a kind)."""

    def __init__(self, interval_s: float = 1.0) -> None:
        self.interval_s = interval_s
        self.peak: dict[str, int] = {}
        self.first: dict[str, int] = {}
        self.last: dict[str, int] = {}
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="peak-rss", daemon=True)

    def __enter__(self) -> PeakMemory:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join()

    def sample(self) -> None:
        me = psutil.Process()
        seen = {"client": me.memory_info().rss}
        for proc in psutil.process_iter():
            if proc.pid == me.pid:
                continue
            label = process_label(proc)
            if label is None:
                continue
            try:
                rss = proc.memory_info().rss
            except (psutil.NoSuchProcess, psutil.AccessDenied):
                continue
            seen[label] = max(seen.get(label, 0), rss)
        self.last = seen
        for label, rss in seen.items():
            self.first.setdefault(label, rss)
            self.peak[label] = max(self.peak.get(label, 0), rss)

    def _run(self) -> None:
        while not self._stop.wait(self.interval_s):
            self.sample()


def store_size(url: str) -> int:
    """Bytes on disk of a SQLite store (its WAL and shared memory included)."""
    return sum(p.stat().st_size for p in Path(url).parent.glob(Path(url).name + "*"))


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    p.add_argument("--jobs", type=int, default=100_000)
    p.add_argument("--shots", type=int, default=100)
    p.add_argument("--chunk", type=int, default=2_000, help="jobs per submit_many call")
    p.add_argument("--store", help="store URL (default: a new SQLite file)")
    args = p.parse_args()

    url = args.store or str(Path(tempfile.mkdtemp(prefix="qrt-burst-")) / "jobs.sqlite3")
    circuits = [ghz_circuit(2 + i % 2) for i in range(args.jobs)]
    init_ray_loopback()
    rt = QuantumRuntime.local(load_farm_config_text(FARM), store=url)
    handles = []
    busy = 0
    try:
        rt.submit(circuits[0], shots=args.shots).result(timeout_s=300)  # warm caches
        with PeakMemory() as memory:
            memory.sample()
            start = time.perf_counter()
            for i in range(0, args.jobs, args.chunk):
                chunk = circuits[i : i + args.chunk]
                while True:
                    try:
                        handles.extend(rt.submit_many(chunk, shots=args.shots))
                        break
                    except FarmBusyError as exc:
                        busy += 1
                        time.sleep(exc.retry_after_s)
                if (i // args.chunk) % 10 == 0:
                    print(f"  submitted {len(handles)}", flush=True)
            submitted = time.perf_counter() - start
            print(f"submitted {len(handles)} jobs in {submitted:.1f} s", flush=True)
            states = rt.wait(handles, timeout_s=6 * 3600)
            done_s = time.perf_counter() - start
            results = []
            for i in range(0, len(handles), 5_000):
                results.extend(rt.results(handles[i : i + 5_000], timeout_s=60))
            fetched = time.perf_counter() - start
            memory.sample()
    finally:
        rt.shutdown()
    not_done = [s for s in states.values() if s.value != "DONE"]
    wrong = [r for r in results if r.metadata.shots_executed != args.shots]
    store = open_store(url)
    try:
        t0 = time.perf_counter()
        report = check_integrity(store, deep=True)
        check_s = time.perf_counter() - t0
    finally:
        store.close()
    size = store_size(url) if not url.startswith("postgres") else None
    print()
    print(
        table(
            ["figure", "value"],
            [
                ["jobs", f"{args.jobs:,} x {args.shots} shots (2-3 qubit GHZ)"],
                ["submit rate", f"{len(handles) / submitted:,.0f} jobs/s ({submitted:.1f} s)"],
                ["completion rate", f"{len(handles) / done_s:,.0f} jobs/s ({done_s:.1f} s)"],
                ["results fetched", f"{len(results):,} in {fetched - done_s:.1f} s"],
                ["busy refusals", str(busy)],
                ["not DONE", str(len(not_done))],
                ["results with wrong shots", str(len(wrong))],
                [
                    "store size",
                    f"{size / 1e6:,.1f} MB ({size / args.jobs:,.0f} B/job)" if size else "-",
                ],
                ["integrity (deep)", f"{'clean' if report.ok else 'BROKEN'} ({check_s:.1f} s)"],
            ],
        )
    )
    print()
    print(
        table(
            ["process", "RSS at start MB", "peak RSS MB"],
            [
                [label, f"{memory.first[label] / 2**20:,.0f}", f"{peak / 2**20:,.0f}"]
                for label, peak in sorted(memory.peak.items())
            ],
        )
    )
    if not report.ok:
        print(report.render())
    assert not not_done and not wrong and report.ok
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
