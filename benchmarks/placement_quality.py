"""How well qrt picks a device: measured fidelity of its pick against the best device.

For every circuit of the suite (``placement_suite.py``: 215 mqt.bench circuits,
3 to 20 qubits, whose ideal outputs are far from uniform) and every device of the
default farm that fits it, the circuit is compiled (Qiskit level 3) and run as a noisy
Aer simulation with that device's noise; its Hellinger fidelity against the ideal
output is the measured quality of that device for that circuit. Then:

- qrt's pick (:func:`qrt_pick`: the fitting device with the highest estimated success
  probability, ESP) compiled the way qrt compiles (its own layout as initial layout,
  level 3) is measured too, and compared with the oracle (the best device by measured
  fidelity), a random fitting device (the mean over fitting devices) and the largest
  device;
- Spearman's rank correlation of ESP with measured fidelity, over all (circuit,
  device) pairs and per circuit;
- on devices up to 27 qubits, qrt's layout against mapomatic's best layout: the ESP
  (``esp_of_compiled``) of the circuit compiled with each, and the time each search
  takes. On the 127/133-qubit devices mapomatic runs with a bounded VF2 call limit
  (its exhaustive search takes minutes there) and is reported apart.

Measurements are cached (``--cache``, by default in the system temp dir), so a re-run
only measures what is missing. mapomatic is a benchmark-only dependency (the ``bench``
extra).

    python benchmarks/placement_quality.py                 # full run (about 50 min, 2 cores)
    python benchmarks/placement_quality.py --quick         # smoke run, about 2 minutes
    python benchmarks/placement_quality.py --circuits 60 --json out.json
"""

from __future__ import annotations

import argparse
import json
import math
import os
import statistics
import tempfile
import time
import warnings
from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from scipy.stats import spearmanr

from qrt_ray.policies.fidelity import (
    FidelityEstimate,
    esp_of_compiled,
    estimate_fidelity,
    profile_circuit,
)
from qrt_ray.policies.placement import Candidate, rank_best_fidelity
from qrt_ray.render import table

try:
    from benchmarks import placement_suite as suite
except ImportError:  # run as a script: benchmarks/ itself is on sys.path
    import placement_suite as suite  # type: ignore[no-redef]

warnings.filterwarnings("ignore", category=DeprecationWarning)

QUICK_MAX_QUBITS = 7
QUICK_CIRCUITS = 24
MAPOMATIC_MAX_EXHAUSTIVE_QUBITS = 27
# VF2 calls mapomatic may make on the 127/133-qubit devices: its default (3e7) found
# 21,000 layouts for a 20-qubit GHZ on torino and took 25 s to score them.
MAPOMATIC_BIG_CALL_LIMIT = 1000
MAPOMATIC_CALL_LIMIT = int(3e7)  # mapomatic's own default
LAYOUT_TOLERANCE = 1e-9
CIRCUITS_PER_TASK = 6
TARGETS = {
    "qrt_vs_oracle": (">=", 0.97),
    "qrt_vs_random": (">=", 1.15),
    "spearman_all_pairs": (">=", 0.8),
    "layout_esp_ge_mapomatic": (">=", 0.95),
    "qrt_layout_p95_ms": ("<=", 50.0),
}


# == qrt's side: estimates and the pick ================================================


@dataclass(frozen=True, slots=True)
class QrtEstimates:
    """qrt's view of one circuit: an estimate per fitting device and what it cost.

    Attributes:
        estimates: device -> :class:`FidelityEstimate`.
        time_ms: device -> ms of ``profile_circuit`` + ``estimate_fidelity`` for it.
    """

    estimates: dict[str, FidelityEstimate]
    time_ms: dict[str, float]


def qrt_pick(estimates: Mapping[str, FidelityEstimate]) -> str:
    """qrt's device for a circuit with optimize="fidelity" on an idle farm: the runtime's
    ``best_fidelity`` ranking of the devices' estimates."""
    cands = [Candidate(name, 0, True, est.esp, 0.0, 0.0, 0.0) for name, est in estimates.items()]
    return rank_best_fidelity(cands)[0][0]


