"""Dynamical decoupling: X pulses in the idle windows of a compiled circuit.

The device schedules a compiled circuit on its own durations (ALAP or ASAP) and fills
each idle window with an X-X echo (Qiskit's ``PadDynamicalDecoupling``); what is left
idle becomes explicit delays. Only ``XX`` is offered: ``XpXm`` and ``XY4`` need pulses
(an X about -x, a Y) that these devices' native gates (x, sx, rz) do not play as one
pulse.

On the farm's simulated devices this can only cost: they model idle decay only on
explicit delays, so scheduling adds decay an unscheduled circuit does not see, and
their decay is Markovian (T1/T2), which an echo cannot refocus. On hardware, the echo
cancels slow noise and crosstalk that a simulator leaves out.
"""

from __future__ import annotations

from qiskit import QuantumCircuit
from qiskit.circuit.library import XGate
from qiskit.transpiler import PassManager, Target
from qiskit.transpiler.passes import (
    ALAPScheduleAnalysis,
    ASAPScheduleAnalysis,
    PadDynamicalDecoupling,
)

SEQUENCES = ("XX",)


def pad_dynamical_decoupling(
    circuit: QuantumCircuit, target: Target, *, sequence: str = "XX", scheduling: str = "alap"
) -> QuantumCircuit:
    """``circuit`` (compiled for ``target``) with X-X echoes on its idle qubits.

    Raises:
        ValueError: an unknown sequence or scheduling method.
    """
    if sequence not in SEQUENCES:
        raise ValueError(f"sequence={sequence!r}: use one of {', '.join(SEQUENCES)}")
    analysis = {"alap": ALAPScheduleAnalysis, "asap": ASAPScheduleAnalysis}.get(scheduling)
    if analysis is None:
        raise ValueError(f"scheduling={scheduling!r}: use 'alap' or 'asap'")
    manager = PassManager(
        [
            analysis(target=target),
            PadDynamicalDecoupling(target=target, dd_sequence=[XGate(), XGate()]),
        ]
    )
    return manager.run(circuit)
