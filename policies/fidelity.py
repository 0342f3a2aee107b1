"""Estimated success probability (ESP) of a circuit on a device, with the layout that earns it.

Pure: no Ray, no clock, no I/O. Two steps:

1. :func:`~qrt_ray.profile.profile_circuit` reads a logical circuit once into plain data: physical
   1-qubit pulses per qubit, how often each pair of qubits interacts (gates on three or
   more qubits unrolled into their 2-qubit parts), which qubits are measured, and a
   nominal duration. It does not depend on any device.
2. :func:`estimate_fidelity` searches a layout on one calibration and scores it. Every
   error becomes a cost ``-log(1 - error)``, so the ESP of a layout is ``exp(-total
   cost)``: sx/x pulses on each qubit, readout on measured qubits, optionally idle
   decoherence (``T1``/``T2``) while a qubit waits (see :data:`IDLE_DECOHERENCE`),
   each 2-qubit gate on the coupler that finally
   runs it, and a SWAP chain (three 2-qubit gates per hop, on the cheapest path) to
   bring non-adjacent partners together. The search places the most connected logical
   qubit first and each next one where it costs least given its placed partners, from
   several good starting qubits, then improves the result by moving and exchanging
   qubits; on small devices it tries every placement.

:func:`esp_upper_bound` is the cheap pre-filter: an ESP no layout on that calibration
can beat, so a policy only searches devices that could win. :class:`FidelityEstimator`
caches estimates by (circuit hash, calibration id), which name fixed inputs.
"""

from __future__ import annotations

import itertools
import math
import threading
from collections import OrderedDict
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
from scipy.optimize import linear_sum_assignment
from scipy.sparse import csr_matrix
from scipy.sparse.csgraph import shortest_path

from qrt_ray.models import CalibrationSnapshot
from qrt_ray.profile import CircuitProfile as CircuitProfile
from qrt_ray.profile import profile_circuit as profile_circuit

IDLE_DECOHERENCE = False
"""Whether a qubit waiting between its gates is charged T1/T2 decay (the default).

The farm's devices are Aer noise models built from calibrations: they relax a qubit
during its own gates and during explicit delays, and compiled circuits carry no
delays, so a waiting qubit does not decay there. Charging it anyway ranked devices
with slow gates far too low (on 39 benchmark circuits, the Spearman correlation of
ESP with measured fidelity within a circuit was 0.716 with the idle term and 0.831
without). Pass ``idle_decoherence=True`` for devices that decay while idle (hardware,
or circuits scheduled with delays).
"""

ROUTING_SCALE = 0.5
"""Share of the SWAP-chain charge that the final ESP keeps (the layout search uses all).

Each non-adjacent pair is charged its own SWAP chain, but a router's SWAPs serve
several pairs at once: for 8-qubit QPE and amplitude estimation the chains add up to
43 SWAPs where Sabre inserts 24-28. On the placement benchmark's 204 complete
circuits, scaling the charge by 0.5 raised the Spearman correlation of ESP with
measured fidelity from 0.797 to 0.815 (within a circuit 0.815 to 0.845), with the
same gain on either half of the suite.
"""

# Exhaustive layout search while the number of placements stays below this.
_EXHAUSTIVE_MAX = 6000
_BEAM_WIDTH = 48
_POLISHED = 4
_LOCAL_SEARCH_ROUNDS = 4


@dataclass(frozen=True, slots=True)
class FidelityEstimate:
    """A layout for one circuit on one calibration and its estimated success probability.

    Attributes:
        esp: estimated probability that a shot suffers no error, in (0, 1].
        layout: physical qubit of each logical qubit (inactive ones get free qubits).
        swaps: SWAPs the layout is expected to need.
        duration_s: estimated run time of one shot.
        breakdown: expected errors per source (``-log`` of each factor of the ESP).
        exact_search: whether every placement was tried.
    """

    esp: float
    layout: tuple[int, ...]
    swaps: int
    duration_s: float
    breakdown: dict[str, float]
    exact_search: bool = False


# == profiling a circuit ==============================================================


@dataclass(frozen=True, slots=True)
class _DeviceCosts:
    n: int
    pulse: np.ndarray  # -log(1 - sx error) per qubit
    readout: np.ndarray  # -log(1 - readout error) per qubit
    decay: np.ndarray  # (1/T1 + 1/T2) / 2 per qubit, per second
    gate: np.ndarray  # n x n: cost of the 2-qubit gate that finally joins p and q
    swap: np.ndarray  # n x n: cost of the SWAP chain bringing p next to q (0 if adjacent)
    hops: np.ndarray  # n x n: SWAPs on that chain
    min_gate: float  # cheapest coupler
    t2q_s: float  # median 2-qubit gate duration
    degree: np.ndarray


