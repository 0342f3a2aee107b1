"""`qrt up` with no address starts its own Ray head, bound to 127.0.0.1, and `qrt down
--stop-ray` stops that head and no other (the session's own head keeps running)."""

from __future__ import annotations

import ipaddress
import json
import os
import socket
import subprocess
import sys
import uuid
from pathlib import Path

import psutil
import pytest
import ray

from tests.circuits import SMALL_FARM
from tests.ray_head import RayHead

pytestmark = pytest.mark.integration

TINY = SMALL_FARM.split("  - {name: nairobi")[0]  # manila alone


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def qrt(*args: str, env: dict[str, str], check: bool = True) -> subprocess.CompletedProcess:
    out = subprocess.run(
        [sys.executable, "-m", "qrt_ray.cli", *args],
        capture_output=True,
        text=True,
        timeout=120,
        env=env,
    )
    if check and out.returncode != 0:
        raise AssertionError(f"qrt {' '.join(args)} failed ({out.returncode}):\n{out.stderr}")
    return out


def _loopback(ip: str) -> bool:
    address = ipaddress.ip_address(ip)
    mapped = getattr(address, "ipv4_mapped", None)
    return address.is_loopback or (mapped is not None and mapped.is_loopback)


def _head_processes(temp_dir: str, address: str) -> list[psutil.Process]:
    found = []
    for proc in psutil.process_iter(["cmdline"]):
        try:
            line = " ".join(proc.info["cmdline"] or [])
            if temp_dir in line or f"--address={address} " in line:
                found.append(proc)
        except psutil.Error:
            continue
    return found


def test_qrt_up_starts_a_loopback_head_and_down_stops_only_it(
    ray_head: RayHead, tmp_path: Path
) -> None:
    port = _free_port()
    env = {k: v for k, v in os.environ.items() if k != "RAY_ADDRESS"}
    farm_yaml = tmp_path / "farm.yaml"
    farm_yaml.write_text(TINY)
    ns = f"qrt-up-{uuid.uuid4().hex[:6]}"
    address = f"127.0.0.1:{port}"
    common = ["--address", address, "--namespace", ns]
    record = None
    try:
        up = qrt(
            "up",
            "--port",
            str(port),
            "--namespace",
            ns,
            "--farm",
            str(farm_yaml),
            "--store",
            str(tmp_path / "jobs.sqlite3"),
            "--num-cpus",
            "1",
            env=env,
        )
        assert "is up" in up.stdout
        from qrt_ray.farm import head_record

        record = json.loads(head_record(port).read_text())
        assert record["address"] == address
        devices = json.loads(qrt("devices", "--json", *common, env=env).stdout)
        assert [d["name"] for d in devices] == ["manila"]
        # every socket the new head's processes listen on is on loopback
        procs = _head_processes(record["temp_dir"], address)
        assert procs, "no process of the new head found"
        listening = set()
        for proc in procs:
            try:
                conns = proc.net_connections(kind="inet")
            except psutil.Error:
                continue
            listening |= {c.laddr.ip for c in conns if c.status == psutil.CONN_LISTEN}
        assert listening and all(_loopback(ip) for ip in listening), listening
        # its sessions live in qrt-ray's private folder
        assert Path(record["temp_dir"]).parent.stat().st_mode & 0o077 == 0
        down = qrt("down", "--stop-ray", *common, env=env)
        assert f"port {port} is stopped" in down.stdout
        assert _head_processes(record["temp_dir"], address) == []
    finally:
        if record is not None and _head_processes(record["temp_dir"], address):
            from qrt_ray.farm import stop_head

            stop_head(port)
    # the session's own head is untouched
    assert ray.is_initialized() and ray.get(ray.put(41)) == 41
    # a dead address is said at once, not after Ray's minute of retries
    again = qrt("down", "--stop-ray", *common, env=env, check=False)
    assert again.returncode == 1 and "no Ray head started by `qrt up`" in again.stdout
    assert "no Ray cluster answers" in again.stdout
