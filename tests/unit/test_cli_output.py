"""What `qrt` prints without a farm: its version, defaults in help, results that say
what they leave out, errors as JSON under --json, and the documented exit codes."""

from __future__ import annotations

import argparse
import json
from pathlib import Path
from types import SimpleNamespace

import pytest

from qrt_ray.cli import EXIT_BAD_INPUT, EXIT_CODES, EXIT_NO_FARM, TOP_OUTCOMES, _show_result, main


def _result(outcomes: int) -> SimpleNamespace:
    counts = {format(i, "012b"): outcomes - i for i in range(outcomes)}
    total = sum(counts.values())
    circuit = SimpleNamespace(
        counts=counts, probabilities={k: v / total for k, v in counts.items()}
    )
    meta = SimpleNamespace(
        device="manila", calibration_id="cal-1", shots_executed=total, seeds=[1], noise="device"
    )
    return SimpleNamespace(metadata=meta, circuits=[circuit])


def _args(**flags: bool) -> argparse.Namespace:
    return argparse.Namespace(**{"json": False, "all": False, "csv": False, **flags})


def test_a_result_says_how_many_outcomes_it_hides(capsys: pytest.CaptureFixture[str]) -> None:
    _show_result(_args(), "job-1", _result(40))
    out = capsys.readouterr().out
    assert "40 distinct outcomes" in out
    assert f"... {40 - TOP_OUTCOMES} more outcomes" in out and "--all" in out
    assert out.count(format(0, "012b")) == 1 and format(39, "012b") not in out


def test_all_and_csv_show_every_outcome(capsys: pytest.CaptureFixture[str]) -> None:
    _show_result(_args(all=True), "job-1", _result(40))
    out = capsys.readouterr().out
    assert format(39, "012b") in out and "more outcomes" not in out
    _show_result(_args(csv=True), "job-1", _result(40))
    rows = capsys.readouterr().out.strip().splitlines()
    assert rows[0] == "circuit,bitstring,count,probability" and len(rows) == 41
    assert rows[1].startswith(f"0,{format(0, '012b')},40,")


def test_a_small_result_hides_nothing(capsys: pytest.CaptureFixture[str]) -> None:
    _show_result(_args(), "job-1", _result(3))
    assert "more outcomes" not in capsys.readouterr().out


def test_version(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as done:
        main(["--version"])
    assert done.value.code == 0
    assert capsys.readouterr().out.startswith("qrt ")


def test_help_names_defaults_and_exit_codes(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit):
        main(["submit", "--help"])
    text = " ".join(capsys.readouterr().out.split())
    assert "shots per circuit (default: 1024)" in text
    assert "(default: None)" not in text and "(default: False)" not in text
    with pytest.raises(SystemExit):
        main(["--help"])
    text = " ".join(capsys.readouterr().out.split())
    assert all(f"{code} " in text for code in EXIT_CODES) and "exit codes" in text


def test_errors_are_json_under_json(
    tmp_path: object, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    assert main(["submit", "/nonexistent/ghz.qasm", "--json"]) == EXIT_BAD_INPUT
    captured = capsys.readouterr()
    error = json.loads(captured.out)["error"]
    assert error["exit_code"] == EXIT_BAD_INPUT and error["type"] == "ValidationError"
    assert "no such file" in error["message"] and captured.err == ""

    def no_farm(args: object) -> object:
        raise ConnectionError("nothing here")

    monkeypatch.setattr("qrt_ray.cli._connect", no_farm)
    missing = str(Path(str(tmp_path)) / "no-store.sqlite3")  # and no history to read
    assert main(["jobs", "--json", "--store", missing]) == EXIT_NO_FARM
    assert json.loads(capsys.readouterr().out)["error"]["exit_code"] == EXIT_NO_FARM


def test_jobs_shows_the_date_with_the_time(
    capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    import time

    job = {
        "job_id": "job-1", "state": "DONE", "tenant": "default", "priority": 5,
        "num_circuits": 1, "shots": 100, "device": "manila", "created_at": 1_700_000_000.0,
    }  # fmt: skip
    rt = SimpleNamespace(jobs=lambda **kw: [job])
    monkeypatch.setattr("qrt_ray.cli._connect", lambda args: rt)
    assert main(["jobs"]) == 0
    stamp = time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(1_700_000_000.0))
    assert stamp in capsys.readouterr().out


def test_devices_shows_the_running_batch_real_prices_and_fits_a_terminal(
    capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    import dataclasses

    from qrt_ray.actors.device import Device
    from tests.local_farm import FARM

    snap = Device(FARM.devices[0], max_parallel_threads=1).snapshot()  # manila
    busy = dataclasses.replace(snap, running_jobs=2, running_s=125.0, queue_depth=1)
    rt = SimpleNamespace(devices=lambda: [busy])
    monkeypatch.setattr("qrt_ray.cli._connect", lambda args: rt)
    assert main(["devices"]) == 0
    out = capsys.readouterr().out
    row = next(line for line in out.splitlines() if line.startswith("manila"))
    assert "2 jobs, 2m" in row  # a batch runs, though the queue holds one more
    per_1k = f"{snap.price_per_shot_usd * 1000:.4g}"
    assert per_1k != "0" and per_1k in row  # not 0.000
    assert max(len(line) for line in out.splitlines()) <= 100
    flat = " ".join(out.split())
    assert "canary:" in flat and "worse than predicted" in flat  # the legend
    assert snap.simulator_method not in out
    assert main(["devices", "--wide"]) == 0
    assert snap.simulator_method in capsys.readouterr().out


def test_shell_completion_completes_commands_and_their_options(
    capsys: pytest.CaptureFixture[str], tmp_path: Path
) -> None:
    import subprocess

    assert main(["completion", "bash"]) == 0
    script = tmp_path / "qrt.bash"
    script.write_text(capsys.readouterr().out)

    def complete(*words: str) -> list[str]:
        probe = (
            f"source {script}; COMP_WORDS=(qrt {' '.join(words)}); "
            f"COMP_CWORD={len(words)}; _qrt; printf '%s\\n' \"${{COMPREPLY[@]}}\""
        )
        out = subprocess.run(["bash", "-c", probe], capture_output=True, text=True, check=True)
        return out.stdout.split()

    assert complete("sub") == ["submit"]
    assert "--shots" in complete("submit", "--sh") and "--param" in complete("submit", "--pa")
    assert complete("cal") == ["calibrate", "calibrations"]
    assert main(["completion", "zsh"]) == 0
    assert capsys.readouterr().out.startswith("autoload -U +X bashcompinit")


def test_config_says_where_everything_is_without_a_farm(
    capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    store = tmp_path / "mine.sqlite3"
    monkeypatch.setenv("QRT_STORE", str(store))
    assert main(["config", "--address", "127.0.0.1:1", "--json"]) == 0
    info = json.loads(capsys.readouterr().out)
    # no Ray there (or, with the session's Ray already joined, no farm in it)
    assert info["farm_running"] is False and info["farm_error"]
    assert info["store"] == str(store) and info["store_from"] == "$QRT_STORE"
    assert info["farm_file"].endswith("farm.yaml") and info["default_policy"]
    assert main(["config", "--address", "127.0.0.1:1"]) == 0
    text = capsys.readouterr().out
    assert "farm running" in text and str(store) in text
