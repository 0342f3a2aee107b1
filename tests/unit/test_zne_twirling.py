"""Gate folding, extrapolation and twirling: exact checks on known answers."""

from __future__ import annotations

import math

import numpy as np
import pytest
from qiskit import QuantumCircuit, transpile
from qiskit.quantum_info import Operator, Statevector
from qiskit_aer import AerSimulator
from qiskit_aer.noise import NoiseModel, ReadoutError

from qrt_ray.errors import MitigationError
from qrt_ray.mitigation.twirling import (
    TwirlPlan,
    merge_counts,
    run_twirled,
    split_shots,
    twirl_compiled,
    unflip_key,
)
from qrt_ray.mitigation.zne import extrapolate, fold_gates
from qrt_ray.models import TwirlSpec


def _entangler() -> QuantumCircuit:
    qc = QuantumCircuit(3)
    qc.h(0)
    qc.cx(0, 1)
    qc.ecr(1, 2)
    qc.cz(0, 2)
    qc.rzz(0.4, 1, 2)
    return qc


@pytest.mark.parametrize(("factor", "reached"), [(1, 1.0), (3, 3.0), (5, 5.0), (2, 2.0)])
def test_folding_keeps_the_unitary_and_scales_two_qubit_gates(
    factor: float, reached: float
) -> None:
    qc = _entangler()
    folded, got = fold_gates(qc, factor, np.random.default_rng(1))
    assert got == pytest.approx(reached)
    two_q = sum(
        1 for i in folded.data if i.operation.num_qubits == 2 and i.operation.name != "barrier"
    )
    assert two_q == round(4 * reached)
    assert Operator(folded).equiv(Operator(qc))


def test_folds_survive_the_compiler() -> None:
    qc = QuantumCircuit(2)
    qc.h(0)
    qc.cx(0, 1)
    folded, _ = fold_gates(qc, 5, np.random.default_rng(0))
    compiled = transpile(folded, basis_gates=["rz", "sx", "x", "cx"], optimization_level=1)
    assert compiled.count_ops()["cx"] == 5


def test_folding_below_one_is_refused() -> None:
    with pytest.raises(MitigationError, match="below 1"):
        fold_gates(_entangler(), 0.5, np.random.default_rng(0))


def test_extrapolators_are_exact_on_their_own_model() -> None:
    lam = [1.0, 3.0, 5.0]
    linear = [0.9 - 0.05 * x for x in lam]
    quadratic = [0.8 - 0.1 * x + 0.01 * x * x for x in lam]
    decay = [0.95 * math.exp(-0.2 * x) for x in lam]
    assert extrapolate(lam, linear, [0.0] * 3, "linear").value == pytest.approx(0.9)
    assert extrapolate(lam, quadratic, [0.0] * 3, "richardson").value == pytest.approx(0.8)
    assert extrapolate(lam, quadratic, [0.0] * 3, "polynomial_degree_2").value == pytest.approx(0.8)
    assert extrapolate(lam, decay, [0.0] * 3, "exponential").value == pytest.approx(0.95)
    negative = [-v for v in decay]
    assert extrapolate(lam, negative, [0.0] * 3, "exponential").value == pytest.approx(-0.95)


def test_extrapolation_error_bars_propagate() -> None:
    # linear through (1, y1), (3, y3): y(0) = 1.5 y1 - 0.5 y3
    fit = extrapolate([1, 3], [0.8, 0.6], [0.01, 0.02], "linear")
    assert fit.value == pytest.approx(0.9)
    assert fit.stderr == pytest.approx(math.sqrt((1.5 * 0.01) ** 2 + (0.5 * 0.02) ** 2))
    # richardson on 1/3/5 amplifies noise more than linear
    r = extrapolate([1, 3, 5], [0.8, 0.6, 0.45], [0.01] * 3, "richardson")
    lin = extrapolate([1, 3, 5], [0.8, 0.6, 0.45], [0.01] * 3, "linear")
    assert r.stderr > lin.stderr > 0.01


