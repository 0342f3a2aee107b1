"""Compile circuits for one device calibration, and remember what was compiled.

The functions here are plain: the scheduler runs :func:`compile_circuits` as Ray tasks
(in chunks, because one task per small circuit costs more than the compile itself),
and keeps a :class:`CompileCache` keyed by (circuit hash, device, calibration id).

A compiled circuit travels from the compile task through the scheduler to the device
as QPY bytes made by :func:`compile_circuits` itself: a pickled ``QuantumCircuit``
costs about 1.4 ms to pickle and 0.9 ms to unpickle (8 kB for a 5-qubit circuit), QPY
0.25 ms and 0.12 ms, and the scheduler only forwards the bytes. These bytes never come
from a user: users hand in OpenQASM text, which is parsed and compiled here.
"""

from __future__ import annotations

import io
import math
import re
import threading
import time
from collections import OrderedDict
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from qiskit import QuantumCircuit, qpy
from qiskit.dagcircuit import DAGCircuitError
from qiskit.transpiler import Target
from qiskit.transpiler.passes import SetLayout
from qiskit.transpiler.preset_passmanagers import generate_preset_pass_manager

from qrt_ray.circuits import circuit_hash
from qrt_ray.dynamic import bound_while_loops, walk
from qrt_ray.intake.admit import parse_admitted
from qrt_ray.models import CompileInfo

DEFAULT_OPTIMIZATION_LEVEL = 1
_ROUTING_PASS = re.compile(r"Sabre|Swap|Routing")
# Where the compiler's own layout replaced placement's, it must reach this share of the
# ESP placement expected, or placement's layout is compiled too and the better kept.
# 137 routed random 5-qubit circuits on guadalupe reached 0.88-1.03 of the estimate;
# a layout over a broken gate reaches about 0.
RELAYOUT_FLOOR = 0.8


@dataclass(frozen=True, slots=True)
class CompiledCircuit:
    """A circuit ready for one device calibration, with what compiling it produced.

    Attributes:
        circuit_hash: hash of the OpenQASM text it was compiled from.
        payload: the compiled circuit as QPY bytes (:func:`decode_compiled` reads it);
            None when the compile failed.
        active_qubits: physical qubits the compiled circuit touches.
        info: compile metadata; None when the compile failed.
        error: one-line reason the compile failed, else None.
    """

    circuit_hash: str
    payload: bytes | None
    active_qubits: int
    info: CompileInfo | None
    error: str | None = None


def encode_compiled(circuit: QuantumCircuit) -> bytes:
    """QPY bytes of a circuit this module compiled (see the module note)."""
    buf = io.BytesIO()
    qpy.dump(circuit, buf)
    return buf.getvalue()


def decode_compiled(payloads: Sequence[bytes]) -> list[QuantumCircuit]:
    """Circuits back from :func:`encode_compiled` bytes, in order."""
    return [qpy.load(io.BytesIO(p))[0] for p in payloads]


def active_qubits(circuit: QuantumCircuit) -> int:
    """Physical qubits a compiled circuit touches (a 5-qubit job on 133 qubits: 5)."""
    return len({q for inst in circuit.data for q in inst.qubits})


