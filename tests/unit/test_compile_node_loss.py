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