def estimate_all(
    circuits: Sequence[suite.SuiteCircuit], devices: Sequence[suite.FarmDevice]
) -> dict[str, QrtEstimates]:
    """qrt's estimates for every circuit on every fitting device, each search timed.

    Each calibration's cost matrices are built once first (the runtime keeps them per
    calibration id), so the times are those of a warm policy.
    """
    warm = profile_circuit(circuits[0].circuit)
    for device in devices:
        if device.num_qubits >= warm.num_qubits:
            estimate_fidelity(warm, device.calibration)
    out = {}
    for item in circuits:
        start = time.perf_counter()
        profile = profile_circuit(item.circuit)
        profile_ms = (time.perf_counter() - start) * 1000
        estimates, times = {}, {}
        for device in fitting(devices, item):
            start = time.perf_counter()
            estimates[device.name] = estimate_fidelity(profile, device.calibration)
            times[device.name] = profile_ms + (time.perf_counter() - start) * 1000
        out[item.name] = QrtEstimates(estimates, times)
    return out


def fitting(
    devices: Sequence[suite.FarmDevice], item: suite.SuiteCircuit
) -> list[suite.FarmDevice]:
    """Devices with at least as many qubits as the circuit."""
    return [d for d in devices if d.num_qubits >= item.num_qubits]


# == cache keys and tasks =============================================================


def _key(item: suite.SuiteCircuit, device: suite.FarmDevice, what: str) -> str:
    return f"{item.key}|{device.name}|{device.calibration.calibration_id}|{what}"


def level3_key(item: suite.SuiteCircuit, device: suite.FarmDevice) -> str:
    """Cache key of a circuit's measurement compiled by Qiskit level 3 alone."""
    return _key(item, device, "level3")


def compile_layout(estimate: FidelityEstimate) -> tuple[int, ...] | None:
    """The layout qrt's scheduler hands the compiler: placement's own. Where it needs
    SWAPs the compiler uses its own layout, unless that reaches too little of the ESP
    placement expected (tasks carry that estimate, see ``MeasureTask.expected``)."""
    return estimate.layout


def layout_key(
    item: suite.SuiteCircuit, device: suite.FarmDevice, layout: Sequence[int] | None
) -> str:
    """Cache key of a measurement (or ESP) compiled the way qrt compiles (v4: a layout
    that needs SWAPs gives way to the compiler's own unless that falls below the floor)."""
    if layout is None:
        return _key(item, device, "layout-v4=compiler")
    return _key(item, device, "layout-v4=" + ",".join(map(str, layout)))


def mapomatic_key(item: suite.SuiteCircuit, device: suite.FarmDevice, call_limit: int) -> str:
    """Cache key of mapomatic's best layout search."""
    return _key(item, device, f"mapomatic-calls={call_limit}")


def measure_tasks(
    circuits: Sequence[suite.SuiteCircuit],
    devices: Sequence[suite.FarmDevice],
    qrt: Mapping[str, QrtEstimates],
    cache: suite.ResultCache,
) -> list[suite.MeasureTask]:
    """Noisy runs still missing: every fitting device (level 3) and qrt's pick (its layout)."""
    wanted: dict[str, list[tuple[str, suite.SuiteCircuit, tuple[int, ...] | None]]] = {}
    for item in circuits:
        pick = qrt_pick(qrt[item.name].estimates)
        for device in fitting(devices, item):
            runs = [(level3_key(item, device), None, None)]
            if device.name == pick:
                estimate = qrt[item.name].estimates[pick]
                layout = compile_layout(estimate)
                runs.append((layout_key(item, device, layout), layout, estimate.esp))
            for key, layout, esp in runs:
                if key not in cache:
                    wanted.setdefault(device.name, []).append((key, item, layout, esp))
    by_name = {d.name: d for d in devices}
    tasks = []
    for name, runs in wanted.items():
        runs.sort(key=lambda run: run[1].num_qubits)  # similar sizes share a simulator call
        for chunk in suite.chunked(runs, CIRCUITS_PER_TASK):
            tasks.append(
                suite.MeasureTask(
                    device=name,
                    backend=by_name[name].backend,
                    keys=tuple(k for k, _, _, _ in chunk),
                    qasm=tuple(i.qasm for _, i, _, _ in chunk),
                    ideals=tuple(i.ideal for _, i, _, _ in chunk),
                    layouts=tuple(lay for _, _, lay, _ in chunk),
                    expected=tuple(esp for _, _, _, esp in chunk),
                )
            )
    # The widest circuits first, so no long task starts last while a core idles.
    tasks.sort(key=lambda t: -max(len(next(iter(i))) for i in t.ideals))
    return tasks


