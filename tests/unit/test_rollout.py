"""Canary rollout of post-processing versions (F10): the pure policy, the versions
themselves, the stored book, and a real device's canaries catching a broken release."""

from __future__ import annotations

import asyncio
import dataclasses
import json
import math
from collections.abc import Iterator, Mapping, Sequence
from pathlib import Path

import numpy as np
import pytest

from qrt_ray.actors.calibration import CalibrationManager, LocalCalibrationPorts
from qrt_ray.actors.device import Device
from qrt_ray.actors.rollouts import Rollouts
from qrt_ray.config import (
    CalibrationConfig,
    DeviceConfig,
    RolloutConfig,
    load_farm_config_text,
)
from qrt_ray.errors import ValidationError
from qrt_ray.metrics import RuntimeMetrics
from qrt_ray.mitigation import pipelines
from qrt_ray.mitigation.pipelines import Pipeline, unfold_counts
from qrt_ray.mitigation.readout import QuasiDistribution, mitigate_counts
from qrt_ray.models import CalibrationSnapshot
from qrt_ray.policies import rollout
from qrt_ray.policies.canary import canary_round
from qrt_ray.policies.rollout import Phase, Rollout, Verdict
from qrt_ray.store import CanaryRecord, JobStore, open_store
from tests.circuits import DRIFTING_FARM
from tests.metrics_text import sample

CONFIG = RolloutConfig(max_divergence=0.05, promote_after_rounds=3, min_canaries=4)


# == the policy ========================================================================


def test_agreeing_rounds_promote_the_candidate_and_keep_the_old_one() -> None:
    state = rollout.start(Rollout("readout", "1"), "2", now=10.0)
    assert state.phase is Phase.SHADOW and state.versions() == ["1", "2"]
    for k in range(3):
        state = rollout.observe(state, [(0.97, 0.975), (0.95, 0.94)], CONFIG, now=20.0 + k)
    assert state.phase is Phase.PROMOTED
    assert (state.served, state.previous, state.versions()) == ("2", "1", ["2"])
    assert state.compared == 6 and state.worst_gap == pytest.approx(0.01)
    back = rollout.rollback(state, now=40.0, reason="by hand")
    assert (back.served, back.phase, back.candidate) == ("1", Phase.ROLLED_BACK, "2")


def test_promotion_waits_for_enough_canaries_as_well_as_rounds() -> None:
    state = rollout.start(Rollout("readout", "1"), "2", now=0.0)
    for k in range(3):
        state = rollout.observe(state, [(0.9, 0.9)], CONFIG, now=k)
    assert state.phase is Phase.SHADOW and state.compared == 3  # 3 rounds, 3 < 4 canaries
    state = rollout.observe(state, [(0.9, 0.9)], CONFIG, now=4)
    assert state.phase is Phase.PROMOTED


@pytest.mark.parametrize(
    ("pairs", "verdict"),
    [
        ([(0.9, 0.9), (0.9, 0.96)], Verdict.DIVERGE),  # one canary is enough
        ([(0.9, None)], Verdict.FAIL),
        ([(0.9, math.nan)], Verdict.FAIL),
        ([(None, 0.5)], Verdict.NONE),  # the served version failed: nothing to judge by
        ([], Verdict.NONE),
        ([(0.9, 0.949)], Verdict.AGREE),
        # the served version over-corrected past a bound: the candidate is measured
        # from the nearer of its value and that bound
        ([(1.059, 0.998)], Verdict.AGREE),
        ([(1.059, 1.059)], Verdict.AGREE),
        ([(-0.08, 0.01)], Verdict.AGREE),
        # ...and is no freer than that on either side
        ([(1.059, 1.12)], Verdict.DIVERGE),
        ([(1.2, 0.94)], Verdict.DIVERGE),
        ([(-0.08, 0.06)], Verdict.DIVERGE),
        # a served value that is no number: as if the served version failed
        ([(math.inf, 0.5)], Verdict.NONE),
        ([(math.nan, 0.5)], Verdict.NONE),
    ],
)
def test_judge(pairs: list[tuple[float | None, float | None]], verdict: Verdict) -> None:
    assert rollout.judge(pairs, 0.05)[0] is verdict


@pytest.mark.parametrize(
    ("served", "candidate", "expected"),
    [
        (0.9, 0.95, 0.05),  # inside [0, 1]: the plain difference
        (1.06, 1.0, 0.0),  # at the bound the served value passed
        (1.06, 1.06, 0.0),  # or at the served value
        (1.06, 1.03, 0.03),  # halfway: as far from either
        (1.2, 1.1, 0.1),  # a large change between them still counts
        (1.06, 0.98, 0.02),  # below the bound
        (1.06, 1.10, 0.04),  # beyond the served value
        (-0.05, 0.03, 0.03),
    ],
)
def test_gap_is_measured_to_the_nearer_of_the_served_value_and_its_bound(
    served: float, candidate: float, expected: float
) -> None:
    assert rollout.gap(served, candidate) == pytest.approx(expected)


