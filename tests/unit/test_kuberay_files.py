"""The KubeRay manifests in cluster/kuberay/: the Ray they run is the Ray the tests ran
with, the worker groups offer what farm.yaml's devices ask for, token auth is on for
every pod and the submitter, the store URL comes from a Secret to the head alone, and
the head starts the farm from the ConfigMap. No Kubernetes here: the files are read
and checked for what the farm needs."""

from __future__ import annotations

import json
import re
import subprocess
import sys
import tomllib
from pathlib import Path
from typing import Any

import ray
import yaml

from qrt_ray.config import load_farm_config, load_farm_config_text

ROOT = Path(__file__).resolve().parents[2]
KUBERAY = ROOT / "cluster" / "kuberay"


def _load(name: str) -> dict[str, Any]:
    return yaml.safe_load((KUBERAY / name).read_text())


def _cluster() -> dict[str, Any]:
    return _load("raycluster.yaml")


def _groups() -> list[dict[str, Any]]:
    return _cluster()["spec"]["workerGroupSpecs"]


def _head() -> dict[str, Any]:
    return _cluster()["spec"]["headGroupSpec"]


def _containers(group: dict[str, Any]) -> list[dict[str, Any]]:
    return group["template"]["spec"]["containers"]


def _offers(group: dict[str, Any]) -> dict[str, float]:
    """Ray resources a pod of the group offers: its custom ones and its GPUs."""
    params = group.get("rayStartParams", {})
    # KubeRay passes the value to `ray start --resources` as written: quoted JSON
    custom = json.loads(params["resources"].strip("'\"").replace('\\"', '"'))
    gpus = float(params.get("num-gpus", 0))
    limit = float(_containers(group)[0]["resources"]["limits"].get("nvidia.com/gpu", 0))
    assert gpus == limit, f"{group.get('groupName')}: num-gpus and the GPU limit differ"
    return {**custom, **({"GPU": gpus} if gpus else {})}


def _farm() -> Any:
    return load_farm_config_text(_load("farm-configmap.yaml")["data"]["farm.yaml"])


def _images() -> list[str]:
    pods = [_head(), *_groups(), _load("rayjob-qaoa.yaml")["spec"]["submitterPodTemplate"]]
    return [c["image"] for p in pods for c in p.get("template", p)["spec"]["containers"]]


def test_every_pod_runs_the_ray_the_tests_ran_with() -> None:
    version = ray.__version__
    assert _cluster()["spec"]["rayVersion"] == version
    qrt = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]["version"]
    for image in _images():
        tag = image.rsplit(":", 1)[1]
        assert tag.startswith(f"{qrt}-ray{version}-"), image
    dockerfile = (KUBERAY / "Dockerfile").read_text()
    assert re.search(rf"^ARG RAY_VERSION={re.escape(version)}$", dockerfile, re.M)
    assert "FROM rayproject/ray:${RAY_VERSION}" in dockerfile
    assert '"ray[default]==${RAY_VERSION}"' in dockerfile


def test_the_configmap_holds_the_cluster_farm() -> None:
    assert _farm() == load_farm_config(ROOT / "cluster" / "farm.yaml")


def test_worker_groups_offer_every_devices_resources_and_the_head_none() -> None:
    head_params = _head()["rayStartParams"]
    assert "resources" not in head_params and "num-gpus" not in head_params
    for device in _farm().devices:
        need = {**device.resources, **({"GPU": 1} if device.gpu == "require" else {})}
        assert need, f"{device.name} asks for nothing: it could land on the head"
        fits = [g for g in _groups() if all(_offers(g).get(r, 0) >= v for r, v in need.items())]
        assert fits, f"no worker group offers {need} for {device.name}"
        if device.gpu == "require":
            # the GPU device's pods carry the GPU simulator image and a GPU toleration
            assert all(_containers(g)[0]["image"].endswith("-gpu") for g in fits)
    cpu = [g for g in _groups() if "GPU" not in _offers(g)]
    assert cpu and all(not _containers(g)[0]["image"].endswith("-gpu") for g in cpu)


