"""The circuits of the placement benchmark, and their measured fidelity on each device.

Circuits come from ``mqt.bench`` (independent level, with measurements), unrolled into
standard 1- and 2-qubit gates so they travel as OpenQASM text like any user circuit.
Each keeps its noiseless output distribution, so a noisy run's quality is one Hellinger
fidelity away. A fidelity only tells devices apart when the ideal output is far from
uniform, so every instance whose normalized Shannon entropy is above
:data:`MAX_NORMALIZED_ENTROPY` is dropped, and families with parameters try more
seeds until enough instances pass.

Families, and why some are cut or left out:

- ``ghz`` and ``wstate``: 3 to 20 qubits. Shallow and cheap to route; with
  ``vqe_real_amp_r1`` (to 16) the only families above 11 qubits, because from 12 active
  qubits a noisy run is a statevector or matrix-product-state simulation per shot
  (see the size caps below).
- ``ae`` (amplitude estimation): 3 to 11 qubits, several target probabilities.
- ``qpeexact``: 3 to 11 qubits. mqt.bench's ``qft`` acts on ``|0...0>`` and its output is
  exactly uniform, and ``qftentangled`` (QFT of a GHZ state) is near uniform (entropy
  ``1 - 0.44/n``: it passes the cut at 3 and 4 qubits only, and a fully depolarized
  device still scores 0.81 on it). The QFT is represented by both: ``qftentangled``
  where it passes, and ``qpeexact``, whose inverse QFT reads out an exactly
  representable phase (one outcome).
- ``grover``: 3 to 7 qubits. The iterations grow as ``sqrt(2^n)``, each with two
  multi-controlled gates: at 7 qubits every device already scores near the floor.
- ``qaoa``, ``vqe_real_amp``, ``vqe_su2``: 3 to 11 qubits, parameters drawn from a
  seeded generator (mqt.bench binds one fixed draw), several instances per size;
  ``vqe_two_local`` (full entanglement, so deep): 3 to 9 qubits;
  ``vqe_real_amp_r1`` (one repetition: a single CX ladder): 12 to 16 qubits. A noisy
  matrix-product-state run of it takes 3-12 s per device on 2 threads at 14-20
  qubits, and about 30 s on the one thread each worker gets at 20.
- ``graphstate``: left out. Its Z-basis output is exactly uniform, whatever the graph.

Size caps: measured on 2 cores with 2000 shots, a noisy 12- or 13-qubit circuit of
200-300 native 2-qubit gates took 28-100 s as a statevector, and a 14-16 qubit VQE
ansatz 27-51 s as a matrix product state, per device. Deep families stop at 11
qubits, where the device's density-matrix rule still applies (``2^n < 2 x shots``).
A compiled circuit that would still need a per-shot simulation of more than
:data:`MAX_TRAJECTORY_2Q_GATES` native 2-qubit gates is not simulated: it is recorded
as capped and the report counts it.

The noisy measurement (:func:`measure_batch`) compiles with
:func:`qrt_ray.compiler.compile_circuits` and simulates like ``qrt_ray.actors.device.Device``:
one Aer call per simulation method, the method named by
:func:`qrt_ray.aer.sim_method_for`.
"""

from __future__ import annotations

import functools
import hashlib
import json
import math
import multiprocessing
import os
import sys
import time
import warnings
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
from qiskit import QuantumCircuit, transpile
from qiskit.transpiler import Target

from qrt_ray.aer import sim_method_for
from qrt_ray.calibration import load_backend, snapshot_from_backend
from qrt_ray.circuits import to_qasm
from qrt_ray.compiler import compile_circuits, decode_compiled
from qrt_ray.config import load_farm_config
from qrt_ray.fidelity import hellinger_fidelity
from qrt_ray.models import CalibrationSnapshot
from qrt_ray.noise import NoiseModelCache, target_from_snapshot
from qrt_ray.render import Progress
from qrt_ray.workloads import ideal_distribution

