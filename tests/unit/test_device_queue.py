"""A device's queue on its own: plain work items, no Aer, the time passed in."""

from __future__ import annotations

from dataclasses import replace

import pytest

from qrt_ray.actors.device_queue import DeviceQueue, WorkItem
from qrt_ray.config import SchedulingConfig


def item(
    job: str,
    shots: int = 100,
    priority: int = 5,
    tenant: str = "default",
    circuits: int = 1,
    attempt: int = 1,
    deadline: float = float("inf"),
) -> WorkItem:
    return WorkItem(
        job,
        attempt,
        "cal",
        (b"qpy",) * circuits,
        shots,
        priority,
        tenant=tenant,
        deadline=deadline,
    )


def queue(**rules: object) -> DeviceQueue:
    return DeviceQueue(SchedulingConfig(**rules))


def ids(batch: list[WorkItem]) -> list[str]:
    return [w.job_id for w in batch]


def test_higher_priority_first_then_arrival() -> None:
    q = queue()
    q.add([item("low", priority=1), item("high", priority=9), item("mid")], now=0.0)
    q.add([item("mid2")], now=1.0)
    assert ids(q.take(now=2.0, max_circuits=4)) == ["high", "mid", "mid2", "low"]
    assert len(q) == 0 and q.queued_shots == 0


def test_waiting_raises_a_job_one_level_per_aging_period() -> None:
    q = queue(aging_s_per_level=10.0)
    q.add([item("old", priority=3)], now=0.0)
    q.add([item("new", priority=5)], now=30.0)  # 3 levels of aging put "old" at 6
    assert ids(q.take(now=30.0, max_circuits=4))[0] == "old"


def test_an_earlier_deadline_goes_first_within_a_level() -> None:
    q = queue()
    q.add([item("later", deadline=100.0), item("sooner", deadline=50.0)], now=0.0)
    assert ids(q.take(now=1.0, max_circuits=4))[:2] == ["sooner", "later"]


def test_a_batch_holds_at_most_max_batch_circuits() -> None:
    q = queue()
    q.add([item("a", circuits=3), item("b", circuits=2), item("c", circuits=1)], now=0.0)
    assert ids(q.take(now=0.0, max_circuits=4)) == ["a"]  # b would pass 4 circuits: the batch ends
    assert ids(q.take(now=0.0, max_circuits=4)) == ["b", "c"]


def test_one_tenant_fills_at_most_its_share_while_others_wait() -> None:
    q = queue(max_device_share=0.5, fair_share=False)
    q.add([item(f"big{i}", tenant="big") for i in range(4)], now=0.0)
    q.add([item("small", tenant="small")], now=1.0)
    batch = q.take(now=1.0, max_circuits=4)
    assert sum(w.tenant == "big" for w in batch) == 2 and "small" in ids(batch)


def test_fair_share_serves_the_tenant_with_fewer_shots_here_first() -> None:
    q = queue(fair_share=True, max_device_share=1.0)
    q.add([item("h1", tenant="heavy", shots=1000)], now=0.0)
    assert ids(q.take(now=0.0, max_circuits=4)) == ["h1"]  # heavy has now had 1000 shots here
    q.add([item("h2", tenant="heavy"), item("l1", tenant="light")], now=1.0)
    assert ids(q.take(now=1.0, max_circuits=4))[0] == "l1"


def test_a_big_job_runs_in_slices_and_keeps_its_place() -> None:
    q = queue(slice_shots=400)
    q.add([item("big", shots=1000)], now=0.0)
    first = q.take(now=0.0, max_circuits=4)
    assert [(w.shots, w.first_shot, w.remaining) for w in first] == [(400, 0, 600)]
    q.add([item("urgent", priority=9)], now=1.0)
    # urgent work goes between the slices
    assert ids(q.take(now=1.0, max_circuits=4)) == ["urgent", "big"]
    (last,) = q.take(now=2.0, max_circuits=4)
    assert (last.shots, last.first_shot, last.remaining) == (200, 800, 0)
    assert q.queued_shots == 0


def test_drop_takes_only_the_attempt_named() -> None:
    q = queue()
    q.add([item("a", attempt=1), item("a", attempt=2), item("b")], now=0.0)
    assert q.drop(["a"], {"a": 1}) == ["a"]
    assert [(w.job_id, w.attempt) for w in q.take(now=0.0, max_circuits=4)] == [("a", 2), ("b", 1)]
    q.add([item("c", shots=50)], now=1.0)
    assert q.drop(["c"]) == ["c"] and q.queued_shots == 0


def test_a_new_hand_off_of_a_job_replaces_the_one_still_queued() -> None:
    # a scheduler that restarted hands the job off again: the old hand-off would run
    # shots it no longer counts (and its start would be refused)
    q = queue()
    q.add([item("a", shots=100), item("b")], now=0.0)
    q.add([replace(item("a", shots=300), dispatch="new")], now=5.0)
    batch = q.take(now=5.0, max_circuits=4)
    assert [(w.job_id, w.dispatch) for w in batch] == [("b", ""), ("a", "new")]
    assert len(q) == 0 and q.queued_shots == 0


@pytest.mark.parametrize("shots", [1, 399, 400])
def test_a_job_at_or_under_the_slice_runs_whole(shots: int) -> None:
    q = queue(slice_shots=400)
    q.add([item("j", shots=shots)], now=0.0)
    (w,) = q.take(now=0.0, max_circuits=4)
    assert (w.shots, w.remaining) == (shots, 0) and len(q) == 0


def test_a_job_the_farm_already_cut_short_runs_unsliced() -> None:
    # its earlier shots were dropped (rerun whole on a new calibration): sliced again,
    # a device recalibrating between its slices would cut it at every recalibration
    q = queue(slice_shots=400)
    q.add([replace(item("rerun", shots=1000), whole=True), item("big", shots=1000)], now=0.0)
    batch = q.take(now=0.0, max_circuits=4)
    assert [(w.job_id, w.shots, w.remaining) for w in batch] == [
        ("rerun", 1000, 0),
        ("big", 400, 600),
    ]
    assert ids(q.take(now=1.0, max_circuits=4)) == ["big"]  # the other one still slices
