"""Pipelined submission, without Ray: batching, refusals landing on their own job,
backpressure, and every queued job answered before the pipeline closes."""

from __future__ import annotations

import threading
import time
from collections.abc import Sequence

import pytest

from qrt_ray import pipeline
from qrt_ray.client import JobHandle
from qrt_ray.errors import (
    AuthenticationError,
    JobTimeoutError,
    PlacementError,
    QuotaExceededError,
    RuntimeNotRunningError,
    StoreUnavailableError,
    ValidationError,
)
from qrt_ray.models import JobSpec
from qrt_ray.pipeline import SubmitPipeline


def spec(i: int, qubits: int = 2) -> JobSpec:
    return JobSpec(circuits=("OPENQASM 2.0;",), shots=100 + qubits, idempotency_key=f"k{i}")


class Farm:
    """A scheduler's submit: stores each key once (as the store does), refuses a spec
    with 9 'qubits' as placement does (the whole call stores nothing), and can be held
    or made to fail."""

    def __init__(self) -> None:
        self.calls: list[list[str]] = []
        self.stored: dict[str, str] = {}
        self.gate = threading.Event()
        self.gate.set()
        self.fail_next: Exception | None = None

    def send(self, specs: Sequence[JobSpec]) -> list[str]:
        assert self.gate.wait(30)
        keys = [s.idempotency_key or "" for s in specs]
        self.calls.append(keys)
        if self.fail_next is not None:
            error, self.fail_next = self.fail_next, None
            raise error
        for s in specs:
            if s.shots == 109:
                raise PlacementError(f"{s.idempotency_key}: no device has 9 qubits")
        return [self.stored.setdefault(k, f"job-{k}") for k in keys]


@pytest.fixture
def farm() -> Farm:
    return Farm()


def test_submits_queued_while_a_call_is_out_go_in_the_next_call(farm: Farm) -> None:
    pipe = SubmitPipeline(farm.send)
    farm.gate.clear()  # the first call waits on the farm
    acks = [pipe.put(spec(0))]
    deadline = time.monotonic() + 10
    while pipe._queue and time.monotonic() < deadline:  # until the thread sends it
        time.sleep(0.001)
    acks += [pipe.put(spec(i)) for i in range(1, 50)]
    farm.gate.set()
    assert pipe.flush(30)
    assert [a.wait(1) for a in acks] == [f"job-k{i}" for i in range(50)]
    assert farm.calls[0] == ["k0"]
    assert len(farm.calls) == 2 and farm.calls[1] == [f"k{i}" for i in range(1, 50)]
    pipe.close()


def _first_call(farm: Farm, start: float, within_s: float = 20.0) -> float:
    """Seconds from ``start`` until the farm sees its first call (fails after
    ``within_s``)."""
    while not farm.calls:
        assert time.monotonic() - start < within_s, "nothing was sent"
        time.sleep(0.002)
    return time.monotonic() - start


def gathering(
    farm: Farm, monkeypatch: pytest.MonkeyPatch, idle_s: float, most_s: float
) -> SubmitPipeline:
    """A pipeline whose sender gathers until ``idle_s`` without a put, at most ``most_s``."""
    monkeypatch.setattr(pipeline, "GATHER_IDLE_S", idle_s)
    monkeypatch.setattr(pipeline, "GATHER_MAX_S", most_s)
    return SubmitPipeline(farm.send)


def test_a_quick_loops_jobs_are_gathered_into_one_call(
    farm: Farm, monkeypatch: pytest.MonkeyPatch
) -> None:
    # the loop pauses for far less than a second between puts, even on a busy machine
    pipe = gathering(farm, monkeypatch, idle_s=1.0, most_s=60.0)
    acks = []
    for i in range(100):
        acks.append(pipe.put(spec(i)))
        if i % 10 == 0:
            time.sleep(0.005)  # the sender runs meanwhile: it must wait for the rest
    _first_call(farm, time.monotonic())  # sent once the loop paused, no one waiting
    assert farm.calls == [[f"k{i}" for i in range(100)]]
    assert [a.wait(1) for a in acks] == [f"job-k{i}" for i in range(100)]
    pipe.close()


