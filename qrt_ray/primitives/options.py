"""Options of the primitives, in the shape of ``qiskit_ibm_runtime``'s V2 options.

They are dataclasses (``dataclasses.asdict(estimator.options)`` works), with the hardware
runtime's names and nesting. Every field is validated when it is set
(``estimator.options.resilience_level = 5`` raises at once, naming the field and the
allowed values, and leaves the old value), nested options may be given as dicts, and
``update(**kwargs)`` takes dotted paths too:
``options.update(**{"resilience.zne_mitigation": True})``. The names Qiskit's
``BackendSamplerV2`` / ``BackendEstimatorV2`` take (``seed_simulator``,
``abelian_grouping``, ``run_options``) are accepted as well. Fields beyond those are
this runtime's own and say so.
"""

from __future__ import annotations

import copy
import dataclasses
from collections.abc import Callable
from typing import Any, Literal, TypeVar

from pydantic import ConfigDict, Field, model_validator
from pydantic import ValidationError as PydanticValidationError
from pydantic.dataclasses import dataclass as _pydantic_dataclass

from qrt_ray.errors import ValidationError, brief
from qrt_ray.mitigation.zne import EXTRAPOLATORS, MIN_POINTS

_CONFIG = ConfigDict(validate_assignment=True, extra="forbid", arbitrary_types_allowed=True)
_T = TypeVar("_T")

# ``run_options`` (Qiskit's BackendSamplerV2) keys the Sampler understands; the
# simulated devices return classified bits, shot by shot, so meas_level must be 2
RUN_OPTIONS = ("seed_simulator", "memory", "meas_level", "meas_return")


def _explain(prefix: str, exc: PydanticValidationError) -> ValidationError:
    problems = "; ".join(
        f"{prefix}{'.'.join(str(p) for p in e['loc'])}={_shown(e.get('input'))}: {e['msg']}"
        if e["loc"]
        else f"{prefix.rstrip('.')}: {e['msg'].removeprefix('Value error, ')}"
        for e in exc.errors()
    )
    return ValidationError(f"invalid option: {problems}")


def _shown(value: Any) -> str:
    """A refused value as the error shows it: strings quoted, everything cut short."""
    return repr(brief(value)) if isinstance(value, str) else brief(value)


class _Options:
    """What every options dataclass has: ``update``, and errors that name the field."""

    def update(self, **kwargs: Any) -> None:
        """Set several options; ``"a.b"`` keys (or nested dicts) reach sub-options."""
        for key, value in kwargs.items():
            head, _, rest = key.partition(".")
            if rest:
                getattr(self, head).update(**{rest: value})
            elif isinstance(value, dict) and isinstance(getattr(self, head, None), _Options):
                getattr(self, head).update(**value)
            else:
                setattr(self, head, value)


def _options(cls: type[_T]) -> type[_T]:
    """A pydantic dataclass whose errors are ValidationErrors naming the field, and
    whose refused assignments leave the old value."""
    dc: Any = _pydantic_dataclass(config=_CONFIG)(cls)
    names = tuple(f.name for f in dataclasses.fields(dc))
    init: Callable[..., None] = dc.__init__
    assign: Callable[[Any, str, Any], None] = dc.__setattr__

    def __init__(self: Any, *args: Any, **kwargs: Any) -> None:
        try:
            init(self, *args, **kwargs)
        except PydanticValidationError as exc:
            raise _explain(f"{dc.__name__}.", exc) from None

    def __setattr__(self: Any, name: str, value: Any) -> None:
        if name not in names:
            raise ValidationError(
                f"{dc.__name__} has no option {brief(name)!r}; options: {', '.join(names)}"
            )
        old = self.__dict__.get(name)
        try:
            assign(self, name, value)
        except PydanticValidationError as exc:
            # a check across fields fails after the field was set: put the old value back
            object.__setattr__(self, name, old)
            raise _explain(f"{dc.__name__}.", exc) from None

    __init__.__doc__ = init.__doc__
    dc.__init__ = __init__
    dc.__setattr__ = __setattr__
    return dc  # type: ignore[no-any-return]


def copy_options(options: _T) -> _T:
    """A deep copy: changing one later never changes the other."""
    return copy.deepcopy(options)


