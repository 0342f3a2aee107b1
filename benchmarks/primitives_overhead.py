"""What the primitives cost: qrt's Sampler and Estimator beside the peers, in one run.

1. Sampler throughput: qrt's ``Sampler`` (circuits compiled by the farm, durable jobs)
   against ``qiskit_aer.primitives.SamplerV2`` on the same circuits and the same noise
   model (transpile included, as a user of it must transpile), over ``--repeats``
   rounds of circuits qrt has not compiled before, the sides in alternating order.
   Target: throughput ratio >= 0.8 (the median rows).
2. A level-2 Estimator job of 50 PUBs (readout mitigation, measurement and gate
   twirling, ZNE at noise factors 1/3/5) against a serial hand-written script doing
   readout mitigation (mthree) and ZNE (folding + Richardson) with plain Aer, one
   circuit at a time. Target: qrt >= 1.5x faster on 2 cores.
3. Readout mitigation time: qrt's solver against mthree on the same counts and
   calibration at 10, 20 and 40 qubits (best of several warm runs).

Prints times and ratios; asserts nothing (machines are shared and noisy).

    pip install -e ".[bench]"
    python benchmarks/primitives_overhead.py                 # about 10 minutes
    python benchmarks/primitives_overhead.py --pubs 10 --circuits 40   # a quick look
"""

from __future__ import annotations

import argparse
import os
import tempfile
import time
import warnings
from collections import Counter

os.environ.setdefault("RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER", "0")
os.environ.setdefault("RAY_AUTH_MODE", "token")

import mthree
import numpy as np
from qiskit import ClassicalRegister, QuantumCircuit, transpile
from qiskit.circuit import pauli_twirl_2q_gates
from qiskit.circuit.random import random_circuit
from qiskit.quantum_info import SparsePauliOp
from qiskit_aer.primitives import SamplerV2 as AerSampler

from qrt_ray import QuantumRuntime
from qrt_ray.calibration import load_backend, snapshot_from_backend
from qrt_ray.config import load_farm_config_text
from qrt_ray.mitigation.observables import group_paulis
from qrt_ray.mitigation.readout import mitigate_counts
from qrt_ray.mitigation.twirling import merge_counts
from qrt_ray.mitigation.zne import extrapolate, fold_gates
from qrt_ray.noise import make_simulator
from qrt_ray.primitives import Estimator, Sampler
from qrt_ray.render import table

warnings.filterwarnings("ignore", category=DeprecationWarning)
warnings.filterwarnings("ignore", category=UserWarning)

BACKEND = "FakeGuadalupeV2"


def _sampler_circuits(count: int, first_seed: int = 0) -> list[QuantumCircuit]:
    out = []
    for seed in range(first_seed, first_seed + count):
        qc = random_circuit(5, 6, max_operands=2, seed=seed)
        qc.measure_all()
        out.append(qc)
    return out


def _ansatz(n: int, rng: np.random.Generator) -> QuantumCircuit:
    qc = QuantumCircuit(n)
    for layer in range(2):
        for q in range(n):
            qc.ry(rng.uniform(0, np.pi), q)
        for q in range(layer % 2, n - 1, 2):
            qc.cx(q, q + 1)
    return qc


def _ising(n: int) -> SparsePauliOp:
    terms = [("I" * (n - 2 - i) + "ZZ" + "I" * i, 1.0) for i in range(n - 1)]
    terms += [("I" * (n - 1 - i) + "X" + "I" * i, 0.5) for i in range(n)]
    return SparsePauliOp.from_list(terms)


# -- 1. sampler -----------------------------------------------------------------------


