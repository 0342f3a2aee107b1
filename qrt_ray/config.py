"""The farm config: which devices exist, which fake backend each plays, what it costs.

A farm is data (``configs/farm.yaml``), validated by pydantic at load. Every error
names the file, the field path (``devices[2].price_per_shot_usd``), the bad value and
the YAML line, because the loader keeps the YAML node tree next to the parsed data.
The default farm ships inside the package (``qrt_ray/configs/farm.yaml``) so it loads
after a plain ``pip install``.
"""

from __future__ import annotations

import difflib
import importlib.resources
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any, Literal, TypeVar

import yaml
from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator
from pydantic import ValidationError as PydanticValidationError
from pydantic_core import PydanticCustomError

from qrt_ray.access.limits import TenancyConfig
from qrt_ray.calibration import fake_backend_names
from qrt_ray.errors import ConfigError, ValidationError
from qrt_ray.intake.limits import IntakeLimits
from qrt_ray.models import PlacementWeights, PolicyName

DEVICE_NAME_PATTERN = r"^[a-z0-9_-]{1,32}$"
_MAX_VALUE_REPR = 80


class DriftConfig(BaseModel):
    """How a device's true noise drifts away from its last calibration.

    Rates are per hour of *drift time*, which runs ``time_scale`` times as fast as
    the wall clock (1: real time; 3600: an hour a second, for drills and benchmarks).
    The true noise changes in steps of ``step_s`` drift seconds. See
    :mod:`qrt_ray.drift` for the model.
    """

    model_config = ConfigDict(frozen=True, extra="forbid")

    seed: int = Field(default=0, ge=0)
    time_scale: float = Field(default=1.0, gt=0, allow_inf_nan=False)
    step_s: float = Field(default=600.0, gt=0, allow_inf_nan=False)
    coherence_sd_per_hour: float = Field(default=0.05, ge=0, allow_inf_nan=False)
    coherence_memory_h: float = Field(default=24.0, gt=0, allow_inf_nan=False)
    error_sd_per_hour: float = Field(default=0.05, ge=0, allow_inf_nan=False)
    error_trend_per_hour: float = Field(default=0.02, ge=0, allow_inf_nan=False)
    tls_per_qubit_hour: float = Field(default=0.002, ge=0, allow_inf_nan=False)
    tls_coherence_factor: float = Field(default=0.2, gt=0, le=1, allow_inf_nan=False)
    coupler_per_edge_hour: float = Field(default=0.001, ge=0, allow_inf_nan=False)
    coupler_error_factor: float = Field(default=5.0, ge=1, allow_inf_nan=False)
    event_mean_h: float = Field(default=6.0, gt=0, allow_inf_nan=False)


class ChaosConfig(BaseModel):
    """Faults built into a device for chaos drills and game days; never set on a farm
    that serves users.

    Attributes:
        poison_seed: a job submitted with this seed crashes the device's simulator
            every time it runs, on this device after any restart (a poison job).
        effect: ``crash`` kills the device's process (as a segfault in the simulator
            would); ``raise`` makes the simulator raise under the batch.
    """

    model_config = ConfigDict(frozen=True, extra="forbid")

    poison_seed: int = Field(ge=0, le=2**31 - 1)
    effect: Literal["crash", "raise"] = "crash"


