"""Versions of the software that produced a result, stamped on every result."""

from __future__ import annotations

from functools import lru_cache
from importlib import metadata

_PACKAGES = ("qrt-ray", "qiskit", "qiskit-aer", "qiskit-aer-gpu", "qiskit-ibm-runtime", "ray")


@lru_cache(maxsize=1)
def software_versions() -> dict[str, str]:
    """Installed versions of qrt-ray and the packages that shape its results."""
    out = {}
    for name in _PACKAGES:
        try:
            out[name] = metadata.version(name)
        except metadata.PackageNotFoundError:
            continue
    return out