def sampler_throughput(  # type: ignore[no-untyped-def]
    rt: QuantumRuntime, sim, circuits, shots: int, seed: int | None, qrt_first: bool = False
) -> tuple[float, float]:
    """Seconds for (Aer SamplerV2 incl. transpile, qrt Sampler), run in either order."""

    def aer_side() -> float:
        aer = AerSampler.from_backend(sim, default_shots=shots, seed=seed)
        start = time.perf_counter()
        isa = transpile(circuits, target=sim.target, optimization_level=1, seed_transpiler=1)
        result = aer.run(isa).result()
        took = time.perf_counter() - start
        assert sum(result[0].data.meas.get_counts().values()) == shots
        return took

    def qrt_side() -> float:
        options = {"default_shots": shots, "seed_simulator": seed}
        qrt = Sampler(mode=rt.backend("dev"), options=options)
        start = time.perf_counter()
        got = qrt.run(circuits).result()
        took = time.perf_counter() - start
        assert sum(got[0].data.meas.get_counts().values()) == shots
        return took

    if qrt_first:
        qrt_s = qrt_side()
        return aer_side(), qrt_s
    return aer_side(), qrt_side()


SAMPLER_HEADER = [
    "sampler: circuits x 1000 shots",
    "round",
    "Aer SamplerV2 s",
    "qrt Sampler s",
    "throughput ratio (target >= 0.8)",
]


def sampler_rows(rt, sim, count: int, repeats: int) -> list[list[object]]:  # type: ignore[no-untyped-def]
    """Rounds of (unseeded, seeded) runs on circuits qrt has not compiled before, the
    two sides in alternating order, then a rerun of the last round's circuits (qrt's
    compile cache holds them; Aer transpiles them again, as a user of it must). The
    median rows summarise the rounds: one noisy run on a shared machine says little."""
    rows: list[list[object]] = []
    ratios: dict[str, list[float]] = {"unseeded": [], "seeded": []}
    circuits: list[QuantumCircuit] = []
    for r in range(repeats):
        for k, (label, seed) in enumerate((("unseeded", None), ("seeded", 1))):
            circuits = _sampler_circuits(count, (2 * r + k) * count)
            aer_s, qrt_s = sampler_throughput(rt, sim, circuits, 1000, seed, qrt_first=r % 2 == 1)
            ratios[label].append(aer_s / qrt_s)
            rows.append([count, f"{r + 1}: {label}", aer_s, qrt_s, aer_s / qrt_s])
    for label, got in ratios.items():
        rows.append([count, f"median, {label}", "", "", float(np.median(got))])
    aer_s, qrt_s = sampler_throughput(rt, sim, circuits, 1000, 1)
    rows.append([count, "rerun (compiled before)", aer_s, qrt_s, aer_s / qrt_s])
    return rows


# -- 2. level-2 estimator against a serial script ---------------------------------------


