"""Authenticated reports from devices to the scheduler.

A device's runs are the farm's results, so the scheduler must know a run came from a
device it dispatched the work to, not from any process that can call it. Two checks:

* **The dispatch.** Every hand-off of work carries a random dispatch token the
  scheduler made for it (:func:`new_dispatch`); a device copies it into each run. A
  run whose token the scheduler never issued for that job is refused: it answers no
  dispatch.
* **The signature.** A device signs the list of work it is about to start
  (:func:`sign_start`) and each run it reports with HMAC-SHA256 under a per-farm key
  (:func:`sign_run`): the key is made when the farm starts and handed only to the
  scheduler and the device actors, never to clients. The signature covers what the
  scheduler counts: the job, attempt, device, calibration, shot range, dispatch
  token, error and the counts' checksum (which the collector checks against the
  counts), so no count can change without breaking it. Compared in constant time.

Pure: no Ray, no store.
"""

from __future__ import annotations

import hashlib
import hmac
import json
import secrets
from collections.abc import Sequence
from dataclasses import replace

from qrt_ray.results import RawRun

KEY_BYTES = 32


def new_key() -> bytes:
    """A fresh per-farm report key."""
    return secrets.token_bytes(KEY_BYTES)


def new_dispatch() -> str:
    """A fresh dispatch token (unguessable: 128 random bits)."""
    return secrets.token_hex(16)


def _signed_part(run: RawRun) -> bytes:
    fields = [
        run.job_id,
        run.attempt,
        run.device,
        run.calibration_id,
        run.first_shot,
        run.shots_requested,
        run.remaining,
        run.checksum,
        run.dispatch,
        run.error,
        run.error_kind.value,
    ]
    return json.dumps(fields, separators=(",", ":")).encode()


def sign_run(key: bytes, run: RawRun) -> RawRun:
    """``run`` with its signature under ``key``."""
    mac = hmac.new(key, _signed_part(run), hashlib.sha256).hexdigest()
    return replace(run, signature=mac)


def sign_start(key: bytes, device: str, entries: Sequence[tuple[str, int, str]]) -> str:
    """A device's signature over the (job, attempt, dispatch token)s it is about to run."""
    data = json.dumps([device, [list(e) for e in entries]], separators=(",", ":")).encode()
    return hmac.new(key, data, hashlib.sha256).hexdigest()


def verify_start(
    key: bytes, device: str, entries: Sequence[tuple[str, int, str]], signature: str
) -> bool:
    """Whether ``signature`` is ``device``'s over ``entries`` (constant-time)."""
    return hmac.compare_digest(sign_start(key, device, entries), signature)


def verify_run(key: bytes, run: RawRun) -> bool:
    """Whether ``run`` carries a valid signature under ``key`` (constant-time)."""
    expected = hmac.new(key, _signed_part(run), hashlib.sha256).hexdigest()
    return hmac.compare_digest(expected, run.signature)
