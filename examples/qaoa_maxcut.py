"""QAOA for MaxCut on a 5-node graph: Estimator for the cost, Sampler for the cut.

The cost is the expected number of cut edges, from the Estimator (resilience level 1)
in a Session; COBYLA tunes the p = 2 angles. Then the Sampler draws bitstrings from
the best circuit and the best cut among them is compared with the true maximum (found
by trying every cut). Prints convergence and the result.

    python examples/qaoa_maxcut.py                  # embedded farm; ~1 min on 2 cores
    python examples/qaoa_maxcut.py --address auto   # the farm `qrt up` started
"""

from __future__ import annotations

import argparse
import contextlib
import itertools
from collections.abc import Iterator

import numpy as np
from qiskit import QuantumCircuit
from qiskit.circuit import ParameterVector
from qiskit.quantum_info import SparsePauliOp
from scipy.optimize import minimize

from qrt_ray import QuantumRuntime, connect
from qrt_ray.config import load_farm_config_text
from qrt_ray.primitives import Estimator, Sampler, Session

FARM = """
name: examples
devices:
  - {name: nairobi, backend: FakeNairobiV2, price_per_shot_usd: 0.00002, price_per_job_usd: 0.02}
"""
EDGES = [(0, 1), (1, 2), (2, 3), (3, 4), (4, 0), (0, 2)]
NODES = 5


def cut_operator() -> SparsePauliOp:
    """Number of cut edges: sum over edges of (1 - Z_i Z_j) / 2."""
    terms = [("I" * NODES, len(EDGES) / 2)]
    for i, j in EDGES:
        label = ["I"] * NODES
        label[NODES - 1 - i] = label[NODES - 1 - j] = "Z"
        terms.append(("".join(label), -0.5))
    return SparsePauliOp.from_list(terms).simplify()


def qaoa(p: int) -> QuantumCircuit:
    gamma, beta = ParameterVector("gamma", p), ParameterVector("beta", p)
    qc = QuantumCircuit(NODES)
    qc.h(range(NODES))
    for layer in range(p):
        for i, j in EDGES:
            qc.rzz(2 * gamma[layer], i, j)
        qc.rx(2 * beta[layer], range(NODES))
    return qc


def cut_size(bits: str) -> int:
    x = bits[::-1]  # bit k of the string is node k
    return sum(x[i] != x[j] for i, j in EDGES)


@contextlib.contextmanager
def runtime(address: str | None) -> Iterator[QuantumRuntime]:
    """The farm at ``address`` (started by ``qrt up``), else the one ``qrt up`` runs
    here, else an embedded one of our own."""
    if address:
        with connect(address) as rt:  # leaving detaches; the farm runs on
            yield rt
        return
    # the farm `qrt up` runs, if one does; else this small one, for this run only
    with QuantumRuntime.local(load_farm_config_text(FARM), attach=True) as rt:
        yield rt


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--layers", type=int, default=2)
    parser.add_argument("--iterations", type=int, default=30)
    parser.add_argument(
        "--address", help="Ray address of a farm started by `qrt up` (default: embedded)"
    )
    args = parser.parse_args()

    best_cut = max(cut_size("".join(b)) for b in itertools.product("01", repeat=NODES))
    cost, circuit = cut_operator(), qaoa(args.layers)
    history: list[float] = []
    with runtime(args.address) as rt, Session(rt) as session:
        estimator = Estimator(mode=session, options={"default_precision": 0.03})

        def negative_cut(params: np.ndarray) -> float:
            value = float(estimator.run([(circuit, cost, params)]).result()[0].data.evs)
            history.append(value)
            print(f"iteration {len(history):3d}  expected cut {value:6.3f}")
            return -value

        start = np.full(circuit.num_parameters, 0.4)
        found = minimize(negative_cut, start, method="COBYLA", options={"maxiter": args.iterations})
        measured = circuit.assign_parameters(found.x)
        measured.measure_all()
        samples = Sampler(mode=session).run([measured], shots=2000).result()[0]
    counts = samples.data.meas.get_counts()
    top = max(counts, key=lambda b: (cut_size(b), counts[b]))
    print(f"\nbest expected cut {max(history):.3f} of a maximum {best_cut}")
    print(
        f"best sampled cut {top} cuts {cut_size(top)} edges "
        f"({counts[top]} of 2000 shots); the maximum is {best_cut}"
    )


if __name__ == "__main__":
    main()
