"""The cluster launcher files in cluster/: valid against the schema inside the installed
Ray, and wired as the farm needs (token auth, the farm started on the head, a worker
type for every device's resources, the GPU wheel on GPU workers, one Ray version)."""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Any

import jsonschema
import pytest
import ray
import yaml

from qrt_ray.config import load_farm_config

CLUSTER = Path(__file__).resolve().parents[2] / "cluster"
LAUNCHERS = ["aws.yaml", "gcp.yaml"]


def _load(name: str) -> dict[str, Any]:
    return yaml.safe_load((CLUSTER / name).read_text())


def _commands(config: dict[str, Any]) -> list[str]:
    out = [*config["setup_commands"], *config["head_start_ray_commands"]]
    out += config["worker_start_ray_commands"]
    for node_type in config["available_node_types"].values():
        out += node_type.get("worker_setup_commands", [])
    return out


def _offers(resources: dict[str, float], need: dict[str, float]) -> bool:
    return all(resources.get(r, 0) >= v for r, v in need.items())


@pytest.mark.parametrize("name", LAUNCHERS)
def test_the_launcher_file_is_valid_for_the_installed_ray(name: str) -> None:
    schema = json.loads((Path(ray.__file__).parent / "autoscaler" / "ray-schema.json").read_text())
    jsonschema.validate(_load(name), schema)


def test_the_schema_check_catches_a_broken_file() -> None:
    schema = json.loads((Path(ray.__file__).parent / "autoscaler" / "ray-schema.json").read_text())
    broken = _load("aws.yaml")
    broken["available_node_types"]["cpu_worker"]["resources"] = {"qrt_device": "four"}
    with pytest.raises(jsonschema.ValidationError):
        jsonschema.validate(broken, schema)


@pytest.mark.parametrize("name", LAUNCHERS)
def test_the_head_starts_ray_with_token_auth_and_then_the_farm(name: str) -> None:
    config = _load(name)
    head = config["head_start_ray_commands"]
    starts = [c for c in head + config["worker_start_ray_commands"] if "ray start" in c]
    assert len(starts) == 2 and all("RAY_AUTH_MODE=token" in c for c in starts)
    assert "--dashboard-host=127.0.0.1" in starts[0]
    farm = [c for c in head if "qrt up" in c]
    assert len(farm) == 1 and head.index(farm[0]) > head.index(starts[0])
    assert "RAY_AUTH_MODE=token" in farm[0] and "--farm ~/qrt-ray/cluster/farm.yaml" in farm[0]
    # the same token on every node, private there
    assert config["file_mounts"]["~/.ray/auth_token"] == "~/.ray/auth_token"
    assert any("chmod 600 ~/.ray/auth_token" in c for c in config["setup_commands"])


@pytest.mark.parametrize("name", LAUNCHERS)
def test_every_node_runs_the_ray_the_tests_ran_with(name: str) -> None:
    pins = re.findall(r'"ray\[default\]==([^"]+)"', "\n".join(_commands(_load(name))))
    assert pins and set(pins) == {ray.__version__}


@pytest.mark.parametrize("name", LAUNCHERS)
def test_a_worker_type_offers_every_devices_resources(name: str) -> None:
    config = _load(name)
    types = config["available_node_types"]
    head = types[config["head_node_type"]]
    workers = {k: v for k, v in types.items() if k != config["head_node_type"]}
    assert all("min_workers" in w and w["max_workers"] >= 1 for w in workers.values())
    farm = load_farm_config(CLUSTER / "farm.yaml")
    for device in farm.devices:
        need = {**device.resources, **({"GPU": 1} if device.gpu == "require" else {})}
        assert need, f"{device.name} asks for nothing: it could land on the head"
        assert not _offers(head["resources"], need)
        fits = [
            k
            for k, w in workers.items()
            if all(w["resources"].get(r, 0) >= v for r, v in need.items())
        ]
        assert fits, f"no worker type offers {need} for {device.name}"
    # the GPU worker swaps the CPU simulator wheel for the GPU one, in that order
    gpu = next(w for w in workers.values() if w["resources"].get("GPU"))
    steps = gpu["worker_setup_commands"]
    uninstall = next(i for i, c in enumerate(steps) if "uninstall" in c and "qiskit-aer" in c)
    install = next(i for i, c in enumerate(steps) if "qrt-ray[gpu]" in c)
    assert uninstall < install
