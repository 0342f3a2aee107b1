"""The farm on a 3-node local Ray cluster (head + 2 workers, all on 127.0.0.1): where
its actors run, who opens the store, a worker lost mid-run, the scheduler killed
mid-run, and ``import ray`` before ``import qrt_ray``.

Each scenario runs in a child process with its own cluster (see ``scenarios.py``), so
the test session's own Ray is not disturbed.
"""

from __future__ import annotations

import json
import os
import secrets
from pathlib import Path
from typing import Any

import pytest

from qrt_ray.private import write_private
from tests.child import result_of
from tests.integration.ledger import check_ledger

pytestmark = pytest.mark.cluster

ROOT = Path(__file__).resolve().parents[2]


def run_scenario(
    name: str,
    tmp_path: Path,
    *,
    drop: tuple[str, ...] = (),
    extra: dict[str, str] | None = None,
) -> dict[str, Any]:
    # a token of the test's own: nothing is written into the user's home
    token = write_private(tmp_path / "auth_token", secrets.token_hex(32))
    env = {
        k: v
        for k, v in os.environ.items()
        if k not in ("RAY_ADDRESS", "QRT_STORE", "RAY_AUTH_TOKEN", *drop)
    }
    env.update(RAY_AUTH_TOKEN_PATH=str(token), PYTHONPATH=str(ROOT), **(extra or {}))
    return result_of(["-m", "tests.cluster.scenarios", name], env=env, cwd=ROOT, timeout_s=600)


def test_a_lost_worker_and_a_killed_scheduler_lose_no_job(tmp_path: Path) -> None:
    seen = run_scenario("node_loss", tmp_path)
    head, workers, placed = seen["head"], seen["workers"], seen["placed"]
    # the control plane on the head; devices spread over the two workers
    assert placed["scheduler"] == head and placed["calibration"] == head
    assert {placed["device:manila"], placed["device:nairobi"]} == set(workers)
    # only the scheduler has the store open
    assert seen["store_holders"] == [seen["scheduler_pid"]]
    # manila's node was lost with work on it; manila came back on the other worker
    assert seen["manila_in_flight_at_loss"] >= 1
    assert seen["manila_now_on"] in workers and seen["manila_now_on"] != placed["device:manila"]
    # the scheduler was killed and Ray brought it back on the head
    assert seen["scheduler_pid_after"] != seen["scheduler_pid"]
    assert seen["scheduler_node_after"] == head
    # every job DONE with its shots, each shot counted once
    assert seen["done"] == len(seen["job_ids"]) == 60 and seen["states"] == ["DONE"]
    assert seen["shots"] == [4000] * 60
    for job_id in seen["job_ids"]:
        check_ledger(Path(seen["store"]), job_id, 4000)


def test_import_ray_first_then_qrt_ray(tmp_path: Path) -> None:
    # none of this session's Ray settings: qrt-ray sets up loopback and auth itself
    seen = run_scenario(
        "import_order", tmp_path, drop=("RAY_AUTH_MODE", "RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER")
    )
    assert seen["shots"] == 100


def test_the_autoscaler_adds_and_removes_nodes_and_a_lost_node_loses_no_job(
    tmp_path: Path,
) -> None:
    seen = run_scenario("autoscaling", tmp_path)
    samples = seen["samples"]
    # no worker at first; the farm's devices brought a device node
    assert seen["nodes_at_start"] == [0, 0]
    assert seen["nodes_farm_up"][0] >= 1
    # the burst of jobs never compiled before brought CPU nodes
    assert max(cpu for _, _, cpu in samples) >= 1
    # a device node was killed with jobs in flight and devices on it
    assert seen["devices_on_killed_node"] and seen["in_flight_at_kill"] >= 1
    assert seen["killed_processes"] >= 1
    # every job DONE with its shots, each shot counted once
    assert seen["done"] == len(seen["job_ids"]) == 240 and seen["shots"] == [2000]
    for job_id in seen["job_ids"]:
        check_ledger(Path(seen["store"]), job_id, 2000)
    # idle again: the CPU nodes were removed, the device node stays for its devices
    assert seen["nodes_at_end"][1] == 0 and seen["nodes_at_end"][0] >= 1


def test_a_farm_moved_to_a_new_head_recovers_every_job_from_postgres(
    tmp_path: Path, postgres_url: str
) -> None:
    first = run_scenario("head_lost", tmp_path, extra={"QRT_TEST_STORE": postgres_url})
    job_ids, at_loss = first["job_ids"], first["at_loss"]
    lost_in_flight = [j for j in job_ids if at_loss[j] not in ("DONE", "QUEUED")]
    assert lost_in_flight and any(s == "DONE" for s in at_loss.values())
    second = run_scenario(
        "new_head",
        tmp_path,
        extra={"QRT_TEST_STORE": postgres_url, "QRT_TEST_JOB_IDS": json.dumps(job_ids)},
    )
    # the new head finished every job, the ones lost mid-run included
    assert second["done"] == len(job_ids) == 30
    assert second["states"] == ["DONE"] and second["shots"] == [20000]
    for job_id in job_ids:
        check_ledger(postgres_url, job_id, 20000)
    lost = {s: sum(1 for v in at_loss.values() if v == s) for s in sorted(set(at_loss.values()))}
    print(
        f"head lost with jobs {lost}; new head up in {second['farm_up_s']} s, all done in "
        f"{second['all_done_s']} s"
    )


@pytest.mark.chaos_full
def test_the_node_loss_game_day_loses_a_worker_and_no_job(tmp_path: Path) -> None:
    """By command (``-m chaos_full``): about three minutes on two cores."""
    seen = run_scenario("gameday_node_loss", tmp_path)
    print(seen["text"])
    (fault,) = seen["faults"]
    assert fault["fault"] == "node-loss" and "manila" in fault["detail"], fault
    assert fault["recovered_s"] is not None, seen["text"]
    assert seen["manila_now_on"] in seen["workers"]
    assert seen["manila_now_on"] != seen["manila_node"]
    assert seen["alive_nodes"] == 2  # the head and the worker left
    assert seen["jobs"]["lost"] == 0 and seen["passed"], seen["text"]
    assert seen["integrity_ok"], seen["integrity"]
