"""The Python API over HTTP: ``qrt_ray.connect(url, token=...)``.

:class:`RemoteRuntime` is a :class:`~qrt_ray.client.QuantumRuntime` whose calls go
to the farm's gateway instead of to Ray, so :class:`~qrt_ray.client.JobHandle`,
``submit``/``results``/``jobs``/``estimate`` and the Qiskit primitives work the same
for a tenant who has only a URL and a token. Operator calls (calibrate, drain,
maintenance) need Ray and say so.

The token travels only in the ``Authorization`` header; it is never logged, never
in a repr and never in an error message.
"""

from __future__ import annotations

import http.client
import json
import logging
import ssl
import threading
import time
import urllib.parse
from collections.abc import Sequence
from typing import Any

from qrt_ray import errors as errors_mod
from qrt_ray.calibration import calibration_from_json
from qrt_ray.client import DEFAULT_RETRY_S, Backoff, QuantumRuntime, _retry_s
from qrt_ray.errors import (
    InsecureConnectionError,
    PermissionDeniedError,
    QrtError,
    QuotaExceededError,
    RuntimeNotRunningError,
    ValidationError,
    brief,
)
from qrt_ray.models import DeviceSnapshot, DeviceStatus

logger = logging.getLogger("qrt.remote")

ENV_URL = "QRT_URL"
ENV_TOKEN = "QRT_TOKEN"
ENV_CA_FILE = "QRT_CA_FILE"
_TIMEOUT_S = 60.0
_WAIT_SLICE_S = 20.0
_ERRORS = {
    name: cls
    for name, cls in vars(errors_mod).items()
    if isinstance(cls, type) and issubclass(cls, QrtError)
}


class HttpTransport:
    """JSON over HTTP(S) to one gateway, one keep-alive connection per thread."""

    def __init__(self, url: str, token: str, *, ca_file: str | None = None) -> None:
        parts = urllib.parse.urlsplit(url)
        if parts.scheme not in ("http", "https") or not parts.hostname:
            raise ValidationError(
                f"url={brief(url)!r}: expected http(s)://host:port of a qrt gateway"
            )
        if not isinstance(token, str) or not token:
            raise ValidationError(
                "token: a qrt API token is needed (token=..., or $QRT_TOKEN); "
                "an operator makes one with `qrt tokens create`"
            )
        self.url = f"{parts.scheme}://{parts.netloc}"
        self._https = parts.scheme == "https"
        self._host = parts.hostname
        self._port = parts.port or (443 if self._https else 80)
        self._token = token
        self._context = ssl.create_default_context(cafile=ca_file) if self._https else None
        self._local = threading.local()

    def __repr__(self) -> str:
        return f"HttpTransport({self.url!r})"

    def _connection(self) -> http.client.HTTPConnection:
        conn = getattr(self._local, "conn", None)
        if conn is None:
            if self._https:
                conn = http.client.HTTPSConnection(
                    self._host, self._port, timeout=_TIMEOUT_S, context=self._context
                )
            else:
                conn = http.client.HTTPConnection(self._host, self._port, timeout=_TIMEOUT_S)
            self._local.conn = conn
        return conn

    def request(
        self, method: str, path: str, body: Any = None, query: dict[str, Any] | None = None
    ) -> tuple[int, dict[str, str], Any]:
        """One request; returns (status, headers, decoded JSON). A dropped keep-alive
        connection is opened again once.

        Raises:
            ConnectionError: the gateway cannot be reached.
        """
        if query:
            path += "?" + urllib.parse.urlencode({k: v for k, v in query.items() if v is not None})
        data = None if body is None else json.dumps(body).encode()
        headers = {"Authorization": f"Bearer {self._token}", "Accept": "application/json"}
        if data is not None:
            headers["Content-Type"] = "application/json"
        for attempt in (1, 2):
            conn = self._connection()
            try:
                conn.request(method, path, body=data, headers=headers)
                resp = conn.getresponse()
                raw = resp.read()
                break
            except (http.client.RemoteDisconnected, ConnectionResetError, BrokenPipeError):
                conn.close()
                self._local.conn = None
                if attempt == 2:
                    raise ConnectionError(
                        f"the gateway at {self.url} closed the connection"
                    ) from None
            except ssl.SSLError as exc:
                conn.close()
                self._local.conn = None
                raise InsecureConnectionError(
                    f"the gateway at {self.url} has a TLS certificate this client does not "
                    f"trust ({exc.reason or type(exc).__name__}); pass ca_file= (or set "
                    "$QRT_CA_FILE) to the farm's CA certificate"
                ) from None
            except OSError as exc:
                conn.close()
                self._local.conn = None
                raise ConnectionError(f"cannot reach the gateway at {self.url}: {exc}") from None
        try:
            decoded = json.loads(raw) if raw else None
        except json.JSONDecodeError:
            decoded = {"error": {"type": "QrtError", "message": raw[:200].decode(errors="replace")}}
        return resp.status, {k.lower(): v for k, v in resp.getheaders()}, decoded


