"""The intake gate's pre-scan and parse: every limit holds, on the text, before any parser."""

from __future__ import annotations

import time

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from qrt_ray.errors import PlacementError, QrtError, ValidationError
from qrt_ray.intake import IntakeLimits, QubitLimit, parse_qasm
from qrt_ray.intake.scan import scan

HEAD2 = 'OPENQASM 2.0;\ninclude "qelib1.inc";\n'
HEAD3 = 'OPENQASM 3.0;\ninclude "stdgates.inc";\n'
TAIL2 = "creg c[1];\nmeasure q[0] -> c[0];\n"
LIMITS = IntakeLimits()


def bomb(levels: int, fan: int = 2) -> str:
    lines = ["gate g0 a { x a; }"]
    calls = lambda i: " ".join(f"g{i - 1} a;" for _ in range(fan))  # noqa: E731
    lines += [f"gate g{i} a {{ {calls(i)} }}" for i in range(1, levels + 1)]
    return HEAD2 + "\n".join(lines) + f"\nqreg q[1];\ng{levels} q[0];\n" + TAIL2


def test_a_plain_circuit_passes_and_reports_what_it_declares() -> None:
    text = HEAD2 + "qreg q[3];\ncreg c[3];\nh q;\ncx q[0],q[1];\nmeasure q -> c;\n"
    report = scan(text, LIMITS)
    assert (report.version, report.qubits, report.clbits) == (2, 3, 3)
    # h broadcasts over 3 qubits, cx once, measure over 3
    assert report.gates == 3 + 1 + 3
    assert report.includes == {"qelib1.inc"}


@pytest.mark.parametrize(
    "path",
    ["/etc/passwd", "../../secret.inc", "~/.ray/auth_token", "stdgates.inc", "./qelib1.inc", ""],
)
def test_only_the_standard_library_may_be_included(path: str) -> None:
    with pytest.raises(ValidationError, match="not allowed: the farm never reads files"):
        scan(f'OPENQASM 2.0;\ninclude "{path}";\nqreg q[1];\n', LIMITS)


def test_an_include_is_found_however_it_is_written() -> None:
    for text in [
        'OPENQASM 2.0;\n/* x */include "/etc/passwd";\n',
        'OPENQASM 2.0;\ninclude\n  "/etc/passwd"\n;\n',
        "OPENQASM 3.0;\ninclude '/etc/passwd';\n",
        'OPENQASM 3.0;\ninclude "qelib1.inc";\n',
        "OPENQASM 2.0;\ninclude;\n",
    ]:
        with pytest.raises(ValidationError, match="not allowed"):
            scan(text, LIMITS)
    # in a comment it is only a comment
    scan(HEAD2 + '// include "/etc/passwd";\n/* include "/etc/passwd"; */\nqreg q[1];\n', LIMITS)


def test_the_standard_library_is_included_once() -> None:
    with pytest.raises(ValidationError, match="included twice"):
        scan(HEAD2 + 'include "qelib1.inc";\n', LIMITS)


def test_register_sizes_are_judged_on_the_number() -> None:
    started = time.perf_counter()
    with pytest.raises(ValidationError, match=r"declares 10000000 qubits; the limit is 1024"):
        scan(HEAD2 + "qreg q[10000000];\n", LIMITS)
    with pytest.raises(ValidationError, match="declares 10000000 classical bits"):
        scan(HEAD2 + "qreg q[1];\ncreg c[10000000];\n", LIMITS)
    with pytest.raises(ValidationError, match="declares 10000000 qubits"):
        scan(HEAD3 + "qubit[10000000] q;\n", LIMITS)
    with pytest.raises(ValidationError, match=r"600 qubits \(1200 qubits in all\)"):
        scan(HEAD2 + "qreg a[600];\nqreg b[600];\n", LIMITS)
    with pytest.raises(ValidationError, match="integer literal"):
        scan(HEAD3 + "const uint n = 5;\nqubit[n] q;\n", LIMITS)
    # nothing was allocated: all of that took no time
    assert time.perf_counter() - started < 1.0


def test_huge_integers_never_reach_a_parser() -> None:
    for text in [
        HEAD2 + "qreg q[99999999999999999999999];\n",
        HEAD2 + "qreg q[2];\nh q[18446744073709551617];\n",
        HEAD3 + "qubit[0x1ffffffffffffffffffff] q;\n",
    ]:
        with pytest.raises(ValidationError, match="too large"):
            scan(text, LIMITS)
    with pytest.raises(ValidationError, match="beyond any register"):
        scan(HEAD2 + "qreg q[2];\nh q[5000];\n", LIMITS)


def test_the_widest_device_bounds_qubits_as_a_placement_error() -> None:
    widest = QubitLimit(27, "the widest device of this farm, 'kolkata', has 27", True)
    with pytest.raises(PlacementError, match=r"q\[28\] declares 28 qubits.*'kolkata', has 27"):
        scan(HEAD2 + "qreg q[28];\n", LIMITS, widest)
    with pytest.raises(PlacementError, match=r"physical qubit \$30 does not exist"):
        scan(HEAD3 + "bit[1] c;\nx $30;\n", LIMITS, widest)
    scan(HEAD2 + "qreg q[27];\n", LIMITS, widest)


