"""A Qiskit ``BackendV2`` facade over one farm device: ``rt.backend(name)``.

``transpile(circuit, backend)`` compiles against the device's current calibration
(its target: native gates, coupling map, errors and durations), and
``backend.run(circuits, shots=...)`` submits a durable farm job pinned to the device
and returns a Qiskit job whose ``result().get_counts()`` works as usual. The farm
compiles what it gets again for the calibration current when the job runs, so a
circuit transpiled before a recalibration still runs correctly.
"""

from __future__ import annotations

import time
from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

import ray
from qiskit.circuit import (
    BreakLoopOp,
    ContinueLoopOp,
    ForLoopOp,
    IfElseOp,
    SwitchCaseOp,
    WhileLoopOp,
)
from qiskit.providers import BackendV2, JobStatus, JobV1, Options
from qiskit.result import Result
from qiskit.transpiler import Target

from qrt_ray import farm as farm_mod
from qrt_ray.errors import ValidationError
from qrt_ray.lifecycle import JobState
from qrt_ray.primitives.backend_info import (
    BackendConfiguration,
    BackendProperties,
    BackendStatus,
    configuration_of,
    properties_of,
    status_of,
)

if TYPE_CHECKING:
    from qrt_ray.client import JobHandle, QuantumRuntime

# the target is fetched again when the device's calibration may have changed
_TARGET_TTL_S = 30.0


class _FarmBackend(BackendV2):
    """What every farm backend shares: its runtime, options and ``run``."""

    runtime: QuantumRuntime

    @property
    def max_circuits(self) -> int:
        from qrt_ray.models import MAX_CIRCUITS_PER_JOB

        return MAX_CIRCUITS_PER_JOB

    @classmethod
    def _default_options(cls) -> Options:
        return Options(shots=1024, seed_simulator=None, priority=5, tenant="default")

    def _where(self) -> dict[str, Any]:
        """Where this backend's jobs go (a device, or noiseless on any)."""
        raise NotImplementedError

    def run(self, run_input: Any, **options: Any) -> QrtBackendJob:
        """Submit circuits; returns a Qiskit job.

        Args:
            run_input: a QuantumCircuit or a list of them (or OpenQASM text).
            **options: ``shots``, ``seed_simulator``, ``priority``, ``tenant``.

        Raises:
            ValidationError: an unknown option, or invalid circuits or values.
        """
        unknown = set(options) - set(self.options.__dict__)
        if unknown:
            raise ValidationError(
                f"backend.run: unknown options {sorted(unknown)}; use "
                f"{', '.join(sorted(self.options.__dict__))}"
            )
        merged = {**self.options.__dict__, **options}
        handle = self.runtime.submit(
            run_input,
            shots=merged["shots"],
            seed=merged["seed_simulator"],
            priority=merged["priority"],
            tenant=merged["tenant"],
            **self._where(),
        )
        circuits = (
            run_input
            if isinstance(run_input, Sequence) and not isinstance(run_input, str)
            else [run_input]
        )
        names = [getattr(c, "name", f"circuit-{i}") for i, c in enumerate(circuits)]
        return QrtBackendJob(self, handle, names)


class QrtBackend(_FarmBackend):
    """One device of a qrt farm as a Qiskit backend."""

    def __init__(self, runtime: QuantumRuntime, name: str) -> None:
        super().__init__(name=name, description=f"qrt-ray device {name}", backend_version="2")
        self.runtime = runtime
        self._target: Target | None = None
        self._calibration_id = ""
        self._fetched_at = 0.0

    def _refresh(self) -> None:
        handle = farm_mod.device_handle(self.name, self.runtime.namespace)
        self._calibration_id, self._target = ray.get(handle.compile_target.remote())
        self._fetched_at = time.monotonic()

    @property
    def target(self) -> Target:
        """The device's transpiler target on its current calibration."""
        if self._target is None or time.monotonic() - self._fetched_at > _TARGET_TTL_S:
            self._refresh()
        assert self._target is not None
        return self._target

    @property
    def calibration_id(self) -> str:
        """The calibration the current target describes."""
        _ = self.target
        return self._calibration_id

    def _snapshot(self) -> Any:
        for snap in self.runtime.devices():
            if snap.name == self.name:
                return snap
        raise ValidationError(f"device {self.name!r} is no longer a device of this farm")

    def configuration(self) -> BackendConfiguration:
        """Size, native gates, coupling map and limits (``n_qubits``, ``basis_gates``,
        ``coupling_map``, ``max_shots``, ...), as older backend code reads them."""
        from qrt_ray.models import MAX_CIRCUITS_PER_JOB, MAX_SHOTS

        return configuration_of(self._snapshot(), MAX_SHOTS, MAX_CIRCUITS_PER_JOB)

    def properties(self) -> BackendProperties:
        """The current calibration: ``t1(q)``, ``t2(q)``, ``readout_error(q)``,
        ``gate_error(gate, qubits)``, ``gate_length(gate, qubits)``."""
        return properties_of(self._snapshot())

    def status(self) -> BackendStatus:
        """``operational`` (the device is ONLINE) and ``pending_jobs`` (its queue)."""
        return status_of(self._snapshot())

    def _where(self) -> dict[str, Any]:
        return {"device": self.name}

    def __repr__(self) -> str:
        return f"QrtBackend({self.name!r})"


