"""Noise models and simulators built from calibration snapshots."""

from __future__ import annotations

import dataclasses
import gc
import os
import pickle

import pytest
from qiskit import QuantumCircuit, transpile
from qiskit.quantum_info import hellinger_fidelity
from qiskit.transpiler import Target
from qiskit_aer import AerSimulator
from qiskit_aer.noise import NoiseModel, ReadoutError

import qrt_ray.noise as noise
from qrt_ray.calibration import load_backend, snapshot_from_backend, with_recomputed_id
from qrt_ray.errors import DeviceUnavailableError, ValidationError
from qrt_ray.models import CalibrationSnapshot
from qrt_ray.noise import (
    NoiseModelCache,
    gpu_available,
    make_simulator,
    noise_model_from_snapshot,
    target_from_snapshot,
)

SHOTS = 20_000


@pytest.fixture(scope="module")
def backend():  # type: ignore[no-untyped-def]
    return load_backend("FakeManilaV2")


@pytest.fixture(scope="module")
def snapshot(backend) -> CalibrationSnapshot:  # type: ignore[no-untyped-def]
    return snapshot_from_backend("manila", backend)


def _scaled(snapshot: CalibrationSnapshot, factor: float) -> CalibrationSnapshot:
    """All errors ``factor`` times worse: gate and readout errors up, T1/T2 down."""
    return with_recomputed_id(
        dataclasses.replace(
            snapshot,
            t1_s=tuple(t / factor for t in snapshot.t1_s),
            t2_s=tuple(t / factor for t in snapshot.t2_s),
            readout_error=tuple(min(e * factor, 0.5) for e in snapshot.readout_error),
            gates=tuple(dataclasses.replace(g, error=g.error * factor) for g in snapshot.gates),
        )
    )


def _ghz(n: int) -> QuantumCircuit:
    qc = QuantumCircuit(n, n, name=f"ghz{n}")
    qc.h(0)
    for q in range(n - 1):
        qc.cx(q, q + 1)
    qc.measure(range(n), range(n))
    return qc


def _idle_qubit() -> QuantumCircuit:
    qc = QuantumCircuit(3, 3, name="idle_qubit")
    qc.rx(0.7, 0)
    qc.x(1)
    qc.ry(1.9, 2)
    qc.cx(0, 2)
    # ~18 us idle in |1>: the delay relaxation of from_backend must be reproduced too
    # (leaving it out drops the fidelity to ~0.94).
    qc.delay(80_000, 1)
    qc.rz(0.3, 2)
    qc.h(2)
    qc.measure(range(3), range(3))
    return qc


def _all_ones() -> QuantumCircuit:
    qc = QuantumCircuit(5, 5, name="all_ones")
    qc.x(range(5))
    qc.measure(range(5), range(5))
    return qc


def _props(target: Target, name: str, qubits: tuple[int, ...]) -> tuple[float, float]:
    props = target[name][qubits]
    return props.duration, props.error


def _counts(sim: AerSimulator, circuit: QuantumCircuit, seed: int) -> dict[str, int]:
    return sim.run(circuit, shots=SHOTS, seed_simulator=seed).result().get_counts()


def test_unmodified_snapshot_gives_aers_own_noise_model(backend, snapshot) -> None:  # type: ignore[no-untyped-def]
    assert noise_model_from_snapshot(snapshot, backend.target) == NoiseModel.from_backend(backend)


@pytest.mark.parametrize("circuit", [_ghz(5), _idle_qubit(), _all_ones()], ids=lambda c: c.name)
def test_simulator_matches_aer_from_backend(backend, snapshot, circuit: QuantumCircuit) -> None:  # type: ignore[no-untyped-def]
    # Scheduled, so idle time becomes delays and the delay-relaxation noise is compared too.
    compiled = transpile(circuit, backend=backend, seed_transpiler=3, scheduling_method="alap")
    ours, _, _ = make_simulator(snapshot, backend.target, gpu="never")
    reference = AerSimulator.from_backend(backend)

    # Different seeds: the distributions must agree, not just replay one sample.
    fidelity = hellinger_fidelity(_counts(ours, compiled, 11), _counts(reference, compiled, 12))

    assert fidelity > 0.99


