from __future__ import annotations

import itertools

import pytest
from hypothesis import given
from hypothesis import strategies as st

from qrt_ray.errors import IllegalTransitionError
from qrt_ray.lifecycle import FINAL_STATES, TRANSITIONS, JobState, can_transition, check_transition

S = JobState


def test_forward_path_is_allowed() -> None:
    path = [S.QUEUED, S.COMPILING, S.PLACED, S.RUNNING, S.POSTPROCESSING, S.DONE]
    for a, b in itertools.pairwise(path):
        check_transition("j", a, b)


def test_final_states_have_no_exit() -> None:
    for final in FINAL_STATES:
        assert TRANSITIONS[final] == frozenset()
        for other in S:
            assert not can_transition(final, other)


def test_every_live_state_can_fail_or_cancel() -> None:
    for state in S:
        if not state.is_final:
            assert can_transition(state, S.FAILED)
            assert can_transition(state, S.CANCELLED)


@pytest.mark.parametrize(
    ("a", "b"),
    [(S.QUEUED, S.RUNNING), (S.QUEUED, S.DONE), (S.DONE, S.QUEUED), (S.POSTPROCESSING, S.QUEUED)],
)
def test_illegal_transition_names_job_and_states(a: JobState, b: JobState) -> None:
    with pytest.raises(
        IllegalTransitionError, match=rf"job j7: illegal transition {a.value} -> {b.value}"
    ):
        check_transition("j7", a, b)


# The design, written out by hand (docs/architecture.md, "Job state machine"), not read
# from the table under test: the forward path; back to QUEUED when a device is lost,
# recalibrated under the job or preempted, or the farm restarts; straight to
# POSTPROCESSING when a recovered job's ledger already holds every shot; and FAILED /
# CANCELLED from any state that is not final.
_LIVE = (S.QUEUED, S.COMPILING, S.PLACED, S.RUNNING, S.POSTPROCESSING)
EXPECTED = {
    (S.QUEUED, S.COMPILING),
    (S.COMPILING, S.PLACED),
    (S.PLACED, S.RUNNING),
    (S.RUNNING, S.POSTPROCESSING),
    (S.POSTPROCESSING, S.DONE),
    (S.COMPILING, S.QUEUED),
    (S.PLACED, S.QUEUED),
    (S.RUNNING, S.QUEUED),
    (S.QUEUED, S.POSTPROCESSING),
    (S.COMPILING, S.POSTPROCESSING),
    (S.PLACED, S.POSTPROCESSING),
    *((live, S.FAILED) for live in _LIVE),
    *((live, S.CANCELLED) for live in _LIVE),
}


@pytest.mark.parametrize(("a", "b"), list(itertools.product(S, S)), ids=str)
def test_the_table_allows_exactly_the_designed_moves(a: JobState, b: JobState) -> None:
    assert can_transition(a, b) == ((a, b) in EXPECTED)
    if (a, b) in EXPECTED:
        check_transition("j", a, b)
    else:
        with pytest.raises(IllegalTransitionError):
            check_transition("j", a, b)


@given(st.lists(st.sampled_from(list(S)), max_size=30))
def test_random_walks_follow_the_design(steps: list[JobState]) -> None:
    state = S.QUEUED
    for nxt in steps:
        if (state, nxt) in EXPECTED:
            check_transition("j", state, nxt)
            state = nxt
        else:
            with pytest.raises(IllegalTransitionError):
                check_transition("j", state, nxt)
