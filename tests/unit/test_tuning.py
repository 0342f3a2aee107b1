"""The farm processes' tuning: a settled heap, a simulator that yields the CPU."""

from __future__ import annotations

import gc
import os
import sys
import threading

import pytest

from qrt_ray.tuning import SWITCH_INTERVAL_S, lower_priority, quick_handoffs, settle_heap


def test_a_settled_heap_is_left_out_of_later_collections() -> None:
    try:
        frozen = settle_heap()
        assert frozen == gc.get_freeze_count() > 1000  # the modules this test imported
        young = [[i] for i in range(100)]
        assert gc.get_freeze_count() == frozen  # later objects are collected as before
        assert gc.is_tracked(young[0])
    finally:
        gc.unfreeze()
    assert gc.get_freeze_count() == 0


@pytest.mark.skipif(sys.platform != "linux", reason="per-thread priority is Linux's")
def test_lower_priority_is_the_calling_threads_and_its_childrens() -> None:
    seen: dict[str, int] = {}

    def child() -> None:
        seen["child"] = os.getpriority(os.PRIO_PROCESS, threading.get_native_id())

    def lowered() -> None:
        tid = threading.get_native_id()
        seen["before"] = os.getpriority(os.PRIO_PROCESS, tid)
        seen["did"] = lower_priority(5)
        seen["after"] = os.getpriority(os.PRIO_PROCESS, tid)
        t = threading.Thread(target=child)
        t.start()
        t.join()

    me = os.getpriority(os.PRIO_PROCESS, threading.get_native_id())
    t = threading.Thread(target=lowered)
    t.start()
    t.join()
    assert seen["did"] is True
    assert seen["after"] == min(19, seen["before"] + 5)
    assert seen["child"] == seen["after"]  # a thread it starts inherits it
    assert os.getpriority(os.PRIO_PROCESS, threading.get_native_id()) == me  # not ours


def test_quick_handoffs_sets_the_switch_interval_and_returns_the_old_one() -> None:
    old = sys.getswitchinterval()
    try:
        assert quick_handoffs() == old
        assert sys.getswitchinterval() == pytest.approx(SWITCH_INTERVAL_S)
        assert old > SWITCH_INTERVAL_S  # shorter than the interpreter's 5 ms default
        assert quick_handoffs(0.002) == pytest.approx(SWITCH_INTERVAL_S)
    finally:
        sys.setswitchinterval(old)
