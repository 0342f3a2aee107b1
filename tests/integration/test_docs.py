"""The code in README.md and docs/*.md runs, so a snippet that rots fails CI.

A small farm is up in the ``qrt`` namespace on the session's Ray head, as ``qrt up``
leaves one. Every Python block runs as written, in a fresh interpreter, and must attach
to that farm rather than start its own. Every ``qrt`` command of the shell blocks is
parsed by the real argument parser, and those that a two-device farm can answer run
against it (device names mapped to one of its devices, JOB to a job it ran); the
install lines are not run, and ``qrt up``/``down``/``demo``/``simulate``/``cancel``
are parsed only (see ``_NOT_RUN``).
"""

from __future__ import annotations

import json
import os
import re
import shlex
import socket
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

from qrt_ray.cli import build_parser
from tests.circuits import SMALL_FARM
from tests.cli_session import CliSession, session_env

pytestmark = pytest.mark.integration

ROOT = Path(__file__).resolve().parents[2]
DOCS = [ROOT / "README.md", *sorted((ROOT / "docs").glob("*.md"))]
_FENCE = re.compile(r"^```(\w*)\n(.*?)^```", re.S | re.M)
# commands this module does not run on its farm: up and down (the fixture does them),
# demo (the default farm's 20-qubit workload: the quick start's own line), simulate
# (no farm at all; tests/unit/test_simulator.py), cancel (of a job already done),
# gateway (the fixture's farm has one; tests/integration/test_gateway.py)
_NOT_RUN = {"up", "down", "demo", "simulate", "cancel", "gateway"}
# the gateway URL the docs use; the docs farm serves its gateway at a free port
DOCS_URL = "http://127.0.0.1:8000"


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def blocks(language: str, docs: list[Path] = DOCS) -> list[tuple[str, str]]:
    """(where, code) of every fenced block in ``language`` in the docs."""
    out = []
    for path in docs:
        text = path.read_text()
        for match in _FENCE.finditer(text):
            if match.group(1) == language:
                line = text[: match.start()].count("\n") + 1
                out.append((f"{path.name}:{line}", match.group(2)))
    return out


def qrt_commands(docs: list[Path] = DOCS) -> list[tuple[str, list[str]]]:
    """(where, argv after ``qrt``) of every ``qrt`` command in the shell blocks."""
    out = []
    for where, code in blocks("bash", docs):
        code = code.replace("\\\n", " ")
        for line in code.splitlines():
            line = line.split("#", 1)[0].strip()
            line = re.sub(r'eval "\$\((.*)\)"', r"\1", line)
            if " -- " in line:  # `ray job submit ... -- qrt submit ...`
                line = line.split(" -- ", 1)[1]
            for part in re.split(r";|&&", line):
                words = shlex.split(part.split(" > ", 1)[0])  # output redirected: dropped
                while words and re.fullmatch(r"[A-Z_]+=\S*", words[0]):
                    words = words[1:]  # `VAR=value qrt ...`
                if words and words[0] == "qrt":
                    out.append((where, words[1:]))
    return out


def test_the_docs_have_code_to_check() -> None:
    assert len(blocks("python")) >= 2
    assert len(qrt_commands()) >= 15


@pytest.mark.parametrize(("where", "argv"), qrt_commands(), ids=lambda v: str(v)[:40])
def test_every_qrt_command_in_the_docs_parses(where: str, argv: list[str]) -> None:
    argv = ["job-0" if a == "JOB" else a for a in argv]
    try:
        build_parser().parse_args(argv)
    except SystemExit as exc:
        assert exc.code == 0, f"{where}: `qrt {' '.join(argv)}` does not parse"


@pytest.fixture(scope="module")
def docs_farm(ray_head, tmp_path_factory: pytest.TempPathFactory) -> Iterator[dict]:  # type: ignore[no-untyped-def]
    """A two-device farm in the default namespace, as `qrt up` leaves one."""
    tmp = tmp_path_factory.mktemp("docs")
    (tmp / "farm.yaml").write_text(SMALL_FARM)
    env = {**os.environ, "RAY_ADDRESS": ray_head.gcs}
    common = ["--address", ray_head.gcs]
    # commands run in a folder of their own (files they write land there), where the
    # docs' relative paths (examples/...) still name the checkout's files
    (tmp / "examples").symlink_to(ROOT / "examples")
    port = _free_port()
    up = ["up", *common, "--farm", str(tmp / "farm.yaml"), "--store", str(tmp / "jobs.sqlite3")]
    run([*up, "--gateway-port", str(port)], env, cwd=tmp)
    try:
        # the tenant the docs name, a token of it in $QRT_TOKEN as its users keep it, and
        # a second one for the docs' TOKEN_ID (rotated and revoked by them)
        run(["tenants", "create", "acme", *common], env, cwd=tmp)
        made = [
            json.loads(
                run(["tokens", "create", "--tenant", "acme", "--user", user, "--json", *common],
                    env, cwd=tmp).stdout
            )
            for user in ("docs", "spare")
        ]  # fmt: skip
        env["QRT_TOKEN"] = made[0]["token"]
        url = f"http://127.0.0.1:{port}"
        yield {"env": env, "common": common, "cwd": tmp, "url": url, "spare": made[1]["token_id"]}
    finally:
        run(["down", *common], env, cwd=tmp)
        from ray import serve

        serve.shutdown()  # Serve itself outlives a farm's `qrt down`


