"""The Estimator primitive (Qiskit ``BaseEstimatorV2``) with error mitigation that runs.

Resilience levels (the defaults of ``options.resilience``):

- 0: nothing; raw expectation values.
- 1: measurement twirling and readout mitigation (the device's measured readout
  errors, inverted on the observed bitstrings).
- 2: level 1 plus zero-noise extrapolation over gate-folded circuits, with the
  2-qubit gates twirled.

Each PUB is one farm job, so all of its circuits (parameter sets, measurement bases,
noise factors, randomizations) run on one device and one calibration. Every PUB
result says what was applied and what it cost in extra shots.
"""

from __future__ import annotations

import dataclasses
import math
import warnings
from collections.abc import Iterable, Sequence
from typing import Any

import numpy as np
from qiskit.primitives import BaseEstimatorV2, DataBin, PrimitiveResult
from qiskit.primitives.containers.estimator_pub import EstimatorPub, EstimatorPubLike

from qrt_ray.dynamic import dynamic_reason
from qrt_ray.errors import MitigationWarning, ValidationError, brief
from qrt_ray.mitigation.observables import group_paulis
from qrt_ray.mitigation.twirling import copies_for
from qrt_ray.models import MAX_CIRCUITS_PER_JOB
from qrt_ray.primitives.combine import EstimatorData, EstimatorPlan, combine_estimator
from qrt_ray.primitives.construct import (
    SWEEP_CHUNK,
    EstimatorCircuits,
    estimator_circuits,
    estimator_view,
    make_template,
)
from qrt_ray.primitives.job import PrimitiveJob
from qrt_ray.primitives.options import EstimatorOptions
from qrt_ray.primitives.results import QrtPrimitiveResult, QrtPubResult
from qrt_ray.primitives.runner import (
    FarmRequest,
    PrimitiveBase,
    dd_spec,
    fan_out,
    fetch_readout,
    finish,
    noise_of,
    readout_note,
    refuse_decoupling_of_dynamic_circuits,
    refuse_mitigation_when_ideal,
    requested,
    submit,
    twirl_spec,
    values_matrix,
    wait_results,
)

_PAULI = frozenset("IXYZ")


def shots_for(precision: float) -> int:
    """Shots per circuit for a standard error of about ``precision`` on a +-1 observable."""
    return math.ceil(1.0 / precision**2)