class DeviceConfig(BaseModel):
    """One device of the farm: a fake IBM backend simulated by Aer, with its prices."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    name: str = Field(pattern=DEVICE_NAME_PATTERN)
    backend: str
    price_per_shot_usd: float = Field(ge=0, allow_inf_nan=False)
    price_per_job_usd: float = Field(ge=0, allow_inf_nan=False)
    queue_limit: int = Field(default=1000, ge=1)
    gpu: Literal["auto", "never", "require"] = "auto"
    # Ray resources the device actor asks for, e.g. {"qrt_device": 1}: on a cluster it
    # runs only on nodes that offer them, and the autoscaler adds such nodes for it
    resources: dict[str, float] = Field(default_factory=dict)
    max_batch_circuits: int = Field(default=1000, ge=1)
    description: str | None = None
    drift: DriftConfig | None = None
    chaos: ChaosConfig | None = None

    @field_validator("name")
    @classmethod
    def _not_reserved(cls, name: str) -> str:
        if name == "ideal":
            raise ValueError(
                "'ideal' is reserved: rt.backend('ideal') is the farm's noiseless "
                "simulator; name the device otherwise"
            )
        return name

    @field_validator("backend")
    @classmethod
    def _known_backend(cls, backend: str) -> str:
        names = fake_backend_names()
        if backend in names:
            return backend
        close = difflib.get_close_matches(backend, names, n=3, cutoff=0.6)
        hint = f"did you mean {', '.join(close)}? " if close else ""
        raise ValueError(
            f"{backend!r} is not a fake backend of qiskit_ibm_runtime.fake_provider; "
            f"{hint}valid names include {', '.join(names[:6])}, ... ({len(names)} in all)"
        )

    @field_validator("resources")
    @classmethod
    def _ray_resources(cls, resources: dict[str, float]) -> dict[str, float]:
        for name, amount in resources.items():
            if name in ("CPU", "GPU", "memory", "object_store_memory"):
                raise ValueError(
                    f"{name!r} is set by qrt-ray (use `gpu: require` for a GPU); "
                    "name custom resources here, e.g. {qrt_device: 1}"
                )
            if not 0 < amount <= 1e6 or amount != amount:
                raise ValueError(f"{name}: {amount} is not an amount Ray can give (0 < x <= 1e6)")
        return resources


class FarmConfig(BaseModel):
    """A named farm of devices; device names are unique."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    name: str = Field(min_length=1, max_length=64)
    devices: tuple[DeviceConfig, ...] = Field(min_length=1)

    @field_validator("devices")
    @classmethod
    def _unique_names(cls, devices: tuple[DeviceConfig, ...]) -> tuple[DeviceConfig, ...]:
        check_unique_names([d.name for d in devices], "device", "devices")
        return devices

    @property
    def device_names(self) -> tuple[str, ...]:
        """Names of the devices, in config order."""
        return tuple(d.name for d in self.devices)

    def device(self, name: str) -> DeviceConfig:
        """The device called ``name``.

        Raises:
            ValidationError: no device has that name; the message lists the known ones.
        """
        for device in self.devices:
            if device.name == name:
                return device
        raise ValidationError(
            f"device={name!r} is not in farm {self.name!r}; known devices: "
            f"{', '.join(self.device_names)}"
        )


def load_farm_config(path: str | Path | None = None) -> FarmConfig:
    """Load and validate a farm config file.

    Args:
        path: YAML file to read; None loads the farm packaged with qrt-ray.

    Raises:
        ConfigError: the file is missing, unreadable, not YAML, or invalid; the
            message names the file, the field path, the bad value and the line.
    """
    text, source = config_text(path, "farm.yaml", "farm config")
    return load_farm_config_text(text, source=source)


def load_farm_config_text(text: str, source: str = "<string>") -> FarmConfig:
    """Validate farm config YAML given as text; ``source`` names it in errors.

    Raises:
        ConfigError: as :func:`load_farm_config`.
    """
    return validated_yaml(text, source, FarmConfig, "farm config", "`name:` and `devices:`")


_M = TypeVar("_M", bound=BaseModel)


def config_text(path: str | Path | None, packaged: str, kind: str) -> tuple[str, str]:
    """The text of a config file and the name errors give it: ``path``, or the file
    ``packaged`` ships with qrt-ray (``configs/<packaged>``) for None.

    Raises:
        ConfigError: no such file, or it is not UTF-8 text (named as a ``kind``).
    """
    if path is None:
        resource = importlib.resources.files("qrt_ray") / "configs" / packaged
        return resource.read_text(encoding="utf-8"), str(resource)
    path = Path(path)
    try:
        return path.read_text(encoding="utf-8"), str(path)
    except FileNotFoundError:
        raise ConfigError(
            f"{kind} {path}: no such file; pass the path of a YAML file like "
            f"configs/{packaged}, or None for the packaged default"
        ) from None
    except (OSError, UnicodeDecodeError) as exc:
        raise ConfigError(f"{kind} {path}: cannot read it as UTF-8 text ({exc})") from None


