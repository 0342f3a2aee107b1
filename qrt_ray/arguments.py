"""Checks for plain arguments (counts, numbers), shared by the client and the actors.

Nothing is coerced: ``True`` or ``"100"`` is refused where a whole number is expected.
"""

from __future__ import annotations

import math
import numbers
from typing import Any

from qrt_ray.errors import ValidationError, brief

#: most jobs one listing returns
MAX_LIST = 10_000


def whole_number(name: str, value: Any, lo: int, hi: int) -> int:
    """``value`` as an int from ``lo`` to ``hi``. Raises ValidationError naming ``name``."""
    if isinstance(value, bool) or not isinstance(value, numbers.Integral):
        raise ValidationError(
            f"{name}={brief(value)}: expected a whole number from {lo:,} to {hi:,}, got "
            f"{type(value).__name__}"
        )
    number = int(value)
    if not lo <= number <= hi:
        raise ValidationError(f"{name}={brief(number)}: out of range; use {lo:,} to {hi:,}")
    return number


def finite_number(name: str, value: Any) -> float:
    """``value`` as a finite float. Raises ValidationError naming ``name``."""
    if isinstance(value, bool) or not isinstance(value, numbers.Real):
        raise ValidationError(
            f"{name}={brief(value)}: expected a number, got {type(value).__name__}"
        )
    number = float(value)
    if not math.isfinite(number):
        raise ValidationError(f"{name}={number}: expected a finite number")
    return number


def check_limit(limit: Any) -> int:
    """A listing's ``limit`` argument, checked: a whole number from 1 to ``MAX_LIST``.

    Raises:
        ValidationError: anything else.
    """
    return whole_number("limit", limit, 1, MAX_LIST)
