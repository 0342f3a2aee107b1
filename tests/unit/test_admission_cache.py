"""The intake gate checks a text once: a loop of one circuit is described from memory."""

from __future__ import annotations

import asyncio
from collections.abc import Sequence

import pytest

from qrt_ray.actors.admission import Admission
from qrt_ray.circuits import to_qasm
from qrt_ray.config import load_policy_config
from qrt_ray.errors import ValidationError
from qrt_ray.intake import IntakeLimits, QubitLimit
from qrt_ray.intake.admit import InlineIntake
from qrt_ray.models import JobSpec
from qrt_ray.policies.placer import Placer
from tests.circuits import ghz


class CountingIntake(InlineIntake):
    """The in-thread intake, counting the texts it is asked to check."""

    def __init__(self) -> None:
        super().__init__()
        self.checked: list[str] = []

    async def describe(self, texts: Sequence[str], args: Sequence[str], qubit_limit: QubitLimit):  # type: ignore[no-untyped-def]
        self.checked.extend(texts)
        return await super().describe(texts, args, qubit_limit)


def test_a_text_passed_once_is_not_checked_again_and_a_refusal_is_never_kept() -> None:
    intake = CountingIntake()
    admission = Admission(IntakeLimits(), Placer(load_policy_config()), intake)
    text = to_qasm(ghz(3))
    spec = JobSpec(circuits=(text,), shots=10)

    async def shapes(specs: list[JobSpec]) -> list[object]:
        return await admission.shapes(specs, ["job"] * len(specs), ["j"] * len(specs), [])

    first = asyncio.run(shapes([spec]))
    again = asyncio.run(shapes([spec, spec]))
    assert intake.checked == [text]  # once, whatever came after
    assert again[0].profiles == again[1].profiles and first[0].hashes == again[0].hashes  # type: ignore[attr-defined]
    bad = JobSpec(circuits=("OPENQASM 2.0;\nqreg q[1];\nfoo q[0];\n",), shots=10)
    for _ in range(2):
        with pytest.raises(ValidationError):
            asyncio.run(shapes([bad]))
    assert intake.checked.count(bad.circuits[0]) == 2  # refused each time, never kept
