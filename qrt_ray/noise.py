"""Turn a calibration snapshot into the Aer simulator that plays the device.

A device is a fake IBM backend's ``Target`` (its gates, coupling map and timing)
with the numbers of one :class:`~qrt_ray.models.CalibrationSnapshot` written in, so
a drifted snapshot gives a drifted device. The noise model is made by Aer's own
``NoiseModel.from_backend`` from that target: depolarizing + thermal relaxation gate
errors, readout errors and relaxation on delays, exactly as Aer models the real
backend. Building it for a 133-qubit device takes seconds, so
:class:`NoiseModelCache` keeps the simulators of recent calibrations, and each noise
model keeps its serialized form, which Aer would otherwise rebuild on every run.
"""

from __future__ import annotations

import copy
import functools
import json
import logging
import os
import threading
import weakref
from collections import OrderedDict
from typing import Any, Literal

import qiskit_aer
from qiskit.providers import BackendV2, Options
from qiskit.transpiler import InstructionProperties, QubitProperties, Target
from qiskit_aer import AerSimulator
from qiskit_aer.noise import NoiseModel
from qiskit_aer.noise.noise_model import AerJSONEncoder

from qrt_ray.errors import DeviceUnavailableError, ValidationError
from qrt_ray.models import CalibrationSnapshot

logger = logging.getLogger(__name__)

GpuMode = Literal["auto", "never", "require"]
DEFAULT_CACHE_ENTRIES = 16

# The two fast paths here (a noise model serialized once, and a model cut to the
# qubits a call touches) read NoiseModel's private fields. They are used only on the
# qiskit-aer releases they were tested with, and only while those fields are there;
# elsewhere the plain NoiseModel runs: slower, never different.
AER_INTERNALS_TESTED = ((0, 17), (0, 18))
_AER_INTERNALS = (
    "_default_quantum_errors",
    "_local_quantum_errors",
    "_default_readout_error",
    "_local_readout_errors",
    "_noise_qubits",
)


def aer_internals_known(version: str | None = None) -> bool:
    """Whether this qiskit-aer (or ``version``) is one the fast paths were tested on,
    with the private NoiseModel fields they read."""
    text = qiskit_aer.__version__ if version is None else version
    try:
        release = tuple(int(part) for part in text.split(".")[:2])
    except ValueError:
        return False
    if release not in AER_INTERNALS_TESTED:
        return False
    plain = NoiseModel()
    return all(hasattr(plain, name) for name in _AER_INTERNALS)


_AER_FAST = aer_internals_known()
if not _AER_FAST:
    logger.warning(
        "qiskit-aer %s is not a release qrt-ray's noise-model fast paths were tested on "
        "(%s); using Aer's plain NoiseModel (slower per run, same results)",
        qiskit_aer.__version__,
        ", ".join(f"{a}.{b}" for a, b in AER_INTERNALS_TESTED),
    )


def target_from_snapshot(snapshot: CalibrationSnapshot, base_target: Target) -> Target:
    """A copy of ``base_target`` carrying the snapshot's T1/T2, gate and readout numbers.

    Everything the snapshot does not describe (control flow, delay, reset, measure
    durations, dt, qubit frequencies) is kept from ``base_target``, which is not
    changed.

    Raises:
        ValidationError: the snapshot does not describe this target (qubit count, or a
            gate on qubits the target does not have).
    """
    if snapshot.num_qubits != base_target.num_qubits:
        raise ValidationError(
            f"snapshot {snapshot.calibration_id} has {snapshot.num_qubits} qubits but "
            f"base_target has {base_target.num_qubits}; pass the target of the backend "
            f"the snapshot was read from"
        )
    target = copy.deepcopy(base_target)
    old_qubits = base_target.qubit_properties or [None] * snapshot.num_qubits
    target.qubit_properties = [
        QubitProperties(t1=t1, t2=t2, frequency=getattr(old, "frequency", None))
        for t1, t2, old in zip(snapshot.t1_s, snapshot.t2_s, old_qubits, strict=True)
    ]
    for gate in snapshot.gates:
        if gate.gate not in target or gate.qubits not in target[gate.gate]:
            raise ValidationError(
                f"snapshot {snapshot.calibration_id} calibrates {gate.gate} on "
                f"{gate.qubits}, which base_target does not have; pass the target of the "
                f"backend the snapshot was read from"
            )
        target.update_instruction_properties(
            gate.gate,
            gate.qubits,
            InstructionProperties(duration=gate.duration_s, error=gate.error),
        )
    if "measure" in target:
        for qubit, error in enumerate(snapshot.readout_error):
            old = target["measure"].get((qubit,))
            if old is None:
                continue
            # A fresh InstructionProperties drops any asymmetric prob_meas* fields of the
            # base, so the readout error is the snapshot's single number on both outcomes.
            target.update_instruction_properties(
                "measure", (qubit,), InstructionProperties(duration=old.duration, error=error)
            )
    return target


