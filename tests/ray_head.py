"""The session's loopback Ray head, shared by every test tier that needs Ray.

The head is started with ``ray start`` (as ``qrt up`` does) on free ports, bound to
127.0.0.1, with its own temp dir so teardown stops exactly this cluster and nothing
else running on the machine. Registered once, in ``tests/conftest.py``, so the
integration and security tiers share one head.
"""

from __future__ import annotations

import contextlib
import os
import socket
import subprocess
import uuid
from collections.abc import Iterator
from pathlib import Path

import psutil
import pytest

from qrt_ray.farm import ensure_auth_token


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class RayHead:
    """Addresses of the session's Ray head."""

    def __init__(self, gcs: str, dashboard: str, temp_dir: str) -> None:
        self.gcs = gcs
        self.dashboard = dashboard
        self.temp_dir = temp_dir


def _pids_of(marker: str) -> list[int]:
    pids = []
    for proc in Path("/proc").iterdir():
        if not proc.name.isdigit():
            continue
        try:
            cmd = (proc / "cmdline").read_bytes().replace(b"\0", b" ").decode(errors="ignore")
        except OSError:
            continue
        if marker in cmd and int(proc.name) != os.getpid():
            pids.append(int(proc.name))
    return pids


def _tree(pids: list[int]) -> list[psutil.Process]:
    """The processes and all their descendants."""
    found: dict[int, psutil.Process] = {}
    for pid in pids:
        with contextlib.suppress(psutil.NoSuchProcess):
            proc = psutil.Process(pid)
            for p in [proc, *proc.children(recursive=True)]:
                found[p.pid] = p
    return list(found.values())


@pytest.fixture(scope="session")
def ray_head(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RayHead]:
    """A loopback-only Ray head shared by every integration test."""
    temp_dir = f"/tmp/qrt-test-{uuid.uuid4().hex[:8]}"
    port, dash = _free_port(), _free_port()
    env = {**os.environ, "RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER": "0"}
    ensure_auth_token()  # a fresh machine has none, and `ray start` needs one
    subprocess.run(
        [
            "ray",
            "start",
            "--head",
            f"--port={port}",
            f"--dashboard-port={dash}",
            "--node-ip-address=127.0.0.1",
            "--dashboard-host=127.0.0.1",
            "--num-cpus=2",
            f"--temp-dir={temp_dir}",
            "--disable-usage-stats",
            # every port explicit, so this head never collides with another Ray here
            f"--ray-client-server-port={_free_port()}",
            f"--dashboard-agent-listen-port={_free_port()}",
            f"--dashboard-agent-grpc-port={_free_port()}",
            f"--runtime-env-agent-port={_free_port()}",
            f"--metrics-export-port={_free_port()}",
            f"--node-manager-port={_free_port()}",
            f"--object-manager-port={_free_port()}",
        ],
        env=env,
        check=True,
        capture_output=True,
        text=True,
    )
    os.environ["RAY_ADDRESS"] = f"127.0.0.1:{port}"
    import ray

    from qrt_ray.farm import init_ray_loopback

    init_ray_loopback(address=f"127.0.0.1:{port}")
    try:
        yield RayHead(f"127.0.0.1:{port}", f"http://127.0.0.1:{dash}", temp_dir)
    finally:
        ray.shutdown()
        # Ray's agents rename themselves (ray::DashboardAgent), so the temp dir marks
        # only the head's own processes: take their whole trees before stopping any,
        # or orphaned agents outlive the session and keep spinning a core.
        doomed = _tree(_pids_of(temp_dir))
        for proc in doomed:
            with contextlib.suppress(psutil.NoSuchProcess):
                proc.terminate()
        _, alive = psutil.wait_procs(doomed, timeout=10)
        for proc in alive:
            with contextlib.suppress(psutil.NoSuchProcess):
                proc.kill()
        os.environ.pop("RAY_ADDRESS", None)
