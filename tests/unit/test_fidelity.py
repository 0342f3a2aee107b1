"""Hellinger fidelity: agreement with Qiskit, normalization, and input checks."""

from __future__ import annotations

import math

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from qiskit.quantum_info import hellinger_fidelity as qiskit_hellinger_fidelity

from qrt_ray.errors import ValidationError
from qrt_ray.fidelity import hellinger_fidelity, normalize_counts


@st.composite
def _distribution_pair(draw: st.DrawFn) -> tuple[dict[str, float], dict[str, float]]:
    """Two count/probability maps over bitstrings of one shared width."""
    width = draw(st.integers(min_value=1, max_value=5))
    keys = st.integers(min_value=0, max_value=2**width - 1).map(lambda v: format(v, f"0{width}b"))
    values = st.one_of(
        st.integers(min_value=0, max_value=10_000),
        st.floats(min_value=0, max_value=1, allow_nan=False, allow_infinity=False),
    )
    pair = []
    for _ in range(2):
        dist = draw(st.dictionaries(keys, values, min_size=1, max_size=2**width))
        positive = draw(keys)
        dist[positive] = dist.get(positive, 0) + 1  # at least one nonzero weight
        pair.append(dist)
    return pair[0], pair[1]


@settings(max_examples=300, deadline=None)
@given(_distribution_pair())
def test_agrees_with_qiskit(pair: tuple[dict[str, float], dict[str, float]]) -> None:
    p, q = pair
    ours = hellinger_fidelity(p, q)
    assert 0.0 <= ours <= 1.0
    assert ours == pytest.approx(qiskit_hellinger_fidelity(p, q), abs=1e-9)


@settings(max_examples=100, deadline=None)
@given(_distribution_pair())
def test_symmetric_and_one_on_itself(pair: tuple[dict[str, float], dict[str, float]]) -> None:
    p, q = pair
    assert hellinger_fidelity(p, q) == pytest.approx(hellinger_fidelity(q, p), abs=1e-12)
    assert hellinger_fidelity(p, p) == pytest.approx(1.0, abs=1e-12)


def test_counts_and_probabilities_score_the_same() -> None:
    counts = {"00": 480, "11": 500, "01": 20}
    probs = {"00": 0.48, "11": 0.5, "01": 0.02}
    ideal = {"00": 0.5, "11": 0.5}
    assert hellinger_fidelity(counts, ideal) == pytest.approx(hellinger_fidelity(probs, ideal))


def test_known_values() -> None:
    assert hellinger_fidelity({"0": 1}, {"1": 1}) == 0.0
    assert hellinger_fidelity({"0": 3}, {"0": 0.2}) == 1.0
    # Uniform over two outcomes against a point mass: (sqrt(1/2))^2.
    assert hellinger_fidelity({"0": 1, "1": 1}, {"0": 1}) == pytest.approx(0.5)


def test_spaces_between_registers_are_ignored() -> None:
    multi_register = {"01 1": 250, "10 0": 750}
    assert hellinger_fidelity(multi_register, {"011": 0.25, "100": 0.75}) == pytest.approx(1.0)


def test_normalize_counts() -> None:
    assert normalize_counts({"0 1": 1, "01": 1, "10": 2}) == {"01": 0.5, "10": 0.5}
    assert math.fsum(normalize_counts({"1": 0.3, "0": 0.1}).values()) == pytest.approx(1.0)
    assert normalize_counts({"1": 0, "0": 5}) == {"1": 0.0, "0": 1.0}


@pytest.mark.parametrize(
    ("counts", "match"),
    [
        ({}, "empty"),
        ({"0": -1, "1": 3}, ">= 0"),
        ({"0": float("nan")}, "finite"),
        ({"0": 0, "1": 0}, "all values are zero"),
        ({"0x3": 1}, "not a bitstring"),
        ({"01": 1, "1": 1}, "different lengths"),
    ],
)
def test_bad_counts_raise(counts: dict[str, float], match: str) -> None:
    with pytest.raises(ValidationError, match=match):
        normalize_counts(counts)
    with pytest.raises(ValidationError, match=match):
        hellinger_fidelity(counts, {"0": 1})


def test_widths_must_match() -> None:
    with pytest.raises(ValidationError, match="2 and 3 bits"):
        hellinger_fidelity({"01": 1}, {"001": 1})


def test_error_names_the_side() -> None:
    with pytest.raises(ValidationError, match=r"^q: empty"):
        hellinger_fidelity({"0": 1}, {})
