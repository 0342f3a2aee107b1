"""How well qrt predicts a job's run time: predicted against measured, job by job.

Runs the default farm in this process (the scheduler and the devices qrt runs, driven
the way device actors drive them, one job at a time so no job waits or shares the CPU)
on two workloads:

- ``demo``: the ``qrt demo`` workload (120 jobs: GHZ, QFT, Grover, QAOA and random
  circuits, 3 to 20 qubits, 2,000 shots);
- ``random``: 100 random circuits (Qiskit's ``random_circuit``), 3 to 20 qubits, depth
  2 to 4, 250 to 2,000 shots, seeded.

For every job it records the run time placement predicted for the device it chose
(before compiling), the figure after compiling (what the watchdog and the device's
backlog use), and the simulator time the job measured. Side by side, on the same runs:
the model qrt had before (physical shot time times shots plus a per-job overhead,
scaled by one learned factor per device, fed the same runs). Each model learns as the
farm does: from the runs before the job it predicts.

Printed: per workload and model, the median of measured / predicted, the share of jobs
within 1.5x and 3x, and the worst ratio. Targets: median within 1.5x, 95 % within 3x.

    python benchmarks/runtime_model.py                 # both workloads (about 15 min, 2 cores)
    python benchmarks/runtime_model.py --quick         # 30 demo + 30 random jobs
    python benchmarks/runtime_model.py --json out.json
"""

from __future__ import annotations

import argparse
import asyncio
import json
import math
import random
import statistics
import tempfile
import time
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from qiskit.circuit.random import random_circuit

from qrt_ray.actors.device import Device
from qrt_ray.actors.ports import LocalPorts, run_ready_batches
from qrt_ray.actors.scheduler import Scheduler
from qrt_ray.circuits import to_qasm
from qrt_ray.config import load_farm_config, load_policy_config
from qrt_ray.lifecycle import JobState
from qrt_ray.models import JobSpec
from qrt_ray.policies.costs import RunTimeModel
from qrt_ray.render import table
from qrt_ray.results import decode_result
from qrt_ray.store import open_store
from qrt_ray.workloads import generate_workload


@dataclass(frozen=True, slots=True)
class Row:
    """One job: where it ran and the three figures."""

    workload: str
    name: str
    qubits: int
    shots: int
    device: str
    method: str
    measured_s: float
    placed_s: float  # placement's prediction (before compiling)
    compiled_s: float  # after compiling (watchdog, backlog)
    before_s: float  # the physical model qrt had before
    active: int = 0  # the compiled circuit, as the model sees it
    gates: int = 0
    two_qubit_gates: int = 0
    bond_moves: int = 0


def workload(kind: str, count: int, seed: int) -> list[tuple[str, int, str, int]]:
    """(name, qubits, OpenQASM, shots) per job."""
    if kind == "demo":
        return [
            (w.name, w.num_qubits, to_qasm(w.circuit), 2000)
            for w in generate_workload(count, seed=seed)
        ]
    rng = random.Random(seed)
    out = []
    for i in range(count):
        n = rng.randint(3, 20)
        depth = rng.choice((2, 3, 4))
        shots = rng.choice((250, 500, 1000, 2000))
        qc = random_circuit(n, depth, max_operands=2, measure=True, seed=rng.randrange(2**31))
        out.append((f"random-{n}-d{depth}.{i}", n, to_qasm(qc), shots))
    return out


class Bench:
    """The default farm in this process, one job at a time."""

    def __init__(self, store_path: Path) -> None:
        farm = load_farm_config()
        policies = load_policy_config()
        self.devices = {d.name: Device(d, scheduling=policies.scheduling) for d in farm.devices}
        self.store = open_store(store_path)
        self.sched = Scheduler(
            self.store, LocalPorts(list(self.devices.values())), policy_config=policies
        )
        self.before = RunTimeModel(
            alpha=policies.run_time.learning_rate,
            rep_delay_s=policies.run_time.rep_delay_s,
            overhead_s=policies.run_time.job_overhead_s,
        )
        self._placed: dict[str, Any] = {}
        place = self.sched.placer.place

        def recording(job: Any, loads: Any, options: Any) -> Any:
            placement = place(job, loads, options)
            self._placed[job.key] = placement
            return placement

        self.sched.placer.place = recording  # type: ignore[method-assign]

    async def run_one(self, kind: str, name: str, qubits: int, qasm: str, shots: int) -> Row:
        sched = self.sched
        ((rec, _),) = await sched.submit([JobSpec(circuits=(qasm,), shots=shots)])
        job_id = rec.job_id
        compiled_s = math.nan
        deadline = time.monotonic() + 3600
        while sched.live_count() and time.monotonic() < deadline:
            job = sched._jobs.get(job_id)
            if job is not None and job.expected is not None and job.expected.prior is not None:
                compiled_s = job.expected.run_s
            if not await run_ready_batches(sched, self.devices.values()):
                await asyncio.sleep(0.005)
        final = self.store.get(job_id)
        if final is None or final.state is not JobState.DONE:
            raise RuntimeError(f"{name} ended {final.state if final else 'missing'}")
        placement = self._placed[job_id]
        result = decode_result(self.store.get_blob(final.result_sha256))
        measured = result.metadata.run_s
        method = result.metadata.simulator_method
        (info,) = result.metadata.compile
        duration = placement.shot_duration_s
        before_s = self.before.predict(placement.device, duration, shots, 1)
        self.before.observe(placement.device, duration, shots, 1, measured)
        return Row(
            kind,
            name,
            qubits,
            shots,
            placement.device,
            method,
            measured,
            placement.run_s,
            compiled_s,
            before_s,
            info.active_qubits,
            info.gates,
            info.two_qubit_gates,
            info.bond_moves,
        )


