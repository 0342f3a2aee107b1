"""Running circuits on Aer: which method, with which options, one call at a time where
Aer needs it. Everything that calls Aer's simulator (devices, canaries, the benchmarks'
checks) goes through here.
"""

from __future__ import annotations

import functools
import threading
from collections.abc import Sequence
from typing import Any

from qrt_ray.noise import restricted_for

# Above this many active qubits a noisy statevector run costs 2^n per shot (one
# trajectory each): a 19-qubit GHZ took 67 s for 500 shots, against 1.3 s as a matrix
# product state.
MPS_MIN_ACTIVE_QUBITS = 14
# Below MPS, a density matrix costs about 4^n once and a noisy statevector about
# 2.2 x 2^n per shot (measured on 10-12 qubits), so the density matrix wins while
# 2^n < 2 x shots; above 12 qubits it would hold 256 MB or more per circuit.
DM_SHOTS_FACTOR = 2
DM_MAX_ACTIVE_QUBITS = 12


def sim_method_for(active_qubits: int, shots: int) -> str:
    """The simulation method for a job whose widest circuit touches ``active_qubits``
    qubits (a 5-qubit job on a 133-qubit device touches 5), run for ``shots``.

    The device always names the method and never lets Aer choose per circuit: with
    qiskit-aer 0.18.2, one ``run`` call whose list holds a non-Clifford circuit that
    Aer simulates as a statevector before one it simulates as a density matrix returns
    wrong counts for the latter (its gates seem not applied: the counts peak at
    0...0). Every call therefore holds circuits of one method only.
    """
    if active_qubits >= MPS_MIN_ACTIVE_QUBITS:
        return "matrix_product_state"
    if active_qubits <= DM_MAX_ACTIVE_QUBITS and 2**active_qubits < DM_SHOTS_FACTOR * shots:
        return "density_matrix"
    return "statevector"


# Matrix-product-state runs call the OpenBLAS 0.3.15 that qiskit-aer 0.18.2 bundles,
# which crashed device actors in LAPACK's ``zlarf`` (SIGSEGV): first with two circuits
# of one call side by side, then, with those one at a time, twice more in one 37-pair
# accuracy run, where Aer still ran each circuit's noisy shots on two threads (its
# metadata said ``parallel_shots: 2``) and a device thread could start a second MPS
# call (readout calibration, canaries). So each MPS call runs single-threaded
# (`method_options`) and every MPS call in a process takes this lock (`simulate`).
_MPS_LOCK = threading.Lock()


def touched_qubits(circuits: Sequence[Any]) -> frozenset[int]:
    """The qubits (indices) any instruction of ``circuits`` acts on, barriers aside."""
    out: set[int] = set()
    for circuit in circuits:
        index = {bit: i for i, bit in enumerate(circuit.qubits)}
        for inst in circuit.data:
            if inst.name != "barrier":
                out.update(index[q] for q in inst.qubits)
    return frozenset(out)


def simulate(
    sim: Any, circuits: Any, *, qubits: frozenset[int] | None = None, **options: Any
) -> Any:
    """``sim.run(circuits, **options).result()``; matrix-product-state calls one at a
    time per process (see ``_MPS_LOCK``).

    The noise model handed to Aer holds only the errors on the qubits the circuits
    touch (``qubits`` when the caller knows them; see
    :func:`qrt_ray.noise.restricted_noise_model`).
    """
    model = getattr(getattr(sim, "options", None), "noise_model", None)
    if model is not None and "noise_model" not in options:
        touched = qubits if qubits is not None else touched_qubits(circuits)
        options["noise_model"] = restricted_for(model, touched)
    if options.get("method") == "matrix_product_state":
        with _MPS_LOCK:
            return sim.run(circuits, **options).result()
    return sim.run(circuits, **options).result()


# Aer fuses neighbouring gates into one matrix only on 14 qubits or more by default.
# Below that, fusing measured 1.35-2.8x faster for noisy statevector runs (6-13 qubits,
# EfficientSU2 circuits on guadalupe noise, 300 shots) and 1.2-1.9x for density
# matrices of 6 and 7 qubits, but 0.84-1.1x at 8 and 9 (a fused superoperator on 4^n
# entries costs more than the gates it replaces) and within 0.9-1.1x at 3 to 5. The
# sampled distributions agree with unfused runs to within shot noise.
DM_FUSION_QUBITS = range(6, 8)


def method_options(method: str | None, active_qubits: int = 0) -> dict[str, Any]:
    """Options of a simulator call that names ``method`` (None: the simulator's own)
    for circuits touching ``active_qubits`` qubits.

    Matrix-product-state calls run on one thread: one circuit at a time, its shots one
    after another (the simulator otherwise runs circuits and shots side by side, see
    ``qrt_ray.noise``), because LAPACK calls at once crashed device actors (see
    ``_MPS_LOCK``). A 16- and a 20-qubit GHZ on kolkata, 1,024 shots each: 5.4 s a
    pair instead of 3.6 s. Statevector calls, and density-matrix calls on
    ``DM_FUSION_QUBITS``, fuse gates at any width.
    """
    if method is None:
        return {}
    if method == "matrix_product_state":
        return {"method": method, "max_parallel_experiments": 1, "max_parallel_shots": 1}
    if method == "statevector" or (
        method == "density_matrix" and active_qubits in DM_FUSION_QUBITS
    ):
        return {"method": method, "fusion_threshold": 1}
    return {"method": method}


def counts_of(result: Any, index: int, label: int | None = None) -> dict[str, int]:
    """Counts of circuit ``index`` of a simulator result, or a RuntimeError that says
    why it did not run (not "no counts for experiment 0"); ``label`` names the circuit
    in the message (default ``index``).

    The keys are Qiskit's (``Result.get_counts``): bits zero-padded to the circuit's
    classical bits, registers apart by spaces, the last register first. They are
    written here from Aer's hexadecimal keys, each distinct key once: Qiskit's own
    conversion took about a quarter of a device's Python time a job.
    """
    r = result.results[index]
    if not r.success:
        name = index if label is None else label
        raise RuntimeError(f"circuit {name} of the call did not run: {r.status}")
    raw = getattr(r.data, "counts", None)
    header = r.header
    if (
        not isinstance(raw, dict)
        or not isinstance(header, dict)
        or not all(isinstance(k, str) and k.startswith("0x") for k in raw)
    ):
        return dict(result.get_counts(index))
    slots = int(header.get("memory_slots") or 0)
    # registers are told apart only when the circuit's bits are known, as in Qiskit
    sizes = tuple(int(size) for _, size in header.get("creg_sizes") or ()) if slots else ()
    return {_bitstring(key, slots, sizes): int(n) for key, n in raw.items()}


@functools.lru_cache(maxsize=8192)
def _bitstring(key: str, slots: int, sizes: tuple[int, ...]) -> str:
    """A count key as Qiskit writes it (see :func:`counts_of`), from Aer's ``0x`` key."""
    bits = bin(int(key, 16))[2:].rjust(slots, "0")
    if not sizes:
        return bits
    parts = []
    start = 0
    for size in reversed(sizes):
        parts.append(bits[start : start + size])
        start += size
    return " ".join(parts)
