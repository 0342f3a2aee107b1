"""One short run of a whole runtime (scheduler and devices in one process, no Ray),
for the kill -9 drill: it recovers whatever the store holds, submits its share of the
drill's jobs (keys fixed by the drill, so a submit retried after a crash makes no second
job), prints each acknowledged job id as soon as its submit returned, and drives the
farm until every job is final or it is killed.

    python -m tests.chaos.crash_child STORE_URL RUN JOBS_PER_RUN
"""

from __future__ import annotations

import asyncio
import sys
import tempfile
from pathlib import Path

from tests.local_farm import drive, make, spec


async def main(store_url: str, run: int, per_run: int) -> None:
    store, devices, sched = make(Path(tempfile.mkdtemp()), store_url=store_url)
    await sched.start()
    print("STARTED", flush=True)
    for i in range(per_run):
        key = f"drill-{run}-{i}"
        ((rec, _),) = await sched.submit(
            [spec(2 + i % 2, shots=300 + 100 * (i % 3), seed=i, idempotency_key=key)]
        )
        print(f"ACK {rec.job_id} {key}", flush=True)
    await drive(sched, devices, until_s=120)
    await sched.stop()
    store.close()
    print("DONE", flush=True)


if __name__ == "__main__":
    asyncio.run(main(sys.argv[1], int(sys.argv[2]), int(sys.argv[3])))
