"""The compiler: native gates, routing, the QPY hand-off to devices, and the cache."""

from __future__ import annotations

from qiskit import QuantumCircuit
from qiskit_aer import AerSimulator

from qrt_ray.calibration import load_backend
from qrt_ray.circuits import to_qasm
from qrt_ray.compiler import CompileCache, compile_circuits, decode_compiled
from tests.circuits import ghz

TARGET = load_backend("FakeManilaV2").target  # 5 qubits on a line


def test_payload_decodes_to_a_native_circuit_with_the_same_answer() -> None:
    (out,) = compile_circuits([to_qasm(ghz(3))], TARGET, device="manila", calibration_id="c1")
    (circuit,) = decode_compiled([out.payload])
    native = set(TARGET.operation_names) | {"barrier"}
    assert set(circuit.count_ops()) <= native
    assert out.active_qubits == 3 and circuit.num_qubits == 5
    counts = AerSimulator().run(circuit, shots=400, seed_simulator=1).result().get_counts()
    assert set(counts) == {"000", "111"} and sum(counts.values()) == 400


def test_routing_on_a_line_adds_swaps_and_records_them() -> None:
    qc = QuantumCircuit(5)
    for a in range(5):
        for b in range(a + 1, 5):
            qc.cx(a, b)  # all-to-all: a line cannot do this without SWAPs
    qc.measure_all()
    (out,) = compile_circuits([to_qasm(qc)], TARGET, device="manila", calibration_id="c1")
    assert out.error is None and out.info is not None
    assert out.info.swaps_added > 0
    (circuit,) = decode_compiled([out.payload])
    assert out.info.two_qubit_gates == circuit.count_ops()["cx"]
    assert sorted(out.info.layout) == [0, 1, 2, 3, 4]


def test_cache_hits_are_marked_and_keyed_by_calibration() -> None:
    cache = CompileCache()
    (out,) = compile_circuits([to_qasm(ghz(2))], TARGET, device="manila", calibration_id="c1")
    cache.put(out)
    hit = cache.get((out.circuit_hash, "manila", "c1"))
    assert hit is not None and hit.info.cache_hit and hit.payload == out.payload
    assert cache.get((out.circuit_hash, "manila", "c2")) is None
    assert cache.invalidate("manila") == 1 and len(cache) == 0


def test_a_given_layout_is_used_and_a_routed_one_must_beat_the_compilers_own() -> None:
    target = load_backend("FakeGuadalupeV2").target
    chain = to_qasm(ghz(3))
    # Physical 1-2-3 is a path on guadalupe: the chain embeds there without SWAPs.
    (kept,) = compile_circuits(
        [chain], target, device="g", calibration_id="c", initial_layouts=[(1, 2, 3)]
    )
    assert kept.info is not None and kept.info.swaps_added == 0
    assert sorted(kept.info.layout) == [1, 2, 3]
    assert 0 < kept.info.esp < 1
    # Qubits 0, 6 and 15 are far apart: routing needs SWAPs, so the compiler's own
    # layout competes and the higher ESP wins.
    far = [(0, 6, 15)]
    (alone,) = compile_circuits(
        [chain],
        target,
        device="g",
        calibration_id="c",
        initial_layouts=far,
        compare_when_routed=False,
    )
    (best,) = compile_circuits([chain], target, device="g", calibration_id="c", initial_layouts=far)
    assert alone.info.swaps_added > 0
    assert best.info.esp >= alone.info.esp
    assert best.info.swaps_added == 0


def test_one_call_with_many_layouts_compiles_as_one_call_per_layout() -> None:
    # compile_circuits reuses one pass manager and hands each circuit its layout in turn
    target = load_backend("FakeGuadalupeV2").target
    texts = [to_qasm(ghz(3)), to_qasm(ghz(4)), to_qasm(ghz(3))]
    layouts = [(1, 2, 3), (0, 1, 4, 7), (3, 2, 1)]
    together = compile_circuits(
        texts, target, device="g", calibration_id="c", initial_layouts=layouts
    )
    for text, layout, got in zip(texts, layouts, together, strict=True):
        (alone,) = compile_circuits(
            [text], target, device="g", calibration_id="c", initial_layouts=[layout]
        )
        assert got.info.layout == alone.info.layout == layout
        a, b = decode_compiled([got.payload, alone.payload])
        b.name = a.name  # QPY keeps the generated circuit name, which differs per parse
        assert a == b


def test_two_qubit_gates_count_gates_not_the_barriers_between_folds() -> None:
    # ZNE folds cx -> cx (cx^dag cx) with barriers between the copies; the noise
    # factor reached is read from this count, and the barriers are not gates
    import numpy as np

    from qrt_ray.mitigation.zne import fold_gates

    folded, factor = fold_gates(ghz(3), 3.0, np.random.default_rng(0))
    folded.measure_all()
    (out,) = compile_circuits([to_qasm(folded)], TARGET, device="manila", calibration_id="c1")
    (circuit,) = decode_compiled([out.payload])
    assert factor == 3.0 and circuit.count_ops()["barrier"] >= 4
    assert out.info.two_qubit_gates == circuit.count_ops()["cx"] == 6
