"""The hostile corpus against a live farm on Ray, the way tenants' clients reach it.

Every case ends in a clear QrtError (or, for the semantic cases, the right answer);
no secret file is read; other clients' calls keep answering in under a second while
hostile input is handled; the scheduler's memory stays bounded; and the farm answers
a normal job afterwards with every job final.
"""

from __future__ import annotations

import json
import time
from collections.abc import Iterator
from pathlib import Path

import psutil
import pytest
import ray

from qrt_ray import QuantumRuntime
from qrt_ray.config import PolicyConfig, load_farm_config_text
from qrt_ray.intake import IntakeLimits
from tests.circuits import SMALL_FARM, ghz
from tests.ray_head import RayHead
from tests.security.cases import CASES, Case, Secrets
from tests.security.harness import FifoWatch, Prober, files_holding, plant_secrets, run_case

pytestmark = pytest.mark.integration

# A short parse deadline, so that a circuit that is slow to parse (the stall test's)
# meets it quickly; nothing else in the corpus comes near it.
PARSE_TIMEOUT_S = 5.0
CASE_BOUND_S = 20.0  # a refused case answers within this, on a shared 2-core machine
STALL_BOUND_S = 1.0  # the issue's bar for other clients' calls


class Farm:
    def __init__(self, rt: QuantumRuntime, found: Secrets, watch: FifoWatch) -> None:
        self.rt = rt
        self.secrets = found
        self.watch = watch


@pytest.fixture(scope="module")
def farm(ray_head: RayHead, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Farm]:
    folder = tmp_path_factory.mktemp("hostile-farm")
    found = plant_secrets(folder)
    watch = FifoWatch(found.fifo)
    policies = PolicyConfig(intake=IntakeLimits(parse_timeout_s=PARSE_TIMEOUT_S))
    rt = QuantumRuntime.local(
        load_farm_config_text(SMALL_FARM), store=folder / "jobs.sqlite3", policies=policies
    )
    yield Farm(rt, found, watch)
    rt.shutdown()
    watch.stop()


@pytest.mark.parametrize("case", CASES, ids=[c.name for c in CASES])
def test_each_hostile_input_on_a_live_farm(farm: Farm, case: Case) -> None:
    opened = farm.watch.opened
    started = time.perf_counter()
    got = run_case(farm.rt, case, farm.secrets)
    took = time.perf_counter() - started
    assert farm.secrets.token not in got.message
    assert farm.watch.opened == opened, "a parser opened the named pipe"
    if case.error is None:
        assert got.verdict == "ran", got
        assert got.top is not None and got.top[0] == case.answer and got.top[1] > 0.8, got
        return
    assert (got.verdict, got.error) == ("error", case.error), got
    for word in case.says:
        assert word in got.message.lower(), f"{word!r} not in {got.message!r}"
    assert len(got.message) < 1200
    assert took < CASE_BOUND_S, f"{case.name} took {took:.1f} s"


def slow_to_parse() -> str:
    """Valid OpenQASM 3 that takes the parser longer than the farm's deadline (40,000
    gates; OpenQASM 3 parses a few thousand gates a second here)."""
    body = "".join(
        f"rz({i % 97 / 7}) q[{i % 5}];\ncx q[{i % 5}], q[{(i + 1) % 5}];\n" for i in range(20_000)
    )
    return (
        'OPENQASM 3.0;\ninclude "stdgates.inc";\nqubit[5] q;\nbit[5] c;\n'
        + body
        + ("c = measure q;\n")
    )


def scheduler_process(rt: QuantumRuntime) -> psutil.Process:
    from ray.util.state import list_actors

    (actor,) = list_actors(
        filters=[
            ("class_name", "=", "SchedulerActor"),
            ("state", "=", "ALIVE"),
            ("ray_namespace", "=", rt.namespace),
        ]
    )
    return psutil.Process(actor.pid)


def _hostile_round(rt: QuantumRuntime) -> tuple[list[str], Prober]:
    """Send each hostile input straight to the scheduler while another client probes
    it; returns each input's outcome and the prober."""
    prober = Prober(lambda: rt.jobs(limit=1))
    hostile = [
        [json.dumps({"circuits": [slow_to_parse()], "shots": 10})],  # meets the deadline
        [json.dumps({"circuits": ["OPENQASM 3.0;\nqubit[1] q;\nrx(" + "(" * 50_000], "shots": 1})],
        [json.dumps({"circuits": ["OPENQASM 2.0;\n// " + "a" * (10 * 2**20)], "shots": 1})],
        [json.dumps({"circuits": ["OPENQASM 2.0;\nqreg q[10000000];\n"], "shots": 1})],
    ]
    outcomes: list[str] = []
    try:
        time.sleep(0.5)  # a few quiet probes first
        for specs in hostile:
            try:
                ray.get(rt._scheduler.submit.remote(specs))
                outcomes.append("accepted")
            except ray.exceptions.RayTaskError as exc:
                outcomes.append(str(exc.cause))
        time.sleep(0.3)
    finally:
        prober.stop()
    return outcomes, prober


def test_other_clients_answer_while_hostile_input_is_handled(farm: Farm) -> None:
    """No hostile input stalls another client's call for a second. A stall the input
    causes happens every time it is sent; a machine busy with other work can stall a
    call once: a round past the bound is run once more, and both must be past it to
    fail."""
    rt = farm.rt
    proc = scheduler_process(rt)
    rss_before = proc.memory_info().rss
    worsts: list[float] = []
    for _ in range(2):
        outcomes, prober = _hostile_round(rt)
        worsts.append(prober.worst())
        print(
            f"\nworst latency of another client's call: {worsts[-1] * 1000:.0f} ms over "
            f"{prober.calls} calls"
        )
        assert "took longer than 5 s" in outcomes[0], outcomes[0]
        assert all(o != "accepted" for o in outcomes), outcomes
        assert prober.calls > 20
        if worsts[-1] < STALL_BOUND_S:
            break
    assert min(worsts) < STALL_BOUND_S, f"another client waited {worsts} s (each round)"
    grown_mb = (proc.memory_info().rss - rss_before) / 2**20
    assert grown_mb < 300, f"the scheduler grew by {grown_mb:.0f} MB"


def test_the_farm_answers_afterwards_and_no_secret_was_read(farm: Farm, ray_head: RayHead) -> None:
    rt = farm.rt
    # a few of the worst inputs first, so this test stands on its own
    for name in ("include_abs_secret", "include_fifo", "gate_bomb_2_19", "qreg_ten_million"):
        case = next(c for c in CASES if c.name == name)
        assert run_case(rt, case, farm.secrets).verdict == "error"
    result = rt.submit(ghz(3), shots=400).result(timeout_s=120)
    counts = result.counts()
    assert sum(counts.values()) == 400 and counts.get("000", 0) + counts.get("111", 0) > 300
    pending = [
        j for j in rt.jobs(limit=10_000) if j["state"] not in ("DONE", "FAILED", "CANCELLED")
    ]
    assert pending == [], pending
    logs = Path(ray_head.temp_dir)
    assert files_holding(logs, farm.secrets.token) == []
    assert farm.watch.opened == 0
