"""The tenants' HTTP gateway end to end: Ray Serve on 127.0.0.1 in front of a real
farm, serving HTTPS with a self-signed certificate; two tenants, and the SDK, the CLI
and the primitives over it."""

from __future__ import annotations

import http.client
import json
import socket
import ssl
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from qiskit import QuantumCircuit
from qiskit.quantum_info import SparsePauliOp

import qrt_ray
from qrt_ray import QuantumRuntime
from qrt_ray.cli import main
from qrt_ray.config import load_farm_config_text
from qrt_ray.errors import (
    AuthenticationError,
    InsecureConnectionError,
    JobNotFoundError,
    PermissionDeniedError,
    QuotaExceededError,
)
from qrt_ray.primitives import Estimator, Sampler
from tests.circuits import SMALL_FARM
from tests.local_farm import ghz
from tests.ray_head import RayHead
from tests.tls import self_signed

pytestmark = pytest.mark.integration


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class Gateway:
    def __init__(self, rt: QuantumRuntime, url: str, tokens: dict[str, str], ca: Path) -> None:
        self.rt = rt
        self.url = url
        self.port = int(url.rsplit(":", 1)[1])
        self.tokens = tokens
        self.ca = str(ca)

    def connect(self, who: str, pipeline: bool = True) -> QuantumRuntime:
        return qrt_ray.connect(
            self.url, token=self.tokens.get(who, who), ca_file=self.ca, pipeline=pipeline
        )

    def http(
        self, method: str, path: str, token: str | None = "", body: Any = None
    ) -> tuple[int, dict[str, str], Any]:
        context = ssl.create_default_context(cafile=self.ca)
        conn = http.client.HTTPSConnection("127.0.0.1", self.port, timeout=60, context=context)
        headers = {"Content-Type": "application/json"}
        if token is not None:
            headers["Authorization"] = f"Bearer {self.tokens.get(token, token)}"
        data = (
            body if isinstance(body, bytes) else None if body is None else json.dumps(body).encode()
        )
        try:
            conn.request(method, path, body=data, headers=headers)
            resp = conn.getresponse()
            raw = resp.read()
        finally:
            conn.close()
        return resp.status, dict(resp.getheaders()), json.loads(raw) if raw else None

    def admin(self, op: str, **args: Any) -> Any:
        return self.rt.administer(op, **args)


@pytest.fixture(scope="module")
def gw(ray_head: RayHead, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Gateway]:
    from ray import serve

    from qrt_ray.gateway import start_gateway

    folder = tmp_path_factory.mktemp("gateway")
    cert, key = self_signed(folder)
    rt = QuantumRuntime.local(load_farm_config_text(SMALL_FARM), store=folder / "jobs.sqlite3")
    url = start_gateway(rt.namespace, port=_free_port(), tls_cert=str(cert), tls_key=str(key))
    assert url.startswith("https://127.0.0.1:")
    tokens: dict[str, str] = {}
    try:
        rt.administer("tenant_set", name="acme")
        rt.administer("tenant_set", name="zenith")
        rt.administer(
            "tenant_set", name="slow", limits={"submit_rate_per_s": 0.5, "submit_burst": 1}
        )
        for name, tenant, scopes in (
            ("a", "acme", "submit,read"),
            ("b", "zenith", "submit,read"),
            ("a_read", "acme", "read"),
            ("slow", "slow", "submit,read"),
        ):
            tokens[name] = rt.administer("token_create", tenant=tenant, user=name, scopes=scopes)[
                "token"
            ]
        yield Gateway(rt, url, tokens, cert)
    finally:
        serve.shutdown()
        rt.shutdown()


def _job(shots: int = 300) -> dict[str, Any]:
    return {"circuits": [ghz(3)], "shots": shots}


