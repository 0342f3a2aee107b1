"""How long a device's simulator takes to run a circuit: the figure placement's wait,
``qrt estimate``, the hung-batch watchdog, the queue's slices and the executor's pieces
all use.

A device here is an Aer simulator, so its run time follows what the simulator does,
not the physics of the device it stands for (that figure, :func:`~qrt_ray.policies.costs.
physical_run_s`, stays for billing and for ``qrt estimate``'s "on hardware" column). Per
compiled circuit the simulator (see :func:`qrt_ray.aer.sim_method_for`) runs one of:

* **density matrix**: one evolution of ``4^n`` entries per gate, then cheap sampling:
  a fixed cost, almost nothing per shot;
* **statevector**, noisy: one trajectory of ``2^n`` amplitudes per shot, the shots
  spread over the device's threads;
* **matrix product state**, noisy: one trajectory per shot on one thread, dearer
  with more qubits, with every qubit a two-qubit gate's qubits sit apart in index
  order (the simulator swaps them together and back: "bond moves"), and with every
  layer of two-qubit gates (each can double the bond dimension, up to ``2^(n/2)``);
* **statevector on a GPU**: the CPU statevector's figure over :data:`GPU_SPEEDUP`
  (a prior only: the GPU path is unmeasured here).

:func:`prior_cost` turns a circuit's :class:`CircuitWork` (active qubits, gates,
two-qubit gates, shots) into a :class:`SimCost`: ``fixed_s + per_shot_s * shots``,
constants fitted on this project's devices (see ``docs/measurements.md``).
:class:`SimTimeModel` scales the prior by what each device really took, per method
(an exponentially weighted mean of log(measured / prior), so one 10x outlier moves it
as far as one 0.1x). Pure: no Ray, Aer or clock.
"""

from __future__ import annotations

import math
import threading
from collections.abc import Sequence
from dataclasses import dataclass

from qrt_ray.aer import sim_method_for

# Methods as the model names them; "gpu" is Aer's own choice on a GPU (statevector).
DENSITY_MATRIX = "density_matrix"
STATEVECTOR = "statevector"
MPS = "matrix_product_state"
GPU = "gpu"
METHODS = (DENSITY_MATRIX, STATEVECTOR, MPS, GPU)

# Fitted constants (seconds), on 55 random circuits of 3 to 23 active qubits run on
# kolkata's noise with 2 threads (see docs/measurements.md, "Simulator run-time model").
CALL_S = 0.005  # a circuit's share of a simulator call: noise model, setup, result
DM_GATE_S = 5.2e-5  # a density-matrix gate's own cost (its noise superoperator)
DM_ENTRY_S = 3.1e-9  # ... and per entry of the 4^n, per thread
# A noisy statevector trajectory: 2^n x (SV_SHOT_AMP_S + gates x SV_AMP_S) / threads
# (the first: preparing, measuring and sampling each amplitude; fitted on 16 jobs of
# 9 to 13 qubits, GHZ and random)
SV_SHOT_AMP_S = 2.7e-7
SV_AMP_S = 2.1e-9
# A matrix-product-state trajectory (one shot): MPS_SHOT_S x n^MPS_QUBIT_POWER x
# (1 + bond moves)^MPS_MOVE_POWER x exp(MPS_LAYER_RATE x two-qubit gates per qubit),
# fitted (log-linear, leave-one-out 95 % within 3x with a per-device factor) on 55
# MPS jobs of 14 to 24 qubits on kolkata, sherbrooke and torino; sherbrooke ran 3.6x
# and torino 7.4x slower than kolkata (more native gates a circuit): each device's
# own runs correct that.
MPS_SHOT_S = 9.8e-6
MPS_QUBIT_POWER = 0.85
MPS_MOVE_POWER = 0.70
MPS_LAYER_RATE = 0.28
# Before compiling, the bond moves are guessed from the two-qubit gates: 0.5 to 1.6 a
# gate after routing on the heavy-hex devices (median about 0.8).
MOVES_PER_TWO_QUBIT_GATE = 0.8
SAMPLE_S = 2.0e-7  # sampling one shot of one measured qubit
GPU_SPEEDUP = 20.0  # a prior until a GPU device reports its own runs (unmeasured here)
_MIN_RATIO, _MAX_RATIO = 1e-3, 1e3


@dataclass(frozen=True, slots=True)
class CircuitWork:
    """One circuit as the simulator sees it.

    Attributes:
        active_qubits: qubits its gates and measurements touch (after routing, when
            compiled).
        gates: gate instructions (measurements and barriers aside).
        two_qubit_gates: of those, the ones on two qubits.
        bond_moves: for a matrix product state, which keeps the qubits in index order:
            over the two-qubit gates, the touched qubits between their two, summed.
            Each costs two swaps there (there and back).
    """

    active_qubits: int
    gates: int
    two_qubit_gates: int
    bond_moves: int = 0


