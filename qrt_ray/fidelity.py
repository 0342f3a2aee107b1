"""How close a run's counts came to the ideal output: the Hellinger fidelity.

The value agrees with ``qiskit.quantum_info.hellinger_fidelity``; this version also
checks its inputs, so a mismatched pair (say counts of a 5-qubit run against the
ideal of a 6-qubit circuit) raises instead of quietly scoring 0.
"""

from __future__ import annotations

import math
from collections.abc import Mapping

from qrt_ray.errors import ValidationError


def normalize_counts(counts: Mapping[str, float | int], *, arg: str = "counts") -> dict[str, float]:
    """Scale counts (or unnormalized probabilities) to probabilities that sum to 1.

    Spaces in keys (Qiskit puts one between classical registers) are removed, and
    keys that become equal are merged.

    Args:
        counts: bitstring -> count or weight; every key the same length once its
            spaces are gone.
        arg: how to name this mapping in error messages.

    Returns:
        Bitstring -> probability, zero entries kept.

    Raises:
        ValidationError: empty, a negative or non-finite value, a total of zero, a
            key that is not made of 0s and 1s, or keys of different lengths.
    """
    if not counts:
        raise ValidationError(f"{arg}: empty; pass at least one outcome with its count")
    merged: dict[str, float] = {}
    for key, value in counts.items():
        bits = str(key).replace(" ", "")
        if not bits or bits.strip("01"):
            raise ValidationError(
                f"{arg}: key {key!r} is not a bitstring; keys must be 0s and 1s "
                "(spaces between registers are allowed)"
            )
        weight = float(value)
        if not math.isfinite(weight) or weight < 0:
            raise ValidationError(
                f"{arg}: outcome {key!r} has value {value!r}; counts and probabilities "
                "must be finite and >= 0"
            )
        merged[bits] = merged.get(bits, 0.0) + weight
    widths = {len(bits) for bits in merged}
    if len(widths) > 1:
        raise ValidationError(
            f"{arg}: keys have different lengths {sorted(widths)}; every outcome must "
            "cover the same classical bits"
        )
    total = math.fsum(merged.values())
    if total <= 0:
        raise ValidationError(f"{arg}: all values are zero; nothing to normalize")
    return {bits: weight / total for bits, weight in merged.items()}


def hellinger_fidelity(p: Mapping[str, float | int], q: Mapping[str, float | int]) -> float:
    """Hellinger fidelity ``(sum_i sqrt(p_i q_i))^2`` of two distributions, in [0, 1].

    Either side may be raw counts or probabilities; each is normalized first. It is
    1 for identical distributions and 0 for disjoint ones.

    Args:
        p: bitstring -> count or probability (e.g. a run's counts).
        q: bitstring -> count or probability (e.g. the ideal distribution).

    Returns:
        The fidelity.

    Raises:
        ValidationError: either side is invalid (see :func:`normalize_counts`), or
            their bitstrings have different lengths.
    """
    p_norm = normalize_counts(p, arg="p")
    q_norm = normalize_counts(q, arg="q")
    p_width = len(next(iter(p_norm)))
    q_width = len(next(iter(q_norm)))
    if p_width != q_width:
        raise ValidationError(
            f"p, q: bitstrings of {p_width} and {q_width} bits; compare counts with the "
            "ideal of the same circuit"
        )
    overlap = math.fsum(math.sqrt(w * q_norm[k]) for k, w in p_norm.items() if k in q_norm)
    # Rounding can push the overlap of identical inputs a hair past 1.
    return min(1.0, overlap) ** 2
