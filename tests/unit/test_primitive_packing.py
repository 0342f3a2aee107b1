"""How a primitive run's requests are packed into farm jobs (pure; no Ray)."""

from __future__ import annotations

from qrt_ray.models import TwirlSpec
from qrt_ray.primitives.runner import PACK_CIRCUITS, PACK_FIRST, FarmRequest, pack


def _req(circuits: int, shots: int = 100, twirl: TwirlSpec | None = None) -> FarmRequest:
    return FarmRequest(tuple(f"c{i}" for i in range(circuits)), shots, twirl)


def test_requests_for_one_device_share_jobs_that_grow_to_the_circuit_limit() -> None:
    # a small first job starts the device while the rest compile
    sizes = [PACK_FIRST, 2 * PACK_FIRST, 4 * PACK_FIRST]
    assert sizes[-1] >= PACK_CIRCUITS
    sizes = [min(s, PACK_CIRCUITS) for s in sizes] + [PACK_CIRCUITS, 3]
    requests = [_req(1) for _ in range(sum(sizes))]
    groups = pack(requests, ["dev"] * len(requests))
    assert [len(g) for g in groups] == sizes
    assert [i for g in groups for i in g] == list(range(len(requests)))


def test_only_requests_that_agree_on_device_shots_and_twirling_share_a_job() -> None:
    twirl = TwirlSpec(gates=True, measure=True, randomizations=4)
    requests = [_req(2), _req(2, shots=200), _req(2), _req(2, twirl=twirl), _req(2), _req(2)]
    devices = ["a", "a", "a", "a", "b", None]
    assert pack(requests, devices) == [[0, 2], [1], [3], [4], [5]]


def test_a_request_larger_than_the_limit_keeps_a_job_of_its_own() -> None:
    requests = [_req(3), _req(PACK_CIRCUITS + 1), _req(PACK_FIRST - 3), _req(PACK_FIRST)]
    # the first shared job takes requests 0 and 2 (PACK_FIRST circuits); 3 opens the next
    assert pack(requests, ["d"] * 4) == [[0, 2], [1], [3]]


def test_without_a_fixed_device_every_request_is_placed_on_its_own() -> None:
    requests = [_req(1) for _ in range(5)]
    assert pack(requests, [None] * 5) == [[i] for i in range(5)]
