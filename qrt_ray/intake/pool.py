"""The scheduler's parser processes: no input can stall it or exhaust its memory.

Parsing runs in ``intake.workers`` child processes (:mod:`qrt_ray.intake.worker`),
never on the scheduler's event loop. Each circuit has ``intake.parse_timeout_s`` to
be checked; a worker that runs past it, runs out of its ``intake.memory_mb`` or dies
is killed and replaced, and the caller gets a :class:`ValidationError` naming the
circuit. Messages travel as length-prefixed JSON: nothing is unpickled.

The pool is synchronous and thread-safe: the scheduler calls :meth:`IntakePool.check`
through ``asyncio.to_thread``.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import mmap
import os
import queue
import select
import signal
import struct
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

from qrt_ray.errors import PlacementError, QrtError, ValidationError
from qrt_ray.intake.limits import IntakeLimits
from qrt_ray.intake.scan import QubitLimit
from qrt_ray.profile import CircuitProfile

logger = logging.getLogger("qrt.intake")

_HEADER = struct.Struct(">I")
# A request carries at most this many circuits: large submissions are split over the
# workers, and one slow circuit holds up only its own request.
_CHUNK_CIRCUITS = 256
_CHUNK_CHARS = 8 * 2**20
# How long a caller waits for a worker to be free (or started) before giving up.
_READY_TIMEOUT_S = 120.0
_POLL_S = 0.05
# a request (at most _CHUNK_CIRCUITS circuits) may take this many parse timeouts in all
_REQUEST_TIMEOUTS = 4

Described = tuple[str, CircuitProfile]


class _Worker:
    """One parser process and the pipes and progress file that reach it."""

    def __init__(self, limits: IntakeLimits, folder: Path, number: int) -> None:
        self.progress_path = folder / f"progress-{number}"
        self.progress_path.write_bytes(b"\0" * 8)
        root = str(Path(__file__).resolve().parents[2])
        env = {
            **os.environ,
            "PYTHONPATH": os.pathsep.join(p for p in (root, os.environ.get("PYTHONPATH", "")) if p),
            # one thread each: a parser needs no more, and threads cost address space
            "OMP_NUM_THREADS": "1",
            "OPENBLAS_NUM_THREADS": "1",
            "RAYON_NUM_THREADS": "1",
            "RUST_BACKTRACE": "0",
        }
        self.proc = subprocess.Popen(
            [
                sys.executable,
                "-m",
                "qrt_ray.intake.worker",
                str(self.progress_path),
                limits.model_dump_json(),
            ],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            env=env,
            close_fds=True,
        )
        with open(self.progress_path, "r+b") as f:
            self.progress = mmap.mmap(f.fileno(), 8)
        self.number = number

    def position(self) -> int:
        return struct.unpack("<q", self.progress[:8])[0]

    def send(self, payload: bytes) -> None:
        assert self.proc.stdin is not None
        self.proc.stdin.write(_HEADER.pack(len(payload)) + payload)
        self.proc.stdin.flush()

    def receive(self, deadline: float | None, on_wait: Any = None) -> bytes | None:
        """The next frame; None if the process ended first. ``on_wait`` is called every
        poll interval and may raise to stop waiting."""
        head = self._read(_HEADER.size, deadline, on_wait)
        if head is None:
            return None
        (size,) = _HEADER.unpack(head)
        return self._read(size, deadline, on_wait)

    def _read(self, size: int, deadline: float | None, on_wait: Any) -> bytes | None:
        assert self.proc.stdout is not None
        fd = self.proc.stdout.fileno()
        chunks: list[bytes] = []
        got = 0
        while got < size:
            ready, _, _ = select.select([fd], [], [], _POLL_S)
            if not ready:
                if deadline is not None and time.monotonic() > deadline:
                    raise TimeoutError
                if on_wait is not None:
                    on_wait()
                continue
            chunk = os.read(fd, min(size - got, 1 << 20))
            if not chunk:
                return None
            chunks.append(chunk)
            got += len(chunk)
        return b"".join(chunks)

    def kill(self) -> None:
        with contextlib.suppress(ProcessLookupError):
            self.proc.kill()
        with contextlib.suppress(Exception):
            self.proc.wait(timeout=10)
        for stream in (self.proc.stdin, self.proc.stdout):
            with contextlib.suppress(Exception):
                stream.close()  # type: ignore[union-attr]
        with contextlib.suppress(Exception):
            self.progress.close()
        with contextlib.suppress(OSError):
            self.progress_path.unlink()

    def death(self) -> str:
        """Why the process ended, in words."""
        code = self.proc.poll()
        if code is None:
            return "it stopped answering"
        if code < 0:
            with contextlib.suppress(ValueError):
                return f"it died of {signal.Signals(-code).name}"
        return f"it exited with status {code}"


class IntakePool:
    """Parser processes with a deadline per circuit and a memory cap each.

    Args:
        limits: the intake limits (``workers``, ``parse_timeout_s``, ``memory_mb``, and
            every limit the scan enforces).
    """

    def __init__(self, limits: IntakeLimits) -> None:
        self.limits = limits
        self._folder = Path(tempfile.mkdtemp(prefix="qrt-intake-"))  # mode 0700
        self._idle: queue.Queue[_Worker] = queue.Queue()
        self._lock = threading.Lock()
        self._all: set[_Worker] = set()
        self._numbers = iter(range(1 << 62))
        self._closed = False
        self._executor = ThreadPoolExecutor(limits.workers, thread_name_prefix="qrt-intake")
        self.restarts = 0

    def start(self) -> None:
        """Start every worker (in the background; :meth:`check` waits for one)."""
        for _ in range(self.limits.workers):
            self._spawn_later()

    def close(self) -> None:
        """Kill the workers and remove their files."""
        with self._lock:
            self._closed = True
            workers = list(self._all)
            self._all.clear()
        for worker in workers:
            worker.kill()
        self._executor.shutdown(wait=False, cancel_futures=True)
        with contextlib.suppress(OSError):
            for leftover in self._folder.iterdir():
                leftover.unlink()
            self._folder.rmdir()

    # -- workers ----------------------------------------------------------------------

    def _spawn_later(self) -> None:
        threading.Thread(target=self._spawn, name="qrt-intake-spawn", daemon=True).start()

    def _spawn(self) -> None:
        with self._lock:
            if self._closed:
                return
            number = next(self._numbers)
        try:
            worker = _Worker(self.limits, self._folder, number)
        except OSError:
            logger.exception("could not start an intake worker")
            return
        with self._lock:
            if self._closed:
                worker.kill()
                return
            self._all.add(worker)
        try:
            ready = worker.receive(time.monotonic() + _READY_TIMEOUT_S)
        except TimeoutError:
            ready = None
        if ready != b'{"ready": true}':
            if not self._closed:
                logger.error("intake worker %d did not start: %s", number, worker.death())
            self._retire(worker)
            return
        self._idle.put(worker)

    def _retire(self, worker: _Worker) -> None:
        with self._lock:
            self._all.discard(worker)
        worker.kill()

    def _replace(self, worker: _Worker) -> None:
        self._retire(worker)
        self.restarts += 1
        self._spawn_later()

    # -- checking circuits ------------------------------------------------------------

    async def describe(
        self, texts: Sequence[str], args: Sequence[str], qubit_limit: QubitLimit
    ) -> list[Described]:
        """:meth:`check` from a thread, for the scheduler's event loop."""
        return await asyncio.to_thread(self.check, texts, args, qubit_limit)

    def check(
        self, texts: Sequence[str], args: Sequence[str], qubit_limit: QubitLimit
    ) -> list[Described]:
        """Check and describe circuits; blocks (call it off the event loop).

        Args:
            texts: OpenQASM texts (each is checked against every intake limit).
            args: how errors name each text (``jobs[2].circuits[0]``).
            qubit_limit: the most qubits a circuit may declare, and why.

        Returns:
            (sha256, profile) per text, in order.

        Raises:
            ValidationError, PlacementError: the first text refused, named by its arg;
                also a text that took longer than ``parse_timeout_s`` or killed its
                worker.
        """
        chunks = _chunks(len(texts), texts, self.limits.workers)
        if len(chunks) == 1:
            lo, hi = chunks[0]
            return self._run(texts[lo:hi], args[lo:hi], qubit_limit)
        futures = [
            self._executor.submit(self._run, texts[lo:hi], args[lo:hi], qubit_limit)
            for lo, hi in chunks
        ]
        out: list[Described] = []
        for future in futures:  # the first error in order wins
            out.extend(future.result())
        return out

    def _take(self) -> _Worker:
        with self._lock:
            if self._closed:
                raise ValidationError("the scheduler is shutting down; submit again shortly")
            spawn = not self._all
        if spawn:  # every worker died to bad input: start one now
            self._spawn_later()
        try:
            return self._idle.get(timeout=_READY_TIMEOUT_S)
        except queue.Empty:
            raise ValidationError(
                f"no circuit parser became free within {_READY_TIMEOUT_S:g} s; the "
                "scheduler is overloaded, submit again shortly"
            ) from None

    def _run(
        self, texts: Sequence[str], args: Sequence[str], qubit_limit: QubitLimit
    ) -> list[Described]:
        worker = self._take()
        request = json.dumps(
            {
                "texts": list(texts),
                "args": list(args),
                "qubit_limit": [qubit_limit.count, qubit_limit.why, qubit_limit.device_bound],
            }
        ).encode()
        timeout = self.limits.parse_timeout_s
        # each circuit has the timeout, and a whole request a few of them: a request of
        # circuits that each come close to it cannot hold a worker for hours
        whole = time.monotonic() + _REQUEST_TIMEOUTS * timeout
        watch = {"at": -1, "since": time.monotonic()}

        def on_wait() -> None:
            at = worker.position()
            now = time.monotonic()
            if at != watch["at"]:
                watch["at"], watch["since"] = at, now
            elif now - watch["since"] > timeout:
                raise TimeoutError
            if now > whole:
                raise TimeoutError

        try:
            worker.progress[:8] = struct.pack("<q", 0)
            worker.send(request)
            frame = worker.receive(None, on_wait)
        except TimeoutError:
            self._replace(worker)
            arg = args[max(0, watch["at"])]
            raise ValidationError(
                f"{arg}: checking it took longer than {timeout:g} s "
                "(intake.parse_timeout_s, or four of them for a request of many circuits); "
                "it is too large or too complex to parse here. Split it, or send OpenQASM 2, "
                "which parses much faster than OpenQASM 3"
            ) from None
        except (BrokenPipeError, OSError):
            frame = None
        if frame is None:
            why = worker.death()
            at = worker.position()  # before the replacement closes its progress file
            self._replace(worker)
            arg = args[min(max(0, at), len(args) - 1)]
            raise ValidationError(
                f"{arg}: the circuit parser failed on it ({why}); it may need more memory "
                f"than the intake allows ({self.limits.memory_mb} MB: intake.memory_mb)"
            )
        self._idle.put(worker)
        answer = json.loads(frame)
        if "error" in answer:
            error = answer["error"]
            cls: type[QrtError] = (
                PlacementError if error.get("kind") == "PlacementError" else ValidationError
            )
            raise cls(str(error["message"]))
        return [(c["hash"], _profile(c["profile"])) for c in answer["circuits"]]


def _chunks(count: int, texts: Sequence[str], workers: int) -> list[tuple[int, int]]:
    """Index ranges of the requests: spread over the workers, none too large."""
    if count == 0:
        return [(0, 0)]
    per = max(1, min(_CHUNK_CIRCUITS, -(-count // workers)))
    out = []
    lo = 0
    while lo < count:
        hi = lo
        chars = 0
        while hi < count and hi - lo < per and (hi == lo or chars + len(texts[hi]) <= _CHUNK_CHARS):
            chars += len(texts[hi])
            hi += 1
        out.append((lo, hi))
        lo = hi
    return out


def _profile(data: dict[str, Any]) -> CircuitProfile:
    """A profile from the worker's JSON (lists back to tuples)."""
    return CircuitProfile(
        num_qubits=int(data["num_qubits"]),
        active=tuple(data["active"]),
        pulses=tuple(data["pulses"]),
        measured=tuple(data["measured"]),
        pairs=tuple(tuple(p) for p in data["pairs"]),
        busy_units=tuple(data["busy_units"]),
        duration_units=float(data["duration_units"]),
    )
