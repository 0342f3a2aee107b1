"""The hostile-input corpus: what a malicious or careless tenant sends, and what must happen.

Each :class:`Case` is one input and its verdict on a fixed runtime: a ``QrtError``
subclass whose message contains given words (``error``), or a job that runs and
returns the right answer (``answer``: the bitstring that must dominate the counts).
OpenQASM payloads live as files in ``corpus/`` (placeholders such as ``@SECRET@`` are
filled in at run time); the rest are built here, because they are large (10 MB of
text) or are not text at all (bad argument types).

Used by ``tests/security`` (against the intake gate and a live farm) and by
``benchmarks/hostile_intake.py`` (the before/after table).
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from qiskit import QuantumCircuit
from qiskit.circuit import Gate

CORPUS = Path(__file__).parent / "corpus"
_HEAD2 = 'OPENQASM 2.0;\ninclude "qelib1.inc";\n'
_HEAD3 = 'OPENQASM 3.0;\ninclude "stdgates.inc";\n'
_MEASURE1 = "qreg q[1];\ncreg c[1];\nmeasure q[0] -> c[0];\n"


@dataclass(frozen=True)
class Secrets:
    """Files on the server's disk that no circuit may read.

    Attributes:
        secret: absolute path of a file holding ``token``.
        fifo: a named pipe: opening it for reading would block, so a parser that
            tries shows up as a stall (and a test that holds the write end sees it).
        token: the secret's content; it must never appear in any answer.
    """

    secret: Path
    fifo: Path
    token: str

    @property
    def relative(self) -> str:
        """``secret`` as a relative path that resolves from any working directory."""
        return "../" * 24 + str(self.secret).lstrip("/")


@dataclass(frozen=True)
class Case:
    """One hostile input.

    Attributes:
        name: short id (the corpus file's stem for file cases).
        group: what it attacks: files, size, nesting, expansion, constructs, semantics,
            types, actor, review (inputs a review found past the first scan).
        call: what the client does: ``submit`` (``rt.submit(circuits, **options)``),
            ``actor`` (the scheduler actor's ``submit`` with ``actor_json`` as is,
            skipping every client-side check), ``jobs`` / ``job`` (queries).
        error: the QrtError subclass's name expected, or None when the job must run.
        says: words the error message must contain (lower case).
        answer: for jobs that must run, the bitstring that must hold most shots.
    """

    name: str
    group: str
    call: str = "submit"
    circuits: Any = None
    options: dict[str, Any] = field(default_factory=dict)
    actor_json: Callable[[Secrets], list[str]] | None = None
    error: str | None = "ValidationError"
    says: tuple[str, ...] = ()
    answer: str | None = None
    # filled in from the corpus file at run time (placeholders replaced)
    file: str | None = None

    def payload(self, secrets: Secrets) -> Any:
        """The circuits argument with placeholders filled in."""
        if self.file is not None:
            # as bytes: read_text would turn a bare carriage return into a newline
            return fill(CORPUS.joinpath(self.file).read_bytes().decode("utf-8"), secrets)
        if callable(self.circuits):
            return self.circuits(secrets)
        return self.circuits


def fill(text: str, secrets: Secrets) -> str:
    """Replace ``@SECRET@``, ``@SECRET_REL@`` and ``@FIFO@`` in a corpus text."""
    return (
        text.replace("@SECRET_REL@", secrets.relative)
        .replace("@SECRET@", str(secrets.secret))
        .replace("@FIFO@", str(secrets.fifo))
    )


def _file(name: str, group: str, says: tuple[str, ...], **kw: Any) -> Case:
    return Case(name=name, group=group, file=f"{name}.qasm", says=says, **kw)


def _impostor_h() -> QuantumCircuit:
    """A user's gate named ``h`` that is really X: the right answer is always 1."""
    body = QuantumCircuit(1, name="h")
    body.x(0)
    gate = Gate("h", 1, [])
    gate.definition = body
    qc = QuantumCircuit(1, 1)
    qc.append(gate, [0])
    qc.measure(0, 0)
    return qc


def _impostor_cx() -> QuantumCircuit:
    """A user's 2-qubit gate named ``cx`` that flips both qubits: the answer is 11."""
    body = QuantumCircuit(2)
    body.x(0)
    body.x(1)
    gate = Gate("cx", 2, [])
    gate.definition = body
    qc = QuantumCircuit(2, 2)
    qc.append(gate, [0, 1])
    qc.measure([0, 1], [0, 1])
    return qc


def _nan_circuit() -> QuantumCircuit:
    qc = QuantumCircuit(1, 1)
    qc.rx(math.nan, 0)
    qc.measure(0, 0)
    return qc


def _ok() -> str:
    return _HEAD2 + "qreg q[1];\ncreg c[1];\nx q[0];\nmeasure q[0] -> c[0];\n"


def _spec_json(**over: Any) -> Callable[[Secrets], list[str]]:
    """A raw JobSpec JSON, as a client that skips every check would send it."""
    import json

    def build(_: Secrets) -> list[str]:
        spec: dict[str, Any] = {"circuits": [_ok()], "shots": 100}
        spec.update(over)
        return [json.dumps(spec)]

    return build


def _raw(text: str) -> Callable[[Secrets], list[str]]:
    return lambda _: [text]


def _including(path: Callable[[Secrets], Path]) -> Callable[[Secrets], str]:
    """A one-qubit circuit whose include names ``path``."""
    return lambda s: _HEAD2.replace("qelib1.inc", str(path(s))) + _MEASURE1


def _actor_circuit(make: Callable[[Secrets], str]) -> Callable[[Secrets], list[str]]:
    import json

    return lambda s: [json.dumps({"circuits": [make(s)], "shots": 100})]


def _nested_parens(depth: int) -> str:
    return (
        _HEAD3
        + f"qubit[1] q;\nbit[1] c;\nrx({'(' * depth}0.1{')' * depth}) q[0];\n"
        + ("c[0] = measure q[0];\n")
    )


def _unary_chain(length: int) -> str:
    return (
        _HEAD2
        + "qreg q[1];\ncreg c[1];\n"
        + f"rx({'-' * length}0.1) q[0];\n"
        + ("measure q[0] -> c[0];\n")
    )


def _long_sum(terms: int) -> str:
    return (
        _HEAD3
        + "qubit[1] q;\nbit[1] c;\n"
        + f"rx({'+'.join(['0.001'] * terms)}) q[0];\n"
        + ("c[0] = measure q[0];\n")
    )


def _big_text(mb: int) -> str:
    line = "x q[0];\n"
    return (
        _HEAD2
        + "qreg q[1];\ncreg c[1];\n"
        + line * (mb * 2**20 // len(line))
        + ("measure q[0] -> c[0];\n")
    )


def _big_comment(mb: int) -> str:
    return _HEAD2 + "// " + "a" * (mb * 2**20) + "\n" + _MEASURE1


def _long_identifier(mb: int) -> str:
    return _HEAD2 + f"qreg q{'a' * (mb * 2**20)}[1];\ncreg c[1];\n"


def _many_registers(count: int, size: int) -> str:
    regs = "".join(f"qreg r{i}[{size}];\n" for i in range(count))
    return _HEAD2 + regs + "creg c[1];\nmeasure r0[0] -> c[0];\n"


def _many_gates(count: int) -> str:
    """``count`` operations in a few bytes each: ``h q;`` broadcasts over five qubits."""
    return _HEAD2 + "qreg q[5];\ncreg c[5];\n" + "h q;\n" * (count // 5) + "measure q -> c;\n"


def _deep_definitions(depth: int) -> str:
    lines = ["gate d0 a { x a; }"]
    lines += [f"gate d{i} a {{ d{i - 1} a; }}" for i in range(1, depth)]
    return (
        _HEAD2
        + "\n".join(lines)
        + f"\nqreg q[1];\ncreg c[1];\nd{depth - 1} q[0];\n"
        + ("measure q[0] -> c[0];\n")
    )


def _gate_bomb(levels: int) -> str:
    lines = ["gate g0 a { x a; }"]
    lines += [f"gate g{i} a {{ g{i - 1} a; g{i - 1} a; }}" for i in range(1, levels + 1)]
    return (
        _HEAD2
        + "\n".join(lines)
        + f"\nqreg q[1];\ncreg c[1];\ng{levels} q[0];\n"
        + ("measure q[0] -> c[0];\n")
    )


def _nested_blocks(depth: int) -> str:
    return (
        _HEAD3
        + "qubit[1] q;\nbit[1] c;\nc[0] = measure q[0];\n"
        + "box { " * depth
        + "x q[0]; "
        + "} " * depth
        + "\nc[0] = measure q[0];\n"
    )


def _many_circuits(count: int) -> list[str]:
    return [_ok()] * count


CASES: tuple[Case, ...] = (
    # -- files: no circuit may read a file on the server ------------------------------
    _file("include_abs_secret", "files", ("include", "not allowed")),
    _file("include_rel_secret", "files", ("include", "not allowed")),
    _file("include_ray_token", "files", ("include", "not allowed")),
    _file("include_etc_passwd", "files", ("include", "not allowed")),
    _file("include_dev_zero", "files", ("include", "not allowed")),
    _file("include_proc_environ", "files", ("include", "not allowed")),
    _file("include_fifo", "files", ("include", "not allowed")),
    _file("include_qasm3_secret", "files", ("include", "not allowed")),
    _file("include_qasm3_single_quotes", "files", ("include", "not allowed")),
    _file("include_after_comment", "files", ("include", "not allowed")),
    _file("include_line_split", "files", ("include", "not allowed")),
    _file("include_stdgates_in_qasm2", "files", ("include", "not allowed")),
    _file("include_qelib_padded", "files", ("include", "not allowed")),
    _file("include_twice", "files", ("qelib1.inc", "included twice")),
    Case(
        "actor_include_secret",
        "files",
        call="actor",
        actor_json=_actor_circuit(_including(lambda s: s.secret)),
        says=("include", "not allowed"),
    ),
    Case(
        "actor_include_fifo",
        "files",
        call="actor",
        actor_json=_actor_circuit(_including(lambda s: s.fifo)),
        says=("include", "not allowed"),
    ),
    # -- size: limits hold before anything proportional to the input is allocated -----
    _file("qreg_ten_million", "size", ("10000000 qubits", "limit")),
    _file("qreg_overflow_panic", "size", ("integer", "limit")),
    _file("creg_ten_million", "size", ("10000000 classical bits", "limit")),
    _file("qubit3_ten_million", "size", ("10000000 qubits", "limit")),
    _file("qubit3_overflow", "size", ("integer", "limit")),
    _file("qubits_over_widest", "size", ("134 qubits", "widest device"), error="PlacementError"),
    _file("index_overflow", "size", ("integer", "limit")),
    Case("text_10mb", "size", circuits=_big_text(10), says=("bytes", "limit")),
    Case("comment_10mb", "size", circuits=_big_comment(10), says=("bytes", "limit")),
    Case("identifier_2mb", "size", circuits=_long_identifier(2), says=("bytes", "limit")),
    Case("registers_1000x1000", "size", circuits=_many_registers(1000, 1000), says=("qubits",)),
    Case(
        "registers_200x1",
        "size",
        circuits=_many_registers(200, 1),
        error="PlacementError",
        says=("qubits in all", "widest device"),
    ),
    Case("gates_300k", "size", circuits=_many_gates(300_000), says=("operations", "limit")),
    Case("circuits_10001", "size", circuits=_many_circuits(10_001), says=("circuits", "10000")),
    Case(
        "actor_circuits_10001",
        "size",
        call="actor",
        actor_json=lambda _: [
            __import__("json").dumps({"circuits": _many_circuits(10_001), "shots": 10})
        ],
        says=("circuits", "10000"),
    ),
    Case(
        "actor_text_10mb",
        "size",
        call="actor",
        actor_json=_actor_circuit(lambda _: _big_text(10)),
        says=("bytes", "limit"),
    ),
    Case(
        "actor_spec_70mb",
        "size",
        call="actor",
        actor_json=lambda _: [
            __import__("json").dumps({"circuits": [_big_text(1)] * 70, "shots": 10})
        ],
        says=("bytes", "limit"),
    ),
    # -- nesting: nothing a parser recurses on may nest without bound ------------------
    Case("parens_50k_qasm3", "nesting", circuits=_nested_parens(50_000), says=("nested",)),
    Case(
        "parens_50k_qasm2",
        "nesting",
        circuits=_nested_parens(50_000).replace(_HEAD3, _HEAD2),
        says=("nested",),
    ),
    Case("parens_65_qasm3", "nesting", circuits=_nested_parens(65), says=("nested", "64")),
    Case("unary_50k", "nesting", circuits=_unary_chain(50_000), says=("nested",)),
    Case("sum_100k_terms", "nesting", circuits=_long_sum(100_000), says=("operators", "limit")),
    Case("blocks_1000", "nesting", circuits=_nested_blocks(1000), says=("nested",)),
    Case(
        "actor_parens_50k",
        "nesting",
        call="actor",
        actor_json=_actor_circuit(lambda _: _nested_parens(50_000)),
        says=("nested",),
    ),
    # -- expansion: gate definitions may not multiply a small text into a huge circuit -
    _file("gate_bomb_2_16", "expansion", ("expands", "limit")),
    _file("gate_bomb_3q_2_16", "expansion", ("expands", "limit")),
    _file("gate_broadcast_bomb", "expansion", ("operations", "limit")),
    _file("qasm3_gate_bomb", "expansion", ("expands", "limit")),
    _file("qasm3_pow_unitary_bomb", "expansion", ("pow", "qubits")),
    Case("gate_bomb_2_19", "expansion", circuits=_gate_bomb(19), says=("expands", "limit")),
    Case("gate_bomb_2_40", "expansion", circuits=_gate_bomb(40), says=("expands", "limit")),
    Case("definitions_200_deep", "expansion", circuits=_deep_definitions(200), says=("deep",)),
    Case(
        "actor_gate_bomb_2_19",
        "expansion",
        call="actor",
        actor_json=_actor_circuit(lambda _: _gate_bomb(19)),
        says=("expands", "limit"),
    ),
    # -- constructs the farm cannot run are refused at submit, with the reason ----------
    _file("opaque_gate", "constructs", ("opaque", "mystery")),
    _file("opaque_inside_gate", "constructs", ("opaque", "mystery")),
    _file("angle_overflow_inf", "constructs", ("finite",)),
    _file("angle_inf_in_gate", "constructs", ("finite",)),
    _file("qasm3_angle_inf", "constructs", ("finite",)),
    _file("qasm3_divide_by_zero", "constructs", ("division by zero",)),
    _file("qasm2_divide_by_zero", "constructs", ("divide by zero",)),
    _file("qasm2_if", "constructs", ("openqasm 2 condition", "openqasm 3")),
    # dynamic circuits run; their loops count toward the operations limit, and a while
    # loop that never ends is cut at its most passes (qrt_ray.dynamic)
    _file("qasm3_for_loop", "expansion", ("operations", "loops")),
    _file("qasm3_while_loop", "constructs", (), error=None, answer="1"),
    _file("qasm3_endless_while", "constructs", (), error=None, answer="00"),
    _file("qasm3_while_bomb", "expansion", ("operations", "loops")),
    _file("qasm3_empty_loop_bomb", "expansion", ("operations", "loops")),
    _file("qasm3_for_set", "constructs", ("range", "integer literals")),
    _file("qasm3_switch", "constructs", ("switch", "if")),
    _file("qasm3_input_parameter", "constructs", ("unbound", "theta")),
    _file("qasm3_subroutine", "constructs", ("not supported",)),
    _file("qasm3_calibration", "constructs", ("not supported",)),
    _file("no_measurement", "constructs", ("measures nothing",)),
    _file("unterminated_comment", "constructs", ("comment",)),
    _file("unbalanced_braces", "constructs", ("malformed",)),
    Case("empty_text", "constructs", circuits="", says=("empty",)),
    Case("whitespace_text", "constructs", circuits="   \n\t ", says=("empty",)),
    Case("binary_garbage", "constructs", circuits="\x00\x01\x02\xff" * 64, says=("malformed",)),
    Case("lone_surrogate", "constructs", circuits=_ok() + "// \udcff\n", says=("utf-8",)),
    Case("nan_circuit", "constructs", circuits=_nan_circuit(), says=("finite",)),
    Case("circuit_none", "types", circuits=None, says=("circuits",)),
    Case("circuit_int", "types", circuits=42, says=("circuits", "int")),
    Case("circuit_empty_list", "types", circuits=[], says=("circuits", "empty")),
    Case("circuit_bytes", "types", circuits=b"OPENQASM 2.0;", says=("circuits", "bytes")),
    Case("circuit_path", "types", circuits=Path("/etc/passwd"), says=("path",)),
    Case("circuit_list_of_none", "types", circuits=[None], says=("circuits[0]",)),
    # -- semantics: a user's gate that shares a standard name keeps its definition -----
    Case("impostor_h_circuit", "semantics", circuits=_impostor_h(), error=None, answer="1"),
    Case("impostor_cx_circuit", "semantics", circuits=_impostor_cx(), error=None, answer="11"),
    _file("impostor_h_qasm2", "semantics", (), error=None, answer="1"),
    _file("impostor_sx_qasm2", "semantics", (), error=None, answer="1"),
    _file("impostor_ecr_qasm2", "semantics", (), error=None, answer="11"),
    _file("impostor_p_qasm2", "semantics", (), error=None, answer="1"),
    _file("impostor_x_qasm3", "semantics", (), error=None, answer="0"),
    # -- types at the API edge: nothing is silently coerced ----------------------------
    Case("shots_true", "types", circuits=_ok(), options={"shots": True}, says=("shots", "bool")),
    Case("shots_str", "types", circuits=_ok(), options={"shots": "100"}, says=("shots", "str")),
    Case("shots_bytes", "types", circuits=_ok(), options={"shots": b"100"}, says=("shots",)),
    Case("shots_float", "types", circuits=_ok(), options={"shots": 100.5}, says=("shots",)),
    Case("shots_zero", "types", circuits=_ok(), options={"shots": 0}, says=("shots",)),
    Case("shots_huge", "types", circuits=_ok(), options={"shots": 10**30}, says=("shots",)),
    Case("priority_str", "types", circuits=_ok(), options={"priority": "9"}, says=("priority",)),
    Case("seed_bool", "types", circuits=_ok(), options={"seed": True}, says=("seed", "bool")),
    Case("tags_str", "types", circuits=_ok(), options={"tags": "abc"}, says=("tags", "list")),
    Case("tags_ints", "types", circuits=_ok(), options={"tags": [1, 2]}, says=("tags",)),
    Case("tags_1000", "types", circuits=_ok(), options={"tags": ["t"] * 1000}, says=("tags",)),
    Case(
        "tag_newline", "types", circuits=_ok(), options={"tags": ["a\nb"]}, says=("tags", "control")
    ),
    Case("tag_1mb", "types", circuits=_ok(), options={"tags": ["x" * 2**20]}, says=("tags", "64")),
    Case("tenant_nul", "types", circuits=_ok(), options={"tenant": "a\x00b"}, says=("tenant",)),
    Case("tenant_newline", "types", circuits=_ok(), options={"tenant": "a\nb"}, says=("tenant",)),
    Case("tenant_1mb", "types", circuits=_ok(), options={"tenant": "t" * 2**20}, says=("tenant",)),
    Case("tenant_empty", "types", circuits=_ok(), options={"tenant": ""}, says=("tenant",)),
    Case("device_1mb", "types", circuits=_ok(), options={"device": "d" * 2**20}, says=("device",)),
    Case(
        "idempotency_key_1mb",
        "types",
        circuits=_ok(),
        options={"idempotency_key": "k" * 2**20},
        says=("idempotency_key",),
    ),
    Case(
        "max_time_nan",
        "types",
        circuits=_ok(),
        options={"max_execution_time_s": math.nan},
        says=("max_execution_time_s",),
    ),
    Case(
        "max_time_str",
        "types",
        circuits=_ok(),
        options={"max_execution_time_s": "10"},
        says=("max_execution_time_s",),
    ),
    Case(
        "min_fidelity_inf",
        "types",
        circuits=_ok(),
        options={"min_fidelity": math.inf},
        says=("min_fidelity",),
    ),
    Case("weights_str", "types", circuits=_ok(), options={"weights": "abc"}, says=("weights",)),
    Case(
        "weights_nan",
        "types",
        circuits=_ok(),
        options={"weights": {"fidelity": math.nan}},
        says=("weights",),
    ),
    Case(
        "optimize_1mb",
        "types",
        circuits=_ok(),
        options={"optimize": "o" * 2**20},
        says=("optimize",),
    ),
    Case("jobs_limit_negative", "types", call="jobs", options={"limit": -1}, says=("limit",)),
    Case("jobs_limit_huge", "types", call="jobs", options={"limit": 10**9}, says=("limit",)),
    Case("jobs_limit_str", "types", call="jobs", options={"limit": "5"}, says=("limit",)),
    Case(
        "jobs_state_1mb",
        "types",
        call="jobs",
        options={"state": "s" * 2**20},
        says=("state",),
    ),
    Case(
        "job_id_1mb",
        "types",
        call="job",
        options={"job_id": "j" * 2**20},
        error="JobNotFoundError",
        says=("no such job",),
    ),
    # -- found by review: ways past the first version of the scan ----------------------
    _file("cr_ends_a_comment", "review", ("carriage return",)),
    _file("cr_ends_an_annotation", "review", ("carriage return",)),
    _file("qreg_size_expression", "review", ("integer literal",)),
    _file("creg_size_expression", "review", ("integer literal",)),
    _file("physical_qubit_in_let", "review", ("physical qubit", "does not exist")),
    _file("physical_qubit_in_input", "review", ("physical qubit", "does not exist")),
    _file("physical_qubit_in_box", "review", ("physical qubit", "does not exist")),
    _file("physical_qubit_digits", "review", ("too large",)),
    _file("superscript_register_size", "review", ("integer literal",)),
    _file("superscript_controls", "review", ("integer literal",)),
    _file("alias_broadcast_bomb", "review", ("operations", "limit")),
    _file("qasm2_gate_named_let", "review", ("operations", "limit")),
    _file("delay_broadcast", "review", ("operations", "limit")),
    _file("thousand_controls", "review", ("operations", "limit")),
    _file("power_of_controlled", "review", ("pow", "14 qubits")),
    _file("global_phase_inf", "review", ("global phase", "finite")),
    # ... and what must still run, with the right answer
    _file("controlled_power_of_h", "review", (), error=None, answer="00"),
    _file("modifier_chain", "review", (), error=None, answer="1"),
    _file("standard_names_redefined", "review", (), error=None, answer="00"),
    # -- the scheduler actor called directly, past every client-side check -------------
    Case(
        "actor_shots_str",
        "actor",
        call="actor",
        actor_json=_spec_json(shots="100"),
        says=("shots",),
    ),
    Case(
        "actor_shots_bool",
        "actor",
        call="actor",
        actor_json=_spec_json(shots=True),
        says=("shots",),
    ),
    Case(
        "actor_tags_str", "actor", call="actor", actor_json=_spec_json(tags="abc"), says=("tags",)
    ),
    Case(
        "actor_tenant_nul",
        "actor",
        call="actor",
        actor_json=_spec_json(tenant="a\x00b"),
        says=("tenant",),
    ),
    Case(
        "actor_extra_field",
        "actor",
        call="actor",
        actor_json=_spec_json(pickle="gASV"),
        says=("pickle",),
    ),
    Case(
        "actor_not_json", "actor", call="actor", actor_json=_raw("\x80\x04not json"), says=("json",)
    ),
    Case(
        "actor_json_bomb",
        "actor",
        call="actor",
        actor_json=_raw("[" * 100_000 + "]" * 100_000),
        says=("json",),
    ),
    Case(
        "actor_not_a_list",
        "actor",
        call="actor",
        actor_json=lambda _: "{}",  # type: ignore
        says=("list",),
    ),
)
