"""The pre-scan: what an OpenQASM text asks for, read from its tokens before any parser.

Parsers allocate what a text declares and expand what it defines, so a few bytes can
ask for gigabytes (``qreg q[10000000];``), recurse without bound (50,000 nested
parentheses), multiply (a gate defined as two calls of the previous one, 19 times
over) or name a file on the server (``include "/etc/passwd";``). This module reads
the text as tokens only, in time linear in its length and memory bounded by it, and
refuses any of that with a :class:`~qrt_ray.errors.ValidationError` that names the
line, what was asked, the limit and its ``intake.*`` setting. What passes is then
safe to hand to a parser (see :mod:`qrt_ray.intake.gate`).

The scan is deliberately an *upper bound* reader, not a parser: it does not judge
whether the text is valid OpenQASM (the parser does that next), only whether parsing
it could cost more than the limits allow.
"""

from __future__ import annotations

import functools
import math
import re
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field

from qrt_ray.dynamic import MAX_WHILE_ITERATIONS
from qrt_ray.errors import PlacementError, QrtError, ValidationError, brief
from qrt_ray.intake.limits import IntakeLimits
from qrt_ray.models import DeviceSnapshot

# The only files an include may name: the standard libraries, which the parsers carry
# built in. Nothing else is ever looked up, on any path.
STANDARD_INCLUDES = {2: "qelib1.inc", 3: "stdgates.inc"}

_TOKEN = re.compile(
    r"""
    (?P<space>\s+)
  | (?P<comment>//[^\r\n]*|/\*.*?\*/)
  | (?P<open_comment>/\*)
  | (?P<string>"[^"\r\n]*"|'[^'\r\n]*')
  | (?P<number>0[xXbBoO][0-9a-fA-F_]*
      |(?:[0-9][0-9_]*(?:\.[0-9_]*)?|\.[0-9][0-9_]*)(?:[eE][+-]?[0-9]+)?
       (?:dt|ns|us|µs|ms|s|im)?)
  | (?P<name>\$[0-9]+|[^\W\d]\w*)
  | (?P<op>->|==|!=|<=|>=|&&|\|\||\*\*|<<|>>|\+\+|[-+*/%^&|!~<>=])
  | (?P<punct>[()\[\]{};:,.@])
  | (?P<other>.)
    """,
    re.VERBOSE | re.DOTALL,
)
# a carriage return that no newline follows ends a comment for the OpenQASM 3 lexer
# but is only a space to other readers: refused, so that every reader sees one text
_BARE_CR = re.compile(r"\r(?!\n)")
_UNARY = frozenset("-+~!")
# OpenQASM 3 words; in OpenQASM 2 they are ordinary names (a gate may be called "let")
_MODIFIERS = frozenset({"ctrl", "negctrl", "inv", "pow"})
# statements that open a block without calling a gate (QASM 3 control flow, scopes)
_HEADERS = frozenset({"if", "else", "for", "while", "switch", "case", "default", "box", "def"})
# loops: each statement of a loop's body counts as often as the loop may run it
_LOOPS = frozenset({"for", "while"})
# declarations and other statements that run nothing
_QUIET = frozenset(
    {"input", "output", "const", "extern", "return", "break", "continue", "end"}
    | {"int", "uint", "float", "angle", "bool", "duration", "stretch", "complex", "array"}
    | {"defcalgrammar", "cal", "defcal", "pragma"}
)
_MAX_LITERAL_DIGITS = 18  # below 2**63: a larger integer is never a size or an index
# pow(k) @ takes the gate's matrix (4^n entries) to a power, through every operation
# of its definition: operations x 4^qubits must stay below this
_POW_BUDGET = 2**26


@dataclass(frozen=True, slots=True)
class Token:
    kind: str
    text: str
    pos: int


@dataclass(frozen=True, slots=True)
class QubitLimit:
    """The most qubits a circuit may declare, and why (for the error message).

    ``device_bound``: the limit is the farm's widest device, so a wider circuit is a
    :class:`~qrt_ray.errors.PlacementError` (no device could ever run it), not a
    malformed input.
    """

    count: int
    why: str
    device_bound: bool = False

    def error(self, message: str) -> QrtError:
        """The error for a circuit that passes this limit."""
        return PlacementError(message) if self.device_bound else ValidationError(message)