@dataclass(frozen=True, slots=True)
class LayoutTask:
    """qrt's and mapomatic's layouts for circuits on one device (plain data)."""

    device: str
    backend: str
    qasm: tuple[str, ...]
    layouts: tuple[tuple[int, ...] | None, ...]
    expected: tuple[float, ...]  # placement's ESP for each layout
    qrt_keys: tuple[str, ...]
    mapomatic_keys: tuple[str, ...]
    call_limit: int


def layout_tasks(
    circuits: Sequence[suite.SuiteCircuit],
    devices: Sequence[suite.FarmDevice],
    qrt: Mapping[str, QrtEstimates],
    cache: suite.ResultCache,
) -> list[LayoutTask]:
    """Layout comparisons still missing, on every fitting device."""
    tasks = []
    for device in devices:
        limit = call_limit_for(device)
        todo = []
        for item in circuits:
            if device.num_qubits < item.num_qubits:
                continue
            estimate = qrt[item.name].estimates[device.name]
            layout = compile_layout(estimate)
            keys = (layout_key(item, device, layout), mapomatic_key(item, device, limit))
            if keys[0] not in cache or keys[1] not in cache:
                todo.append((item, layout, keys, estimate.esp))
        for chunk in suite.chunked(todo, CIRCUITS_PER_TASK):
            tasks.append(
                LayoutTask(
                    device=device.name,
                    backend=device.backend,
                    qasm=tuple(i.qasm for i, _, _, _ in chunk),
                    layouts=tuple(lay for _, lay, _, _ in chunk),
                    expected=tuple(esp for _, _, _, esp in chunk),
                    qrt_keys=tuple(k[0] for _, _, k, _ in chunk),
                    mapomatic_keys=tuple(k[1] for _, _, k, _ in chunk),
                    call_limit=limit,
                )
            )
    return tasks


def call_limit_for(device: suite.FarmDevice) -> int:
    """mapomatic's VF2 call limit: its default up to 27 qubits, bounded above."""
    if device.num_qubits <= MAPOMATIC_MAX_EXHAUSTIVE_QUBITS:
        return MAPOMATIC_CALL_LIMIT
    return MAPOMATIC_BIG_CALL_LIMIT


# == the layout comparison (runs in worker processes) =================================


def layout_batch(task: LayoutTask) -> dict[str, dict[str, Any]]:
    """ESP of each circuit compiled with qrt's layout, and mapomatic's best layout's ESP."""
    from qrt_ray.calibration import load_backend
    from qrt_ray.circuits import parse_qasm
    from qrt_ray.compiler import compile_circuits, decode_compiled

    calibration, target = suite.device_context(task.device, task.backend)
    compiled = compile_circuits(
        list(task.qasm),
        target,
        device=task.device,
        calibration_id=calibration.calibration_id,
        optimization_level=suite.OPTIMIZATION_LEVEL,
        seed_transpiler=suite.SEED_TRANSPILER,
        initial_layouts=list(task.layouts),
        placement_esp=list(task.expected),
    )
    backend = load_backend(task.backend)
    records: dict[str, dict[str, Any]] = {}
    for i, item in enumerate(compiled):
        if item.payload is None:
            raise RuntimeError(f"{task.qrt_keys[i]} failed to compile: {item.error}")
        circuit = decode_compiled([item.payload])[0]
        records[task.qrt_keys[i]] = {"esp": esp_of_compiled(circuit, calibration)}
        logical = parse_qasm(task.qasm[i])
        records[task.mapomatic_keys[i]] = mapomatic_best(
            logical, target, backend, calibration, task.call_limit
        )
    return records