@dataclass(frozen=True, slots=True)
class SimCost:
    """Expected seconds of one circuit on one device: ``fixed_s + per_shot_s * shots``.

    Attributes:
        method: the simulation method it runs with (:data:`METHODS`).
        fixed_s: seconds whatever the shots (a density matrix's evolution, the call).
        per_shot_s: seconds each shot adds (a trajectory, or a sample).
    """

    method: str
    fixed_s: float
    per_shot_s: float

    def seconds(self, shots: int) -> float:
        """Expected seconds at ``shots`` shots."""
        return self.fixed_s + self.per_shot_s * shots


def method_of(work: CircuitWork, shots: int, gpu: bool) -> str:
    """The method a device runs ``work`` with at ``shots`` shots (see
    :func:`qrt_ray.aer.sim_method_for`; a GPU device lets Aer choose)."""
    return GPU if gpu else sim_method_for(work.active_qubits, shots)


def layers(work: CircuitWork) -> float:
    """Two-qubit gates per qubit, up to ``n / 2``: how far a matrix-product state's bond
    dimension can have grown (each layer can double it, up to ``2^(n/2)``)."""
    n = max(1, work.active_qubits)
    return min(work.two_qubit_gates / n, n / 2)


def prior_cost(
    work: CircuitWork,
    shots: int,
    *,
    gpu: bool = False,
    threads: int = 1,
    method: str | None = None,
) -> SimCost:
    """The model's prior for one circuit at ``shots`` shots on a device with ``threads``
    CPU threads (or a GPU); ``method`` when the device forces one (it runs every
    circuit of a job with the method of the widest, see :func:`qrt_ray.aer.sim_method_for`).
    """
    n = max(1, work.active_qubits)
    gates = max(1, work.gates)
    threads = max(1, threads)
    method = method or method_of(work, shots, gpu)
    sample = SAMPLE_S * n
    if method == DENSITY_MATRIX:
        return SimCost(method, CALL_S + gates * (DM_GATE_S + DM_ENTRY_S * 4.0**n / threads), sample)
    if method == MPS:  # one thread: the device runs MPS calls single-threaded
        per_shot = (
            MPS_SHOT_S
            * n**MPS_QUBIT_POWER
            * (1 + work.bond_moves) ** MPS_MOVE_POWER
            * math.exp(MPS_LAYER_RATE * layers(work))
        )
        return SimCost(method, CALL_S, per_shot)
    per_shot = 2.0**n * (SV_SHOT_AMP_S + gates * SV_AMP_S) / threads + sample
    if method == GPU:
        per_shot /= GPU_SPEEDUP
    return SimCost(method, CALL_S, per_shot)


def estimated_work(
    active_qubits: int, two_qubit_gates: int, one_qubit_pulses: float, swaps: int = 0
) -> CircuitWork:
    """A compiled circuit's work guessed before compiling: routing adds three two-qubit
    gates per SWAP, each two-qubit gate brings about two single-qubit gates with it
    (basis changes and virtual Z rotations), and bond moves follow the two-qubit gates
    (:data:`MOVES_PER_TWO_QUBIT_GATE`)."""
    two = two_qubit_gates + 3 * swaps
    gates = int(3 * two + one_qubit_pulses + active_qubits)
    return CircuitWork(active_qubits, gates, two, round(MOVES_PER_TWO_QUBIT_GATE * two))


@dataclass(frozen=True, slots=True)
class Correction:
    """What a device's history says of the prior for one method: measured seconds are
    about ``factor * prior ** (1 + slope)`` there (in units of one second).

    Attributes:
        factor: the multiplier at a one-second prior.
        slope: how much faster than the prior the error grows with the prior (0: it
            does not).
        samples: runs behind it (0: the prior alone).
    """

    factor: float = 1.0
    slope: float = 0.0
    samples: int = 0

    def apply(self, prior_s: float) -> float:
        """The corrected figure for a prior of ``prior_s`` seconds."""
        if self.samples == 0 or prior_s <= 0:
            return prior_s
        return prior_s * min(_MAX_RATIO, max(_MIN_RATIO, self.factor * prior_s**self.slope))