def check_unique_names(names: Sequence[str], what: str, field: str) -> None:
    """Refuse a name given twice in a list of ``what``s (the YAML key ``field``).

    Raises:
        PydanticCustomError: naming the duplicate and where it was first used; its
            ``at`` lets the loader point at the duplicate's own line, not at ``field:``.
    """
    first: dict[str, int] = {}
    for index, name in enumerate(names):
        if name in first:
            raise PydanticCustomError(
                f"duplicate_{what}",
                "duplicate {what} name '{name}': {field}[{first}] already uses it; "
                "{what} names must be unique",
                {
                    "what": what,
                    "field": field,
                    "name": name,
                    "first": first[name],
                    "at": (index, "name"),
                },
            )
        first[name] = index


def validated_yaml(
    text: str,
    source: str,
    model: type[_M],
    kind: str,
    expected: str,
    *,
    fix_error: Callable[[Any], Any] | None = None,
) -> _M:
    """``model`` from YAML text, or a :class:`ConfigError` that names ``kind`` (``farm
    config``, ...) and ``source`` and points each error at its field and line.

    ``expected`` says what an empty file lacks; ``fix_error`` may rewrite a pydantic
    error before it is described (a path through a union tag, say).
    """
    root, data = _parse_yaml(text, source, kind)
    if data is None:
        raise ConfigError(f"{kind} {source}: the file is empty; expected {expected}")
    _reject_duplicate_keys(root, source, kind)
    try:
        return model.model_validate(data)
    except PydanticValidationError as exc:
        errors = _root_causes(exc.errors())
        if fix_error is not None:
            errors = [fix_error(err) for err in errors]
        lines = [_describe_error(err, root) for err in errors]
        raise ConfigError(
            f"invalid {kind} {source} ({len(lines)} error{'s' if len(lines) > 1 else ''}):\n"
            + "\n".join(f"  {line}" for line in lines)
        ) from None


# == placement and scheduling policy ==================================================


class SchedulingConfig(BaseModel):
    """How waiting work is ordered, shared and preempted on a device.

    Attributes:
        aging_s_per_level: a waiting job gains one priority level per this many seconds.
        fair_share: within a level, serve first the tenant with the fewest shots here
            per share.
        tenant_shares: relative shares (a tenant not listed has share 1).
        max_device_share: while other tenants wait on a device, one tenant's circuits
            fill at most this fraction of a batch.
        slice_shots: a job runs at most this many shots per batch; between its slices
            waiting work that ranks higher goes first (preemption at batch boundaries).
            0 never slices by count.
        slice_s: and a job whose shots are simulated one trajectory each (statevector,
            matrix product state) runs at most about this many seconds of them per
            batch, by the run-time model's prior; 0 never slices by time. A density
            matrix's shots all come from one evolution, so time does not slice them.
        max_live_jobs: unfinished jobs the farm holds at most: a submit that would
            go past it is refused whole with "busy, retry after N s" (the scheduler
            keeps every unfinished job in memory, so this bounds its memory).
    """

    model_config = ConfigDict(frozen=True, extra="forbid")

    aging_s_per_level: float = Field(default=60.0, gt=0, allow_inf_nan=False)
    fair_share: bool = True
    tenant_shares: dict[str, float] = Field(default_factory=dict)
    max_device_share: float = Field(default=0.5, gt=0, le=1, allow_inf_nan=False)
    slice_shots: int = Field(default=10_000, ge=0)
    slice_s: float = Field(default=2.0, ge=0, allow_inf_nan=False)
    max_live_jobs: int = Field(default=200_000, ge=1)

    @field_validator("tenant_shares")
    @classmethod
    def _positive_shares(cls, shares: dict[str, float]) -> dict[str, float]:
        for tenant, share in shares.items():
            if not share > 0:
                raise ValueError(f"tenant_shares.{tenant}={share!r} must be > 0")
        return shares