MAX_NORMALIZED_ENTROPY = 0.9
# The gates a logical circuit is unrolled into: what users write, all in qelib1 or
# Qiskit's standard library, so the QASM round trip is exact.
LOGICAL_BASIS = ("h", "x", "sx", "rz", "ry", "rx", "u", "cx", "cz", "cp", "rzz", "swap")
SHOTS = 2000
SEED_SIMULATOR = 1234
SEED_TRANSPILER = 7
OPTIMIZATION_LEVEL = 3
MAX_TRAJECTORY_2Q_GATES = 150
# Calibrations carry the backend's own date as taken_at; fixing it keeps ids stable.
CALIBRATION_TAKEN_AT = 0.0


@dataclass(frozen=True, slots=True)
class FamilySpec:
    """How to draw one family's instances from mqt.bench.

    Attributes:
        family: label in the report.
        benchmark: mqt.bench benchmark name.
        sizes: qubit counts.
        instances: instances wanted per size.
        tries: seeds tried per size before giving up on more instances.
        options: mqt.bench keyword options of instance ``k``.
        seeded_parameters: bind the circuit's parameters from
            ``default_rng(parameter_seed_base + k)`` instead of mqt.bench's single
            fixed draw.
        parameter_seed_base: offsets the parameter seeds, so two families built from
            similar gates do not share angles.
    """

    family: str
    benchmark: str
    sizes: range
    instances: int = 1
    tries: int = 1
    options: Callable[[int], dict[str, Any]] = field(default=lambda k: {})
    seeded_parameters: bool = False
    parameter_seed_base: int = 0


AE_PROBABILITIES = (0.2, 0.1, 0.3, 0.4, 0.15)

FAMILIES: tuple[FamilySpec, ...] = (
    FamilySpec("ghz", "ghz", range(3, 21)),
    FamilySpec("wstate", "wstate", range(3, 21)),
    FamilySpec(
        "ae", "ae", range(3, 12), instances=4, tries=5,
        options=lambda k: {"probability": AE_PROBABILITIES[k]},
    ),
    FamilySpec("qpeexact", "qpeexact", range(3, 12)),
    FamilySpec("qftentangled", "qftentangled", range(3, 12)),
    FamilySpec("grover", "grover", range(3, 8)),
    FamilySpec(
        "qaoa", "qaoa", range(3, 12), instances=4, tries=16,
        options=lambda k: {"seed": k}, seeded_parameters=True,
    ),
    FamilySpec("vqe_real_amp", "vqe_real_amp", range(3, 12), 4, 16, seeded_parameters=True),
    FamilySpec(
        "vqe_real_amp_r1", "vqe_real_amp", range(12, 17), 1, 4,
        options=lambda k: {"reps": 1}, seeded_parameters=True, parameter_seed_base=100,
    ),
    FamilySpec(
        "vqe_su2", "vqe_su2", range(3, 12), 4, 16,
        seeded_parameters=True, parameter_seed_base=200,
    ),
    FamilySpec(
        "vqe_two_local", "vqe_two_local", range(3, 10), 2, 16,
        seeded_parameters=True, parameter_seed_base=300,
    ),
)  # fmt: skip
LEFT_OUT = {"graphstate": "Z-basis output exactly uniform for every graph"}


@dataclass(frozen=True, slots=True)
class SuiteCircuit:
    """One benchmark circuit with its noiseless answer.

    Attributes:
        name: unique, e.g. ``"qaoa-07-s3"`` (family, qubits, instance seed).
        family: family label.
        num_qubits: logical qubits.
        circuit: the logical circuit, unrolled to :data:`LOGICAL_BASIS`, measured.
        qasm: the circuit as OpenQASM text (what compile_circuits takes).
        ideal: noiseless output distribution.
        entropy: normalized Shannon entropy of ``ideal`` (0 = one outcome, 1 = uniform).
    """

    name: str
    family: str
    num_qubits: int
    circuit: QuantumCircuit
    qasm: str
    ideal: dict[str, float]
    entropy: float

    @property
    def key(self) -> str:
        """Name plus a hash of the QASM: a changed circuit never reuses a cached result."""
        return f"{self.name}@{hashlib.sha256(self.qasm.encode()).hexdigest()[:10]}"


