"""The hostile corpus against the intake gate, without Ray: the client's checks, then the
scheduler's (strict spec decoding, and every circuit in a parser process with a
deadline and a memory cap), on a farm of two small in-process devices.

Each case must end in the QrtError it names, within seconds, without the content of
the secret file on disk in any message and without anyone opening the named pipe; the
cases that must run return the right answer.
"""

from __future__ import annotations

import asyncio
import json
import threading
import time
from collections.abc import Coroutine, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TypeVar

import pytest

from qrt_ray.actors.device import Device
from qrt_ray.actors.ports import LocalPorts
from qrt_ray.actors.scheduler import Scheduler
from qrt_ray.actors.scheduler_actor import decode_specs
from qrt_ray.client import make_spec
from qrt_ray.config import PolicyConfig
from qrt_ray.errors import PlacementError, QrtError
from qrt_ray.intake.pool import IntakePool
from qrt_ray.lifecycle import JobState
from qrt_ray.store import SQLiteJobStore
from tests.local_farm import FARM, drive
from tests.security.cases import CASES, Case, Secrets
from tests.security.harness import FifoWatch, plant_secrets

T = TypeVar("T")
# a case's whole path, client and scheduler, must end within this (seconds)
CASE_BOUND_S = 15.0
GATE_CASES = [c for c in CASES if c.call in ("submit", "actor")]


@pytest.fixture(autouse=True)
def _no_ray(monkeypatch: pytest.MonkeyPatch) -> None:
    import ray

    def refuse(*_: object, **__: object) -> None:
        raise RuntimeError("the gate tests run without Ray")

    monkeypatch.setattr(ray, "init", refuse)


@dataclass
class Server:
    """A scheduler with the real parser pool, on an event loop of its own thread."""

    loop: asyncio.AbstractEventLoop
    sched: Scheduler
    devices: list[Device]
    store: SQLiteJobStore
    secrets: Secrets
    watch: FifoWatch

    def run(self, coro: Coroutine[Any, Any, T], timeout_s: float = 120) -> T:
        return asyncio.run_coroutine_threadsafe(coro, self.loop).result(timeout_s)


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Server]:
    folder = tmp_path_factory.mktemp("hostile")
    found = plant_secrets(folder)
    watch = FifoWatch(found.fifo)
    loop = asyncio.new_event_loop()
    thread = threading.Thread(target=loop.run_forever, daemon=True)
    thread.start()
    policies = PolicyConfig()
    pool = IntakePool(policies.intake)
    pool.start()
    store = SQLiteJobStore(folder / "jobs.sqlite3")
    devices = [Device(d, max_parallel_threads=1) for d in FARM.devices]

    async def build() -> Scheduler:
        sched = Scheduler(store, LocalPorts(devices), policy_config=policies, intake=pool)
        await sched.start()
        return sched

    server = Server(
        loop,
        asyncio.run_coroutine_threadsafe(build(), loop).result(60),
        devices,
        store,
        found,
        watch,
    )
    yield server
    server.run(server.sched.stop())
    pool.close()
    store.close()
    watch.stop()
    loop.call_soon_threadsafe(loop.stop)
    thread.join(10)


def end_to_end(server: Server, case: Case) -> list[str]:
    """The case as a client sends it; returns the ids of the jobs admitted."""
    if case.call == "actor":
        specs = decode_specs(case.actor_json(server.secrets), server.sched.admission.limits)  # type: ignore[misc]
    else:
        spec = make_spec(case.payload(server.secrets), **{"shots": 200, **case.options})
        specs = decode_specs([spec.model_dump_json()], server.sched.admission.limits)
    admitted = server.run(server.sched.submit(specs))
    return [rec.job_id for rec, _ in admitted]


@pytest.mark.parametrize("case", GATE_CASES, ids=[c.name for c in GATE_CASES])
def test_each_hostile_input_ends_in_a_clear_error(server: Server, case: Case) -> None:
    opened = server.watch.opened
    started = time.perf_counter()
    if case.error is None:
        job_ids = end_to_end(server, case)
        server.run(drive(server.sched, server.devices, until_s=60))
        (job_id,) = job_ids
        assert _top(server, job_id) == case.answer, f"{case.name}: wrong answer"
        return
    with pytest.raises(QrtError) as caught:
        end_to_end(server, case)
    took = time.perf_counter() - started
    message = str(caught.value)
    assert type(caught.value).__name__ == case.error, message
    for word in case.says:
        assert word in message.lower(), f"{word!r} not in {message!r}"
    assert len(message) < 1200  # a rejected value is never repeated in full
    assert server.secrets.token not in message
    assert server.watch.opened == opened, "a parser opened the named pipe"
    assert took < CASE_BOUND_S, f"{case.name} took {took:.1f} s"


TEXT_CASES = [
    c for c in CASES if c.call == "submit" and (c.file is not None or isinstance(c.circuits, str))
]


@pytest.mark.parametrize(
    "case",
    [c for c in TEXT_CASES if c.error is not None and not c.options],
    ids=lambda c: c.name,
)
def test_the_scheduler_refuses_text_a_client_would_have_refused(server: Server, case: Case) -> None:
    """A client can skip its own checks: the scheduler makes every one of them again."""
    text = case.payload(server.secrets)
    assert isinstance(text, str)
    raw = json.dumps({"circuits": [text], "shots": 100}, ensure_ascii=False)
    with pytest.raises(QrtError) as caught:
        specs = decode_specs([raw], server.sched.admission.limits)
        server.run(server.sched.submit(specs))
    message = str(caught.value).lower()
    assert server.secrets.token not in message
    if isinstance(caught.value, PlacementError):
        # the scheduler knows the farm: wider than its widest device is refused first
        assert "widest device of this farm" in message, message
        return
    assert type(caught.value).__name__ == "ValidationError"
    assert all(word in message for word in case.says), message


def test_the_farm_still_answers_and_every_job_is_final(server: Server) -> None:
    from tests.local_farm import ghz

    spec = make_spec(ghz(2), shots=300)
    ((rec, _),) = server.run(server.sched.submit([spec]))
    server.run(drive(server.sched, server.devices, until_s=60))
    counts = _counts(server, rec.job_id)
    assert sum(counts.values()) == 300 and counts.get("00", 0) + counts.get("11", 0) > 240
    assert all(r.state.is_final for r in server.store.list_jobs(limit=10_000))


def _counts(server: Server, job_id: str) -> dict[str, int]:
    from qrt_ray.results import decode_result

    rec = server.store.get(job_id)
    assert rec.state is JobState.DONE, rec.error
    return decode_result(server.store.get_blob(rec.result_sha256 or "")).counts()


def _top(server: Server, job_id: str) -> str:
    counts = _counts(server, job_id)
    top = max(counts, key=counts.__getitem__)
    assert counts[top] / sum(counts.values()) > 0.8, counts
    return top


def test_no_secret_reached_the_store(server: Server) -> None:
    db = Path(server.store.path)
    for path in (db, db.with_name(db.name + "-wal")):
        if path.exists():
            assert server.secrets.token.encode() not in path.read_bytes()