@_options
class TwirlingOptions(_Options):
    """Pauli twirling of 2-qubit gates and of measurements, on the compiled circuits."""

    # None: the resilience level decides (measurements from level 1, gates from 2;
    # the sampler twirls only when asked)
    enable_gates: bool | None = None
    enable_measure: bool | None = None
    num_randomizations: int | Literal["auto"] = "auto"
    shots_per_randomization: int | Literal["auto"] = "auto"
    # accepted for compatibility; every 2-qubit Clifford gate is twirled
    strategy: Literal["active", "active-accum", "active-circuit", "all"] = "active-accum"

    @model_validator(mode="after")
    def _positive(self) -> TwirlingOptions:
        for name in ("num_randomizations", "shots_per_randomization"):
            value = getattr(self, name)
            if value != "auto" and not 1 <= value <= 1_000_000:
                raise ValueError(f"{name} must be 'auto' or 1..1,000,000, got {value}")
        return self


@_options
class ZneOptions(_Options):
    """Zero-noise extrapolation: gate folding at ``noise_factors``, then a fit to 0."""

    amplifier: Literal["gate_folding"] = "gate_folding"
    noise_factors: tuple[float, ...] = (1.0, 3.0, 5.0)
    # tried in order; the first that fits the data is used
    extrapolator: str | tuple[str, ...] = ("exponential", "linear")

    @model_validator(mode="after")
    def _check(self) -> ZneOptions:
        factors = self.noise_factors
        if len(factors) < 2 or any(not f >= 1 for f in factors) or len(set(factors)) < len(factors):
            raise ValueError(
                f"noise_factors must be 2 or more distinct values >= 1, got {list(factors)}"
            )
        methods = (self.extrapolator,) if isinstance(self.extrapolator, str) else self.extrapolator
        bad = [m for m in methods if m not in EXTRAPOLATORS]
        if not methods or bad:
            raise ValueError(f"extrapolator {bad or methods}: use {', '.join(EXTRAPOLATORS)}")
        if not any(len(factors) >= MIN_POINTS[m] for m in methods):
            raise ValueError(
                f"extrapolator {list(methods)} needs more noise factors than the "
                f"{len(factors)} given ({', '.join(f'{m}: {MIN_POINTS[m]}' for m in methods)})"
            )
        return self

    @property
    def extrapolators(self) -> tuple[str, ...]:
        """The extrapolators to try, in order."""
        return (self.extrapolator,) if isinstance(self.extrapolator, str) else self.extrapolator


@_options
class MeasureNoiseLearningOptions(_Options):
    """How readout errors are measured (this runtime reuses the device's figures)."""

    num_randomizations: int = Field(default=32, ge=1, le=1024)
    shots_per_randomization: int | Literal["auto"] = "auto"


@_options
class ResilienceOptions(_Options):
    """Which mitigations run; ``resilience_level`` sets the defaults of the first three."""

    measure_mitigation: bool | None = None
    zne_mitigation: bool | None = None
    measure_noise_learning: MeasureNoiseLearningOptions = Field(
        default_factory=MeasureNoiseLearningOptions
    )
    zne: ZneOptions = Field(default_factory=ZneOptions)
    pec_mitigation: Literal[False] = False
    # this runtime's own: readout figures older than this are measured again
    readout_max_age_s: float = Field(default=900.0, gt=0, allow_inf_nan=False)
    # this runtime's own: shots per preparation when readout is measured
    readout_shots: int = Field(default=4000, ge=100, le=1_000_000)
    # this runtime's own: Hamming truncation of the Sampler's readout-mitigated
    # quasi-distributions (None: exact on the observed strings)
    readout_distance: int | None = Field(default=None, ge=0)


@_options
class DynamicalDecouplingOptions(_Options):
    """Dynamical decoupling on idle qubits (inserted when the circuit is compiled)."""

    enable: bool = False
    sequence_type: Literal["XX", "XpXm", "XY4"] = "XX"
    extra_slack_distribution: Literal["middle", "edges"] = "middle"
    scheduling_method: Literal["alap", "asap"] = "alap"
    skip_reset_qubits: bool = False


@_options
class ExecutionOptions(_Options):
    """Accepted so hardware-runtime code runs; the simulated devices reset every qubit
    between shots and have no repetition delay to set."""

    init_qubits: bool = True
    rep_delay: float | None = Field(default=None, ge=0)
    meas_type: Literal["classified"] = "classified"