class Estimator(PrimitiveBase[EstimatorOptions], BaseEstimatorV2):
    """Expectation values of observables on a qrt farm.

    Args:
        mode: a QuantumRuntime, ``rt.backend(name)``, a Session or a Batch.
        options: an EstimatorOptions or a dict of its fields (dotted keys allowed).
    """

    _options_type = EstimatorOptions

    def run(
        self, pubs: Iterable[EstimatorPubLike], *, precision: float | None = None
    ) -> PrimitiveJob:
        """Estimate expectation values; returns at once with a job handle.

        Raises:
            ValidationError: a PUB or an option is invalid; the message names it.
        """
        if precision is not None and not 0 < precision <= 1:
            raise ValidationError(
                f"precision={brief(precision)}: The precision value must be strictly "
                "greater than 0 (and at most 1)"
            )
        default = precision if precision is not None else self._options.default_precision
        coerced = []
        for i, pub in enumerate(pubs):
            try:
                coerced.append(EstimatorPub.coerce(pub, default))
            except Exception as exc:
                raise ValidationError(f"pubs[{i}]: {exc}") from None
            if not 0 < coerced[-1].precision <= 1:
                raise ValidationError(
                    f"pubs[{i}].precision={brief(coerced[-1].precision)}: The precision "
                    "value must be strictly greater than 0 (and at most 1); the shots a "
                    "PUB takes grow as 1 / precision**2"
                )
        if not coerced:
            raise ValidationError("pubs: empty; pass at least one (circuit, observables) PUB")
        options = self._run_options()
        refuse_decoupling_of_dynamic_circuits(options, [pub.circuit for pub in coerced])
        plans = [self._prepare(i, pub) for i, pub in enumerate(coerced)]
        dd_spec(options.dynamical_decoupling)  # an unplayable sequence fails here
        factors = len(_settings(options, any(p["dynamic"] for p in plans))["factors"])
        for i, plan in enumerate(plans):
            circuits = plan["values"].shape[0] * len(plan["groups"]) * factors
            if circuits > MAX_CIRCUITS_PER_JOB:
                raise ValidationError(
                    f"pubs[{i}] needs {circuits:,} circuits ({plan['values'].shape[0]:,} "
                    f"parameter sets x {len(plan['groups'])} measurement bases x {factors} "
                    f"noise factors), above the {MAX_CIRCUITS_PER_JOB:,} a job may hold; "
                    "split its parameter sweep over several PUBs"
                )
        self._mode.admit()  # a closed session fails here, not in the background
        return PrimitiveJob(
            self._mode.runtime,
            lambda job: finish(self._mode, _execute, job, options, plans),
            {"pubs": len(plans), "options": dataclasses.asdict(options)},
        )

    def _prepare(self, index: int, pub: EstimatorPub) -> dict[str, Any]:
        """Validate one PUB and turn it into the data construct and combine need."""
        arg = f"pubs[{index}]"
        if pub.observables.size == 0:
            raise ValidationError(f"{arg}: Empty observables array is not allowed")
        dynamic = dynamic_reason(pub.circuit)
        circuit = estimator_view(pub.circuit, arg, dynamic is not None)
        flat_obs = [dict(pub.observables[i]) for i in np.ndindex(pub.observables.shape)]
        labels = set()
        for o in flat_obs:
            for label in o:
                if set(label) - _PAULI:
                    raise ValidationError(
                        f"{arg}: Observable term {brief(label)!r} is not a Pauli string; "
                        "use I, X, Y and Z only (SparsePauliOp)"
                    )
                if len(label) != circuit.num_qubits:
                    raise ValidationError(
                        f"{arg}: Observable {brief(label)!r} acts on {len(label)} qubits, the "
                        f"circuit has {circuit.num_qubits}"
                    )
                labels.add(label)
        if 0 in pub.shape:
            raise ValidationError(f"{arg}: the PUB has shape {pub.shape}, with no elements")
        values = values_matrix(pub)
        shape = pub.shape
        n_params = values.shape[0]
        param_index = np.broadcast_to(
            np.arange(n_params).reshape(pub.parameter_values.shape or ()), shape
        ).ravel()
        obs_index = np.broadcast_to(
            np.arange(len(flat_obs)).reshape(pub.observables.shape or ()), shape
        ).ravel()
        opts = self._options
        precision = pub.precision
        if opts.default_shots is not None and pub.precision == opts.default_precision:
            # default_shots wins over default_precision; the precision it gives is said
            shots, precision = opts.default_shots, 1 / math.sqrt(opts.default_shots)
        else:
            shots = shots_for(pub.precision)
        return {
            "circuit": circuit,
            "values": values,
            "shape": shape,
            "param_index": tuple(int(p) for p in param_index),
            "observables": tuple(flat_obs[int(k)] for k in obs_index),
            "groups": (
                group_paulis(labels)
                if opts.abelian_grouping
                else [g for label in sorted(labels) for g in group_paulis({label})]
            ),
            "precision": precision,
            "shots": shots,
            "circuit_metadata": pub.circuit.metadata,
            # a dynamic circuit keeps its own bits; the bases are measured after them
            "dynamic": dynamic,
            "own_clbits": circuit.num_clbits,
        }


