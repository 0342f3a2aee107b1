"""The scheduler's table of live jobs: one object per job, indices that follow every
update, and one call to retire a job."""

from __future__ import annotations

from dataclasses import replace

import pytest

from qrt_ray.lifecycle import JobState as S
from qrt_ray.models import JobSpec
from qrt_ray.policies.jobs import Expected, JobTable
from qrt_ray.store import JobRecord

SPEC = JobSpec(circuits=("OPENQASM 2.0;",), shots=10)


def rec(job_id: str, state: S = S.QUEUED, device: str | None = None) -> JobRecord:
    return JobRecord(job_id, state, SPEC, 1.0, 1.0, device=device)


def test_indices_follow_each_update() -> None:
    table = JobTable()
    for j in ("a", "b", "c"):
        table.add(rec(j))
    table.update(rec("b", S.COMPILING, "manila"))
    table.update(rec("c", S.PLACED, "manila"))
    assert [j.job_id for j in table.in_state(S.QUEUED)] == ["a"]
    assert [j.job_id for j in table.on_device("manila")] == ["b", "c"]
    assert [j.job_id for j in table.on_device("manila", S.PLACED)] == ["c"]
    assert table.count_by_device(S.COMPILING, S.PLACED) == {"manila": 2}
    # moved to another device and state: gone from the old entries
    table.update(rec("b", S.QUEUED, "nairobi"))
    assert [j.job_id for j in table.on_device("manila")] == ["c"]
    assert [j.job_id for j in table.in_state(S.QUEUED)] == ["a", "b"]
    assert table.on_device("nairobi")[0].device == "nairobi"


def test_order_of_arrival_is_kept_whatever_the_updates() -> None:
    table = JobTable()
    for j in ("z", "y", "x"):
        table.add(rec(j, S.RUNNING, "d"))
    table.update(rec("z", S.RUNNING, "d"))  # an update does not move it to the end
    assert [j.job_id for j in table.on_device("d", S.RUNNING)] == ["z", "y", "x"]
    assert [j.job_id for j in table] == ["z", "y", "x"]


def test_expectations_are_indexed_and_cleared() -> None:
    table = JobTable()
    for j in ("a", "b"):
        table.add(rec(j, S.PLACED, "d"))
    assert not table.any_expected() and table.expectations() == []
    table.expect("a", Expected("d", 2.0, 0.001))
    table.expect("b", Expected("d", 3.0, 0.001))
    assert table.any_expected()
    assert sorted(e.run_s for e in table.expectations()) == [2.0, 3.0]
    table.expect("a", None)
    assert [e.run_s for e in table.expectations()] == [3.0] and table["a"].expected is None
    table.expect("gone", Expected("d", 1.0, 0.001))  # unknown: nothing to expect of
    assert len(table.expectations()) == 1


def test_remove_forgets_everything_at_once() -> None:
    table = JobTable()
    job = table.add(rec("a", S.PLACED, "d"))
    table.expect("a", Expected("d", 2.0, 0.001))
    job.discarded_shots = 7
    gone = table.remove("a")
    assert gone is job and "a" not in table and len(table) == 0
    assert table.on_device("d") == [] and table.in_state(S.PLACED) == []
    assert not table.any_expected()
    assert table.remove("a") is None  # a second retire is harmless


def test_adding_a_tracked_job_updates_it_in_place() -> None:
    table = JobTable()
    first = table.add(rec("a"))
    first.runs_from = 3
    again = table.add(replace(first.record, state=S.COMPILING, device="d"))
    assert again is first and again.runs_from == 3
    assert table.in_state(S.QUEUED) == [] and table.on_device("d") == [first]


def test_unknown_jobs() -> None:
    table = JobTable()
    assert table.get("nope") is None
    with pytest.raises(KeyError):
        table.update(rec("nope"))
