"""A pipelined submit refuses at once what the farm would refuse on sight, never on a
stale view of the farm."""

from __future__ import annotations

import pytest

from qrt_ray.circuits import to_qasm
from qrt_ray.early import FRESH_S, EarlyRefusals
from qrt_ray.errors import PlacementError, ValidationError
from qrt_ray.models import DeviceSnapshot, JobSpec
from qrt_ray.pipeline import Ack
from tests.circuits import ghz
from tests.unit.test_policies import snap


class Farm:
    """The devices a client reads, with a clock and a count of reads."""

    def __init__(self, *names: str) -> None:
        self.devices: list[DeviceSnapshot] = [snap(n) for n in names]
        self.reads = 0
        self.now = 0.0
        self.down = False

    def read(self, timeout_s: float) -> list[DeviceSnapshot]:
        assert 0 < timeout_s <= 5  # one short try
        if self.down:
            raise ConnectionError("the farm restarts")
        self.reads += 1
        return list(self.devices)

    def refusals(self) -> EarlyRefusals:
        return EarlyRefusals(self.read, clock=lambda: self.now)


def spec(qubits: int, device: str | None = None, **kw: object) -> JobSpec:
    return JobSpec(circuits=(to_qasm(ghz(qubits)),), shots=10, device=device, **kw)


def test_a_job_that_fits_is_let_through_on_the_devices_read_once() -> None:
    farm = Farm("manila", "guadalupe")
    early = farm.refusals()
    for _ in range(5):
        early.check(spec(5))
        early.check(spec(16))
        early.check(spec(5, device="manila"))
    assert farm.reads == 1


def test_what_no_device_could_run_is_refused_with_the_schedulers_words() -> None:
    early = Farm("manila", "guadalupe").refusals()
    with pytest.raises(PlacementError, match="device='nope': no such device; the farm has: "):
        early.check(spec(5, device="nope"))
    with pytest.raises(PlacementError, match="device='manila' has 5 qubits but the job needs 7"):
        early.check(spec(7, device="manila"))
    with pytest.raises(
        PlacementError,
        match=r"^job\.circuits\[0\]: .*17 .*the widest device of this farm, 'guadalupe', has 16",
    ):
        early.check(spec(17))


def test_a_refusal_reads_the_devices_again_when_they_are_old() -> None:
    farm = Farm("manila")
    early = farm.refusals()
    early.check(spec(5))
    farm.devices.append(snap("guadalupe"))  # a device joined since
    farm.now += FRESH_S / 2
    with pytest.raises(PlacementError):  # read half a second ago: the refusal stands
        early.check(spec(16))
    assert farm.reads == 1
    farm.now += FRESH_S
    early.check(spec(16))  # read again before refusing: it fits now
    early.check(spec(7, device="guadalupe"))
    assert farm.reads == 2


def test_nothing_is_refused_while_the_farm_cannot_be_asked() -> None:
    farm = Farm("manila")
    farm.down = True
    early = farm.refusals()
    early.check(spec(20, device="nope"))  # unknown here: the scheduler will judge it
    farm.down = False
    early.check(spec(20, device="nope"))  # asked at most once a second: not yet
    assert farm.reads == 0
    farm.now += FRESH_S
    with pytest.raises(PlacementError):
        early.check(spec(20, device="nope"))
    assert farm.reads == 1


def test_nothing_is_refused_before_any_device_has_answered_the_farm() -> None:
    farm = Farm()  # a farm whose scheduler has heard from no device yet
    early = farm.refusals()
    early.check(spec(3))  # not "the farm has no devices": the scheduler judges it
    early.check(spec(3, device="manila"))
    farm.devices.append(snap("manila"))
    farm.now += FRESH_S
    early.check(spec(3, device="manila"))
    with pytest.raises(PlacementError, match="no such device"):
        early.check(spec(3, device="nope"))


def test_a_placement_refusal_comes_before_a_key_refusal_as_at_the_scheduler() -> None:
    early = Farm("manila").refusals()
    first = spec(3, idempotency_key="k0")
    ack = Ack(first)
    early.sent(first, ack)
    ack.accept("job-0")
    with pytest.raises(PlacementError):
        early.check(spec(9, idempotency_key="k0"))


def test_a_key_used_here_for_another_request_is_refused_once_its_job_is_known() -> None:
    early = Farm("manila").refusals()
    first = spec(3, idempotency_key="k1")
    ack = Ack(first)
    early.sent(first, ack)
    early.check(spec(3, idempotency_key="k1"))  # the same request: the same job, later
    early.check(spec(3, idempotency_key="k1", tenant="other"))  # another tenant's key
    ack.accept("job-1")
    with pytest.raises(ValidationError, match="'k1' was already used for job job-1 with a diff"):
        early.check(JobSpec(circuits=first.circuits, shots=11, idempotency_key="k1"))


def test_a_key_whose_first_job_was_refused_names_no_job() -> None:
    early = Farm("manila").refusals()
    first = spec(3, idempotency_key="k2")
    ack = Ack(first)
    early.sent(first, ack)
    ack.refuse(PlacementError("no"))
    early.check(spec(4, idempotency_key="k2"))  # free again: nothing was stored with it


def test_equal_requests_are_equal_however_their_numbers_are_written() -> None:
    early = Farm("manila").refusals()
    first = spec(3, idempotency_key="k3", max_cost_usd=0.0)
    ack = Ack(first)
    early.sent(first, ack)
    ack.accept("job-3")
    early.check(spec(3, idempotency_key="k3", max_cost_usd=-0.0))  # the scheduler: equal
    with pytest.raises(ValidationError, match="already used for job job-3"):
        early.check(spec(3, idempotency_key="k3", max_cost_usd=0.5))


def test_answered_keys_are_kept_as_job_ids_and_refused_ones_forgotten() -> None:
    from qrt_ray import early as early_mod

    early = Farm("manila").refusals()
    acks = []
    for i in range(early_mod._COMPACT_EVERY):
        s = spec(3, idempotency_key=f"key-{i}")
        acks.append(Ack(s))
        early.sent(s, acks[-1])
        if i % 2:
            acks[-1].accept(f"job-{i}")
        elif i < 10:
            acks[-1].refuse(PlacementError("no"))
    kept = early._keys  # compacted when the 1,024th key came in
    assert kept[("default", "key-1")][1] == "job-1"
    assert ("default", "key-0") not in kept  # refused: names no job
    assert isinstance(kept[("default", "key-10")][1], Ack)  # not answered yet