def test_a_gap_past_a_bound_names_the_bound_in_the_reason() -> None:
    verdict, compared, worst, why = rollout.judge([(1.0, 1.0), (1.12, 0.91)], 0.05)
    assert (verdict, compared) == (Verdict.DIVERGE, 2)
    assert worst == pytest.approx(0.09)
    assert "canary 1: candidate 0.9100 vs served 1.1200 (or 1) (gap 0.0900 > 0.05)" in why


def test_a_divergent_round_rolls_back_at_once_and_names_the_canary() -> None:
    state = rollout.start(Rollout("readout", "1"), "2", now=0.0)
    state = rollout.observe(state, [(0.9, 0.9)], CONFIG, now=1.0)
    state = rollout.observe(state, [(0.9, 0.9), (0.8, 1.1)], CONFIG, now=2.0, where="manila")
    assert state.phase is Phase.ROLLED_BACK and state.served == "1"
    assert "manila" in state.reason and "canary 1" in state.reason
    # later rounds change nothing; a new start is the operator's
    assert rollout.observe(state, [(0.9, 0.9)], CONFIG, now=3.0) == state
    again = rollout.start(state, "2", now=4.0)
    assert again.phase is Phase.SHADOW and again.agreed_rounds == 0


def test_start_and_rollback_refuse_what_makes_no_sense() -> None:
    state = Rollout("readout", "1")
    with pytest.raises(ValueError, match="already served"):
        rollout.start(state, "1", now=0.0)
    shadow = rollout.start(state, "2", now=0.0)
    with pytest.raises(ValueError, match="already in shadow"):
        rollout.start(shadow, "drill-overcorrect", now=0.0)
    with pytest.raises(ValueError, match="nothing to roll back"):
        rollout.rollback(state, now=0.0, reason="")


def test_state_round_trips_through_json() -> None:
    state = rollout.start(Rollout("readout", "1"), "2", now=5.0)
    assert Rollout.from_json(json.loads(json.dumps(state.to_json()))) == state


# == the versions ======================================================================


def _ghz_counts(p01: np.ndarray, p10: np.ndarray, shots: int, seed: int) -> dict[str, int]:
    """Counts of an ideal 4-qubit GHZ read through these readout errors."""
    rng = np.random.default_rng(seed)
    ones = rng.integers(0, 2, size=shots).astype(bool)[:, None]
    flip = np.where(ones, rng.random((shots, 4)) < p10, rng.random((shots, 4)) < p01)
    bits = ones ^ flip
    counts: dict[str, int] = {}
    for row in bits:
        key = "".join("1" if b else "0" for b in row[::-1])
        counts[key] = counts.get(key, 0) + 1
    return counts


P01 = np.array([0.02, 0.03, 0.015, 0.04])
P10 = np.array([0.05, 0.03, 0.06, 0.02])
IDEAL = {"0000", "1111"}


def _success(q: QuasiDistribution) -> float:
    return sum(p for k, p in q.probabilities.items() if k in IDEAL)


def test_unfolding_agrees_with_the_solve_and_stays_a_distribution() -> None:
    counts = _ghz_counts(P01, P10, 4000, seed=3)
    raw = sum(v for k, v in counts.items() if k in IDEAL) / 4000
    solved = mitigate_counts(counts, P01, P10)
    unfolded = unfold_counts(counts, P01, P10)
    assert raw < 0.9 < _success(unfolded)  # it removes most readout error
    assert abs(_success(unfolded) - _success(solved)) < 0.02
    assert min(unfolded.probabilities.values()) >= 0
    assert sum(unfolded.probabilities.values()) == pytest.approx(1.0, abs=1e-9)
    assert unfolded.solver == "ibu" and unfolded.iterations > 1


def test_the_drill_version_is_far_off_and_marked() -> None:
    counts = _ghz_counts(P01, P10, 4000, seed=4)
    drill = pipelines.pipeline("readout", "drill-overcorrect")
    assert drill.drill and not pipelines.pipeline("readout", "1").drill
    gap = _success(drill.apply(counts, P01, P10, None, False)) - _success(
        mitigate_counts(counts, P01, P10)
    )
    assert gap > 0.1  # over-correction: far past any agreement threshold


