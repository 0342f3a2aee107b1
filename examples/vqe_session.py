"""VQE of a 4-qubit Heisenberg chain in a Session: one device, comparable iterations.

The optimizer (COBYLA) asks the Estimator for the energy of each trial state; the
Session keeps every iteration on the device placement chose for the first one, and
resilience level 1 removes readout error. Prints the energy at each iteration, the
best found and the exact ground-state energy.

    python examples/vqe_session.py              # about 2 minutes on 2 cores
    python examples/vqe_session.py --iterations 15 --level 0
"""

from __future__ import annotations

import argparse

import numpy as np
from qiskit import QuantumCircuit
from qiskit.circuit import ParameterVector
from qiskit.quantum_info import SparsePauliOp
from scipy.optimize import minimize

from qrt_ray import QuantumRuntime
from qrt_ray.config import load_farm_config_text
from qrt_ray.primitives import Estimator, Session

FARM = """
name: examples
devices:
  - {name: nairobi, backend: FakeNairobiV2, price_per_shot_usd: 0.00002, price_per_job_usd: 0.02}
  - {name: guadalupe, backend: FakeGuadalupeV2, price_per_shot_usd: 0.00002,
     price_per_job_usd: 0.02}
"""


def heisenberg(n: int) -> SparsePauliOp:
    """XX + YY + ZZ on each neighbouring pair of an open chain."""
    terms = []
    for i in range(n - 1):
        for p in "XYZ":
            label = ["I"] * n
            label[n - 1 - i] = label[n - 2 - i] = p
            terms.append(("".join(label), 1.0))
    return SparsePauliOp.from_list(terms)


def ansatz(n: int, reps: int) -> QuantumCircuit:
    """Ry layers with a CX ladder between them, starting from the Neel state."""
    theta = ParameterVector("theta", n * (reps + 1))
    qc = QuantumCircuit(n)
    for q in range(1, n, 2):
        qc.x(q)
    k = 0
    for r in range(reps + 1):
        for q in range(n):
            qc.ry(theta[k], q)
            k += 1
        if r < reps:
            for q in range(n - 1):
                qc.cx(q, q + 1)
    return qc


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--qubits", type=int, default=4)
    parser.add_argument("--iterations", type=int, default=60)
    parser.add_argument("--level", type=int, default=1, choices=[0, 1, 2])
    args = parser.parse_args()

    hamiltonian = heisenberg(args.qubits)
    exact = float(np.linalg.eigvalsh(hamiltonian.to_matrix()).min())
    circuit = ansatz(args.qubits, reps=2)
    history: list[float] = []
    with (
        # the farm `qrt up` runs, if one does; else this small one, for this run only
        QuantumRuntime.local(load_farm_config_text(FARM), attach=True) as rt,
        Session(rt) as session,
    ):
        estimator = Estimator(mode=session)
        estimator.options.resilience_level = args.level
        estimator.options.default_precision = 0.03

        def energy(params: np.ndarray) -> float:
            result = estimator.run([(circuit, hamiltonian, params)]).result()[0]
            value = float(result.data.evs)
            history.append(value)
            print(
                f"iteration {len(history):3d}  energy {value:8.4f} +- {float(result.data.stds):.4f}"
                f"  on {result.qrt['device']}"
            )
            return value

        rng = np.random.default_rng(7)
        start = rng.uniform(-0.1, 0.1, circuit.num_parameters)
        minimize(energy, start, method="COBYLA", options={"maxiter": args.iterations})
        details = session.details()
    best = min(history)
    print(
        f"\nexact ground energy {exact:.4f}; best found {best:.4f} "
        f"({abs(best - exact) / abs(exact):.1%} above it) in {len(history)} iterations"
    )
    print(
        f"session {details['id']} ran every iteration on {details['device']} "
        f"(calibrations seen: {', '.join(details['calibrations'])})"
    )


if __name__ == "__main__":
    main()
