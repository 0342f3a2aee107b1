"""The client rides out a scheduler restart: it finds the scheduler again and retries
with backoff for ``retry_s``, a wait keeps its own deadline, and every submission
carries an idempotency key so a retried submit makes no second job. A job store that
refuses writes for a moment is ridden out the same way by calls safe to ask again. No
Ray here: the actor calls are replaced by a scripted scheduler."""

from __future__ import annotations

import json
from typing import Any

import pytest
import ray.exceptions

from qrt_ray import client as client_mod
from qrt_ray.client import QuantumRuntime
from qrt_ray.errors import (
    FarmBusyError,
    IntegrityError,
    RuntimeNotRunningError,
    StoreUnavailableError,
    ValidationError,
)

GHZ = 'OPENQASM 2.0;\ninclude "qelib1.inc";\nqreg q[2];\ncreg c[2];\nh q[0];\nmeasure q -> c;\n'


class Method:
    def __init__(self, owner: Scripted, name: str) -> None:
        self.owner, self.name = owner, name


class Scripted:
    """A scheduler handle whose calls fail ``failures`` times (the actor restarting)."""

    def __init__(
        self, failures: int, answer: Any, store_down: bool = False, busy: str | None = None
    ) -> None:
        self.failures, self.answer, self.store_down = failures, answer, store_down
        self.busy = busy  # the FarmBusyError limit each failure raises (None: a restart)
        self.calls: list[tuple[str, tuple[Any, ...]]] = []

    def __getattr__(self, name: str) -> Method:
        return Method(self, name)


def _unwrap(fn: Method, *args: Any) -> Any:
    fn.owner.calls.append((fn.name, args))
    if fn.owner.failures > 0:
        fn.owner.failures -= 1
        if fn.owner.store_down:
            raise StoreUnavailableError("the job store refused a write; retry shortly")
        if fn.owner.busy is not None:
            raise FarmBusyError("the farm is busy", limit=fn.owner.busy, retry_after_s=1.0)
        raise ray.exceptions.ActorUnavailableError("the actor is restarting", None)
    return fn.owner.answer(fn.name, args) if callable(fn.owner.answer) else fn.owner.answer


@pytest.fixture
def found(monkeypatch: pytest.MonkeyPatch) -> list[str]:
    """Scripted actor calls, instant sleeps; returns the namespaces the client looked
    the scheduler up in again."""
    monkeypatch.setattr(client_mod, "_unwrap", _unwrap)
    monkeypatch.setattr(client_mod.time, "sleep", lambda s: None)
    return []


def _runtime(
    scheduler: Scripted, retry_s: float, monkeypatch: pytest.MonkeyPatch, found: list[str]
) -> Any:
    # synchronous: each submit is one call, retried as a call (the pipeline's own
    # retries are tests/unit/test_pipeline.py's)
    rt = QuantumRuntime(
        scheduler,
        "ns",
        owns_ray=False,
        owns_farm=False,
        devices=[],
        retry_s=retry_s,
        pipeline=False,
    )

    def find(namespace: str) -> Scripted:
        found.append(namespace)
        return scheduler

    monkeypatch.setattr(client_mod.farm_mod, "find_scheduler", find)
    return rt


def test_a_call_is_retried_until_the_scheduler_is_back(found, monkeypatch) -> None:  # type: ignore[no-untyped-def]
    sched = Scripted(failures=3, answer=[{"job_id": "j1"}])
    rt = _runtime(sched, 60, monkeypatch, found)
    assert rt.jobs() == [{"job_id": "j1"}]
    assert [name for name, _ in sched.calls] == ["jobs"] * 4
    assert found == ["ns"] * 3  # found again by name after each failure


def test_the_client_gives_up_after_retry_s_and_says_nothing_is_lost(found, monkeypatch) -> None:  # type: ignore[no-untyped-def]
    clock = iter(range(0, 10_000))
    monkeypatch.setattr(client_mod.time, "monotonic", lambda: float(next(clock)))
    sched = Scripted(failures=10_000, answer=None)
    rt = _runtime(sched, 5, monkeypatch, found)
    with pytest.raises(RuntimeNotRunningError, match="'ns' did not come back within 5 s"):
        rt.jobs()
    assert 1 <= len(sched.calls) <= 6  # bounded by retry_s, not by the failures


def test_a_wait_keeps_its_own_deadline_across_retries(found, monkeypatch) -> None:  # type: ignore[no-untyped-def]
    now = [100.0]
    monkeypatch.setattr(client_mod.time, "monotonic", lambda: now[0])

    def answer(name: str, args: tuple[Any, ...]) -> Any:
        return {"j1": "DONE"}

    sched = Scripted(failures=2, answer=answer)
    real = _unwrap

    def ticking(fn: Method, *args: Any) -> Any:
        now[0] += 4.0  # each try takes 4 s
        return real(fn, *args)

    monkeypatch.setattr(client_mod, "_unwrap", ticking)
    rt = _runtime(sched, 60, monkeypatch, found)
    rt._wait_ids(["j1"], 10.0)
    timeouts = [args[1] for name, args in sched.calls if name == "wait"]
    assert timeouts == [10.0, 6.0, 2.0]  # what is left of the caller's 10 s, each try


