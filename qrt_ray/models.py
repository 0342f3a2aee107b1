"""Data that crosses boundaries: pydantic models at the user edge, frozen dataclasses inside.

``JobSpec`` is what a user asks for (validated once, at the edge). Device and
calibration snapshots are the plain, immutable facts that actors pass to the
policies. Results are pydantic so they round-trip through JSON (never pickle) in
the store.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from enum import StrEnum
from pathlib import Path
from typing import Any, Literal, get_args

from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    ValidationInfo,
    field_validator,
    model_validator,
)
from pydantic import ValidationError as PydanticValidationError

from qrt_ray.errors import brief

MAX_SHOTS = 1_000_000
MAX_CIRCUITS_PER_JOB = 10_000
MAX_PRIORITY = 10
# The most jobs one call to the farm fetches results of (a reply holds them all).
RESULTS_PER_CALL = 256
# Priority classes, for latency objectives and queue metrics: the class of priority p
# is the first whose floor p reaches.
PRIORITY_CLASSES: tuple[tuple[str, int], ...] = (("high", 7), ("normal", 3), ("low", 0))


def priority_class(priority: int) -> str:
    """The class of a job priority: ``high`` (7-10), ``normal`` (3-6) or ``low`` (0-2)."""
    for name, floor in PRIORITY_CLASSES:
        if priority >= floor:
            return name
    return PRIORITY_CLASSES[-1][0]


# Validation context of a spec read back from the job store: it passed the checks of
# the version that admitted it, and is not judged again by newer edge rules.
STORED: dict[str, bool] = {"stored": True}
# tenant names end up in metric labels, logs and file names: a plain alphabet
TENANT_PATTERN = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.@:+-]{0,63}")
_DEVICE_PATTERN = re.compile(r"[A-Za-z0-9_.-]{1,64}")

PolicyName = Literal["random", "round_robin", "least_busy", "best_fidelity", "composite"]
POLICY_NAMES: tuple[str, ...] = get_args(PolicyName)
OptimizeGoal = Literal["fidelity", "time", "cost"]
OPTIMIZE_GOALS: tuple[str, ...] = get_args(OptimizeGoal)


class DeviceStatus(StrEnum):
    """Whether a device takes work."""

    ONLINE = "ONLINE"
    # Runs the work it holds but takes no new work (``qrt drain``).
    DRAINING = "DRAINING"
    CALIBRATING = "CALIBRATING"
    MAINTENANCE = "MAINTENANCE"
    # Not answering, or restarting after a crash or a hang: takes no work for now,
    # and work pinned to it waits (OFFLINE is out of service: pinned work fails).
    UNREACHABLE = "UNREACHABLE"
    OFFLINE = "OFFLINE"

    @property
    def runs_work(self) -> bool:
        """Whether a device in this status runs the work it holds (ONLINE, DRAINING)."""
        return self in (DeviceStatus.ONLINE, DeviceStatus.DRAINING)


class PlacementWeights(BaseModel):
    """A job's own composite weights: exchange rates of fidelity, time and cost, and the
    charge per second of expected completion (``delay``).

    Weights not given are 0: ``{"time": 1}`` optimizes for time alone.
    """

    model_config = ConfigDict(frozen=True, extra="forbid", strict=True)

    fidelity: float = Field(default=0.0, ge=0, allow_inf_nan=False)
    time: float = Field(default=0.0, ge=0, allow_inf_nan=False)
    cost: float = Field(default=0.0, ge=0, allow_inf_nan=False)
    delay: float = Field(default=0.0, ge=0, allow_inf_nan=False)

    @model_validator(mode="after")
    def _not_all_zero(self) -> PlacementWeights:
        if self.fidelity == self.time == self.cost == self.delay == 0:
            raise ValueError("weights are all 0; give fidelity, time, cost or delay a value > 0")
        return self


class TwirlSpec(BaseModel):
    """Randomize a job's compiled circuits on the device (Pauli twirling).

    Each circuit runs as ``randomizations`` random copies that split its shots: with
    ``gates``, every Clifford 2-qubit gate sits in a random Pauli frame (its noise
    becomes a Pauli channel); with ``measure``, final measurements are flipped at
    random and flipped back in the counts (readout error becomes symmetric). The
    counts returned are the copies' sum, in the circuit's own frame.
    """

    model_config = ConfigDict(frozen=True, extra="forbid", strict=True)

    gates: bool = False
    measure: bool = False
    randomizations: int = Field(default=16, ge=1, le=1024)


class DecouplingSpec(BaseModel):
    """Dynamical decoupling the device adds to a job's compiled circuits."""

    model_config = ConfigDict(frozen=True, extra="forbid", strict=True)

    sequence: Literal["XX"] = "XX"
    scheduling: Literal["alap", "asap"] = "alap"