def test_unknown_methods_and_versions_are_refused_by_name() -> None:
    with pytest.raises(ValidationError, match=r"method='zne\?'.*readout"):
        pipelines.pipeline("zne?", "1")
    with pytest.raises(ValidationError, match=r"version='9'.*1, 2, drill-overcorrect"):
        pipelines.pipeline("readout", "9")
    with pytest.raises(ValueError, match="already registered"):
        pipelines.register(Pipeline("readout", "1", "another", unfold_counts))


# == the book, on each store ===========================================================


@pytest.fixture
def store(store_url: str) -> Iterator[JobStore]:
    s = open_store(store_url)
    yield s
    s.close()


def _round(
    device: str, at: float, served: float, candidate: float | None, key: str
) -> CanaryRecord:
    canaries = [{"name": "c0", "measured": 0.9, "mitigated": {"readout": served, key: candidate}}]
    return CanaryRecord(device, at, "cal", 0.95, 0.9, False, {"canaries": canaries})


def test_a_round_that_found_drift_judges_no_release(store: JobStore) -> None:
    config = RolloutConfig(max_divergence=0.05, promote_after_rounds=2, min_canaries=1)
    book = Rollouts(store, config, clock=lambda: 100.0)
    book.load()

    async def run() -> None:
        await book.start("readout", "2")
        # far apart, but on a device whose canaries found drift: not counted either way
        drifted = dataclasses.replace(_round("manila", 10.0, 0.95, 0.5, "readout@2"), drifted=True)
        await book.observe(drifted)
        assert book.view()[0]["phase"] == "shadow"  # it would have been rolled back
        for k in range(2):  # rounds on a healthy device still judge it
            await book.observe(_round("nairobi", 11.0 + k, 0.95, 0.951, "readout@2"))

    asyncio.run(run())
    assert book.served() == {"readout": "2"}


def test_the_book_stores_every_move_before_serving_it(store: JobStore) -> None:
    metrics = RuntimeMetrics()
    sealed: list[tuple[str, str, str]] = []

    async def audit(entries: Sequence[object]) -> None:
        sealed.extend((e.actor, e.action, e.outcome) for e in entries)  # type: ignore[attr-defined]

    config = RolloutConfig(max_divergence=0.05, promote_after_rounds=2, min_canaries=2)
    book = Rollouts(store, config, metrics, audit, clock=lambda: 100.0)
    book.load()
    assert book.served() == {"readout": "1"}

    async def run() -> None:
        await book.start("readout", "2")
        assert book.canary_versions() == {"readout": ["1", "2"]}
        for k in range(2):
            await book.observe(_round("manila", 10.0 + k, 0.95, 0.951, "readout@2"))

    asyncio.run(run())
    assert book.served() == {"readout": "2"}
    # a restarted scheduler finds the same state in the store
    again = Rollouts(store, config)
    again.load()
    assert again.served() == {"readout": "2"} and again.view()[0]["previous"] == "1"
    assert sealed == [
        ("operator", "rollout.start", "ok"),
        ("farm", "rollout.promoted", "ok"),
    ]
    text = metrics.exposition().decode()
    assert sample(text, "qrt_postprocess_version", method="readout", version="2", role="served")
    assert sample(text, "qrt_postprocess_rollout_changes_total", to="promoted") == 1


def test_the_book_refuses_bad_requests_clearly(store: JobStore) -> None:
    book = Rollouts(store, CONFIG)
    book.load()

    async def run() -> None:
        with pytest.raises(ValidationError, match="version='7'"):
            await book.start("readout", "7")
        with pytest.raises(ValidationError, match="already served"):
            await book.start("readout", "1")
        with pytest.raises(ValidationError, match="nothing to roll back"):
            await book.rollback("readout")
        with pytest.raises(ValidationError, match="method='x'"):
            await book.rollback("x")

    asyncio.run(run())
    assert store.rollouts() == {}  # nothing was stored by refused calls


def test_an_unknown_stored_version_is_not_served(store: JobStore) -> None:
    stored = Rollout("readout", "from-a-newer-build", Phase.PROMOTED, previous="1")
    store.save_rollout("readout", json.dumps(stored.to_json()), 1.0)
    book = Rollouts(store, CONFIG)
    book.load()
    assert book.served() == {"readout": "1"}


# == a real device's canaries ==========================================================


def _flipped(
    counts: Mapping[str, int],
    p01: Sequence[float],
    p10: Sequence[float],
    distance: int | None,
    use_gpu: bool | None,
) -> QuasiDistribution:
    """A release with a bit-order bug: the right answer on the wrong bitstrings."""
    good = mitigate_counts(counts, p01, p10, distance=distance, use_gpu=use_gpu)
    flipped = {format(int(k, 2) ^ 1, f"0{len(k)}b"): v for k, v in good.probabilities.items()}
    return QuasiDistribution(flipped, good.shots, good.mitigation_overhead)


