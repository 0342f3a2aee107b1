"""Run a Python child process that prints one ``RESULT <json>`` line, and read it."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path
from typing import Any


def result_of(args: list[str], *, env: dict[str, str], cwd: Path, timeout_s: float) -> Any:
    """The JSON after ``RESULT`` in the output of ``python ARGS``; fails the test with
    the child's exit code and the tails of its output when there is none."""
    out = subprocess.run(
        [sys.executable, *args],
        cwd=cwd,
        env=env,
        capture_output=True,
        text=True,
        timeout=timeout_s,
    )
    line = next((ln for ln in out.stdout.splitlines() if ln.startswith("RESULT ")), None)
    assert line is not None, (out.returncode, out.stdout[-2000:], out.stderr[-4000:])
    return json.loads(line.removeprefix("RESULT "))
