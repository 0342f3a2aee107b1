"""Promises of the README that only a whole path can hold: `qrt demo` on the default
farm, the metrics endpoint scraped over HTTP, and policies read from a file."""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
import urllib.request
from pathlib import Path

import pytest

from qrt_ray import QuantumRuntime
from qrt_ray.config import FarmConfig
from tests.circuits import ghz
from tests.metrics_text import sample

pytestmark = pytest.mark.integration


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def test_qrt_demo_runs_on_the_default_farm(tmp_path: Path) -> None:
    """The README's first command, shortened: the packaged default farm, its own
    embedded Ray, every job done, a report per family."""
    env = {k: v for k, v in os.environ.items() if k != "RAY_ADDRESS"}
    out = subprocess.run(
        [
            sys.executable,
            "-m",
            "qrt_ray.cli",
            "demo",
            "--jobs",
            "10",
            "--shots",
            "200",
            "--max-qubits",
            "5",
            "--store",
            str(tmp_path / "demo.sqlite3"),
            "--json",
        ],
        capture_output=True,
        text=True,
        timeout=600,
        env=env,
        cwd=tmp_path,
    )
    assert out.returncode == 0, out.stderr[-3000:]
    report = json.loads(out.stdout)
    assert report["jobs"] == report["done"] == 10 and report["failed"] == 0
    assert "farm ready" in out.stderr and "torino(133q)" in out.stderr
    rows = report["rows"]
    assert len(rows) == 10 and all(row["state"] == "DONE" for row in rows)
    assert all(row["num_qubits"] <= 5 and 0 < row["fidelity"] <= 1 for row in rows)
    assert len({row["family"] for row in rows}) >= 3


def test_metrics_are_served_on_loopback_and_scraped(
    ray_head: object, small_farm: FarmConfig, tmp_path: Path
) -> None:
    port = _free_port()
    policies = tmp_path / "policies.yaml"
    policies.write_text("policy: least_busy\n")
    rt = QuantumRuntime.local(
        small_farm, store=tmp_path / "jobs.sqlite3", metrics_port=port, policies=policies
    )
    try:
        handle = rt.submit(ghz(3), shots=300, tenant="scraped")
        handle.result(timeout_s=120)
        # the policy came from the file
        assert handle.placement()["policy"] == "least_busy"
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=10) as r:
            text = r.read().decode()
        assert sample(text, "qrt_jobs_submitted_total", tenant="scraped") == 1
        assert sample(text, "qrt_job_transitions_total", to_state="DONE") >= 1
        # bound to loopback only: another address of this machine does not answer
        outside = _an_outside_address()
        if outside is not None:
            with pytest.raises(OSError):
                socket.create_connection((outside, port), timeout=2).close()
    finally:
        rt.shutdown()


def _an_outside_address() -> str | None:
    """An address of this machine that is not loopback, if it has one."""
    import psutil

    for addrs in psutil.net_if_addrs().values():
        for a in addrs:
            if a.family == socket.AF_INET and not a.address.startswith("127."):
                return a.address
    return None
