"""qrt-ray: a quantum runtime on Ray.

Start an embedded farm with :meth:`QuantumRuntime.local`, or attach to one started by
``qrt up`` with :func:`connect`; submit circuits and get durable, checksummed results.
"""

import os as _os

# Ray reads this when it is imported: without it, Ray on Linux listens on every
# interface even for a laptop farm. Set here for processes that import ray after
# qrt_ray; `qrt_ray.farm` sets Ray's own flag again when it starts or joins Ray, so
# the other order is safe too. (Auth is set up then as well, never at import.)
_os.environ.setdefault("RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER", "0")

from typing import TYPE_CHECKING

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

if TYPE_CHECKING:
    from qrt_ray.client import JobHandle, QuantumRuntime, connect

# The client needs Ray; the rest of the package (models, lifecycle, policies, the
# store) does not, so it is loaded on first use and `import qrt_ray.models` stays light.
_CLIENT_NAMES = ("JobHandle", "QuantumRuntime", "connect")


def __getattr__(name: str) -> object:
    if name in _CLIENT_NAMES:
        from qrt_ray import client

        return getattr(client, name)
    raise AttributeError(f"module 'qrt_ray' has no attribute {name!r}")


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