def _neg_log(error: float) -> float:
    return -math.log(max(1e-12, 1.0 - min(error, 0.999999)))


@dataclass(frozen=True, slots=True)
class _QubitCosts:
    """The per-qubit part of a calibration's costs: all the cheap bound needs."""

    pulse: np.ndarray
    readout: np.ndarray
    edge_cost: dict[tuple[int, int], float]
    min_gate: float
    t2q_s: float
    decay: np.ndarray  # (1/T1 + 1/T2) / 2 per qubit, per second


def _qubit_costs(cal: CalibrationSnapshot) -> _QubitCosts:
    worst: dict[int, float] = {}
    edge_cost: dict[tuple[int, int], float] = {}
    durations: list[float] = []
    for g in cal.gates:
        if len(g.qubits) == 1 and g.gate in ("sx", "x"):
            q = g.qubits[0]
            worst[q] = max(worst.get(q, 0.0), _neg_log(g.error))
        elif len(g.qubits) == 2:
            a, b = sorted(g.qubits)
            c = _neg_log(g.error)
            edge_cost[(a, b)] = min(edge_cost.get((a, b), math.inf), c)
            durations.append(g.duration_s)
    typical = float(np.median(list(worst.values()))) if worst else 0.0
    pulse = np.array([worst.get(q, typical) for q in range(cal.num_qubits)])
    readout = np.array([_neg_log(e) for e in cal.readout_error])
    t1 = np.maximum(np.array(cal.t1_s, dtype=float), 1e-9)
    t2 = np.maximum(np.array(cal.t2_s, dtype=float), 1e-9)
    return _QubitCosts(
        pulse=pulse,
        readout=readout,
        edge_cost=edge_cost,
        min_gate=min(edge_cost.values()) if edge_cost else 0.0,
        t2q_s=float(np.median(durations)) if durations else 0.0,
        decay=(1.0 / t1 + 1.0 / t2) / 2.0,
    )


def _device_costs(cal: CalibrationSnapshot) -> _DeviceCosts:
    n = cal.num_qubits
    light = _light(cal)
    pulse, readout, edge_cost, decay = light.pulse, light.readout, light.edge_cost, light.decay
    gate = np.full((n, n), np.inf)
    swap = np.zeros((n, n))
    hops = np.zeros((n, n))
    degree = np.zeros(n, dtype=int)
    if edge_cost:
        rows, cols, vals = [], [], []
        for (a, b), c in edge_cost.items():
            rows += [a, b]
            cols += [b, a]
            vals += [3 * c, 3 * c]
            degree[a] += 1
            degree[b] += 1
        graph = csr_matrix((vals, (rows, cols)), shape=(n, n))
        chain, pred = shortest_path(graph, method="D", directed=False, return_predecessors=True)
        hop_count = shortest_path(graph, method="D", directed=False, unweighted=True)
        # swap[p, q]: cheapest chain from p to some neighbour r of q, then the gate on
        # (r, q). Adjacent pairs need no chain: chain[p, p] = 0 and r = p.
        swap = np.full((n, n), np.inf)
        for (a, b), c in edge_cost.items():
            for r, q in ((a, b), (b, a)):
                cand = chain[:, r]
                better = cand < swap[:, q]
                swap[better, q] = cand[better]
                gate[better, q] = c
                hops[better, q] = hop_count[better, r]
        # A SWAP moves a logical qubit, so the places the static layout credits it
        # with (best readout, best pulses) are not where it ends: each hop also pays
        # a typical qubit's readout, or the search would buy good readout with SWAPs.
        swap = swap + hops * float(np.median(readout))
        swap = np.minimum(swap, swap.T)
        gate = np.minimum(gate, gate.T)
        hops = np.minimum(hops, hops.T)
        del pred
    min_gate = light.min_gate
    return _DeviceCosts(
        n=n,
        pulse=pulse,
        readout=readout,
        decay=decay,
        gate=gate,
        swap=swap,
        hops=hops,
        min_gate=min_gate,
        t2q_s=light.t2q_s,
        degree=degree,
    )