class RunTimeConfig(BaseModel):
    """Priors of the run-time model, before a device's history corrects them."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    rep_delay_s: float = Field(default=250e-6, ge=0, allow_inf_nan=False)
    job_overhead_s: float = Field(default=0.5, ge=0, allow_inf_nan=False)
    learning_rate: float = Field(default=0.2, gt=0, le=1, allow_inf_nan=False)


class FaultConfig(BaseModel):
    """When the scheduler gives up on a device that stopped answering or finishing."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    hung_batch_min_s: float = Field(default=300.0, gt=0, allow_inf_nan=False)
    hung_batch_factor: float = Field(default=20.0, ge=1, allow_inf_nan=False)
    snapshot_timeout_s: float = Field(default=10.0, gt=0, allow_inf_nan=False)
    # the missing shots of a partial run wait this long for their device to come back
    # (same calibration); after that the job reruns whole elsewhere
    partial_wait_s: float = Field(default=60.0, ge=0, allow_inf_nan=False)
    # a device that answers no status poll this long, with no batch in flight, is
    # restarted (a frozen process: nothing else would ever free its pinned work)
    silent_restart_s: float = Field(default=120.0, gt=0, allow_inf_nan=False)
    # a job whose simulator failed this many times while it ran alone is dead-lettered
    # (FAILED, class poison); see qrt_ray.policies.quarantine
    poison_after: int = Field(default=3, ge=1, le=100)


class LinkConfig(BaseModel):
    """How a device retries its control link, and when the scheduler stops using it.

    Attributes:
        retries: transient link errors a device retries itself before it reports the
            batch as failed (its jobs then rerun as a new attempt).
        backoff_s: first retry delay; each retry doubles it, up to ``backoff_max_s``,
            with full jitter (a random delay between 0 and that bound).
        breaker_failures: link failures within ``breaker_window_s`` that open the
            device's circuit breaker: it takes no new work for ``breaker_cooldown_s``,
            then one batch probes it (a success closes the breaker, a failure opens it
            again).
    """

    model_config = ConfigDict(frozen=True, extra="forbid")

    retries: int = Field(default=3, ge=0, le=20)
    backoff_s: float = Field(default=0.05, ge=0, allow_inf_nan=False)
    backoff_max_s: float = Field(default=2.0, ge=0, allow_inf_nan=False)
    breaker_failures: int = Field(default=3, ge=1)
    breaker_window_s: float = Field(default=60.0, gt=0, allow_inf_nan=False)
    breaker_cooldown_s: float = Field(default=30.0, gt=0, allow_inf_nan=False)


class CalibrationConfig(BaseModel):
    """When the calibration manager runs canaries and recalibrates a device.

    Attributes:
        enabled: run the calibration manager at all.
        canary_period_s: seconds between canary rounds on a device.
        canary_shots: shots per canary circuit.
        chain_length: qubits per canary chain (a path of the coupling map).
        max_chains: chains per round; larger devices cover their qubits over several
            rounds, in turn.
        drift_threshold: a canary whose success probability falls this far below what
            the calibration predicts has drifted (if also ``drift_z`` standard errors).
        drift_z: how many standard errors of shot noise the drop must also exceed.
        max_age_s: a calibration older than this is replaced whatever canaries say.
        offline_after: recalibrations in a row after which canaries still fail before
            the device goes OFFLINE.
        recalibration_s: device seconds one recalibration costs (accounting: canaries
            cost their shots).
        shot_s: device seconds per canary shot, for the same accounting.
    """

    model_config = ConfigDict(frozen=True, extra="forbid")

    enabled: bool = True
    canary_period_s: float = Field(default=600.0, gt=0, allow_inf_nan=False)
    canary_shots: int = Field(default=2000, ge=100, le=100_000)
    chain_length: int = Field(default=4, ge=2, le=8)
    max_chains: int = Field(default=4, ge=1, le=64)
    drift_threshold: float = Field(default=0.04, gt=0, lt=1, allow_inf_nan=False)
    drift_z: float = Field(default=3.0, ge=0, allow_inf_nan=False)
    max_age_s: float = Field(default=86_400.0, gt=0, allow_inf_nan=False)
    offline_after: int = Field(default=3, ge=1)
    recalibration_s: float = Field(default=900.0, ge=0, allow_inf_nan=False)
    shot_s: float = Field(default=250e-6, ge=0, allow_inf_nan=False)