def test_a_caller_waiting_for_an_answer_ends_the_gathering_at_once(
    farm: Farm, monkeypatch: pytest.MonkeyPatch
) -> None:
    pipe = gathering(farm, monkeypatch, idle_s=60.0, most_s=60.0)
    start = time.monotonic()
    assert pipe.put(spec(0)).wait(30) == "job-k0"  # accepted(), result() wait this way
    pipe.put(spec(1))
    assert pipe.flush(30)
    assert time.monotonic() - start < 20 and farm.calls == [["k0"], ["k1"]]
    pipe.close()


def test_a_hurry_spent_on_a_sent_batch_does_not_cut_the_next_loops_gathering(
    farm: Farm, monkeypatch: pytest.MonkeyPatch
) -> None:
    pipe = gathering(farm, monkeypatch, idle_s=1.0, most_s=60.0)
    assert pipe.put(spec(0)).wait(30) == "job-k0"  # hurried: sent at once
    assert pipe.flush(30)  # nothing pending: a hurry with nothing to hurry
    for i in range(1, 31):
        pipe.put(spec(i))
        if i % 10 == 0:
            time.sleep(0.005)
    assert pipe.flush(30)
    assert farm.calls == [["k0"], [f"k{i}" for i in range(1, 31)]]
    pipe.close()


def test_gathering_ends_after_its_bound_while_jobs_keep_coming(
    farm: Farm, monkeypatch: pytest.MonkeyPatch
) -> None:
    pipe = gathering(farm, monkeypatch, idle_s=60.0, most_s=0.2)  # the caller never pauses
    start = time.monotonic()
    pipe.put(spec(0))
    waited = _first_call(farm, start)
    assert 0.15 <= waited < 20, waited
    pipe.close()


def test_a_refused_job_fails_alone_and_its_batchmates_are_stored(farm: Farm) -> None:
    pipe = SubmitPipeline(farm.send)
    farm.gate.clear()
    acks = [pipe.put(spec(i, qubits=9 if i == 3 else 2)) for i in range(6)]
    farm.gate.set()
    assert pipe.flush(30)
    with pytest.raises(PlacementError, match="k3: no device has 9 qubits"):
        acks[3].wait(1)
    assert [a.wait(1) for i, a in enumerate(acks) if i != 3] == [
        f"job-k{i}" for i in range(6) if i != 3
    ]
    assert set(farm.stored) == {f"k{i}" for i in range(6) if i != 3}
    pipe.close()


def test_a_store_outage_fails_the_batch_without_sending_each_job(farm: Farm) -> None:
    pipe = SubmitPipeline(farm.send)
    farm.gate.clear()
    acks = [pipe.put(spec(i)) for i in range(5)]
    farm.fail_next = StoreUnavailableError("the job store refused the write; retry shortly")
    farm.gate.set()
    assert pipe.flush(30)
    sent = sum(len(c) for c in farm.calls)
    for ack in acks:
        with pytest.raises(StoreUnavailableError):
            ack.wait(1)
    assert sent <= 5 + 1  # one failed call (the first job may have gone alone first)
    assert not farm.stored
    # the pipeline goes on: the next job is stored
    assert pipe.put(spec(7)).wait(30) == "job-k7"
    pipe.close()


def test_an_unexpected_error_lands_on_the_handles_and_the_thread_survives(farm: Farm) -> None:
    pipe = SubmitPipeline(farm.send)
    farm.fail_next = RuntimeError("transport broke")
    with pytest.raises(RuntimeError, match="transport broke"):
        pipe.put(spec(0)).wait(30)
    assert pipe.put(spec(1)).wait(30) == "job-k1"
    pipe.close()