def test_the_autoscaler_runs_in_tree_with_bounded_groups() -> None:
    spec = _cluster()["spec"]
    assert spec["enableInTreeAutoscaling"] is True
    assert spec["autoscalerOptions"]["idleTimeoutSeconds"] > 0
    for group in _groups():
        assert 0 <= group["minReplicas"] <= group["replicas"] <= group["maxReplicas"]
        assert group["maxReplicas"] >= 1
        # the autoscaler sizes pods by their requests: they must equal the limits
        res = _containers(group)[0]["resources"]
        assert res["requests"] == res["limits"], group["groupName"]


def test_token_auth_covers_the_cluster_and_the_submitter() -> None:
    auth = _cluster()["spec"]["authOptions"]
    assert auth["mode"] == "token"
    submitter = _load("rayjob-qaoa.yaml")["spec"]["submitterPodTemplate"]["spec"]
    env = {e["name"]: e for e in submitter["containers"][0]["env"]}
    assert env["RAY_AUTH_MODE"]["value"] == "token"
    assert env["RAY_AUTH_TOKEN"]["valueFrom"]["secretKeyRef"] == {
        "name": auth["secretName"],
        "key": "auth_token",
    }


def test_the_store_url_comes_from_a_secret_to_the_head_only() -> None:
    (head,) = _containers(_head())
    env = {e["name"]: e for e in head["env"]}
    assert env["QRT_STORE"]["valueFrom"]["secretKeyRef"] == {"name": "qrt-store", "key": "url"}
    # only the scheduler, on the head, opens the store: workers never see the URL
    for group in _groups():
        names = {e["name"] for c in _containers(group) for e in c.get("env", [])}
        assert "QRT_STORE" not in names
    # and no database URL or password is written into any manifest
    for path in KUBERAY.glob("*.yaml"):
        for line in path.read_text().splitlines():
            if not line.lstrip().startswith("#"):
                assert "postgresql://" not in line, path.name


def test_the_head_starts_the_farm_from_the_configmap() -> None:
    spec = _head()["template"]["spec"]
    (head,) = spec["containers"]
    mount = next(m for m in head["volumeMounts"] if m["name"] == "farm")
    volume = next(v for v in spec["volumes"] if v["name"] == "farm")
    assert volume["configMap"]["name"] == _load("farm-configmap.yaml")["metadata"]["name"]
    command = " ".join(head["lifecycle"]["postStart"]["exec"]["command"])
    assert f"qrt up --address 127.0.0.1:6379 --farm {mount['mountPath']}/farm.yaml" in command
    # it waits for Ray, and runs in the background so the pod is not held
    assert command.index("ray health-check") < command.index("qrt up")
    assert command.rstrip().endswith("&")


def test_the_rayjob_runs_qaoa_against_the_farm() -> None:
    job = _load("rayjob-qaoa.yaml")
    assert job["kind"] == "RayJob" and job["apiVersion"] == "ray.io/v1"
    selector = job["spec"]["clusterSelector"]["ray.io/cluster"]
    assert selector == _cluster()["metadata"]["name"]
    entry = job["spec"]["entrypoint"].split()
    assert entry[:2] == ["python", "/home/ray/qrt-ray/examples/qaoa_maxcut.py"]
    assert entry[entry.index("--address") + 1] == "auto"
    # the script is where the image puts the checkout, and takes those arguments
    assert "COPY --chown=ray:users . /home/ray/qrt-ray" in (KUBERAY / "Dockerfile").read_text()
    script = ROOT / "examples" / "qaoa_maxcut.py"
    usage = subprocess.run(
        [sys.executable, str(script), "--help"], capture_output=True, text=True, timeout=120
    )
    assert usage.returncode == 0, usage.stderr[-2000:]
    assert all(a in usage.stdout for a in entry[2:] if a.startswith("--"))