def test_five_times_worse_calibration_lowers_ghz_fidelity(backend, snapshot) -> None:  # type: ignore[no-untyped-def]
    compiled = transpile(_ghz(5), backend=backend, seed_transpiler=3)
    ideal = {"00000": SHOTS // 2, "11111": SHOTS // 2}
    good, _, _ = make_simulator(snapshot, backend.target, gpu="never")
    bad, _, _ = make_simulator(_scaled(snapshot, 5.0), backend.target, gpu="never")

    good_fidelity = hellinger_fidelity(ideal, _counts(good, compiled, 5))
    bad_fidelity = hellinger_fidelity(ideal, _counts(bad, compiled, 5))

    assert good_fidelity > 0.7
    assert bad_fidelity < good_fidelity - 0.15


def test_noise_model_serializes_once_and_forgets_on_change(backend, snapshot) -> None:  # type: ignore[no-untyped-def]
    model = noise_model_from_snapshot(snapshot, backend.target)

    first = model.to_dict(serializable=True)

    assert model.to_dict(serializable=True) is first  # AerSimulator.run asks on every run
    assert first == NoiseModel.to_dict(model, serializable=True)
    restored = pickle.loads(pickle.dumps(model))
    assert restored == model and restored.to_dict(serializable=True) == first
    model.add_readout_error(ReadoutError([[0.5, 0.5], [0.5, 0.5]]), [0])
    assert model.to_dict(serializable=True) != first


def test_target_carries_snapshot_values_and_leaves_base_alone(backend, snapshot) -> None:  # type: ignore[no-untyped-def]
    base = backend.target
    base_cx = base["cx"][(0, 1)].error
    worse = _scaled(snapshot, 2.0)

    same = target_from_snapshot(snapshot, base)
    drifted = target_from_snapshot(worse, base)

    assert _props(same, "cx", (0, 1)) == _props(base, "cx", (0, 1))
    assert same.qubit_properties[3].t1 == base.qubit_properties[3].t1
    assert drifted["cx"][(0, 1)].error == pytest.approx(2 * base_cx)
    assert drifted["measure"][(1,)].error == pytest.approx(2 * base["measure"][(1,)].error)
    assert drifted.qubit_properties[3].t1 == pytest.approx(base.qubit_properties[3].t1 / 2)
    assert _props(drifted, "reset", (0,)) == _props(base, "reset", (0,))  # not in snapshot
    assert base["cx"][(0, 1)].error == base_cx


def test_target_rejects_a_snapshot_of_another_device(backend) -> None:  # type: ignore[no-untyped-def]
    other = snapshot_from_backend("nairobi", load_backend("FakeNairobiV2"))

    with pytest.raises(ValidationError, match="7 qubits but base_target has 5"):
        target_from_snapshot(other, backend.target)


def test_threads_default_to_all_cores_even_under_ray(
    backend,  # type: ignore[no-untyped-def]
    snapshot,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv("OMP_NUM_THREADS", "1")  # what Ray sets in its workers

    sim, description, uses_gpu = make_simulator(snapshot, backend.target, gpu="never")
    pinned, _, _ = make_simulator(snapshot, backend.target, gpu="never", max_parallel_threads=3)

    assert sim.options.max_parallel_threads == os.cpu_count()
    assert pinned.options.max_parallel_threads == 3
    assert uses_gpu is False
    assert description == f"automatic (CPU, {os.cpu_count()} threads)"


def test_gpu_require_without_gpu_is_a_clear_error(
    backend,  # type: ignore[no-untyped-def]
    snapshot,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setattr(noise, "gpu_available", lambda: False)

    with pytest.raises(DeviceUnavailableError, match="'manila' has gpu='require'"):
        make_simulator(snapshot, backend.target, gpu="require")
    _, _, uses_gpu = make_simulator(snapshot, backend.target, gpu="auto")
    assert uses_gpu is False


def test_bad_arguments_are_rejected(backend, snapshot) -> None:  # type: ignore[no-untyped-def]
    with pytest.raises(ValidationError, match="gpu='sometimes'"):
        make_simulator(snapshot, backend.target, gpu="sometimes")  # type: ignore[arg-type]
    with pytest.raises(ValidationError, match="max_parallel_threads=-1"):
        make_simulator(snapshot, backend.target, max_parallel_threads=-1)
    with pytest.raises(ValidationError, match="max_entries=0"):
        NoiseModelCache(max_entries=0)


def test_gpu_available_survives_a_broken_aer(monkeypatch: pytest.MonkeyPatch) -> None:
    def broken(self: AerSimulator) -> tuple[str, ...]:
        raise RuntimeError("CUDA driver version is insufficient")

    monkeypatch.setattr(AerSimulator, "available_devices", broken)
    gpu_available.cache_clear()
    try:
        assert gpu_available() is False
    finally:
        gpu_available.cache_clear()


@pytest.mark.gpu
@pytest.mark.skipif(not gpu_available(), reason="qiskit-aer reports no GPU")
def test_gpu_simulator_runs(backend, snapshot) -> None:  # type: ignore[no-untyped-def]
    sim, description, uses_gpu = make_simulator(snapshot, backend.target, gpu="require")
    compiled = transpile(_ghz(5), backend=backend, seed_transpiler=3)

    result = sim.run(compiled, shots=1000, seed_simulator=1).result()

    assert uses_gpu and "GPU" in description
    assert sum(result.get_counts().values()) == 1000


def test_cache_hits_misses_and_evicts(backend, snapshot) -> None:  # type: ignore[no-untyped-def]
    cache = NoiseModelCache(max_entries=1)
    drifted = _scaled(snapshot, 1.5)

    first = cache.get(snapshot, backend.target, gpu="never")
    second = cache.get(snapshot, backend.target, gpu="never")
    assert second is first
    assert (cache.hits, cache.misses) == (1, 1)

    cache.get(drifted, backend.target, gpu="never")  # evicts the original calibration
    again = cache.get(snapshot, backend.target, gpu="never")
    assert again is not first
    assert (cache.hits, cache.misses, len(cache)) == (1, 3, 1)


def test_cache_keeps_recent_entries_and_invalidates_by_device(backend, snapshot) -> None:  # type: ignore[no-untyped-def]
    cache = NoiseModelCache(max_entries=2)
    drifted = _scaled(snapshot, 1.5)
    cache.get(snapshot, backend.target, gpu="never")
    cache.get(drifted, backend.target, gpu="never")

    cache.get(snapshot, backend.target, gpu="never")
    assert cache.hits == 1

    assert cache.invalidate("manila", drifted.calibration_id) == 1
    assert cache.invalidate("other-device") == 0
    assert cache.invalidate("manila") == 1
    assert len(cache) == 0


_WIDE_MPS_RUN = """
from qiskit import QuantumCircuit, transpile
from qrt_ray.calibration import load_backend, snapshot_from_backend
from qrt_ray.noise import make_simulator

backend = load_backend("FakeKolkataV2")
snapshot = snapshot_from_backend("kolkata", backend)
simulator, _, _ = make_simulator(snapshot, backend.target, gpu="never")
qc = QuantumCircuit(16)
qc.h(0)
for q in range(15):
    qc.cx(q, q + 1)
qc.measure_all()
compiled = transpile(qc, target=simulator.target, optimization_level=1, seed_transpiler=0)
counts = simulator.run(compiled, shots=200, seed_simulator=1, method="matrix_product_state")
counts = counts.result().get_counts()
peaks = counts.get("0" * 16, 0) + counts.get("1" * 16, 0)
print(sum(counts.values()), peaks)
"""


def test_wide_noisy_mps_run_finishes() -> None:
    """A 16-qubit GHZ as a matrix product state on kolkata, 200 noisy shots.

    Aer's built-in SVD never returns on this run and can corrupt the heap; the
    simulator must use LAPACK's. Run in a child process so a regression fails here
    instead of hanging the suite (a hang inside Aer ignores Python's signals).
    """
    import subprocess
    import sys

    done = subprocess.run(
        [sys.executable, "-c", _WIDE_MPS_RUN], capture_output=True, text=True, timeout=240
    )
    assert done.returncode == 0, done.stderr[-2000:]
    total, peaks = map(int, done.stdout.split())
    assert total == 200
    assert peaks > 100  # noisy, but still mostly the two GHZ outcomes


def test_cpu_simulator_uses_lapack_svd(backend, snapshot) -> None:  # type: ignore[no-untyped-def]
    simulator, _, _ = make_simulator(snapshot, backend.target, gpu="never")
    assert simulator.options.mps_lapack is True


def test_a_restricted_noise_model_samples_what_the_full_one_does(backend, snapshot) -> None:  # type: ignore[no-untyped-def]
    from qrt_ray.aer import simulate, touched_qubits
    from qrt_ray.noise import restricted_noise_model

    sim, _, _ = make_simulator(snapshot, backend.target, gpu="never", max_parallel_threads=1)
    compiled = transpile(
        [_ghz(3), _idle_qubit()], target=sim.target, initial_layout=[0, 1, 2], seed_transpiler=0
    )
    qubits = touched_qubits(compiled)
    assert qubits == frozenset({0, 1, 2})
    full = sim.options.noise_model
    sub = restricted_noise_model(full, qubits)
    kept = sub.to_dict(serializable=True)["errors"]
    assert 0 < len(kept) < len(full.to_dict(serializable=True)["errors"])
    assert all(set(q) <= qubits for e in kept for q in e.get("gate_qubits", []))
    for circuit in compiled:  # same errors met, same seed: the same counts
        a = sim.run(circuit, shots=2000, seed_simulator=4).result().get_counts()
        b = sim.run(circuit, shots=2000, seed_simulator=4, noise_model=sub).result().get_counts()
        assert a == b
    # the device's calls hand Aer the restricted model, read off the circuits
    seen: list[object] = []
    real_run = sim.run

    def spy(circuits, **options):  # type: ignore[no-untyped-def]
        seen.append(options.get("noise_model"))
        return real_run(circuits, **options)

    sim.run = spy  # type: ignore[method-assign]
    simulate(sim, compiled, shots=10, seed_simulator=1)
    simulate(sim, compiled, shots=10, seed_simulator=1)
    assert len(seen) == 2 and seen[0] is not full and seen[1] is seen[0]  # kept
    assert seen[0].to_dict(serializable=True)["errors"] == kept
    full.add_readout_error(ReadoutError([[0.9, 0.1], [0.1, 0.9]]), [0])
    simulate(sim, compiled, shots=10, seed_simulator=1)
    assert seen[2] is not seen[0]  # a changed model forgets its restricted ones


def test_restricted_models_serialize_each_error_once_and_as_aer_would(backend, snapshot) -> None:  # type: ignore[no-untyped-def]
    from qrt_ray.noise import restricted_for, restricted_noise_model

    model = noise_model_from_snapshot(snapshot, backend.target)
    sets = [frozenset({0, 1, 2}), frozenset({1, 2, 3, 5}), frozenset({4, 7})]
    for qubits in sets:
        sub = restricted_for(model, qubits)
        plain = restricted_noise_model(model, qubits)  # serialized below by Aer's own code
        assert sub.to_dict(serializable=True) == NoiseModel.to_dict(plain, serializable=True)
    # errors shared by two qubit sets are serialized once: the very same dicts
    a = restricted_for(model, sets[0]).to_dict(serializable=True)["errors"]
    b = restricted_for(model, sets[1]).to_dict(serializable=True)["errors"]
    shared = [e for e in b if e.get("gate_qubits") == [[1, 2]]]  # lists after the JSON
    assert shared and all(any(e is f for f in a) for e in shared)
    # a changed error is serialized anew, in the full model and in what is cut from it
    worse = ReadoutError([[0.7, 0.3], [0.2, 0.8]])
    model.add_readout_error(worse, [1])
    entry = {**worse.to_dict(), "gate_qubits": [[1]]}
    for fresh in (model, restricted_for(model, sets[0])):
        readout = [e for e in fresh.to_dict(serializable=True)["errors"] if e["type"] == "roerror"]
        assert any(e["probabilities"] == entry["probabilities"] for e in readout)
        assert fresh.to_dict(serializable=True) == NoiseModel.to_dict(fresh, serializable=True)
    # a restricted model does not keep its full model alive; alone, it serializes itself
    sub = restricted_for(model, sets[2])
    expected = NoiseModel.to_dict(sub, serializable=True)
    sub._forget()
    del model
    gc.collect()
    assert sub._source is not None and sub._source() is None
    assert sub.to_dict(serializable=True) == expected


def test_a_circuit_the_simulator_could_not_run_says_why() -> None:
    from qrt_ray.aer import counts_of

    wide = QuantumCircuit(40)
    wide.h(0)
    for q in range(1, 40):
        wide.cx(0, q)
    wide.measure_all()
    fine = QuantumCircuit(1)
    fine.measure_all()
    sim = AerSimulator(method="statevector")
    ok = sim.run([fine], shots=10).result()
    failed = sim.run([wide], shots=10).result()
    assert counts_of(ok, 0) == {"0": 10}
    with pytest.raises(RuntimeError, match=r"circuit 7 of the call did not run: .*memory"):
        counts_of(failed, 0, label=7)


def test_counts_keys_are_written_as_qiskit_writes_them() -> None:
    from qiskit import ClassicalRegister, QuantumRegister
    from qiskit.circuit.random import random_circuit

    from qrt_ray.aer import counts_of

    layouts = [
        QuantumCircuit(QuantumRegister(3), ClassicalRegister(2, "a"), ClassicalRegister(1, "b")),
        QuantumCircuit(QuantumRegister(4), ClassicalRegister(1, "a"), ClassicalRegister(3, "b")),
        # bits never written stay zero-padded
        QuantumCircuit(QuantumRegister(2), ClassicalRegister(5, "c")),
    ]
    for qc in layouts:
        for q in range(qc.num_qubits):
            qc.h(q)
            qc.measure(q, q % qc.num_clbits)
    circuits = [*layouts, *(random_circuit(5, 4, measure=True, seed=s) for s in range(6))]
    sim = AerSimulator(method="statevector")
    result = sim.run(transpile(circuits, sim), shots=300, seed_simulator=3).result()
    outcomes = 0
    for i in range(len(circuits)):
        want = dict(result.get_counts(i))
        assert counts_of(result, i) == want
        outcomes += len(want)
    assert outcomes > 3 * len(circuits)  # many keys were really written


def test_the_aer_fast_paths_run_only_on_releases_they_were_tested_on(
    backend, snapshot, monkeypatch: pytest.MonkeyPatch
) -> None:  # type: ignore[no-untyped-def]
    from qrt_ray import noise

    installed = qiskit_aer_version()
    assert noise.aer_internals_known() is noise._AER_FAST
    assert noise.aer_internals_known(installed) is True  # this install is a tested one
    assert noise.aer_internals_known("0.99.0") is False
    assert noise.aer_internals_known("not-a-version") is False
    # off the tested releases: Aer's plain model, and no restriction of it
    monkeypatch.setattr(noise, "_AER_FAST", False)
    model = noise._noise_model(backend.target, "manila")
    assert type(model) is noise.NoiseModel
    assert noise.restricted_noise_model(model, frozenset({0, 1})) is model


def qiskit_aer_version() -> str:
    import qiskit_aer

    return qiskit_aer.__version__
