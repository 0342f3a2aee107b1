"""A realistic mixed workload for ``qrt demo`` and the benchmarks, with ideal outputs.

Five families take turns: GHZ, a QFT that peaks at one integer, Grover search, p=1
QAOA for MaxCut, and shallow random circuits. Each circuit comes with its noiseless
output distribution, computed from the circuit itself, so a run's quality is one
Hellinger fidelity (:mod:`qrt_ray.fidelity`) away. Every family's ideal output is far
from uniform; otherwise a fidelity would say nothing about the device.

Sizes are clamped per family (:data:`FAMILY_MAX_QUBITS`) where a larger circuit would
tell us nothing on today's noisy devices:

- ``grover`` stops at 4 qubits: the optimal number of iterations grows as
  sqrt(2^n) and each one holds two multi-controlled Z gates, so on FakeKolkataV2
  (optimization level 1) the 2-qubit gate count goes 45 (3 qubits), 135 (4), 533
  (5), 1938 (6), 4283 (7). Its noisy fidelity there drops from ~0.53 (4 qubits) to
  ~0.06 (5), what a fully mixed output would score.
- ``qft`` stops at 10 qubits: n(n-1)/2 controlled phases plus routing give 189
  2-qubit gates at 10 qubits (noisy fidelity ~0.22 on FakeKolkataV2), 303 at 12
  (~0.10) and ~940 at 20.
- ``qaoa`` and ``random`` stop at 10 qubits: their outputs spread over most of the
  2^n bitstrings, and with a few thousand shots a perfect device already scores
  ~1 - 2^n / (4 * shots) (0.94 at 10 qubits and 4000 shots), so past 10 qubits a
  fidelity measures the shot count, not the device.
- ``ghz`` keeps the full range: two peaks survive any shot count, and n-1 CNOTs
  route cheaply.

A family whose allowed sizes miss ``[min_qubits, max_qubits]`` entirely is left out
of the rotation.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass
from types import MappingProxyType
from typing import Literal

import numpy as np
from qiskit import ClassicalRegister, QuantumCircuit
from qiskit.circuit import ControlFlowOp
from qiskit.circuit.library import grover_operator
from qiskit.circuit.random import random_circuit
from qiskit.quantum_info import Statevector
from qiskit.synthesis.qft import synth_qft_full

from qrt_ray.errors import QrtError, ValidationError

Family = Literal["ghz", "qft", "grover", "qaoa", "random"]

FAMILIES: tuple[Family, ...] = ("ghz", "qft", "grover", "qaoa", "random")
"""The families, in the order the workload takes them."""

FAMILY_MIN_QUBITS: Mapping[Family, int] = MappingProxyType(
    {"ghz": 2, "qft": 2, "grover": 2, "qaoa": 5, "random": 2}
)
"""Smallest size per family: p=1 QAOA on a triangle or K4 is nearly flat (peak < 2x uniform)."""

FAMILY_MAX_QUBITS: Mapping[Family, int] = MappingProxyType(
    {"ghz": 24, "qft": 10, "grover": 4, "qaoa": 10, "random": 10}
)
"""Largest size per family; the module docstring says why each stops where it does."""

MAX_IDEAL_QUBITS = 24
"""Widest circuit whose ideal is computed: its statevector takes 256 MiB."""

PROBABILITY_CUTOFF = 1e-12
"""Ideal probabilities below this are dropped (they are rounding noise)."""

# p=1 QAOA angles that maximize the expected cut on every graph of the degree
# (Farhi, Goldstone, Gutmann 2014), for U = exp(-i beta sum X) exp(-i gamma C).
_QAOA_ANGLES: Mapping[int, tuple[float, float]] = MappingProxyType(
    {2: (math.pi / 4, math.pi / 8), 3: (0.6155, math.pi / 8)}
)
_RANDOM_DEPTHS = (3, 4)
# A random circuit must beat uniform by this factor at its most likely outcome;
# Clifford-only draws can come out exactly uniform and are redrawn.
_RANDOM_MIN_PEAK_RATIO = 4.0
_MAX_DRAWS = 100


@dataclass(frozen=True, slots=True)
class WorkloadCircuit:
    """One circuit of the workload, with the output a noiseless device would give.

    Attributes:
        name: ``"<family>-<num_qubits>"``, with ``.2``, ``.3``, ... appended to
            repeats, so names are unique within one workload.
        family: which family built it.
        num_qubits: width of the circuit.
        circuit: the circuit, every qubit measured into one classical register ``c``
            (qubit i into clbit i).
        ideal: noiseless output distribution over measured bitstrings, in Qiskit's
            counts order (clbit 0 rightmost), probabilities below
            :data:`PROBABILITY_CUTOFF` dropped.
    """

    name: str
    family: Family
    num_qubits: int
    circuit: QuantumCircuit
    ideal: dict[str, float]


def ideal_distribution(circuit: QuantumCircuit) -> dict[str, float]:
    """The noiseless output distribution of a circuit whose measurements all come last.

    Args:
        circuit: a circuit with final measurements; clbits that nothing is measured
            into read 0, as on a device.

    Returns:
        Bitstring -> probability, keys in Qiskit's counts order (highest clbit
        leftmost, no spaces between registers), probabilities below
        :data:`PROBABILITY_CUTOFF` dropped.

    Raises:
        ValidationError: no measurement, a measurement before the end, an operation
            a statevector cannot apply (reset, classical control), unbound
            parameters, or more than :data:`MAX_IDEAL_QUBITS` qubits.
    """
    if circuit.num_qubits > MAX_IDEAL_QUBITS:
        raise ValidationError(
            f"circuit: {circuit.num_qubits} qubits is too wide for an ideal distribution "
            f"(at most {MAX_IDEAL_QUBITS}); use a smaller circuit"
        )
    if circuit.parameters:
        raise ValidationError(
            "circuit: unbound parameters; bind them with circuit.assign_parameters()"
        )
    source = _clbit_sources(circuit)
    state = _final_state(circuit)
    qubits = sorted(set(source.values()))
    probs = state.probabilities(qargs=qubits)  # qubits[0] is the least significant bit
    outcomes = np.flatnonzero(probs >= PROBABILITY_CUTOFF)
    keys = _bitstrings(outcomes, source, qubits, circuit.num_clbits)
    kept = probs[outcomes]
    kept = kept / kept.sum()  # the dropped tail is < 1e-12 each; renormalize to sum 1
    return dict(zip(keys, kept.tolist(), strict=True))


def _final_state(circuit: QuantumCircuit) -> Statevector:
    """The state just before the final measurements, which must be the only non-unitary ops."""
    unitary = circuit.remove_final_measurements(inplace=False)
    for inst in unitary.data:
        op = inst.operation
        if op.name == "measure":
            raise ValidationError(
                "circuit: a qubit is measured and then used again; the ideal distribution "
                "needs every measurement at the end of the circuit"
            )
        # Statevector would apply a reset by sampling one branch: a random "ideal".
        if op.name == "reset" or isinstance(op, ControlFlowOp):
            raise ValidationError(
                f"circuit: '{op.name}' has no single noiseless outcome; remove resets and "
                "classically controlled operations to get an ideal distribution"
            )
    try:
        return Statevector(unitary)
    except Exception as exc:  # whatever else Statevector cannot apply
        raise ValidationError(f"circuit: cannot compute a statevector: {exc}") from exc


def _clbit_sources(circuit: QuantumCircuit) -> dict[int, int]:
    """Clbit index -> index of the qubit measured into it (the last measurement wins)."""
    source: dict[int, int] = {}
    for inst in circuit.data:
        if inst.name == "measure":
            qubit = circuit.find_bit(inst.qubits[0]).index
            source[circuit.find_bit(inst.clbits[0]).index] = qubit
    if not source:
        raise ValidationError(
            "circuit: it measures nothing, so it has no output distribution; add "
            "circuit.measure_all() or explicit measurements"
        )
    return source


def _bitstrings(
    outcomes: np.ndarray, source: Mapping[int, int], qubits: list[int], num_clbits: int
) -> list[str]:
    # Built as a byte matrix, one row per outcome: formatting 2^20 keys one by one in
    # Python takes seconds, and dense 20-qubit outputs are common.
    chars = np.full((outcomes.size, num_clbits), ord("0"), dtype=np.uint8)
    position = {q: i for i, q in enumerate(qubits)}
    for clbit, qubit in source.items():
        bits = (outcomes >> position[qubit]) & 1
        chars[:, num_clbits - 1 - clbit] += bits.astype(np.uint8)
    return [row.decode() for row in chars.view(f"S{num_clbits}").ravel()]


def generate_workload(
    num_jobs: int = 120, *, min_qubits: int = 3, max_qubits: int = 20, seed: int = 0
) -> list[WorkloadCircuit]:
    """Build a deterministic mix of circuits, each with its ideal output distribution.

    Families take turns (:data:`FAMILIES`); within a family, sizes spread evenly over
    the part of ``[min_qubits, max_qubits]`` it allows (:data:`FAMILY_MAX_QUBITS`)
    and come in a seeded random order.

    Args:
        num_jobs: how many circuits.
        min_qubits: smallest circuit width.
        max_qubits: largest circuit width, at most :data:`MAX_IDEAL_QUBITS`.
        seed: the same seed gives the same circuits, in the same order.

    Returns:
        ``num_jobs`` circuits.

    Raises:
        ValidationError: a negative ``num_jobs``, or a qubit range that is empty,
            starts below 2, or is too wide.
    """
    families = _check_workload_args(num_jobs, min_qubits, max_qubits)
    rng = np.random.default_rng(seed)
    sizes: dict[Family, list[int]] = {}
    for index, family in enumerate(families):
        count = len(range(index, num_jobs, len(families)))
        lo, hi = _family_range(family, min_qubits, max_qubits)
        sizes[family] = rng.permutation(_spread(count, lo, hi)).tolist()
    out: list[WorkloadCircuit] = []
    seen: dict[str, int] = {}
    for i in range(num_jobs):
        family = families[i % len(families)]
        n = sizes[family][i // len(families)]
        circuit, ideal = _build(family, n, np.random.default_rng(rng.integers(2**32)))
        base = f"{family}-{n}"
        seen[base] = seen.get(base, 0) + 1
        name = base if seen[base] == 1 else f"{base}.{seen[base]}"
        circuit.name = name
        out.append(WorkloadCircuit(name, family, n, circuit, ideal))
    return out


def ghz_circuit(n: int) -> QuantumCircuit:
    """An n-qubit GHZ circuit, measured (benchmarks and drills use it as a plain job)."""
    circuit = _ghz(n, np.random.default_rng(0))
    circuit.measure_all()
    return circuit


def brickwork(n: int, layers: int) -> QuantumCircuit:
    """A deep circuit of ``layers`` layers (an RX on every qubit, then CX on alternate
    pairs), measured: long work for a device in benchmarks and tests of cancellation,
    tens of milliseconds a run as a 5-qubit density matrix at 60 layers."""
    circuit = QuantumCircuit(n)
    for layer in range(layers):
        for q in range(n):
            circuit.rx(0.1 * (layer + q + 1), q)
        for q in range(layer % 2, n - 1, 2):
            circuit.cx(q, q + 1)
    circuit.measure_all()
    return circuit


def _check_workload_args(num_jobs: int, min_qubits: int, max_qubits: int) -> list[Family]:
    if num_jobs < 0:
        raise ValidationError(f"num_jobs: must be >= 0, got {num_jobs}")
    if min_qubits < 2:
        raise ValidationError(f"min_qubits: must be >= 2, got {min_qubits}")
    if max_qubits < min_qubits:
        raise ValidationError(
            f"max_qubits: {max_qubits} is below min_qubits={min_qubits}; raise it"
        )
    if max_qubits > MAX_IDEAL_QUBITS:
        raise ValidationError(
            f"max_qubits: {max_qubits} is too wide to compute ideal outputs; use at most "
            f"{MAX_IDEAL_QUBITS}"
        )
    # Never empty: ghz allows every size from 2 to MAX_IDEAL_QUBITS.
    return [f for f in FAMILIES if _family_range(f, min_qubits, max_qubits)[0] > 0]


def _family_range(family: Family, min_qubits: int, max_qubits: int) -> tuple[int, int]:
    """The family's sizes within the asked range; (0, 0) when there are none."""
    lo = max(min_qubits, FAMILY_MIN_QUBITS[family])
    hi = min(max_qubits, FAMILY_MAX_QUBITS[family])
    return (lo, hi) if lo <= hi else (0, 0)


