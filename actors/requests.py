"""What a caller sends the scheduler, checked before anything is decoded.

Shared by the scheduler actor (operators, through Ray) and the tenant API (the
gateway): the same checks, whoever calls.
"""

from __future__ import annotations

from typing import Any

from pydantic import ValidationError as PydanticValidationError

from qrt_ray.errors import ValidationError, brief
from qrt_ray.intake.limits import IntakeLimits
from qrt_ray.models import JobSpec, describe_errors


def decode_specs(spec_jsons: Any, limits: IntakeLimits) -> list[JobSpec]:
    """JobSpecs from the JSON a client sent, checked before anything is decoded.

    Raises:
        ValidationError: not a list of JSON texts, too many or too large, or a spec
            that does not validate (strictly: nothing is coerced).
    """
    if not isinstance(spec_jsons, list) or not all(isinstance(s, str) for s in spec_jsons):
        raise ValidationError(
            f"jobs: expected a list of JobSpec JSON texts, got {type(spec_jsons).__name__}"
        )
    if len(spec_jsons) > limits.max_jobs_per_call:
        raise ValidationError(
            f"{len(spec_jsons)} jobs in one call; the limit is {limits.max_jobs_per_call} "
            "(intake.max_jobs_per_call)"
        )
    size = sum(len(s) for s in spec_jsons)
    if size > limits.max_request_bytes:
        raise ValidationError(
            f"{size} bytes of job specs in one call; the limit is {limits.max_request_bytes} "
            "(intake.max_request_bytes): submit them in several calls"
        )
    specs = []
    for i, text in enumerate(spec_jsons):
        where = f"jobs[{i}]" if len(spec_jsons) > 1 else "job"
        try:
            text.encode("utf-8")
        except UnicodeEncodeError as exc:
            raise ValidationError(
                f"{where}: not valid UTF-8 text (a lone surrogate at character {exc.start}); "
                "send circuits as they were read, decoded as UTF-8"
            ) from None
        try:
            specs.append(JobSpec.model_validate_json(text))
        except PydanticValidationError as exc:
            raise ValidationError(f"{where}: {describe_errors(exc)}") from None
    return specs


def job_ids_arg(job_ids: Any) -> list[str]:
    if not isinstance(job_ids, list) or not all(isinstance(j, str) for j in job_ids):
        raise ValidationError(f"job_ids={brief(job_ids)}: expected a list of job ids")
    return job_ids


def device_arg(device: Any) -> str:
    if not isinstance(device, str):
        raise ValidationError(f"device={brief(device)}: expected a device name (str)")
    return device


def job_id_arg(job_id: Any) -> str:
    if not isinstance(job_id, str):
        raise ValidationError(f"job_id={brief(job_id)}: expected text (str)")
    return job_id