def test_a_full_queue_makes_put_wait_for_the_farm(farm: Farm) -> None:
    pipe = SubmitPipeline(farm.send, send_max=2, queue_max=4)
    farm.gate.clear()
    for i in range(4):
        pipe.put(spec(i))
    fifth = threading.Thread(target=pipe.put, args=(spec(4),), daemon=True)
    fifth.start()
    fifth.join(0.3)
    assert fifth.is_alive()  # waits: four jobs are queued or in flight
    assert pipe.pending() == 4
    farm.gate.set()
    fifth.join(30)
    assert not fifth.is_alive()
    assert pipe.flush(30)
    assert set(farm.stored) == {f"k{i}" for i in range(5)}
    assert max(len(c) for c in farm.calls) <= 2
    pipe.close()


def test_close_sends_what_is_queued_and_refuses_more(farm: Farm) -> None:
    pipe = SubmitPipeline(farm.send)
    farm.gate.clear()
    acks = [pipe.put(spec(i)) for i in range(20)]
    threading.Timer(0.2, farm.gate.set).start()
    pipe.close(30)
    assert [a.wait(0) for a in acks] == [f"job-k{i}" for i in range(20)]
    with pytest.raises(RuntimeNotRunningError, match="shut down"):
        pipe.put(spec(99))


def test_flush_times_out_while_the_farm_does_not_answer(farm: Farm) -> None:
    pipe = SubmitPipeline(farm.send)
    farm.gate.clear()
    ack = pipe.put(spec(0))
    assert not pipe.flush(0.2)
    with pytest.raises(JobTimeoutError, match=r"not acknowledged within 0\.1s"):
        ack.wait(0.1)
    farm.gate.set()
    assert pipe.flush(30)
    pipe.close()


def test_a_pending_handle_waits_for_its_id_and_raises_its_refusal(farm: Farm) -> None:
    pipe = SubmitPipeline(farm.send)
    farm.gate.clear()
    good, bad = pipe.put(spec(1)), pipe.put(spec(2, qubits=9))
    h_good, h_bad = JobHandle(None, ack=good), JobHandle(None, ack=bad)  # type: ignore[arg-type]
    assert repr(h_good) == "JobHandle(<not yet acknowledged>)"
    with pytest.raises(JobTimeoutError):
        h_good.accepted(timeout_s=0.05)
    farm.gate.set()
    assert h_good.accepted(timeout_s=30) == "job-k1" == h_good.job_id
    assert repr(h_good) == "JobHandle('job-k1')"
    with pytest.raises(PlacementError):
        h_bad.job_id  # noqa: B018  (the property raises the refusal)
    with pytest.raises(PlacementError):
        h_bad.accepted()
    pipe.close()


@pytest.mark.parametrize("bad", ["10", -1, float("nan"), True])
def test_a_bad_timeout_is_refused_by_name(farm: Farm, bad: object) -> None:
    pipe = SubmitPipeline(farm.send)
    handle = JobHandle(None, ack=pipe.put(spec(0)))  # type: ignore[arg-type]
    with pytest.raises(ValidationError, match="timeout_s"):
        handle.accepted(timeout_s=bad)  # type: ignore[arg-type]
    assert handle.accepted(timeout_s=30) == "job-k0"
    pipe.close()


def test_circuit_bytes_bound_the_queue_and_a_large_job_still_goes_alone(farm: Farm) -> None:
    big = JobSpec(circuits=("OPENQASM 2.0;" + " " * 5000,), shots=100, idempotency_key="big")
    pipe = SubmitPipeline(farm.send, queue_max_bytes=4000)
    farm.gate.clear()
    first = pipe.put(big)  # larger than the bound, alone: taken
    second = threading.Thread(target=pipe.put, args=(spec(1),), daemon=True)
    second.start()
    second.join(0.3)
    assert second.is_alive()  # waits until the large one is answered
    farm.gate.set()
    second.join(30)
    assert not second.is_alive() and pipe.flush(30)
    assert first.wait(0) == "job-big" and set(farm.stored) == {"big", "k1"}
    assert first.spec is None  # answered: the circuits are not kept
    pipe.close()


class RateLimited(Farm):
    """At most two jobs a call; the first lone call of ``k3`` asks for a 0.5 s wait."""

    def __init__(self) -> None:
        super().__init__()
        self.waited = False

    def send(self, specs: Sequence[JobSpec]) -> list[str]:
        keys = [s.idempotency_key for s in specs]
        if len(specs) > 2 or (keys == ["k3"] and not self.waited):
            self.waited = self.waited or keys == ["k3"]
            self.calls.append([str(k) for k in keys])
            raise QuotaExceededError(
                "submit_rate: too fast", limit="submit_rate", retry_after_s=0.5
            )
        return super().send(specs)


