"""Waiting for a condition in tests: always with a deadline, always saying what for.

A regression then fails in seconds with the condition's name, instead of hanging
until the suite's global timeout.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable
from typing import TypeVar

T = TypeVar("T")


def wait_until(
    condition: Callable[[], T], *, what: str, timeout_s: float = 60.0, every_s: float = 0.05
) -> T:
    """Poll ``condition()`` until it is truthy and return its value.

    Raises:
        AssertionError: naming ``what`` and the time waited, after ``timeout_s``.
    """
    deadline = time.monotonic() + timeout_s
    while True:
        value = condition()
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout_s:g} s waiting for {what}")
        time.sleep(every_s)


async def wait_until_async(
    condition: Callable[[], T], *, what: str, timeout_s: float = 60.0, every_s: float = 0.01
) -> T:
    """:func:`wait_until` inside an event loop: other tasks run while it waits."""
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout_s
    while True:
        value = condition()
        if value:
            return value
        if loop.time() > deadline:
            raise AssertionError(f"timed out after {timeout_s:g} s waiting for {what}")
        await asyncio.sleep(every_s)
