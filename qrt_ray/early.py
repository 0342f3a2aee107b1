"""What a pipelined submit refuses at once, as the farm would have refused it.

A synchronous ``submit()`` hears every refusal from the scheduler. A pipelined one
hears the farm's answer only from the handle, after the loop has moved on; so the
client refuses at once, with the scheduler's words, the refusals it can judge alone:

- a job no device of the farm could ever run: a circuit wider than every device, or a
  job pinned to a device the farm does not have or that is too small. The client keeps
  the farm's devices (names, sizes, which are offline) as it last read them, and reads
  them again before any refusal when they are older than a second: it never refuses on
  a stale view. While the farm cannot be asked, it refuses nothing.
- an idempotency key this runtime already used for a different request (a key names
  one job for good). Keys another process used are the scheduler's to judge.

A job let through is judged by the scheduler all the same; what only the farm knows (a
quota, a budget, ``min_fidelity``) is raised by the handle.
"""

from __future__ import annotations

import hashlib
import logging
import threading
import time
from collections import OrderedDict
from collections.abc import Callable, Sequence

from qrt_ray.errors import PlacementError, QrtError, ValidationError, brief
from qrt_ray.intake.admit import DEFAULT_LIMITS
from qrt_ray.intake.scan import QubitLimit, scan
from qrt_ray.models import DeviceSnapshot, JobSpec
from qrt_ray.pipeline import Ack
from qrt_ray.policies.placement import check_fits

logger = logging.getLogger(__name__)

FRESH_S = 1.0  # a refusal reads the farm's devices again when they are older than this
KEYS_KEPT = 65_536  # idempotency keys this runtime remembers, newest kept
AUTO_KEY = "auto-"  # the prefix of the keys the client gives jobs that have none


def _request(spec: JobSpec) -> str:
    """A digest of the whole request: two submits with one key must ask the same."""
    return hashlib.sha256(spec.model_dump_json().encode()).hexdigest()


def widest_limit(devices: Sequence[DeviceSnapshot]) -> QubitLimit | None:
    """The farm's qubit limit as its scheduler states it (None: no devices)."""
    if not devices:
        return None
    widest = max(devices, key=lambda s: s.num_qubits)
    return QubitLimit(
        widest.num_qubits,
        f"the widest device of this farm, {widest.name!r}, has {widest.num_qubits}",
        device_bound=True,
    )


class EarlyRefusals:
    """Refuses, before a job is queued, what the scheduler would refuse on sight.

    Args:
        read: the farm's devices (raises when the farm cannot be asked).
        clock: monotonic seconds.
    """

    def __init__(
        self,
        read: Callable[[], Sequence[DeviceSnapshot]],
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self._read = read
        self._clock = clock
        self._lock = threading.Lock()
        self._devices: list[DeviceSnapshot] | None = None
        self._read_at = -float("inf")
        # (tenant, key) -> the first job this runtime queued with it, and its request
        self._keys: OrderedDict[tuple[str, str], tuple[Ack, str]] = OrderedDict()

    def check(self, spec: JobSpec) -> None:
        """Raise what the scheduler would answer ``spec`` on sight.

        Raises:
            PlacementError: no device could ever run it (devices read at most
                ``FRESH_S`` ago).
            ValidationError: its idempotency key went with a different request.
        """
        self._check_key(spec)
        devices = self._devices if self._devices is not None else self._fresh()
        if devices is None:
            return
        try:
            self._check_fits(spec, devices)
        except PlacementError:
            if self._clock() - self._read_at < FRESH_S:
                raise
            devices = self._fresh()  # a device may have joined, or come back
            if devices is not None:
                self._check_fits(spec, devices)

    def sent(self, spec: JobSpec, ack: Ack) -> None:
        """Remember the idempotency key a caller gave a queued job (its first use here)."""
        key = spec.idempotency_key
        if key is None or key.startswith(AUTO_KEY):
            return
        with self._lock:
            self._keys.setdefault((spec.tenant, key), (ack, _request(spec)))
            while len(self._keys) > KEYS_KEPT:
                self._keys.popitem(last=False)

    def _check_key(self, spec: JobSpec) -> None:
        key = spec.idempotency_key
        if key is None or key.startswith(AUTO_KEY):
            return
        with self._lock:
            first = self._keys.get((spec.tenant, key))
        if first is None or first[1] == _request(spec):
            return
        try:
            job_id = first[0].wait(None)
        except QrtError:  # the first use was refused: the key names no job
            with self._lock:
                if self._keys.get((spec.tenant, key)) is first:
                    del self._keys[(spec.tenant, key)]
            return
        raise ValidationError(
            f"job.idempotency_key={brief(key)!r} was already used for job {job_id} with a "
            "different request; use a new key"
        )

    def _check_fits(self, spec: JobSpec, devices: Sequence[DeviceSnapshot]) -> None:
        """The scheduler's two checks, in its order: each circuit against the widest
        device (the intake scan), then a pinned device."""
        limit = widest_limit(devices)
        width = 0
        for k, text in enumerate(spec.circuits):
            try:
                width = max(width, scan(text, DEFAULT_LIMITS, limit).qubits)
            except PlacementError as exc:
                raise PlacementError(f"job.circuits[{k}]: {exc}") from None
            except QrtError:  # another limit: the farm's own may differ; it decides
                return
        if width:
            check_fits(width, devices, spec.device)

    def _fresh(self) -> list[DeviceSnapshot] | None:
        """The farm's devices, read now (None: it cannot be asked; nothing is refused)."""
        with self._lock:
            try:
                devices = list(self._read())
            except Exception as exc:  # the farm restarts: the scheduler judges the job
                logger.debug("the farm's devices could not be read: %s", type(exc).__name__)
                return None
            self._devices, self._read_at = devices, self._clock()
            return devices
