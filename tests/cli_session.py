"""Many ``qrt`` commands in one long-lived process, for tests that run dozens of them.

Each command goes through the real CLI: ``qrt_ray.cli.main(argv)`` parses it, connects
to the farm, prints and returns its exit code, as ``python -m qrt_ray.cli`` would. What
is saved is the start of a Python process with Qiskit and Ray for every command (about
2.5 s each on two cores). Tests of what only a process of its own shows (Ctrl-C, a
fresh home, the installed entry point) keep subprocesses.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import uuid
from pathlib import Path

# The server: one JSON request a line on stdin; one answer a line on stdout, behind a
# marker (anything else a command lets through to the real stdout is skipped).
_SERVER = r"""
import contextlib, io, json, os, sys
from qrt_ray.cli import main
marker = sys.argv[1]
for line in sys.stdin:
    req = json.loads(line)
    out, err = io.StringIO(), io.StringIO()
    saved = dict(os.environ)
    os.environ.update(req["env"])
    os.chdir(req["cwd"])
    with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
        try:
            rc = main(req["argv"])
        except SystemExit as exc:
            rc = exc.code if isinstance(exc.code, int) else (0 if exc.code is None else 2)
    os.environ.clear()
    os.environ.update(saved)
    answer = {"rc": rc, "stdout": out.getvalue(), "stderr": err.getvalue()}
    sys.stdout.write(marker + json.dumps(answer) + "\n")
    sys.stdout.flush()
"""


class CliSession:
    """A process that runs ``qrt`` commands one after another.

    Args:
        env: its environment (a command may add to it for itself).
        cwd: where it starts.
    """

    def __init__(self, env: dict[str, str], cwd: Path) -> None:
        self._marker = f"@@qrt-{uuid.uuid4().hex}@@"
        self._proc = subprocess.Popen(
            [sys.executable, "-c", _SERVER, self._marker],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            stderr=subprocess.DEVNULL,
            text=True,
            env=env,
            cwd=cwd,
        )
        self._cwd = cwd

    def run(
        self, argv: list[str], *, cwd: Path | None = None, env: dict[str, str] | None = None
    ) -> subprocess.CompletedProcess[str]:
        """Run ``qrt ARGV``; returns what a subprocess would (args, returncode, stdout,
        stderr)."""
        proc = self._proc
        assert proc.stdin is not None and proc.stdout is not None
        request = {"argv": argv, "cwd": str(cwd or self._cwd), "env": env or {}}
        proc.stdin.write(json.dumps(request) + "\n")
        proc.stdin.flush()
        for line in proc.stdout:
            if line.startswith(self._marker):
                got = json.loads(line[len(self._marker) :])
                return subprocess.CompletedProcess(
                    ["qrt", *argv], got["rc"], got["stdout"], got["stderr"]
                )
        raise RuntimeError(f"the qrt session ended while running {argv} ({proc.poll()})")

    def close(self) -> None:
        """End the process."""
        if self._proc.poll() is None:
            assert self._proc.stdin is not None
            self._proc.stdin.close()
            try:
                self._proc.wait(timeout=30)
            except subprocess.TimeoutExpired:
                self._proc.kill()
                self._proc.wait()


def session_env(env: dict[str, str]) -> dict[str, str]:
    """``env`` with this checkout importable (the server runs ``-c``)."""
    root = str(Path(__file__).resolve().parents[1])
    path = env.get("PYTHONPATH", "")
    return {**env, "PYTHONPATH": root + (os.pathsep + path if path else "")}
