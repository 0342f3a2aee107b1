"""Calibration snapshots read from fake backends, and their content-derived ids."""

from __future__ import annotations

import copy
import dataclasses
import re
import statistics
from types import SimpleNamespace

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from qiskit.transpiler import InstructionProperties, QubitProperties

from qrt_ray.calibration import (
    calibration_id_for,
    fake_backend_names,
    load_backend,
    snapshot_from_backend,
    with_recomputed_id,
)
from qrt_ray.errors import ValidationError
from qrt_ray.models import CalibrationSnapshot


@pytest.fixture(scope="module")
def manila() -> CalibrationSnapshot:
    return snapshot_from_backend("manila", load_backend("FakeManilaV2"))


def test_load_backend_caches_instances_and_rejects_unknown_names() -> None:
    assert load_backend("FakeManilaV2") is load_backend("FakeManilaV2")
    assert "FakeTorino" in fake_backend_names()

    with pytest.raises(ValidationError, match=r"backend_name='FakeNowhere'.*FakeAachen"):
        load_backend("FakeNowhere")


def test_snapshot_copies_the_target_numbers(manila: CalibrationSnapshot) -> None:
    target = load_backend("FakeManilaV2").target

    assert manila.num_qubits == 5
    for q in range(5):
        assert manila.t1_s[q] == target.qubit_properties[q].t1
        assert manila.t2_s[q] == target.qubit_properties[q].t2
        assert manila.readout_error[q] == target["measure"][(q,)].error
    cx01 = next(g for g in manila.gates if g.gate == "cx" and g.qubits == (0, 1))
    assert cx01.error == target["cx"][(0, 1)].error
    assert cx01.duration_s == target["cx"][(0, 1)].duration
    assert 1e-6 < statistics.median(manila.t1_s) < 1e-3  # seconds, not microseconds


def test_snapshot_keeps_only_native_gates(manila: CalibrationSnapshot) -> None:
    names = {g.gate for g in manila.gates}

    assert manila.native_gates == ("cx", "id", "rz", "sx", "x")
    assert names == set(manila.native_gates)
    assert not names & {"measure", "delay", "reset", "if_else", "for_loop", "switch_case"}
    assert manila.two_qubit_gate == "cx"
    # 5 qubits x 4 one-qubit gates + 8 directed cx edges
    assert len(manila.gates) == 5 * 4 + 8
    assert list(manila.gates) == sorted(manila.gates, key=lambda g: (g.gate, g.qubits))


def test_coupling_map_is_sorted_directed_edges(manila: CalibrationSnapshot) -> None:
    backend_edges = set(load_backend("FakeManilaV2").coupling_map.get_edges())

    assert manila.coupling_map == tuple(sorted(backend_edges))
    assert (0, 1) in manila.coupling_map and (1, 0) in manila.coupling_map


def test_taken_at_defaults_to_backend_timestamp(manila: CalibrationSnapshot) -> None:
    backend = load_backend("FakeManilaV2")
    expected = backend.properties().last_update_date.timestamp()

    assert manila.taken_at == expected > 1.5e9
    explicit = snapshot_from_backend("manila", backend, taken_at=123.0)
    assert explicit.taken_at == 123.0
    assert explicit.calibration_id == manila.calibration_id  # when is not what


def test_calibration_id_is_deterministic_and_prefixed(manila: CalibrationSnapshot) -> None:
    again = snapshot_from_backend("manila", load_backend("FakeManilaV2"))

    assert re.fullmatch(r"manila-[0-9a-f]{12}", manila.calibration_id)
    assert again.calibration_id == manila.calibration_id
    assert calibration_id_for(manila) == manila.calibration_id
    other_device = snapshot_from_backend("manila-2", load_backend("FakeManilaV2"))
    assert other_device.calibration_id.split("-")[-1] == manila.calibration_id.split("-")[-1]
    assert other_device.calibration_id != manila.calibration_id


