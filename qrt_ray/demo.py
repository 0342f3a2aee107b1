"""``qrt demo``: a local farm, a realistic mixed workload, and a readable report.

It starts the default farm on a loopback-only Ray, submits a mix of GHZ, QFT, Grover,
QAOA and random circuits (3 to 20 qubits), each as its own durable job, shows progress
while they run, and reports per family where the jobs went, how long they took and how
close their results came to the ideal (noiseless) distribution.
"""

from __future__ import annotations

import statistics
import time
from collections import Counter
from dataclasses import dataclass
from typing import Any

from qrt_ray.client import QuantumRuntime
from qrt_ray.fidelity import hellinger_fidelity
from qrt_ray.lifecycle import JobState
from qrt_ray.render import Progress, table
from qrt_ray.workloads import generate_workload


@dataclass(frozen=True, slots=True)
class DemoRow:
    """One job of the demo, once it finished."""

    name: str
    family: str
    num_qubits: int
    state: str
    device: str | None
    latency_s: float
    fidelity: float | None


def run_demo(
    rt: QuantumRuntime,
    *,
    num_jobs: int = 120,
    shots: int = 2000,
    seed: int = 7,
    max_qubits: int = 20,
    timeout_s: float = 1800,
) -> dict[str, Any]:
    """Run the demo workload on a runtime and return the report as data."""
    workload = generate_workload(num_jobs, max_qubits=max_qubits, seed=seed)
    t0 = time.monotonic()
    handles = rt.submit_many([w.circuit for w in workload], shots=shots, tags=["demo"])
    submitted_s = time.monotonic() - t0
    progress = Progress(len(handles), "running")
    pending = {h.job_id for h in handles}
    finished_at: dict[str, float] = {}
    while pending and time.monotonic() - t0 < timeout_s:
        states = rt.wait([h for h in handles if h.job_id in pending], timeout_s=0.5)
        now = time.monotonic() - t0
        for job_id, state in states.items():
            if state.is_final:
                pending.discard(job_id)
                finished_at[job_id] = now
        progress.update(len(handles) - len(pending))
    elapsed = time.monotonic() - t0
    progress.close()
    states = rt.wait(handles, timeout_s=0)
    done_handles = [h for h in handles if states[h.job_id] is JobState.DONE]
    results = dict(
        zip((h.job_id for h in done_handles), rt.results(done_handles, timeout_s=0), strict=True)
    )
    rows = []
    for w, h in zip(workload, handles, strict=True):
        result = results.get(h.job_id)
        device = result.metadata.device if result else h.info()["device"]
        fid = hellinger_fidelity(result.counts(), w.ideal) if result else None
        rows.append(
            DemoRow(
                w.name,
                w.family,
                w.num_qubits,
                states[h.job_id].value,
                device,
                finished_at.get(h.job_id, elapsed),
                fid,
            )
        )
    done = [r for r in rows if r.state == JobState.DONE.value]
    return {
        "jobs": len(rows),
        "done": len(done),
        "failed": sum(r.state == JobState.FAILED.value for r in rows),
        "elapsed_s": elapsed,
        "submit_s": submitted_s,
        "circuits_per_s": len(done) / elapsed if elapsed else 0.0,
        "shots_per_s": len(done) * shots / elapsed if elapsed else 0.0,
        "shots": shots,
        "rows": rows,
    }


def format_report(report: dict[str, Any]) -> str:
    """The demo report as text: one line per job family, then totals."""
    rows: list[DemoRow] = report["rows"]
    lines = []
    body = []
    for family in sorted({r.family for r in rows}):
        group = [r for r in rows if r.family == family]
        done = [r for r in group if r.fidelity is not None]
        devices = Counter(r.device for r in group if r.device)
        top = ", ".join(f"{d}x{n}" for d, n in devices.most_common(3))
        lat = sorted(r.latency_s for r in group)
        body.append(
            [
                family,
                len(group),
                f"{min(r.num_qubits for r in group)}-{max(r.num_qubits for r in group)}",
                top or "-",
                statistics.median(lat),
                lat[min(len(lat) - 1, int(0.95 * len(lat)))],
                statistics.fmean(r.fidelity for r in done) if done else None,
                min((r.fidelity for r in done), default=None),
            ]
        )
    lines.append(
        table(
            [
                "family",
                "jobs",
                "qubits",
                "devices chosen",
                "p50 latency s",
                "p95 latency s",
                "mean fidelity",
                "min fidelity",
            ],
            body,
        )
    )
    lines.append("")
    lines.append(
        f"{report['done']}/{report['jobs']} jobs done, {report['failed']} failed, "
        f"in {report['elapsed_s']:.1f}s (submitted in {report['submit_s']:.2f}s): "
        f"{report['circuits_per_s']:.1f} circuits/s, {report['shots_per_s']:,.0f} shots/s"
    )
    lines.append(
        "fidelity = Hellinger fidelity of the measured counts against the ideal, noiseless "
        "distribution (1.0 is perfect)"
    )
    return "\n".join(lines)