def test_exponential_leaves_out_decayed_points_and_weighs_the_rest() -> None:
    lam = [1.0, 3.0, 5.0]
    # the factor-5 value is shot noise around 0 (here negative): it is left out, and
    # the fit runs through the other two: 0.5 * (0.5 / 0.15) ** 0.5
    fit = extrapolate(lam, [0.5, 0.15, -0.02], [0.01, 0.01, 0.03], "exponential")
    assert fit.value == pytest.approx(0.5 * (0.5 / 0.15) ** 0.5)
    assert fit.stderr > 0
    # a far point that is clear of 0 but imprecise pulls the fit far less than a
    # precise one: the exact decay 0.9 exp(-0.5 x) with its last value 30 % high
    exact = [0.9 * math.exp(-0.5 * x) for x in lam]
    off = [exact[0], exact[1], exact[2] * 1.3]
    loose = extrapolate(lam, off, [0.001, 0.001, 0.02], "exponential").value
    tight = extrapolate(lam, off, [0.001, 0.001, 0.001], "exponential").value
    assert abs(loose - 0.9) < 0.01 < abs(tight - 0.9)
    with pytest.raises(MitigationError, match="two or more values clear of 0"):
        extrapolate(lam, [0.05, 0.01, 0.0], [0.03, 0.03, 0.03], "exponential")


def test_extrapolation_refuses_what_it_cannot_fit() -> None:
    with pytest.raises(MitigationError, match="one sign"):
        extrapolate([1, 3], [0.1, -0.1], [0.01, 0.01], "exponential")
    with pytest.raises(MitigationError, match="needs at least 3"):
        extrapolate([1, 3], [0.1, 0.2], [0.01, 0.01], "polynomial_degree_2")
    with pytest.raises(MitigationError, match="use one of"):
        extrapolate([1, 3], [0.1, 0.2], [0.01, 0.01], "cubic")
    with pytest.raises(MitigationError, match="repeat"):
        extrapolate([1, 1], [0.1, 0.2], [0.01, 0.01], "linear")


def test_compiled_twirls_keep_the_outcome_distribution() -> None:
    qc = QuantumCircuit(3, 3)
    qc.h(0)
    qc.cx(0, 1)
    qc.ecr(1, 2)
    qc.measure([0, 1, 2], [0, 1, 2])
    ideal = Statevector(qc.remove_final_measurements(inplace=False)).probabilities_dict()
    rng = np.random.default_rng(4)
    flipped_any = False
    for _ in range(12):
        twirled, flips = twirl_compiled(qc, rng, gates=True, measure=True)
        flipped_any |= flips != 0
        body = twirled.remove_final_measurements(inplace=False)
        got = {
            unflip_key(k, flips): v
            for k, v in Statevector(body).probabilities_dict().items()
            if v > 1e-12
        }
        assert got == pytest.approx({k: v for k, v in ideal.items() if v > 1e-12})
    assert flipped_any


def test_a_plan_read_once_twirls_every_copy_afresh() -> None:
    qc = _entangler()
    before = dict(qc.count_ops())
    plan = TwirlPlan(qc, gates=True, measure=False)
    rng = np.random.default_rng(2)
    copies = [twirl_compiled(plan, rng, gates=True, measure=False)[0] for _ in range(8)]
    assert all(Operator(c).equiv(Operator(qc)) for c in copies)
    assert len({tuple((i.operation.name, i.qubits) for i in c.data) for c in copies}) > 1
    assert dict(qc.count_ops()) == before  # the original is untouched


def test_measurement_twirling_makes_readout_error_symmetric() -> None:
    noise = NoiseModel()
    noise.add_readout_error(ReadoutError([[0.98, 0.02], [0.10, 0.90]]), [0])
    sim = AerSimulator(noise_model=noise)
    qc = QuantumCircuit(1, 1)
    qc.measure(0, 0)
    plain = sim.run(qc, shots=20_000, seed_simulator=1).result().get_counts()
    twirl = TwirlSpec(measure=True, randomizations=32)
    counts, _, _ = run_twirled(sim, [qc], 20_000, twirl, 5, {}, "automatic")
    assert sum(counts[0].values()) == 20_000
    assert plain.get("1", 0) / 20_000 == pytest.approx(0.02, abs=0.006)
    # half the shots read through the flipped channel: (0.02 + 0.10) / 2
    assert counts[0].get("1", 0) / 20_000 == pytest.approx(0.06, abs=0.01)


