"""The older backend surface user code still calls: ``configuration()``,
``properties()`` and ``status()`` of ``rt.backend(name)``.

Each is read from the device's current calibration and queue (a
:class:`~qrt_ray.models.DeviceSnapshot`), with the attribute and method names IBM's
backends use, so code such as ``backend.properties().t1(0)`` or
``backend.configuration().n_qubits`` runs unchanged. They are plain frozen
dataclasses with ``to_dict()``; none is sent anywhere.
"""

from __future__ import annotations

import dataclasses
import datetime as dt
from typing import Any

from qrt_ray.errors import ValidationError
from qrt_ray.models import DeviceSnapshot, DeviceStatus


@dataclasses.dataclass(frozen=True)
class BackendConfiguration:
    """What the device is: size, native gates, coupling map, limits."""

    backend_name: str
    backend_version: str
    n_qubits: int
    basis_gates: list[str]
    coupling_map: list[list[int]]
    max_shots: int
    max_experiments: int
    description: str
    simulator: bool = False  # a device of the farm, with a calibration, not an ideal one
    local: bool = False
    conditional: bool = True  # dynamic circuits run (qrt_ray.dynamic)
    memory: bool = False  # results are counts; the Sampler's bits are drawn from them
    open_pulse: bool = False

    def to_dict(self) -> dict[str, Any]:
        """The fields as a dict."""
        return dataclasses.asdict(self)


@dataclasses.dataclass(frozen=True)
class BackendProperties:
    """The device's current calibration: per-qubit T1, T2 and readout error, and the
    error and length of each native gate on each of its qubit tuples."""

    backend_name: str
    calibration_id: str
    last_update_date: dt.datetime
    t1_s: tuple[float, ...]
    t2_s: tuple[float, ...]
    readout_errors: tuple[float, ...]
    gates: dict[tuple[str, tuple[int, ...]], tuple[float, float]]  # (error, length s)

    def t1(self, qubit: int) -> float:
        """T1 of ``qubit`` in seconds."""
        return self.t1_s[self._qubit(qubit)]

    def t2(self, qubit: int) -> float:
        """T2 of ``qubit`` in seconds."""
        return self.t2_s[self._qubit(qubit)]

    def readout_error(self, qubit: int) -> float:
        """Probability that reading ``qubit`` returns the wrong bit."""
        return self.readout_errors[self._qubit(qubit)]

    def gate_error(self, gate: str, qubits: int | list[int] | tuple[int, ...]) -> float:
        """Error of native ``gate`` on ``qubits``."""
        return self._gate(gate, qubits)[0]

    def gate_length(self, gate: str, qubits: int | list[int] | tuple[int, ...]) -> float:
        """Duration of native ``gate`` on ``qubits`` in seconds."""
        return self._gate(gate, qubits)[1]

    def _qubit(self, qubit: int) -> int:
        if not isinstance(qubit, int) or not 0 <= qubit < len(self.t1_s):
            raise ValidationError(
                f"qubit={qubit!r}: {self.backend_name} has qubits 0 to {len(self.t1_s) - 1}"
            )
        return qubit

    def _gate(self, gate: str, qubits: Any) -> tuple[float, float]:
        key = (gate, (qubits,) if isinstance(qubits, int) else tuple(qubits))
        if key not in self.gates:
            raise ValidationError(
                f"{gate} on {list(key[1])} is not a calibrated gate of {self.backend_name}"
            )
        return self.gates[key]

    def to_dict(self) -> dict[str, Any]:
        """The calibration as a dict (gates keyed ``"name q0_q1"``)."""
        return {
            "backend_name": self.backend_name,
            "calibration_id": self.calibration_id,
            "last_update_date": self.last_update_date.isoformat(),
            "t1_s": list(self.t1_s),
            "t2_s": list(self.t2_s),
            "readout_errors": list(self.readout_errors),
            "gates": {
                f"{name} {'_'.join(map(str, qubits))}": {"error": e, "length_s": length}
                for (name, qubits), (e, length) in self.gates.items()
            },
        }


@dataclasses.dataclass(frozen=True)
class BackendStatus:
    """Whether the device takes work, and how much waits on it."""

    backend_name: str
    backend_version: str
    operational: bool
    pending_jobs: int
    status_msg: str

    def to_dict(self) -> dict[str, Any]:
        """The fields as a dict."""
        return dataclasses.asdict(self)


def configuration_of(
    snap: DeviceSnapshot, max_shots: int, max_experiments: int
) -> BackendConfiguration:
    """The configuration of a device as its snapshot describes it."""
    cal = snap.calibration
    return BackendConfiguration(
        backend_name=snap.name,
        backend_version="2",
        n_qubits=snap.num_qubits,
        basis_gates=sorted({*cal.native_gates, "measure", "reset", "delay"}),
        coupling_map=[list(pair) for pair in cal.coupling_map],
        max_shots=max_shots,
        max_experiments=max_experiments,
        description=f"qrt-ray device {snap.name}",
    )


def properties_of(snap: DeviceSnapshot) -> BackendProperties:
    """The current calibration of a device as backend properties."""
    cal = snap.calibration
    return BackendProperties(
        backend_name=snap.name,
        calibration_id=cal.calibration_id,
        last_update_date=dt.datetime.fromtimestamp(cal.taken_at, tz=dt.UTC),
        t1_s=tuple(cal.t1_s),
        t2_s=tuple(cal.t2_s),
        readout_errors=tuple(cal.readout_error),
        gates={(g.gate, tuple(g.qubits)): (g.error, g.duration_s) for g in cal.gates},
    )


def status_of(snap: DeviceSnapshot) -> BackendStatus:
    """Whether the device is ONLINE, and its queue."""
    online = snap.status is DeviceStatus.ONLINE
    message = "active" if online else (snap.status_reason or snap.status.value)
    return BackendStatus(
        backend_name=snap.name,
        backend_version="2",
        operational=online,
        pending_jobs=snap.queue_depth,
        status_msg=message,
    )
