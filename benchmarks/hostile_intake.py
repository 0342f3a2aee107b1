"""Hostile input against a live farm: every case of the security corpus, one at a time.

For each case of ``tests/security/cases.py`` this submits the input the way its case
says (``rt.submit``, a query, or the scheduler actor called directly with raw JSON),
and records:

- the outcome: the error class and the start of its message, or the job's answer;
- the wall time until the call answered;
- the worst latency of another client's call (``rt.jobs(limit=1)``, every 20 ms on a
  second connection thread) while the case was being handled: the stall it caused;
- the scheduler process's resident memory after the case.

It also checks that no answer, and no Ray log line, holds the content of a secret
file the corpus tries to include, and that nobody opened the corpus's named pipe.
It asserts nothing; it prints a table (``--json`` saves the rows, ``--compare``
prints a saved run beside this one).

    python benchmarks/hostile_intake.py --json after.json
    python benchmarks/hostile_intake.py --json before.json --case-timeout 60   # old code
    python benchmarks/hostile_intake.py --compare before.json after.json       # table only
"""

from __future__ import annotations

import argparse
import json
import os
import re
import statistics
import sys
import tempfile
import threading
import time
from pathlib import Path
from typing import Any

os.environ.setdefault("RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER", "0")
os.environ.setdefault("RAY_AUTH_MODE", "token")
sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import psutil

from tests.circuits import SMALL_FARM
from tests.security.cases import CASES, Case
from tests.security.harness import FifoWatch, Prober, plant_secrets, run_case

# the tests' small farm with kolkata for nairobi: the widest device has 27 qubits
FARM = SMALL_FARM.replace(
    "name: nairobi, backend: FakeNairobiV2", "name: kolkata, backend: FakeKolkataV2"
)


def scheduler_rss_mb() -> float | None:
    for proc in psutil.process_iter(["name", "cmdline"]):
        try:
            text = " ".join(proc.info["cmdline"] or []) + " " + (proc.info["name"] or "")
            if "SchedulerActor" in text:
                return proc.memory_info().rss / 2**20
        except (psutil.NoSuchProcess, psutil.AccessDenied):
            continue
    return None


def _save(path: str | None, rows: list[dict[str, Any]]) -> None:
    if path:
        Path(path).write_text(json.dumps(rows, indent=1))


def run(args: argparse.Namespace) -> list[dict[str, Any]]:
    from qrt_ray import QuantumRuntime
    from qrt_ray.config import load_farm_config_text

    tmp = Path(tempfile.mkdtemp(prefix="qrt-hostile-"))
    found = plant_secrets(tmp)
    token = found.token
    watch = FifoWatch(found.fifo)
    rt = QuantumRuntime.local(load_farm_config_text(FARM), store=tmp / "jobs.sqlite3")
    prober = Prober(lambda: rt.jobs(limit=1))
    rows: list[dict[str, Any]] = []
    wanted = set(args.cases.split(",")) if args.cases else None
    try:
        for case in CASES:
            if wanted and case.name not in wanted and case.group not in wanted:
                continue
            prober.reset()
            out: dict[str, Any] = {}

            def attempt(c: Case = case, into: dict[str, Any] = out) -> None:
                got = run_case(rt, c, found, timeout_s=args.case_timeout)
                into["verdict"] = got.verdict
                into["detail"] = f"{got.error}: {got.message}" if got.error else got.message

            t0 = time.perf_counter()
            worker = threading.Thread(target=attempt, daemon=True)
            worker.start()
            worker.join(args.case_timeout)
            took = time.perf_counter() - t0
            if worker.is_alive():
                out = {"verdict": "no answer", "detail": f"still waiting after {took:.0f} s"}
            detail = out["detail"]
            leaked = token in detail
            row = {
                "case": case.name,
                "group": case.group,
                "verdict": out["verdict"],
                "detail": detail[:160].replace("\n", " "),
                "detail_chars": len(detail),
                "seconds": round(took, 3),
                "stall_s": round(prober.worst(), 3),
                "scheduler_mb": round(scheduler_rss_mb() or 0.0),
                "leaked_secret": leaked,
            }
            rows.append(row)
            _save(args.json, rows)  # a case that brings the machine down keeps the rest
            print(
                f"{case.name:28s} {row['verdict']:9s} {took:7.2f}s stall {row['stall_s']:6.2f}s "
                f"{row['scheduler_mb']:6.0f}MB {'LEAK ' if leaked else ''}{row['detail'][:90]}",
                flush=True,
            )
        import ray

        logs = Path(ray._private.worker._global_node.get_session_dir_path()) / "logs"
        in_logs = [
            p.name for p in logs.glob("*") if p.is_file() and token.encode() in p.read_bytes()
        ]
        print(f"\nsecret in Ray logs: {in_logs or 'no'}; named pipe opened: {watch.opened} times")
        rows.append({"case": "_summary", "secret_in_logs": in_logs, "fifo_opened": watch.opened})
        _save(args.json, rows)
    finally:
        prober.stop()
        watch.stop()
        rt.shutdown()
    return rows


def compare(before: list[dict[str, Any]], after: list[dict[str, Any]]) -> None:
    """Markdown table of two runs, case by case."""
    old = {r["case"]: r for r in before}
    print("| case | before | s | stall s | after | s | stall s |")
    print("| --- | --- | --- | --- | --- | --- | --- |")
    for row in after:
        if row["case"] == "_summary":
            continue
        b = old.get(row["case"], {})
        print(
            f"| {row['case']} | {_short(b)} | {b.get('seconds', '-')} | {b.get('stall_s', '-')} "
            f"| {_short(row)} | {row['seconds']} | {row['stall_s']} |"
        )
    for name, rows in (("before", before), ("after", after)):
        cases = [r for r in rows if r["case"] != "_summary"]
        if not cases:
            continue
        stalls = [r["stall_s"] for r in cases]
        print(
            f"\n{name}: {len(cases)} cases; worst stall {max(stalls):.2f} s, median "
            f"{statistics.median(stalls):.3f} s; worst case time "
            f"{max(r['seconds'] for r in cases):.2f} s; peak scheduler "
            f"{max(r['scheduler_mb'] for r in cases)} MB; leaks "
            f"{sum(r['leaked_secret'] for r in cases)}; verdicts "
            + ", ".join(
                f"{v} {sum(r['verdict'] == v for r in cases)}"
                for v in sorted({r["verdict"] for r in cases})
            )
        )


def _short(row: dict[str, Any]) -> str:
    """One row's outcome in a few words: the error class and the start of its message."""
    if not row:
        return "not run"
    detail = row["detail"].replace("|", "/").replace("\x1b", "")
    detail = re.sub(r"(job\.|jobs\[\d+\]\.)?circuits\[\d+\]: (line \d+: )?", "", detail)
    detail = detail.replace("ValidationError: ", "ValidationError ").replace(
        "PlacementError: ", "PlacementError "
    )
    return f"{row['verdict']}: {detail[:60]}"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--json", help="save the rows to this file")
    parser.add_argument("--case-timeout", type=float, default=60.0, help="seconds per case")
    parser.add_argument("--cases", help="comma-separated case names or groups to run")
    parser.add_argument("--compare", nargs=2, metavar=("BEFORE", "AFTER"), help="print a table")
    args = parser.parse_args()
    if args.case_timeout <= 0:
        parser.error("--case-timeout must be > 0")
    if args.compare:
        before, after = (json.loads(Path(p).read_text()) for p in args.compare)
        compare(before, after)
        return
    run(args)


if __name__ == "__main__":
    main()