_COSTS: OrderedDict[str, _DeviceCosts] = OrderedDict()
_COSTS_LOCK = threading.Lock()
# Full matrices take ~0.4 MB for a 133-qubit device: few are kept (the estimator caches
# its results anyway). The per-qubit vectors the bound needs are small: many are kept.
_MAX_MATRICES = 64
_LIGHT: OrderedDict[str, _QubitCosts] = OrderedDict()
_MAX_LIGHT = 20_000


def _light(cal: CalibrationSnapshot) -> _QubitCosts:
    with _COSTS_LOCK:
        found = _LIGHT.get(cal.calibration_id)
        if found is not None:
            return found
    built = _qubit_costs(cal)
    with _COSTS_LOCK:
        _LIGHT[cal.calibration_id] = built
        while len(_LIGHT) > _MAX_LIGHT:
            _LIGHT.popitem(last=False)
    return built


def _costs(cal: CalibrationSnapshot) -> _DeviceCosts:
    # A calibration id names fixed values, so its matrices are computed once; this is a
    # cache of a pure function, not state.
    with _COSTS_LOCK:
        found = _COSTS.get(cal.calibration_id)
        if found is not None:
            _COSTS.move_to_end(cal.calibration_id)
            return found
    built = _device_costs(cal)
    with _COSTS_LOCK:
        _COSTS[cal.calibration_id] = built
        while len(_COSTS) > _MAX_MATRICES:
            _COSTS.popitem(last=False)
    return built


# == the search =======================================================================


class _Problem:
    """One (profile, calibration) pair as arrays the search indexes."""

    def __init__(self, profile: CircuitProfile, dev: _DeviceCosts, idle: bool) -> None:
        self.profile = profile
        self.dev = dev
        self.idle = idle
        m = len(profile.active)
        self.m = m
        duration_s = profile.duration_units * dev.t2q_s
        pulses = np.array(profile.pulses)
        measured = np.array(profile.measured, dtype=float)
        idle_s = np.maximum(0.0, duration_s - np.array(profile.busy_units) * dev.t2q_s)
        # node[lq, p]: the cost of logical lq's own operations if it sits on p.
        self.node = np.outer(pulses, dev.pulse) + np.outer(measured, dev.readout)
        if idle:
            self.node += np.outer(idle_s, dev.decay)
        self.nbrs: list[list[tuple[int, int]]] = [[] for _ in range(m)]
        for i, j, c in profile.pairs:
            self.nbrs[i].append((j, c))
            self.nbrs[j].append((i, c))
        self.pairs = profile.pairs
        # The local search reads single entries: Python lists read them ~10x faster
        # than numpy scalars, and it touches few rows, so rows are copied on demand.
        self._node_rows = self.node.tolist()
        self._rows: dict[int, tuple[list[float], list[float]]] = {}

    def rows(self, p: int) -> tuple[list[float], list[float]]:
        """Row ``p`` of the device's gate and swap costs, as lists."""
        found = self._rows.get(p)
        if found is None:
            found = self._rows[p] = (self.dev.gate[p].tolist(), self.dev.swap[p].tolist())
        return found

    def pair_cost(self, p: np.ndarray | int, q: np.ndarray | int, count: int) -> Any:
        return count * self.dev.gate[p, q] + self.dev.swap[p, q]

    def cost(self, layout: Sequence[int]) -> float:
        total = float(sum(self.node[lq, p] for lq, p in enumerate(layout)))
        for i, j, c in self.pairs:
            total += float(self.pair_cost(layout[i], layout[j], c))
        return total

    def local(self, lq: int, layout: Sequence[int]) -> np.ndarray:
        """Cost of logical ``lq`` on every physical qubit, given the others' places."""
        vec = self.node[lq].copy()
        gate, swap = self.dev.gate, self.dev.swap
        for j, c in self.nbrs[lq]:
            q = layout[j]
            vec += c * gate[q] + swap[q]  # rows, not columns: both matrices are symmetric
        return vec

    def order(self) -> list[int]:
        """Most connected logical qubit first, then by connection to those placed."""
        weight = [sum(c for _, c in self.nbrs[lq]) for lq in range(self.m)]
        order: list[int] = []
        placed = [False] * self.m
        link = [0.0] * self.m
        while len(order) < self.m:
            free = (lq for lq in range(self.m) if not placed[lq])
            nxt = max(free, key=lambda lq: (link[lq], weight[lq], -lq))
            placed[nxt] = True
            order.append(nxt)
            for j, c in self.nbrs[nxt]:
                link[j] += c
        return order