RUNBOOKS = sorted((ROOT / "docs" / "runbooks").glob("*.md"))


def inline_qrt_commands(docs: list[Path]) -> list[tuple[str, list[str]]]:
    """(where, argv after ``qrt``) of every inline `qrt ...` code span."""
    out = []
    for path in docs:
        for n, line in enumerate(path.read_text().splitlines(), 1):
            for code in re.findall(r"`(qrt [^`]+)`", line):
                words = shlex.split(code.split(" > ", 1)[0])
                out.append((f"{path.name}:{n}", words[1:]))
    return out


def test_the_runbooks_have_commands_and_each_parses() -> None:
    # the runbooks act on a farm in trouble (drain, revoke, cancel): parsed, not run
    found = qrt_commands(RUNBOOKS) + inline_qrt_commands(RUNBOOKS)
    assert len(RUNBOOKS) == 11 and len(found) >= 30
    for where, argv in found:
        argv = ["job-0" if a == "JOB" else a for a in argv]
        try:
            build_parser().parse_args(argv)
        except SystemExit as exc:
            assert exc.code == 0, f"{where}: `qrt {' '.join(argv)}` does not parse"


def run(
    argv: list[str], env: dict[str, str], where: str = "", *, cwd: Path, timeout: float = 300
) -> subprocess.CompletedProcess:
    done = subprocess.run(
        [sys.executable, "-m", "qrt_ray.cli", *argv],
        capture_output=True,
        text=True,
        timeout=timeout,
        env=env,
        cwd=cwd,
    )
    assert done.returncode == 0, (
        f"{where} qrt {' '.join(argv)} failed ({done.returncode}):\n{done.stderr}"
    )
    return done


@pytest.mark.parametrize(("where", "code"), blocks("python"), ids=lambda v: str(v)[:30])
def test_every_python_block_runs_on_the_running_farm(
    docs_farm: dict, where: str, code: str
) -> None:
    over_http = DOCS_URL in code
    done = subprocess.run(
        [sys.executable, "-c", code.replace(DOCS_URL, docs_farm["url"])],
        capture_output=True,
        text=True,
        timeout=600,
        env=docs_farm["env"],
        cwd=docs_farm["cwd"],
    )
    assert done.returncode == 0, f"{where} failed:\n{done.stderr[-3000:]}"
    if over_http:  # a tenant's snippet: through the farm's gateway, with its token
        return
    # one farm per machine: the snippet used the farm that runs, it started none
    assert "attached to the qrt farm running at" in done.stderr, done.stderr[-2000:]


def test_the_docs_qrt_commands_run_on_the_running_farm(docs_farm: dict) -> None:
    env, common, cwd = docs_farm["env"], docs_farm["common"], docs_farm["cwd"]
    submitted = run(["submit", "examples/ghz.qasm", "--shots", "200", *common], env, cwd=cwd)
    job = submitted.stdout.strip()
    # every command through the real CLI, in one process (tests/cli_session.py)
    session = CliSession(session_env(env), cwd)

    def qrt(argv: list[str], where: str) -> None:
        done = session.run(argv)
        assert done.returncode == 0, (
            f"{where} qrt {' '.join(argv)} failed ({done.returncode}):\n{done.stderr}"
        )

    ran = 0
    try:
        for where, argv in qrt_commands():
            command = next((a for a in argv if not a.startswith("-") and a not in ("json",)), "")
            if command in _NOT_RUN:
                continue
            if command == "top":
                argv = [*argv, "--once"]  # the live view runs until Ctrl-C
            argv = [job if a == "JOB" else a for a in argv]
            argv = [docs_farm["spare"] if a == "TOKEN_ID" else a for a in argv]
            if DOCS_URL in argv:  # a tenant's command: through the gateway, not Ray
                argv = [docs_farm["url"] if a == DOCS_URL else a for a in argv]
                qrt(argv, where)
                ran += 1
                continue
            # the docs name the default farm's devices; this farm has manila and nairobi
            argv = ["manila" if a in ("kolkata", "torino", "sherbrooke") else a for a in argv]
            qrt(argv if argv[0] == "completion" else [*argv, *common], where)
            ran += 1
    finally:
        session.close()
    assert ran >= 12, f"only {ran} commands ran"
    assert (cwd / "result.png").stat().st_size > 0  # `qrt plot result JOB --out result.png`
