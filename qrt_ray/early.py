"""What a pipelined submit refuses at once, as the farm would have refused it.

A synchronous ``submit()`` hears every refusal from the scheduler. A pipelined one
hears the farm's answer only from the handle, after the loop has moved on; so the
client refuses at once, with the scheduler's words, the refusals it can judge alone:

- a job no device of the farm could ever run: a circuit wider than every device, or a
  job pinned to a device the farm does not have or that is too small. The client keeps
  the farm's devices (names, sizes, which are offline) as it last read them, and reads
  them again (one try, a short timeout) before a refusal when they are older than a
  second: it refuses only on a view at most a second old. While the farm cannot be
  asked, or has not heard from all its devices (its scheduler just started), it
  refuses nothing, and asks again at most once a second.
- an idempotency key this runtime's pipelined submits already used for a different
  request (a key names one job for good). Keys used otherwise (another process,
  ``submit_many``) are the scheduler's to judge.

A job let through is judged by the scheduler all the same; what only the farm knows (a
quota, a budget, ``min_fidelity``) is raised by the handle.
"""

from __future__ import annotations

import functools
import hashlib
import json
import logging
import math
import threading
import time
from collections import OrderedDict
from collections.abc import Callable, Sequence
from typing import Any

from qrt_ray.errors import (
    JobTimeoutError,
    PlacementError,
    QrtError,
    RuntimeNotRunningError,
    ValidationError,
    brief,
)
from qrt_ray.intake.admit import DEFAULT_LIMITS
from qrt_ray.intake.scan import farm_qubit_limit, scan
from qrt_ray.models import DeviceSnapshot, JobSpec
from qrt_ray.pipeline import Ack
from qrt_ray.policies.placement import check_fits

logger = logging.getLogger(__name__)

FRESH_S = 1.0  # a refusal reads the farm's devices again when they are older than this
KEYS_KEPT = 65_536  # idempotency keys this runtime remembers, newest kept
READ_TIMEOUT_S = 2.0  # one try at the farm's devices waits at most this long
KEY_WAIT_S = 30.0  # a reused key waits this long for its first job's answer
_COMPACT_EVERY = 1024  # keys remembered between two compactions
AUTO_KEY = "auto-"  # the prefix of the keys the client gives jobs that have none


def _request(spec: JobSpec) -> str:
    """A digest of the whole request: two submits with one key must ask the same (as
    the scheduler compares them: equal values, so -0.0 is 0.0)."""
    text = json.dumps(_plain(spec.model_dump(mode="json")), sort_keys=True)
    return hashlib.sha256(text.encode()).hexdigest()


def _plain(value: Any) -> Any:
    """``value`` with every float written as the number it equals (-0.0 as 0.0)."""
    if isinstance(value, float):
        return value + 0.0
    if isinstance(value, dict):
        return {k: _plain(v) for k, v in value.items()}
    if isinstance(value, list):
        return [_plain(v) for v in value]
    return value


@functools.lru_cache(maxsize=4096)
def _width(text: str) -> int | None:
    """Qubits a circuit text declares, scanned once per text (None: the scan refuses
    it for another limit, which the farm's own may not share: the farm decides)."""
    try:
        return scan(text, DEFAULT_LIMITS).qubits
    except QrtError:
        return None


def _user_key(spec: JobSpec) -> tuple[str, str] | None:
    """(tenant, key) of an idempotency key the caller gave (None: none, or the
    client's own)."""
    key = spec.idempotency_key
    if key is None or key.startswith(AUTO_KEY):
        return None
    return spec.tenant, key


