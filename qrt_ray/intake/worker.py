"""A parser process: reads circuits from its parent, answers what each one is.

Started by :class:`qrt_ray.intake.pool.IntakePool` as
``python -m qrt_ray.intake.worker PROGRESS_FILE LIMITS_JSON``. It talks over its
stdin/stdout in frames (4-byte big-endian length, then UTF-8 JSON; never pickle, in
either direction), caps its own address space once its imports are done, writes the
index of the circuit it is on into ``PROGRESS_FILE`` (so the parent can name the
circuit that ran past its deadline), and exits when its parent goes away.

Request: ``{"texts": [...], "args": [...], "qubit_limit": [count, why, device_bound]}``.
Answer: ``{"circuits": [{"hash": ..., "profile": {...}}, ...]}``, or
``{"error": {"index": k, "kind": "ValidationError", "message": ...}}`` for the first
circuit refused.
"""

from __future__ import annotations

import json
import mmap
import os
import resource
import struct
import sys
import threading
import time
from dataclasses import asdict
from typing import Any, BinaryIO

from qrt_ray.errors import PlacementError, QrtError, brief
from qrt_ray.intake.admit import describe
from qrt_ray.intake.limits import IntakeLimits
from qrt_ray.intake.scan import QubitLimit

_HEADER = struct.Struct(">I")


def read_frame(stream: BinaryIO) -> bytes | None:
    """One frame's payload, or None at end of stream."""
    head = stream.read(_HEADER.size)
    if len(head) < _HEADER.size:
        return None
    (size,) = _HEADER.unpack(head)
    data = stream.read(size)
    return data if len(data) == size else None


def write_frame(stream: BinaryIO, payload: bytes) -> None:
    stream.write(_HEADER.pack(len(payload)) + payload)
    stream.flush()


def _cap_memory(extra_mb: int) -> None:
    """Let this process map at most ``extra_mb`` more than it holds now."""
    with open("/proc/self/statm") as f:
        pages = int(f.read().split()[0])
    now = pages * resource.getpagesize()
    cap = now + extra_mb * 2**20
    _, hard = resource.getrlimit(resource.RLIMIT_AS)
    if hard != resource.RLIM_INFINITY:
        cap = min(cap, hard)
    resource.setrlimit(resource.RLIMIT_AS, (cap, hard))


def _exit_with_parent() -> None:
    """Exit as soon as the parent is gone, even in the middle of a parse."""
    parent = os.getppid()

    def watch() -> None:
        while os.getppid() == parent:
            time.sleep(0.5)
        os._exit(0)

    threading.Thread(target=watch, name="qrt-intake-parent-watch", daemon=True).start()


def handle(request: dict[str, Any], limits: IntakeLimits, progress: mmap.mmap) -> dict[str, Any]:
    """Describe each circuit of a request, stopping at the first one refused."""
    count, why, device_bound = request["qubit_limit"]
    qubit_limit = QubitLimit(int(count), str(why), bool(device_bound))
    out = []
    for k, (text, arg) in enumerate(zip(request["texts"], request["args"], strict=True)):
        progress[:8] = struct.pack("<q", k)
        try:
            digest, profile = describe(text, arg=arg, limits=limits, qubit_limit=qubit_limit)
        except QrtError as exc:
            kind = "PlacementError" if isinstance(exc, PlacementError) else "ValidationError"
            return {"error": {"index": k, "kind": kind, "message": str(exc)}}
        except MemoryError:
            return _refused(
                k,
                f"{arg}: checking it needs more memory than the intake allows "
                f"({limits.memory_mb} MB: intake.memory_mb)",
            )
        except Exception as exc:  # a parser's own failure: the worker goes on
            return _refused(
                k, f"{arg}: the circuit could not be read ({type(exc).__name__}: {brief(exc)})"
            )
        out.append({"hash": digest, "profile": asdict(profile)})
    return {"circuits": out}


def _refused(index: int, message: str) -> dict[str, Any]:
    return {"error": {"index": index, "kind": "ValidationError", "message": message}}


def main() -> None:
    progress_path, limits_json = sys.argv[1], sys.argv[2]
    limits = IntakeLimits.model_validate_json(limits_json)
    # frames go over the original stdout; anything printed by a library goes to stderr
    channel = os.fdopen(os.dup(1), "wb")
    os.dup2(2, 1)
    requests = sys.stdin.buffer
    _exit_with_parent()
    with open(progress_path, "r+b") as f:
        progress = mmap.mmap(f.fileno(), 8)
    _cap_memory(limits.memory_mb)
    write_frame(channel, b'{"ready": true}')
    while True:
        frame = read_frame(requests)
        if frame is None:
            return
        answer = handle(json.loads(frame), limits, progress)
        write_frame(channel, json.dumps(answer).encode())


if __name__ == "__main__":
    main()
