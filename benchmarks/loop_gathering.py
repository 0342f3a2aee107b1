"""A plain loop of ``submit()`` with the pipelined sender gathering, and without.

Paired on one farm, rounds alternating (the order flips each round), beside the
limit (one batched ``AerSimulator.run``, transpiled beforehand) and ``submit_many``:

- *gathering* (the default): the sender waits while the loop still submits, so the
  loop's jobs reach the scheduler together and run in one simulator batch;
- *at once*: ``GATHER_IDLE_S`` and ``GATHER_MAX_S`` set to 0 in this process, so the
  sender sends the loop's first job alone and the rest behind it (the behaviour before
  gathering).

Prints each path's median seconds, its ratio to the median limit, the rounds each
loop won, and ``submit()`` percentiles. Asserts nothing: read the medians.

    python benchmarks/loop_gathering.py              # 10 rounds of 200 jobs, ~1 minute
    python benchmarks/loop_gathering.py --rounds 4
"""

from __future__ import annotations

import argparse
import statistics
import tempfile
import warnings
from pathlib import Path

from qrt_ray import QuantumRuntime, pipeline
from qrt_ray.config import load_farm_config_text
from qrt_ray.farm import init_ray_loopback
from qrt_ray.render import table
from qrt_ray.workloads import ghz_circuit

try:
    from benchmarks import per_job_overhead as overhead
except ImportError:  # run as a script: benchmarks/ itself is on sys.path
    import per_job_overhead as overhead  # type: ignore[no-redef]

warnings.filterwarnings("ignore", module="qrt_ray")

GATHERING = (pipeline.GATHER_IDLE_S, pipeline.GATHER_MAX_S)
AT_ONCE = (0.0, 0.0)


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    p.add_argument("--rounds", type=int, default=10, help="paired rounds (default 10)")
    p.add_argument("--circuits", type=int, default=200, help="GHZ jobs a round (default 200)")
    args = p.parse_args()
    many, loop, timed, device = overhead.many, overhead.loop, overhead.timed, overhead.DEVICE

    work = [ghz_circuit(5) for _ in range(args.circuits)]
    limit = overhead.Limit()
    compiled = limit.compile(work)
    limit.run(compiled[:5])  # warm Aer and the noise model
    init_ray_loopback()
    store = Path(tempfile.mkdtemp(prefix="qrt-gather-")) / "jobs.sqlite3"
    paths = ("limit", "submit_many", "gathering", "at once")
    seconds: dict[str, list[float]] = {name: [] for name in paths}
    waits: dict[str, list[float]] = {"gathering": [], "at once": []}
    with QuantumRuntime.local(load_farm_config_text(overhead.FARM), store=store) as rt:
        many(rt, work, device)  # warm the farm: workers, compile cache, noise model
        loop(rt, work, device)
        for r in range(args.rounds):
            seconds["limit"].append(timed(lambda: limit.run(compiled)))
            seconds["submit_many"].append(timed(lambda: many(rt, work, device)))
            ways = [("gathering", GATHERING), ("at once", AT_ONCE)]
            for name, (idle, most) in ways if r % 2 else ways[::-1]:
                pipeline.GATHER_IDLE_S, pipeline.GATHER_MAX_S = idle, most
                took: list[float] = []
                seconds[name].append(timed(lambda w=took: w.extend(loop(rt, work, device))))
                waits[name].extend(took)
        pipeline.GATHER_IDLE_S, pipeline.GATHER_MAX_S = GATHERING
    base = statistics.median(seconds["limit"])
    won = sum(g < a for g, a in zip(seconds["gathering"], seconds["at once"], strict=True))
    wins = {"gathering": won, "at once": args.rounds - won}
    rows = []
    for name, ts in seconds.items():
        median = statistics.median(ts)
        rows.append(
            [
                name if name in ("limit", "submit_many") else f"loop, {name}",
                f"{median * 1000:.0f}",
                f"{base / median:.2f}",
                f"{wins[name]} of {args.rounds}" if name in wins else "-",
            ]
        )
    print(table(["path", "median ms", "vs limit", "rounds won"], rows))
    for name, ws in waits.items():
        ms = [w * 1000 for w in ws]
        p50, p99 = statistics.median(ms), overhead.pct(ms, 0.99)
        print(f"submit() {name}: p50 {p50:.2f} ms, p99 {p99:.2f} ms")


if __name__ == "__main__":
    main()
