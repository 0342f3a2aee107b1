"""Reads and writes of named jobs find them by id, whatever the store holds.

SQLite picks an index from the query's shape, not from the table's size: a query
that names both job ids and a state can read through the state index, every job in
that state, and so grow with the store (a loop's read-ahead of 200 results took 34
ms at 20,000 jobs that way, 0.8 ms by id). Each statement a by-id call runs is
traced here and its plan read back.
"""

from __future__ import annotations

import sqlite3
from collections.abc import Callable
from pathlib import Path

import pytest

from qrt_ray.lifecycle import JobState
from qrt_ray.models import JobSpec
from qrt_ray.store import JobRecord, SQLiteJobStore, StateUpdate
from qrt_ray.store.retention import collect_garbage

S = JobState
SPEC = JobSpec(circuits=("OPENQASM 2.0;",), shots=100)


class TracedStore(SQLiteJobStore):
    """A SQLite store that remembers every statement its connections run."""

    def __init__(self, path: Path) -> None:
        self.statements: list[str] = []
        super().__init__(path)

    def _connect(self) -> sqlite3.Connection:
        conn = super()._connect()
        conn.set_trace_callback(self.statements.append)
        return conn


def _plan(path: Path, statement: str) -> list[str]:
    conn = sqlite3.connect(path)
    try:
        return [row[3] for row in conn.execute(f"EXPLAIN QUERY PLAN {statement}")]
    finally:
        conn.close()


def _fill(store: SQLiteJobStore, n: int) -> list[str]:
    """``n`` DONE jobs with results, and one QUEUED; returns the DONE ones' ids."""
    ids = [f"job-{i:04d}" for i in range(n)]
    store.admit([JobRecord(j, S.QUEUED, SPEC, 1.0, 1.0) for j in [*ids, "waiting"]])
    shas = store.put_blobs([f"result {j}".encode() for j in ids])
    store.apply(
        [
            StateUpdate(j, S.QUEUED, S.DONE, 2.0, fields={"result_sha256": sha})
            for j, sha in zip(ids, shas, strict=True)
        ]
    )
    return ids


CALLS: dict[str, Callable[[SQLiteJobStore, list[str]], object]] = {
    "result_sizes": lambda s, ids: s.result_sizes([*ids[:40], "waiting"]),
    "result_refs": lambda s, ids: s.result_refs(ids[:40]),
    "find_by_keys": lambda s, ids: s.find_by_keys([("default", "k")]),
    "get": lambda s, ids: s.get(ids[0]),
    "mark_fetched": lambda s, ids: s.mark_fetched(ids[:40], 3.0),
    "apply": lambda s, ids: s.apply([StateUpdate("waiting", S.QUEUED, S.CANCELLED, 3.0)]),
    "apply_many": lambda s, ids: s.apply(
        [StateUpdate(j, S.DONE, S.CANCELLED, 3.0, fields={"error": "x"}) for j in ids[:200]]
    ),
    "admit": lambda s, ids: s.admit(
        [JobRecord(f"new-{i}", S.QUEUED, SPEC, 3.0, 3.0) for i in range(200)]
    ),
    "admit_keyed": lambda s, ids: s.admit(
        [
            JobRecord(
                f"new-{i}", S.QUEUED, SPEC.model_copy(update={"idempotency_key": f"k{i}"}), 3, 3
            )
            for i in range(200)
        ]
    ),
    "purge_jobs": lambda s, ids: s.purge_jobs(ids[:40], 4.0),
}


@pytest.mark.parametrize("call", list(CALLS))
def test_a_call_about_named_jobs_reads_them_by_id(tmp_path: Path, call: str) -> None:
    path = tmp_path / "jobs.sqlite3"
    store = TracedStore(path)
    try:
        ids = _fill(store, 300)
        store.statements.clear()
        CALLS[call](store, ids)
        about_jobs = [
            st
            for st in store.statements
            if " jobs" in st and st.lstrip().upper().startswith(("SELECT", "UPDATE", "DELETE"))
        ]
        assert about_jobs, f"{call} ran no statement on jobs: {store.statements}"
        for statement in about_jobs:
            plan = _plan(path, statement)
            wide = [p for p in plan if "jobs_state" in p or p.startswith("SCAN j")]
            assert not wide, f"{call}: {statement[:160]} reads {wide}"
    finally:
        store.close()


def test_by_id_calls_still_leave_out_jobs_in_the_wrong_state(tmp_path: Path) -> None:
    """The state filters moved from SQL into Python keep their meaning."""
    store = SQLiteJobStore(tmp_path / "jobs.sqlite3")
    try:
        ids = _fill(store, 5)
        sizes = store.result_sizes([*ids, "waiting", "unknown"])
        assert sorted(sizes) == ids and all(v == len(b"result job-0000") for v in sizes.values())
        report = store.purge_jobs([ids[0], "waiting"], 3.0)
        assert report.jobs == 1  # the QUEUED job is not removed, whatever was asked
        assert store.get("waiting").state is S.QUEUED
        assert store.purged(ids[0]) is not None
        assert collect_garbage(store, keep_fetched_s=0, keep_unfetched_s=0, now=10.0).jobs == 4
        assert store.get("waiting").state is S.QUEUED
    finally:
        store.close()