class JobSpec(BaseModel):
    """What a user asked for. Circuits are OpenQASM text: data, never pickled objects.

    Strict: nothing is coerced (``True`` is not 1 shot, ``"100"`` is not 100). Names
    that reach logs and metric labels (tenant, device, tags, idempotency key) are short
    and printable.
    """

    model_config = ConfigDict(frozen=True, extra="forbid", strict=True)

    circuits: tuple[str, ...] = Field(min_length=1, max_length=MAX_CIRCUITS_PER_JOB)
    shots: int = Field(ge=1, le=MAX_SHOTS)
    priority: int = Field(default=5, ge=0, le=MAX_PRIORITY)
    tenant: str = Field(default="default", min_length=1, max_length=64)
    device: str | None = Field(default=None, min_length=1, max_length=64)
    idempotency_key: str | None = Field(default=None, min_length=1, max_length=128)
    max_execution_time_s: float | None = Field(default=None, gt=0, le=7 * 24 * 3600)
    tags: tuple[str, ...] = Field(default=(), max_length=32)
    seed: int | None = Field(default=None, ge=0, lt=2**31)
    policy: PolicyName | None = None
    optimize: OptimizeGoal | None = None
    weights: PlacementWeights | None = None
    min_fidelity: float | None = Field(default=None, gt=0, le=1)
    max_cost_usd: float | None = Field(default=None, ge=0, allow_inf_nan=False)
    # run only on a calibration at most this old: the job waits for (or moves to) a
    # device recalibrated recently enough
    max_calibration_age_s: float | None = Field(default=None, gt=0, allow_inf_nan=False)
    # randomized compiling of the compiled circuits on the device (error mitigation)
    twirling: TwirlSpec | None = None
    # echoes on idle qubits, added by the device to the compiled circuits
    dynamical_decoupling: DecouplingSpec | None = None
    # per circuit, a group number: circuits of one group run on the same physical
    # qubits (the layout placement chose for the group's first circuit), so that their
    # results can be combined, e.g. the noise factors of one extrapolation
    layout_groups: tuple[int, ...] | None = None
    # "ideal": the device runs the job without noise (its gates, coupling map and
    # placement stay the device's), to check a pipeline before spending noisy shots
    noise: Literal["device", "ideal"] = "device"

    @model_validator(mode="after")
    def _groups_cover_the_circuits(self) -> JobSpec:
        groups = self.layout_groups
        if groups is not None:
            if len(groups) != len(self.circuits):
                raise ValueError(
                    f"layout_groups has {len(groups)} entries for {len(self.circuits)} "
                    "circuits; give one group number per circuit"
                )
            if min(groups) < 0:
                raise ValueError("layout_groups: group numbers must be >= 0")
        return self

    @field_validator("tags")
    @classmethod
    def _short_tags(cls, tags: tuple[str, ...], info: ValidationInfo) -> tuple[str, ...]:
        if _stored(info):
            return tags
        for tag in tags:
            if not tag or len(tag) > 64:
                raise ValueError(f"each tag must be 1-64 characters, got {brief(tag)!r}")
            if not tag.isprintable():
                raise ValueError(f"tag {brief(tag)!r} has control characters; use printable text")
        return tags

    @field_validator("tenant")
    @classmethod
    def _plain_tenant(cls, tenant: str, info: ValidationInfo) -> str:
        if not _stored(info) and not TENANT_PATTERN.fullmatch(tenant):
            raise ValueError(
                f"tenant {brief(tenant)!r}: use 1-64 letters, digits and _ . @ : + -, "
                "starting with a letter or digit"
            )
        return tenant

    @field_validator("device")
    @classmethod
    def _plain_device(cls, device: str | None, info: ValidationInfo) -> str | None:
        if device is not None and not _stored(info) and not _DEVICE_PATTERN.fullmatch(device):
            raise ValueError(f"device {brief(device)!r} is not a device name")
        return device

    @field_validator("idempotency_key")
    @classmethod
    def _printable_key(cls, key: str | None, info: ValidationInfo) -> str | None:
        if key is not None and not _stored(info) and not key.isprintable():
            raise ValueError("idempotency_key has control characters; use printable text")
        return key