class RetentionConfig(BaseModel):
    """How long the job store keeps finished jobs (see :mod:`qrt_ray.store.retention`).

    Attributes:
        enabled: the scheduler collects garbage every ``interval_s`` (``qrt gc`` runs
            it by hand either way).
        keep_fetched_s: a finished job whose result a client fetched is kept this long
            after it ended.
        keep_unfetched_s: a finished job whose result no one fetched (and a failed or
            cancelled one) is kept this long; at least ``keep_fetched_s``.
        keep_tombstones_s: a removed job leaves a tombstone (its id, idempotency key,
            final state) kept this long; at least ``keep_unfetched_s``.
        interval_s: seconds between the scheduler's collections.
        batch: jobs removed per transaction.
    """

    model_config = ConfigDict(frozen=True, extra="forbid")

    enabled: bool = True
    keep_fetched_s: float = Field(default=7 * 86_400.0, gt=0, allow_inf_nan=False)
    keep_unfetched_s: float = Field(default=30 * 86_400.0, gt=0, allow_inf_nan=False)
    keep_tombstones_s: float = Field(default=365 * 86_400.0, gt=0, allow_inf_nan=False)
    interval_s: float = Field(default=3_600.0, ge=1, allow_inf_nan=False)
    batch: int = Field(default=500, ge=1, le=10_000)

    @model_validator(mode="after")
    def _unfetched_at_least_fetched(self) -> RetentionConfig:
        if self.keep_unfetched_s < self.keep_fetched_s:
            raise ValueError(
                f"keep_unfetched_s={self.keep_unfetched_s:g} is shorter than "
                f"keep_fetched_s={self.keep_fetched_s:g}: a result no one has read would "
                "go before one that was read; make keep_unfetched_s at least keep_fetched_s"
            )
        if self.keep_tombstones_s < self.keep_unfetched_s:
            raise ValueError(
                f"keep_tombstones_s={self.keep_tombstones_s:g} is shorter than "
                f"keep_unfetched_s={self.keep_unfetched_s:g}; make it at least as long"
            )
        return self


class RolloutConfig(BaseModel):
    """When a post-processing version in shadow is promoted or rolled back
    (:mod:`qrt_ray.policies.rollout`).

    Attributes:
        max_divergence: the largest gap allowed between the candidate's and the served
            version's value on one canary (a success probability) before it is
            rolled back; a served value past 0 or 1 counts as far as that bound
            (:func:`qrt_ray.policies.rollout.gap`).
        promote_after_rounds: agreeing canary rounds before it is promoted...
        min_canaries: ...which compared at least this many canaries in all.
    """

    model_config = ConfigDict(frozen=True, extra="forbid")

    max_divergence: float = Field(default=0.05, gt=0, lt=1, allow_inf_nan=False)
    promote_after_rounds: int = Field(default=6, ge=1, le=10_000)
    min_canaries: int = Field(default=12, ge=1, le=1_000_000)


