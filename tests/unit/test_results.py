from __future__ import annotations

from dataclasses import replace

import pytest
from hypothesis import given
from hypothesis import strategies as st

from qrt_ray.actors.collector import Cause, Outcome, judge_run
from qrt_ray.errors import IntegrityError
from qrt_ray.results import (
    RawRun,
    RunError,
    counts_checksum,
    decode_run,
    encode_run,
    merge_runs,
    missing_shots,
    trim_counts,
    verify_run,
)


def run(counts: dict[str, int], attempt: int = 1, cal: str = "cal-1", shots: int = 1000) -> RawRun:
    return RawRun(
        "j",
        attempt,
        "dev",
        cal,
        0.0,
        shots,
        (counts,),
        (7,),
        0.1,
        "auto",
        False,
        counts_checksum([counts]),
    )


def test_checksum_detects_tampering() -> None:
    good = run({"00": 600, "11": 400})
    verify_run(good)
    bad = replace(good, counts=({"00": 601, "11": 400},))
    with pytest.raises(IntegrityError, match="checksum mismatch"):
        verify_run(bad)


def test_partial_run_needs_only_missing_shots() -> None:
    part = run({"00": 250, "11": 150})
    assert missing_shots(1000, [part]) == 600
    verdict = judge_run(part, 1000, [])
    assert verdict.outcome is Outcome.PARTIAL and verdict.missing == 600 and verdict.accepted
    rest = run({"00": 300, "11": 300}, attempt=2)
    assert judge_run(rest, 1000, [part]).outcome is Outcome.COMPLETE
    merged = merge_runs([part, rest])
    assert merged == ({"00": 550, "11": 450},)


def test_never_merges_two_calibrations() -> None:
    a = run({"0": 10}, cal="cal-1")
    b = run({"0": 10}, attempt=2, cal="cal-2")
    with pytest.raises(IntegrityError, match=r"never|refusing"):
        merge_runs([a, b])
    verdict = judge_run(b, 20, [a])
    assert verdict.outcome is Outcome.RERUN and not verdict.accepted
    assert verdict.cause is Cause.CALIBRATION_CHANGED


def test_corrupt_and_failed_runs_are_not_accepted() -> None:
    corrupt = replace(run({"0": 5}), checksum="0" * 64)
    v = judge_run(corrupt, 5, [])
    assert v.outcome is Outcome.RERUN and v.cause is Cause.CHECKSUM
    failed = replace(run({"0": 5}), error="simulator error: boom")
    v = judge_run(failed, 5, [])
    assert v.outcome is Outcome.RERUN and "boom" in v.reason and v.cause is Cause.DEVICE
    assert judge_run(run({"0": 5}), 5, []).cause is Cause.NONE


@given(
    st.dictionaries(st.sampled_from(["00", "01", "10", "11"]), st.integers(1, 500), min_size=1),
    st.integers(1, 2000),
)
def test_trim_counts_gives_exactly_the_shots(counts: dict[str, int], shots: int) -> None:
    out = trim_counts(counts, shots)
    assert sum(out.values()) == min(shots, sum(counts.values()))
    assert all(out.get(k, 0) <= v for k, v in counts.items())


def test_run_encoding_round_trips() -> None:
    r = run({"01": 3, "10": 4})
    assert decode_run(encode_run(r)) == r
    lost = replace(r, counts=(), error="link down", error_kind=RunError.LINK)
    back = decode_run(encode_run(lost))
    assert back == lost and back.error_kind is RunError.LINK
    # canonical: every field once, keys sorted, no spaces (the ledger keeps its hash)
    import dataclasses
    import json

    canonical = json.dumps(dataclasses.asdict(r), sort_keys=True, separators=(",", ":"))
    assert encode_run(r) == canonical.encode()
