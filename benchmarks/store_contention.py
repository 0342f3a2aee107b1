"""The store's writes of one job round, alone and beside a busy thread.

The scheduler's store writer is a thread of the scheduler's process. Each statement
it runs hands the GIL over while SQLite works and must win it back afterwards, which
takes up to the switch interval while the process's event loop runs Python. This
times the writes of one round of 200 jobs (admit; the moves to COMPILING and PLACED;
the move to RUNNING; the ledger lines) on a SQLite store, written:

- *row by row*: a statement per row, as PostgreSQL writes them (and SQLite did before);
- *batched*: a few statements of many rows (`qrt_ray.store.batched`);

each with the process otherwise idle, and beside a thread that runs Python without a
pause (the event loop at its busiest), at the interpreter's default switch interval
(5 ms) and at the scheduler's (`SWITCH_INTERVAL_S`). Prints the median milliseconds of
each write and each row's ratio to *batched, idle*. Asserts nothing.

    python benchmarks/store_contention.py            # 5 rounds each, ~1 minute
    python benchmarks/store_contention.py --rounds 3
"""

from __future__ import annotations

import argparse
import statistics
import sys
import tempfile
import threading
import time
from collections.abc import Callable
from pathlib import Path

from qrt_ray.lifecycle import JobState
from qrt_ray.models import JobSpec
from qrt_ray.render import table
from qrt_ray.store import JobRecord, ShotRecord, SQLiteJobStore, StateUpdate
from qrt_ray.tuning import SWITCH_INTERVAL_S

S = JobState
SPEC = JobSpec(circuits=("OPENQASM 2.0;",), shots=1000)
PLACEMENT = {"device": "manila", "ranking": [["manila", 0.93]], "expected_fidelity": 0.93}


class Busy:
    """A thread running Python without a pause while the block runs."""

    def __init__(self, on: bool) -> None:
        self.on, self._stop = on, threading.Event()
        self._thread = threading.Thread(target=self._spin, daemon=True)

    def _spin(self) -> None:
        x = 0
        while not self._stop.is_set():
            for i in range(1000):
                x += i * i

    def __enter__(self) -> Busy:
        if self.on:
            self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        if self.on:
            self._thread.join()


def one_round(store: SQLiteJobStore, tag: str, n: int) -> list[float]:
    """Milliseconds of each write of a round of ``n`` jobs."""
    ids = [f"{tag}-{i}" for i in range(n)]
    writes: list[Callable[[], object]] = [
        lambda: store.admit([JobRecord(j, S.QUEUED, SPEC, 1.0, 1.0) for j in ids]),
        lambda: store.apply(
            [
                u
                for j in ids
                for u in (
                    StateUpdate(j, S.QUEUED, S.COMPILING, 2.0, fields={"placement": PLACEMENT}),
                    StateUpdate(j, S.COMPILING, S.PLACED, 2.1, fields={"calibration_id": "c1"}),
                )
            ]
        ),
        lambda: store.apply(
            [StateUpdate(j, S.PLACED, S.RUNNING, 3.0, fields={"attempts": 1}) for j in ids]
        ),
        lambda: store.record_shots([ShotRecord(j, 1, "c1", 1000, 4.0) for j in ids]),
    ]
    out = []
    for write in writes:
        start = time.perf_counter()
        write()
        out.append((time.perf_counter() - start) * 1000)
    return out


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    p.add_argument("--rounds", type=int, default=5, help="rounds of each setting (default 5)")
    p.add_argument("--jobs", type=int, default=200, help="jobs a round (default 200)")
    args = p.parse_args()
    default_interval = sys.getswitchinterval()
    settings = [
        ("batched", False, default_interval),
        ("row by row", False, default_interval),
        ("batched", True, default_interval),
        ("row by row", True, default_interval),
        ("batched", True, SWITCH_INTERVAL_S),
        ("row by row", True, SWITCH_INTERVAL_S),
    ]
    rows, base = [], None
    for k, (how, busy, interval) in enumerate(settings):
        store = SQLiteJobStore(Path(tempfile.mkdtemp(prefix="qrt-contention-")) / "jobs.sqlite3")
        store.locked_writes = how == "batched"
        sys.setswitchinterval(interval)
        try:
            with Busy(busy):
                times = [one_round(store, f"s{k}r{r}", args.jobs) for r in range(args.rounds)]
        finally:
            sys.setswitchinterval(default_interval)
            store.close()
        medians = [statistics.median(col) for col in zip(*times, strict=True)]
        total = sum(medians)
        base = base or total
        rows.append(
            [how, "busy" if busy else "idle", f"{interval * 1000:g}"]
            + [f"{m:.1f}" for m in medians]
            + [f"{total:.1f}", f"{total / base:.1f}x"]
        )
    head = ["writes", "other thread", "switch ms", "admit", "place", "run", "ledger", "total ms"]
    print(f"{args.jobs} jobs a round, median of {args.rounds} rounds; SQLite, synchronous=FULL")
    print(table([*head, "vs batched idle"], rows))


if __name__ == "__main__":
    main()