class PolicyConfig(BaseModel):
    """``configs/policies.yaml``: default policy, weights, scheduling, time priors, faults,
    calibration, the intake gate's limits and the tenants' default limits."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    policy: PolicyName = "composite"
    weights: PlacementWeights = PlacementWeights(fidelity=1.0, time=0.005, cost=0.01, delay=0.0003)
    scheduling: SchedulingConfig = SchedulingConfig()
    run_time: RunTimeConfig = RunTimeConfig()
    faults: FaultConfig = FaultConfig()
    link: LinkConfig = LinkConfig()
    calibration: CalibrationConfig = CalibrationConfig()
    intake: IntakeLimits = IntakeLimits()
    tenancy: TenancyConfig = TenancyConfig()
    retention: RetentionConfig = RetentionConfig()
    rollout: RolloutConfig = RolloutConfig()


def load_policy_config(path: str | Path | None = None) -> PolicyConfig:
    """Load and validate a policy config file (None: the one packaged with qrt-ray).

    Raises:
        ConfigError: as :func:`load_farm_config`.
    """
    text, source = config_text(path, "policies.yaml", "policy config")
    return validated_yaml(text, source, PolicyConfig, "policy config", "`policy:` or `weights:`")


def _parse_yaml(text: str, source: str, kind: str) -> tuple[yaml.Node | None, Any]:
    """Parse once into both the node tree (for line numbers) and plain data."""
    loader = yaml.SafeLoader(text)
    try:
        root = loader.get_single_node()
        data = loader.construct_document(root) if root is not None else None
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        where = f" line {mark.line + 1}" if mark is not None else ""
        problem = getattr(exc, "problem", None) or str(exc)
        raise ConfigError(f"{kind} {source}{where}: not valid YAML: {problem}") from None
    finally:
        loader.dispose()
    return root, data


def _reject_duplicate_keys(node: yaml.Node | None, source: str, kind: str, path: str = "") -> None:
    """Fail on a key given twice in one mapping: PyYAML would silently keep the last."""
    if isinstance(node, yaml.MappingNode):
        seen: dict[str, int] = {}
        for key, value in node.value:
            line = key.start_mark.line + 1
            if key.value in seen:
                raise ConfigError(
                    f"{kind} {source}: {_join(path, key.value)} (line {line}): key "
                    f"{key.value!r} given twice in one mapping (first on line {seen[key.value]})"
                )
            seen[key.value] = line
            _reject_duplicate_keys(value, source, kind, _join(path, key.value))
    elif isinstance(node, yaml.SequenceNode):
        for index, item in enumerate(node.value):
            _reject_duplicate_keys(item, source, kind, f"{path}[{index}]")


def _root_causes(errors: list[Any]) -> list[Any]:
    """Drop "too short" errors caused by invalid items below them.

    pydantic counts only valid items against ``min_length``, so one bad device in a
    one-device farm would also report "devices: at least 1 item": noise, not news.
    """

    def explained(err: Any) -> bool:
        loc = tuple(err["loc"])
        return any(
            len(other["loc"]) > len(loc) and tuple(other["loc"][: len(loc)]) == loc
            for other in errors
        )

    return [e for e in errors if not (e["type"] == "too_short" and explained(e))]


def _describe_error(err: Any, root: yaml.Node | None) -> str:
    """One pydantic error as ``path (line N): message; got value``."""
    loc = tuple(err["loc"]) + tuple(err.get("ctx", {}).get("at", ()))
    path = _format_loc(loc) or "(top level)"
    line = _line_of(root, loc)
    where = f"{path} (line {line})" if line is not None else path
    message = err["msg"].removeprefix("Value error, ")
    if err["type"] == "missing":
        return f"{where}: required field is missing"
    if "at" in err.get("ctx", {}):
        return f"{where}: {message}"  # the input is the whole list; the message names the item
    if not loc and err["type"] == "value_error":
        return f"{where}: {message}"  # a check across fields; the document is not shown
    if not loc:
        # the whole document: not a mapping (another kind of file?); its text is not shown
        return (
            f"{where}: the file must hold a YAML mapping, not a {type(err.get('input')).__name__}"
        )
    value = repr(err.get("input"))
    if value in message:
        return f"{where}: {message}"
    if len(value) > _MAX_VALUE_REPR:
        value = value[: _MAX_VALUE_REPR - 3] + "..."
    return f"{where}: {message}; got {value}"


def _format_loc(loc: tuple[int | str, ...]) -> str:
    path = ""
    for part in loc:
        path = f"{path}[{part}]" if isinstance(part, int) else _join(path, str(part))
    return path


def _join(path: str, key: str) -> str:
    return f"{path}.{key}" if path else key


def _line_of(root: yaml.Node | None, loc: tuple[int | str, ...]) -> int | None:
    """1-based line of the deepest node of ``loc`` present in the YAML (keys win)."""
    if root is None:
        return None
    node, line = root, root.start_mark.line + 1
    for part in loc:
        if isinstance(node, yaml.MappingNode):
            match = next((kv for kv in node.value if kv[0].value == str(part)), None)
            if match is None:
                break
            # The key's line, not the value's: a nested mapping value starts a line later.
            line, node = match[0].start_mark.line + 1, match[1]
        elif isinstance(node, yaml.SequenceNode) and isinstance(part, int):
            if not 0 <= part < len(node.value):
                break
            node = node.value[part]
            line = node.start_mark.line + 1
        else:
            break
    return line