def test_different_backends_get_different_ids() -> None:
    ids = {
        snapshot_from_backend("d", load_backend(name)).calibration_id
        for name in ("FakeManilaV2", "FakeNairobiV2", "FakeLagosV2")
    }

    assert len(ids) == 3


_PER_QUBIT = ("t1_s", "t2_s", "readout_error")


@settings(max_examples=60, deadline=None)
@given(
    field=st.sampled_from((*_PER_QUBIT, "gates")),
    index=st.integers(min_value=0, max_value=27),
    factor=st.floats(min_value=0.5, max_value=2.0).filter(lambda f: abs(f - 1) > 1e-9),
)
def test_any_parameter_change_gives_a_new_id(
    manila: CalibrationSnapshot, field: str, index: int, factor: float
) -> None:
    if field == "gates":
        gates = list(manila.gates)
        gate = gates[index % len(gates)]
        # rz has error and duration 0: change the duration's absence into a value.
        gates[index % len(gates)] = dataclasses.replace(
            gate, error=gate.error * factor or 1e-4, duration_s=gate.duration_s * factor or 1e-9
        )
        changed = dataclasses.replace(manila, gates=tuple(gates))
    else:
        values = list(getattr(manila, field))
        values[index % len(values)] *= factor
        changed = dataclasses.replace(manila, **{field: tuple(values)})

    assert calibration_id_for(changed) != manila.calibration_id
    assert with_recomputed_id(changed).calibration_id == calibration_id_for(changed)
    # Stable: a field-by-field copy hashes the same.
    assert calibration_id_for(copy.deepcopy(changed)) == calibration_id_for(changed)


def test_dropping_an_edge_gives_a_new_id(manila: CalibrationSnapshot) -> None:
    fewer = dataclasses.replace(manila, coupling_map=manila.coupling_map[1:])

    assert calibration_id_for(fewer) != manila.calibration_id


def test_missing_values_become_the_median_of_the_others() -> None:
    target = copy.deepcopy(load_backend("FakeManilaV2").target)
    props = list(target.qubit_properties)
    props[2] = QubitProperties(t1=None, t2=None, frequency=props[2].frequency)
    target.qubit_properties = props
    target.update_instruction_properties(
        "cx", (0, 1), InstructionProperties(duration=None, error=None)
    )
    target.update_instruction_properties("measure", (3,), InstructionProperties(error=None))
    # A reset that reports an error is a calibrated instruction and is kept.
    target.update_instruction_properties(
        "reset", (4,), InstructionProperties(duration=1e-6, error=0.02)
    )

    snap = snapshot_from_backend("patched", SimpleNamespace(target=target))

    others = [p.t1 for i, p in enumerate(props) if i != 2]
    assert snap.t1_s[2] == statistics.median(others)
    assert snap.t2_s[2] == statistics.median(p.t2 for i, p in enumerate(props) if i != 2)
    cx_others = [p.error for q, p in target["cx"].items() if q != (0, 1)]
    cx01 = next(g for g in snap.gates if g.gate == "cx" and g.qubits == (0, 1))
    assert cx01.error == statistics.median(cx_others)
    assert cx01.duration_s == statistics.median(
        p.duration for q, p in target["cx"].items() if q != (0, 1)
    )
    assert snap.readout_error[3] == statistics.median(
        target["measure"][(q,)].error for q in (0, 1, 2, 4)
    )
    assert "reset" in snap.native_gates
    assert snap.taken_at == 0.0  # no properties(): no timestamp


def test_torino_snapshot_reads_the_whole_device() -> None:
    # how long it takes is measured by benchmarks/snapshot_speed.py, not asserted here
    backend = load_backend("FakeTorino")
    snap = snapshot_from_backend("torino", backend)
    assert snap.num_qubits == 133 and snap.two_qubit_gate == "cz"
    assert len(snap.t1_s) == len(snap.readout_error) == 133
    pairs = {g.qubits for g in snap.gates if g.gate == "cz"}
    assert pairs == {tuple(q) for q in backend.target["cz"]}