@_options
class SimulatorOptions(_Options):
    """The simulator seed, and whether to simulate without noise. The noise, coupling
    map and basis gates of a device are its calibration's, so giving them is refused;
    ``noise_model="ideal"`` runs on the device's gates and coupling map without noise
    (None: the device's calibrated noise)."""

    seed_simulator: int | None = Field(default=None, ge=0, lt=2**31)
    noise_model: Literal["ideal"] | None = None
    coupling_map: None = None
    basis_gates: None = None


@_options
class EnvironmentOptions(_Options):
    """Job tags (kept with every job of the primitive)."""

    log_level: str = "WARNING"
    job_tags: list[str] | None = None


@_options
class _PrimitiveOptions(_Options):
    max_execution_time: int | None = Field(default=None, gt=0, le=7 * 24 * 3600)
    dynamical_decoupling: DynamicalDecouplingOptions = Field(
        default_factory=DynamicalDecouplingOptions
    )
    twirling: TwirlingOptions = Field(default_factory=TwirlingOptions)
    environment: EnvironmentOptions = Field(default_factory=EnvironmentOptions)
    execution: ExecutionOptions = Field(default_factory=ExecutionOptions)
    simulator: SimulatorOptions = Field(default_factory=SimulatorOptions)
    # this runtime's own placement and priority settings for the primitive's jobs
    priority: int = Field(default=5, ge=0, le=10)
    tenant: str = Field(default="default", min_length=1, max_length=64)


@_options
class SamplerOptions(_PrimitiveOptions):
    """Options of :class:`qrt_ray.primitives.Sampler`."""

    default_shots: int = Field(default=4096, ge=1, le=1_000_000)
    # as Qiskit's BackendSamplerV2 names it (simulator.seed_simulator is IBM's name)
    seed_simulator: int | None = Field(default=None, ge=0, lt=2**31)
    # as Qiskit's BackendSamplerV2: options of the run, here of each farm job
    run_options: dict[str, Any] | None = None
    # this runtime's own: readout-mitigated quasi-distributions beside the bit arrays
    resilience: ResilienceOptions = Field(
        default_factory=lambda: ResilienceOptions(measure_mitigation=False)
    )

    @model_validator(mode="after")
    def _run_options(self) -> SamplerOptions:
        run = self.run_options or {}
        unknown = sorted(str(k) for k in run if k not in RUN_OPTIONS)
        if unknown:
            raise ValueError(
                f"run_options {brief(unknown)}: not options of a farm job; use "
                f"{', '.join(RUN_OPTIONS)} (shots: default_shots or run(shots=...))"
            )
        if run.get("meas_level", 2) not in (2, "classified"):
            raise ValueError(
                f"run_options meas_level={brief(run['meas_level'])}: the devices return "
                "classified bits only (meas_level 2); kerneled (level 1) data is not simulated"
            )
        seed = run.get("seed_simulator")
        if seed is not None and (not isinstance(seed, int) or not 0 <= seed < 2**31):
            raise ValueError(f"run_options seed_simulator={brief(seed)}: use 0 <= seed < 2**31")
        return self

    def run_seed(self) -> int | None:
        """The seed of the farm jobs: ``seed_simulator``, else the one in ``run_options``,
        else ``simulator.seed_simulator`` (None: a fresh seed per job)."""
        for seed in (
            self.seed_simulator,
            (self.run_options or {}).get("seed_simulator"),
            self.simulator.seed_simulator,
        ):
            if seed is not None:
                return int(seed)
        return None


@_options
class EstimatorOptions(_PrimitiveOptions):
    """Options of :class:`qrt_ray.primitives.Estimator`."""

    default_precision: float = Field(default=0.015625, gt=0, le=1)
    default_shots: int | None = Field(default=None, ge=1, le=1_000_000)
    resilience_level: Literal[0, 1, 2] = 1
    seed_estimator: int | None = Field(default=None, ge=0, lt=2**31)
    resilience: ResilienceOptions = Field(default_factory=ResilienceOptions)
    # as Qiskit's BackendEstimatorV2 names them: the simulator's seed, and whether
    # qubit-wise commuting Pauli terms share a measurement basis (False: a circuit per term)
    seed_simulator: int | None = Field(default=None, ge=0, lt=2**31)
    abelian_grouping: bool = True

    def run_seed(self) -> int | None:
        """The seed of the farm jobs: ``seed_estimator``, else ``seed_simulator``, else
        ``simulator.seed_simulator`` (None: a fresh seed per job)."""
        for seed in (self.seed_estimator, self.seed_simulator, self.simulator.seed_simulator):
            if seed is not None:
                return int(seed)
        return None
