"""History without a farm: `qrt jobs/status/result/explain/calibrations` read the store
when no farm answers, and say so."""

from __future__ import annotations

import asyncio
import json
from pathlib import Path

import pytest

from qrt_ray.cli import main
from qrt_ray.errors import JobTimeoutError, RuntimeNotRunningError
from qrt_ray.history import StoredHistory
from qrt_ray.models import JobSpec
from qrt_ray.store import open_store
from tests.local_farm import ghz, make, run_and_record

DEAD = "127.0.0.1:1"  # nothing listens there: `_connect` fails at once


@pytest.fixture(scope="module")
def stored(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, str, str]:
    """A store a farm used: one job DONE, one never run (QUEUED), a calibration."""
    tmp = tmp_path_factory.mktemp("history")

    (done,), _ = run_and_record(tmp, [JobSpec(circuits=(ghz(3),), shots=300)])

    async def never_run() -> str:
        # a job stored and never run: the farm stopped before it placed it
        store, _, idle = make(tmp)
        ((queued, _),) = await idle.submit([JobSpec(circuits=(ghz(2),), shots=10)])
        store.close()
        return queued.job_id

    queued = asyncio.run(never_run())
    return tmp / "jobs.sqlite3", done, queued


def qrt(capsys: pytest.CaptureFixture[str], *argv: str) -> tuple[int, str, str]:
    code = main([*argv, "--address", DEAD])
    out = capsys.readouterr()
    return code, out.out, out.err


def test_jobs_status_result_and_explain_read_the_store_when_no_farm_runs(
    stored: tuple[Path, str, str], capsys: pytest.CaptureFixture[str]
) -> None:
    path, done, queued = stored
    code, out, err = qrt(capsys, "jobs", "--store", str(path))
    assert code == 0 and done in out and queued in out
    assert f"reading the history in the store at {path}" in err
    code, out, _ = qrt(capsys, "status", done, "--store", str(path))
    assert code == 0 and "DONE" in out and "batch started" in out
    code, out, _ = qrt(capsys, "result", done, "--store", str(path), "--json")
    assert code == 0 and sum(json.loads(out)["circuits"][0]["counts"].values()) == 300
    code, out, _ = qrt(capsys, "explain", done, "--store", str(path))
    assert code == 0 and "policy:" in out and "story:" in out
    device = open_store(path)
    try:
        name = device.get(done).device
    finally:
        device.close()
    code, out, _ = qrt(capsys, "calibrations", "manila", "--store", str(path))
    assert code == 0 and "startup" in out
    assert name is not None


def test_a_job_that_never_finished_says_the_farm_must_run_again(
    stored: tuple[Path, str, str], capsys: pytest.CaptureFixture[str]
) -> None:
    path, _, queued = stored
    code, _, err = qrt(capsys, "result", queued, "--store", str(path))
    assert code == 1 and "no farm runs to finish it" in err and "qrt up" in err
    history = StoredHistory(path)
    try:
        with pytest.raises(JobTimeoutError):
            history.job(queued).result()
        assert history.job(queued).status().value == "QUEUED"
    finally:
        history.close()


def test_no_farm_and_no_store_is_said_plainly(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    missing = tmp_path / "none.sqlite3"
    code, _, err = qrt(capsys, "jobs", "--store", str(missing))
    assert code == 3 and "no job store at" in err and "qrt up" in err
    assert not missing.exists()  # reading history never creates a store
    with pytest.raises(RuntimeNotRunningError):
        StoredHistory(missing)
    code, _, err = qrt(capsys, "status", "nope", "--store", str(stored_path(tmp_path)))
    assert code == 2 and "no such job" in err


def stored_path(tmp_path: Path) -> Path:
    """An empty store (a farm that ran nothing)."""
    path = tmp_path / "empty.sqlite3"
    open_store(path).close()
    return path