def test_every_submission_carries_a_key_and_a_given_key_is_kept(found, monkeypatch) -> None:  # type: ignore[no-untyped-def]
    def answer(name: str, args: tuple[Any, ...]) -> Any:
        return [{"job_id": f"j{i}"} for i, _ in enumerate(args[0])]

    sched = Scripted(failures=1, answer=answer)
    rt = _runtime(sched, 60, monkeypatch, found)
    rt.submit(GHZ, shots=10)
    rt.submit(GHZ, shots=10, idempotency_key="mine")
    sent = [json.loads(args[0][0])["idempotency_key"] for name, args in sched.calls]
    # the retried submit sent the same key as its first try
    assert sent[0] == sent[1] and sent[0].startswith("auto-")
    assert sent[2] == "mine"


@pytest.mark.parametrize("bad", [-1, 3601, "60", True, float("nan")])
def test_retry_s_is_checked(bad: Any) -> None:
    with pytest.raises(ValidationError, match="retry_s="):
        QuantumRuntime(None, "ns", owns_ray=False, owns_farm=False, devices=[], retry_s=bad)


def test_a_long_call_that_meets_a_restart_still_gets_the_whole_retry_s(found, monkeypatch) -> None:  # type: ignore[no-untyped-def]
    now = [0.0]
    monkeypatch.setattr(client_mod.time, "monotonic", lambda: now[0])
    sched = Scripted(failures=2, answer={"j1": "DONE"})
    real = _unwrap

    def long_first_try(fn: Method, *args: Any) -> Any:
        if not fn.owner.calls:
            now[0] += 1000.0  # a wait that ran for 1000 s before the scheduler died
        return real(fn, *args)

    monkeypatch.setattr(client_mod, "_unwrap", long_first_try)
    rt = _runtime(sched, 60, monkeypatch, found)
    assert rt._wait_ids(["j1"], None) == {"j1": "DONE"}
    assert len(sched.calls) == 3


def test_reads_from_the_calibration_manager_ride_out_its_restart(found, monkeypatch) -> None:  # type: ignore[no-untyped-def]
    manager = Scripted(failures=2, answer={"manila": {"phase": "monitor"}})
    looked: list[str] = []

    def find(namespace: str) -> Scripted:
        looked.append(namespace)
        return manager

    monkeypatch.setattr(client_mod.farm_mod, "calibration_handle", find)
    rt = QuantumRuntime(None, "ns", owns_ray=False, owns_farm=False, devices=[])
    assert rt.calibration_report() == {"manila": {"phase": "monitor"}}
    assert [name for name, _ in manager.calls] == ["report"] * 3
    assert looked == ["ns"] * 3  # found at first, and again after each failure


def test_a_submit_rides_out_a_store_that_refuses_writes_with_the_same_keys(
    found, monkeypatch
) -> None:  # type: ignore[no-untyped-def]
    def answer(name: str, args: tuple[Any, ...]) -> Any:
        return [{"job_id": f"j{i}"} for i, _ in enumerate(args[0])]

    sched = Scripted(failures=3, answer=answer, store_down=True)
    rt = _runtime(sched, 60, monkeypatch, found)
    handles = rt.submit_many([GHZ, GHZ], shots=10)
    assert [h.job_id for h in handles] == ["j0", "j1"]
    sent = [[json.loads(spec)["idempotency_key"] for spec in args[0]] for _, args in sched.calls]
    assert len(sent) == 4 and all(keys == sent[0] for keys in sent)  # the same jobs, 4 tries
    assert found == []  # the scheduler answered: nothing to look up again


def test_a_farm_that_has_not_heard_from_its_devices_is_ridden_out_not_a_full_one(
    found, monkeypatch
) -> None:  # type: ignore[no-untyped-def]
    def answer(name: str, args: tuple[Any, ...]) -> Any:
        return [{"job_id": f"j{i}"} for i, _ in enumerate(args[0])]

    # a scheduler just restarted, devices not all answering: the end of a restart
    sched = Scripted(failures=3, answer=answer, busy="devices_unheard")
    handles = _runtime(sched, 60, monkeypatch, found).submit_many([GHZ], shots=10)
    assert [h.job_id for h in handles] == ["j0"] and len(sched.calls) == 4
    # a farm full of unfinished jobs is the caller's to wait out: said at once
    full = Scripted(failures=3, answer=answer, busy="max_live_jobs")
    with pytest.raises(FarmBusyError):
        _runtime(full, 60, monkeypatch, found).submit_many([GHZ], shots=10)
    assert len(full.calls) == 1


