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


@given(st.lists(st.sampled_from(list(S)), max_size=30))
def test_random_walks_respect_the_table(steps: list[JobState]) -> None:
    state = S.QUEUED
    for nxt in steps:
        if nxt in TRANSITIONS[state]:
            check_transition("j", state, nxt)
            state = nxt
        else:
            with pytest.raises(IllegalTransitionError):
                check_transition("j", state, nxt)