def noise_model_from_snapshot(snapshot: CalibrationSnapshot, base_target: Target) -> NoiseModel:
    """Aer's noise model of the device as the snapshot describes it.

    For an unmodified snapshot this equals ``NoiseModel.from_backend(backend)``: the
    same Aer code builds it, from :func:`target_from_snapshot`'s target.
    """
    return _noise_model(target_from_snapshot(snapshot, base_target), snapshot.device)


@functools.cache
def gpu_available() -> bool:
    """Whether this process's qiskit-aer can simulate on a GPU (checked once)."""
    try:
        return "GPU" in AerSimulator().available_devices()
    except Exception:  # a broken CUDA install must read as "no GPU", not crash a worker
        logger.exception("qiskit-aer could not list its devices; assuming no GPU")
        return False


def make_simulator(
    snapshot: CalibrationSnapshot,
    base_target: Target,
    *,
    gpu: GpuMode = "auto",
    max_parallel_threads: int = 0,
) -> tuple[AerSimulator, str, bool]:
    """The Aer simulator that plays the device of ``snapshot``.

    Circuits must arrive compiled for the device (native gates, physical qubits); the
    simulator does no routing of its own.

    Args:
        snapshot: the calibration to simulate.
        base_target: target of the backend the snapshot was read from.
        gpu: ``"auto"`` uses a GPU when qiskit-aer has one, ``"never"`` does not,
            ``"require"`` fails without one.
        max_parallel_threads: CPU threads for Aer; 0 means ``os.cpu_count()``.

    Returns:
        ``(simulator, method_description, uses_gpu)``, e.g.
        ``(sim, "automatic (CPU, 16 threads)", False)``.

    Raises:
        DeviceUnavailableError: ``gpu="require"`` and qiskit-aer has no GPU.
        ValidationError: ``gpu`` or ``max_parallel_threads`` is invalid.
    """
    uses_gpu = _resolve_gpu(snapshot.device, gpu)
    if max_parallel_threads < 0:
        raise ValidationError(
            f"max_parallel_threads={max_parallel_threads} must be >= 0 (0 = all CPU cores)"
        )
    # Aer's own default of 0 follows OMP_NUM_THREADS, which Ray sets to 1 in workers:
    # name the core count explicitly or a device actor simulates on one thread.
    threads = max_parallel_threads or os.cpu_count() or 1
    target = target_from_snapshot(snapshot, base_target)
    noise_model = _noise_model(target, snapshot.device)
    # Serialize now, while building (and caching), so the first run does not pay it.
    noise_model.to_dict(serializable=True)
    options: dict[str, Any] = {
        "noise_model": noise_model,
        "basis_gates": noise_model.basis_gates,
        "max_parallel_threads": threads,
    }
    if uses_gpu:
        # Stabilizer and MPS have no GPU version; a noisy statevector on GPU batches
        # shots (one trajectory per shot) instead of replaying the circuit per shot.
        method = "statevector"
        options.update(device="GPU", batched_shots_gpu=True)
    else:
        # Aer picks per circuit: density matrix for small noisy circuits (exact, one
        # pass for all shots), statevector with sampled noise for larger ones.
        method = "automatic"
        # Matrix-product-state runs (wide circuits, see qrt_ray.aer.sim_method_for)
        # must use LAPACK's SVD: Aer's built-in one loops forever on some noisy
        # trajectories and can write out of bounds. Measured with qiskit-aer 0.18.2 on
        # kolkata: without it a 16-qubit GHZ never finished 200 shots (a 17-qubit one
        # stalled from 80 shots up), and in a farm it corrupted a device actor's heap;
        # with it the 17-qubit GHZ ran 2,000 shots in 3 s. Other methods ignore it.
        options["mps_lapack"] = True
        # A batch of small circuits runs them side by side, one per core (0: as many
        # as max_parallel_threads), where Aer's default runs them one after another
        # on one core: a density matrix or a few qubits gain nothing from more
        # threads. Measured on 2 cores: 120 twirled 6-qubit density-matrix circuits
        # 1.26 s -> 0.84 s, 120 random 5-qubit sampler circuits 1.09 s -> 0.69 s. Aer
        # still gives a large circuit all the threads when memory allows only one.
        # Devices run matrix-product-state calls on one thread (see
        # qrt_ray.aer.method_options): LAPACK called at once crashed them.
        options["max_parallel_experiments"] = 0
    simulator = AerSimulator(method=method, target=target, **options)
    description = f"{method} ({'GPU' if uses_gpu else 'CPU'}, {threads} threads)"
    return simulator, description, uses_gpu