@dataclass(slots=True)
class SuiteReport:
    """The suite and what building it dropped."""

    circuits: list[SuiteCircuit]
    dropped: dict[str, int]
    left_out: dict[str, str]


def normalized_entropy(distribution: Mapping[str, float]) -> float:
    """Shannon entropy of ``distribution`` divided by its number of bits, in [0, 1]."""
    bits = len(next(iter(distribution)))
    entropy = -math.fsum(p * math.log2(p) for p in distribution.values() if p > 0)
    return max(0.0, entropy / bits) if bits else 0.0


def build_suite() -> SuiteReport:
    """Every family's instances that pass the entropy cut, in a fixed order.

    Deterministic: mqt.bench's generators are seeded, and so are the parameters.
    """
    circuits: list[SuiteCircuit] = []
    dropped: dict[str, int] = {}
    for spec in FAMILIES:
        for n in spec.sizes:
            kept, rejected = _instances(spec, n)
            circuits.extend(kept)
            dropped[spec.family] = dropped.get(spec.family, 0) + rejected
    return SuiteReport(circuits, dropped, dict(LEFT_OUT))


def _instances(spec: FamilySpec, n: int) -> tuple[list[SuiteCircuit], int]:
    """Up to ``spec.instances`` passing instances of ``n`` qubits, and how many failed."""
    kept: list[SuiteCircuit] = []
    rejected = 0
    for k in range(spec.tries):
        if len(kept) == spec.instances:
            break
        candidate = _make(spec, n, k)
        if candidate.entropy <= MAX_NORMALIZED_ENTROPY:
            kept.append(candidate)
        else:
            rejected += 1
    return kept, rejected


def _make(spec: FamilySpec, n: int, k: int) -> SuiteCircuit:
    from mqt.bench import BenchmarkLevel, get_benchmark

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        raw = get_benchmark(
            spec.benchmark,
            BenchmarkLevel.INDEP,
            n,
            random_parameters=not spec.seeded_parameters,
            **spec.options(k),
        )
    if spec.seeded_parameters:
        rng = np.random.default_rng(spec.parameter_seed_base + k)
        angles = rng.uniform(0, 2 * np.pi, raw.num_parameters)
        raw = raw.assign_parameters(angles)
    if not any(inst.operation.name == "measure" for inst in raw.data):
        raw.measure_all()  # mqt.bench's qaoa comes without measurements
    logical = transpile(raw, basis_gates=list(LOGICAL_BASIS), optimization_level=0)
    logical.name = f"{spec.family}-{n:02d}" + (f"-s{k}" if spec.tries > 1 else "")
    ideal = ideal_distribution(logical)
    return SuiteCircuit(
        name=logical.name,
        family=spec.family,
        num_qubits=n,
        circuit=logical,
        qasm=to_qasm(logical),
        ideal=ideal,
        entropy=normalized_entropy(ideal),
    )


def spread_subset(circuits: Sequence[SuiteCircuit], count: int) -> list[SuiteCircuit]:
    """``count`` circuits evenly spaced through ``circuits`` (all families, all sizes)."""
    if count >= len(circuits):
        return list(circuits)
    step = len(circuits) / count
    return [circuits[int(i * step)] for i in range(count)]


# == the farm =========================================================================


@dataclass(frozen=True, slots=True)
class FarmDevice:
    """One device of the default farm as the benchmark sees it."""

    name: str
    backend: str
    num_qubits: int
    calibration: CalibrationSnapshot


def farm_devices() -> list[FarmDevice]:
    """The default farm's devices with their calibrations, smallest first."""
    out = []
    for config in load_farm_config().devices:
        backend = load_backend(config.backend)
        snapshot = snapshot_from_backend(config.name, backend, taken_at=CALIBRATION_TAKEN_AT)
        out.append(FarmDevice(config.name, config.backend, snapshot.num_qubits, snapshot))
    return sorted(out, key=lambda d: (d.num_qubits, d.name))


# == noisy measurement (runs in worker processes) =====================================