def summary(rows: list[Row], attr: str) -> dict[str, float]:
    """Median measured / predicted, shares within 1.5x and 3x, the worst factor."""
    ratios = [r.measured_s / getattr(r, attr) for r in rows if getattr(r, attr) > 0]
    factors = [max(x, 1 / x) for x in ratios]
    return {
        "median_ratio": statistics.median(ratios),
        "within_1_5x": sum(f <= 1.5 for f in factors) / len(factors),
        "within_3x": sum(f <= 3 for f in factors) / len(factors),
        "worst_factor": max(factors),
    }


def report(rows: list[Row]) -> str:
    lines = []
    body = []
    for kind in sorted({r.workload for r in rows}):
        part = [r for r in rows if r.workload == kind]
        for label, attr in (
            ("before: physical model", "before_s"),
            ("after: at placement", "placed_s"),
            ("after: compiled", "compiled_s"),
        ):
            s = summary(part, attr)
            ok = 1 / 1.5 <= s["median_ratio"] <= 1.5 and s["within_3x"] >= 0.95
            body.append(
                [
                    kind,
                    str(len(part)),
                    label,
                    f"{s['median_ratio']:.2f}",
                    f"{100 * s['within_1_5x']:.0f} %",
                    f"{100 * s['within_3x']:.0f} %",
                    f"{s['worst_factor']:.1f}x",
                    "yes" if ok else "no",
                ]
            )
    lines.append(
        table(
            ["workload", "jobs", "model", "median measured/predicted", "within 1.5x",
             "within 3x", "worst", "target met"],
            body,
        )
    )  # fmt: skip
    by_method: dict[str, list[Row]] = {}
    for r in rows:
        by_method.setdefault(r.method, []).append(r)
    body = []
    for method, part in sorted(by_method.items()):
        s = summary(part, "compiled_s")
        body.append(
            [method, str(len(part)), f"{s['median_ratio']:.2f}", f"{100 * s['within_3x']:.0f} %"]
        )
    lines.append("")
    lines.append("after, compiled, by simulation method:")
    lines.append(table(["method", "jobs", "median measured/predicted", "within 3x"], body))
    return "\n".join(lines)


async def main_async(args: argparse.Namespace) -> list[Row]:
    with tempfile.TemporaryDirectory() as tmp:
        bench = Bench(Path(tmp) / "jobs.sqlite3")
        await bench.sched.start()
        rows: list[Row] = []
        plan = []
        demo_n, random_n = (30, 30) if args.quick else (120, 100)
        if "demo" in args.workloads:
            plan += [("demo", *w) for w in workload("demo", demo_n, 7)]
        if "random" in args.workloads:
            plan += [("random", *w) for w in workload("random", random_n, args.seed)]
        start = time.monotonic()
        for k, (kind, name, qubits, qasm, shots) in enumerate(plan, 1):
            row = await bench.run_one(kind, name, qubits, qasm, shots)
            rows.append(row)
            print(
                f"[{k}/{len(plan)} {time.monotonic() - start:5.0f}s] {name:20s} "
                f"{row.device:10s} {row.method:20s} measured {row.measured_s:8.3f}s, "
                f"predicted {row.compiled_s:8.3f}s (placed {row.placed_s:8.3f}s, "
                f"before {row.before_s:8.3f}s)",
                flush=True,
            )
        await bench.sched.stop()
        bench.store.close()
        return rows


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--quick", action="store_true", help="30 jobs of each workload")
    parser.add_argument("--workloads", nargs="+", default=["demo", "random"])
    parser.add_argument("--seed", type=int, default=11, help="seed of the random circuits")
    parser.add_argument("--json", type=Path, help="write every job's figures here")
    args = parser.parse_args()
    rows = asyncio.run(main_async(args))
    print()
    print(report(rows))
    if args.json:
        args.json.write_text(json.dumps([asdict(r) for r in rows], indent=1))


if __name__ == "__main__":
    main()
