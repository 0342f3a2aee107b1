"""Generated hostile programs (hypothesis) through the scheduler's parser processes.

Each program mixes what the committed corpus tries one at a time: includes of secret
files and pipes, however written; registers of any size; gate definitions that
multiply; deep expressions; broadcasts. Every one must end in a parsed circuit or a
clear QrtError, quickly, without the secret in the message and without anyone
opening the pipe. A parser process killed on the way is replaced.
"""

from __future__ import annotations

import time
from collections.abc import Iterator

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from qrt_ray.errors import QrtError
from qrt_ray.intake import IntakeLimits, QubitLimit
from qrt_ray.intake.pool import IntakePool
from tests.security.cases import Secrets, fill
from tests.security.harness import FifoWatch, plant_secrets

WIDEST = QubitLimit(27, "the widest device of this farm, 'kolkata', has 27", True)
PATHS = [
    "qelib1.inc",
    "stdgates.inc",
    "@SECRET@",
    "@SECRET_REL@",
    "@FIFO@",
    "/etc/passwd",
    "~/.ray/auth_token",
    "../x.inc",
    "/dev/zero",
    "/proc/self/environ",
]


@pytest.fixture(scope="module")
def gate(
    tmp_path_factory: pytest.TempPathFactory,
) -> Iterator[tuple[IntakePool, Secrets, FifoWatch]]:
    found = plant_secrets(tmp_path_factory.mktemp("generated"))
    watch = FifoWatch(found.fifo)
    pool = IntakePool(IntakeLimits(parse_timeout_s=10))
    pool.start()
    yield pool, found, watch
    pool.close()
    watch.stop()


@st.composite
def hostile_programs(draw: st.DrawFn) -> str:
    version = draw(st.sampled_from([2, 3]))
    lines = [f"OPENQASM {version}.0;"]
    for _ in range(draw(st.integers(0, 2))):
        path = draw(st.sampled_from(PATHS))
        quote = draw(st.sampled_from(['"', "'"]))
        gap = draw(st.sampled_from([" ", "\n  ", " /* x */ ", "\t"]))
        lines.append(f"include{gap}{quote}{path}{quote};")
    size = draw(
        st.one_of(
            st.integers(1, 8),
            st.integers(1, 10**30),
            st.sampled_from([10**7, 2**63, 2**64 + 1, 0]),
        )
    )
    lines.append(f"qreg q[{size}];" if version == 2 else f"qubit[{size}] q;")
    lines.append("creg c[2];" if version == 2 else "bit[2] c;")
    levels = draw(st.integers(0, 40))
    fan = draw(st.integers(1, 4))
    if levels:
        lines.append("gate g0 a { x a; }")
        for i in range(1, levels + 1):
            lines.append(f"gate g{i} a {{ {' '.join([f'g{i - 1} a;'] * fan)} }}")
        lines.append(f"g{levels} q[0];")
    depth = draw(st.integers(0, 300))
    lines.append(f"rx({'(' * depth}0.5{')' * depth}) q[0];")
    signs = draw(st.integers(0, 200))
    lines.append(f"rz({'-' * signs}0.5) q[0];")
    for _ in range(draw(st.integers(0, 3))):
        lines.append("h q;" * draw(st.integers(1, 50)))
    if draw(st.booleans()):
        lines.append(draw(st.text(max_size=40)))
    lines.append("measure q[0] -> c[0];" if version == 2 else "c[0] = measure q[0];")
    return "\n".join(lines) + "\n"


@settings(max_examples=120, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(program=hostile_programs())
def test_any_generated_program_ends_clearly_and_reads_no_file(
    gate: tuple[IntakePool, Secrets, FifoWatch], program: str
) -> None:
    pool, found, watch = gate
    text = fill(program, found)
    opened = watch.opened
    started = time.perf_counter()
    try:
        ((digest, profile),) = pool.check([text], ["circuits[0]"], WIDEST)
    except QrtError as exc:
        message = str(exc)
        assert message.startswith("circuits[0]: "), message
        assert found.token not in message
        assert len(message) < 1200
    else:
        assert len(digest) == 64 and 1 <= profile.num_qubits <= 27
    assert watch.opened == opened, "a parser opened the named pipe"
    assert time.perf_counter() - started < 12.0
