"""What the farm's telemetry costs: throughput with metrics and tracing on vs off.

One process, one Ray, fresh farms of two small devices, alternating:

  off: no metrics endpoint (``metrics_port=0``), no span exporter;
  on:  the metrics endpoint scraped every second (as Prometheus would, by a thread
       of this process), and one trace per job exported to a JSON-lines file
       (``QRT_TRACE_FILE``; ``--otlp URL`` exports to a collector instead).

The counters and histograms themselves are updated in both modes (they cannot be
turned off: the endpoint and the exporters can). Each round submits the same jobs
(distinct small circuits, so every job is compiled) with ``submit_many`` and times
submission to the last result. Prints jobs/s per round and the overhead of "on"
(the issue's goal: at most 3 %).

    python benchmarks/observability.py                  # 3 rounds of each, ~3 min
    python benchmarks/observability.py --jobs 100 --rounds 1
"""

from __future__ import annotations

import argparse
import os
import socket
import statistics
import tempfile
import threading
import time
import urllib.request
from pathlib import Path

os.environ.setdefault("RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER", "0")
os.environ.setdefault("RAY_AUTH_MODE", "token")

from qiskit.circuit.random import random_circuit

from qrt_ray import QuantumRuntime, tracing
from qrt_ray.config import load_farm_config_text
from qrt_ray.farm import init_ray_loopback
from qrt_ray.render import table

FARM = load_farm_config_text(
    """
name: bench
devices:
  - {name: manila, backend: FakeManilaV2,
     price_per_shot_usd: 0.00001, price_per_job_usd: 0.01, gpu: never}
  - {name: nairobi, backend: FakeNairobiV2,
     price_per_shot_usd: 0.00002, price_per_job_usd: 0.02, gpu: never}
"""
)


def _port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


class Scraper:
    """GET the metrics endpoint every ``every_s`` seconds, as Prometheus would."""

    def __init__(self, url: str, every_s: float = 1.0) -> None:
        self.url, self.every_s = url, every_s
        self.scrapes, self.bytes = 0, 0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def __enter__(self) -> Scraper:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join()

    def _run(self) -> None:
        while not self._stop.wait(self.every_s):
            with urllib.request.urlopen(self.url, timeout=10) as r:
                self.bytes += len(r.read())
            self.scrapes += 1


def one_round(mode: str, jobs: int, shots: int, otlp: str, folder: Path) -> dict[str, object]:
    """Start a farm in ``mode``, run the jobs, stop it; returns the round's figures."""
    spans = folder / f"spans-{time.monotonic_ns()}.jsonl"
    for name in (tracing.ENV_FILE, tracing.ENV_OTLP):
        os.environ.pop(name, None)
    if mode == "on":
        if otlp:
            os.environ[tracing.ENV_OTLP] = otlp
        else:
            os.environ[tracing.ENV_FILE] = str(spans)
    rt = QuantumRuntime.local(FARM, metrics_port=_port() if mode == "on" else 0, attach=False)
    try:
        circuits = [random_circuit(3 + i % 3, 4, measure=True, seed=i) for i in range(jobs)]
        rt.wait([rt.submit(circuits[0], shots=shots)], timeout_s=300)  # warm: compile workers
        url = rt.metrics_url
        start = time.perf_counter()
        if url:
            with Scraper(url) as scraper:
                handles = rt.submit_many([[c] for c in circuits], shots=shots)
                rt.wait(handles, timeout_s=1200)
            scraped = f"{scraper.scrapes} x {scraper.bytes // max(1, scraper.scrapes)} B"
        else:
            handles = rt.submit_many([[c] for c in circuits], shots=shots)
            rt.wait(handles, timeout_s=1200)
            scraped = "-"
        took = time.perf_counter() - start
    finally:
        rt.shutdown()
    lines = len(spans.read_text().splitlines()) if spans.exists() else 0
    return {"mode": mode, "s": took, "jobs_per_s": jobs / took, "scrapes": scraped, "spans": lines}


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--jobs", type=int, default=1000, help="jobs per round")
    p.add_argument("--shots", type=int, default=200)
    p.add_argument("--rounds", type=int, default=3, help="rounds of each mode")
    p.add_argument("--otlp", default="", help="export spans to this OTLP/HTTP endpoint")
    args = p.parse_args()
    init_ray_loopback()
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        for _ in range(args.rounds):
            for mode in ("off", "on"):
                got = one_round(mode, args.jobs, args.shots, args.otlp, Path(tmp))
                rows.append(got)
                print(f"{got['mode']:>3}: {got['jobs_per_s']:.1f} jobs/s", flush=True)
    cells = [
        [r["mode"], round(r["s"], 2), round(r["jobs_per_s"], 1), r["scrapes"], r["spans"]]
        for r in rows
    ]
    print(table(["mode", "seconds", "jobs/s", "scrapes", "spans"], cells))
    off = statistics.fmean(r["jobs_per_s"] for r in rows if r["mode"] == "off")
    on = statistics.fmean(r["jobs_per_s"] for r in rows if r["mode"] == "on")
    spread = [r["jobs_per_s"] for r in rows if r["mode"] == "off"]
    noise = (max(spread) - min(spread)) / off if len(spread) > 1 else 0.0
    print(
        f"\nthroughput on/off = {on / off:.3f} (overhead {100 * (1 - on / off):+.1f} %; "
        f"goal <= 3 %); off rounds spread {100 * noise:.1f} % of their mean"
    )


if __name__ == "__main__":
    main()