def compile_circuits(
    qasm_texts: Sequence[str],
    target: Target,
    *,
    device: str,
    calibration_id: str,
    optimization_level: int = DEFAULT_OPTIMIZATION_LEVEL,
    seed_transpiler: int = 0,
    initial_layouts: Sequence[Sequence[int] | None] | None = None,
    placement_esp: Sequence[float | None] | None = None,
    target_key: str | None = None,
) -> list[CompiledCircuit]:
    """Transpile circuits to a device's native gates and coupling map, with SWAP routing.

    Args:
        qasm_texts: the circuits, as OpenQASM text.
        target: the device's transpiler target for this calibration.
        device: device name, stamped into the compile metadata.
        calibration_id: calibration the target describes.
        optimization_level: Qiskit preset level 0-3.
        seed_transpiler: seed for layout and routing, so compiles are reproducible.
        initial_layouts: for each circuit, the physical qubit of each logical qubit
            (the placement's noise-aware layout), or None to let the preset pass
            manager choose. Routing starts from it; after routing, Qiskit's
            ``VF2PostLayout`` may still move the result to a better isomorphic layout.
        placement_esp: for each circuit, the ESP placement expected from its given
            layout, or None to keep that layout whatever it costs (circuits that must
            share their qubits). Where a given layout cannot put every two-qubit gate
            on coupled qubits, routing from it would add SWAPs, and the preset pass
            manager's own routing-aware layout is used instead (on 137 such random
            5-qubit circuits it kept 99.7 % of the mean ESP of the better of the two,
            at half the compiles). Should that layout's ESP fall below
            ``RELAYOUT_FLOOR`` times ``placement_esp`` (it can land on a broken gate),
            the given layout is compiled too and the higher ESP (calibrated gate and
            readout errors) kept. None for the whole argument keeps every layout.
        target_key: a name that stands for ``target`` and nothing else (the scheduler
            passes the device and calibration id, a hash of the calibration): pass
            managers and error tables built for it are kept for later calls in this
            process. None builds them afresh.

    Returns:
        One :class:`CompiledCircuit` per input, in order. A circuit that fails to
        compile carries ``error`` (and no circuit), so it fails only its own job.
    """
    layouts = list(initial_layouts) if initial_layouts is not None else [None] * len(qasm_texts)
    if len(layouts) != len(qasm_texts):
        raise ValueError(
            f"initial_layouts has {len(layouts)} entries for {len(qasm_texts)} circuits; "
            f"give one layout (or None) per circuit"
        )
    # Building a pass manager costs 5-15 ms, more than compiling a small circuit, and
    # placement gives nearly every circuit a layout of its own: so at most two are
    # built, one choosing its own layout and one whose layout pass is handed each
    # circuit's layout in turn (the compiled circuits are identical to those of a
    # pass manager built per layout; a unit test checks it).
    kept = _kept_for(target_key, target)
    managers: dict[tuple[int, int, bool], tuple[object, SetLayout | None]] = kept.managers

    def manager(layout: Sequence[int] | None) -> object:
        key = (optimization_level, seed_transpiler, layout is not None)
        if key not in managers:
            pm = generate_preset_pass_manager(
                optimization_level=optimization_level,
                target=target,
                seed_transpiler=seed_transpiler,
                initial_layout=list(layout) if layout is not None else None,
            )
            managers[key] = (pm, _layout_pass(pm) if layout is not None else None)
        pm, slot = managers[key]
        if slot is not None and layout is not None:
            slot.layout = [int(q) for q in layout]
        return pm

    expected = list(placement_esp) if placement_esp is not None else [None] * len(qasm_texts)
    if len(expected) != len(qasm_texts):
        raise ValueError(
            f"placement_esp has {len(expected)} entries for {len(qasm_texts)} circuits; "
            "give one estimate (or None) per circuit"
        )
    coupled: set[tuple[int, int]] = set()  # filled once, when first needed
    fidelities = kept.fidelities
    out: list[CompiledCircuit] = []
    for text, layout, esp in zip(qasm_texts, layouts, expected, strict=True):
        try:
            started = time.perf_counter()  # compile_s counts the parse, as it always has
            # a while loop runs as a bounded for loop: it always ends (qrt_ray.dynamic)
            logical = bound_while_loops(parse_admitted(text))
            args = (text, device, calibration_id, optimization_level, seed_transpiler, fidelities)
            given = tuple(layout) if layout is not None else None
            relaid = False
            if given is not None and esp is not None:
                coupled = coupled or coupled_pairs(target)
                relaid = not fits_without_swaps(logical, given, coupled)
            best = _compile_one(manager(None if relaid else given), logical, started, *args)
            if relaid and _esp(best) < RELAYOUT_FLOOR * esp:  # type: ignore[operator]
                placed = _compile_one(manager(given), logical, time.perf_counter(), *args)
                if _esp(placed) > _esp(best):
                    best = placed
            out.append(best)
        except Exception as exc:
            reason = str(exc).strip().splitlines()[0] if str(exc).strip() else ""
            out.append(
                CompiledCircuit(
                    circuit_hash(text), None, 0, None, error=f"{type(exc).__name__}: {reason}"[:500]
                )
            )
    return out


@dataclass(slots=True)
class _Kept:
    """What compiling for one target builds once: pass managers and its error table."""

    fidelities: dict[tuple[str, tuple[int, ...]], float]
    managers: dict[tuple[int, int, bool], tuple[object, SetLayout | None]] = field(
        default_factory=dict
    )


# Per target key, for the compile calls of one thread (a compile worker serves one
# farm's devices, a handful of calibrations at a time; a pass manager is not shared
# between threads, whose calls could overlap). Building pass managers took 9 % of a
# compile worker's time on 200 small circuits when each call built its own.
_KEPT = threading.local()
_KEPT_TARGETS = 8


def _kept_for(target_key: str | None, target: Target) -> _Kept:
    if target_key is None:
        return _Kept(log_fidelities(target))
    kept_here: OrderedDict[str, _Kept] | None = getattr(_KEPT, "targets", None)
    if kept_here is None:
        kept_here = _KEPT.targets = OrderedDict()
    kept = kept_here.get(target_key)
    if kept is None:
        kept = kept_here[target_key] = _Kept(log_fidelities(target))
        while len(kept_here) > _KEPT_TARGETS:
            kept_here.popitem(last=False)
    kept_here.move_to_end(target_key)
    return kept