def _error(body: Any) -> dict[str, Any] | None:
    """The error a gateway's answer carries (None: none)."""
    error = body.get("error") if isinstance(body, dict) else None
    return error if isinstance(error, dict) else None


def _raise_for(status: int, headers: dict[str, str], body: Any) -> None:
    error = _error(body) or {"type": "QrtError", "message": f"HTTP {status}"}
    name, message = str(error.get("type")), str(error.get("message", ""))[:2000]
    if status == 413:
        raise ValidationError(message)
    cls = _ERRORS.get(name, QrtError)
    if issubclass(cls, QuotaExceededError):
        retry = error.get("retry_after_s", headers.get("retry-after", 1))
        raise cls(message, limit=str(error.get("limit", "")), retry_after_s=float(retry))
    if cls is errors_mod.JobFailedError or cls is errors_mod.JobCancelledError:
        cls = QrtError
    raise cls(message)


class RemoteRuntime(QuantumRuntime):
    """A farm reached through its gateway with an API token (see :func:`connect`)."""

    _READS_AHEAD = False  # the gateway serves results by job, not ahead

    def __init__(
        self, transport: HttpTransport, *, retry_s: float = DEFAULT_RETRY_S, pipeline: bool = True
    ) -> None:
        self.transport = transport
        self.url = transport.url
        super().__init__(
            None,
            "",
            owns_ray=False,
            owns_farm=False,
            devices=[],
            retry_s=retry_s,
            pipeline=pipeline,
        )

    def __repr__(self) -> str:
        return f"RemoteRuntime({self.url!r})"

    # -- the one way out -----------------------------------------------------------------

    def _http(self, method: str, path: str, body: Any = None, **query: Any) -> Any:
        """A call to the gateway, riding out its restarts (503, refused connections)
        for up to ``retry_s``; other errors raise as the farm's own QrtError. A 503
        that says the farm is busy is the farm's answer, raised at once as
        :class:`FarmBusyError` (with when to retry), as a local runtime raises it."""
        backoff = Backoff(self.retry_s)
        while True:
            try:
                status, headers, decoded = self.transport.request(method, path, body, query)
            except ConnectionError as exc:
                reason = str(exc)
            else:
                reason = f"HTTP {status}"
                if status < 400:
                    return decoded
                if status != 503 or (_error(decoded) or {}).get("type") == "FarmBusyError":
                    _raise_for(status, headers, decoded)
            if not backoff.wait():
                raise RuntimeNotRunningError(
                    f"the gateway at {self.url} did not answer within {self.retry_s:g} s "
                    f"({reason}); try again later"
                )

    def _devices_once(self, timeout_s: float) -> list[DeviceSnapshot]:
        """The devices in one request, without riding out a restart (raises when the
        gateway does not answer, or answers an error)."""
        status, headers, decoded = self.transport.request("GET", "/v1/devices")
        if status >= 400:
            _raise_for(status, headers, decoded)
        return [_snapshot(d) for d in decoded]

    def _call(self, method: str, *args: Any) -> Any:
        args = tuple(a() if callable(a) else a for a in args)
        quoted = urllib.parse.quote(str(args[0]), safe="") if args else ""
        match method:
            case "submit":
                jobs = [json.loads(text) for text in args[0]]
                return self._http("POST", "/v1/jobs", {"jobs": jobs})["jobs"]
            case "estimate":
                return self._http("POST", "/v1/estimate", {"job": json.loads(args[0])})
            case "job":
                return self._http("GET", f"/v1/jobs/{quoted}")
            case "events":
                return self._http("GET", f"/v1/jobs/{quoted}/events")
            case "cancel":
                got = self._http("POST", f"/v1/jobs/{quoted}/cancel")
                return got["state"], got["cancelled"]
            case "jobs":
                states, tenant, limit = args
                state = ",".join(states) if states else None
                return self._http("GET", "/v1/jobs", state=state, tenant=tenant, limit=limit)
            case "wait":
                return self._wait(list(args[0]), args[1])
            case "collect":
                return self._collect(list(args[0]), args[1])
            case "results":
                got = self._http("POST", "/v1/results", {"job_ids": list(args[0])})
                return [(r["sha256"], r["data"].encode()) for r in got]
            case "devices":
                return [_snapshot(d) for d in self._http("GET", "/v1/devices")]
            case "store_label":
                return f"the farm behind {self.url}"
            case _:
                raise PermissionDeniedError(
                    f"{method}: an operator's call (it needs Ray); through the gateway "
                    "a tenant submits, reads, cancels and estimates"
                )

    def _wait(self, job_ids: list[str], timeout_s: float | None) -> dict[str, str]:
        """Wait in calls of at most 20 s (what the gateway holds one call)."""
        end = None if timeout_s is None else time.monotonic() + timeout_s
        while True:
            left = (
                _WAIT_SLICE_S
                if end is None
                else max(0.0, min(_WAIT_SLICE_S, end - time.monotonic()))
            )
            states = self._http("POST", "/v1/wait", {"job_ids": job_ids, "timeout_s": left})
            final = all(s in ("DONE", "FAILED", "CANCELLED") for s in states.values())
            if final or (end is not None and time.monotonic() >= end):
                return states

    def _collect(
        self, job_ids: list[str], timeout_s: float | None
    ) -> list[tuple[str, tuple[str, bytes] | None, str | None]]:
        """What the farm's ``collect`` answers (each state; every result when all are
        DONE, else the first job's error if it FAILED), from the gateway's wait,
        results and job calls."""
        states = self._wait(job_ids, timeout_s)
        first = next((j for j in job_ids if states[j] != "DONE"), None)
        if first is None:
            blobs = self._call("results", job_ids) if job_ids else []
            return [("DONE", blob, None) for blob in blobs]
        error = self._call("job", first).get("error") if states[first] == "FAILED" else None
        return [(states[j], None, error if j == first else None) for j in job_ids]

    def _manager_call(self, method: str, *args: Any) -> Any:
        return self._call(method, *args)

    def _device(self, name: str) -> Any:
        raise PermissionDeniedError(
            f"device {brief(name)!r}: calibrating, draining, maintenance and rt.backend() "
            "are an operator's calls (they need Ray); through the gateway pass the "
            "runtime itself to the primitives (Sampler(mode=rt)) and name a device with "
            "submit(device=...)"
        )

    def usage(self, month: str | None = None) -> dict[str, Any]:
        """Your tenant's month: billed USD, device seconds, shots, what running jobs
        hold of the budget, limits and budget alerts (``month``: YYYY-MM)."""
        return self._http("GET", "/v1/usage", month=month)

    def whoami(self) -> dict[str, Any]:
        """The tenant, user, token id and scopes of this runtime's token."""
        return self._http("GET", "/v1/whoami")

    def mitigation_versions(self) -> dict[str, str]:
        """The post-processing version of each method the farm serves now."""
        return dict(self._http("GET", "/v1/mitigation")["versions"])

    def readout_calibration(
        self, device: str, qubits: Sequence[int], shots: int, max_age_s: float
    ) -> tuple[Any, int]:
        from qrt_ray.mitigation.readout import ReadoutCalibration

        got = self._http(
            "POST",
            "/v1/readout",
            {"device": device, "qubits": list(qubits), "shots": shots, "max_age_s": max_age_s},
        )
        cal = got["calibration"]
        return ReadoutCalibration(
            cal["device"],
            cal["calibration_id"],
            tuple(cal["qubits"]),
            tuple(cal["p01"]),
            tuple(cal["p10"]),
            int(cal["shots"]),
            float(cal["measured_at"]),
        ), int(got["spent"])

    def shutdown(self) -> None:
        """Close the connection (the farm goes on), once pipelined submits are sent."""
        if self._pipeline is not None:
            self._pipeline.close()
        self._closed = True


def _snapshot(d: dict[str, Any]) -> DeviceSnapshot:
    data = dict(d)
    data["status"] = DeviceStatus(data["status"])
    data["calibration"] = calibration_from_json(data["calibration"])
    data["process"] = None
    return DeviceSnapshot(**data)


def connect_http(
    url: str,
    token: str,
    *,
    retry_s: float = DEFAULT_RETRY_S,
    ca_file: str | None = None,
    pipeline: bool = True,
) -> RemoteRuntime:
    """A runtime over the gateway at ``url``; checks the token at once.

    Raises:
        AuthenticationError: the token is refused (the message says why).
        RuntimeNotRunningError: no gateway answers at ``url``.
    """
    rt = RemoteRuntime(
        HttpTransport(url, token, ca_file=ca_file), retry_s=_retry_s(retry_s), pipeline=pipeline
    )
    try:
        rt.whoami()
    except BaseException:
        rt.shutdown()
        raise
    return rt