class EarlyRefusals:
    """Refuses, before a job is queued, what the scheduler would refuse on sight.

    Args:
        read: the farm's devices, in one try within the seconds it is given (raises
            when the farm does not answer).
        clock: monotonic seconds.
    """

    def __init__(
        self,
        read: Callable[[float], Sequence[DeviceSnapshot]],
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self._read = read
        self._clock = clock
        self._lock = threading.Lock()
        self._devices: list[DeviceSnapshot] | None = None
        self._read_at = -math.inf
        self._failed_at = -math.inf
        # (tenant, key) -> its first request's digest, and the job: an Ack until the
        # farm answered, then the job id (an Ack holds an event; an id is a string)
        self._keys: OrderedDict[tuple[str, str], tuple[str, Ack | str]] = OrderedDict()

    def check(self, spec: JobSpec) -> None:
        """Raise what the scheduler would answer ``spec`` on sight, in its order: a job
        no device could run, then a reused key.

        Raises:
            PlacementError: no device could ever run it (devices read at most
                ``FRESH_S`` ago).
            ValidationError: its idempotency key went with a different request.
        """
        devices = self._devices if self._devices is not None else self._fresh()
        if devices is not None:
            try:
                self._check_fits(spec, devices)
            except PlacementError:
                if self._clock() - self._read_at < FRESH_S:
                    raise
                devices = self._fresh()  # a device may have joined, or come back
                if devices is not None:
                    self._check_fits(spec, devices)
        self._check_key(spec)

    def sent(self, spec: JobSpec, ack: Ack) -> None:
        """Remember the idempotency key a caller gave a queued job (its first use here)."""
        name = _user_key(spec)
        if name is None:
            return
        with self._lock:
            self._keys.setdefault(name, (_request(spec), ack))
            if len(self._keys) % _COMPACT_EVERY == 0:
                self._compact()
            while len(self._keys) > KEYS_KEPT:
                self._keys.popitem(last=False)

    def _compact(self) -> None:
        """Keep the job id of each answered first use (its Ack goes), and forget keys
        whose first use was refused (they name no job)."""
        for name, (digest, job) in list(self._keys.items()):
            if isinstance(job, Ack) and job.settled:
                job_id = job.job_id_now
                if job_id is None:
                    del self._keys[name]
                else:
                    self._keys[name] = (digest, job_id)

    def _check_key(self, spec: JobSpec) -> None:
        name = _user_key(spec)
        if name is None:
            return
        with self._lock:
            first = self._keys.get(name)
        if first is None or first[0] == _request(spec):
            return
        job = first[1]
        if isinstance(job, Ack):
            try:
                job = job.wait(KEY_WAIT_S)
            except JobTimeoutError:
                return  # not answered yet: the scheduler judges the key
            except Exception:  # the first use was refused: the key names no job
                with self._lock:
                    if self._keys.get(name) is first:
                        del self._keys[name]
                return
        raise ValidationError(
            f"job.idempotency_key={brief(name[1])!r} was already used for job {job} with a "
            "different request; use a new key"
        )

    def _check_fits(self, spec: JobSpec, devices: Sequence[DeviceSnapshot]) -> None:
        """The scheduler's two checks, in its order: each circuit against the widest
        device (the intake scan), then a pinned device."""
        widths = [_width(text) for text in spec.circuits]
        if any(w is None for w in widths):
            return
        limit = farm_qubit_limit(devices, DEFAULT_LIMITS.max_qubits)
        for k, (text, width) in enumerate(zip(spec.circuits, widths, strict=True)):
            if width is not None and width > limit.count:
                try:  # scanned again only to refuse it in the scheduler's words
                    scan(text, DEFAULT_LIMITS, limit)
                except PlacementError as exc:
                    raise PlacementError(f"job.circuits[{k}]: {exc}") from None
                except QrtError:
                    return
        width = max(w for w in widths if w is not None)
        if width:
            check_fits(width, devices, spec.device)

    def _fresh(self) -> list[DeviceSnapshot] | None:
        """The farm's devices as read at most ``FRESH_S`` ago, reading them now if
        need be (None: the farm did not answer lately; nothing is refused)."""
        with self._lock:
            now = self._clock()
            if now - self._read_at < FRESH_S:
                return self._devices
            if now - self._failed_at < FRESH_S:
                return None
        try:
            devices = list(self._read(READ_TIMEOUT_S))
            if not devices:  # none answered yet (a farm starting): nothing to judge on
                raise RuntimeNotRunningError("no device has answered the farm yet")
        except Exception as exc:  # the farm restarts: the scheduler judges the job
            logger.debug("the farm's devices could not be read: %s", type(exc).__name__)
            with self._lock:
                self._failed_at = self._clock()
            return None
        with self._lock:
            self._devices, self._read_at = devices, self._clock()
        return devices
