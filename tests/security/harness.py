"""Running the hostile corpus: secrets on disk, a stall probe, and one case at a time.

Shared by ``tests/security`` and ``benchmarks/hostile_intake.py``.
"""

from __future__ import annotations

import contextlib
import os
import secrets
import threading
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from tests.security.cases import Case, Secrets


def plant_secrets(folder: Path) -> Secrets:
    """A secret file (random content) and a named pipe in ``folder``."""
    token = f"secret_{secrets.token_hex(16)}"
    secret = folder / "secret.inc"
    secret.write_text(f"{token} q;\n")  # parses as a gate call, so a reader would echo it
    fifo = folder / "pipe.inc"
    os.mkfifo(fifo)
    return Secrets(secret=secret, fifo=fifo, token=token)


@dataclass(frozen=True)
class Outcome:
    """How one case ended.

    Attributes:
        verdict: ``error`` (a QrtError), ``ran`` (a job with an answer), ``accepted``
            (the input was taken), ``crash`` (anything else escaped).
        error: the exception's class name, if one was raised.
        message: its message, or what was accepted.
        top: for jobs that ran, the bitstring holding most shots, and its share.
    """

    verdict: str
    error: str | None = None
    message: str = ""
    top: tuple[str, float] | None = None
    job_ids: tuple[str, ...] = ()


def run_case(rt: Any, case: Case, found: Secrets, timeout_s: float = 120.0) -> Outcome:
    """Send one case to a live farm the way its ``call`` says."""
    import ray

    from qrt_ray import QrtError

    try:
        if case.call == "submit":
            handle = rt.submit(case.payload(found), **{"shots": 200, **case.options})
            if case.answer is None:
                state = rt.wait([handle], timeout_s=timeout_s)[handle.job_id]
                error = handle.info().get("error") or ""
                return Outcome(
                    "accepted", message=f"job {state.value}: {error}", job_ids=(handle.job_id,)
                )
            counts = handle.result(timeout_s=timeout_s).counts()
            top = max(counts, key=counts.__getitem__)
            share = counts[top] / sum(counts.values())
            return Outcome(
                "ran",
                message=f"top {top} ({share:.0%})",
                top=(top, share),
                job_ids=(handle.job_id,),
            )
        if case.call == "actor":
            views = ray.get(rt._scheduler.submit.remote(case.actor_json(found)))  # type: ignore[misc]
            return Outcome(
                "accepted",
                message=f"{len(views)} job(s) admitted",
                job_ids=tuple(v["job_id"] for v in views),
            )
        if case.call == "jobs":
            return Outcome("accepted", message=f"{len(rt.jobs(**case.options))} jobs listed")
        if case.call == "job":
            rt.job(case.options["job_id"])
            return Outcome("accepted", message="found")
    except QrtError as exc:
        cause = getattr(exc, "cause", None)  # an actor called directly: RayTaskError(...)
        found_error = cause if isinstance(cause, QrtError) else exc
        return Outcome("error", type(found_error).__name__, str(found_error))
    except (KeyboardInterrupt, SystemExit):
        raise
    except BaseException as exc:  # a Rust panic is a BaseException
        cause = getattr(exc, "cause", None)
        if isinstance(cause, QrtError):  # an actor called directly raises RayTaskError
            return Outcome("error", type(cause).__name__, str(cause))
        return Outcome("crash", type(exc).__name__, str(exc))
    return Outcome("crash", "UnknownCall", case.call)


class Prober:
    """Another client's call, over and over: the worst latency seen since ``reset``."""

    def __init__(self, call: Any, every_s: float = 0.02) -> None:
        self._call = call
        self._every_s = every_s
        self._worst = 0.0
        self.calls = 0
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="prober", daemon=True)
        self._thread.start()

    def _run(self) -> None:
        while not self._stop.is_set():
            t0 = time.perf_counter()
            with contextlib.suppress(Exception):
                self._call()
            took = time.perf_counter() - t0
            with self._lock:
                self._worst = max(self._worst, took)
                self.calls += 1
            self._stop.wait(self._every_s)

    def reset(self) -> None:
        with self._lock:
            self._worst = 0.0

    def worst(self) -> float:
        with self._lock:
            return self._worst

    def stop(self) -> None:
        self._stop.set()
        self._thread.join(timeout=30)


class FifoWatch:
    """Counts how often anybody opens the named pipe for reading."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self.opened = 0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="fifo-watch", daemon=True)
        self._thread.start()

    def _run(self) -> None:
        while not self._stop.is_set():
            try:
                fd = os.open(self.path, os.O_WRONLY | os.O_NONBLOCK)
            except OSError:  # ENXIO: nobody is reading
                self._stop.wait(0.005)
                continue
            self.opened += 1
            os.close(fd)  # the reader sees end of file and goes on

    def stop(self) -> None:
        self._stop.set()
        self._thread.join(timeout=5)


def files_holding(folder: Path, token: str) -> list[str]:
    """Names of the files under ``folder`` whose bytes contain ``token``."""
    needle = token.encode()
    hits = []
    for path in folder.rglob("*"):
        with contextlib.suppress(OSError):
            if path.is_file() and needle in path.read_bytes():
                hits.append(str(path.relative_to(folder)))
    return hits