def _stored(info: ValidationInfo) -> bool:
    return bool(info.context and info.context.get("stored"))


def describe_errors(exc: PydanticValidationError, prefix: str = "") -> str:
    """A pydantic error as one line per problem: ``field=value: what is wrong``, with
    every value cut short (a rejected 1 MB value is never repeated in full)."""
    problems = []
    for e in exc.errors():
        loc = ".".join(str(p) for p in e["loc"])
        where = f"{prefix}.{loc}" if prefix and loc else prefix or loc or "(spec)"
        message = e["msg"].removeprefix("Value error, ")
        if e["type"] in ("missing", "extra_forbidden") or "input" not in e:
            problems.append(f"{where}: {message}")
        else:
            problems.append(f"{where}={brief(e['input'])}: {message}")
    return "; ".join(problems[:10]) + (
        f"; and {len(problems) - 10} more" if len(problems) > 10 else ""
    )


@dataclass(frozen=True, slots=True)
class GateCalibration:
    """Error and duration of one native gate on one tuple of physical qubits."""

    gate: str
    qubits: tuple[int, ...]
    error: float
    duration_s: float


@dataclass(frozen=True, slots=True)
class CalibrationSnapshot:
    """One calibration of one device: everything the noise model and the policies use."""

    calibration_id: str
    device: str
    taken_at: float  # unix seconds
    num_qubits: int
    t1_s: tuple[float, ...]
    t2_s: tuple[float, ...]
    readout_error: tuple[float, ...]
    gates: tuple[GateCalibration, ...]
    coupling_map: tuple[tuple[int, int], ...]
    native_gates: tuple[str, ...]

    def gate_errors(self, gate: str) -> list[float]:
        """Errors of every calibrated instance of ``gate``."""
        return [g.error for g in self.gates if g.gate == gate]

    @property
    def two_qubit_gate(self) -> str | None:
        """The native entangling gate (cx, ecr, cz), or None on a 1-qubit device."""
        names = {g.gate for g in self.gates if len(g.qubits) == 2}
        return sorted(names)[0] if names else None


@dataclass(frozen=True, slots=True)
class DeviceSnapshot:
    """What placement sees of a device at one moment."""

    name: str
    status: DeviceStatus
    num_qubits: int
    calibration: CalibrationSnapshot
    queue_depth: int
    queued_shots: int
    queue_limit: int
    price_per_shot_usd: float
    price_per_job_usd: float
    simulator_method: str
    gpu: bool
    # A new value each time the device (its actor) starts: a change means its queue
    # and any batch it was running are gone.
    incarnation: str = ""
    status_reason: str = ""
    # the last canary round: worst canary's predicted and measured success
    canary_predicted: float | None = None
    canary_measured: float | None = None
    canary_at: float | None = None
    # non-empty while canaries say the device has drifted from its calibration
    degraded: str = ""
    # the device's process: node, pid and start time, so a process that no longer
    # answers (frozen) can be killed where it runs
    process: tuple[str, int, float] | None = None
    # the batch running now, as the scheduler saw it start: its jobs, and for how long
    # its oldest batch has run (None: nothing runs)
    running_jobs: int = 0
    running_s: float | None = None
    # CPU threads a simulator call may use (the run-time model divides work by them)
    threads: int = 1

    @property
    def accepting(self) -> bool:
        """ONLINE and with room in its queue."""
        return self.status is DeviceStatus.ONLINE and self.queue_depth < self.queue_limit


