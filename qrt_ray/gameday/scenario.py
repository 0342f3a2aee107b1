"""Game-day scenarios: a steady workload, faults at set times, and what must hold.

A scenario is YAML (the packaged ones live in ``configs/gamedays/``)::

    name: drift-storm
    description: half the farm drifts at once
    duration_s: 90          # how long the workload runs
    workload: {rate_per_s: 2, qubits: 3, shots: 1000}
    steps:
      - {at_s: 20, fault: drift, devices: half, factor: 4}
    expect: {max_failed_share: 0.0, max_recovery_s: 120}

Faults (``fault:``):

- ``drift``: the devices' gate and readout errors become ``factor`` times what their
  calibration says, until each is recalibrated (canaries should find it).
- ``outage``: the devices' control link answers nothing for ``for_s`` seconds.
- ``partition``: the devices are cut off from the rest of the farm for ``for_s``
  seconds: every call into them and every report they send hangs, then fails (Ray's
  own control plane still reaches them, so the farm may restart one it takes for
  gone).
- ``kill``: Ray kills the ``actor`` (``device``, ``scheduler`` or ``calibration``);
  Ray restarts it.
- ``node-loss``: the Ray worker nodes the devices run on die (a task there kills the
  node's raylet and every process under it); Ray restarts their devices on the nodes
  left. Never the scheduler's node; a farm on one node cannot run it.
- ``burst``: ``jobs`` extra jobs submitted at once, beside the workload.
- ``auth-outage``: the farm cannot read its token and tenant records for ``for_s``
  seconds (the identity source unreachable). A game day with one runs a tenant beside
  the workload, submitting with a token through the gateway's door: during the outage
  it must be told to retry (503), never that its token is bad, and lose no job.

``devices``: names, a count picked at random from ``seed``, ``half`` or ``all``.
"""

from __future__ import annotations

import importlib.resources
import re
from pathlib import Path
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, model_validator

from qrt_ray.config import ConfigError, config_text, validated_yaml

_NAME = re.compile(r"^[a-z0-9][a-z0-9-]{0,63}$")
FAULTS = ("drift", "outage", "partition", "kill", "node-loss", "burst", "auth-outage")
# what each fault kind reads beyond at_s and fault
_FIELDS = {
    "drift": {"devices", "factor"},
    "outage": {"devices", "for_s"},
    "partition": {"devices", "for_s"},
    "kill": {"devices", "actor"},
    "node-loss": {"devices"},
    "burst": {"jobs"},
    "auth-outage": {"for_s"},
}


class Workload(BaseModel):
    """The steady load the game day runs under: GHZ circuits at a fixed rate."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    rate_per_s: float = Field(default=2.0, gt=0, le=1000, allow_inf_nan=False)
    qubits: int = Field(default=3, ge=2, le=20)
    shots: int = Field(default=1000, ge=1, le=100_000)
    priority: int = Field(default=5, ge=0, le=10)


class Step(BaseModel):
    """One fault, ``at_s`` seconds into the game day."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    at_s: float = Field(ge=0, allow_inf_nan=False)
    fault: Literal["drift", "outage", "partition", "kill", "node-loss", "burst", "auth-outage"]
    devices: list[str] | int | Literal["half", "all"] = 1
    factor: float = Field(default=4.0, ge=1.0, le=100.0, allow_inf_nan=False)
    for_s: float = Field(default=30.0, gt=0, le=86_400, allow_inf_nan=False)
    actor: Literal["device", "scheduler", "calibration"] = "device"
    jobs: int = Field(default=200, ge=1, le=100_000)

    @model_validator(mode="after")
    def _only_what_the_fault_reads(self) -> Step:
        given = self.model_fields_set - {"at_s", "fault"}
        extra = sorted(given - _FIELDS[self.fault])
        if extra:
            raise ValueError(
                f"{self.fault} does not read {', '.join(extra)}; it takes "
                f"{', '.join(sorted(_FIELDS[self.fault]))}"
            )
        if isinstance(self.devices, int) and not 1 <= self.devices <= 10_000:
            raise ValueError(f"devices={self.devices}: pick 1 to 10000 devices")
        if self.fault == "kill" and self.actor != "device" and "devices" in given:
            raise ValueError(f"kill of the {self.actor} takes no devices")
        return self


class Expect(BaseModel):
    """What must hold for the game day to pass (nothing lost always must)."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    max_failed_share: float = Field(default=0.0, ge=0, le=1, allow_inf_nan=False)
    max_recovery_s: float = Field(default=300.0, gt=0, allow_inf_nan=False)
    max_p95_latency_s: float | None = Field(default=None, gt=0, allow_inf_nan=False)


class Scenario(BaseModel):
    """A named game day."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    name: str
    description: str = Field(min_length=1, max_length=2000)
    seed: int = Field(default=0, ge=0, le=2**31 - 1)
    duration_s: float = Field(gt=0, le=86_400, allow_inf_nan=False)
    drain_s: float = Field(default=300.0, gt=0, le=86_400, allow_inf_nan=False)
    workload: Workload = Workload()
    steps: list[Step] = Field(min_length=1, max_length=1000)
    expect: Expect = Expect()

    @model_validator(mode="after")
    def _valid(self) -> Scenario:
        if not _NAME.match(self.name):
            raise ValueError(f"name={self.name[:70]!r}: use 1-64 lowercase letters, digits and '-'")
        late = [k for k, s in enumerate(self.steps) if s.at_s >= self.duration_s]
        if late:
            raise ValueError(
                f"steps[{late[0]}] at_s={self.steps[late[0]].at_s:g} is not before "
                f"duration_s={self.duration_s:g}; faults happen while the workload runs"
            )
        long = [
            k
            for k, s in enumerate(self.steps)
            if s.fault == "auth-outage" and s.at_s + s.for_s >= self.duration_s
        ]
        if long:
            s = self.steps[long[0]]
            raise ValueError(
                f"steps[{long[0]}] auth-outage ends at {s.at_s + s.for_s:g} s, not before "
                f"duration_s={self.duration_s:g}; the tenant must be seen accepted again"
            )
        return self


def packaged() -> list[str]:
    """The names of the scenarios shipped in ``configs/gamedays/``."""
    folder = importlib.resources.files("qrt_ray") / "configs" / "gamedays"
    return sorted(
        p.name.removesuffix(".yaml") for p in folder.iterdir() if p.name.endswith(".yaml")
    )


def load_scenario(name_or_path: str) -> Scenario:
    """A packaged scenario by name, or a scenario YAML file by path.

    Raises:
        ConfigError: no such scenario, or the file is not a valid one (each error
            named with its field and line).
    """
    known = packaged()
    if name_or_path in known:
        text, source = config_text(None, f"gamedays/{name_or_path}.yaml", "game day")
    elif name_or_path.endswith((".yaml", ".yml")) or "/" in name_or_path:
        text, source = config_text(Path(name_or_path), "gamedays/drift-storm.yaml", "game day")
    else:
        raise ConfigError(
            f"scenario {name_or_path[:70]!r}: not a packaged game day ({', '.join(known)}) "
            "nor a .yaml file; name one of those or give a path"
        )
    return validated_yaml(text, source, Scenario, "game day", "`name:`, `duration_s:` and `steps:`")