def test_the_api_describes_itself_and_answers_health_without_a_token(gw: Gateway) -> None:
    status, _, schema = gw.http("GET", "/openapi.json", token=None)
    assert status == 200
    for path in (
        "/v1/jobs",
        "/v1/jobs/{job_id}",
        "/v1/jobs/{job_id}/result",
        "/v1/usage",
        "/v1/estimate",
        "/v1/devices",
        "/v1/wait",
        "/v1/jobs/{job_id}/cancel",
    ):
        assert path in schema["paths"], path
    assert gw.http("GET", "/v1/health", token=None)[0] == 200


def test_refusals_have_status_codes_and_say_why(gw: Gateway) -> None:
    status, headers, body = gw.http("GET", "/v1/jobs", token=None)
    assert status == 401 and "Bearer" in headers.get("www-authenticate", "")
    assert "Authorization: Bearer" in body["error"]["message"]
    status, _, body = gw.http("GET", "/v1/jobs", token="qrt_000000000000_" + "x" * 43)
    assert status == 401 and body["error"]["type"] == "AuthenticationError"
    status, _, body = gw.http("POST", "/v1/jobs", token="a_read", body={"job": _job()})
    assert status == 403 and "'submit' scope" in body["error"]["message"]
    status, _, body = gw.http("POST", "/v1/jobs", token="a", body={"job": {"shots": 5}})
    assert status == 400 and "circuits" in body["error"]["message"]
    status, _, body = gw.http("POST", "/v1/jobs", token="a", body="not an object")
    assert status == 400
    status, _, body = gw.http("GET", "/v1/jobs?limit=many", token="a")
    assert status == 400 and "limit" in body["error"]["message"]
    status, _, body = gw.http("POST", "/v1/jobs", token="a", body=b"[" * 100_000)
    assert status == 400 and "nested too deeply" in body["error"]["message"]
    status, _, body = gw.http("POST", "/v1/jobs", token=None, body=b"{" * 1000)
    assert status == 401  # refused on its token, before its body is read
    # a result asked for too early: 409, and the job is left as it was
    gw.rt.drain("nairobi")
    try:
        status, _, body = gw.http(
            "POST", "/v1/jobs", token="a", body={"job": {**_job(), "device": "nairobi"}}
        )
        job = body["jobs"][0]["job_id"]
        status, _, body = gw.http("GET", f"/v1/jobs/{job}/result", token="a")
        assert status == 409 and body["error"]["type"] == "ResultNotReadyError"
        assert gw.http("POST", f"/v1/jobs/{job}/cancel", token="a")[2]["cancelled"]
    finally:
        gw.rt.resume("nairobi")


def test_tenant_b_cannot_reach_tenant_a_s_job_through_any_endpoint(gw: Gateway) -> None:
    status, _, body = gw.http("POST", "/v1/jobs", token="a", body={"job": _job()})
    assert status == 201
    job = body["jobs"][0]["job_id"]
    assert gw.http("POST", "/v1/wait", token="a", body={"job_ids": [job], "timeout_s": 20})[2] == {
        job: "DONE"
    }
    calls = [
        ("GET", "/v1/jobs/{}", None),
        ("GET", "/v1/jobs/{}/events", None),
        ("GET", "/v1/jobs/{}/result", None),
        ("POST", "/v1/jobs/{}/cancel", None),
        ("DELETE", "/v1/jobs/{}", None),
        ("POST", "/v1/results", lambda j: {"job_ids": [j]}),
        ("POST", "/v1/wait", lambda j: {"job_ids": [j], "timeout_s": 0}),
    ]
    unknown = "job-00000000deadbeef"
    for method, path, body_of in calls:
        answers = []
        for target in (job, unknown):
            body = body_of(target) if body_of else None
            status, _, got = gw.http(method, path.format(target), token="b", body=body)
            answers.append((status, got["error"]["message"].replace(target, "ID")))
        assert answers[0] == answers[1] and answers[0][0] == 404, (method, path, answers)
    status, _, listed = gw.http("GET", "/v1/jobs?tenant=acme", token="b")
    assert status == 200 and job not in json.dumps(listed)
    status, _, usage = gw.http("GET", "/v1/usage", token="b")
    assert usage["tenant"] == "zenith" and usage["shots"] == 0
    # the owner still has it, untouched
    status, _, got = gw.http("GET", f"/v1/jobs/{job}", token="a")
    assert status == 200 and got["state"] == "DONE"