def _beam(prob: _Problem, order: list[int], width: int, count: int) -> list[list[int]]:
    """Place logical qubits in ``order``, keeping the ``width`` cheapest partial layouts;
    returns the ``count`` cheapest complete ones, cheapest first.

    Greedy placement from a few seeds walks into dead ends on heavy-hex maps (a chain
    that reaches a degree-2 qubit with its neighbour taken); keeping alternatives
    finds the chains and trees that embed without SWAPs.
    """
    n = prob.dev.n
    first = order[0]
    costs = prob.node[first].copy()
    keep = np.argsort(costs, kind="stable")[:width]
    layouts = np.full((len(keep), prob.m), -1, dtype=np.int64)
    layouts[:, first] = keep
    totals = costs[keep]
    for lq in order[1:]:
        cand = totals[:, None] + prob.node[lq][None, :]
        for j, c in prob.nbrs[lq]:
            placed = layouts[:, j]
            if placed[0] >= 0:  # the order places a logical qubit in every row at once
                cand = cand + c * prob.dev.gate[placed, :] + prob.dev.swap[placed, :]
        rows = np.arange(len(layouts))
        for k in order[: order.index(lq)]:
            cand[rows, layouts[:, k]] = np.inf
        flat = cand.ravel()
        take = min(width, int(np.isfinite(flat).sum()))
        best = np.argpartition(flat, take - 1)[:take] if take < flat.size else np.arange(flat.size)
        best = best[np.argsort(flat[best], kind="stable")]
        parents, places = np.divmod(best, n)
        layouts = layouts[parents].copy()
        layouts[:, lq] = places
        totals = flat[best]
    return layouts[:count].tolist()  # type: ignore[no-any-return]


def _local_at(prob: _Problem, lq: int, p: int, layout: Sequence[int]) -> float:
    gate, swap = prob.rows(p)
    total = prob._node_rows[lq][p]
    for j, c in prob.nbrs[lq]:
        q = layout[j]
        total += c * gate[q] + swap[q]
    return total


def _improve(prob: _Problem, layout: list[int]) -> list[int]:
    """Move single qubits to free places and exchange pairs while that lowers the cost."""
    n = prob.dev.n
    for _ in range(_LOCAL_SEARCH_ROUNDS):
        better = False
        used = np.zeros(n, dtype=bool)
        used[layout] = True
        for lq in range(prob.m):
            vec = prob.local(lq, layout)
            here = vec[layout[lq]]
            vec[used] = np.inf
            p = int(np.argmin(vec))
            if vec[p] < here - 1e-12:
                used[layout[lq]] = False
                used[p] = True
                layout[lq] = p
                better = True
        for a, b in itertools.combinations(range(prob.m), 2):
            pa, pb = layout[a], layout[b]
            before = _local_at(prob, a, pa, layout) + _local_at(prob, b, pb, layout)
            layout[a], layout[b] = pb, pa
            after = _local_at(prob, a, pb, layout) + _local_at(prob, b, pa, layout)
            # The a-b pair is counted twice on both sides, so the comparison is fair.
            if after < before - 1e-12:
                better = True
            else:
                layout[a], layout[b] = pa, pb
        if not better:
            break
    return layout


def _exhaustive(prob: _Problem) -> list[int]:
    perms = np.array(list(itertools.permutations(range(prob.dev.n), prob.m)), dtype=np.int64)
    total = np.zeros(len(perms))
    for lq in range(prob.m):
        total += prob.node[lq, perms[:, lq]]
    for i, j, c in prob.pairs:
        total += prob.pair_cost(perms[:, i], perms[:, j], c)
    return [int(p) for p in perms[int(np.argmin(total))]]


def _permutations(n: int, k: int) -> int:
    return math.perm(n, k) if k <= n else 0


def estimate_fidelity(
    profile: CircuitProfile,
    calibration: CalibrationSnapshot,
    *,
    idle_decoherence: bool = IDLE_DECOHERENCE,
) -> FidelityEstimate:
    """Search a layout for ``profile`` on ``calibration`` and estimate its ESP.

    Args:
        profile: the logical circuit (:func:`profile_circuit`).
        calibration: the device's calibration; it must have at least as many qubits as
            the circuit.
        idle_decoherence: charge T1/T2 decay while a qubit waits (see
            :data:`IDLE_DECOHERENCE`).

    Returns:
        The estimate, with the layout the compiler should use.

    Raises:
        ValueError: the circuit is wider than the device.
    """
    if profile.num_qubits > calibration.num_qubits:
        raise ValueError(
            f"the circuit has {profile.num_qubits} qubits but {calibration.device} has "
            f"{calibration.num_qubits}"
        )
    dev = _costs(calibration)
    prob = _Problem(profile, dev, idle_decoherence)
    exact = False
    if prob.m == 0:
        layout: list[int] = []
    elif _permutations(dev.n, prob.m) <= _EXHAUSTIVE_MAX:
        layout = _exhaustive(prob)
        exact = True
    else:
        order = prob.order()
        best: tuple[float, list[int]] | None = None
        for cand in _beam(prob, order, _BEAM_WIDTH, _POLISHED):
            cand = _improve(prob, cand)
            c = prob.cost(cand)
            if best is None or c < best[0]:
                best = (c, cand)
        assert best is not None
        layout = best[1]
    return _scored(prob, layout, exact)


