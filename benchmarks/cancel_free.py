"""How soon a cancelled job frees its device: cancel-to-free time on a real local farm.

A long job runs on a device with a short, lower-priority job queued behind it on the
same device (so it cannot run between the long job's slices); the long one is
cancelled while it runs. The time from the cancel call to the short job's DONE
transition (stored by the scheduler), less the short job's own run time, is the
cancel-to-free time (an upper bound: it includes storing the short job's result).
Two kinds of long work, each ``--trials`` times:

- ``circuits``: one job of 400 deep 5-qubit circuits (density matrices, about 10 s in
  all): the device leaves it between pieces of circuits;
- ``shots``: one 16-qubit GHZ circuit at 200,000 shots (a matrix product state, one
  trajectory a shot): time slices (``slice_s``) and shot pieces bound it.

Printed: per kind, the cancel-to-free times and the work the cancel cut short (how long
the long job had still to run, by its measured pace).

    python benchmarks/cancel_free.py              # about 3 minutes on 2 cores
    python benchmarks/cancel_free.py --trials 1
"""

from __future__ import annotations

import argparse
import statistics
import tempfile
import time

from qrt_ray import JobState, QuantumRuntime
from qrt_ray.circuits import to_qasm
from qrt_ray.config import load_farm_config_text
from qrt_ray.render import table
from qrt_ray.workloads import brickwork, ghz_circuit

FARM = """
name: cancel-bench
devices:
  - {name: manila, backend: FakeManilaV2, price_per_shot_usd: 0.00001,
     price_per_job_usd: 0.01, gpu: never}
  - {name: guadalupe, backend: FakeGuadalupeV2, price_per_shot_usd: 0.00003,
     price_per_job_usd: 0.04, gpu: never}
"""


def deep(n: int, layers: int) -> str:
    return to_qasm(brickwork(n, layers))


def ghz(n: int) -> str:
    return to_qasm(ghz_circuit(n))


def wait_state(handle: object, state: JobState, timeout_s: float = 120) -> None:
    deadline = time.monotonic() + timeout_s
    while handle.status() is not state:  # type: ignore[attr-defined]
        if time.monotonic() > deadline:
            raise TimeoutError(f"job never reached {state.value}")
        time.sleep(0.05)


def long_job(rt: QuantumRuntime, kind: str) -> tuple[str, object]:
    """(device, handle) of a long job of ``kind``."""
    if kind == "circuits":
        return "manila", rt.submit([deep(5, 60)] * 400, shots=500, device="manila", priority=9)
    return "guadalupe", rt.submit(ghz(16), shots=200_000, device="guadalupe", priority=9)


def trial(rt: QuantumRuntime, kind: str, full_s: float) -> tuple[float, float]:
    """(cancel-to-free seconds, seconds of work the long job still had to run, by
    ``full_s``: its whole run's measured time)."""
    device, long = long_job(rt, kind)
    wait_state(long, JobState.RUNNING)
    # lower priority: it cannot go first between the long job's slices
    short = rt.submit(ghz(3), shots=100, device=device, priority=0)
    wait_state(short, JobState.PLACED)
    time.sleep(2.0)
    cancelled_at = time.time()
    long.cancel()  # type: ignore[attr-defined]
    own = short.result(timeout_s=300).metadata.run_s
    done = next(e["at"] for e in short.events() if e["to"] == "DONE")
    ran = next(e["at"] for e in long.events() if e["to"] == "RUNNING")  # type: ignore[attr-defined]
    # the short job may share the long one's batch (then it is RUNNING before the
    # cancel, and waits behind the long job's pieces): the device was free of the
    # long job when the short one finished, less the short one's own run
    return done - cancelled_at - own, max(0.0, full_s - (cancelled_at - ran))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--trials", type=int, default=5)
    args = parser.parse_args()
    with (
        tempfile.TemporaryDirectory() as tmp,
        QuantumRuntime.local(load_farm_config_text(FARM), store=f"{tmp}/jobs.sqlite3") as rt,
    ):
        rows = []
        for kind in ("circuits", "shots"):
            # how long the long job runs when nobody cancels it (the work a cancel saves)
            full_s = long_job(rt, kind)[1].result(timeout_s=1800).metadata.run_s  # type: ignore[attr-defined]
            times, left = [], []
            for _ in range(args.trials):
                freed, remaining = trial(rt, kind, full_s)
                times.append(freed)
                left.append(remaining)
            rows.append(
                [
                    kind,
                    f"{full_s:.1f}",
                    f"{statistics.median(left):.1f}",
                    f"{min(times):.2f}",
                    f"{statistics.median(times):.2f}",
                    f"{max(times):.2f}",
                ]
            )
    print(
        table(
            ["long work", "full run s", "left at cancel s", "freed min s", "median s", "max s"],
            rows,
        )
    )


if __name__ == "__main__":
    main()