def test_the_sdk_over_http_is_the_same_api(gw: Gateway) -> None:
    rt = gw.connect("a")
    assert rt.whoami()["tenant"] == "acme"
    handle = rt.submit(ghz(3), shots=400, seed=3, idempotency_key="sdk-1")
    result = handle.result(timeout_s=120)
    counts = result.counts()
    assert sum(counts.values()) == 400 and counts.get("000", 0) + counts.get("111", 0) > 300
    assert handle.status().value == "DONE" and handle.events()[-1]["to"] == "DONE"
    # a resubmit with the same key is the same job
    assert rt.submit(ghz(3), shots=400, seed=3, idempotency_key="sdk-1").job_id == handle.job_id
    assert handle.job_id in [j["job_id"] for j in rt.jobs()]
    many = rt.submit_many([ghz(2), ghz(3)], shots=100)
    assert len(rt.results(many, timeout_s=120)) == 2
    # pipelined over HTTP: the same keys give the same jobs, acknowledged on the handle
    piped = qrt_ray.connect(gw.url, token=gw.tokens["a"], ca_file=gw.ca, pipeline=True)
    again = piped.submit(ghz(3), shots=400, seed=3, idempotency_key="sdk-1")
    fresh = [piped.submit(ghz(2), shots=60 + i) for i in range(5)]
    piped.shutdown()  # sends what is queued first
    assert again.accepted(timeout_s=0) == handle.job_id
    assert [sum(rt.job(h.job_id).result(timeout_s=120).counts().values()) for h in fresh] == [
        60 + i for i in range(5)
    ]
    assert {e["device"] for e in rt.estimate(ghz(3), shots=100)} == {"manila", "nairobi"}
    assert {d.name for d in rt.devices()} == {"manila", "nairobi"}
    usage = rt.usage()
    assert usage["tenant"] == "acme" and usage["billed_usd"] > 0
    with pytest.raises(JobNotFoundError):
        gw.connect("b").job(handle.job_id)
    with pytest.raises(PermissionDeniedError, match="operator"):
        rt.calibrate("manila")
    with pytest.raises(AuthenticationError):
        gw.connect("qrt_000000000000_" + "y" * 43)
    # a client that does not trust the certificate sends nothing, and says why at once
    started = time.monotonic()
    with pytest.raises(InsecureConnectionError, match="ca_file"):
        qrt_ray.connect(gw.url, token=gw.tokens["a"])
    assert time.monotonic() - started < 5


def test_a_rate_limited_tenant_gets_429_with_retry_after(gw: Gateway) -> None:
    rt = gw.connect("slow", pipeline=False)  # a pipelined client waits a rate limit out
    rt.submit(ghz(2), shots=50)
    status, headers, body = gw.http("POST", "/v1/jobs", token="slow", body={"job": _job(50)})
    assert status == 429 and int(headers["retry-after"]) >= 1
    assert body["error"]["limit"] == "submit_rate"
    with pytest.raises(QuotaExceededError) as err:
        rt.submit(ghz(2), shots=50)
    assert err.value.limit == "submit_rate" and err.value.retry_after_s > 0
    # others are not slowed by it
    gw.connect("b").submit(ghz(2), shots=50)