def _esp(compiled: CompiledCircuit) -> float:
    return (compiled.info.esp or 0.0) if compiled.info is not None else 0.0


def coupled_pairs(target: Target) -> set[tuple[int, int]]:
    """Pairs of physical qubits a two-qubit gate of ``target`` joins, both ways round."""
    cmap = target.build_coupling_map()
    if cmap is None:  # all-to-all
        n = target.num_qubits or 0
        return {(a, b) for a in range(n) for b in range(n) if a != b}
    return {pair for a, b in cmap.get_edges() for pair in ((a, b), (b, a))}


def fits_without_swaps(
    circuit: QuantumCircuit, layout: Sequence[int], coupled: set[tuple[int, int]]
) -> bool:
    """Whether ``layout`` puts every two-qubit gate of ``circuit`` on coupled qubits.

    A gate on three or more qubits counts as not fitting: its decomposition joins every
    pair of them, which a sparse coupling map rarely holds.
    """
    index = {bit: i for i, bit in enumerate(circuit.qubits)}
    for inst in circuit.data:
        qubits = inst.qubits
        if len(qubits) < 2 or inst.name == "barrier":
            continue
        if len(qubits) > 2:
            return False
        if (layout[index[qubits[0]]], layout[index[qubits[1]]]) not in coupled:
            return False
    return True


def _layout_pass(pm: object) -> SetLayout:
    """The pass that sets a preset pass manager's given initial layout."""
    for task in pm.layout.to_flow_controller().tasks:  # type: ignore[attr-defined]
        if isinstance(task, SetLayout):
            return task
    raise RuntimeError("the preset pass manager has no SetLayout pass for a given layout")


@dataclass(frozen=True, slots=True)
class CompiledStats:
    """What one pass over a compiled circuit tells: see :func:`compiled_stats`."""

    two_qubit_gates: int
    esp: float
    measured_qubits: tuple[int, ...]
    active_qubits: int
    gates: int = 0  # gate instructions, measurements and barriers aside
    # qubits a matrix-product-state simulator moves its two-qubit gates' qubits past:
    # over those gates, the touched qubits strictly between their two (in index order)
    bond_moves: int = 0


# Instructions a simulator spends (almost) nothing on: not counted as gates.
_NOT_GATES = frozenset({"barrier", "delay", "reset", "measure"})


def log_fidelities(target: Target) -> dict[tuple[str, tuple[int, ...]], float]:
    """``log(1 - error)`` of every calibrated (instruction, qubits) of ``target``.

    Built once per target (kept per ``target_key``, see :func:`compile_circuits`):
    asking the target per instruction cost more than the rest of
    :func:`compiled_stats` together.
    """
    table: dict[tuple[str, tuple[int, ...]], float] = {}
    for name in target.operation_names:
        for qargs, props in target[name].items():
            error = getattr(props, "error", None)
            if qargs is not None and error:
                table[(name, tuple(qargs))] = math.log1p(-min(error, 0.999999))
    return table


def _depth(dag: Any, compiled: Any) -> int:
    """The compiled circuit's depth; with control flow, a block counts as deep as its
    deepest branch, or one pass of a loop's body (``DAGCircuit.depth(recurse=True)``)."""
    if dag is None:
        return int(compiled.depth())
    try:
        return int(dag.depth())
    except DAGCircuitError:  # control flow: its depth is ambiguous without recursion
        return int(dag.depth(recurse=True))


def compiled_stats(
    circuit: QuantumCircuit, fidelities: Mapping[tuple[str, tuple[int, ...]], float]
) -> CompiledStats:
    """Two-qubit gates, ESP, measured qubits and active qubits of a compiled circuit.

    ESP is the product of (1 - error) over its gates and measurements, errors from
    ``fidelities`` (:func:`log_fidelities` of the device's target); gates without an
    error there (rz, barriers) count as perfect. Measured qubits: for each clbit, the
    physical qubit its last measurement read (-1: never measured), which readout
    mitigation needs. One pass, because each walk over ``circuit.data`` costs about as
    much as a tenth of a small compile.
    """
    measured = [-1] * circuit.num_clbits
    touched: set[int] = set()
    two = others = 0
    pairs: list[tuple[int, ...]] = []
    log_esp = 0.0
    if circuit.has_control_flow_op():  # a native check: blocks entered, each once
        operations: Any = ((op.name, q, c) for op, q, c in walk(circuit))
    else:  # the common case, without a generator's cost per instruction
        position = {bit: i for i, bit in enumerate(circuit.qubits)}.__getitem__
        clbit = {bit: i for i, bit in enumerate(circuit.clbits)}
        # inst.name, not inst.operation.name: that builds the gate object
        operations = (
            (inst.name, tuple(map(position, inst.qubits)), inst.clbits) for inst in circuit.data
        )
    for name, qubits, clbits in operations:
        touched.update(qubits)
        if len(qubits) == 2 and name != "barrier":  # ZNE's folds sit between barriers
            two += 1
            pairs.append(qubits)
        elif name == "measure":
            target = clbits[0]
            measured[target if isinstance(target, int) else clbit[target]] = qubits[0]
        elif name not in _NOT_GATES:
            others += 1
        log_esp += fidelities.get((name, qubits), 0.0)
    rank = {q: i for i, q in enumerate(sorted(touched))}
    moves = sum(max(0, abs(rank[a] - rank[b]) - 1) for a, b in pairs)
    return CompiledStats(two, math.exp(log_esp), tuple(measured), len(touched), two + others, moves)