def mapomatic_best(
    logical: Any, target: Any, backend: Any, calibration: Any, call_limit: int
) -> dict[str, Any]:
    """mapomatic's best layout for ``logical`` on a device, timed, scored by qrt's ESP.

    mapomatic's own recipe: transpile (level 3), deflate to the active qubits, find every
    matching layout, score them with its default cost (backend properties), keep the
    best. The timed part is that search; the ESP of the circuit inflated onto the best
    layout uses :func:`esp_of_compiled`, the same model as qrt's side.
    """
    import mapomatic as mm
    from qiskit.transpiler import generate_preset_pass_manager

    start = time.perf_counter()
    pm = generate_preset_pass_manager(
        optimization_level=suite.OPTIMIZATION_LEVEL,
        target=target,
        seed_transpiler=suite.SEED_TRANSPILER,
    )
    small = mm.deflate_circuit(pm.run(logical))
    layouts = mm.matching_layouts(small, backend, call_limit=call_limit)
    scores = mm.evaluate_layouts(small, layouts, backend)
    search_ms = (time.perf_counter() - start) * 1000
    if not scores:
        return {"esp": None, "search_ms": search_ms, "layouts": len(layouts)}
    inflated = mm.inflate_circuit(small, scores[0][0], backend)
    return {
        "esp": esp_of_compiled(inflated, calibration),
        "search_ms": search_ms,
        "layouts": len(layouts),
    }


# == outcomes ========================================================================


@dataclass(frozen=True, slots=True)
class Outcome:
    """What one circuit scored: measured fidelities per device and the baselines.

    ``qrt`` is qrt's pick compiled with qrt's layout; ``qrt_level3`` the same device
    compiled by level 3 alone. Fidelities are None where the run was capped.
    """

    name: str
    family: str
    num_qubits: int
    pick: str
    oracle_device: str | None
    measured: dict[str, float | None]
    esp: dict[str, float]
    oracle: float | None
    qrt: float | None
    qrt_level3: float | None
    random: float | None
    largest: float | None

    @property
    def complete(self) -> bool:
        """Every fitting device and qrt's own compile were measured (none capped)."""
        return self.qrt is not None and all(v is not None for v in self.measured.values())


def outcome(
    item: suite.SuiteCircuit,
    devices: Sequence[suite.FarmDevice],
    estimates: QrtEstimates,
    cache: suite.ResultCache,
) -> Outcome:
    """One circuit's scores from the cached measurements."""
    pick = qrt_pick(estimates.estimates)
    measured = {d.name: cache[level3_key(item, d)]["fidelity"] for d in fitting(devices, item)}
    by_name = {d.name: d for d in devices}
    layout = compile_layout(estimates.estimates[pick])
    known = {name: f for name, f in measured.items() if f is not None}
    oracle_device = max(known, key=known.__getitem__) if known else None
    largest = max(devices, key=lambda d: d.num_qubits).name
    return Outcome(
        name=item.name,
        family=item.family,
        num_qubits=item.num_qubits,
        pick=pick,
        oracle_device=oracle_device,
        measured=measured,
        esp={name: e.esp for name, e in estimates.estimates.items()},
        oracle=known[oracle_device] if oracle_device else None,
        qrt=cache[layout_key(item, by_name[pick], layout)]["fidelity"],
        qrt_level3=measured[pick],
        random=statistics.fmean(known.values()) if known else None,
        largest=measured.get(largest),
    )


# == statistics ======================================================================


def _mean(values: Sequence[float | None]) -> float | None:
    known = [v for v in values if v is not None]
    return statistics.fmean(known) if known else None


def _ratio(a: float | None, b: float | None) -> float | None:
    return a / b if a is not None and b else None