def farm_qubit_limit(devices: Sequence[DeviceSnapshot], max_qubits: int) -> QubitLimit:
    """The most qubits a circuit may declare on a farm of ``devices``: its widest
    device, within the intake's own ``max_qubits`` (the scheduler's words, which a
    pipelined client repeats)."""
    if not devices:
        return QubitLimit(max_qubits, "intake.max_qubits")
    widest = max(devices, key=lambda s: s.num_qubits)
    if widest.num_qubits > max_qubits:
        return QubitLimit(max_qubits, "intake.max_qubits")
    return QubitLimit(
        widest.num_qubits,
        f"the widest device of this farm, {widest.name!r}, has {widest.num_qubits}",
        device_bound=True,
    )


@dataclass(slots=True)
class ScanReport:
    """What a text asks for, as far as the scan can tell.

    Attributes:
        version: 2 or 3 (from the ``OPENQASM`` header; 2 without one).
        qubits: qubits declared (registers, and the highest physical qubit used).
        clbits: classical bits declared.
        gates: an upper bound of the operations once definitions and broadcasts expand.
        includes: standard library files included.
        defined: names of gates the text itself defines (``gate`` or ``opaque``).
        definitions: each ``gate`` definition's tokens, joined by single spaces.
    """

    version: int = 2
    qubits: int = 0
    clbits: int = 0
    gates: int = 0
    includes: set[str] = field(default_factory=set)
    defined: set[str] = field(default_factory=set)
    definitions: dict[str, str] = field(default_factory=dict)


def tokens(text: str) -> Iterator[Token]:
    """The significant tokens of an OpenQASM text (no spaces, no comments).

    Raises:
        ValidationError: a block comment never ends (the message gives its line).
    """
    for m in _TOKEN.finditer(text):
        kind = m.lastgroup or "other"
        if kind in ("space", "comment"):
            continue
        if kind == "open_comment":
            raise ValidationError(
                f"line {line_of(text, m.start())}: this /* comment is never closed; end it with */"
            )
        yield Token(kind, m.group(), m.start())


def line_of(text: str, pos: int) -> int:
    """1-based line of a character offset."""
    return text.count("\n", 0, pos) + 1


def scan(text: str, limits: IntakeLimits, qubit_limit: QubitLimit | None = None) -> ScanReport:
    """Read what ``text`` asks for and refuse it if that passes a limit.

    Args:
        text: OpenQASM 2 or 3 source.
        limits: the intake limits.
        qubit_limit: the most qubits allowed and why (default: ``intake.max_qubits``).

    Returns:
        What the text declares and defines.

    Raises:
        ValidationError: a limit is passed, or an include names anything but the
            standard library; the message names the line (without the argument name:
            callers prefix it).
    """
    size = len(text.encode("utf-8", "surrogatepass"))
    if size > limits.max_qasm_bytes:
        raise ValidationError(
            f"{size} bytes of OpenQASM; the limit is {limits.max_qasm_bytes} "
            "(intake.max_qasm_bytes): split the circuit into several jobs or remove comments"
        )
    bare = _BARE_CR.search(text)
    if bare is not None:
        raise ValidationError(
            f"line {line_of(text, bare.start())}: a carriage return without a newline; end "
            "lines with \\n or \\r\\n"
        )
    limit = qubit_limit or QubitLimit(limits.max_qubits, "intake.max_qubits")
    return _plain_report(text, limits, limit) or _Scanner(text, limits, limit).run()


