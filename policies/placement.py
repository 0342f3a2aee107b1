"""The foundation placement policy: the device with the fewest expected errors.

Pure: no Ray, no clock, no I/O. For a logical circuit and each device's calibration
it estimates how many errors one shot suffers, choosing the device's best qubits and
couplers as a noise-aware layout would, plus a routing allowance on sparse coupling
maps. It is deliberately simple and honest; the cost- and wait-aware composite policy
builds on the same inputs.
"""

from __future__ import annotations

import statistics
from collections.abc import Sequence
from dataclasses import dataclass

from qrt_ray.errors import DeviceUnavailableError, PlacementError
from qrt_ray.models import (
    CalibrationSnapshot,
    CircuitStats,
    DeviceSnapshot,
    DeviceStatus,
    Placement,
)

# A SWAP is three native 2-qubit gates; on heavy-hex and linear maps a 2-qubit gate
# between logical neighbours needs on average about one SWAP per few gates once the
# circuit is wider than a connected patch. The allowance is per extra qubit of width,
# so small circuits pay nothing.
_SWAP_2Q_GATES = 3
_ROUTING_PER_2Q_GATE_PER_QUBIT = 0.04


def _best(ordered: Sequence[float], k: int) -> float:
    """Mean of the ``k`` smallest of already-sorted values: what a noise-aware layout picks."""
    if not ordered:
        return 0.0
    chosen = ordered[: max(1, k)]
    return sum(chosen) / len(chosen)


@dataclass(frozen=True, slots=True)
class _SortedErrors:
    single: tuple[float, ...]
    double: tuple[float, ...]
    readout: tuple[float, ...]


# Sorting a 133-qubit calibration's errors costs more than the rest of a decision, and
# a calibration id names fixed values, so the sorted lists are kept per id. This is a
# cache of a pure function, not state: the same inputs always give the same output.
_SORTED: dict[str, _SortedErrors] = {}


def _sorted_errors(cal: CalibrationSnapshot) -> _SortedErrors:
    found = _SORTED.get(cal.calibration_id)
    if found is None:
        if len(_SORTED) > 256:
            _SORTED.clear()
        found = _SortedErrors(
            single=tuple(
                sorted(
                    g.error
                    for g in cal.gates
                    if len(g.qubits) == 1 and g.gate not in ("rz", "id", "delay")
                )
            ),
            double=tuple(sorted(g.error for g in cal.gates if len(g.qubits) == 2)),
            readout=tuple(sorted(cal.readout_error)),
        )
        _SORTED[cal.calibration_id] = found
    return found


def expected_errors(stats: CircuitStats, cal: CalibrationSnapshot) -> dict[str, float]:
    """Expected errors per shot of a circuit on a calibration, broken down by source.

    Returns:
        ``{"one_qubit": ..., "two_qubit": ..., "routing": ..., "readout": ..., "total": ...}``
    """
    width = stats.num_qubits
    errs = _sorted_errors(cal)
    # A logical 1-qubit gate becomes ~2 physical sx/x pulses (rz is virtual).
    one_q = 2 * stats.one_qubit_gates * _best(errs.single, width)
    # A logical multi-qubit gate (ccx, mcx) decomposes into ~6 native 2-qubit gates.
    logical_2q = stats.two_qubit_gates + 6 * stats.multi_qubit_gates
    two_q_err = _best(errs.double, max(1, width - 1)) if errs.double else 0.0
    two_q = logical_2q * two_q_err
    routing_gates = logical_2q * _ROUTING_PER_2Q_GATE_PER_QUBIT * max(0, width - 2)
    routing = routing_gates * _SWAP_2Q_GATES * two_q_err
    readout = stats.measurements * _best(errs.readout, width)
    total = one_q + two_q + routing + readout
    return {
        "one_qubit": one_q,
        "two_qubit": two_q,
        "routing": routing,
        "readout": readout,
        "total": total,
    }


def fitting_devices(width: int, devices: Sequence[DeviceSnapshot]) -> list[DeviceSnapshot]:
    """Devices large enough for the circuit and not OFFLINE (they may be busy)."""
    return [d for d in devices if d.num_qubits >= width and d.status is not DeviceStatus.OFFLINE]


def fewest_expected_errors(
    stats: Sequence[CircuitStats],
    devices: Sequence[DeviceSnapshot],
    *,
    pinned: str | None = None,
) -> Placement:
    """Rank accepting devices by total expected errors over a job's circuits.

    Args:
        stats: the job's circuits.
        devices: snapshots of every device in the farm.
        pinned: a device the user named; it is checked, not ranked.

    Returns:
        The best device, the ranking (device, expected errors) and a breakdown.

    Raises:
        PlacementError: no device in the farm could ever run the job (too wide, or the
            pinned device is unknown or too small); the message says what would fit.
        DeviceUnavailableError: devices fit, but none is accepting work right now.
    """
    if not devices:
        raise PlacementError("the farm has no devices; start one with `qrt up`")
    width = max(s.num_qubits for s in stats)
    widest = max(devices, key=lambda d: d.num_qubits)
    if pinned is not None:
        named = [d for d in devices if d.name == pinned]
        if not named:
            known = ", ".join(sorted(d.name for d in devices))
            raise PlacementError(f"device={pinned!r}: no such device; the farm has: {known}")
        if named[0].num_qubits < width:
            big = ", ".join(sorted(d.name for d in devices if d.num_qubits >= width)) or "none"
            raise PlacementError(
                f"device={pinned!r} has {named[0].num_qubits} qubits but the job needs "
                f"{width}; devices that fit: {big}"
            )
        candidates = named
    else:
        candidates = fitting_devices(width, devices)
        if not candidates:
            raise PlacementError(
                f"the job needs {width} qubits but the widest device, {widest.name!r}, "
                f"has {widest.num_qubits}; split the circuit or add a larger device"
            )
    scored: list[tuple[float, str, dict[str, float]]] = []
    for dev in candidates:
        if not dev.accepting:
            continue
        parts = [expected_errors(s, dev.calibration) for s in stats]
        total = statistics.fmean(p["total"] for p in parts)
        scored.append(
            (total, dev.name, {k: statistics.fmean(p[k] for p in parts) for k in parts[0]})
        )
    if not scored:
        states = ", ".join(f"{d.name}={d.status.value}/{d.queue_depth}q" for d in candidates)
        raise DeviceUnavailableError(f"no fitting device is accepting work now ({states})")
    scored.sort(key=lambda t: (t[0], t[1]))
    best_total, best_name, best_parts = scored[0]
    return Placement(
        device=best_name,
        ranking=tuple((name, round(total, 6)) for total, name, _ in scored),
        explanation={
            "policy": "fewest_expected_errors",
            "width": width,
            "expected_errors_per_shot": round(best_total, 6),
            "breakdown": {k: round(v, 6) for k, v in best_parts.items()},
            "pinned": pinned,
        },
    )
