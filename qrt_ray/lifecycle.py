"""The job lifecycle as data: states, the allowed transitions, and one check.

Every state change in the runtime goes through :func:`check_transition`, and the
scheduler persists the new state before it acts on it.
"""

from __future__ import annotations

from enum import StrEnum

from qrt_ray.errors import IllegalTransitionError


class JobState(StrEnum):
    """Where a job is in its life. The last three are final."""

    QUEUED = "QUEUED"
    COMPILING = "COMPILING"
    PLACED = "PLACED"
    RUNNING = "RUNNING"
    POSTPROCESSING = "POSTPROCESSING"
    DONE = "DONE"
    FAILED = "FAILED"
    CANCELLED = "CANCELLED"

    @property
    def is_final(self) -> bool:
        """True for DONE, FAILED and CANCELLED: nothing moves a job out of them."""
        return self in FINAL_STATES


FINAL_STATES = frozenset({JobState.DONE, JobState.FAILED, JobState.CANCELLED})


class ErrorClass(StrEnum):
    """Why a job failed, in a few bounded classes: the store keeps one with every
    FAILED job, metrics and alerts group failures by it, and each has a runbook."""

    PLACEMENT = "placement"  # no device could take the job
    COMPILE = "compile"  # the circuit did not compile for the device (compiler mismatch)
    DEVICE = "device"  # the device reported a permanent error, or its runs kept failing
    DEVICE_LOST = "device_lost"  # the device kept stopping or vanishing under the job
    PARTIAL_RUN = "partial_run"  # shots kept going missing: the result was never whole
    INTEGRITY = "integrity"  # payloads kept failing their checksum
    DEADLINE = "deadline"  # max_execution_time_s ran out
    POSTPROCESS = "postprocess"  # the result could not be built or stored
    UNRECOVERABLE = "unrecoverable"  # the stored job could not be resumed after a restart
    POISON = "poison"  # its circuits crashed the simulator again and again: dead-lettered


_S = JobState
# Forward path, plus the ways back to QUEUED (a device lost, stopped or recalibrated
# under the job, a hand-off that failed, a recovery after restart: only its missing
# shots run again), straight to POSTPROCESSING for a job recovered with every shot
# already in the ledger, and FAILED / CANCELLED from any live state. Which event makes
# which move, and what the move does, is the state machine's table
# (qrt_ray.policies.jobflow.ROWS); a test keeps the two equal.
TRANSITIONS: dict[JobState, frozenset[JobState]] = {
    _S.QUEUED: frozenset({_S.COMPILING, _S.POSTPROCESSING, _S.FAILED, _S.CANCELLED}),
    _S.COMPILING: frozenset({_S.PLACED, _S.QUEUED, _S.POSTPROCESSING, _S.FAILED, _S.CANCELLED}),
    _S.PLACED: frozenset({_S.RUNNING, _S.QUEUED, _S.POSTPROCESSING, _S.FAILED, _S.CANCELLED}),
    _S.RUNNING: frozenset({_S.POSTPROCESSING, _S.QUEUED, _S.FAILED, _S.CANCELLED}),
    _S.POSTPROCESSING: frozenset({_S.DONE, _S.FAILED, _S.CANCELLED}),
    _S.DONE: frozenset(),
    _S.FAILED: frozenset(),
    _S.CANCELLED: frozenset(),
}


def can_transition(current: JobState, new: JobState) -> bool:
    """Whether the lifecycle allows ``current -> new``."""
    return new in TRANSITIONS[current]


def check_transition(job_id: str, current: JobState, new: JobState) -> None:
    """Raise :class:`IllegalTransitionError` unless ``current -> new`` is allowed.

    Raises:
        IllegalTransitionError: naming the job, both states and the allowed targets.
    """
    if not can_transition(current, new):
        allowed = ", ".join(sorted(s.value for s in TRANSITIONS[current])) or "none (final)"
        raise IllegalTransitionError(
            f"job {job_id}: illegal transition {current.value} -> {new.value}; "
            f"from {current.value} the allowed next states are: {allowed}"
        )