# OpenQASM 2 as writers print plain circuits (qrt's own writer, qasm2.dumps): a header,
# qelib1, the writer's definitions of standard gates, registers, then one gate call per
# line on indexed qubits, with at most four short parameter lists of no parentheses. No
# user definitions, no comments, no broadcasts.
_NAME = r"[a-z][A-Za-z0-9_]{0,31}"
_BIT = rf"{_NAME}\[[0-9]{{1,4}}\]"
_PARAM = r"[-+*/.0-9eEpi ]{1,64}"
_KEYWORD = r"(?!(?:qreg|creg|gate|opaque|include|if|measure|OPENQASM)\b)"
_PLAIN_QASM2 = re.compile(
    rf"""OPENQASM[ ]2\.0;\n
    (?:include[ ]"qelib1\.inc";\n)?
    (?:gate[ ][^\n]{{1,2000}}\n)*
    (?:[qc]reg[ ]{_BIT};\n)+
    (?:
        (?:{_KEYWORD}{_NAME}(?:\({_PARAM}(?:,{_PARAM}){{0,3}}\))?[ ]{_BIT}(?:,[ ]?{_BIT}){{0,4095}}
        |measure[ ]{_BIT}[ ]->[ ]{_BIT}
        );\n
    )*""",
    re.VERBOSE,
)
_REGISTER = re.compile(r"^([qc])reg (\w+)\[(\d+)\];$", re.MULTILINE)
_INDEX = re.compile(r"\[([0-9]+)\]")
_DEFINITION = re.compile(r"^gate [^\n]*$", re.MULTILINE)
_CALLEE = re.compile(r"^([a-z]\w*)[ (]", re.MULTILINE)
# what the plain reader leaves to the token loop: comments, integers of 19 digits or more
# (the token loop refuses those; the digits of a float are not an integer)
_NOT_PLAIN = re.compile(r"//|/\*|(?<![0-9.eE_])[0-9]{19,}(?![0-9.eE_])")


@functools.cache
def _canonical() -> dict[str, tuple[str, str, int, int]]:
    """Per definition line the writer emits for a standard gate: (gate name, normalized
    text, operations one call expands to, definitions deep), as the token loop reads
    them (all the lines in one text: a definition may call an earlier one)."""
    from qrt_ray.intake.gates import canonical_lines

    lines = canonical_lines()
    head = 'OPENQASM 2.0;\ninclude "qelib1.inc";\n'
    unlimited = IntakeLimits(max_gate_expansion=2**40, max_definition_depth=2**20)
    scanner = _Scanner(head + "\n".join(lines) + "\n", unlimited, QubitLimit(1, ""))
    scanner.run()
    return {
        line: (name, scanner.report.definitions[name], scanner.cost[name], scanner.depth[name])
        for line, name in lines.items()
    }


def _plain_report(text: str, limits: IntakeLimits, qubit_limit: QubitLimit) -> ScanReport | None:
    """The report of a plain OpenQASM 2 circuit, read with a few regular expressions
    (about 20x faster than the token loop); None when the text is anything else or
    comes near a limit, which the token loop then reads and explains.

    Every plain text within the limits gets the report the token loop would give (a
    hypothesis test compares them).
    """
    if not text.endswith("\n"):
        text += "\n"  # qasm2.dumps ends without one
    if (
        limits.max_parameters < 4
        # a parameter is at most 64 characters, a call has at most 4: within these
        # limits no plain text can pass nesting or operators
        or limits.max_nesting < 64
        or limits.max_operators < 64 * 4
        or _NOT_PLAIN.search(text)
        or not _PLAIN_QASM2.fullmatch(text)
    ):
        return None
    report = ScanReport(version=2)
    if 'include "qelib1.inc";' in text:
        report.includes.add("qelib1.inc")
    cost: dict[str, int] = {}
    if "\ngate " in text:
        canonical = _canonical()
        for line in _DEFINITION.findall(text):
            known = canonical.get(line)
            if (
                known is None
                or known[0] in cost
                or known[2] > limits.max_gate_expansion
                or known[3] > limits.max_definition_depth
            ):
                return None  # a user's own definition, or one near a limit
            name, normalized, expands, _ = known
            report.defined.add(name)
            report.definitions[name] = normalized
            cost[name] = expands
    for kind, _, size in _REGISTER.findall(text):
        if kind == "q":
            report.qubits += int(size)
        else:
            report.clbits += int(size)
    bound = max(qubit_limit.count, limits.max_clbits)
    if (
        report.qubits > qubit_limit.count
        or report.clbits > limits.max_clbits
        or max(int(i) for i in _INDEX.findall(text)) > bound
    ):
        return None
    *_, last = _REGISTER.finditer(text)
    calls = _CALLEE.findall(text, last.end())  # one per line after the declarations
    report.gates = sum(cost.get(callee, 1) for callee in calls) if cost else len(calls)
    return report if report.gates <= limits.max_gates else None


