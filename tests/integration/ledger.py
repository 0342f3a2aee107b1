"""Checks shared by the integration tests: the shot ledger, and waiting for a state."""

from __future__ import annotations

import itertools
from pathlib import Path

from qrt_ray.store import open_store
from tests.waiting import wait_until


def check_ledger(store: Path | str, job_id: str, shots: int) -> list[tuple[int, int, float]]:
    """Assert every shot counted once on one calibration; returns (attempt, first, at).

    ``store``: a SQLite path or any store URL.
    """
    store = open_store(store)
    try:
        rows = store.shot_ledger(job_id)
        done = store.get(job_id)
    finally:
        store.close()
    keys = [(r.attempt, r.first_shot) for r in rows]
    assert len(set(keys)) == len(keys), rows
    # Runs on an older calibration stay in the ledger (they ran) but not in the result.
    kept = [r for r in rows if r.calibration_id == done.calibration_id]
    assert sum(r.shots for r in kept) == shots, rows
    # ... and they tile shots 0..shots: no shot missing, none counted twice
    spans = sorted((r.first_shot, r.first_shot + r.shots) for r in kept)
    assert spans[0][0] == 0 and all(a[1] == b[0] for a, b in itertools.pairwise(spans)), rows
    return [(r.attempt, r.first_shot, r.at) for r in kept]


def wait_for(predicate: object, timeout_s: float = 120, what: str = "a condition") -> None:
    """Poll until ``predicate()`` is true; fail the test after ``timeout_s``, naming
    ``what`` (see :func:`tests.waiting.wait_until`)."""
    wait_until(predicate, what=what, timeout_s=timeout_s)  # type: ignore[arg-type]