@dataclass(frozen=True, slots=True)
class MeasureTask:
    """Circuits to compile and run on one device; all plain data, cheap to send.

    Attributes:
        device: farm device name.
        backend: its fake backend class.
        keys: cache key of each circuit's measurement.
        qasm: each circuit's OpenQASM text.
        ideals: each circuit's noiseless distribution.
        layouts: each circuit's initial layout, or None for the compiler's own.
        expected: placement's ESP for each layout, which lets the compiler replace a
            layout that needs SWAPs as the scheduler does (empty: layouts are kept).
    """

    device: str
    backend: str
    keys: tuple[str, ...]
    qasm: tuple[str, ...]
    ideals: tuple[dict[str, float], ...]
    layouts: tuple[tuple[int, ...] | None, ...]
    expected: tuple[float | None, ...] = ()


@functools.cache
def device_context(device: str, backend_name: str) -> tuple[CalibrationSnapshot, Target]:
    """(calibration, transpiler target) of a farm device, built once per process."""
    backend = load_backend(backend_name)
    calibration = snapshot_from_backend(device, backend, taken_at=CALIBRATION_TAKEN_AT)
    return calibration, target_from_snapshot(calibration, backend.target)


@functools.cache
def _simulator(device: str, backend_name: str) -> Any:
    calibration, _ = device_context(device, backend_name)
    base_target = load_backend(backend_name).target
    # One thread: the benchmark runs one worker process per core.
    simulator, _, _ = _NOISE.get(calibration, base_target, gpu="never", max_parallel_threads=1)
    return simulator


_NOISE = NoiseModelCache(max_entries=8)


def measure_batch(task: MeasureTask) -> dict[str, dict[str, Any]]:
    """Compile (level 3) and run a task's circuits; one record per cache key.

    A record holds ``fidelity`` (None when capped), ``method``, ``active_qubits``,
    ``two_qubit_gates``, ``compile_s``, ``sim_s`` and ``capped``.
    """
    calibration, target = device_context(task.device, task.backend)
    simulator = _simulator(task.device, task.backend)
    layouts = list(task.layouts) if any(task.layouts) else None
    compiled = compile_circuits(
        list(task.qasm),
        target,
        device=task.device,
        calibration_id=calibration.calibration_id,
        optimization_level=OPTIMIZATION_LEVEL,
        seed_transpiler=SEED_TRANSPILER,
        initial_layouts=layouts,
        placement_esp=list(task.expected) if task.expected and layouts else None,
    )
    records: dict[str, dict[str, Any]] = {}
    groups: dict[str, list[int]] = {}
    for i, item in enumerate(compiled):
        if item.payload is None or item.info is None:
            raise RuntimeError(f"{task.keys[i]} failed to compile on {task.device}: {item.error}")
        method = sim_method_for(item.active_qubits, SHOTS)
        records[task.keys[i]] = _record(item, method)
        if records[task.keys[i]]["capped"]:
            continue
        groups.setdefault(method, []).append(i)
    for method, members in groups.items():
        _run_group(simulator, method, [compiled[i] for i in members], task, members, records)
    return records


def gave_up(task: MeasureTask) -> dict[str, dict[str, Any]]:
    """Records for a measurement task given up as stalled: no fidelity, like a cap."""
    return {
        key: {"fidelity": None, "method": "gave up (stalled)", "capped": True, "sim_s": None}
        for key in task.keys
    }


def _record(item: Any, method: str) -> dict[str, Any]:
    per_shot = method != "density_matrix"
    return {
        "fidelity": None,
        "method": method,
        "active_qubits": item.active_qubits,
        "two_qubit_gates": item.info.two_qubit_gates,
        "compile_s": round(item.info.compile_s, 4),
        "sim_s": None,
        "capped": per_shot and item.info.two_qubit_gates > MAX_TRAJECTORY_2Q_GATES,
    }


