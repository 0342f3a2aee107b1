"""Binding circuit parameters by name: OpenQASM 3 `input`s and Qiskit Parameters, from
Python (`parameters=`) and the CLI (`qrt submit --param NAME=VALUE`)."""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any

import pytest
from qiskit import QuantumCircuit
from qiskit.circuit import Parameter

from qrt_ray.circuits import coerce_circuits
from qrt_ray.cli import main
from qrt_ray.client import make_spec
from qrt_ray.errors import ValidationError
from qrt_ray.intake import parse_qasm

QASM3 = """OPENQASM 3.0;
include "stdgates.inc";
input float theta;
input float phi;
qubit[2] q;
bit[2] c;
rx(theta) q[0];
rz(phi) q[1];
cx q[0], q[1];
c = measure q;
"""


def test_openqasm3_inputs_bind_by_name() -> None:
    (text,) = coerce_circuits(QASM3, parameters={"theta": 0.25, "phi": -1})
    circuit = parse_qasm(text)
    assert not circuit.parameters
    angles = {inst.name: float(inst.params[0]) for inst in circuit.data if inst.params}
    assert angles == {"rx": 0.25, "rz": -1.0}


def test_a_circuit_object_binds_the_same_way_and_names_may_spread_over_circuits() -> None:
    theta = Parameter("theta")
    qc = QuantumCircuit(1)
    qc.ry(theta, 0)
    qc.measure_all()
    texts = coerce_circuits([qc, QASM3], parameters={"theta": math.pi, "phi": 0.0})
    assert all(not parse_qasm(t).parameters for t in texts)
    spec = make_spec([qc], shots=10, parameters={"theta": 1.0})
    assert "ry(1" in spec.circuits[0]


@pytest.mark.parametrize(
    ("parameters", "says"),
    [
        (None, r"unbound parameters \(phi, theta\).*--param phi=0.5"),
        ({"theta": 1.0}, r"unbound parameters \(phi\)"),
        ({"theta": 1.0, "phi": 2.0, "gamma": 3}, r"'gamma' bind nothing"),
        ({"theta": "0.5", "phi": 1}, r"parameters\['theta'\]=0.5: expected a number, got str"),
        ({"theta": math.inf, "phi": 1}, r"parameters\['theta'\]=inf: expected a finite"),
        ([("theta", 1)], r"expected a mapping of names to numbers"),
    ],
    ids=["none", "one-missing", "unknown", "text", "infinite", "not-a-mapping"],
)
def test_bad_bindings_are_named(parameters: Any, says: str) -> None:
    with pytest.raises(ValidationError, match=says):
        coerce_circuits(QASM3, parameters=parameters)


class _Capture:
    """A farm stand-in that keeps what `qrt submit` sends."""

    def __init__(self) -> None:
        self.texts: list[str] = []

    def submit(self, texts: list[str], **_: Any) -> Any:
        self.texts = list(texts)
        return type("H", (), {"job_id": "job-1"})()


def test_qrt_submit_binds_params(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    path = tmp_path / "ansatz.qasm"
    path.write_text(QASM3)
    farm = _Capture()
    monkeypatch.setattr("qrt_ray.cli._connect", lambda args: farm)
    argv = ["submit", str(path), "--param", "theta=0.5", "--param", "phi=1e-3"]
    assert main(argv) == 0
    assert capsys.readouterr().out.strip() == "job-1"
    assert "rx(0.5)" in farm.texts[0] and "rz(0.001)" in farm.texts[0]
    # a missing value says how to give it; malformed ones name the option
    assert main(["submit", str(path), "--param", "theta=0.5"]) == 2
    assert "--param phi=0.5" in capsys.readouterr().err
    for bad in ("theta", "theta=x", "=1", "theta=nan"):
        assert main(["submit", str(path), "--param", bad]) == 2
        assert "expected NAME=VALUE" in capsys.readouterr().err
    assert main(["submit", str(path), "--param", "theta=1", "--param", "theta=2"]) == 2
    assert "given twice" in capsys.readouterr().err