class _Residual:
    """log(measured / prior) as a line in log(prior), by ridge regression with
    forgetting: weighted least squares on the runs, each older run counting
    ``forget`` times less, pulled towards no correction at all by ``ridge``."""

    __slots__ = ("_c0", "_c1", "_s00", "_s01", "_s11", "n")

    def __init__(self) -> None:
        self._s00 = self._s01 = self._s11 = self._c0 = self._c1 = 0.0
        self.n = 0

    def add(self, x: float, y: float, forget: float) -> None:
        self._s00 = forget * self._s00 + 1.0
        self._s01 = forget * self._s01 + x
        self._s11 = forget * self._s11 + x * x
        self._c0 = forget * self._c0 + y
        self._c1 = forget * self._c1 + x * y
        self.n += 1

    def solve(self, ridge: tuple[float, float]) -> tuple[float, float]:
        a00, a01, a11 = self._s00 + ridge[0], self._s01, self._s11 + ridge[1]
        det = a00 * a11 - a01 * a01
        if det <= 0:
            return 0.0, 0.0
        return (a11 * self._c0 - a01 * self._c1) / det, (a00 * self._c1 - a01 * self._c0) / det


class SimTimeModel:
    """Expected simulator seconds per device, corrected by what each device really took.

    Per device and method, the log of measured over prior is fitted as a line in the
    log of the prior (:class:`Correction`): the intercept learns a device's speed, the
    slope a prior that grows too fast or too slow with the work.

    Args:
        forget: weight an older run keeps with each newer one (1: never forget).
        ridge: how many runs' worth of "the prior is right" the intercept and the
            slope start from.
    """

    def __init__(self, *, forget: float = 0.95, ridge: tuple[float, float] = (1.0, 20.0)) -> None:
        if not 0 < forget <= 1:
            raise ValueError(f"forget={forget} must be in (0, 1]")
        self.forget = forget
        self.ridge = ridge
        self._learned: dict[tuple[str, str], _Residual] = {}
        self._solved: dict[tuple[str, str], Correction] = {}
        self._lock = threading.Lock()

    def correction(self, device: str, method: str) -> Correction:
        """What the device's history says of the prior for ``method``."""
        return self._solved.get((device, method), Correction())

    def predict(
        self,
        device: str,
        works: Sequence[CircuitWork],
        shots: int,
        *,
        gpu: bool = False,
        threads: int = 1,
    ) -> tuple[float, float, str]:
        """(expected seconds, the prior's seconds, method) for all ``works`` at
        ``shots`` shots each on ``device`` (see :meth:`job_prior`)."""
        if not works:
            return 0.0, 0.0, ""
        prior = self.job_prior(works, shots, gpu=gpu, threads=threads)
        return self.expected_s(device, prior, shots), prior.seconds(shots), prior.method

    def expected_s(self, device: str, prior: SimCost, shots: int) -> float:
        """``prior`` at ``shots`` shots, corrected by ``device``'s history."""
        return self.correction(device, prior.method).apply(prior.seconds(shots))

    def job_prior(
        self,
        works: Sequence[CircuitWork],
        shots: int,
        *,
        gpu: bool = False,
        threads: int = 1,
        copies: int = 1,
    ) -> SimCost:
        """The prior of a whole job as one :class:`SimCost` (its circuits summed; the
        device runs them all with the method of the widest), run as ``copies``
        randomized copies that split the shots (twirling): every copy pays the fixed
        cost, the shots are shared."""
        copies = max(1, copies)
        run_shots = -(-shots // copies)
        widest = max(works, key=lambda w: w.active_qubits)
        method = method_of(widest, run_shots, gpu)
        costs = [prior_cost(w, run_shots, gpu=gpu, threads=threads, method=method) for w in works]
        return SimCost(
            method, copies * sum(c.fixed_s for c in costs), sum(c.per_shot_s for c in costs)
        )

    def observe(self, device: str, method: str, prior_s: float, seconds: float) -> None:
        """Learn from one run of ``method`` the prior put at ``prior_s`` that took
        ``seconds``."""
        if prior_s <= 0 or seconds <= 0 or not math.isfinite(seconds) or method not in METHODS:
            return
        x = math.log(prior_s)
        y = math.log(min(_MAX_RATIO, max(_MIN_RATIO, seconds / prior_s)))
        key = (device, method)
        with self._lock:
            residual = self._learned.setdefault(key, _Residual())
            residual.add(x, y, self.forget)
            intercept, slope = residual.solve(self.ridge)
            self._solved[key] = Correction(math.exp(intercept), slope, residual.n)


# == pieces: how a device splits a batch's simulator work ===============================

# A piece of a batch is predicted to last about this long: the device checks between
# pieces whether its work was cancelled or moved, so a cancel frees it within about
# this (and the prior's error), and reports progress to the hung-batch watchdog.
PIECE_TARGET_S = 0.5
# A piece of a split circuit runs at least this many shots (fewer would pay the call's
# fixed cost for too little work).
MIN_PIECE_SHOTS = 16


class CallPace:
    """How fast a device's simulator calls of about a piece's size run against the
    prior, per kind of work (the executor's key: method and circuit size): measured
    over predicted seconds, smoothed, at most 1.

    The prior gives each circuit a share of a call's fixed cost, so it over-prices a
    call of many small circuits (200 five-qubit GHZ circuits at 1,000 shots: 1.28 s
    predicted, 0.2-0.3 s measured on 2 cores), and pieces planned from it come out
    smaller than ``PIECE_TARGET_S`` of real time; each extra piece is a simulator call
    that pays the noise model's hand-over again. A device plans its unseeded work with
    ``target_s / ratio`` (seeded work keeps the prior's plan, which reproduces). Only
    calls faster than predicted are learned, so no piece is planned smaller than the
    prior plans it.

    Args:
        weight: a new call's weight in the running mean of log ratios.
        floor: the smallest ratio believed (pieces at most ``1 / floor`` times the
            prior's target).
    """

    def __init__(self, *, weight: float = 0.3, floor: float = 0.05) -> None:
        if not 0 < weight <= 1:
            raise ValueError(f"weight={weight} must be in (0, 1]")
        if not 0 < floor <= 1:
            raise ValueError(f"floor={floor} must be in (0, 1]")
        self.weight = weight
        self.floor = floor
        self._log_ratio: dict[str, float] = {}

    def observe(self, method: str, prior_s: float, seconds: float) -> None:
        """Learn from one call the prior put at ``prior_s`` that took ``seconds``."""
        if prior_s <= 0 or seconds <= 0 or not math.isfinite(seconds + prior_s):
            return
        x = math.log(min(1.0, max(self.floor, seconds / prior_s)))
        old = self._log_ratio.get(method)
        self._log_ratio[method] = x if old is None else old + self.weight * (x - old)

    def ratio(self, method: str) -> float:
        """Measured over predicted for ``method`` (1 until a call was observed)."""
        return math.exp(self._log_ratio.get(method, 0.0))


@dataclass(frozen=True, slots=True)
class Piece:
    """One simulator call of a batch: which circuits (indices), at how many shots."""

    circuits: tuple[int, ...]
    shots: int


def split_evenly(total: int, parts: int) -> list[int]:
    """``total`` in ``parts`` parts that differ by at most one, larger first."""
    base, extra = divmod(total, parts)
    return [base + (k < extra) for k in range(parts)]


def plan_pieces(
    costs: Sequence[SimCost],
    shots: int,
    *,
    target_s: float = PIECE_TARGET_S,
    max_circuits: int = 64,
    min_circuits: int = 1,
    min_shots: int = MIN_PIECE_SHOTS,
) -> list[Piece]:
    """Split one simulator call of ``len(costs)`` circuits at ``shots`` shots into pieces
    of about ``target_s`` seconds each, in circuit order.

    Neighbouring circuits share a piece up to ``target_s`` (and ``max_circuits``), and
    at least ``min_circuits`` share one however long (a device passes its threads: the
    simulator runs a call's circuits side by side). Fewer circuits a call cost some
    throughput, the price of a device that can leave cancelled work soon: 20 noisy
    9-qubit density matrices (about 0.75 s each) took 15.7 s one a call, 15.2 s two,
    14.1 s four and 13.4 s all in one call, on 2 cores. A
    circuit predicted to take longer alone runs its shots over several pieces when
    they are trajectories (a statevector or matrix product state); a density matrix's
    shots all come from one evolution, so it stays one piece however long. The plan
    depends only on its arguments: a device plans from the prior, so a seeded job
    splits (and reproduces) the same way every time.
    """
    if target_s <= 0:
        raise ValueError(f"target_s={target_s} must be > 0")
    pieces: list[Piece] = []
    current: list[int] = []
    current_s = 0.0
    for i, cost in enumerate(costs):
        alone = cost.seconds(shots)
        trajectories = cost.method != DENSITY_MATRIX and cost.per_shot_s * shots > cost.fixed_s
        parts = min(math.ceil(alone / target_s), shots // max(1, min_shots))
        if trajectories and parts > 1:
            if current:
                pieces.append(Piece(tuple(current), shots))
                current, current_s = [], 0.0
            pieces.extend(Piece((i,), part) for part in split_evenly(shots, parts))
            continue
        full = current_s + alone > target_s and len(current) >= min_circuits
        if current and (full or len(current) >= max_circuits):
            pieces.append(Piece(tuple(current), shots))
            current, current_s = [], 0.0
        current.append(i)
        current_s += alone
    if current:
        pieces.append(Piece(tuple(current), shots))
    return pieces