def _settings(options: EstimatorOptions, dynamic: bool = False) -> dict[str, Any]:
    """What the run applies: the level's defaults, overridden by explicit switches.

    ``dynamic``: some PUB's circuit is dynamic. Readout mitigation still applies (to the
    final basis measurements); twirling and gate folding, which would change its
    mid-circuit measurements and branches, are refused when asked for and left out of
    the level's defaults.
    """
    level = options.resilience_level
    res = options.resilience
    if res.readout_distance is not None:
        raise ValidationError(
            f"resilience.readout_distance={res.readout_distance} applies to the Sampler's "
            "quasi-distributions; the Estimator mitigates readout exactly shot by shot and "
            "needs no truncation (leave it unset)"
        )
    folding = ("resilience.zne_mitigation", "twirling.enable_gates", "twirling.enable_measure")
    refuse_mitigation_when_ideal(
        options, requested(options, "resilience.measure_mitigation", *folding)
    )
    if dynamic:
        asked = requested(options, *folding)
        if asked:
            raise ValidationError(
                f"{', '.join(asked)} cannot apply to a dynamic circuit: twirling and gate "
                "folding would change its mid-circuit measurements and the branches that "
                "read them; set them to False (readout mitigation still applies)"
            )
    if noise_of(options) == "ideal":  # nothing to mitigate: the level applies nothing
        level_on = {"measure": False, "zne": False, "gates": False, "twirl": False}
    elif dynamic:
        level_on = {"measure": level >= 1, "zne": False, "gates": False, "twirl": False}
    else:
        level_on = {
            "measure": level >= 1,
            "zne": level >= 2,
            "gates": level >= 2,
            "twirl": level >= 1,
        }
    measure_mitigation = (
        res.measure_mitigation if res.measure_mitigation is not None else level_on["measure"]
    )
    zne = res.zne_mitigation if res.zne_mitigation is not None else level_on["zne"]
    return {
        "level": level,
        "measure_mitigation": measure_mitigation,
        "zne": zne,
        "measure_twirl": _switch(options.twirling.enable_measure, level_on["twirl"]),
        "gate_twirl": _switch(options.twirling.enable_gates, level_on["gates"]),
        "factors": tuple(res.zne.noise_factors) if zne else (1.0,),
    }


def _basis_counts(counts: dict[str, int], own_clbits: int) -> dict[str, int]:
    """The counts of the basis measurements alone. A dynamic circuit's own bits come
    first in its register order, so they are the last words of each key."""
    if not own_clbits:
        return counts
    out: dict[str, int] = {}
    for key, n in counts.items():
        basis = key.split(" ", 1)[0]
        out[basis] = out.get(basis, 0) + n
    return out


def _switch(value: bool | None, default: bool) -> bool:
    return default if value is None else value


def _construct(
    job: PrimitiveJob, plans: list[dict[str, Any]], factors: tuple[float, ...], seed: int
) -> list[EstimatorCircuits]:
    """Build every PUB's circuits; large sweeps are cut into Ray tasks."""
    calls = []
    owners = []
    for k, plan in enumerate(plans):
        template = make_template(plan["circuit"])
        bases = [b for b, _ in plan["groups"]]
        values = plan["values"]
        for start in range(0, values.shape[0], SWEEP_CHUNK):
            chunk = values[start : start + SWEEP_CHUNK]
            calls.append((template, chunk.tobytes(), len(chunk), start, bases, factors, seed + k))
            owners.append(k)
    built = fan_out(estimator_circuits, calls)
    job.check_cancelled()
    merged: list[list[EstimatorCircuits]] = [[] for _ in plans]
    for k, part in zip(owners, built, strict=True):
        merged[k].append(part)
    return [
        EstimatorCircuits(
            tuple(t for p in parts for t in p.qasm),
            tuple(key for p in parts for key in p.keys),
            tuple(f for p in parts for f in p.reached_factors),
        )
        for parts in merged
    ]