def test_the_cli_over_http(
    gw: Gateway, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    circuit = tmp_path / "ghz.qasm"
    circuit.write_text(ghz(3))
    monkeypatch.setenv("QRT_TOKEN", gw.tokens["b"])
    monkeypatch.setenv("QRT_CA_FILE", gw.ca)
    assert (
        main(["submit", str(circuit), "--url", gw.url, "--wait", "--json", "--shots", "200"]) == 0
    )
    out = json.loads(capsys.readouterr().out)
    job = out["job_id"]
    assert main(["jobs", "--url", gw.url, "--json"]) == 0
    assert job in capsys.readouterr().out
    assert main(["usage", "--url", gw.url, "--json"]) == 0
    assert json.loads(capsys.readouterr().out)["tenant"] == "zenith"
    monkeypatch.setenv("QRT_TOKEN", gw.tokens["a"])
    assert main(["status", job, "--url", gw.url]) == 2  # not acme's: unknown to it
    assert "no job" in capsys.readouterr().err


def test_the_operator_cli_manages_tenants_tokens_bills_and_the_audit_chain(
    gw: Gateway, ray_head: RayHead, capsys: pytest.CaptureFixture[str]
) -> None:
    where = ["--address", ray_head.gcs, "--namespace", gw.rt.namespace]
    assert main(["tenants", "create", "delta", "--budget-usd", "5", *where]) == 0
    assert "budget $5/month" in capsys.readouterr().out
    assert main(["tokens", "create", "--tenant", "delta", "--user", "dee", "--json", *where]) == 0
    made = json.loads(capsys.readouterr().out)
    assert made["token"].startswith("qrt_") and made["scopes"] == ["submit", "read"]
    assert main(["tokens", "list", "--tenant", "delta", *where]) == 0
    listed = capsys.readouterr().out
    assert made["token_id"] in listed and made["token"] not in listed
    assert main(["tokens", "revoke", made["token_id"], *where]) == 0
    assert "is revoked" in capsys.readouterr().out
    with pytest.raises(AuthenticationError, match="revoked"):
        gw.connect(made["token"])
    assert main(["bill", "--csv", *where]) == 0
    lines = capsys.readouterr().out.splitlines()
    assert lines[0].startswith("job_id,line,tenant,device,kind") and len(lines) > 1
    assert main(["audit", "verify", *where]) == 0
    assert "audit chain intact" in capsys.readouterr().out


def test_operator_actions_through_ray_are_sealed_too(gw: Gateway) -> None:
    rt = gw.rt
    rt.drain("nairobi")
    job = rt.submit(ghz(3), shots=100, device="nairobi")  # waits: nairobi takes no work
    assert job.cancel()
    rt.resume("nairobi")
    now = time.time()
    window = rt.schedule_maintenance("nairobi", now + 3600, now + 7200, reason="fridge")
    assert rt.cancel_maintenance(window["window_id"])
    records = rt.administer("audit_tail", limit=200)
    actions = {(r["action"], r["actor"]) for r in records}
    for action in (
        "device.drain",
        "device.resume",
        "job.cancel",
        "maintenance.add",
        "maintenance.remove",
    ):
        assert (action, "operator") in actions, action
    assert rt.administer("audit_verify")["ok"]


def test_the_primitives_over_http_bill_their_mitigation(gw: Gateway) -> None:
    rt = gw.connect("b")
    qc = QuantumCircuit(2)
    qc.h(0)
    qc.cx(0, 1)
    measured = qc.copy()
    measured.measure_all()
    sampled = Sampler(mode=rt, options={"seed_simulator": 4}).run([measured], shots=300).result()
    assert sum(sampled[0].data.meas.get_counts().values()) == 300
    # the served post-processing version reaches HTTP clients, and names itself
    assert rt.mitigation_versions() == {"readout": "1"}
    options = {"seed_simulator": 4, "resilience": {"measure_mitigation": True}}
    mitigated = Sampler(mode=rt, options=options).run([measured], shots=300).result()
    assert mitigated[0].qrt["mitigation"]["readout"]["version"] == "1"
    before = rt.usage()["billed_usd"]
    est = Estimator(mode=rt, options={"resilience_level": 1, "seed_estimator": 2})
    value = est.run([(qc, SparsePauliOp("ZZ"))], precision=0.05).result()[0].data.evs
    assert abs(float(value) - 1.0) < 0.15
    bill = gw.admin("bill")
    kinds = {line["kind"] for line in bill["lines"] if line["tenant"] == "zenith"}
    assert "mitigation" in kinds  # readout calibration measured for zenith, billed to it
    assert rt.usage()["billed_usd"] > before
