"""Times as people type them for `qrt maintenance`: now, +30m, unix seconds, ISO 8601."""

from __future__ import annotations

import datetime

import pytest

from qrt_ray.cli import _when
from qrt_ray.errors import ValidationError

NOW = 1_800_000_000.0


def test_relative_absolute_and_iso_times() -> None:
    assert _when("now", NOW) == NOW
    assert _when("+90s", NOW) == NOW + 90
    assert _when("+30m", NOW) == NOW + 1800
    assert _when("+2h", NOW) == NOW + 7200
    assert _when("+1.5d", NOW) == NOW + 1.5 * 86400
    assert _when("1800000123", NOW) == 1_800_000_123
    assert (
        _when("2027-01-15T08:00:00+00:00", NOW)
        == datetime.datetime(2027, 1, 15, 8, tzinfo=datetime.UTC).timestamp()
    )
    local = datetime.datetime(2027, 1, 15, 8).astimezone().timestamp()
    assert _when("2027-01-15T08:00", NOW) == local


@pytest.mark.parametrize("text", ["soon", "+5x", "+h", "tomorrow 8am", "inf", "+infh", "nan"])
def test_anything_else_is_refused_with_the_accepted_forms(text: str) -> None:
    with pytest.raises(ValidationError, match="ISO 8601"):
        _when(text, NOW)