def _scored(prob: _Problem, layout: list[int], exact: bool) -> FidelityEstimate:
    dev, profile = prob.dev, prob.profile
    idx = np.array(layout, dtype=np.int64) if layout else np.zeros(0, dtype=np.int64)
    one_q = float(np.dot(profile.pulses, dev.pulse[idx])) if layout else 0.0
    readout = (
        float(np.dot(np.array(profile.measured, dtype=float), dev.readout[idx])) if layout else 0.0
    )
    two_q = routing = 0.0
    swaps = 0
    for i, j, c in profile.pairs:
        two_q += c * float(dev.gate[layout[i], layout[j]])
        routing += ROUTING_SCALE * float(dev.swap[layout[i], layout[j]])
        swaps += int(dev.hops[layout[i], layout[j]])
    total_2q = max(1, profile.two_qubit_gates)
    duration_units = profile.duration_units + 3 * swaps * profile.duration_units / total_2q
    duration_s = duration_units * dev.t2q_s
    idle = 0.0
    if layout and prob.idle:
        busy = np.array(profile.busy_units) * dev.t2q_s
        idle = float(np.dot(np.maximum(0.0, duration_s - busy), dev.decay[idx]))
    parts = {
        "one_qubit": one_q,
        "two_qubit": two_q,
        "routing": routing,
        "readout": readout,
        "idle": idle,
    }
    total = sum(parts.values())
    return FidelityEstimate(
        esp=math.exp(-total),
        layout=_full_layout(profile, layout, dev.n),
        swaps=swaps,
        duration_s=duration_s,
        breakdown={k: round(v, 6) for k, v in parts.items()},
        exact_search=exact,
    )


def _full_layout(profile: CircuitProfile, active_layout: list[int], n: int) -> tuple[int, ...]:
    """Physical qubit of every logical qubit: inactive ones take the lowest free qubits."""
    out = [-1] * profile.num_qubits
    for lq, q in enumerate(profile.active):
        out[q] = active_layout[lq]
    free = (p for p in range(n) if p not in set(active_layout))
    return tuple(q if q >= 0 else next(free) for q in out)


def nominal_duration_s(profile: CircuitProfile, calibration: CalibrationSnapshot) -> float:
    """One shot's duration before routing, from the device's median 2-qubit gate time."""
    return profile.duration_units * _light(calibration).t2q_s


def esp_upper_bound(
    profile: CircuitProfile,
    calibration: CalibrationSnapshot,
    *,
    idle_decoherence: bool = IDLE_DECOHERENCE,
) -> float:
    """An ESP that no layout of ``profile`` on ``calibration`` can exceed (cheap).

    A relaxation of the search's cost: every 2-qubit gate on the best coupler with no
    routing, and the logical qubits on distinct physical qubits chosen by an optimal
    assignment of their own costs (pulses, readout and, with ``idle_decoherence``,
    idle decay over the unrouted duration). Routing only adds cost, so a device whose
    bound is below another device's estimate cannot beat it.
    """
    dev = _light(calibration)
    if not profile.active:
        return 1.0
    duration_s = profile.duration_units * dev.t2q_s
    idle_s = np.maximum(0.0, duration_s - np.array(profile.busy_units) * dev.t2q_s)
    node = np.outer(np.array(profile.pulses), dev.pulse) + np.outer(
        np.array(profile.measured, dtype=float), dev.readout
    )
    if idle_decoherence:
        node += np.outer(idle_s, dev.decay)
    rows, cols = linear_sum_assignment(node)
    lower = float(node[rows, cols].sum()) + profile.two_qubit_gates * dev.min_gate
    return math.exp(-lower)


# == scoring a compiled circuit ======================================================


