"""The intake gate: every user circuit passes here before the farm acts on it.

- :mod:`~qrt_ray.intake.limits`: what an input may ask for (``intake:`` in
  ``configs/policies.yaml``).
- :mod:`~qrt_ray.intake.scan`: a token-level pre-scan that enforces the limits and
  the include rule before any parser allocates anything.
- :mod:`~qrt_ray.intake.gates`: which gates are standard (by class, not name), and
  renaming a user's gates that borrow a standard name.
- :mod:`~qrt_ray.intake.admit`: the gate itself: scan, parse, check.
- :mod:`~qrt_ray.intake.pool`: the scheduler's parser processes, each with a deadline
  and a memory cap, so no input can stall or exhaust the scheduler.
"""

from qrt_ray.intake.admit import check_circuit, parse_qasm
from qrt_ray.intake.limits import IntakeLimits
from qrt_ray.intake.scan import QubitLimit

__all__ = ["IntakeLimits", "QubitLimit", "check_circuit", "parse_qasm"]
