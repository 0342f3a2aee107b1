"""The store's integrity check passes on what the runtime writes and catches each kind
of damage it names. Each test runs on both databases."""

from __future__ import annotations

import asyncio
import json
import subprocess
import sys
from pathlib import Path

import pytest

from qrt_ray.store import JobStore, open_store
from qrt_ray.store.integrity import check_integrity
from tests.local_farm import drive, make, spec
from tests.postgres import raw_sql as raw


def _farm_jobs(tmp_path: Path, store_url: str) -> tuple[JobStore, list[str]]:
    """Six jobs run to the end by a real scheduler, one of them cancelled."""

    async def main() -> tuple[JobStore, list[str]]:
        store, devices, sched = make(tmp_path, store_url=store_url)
        await sched.start()
        admitted = await sched.submit([spec(3, shots=300, seed=i) for i in range(5)])
        ((gone, _),) = await sched.submit([spec(3, shots=300)])
        await sched.cancel(gone.job_id)
        await drive(sched, devices)
        await sched.stop()
        return store, [rec.job_id for rec, _ in admitted] + [gone.job_id]

    return asyncio.run(main())


def _problems(store: JobStore) -> dict[str, int]:
    report = check_integrity(store, deep=True)
    return {c.name: c.problems for c in report.checks if c.problems}


def test_what_the_runtime_writes_is_consistent(tmp_path: Path, store_url: str) -> None:
    store, jobs = _farm_jobs(tmp_path, store_url)
    report = check_integrity(store, deep=True)
    store.close()
    assert report.ok, report.render()
    checked = {c.name: c.checked for c in report.checks}
    assert checked["records"] == checked["transitions"] == len(jobs)
    assert checked["results"] == checked["shots"] == checked["calibration"] == 5
    assert checked["billing"] == 5 and checked["checksums"] >= 5


def test_each_kind_of_damage_is_caught(tmp_path: Path, store_url: str) -> None:
    store, jobs = _farm_jobs(tmp_path, store_url)
    done = store.get(jobs[0])
    # a lost state change
    raw(store_url, "DELETE FROM transitions WHERE job_id=? AND seq=1", (jobs[1],))
    # a job billed twice
    raw(
        store_url,
        "INSERT INTO ledger (job_id, line, tenant, device, kind, shots, device_s, usd, at) "
        "SELECT job_id, 9, tenant, device, kind, shots, device_s, usd, at FROM ledger "
        "WHERE job_id=? AND kind='fee'",
        (jobs[2],),
    )
    # a result that no longer matches its checksum
    raw(store_url, "UPDATE blobs SET data=? WHERE sha256=?", (b"{}", done.result_sha256))
    # a result gone
    raw(store_url, "UPDATE jobs SET result_sha256=NULL WHERE job_id=?", (jobs[3],))
    assert _problems(store) == {
        "transitions": 1,
        "billing": 1,
        "results": 1,
        "checksums": 1,
        "shots": 1,
    }
    store.close()


def test_qrt_integrity_exits_1_on_damage(tmp_path: Path) -> None:
    url = str(tmp_path / "jobs.sqlite3")
    store, jobs = _farm_jobs(tmp_path, url)
    store.close()

    def run() -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            [sys.executable, "-m", "qrt_ray.cli", "integrity", "--store", url, "--deep", "--json"],
            capture_output=True,
            text=True,
            timeout=120,
        )

    clean = run()
    assert clean.returncode == 0 and json.loads(clean.stdout)["ok"] is True
    raw(url, "UPDATE transitions SET from_state='RUNNING' WHERE job_id=? AND seq=2", (jobs[0],))
    broken = run()
    assert broken.returncode == 1
    found = {c["name"]: c for c in json.loads(broken.stdout)["checks"]}
    assert found["transitions"]["problems"] == 1
    assert "move 2 starts from RUNNING" in found["transitions"]["examples"][0]


@pytest.mark.parametrize("deep", [False, True])
def test_an_empty_store_is_consistent(tmp_path: Path, deep: bool) -> None:
    store = open_store(str(tmp_path / "jobs.sqlite3"))
    assert check_integrity(store, deep=deep).ok
    store.close()
