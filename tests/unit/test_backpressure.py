"""Backpressure: a full farm refuses more work at once, whole, with when to retry;
it never takes work it would have to hold in memory past its bound."""

from __future__ import annotations

import asyncio
import time
from pathlib import Path

import pytest

from qrt_ray.config import SchedulingConfig
from qrt_ray.errors import FarmBusyError, QuotaExceededError
from qrt_ray.gateway import error_response
from qrt_ray.remote import _raise_for
from tests.local_farm import drive, make, spec


def test_a_full_farm_refuses_a_call_whole_and_says_when_to_retry(tmp_path: Path) -> None:
    async def main() -> None:
        store, devices, sched = make(tmp_path, SchedulingConfig(max_live_jobs=3))
        await sched.start()
        kept = await sched.submit([spec(3, shots=100, idempotency_key=f"k{i}") for i in range(3)])
        started = time.perf_counter()
        with pytest.raises(FarmBusyError, match=r"holds 3 unfinished jobs .* retry after") as info:
            await sched.submit([spec(3, shots=100), spec(3, shots=100)])
        assert time.perf_counter() - started < 1.0
        assert 1.0 <= info.value.retry_after_s <= 300.0
        assert info.value.limit == "max_live_jobs"
        assert len(store.list_jobs(limit=100)) == 3  # nothing of the refused call stored
        # a resubmission of a job the farm already holds adds nothing: it is answered
        again = await sched.submit([spec(3, shots=100, idempotency_key="k0")])
        assert again[0][0].job_id == kept[0][0].job_id and not again[0][1]
        await drive(sched, devices)
        # jobs finished: room again, and the estimate now comes from their pace
        await sched.submit([spec(3, shots=100), spec(3, shots=100), spec(3, shots=100)])
        with pytest.raises(FarmBusyError, match=r"jobs finish at about") as busy:
            await sched.submit([spec(3, shots=100)])
        assert busy.value.retry_after_s >= 1.0
        await drive(sched, devices)
        await sched.stop()
        store.close()

    asyncio.run(main())


def test_busy_is_http_503_with_retry_after_and_comes_back_as_itself() -> None:
    exc = FarmBusyError("the farm is busy", limit="max_live_jobs", retry_after_s=12.2)
    resp = error_response(exc)
    assert resp.status_code == 503 and resp.headers["Retry-After"] == "13"
    import json

    body = json.loads(resp.body)
    with pytest.raises(FarmBusyError) as back:
        _raise_for(503, {"retry-after": "13"}, body)
    assert isinstance(back.value, QuotaExceededError)
    assert back.value.retry_after_s == pytest.approx(12.2)


class _Gateway:
    """A gateway's answers in turn: (status, body) pairs."""

    url = "http://127.0.0.1:1"

    def __init__(self, *answers: tuple[int, object]) -> None:
        self.answers = list(answers)
        self.asked = 0

    def request(self, method: str, path: str, body: object = None, query: object = None):  # type: ignore[no-untyped-def]
        self.asked += 1
        status, decoded = self.answers.pop(0)
        return status, {"retry-after": "1"}, decoded


def test_a_remote_client_hears_busy_at_once_and_rides_out_a_gateway_restart() -> None:
    from qrt_ray.remote import RemoteRuntime

    busy = {
        "error": {
            "type": "FarmBusyError",
            "message": "the job cannot be judged yet",
            "limit": "devices_unheard",
            "retry_after_s": 1.0,
        }
    }
    gateway = _Gateway((503, busy))
    rt = RemoteRuntime(gateway, retry_s=30, pipeline=False)  # type: ignore[arg-type]
    started = time.perf_counter()
    with pytest.raises(FarmBusyError, match="cannot be judged yet") as info:
        rt._http("GET", "/v1/devices")
    assert time.perf_counter() - started < 1.0 and gateway.asked == 1  # not ridden out
    assert info.value.limit == "devices_unheard"
    restarting = _Gateway((503, None), (200, []))  # a gateway restarting says nothing
    assert RemoteRuntime(restarting, retry_s=30, pipeline=False)._http("GET", "/v1/x") == []  # type: ignore[arg-type]
    assert restarting.asked == 2