@pytest.mark.parametrize(
    ("build", "says"),
    [
        # the limit is 64 for each; rx( is one level of the 64 parentheses
        (lambda n: "(" * (n - 1) + "0.1" + ")" * (n - 1), "nested more than 64 deep"),
        (lambda n: "-" * n + "0.1", "more than 64 signs in a row"),
        # 1000 operators at n=64, 1001 at 65
        (lambda n: "+".join(["0.1"] * (n + 937)), "more than 1000 operators"),
    ],
    ids=["parentheses", "signs", "operators"],
)
def test_expressions_are_bounded(build: object, says: str) -> None:
    def text(n: int) -> str:
        return HEAD3 + f"qubit[1] q;\nrx({build(n)}) q[0];\n"  # type: ignore[operator]

    scan(text(64), LIMITS)  # at the limit
    with pytest.raises(ValidationError, match=says):
        scan(text(65), LIMITS)


def test_blocks_are_bounded() -> None:
    deep = HEAD3 + "qubit[1] q;\nbit[1] c;\n" + "box { " * 65 + "x q[0]; " + "} " * 65
    with pytest.raises(ValidationError, match="blocks nested more than 64 deep"):
        scan(deep, LIMITS)


def test_gate_definitions_may_not_multiply_a_small_text() -> None:
    started = time.perf_counter()
    with pytest.raises(ValidationError, match="'g14' expands to 16384 operations"):
        scan(bomb(40), LIMITS)
    assert time.perf_counter() - started < 1.0
    report = scan(bomb(13), LIMITS)  # 8192 operations: allowed
    assert report.gates == 8192 + 1
    with pytest.raises(ValidationError, match="33 definitions deep"):
        chain = ["gate d0 a { x a; }"] + [f"gate d{i} a {{ d{i - 1} a; }}" for i in range(1, 40)]
        scan(HEAD2 + "\n".join(chain), LIMITS)


def test_broadcasts_count_every_operation() -> None:
    text = HEAD2 + "qreg q[100];\n" + "h q;\n" * 2001
    with pytest.raises(ValidationError, match="more than 200000 operations"):
        scan(text, LIMITS)
    small = IntakeLimits(max_gates=10)
    with pytest.raises(ValidationError, match="more than 10 operations"):
        scan(HEAD2 + "gate g a { x a; x a; x a; }\nqreg q[2];\ng q;\ng q;\n", small)


def test_pow_is_bounded_by_the_width_of_its_gate() -> None:
    args = ", ".join(f"q[{i}]" for i in range(12))
    with pytest.raises(ValidationError, match=r"pow.*12 qubits.*limits are 10 qubits"):
        scan(HEAD3 + f"qubit[12] q;\npow(2) @ ctrl(11) @ x {args};\n", LIMITS)


def test_parameters_are_bounded() -> None:
    params = ",".join(f"p{i}" for i in range(65))
    with pytest.raises(ValidationError, match="65 parameters"):
        scan(HEAD2 + f"gate g({params}) a {{ x a; }}\n", LIMITS)


def test_pragmas_and_annotations_cannot_hide_a_declaration() -> None:
    # the rest of the line is the pragma's; the next line is read as usual
    for text in [
        HEAD3 + "#pragma anything here\nqubit[10000000] q;\n",
        HEAD3 + "@annotation text\nqubit[10000000] q;\n",
    ]:
        with pytest.raises(ValidationError, match="declares 10000000 qubits"):
            scan(text, LIMITS)


def test_text_size_is_checked_first() -> None:
    small = IntakeLimits(max_qasm_bytes=1024)
    with pytest.raises(ValidationError, match="bytes of OpenQASM; the limit is 1024"):
        scan(HEAD2 + "// " + "é" * 600, small)  # 600 characters, 1200 bytes
    with pytest.raises(ValidationError, match="characters of OpenQASM"):
        parse_qasm("x" * 3000, limits=small)


def test_an_unterminated_comment_is_named() -> None:
    with pytest.raises(ValidationError, match="line 3: this /\\* comment is never closed"):
        scan(HEAD2 + "/* open\n", LIMITS)


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    st.lists(
        st.sampled_from(
            [
                *"qrcgat0123456789[](){};,->=+*/ \n\"'$@#",
                *("include ", "gate ", "qreg ", "creg ", "measure ", "h ", "cx ", "opaque ", "if("),
            ]
        ),
        max_size=120,
    )
)
def test_any_text_ends_in_a_clear_error_or_a_circuit(pieces: list[str]) -> None:
    text = "".join(pieces)
    started = time.perf_counter()
    try:
        parse_qasm("OPENQASM 2.0;\n" + text, arg="circuits[0]")
    except QrtError as exc:
        assert str(exc).startswith("circuits[0]: ")
        assert len(str(exc)) < 800
    assert time.perf_counter() - started < 2.0