class _Scanner:
    """One pass over the tokens, statement by statement.

    Linear in the text: every statement is walked by index, a constant number of times.
    """

    def __init__(self, text: str, limits: IntakeLimits, qubit_limit: QubitLimit) -> None:
        self.text = text
        self.limits = limits
        self.qubit_limit = qubit_limit
        self.report = ScanReport()
        self.registers: dict[str, int] = {}
        self.cost: dict[str, int] = {}  # one call of a user gate, expanded
        self.depth: dict[str, int] = {}  # definitions below it, itself included
        # open blocks: the gate a body defines, or None for any other block
        self.blocks: list[str | None] = []
        # per open block, the passes it makes for each of the blocks around it: a for
        # loop's iterations, a while loop's most (qrt_ray.dynamic), else 1
        self.passes: list[int] = []
        self.body_cost = 0
        self.body_depth = 0
        self.body_tokens: list[str] = []
        self.first = True

    @property
    def v3(self) -> bool:
        return self.report.version == 3

    def fail(self, pos: int, message: str) -> ValidationError:
        return ValidationError(f"line {line_of(self.text, pos)}: {message}")

    def fail_qubits(self, pos: int, message: str) -> QrtError:
        return self.qubit_limit.error(f"line {line_of(self.text, pos)}: {message}")

    # -- the token loop: nesting, operators, literals ---------------------------------

    def run(self) -> ScanReport:
        nest = self.limits.max_nesting
        statement: list[Token] = []
        depth = unary = operators = 0
        skip_to = -1
        for tok in tokens(self.text):
            kind, text = tok.kind, tok.text
            if tok.pos < skip_to:
                continue
            if not statement and text in ("#", "@"):
                # a pragma or an annotation: the rest of its line is its text, read by
                # nothing that allocates
                newline = self.text.find("\n", tok.pos)
                skip_to = newline if newline >= 0 else len(self.text)
                continue
            if kind == "op":
                operators += 1
                unary = unary + 1 if text in _UNARY else 0
                if unary > nest:
                    raise self.fail(
                        tok.pos,
                        f"more than {nest} signs in a row (an expression nested too deep; "
                        "intake.max_nesting)",
                    )
                if operators > self.limits.max_operators:
                    raise self.fail(
                        tok.pos,
                        f"a statement with more than {self.limits.max_operators} operators; "
                        "the limit is intake.max_operators: simplify the expression",
                    )
            else:
                unary = 0
            if (kind == "number" and _too_long(text)) or (
                kind == "name" and text[0] == "$" and len(text) > _MAX_LITERAL_DIGITS + 1
            ):
                raise self.fail(
                    tok.pos,
                    f"the integer {brief(text, 30)} is too large: no size, index or count "
                    f"reaches {_MAX_LITERAL_DIGITS} digits (the qubit limit is "
                    f"{self.qubit_limit.count})",
                )
            if text in ("(", "[") or (depth and text == "{"):
                depth += 1  # braces inside brackets are index sets, not blocks
                if depth > nest:
                    raise self.fail(
                        tok.pos,
                        f"parentheses or brackets nested more than {nest} deep; the limit is "
                        "intake.max_nesting",
                    )
            elif text in (")", "]") or (depth and text == "}"):
                depth -= 1
            elif text in (";", "{", "}"):
                if self.blocks and self.blocks[-1] is not None:
                    self.body_tokens.append(text)
                self.statement(statement, text)
                statement = []
                depth = operators = 0
                continue
            if self.blocks and self.blocks[-1] is not None:
                self.body_tokens.append(text)
            statement.append(tok)
        if statement:
            self.statement(statement, ";")
        while self.blocks:
            self.close_block()
        return self.report

    # -- statements -------------------------------------------------------------------

    def statement(self, toks: list[Token], end: str) -> None:
        first = toks[0].text if toks else ""
        if first == "if" and not self.v3:
            raise self.fail(
                toks[0].pos,
                "an OpenQASM 2 condition; write the circuit in OpenQASM 3, where a "
                "condition is a block: if (c == 1) { x q[0]; }",
            )
        if self.v3 and first == "switch":
            raise self.fail(
                toks[0].pos,
                "switch is not read by the devices' OpenQASM 3 reader; write it as "
                "if (c == 1) { ... } else if (c == 2) { ... } (circuit objects are "
                "rewritten so for you)",
            )
        if self.v3 and first in _LOOPS and end != "{":
            raise self.fail(toks[0].pos, f"write the body of a {first} loop in braces {{ }}")
        if end == "{":
            self.open_block(toks, toks[0].text if toks else "")
        elif toks:
            self.simple(toks)
        # sizes, indices and physical qubits are bounded in every statement and header
        # (after the statement's own checks, which say more); a for loop's bracket is
        # its range, which counts passes (each statement in it is counted that often)
        if not (self.v3 and first == "for"):
            self.check_brackets(toks)
        if end == "}" and self.blocks:
            self.close_block()

    def simple(self, toks: list[Token]) -> None:
        first = toks[0].text
        if self.first:
            self.first = False
            if first == "OPENQASM":
                version = toks[1].text if len(toks) > 1 else ""
                self.report.version = 3 if version.startswith("3") else 2
                return
        if first == "include":
            self.include(toks)
        elif first in ("qreg", "creg"):
            self.old_register(toks)
        elif self.v3 and first in ("qubit", "bit") and len(toks) > 1:
            self.new_register(toks)
        elif first == "opaque" and len(toks) > 1:
            self.report.defined.add(toks[1].text)
        elif self.v3 and first == "let":
            self.alias(toks)
        elif self.v3 and first in _QUIET:
            return
        else:
            self.call(toks)

    def open_block(self, toks: list[Token], first: str) -> None:
        if len(self.blocks) >= self.limits.max_nesting:
            pos = toks[0].pos if toks else 0
            raise self.fail(
                pos,
                f"blocks nested more than {self.limits.max_nesting} deep; the limit is "
                "intake.max_nesting",
            )
        if first == "gate" and len(toks) > 1 and not any(b is not None for b in self.blocks):
            name = toks[1].text
            self.check_parameters(toks)
            self.blocks.append(name)
            self.body_cost = 0
            self.body_depth = 0
            self.body_tokens = [t.text for t in toks] + ["{"]
            self.passes.append(1)
            return
        self.blocks.append(None)
        passes = 1
        if self.v3 and first == "for":
            passes = self.loop_passes(toks)
        elif self.v3 and first == "while":
            passes = MAX_WHILE_ITERATIONS
        self.passes.append(passes)
        if first in _LOOPS and self.v3:
            # each pass costs the simulator a step, even with an empty body: a loop of
            # 10^8 passes of nothing held a device for minutes
            self.count(toks[0].pos, math.prod(self.passes))

    def loop_passes(self, toks: list[Token]) -> int:
        """How often a ``for`` loop runs: its range must be integer literals."""
        names = [t.text for t in toks]
        at = names.index("in") + 1 if "in" in names else len(names)
        rest = names[at:]
        bounds: list[int] = []
        if rest[:1] == ["["] and rest[-1:] == ["]"]:
            sign = 1
            for text in rest[1:-1]:
                if text == "-":
                    sign = -1
                elif text != ":":
                    value = _int_value(text)
                    if value is None:
                        bounds = []
                        break
                    bounds.append(sign * value)
                    sign = 1
        if len(bounds) not in (2, 3):
            raise self.fail(
                toks[0].pos,
                "write a for loop's range as integer literals, [start:stop] or "
                "[start:step:stop] (a set {...} or a variable is not read)",
            )
        start, step, stop = (bounds[0], 1, bounds[1]) if len(bounds) == 2 else bounds
        if step == 0:
            raise self.fail(toks[0].pos, "a for loop's step is 0: it would never end")
        return max(0, (stop - start) // step + 1)

    def close_block(self) -> None:
        name = self.blocks.pop()
        if self.passes:
            self.passes.pop()
        if name is None:
            return
        cost = max(1, self.body_cost)
        depth = self.body_depth + 1
        self.cost[name] = cost
        self.depth[name] = depth
        self.report.defined.add(name)
        self.report.definitions[name] = " ".join(self.body_tokens)
        self.body_tokens = []
        if cost > self.limits.max_gate_expansion:
            raise ValidationError(
                f"one call of gate {brief(name, 40)!r} expands to {cost} operations; the limit "
                f"is {self.limits.max_gate_expansion} (intake.max_gate_expansion)"
            )
        if depth > self.limits.max_definition_depth:
            raise ValidationError(
                f"gate {brief(name, 40)!r} is defined {depth} definitions deep; the limit is "
                f"{self.limits.max_definition_depth} (intake.max_definition_depth)"
            )

    # -- includes, registers, aliases -------------------------------------------------

    def include(self, toks: list[Token]) -> None:
        allowed = STANDARD_INCLUDES[self.report.version]
        named = toks[1].text[1:-1] if len(toks) == 2 and toks[1].kind == "string" else None
        if named != allowed:
            shown = f'"{brief(named, 40)}"' if named is not None else "without a file name"
            raise self.fail(
                toks[0].pos,
                f"include {shown} is not allowed: the farm never reads files. Only "
                f'"{allowed}" is built in for OpenQASM {self.report.version}; paste any other '
                "definitions into the circuit",
            )
        if named in self.report.includes:
            raise self.fail(toks[0].pos, f'"{named}" is included twice; include it once')
        self.report.includes.add(named)

    def old_register(self, toks: list[Token]) -> None:
        # qreg NAME [ N ]  (the size an integer literal, nothing else)
        if not (len(toks) >= 5 and toks[2].text == "[" and toks[4].text == "]"):
            raise self.fail(
                toks[0].pos,
                f"write a register as {toks[0].text} NAME[SIZE]; with the size an integer literal",
            )
        self.declare(toks[0].text == "qreg", toks[1].text, toks[3], toks[0].pos)

    def new_register(self, toks: list[Token]) -> None:
        # qubit NAME  |  qubit [ N ] NAME  (bit the same, maybe with "= ...")
        quantum = toks[0].text == "qubit"
        if toks[1].text != "[":
            self.declare(quantum, toks[1].text, None, toks[0].pos)
            return
        if len(toks) >= 5 and toks[3].text == "]":
            self.declare(quantum, toks[4].text, toks[2], toks[0].pos)
            return
        raise self.fail(
            toks[0].pos,
            f"write the size of a {toks[0].text} register as an integer literal, e.g. "
            f"{toks[0].text}[5] q;",
        )

    def declare(self, quantum: bool, name: str, size_tok: Token | None, pos: int) -> None:
        size = 1
        if size_tok is not None:
            value = _int_value(size_tok.text)
            if value is None:
                raise self.fail(
                    pos, "write the register size as an integer literal, e.g. qreg q[5];"
                )
            size = value
        self.registers[name] = size
        r = self.report
        if quantum:
            r.qubits += size
            if r.qubits > self.qubit_limit.count:
                self.too_many_qubits(pos, name, size)
        else:
            r.clbits += size
            if r.clbits > self.limits.max_clbits:
                total = "" if r.clbits == size else f" ({r.clbits} in all)"
                raise self.fail(
                    pos,
                    f"{brief(name, 40)}[{size}] declares {size} classical bits{total}; the "
                    f"limit is {self.limits.max_clbits} (intake.max_clbits)",
                )

    def alias(self, toks: list[Token]) -> None:
        """``let NAME = ...;``: as wide as the registers it names, at most all of them."""
        if len(toks) >= 3 and toks[1].kind == "name":
            named = sum(self.registers.get(t.text, 0) for t in toks[3:] if t.kind == "name")
            self.registers[toks[1].text] = max(1, min(named, self.report.qubits))

    def too_many_qubits(self, pos: int, name: str, size: int) -> None:
        total = self.report.qubits
        also = "" if total == size else f" ({total} qubits in all)"
        raise self.fail_qubits(
            pos,
            f"{brief(name, 40)}[{size}] declares {size} qubits{also}; the limit is "
            f"{self.qubit_limit.count} qubits: {self.qubit_limit.why}",
        )

    def check_brackets(self, toks: list[Token]) -> None:
        """Integers inside brackets are sizes or indices, and ``$N`` names a physical
        qubit: none may pass any register."""
        bound = max(self.qubit_limit.count, self.limits.max_clbits)
        depth = 0
        for tok in toks:
            if tok.text == "[":
                depth += 1
            elif tok.text == "]":
                depth = max(0, depth - 1)
            elif tok.kind == "name" and tok.text.startswith("$"):
                index = int(tok.text[1:])
                if index >= self.qubit_limit.count:
                    raise self.fail_qubits(
                        tok.pos,
                        f"physical qubit {brief(tok.text, 30)} does not exist: the limit is "
                        f"{self.qubit_limit.count} qubits ({self.qubit_limit.why})",
                    )
                if index + 1 > self.report.qubits:
                    self.report.qubits = index + 1
            elif depth and tok.kind == "number":
                value = _int_value(tok.text)
                if value is not None and value > bound:
                    raise self.fail(
                        tok.pos,
                        f"index or size {value} is beyond any register the farm accepts "
                        f"(the limit is {bound}: intake.max_qubits / intake.max_clbits)",
                    )

    # -- gate calls -------------------------------------------------------------------

    def check_parameters(self, toks: list[Token]) -> None:
        if len(toks) > 2 and toks[2].text == "(":
            count = _count_args(toks, 2)
            if count > self.limits.max_parameters:
                raise self.fail(
                    toks[0].pos,
                    f"{count} parameters; the limit is {self.limits.max_parameters} "
                    "(intake.max_parameters)",
                )

    def call(self, toks: list[Token]) -> None:
        """A statement that may run operations: count them (an upper bound)."""
        in_body = bool(self.blocks) and self.blocks[-1] is not None
        n = len(toks)
        i = self.skip_prefixes(toks)
        if i >= n or (self.v3 and (toks[i].text in _HEADERS or toks[i].text in _QUIET)):
            return
        controls = 0
        power = False
        while self.v3 and i < n and toks[i].text in _MODIFIERS:
            modifier = toks[i].text
            i += 1
            count = 1
            if i < n and toks[i].text == "(":
                close = _matching(toks, i)
                if modifier in ("ctrl", "negctrl"):
                    value = _int_value(toks[i + 1].text) if close == i + 2 else None
                    if value is None:
                        raise self.fail(
                            toks[i].pos,
                            f"write {modifier}'s count of controls as an integer literal",
                        )
                    count = value
                i = close + 1
            if modifier in ("ctrl", "negctrl"):
                controls += count
            elif modifier == "pow":
                power = True
            if i < n and toks[i].text == "@":
                i += 1
        if i >= n:
            return
        callee = toks[i].text
        where = toks[i].pos
        i += 1
        if i < n and toks[i].text == "[":  # a designator: delay[100ns], box[...]
            i = _matching(toks, i) + 1
        if i < n and toks[i].text == "(":
            if _count_args(toks, i) > self.limits.max_parameters:
                raise self.fail(
                    where,
                    f"more than {self.limits.max_parameters} parameters in one call; the limit "
                    "is intake.max_parameters",
                )
            i = _matching(toks, i) + 1
        args = _split_args(toks, i)
        cost = self.cost.get(callee, 1) * (controls + 1) ** 2
        if power:
            width = max(len(args), controls + 1)
            if width > self.limits.max_pow_qubits or cost * 4**width > _POW_BUDGET:
                raise self.fail(
                    where,
                    f"pow(...) @ on a gate of {width} qubits and {cost} operations; the power "
                    f"is taken as a matrix of 4^{width} entries through each of them. The "
                    f"limits are {self.limits.max_pow_qubits} qubits (intake.max_pow_qubits) "
                    f"and {_POW_BUDGET} for operations x 4^qubits",
                )
        if in_body:
            self.body_cost += cost
            self.body_depth = max(self.body_depth, self.depth.get(callee, 0))
            return
        width = max((self.width(arg) for arg in args), default=1)
        # a statement inside loops runs once per pass of each
        self.count(where, cost * width * math.prod(self.passes))

    def count(self, pos: int, operations: int) -> None:
        """Add operations the circuit runs; refuse it past ``intake.max_gates``."""
        self.report.gates += operations
        if self.report.gates > self.limits.max_gates:
            raise self.fail(
                pos,
                f"the circuit expands to more than {self.limits.max_gates} operations here "
                "(gate definitions, register broadcasts and loops expanded); the limit is "
                "intake.max_gates",
            )

    def skip_prefixes(self, toks: list[Token]) -> int:
        """Index of a statement's call: past ``if (...)``, ``else`` and an assignment."""
        n = len(toks)
        i = 0
        while i < n:
            head = toks[i].text
            if head == "if" and i + 1 < n and toks[i + 1].text == "(":
                i = _matching(toks, i + 1) + 1
            elif self.v3 and head == "else":
                i += 1
            else:
                break
        for j in range(i, n):
            tok = toks[j]
            if tok.text == "=" and tok.kind == "op":
                return j + 1
            if tok.text in ("(", "@", "["):
                break
        return i

    def width(self, arg: list[Token]) -> int:
        """How many times a call broadcasts over this argument (1 for a single qubit)."""
        if not arg or arg[0].kind != "name":
            return 1
        size = self.registers.get(arg[0].text, 1)
        if len(arg) == 1 or any(t.text in (":", "{", ",") for t in arg):
            return size  # a whole register, a slice or an index set
        return 1


def _too_long(number: str) -> bool:
    """Whether an integer literal (decimal, hex, octal or binary) passes 18 digits."""
    plain = number.replace("_", "")
    if plain[:2].lower() in ("0x", "0b", "0o"):
        return len(plain) - 2 > _MAX_LITERAL_DIGITS
    return plain.isascii() and plain.isdigit() and len(plain) > _MAX_LITERAL_DIGITS


def _int_value(text: str) -> int | None:
    """The value of a plain integer literal (``1_000`` included), else None."""
    digits = text.replace("_", "")
    if digits.isascii() and digits.isdigit() and len(digits) <= _MAX_LITERAL_DIGITS:
        return int(digits)
    return None


def _matching(toks: list[Token], open_at: int) -> int:
    """Index of the token closing the bracket at ``open_at`` (the last one if none)."""
    depth = 0
    for i in range(open_at, len(toks)):
        text = toks[i].text
        if text in ("(", "[", "{"):
            depth += 1
        elif text in (")", "]", "}"):
            depth -= 1
            if depth == 0:
                return i
    return len(toks) - 1


def _count_args(toks: list[Token], open_at: int) -> int:
    """Comma-separated items inside the parentheses at ``open_at``."""
    close = _matching(toks, open_at)
    if close <= open_at + 1:
        return 0
    depth = 0
    count = 1
    for i in range(open_at + 1, close):
        text = toks[i].text
        if text in ("(", "[", "{"):
            depth += 1
        elif text in (")", "]", "}"):
            depth -= 1
        elif text == "," and depth == 0:
            count += 1
    return count


def _split_args(toks: list[Token], start: int = 0) -> list[list[Token]]:
    """Top-level comma (or ``->``) separated pieces of ``toks[start:]``."""
    out: list[list[Token]] = []
    cur: list[Token] = []
    depth = 0
    for i in range(start, len(toks)):
        tok = toks[i]
        if tok.text in ("(", "[", "{"):
            depth += 1
        elif tok.text in (")", "]", "}"):
            depth -= 1
        if depth == 0 and tok.text in (",", "->"):
            out.append(cur)
            cur = []
            continue
        cur.append(tok)
    if cur:
        out.append(cur)
    return out