def test_a_cancel_is_not_asked_twice_when_the_store_refuses_it(found, monkeypatch) -> None:  # type: ignore[no-untyped-def]
    sched = Scripted(failures=1, answer=("CANCELLED", True), store_down=True)
    rt = _runtime(sched, 60, monkeypatch, found)
    # its answer says whether this call cancelled the job; a second try could not know
    with pytest.raises(StoreUnavailableError, match="retry shortly"):
        client_mod.JobHandle(rt, "j1").cancel()
    assert len(sched.calls) == 1


def test_a_store_down_longer_than_retry_s_is_reported_as_the_store(found, monkeypatch) -> None:  # type: ignore[no-untyped-def]
    clock = iter(range(0, 10_000))
    monkeypatch.setattr(client_mod.time, "monotonic", lambda: float(next(clock)))
    sched = Scripted(failures=10_000, answer=None, store_down=True)
    rt = _runtime(sched, 5, monkeypatch, found)
    with pytest.raises(StoreUnavailableError, match="refused a write"):
        rt.jobs()
    assert 2 <= len(sched.calls) <= 6  # retried, and bounded by retry_s


def test_result_waits_and_fetches_in_one_round_trip_and_says_why_not(found, monkeypatch) -> None:  # type: ignore[no-untyped-def]
    from qrt_ray.errors import IntegrityError, JobCancelledError, JobFailedError, JobTimeoutError

    outcomes = {
        "j-failed": ("FAILED", None, "device_lost: manila went away 6 times"),
        "j-cancelled": ("CANCELLED", None, None),
        "j-running": ("RUNNING", None, None),
        "j-torn": ("DONE", ("0" * 64, b"{}"), None),  # bytes that do not match the checksum
    }

    def answer(name: str, args: tuple[Any, ...]) -> Any:
        assert name == "collect"
        return [outcomes[j] for j in args[0]]

    sched = Scripted(failures=0, answer=answer)
    rt = _runtime(sched, 60, monkeypatch, found)
    handle = client_mod.JobHandle
    with pytest.raises(JobFailedError, match="manila went away 6 times"):
        handle(rt, "j-failed").result(timeout_s=5)
    with pytest.raises(JobCancelledError):
        handle(rt, "j-cancelled").result()
    with pytest.raises(JobTimeoutError, match="still RUNNING; not done within 5s"):
        handle(rt, "j-running").result(timeout_s=5)
    with pytest.raises(IntegrityError, match="failed its checksum in transit"):
        handle(rt, "j-torn").result()
    # one call each, with what is left of the caller's timeout
    assert [(name, args[0]) for name, args in sched.calls] == [
        ("collect", [j]) for j in ("j-failed", "j-cancelled", "j-running", "j-torn")
    ]
    timeouts = [args[1] for _, args in sched.calls]
    assert timeouts[1] is None and timeouts[3] is None
    assert 4.9 < timeouts[0] <= 5.0 and 4.9 < timeouts[2] <= 5.0


def test_many_results_wait_once_then_fetch_in_chunks(found, monkeypatch) -> None:  # type: ignore[no-untyped-def]
    ids = [f"j{i}" for i in range(client_mod._RESULTS_PER_CALL + 1)]

    def answer(name: str, args: tuple[Any, ...]) -> Any:
        if name == "wait":
            return dict.fromkeys(args[0], "DONE")
        assert name == "results"
        return [("0" * 64, b"{}") for _ in args[0]]

    sched = Scripted(failures=0, answer=answer)
    rt = _runtime(sched, 60, monkeypatch, found)
    with pytest.raises(IntegrityError):
        rt.results([client_mod.JobHandle(rt, j) for j in ids])
    assert [name for name, _ in sched.calls] == ["wait", "results"]
    assert len(sched.calls[1][1][0]) == client_mod._RESULTS_PER_CALL


def test_results_from_a_farm_without_collect_wait_then_fetch(found, monkeypatch) -> None:  # type: ignore[no-untyped-def]
    def answer(name: str, args: tuple[Any, ...]) -> Any:
        if name == "collect":  # what a Ray actor handle raises for a method it lacks
            raise AttributeError("'ActorHandle' object has no attribute 'collect'")
        if name == "wait":
            return dict.fromkeys(args[0], "FAILED")
        return {"error": "device_lost: gone"}  # job

    sched = Scripted(failures=0, answer=answer)
    rt = _runtime(sched, 60, monkeypatch, found)
    with pytest.raises(client_mod.JobFailedError, match="device_lost: gone"):
        client_mod.JobHandle(rt, "j1").result(timeout_s=5)
    assert [name for name, _ in sched.calls] == ["collect", "wait", "job"]