# the name rt.backend() gives the farm's noiseless simulator (no device may take it)
IDEAL = "ideal"
_CONTROL_FLOW = (
    (IfElseOp, "if_else"),
    (ForLoopOp, "for_loop"),
    (WhileLoopOp, "while_loop"),
    (SwitchCaseOp, "switch_case"),
    (BreakLoopOp, "break_loop"),
    (ContinueLoopOp, "continue_loop"),
)


class QrtIdealBackend(_FarmBackend):
    """The farm as a noiseless simulator: ``rt.backend("ideal")``.

    Its target has the devices' native gates on any qubits and no coupling map, so
    ``transpile(circuit, backend)`` keeps a circuit's width (no layout), as with
    ``AerSimulator()``. Each job goes to the device placement picks and runs there
    without noise (``JobSpec.noise="ideal"``): it is queued, recorded and billed as
    any job.
    """

    def __init__(self, runtime: QuantumRuntime) -> None:
        super().__init__(
            name=IDEAL, description="qrt-ray devices simulated without noise", backend_version="2"
        )
        self.runtime = runtime
        self._target: Target | None = None

    @property
    def target(self) -> Target:
        """The native gates every device has (global), measure, reset, delay and
        control flow, on as many qubits as the widest device."""
        if self._target is None:
            devices = self.runtime.devices()
            if not devices:
                raise ValidationError("the farm has no devices to simulate on")
            common = set(devices[0].calibration.native_gates)
            for snap in devices[1:]:
                common &= set(snap.calibration.native_gates)
            gates = sorted(common or devices[0].calibration.native_gates)
            target = Target.from_configuration(
                basis_gates=[*gates, "measure", "reset", "delay"],
                num_qubits=max(d.num_qubits for d in devices),
            )
            for op, name in _CONTROL_FLOW:
                target.add_instruction(op, name=name)
            self._target = target
        return self._target

    def _where(self) -> dict[str, Any]:
        return {"noise": "ideal"}  # placement picks the device

    def __repr__(self) -> str:
        return "QrtIdealBackend()"


class QrtBackendJob(JobV1):
    """A farm job seen as a Qiskit job."""

    def __init__(self, backend: _FarmBackend, handle: JobHandle, names: list[str]) -> None:
        super().__init__(backend, handle.job_id)
        self._handle = handle
        self._names = names

    def submit(self) -> None:
        """Jobs are submitted by ``backend.run``; nothing to do."""

    def result(self, timeout: float | None = None) -> Result:
        """The counts as a Qiskit ``Result`` (one experiment per circuit)."""
        result = self._handle.result(timeout_s=timeout)
        meta = result.metadata
        experiments = []
        for name, circuit in zip(self._names, result.circuits, strict=True):
            experiments.append(
                {
                    "shots": circuit.shots,
                    "success": True,
                    "data": {"counts": dict(circuit.counts)},
                    "header": {"name": name},
                    "status": "DONE",
                    "seed_simulator": meta.seeds[0] if meta.seeds else None,
                }
            )
        return Result.from_dict(
            {
                "backend_name": meta.device,
                "backend_version": "2",
                "job_id": self.job_id(),
                "success": True,
                "results": experiments,
                "date": None,
                "status": "DONE",
                "header": {"calibration_id": meta.calibration_id},
            }
        )

    def status(self) -> JobStatus:
        """QUEUED, RUNNING, DONE, ERROR or CANCELLED."""
        state = self._handle.status()
        if state is JobState.DONE:
            return JobStatus.DONE
        if state is JobState.FAILED:
            return JobStatus.ERROR
        if state is JobState.CANCELLED:
            return JobStatus.CANCELLED
        if state in (JobState.QUEUED, JobState.COMPILING, JobState.PLACED):
            return JobStatus.QUEUED
        return JobStatus.RUNNING

    def cancel(self) -> bool:
        """Cancel the farm job if it is not final."""
        return self._handle.cancel()
