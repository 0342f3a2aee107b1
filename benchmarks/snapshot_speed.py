"""How long a device's calibration snapshot takes, beside Aer's own noise model build.

A device actor reads its fake backend's ``Target`` into a :class:`CalibrationSnapshot`
at start and after every recalibration; Aer users build ``NoiseModel.from_backend``
from the same target. Both are timed per backend of the default farm, best of
``--repeats`` runs, the target built once beforehand (it is cached per process).

    python benchmarks/snapshot_speed.py
"""

from __future__ import annotations

import argparse
import os
import sys
import time
from pathlib import Path

os.environ.setdefault("RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER", "0")
sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from qiskit_aer.noise import NoiseModel

from qrt_ray.calibration import load_backend, snapshot_from_backend
from qrt_ray.config import load_farm_config
from qrt_ray.render import table


def best_of(repeats: int, fn: object) -> float:
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        fn()  # type: ignore[operator]
        times.append(time.perf_counter() - start)
    return min(times)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=3, help="runs per figure (best kept)")
    args = parser.parse_args()
    if args.repeats < 1:
        parser.error("--repeats must be >= 1")
    rows = []
    for dev in load_farm_config().devices:
        backend = load_backend(dev.backend)
        _ = backend.target
        snap_s = best_of(args.repeats, lambda b=backend, n=dev.name: snapshot_from_backend(n, b))
        aer_s = best_of(args.repeats, lambda b=backend: NoiseModel.from_backend(b))
        rows.append(
            [
                dev.name,
                backend.num_qubits,
                f"{snap_s * 1000:.1f}",
                f"{aer_s * 1000:.1f}",
                f"{aer_s / snap_s:.1f}x",
            ]
        )
    print(table(["device", "qubits", "qrt snapshot ms", "Aer noise model ms", "ratio"], rows))


if __name__ == "__main__":
    main()
