"""Which devices count as hung: bookkeeping of the batches each device runs."""

from __future__ import annotations

from qrt_ray.policies.health import BatchWatch, hung_limit_s


def test_limit_is_a_floor_or_a_multiple_of_the_expected_time() -> None:
    assert hung_limit_s(1.0, min_s=300, factor=20) == 300
    assert hung_limit_s(60.0, min_s=300, factor=20) == 1200


def test_only_the_oldest_unfinished_batch_is_judged() -> None:
    watch = BatchWatch()
    watch.started("a", ["j1", "j2"], expected_s=10, now=0)
    watch.started("a", ["j3"], expected_s=10, now=100)
    watch.started("b", ["k1"], expected_s=100, now=0)
    assert watch.overdue(now=199, min_s=50, factor=20) == []  # a's limit: 20 x 10 s
    late = watch.overdue(now=201, min_s=50, factor=20)
    assert [d for d, _ in late] == ["a"]
    assert "2 jobs" in late[0][1] and "limit 200 s" in late[0][1]
    watch.finished("a", ["j1", "j2"])  # the oldest is done: the next one is judged
    assert watch.overdue(now=299, min_s=50, factor=20) == []
    assert watch.overdue(now=301, min_s=50, factor=20)[0][0] == "a"
    assert watch.running("a") == 1


def test_a_job_seen_in_two_batches_clears_the_older_first() -> None:
    watch = BatchWatch()
    watch.started("a", ["sliced"], expected_s=1, now=0)
    watch.started("a", ["sliced", "other"], expected_s=1, now=5)
    watch.finished("a", ["sliced"])
    assert watch.running("a") == 1
    assert watch.forget("a") == {"sliced", "other"}
    assert watch.running("a") == 0 and watch.overdue(now=1e9, min_s=1, factor=1) == []


def test_progress_restarts_the_clock_so_only_a_silent_batch_is_hung() -> None:
    watch = BatchWatch()
    watch.started("a", ["long"], expected_s=1, now=0)
    watch.started("b", ["other"], expected_s=1, now=0)
    watch.progress("a", now=250)  # a finished a simulator call of its batch
    late = watch.overdue(now=301, min_s=300, factor=20)
    assert [d for d, _ in late] == ["b"]  # b said nothing for 301 s
    assert watch.overdue(now=549, min_s=300, factor=20)[0][0] == "b"
    assert [d for d, _ in watch.overdue(now=551, min_s=300, factor=20)] == ["a", "b"]
