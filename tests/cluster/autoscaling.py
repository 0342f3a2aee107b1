"""A local Ray head whose autoscaler is Ray's own, with fake worker nodes started as
local processes (Ray's ``fake_multinode`` provider), all on 127.0.0.1.

Ray's ``AutoscalingCluster`` helper runs ``ray stop --force`` (every Ray of the user,
the test session's too) and reads a defaults file this Ray wheel does not ship, so the
head is started here the same way, by hand, and stopped by its own temp folder.
"""

from __future__ import annotations

import json
import os
import socket
import subprocess
import time
from pathlib import Path
from typing import Any

from ray.autoscaler._private.fake_multi_node.node_provider import FAKE_HEAD_NODE_ID

from qrt_ray.farm import stop_head_processes


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def launcher_config(port: int, node_types: dict[str, Any], idle_minutes: float) -> dict:
    """An autoscaler config for the fake provider: a CPU-less head and ``node_types``."""
    return {
        "cluster_name": "qrt-autoscaling-test",
        "max_workers": sum(t["max_workers"] for t in node_types.values()),
        "upscaling_speed": 1.0,
        "idle_timeout_minutes": idle_minutes,
        "provider": {
            "type": "fake_multinode",
            "gcs_address": f"127.0.0.1:{port}",
            # every fake node is at 127.0.0.1: the autoscaler tells them by node id
            "use_node_id_as_ip": True,
            # nodes are local processes: nothing to set up over ssh
            "disable_node_updaters": True,
            "disable_launch_config_check": True,
        },
        "head_node_type": "ray.head.default",
        "auth": {"ssh_user": "ray"},
        "docker": {},
        "file_mounts": {},
        "cluster_synced_files": [],
        "file_mounts_sync_continuously": False,
        "rsync_exclude": [],
        "rsync_filter": [],
        "initialization_commands": [],
        "setup_commands": [],
        "head_setup_commands": [],
        "worker_setup_commands": [],
        "head_start_ray_commands": [],
        "worker_start_ray_commands": [],
        "available_node_types": {
            "ray.head.default": {"resources": {"CPU": 0}, "node_config": {}, "max_workers": 0},
            **{
                name: {"node_config": {}, "min_workers": 0, **spec}
                for name, spec in node_types.items()
            },
        },
    }


class AutoscalingHead:
    """Start with :meth:`start`, stop with :meth:`stop` (only this head's processes)."""

    def __init__(self, root: Path, node_types: dict[str, Any], idle_minutes: float) -> None:
        self.port = _free_port()
        self.address = f"127.0.0.1:{self.port}"
        self.temp_dir = str(root / "ray")
        self.config = root / "autoscaling.json"
        self.config.write_text(
            json.dumps(launcher_config(self.port, node_types, idle_minutes), indent=1)
        )

    def start(self) -> None:
        env = {
            **os.environ,
            "RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER": "0",
            "RAY_FAKE_CLUSTER": "1",
            "AUTOSCALER_UPDATE_INTERVAL_S": "1",
            # the head is the provider's fake head node
            "RAY_OVERRIDE_NODE_ID_FOR_TESTING": FAKE_HEAD_NODE_ID,
        }
        subprocess.run(
            [
                "ray",
                "start",
                "--head",
                f"--autoscaling-config={self.config}",
                "--node-ip-address=127.0.0.1",
                f"--port={self.port}",
                "--num-cpus=0",
                f"--temp-dir={self.temp_dir}",
                "--include-dashboard=false",
                "--disable-usage-stats",
            ],
            env=env,
            check=True,
            capture_output=True,
            timeout=120,
        )

    def stop(self) -> None:
        stop_head_processes(self.temp_dir, self.address)


def kill_node(node_id: str) -> int:
    """SIGKILL a fake node's raylet and everything under it, as a lost machine would
    go; returns how many processes were killed."""
    from qrt_ray.gameday.nodes import kill_raylet

    return kill_raylet(node_id)


class NodeCounter:
    """Samples the alive nodes by kind (device, cpu) in a thread."""

    def __init__(self, every_s: float = 0.5) -> None:
        import threading

        self.samples: list[tuple[float, int, int]] = []  # (t, device nodes, cpu nodes)
        self._every_s = every_s
        self._t0 = time.monotonic()
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._thread.start()

    def now(self) -> tuple[int, int]:
        import ray

        device = cpu = 0
        for node in ray.nodes():
            if not node["Alive"] or "node:__internal_head__" in node["Resources"]:
                continue
            if "qrt_device" in node["Resources"]:
                device += 1
            else:
                cpu += 1
        return device, cpu

    def _run(self) -> None:
        while not self._stop.is_set():
            device, cpu = self.now()
            self.samples.append((round(time.monotonic() - self._t0, 1), device, cpu))
            self._stop.wait(self._every_s)

    def elapsed(self) -> float:
        return round(time.monotonic() - self._t0, 1)

    def stop(self) -> list[tuple[float, int, int]]:
        self._stop.set()
        self._thread.join(timeout=5)
        return self.samples
