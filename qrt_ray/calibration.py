"""Read a device's calibration out of a fake IBM backend into a plain snapshot.

The devices of a farm are Aer simulators modelled on the fake backends of
``qiskit_ibm_runtime.fake_provider``. This module turns a backend's ``Target`` into a
:class:`~qrt_ray.models.CalibrationSnapshot`: plain numbers (seconds, probabilities)
that policies can read and actors can pass around, and that
:mod:`qrt_ray.noise` turns back into a noise model. A snapshot's ``calibration_id``
is a hash of its parameters, so equal calibrations share compiled circuits and noise
models, and any drift gets a new id.
"""

from __future__ import annotations

import dataclasses
import functools
import hashlib
import inspect
import json
import statistics
from collections.abc import Iterable
from typing import Any

from qiskit.circuit import ControlFlowOp, Delay, Measure
from qiskit.providers import BackendV2
from qiskit.transpiler import Target

from qrt_ray.errors import ValidationError
from qrt_ray.models import CalibrationSnapshot, GateCalibration

# Used only when *no* qubit of a device reports T1 (or T2): a typical superconducting
# transmon value. Infinite times would silently switch relaxation noise off.
FALLBACK_COHERENCE_S = 100e-6
_ID_HASH_CHARS = 12


@functools.cache
def fake_backend_names() -> tuple[str, ...]:
    """Names of every fake backend class that :func:`load_backend` can build, sorted."""
    from qiskit_ibm_runtime import fake_provider
    from qiskit_ibm_runtime.fake_provider.fake_backend import FakeBackendV2

    return tuple(
        sorted(
            name
            for name, obj in vars(fake_provider).items()
            if inspect.isclass(obj) and issubclass(obj, FakeBackendV2) and obj is not FakeBackendV2
        )
    )


@functools.cache
def load_backend(backend_name: str) -> BackendV2:
    """Build (once per process) the fake backend called ``backend_name``.

    The instance is shared between callers: treat it and its ``target`` as read-only
    (:func:`qrt_ray.noise.target_from_snapshot` copies before it changes anything).

    Args:
        backend_name: class name in ``qiskit_ibm_runtime.fake_provider``, e.g.
            ``"FakeManilaV2"``.

    Raises:
        ValidationError: no fake backend has that name.
    """
    if backend_name not in fake_backend_names():
        raise ValidationError(
            f"backend_name={backend_name!r} is not a fake backend of "
            f"qiskit_ibm_runtime.fake_provider; valid names include "
            f"{', '.join(fake_backend_names()[:8])}, ..."
        )
    from qiskit_ibm_runtime import fake_provider

    return getattr(fake_provider, backend_name)()


def snapshot_from_backend(
    device: str, backend: BackendV2, taken_at: float | None = None
) -> CalibrationSnapshot:
    """Read one calibration snapshot of ``device`` from ``backend.target``.

    Values a backend does not report (``None``) are replaced by the median of the
    same quantity on the device's other qubits or gate instances, so one missing
    number neither switches noise off (error 0, T1 = inf) nor invents an outlier.

    Args:
        device: farm name of the device; prefixes the calibration id.
        backend: a BackendV2 (normally from :func:`load_backend`).
        taken_at: unix seconds of the calibration; by default the backend's own
            ``last_update_date`` where it has one, else 0.0.

    Returns:
        The snapshot, with a content-derived ``calibration_id``.
    """
    target: Target = backend.target
    num_qubits = target.num_qubits or 0
    qubit_props = list(target.qubit_properties or [None] * num_qubits)
    t1 = _fill_missing([getattr(p, "t1", None) for p in qubit_props], FALLBACK_COHERENCE_S)
    t2 = _fill_missing([getattr(p, "t2", None) for p in qubit_props], FALLBACK_COHERENCE_S)
    measure = target.get("measure") or {}
    readout = _fill_missing(
        [getattr(measure.get((q,)), "error", None) for q in range(num_qubits)], 0.0
    )
    gates = _gate_calibrations(target)
    two_qubit_edges = {g.qubits for g in gates if len(g.qubits) == 2}
    snapshot = CalibrationSnapshot(
        calibration_id="",
        device=device,
        taken_at=_backend_timestamp(backend) if taken_at is None else float(taken_at),
        num_qubits=num_qubits,
        t1_s=tuple(t1),
        t2_s=tuple(t2),
        readout_error=tuple(readout),
        gates=gates,
        coupling_map=tuple(sorted(two_qubit_edges)),  # type: ignore[arg-type]
        native_gates=tuple(sorted({g.gate for g in gates})),
    )
    return with_recomputed_id(snapshot)