def percentile(values: Sequence[float], q: float) -> float | None:
    """The ``q``-quantile (0..1) by the nearest-rank method; None when empty."""
    if not values:
        return None
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, max(0, math.ceil(q * len(ordered)) - 1))]


def rank_correlation(outcomes: Sequence[Outcome]) -> dict[str, Any]:
    """Spearman(ESP, measured fidelity): over all pairs, and the mean of per-circuit values.

    A circuit's own correlation needs at least three devices with distinct values; the
    rest are counted as skipped.
    """
    pairs = [(o.esp[d], f) for o in outcomes for d, f in o.measured.items() if f is not None]
    pooled = spearmanr([p[0] for p in pairs], [p[1] for p in pairs]).statistic
    per_circuit = []
    for o in outcomes:
        known = [(o.esp[d], f) for d, f in o.measured.items() if f is not None]
        if len(known) < 3 or len({e for e, _ in known}) < 2 or len({f for _, f in known}) < 2:
            continue
        per_circuit.append(spearmanr([e for e, _ in known], [f for _, f in known]).statistic)
    return {
        "spearman_all_pairs": float(pooled),
        "pairs": len(pairs),
        "spearman_per_circuit_mean": statistics.fmean(per_circuit) if per_circuit else None,
        "circuits_correlated": len(per_circuit),
        "circuits_skipped": len(outcomes) - len(per_circuit),
    }


def placement_summary(outcomes: Sequence[Outcome]) -> dict[str, Any]:
    """Mean fidelities of qrt, the oracle and the baselines over complete circuits."""
    done = [o for o in outcomes if o.complete]
    means = {
        name: _mean([getattr(o, name) for o in done])
        for name in ("oracle", "qrt", "qrt_level3", "random", "largest")
    }
    picked_best = sum(1 for o in done if o.pick == o.oracle_device)
    return {
        "circuits": len(done),
        "circuits_incomplete": len(outcomes) - len(done),
        "mean": means,
        "qrt_vs_oracle": _ratio(means["qrt"], means["oracle"]),
        "qrt_level3_vs_oracle": _ratio(means["qrt_level3"], means["oracle"]),
        "qrt_vs_random": _ratio(means["qrt"], means["random"]),
        # the most any placement could gain over a random fitting device here
        "oracle_vs_random": _ratio(means["oracle"], means["random"]),
        "qrt_vs_largest": _ratio(means["qrt"], means["largest"]),
        "picked_oracle_device": picked_best / len(done) if done else None,
    }


def layout_summary(
    circuits: Sequence[suite.SuiteCircuit],
    devices: Sequence[suite.FarmDevice],
    qrt: Mapping[str, QrtEstimates],
    cache: suite.ResultCache,
) -> dict[str, Any]:
    """qrt's layout against mapomatic's: ESP wins and search times, small and big devices."""
    groups: dict[str, dict[str, list[float]]] = {}
    for item in circuits:
        for device in fitting(devices, item):
            big = device.num_qubits > MAPOMATIC_MAX_EXHAUSTIVE_QUBITS
            group = groups.setdefault("bounded" if big else "exhaustive", _empty_group())
            _add_pair(group, item, device, qrt[item.name], cache)
    all_times = [t for q in qrt.values() for t in q.time_ms.values()]
    out: dict[str, Any] = {
        "qrt_ms_all_pairs": {"p50": percentile(all_times, 0.5), "p95": percentile(all_times, 0.95)}
    }
    for name, group in groups.items():
        compared = len(group["wins"])
        out[name] = {
            "pairs": compared,
            "mapomatic_failed": len(group["failed"]),
            "qrt_ge_mapomatic": statistics.fmean(group["wins"]) if compared else None,
            "mean_esp_qrt": _mean(group["qrt_esp"]),
            "mean_esp_mapomatic": _mean(group["mm_esp"]),
            "qrt_ms": {
                "p50": percentile(group["qrt_ms"], 0.5),
                "p95": percentile(group["qrt_ms"], 0.95),
            },
            "mapomatic_ms": {
                "p50": percentile(group["mm_ms"], 0.5),
                "p95": percentile(group["mm_ms"], 0.95),
            },
        }
    return out