class NoiseModelCache:
    """LRU of built simulators, keyed by device, calibration id and simulator settings.

    Thread-safe. ``hits`` and ``misses`` count lookups, for metrics and tests.
    """

    def __init__(self, max_entries: int = DEFAULT_CACHE_ENTRIES) -> None:
        """Create an empty cache holding at most ``max_entries`` simulators."""
        if max_entries < 1:
            raise ValidationError(f"max_entries={max_entries} must be >= 1")
        self.max_entries = max_entries
        self.hits = 0
        self.misses = 0
        self._entries: OrderedDict[tuple[str, str, str, int], tuple[AerSimulator, str, bool]]
        self._entries = OrderedDict()
        self._lock = threading.Lock()

    def __len__(self) -> int:
        return len(self._entries)

    def get(
        self,
        snapshot: CalibrationSnapshot,
        base_target: Target,
        *,
        gpu: GpuMode = "auto",
        max_parallel_threads: int = 0,
    ) -> tuple[AerSimulator, str, bool]:
        """The simulator of ``snapshot``, built by :func:`make_simulator` on a miss.

        Arguments are those of :func:`make_simulator`. The build runs outside the lock,
        so two threads missing the same key may both build; the later one is kept.
        """
        # gpu and threads are in the key so a cached CPU simulator never answers a
        # request that asked for a GPU (or a different thread count).
        key = (snapshot.device, snapshot.calibration_id, gpu, max_parallel_threads)
        with self._lock:
            if key in self._entries:
                self.hits += 1
                self._entries.move_to_end(key)
                return self._entries[key]
            self.misses += 1
        built = make_simulator(
            snapshot, base_target, gpu=gpu, max_parallel_threads=max_parallel_threads
        )
        with self._lock:
            self._entries[key] = built
            self._entries.move_to_end(key)
            while len(self._entries) > self.max_entries:
                self._entries.popitem(last=False)
        return built

    def invalidate(self, device: str, calibration_id: str | None = None) -> int:
        """Drop a device's simulators (all, or one calibration's); returns how many."""
        with self._lock:
            doomed = [k for k in self._entries if k[0] == device and calibration_id in (None, k[1])]
            for key in doomed:
                del self._entries[key]
        return len(doomed)


def _noise_model(target: Target, device: str) -> NoiseModel:
    """Aer's own noise model of a backend with this target (see module docstring)."""
    model = NoiseModel.from_backend(_TargetBackend(target, name=device))
    return _SerializedOnceNoiseModel.adopt(model) if _AER_FAST else model


