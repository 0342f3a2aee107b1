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


def _checkout_folders() -> None:
    """Map a source checkout's top-level ``actors/`` and ``policies/`` folders to
    ``qrt_ray.actors`` and ``qrt_ray.policies``, as the wheel installs them (the
    package-dir of pyproject.toml).

    Needed where ``qrt_ray`` is imported from the checkout itself with no editable
    install's finder: a Ray worker of a driver started in the checkout after ``pip
    install .``, because Ray puts the driver's current directory first on its workers'
    path. An installed package holds both folders, and this does nothing.
    """
    import importlib.util
    import sys
    from pathlib import Path

    here = Path(__file__).resolve().parent
    if not (here.parent / "pyproject.toml").is_file():
        return
    for name in ("actors", "policies"):
        full = f"{__name__}.{name}"
        init = here.parent / name / "__init__.py"
        if full in sys.modules or (here / name).is_dir() or not init.is_file():
            continue
        spec = importlib.util.spec_from_file_location(
            full, init, submodule_search_locations=[str(init.parent)]
        )
        if spec is None or spec.loader is None:
            continue
        module = importlib.util.module_from_spec(spec)
        sys.modules[full] = module
        spec.loader.exec_module(module)
        globals()[name] = module  # as the import system sets a loaded submodule


_checkout_folders()

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
