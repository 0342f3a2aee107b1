"""Placement on a large farm: the short list over numpy columns makes the decision the
full list of candidates makes, and its explanation stays small."""

from __future__ import annotations

import dataclasses
from functools import cache

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from qrt_ray.config import load_farm_config, load_policy_config
from qrt_ray.errors import QrtError
from qrt_ray.evaluation.simulator import build_devices, circuit_pool
from qrt_ray.models import DeviceSnapshot, DeviceStatus
from qrt_ray.policies.fidelity import FidelityEstimator
from qrt_ray.policies.placement import PlacementOptions, Weights, choose, resolve_weights
from qrt_ray.policies.placer import SHORT_LIST, DeviceLoad, JobShape, Placer

FARM = 36


@cache
def farm() -> tuple[DeviceSnapshot, ...]:
    snaps, _ = build_devices(FARM, load_farm_config(), seed=5)
    return tuple(snaps)


@cache
def pool():
    return circuit_pool(10, 9, seed=5)


ESTIMATOR = FidelityEstimator()


def _reference(placer: Placer, job: JobShape, loads: list[DeviceLoad], opts: PlacementOptions):
    """Today's search: a candidate for every fitting device, then the policy."""
    policy = opts.policy or placer.config.policy
    weights = resolve_weights(opts, placer.default_weights)
    cands = placer.candidates(job, loads, policy=policy, weights=weights, options=opts)
    return choose(policy, cands, opts, weights=weights)


def _outcome(place) -> str:
    try:
        return place().device
    except QrtError as exc:
        return f"{type(exc).__name__}: {exc}"


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    policy=st.sampled_from(["composite", "best_fidelity", "least_busy"]),
    circuit=st.integers(0, 9),
    shots=st.sampled_from([100, 1000, 4000]),
    backlogs=st.lists(st.sampled_from([0.0, 0.0, 0.5, 3.0, 40.0]), min_size=FARM, max_size=FARM),
    full=st.sets(st.integers(0, FARM - 1), max_size=FARM),
    time_weight=st.sampled_from([None, 0.005, 0.1, 1.0]),
    max_cost=st.sampled_from([None, None, 0.5, 1e-6]),
    deadline=st.sampled_from([None, None, 2.0, 0.05]),
    simulated=st.booleans(),
)
def test_the_short_list_decides_as_the_full_list_does(
    policy: str,
    circuit: int,
    shots: int,
    backlogs: list[float],
    full: set[int],
    time_weight: float | None,
    max_cost: float | None,
    deadline: float | None,
    simulated: bool,
) -> None:
    snaps = [
        dataclasses.replace(s, queue_depth=s.queue_limit) if i in full else s
        for i, s in enumerate(farm())
    ]
    loads = [DeviceLoad(s, b) for s, b in zip(snaps, backlogs, strict=True)]
    name, profile = pool()[circuit]
    job = JobShape(f"job-{circuit}", (name,), (profile,), shots)
    opts = PlacementOptions(
        policy=policy,
        weights=Weights(1.0, time_weight, 0.01) if time_weight is not None else None,
        max_cost_usd=max_cost,
        deadline_s=deadline,
    )
    config = load_policy_config()
    # the reference first: the full estimates it caches are what the short list reads
    expected = _outcome(
        lambda: _reference(Placer(config, ESTIMATOR, simulated=simulated), job, loads, opts)
    )
    placer = Placer(config, ESTIMATOR, simulated=simulated)
    got = _outcome(lambda: placer.place(job, loads, opts))
    assert got == expected
    if not got.startswith(("PlacementError", "DeviceUnavailableError")):
        placement = placer.place(job, loads, opts)
        shown = placement.explanation["devices"]
        assert len(placement.ranking) <= SHORT_LIST and len(shown) <= SHORT_LIST
        assert placement.ranking[0][0] == placement.device
        assert placement.explanation["devices_fitting"] > len(shown)
        assert placement.explanation["chosen"]["fidelity_is_bound"] is False


def test_a_full_farm_is_refused_in_a_bounded_message() -> None:
    snaps = [dataclasses.replace(s, queue_depth=s.queue_limit) for s in farm()]
    name, profile = pool()[0]
    job = JobShape("job", (name,), (profile,), 100)
    placer = Placer(load_policy_config(), ESTIMATOR)
    with pytest.raises(
        QrtError, match=r"no fitting device is accepting work now: .* and \d+ more$"
    ) as info:
        placer.place(job, [DeviceLoad(s) for s in snaps], PlacementOptions())
    assert len(str(info.value)) < 1000


def test_the_columns_follow_a_new_device_list() -> None:
    """A changed snapshot (a device taken offline) is read at the next decision."""
    name, profile = pool()[0]
    job = JobShape("job", (name,), (profile,), 100)
    placer = Placer(load_policy_config(), ESTIMATOR)
    snaps = list(farm())
    first = placer.place(job, [DeviceLoad(s) for s in snaps], PlacementOptions()).device
    snaps = [
        dataclasses.replace(s, status=DeviceStatus.OFFLINE) if s.name == first else s for s in snaps
    ]
    second = placer.place(job, [DeviceLoad(s) for s in snaps], PlacementOptions()).device
    assert second != first