class _SerializedOnceNoiseModel(NoiseModel):
    """A NoiseModel that serializes itself for Aer's C++ core once, not on every run.

    ``AerSimulator.run`` calls ``to_dict(serializable=True)`` on every call: for a
    133-qubit device that is ~1.2 s of Python (error dicts and a JSON round trip) per
    run, even for a 5-qubit circuit. The mutators drop the memo, so a change made
    after the first run is never hidden.
    """

    _serialized: dict[str, Any] | None = None
    # the full model a restricted one was cut from (weakly: the full model keeps its
    # restricted ones, see `restricted_for`): it keeps each error's serialized form
    # (see `_entries`), so restricting to a new qubit set serializes nothing twice
    _source: weakref.ref[_SerializedOnceNoiseModel] | None = None

    @classmethod
    def adopt(cls, model: NoiseModel) -> _SerializedOnceNoiseModel:
        """The same noise model (same error objects, not copies), with the memo."""
        adopted = cls.__new__(cls)
        adopted.__dict__.update(model.__dict__)
        return adopted

    def to_dict(self, serializable: bool = False) -> dict[str, Any]:
        if not serializable:
            return super().to_dict(serializable=False)
        if self._serialized is None:
            source = self._source() if self._source is not None else None
            self._serialized = {"errors": (source or self)._serialized_errors(self)}
        return self._serialized

    def _serialized_errors(self, model: NoiseModel) -> list[dict[str, Any]]:
        """``model``'s errors as ``NoiseModel.to_dict(serializable=True)`` lists them,
        each serialized once per error object and kept here.

        A new qubit set of a device with many calls (each call's model is restricted to
        the qubits it touches) otherwise re-serialized every error on those qubits: a
        JSON round trip that took 6 % of a device actor's time on 200 small circuits.
        """
        with _RESTRICT_LOCK:
            kept: dict[tuple[Any, ...], tuple[Any, dict[str, Any]]] = self.__dict__.setdefault(
                "_entries", {}
            )
        out: list[dict[str, Any]] = []

        def entry(key: tuple[Any, ...], error: Any, extra: dict[str, Any]) -> None:
            found = kept.get(key)
            if found is None or found[0] is not error:  # the same object, or build anew
                raw = {**error.to_dict(), **extra}
                found = (error, json.loads(json.dumps(raw, cls=AerJSONEncoder)))
                kept[key] = found
            out.append(found[1])

        for name, error in model._default_quantum_errors.items():
            entry(("default", name), error, {"operations": [name]})
        for name, errors in model._local_quantum_errors.items():
            for qubits, error in errors.items():
                extra = {"operations": [name], "gate_qubits": [qubits]}
                entry(("local", name, qubits), error, extra)
        if model._default_readout_error is not None:
            entry(("default readout",), model._default_readout_error, {})
        for qubits, error in model._local_readout_errors.items():
            entry(("readout", qubits), error, {"gate_qubits": [qubits]})
        return out

    def __getstate__(self) -> dict[str, Any]:
        state = dict(self.__dict__)
        # cheap to rebuild, large to ship between processes
        for derived in ("_serialized", "_restricted", "_entries", "_source"):
            state.pop(derived, None)
        return state

    def __setstate__(self, state: dict[str, Any]) -> None:
        self.__dict__.update(state)

    def _forget(self) -> None:
        """Drop what was derived from the errors: the memo, the serialized errors and
        the restricted models."""
        self._serialized = None
        self.__dict__.pop("_restricted", None)
        self.__dict__.pop("_entries", None)

    def reset(self) -> None:
        self._forget()
        super().reset()

    def add_basis_gates(self, *args: Any, **kwargs: Any) -> None:
        self._forget()
        super().add_basis_gates(*args, **kwargs)

    def add_all_qubit_quantum_error(self, *args: Any, **kwargs: Any) -> None:
        self._forget()
        super().add_all_qubit_quantum_error(*args, **kwargs)

    def add_quantum_error(self, *args: Any, **kwargs: Any) -> None:
        self._forget()
        super().add_quantum_error(*args, **kwargs)

    def add_all_qubit_readout_error(self, *args: Any, **kwargs: Any) -> None:
        self._forget()
        super().add_all_qubit_readout_error(*args, **kwargs)

    def add_readout_error(self, *args: Any, **kwargs: Any) -> None:
        self._forget()
        super().add_readout_error(*args, **kwargs)