def calibration_id_for(snapshot: CalibrationSnapshot) -> str:
    """The id a snapshot's parameters deserve: ``"<device>-<12 hex of sha256>"``.

    Only the physical parameters are hashed: ``taken_at`` and the snapshot's current
    ``calibration_id`` are not, so re-reading an unchanged calibration gives the same
    id (and keeps compile and noise-model caches warm) while any changed number, gate
    or edge gives a new one.
    """
    content = {
        "num_qubits": snapshot.num_qubits,
        "t1_s": [float(x) for x in snapshot.t1_s],
        "t2_s": [float(x) for x in snapshot.t2_s],
        "readout_error": [float(x) for x in snapshot.readout_error],
        "gates": sorted(
            [g.gate, list(g.qubits), float(g.error), float(g.duration_s)] for g in snapshot.gates
        ),
        "coupling_map": sorted(list(edge) for edge in snapshot.coupling_map),
        "native_gates": sorted(snapshot.native_gates),
    }
    # json writes floats with repr(), which round-trips exactly: equal floats hash equal.
    canonical = json.dumps(content, sort_keys=True, separators=(",", ":"), allow_nan=True)
    digest = hashlib.sha256(canonical.encode()).hexdigest()
    return f"{snapshot.device}-{digest[:_ID_HASH_CHARS]}"


def with_recomputed_id(snapshot: CalibrationSnapshot) -> CalibrationSnapshot:
    """A copy of ``snapshot`` whose ``calibration_id`` matches its parameters.

    Use after changing parameters with :func:`dataclasses.replace` (e.g. to drift a
    calibration), so the new parameters never travel under the old id.
    """
    return dataclasses.replace(snapshot, calibration_id=calibration_id_for(snapshot))


def _gate_calibrations(target: Target) -> tuple[GateCalibration, ...]:
    """Every calibrated native gate instance of ``target``, sorted by (gate, qubits)."""
    raw: dict[str, list[tuple[tuple[int, ...], Any]]] = {}
    for name in target.operation_names:
        operation = target.operation_from_name(name)
        # Control flow is not a physical gate (the target stores those variadic ops as
        # classes); delay is idle time, already modelled by T1/T2; measure is the
        # readout error, kept apart in `readout_error`.
        if isinstance(operation, type | ControlFlowOp | Delay | Measure):
            continue
        props = target[name]
        if not props:
            continue
        instances = [(qargs, p) for qargs, p in props.items() if qargs is not None]
        # Reset has a duration but, on IBM devices, no error: without an error it
        # describes no gate quality, so it stays out unless one is reported.
        if name == "reset" and all(p is None or p.error is None for _, p in instances):
            continue
        raw[name] = instances
    gates: list[GateCalibration] = []
    for name, instances in raw.items():
        errors = _fill_missing([getattr(p, "error", None) for _, p in instances], 0.0)
        durations = _fill_missing([getattr(p, "duration", None) for _, p in instances], 0.0)
        gates.extend(
            GateCalibration(gate=name, qubits=tuple(qargs), error=err, duration_s=dur)
            for (qargs, _), err, dur in zip(instances, errors, durations, strict=True)
        )
    gates.sort(key=lambda g: (g.gate, g.qubits))
    return tuple(gates)


def _fill_missing(values: Iterable[float | None], fallback: float) -> list[float]:
    """Replace each None by the median of the other values (``fallback`` if none)."""
    values = list(values)
    known = [float(v) for v in values if v is not None]
    default = statistics.median(known) if known else fallback
    return [default if v is None else float(v) for v in values]


def _backend_timestamp(backend: BackendV2) -> float:
    """Unix seconds of the backend's calibration, or 0.0 when it has none."""
    properties = getattr(backend, "properties", None)
    if properties is None:
        return 0.0
    try:
        last_update = properties().last_update_date
        return float(last_update.timestamp())
    except (AttributeError, TypeError, ValueError, OSError):
        # Fake backends without a properties file (or a V2 backend whose properties()
        # means something else) have no timestamp; 0.0 marks "unknown".
        return 0.0


def calibration_to_json(snapshot: CalibrationSnapshot) -> str:
    """A snapshot as JSON text (data only: the store keeps calibration history this way)."""
    data = dataclasses.asdict(snapshot)
    return json.dumps(data, sort_keys=True, separators=(",", ":"))


def calibration_from_json(text: str) -> CalibrationSnapshot:
    """The snapshot :func:`calibration_to_json` wrote.

    Raises:
        ValueError: the text is not a calibration snapshot.
    """
    try:
        data = json.loads(text)
        gates = tuple(
            GateCalibration(
                g["gate"], tuple(g["qubits"]), float(g["error"]), float(g["duration_s"])
            )
            for g in data["gates"]
        )
        return CalibrationSnapshot(
            calibration_id=str(data["calibration_id"]),
            device=str(data["device"]),
            taken_at=float(data["taken_at"]),
            num_qubits=int(data["num_qubits"]),
            t1_s=tuple(float(x) for x in data["t1_s"]),
            t2_s=tuple(float(x) for x in data["t2_s"]),
            readout_error=tuple(float(x) for x in data["readout_error"]),
            gates=gates,
            coupling_map=tuple((int(a), int(b)) for a, b in data["coupling_map"]),
            native_gates=tuple(str(g) for g in data["native_gates"]),
        )
    except (KeyError, TypeError, ValueError) as exc:
        raise ValueError(f"not a stored calibration snapshot: {exc}") from None
