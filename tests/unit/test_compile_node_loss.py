"""A compile the cluster lost with its node places the job again; it does not fail it."""

from __future__ import annotations

import asyncio
from typing import Any

import pytest
import ray

from qrt_ray.actors import scheduler_actor
from qrt_ray.actors.scheduler_actor import RayPorts
from qrt_ray.errors import DeviceUnavailableError


class _Lost:
    def __init__(self, error: Exception) -> None:
        self.error = error

    def remote(self, *args: Any, **kwargs: Any) -> Any:
        async def fail() -> None:
            raise self.error

        return fail()


@pytest.mark.parametrize(
    "error",
    [
        ray.exceptions.NodeDiedError("node gone"),
        ray.exceptions.ObjectLostError("o", "owner", "call"),
    ],
)
def test_a_compile_lost_with_its_node_is_placed_again(
    monkeypatch: pytest.MonkeyPatch, error: Exception
) -> None:
    ports = RayPorts({}, namespace="qrt-test")

    async def target(device: str, expected: str | None = None) -> tuple[str, Any]:
        return "cal-1", object()

    monkeypatch.setattr(ports, "_target", target)
    monkeypatch.setattr(scheduler_actor, "compile_task", _Lost(error))
    with pytest.raises(DeviceUnavailableError, match="lost with its node"):
        asyncio.run(ports.compile("manila", ["x"], optimization_level=1, seed=1))


def test_any_other_compile_crash_still_fails_the_job(monkeypatch: pytest.MonkeyPatch) -> None:
    ports = RayPorts({}, namespace="qrt-test")

    async def target(device: str, expected: str | None = None) -> tuple[str, Any]:
        return "cal-1", object()

    monkeypatch.setattr(ports, "_target", target)
    monkeypatch.setattr(scheduler_actor, "compile_task", _Lost(ray.exceptions.WorkerCrashedError()))
    with pytest.raises(ray.exceptions.WorkerCrashedError):
        asyncio.run(ports.compile("manila", ["x"], optimization_level=1, seed=1))


class _Restarting:
    """A device actor handle whose process is restarting (killed, or its node lost)."""

    def __init__(self) -> None:
        self.compile_target = _Lost(ray.exceptions.ActorUnavailableError("restarting", None))


def test_a_device_restarting_while_its_target_is_fetched_places_the_job_again() -> None:
    # found by the actor-kill drill: a kill landing while a compile fetched the device's
    # target failed the job as a compile error
    ports = RayPorts({"manila": _Restarting()}, namespace="qrt-test")
    with pytest.raises(DeviceUnavailableError, match="unavailable for a compile"):
        asyncio.run(ports.compile("manila", ["x"], optimization_level=1, seed=1))


class _Refusing:
    """A device actor handle whose ``enqueue`` refuses, as Ray delivers it: the
    device's error inside a remote traceback."""

    def __init__(self) -> None:
        cause = DeviceUnavailableError("device manila is CALIBRATING")
        trace = "Traceback (most recent call last):\n  File device.py\n" + str(cause)
        error = ray.exceptions.RayTaskError("DeviceActor.enqueue", trace, cause)
        self.enqueue = _Lost(error.as_instanceof_cause())


def test_a_refused_hand_off_gives_the_devices_words_not_its_traceback() -> None:
    # found in a drift test's job history: the refusal's reason carried the remote
    # traceback, colour codes and all
    ports = RayPorts({"manila": _Refusing()}, namespace="qrt-test")
    with pytest.raises(DeviceUnavailableError) as caught:
        asyncio.run(ports.enqueue("manila", []))
    assert str(caught.value) == "device manila is CALIBRATING"
    assert not isinstance(caught.value, ray.exceptions.RayTaskError)