def _compile_one(
    pm: object,
    logical: QuantumCircuit,
    started: float,
    text: str,
    device: str,
    calibration_id: str,
    optimization_level: int,
    seed_transpiler: int,
    fidelities: Mapping[tuple[str, tuple[int, ...]], float],
) -> CompiledCircuit:
    swaps = [0]
    last_dag: list[object] = [None]

    def count_swaps(pass_: object, dag: object, **_: object) -> None:
        last_dag[0] = dag
        # Layout/routing passes insert 'swap' gates that translation later rewrites
        # into native gates; the peak count after those passes is what routing
        # added. Counting after every pass would cost ~20% of the compile.
        if not _ROUTING_PASS.search(type(pass_).__name__):
            return
        n = dag.count_ops().get("swap", 0)  # type: ignore[attr-defined]
        if n > swaps[0]:
            swaps[0] = n

    compiled = pm.run(logical, callback=count_swaps)  # type: ignore[attr-defined]
    layout = compiled.layout.final_index_layout() if compiled.layout else []
    stats = compiled_stats(compiled, fidelities)
    info = CompileInfo(
        device=device,
        calibration_id=calibration_id,
        # The DAG's depth is computed natively; QuantumCircuit.depth() in Python
        # costs more than a quarter of a small circuit's whole compile.
        depth=_depth(last_dag[0], compiled),
        two_qubit_gates=stats.two_qubit_gates,
        active_qubits=stats.active_qubits,
        gates=stats.gates,
        bond_moves=stats.bond_moves,
        swaps_added=max(0, swaps[0] - logical.count_ops().get("swap", 0)),
        layout=tuple(layout[: logical.num_qubits]),
        optimization_level=optimization_level,
        seed_transpiler=seed_transpiler,
        compile_s=time.perf_counter() - started,
        esp=round(stats.esp, 6),
        measured_qubits=stats.measured_qubits,
    )
    # The device needs the gates and measurements only: the layout was recorded above.
    compiled._layout = None
    return CompiledCircuit(circuit_hash(text), encode_compiled(compiled), stats.active_qubits, info)


def pinned_key(circuit_hash: str, layout: Sequence[int]) -> str:
    """The cache key of a circuit compiled on a layout it was given (not its own)."""
    return f"{circuit_hash}@{','.join(map(str, layout))}"


class CompileCache:
    """LRU of compiled circuits keyed by (circuit hash, device, calibration id)."""

    def __init__(self, max_entries: int = 20_000) -> None:
        self._entries: OrderedDict[tuple[str, str, str], CompiledCircuit] = OrderedDict()
        self._max = max_entries
        self.hits = 0
        self.misses = 0

    def get(self, key: tuple[str, str, str]) -> CompiledCircuit | None:
        """The cached compile for ``key``, marked as a cache hit; None on a miss."""
        found = self._entries.get(key)
        if found is None:
            self.misses += 1
            return None
        self.hits += 1
        self._entries.move_to_end(key)
        return CompiledCircuit(
            found.circuit_hash,
            found.payload,
            found.active_qubits,
            found.info.model_copy(update={"cache_hit": True}),
        )

    def __contains__(self, key: tuple[str, str, str]) -> bool:
        """Whether ``key`` is cached (not counted as a hit or a miss)."""
        return key in self._entries

    def put(self, compiled: CompiledCircuit, circuit_key: str | None = None) -> None:
        """Remember a successful compile under (``circuit_key``, device, calibration id);
        the key defaults to the circuit's hash (see :func:`pinned_key` for others)."""
        if compiled.info is None:
            return
        key = (
            circuit_key or compiled.circuit_hash,
            compiled.info.device,
            compiled.info.calibration_id,
        )
        self._entries[key] = compiled
        self._entries.move_to_end(key)
        while len(self._entries) > self._max:
            self._entries.popitem(last=False)

    def invalidate(self, device: str, calibration_id: str | None = None) -> int:
        """Drop a device's entries (all, or one calibration's); returns how many."""
        doomed = [k for k in self._entries if k[1] == device and calibration_id in (None, k[2])]
        for k in doomed:
            del self._entries[k]
        return len(doomed)

    def __len__(self) -> int:
        return len(self._entries)