@dataclass(frozen=True, slots=True)
class Placement:
    """A policy's decision: the ranked devices, what it expects of the chosen one, and why.

    ``run_s``, ``shot_duration_s``, ``fidelity`` and ``cost_usd`` are the chosen
    device's figures (what the scheduler and the simulator act on); ``explanation`` is
    the plain-JSON account stored with the job.
    """

    device: str
    ranking: tuple[tuple[str, float], ...]
    explanation: dict[str, Any] = field(default_factory=dict)
    run_s: float = 0.0
    shot_duration_s: float = 0.0
    fidelity: float = 0.0
    cost_usd: float = 0.0


class CompileInfo(BaseModel):
    """What compiling one circuit for one device produced."""

    model_config = ConfigDict(frozen=True)

    device: str
    calibration_id: str
    depth: int
    two_qubit_gates: int
    swaps_added: int
    # physical qubits its gates and measurements touch, routing's included, and its gate
    # instructions, measurements and barriers aside (0: compiled before they were kept)
    active_qubits: int = 0
    gates: int = 0
    # touched qubits between the two of each two-qubit gate, in index order, summed:
    # the moves a matrix-product-state simulator makes to bring them together
    bond_moves: int = 0
    layout: tuple[int, ...]
    optimization_level: int
    seed_transpiler: int
    compile_s: float
    cache_hit: bool = False
    esp: float | None = None  # estimated success probability of the compiled circuit
    # clbit k was read from physical qubit measured_qubits[k] (-1: never measured)
    measured_qubits: tuple[int, ...] = ()


class CircuitResult(BaseModel):
    """Counts of one circuit of a job."""

    model_config = ConfigDict(frozen=True)

    counts: dict[str, int]
    shots: int
    probabilities: dict[str, float]


class ResultMetadata(BaseModel):
    """Everything needed to reproduce a result."""

    model_config = ConfigDict(frozen=True)

    job_id: str
    device: str
    calibration_id: str
    calibration_taken_at: float
    shots_requested: int
    shots_executed: int
    seeds: tuple[int, ...]
    attempts: int  # attempts whose shots are in the result (reruns of missing shots add one)
    runs: int = 1  # device runs merged: slices of a preempted job and reruns
    simulator_method: str
    gpu: bool
    run_s: float
    compile: tuple[CompileInfo, ...]
    versions: dict[str, str]
    # age of the calibration when the last shot ran
    calibration_age_s: float = 0.0
    # why the result may not be what the calibration promises (drift found by
    # canaries while it ran); the client raises them as StaleCalibrationWarning
    warnings: tuple[str, ...] = ()
    # how a job cut short was completed: missing shots rerun on the same calibration,
    # or the whole job rerun on a new one; None when it ran straight through
    recovery: str | None = None
    # "ideal" when the job asked to run without noise (JobSpec.noise)
    noise: Literal["device", "ideal"] = "device"


class JobResult(BaseModel):
    """A finished job's result: one entry per circuit, plus how it was produced."""

    model_config = ConfigDict(frozen=True)

    circuits: tuple[CircuitResult, ...]
    metadata: ResultMetadata

    def counts(self, index: int = 0) -> dict[str, int]:
        """Counts of circuit ``index``."""
        return self.circuits[index].counts

    def probabilities(self, index: int = 0) -> dict[str, float]:
        """Measured probabilities of circuit ``index``."""
        return self.circuits[index].probabilities

    def plot(self, path: str | Path | None = None, index: int = 0) -> Any:
        """A histogram of circuit ``index``'s most frequent outcomes (needs matplotlib:
        ``pip install 'qrt-ray[plot]'``).

        Args:
            path: write it to this .png, .svg or .pdf file (None: only return it).
            index: which circuit.

        Returns:
            The matplotlib ``Figure``.
        """
        from qrt_ray.plots import result_figure, save

        figure = result_figure(self, index)
        if path is not None:
            save(figure, path)
        return figure