def esp_of_compiled(
    circuit: Any,
    calibration: CalibrationSnapshot,
    *,
    idle_decoherence: bool = IDLE_DECOHERENCE,
) -> float:
    """ESP of a circuit already compiled for the device (native gates, physical qubits).

    Every gate's calibrated error and every measured qubit's readout error, as the
    product of their success probabilities; with ``idle_decoherence``, idle time is
    charged as in :func:`estimate_fidelity`, from an as-soon-as-possible schedule of
    the calibrated durations. Gates the calibration does not list (rz, barriers) cost
    nothing.
    """
    errors: dict[tuple[str, tuple[int, ...]], tuple[float, float]] = {
        (g.gate, g.qubits): (g.error, g.duration_s) for g in calibration.gates
    }
    index = {bit: i for i, bit in enumerate(circuit.qubits)}
    cost = 0.0
    clock: dict[int, float] = {}
    busy: dict[int, float] = {}
    for inst in circuit.data:
        name = inst.name
        qubits = tuple(index[q] for q in inst.qubits)
        if name in ("barrier", "delay"):
            continue
        if name == "measure":
            cost += _neg_log(calibration.readout_error[qubits[0]])
            continue
        error, duration = errors.get((name, qubits), (0.0, 0.0))
        cost += _neg_log(error)
        start = max((clock.get(q, 0.0) for q in qubits), default=0.0)
        for q in qubits:
            clock[q] = start + duration
            busy[q] = busy.get(q, 0.0) + duration
    end = max(clock.values(), default=0.0)
    for q, b in busy.items() if idle_decoherence else ():
        t1 = max(calibration.t1_s[q], 1e-9)
        t2 = max(calibration.t2_s[q], 1e-9)
        cost += max(0.0, end - b) * (1 / t1 + 1 / t2) / 2
    return math.exp(-cost)


# == cache ============================================================================


class FidelityEstimator:
    """Estimates cached by (circuit hash, calibration id); thread-safe, bounded (LRU).

    Args:
        max_entries: estimates kept.
        idle_decoherence: charge T1/T2 decay while a qubit waits (see
            :data:`IDLE_DECOHERENCE`); one setting per cache.
    """

    def __init__(
        self, max_entries: int = 50_000, idle_decoherence: bool = IDLE_DECOHERENCE
    ) -> None:
        self.max_entries = max_entries
        self.idle_decoherence = idle_decoherence
        self._entries: OrderedDict[tuple[str, str], FidelityEstimate] = OrderedDict()
        # (circuit hash, calibration id) -> (ESP upper bound, unrouted shot duration)
        self._bounds: dict[tuple[str, str], tuple[float, float]] = {}
        self._lock = threading.Lock()
        self.hits = 0
        self.misses = 0

    def estimate(
        self, circuit_hash: str, profile: CircuitProfile, calibration: CalibrationSnapshot
    ) -> FidelityEstimate:
        """The cached estimate, or :func:`estimate_fidelity`'s on a miss."""
        key = (circuit_hash, calibration.calibration_id)
        with self._lock:
            found = self._entries.get(key)
            if found is not None:
                self.hits += 1
                self._entries.move_to_end(key)
                return found
            self.misses += 1
        made = estimate_fidelity(profile, calibration, idle_decoherence=self.idle_decoherence)
        with self._lock:
            self._entries[key] = made
            while len(self._entries) > self.max_entries:
                self._entries.popitem(last=False)
        return made

    def bound(
        self, circuit_hash: str, profile: CircuitProfile, calibration: CalibrationSnapshot
    ) -> tuple[float, float]:
        """(:func:`esp_upper_bound`, :func:`nominal_duration_s`) of one circuit on one
        calibration, cached apart from the full estimates (they are far cheaper, and
        a placement over many devices asks for one per device)."""
        key = (circuit_hash, calibration.calibration_id)
        found = self._bounds.get(key)  # a plain dict read: atomic under the GIL
        if found is None:
            found = (
                esp_upper_bound(profile, calibration, idle_decoherence=self.idle_decoherence),
                nominal_duration_s(profile, calibration),
            )
            with self._lock:
                self._bounds[key] = found
                if len(self._bounds) > 4 * self.max_entries:
                    self._bounds.pop(next(iter(self._bounds)))
        return found

    def cached(self, circuit_hash: str, calibration_id: str) -> FidelityEstimate | None:
        """The estimate if it is already cached, else None; never searches."""
        with self._lock:
            return self._entries.get((circuit_hash, calibration_id))

    def __len__(self) -> int:
        return len(self._entries)
