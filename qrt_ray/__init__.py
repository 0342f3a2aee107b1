"""qrt-ray: a quantum runtime on Ray.

Start an embedded farm with :meth:`QuantumRuntime.local`, or attach to one started by
``qrt up`` with :func:`connect`; submit circuits and get durable, checksummed results.
"""

import os as _os

# Ray reads this when it is imported, not when it starts: without it, Ray on Linux
# listens on every interface even for a laptop farm. Set before anything imports ray.
_os.environ.setdefault("RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER", "0")
# Clusters started by `ray start` (Ray >= 2.60) require token auth, and Ray reads the
# client's mode at import too. Set RAY_AUTH_MODE=disabled yourself to opt out.
_os.environ.setdefault("RAY_AUTH_MODE", "token")

from qrt_ray.client import JobHandle, QuantumRuntime, connect
from qrt_ray.errors import (
    ControlLinkError,
    DeviceUnavailableError,
    IntegrityError,
    JobCancelledError,
    JobFailedError,
    JobNotFoundError,
    JobTimeoutError,
    PlacementError,
    QrtError,
    StaleCalibrationWarning,
    ValidationError,
)
from qrt_ray.lifecycle import JobState
from qrt_ray.models import JobResult

__version__ = "0.1.0"

__all__ = [
    "ControlLinkError",
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
    "StaleCalibrationWarning",
    "ValidationError",
    "__version__",
    "connect",
]
