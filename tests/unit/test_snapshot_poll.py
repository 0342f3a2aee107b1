"""Device snapshots polled without waiting on a device that hangs (no Ray)."""

from __future__ import annotations

import asyncio

from qrt_ray.actors.snapshot_poll import SnapshotPoller


class Devices:
    """Devices that answer with a count of their answers; a hung one never answers
    until it is let go."""

    def __init__(self) -> None:
        self.answers = {"a": 0, "b": 0}
        self.hung: dict[str, asyncio.Event] = {}

    async def ask(self, name: str) -> str:
        if name in self.hung:
            await self.hung[name].wait()
        self.answers[name] += 1
        return f"{name}{self.answers[name]}"


def test_a_hanging_device_holds_up_no_round_and_is_left_out_after_the_timeout() -> None:
    async def main() -> None:
        now = [0.0]
        devices = Devices()
        poll = SnapshotPoller(devices.ask, timeout_s=10.0, round_wait_s=0.05, clock=lambda: now[0])
        assert await poll.round(["a", "b"]) == {"a": "a1", "b": "b1"}
        devices.hung["b"] = asyncio.Event()  # b stops answering
        loop = asyncio.get_running_loop()
        started = loop.time()
        assert await poll.round(["a", "b"]) == {"a": "a2", "b": "b1"}  # b as it was
        now[0] = 5.0
        assert await poll.round(["a", "b"]) == {"a": "a3", "b": "b1"}
        assert loop.time() - started < 1.0  # no round waited for b
        now[0] = 10.0  # b's question is as old as the timeout: b is left out
        assert await poll.round(["a", "b"]) == {"a": "a4"}
        now[0] = 11.0  # and stays out, asked afresh, while it hangs
        assert await poll.round(["a", "b"]) == {"a": "a5"}
        devices.hung["b"].set()  # it answers again
        await asyncio.sleep(0)
        got = await poll.round(["a", "b"])
        assert got["a"] == "a6" and got["b"].startswith("b")

    asyncio.run(main())


def test_a_device_never_heard_from_is_waited_on_until_it_answers() -> None:
    async def main() -> None:
        devices = Devices()
        gate = devices.hung["b"] = asyncio.Event()
        poll = SnapshotPoller(devices.ask, timeout_s=0.3, round_wait_s=0.01)

        async def late() -> None:
            await asyncio.sleep(0.1)
            gate.set()

        task = asyncio.ensure_future(late())
        assert await poll.round(["a", "b"]) == {"a": "a1", "b": "b1"}  # waited for b
        await task
        del devices.hung["b"]

    asyncio.run(main())


def test_a_device_that_fails_or_is_restarted_is_left_out_until_it_answers() -> None:
    async def main() -> None:
        calls = {"n": 0}

        async def ask(name: str) -> str:
            calls["n"] += 1
            if calls["n"] == 2:
                raise RuntimeError("actor died")
            return f"{name}{calls['n']}"

        poll = SnapshotPoller(ask, timeout_s=5.0, round_wait_s=0.05)
        assert await poll.round(["a"]) == {"a": "a1"}
        assert await poll.round(["a"]) == {}  # failed: left out
        assert await poll.round(["a"]) == {"a": "a3"}  # answers again
        poll.lost("a")  # being restarted
        assert await poll.round(["a"]) == {"a": "a4"}  # its new actor answers

    asyncio.run(main())


def test_overlapping_rounds_each_get_every_answer() -> None:
    """The scheduler's loop and a submit may poll at once: both see each device."""

    async def main() -> None:
        devices = Devices()
        poll = SnapshotPoller(devices.ask, timeout_s=5.0, round_wait_s=0.05)
        one, two = await asyncio.gather(poll.round(["a", "b"]), poll.round(["a", "b"]))
        assert set(one) == set(two) == {"a", "b"}
        assert devices.answers == {"a": 1, "b": 1}  # one question each, shared

    asyncio.run(main())


def test_a_starting_device_whose_first_question_failed_is_still_waited_on() -> None:
    """Its actor was not there yet (the question failed at once); the next round waits
    the whole timeout for it again, as the scheduler admits no work for a device it
    has never seen (a pinned job would be refused as naming no such device)."""

    async def main() -> None:
        tries = {"n": 0}

        async def ask(name: str) -> str:
            tries["n"] += 1
            if tries["n"] == 1:
                raise KeyError("device b has no actor yet")
            await asyncio.sleep(0.2)  # constructing: slower than a round's wait
            return "b-up"

        poll = SnapshotPoller(ask, timeout_s=2.0, round_wait_s=0.01)
        assert await poll.round(["b"]) == {}
        assert await poll.round(["b"]) == {"b": "b-up"}

    asyncio.run(main())