def _execute(
    job: PrimitiveJob, mode: Any, options: EstimatorOptions, plans: list[dict[str, Any]]
) -> PrimitiveResult:
    s = _settings(options, any(p["dynamic"] for p in plans))
    seed = options.seed_estimator if options.seed_estimator is not None else 0
    # a PUB whose observables are all identity needs no circuit: its value is known
    farm = [k for k, plan in enumerate(plans) if plan["groups"]]
    built_farm = _construct(job, [plans[k] for k in farm], s["factors"], seed)
    built: list[EstimatorCircuits | None] = [None] * len(plans)
    for k, b in zip(farm, built_farm, strict=True):
        built[k] = b
    dd = dd_spec(options.dynamical_decoupling)
    requests = {
        k: FarmRequest(
            built_farm[i].qasm,
            plans[k]["shots"],
            twirl_spec(
                options.twirling,
                plans[k]["shots"],
                gates=s["gate_twirl"],
                measure=s["measure_twirl"],
            ),
            dd,
        )
        for i, k in enumerate(farm)
    }
    seed_run = options.run_seed()
    submitted = submit(job, mode, [requests[k] for k in farm], options, seed_run)
    farm_results = wait_results(job, mode, submitted, None)
    farm_notes = mode.record(farm_results)
    results: list[Any] = [None] * len(plans)
    notes: list[list[str]] = [[] for _ in plans]
    spans: dict[int, list[int]] = {}
    for i, k in enumerate(farm):
        results[k], notes[k] = farm_results[i], farm_notes[i]
        spans[k] = list(submitted.slices[i][1:])
    res = options.resilience
    readout = (
        fetch_readout(mode, farm_results, res.readout_shots, res.readout_max_age_s)
        if s["measure_mitigation"] and farm_results
        else {}
    )
    combine_calls = []
    for k in farm:
        plan, b, result, request = plans[k], built[k], results[k], requests[k]
        assert b is not None
        combine_plan = EstimatorPlan(
            shape=plan["shape"],
            param_index=plan["param_index"],
            observables=plan["observables"],
            bases=tuple((basis, tuple(labels)) for basis, labels in plan["groups"]),
            factors=s["factors"],
            keys=b.keys,
            reached_factors=b.reached_factors,
            measure_mitigation=s["measure_mitigation"],
            symmetric_readout=request.twirl is not None
            and request.twirl.measure
            and copies_for(request.twirl, plan["shots"]) >= 2,
            extrapolators=res.zne.extrapolators,
        )
        cal = readout.get(result.metadata.device, (None, 0))[0]
        own = plan["own_clbits"]
        combine_calls.append(
            (
                combine_plan,
                [_basis_counts(c.counts, own) for c in result.circuits],
                [info.measured_qubits[own:] for info in result.metadata.compile],
                cal,
                [info.two_qubit_gates for info in result.metadata.compile],
            )
        )
    owners = [results[k].metadata.job_id for k in farm]
    combined = dict(zip(farm, fan_out(combine_estimator, combine_calls, owners), strict=True))
    job.check_cancelled()
    pub_results = []
    charged: set[str] = set()  # each device's fresh readout shots go to its first PUB
    for k, plan in enumerate(plans):
        if k not in combined:
            pub_results.append(_known_result(plan, s))
            continue
        device = results[k].metadata.device
        spent = readout.get(device, (None, 0))[1] if device not in charged else 0
        charged.add(device)
        pub_results.append(
            _pub_result(
                k,
                plan,
                built[k],
                results[k],
                combined[k],
                requests[k],
                s,
                readout,
                spent,
                notes[k],
            )
        )
        # the PUB's circuits within its farm job (a job may hold several PUBs)
        pub_results[-1].qrt["farm_circuits"] = spans[k]
    return QrtPrimitiveResult(
        pub_results, {"version": 2}, {"primitive_job_id": job.job_id(), "mode": mode.kind}
    )