def _empty_group() -> dict[str, list[float]]:
    return {k: [] for k in ("wins", "failed", "qrt_esp", "mm_esp", "qrt_ms", "mm_ms")}


def _add_pair(
    group: dict[str, list[float]],
    item: suite.SuiteCircuit,
    device: suite.FarmDevice,
    estimates: QrtEstimates,
    cache: suite.ResultCache,
) -> None:
    layout = compile_layout(estimates.estimates[device.name])
    ours = cache[layout_key(item, device, layout)]["esp"]
    theirs = cache[mapomatic_key(item, device, call_limit_for(device))]
    group["qrt_ms"].append(estimates.time_ms[device.name])
    group["mm_ms"].append(theirs["search_ms"])
    if theirs["esp"] is None:
        group["failed"].append(1.0)
        return
    group["wins"].append(1.0 if ours >= theirs["esp"] - LAYOUT_TOLERANCE else 0.0)
    group["qrt_esp"].append(ours)
    group["mm_esp"].append(theirs["esp"])


# == report ==========================================================================


def family_table(outcomes: Sequence[Outcome]) -> str:
    """Mean measured fidelities per family (complete circuits only), then all of them."""
    rows = []
    families = list(dict.fromkeys(o.family for o in outcomes))
    for family in [*families, "all"]:
        chosen = [o for o in outcomes if o.complete and family in ("all", o.family)]
        if not chosen:
            continue
        sizes = [o.num_qubits for o in chosen]
        rows.append(
            [
                family,
                len(chosen),
                f"{min(sizes)}-{max(sizes)}",
                _mean([o.oracle for o in chosen]),
                _mean([o.qrt for o in chosen]),
                _mean([o.qrt_level3 for o in chosen]),
                _mean([o.random for o in chosen]),
                _mean([o.largest for o in chosen]),
                sum(o.pick == o.oracle_device for o in chosen) / len(chosen),
            ]
        )
    headers = [
        "family", "circuits", "qubits", "oracle", "qrt", "qrt pick, L3",
        "random", "largest", "picked best",
    ]  # fmt: skip
    return table(headers, rows)


def target_lines(values: Mapping[str, float | None]) -> list[str]:
    """One line per target: measured value, threshold, PASS/FAIL."""
    lines = []
    for name, (op, threshold) in TARGETS.items():
        value = values.get(name)
        ok = value is not None and (value >= threshold if op == ">=" else value <= threshold)
        shown = "n/a" if value is None else f"{value:.3f}"
        lines.append(
            f"  {name:<26} {shown:>8}  target {op} {threshold:<5}  {'PASS' if ok else 'FAIL'}"
        )
    return lines


def print_report(summary: Mapping[str, Any], outcomes: Sequence[Outcome]) -> None:
    """The family table, the correlation, the layout comparison and the targets."""
    place, corr, lay = summary["placement"], summary["correlation"], summary["layouts"]
    print()
    print(family_table(outcomes))
    print(
        "\nMean Hellinger fidelity of a noisy run against the ideal output. oracle = best "
        "fitting device (measured); qrt = qrt's pick compiled with qrt's layout; qrt pick, "
        "L3 = the same device compiled by Qiskit level 3 alone; random = mean over fitting "
        "devices; largest = torino; picked best = share of circuits where qrt picked the "
        "oracle's device."
    )
    print(
        f"\nSpearman(ESP, measured fidelity): {corr['spearman_all_pairs']:.3f} over "
        f"{corr['pairs']} (circuit, device) pairs; per-circuit mean "
        f"{_fmt(corr['spearman_per_circuit_mean'])} over {corr['circuits_correlated']} circuits "
        f"({corr['circuits_skipped']} with too few distinct values skipped)."
    )
    for name in ("exhaustive", "bounded"):
        if name in lay:
            print(_layout_line(name, lay[name]))
    print(
        f"qrt profile+estimate, all (circuit, device) pairs: p50 "
        f"{_fmt(lay['qrt_ms_all_pairs']['p50'])} ms, p95 {_fmt(lay['qrt_ms_all_pairs']['p95'])} ms"
    )
    print(
        f"\nMeasured: {summary['runs']['measured']} noisy runs; capped (not simulated, "
        f"over {suite.MAX_TRAJECTORY_2Q_GATES} native 2-qubit gates as a per-shot "
        f"simulation) or given up (stalled past --stall-s): {summary['runs']['capped']}; "
        f"circuits left out of the comparison because a run was capped or given up: "
        f"{place['circuits_incomplete']}."
    )
    print("\nTargets:")
    print("\n".join(target_lines(summary["targets"])))
    print(
        f"(ceiling for qrt_vs_random: the oracle itself reaches "
        f"{_fmt(place['oracle_vs_random'])}x the random fitting device on these circuits)"
    )


