"""Execution modes: where a primitive's farm jobs go.

- A :class:`~qrt_ray.client.QuantumRuntime` (or a :class:`Batch`): every PUB is its
  own farm job, and the scheduler spreads them across devices in parallel.
- A backend (``rt.backend(name)``): every job runs on that device.
- A :class:`Session`: a hybrid loop keeps one device from its first run to its last,
  so an optimizer's iterations are comparable. It notes in each result whether the
  device's calibration changed since the session's first job (the calibration
  manager may still recalibrate a drifting device), and it closes after ``max_time``
  seconds or ``idle_timeout`` seconds without a run.
"""

from __future__ import annotations

import contextvars
import threading
import time
import uuid
from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

from qrt_ray.errors import ValidationError, brief

if TYPE_CHECKING:
    from qrt_ray.client import QuantumRuntime
    from qrt_ray.models import JobResult

DEFAULT_MAX_TIME_S = 8 * 3600.0
DEFAULT_IDLE_TIMEOUT_S = 900.0


# the Session or Batch a ``with`` block opened: a primitive made with no mode inside it
# runs there (as in IBM Runtime); per thread and per asyncio task
_ACTIVE: contextvars.ContextVar[_Window | None] = contextvars.ContextVar(
    "qrt_active_mode", default=None
)


class SessionClosedError(ValidationError):
    """The session or batch is closed, expired or idle too long: open a new one."""


class _Mode:
    """What every mode gives a primitive: the runtime, a device (or None), tags."""

    runtime: QuantumRuntime
    kind = "runtime"
    # "ideal": every job runs without noise (the mode was made from rt.backend("ideal"))
    noise = "device"

    def device_for(self, circuits: Sequence[str], shots: int) -> str | None:
        """The device these jobs must run on (None: the scheduler chooses per job)."""
        return None

    def admit(self) -> None:
        """Start a run, or raise SessionClosedError if no more runs are allowed."""

    def finished(self) -> None:
        """A run admitted earlier is over (whatever its outcome)."""

    def record(self, results: Sequence[JobResult]) -> list[list[str]]:
        """Notes to add to each result's metadata."""
        return [[] for _ in results]

    @property
    def tags(self) -> tuple[str, ...]:
        return ()


class RuntimeMode(_Mode):
    """Plain runtime: the scheduler places every job."""

    def __init__(self, runtime: QuantumRuntime) -> None:
        self.runtime = runtime


class DeviceMode(_Mode):
    """Every job on one named device (a backend facade)."""

    kind = "backend"

    def __init__(self, runtime: QuantumRuntime, device: str) -> None:
        self.runtime = runtime
        self.device = device

    def device_for(self, circuits: Sequence[str], shots: int) -> str | None:
        return self.device


class IdealMode(_Mode):
    """``rt.backend("ideal")``: placement picks the device, which runs without noise."""

    kind = "ideal"
    noise = "ideal"

    def __init__(self, runtime: QuantumRuntime) -> None:
        self.runtime = runtime


def _runtime_and_device(backend: Any) -> tuple[QuantumRuntime, str | None]:
    from qrt_ray.client import QuantumRuntime
    from qrt_ray.primitives.backend import QrtBackend, QrtIdealBackend

    if isinstance(backend, QrtBackend):
        return backend.runtime, backend.name
    if isinstance(backend, QrtIdealBackend):
        return backend.runtime, None
    if isinstance(backend, QuantumRuntime):
        return backend, None
    raise ValidationError(
        f"backend: expected rt.backend(name) or a QuantumRuntime, got {type(backend).__name__}"
    )


class _Window(_Mode):
    """A mode with a lifetime: max_time from opening, idle_timeout between runs."""

    def __init__(self, backend: Any, max_time: float | None, idle_timeout: float | None) -> None:
        from qrt_ray.primitives.backend import QrtIdealBackend

        self.runtime, self._device = _runtime_and_device(backend)
        if isinstance(backend, QrtIdealBackend):
            self.noise = "ideal"
        for name, value in (("max_time", max_time), ("idle_timeout", idle_timeout)):
            if value is not None and not value > 0:
                raise ValidationError(f"{name}={brief(value)}: give seconds > 0 (or None)")
        self.max_time_s = float(max_time) if max_time is not None else DEFAULT_MAX_TIME_S
        self.idle_timeout_s = (
            float(idle_timeout) if idle_timeout is not None else DEFAULT_IDLE_TIMEOUT_S
        )
        self.session_id = f"{self.kind}-{uuid.uuid4().hex[:12]}"
        self.started_at = time.time()
        self._last_activity = self.started_at
        self._in_flight = 0  # runs admitted and not yet over: the session is not idle
        self._closed = ""
        self._lock = threading.Lock()
        self._tokens: list[contextvars.Token[_Window | None]] = []

    @property
    def tags(self) -> tuple[str, ...]:
        return (self.session_id,)

    def admit(self) -> None:
        now = time.time()
        with self._lock:
            idle = self._in_flight == 0 and now - self._last_activity > self.idle_timeout_s
            if not self._closed and now - self.started_at > self.max_time_s:
                self._closed = f"it reached its max_time of {self.max_time_s:g} s"
            elif not self._closed and idle:
                self._closed = f"it was idle for more than {self.idle_timeout_s:g} s"
            if self._closed:
                raise SessionClosedError(
                    f"{self.session_id} is closed: {self._closed}; open a new {type(self).__name__}"
                )
            self._last_activity = now
            self._in_flight += 1

    def finished(self) -> None:
        with self._lock:
            self._in_flight = max(0, self._in_flight - 1)
            self._last_activity = time.time()  # idle time counts from the run's end

    def close(self) -> None:
        """No more runs in this session; runs already submitted finish."""
        with self._lock:
            self._closed = self._closed or "it was closed"

    def __enter__(self) -> Any:
        self._tokens.append(_ACTIVE.set(self))
        return self

    def __exit__(self, *exc: object) -> None:
        if self._tokens:
            _ACTIVE.reset(self._tokens.pop())
        self.close()