def _pub_result(
    index: int,
    plan: dict[str, Any],
    built: EstimatorCircuits,
    result: Any,
    data: EstimatorData,
    request: FarmRequest,
    s: dict[str, Any],
    readout: dict[str, Any],
    readout_spent: int,
    notes: list[str],
) -> QrtPubResult:
    shape = plan["shape"]
    fields: dict[str, Any] = {
        "evs": np.asarray(data.evs, dtype=float).reshape(shape),
        "stds": np.asarray(data.stds, dtype=float).reshape(shape),
    }
    if data.evs_noise_factors:
        n = len(s["factors"])
        fields["evs_noise_factors"] = np.asarray(data.evs_noise_factors).reshape(*shape, n)
        fields["stds_noise_factors"] = np.asarray(data.stds_noise_factors).reshape(*shape, n)
    meta = result.metadata
    warnings_out = list(meta.warnings) + notes
    if plan["dynamic"] and s["level"] >= 1 and meta.noise != "ideal":
        left_out = "measurement twirling" + (", gate twirling and ZNE" if s["level"] >= 2 else "")
        warnings_out.append(
            f"the circuit is dynamic ({plan['dynamic']}): resilience level {s['level']} "
            f"left out {left_out}, which would change its mid-circuit measurements"
        )
    if meta.noise == "ideal" and s["level"] >= 1:
        warnings_out.append(
            f"simulated without noise (simulator.noise_model='ideal'): resilience level "
            f"{s['level']} had nothing to mitigate and applied nothing"
        )
    n_params = plan["values"].shape[0]
    baseline = n_params * len(plan["groups"]) * plan["shots"]
    device_shots = len(built.qasm) * plan["shots"]
    mitigation: dict[str, Any] = {
        "measure_mitigation": s["measure_mitigation"],
        "measure_twirling": s["measure_twirl"],
        "gate_twirling": s["gate_twirl"],
        "dynamical_decoupling": request.dd.sequence if request.dd else None,
        "num_randomizations": copies_for(request.twirl, plan["shots"]) if request.twirl else 1,
        "readout": None,
        "zne": None,
    }
    if s["measure_mitigation"]:
        cal, spent = readout[meta.device]
        mitigation["readout"], extra = readout_note(cal, spent, result)
        mitigation["readout"]["method"] = "tensored inverse per shot"
        mitigation["readout"]["mitigation_overhead"] = data.mitigation_overhead
        warnings_out += extra
    if s["zne"]:
        mitigation["zne"] = {
            "amplifier": "gate_folding",
            "noise_factors": list(s["factors"]),
            "reached_factors": data.reached_factors,
            "extrapolator": data.extrapolator,
        }
    if data.raw_evs:
        note = within_noise_note(data.evs, data.stds, data.raw_evs)
        mitigation["raw_evs"] = np.asarray(data.raw_evs, dtype=float).reshape(shape).tolist()
        if note:
            warnings_out.append(note)
            warnings.warn(f"pubs[{index}]: {note}", MitigationWarning, stacklevel=2)
    if data.clipped:
        note = (
            f"{data.clipped} expectation value(s) fell outside the observable's range "
            "after mitigation and were clipped to it"
        )
        warnings_out.append(note)
        warnings.warn(f"pubs[{index}]: {note}", MitigationWarning, stacklevel=2)
    return QrtPubResult(
        DataBin(**fields, shape=shape),
        _metadata(plan),
        {
            "noise": meta.noise,
            "circuits": len(built.qasm),
            "resilience_level": s["level"],
            "device": meta.device,
            "calibration_id": meta.calibration_id,
            "calibration_age_s": meta.calibration_age_s,
            "farm_job_id": meta.job_id,
            "mitigation": mitigation,
            "cost": {
                "device_shots": device_shots + readout_spent,
                "extra_shots": device_shots - baseline + readout_spent,
                "readout_shots": readout_spent,
            },
            "warnings": warnings_out,
        },
    )


def within_noise_note(
    evs: Sequence[float], stds: Sequence[float], raw_evs: Sequence[float]
) -> str | None:
    """A warning when mitigated values' error bars exceed the correction mitigation made
    to the raw values: the mitigated and unmitigated results then differ by noise, and
    a smaller error, or a larger one, says nothing about the mitigation."""
    within = [
        (std, abs(ev - raw))
        for ev, std, raw in zip(evs, stds, raw_evs, strict=True)
        if std > abs(ev - raw)
    ]
    if not within:
        return None
    std, correction = max(within, key=lambda pair: pair[0] - pair[1])
    return (
        f"{len(within)} of {len(evs)} mitigated value(s) have an error bar larger than the "
        f"correction mitigation made to the raw value (e.g. {std:.3g} > {correction:.3g}): "
        "mitigated and raw differ by noise here; lower default_precision (more shots) "
        "before comparing them"
    )


def _metadata(plan: dict[str, Any], shots: int | None = None) -> dict[str, Any]:
    """A PUB's metadata: the keys Qiskit's backend estimator gives, no more."""
    return {
        "target_precision": plan["precision"],
        "shots": plan["shots"] if shots is None else shots,
        "circuit_metadata": plan["circuit_metadata"],
    }


def _known_result(plan: dict[str, Any], s: dict[str, Any]) -> QrtPubResult:
    """A PUB of identity observables only: its value is the identity coefficient."""
    shape = plan["shape"]
    evs = [sum(o.values()) for o in plan["observables"]]
    return QrtPubResult(
        DataBin(
            evs=np.asarray(evs, dtype=float).reshape(shape),
            stds=np.zeros(shape),
            shape=shape,
        ),
        _metadata(plan, shots=0),
        {
            "circuits": 0,
            "resilience_level": s["level"],
            "device": None,
            "mitigation": None,
            "cost": {"device_shots": 0, "extra_shots": 0, "readout_shots": 0},
            "warnings": ["every observable is the identity: nothing was run"],
        },
    )
