"""The Sampler primitive (Qiskit ``BaseSamplerV2``) on a qrt farm.

Each PUB is one farm job whose circuits are its bound parameter sets. The data bin
holds one ``BitArray`` per classical register, shaped like the PUB, with the shots in
a seeded random order (the farm returns counts; drawing them out in a shuffled order
keeps "the first k shots" an unbiased sample). With
``options.resilience.measure_mitigation`` each PUB's metadata also holds
readout-mitigated quasi-distributions (and, with ``project_to_probabilities``, their
nearest probability distributions).
"""

from __future__ import annotations

import dataclasses
import keyword
import warnings
from collections.abc import Iterable, Sequence
from typing import Any

import numpy as np
from qiskit.primitives import BaseSamplerV2, BitArray, DataBin, PrimitiveResult
from qiskit.primitives.containers.sampler_pub import SamplerPub, SamplerPubLike

from qrt_ray.circuits import to_qasm
from qrt_ray.dynamic import dynamic_reason, walk
from qrt_ray.errors import ValidationError, brief
from qrt_ray.mitigation.pipelines import DEFAULT_VERSIONS
from qrt_ray.mitigation.twirling import copies_for
from qrt_ray.primitives.combine import combine_sampler_quasi
from qrt_ray.primitives.construct import SWEEP_CHUNK, bind, make_template, sampler_circuits
from qrt_ray.primitives.job import PrimitiveJob
from qrt_ray.primitives.options import SamplerOptions
from qrt_ray.primitives.registers import Carried, carry, read_registers
from qrt_ray.primitives.results import QrtPrimitiveResult, QrtSamplerPubResult
from qrt_ray.primitives.runner import (
    FarmRequest,
    PrimitiveBase,
    dd_spec,
    fan_out,
    fetch_readout,
    finish,
    readout_note,
    refuse_decoupling_of_dynamic_circuits,
    refuse_mitigation_when_ideal,
    requested,
    submit,
    twirl_spec,
    values_matrix,
    wait_results,
)


class Sampler(PrimitiveBase[SamplerOptions], BaseSamplerV2):
    """Samples of circuits' classical registers on a qrt farm.

    Args:
        mode: a QuantumRuntime, ``rt.backend(name)``, a Session or a Batch.
        options: a SamplerOptions or a dict of its fields (dotted keys allowed).
    """

    _options_type = SamplerOptions

    def run(self, pubs: Iterable[SamplerPubLike], *, shots: int | None = None) -> PrimitiveJob:
        """Sample the PUBs; returns at once with a job handle.

        Raises:
            ValidationError: a PUB or an option is invalid; the message names it.
        """
        if shots is not None and not 1 <= shots <= 1_000_000:
            raise ValidationError(f"shots={brief(shots)}: use 1 to 1,000,000")
        default = shots if shots is not None else self._options.default_shots
        coerced = []
        for i, pub in enumerate(pubs):
            try:
                coerced.append(SamplerPub.coerce(pub, default))
            except Exception as exc:
                raise ValidationError(f"pubs[{i}]: {exc}") from None
            if not _measures(coerced[-1].circuit):
                # as Qiskit's samplers do: a result of zeros, said, not a refusal
                warnings.warn(
                    f"pubs[{i}]: the circuit measures nothing, so every bit it returns is 0 "
                    "and no device runs it; did you mean to add measurements "
                    "(circuit.measure_all())?",
                    UserWarning,
                    stacklevel=2,
                )
        if not coerced:
            raise ValidationError("pubs: empty; pass at least one circuit")
        options = self._run_options()
        _check_register_names(coerced)
        refuse_decoupling_of_dynamic_circuits(options, [pub.circuit for pub in coerced])
        _refuse_static_only_mitigation(options, coerced)
        if options.resilience.zne_mitigation:
            raise ValidationError(
                "options.resilience.zne_mitigation=True: the Sampler returns bits, which "
                "zero-noise extrapolation cannot correct; use the Estimator for mitigated "
                "expectation values, or measure_mitigation for readout errors"
            )
        dd_spec(options.dynamical_decoupling)  # an unplayable sequence fails here
        self._mode.admit()  # a closed session fails here, not in the background
        return PrimitiveJob(
            self._mode.runtime,
            lambda job: finish(self._mode, _execute, job, options, coerced),
            {"pubs": len(coerced), "options": dataclasses.asdict(options)},
        )