def _layout_line(name: str, group: Mapping[str, Any]) -> str:
    where = (
        f"devices <= {MAPOMATIC_MAX_EXHAUSTIVE_QUBITS} qubits, mapomatic exhaustive"
        if name == "exhaustive"
        else f"127/133-qubit devices, mapomatic bounded to {MAPOMATIC_BIG_CALL_LIMIT} VF2 calls"
    )
    return (
        f"Layouts ({where}): qrt's ESP >= mapomatic's on {_fmt(group['qrt_ge_mapomatic'])} of "
        f"{group['pairs']} pairs (mean ESP {_fmt(group['mean_esp_qrt'])} vs "
        f"{_fmt(group['mean_esp_mapomatic'])}; mapomatic found none on "
        f"{group['mapomatic_failed']}); time p50/p95: qrt {_fmt(group['qrt_ms']['p50'])}/"
        f"{_fmt(group['qrt_ms']['p95'])} ms, mapomatic {_fmt(group['mapomatic_ms']['p50'])}/"
        f"{_fmt(group['mapomatic_ms']['p95'])} ms"
    )


def _fmt(value: float | None) -> str:
    return "n/a" if value is None else f"{value:.3f}"


# == main ============================================================================


def select_circuits(
    circuits: Sequence[suite.SuiteCircuit], *, quick: bool, count: int | None
) -> list[suite.SuiteCircuit]:
    """The circuits to run: all, ``count`` spread over the suite, or the quick subset."""
    if quick:
        small = [c for c in circuits if c.num_qubits <= QUICK_MAX_QUBITS]
        return suite.spread_subset(small, count or QUICK_CIRCUITS)
    return suite.spread_subset(circuits, count) if count else list(circuits)


def open_caches(directory: Path) -> tuple[suite.ResultCache, suite.ResultCache]:
    """The measurement cache and the layout cache, each tied to its settings."""
    measure_settings = {
        "shots": suite.SHOTS,
        "seed_simulator": suite.SEED_SIMULATOR,
        "seed_transpiler": suite.SEED_TRANSPILER,
        "optimization_level": suite.OPTIMIZATION_LEVEL,
        "max_trajectory_2q_gates": suite.MAX_TRAJECTORY_2Q_GATES,
    }
    layout_settings = {
        "seed_transpiler": suite.SEED_TRANSPILER,
        "optimization_level": suite.OPTIMIZATION_LEVEL,
    }
    return (
        suite.ResultCache(directory / "measurements.json", measure_settings),
        suite.ResultCache(directory / "layouts.json", layout_settings),
    )