class Batch(_Window):
    """Independent PUBs spread across the farm's devices in parallel.

    Args:
        backend: a QuantumRuntime (any device) or ``rt.backend(name)`` (that device).
        max_time: seconds after which no new runs are accepted (default 8 h).
    """

    kind = "batch"

    def __init__(self, backend: Any, max_time: float | None = None) -> None:
        super().__init__(backend, max_time, idle_timeout=None)
        self.idle_timeout_s = float("inf")

    def device_for(self, circuits: Sequence[str], shots: int) -> str | None:
        return self._device


class Session(_Window):
    """A hybrid loop's device for its whole life: iterations stay comparable.

    Args:
        backend: ``rt.backend(name)`` to fix the device, or a QuantumRuntime to let
            placement choose it for the first run (the best device for that run's
            first circuit), after which the session keeps it.
        max_time: seconds the session may live (default 8 h).
        idle_timeout: seconds without a run after which it closes (default 900).
    """

    kind = "session"

    def __init__(
        self, backend: Any, max_time: float | None = None, *, idle_timeout: float | None = None
    ) -> None:
        super().__init__(backend, max_time, idle_timeout)
        self.calibrations: list[str] = []  # every calibration id its results ran on

    @property
    def device(self) -> str | None:
        """The session's device (None until its first run when placement chooses)."""
        return self._device

    def device_for(self, circuits: Sequence[str], shots: int) -> str | None:
        with self._lock:
            if self._device is None:
                ranked = self.runtime.estimate(list(circuits[:1]), shots=shots)
                accepting = [r for r in ranked if r.get("accepting")] or ranked
                self._device = accepting[0]["device"]
            return self._device

    def record(self, results: Sequence[JobResult]) -> list[list[str]]:
        notes = []
        with self._lock:
            for result in results:
                cal = result.metadata.calibration_id
                if self.calibrations and cal != self.calibrations[0]:
                    notes.append(
                        [
                            f"{result.metadata.device} was recalibrated during the session: "
                            f"first job on {self.calibrations[0]}, this one on {cal}"
                        ]
                    )
                else:
                    notes.append([])
                if cal not in self.calibrations:
                    self.calibrations.append(cal)
        return notes

    def details(self) -> dict[str, Any]:
        """Id, device, calibrations seen, start time, limits and whether it is closed."""
        with self._lock:
            return {
                "id": self.session_id,
                "device": self._device,
                "calibrations": list(self.calibrations),
                "started_at": self.started_at,
                "max_time_s": self.max_time_s,
                "idle_timeout_s": self.idle_timeout_s,
                "closed": self._closed or None,
            }


def fixed_device(mode: _Mode) -> str | None:
    """The device every job of ``mode`` runs on, where one is fixed (a backend, or a
    Session or Batch on one, or a Session after its first run)."""
    return getattr(mode, "device", None) or getattr(mode, "_device", None)


def resolve_mode(mode: Any) -> _Mode:
    """The mode object for a primitive's ``mode`` argument (None: the Session or
    Batch whose ``with`` block is open).

    Raises:
        ValidationError: ``mode`` is none of the accepted kinds.
    """
    from qrt_ray.client import QuantumRuntime
    from qrt_ray.primitives.backend import QrtBackend, QrtIdealBackend

    if mode is None and _ACTIVE.get() is not None:
        return _ACTIVE.get()  # type: ignore[return-value]
    if isinstance(mode, _Mode):
        return mode
    if isinstance(mode, QuantumRuntime):
        return RuntimeMode(mode)
    if isinstance(mode, QrtBackend):
        return DeviceMode(mode.runtime, mode.name)
    if isinstance(mode, QrtIdealBackend):
        return IdealMode(mode.runtime)
    raise ValidationError(
        "mode: pass a QuantumRuntime (e.g. QuantumRuntime.local()), rt.backend(name), a "
        f"Session or a Batch, or make the primitive inside `with Session(...):`; got "
        f"{type(mode).__name__}"
    )
