"""How the farm's long-lived processes use the machine: the garbage collector, and
the simulator's CPU priority.

**The collector.** A scheduler or device process holds a large heap once it has
started (Qiskit, Ray, NumPy, the farm's configuration): about 160,000 objects the
collector tracks. A full collection walks all of them; it came about once every
1,000 jobs and stopped the scheduler's event loop for 70-120 ms each time (every
call to it waited that long), about 0.1 ms of CPU a job. What a process holds once
it has started stays for its life, so it is taken out of every later collection:
collected once, then frozen. Later objects (jobs, results) are collected as before;
frozen ones are still freed when nothing refers to them, except those in a reference
cycle dropped later (the start-up calibration a recalibration replaces, say): they stay,
a fixed amount once, never a growing one.

**The simulator's priority.** On one machine the simulator's threads and the control
plane (scheduler, gateway, clients) share the cores, and the simulator keeps them all
busy. The device's batch thread, which calls the simulator, and the OpenMP threads the
simulator starts from it get a lower CPU priority, so a submit or a status call is
answered first and the simulator takes what is left (on a node of its own it loses
nothing). Threads a library started elsewhere (at import) keep theirs.

**Handing the GIL back.** The scheduler's store writer is a thread of the scheduler's
process, and each statement it runs hands the GIL over while the database works. When
the event loop is running Python meanwhile, the writer waits for the interpreter's
switch interval (5 ms by default) to have it back. A batch writes in a few statements
(:mod:`qrt_ray.store.batched`), but it still waited about 5 ms a statement and 5 ms a
slice of its own Python. At :data:`SWITCH_INTERVAL_S` the event loop gives the GIL up
sooner; 200 jobs' moves beside a busy thread took 136 ms at 5 ms and 42 ms at 0.5 ms
(``benchmarks/store_contention.py``).
"""

from __future__ import annotations

import gc
import os
import sys
import threading

# the scheduler process's switch interval (seconds): see "Handing the GIL back"
SWITCH_INTERVAL_S = 0.0005


def settle_heap() -> int:
    """Collect once, then keep every object alive now out of later collections.

    Call it at the end of a long-lived process's start-up, never in a loop: cyclic
    garbage made after it is collected as usual, but a cycle frozen here and dropped
    later would never be.

    Returns:
        How many objects are now frozen.
    """
    gc.collect()
    gc.freeze()
    return gc.get_freeze_count()


def lower_priority(nice: int) -> bool:
    """Lower the calling thread's CPU priority by ``nice`` (Linux, where priority is
    per thread and the threads it starts later inherit it).

    Returns:
        Whether it did (elsewhere, or where the system refuses, it does nothing).
    """
    if sys.platform != "linux":
        return False
    try:
        tid = threading.get_native_id()
        now = os.getpriority(os.PRIO_PROCESS, tid)
        os.setpriority(os.PRIO_PROCESS, tid, min(19, now + nice))
    except OSError:
        return False
    return True


def quick_handoffs(interval_s: float = SWITCH_INTERVAL_S) -> float:
    """Make the process's threads hand the GIL over after ``interval_s`` of Python
    instead of the default 5 ms (see "Handing the GIL back"); returns the interval it
    replaced. Process-wide: for a process whose threads wait on each other (the
    scheduler's event loop and its store writer), not for a simulator's."""
    before = sys.getswitchinterval()
    sys.setswitchinterval(interval_s)
    return before