pipelines.register(Pipeline("readout", "test-flipped", "flips bit 0 (a test's bug)", _flipped))


class Clock:
    def __init__(self) -> None:
        self.t = 1_000_000.0

    def __call__(self) -> float:
        return self.t


def _canary_rounds(version: str, rounds: int, path: Path) -> Rollouts:
    """A real in-process device whose canary rounds run ``version`` in shadow; each
    recorded round goes to the book as the scheduler hands it over."""
    clock = Clock()
    device = Device(
        DeviceConfig(
            name="nairobi",
            backend="FakeNairobiV2",
            price_per_shot_usd=0.0,
            price_per_job_usd=0.0,
        ),
        clock=clock,
    )
    store = open_store(path / "jobs.sqlite3")
    book = Rollouts(store, RolloutConfig(promote_after_rounds=2, min_canaries=2), clock=clock)
    book.load()
    manager = CalibrationManager(
        store,
        LocalCalibrationPorts([device]),
        CalibrationConfig(canary_period_s=60, canary_shots=2000, max_chains=2),
        clock=clock,
        seed=5,
        versions=book.canary_versions,
    )

    async def run() -> None:
        await book.start("readout", version)
        seen = 0
        for _ in range(rounds + 1):  # the first pass only meets the device
            await manager.step()
            records = store.canaries("nairobi", 100)
            for record in reversed(records[: len(records) - seen]):
                await book.observe(record)
            seen = len(records)
            clock.t += 61.0

    asyncio.run(run())
    assert len(store.canaries("nairobi", 100)) >= rounds
    return book


@pytest.mark.parametrize("broken", ["test-flipped", "drill-overcorrect"])
def test_a_broken_release_is_caught_on_a_real_device_and_rolled_back(
    broken: str, tmp_path: Path
) -> None:
    book = _canary_rounds(broken, rounds=2, path=tmp_path)
    view = book.view()[0]
    assert view["phase"] == "rolled_back", view
    assert book.served() == {"readout": "1"}
    assert "gap" in view["reason"] and "nairobi" in view["reason"]


def test_a_sound_release_is_promoted_on_a_real_device(tmp_path: Path) -> None:
    book = _canary_rounds("2", rounds=3, path=tmp_path)
    view = book.view()[0]
    assert view["phase"] == "promoted", view
    assert book.served() == {"readout": "2"} and view["worst_gap"] < 0.05


class Ticking:
    """A clock that moves on a quarter second each time it is read: a device that
    drifts while a canary round works on it."""

    def __init__(self) -> None:
        self.t = 1_000_000.0

    def __call__(self) -> float:
        self.t += 0.25
        return self.t


def test_a_round_measures_its_counts_and_readout_figures_on_one_moment() -> None:
    """On a device drifting while a round works, figures measured a moment after the
    counts assume more error than the counts carry and push the matrix solve past 1
    (1.036 on this round before); measured before them, they delay the counts (0.95,
    and a freshly recalibrated device looks drifted). One moment for both: near 1."""
    drifting = load_farm_config_text(DRIFTING_FARM).devices[0].drift  # the test farm's
    assert drifting is not None
    drift = drifting.model_copy(update={"error_sd_per_hour": 0.0})  # the trend alone
    clock = Ticking()
    device = Device(
        DeviceConfig(
            name="manila",
            backend="FakeManilaV2",
            price_per_shot_usd=0.0,
            price_per_job_usd=0.0,
            drift=drift,
        ),
        clock=clock,
    )
    cal = device.calibration
    specs = canary_round(cal.coupling_map, cal.num_qubits, 0, chain_length=4, max_chains=1)
    probes = device.probes
    moments: list[float] = []

    def true_now() -> CalibrationSnapshot:
        moments.append(clock.t)
        return device.true_calibration()

    probes._true = true_now
    results = device.run_canaries(specs, 4000, seed=3, versions={"readout": ["1", "2"]})
    assert len(moments) == 1, moments  # counts and new figures: one moment
    readout = next(r for r in results if r.name.startswith("readout["))
    served, candidate = readout.mitigated["readout"], readout.mitigated["readout@2"]
    assert served is not None and candidate is not None
    assert abs(served - 1.0) < 0.02 and abs(candidate - served) < 0.02, readout
    # a later round reuses those figures: older than its counts, as a job's are
    later = device.run_canaries(specs, 4000, seed=4, versions={"readout": ["1", "2"]})
    assert next(r for r in later if r.name.startswith("readout[")).mitigated["readout"] < served
