"""A device's probes: canary circuits and readout measurements, run beside its queue.

Canaries compare what a device really does now with what its calibration predicts
(the calibration manager acts on the gap); readout measurements give the error
mitigation its confusion figures. Both run a few small circuits straight on the
simulator, never through the queue. Plain Python: :class:`~qrt_ray.actors.device.Device`
owns one.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Mapping, Sequence
from typing import Any

import numpy as np

from qrt_ray.aer import method_options, sim_method_for, simulate
from qrt_ray.errors import MitigationError, ValidationError
from qrt_ray.mitigation import pipelines
from qrt_ray.mitigation.readout import ReadoutCalibration
from qrt_ray.mitigation.readout_cache import ReadoutCache
from qrt_ray.models import CalibrationSnapshot
from qrt_ray.noise import NoiseModelCache
from qrt_ray.policies.canary import CanaryResult, CanarySpec, success_probability

logger = logging.getLogger("qrt.device")
# The prediction of a canary samples the calibration's own noise this many times more
# than the canary itself, so its error is small beside the canary's shot noise.
_PREDICTION_SHOTS_FACTOR = 8


class Probes:
    """Canaries and readout measurements of one device.

    Args:
        name: the device.
        target: the device's transpiler target as the backend describes it.
        noise: builds (and caches) the noisy simulator of a calibration.
        calibration: the device's reported calibration now.
        true_calibration: what the device really is now (drifted, faulty).
        gpu: the device's GPU setting; ``threads``: CPU threads a call may use.
        clock: wall clock (readout figures age by it).
    """

    def __init__(
        self,
        name: str,
        target: Any,
        noise: NoiseModelCache,
        calibration: Callable[[], CalibrationSnapshot],
        true_calibration: Callable[[], CalibrationSnapshot],
        *,
        gpu: str,
        threads: int,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self.name = name
        self._target = target
        self._noise = noise
        self._calibration = calibration
        self._true = true_calibration
        self._gpu = gpu
        self._threads = threads
        self._predicted: dict[tuple[str, str, str], float] = {}
        self._canary_circuits: dict[str, Any] = {}
        self._readout = ReadoutCache(self._measure_readout, clock)

    def keep_only(self, calibration_id: str) -> None:
        """Forget canary predictions of other calibrations (they hold for one only)."""
        self._predicted = {k: v for k, v in self._predicted.items() if k[0] == calibration_id}

    def run_canaries(
        self,
        specs: Sequence[CanarySpec],
        shots: int,
        seed: int | None = None,
        versions: Mapping[str, Sequence[str]] | None = None,
    ) -> list[CanaryResult]:
        """Run canary circuits on the true noise; predict them from the calibration.

        ``versions``: per post-processing method, the versions to apply to each
        canary's counts, the served one first (None: each method's default). The
        served one's value is recorded under the method's name, the others under
        :func:`~qrt_ray.mitigation.pipelines.shadow_key`.

        Each canary is compiled onto its own qubits. The prediction samples the
        current calibration's noise model (``_PREDICTION_SHOTS_FACTOR`` times the
        shots, once per calibration and canary); the measurement runs what the device
        really is now. Canaries do not go through the queue: a device actor runs them
        on another thread, beside any batch in progress (they are a few small
        circuits).

        The counts and any readout figures measured for the round come from one
        moment of the device (one true calibration). On a device drifting fast,
        figures measured a moment after the counts assume more error than the
        counts carry and push the matrix solve past 1 (on the test farm that drifts
        an hour a second: 1.03-1.39 on every round after a recalibration); measured
        before them, they delay the counts, and a freshly recalibrated device looks
        drifted again. Figures reused from an earlier round are older than the
        counts, as a job's are.
        """
        cal = self._calibration()
        circuits = [self._canary_circuit(spec) for spec in specs]
        wanted = versions or {m: [v] for m, v in pipelines.DEFAULT_VERSIONS.items()}
        true = self._true()  # one moment of the device for the whole round
        counts: list[dict[str, int]] = []
        measured = self._sample(true, specs, circuits, shots, seed, counts)
        figures = [self._readout_figures(cal, true, spec, shots, seed, wanted) for spec in specs]
        mitigated = [
            self._mitigated(spec, c, f, wanted)
            for spec, c, f in zip(specs, counts, figures, strict=True)
        ]
        todo = [
            i
            for i, spec in enumerate(specs)
            if (cal.calibration_id, spec.name, spec.qasm) not in self._predicted
        ]
        if todo:
            got = self._sample(
                cal,
                [specs[i] for i in todo],
                [circuits[i] for i in todo],
                shots * _PREDICTION_SHOTS_FACTOR,
                seed=1,
            )
            for i, p in zip(todo, got, strict=True):
                self._predicted[(cal.calibration_id, specs[i].name, specs[i].qasm)] = p
        return [
            CanaryResult(
                spec.name,
                self._predicted[(cal.calibration_id, spec.name, spec.qasm)],
                m,
                shots,
                mit,
            )
            for spec, m, mit in zip(specs, measured, mitigated, strict=True)
        ]

    def _readout_figures(
        self,
        cal: CalibrationSnapshot,
        true: CalibrationSnapshot,
        spec: CanarySpec,
        shots: int,
        seed: int | None,
        versions: Mapping[str, Sequence[str]],
    ) -> tuple[np.ndarray, np.ndarray] | None:
        """P(1|0) and P(0|1) of the canary's qubits (clbit k reads ``spec.qubits[k]``)
        on this calibration, reused for an hour, measured on ``true`` where stale; None
        where no readout version is wanted or measuring failed (logged)."""
        if not versions.get("readout"):
            return None
        try:
            readout, _ = self._readout.get(
                self.name,
                cal.calibration_id,
                spec.qubits,
                shots=shots,
                max_age_s=3600.0,
                seed=seed,
                measure=lambda q, n, s: self._measure_readout(q, n, s, true),
            )
            return readout.errors_for(spec.qubits)
        except (MitigationError, ValueError) as exc:
            logger.warning("%s: readout errors of canary %s failed: %s", self.name, spec.name, exc)
            return None

    def _mitigated(
        self,
        spec: CanarySpec,
        counts: dict[str, int],
        figures: tuple[np.ndarray, np.ndarray] | None,
        versions: Mapping[str, Sequence[str]],
    ) -> dict[str, float | None]:
        """The canary's success probability after each mitigation version (None where
        it failed): how much mitigation helps on circuits with known answers, and
        whether a candidate version agrees with the served one. ``figures``: the
        readout errors of the canary's qubits (None: they could not be measured).
        """
        readout_versions = list(versions.get("readout", ()))
        if not readout_versions:
            return {}
        keys = ["readout", *(pipelines.shadow_key("readout", v) for v in readout_versions[1:])]
        if figures is None:
            return dict.fromkeys(keys)
        p01, p10 = figures
        joined = {k.replace(" ", ""): v for k, v in counts.items()}
        out: dict[str, float | None] = {}
        for key, version in zip(keys, readout_versions, strict=True):
            try:
                quasi = pipelines.pipeline("readout", version).apply(joined, p01, p10, None, False)
            except (MitigationError, ValueError, ValidationError) as exc:
                logger.warning(
                    "%s: readout mitigation %s of canary %s failed: %s",
                    self.name,
                    version,
                    spec.name,
                    exc,
                )
                out[key] = None
                continue
            # not clipped: a quasi-probability above 1 is over-correction, an error too
            out[key] = sum(p for k, p in quasi.probabilities.items() if k in spec.ideal)
        return out

    def readout_calibration(
        self, qubits: Sequence[int], shots: int, max_age_s: float, seed: int | None = None
    ) -> tuple[ReadoutCalibration, int]:
        """Readout errors of these physical qubits on the current calibration.

        Figures measured for this calibration less than ``max_age_s`` ago are reused;
        the others are measured now (two circuits, beside any batch in progress, like
        canaries).

        Returns:
            (the readout calibration, device shots spent measuring now: 0 if reused).

        Raises:
            ValidationError: a qubit is not on this device.
        """
        cal = self._calibration()
        bad = [q for q in qubits if not 0 <= q < cal.num_qubits]
        if bad:
            raise ValidationError(
                f"qubits {bad} are not on {self.name} (qubits 0-{cal.num_qubits - 1})"
            )
        return self._readout.get(
            self.name, cal.calibration_id, qubits, shots=shots, max_age_s=max_age_s, seed=seed
        )

    def _measure_readout(
        self,
        qubits: Sequence[int],
        shots: int,
        seed: int | None,
        true: CalibrationSnapshot | None = None,
    ) -> tuple[list[float], list[float]]:
        """P(1|0) and P(0|1) of each qubit, measured on ``true`` (None: the true
        noise now)."""
        from qiskit import ClassicalRegister, QuantumCircuit

        circuits = []
        for prepare_one in (False, True):
            qc = QuantumCircuit(self._calibration().num_qubits)
            creg = ClassicalRegister(len(qubits), "c")
            qc.add_register(creg)
            if prepare_one:
                qc.x(list(qubits))
            qc.measure(list(qubits), creg)
            circuits.append(qc)
        # independent qubits in product states: a matrix product state is exact and
        # cheap for any number of them, where a (GPU) statevector would need 2^n
        sim, _, _ = self._noise.get(
            true if true is not None else self._true(),
            self._target,
            gpu="never",
            max_parallel_threads=self._threads,
        )
        result = simulate(
            sim,
            circuits,
            shots=shots,
            seed_simulator=seed,
            **method_options("matrix_product_state"),
        )
        n = len(qubits)
        ones = [[0] * n, [0] * n]
        for which in (0, 1):
            for key, count in result.get_counts(which).items():
                bits = key.replace(" ", "")
                for k in range(n):
                    if bits[n - 1 - k] == "1":
                        ones[which][k] += count
        p01 = [c / shots for c in ones[0]]
        p10 = [1 - c / shots for c in ones[1]]
        return p01, p10

    def _canary_circuit(self, spec: CanarySpec) -> Any:
        hit = self._canary_circuits.get(spec.name + spec.qasm)
        if hit is None:
            from qiskit import transpile

            from qrt_ray.circuits import parse_qasm

            hit = transpile(
                parse_qasm(spec.qasm, arg=spec.name),
                target=self._target,
                initial_layout=list(spec.qubits),
                optimization_level=1,
                seed_transpiler=0,
            )
            self._canary_circuits[spec.name + spec.qasm] = hit
        return hit

    def _sample(
        self,
        calibration: CalibrationSnapshot,
        specs: Sequence[CanarySpec],
        circuits: Sequence[Any],
        shots: int,
        seed: int | None,
        counts_out: list[dict[str, int]] | None = None,
    ) -> list[float]:
        """Each canary's success probability; with ``counts_out``, also its counts."""
        sim, _, gpu = self._noise.get(
            calibration,
            self._target,
            gpu=self._gpu,
            max_parallel_threads=self._threads,
        )
        out: list[float | None] = [None] * len(specs)
        counts: list[dict[str, int] | None] = [None] * len(specs)
        by_method: dict[str | None, list[int]] = {}
        for i, spec in enumerate(specs):
            method = None if gpu else sim_method_for(len(spec.qubits), shots)
            by_method.setdefault(method, []).append(i)
        for method, idx in by_method.items():
            options = method_options(method, max(len(specs[i].qubits) for i in idx))
            result = simulate(
                sim, [circuits[i] for i in idx], shots=shots, seed_simulator=seed, **options
            )
            for k, i in enumerate(idx):
                counts[i] = result.get_counts(k)
                out[i] = success_probability(counts[i], specs[i].ideal)
        if counts_out is not None:
            counts_out.extend(counts)  # type: ignore[arg-type]
        return [float(p) for p in out]  # type: ignore[arg-type]