def test_parser_errors_never_escape_as_anything_else() -> None:
    cases = {
        HEAD3 + "qubit[1] q;\nrx(1/0) q[0];\nbit[1] c;\nc[0] = measure q[0];\n": "division by zero",
        HEAD2 + "qreg q[1];\nrx(1/0) q[0];\n" + "creg c[1];\n": "divide by zero",
        "\x00\x01garbage": "malformed OpenQASM 2",
        HEAD3 + "def f(qubit a) { x a; }\nqubit[1] q;\nf(q[0]);\n": "not supported",
    }
    for text, says in cases.items():
        with pytest.raises(ValidationError, match=says):
            parse_qasm(text, arg="circuits[0]")


def test_error_messages_never_repeat_a_long_input() -> None:
    name = "a" * 100_000
    with pytest.raises(ValidationError) as caught:
        parse_qasm(HEAD2 + f"qreg q[1];\n{name} q[0];\n" + TAIL2, arg="c")
    assert len(str(caught.value)) < 500


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.integers(0, 100_000), st.integers(1, 6), st.integers(1, 3))
def test_the_plain_reader_agrees_with_the_token_loop(seed: int, width: int, operands: int) -> None:
    from qiskit import qasm2
    from qiskit.circuit.random import random_circuit

    from qrt_ray.circuits import to_qasm
    from qrt_ray.intake.scan import _plain_report, _Scanner

    limit = QubitLimit(1024, "intake.max_qubits")
    qc = random_circuit(width, 5, max_operands=min(operands, width), seed=seed)
    qc.measure_all()
    for text in (to_qasm(qc), qasm2.dumps(qc)):
        fast = _plain_report(text, LIMITS, limit)
        assert fast is not None, text  # writers' plain output takes the fast path
        assert fast == _Scanner(text, LIMITS, limit).run()


def test_a_plain_text_near_a_limit_is_read_by_the_token_loop() -> None:
    from qrt_ray.intake.scan import _plain_report

    text = HEAD2 + "qreg q[2000];\ncreg c[1];\nmeasure q[0] -> c[0];\n"
    assert _plain_report(text, LIMITS, QubitLimit(1024, "x")) is None
    with pytest.raises(ValidationError, match=r"q\[2000\] declares 2000 qubits"):
        scan(text, LIMITS)


@pytest.mark.parametrize(
    "text",
    [
        HEAD2 + "qreg q[1];\nrz(1234567890123456789) q[0];\n",  # an integer of 19 digits
        HEAD2 + "qreg q[1];\nrz(1/*2) q[0];\n",  # a comment inside a parameter
        HEAD2 + "qreg q[1];\nh q[0];\nqreg r[1];\n",  # a register after the calls
        HEAD2 + "qreg q[1];\ninclude q[0];\n",  # a keyword as a callee
        HEAD2 + "qreg q[1];\nopaque q[0];\n",
    ],
    ids=["long-integer", "comment", "late-register", "include-callee", "opaque-callee"],
)
def test_the_plain_reader_leaves_what_is_not_plain_to_the_token_loop(text: str) -> None:
    from qrt_ray.intake.scan import _plain_report

    assert _plain_report(text, LIMITS, QubitLimit(1024, "x")) is None


def test_a_definition_past_the_expansion_limit_is_not_read_as_plain() -> None:
    from qiskit import QuantumCircuit
    from qiskit.circuit.library import RC3XGate

    from qrt_ray.circuits import to_qasm
    from qrt_ray.intake.scan import _plain_report, _Scanner

    qc = QuantumCircuit(4)
    qc.append(RC3XGate(), range(4))
    qc.measure_all()
    text = to_qasm(qc)
    tight = IntakeLimits(max_gate_expansion=10)
    assert _plain_report(text, tight, QubitLimit(1024, "x")) is None
    with pytest.raises(ValidationError, match="expands to"):
        _Scanner(text, tight, QubitLimit(1024, "x")).run()


@settings(max_examples=200, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    st.lists(
        st.sampled_from(
            [
                "h q[0];",
                "cx q[0],q[1];",
                "rz(0.5) q[1];",
                "rz(1234567890123456789) q[0];",
                "u(pi/2,-0.5,1e-3) q[1];",
                "measure q[0] -> c[0];",
                "qreg r[2];",
                "creg d[3];",
                "let q[0];",
                "include q[0];",
                "rz(1/*2) q[0];",
                "// note",
                "barrier q[0],q[1];",
                "h q;",
            ]
        ),
        max_size=12,
    )
)
def test_when_the_plain_reader_answers_it_agrees_with_the_token_loop(lines: list[str]) -> None:
    from qrt_ray.intake.scan import _plain_report, _Scanner

    text = HEAD2 + "qreg q[2];\ncreg c[2];\n" + "\n".join(lines) + "\n"
    limit = QubitLimit(1024, "x")
    fast = _plain_report(text, LIMITS, limit)
    if fast is not None:
        assert fast == _Scanner(text, LIMITS, limit).run(), text