def serial_script(sim, pubs, shots: int, cal_shots: int, twirls: int = 0) -> list[float]:  # type: ignore[no-untyped-def]
    """What a user writes by hand: per PUB, fold, transpile, run, mthree, extrapolate.

    With ``twirls``, each circuit runs as that many copies in one simulator call: its
    2-qubit gates Pauli-twirled by Qiskit's ``pauli_twirl_2q_gates`` and its measured
    bits flipped in complementary pairs (undone in the counts), the work level 2 does.
    """
    target = sim.target
    mats: dict[int, np.ndarray] = {}
    values = []
    rng = np.random.default_rng(0)
    for circuit, op in pubs:
        coeffs = dict(zip(op.paulis.to_labels(), op.coeffs.real, strict=True))
        per_factor = []
        for factor in (1.0, 3.0, 5.0):
            folded, _ = fold_gates(circuit, factor, rng)
            value = 0.0
            for basis, labels in group_paulis(coeffs):
                qc = basis.rotate(folded)
                qc.add_register(ClassicalRegister(len(basis.qubits), "m"))
                qc.measure(list(basis.qubits), qc.cregs[-1])
                isa = transpile(qc, target=target, optimization_level=1, seed_transpiler=1)
                if twirls:
                    counts = _run_twirled_by_hand(sim, isa, shots // 3, twirls, rng)
                else:
                    counts = sim.run(isa, shots=shots // 3).result().get_counts()
                physical = [
                    isa.find_bit(i.qubits[0]).index
                    for i in sorted(
                        (i for i in isa.data if i.operation.name == "measure"),
                        key=lambda i: isa.find_bit(i.clbits[0]).index,
                    )
                ]
                for q in physical:
                    if q not in mats:
                        mats[q] = _measure_matrix(sim, q, cal_shots)
                m3 = mthree.M3Mitigation(None)
                m3.cals_from_matrices([mats[q] for q in physical])
                quasi = m3.apply_correction(counts, list(range(len(physical))))
                n = len(physical)
                for lab in labels:
                    mask = basis.mask(lab)
                    ops = "".join("Z" if mask >> (n - 1 - k) & 1 else "I" for k in range(n))
                    value += coeffs[lab] * quasi.expval(ops)
            per_factor.append(value)
        values.append(extrapolate([1, 3, 5], per_factor, [0.0] * 3, "richardson").value)
    return values


def _run_twirled_by_hand(sim, isa, shots: int, copies: int, rng) -> dict[str, int]:  # type: ignore[no-untyped-def]
    twirled = pauli_twirl_2q_gates(
        isa, num_twirls=copies, target=sim.target, seed=int(rng.integers(2**32))
    )
    runs, flips = [], []
    for j, copy in enumerate(twirled):
        if j % 2 == 0:
            mask = int(rng.integers(2**isa.num_clbits))
        else:
            mask ^= (1 << isa.num_clbits) - 1  # the complement of the previous copy's
        flipped = copy.copy_empty_like()
        for inst in copy.data:
            if inst.operation.name == "measure":
                bit = copy.find_bit(inst.clbits[0]).index
                if mask >> bit & 1:
                    flipped.x(inst.qubits[0])
            flipped.append(inst)
        runs.append(flipped)
        flips.append(mask)
    result = sim.run(runs, shots=max(1, shots // copies)).result()
    return merge_counts([(result.get_counts(k), flips[k]) for k in range(copies)])


def _measure_matrix(sim, qubit: int, shots: int) -> np.ndarray:  # type: ignore[no-untyped-def]
    mat = np.zeros((2, 2))
    for prep in (0, 1):
        qc = QuantumCircuit(sim.target.num_qubits, 1)
        if prep:
            qc.x(qubit)
        qc.measure(qubit, 0)
        counts = sim.run(qc, shots=shots).result().get_counts()
        p1 = counts.get("1", 0) / shots
        mat[:, prep] = [1 - p1, p1]
    return mat


# -- 3. readout mitigation time --------------------------------------------------------


def readout_times(n: int, shots: int, repeats: int) -> tuple[float, float, int]:
    """Best warm seconds of (qrt, mthree) on one GHZ-like count set; unique strings."""
    rng = np.random.default_rng(n)
    p01, p10 = rng.uniform(0.005, 0.04, n), rng.uniform(0.01, 0.06, n)
    ideal = rng.integers(0, 2, shots)[:, None].repeat(n, 1)
    flips = np.where(ideal == 0, rng.random((shots, n)) < p01, rng.random((shots, n)) < p10)
    counts = dict(Counter("".join(map(str, row[::-1])) for row in ideal ^ flips))
    m3 = mthree.M3Mitigation(None)
    m3.cals_from_matrices(
        [np.array([[1 - a, b], [a, 1 - b]]) for a, b in zip(p01, p10, strict=True)]
    )
    ours, theirs = [], []
    for _ in range(repeats):
        start = time.perf_counter()
        mitigate_counts(counts, p01, p10)
        ours.append(time.perf_counter() - start)
        start = time.perf_counter()
        m3.apply_correction(counts, list(range(n)))
        theirs.append(time.perf_counter() - start)
    return min(ours), min(theirs), len(counts)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--circuits", type=int, default=200, help="sampler circuits")
    parser.add_argument("--pubs", type=int, default=50, help="estimator PUBs")
    parser.add_argument("--shots", type=int, default=4096)
    parser.add_argument(
        "--repeats", type=int, default=5, help="sampler rounds, each on circuits new to qrt"
    )
    parser.add_argument(
        "--sections",
        nargs="+",
        choices=("sampler", "estimator", "readout"),
        default=("sampler", "estimator", "readout"),
        help="which comparisons to run (default: all)",
    )
    args = parser.parse_args()
    if args.repeats < 1:
        parser.error(f"--repeats={args.repeats}: give 1 or more rounds")

    backend = load_backend(BACKEND)
    snapshot = snapshot_from_backend("dev", backend, taken_at=time.time())
    sim, _, _ = make_simulator(snapshot, backend.target, gpu="never")
    farm = load_farm_config_text(
        f"name: overhead\ndevices:\n  - {{name: dev, backend: {BACKEND}, gpu: never, "
        "price_per_shot_usd: 0.00001, price_per_job_usd: 0.01}\n"
    )
    rng = np.random.default_rng(4)
    pubs = [(_ansatz(6, rng), _ising(6)) for _ in range(args.pubs)]
    with (
        tempfile.TemporaryDirectory() as tmp,
        QuantumRuntime.local(farm, store=f"{tmp}/jobs.sqlite3") as rt,
    ):
        # warm the farm (compile workers, noise model) so neither side pays start-up
        Sampler(mode=rt.backend("dev")).run(_sampler_circuits(4, 10**6), shots=100).result()
        if "sampler" in args.sections:
            print(table(SAMPLER_HEADER, sampler_rows(rt, sim, args.circuits, args.repeats)))
            print()
        if "estimator" in args.sections:
            timings = estimator_runs(rt, pubs, args.shots)
    if "estimator" in args.sections:
        print(table(ESTIMATOR_HEADER, estimator_rows(sim, pubs, args.shots, timings)))
        print()
    if "readout" in args.sections:
        rows = []
        for n in (10, 20, 40):
            ours, theirs, unique = readout_times(n, 8000, 5)
            rows.append([n, unique, theirs * 1e3, ours * 1e3, theirs / ours])
        headers = ["readout: qubits", "unique strings", "mthree ms", "qrt ms", "qrt speedup"]
        print(table(headers, rows))


def estimator_runs(rt, pubs, shots: int) -> dict[bool, tuple[float, object, int]]:  # type: ignore[no-untyped-def]
    """qrt's level-2 Estimator with twirling off and on: (seconds, result, copies)."""
    out = {}
    for twirl in (False, True):
        est = Estimator(
            mode=rt.backend("dev"),
            options={"resilience_level": 2, "default_shots": shots // 3},
        )
        est.options.twirling.enable_gates = twirl
        est.options.twirling.enable_measure = twirl
        start = time.perf_counter()
        result = est.run(pubs).result()
        seconds = time.perf_counter() - start
        out[twirl] = (seconds, result, int(result[0].qrt["mitigation"]["num_randomizations"]))
    return out


def estimator_rows(sim, pubs, shots: int, timings) -> list[list[object]]:  # type: ignore[no-untyped-def]
    """Each qrt run beside the serial script doing the same work (run after the farm
    is down, so that it has the machine to itself)."""
    rows: list[list[object]] = []
    for twirl, (qrt_s, result, copies) in timings.items():
        start = time.perf_counter()
        serial = serial_script(sim, pubs, shots, 4000, copies if twirl else 0)
        serial_s = time.perf_counter() - start
        diff = float(
            np.mean([abs(float(r.data.evs) - v) for r, v in zip(result, serial, strict=True)])
        )
        label = f"level 2, {copies} twirled copies" if twirl else "level 2, twirling off"
        circuits = sum(r.qrt["circuits"] for r in result)
        rows.append([label, len(pubs), circuits, serial_s, qrt_s, serial_s / qrt_s, diff])
    return rows


ESTIMATOR_HEADER = [
    "estimator",
    "PUBs",
    "circuits",
    "serial script s",
    "qrt s",
    "speedup (target >= 1.5)",
    "mean |qrt - serial|",
]

if __name__ == "__main__":
    main()