def _spread(count: int, lo: int, hi: int) -> list[int]:
    """``count`` sizes evenly over [lo, hi]: every size once per full lap, else centred."""
    span = hi - lo + 1
    return [lo + ((2 * j + 1) * span) // (2 * count) for j in range(count)]


def _build(
    family: Family, n: int, rng: np.random.Generator
) -> tuple[QuantumCircuit, dict[str, float]]:
    if family == "random":
        return _random(n, rng)
    builders = {"ghz": _ghz, "qft": _qft_peak, "grover": _grover, "qaoa": _qaoa}
    circuit = _measured(builders[family](n, rng))
    return circuit, ideal_distribution(circuit)


def _measured(unitary: QuantumCircuit) -> QuantumCircuit:
    """The circuit with every qubit i measured into clbit i of one register ``c``."""
    n = unitary.num_qubits
    circuit = QuantumCircuit(n)
    circuit.add_register(ClassicalRegister(n, "c"))
    circuit.compose(unitary, qubits=range(n), inplace=True)
    circuit.barrier()
    circuit.measure(range(n), range(n))
    return circuit


def _ghz(n: int, rng: np.random.Generator) -> QuantumCircuit:
    """(|0...0> + |1...1>) / sqrt(2) along a chain, which maps onto heavy-hex paths."""
    del rng  # one GHZ state per size
    circuit = QuantumCircuit(n)
    circuit.h(0)
    for q in range(n - 1):
        circuit.cx(q, q + 1)
    return circuit


def _qft_peak(n: int, rng: np.random.Generator) -> QuantumCircuit:
    """The Fourier state of a random integer k, then an inverse QFT: one peak, at k.

    The inverse QFT is synthesized without its final qubit reversal (3 CNOTs per
    swapped pair saved); the phases are loaded in reversed qubit order to match, so
    the output still reads k in the usual bit order.
    """
    k = int(rng.integers(2**n))
    circuit = QuantumCircuit(n)
    circuit.h(range(n))
    for q in range(n):
        circuit.p(2 * math.pi * k * 2 ** (n - 1 - q) / 2**n, q)
    circuit.compose(synth_qft_full(n, do_swaps=False, inverse=True), inplace=True)
    return circuit


def _grover(n: int, rng: np.random.Generator) -> QuantumCircuit:
    """Search for one random marked bitstring with the optimal number of iterations."""
    marked = int(rng.integers(2**n))
    zeros = [q for q in range(n) if not (marked >> q) & 1]
    oracle = QuantumCircuit(n)
    if zeros:
        oracle.x(zeros)
    oracle.h(n - 1)
    oracle.mcx(list(range(n - 1)), n - 1)  # with the H pair: a phase flip on |1...1>
    oracle.h(n - 1)
    if zeros:
        oracle.x(zeros)
    theta = math.asin(1 / math.sqrt(2**n))
    iterations = max(1, round(math.pi / (4 * theta) - 0.5))
    step = grover_operator(oracle)
    circuit = QuantumCircuit(n)
    circuit.h(range(n))
    for _ in range(iterations):
        circuit.compose(step, inplace=True)
    return circuit


def _qaoa(n: int, rng: np.random.Generator) -> QuantumCircuit:
    """p=1 QAOA for MaxCut: a random 3-regular graph for even n, a ring for odd n."""
    degree = 3 if n % 2 == 0 and n >= 4 else 2
    edges = _random_3_regular(n, rng) if degree == 3 else [(q, (q + 1) % n) for q in range(n)]
    gamma, beta = _QAOA_ANGLES[degree]
    circuit = QuantumCircuit(n)
    circuit.h(range(n))
    for a, b in edges:
        # exp(-i gamma (1 - ZZ)/2) is RZZ(-gamma) up to a global phase.
        circuit.rzz(-gamma, a, b)
    circuit.rx(2 * beta, range(n))
    return circuit


def _random_3_regular(n: int, rng: np.random.Generator) -> list[tuple[int, int]]:
    """A uniformly random simple 3-regular graph on n (even) vertices, by pairing."""
    stubs = np.repeat(np.arange(n), 3)
    for _ in range(_MAX_DRAWS * 10):
        pairs = rng.permutation(stubs).reshape(-1, 2)
        edges = {(int(min(a, b)), int(max(a, b))) for a, b in pairs}
        if len(edges) == len(pairs) and all(a != b for a, b in edges):
            return sorted(edges)
    raise QrtError(f"no simple 3-regular graph on {n} vertices after many draws")


def _random(n: int, rng: np.random.Generator) -> tuple[QuantumCircuit, dict[str, float]]:
    """A shallow random circuit (1- and 2-qubit gates), redrawn if its output is flat."""
    for _ in range(_MAX_DRAWS):
        depth = int(rng.choice(_RANDOM_DEPTHS))
        unitary = random_circuit(n, depth, max_operands=2, seed=int(rng.integers(2**31)))
        circuit = _measured(unitary)
        ideal = ideal_distribution(circuit)
        if max(ideal.values()) >= _RANDOM_MIN_PEAK_RATIO / 2**n:
            return circuit, ideal
    raise QrtError(f"no random {n}-qubit circuit with a peaked output after many draws")
