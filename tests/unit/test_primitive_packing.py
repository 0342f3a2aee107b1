"""How a primitive run's requests are packed into farm jobs (pure; no Ray)."""

from __future__ import annotations

from qrt_ray.models import TwirlSpec
from qrt_ray.primitives.runner import PACK_CIRCUITS, FarmRequest, pack


def _req(circuits: int, shots: int = 100, twirl: TwirlSpec | None = None) -> FarmRequest:
    return FarmRequest(tuple(f"c{i}" for i in range(circuits)), shots, twirl)


def test_requests_for_one_device_share_jobs_up_to_the_circuit_limit() -> None:
    requests = [_req(1) for _ in range(PACK_CIRCUITS + 3)]
    groups = pack(requests, ["dev"] * len(requests))
    assert [len(g) for g in groups] == [PACK_CIRCUITS, 3]
    assert [i for g in groups for i in g] == list(range(len(requests)))


def test_only_requests_that_agree_on_device_shots_and_twirling_share_a_job() -> None:
    twirl = TwirlSpec(gates=True, measure=True, randomizations=4)
    requests = [_req(2), _req(2, shots=200), _req(2), _req(2, twirl=twirl), _req(2), _req(2)]
    devices = ["a", "a", "a", "a", "b", None]
    assert pack(requests, devices) == [[0, 2], [1], [3], [4], [5]]


def test_a_request_larger_than_the_limit_keeps_a_job_of_its_own() -> None:
    requests = [_req(3), _req(PACK_CIRCUITS + 1), _req(PACK_CIRCUITS - 3)]
    assert pack(requests, ["d"] * 3) == [[0, 2], [1]]


def test_without_a_fixed_device_every_request_is_placed_on_its_own() -> None:
    requests = [_req(1) for _ in range(5)]
    assert pack(requests, [None] * 5) == [[i] for i in range(5)]