def _run_group(
    simulator: Any,
    method: str,
    items: list[Any],
    task: MeasureTask,
    members: list[int],
    records: dict[str, dict[str, Any]],
) -> None:
    """One Aer call for circuits of one method (never mixed: see ``sim_method_for``)."""
    circuits = decode_compiled([item.payload for item in items])
    start = time.perf_counter()
    result = simulator.run(
        circuits, shots=SHOTS, seed_simulator=SEED_SIMULATOR, method=method
    ).result()
    per_circuit_s = (time.perf_counter() - start) / len(circuits)
    for position, i in enumerate(members):
        counts = result.get_counts(position)
        record = records[task.keys[i]]
        record["fidelity"] = hellinger_fidelity(counts, task.ideals[i])
        record["sim_s"] = round(per_circuit_s, 4)


def chunked(tasks: Sequence[Any], size: int) -> Iterator[list[Any]]:
    """Consecutive slices of ``tasks`` of at most ``size`` items."""
    for start in range(0, len(tasks), size):
        yield list(tasks[start : start + size])


# == the measurement cache and the worker pool ========================================


class ResultCache:
    """Measurements kept in one JSON file, so a re-run only measures what is missing.

    Keys name the circuit (name and QASM hash), device, calibration id and what was
    measured; the file also records the settings, and a file written under other
    settings is ignored.
    """

    def __init__(self, path: Path, settings: Mapping[str, Any]) -> None:
        """Open (or start) the cache at ``path`` for these measurement ``settings``."""
        self.path = path
        self.settings = dict(settings)
        self.entries: dict[str, dict[str, Any]] = {}
        if path.exists():
            try:
                stored = json.loads(path.read_text())
            except (OSError, json.JSONDecodeError):
                stored = {}
            if stored.get("settings") == self.settings:
                self.entries = stored.get("entries", {})

    def __contains__(self, key: str) -> bool:
        return key in self.entries

    def __getitem__(self, key: str) -> dict[str, Any]:
        return self.entries[key]

    def update(self, records: Mapping[str, dict[str, Any]]) -> None:
        """Add records and write the file (atomically: a killed run loses nothing stored)."""
        self.entries.update(records)
        self.path.parent.mkdir(parents=True, exist_ok=True)
        scratch = self.path.with_suffix(".tmp")
        scratch.write_text(json.dumps({"settings": self.settings, "entries": self.entries}))
        os.replace(scratch, self.path)


def run_tasks(
    worker: Callable[[Any], dict[str, dict[str, Any]]],
    tasks: Sequence[Any],
    cache: ResultCache,
    *,
    processes: int,
    label: str,
    stall_s: float | None = None,
    abandoned: Callable[[Any], dict[str, dict[str, Any]]] | None = None,
) -> float:
    """Run ``worker`` over ``tasks`` in ``processes`` processes, storing each result.

    Processes are spawned, not forked: a fork after Aer's OpenMP threads have run can
    deadlock the child. With ``stall_s``, when no task has finished for that long,
    the tasks still running are given up (their workers are killed) and
    ``abandoned(task)``'s records are kept for this run only, never cached, so a
    later run tries them again. Returns the wall seconds taken.
    """
    start = time.perf_counter()
    progress = Progress(len(tasks), label)
    if not tasks:
        progress.close("(all cached)")
        return 0.0
    if processes <= 1 and stall_s is None:
        for done, task in enumerate(tasks, 1):
            cache.update(worker(task))
            progress.update(done)
    else:
        context = multiprocessing.get_context("spawn")
        pool = context.Pool(max(1, processes))
        try:
            pending = {i: pool.apply_async(worker, (task,)) for i, task in enumerate(tasks)}
            last = time.monotonic()
            while pending:
                finished = [i for i, r in pending.items() if r.ready()]
                for i in finished:
                    cache.update(pending.pop(i).get())
                    last = time.monotonic()
                    progress.update(len(tasks) - len(pending))
                if stall_s is not None and time.monotonic() - last > stall_s:
                    for i in pending:
                        records = abandoned(tasks[i]) if abandoned else {}
                        cache.entries.update(records)  # this run only: not written
                    print(
                        f"{label}: gave up {len(pending)} task(s) after {stall_s:.0f} s "
                        "without progress",
                        file=sys.stderr,
                    )
                    break
                if not finished:
                    time.sleep(0.2)
        finally:
            pool.terminate()
            pool.join()
    elapsed = time.perf_counter() - start
    progress.close()
    return elapsed