def test_a_rate_limit_is_waited_out_in_smaller_calls() -> None:
    farm = RateLimited()
    slept: list[float] = []
    pipe = SubmitPipeline(farm.send, wait_s=5, sleep=slept.append)
    farm.gate.clear()
    acks = [pipe.put(spec(i)) for i in range(6)]
    farm.gate.set()
    assert pipe.flush(30)
    assert [a.wait(0) for a in acks] == [f"job-k{i}" for i in range(6)]
    assert slept == [0.5]  # k3 waited once, then went through
    pipe.close()


def test_a_rate_limit_longer_than_the_wait_budget_is_raised_on_the_handle() -> None:
    farm = RateLimited()
    pipe = SubmitPipeline(farm.send, wait_s=0.1, sleep=lambda s: None)
    acks = [pipe.put(spec(3))]
    assert pipe.flush(30)
    with pytest.raises(QuotaExceededError, match="submit_rate"):
        acks[0].wait(0)
    pipe.close()


def test_an_auth_refusal_answers_the_batch_without_a_call_a_job(farm: Farm) -> None:
    pipe = SubmitPipeline(farm.send)
    farm.gate.clear()
    acks = [pipe.put(spec(i)) for i in range(1, 6)]
    farm.fail_next = AuthenticationError("token revoked")
    farm.gate.set()
    assert pipe.flush(30)
    for ack in acks:
        with pytest.raises(AuthenticationError, match="revoked"):
            ack.wait(0)
    assert sum(len(c) for c in farm.calls) <= 5  # no job sent again on its own
    pipe.close()


def test_a_farm_out_of_reach_answers_what_is_queued_behind_at_once(farm: Farm) -> None:
    pipe = SubmitPipeline(farm.send, send_max=2)
    farm.gate.clear()
    acks = [pipe.put(spec(i)) for i in range(8)]
    farm.fail_next = RuntimeNotRunningError("the farm did not come back within 60 s")
    farm.gate.set()
    assert pipe.flush(30)
    for ack in acks:
        with pytest.raises(RuntimeNotRunningError):
            ack.wait(0)
    assert len(farm.calls) == 1  # one call waited out the outage; the rest were not sent
    assert acks[5].key == "k5"  # the key stays: a resubmit finds a job stored after all
    pipe.close()


def test_flush_waits_for_what_was_put_before_it_only(farm: Farm) -> None:
    pipe = SubmitPipeline(farm.send)
    first = pipe.put(spec(0))
    assert pipe.flush(30) and first.settled
    farm.gate.clear()  # later jobs hang; a flush of nothing new returns at once
    pipe.put(spec(1))
    started = time.monotonic()
    with pipe._cond:  # what flush() sees: one put, not yet answered
        assert pipe._put - pipe._answered == 1
    assert not pipe.flush(0.2) and time.monotonic() - started < 5
    farm.gate.set()
    assert pipe.flush(30) and pipe.pending() == 0
    pipe.close()


def test_a_farm_that_stays_busy_costs_a_batch_its_budget_not_a_job() -> None:
    calls = []

    def busy(specs: Sequence[JobSpec]) -> list[str]:
        calls.append(len(specs))
        raise QuotaExceededError("busy", limit="max_live_jobs", retry_after_s=0.0)

    slept: list[float] = []
    pipe = SubmitPipeline(busy, wait_s=1.0, sleep=slept.append)
    acks = [pipe.put(spec(i)) for i in range(4)]
    assert pipe.flush(30)
    for ack in acks:
        with pytest.raises(QuotaExceededError, match="busy"):
            ack.wait(0)
    assert sum(slept) <= 1.0 and min(slept) >= 0.05  # no spin on a zero wait
    assert len(calls) <= 1.0 / 0.05 + 8  # bounded: a loop, not a call a frame
    pipe.close()
