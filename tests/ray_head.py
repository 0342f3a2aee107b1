"""The session's loopback Ray head, shared by every test tier that needs Ray.

The head is started with ``ray start`` (as ``qrt up`` does) on free ports, bound to
127.0.0.1, with its own temp dir so teardown stops exactly this cluster and nothing
else running on the machine (the other pytest worker's head included). Registered
once, in ``tests/conftest.py``, so the tiers of one worker share one head.
"""

from __future__ import annotations

import os
import secrets
import shutil
import socket
import subprocess
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest

from qrt_ray.farm import stop_head_processes
from qrt_ray.private import write_private


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


def _start_head(temp_dir: str, env: dict[str, str]) -> tuple[int, int]:
    """``ray start --head`` on free ports; returns (GCS port, dashboard port).

    A free port is found, released and bound later by Ray: another process may take it
    meanwhile, so a start that fails for that reason is tried again on new ports.
    """
    for attempt in range(4):
        port, dash = _free_port(), _free_port()
        started = subprocess.run(
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
            capture_output=True,
            text=True,
        )
        if started.returncode == 0:
            return port, dash
        taken = "in use" in started.stderr + started.stdout
        if not taken or attempt == 3:
            raise RuntimeError(f"`ray start --head` failed:\n{started.stderr[-3000:]}")
        _stop(temp_dir, port)  # whatever of this head did start, and only that
    raise AssertionError("unreachable")


def _stop(temp_dir: str, port: int) -> None:
    """Stop this head's processes, and no other Ray's."""
    stop_head_processes(temp_dir, f"127.0.0.1:{port}")


@pytest.fixture(scope="session")
def ray_head(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RayHead]:
    """A loopback-only Ray head shared by every integration test.

    Its auth token is a file of the session's own (``RAY_AUTH_TOKEN_PATH``), never the
    one in the user's home.
    """
    temp_dir = f"/tmp/qrt-test-{uuid.uuid4().hex[:8]}"
    token = write_private(Path(temp_dir) / "auth_token", secrets.token_hex(32))
    saved = {k: os.environ.get(k) for k in ("RAY_AUTH_TOKEN_PATH", "RAY_AUTH_TOKEN")}
    os.environ.pop("RAY_AUTH_TOKEN", None)
    os.environ["RAY_AUTH_TOKEN_PATH"] = str(token)
    env = {**os.environ, "RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER": "0"}
    port, dash = _start_head(temp_dir, env)
    os.environ["RAY_ADDRESS"] = f"127.0.0.1:{port}"
    import ray

    from qrt_ray.farm import init_ray_loopback

    init_ray_loopback(address=f"127.0.0.1:{port}")
    try:
        yield RayHead(f"127.0.0.1:{port}", f"http://127.0.0.1:{dash}", temp_dir)
    finally:
        ray.shutdown()
        _stop(temp_dir, port)
        # the head's logs and sockets (a few MB a session) go with it
        shutil.rmtree(temp_dir, ignore_errors=True)
        os.environ.pop("RAY_ADDRESS", None)
        for key, value in saved.items():
            if value is None:
                os.environ.pop(key, None)
            else:
                os.environ[key] = value