def restricted_noise_model(model: NoiseModel, qubits: frozenset[int]) -> NoiseModel:
    """``model`` with only the errors of instructions on ``qubits`` (same error objects).

    Aer hands the whole noise model to its C++ core as JSON on every ``run`` call, so a
    call costs with the device's size, not the circuit's: one 3-qubit circuit a call
    took 54 ms on guadalupe (16 qubits), 117 ms on kolkata (27) and 416 ms on
    sherbrooke (127), and 9, 14 and 7 ms with the model restricted. A circuit that
    touches only ``qubits`` meets no other error, so restricting the model changes
    nothing it samples. A model whose layout this qiskit-aer does not show is returned
    as it is.
    """
    if not _AER_FAST:
        return model
    local = getattr(model, "_local_quantum_errors", None)
    readout = getattr(model, "_local_readout_errors", None)
    if not isinstance(local, dict) or not isinstance(readout, dict):
        return model
    sub = _SerializedOnceNoiseModel.__new__(_SerializedOnceNoiseModel)
    sub.__dict__.update(model.__dict__)
    sub.__dict__.pop("_restricted", None)
    sub.__dict__.pop("_entries", None)
    sub._serialized = None
    if isinstance(model, _SerializedOnceNoiseModel):
        sub._source = model._source if model._source is not None else weakref.ref(model)
    sub._local_quantum_errors = {
        name: {q: e for q, e in errors.items() if qubits.issuperset(q)}
        for name, errors in local.items()
    }
    sub._local_readout_errors = {q: e for q, e in readout.items() if qubits.issuperset(q)}
    sub._noise_qubits = {q for q in getattr(model, "_noise_qubits", ()) if q in qubits}
    return sub


_RESTRICT_LOCK = threading.Lock()
# restricted models kept per full model (per qubit set); they live and die with it
RESTRICTED_KEPT = 64


def restricted_for(model: NoiseModel, qubits: frozenset[int]) -> NoiseModel:
    """:func:`restricted_noise_model`, built once per qubit set and kept on ``model``
    (at most ``RESTRICTED_KEPT``), so a model dropped from its cache takes them along.
    A model of another class (it would not forget them when changed) is restricted anew
    each time."""
    if not isinstance(model, _SerializedOnceNoiseModel):
        return restricted_noise_model(model, qubits)
    with _RESTRICT_LOCK:
        kept = model.__dict__.setdefault("_restricted", OrderedDict())
        found = kept.get(qubits)
        if found is not None:
            kept.move_to_end(qubits)
            return found
    sub = restricted_noise_model(model, qubits)
    with _RESTRICT_LOCK:
        kept[qubits] = sub
        while len(kept) > RESTRICTED_KEPT:
            kept.popitem(last=False)
    return sub


def _resolve_gpu(device: str, gpu: str) -> bool:
    """Whether to simulate on a GPU, given the device's ``gpu`` setting."""
    if gpu == "never":
        return False
    if gpu == "auto":
        return gpu_available()
    if gpu == "require":
        if not gpu_available():
            raise DeviceUnavailableError(
                f"device {device!r} has gpu='require' but qiskit-aer reports no GPU "
                f"(available: CPU only); install qiskit-aer-gpu on a CUDA machine, or set "
                f"gpu: auto in the farm config"
            )
        return True
    raise ValidationError(f"gpu={gpu!r} must be one of 'auto', 'never', 'require'")


class _TargetBackend(BackendV2):
    """Just enough of a BackendV2 around a Target for ``NoiseModel.from_backend``."""

    def __init__(self, target: Target, name: str) -> None:
        super().__init__(name=name)
        self._target = target

    @property
    def target(self) -> Target:
        return self._target

    @property
    def max_circuits(self) -> None:
        return None

    @classmethod
    def _default_options(cls) -> Options:
        return Options()

    def run(self, run_input: Any, **options: Any) -> Any:
        raise NotImplementedError("a calibration view only; run circuits on make_simulator()")