def run_counts(outcomes: Sequence[Outcome]) -> dict[str, int]:
    """This run's noisy runs: measured, and capped (not simulated)."""
    values = [v for o in outcomes for v in [*o.measured.values(), o.qrt]]
    return {
        "measured": sum(1 for v in values if v is not None),
        "capped": sum(1 for v in values if v is None),
    }


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    p.add_argument("--quick", action="store_true", help="smoke run: a few small circuits")
    p.add_argument(
        "--cache",
        type=Path,
        default=Path(tempfile.gettempdir()) / "qrt-placement-quality",
        help="directory of the measurement cache (default: in the system temp dir)",
    )
    p.add_argument("--json", type=Path, help="write the summary (and every circuit) here")
    p.add_argument("--circuits", type=int, help="use this many circuits, spread over the suite")
    p.add_argument(
        "--processes", type=int, default=min(2, os.cpu_count() or 1), help="worker processes"
    )
    p.add_argument(
        "--stall-s",
        type=float,
        default=600.0,
        help="give up noisy runs still going after this many seconds without progress "
        "(left out of the comparison like capped runs, not cached; default 600)",
    )
    args = p.parse_args()
    started = time.perf_counter()

    built = suite.build_suite()
    circuits = select_circuits(built.circuits, quick=args.quick, count=args.circuits)
    print_suite(built, circuits)
    devices = suite.farm_devices()
    qrt = estimate_all(circuits, devices)
    measurements, layouts = open_caches(args.cache)
    seconds = {
        "simulate": suite.run_tasks(
            suite.measure_batch,
            measure_tasks(circuits, devices, qrt, measurements),
            measurements,
            processes=args.processes,
            label="noisy runs",
            stall_s=args.stall_s,
            abandoned=suite.gave_up,
        ),
        "layouts": suite.run_tasks(
            layout_batch,
            layout_tasks(circuits, devices, qrt, layouts),
            layouts,
            processes=args.processes,
            label="layouts (qrt vs mapomatic)",
        ),
    }
    outcomes = [outcome(c, devices, qrt[c.name], measurements) for c in circuits]
    summary = summarize(circuits, devices, qrt, outcomes, measurements, layouts)
    summary["seconds"] = {**seconds, "total": time.perf_counter() - started}
    print_report(summary, outcomes)
    print(f"\nTotal {summary['seconds']['total']:.0f} s; cache in {args.cache}")
    if args.json:
        payload = {**summary, "circuits": [asdict(o) for o in outcomes]}
        args.json.write_text(json.dumps(payload, indent=2))
        print(f"summary written to {args.json}")


def summarize(
    circuits: Sequence[suite.SuiteCircuit],
    devices: Sequence[suite.FarmDevice],
    qrt: Mapping[str, QrtEstimates],
    outcomes: Sequence[Outcome],
    measurements: suite.ResultCache,
    layouts: suite.ResultCache,
) -> dict[str, Any]:
    """Every number the report prints, as JSON-ready data."""
    placement = placement_summary(outcomes)
    correlation = rank_correlation(outcomes)
    layout = layout_summary(circuits, devices, qrt, layouts)
    exhaustive = layout.get("exhaustive", {})
    return {
        "settings": {**measurements.settings, "circuits": len(circuits)},
        "placement": placement,
        "correlation": correlation,
        "layouts": layout,
        "runs": run_counts(outcomes),
        "targets": {
            "qrt_vs_oracle": placement["qrt_vs_oracle"],
            "qrt_vs_random": placement["qrt_vs_random"],
            "spearman_all_pairs": correlation["spearman_all_pairs"],
            "layout_esp_ge_mapomatic": exhaustive.get("qrt_ge_mapomatic"),
            "qrt_layout_p95_ms": layout["qrt_ms_all_pairs"]["p95"],
        },
    }


def print_suite(built: suite.SuiteReport, chosen: Sequence[suite.SuiteCircuit]) -> None:
    """What the suite holds, what was dropped and left out, and what this run uses."""
    families: dict[str, list[int]] = {}
    for c in chosen:
        families.setdefault(c.family, []).append(c.num_qubits)
    parts = [f"{f} {len(s)} ({min(s)}-{max(s)}q)" for f, s in families.items()]
    print(f"Suite: {len(built.circuits)} circuits; this run: {len(chosen)}: " + ", ".join(parts))
    dropped = {f: n for f, n in built.dropped.items() if n}
    print(
        f"Dropped as near-uniform (normalized entropy > {suite.MAX_NORMALIZED_ENTROPY}): "
        + ", ".join(f"{f} {n}" for f, n in dropped.items())
    )
    for family, why in built.left_out.items():
        print(f"Left out: {family} ({why})")


if __name__ == "__main__":
    main()