def _bound_circuits(
    pubs: Sequence[SamplerPub], carried: Sequence[Carried]
) -> list[tuple[str, ...]]:
    """Each PUB's bound circuits (as carried) as OpenQASM; large sweeps are cut into
    Ray tasks."""
    calls, owners, inline = [], [], {}
    for k, pub in enumerate(pubs):
        values = values_matrix(pub)
        circuit = carried[k].circuit
        if values.shape[0] <= SWEEP_CHUNK:
            params = list(pub.circuit.parameters)
            inline[k] = tuple(
                to_qasm(bind(circuit, params, row), arg=f"pubs[{k}]") for row in values
            )
            continue
        template = make_template(circuit)
        for start in range(0, values.shape[0], SWEEP_CHUNK):
            chunk = values[start : start + SWEEP_CHUNK]
            calls.append((template, chunk.tobytes(), len(chunk)))
            owners.append(k)
    built = fan_out(sampler_circuits, calls)
    out: list[list[str]] = [list(inline.get(k, ())) for k in range(len(pubs))]
    for k, texts in zip(owners, built, strict=True):
        out[k].extend(texts)
    return [tuple(texts) for texts in out]


def _measures(circuit: Any) -> bool:
    """Whether the circuit measures anything (inside control flow too)."""
    return any(inst.name == "measure" for inst in circuit.data) or any(
        op.name == "measure" for op, _, _ in walk(circuit)
    )


def _check_register_names(pubs: Sequence[SamplerPub]) -> None:
    """Each classical register becomes a field of the PUB's data: its name must be one.

    Raises:
        ValidationError: a name that is no identifier, or a Python keyword.
    """
    for i, pub in enumerate(pubs):
        for creg in pub.circuit.cregs:
            if not creg.name.isidentifier():
                raise ValidationError(
                    f"pubs[{i}]: Classical register names must be valid identifiers, so "
                    f"that the data can name them: {brief(creg.name)!r} is not"
                )
            if keyword.iskeyword(creg.name):
                raise ValidationError(
                    f"pubs[{i}]: Classical register names cannot be Python keywords: "
                    f"{creg.name!r}; rename the register"
                )


def _refuse_static_only_mitigation(options: SamplerOptions, pubs: Sequence[SamplerPub]) -> None:
    """Twirling, readout inversion and dynamical decoupling assume every measurement is
    final and no branch depends on one: refuse them for a dynamic circuit, saying why.

    Raises:
        ValidationError: naming the PUB, the option and the reason.
    """
    asked = requested(
        options,
        "twirling.enable_gates",
        "twirling.enable_measure",
        "resilience.measure_mitigation",
        "dynamical_decoupling.enable",
    )
    refuse_mitigation_when_ideal(options, asked)
    if not asked:
        return
    for i, pub in enumerate(pubs):
        reason = dynamic_reason(pub.circuit)
        if reason is not None:
            raise ValidationError(
                f"pubs[{i}]: {', '.join(asked)} cannot apply to this circuit: {reason}, "
                "and these mitigations assume every measurement is final and no operation "
                "depends on one; set them to False for dynamic circuits"
            )


def _execute(
    job: PrimitiveJob, mode: Any, options: SamplerOptions, pubs: list[SamplerPub]
) -> PrimitiveResult:
    """Run the PUBs that measure something on the farm; the others' bits are all 0."""
    live = [k for k, pub in enumerate(pubs) if _measures(pub.circuit)]
    ran = _on_farm(job, mode, options, [pubs[k] for k in live]) if live else []
    out: list[QrtSamplerPubResult | None] = [None] * len(pubs)
    for k, result in zip(live, ran, strict=True):
        out[k] = result
    results = [r if r is not None else _unmeasured(pub) for r, pub in zip(out, pubs, strict=True)]
    return QrtPrimitiveResult(
        results, {"version": 2}, {"primitive_job_id": job.job_id(), "mode": mode.kind}
    )


