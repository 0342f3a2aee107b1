"""A finished run lands in two transactions, a warm job's placement in one.

A device's report of runs that complete their jobs is stored as: the runs with their
ledger lines (one transaction), then each job's moves to POSTPROCESSING and DONE with
its result and its bill (one more). A job placed with every circuit in the compile
cache has its moves to COMPILING and PLACED stored together. Each transaction lands
whole or not at all.
"""

from __future__ import annotations

import asyncio
from pathlib import Path

import pytest

from qrt_ray.errors import IntegrityError
from qrt_ray.lifecycle import JobState
from qrt_ray.models import JobSpec
from qrt_ray.policies.jobflow import Placed
from qrt_ray.policies.jobs import Expected
from qrt_ray.results import decode_result
from qrt_ray.store import JobRecord, JobStore, ShotRecord, StateUpdate, open_store
from qrt_ray.store.base import sha256_hex
from tests.local_farm import drive, make, spec

S = JobState


def _queued(store_url: str, *ids: str) -> JobStore:
    store = open_store(store_url)
    spec_ = JobSpec(circuits=("OPENQASM 2.0;",), shots=100)
    store.admit([JobRecord(j, S.QUEUED, spec_, 1.0, 1.0) for j in ids])
    return store


def test_moves_and_their_blobs_land_together_or_not_at_all(store_url: str) -> None:
    store = _queued(store_url, "a", "b")
    try:
        sha = sha256_hex(b"the result of a")
        moves = [
            StateUpdate("a", S.QUEUED, S.CANCELLED, 2.0),
            StateUpdate("b", S.QUEUED, S.CANCELLED, 2.0, fields={"result_sha256": sha}),
        ]
        assert store.apply(moves, [b"the result of a"]) == [True, True]
        assert store.get_blob(sha) == b"the result of a"
        # a write that fails part way leaves neither its moves nor its blobs
        store.admit([JobRecord("c", S.QUEUED, store.get("a").spec, 1.0, 1.0)])
        broken = [
            StateUpdate("c", S.QUEUED, S.CANCELLED, 3.0),
            StateUpdate("c", S.CANCELLED, S.DONE, 3.0, fields={"no_such_column": 1}),
        ]
        with pytest.raises(ValueError, match="no_such_column"):
            store.apply(broken, [b"never stored"])
        assert store.get("c").state is S.QUEUED
        with pytest.raises(IntegrityError, match="missing from the job store"):
            store.get_blob(sha256_hex(b"never stored"))
    finally:
        store.close()


def test_runs_land_with_their_ledger_lines(store_url: str) -> None:
    store = _queued(store_url, "a")
    try:
        run = b'{"counts": "of a run"}'
        line = ShotRecord("a", 1, "cal", 100, 2.0, sha256_hex(run))
        assert store.record_shots([line], [run]) == [True]
        assert store.record_shots([line], [run]) == [False]  # counted once
        assert store.get_blob(line.run_sha256) == run
        assert store.shot_ledger("a") == [line]
    finally:
        store.close()


def test_a_finished_run_is_stored_in_two_transactions_and_billed(tmp_path: Path) -> None:
    async def main() -> None:
        store, devices, sched = make(tmp_path)
        await sched.start()
        ((rec, _),) = await sched.submit([spec(shots=300, seed=4)])
        await drive(sched, devices, done=lambda: any(d.queue_depth for d in devices))
        (device,) = [d for d in devices if d.queue_depth]
        sched._stopping = True  # the loop stops: no write of its own joins the count
        await asyncio.sleep(0.1)
        batch = device.take_batch()
        keep = await sched.batch_started(device.name, *device.claim(batch))
        runs = device.execute_reporting([i for i in batch if i.job_id in keep])
        before = store.commit_count
        await sched.batch_finished(device.name, runs)
        assert store.commit_count - before == 2  # the runs and ledger; moves, result, bill
        done = store.get(rec.job_id)
        assert done.state is S.DONE
        assert [e.to_state for e in store.events(rec.job_id)][-3:] == [
            S.RUNNING,
            S.POSTPROCESSING,
            S.DONE,
        ]
        assert sum(decode_result(store.get_blob(done.result_sha256)).counts().values()) == 300
        # billed for the run counted in the same report: its shots, and the job's fee
        lines = [c for c in store.charges() if c.job_id == rec.job_id]
        assert sorted(c.kind for c in lines) == ["fee", "shots"]
        assert sum(c.shots for c in lines if c.kind == "shots") == 300
        store.close()

    asyncio.run(main())


def test_a_warm_job_is_placed_and_compiled_in_one_transaction(tmp_path: Path) -> None:
    async def main() -> None:
        store, devices, sched = make(tmp_path)
        await sched.start()
        await sched.submit([spec(shots=100, seed=1)])
        await drive(sched, devices)  # its circuit is now in the compile cache
        sched._stopping = True  # the loop stops: this test makes the pass itself
        await asyncio.sleep(0.1)
        ((rec, _),) = await sched.submit([spec(shots=100, seed=2)])
        before = store.commit_count
        await sched._place_pending()
        assert store.commit_count - before == 1
        assert store.get(rec.job_id).state is S.PLACED
        moves = {e.to_state: e.at for e in store.events(rec.job_id)}
        assert moves[S.COMPILING] == moves[S.PLACED]
        # a placement of a job gone meanwhile (cancelled while the pass awaited) is
        # left out of the warm compile, and the rest of the pass goes on
        gone = Placed("no-such-job", devices[0].name, {}, Expected(devices[0].name, 0.1, 0.0))
        assert await sched._compile_warm([gone]) == ([], {})
        store.close()

    asyncio.run(main())
