"""The generated Prometheus rules, run by Prometheus's own tool: ``promtool check rules``
parses and lints them, and ``promtool test rules`` replays synthetic series through
them (tests/promtool/*.yml) to prove who gets paged, when, and with which runbook.

promtool comes with Prometheus (``apt-get install prometheus``); without it these
tests skip and say so.
"""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path

import pytest

from qrt_ray.slo.config import load_slo_config
from qrt_ray.slo.rules import render_rules

SCENARIOS = Path(__file__).resolve().parents[1] / "promtool"


@pytest.fixture
def promtool() -> str:
    found = shutil.which("promtool")
    if found is None:
        reason = "promtool not found on PATH (apt-get install prometheus): rules not run"
        print(reason)
        pytest.skip(reason)
    return found


def run(promtool: str, *args: str | Path) -> str:
    done = subprocess.run([promtool, *map(str, args)], capture_output=True, text=True, timeout=120)
    output = done.stdout + done.stderr
    assert done.returncode == 0, output
    return output


def write_rules(folder: Path) -> None:
    """The rules the scenarios load: production timing, and 60 times faster."""
    config = load_slo_config()
    (folder / "qrt_rules.yml").write_text(render_rules(config))
    fast = render_rules(config, time_scale=60, scrape_interval_s=1)
    (folder / "qrt_rules_fast.yml").write_text(fast)


def test_the_generated_rules_pass_promtool_check(promtool: str, tmp_path: Path) -> None:
    write_rules(tmp_path)
    output = run(
        promtool, "check", "rules", tmp_path / "qrt_rules.yml", tmp_path / "qrt_rules_fast.yml"
    )
    assert output.count("SUCCESS") == 2


@pytest.mark.parametrize("scenario", ["slo_tests.yml", "slo_tests_fast.yml"])
def test_alerts_fire_as_the_scenarios_expect(promtool: str, tmp_path: Path, scenario: str) -> None:
    # promtool resolves rule_files next to the test file: both go in one folder
    write_rules(tmp_path)
    shutil.copy(SCENARIOS / scenario, tmp_path / scenario)
    assert "SUCCESS" in run(promtool, "test", "rules", tmp_path / scenario)


def test_a_scenario_fails_when_a_rule_is_wrong(promtool: str, tmp_path: Path) -> None:
    # the scenarios can fail: without maintenance suppression q3 pages at 10m
    write_rules(tmp_path)
    rules = tmp_path / "qrt_rules.yml"
    rules.write_text(rules.read_text().replace("MAINTENANCE|CALIBRATING", "CALIBRATING"))
    shutil.copy(SCENARIOS / "slo_tests.yml", tmp_path / "slo_tests.yml")
    done = subprocess.run(
        [promtool, "test", "rules", str(tmp_path / "slo_tests.yml")],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert done.returncode != 0
    assert 'device="q3"' in done.stdout + done.stderr
