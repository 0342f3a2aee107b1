"""A real Prometheus for tests: Debian's ``prometheus`` on 127.0.0.1, in a temp dir.

``.ci/run`` installs the package where it is missing (root with apt); elsewhere the
tests that need it skip and say why.
"""

from __future__ import annotations

import contextlib
import json
import shutil
import socket
import subprocess
import time
import urllib.parse
import urllib.request
from collections.abc import Iterator
from datetime import UTC
from pathlib import Path
from typing import Any

import pytest


def free_port() -> int:
    """A TCP port on 127.0.0.1 nobody listens on now."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def need(binary: str) -> str:
    """The path of a Prometheus tool, or skip the test saying how to get it."""
    found = shutil.which(binary)
    if found is None:
        reason = f"{binary} is not installed (Debian: apt-get install prometheus; .ci/run does)"
        print(f"SKIP: {reason}")
        pytest.skip(reason)
    return found


class Prometheus:
    """A running Prometheus and its HTTP API."""

    def __init__(self, url: str, proc: subprocess.Popen[bytes], log: Path) -> None:
        self.url = url
        self.proc = proc
        self.log = log

    def api(self, path: str, **params: Any) -> Any:
        """``/api/v1/<path>``'s data; raises with Prometheus' error otherwise."""
        query = urllib.parse.urlencode(params)
        with urllib.request.urlopen(f"{self.url}/api/v1/{path}?{query}", timeout=30) as r:
            body = json.loads(r.read())
        if body.get("status") != "success":
            raise AssertionError(f"{path} {params}: {body}")
        return body["data"]

    def query(self, expr: str, at: float | None = None) -> list[dict[str, Any]]:
        """An instant query's vector (or a scalar as a one-sample vector)."""
        params: dict[str, Any] = {"query": expr}
        if at is not None:
            params["time"] = at
        data = self.api("query", **params)
        if data["resultType"] == "scalar":
            return [{"metric": {}, "value": data["result"]}]
        return data["result"]

    def value(self, expr: str) -> float | None:
        """The single value of an instant query (None: no sample)."""
        got = self.query(expr)
        if not got:
            return None
        assert len(got) == 1, f"{expr}: {len(got)} series"
        return float(got[0]["value"][1])

    def alerts(self) -> list[dict[str, Any]]:
        """Active alerts (pending and firing)."""
        return self.api("alerts")["alerts"]

    def scraped_after(self, t: float, timeout_s: float = 20.0) -> None:
        """Wait until every target was scraped after ``t`` (unix seconds)."""
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            targets = self.api("targets")["activeTargets"]
            if targets and all(_scraped_at(x) > t and x["health"] == "up" for x in targets):
                return
            time.sleep(0.2)
        raise AssertionError(f"no scrape after {t}: {self.api('targets')}")


def _scraped_at(target: dict[str, Any]) -> float:
    """A target's last scrape time: RFC 3339 with up to nanoseconds, in UTC."""
    from datetime import datetime

    stamp = str(target.get("lastScrape", "")).rstrip("Z")
    head, _, frac = stamp.partition(".")
    try:
        whole = datetime.fromisoformat(head).replace(tzinfo=UTC).timestamp()
    except ValueError:
        return 0.0
    digits = "".join(c for c in frac if c.isdigit())
    return whole + (int(digits) / 10 ** len(digits) if digits else 0.0)


@contextlib.contextmanager
def prometheus(
    folder: Path, targets: list[str], rules: str, interval_s: float = 1.0
) -> Iterator[Prometheus]:
    """Run Prometheus on a free loopback port, scraping ``targets`` (host:port) every
    ``interval_s`` and evaluating ``rules`` as often; stopped on exit."""
    binary = need("prometheus")
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "rules.yml").write_text(rules)
    config = {
        "global": {
            "scrape_interval": f"{interval_s:g}s",
            "evaluation_interval": f"{interval_s:g}s",
        },
        "rule_files": [str(folder / "rules.yml")],
        "scrape_configs": [{"job_name": "qrt", "static_configs": [{"targets": targets}]}],
    }
    (folder / "prometheus.yml").write_text(json.dumps(config))
    port = free_port()
    log = folder / "prometheus.log"
    with log.open("wb") as out:
        proc = subprocess.Popen(
            [
                binary,
                f"--config.file={folder / 'prometheus.yml'}",
                f"--storage.tsdb.path={folder / 'data'}",
                f"--web.listen-address=127.0.0.1:{port}",
                "--log.level=warn",
            ],
            stdout=out,
            stderr=subprocess.STDOUT,
        )
    url = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 30
        while True:
            try:
                with urllib.request.urlopen(f"{url}/-/ready", timeout=2) as r:
                    if r.status == 200:
                        break
            except OSError:
                pass
            if proc.poll() is not None or time.monotonic() > deadline:
                raise AssertionError(f"prometheus did not start: {log.read_text()[-2000:]}")
            time.sleep(0.2)
        prom = Prometheus(url, proc, log)
        # targets reach the scrape loop a few seconds after start (discovery updates
        # are batched): what happens before the first scrape would be missed
        prom.scraped_after(0.0, timeout_s=30)
        yield prom
    finally:
        proc.terminate()
        try:
            proc.wait(timeout=15)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
