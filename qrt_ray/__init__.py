"""qrt-ray: a quantum runtime on Ray.

Start an embedded farm with :meth:`QuantumRuntime.local`, or attach to one started by
``qrt up`` with :func:`connect`; submit circuits and get durable, checksummed results.
"""

from qrt_ray.client import JobHandle, QuantumRuntime, connect
from qrt_ray.errors import (
    DeviceUnavailableError,
    IntegrityError,
    JobCancelledError,
    JobFailedError,
    JobNotFoundError,
    JobTimeoutError,
    PlacementError,
    QrtError,
    ValidationError,
)
from qrt_ray.lifecycle import JobState
from qrt_ray.models import JobResult

__version__ = "0.1.0"

__all__ = [
    "DeviceUnavailableError",
    "IntegrityError",
    "JobCancelledError",
    "JobFailedError",
    "JobHandle",
    "JobNotFoundError",
    "JobResult",
    "JobState",
    "JobTimeoutError",
    "PlacementError",
    "QrtError",
    "QuantumRuntime",
    "ValidationError",
    "__version__",
    "connect",
]