def test_twirled_runs_split_shots_exactly_and_reproduce() -> None:
    qc = QuantumCircuit(2, 2)
    qc.h(0)
    qc.cx(0, 1)
    qc.measure([0, 1], [0, 1])
    sim = AerSimulator()
    twirl = TwirlSpec(gates=True, measure=True, randomizations=7)
    first, seeds, _ = run_twirled(sim, [qc, qc], 1001, twirl, 9, {}, "automatic")
    again, _, _ = run_twirled(sim, [qc, qc], 1001, twirl, 9, {}, "automatic")
    assert [sum(c.values()) for c in first] == [1001, 1001]
    assert set(first[0]) == {"00", "11"}
    assert first == again and len(seeds) == 2


def test_shot_splitting_and_key_unflipping() -> None:
    assert split_shots(10, 3) == [4, 3, 3]
    assert split_shots(2, 5) == [1, 1]
    assert unflip_key("01 10", 0b0011) == "01 01"
    assert unflip_key("0110", 0b1000) == "1110"
    assert merge_counts([({"01": 3}, 0b01), ({"00": 2}, 0)]) == {"00": 5}


def test_measurement_flips_come_in_complementary_pairs() -> None:
    qc = QuantumCircuit(3, 3)
    qc.h(0)
    qc.measure([0, 1, 2], [0, 1, 2])
    rng = np.random.default_rng(1)
    for _ in range(10):
        _, first = twirl_compiled(qc, rng, gates=False, measure=True)
        _, second = twirl_compiled(qc, rng, gates=False, measure=True, complement_of=first)
        assert first ^ second == 0b111


def test_measurement_twirls_always_come_in_pairs() -> None:
    from qrt_ray.mitigation.twirling import copies_for

    assert copies_for(TwirlSpec(measure=True, randomizations=1), 100) == 2
    assert copies_for(TwirlSpec(measure=True, randomizations=5), 100) == 6
    assert copies_for(TwirlSpec(measure=True, randomizations=5), 5) == 4
    assert copies_for(TwirlSpec(gates=True, randomizations=5), 100) == 5
    assert copies_for(TwirlSpec(measure=True, randomizations=8), 1) == 1


def test_gates_on_three_qubits_are_written_out_before_folding() -> None:
    from qrt_ray.mitigation.zne import two_qubit_form

    qc = QuantumCircuit(3)
    qc.cx(0, 1)
    qc.ccx(0, 1, 2)
    flat = two_qubit_form(qc)
    before = sum(1 for i in flat.data if i.operation.num_qubits == 2)
    assert before > 1 and all(i.operation.num_qubits <= 2 for i in flat.data)
    folded, reached = fold_gates(flat, 3, np.random.default_rng(0))
    assert reached == 3.0
    assert (
        sum(1 for i in folded.data if i.operation.num_qubits == 2 and i.operation.name != "barrier")
        == 3 * before
    )
    assert Operator(folded).equiv(Operator(qc))


def test_a_correction_inside_its_error_bar_is_flagged() -> None:
    from qrt_ray.primitives.estimator import within_noise_note

    # corrected by 0.2 with an error bar of 0.01: meaningful, no note
    assert within_noise_note([0.9], [0.01], [0.7]) is None
    # corrected by 0.005 with an error bar of 0.03: mitigated and raw differ by noise
    note = within_noise_note([0.9, 0.5], [0.01, 0.03], [0.7, 0.495])
    assert note is not None and note.startswith("1 of 2 mitigated value(s)")
    assert "0.03 > 0.005" in note and "default_precision" in note
