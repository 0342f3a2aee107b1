"""Ctrl-C during `qrt submit --wait` stops the wait, even when it lands inside a call
that swallows ``KeyboardInterrupt``; a second Ctrl-C interrupts at once.

Each case runs in its own interpreter: a signal sent to the test process itself would
stop the test run if the handler under test were missing."""

from __future__ import annotations

import subprocess
import sys
import textwrap

_WAIT = """
import os, signal, time
from qrt_ray.cli import _wait_with_progress
from qrt_ray.errors import JobTimeoutError
from qrt_ray.lifecycle import JobState

class Handle:
    job_id = "job-0"
    polls = 0

    def status(self):
        return JobState.RUNNING

    def result(self, timeout_s):
        self.polls += 1
        if self.polls == 2:
            try:  # a library call that swallows what lands in it
                os.kill(os.getpid(), signal.SIGINT)
                time.sleep(0.05)
            except BaseException:
                pass
        time.sleep(0.01)
        raise JobTimeoutError("not done yet")

before = signal.getsignal(signal.SIGINT)
handle = Handle()
try:
    _wait_with_progress(handle, 3.0)
    print("returned")
except KeyboardInterrupt:
    print("interrupted", handle.polls, signal.getsignal(signal.SIGINT) is before)
except JobTimeoutError:
    print("timed out", handle.polls)
"""

_TWICE = """
import os, signal, time
from qrt_ray.cli import _ctrl_c_flag

with _ctrl_c_flag() as interrupted:
    os.kill(os.getpid(), signal.SIGINT)
    time.sleep(0.05)
    first = interrupted()
    try:
        os.kill(os.getpid(), signal.SIGINT)
        time.sleep(0.05)
        second = "ignored"
    except KeyboardInterrupt:
        second = "raised"
print("first", first, "second", second)
"""


def _run(code: str) -> str:
    done = subprocess.run(
        [sys.executable, "-c", textwrap.dedent(code)],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert done.returncode == 0, done.stderr[-2000:]
    return done.stdout.split("\n")[-2]


def test_a_ctrl_c_a_call_swallows_still_stops_the_wait() -> None:
    # stopped at the poll it landed in, the previous handler back in place
    assert _run(_WAIT) == "interrupted 2 True"


def test_a_second_ctrl_c_interrupts_at_once() -> None:
    assert _run(_TWICE) == "first True second raised"