def _unmeasured(pub: SamplerPub) -> QrtSamplerPubResult:
    """The result of a PUB whose circuit measures nothing: zeros in every register."""
    fields = {
        c.name: BitArray(np.zeros((*pub.shape, pub.shots, (c.size + 7) // 8), np.uint8), c.size)
        for c in pub.circuit.cregs
    }
    qrt = {
        "device": None,
        "farm_job_id": None,
        "warnings": ["the circuit measures nothing: every bit is 0 and no device ran it"],
    }
    metadata = {"shots": pub.shots, "circuit_metadata": pub.circuit.metadata}
    return QrtSamplerPubResult(DataBin(**fields, shape=pub.shape), metadata, qrt)


def _on_farm(
    job: PrimitiveJob, mode: Any, options: SamplerOptions, pubs: list[SamplerPub]
) -> list[QrtSamplerPubResult]:
    carried = [carry(pub.circuit, f"pubs[{k}]") for k, pub in enumerate(pubs)]
    texts = _bound_circuits(pubs, carried)
    job.check_cancelled()
    tw = options.twirling
    requests = [
        FarmRequest(
            t,
            pub.shots,
            twirl_spec(tw, pub.shots, gates=bool(tw.enable_gates), measure=bool(tw.enable_measure)),
            dd_spec(options.dynamical_decoupling),
        )
        for pub, t in zip(pubs, texts, strict=True)
    ]
    seed = options.run_seed()
    submitted = submit(job, mode, requests, options, seed)
    results = wait_results(job, mode, submitted, None)
    notes = mode.record(results)
    res = options.resilience
    quasi: list[Any] = [None] * len(pubs)
    readout = {}
    version = None
    if res.measure_mitigation:
        # the farm's served version, the same for every PUB of this run
        version = mode.runtime.mitigation_versions().get("readout", DEFAULT_VERSIONS["readout"])
        readout = fetch_readout(mode, results, res.readout_shots, res.readout_max_age_s)
        calls = [
            (
                [c.counts for c in r.circuits],
                [info.measured_qubits for info in r.metadata.compile],
                readout[r.metadata.device][0],
                req.twirl is not None
                and req.twirl.measure
                and copies_for(req.twirl, req.shots) >= 2,
                res.readout_distance,
                True,
                version,
            )
            for r, req in zip(results, requests, strict=True)
        ]
        quasi = list(fan_out(_quasi, calls, [r.metadata.job_id for r in results]))
    rng = np.random.default_rng(seed)
    out = []
    for k, (pub, result) in enumerate(zip(pubs, results, strict=True)):
        out.append(_pub_result(pub, carried[k], result, rng, quasi[k], readout, notes[k], options))
        if version is not None:
            out[-1].qrt["mitigation"]["readout"]["version"] = version
        # the PUB's circuits within its farm job (a job may hold several PUBs)
        out[-1].qrt["farm_circuits"] = list(submitted.slices[k][1:])
    return out


def _quasi(
    counts: list[dict[str, int]],
    measured: list[tuple[int, ...]],
    cal: Any,
    symmetric: bool,
    distance: int | None,
    project: bool,
    version: str,
) -> list[dict[str, Any]]:
    return combine_sampler_quasi(
        counts,
        measured,
        cal,
        symmetric=symmetric,
        distance=distance,
        project=project,
        version=version,
    )


def _pub_result(
    pub: SamplerPub,
    carried: Carried,
    result: Any,
    rng: np.random.Generator,
    quasi: list[dict[str, Any]] | None,
    readout: dict[str, Any],
    notes: list[str],
    options: SamplerOptions,
) -> QrtSamplerPubResult:
    registers = [(c.name, c.size) for c in pub.circuit.cregs]
    shape = pub.shape
    per_circuit = [read_registers(c.counts, carried, registers, rng) for c in result.circuits]
    fields = {}
    for name, size in registers:
        nbytes = (size + 7) // 8
        stacked = np.stack([s[name] for s in per_circuit]).reshape(*shape, pub.shots, nbytes)
        fields[name] = BitArray(stacked, size)
    meta = result.metadata
    qrt: dict[str, Any] = {
        "device": meta.device,
        "noise": meta.noise,
        "calibration_id": meta.calibration_id,
        "calibration_age_s": meta.calibration_age_s,
        "farm_job_id": meta.job_id,
        "warnings": list(meta.warnings) + notes,
        "mitigation": {
            "measure_mitigation": quasi is not None,
            "twirling": bool(options.twirling.enable_gates or options.twirling.enable_measure),
            "dynamical_decoupling": options.dynamical_decoupling.enable,
        },
    }
    if quasi is not None:
        cal, spent = readout[meta.device]
        section, extra = readout_note(cal, spent, result)
        qrt["mitigation"]["readout"] = section
        qrt["warnings"] += extra
        qrt["quasi_dists"] = [q["quasi_dist"] for q in quasi]
        qrt["nearest_probability"] = [q["nearest_probability"] for q in quasi]
        qrt["cost"] = {"extra_shots": spent, "readout_shots": spent}
    metadata = {"shots": pub.shots, "circuit_metadata": pub.circuit.metadata}
    return QrtSamplerPubResult(DataBin(**fields, shape=shape), metadata, qrt)
