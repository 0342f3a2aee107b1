"""The `qrt` CLI and `ray job submit` against a farm started by `qrt up`."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.cli_session import CliSession, session_env
from tests.integration.ledger import wait_for

pytestmark = pytest.mark.integration
ROOT = Path(__file__).resolve().parents[2]
GHZ = ROOT / "examples" / "ghz.qasm"


# `qrt up` and `qrt down` run as processes of their own, as users run them; the other
# commands go through the real CLI in one long-lived process (tests/cli_session.py)
_OWN_PROCESS = ("up", "down")
_session: list[CliSession] = []


@pytest.fixture(scope="module", autouse=True)
def _cli_session() -> Iterator[None]:
    yield
    while _session:
        _session.pop().close()


def qrt(*args: str, check: bool = True, timeout: float = 240) -> subprocess.CompletedProcess:
    if args and args[0] in _OWN_PROCESS:
        out = subprocess.run(
            [sys.executable, "-m", "qrt_ray.cli", *args],
            capture_output=True,
            text=True,
            timeout=timeout,
            env={**os.environ},
        )
    else:
        if not _session:
            _session.append(CliSession(session_env({**os.environ}), ROOT))
        out = _session[0].run(list(args))
    if check and out.returncode != 0:
        raise AssertionError(f"qrt {' '.join(args)} failed ({out.returncode}):\n{out.stderr}")
    return out


@pytest.fixture(scope="module")
def farm(ray_head, tmp_path_factory: pytest.TempPathFactory) -> Iterator[dict]:
    ns = f"qrt-cli-{uuid.uuid4().hex[:6]}"
    farm_yaml = tmp_path_factory.mktemp("farm") / "farm.yaml"
    from tests.circuits import SMALL_FARM

    farm_yaml.write_text(SMALL_FARM)
    store = tmp_path_factory.mktemp("clistore") / "jobs.sqlite3"
    qrt(
        "up",
        "--address",
        ray_head.gcs,
        "--namespace",
        ns,
        "--farm",
        str(farm_yaml),
        "--store",
        str(store),
    )
    tmp = str(tmp_path_factory.mktemp("files"))
    yield {"ns": ns, "address": ray_head.gcs, "dashboard": ray_head.dashboard, "tmp": tmp}
    qrt("down", "--address", ray_head.gcs, "--namespace", ns)


def common(farm: dict) -> list[str]:
    return ["--address", farm["address"], "--namespace", farm["ns"]]


def test_submit_wait_status_result_jobs_devices(farm: dict) -> None:
    out = qrt("submit", str(GHZ), "--shots", "500", "--wait", "--json", *common(farm))
    data = json.loads(out.stdout)
    job_id = data["job_id"]
    assert sum(data["circuits"][0]["counts"].values()) == 500
    status = json.loads(qrt("status", job_id, "--json", *common(farm)).stdout)
    assert status["state"] == "DONE" and status["events"][-1]["to"] == "DONE"
    story = [e["event"] for e in status["events"]]  # each move names its event
    assert story == [
        "submitted",
        "placed",
        "compiled",
        "batch started",
        "run counted",
        "result stored",
    ], story
    text = qrt("result", job_id, *common(farm)).stdout
    assert "DONE on" in text and "bitstring" in text and "without noise" not in text
    ideal = qrt("submit", str(GHZ), "--shots", "300", "--ideal", "--wait", *common(farm))
    assert "simulated without noise" in ideal.stdout
    assert job_id in qrt("jobs", *common(farm)).stdout
    devices = json.loads(qrt("devices", "--json", *common(farm)).stdout)
    assert {d["name"] for d in devices} == {"manila", "nairobi"}
    assert all(d["status"] == "ONLINE" and d["calibration_id"] for d in devices)
    explained = qrt("explain", job_id, *common(farm)).stdout
    assert f"job {job_id}: DONE on" in explained and "policy: composite (weights: " in explained
    head = explained.split("story:")[0]
    assert "{" not in head  # no Python reprs
    ranked = [line.split() for line in head.splitlines() if line.split()[:1] in (["1"], ["2"])]
    assert [r[0] for r in ranked] == ["1", "2"]  # rows in rank order, the chosen first
    assert ranked[0][2] == explained.split(": DONE on ")[1].split()[0]
    assert "only their order matters" in " ".join(explained.split())
    assert "manila" in explained and "nairobi" in explained
    assert "story:" in explained and "batch started" in explained
    rows = json.loads(qrt("estimate", str(GHZ), "--json", *common(farm)).stdout)
    assert {r["device"] for r in rows} == {"manila", "nairobi"}
    wide = Path(farm["tmp"]) / "ghz6.qasm"
    wide.write_text(
        'OPENQASM 2.0;\ninclude "qelib1.inc";\nqreg q[6];\ncreg c[6];\nh q[0];\n'
        + "".join(f"cx q[{i}],q[{i + 1}];\n" for i in range(5))
        + "measure q -> c;\n"
    )
    estimate = qrt("estimate", str(wide), *common(farm)).stdout
    assert "nairobi" in estimate and "cannot run this job" in estimate
    assert estimate.strip().endswith("manila")  # 5 qubits: said, not silently dropped


def test_simulate_compares_policies_without_a_farm() -> None:
    out = qrt(
        "simulate",
        "--devices",
        "4",
        "--jobs",
        "60",
        "--policy",
        "least_busy",
        "--policy",
        "best_fidelity",
        "--json",
    )
    reports = {r["policy"]: r for r in json.loads(out.stdout)}
    assert set(reports) == {"least_busy", "best_fidelity"}
    assert all(r["done"] == 60 for r in reports.values())
    assert reports["least_busy"]["mean_jct_s"] <= reports["best_fidelity"]["mean_jct_s"]


def test_cancel_and_errors(farm: dict, tmp_path: Path) -> None:
    # on a drained device it waits, so the cancel always finds it unfinished (a million
    # shots were once done before a new `qrt cancel` process had connected)
    qrt("drain", "manila", *common(farm))
    try:
        submitted = qrt("submit", str(GHZ), "--device", "manila", *common(farm))
        job_id = submitted.stdout.strip()
        out = json.loads(qrt("cancel", job_id, "--json", *common(farm)).stdout)
    finally:
        qrt("resume", "manila", *common(farm))
    assert out == {"job_id": job_id, "cancelled": True, "state": "CANCELLED"}
    status = json.loads(qrt("status", job_id, "--json", *common(farm)).stdout)
    assert status["state"] == "CANCELLED"
    assert status["events"][-1]["to"] == "CANCELLED"
    again = qrt("cancel", job_id, *common(farm)).stdout
    assert "already CANCELLED" in again
    bad = tmp_path / "bad.qasm"
    bad.write_text("OPENQASM 2.0;\nqreg q[2];\nnot_a_gate q[0];\n")
    err = qrt("submit", str(bad), *common(farm), check=False)
    assert err.returncode == 2 and "malformed OpenQASM" in err.stderr
    missing = qrt("submit", str(tmp_path / "nope.qasm"), *common(farm), check=False)
    assert missing.returncode == 2 and "no such file" in missing.stderr
    shots = qrt("submit", str(GHZ), "--shots", "0", *common(farm), check=False)
    assert shots.returncode == 2 and "shots" in shots.stderr
    unknown = qrt("status", "job-doesnotexist", *common(farm), check=False)
    assert unknown.returncode == 2 and "no such job" in unknown.stderr


def test_calibrate_drain_and_resume_a_device(farm: dict) -> None:
    cal = json.loads(qrt("calibrate", "nairobi", "--json", *common(farm)).stdout)
    # no drift on these devices: the measurement finds the same parameters, same id
    assert cal["device"] == "nairobi" and cal["old"] == cal["new"]
    devices = json.loads(qrt("devices", "--json", *common(farm)).stdout)
    nairobi = next(d for d in devices if d["name"] == "nairobi")
    assert 0 <= nairobi["calibration_age_s"] < 300  # it was just measured
    out = qrt("drain", "manila", "--wait", "--timeout", "120", *common(farm))
    assert "manila is DRAINING" in out.stdout and "finished what it held" in out.stdout
    devices = json.loads(qrt("devices", "--json", *common(farm)).stdout)
    assert {d["name"]: d["status"] for d in devices} == {"manila": "DRAINING", "nairobi": "ONLINE"}
    # new work goes elsewhere while manila drains
    job = json.loads(
        qrt("submit", str(GHZ), "--shots", "200", "--wait", "--json", *common(farm)).stdout
    )
    assert job["metadata"]["device"] == "nairobi"
    # work pinned to the draining device waits, and its status says why
    pinned = qrt("submit", str(GHZ), "--shots", "100", "--device", "manila", *common(farm))
    pinned_id = pinned.stdout.strip()

    def waiting() -> str | None:
        return json.loads(qrt("status", pinned_id, "--json", *common(farm)).stdout)["waiting"]

    wait_for(waiting, timeout_s=60, what="the pinned job to say why it waits")
    why = waiting()
    assert why is not None and "manila=DRAINING" in why
    assert f"waiting: {why}" in qrt("status", pinned_id, *common(farm)).stdout
    assert "manila is ONLINE" in qrt("resume", "manila", *common(farm)).stdout
    qrt("result", pinned_id, "--timeout", "120", *common(farm))  # it runs once resumed
    unknown = qrt("drain", "nosuchdevice", *common(farm), check=False)
    assert unknown.returncode == 2 and "device='nosuchdevice'" in unknown.stderr
    assert "manila" in unknown.stderr


def test_maintenance_window_and_calibration_history(farm: dict) -> None:
    window = json.loads(
        qrt(
            "maintenance",
            "manila",
            "--start",
            "now",
            "--end",
            "+1h",
            "--reason",
            "fridge warm-up",
            "--json",
            *common(farm),
        ).stdout
    )

    def status() -> dict:
        devices = json.loads(qrt("devices", "--json", *common(farm)).stdout)
        return {d["name"]: d for d in devices}

    wait_for(lambda: status()["manila"]["status"] == "MAINTENANCE", timeout_s=60)
    assert "fridge warm-up" in status()["manila"]["status_reason"]
    listed = qrt("maintenance", *common(farm)).stdout
    assert window["window_id"] in listed and "fridge warm-up" in listed
    job = json.loads(
        qrt("submit", str(GHZ), "--shots", "100", "--wait", "--json", *common(farm)).stdout
    )
    assert job["metadata"]["device"] == "nairobi"  # manila takes no work inside it
    out = qrt("maintenance", "--cancel", window["window_id"], *common(farm))
    assert "cancelled" in out.stdout
    wait_for(lambda: status()["manila"]["status"] == "ONLINE", timeout_s=60)
    history = json.loads(qrt("calibrations", "manila", "--json", *common(farm)).stdout)
    assert history[0]["reason"] == "maintenance window ended"
    assert history[0]["canary_rounds"] >= 1  # verified after the recalibration
    assert "maintenance window ended" in qrt("calibrations", "manila", *common(farm)).stdout
    bad = qrt("maintenance", "manila", "--start", "+2h", "--end", "+1h", *common(farm), check=False)
    assert bad.returncode == 2 and "must be after" in bad.stderr
    vague = qrt(
        "maintenance", "manila", "--start", "soon", "--end", "+1h", *common(farm), check=False
    )
    assert vague.returncode == 2 and "ISO 8601" in vague.stderr


def test_ray_job_submit(farm: dict, tmp_path: Path) -> None:
    env = {**os.environ, "RAY_AUTH_MODE": "token"}
    env.pop("RAY_ADDRESS", None)
    cmd = ["ray", "job", "submit", "--address", farm["dashboard"], "--working-dir", str(ROOT)]
    out = subprocess.run(
        [
            *cmd,
            "--",
            "qrt",
            "submit",
            "examples/ghz.qasm",
            "--shots",
            "300",
            "--wait",
            "--namespace",
            farm["ns"],
        ],
        capture_output=True,
        text=True,
        timeout=300,
        env=env,
    )
    assert out.returncode == 0, out.stderr + out.stdout
    assert "DONE on" in out.stdout
    script = tmp_path / "client.py"
    script.write_text(
        textwrap.dedent(f"""
        import qrt_ray
        rt = qrt_ray.connect(namespace={farm["ns"]!r})
        h = rt.submit(open("examples/ghz.qasm").read(), shots=250)
        r = h.result(timeout_s=120)
        print("SHOTS", sum(r.counts().values()))
    """)
    )
    # its own working dir: nothing is written into the repository
    workdir = tmp_path / "job"
    (workdir / "examples").mkdir(parents=True)
    (workdir / "examples" / "ghz.qasm").write_text(GHZ.read_text())
    (workdir / "client.py").write_text(script.read_text())
    submit = ["ray", "job", "submit", "--address", farm["dashboard"], "--working-dir"]
    out = subprocess.run(
        [*submit, str(workdir), "--", "python", "client.py"],
        capture_output=True,
        text=True,
        timeout=300,
        env=env,
    )
    assert out.returncode == 0, out.stderr + out.stdout
    assert "SHOTS 250" in out.stdout


def test_explain_says_when_every_device_was_expected_late(farm: dict) -> None:
    # A million shots are expected to take about 250 s times the pace the run-time
    # model learned for the device: about 1.3 s at the simulator's pace on a fast
    # machine (200,000 shots once finished in 0.34 s, on time), so no device is expected
    # within 0.4 s unless the simulator ran 4x faster still. Placed on the earliest
    # finish, and explain says why.
    job_id = qrt(
        "submit", str(GHZ), "--shots", "1000000", "--max-execution-time-s", "0.4", *common(farm)
    ).stdout.strip()

    def placement() -> dict | None:
        return json.loads(qrt("status", job_id, "--json", *common(farm)).stdout)["placement"]

    wait_for(placement, timeout_s=60, what="the job placed")
    text = qrt("explain", job_id, *common(farm)).stdout
    assert "no device was expected to finish before the deadline" in text
    data = json.loads(qrt("explain", job_id, "--json", *common(farm)).stdout)["placement"]
    assert data["late"] is True and 0 < data["limits"]["deadline_s"] <= 0.5
    qrt("cancel", job_id, *common(farm))  # whatever it is now, it ends here


def test_result_as_json(farm: dict) -> None:
    job = json.loads(
        qrt("submit", str(GHZ), "--shots", "300", "--wait", "--json", *common(farm)).stdout
    )
    job_id = job["job_id"]
    again = json.loads(qrt("result", job_id, "--json", *common(farm)).stdout)
    assert again["metadata"]["job_id"] == job_id
    assert sum(again["circuits"][0]["counts"].values()) == 300
    assert again["metadata"]["shots_executed"] == 300


def test_submit_wait_names_the_job_first_and_shows_its_states(farm: dict) -> None:
    out = qrt("submit", str(GHZ), "--shots", "300", "--wait", *common(farm))
    first, *progress = out.stderr.strip().splitlines()
    assert first.startswith("job job-") and "Ctrl-C stops waiting, not the job" in first
    job_id = first.split()[1]
    states = [line.split()[-1] for line in progress]
    assert states[-1] == "DONE" and len(states) == len(set(states))  # each state once
    assert f"job {job_id}: DONE on" in out.stdout


def test_ctrl_c_stops_the_wait_and_leaves_the_job_running(farm: dict) -> None:
    import signal
    import time

    command = ["submit", str(GHZ), "--shots", "1000000", "--wait", *common(farm)]
    proc = subprocess.Popen(
        [sys.executable, "-m", "qrt_ray.cli", *command],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    assert proc.stderr is not None
    first = proc.stderr.readline()  # the job id comes first
    job_id = first.split()[1]
    time.sleep(1.0)
    proc.send_signal(signal.SIGINT)
    _, err = proc.communicate(timeout=60)
    assert proc.returncode == 130, err
    assert f"job {job_id} keeps running" in err and f"qrt cancel {job_id}" in err
    assert "Traceback" not in err
    status = json.loads(qrt("status", job_id, "--json", *common(farm)).stdout)
    assert status["state"] != "CANCELLED"  # the wait stopped, not the job
    qrt("cancel", job_id, *common(farm))


def test_bad_names_exit_2_everywhere_and_errors_are_json_under_json(farm: dict) -> None:
    unknown = qrt("submit", str(GHZ), "--device", "nosuchdevice", *common(farm), check=False)
    assert unknown.returncode == 2 and "nosuchdevice" in unknown.stderr, unknown.stderr
    missing = qrt("status", "job-doesnotexist", "--json", *common(farm), check=False)
    error = json.loads(missing.stdout)["error"]
    assert missing.returncode == 2 == error["exit_code"] and "no such job" in error["message"]


def test_up_on_a_live_farm_says_so_and_refuses_another_without_replace(
    farm: dict, tmp_path: Path
) -> None:
    from tests.circuits import SMALL_FARM

    same = tmp_path / "same.yaml"
    same.write_text(SMALL_FARM)
    up = ["up", "--address", farm["address"], "--namespace", farm["ns"]]
    again = qrt(*up, "--farm", str(same))
    assert "already up" in again.stdout and "nothing started" in again.stdout
    other = tmp_path / "other.yaml"
    other.write_text(SMALL_FARM.replace("name: test", "name: other").split("  - {name: nairobi")[0])
    refused = qrt(*up, "--farm", str(other), check=False)
    assert refused.returncode == 2 and "another farm is up" in refused.stderr
    assert "--replace" in refused.stderr
    # the running farm was left alone
    devices = json.loads(qrt("devices", "--json", *common(farm)).stdout)
    assert {d["name"] for d in devices} == {"manila", "nairobi"}


def test_replace_swaps_the_farm_and_a_second_down_stops_nothing(ray_head, tmp_path: Path) -> None:
    from tests.circuits import SMALL_FARM

    ns = f"qrt-cli-{uuid.uuid4().hex[:6]}"
    one = tmp_path / "one.yaml"
    one.write_text(SMALL_FARM.split("  - {name: nairobi")[0])
    both = tmp_path / "both.yaml"
    both.write_text(SMALL_FARM)
    at = ["--address", ray_head.gcs, "--namespace", ns]
    store = ["--store", str(tmp_path / "jobs.sqlite3")]
    qrt("up", *at, "--farm", str(one), *store)
    out = qrt("up", *at, "--farm", str(both), *store, "--replace")
    assert "replacing the farm" in out.stderr and "is up" in out.stdout
    devices = json.loads(qrt("devices", "--json", *at).stdout)
    assert {d["name"] for d in devices} == {"manila", "nairobi"}
    first = json.loads(qrt("down", *at, "--json").stdout)
    second = qrt("down", *at)
    assert first["stopped"] is True and "nothing to stop" in second.stdout


def test_on_call_commands_trace_slo_and_top(farm: dict) -> None:
    out = qrt("submit", str(GHZ), "--shots", "300", "--wait", "--json", *common(farm))
    job_id = json.loads(out.stdout)["job_id"]
    # the waterfall comes from the stored transitions: every stage, in order, and the
    # end-to-end bar as long as the stages together
    trace = json.loads(qrt("trace", job_id, "--json", *common(farm)).stdout)
    names = [s["stage"] for s in trace["stages"]]
    assert names == ["queue_wait", "compile", "device_wait", "run", "postprocess", "end_to_end"]
    parts = sum(s["duration_s"] for s in trace["stages"][:-1])
    assert abs(parts - trace["stages"][-1]["duration_s"]) < 1e-6
    assert len(trace["trace_id"]) == 32
    drawn = qrt("trace", job_id, *common(farm)).stdout
    assert f"job {job_id}: DONE" in drawn and "|#" in drawn
    # SLOs from the farm's store: the job just run counts towards success and latency
    report = json.loads(qrt("slo", "--json", *common(farm)).stdout)
    slos = {s["name"]: s for s in report["slos"]}
    assert set(slos) >= {"job_success", "latency_normal", "calibration_freshness"}
    hour = slos["job_success"]["windows"]["1h"]
    states = [
        j["state"]
        for j in json.loads(qrt("jobs", "--json", "--limit", "1000", *common(farm)).stdout)
    ]
    done, failed = states.count("DONE"), states.count("FAILED")
    assert (hour["good"], hour["total"]) == (done, done + failed)  # cancelled left out
    assert hour["sli"] == done / (done + failed)
    rules = qrt("slo", "rules").stdout
    assert "QrtSloBurnFast" in rules and "qrt:slo_burn:rate1h" in rules
    top = qrt("top", "--once", *common(farm)).stdout
    assert "manila" in top and "nairobi" in top and "SLO burn" in top and "job_success" in top
