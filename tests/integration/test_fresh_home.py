"""``QuantumRuntime.local()`` on a fresh home: the token, the store and Ray's session
folder are readable by their owner only, and the embedded farm's own store goes with
it. Run in a child process with its own HOME and
its own embedded Ray, as a new user's first script would be."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from tests.child import result_of

pytestmark = pytest.mark.integration

SCRIPT = r'''
import json, os, stat
from pathlib import Path

import psutil

from qrt_ray import QuantumRuntime
from qrt_ray.config import load_farm_config_text

import ray

FARM = """
name: tiny
devices:
  - {name: manila, backend: FakeManilaV2,
     price_per_shot_usd: 0.00001, price_per_job_usd: 0.01, gpu: never}
"""
GHZ = (
    'OPENQASM 2.0;\ninclude "qelib1.inc";\n'
    "qreg q[2];\ncreg c[2];\nh q[0];\ncx q[0],q[1];\nmeasure q -> c;\n"
)


def mode(path):
    return oct(stat.S_IMODE(os.stat(path).st_mode)) if os.path.exists(path) else None


home = Path.home()
with QuantumRuntime.local(load_farm_config_text(FARM), num_cpus=1) as rt:
    store = rt._private_store  # a farm of its own keeps a store of its own
    counts = rt.submit(GHZ, shots=100).result(timeout_s=120).counts()
    session = ray._private.worker._global_node.get_session_dir_path()
    seen = {
        "counts": sum(counts.values()),
        "owns_ray": rt._owns_ray,
        "ray_dir": mode(home / ".ray"),
        "token": mode(home / ".ray" / "auth_token"),
        "store_dir": mode(store.parent),
        "store": mode(store),
        "wal": mode(f"{store}-wal"),
        "shm": mode(f"{store}-shm"),
        # Ray shares its own folders with every user: a folder above them must not be
        "private_above": [
            str(a) for a in Path(session).parents
            if mode(a) == "0o700" and os.stat(a).st_uid == os.geteuid()
        ],
    }
    # every socket this Ray's processes (and this driver) listen on
    root = str(Path(session).parent)
    listening, procs = set(), 0
    for proc in psutil.process_iter(["cmdline"]):
        try:
            if proc.pid != os.getpid() and root not in " ".join(proc.info["cmdline"] or []):
                continue
            procs += 1
            listening |= {
                c.laddr.ip for c in proc.net_connections("inet") if c.status == "LISTEN"
            }
        except psutil.Error:
            continue
    seen["listening"], seen["ray_processes"] = sorted(listening), procs
seen["store_left"] = [p for p in (f"{store}", f"{store}-wal") if os.path.exists(p)]
seen["data_dir_made"] = (home / ".local" / "share" / "qrt-ray" / "jobs.sqlite3").exists()
print("RESULT " + json.dumps(seen))
'''


def test_local_on_a_fresh_home_keeps_secrets_and_data_private(tmp_path: Path) -> None:
    home = tmp_path / "home"
    home.mkdir()
    env = {
        k: v
        for k, v in os.environ.items()
        # nothing of this session's Ray set-up: qrt-ray must do it all itself
        if k not in ("RAY_ADDRESS", "QRT_STORE", "XDG_DATA_HOME", "RAY_AUTH_TOKEN")
        and not k.startswith("RAY_AUTH_TOKEN")
        and k != "RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER"
    }
    env.update(HOME=str(home), RAY_AUTH_MODE="token", PYTHONPATH=str(Path.cwd()))
    seen = result_of(["-c", SCRIPT], env=env, cwd=tmp_path, timeout_s=240)
    assert seen["counts"] == 100 and seen["owns_ray"] is True  # its own embedded Ray
    assert seen["ray_dir"] == "0o700" and seen["token"] == "0o600"
    assert seen["store_dir"] == "0o700" and seen["store"] == "0o600"
    assert seen["wal"] == "0o600" and seen["shm"] == "0o600"
    # gone with the farm, and nothing written into the shared farm's default store
    assert seen["store_left"] == [] and seen["data_dir_made"] is False
    assert seen["private_above"], "nothing above the Ray session folder is owner-only"
    # the embedded Ray's own ray.init binds to loopback only
    assert seen["ray_processes"] >= 3 and seen["listening"], seen
    bound = {ip.removeprefix("::ffff:") for ip in seen["listening"]}  # IPv4 mapped
    assert bound == {"127.0.0.1"}, seen["listening"]
