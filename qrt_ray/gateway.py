"""The tenants' way in: an HTTP API served by Ray Serve in front of the scheduler.

Every request carries ``Authorization: Bearer <token>``; the gateway forwards it,
with the caller's address, to the scheduler's one door
(:meth:`SchedulerActor.gateway`), which checks the token, the scope, the tenant's
limits and budget, and scopes the call to the caller's tenant. The gateway holds no
state and no secret: it turns HTTP into calls and errors into status codes.

Status codes: 400 bad input, 401 bad token, 402 budget spent, 403 missing scope,
404 no such job (also another tenant's), 409 result not ready, 413 request too
large, 422 no device can run it, 429 a limit (``Retry-After`` says when), 503 the
farm is restarting (``Retry-After: 1``). Errors are ``{"error": {"type", "message",
...}}``. ``/openapi.json`` and ``/docs`` describe the API.
"""

import json
import logging
import math
from typing import Any

import ray
from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from ray import serve

from qrt_ray.access.tokens import split_token
from qrt_ray.errors import (
    AuthenticationError,
    BudgetExceededError,
    DeviceUnavailableError,
    FarmBusyError,
    JobNotFoundError,
    PermissionDeniedError,
    PlacementError,
    QrtError,
    QuotaExceededError,
    ResultNotReadyError,
    RuntimeNotRunningError,
    StoreUnavailableError,
    ValidationError,
)
from qrt_ray.names import DEFAULT_NAMESPACE, SCHEDULER_NAME, SERVE_CONTROLLER

logger = logging.getLogger("qrt.gateway")

APP_PREFIX = "qrt-gateway-"  # + the farm's namespace: one gateway a cluster, at "/"
DEFAULT_PORT = 8000
API_VERSION = "v1"
# the most a request body may hold (the intake gate checks each circuit again)
MAX_BODY_BYTES = 128 * 1024 * 1024

_STATUS: list[tuple[type[Exception], int]] = [
    (StoreUnavailableError, 503),
    (ResultNotReadyError, 409),
    (AuthenticationError, 401),
    (BudgetExceededError, 402),
    (PermissionDeniedError, 403),
    (JobNotFoundError, 404),
    (FarmBusyError, 503),
    (QuotaExceededError, 429),
    (PlacementError, 422),
    (ValidationError, 400),
    (RuntimeNotRunningError, 503),
    (DeviceUnavailableError, 503),
]


def error_response(exc: Exception) -> JSONResponse:
    """An error as the API answers it: status, body and headers."""
    status = next((code for cls, code in _STATUS if isinstance(exc, cls)), None)
    body: dict[str, Any] = {"type": type(exc).__name__, "message": str(exc)}
    headers: dict[str, str] = {}
    if status is None:
        if isinstance(exc, QrtError):
            status = 409
        else:  # never show internals to a tenant; the operator's log has them
            logger.error("gateway call failed: %s: %s", type(exc).__name__, exc)
            status, body = 500, {"type": "InternalError", "message": "internal error; try again"}
    if isinstance(exc, QuotaExceededError):
        body.update(limit=exc.limit, retry_after_s=max(0.001, round(exc.retry_after_s, 3)))
        headers["Retry-After"] = str(max(1, math.ceil(exc.retry_after_s)))
    if status == 401:
        headers["WWW-Authenticate"] = 'Bearer realm="qrt"'
    if status == 503:
        headers.setdefault("Retry-After", "1")
    return JSONResponse({"error": body}, status_code=status, headers=headers)


def bearer(request: Request) -> str:
    """The token of ``Authorization: Bearer <token>`` ("" when there is none)."""
    value = request.headers.get("authorization", "")
    scheme, _, token = value.partition(" ")
    return token.strip() if scheme.lower() == "bearer" else ""


async def read_json(request: Request, cap: int = MAX_BODY_BYTES) -> Any:
    """The request's JSON body, read at most ``cap`` bytes.

    Raises:
        ValidationError: too large (HTTP 413 is sent for that), not JSON, not UTF-8.
    """
    declared = request.headers.get("content-length")
    if declared is not None and declared.isdigit() and int(declared) > cap:
        raise _TooLarge(f"request body of {declared} bytes; at most {cap}")
    chunks, size = [], 0
    async for chunk in request.stream():
        size += len(chunk)
        if size > cap:
            raise _TooLarge(f"request body over {cap} bytes")
        chunks.append(chunk)
    try:
        return json.loads(b"".join(chunks) or b"{}")
    except RecursionError:
        raise ValidationError("body: JSON nested too deeply") from None
    except (UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise ValidationError(
            f"body: not JSON ({type(exc).__name__} at {getattr(exc, 'pos', '?')})"
        ) from None


class _TooLarge(ValidationError):
    pass


def spec_texts(body: Any, idempotency_key: str | None) -> list[str]:
    """The JobSpec JSON texts of a submit body: ``{"jobs": [spec, ...]}`` or
    ``{"job": spec}``; an ``Idempotency-Key`` header keys a single job that has none.

    Raises:
        ValidationError: any other shape.
    """
    if not isinstance(body, dict):
        raise ValidationError('body: expected {"jobs": [job, ...]} or {"job": job}')
    if "job" in body:
        jobs = [body["job"]]
    elif isinstance(body.get("jobs"), list):
        jobs = body["jobs"]
    else:
        raise ValidationError('body: expected {"jobs": [job, ...]} or {"job": job}')
    if not all(isinstance(j, dict) for j in jobs):
        raise ValidationError("jobs: each job is an object (a JobSpec)")
    if idempotency_key and len(jobs) == 1 and "idempotency_key" not in jobs[0]:
        jobs = [{**jobs[0], "idempotency_key": idempotency_key}]
    return [json.dumps(j) for j in jobs]


app = FastAPI(
    title="qrt-ray gateway",
    version=API_VERSION,
    description="Submit quantum circuits to a qrt-ray farm and follow your jobs. "
    "Authenticate with `Authorization: Bearer <token>` (`qrt tokens create`).",
)


@app.exception_handler(RequestValidationError)
async def _bad_parameters(request: Request, exc: RequestValidationError) -> JSONResponse:
    """A query or path parameter of the wrong type: 400 in the API's own error shape."""
    where = ", ".join(
        ".".join(str(p) for p in e.get("loc", ())[1:]) or "request" for e in exc.errors()[:5]
    )
    return error_response(ValidationError(f"{where}: not a valid value (see /docs)"))


@serve.deployment(
    name="gateway",
    ray_actor_options={"num_cpus": 0},
    max_ongoing_requests=2000,
)
@serve.ingress(app)
class Gateway:
    """The HTTP API of one farm (its scheduler found by name in ``namespace``)."""

    def __init__(self, namespace: str = DEFAULT_NAMESPACE) -> None:
        self._namespace = namespace
        self._scheduler: Any = None

    def _handle(self) -> Any:
        if self._scheduler is None:
            try:
                self._scheduler = ray.get_actor(SCHEDULER_NAME, namespace=self._namespace)
            except ValueError:
                raise RuntimeNotRunningError("the farm is not running") from None
        return self._scheduler

    async def _call(self, request: Request, operation: str, payload: dict[str, Any]) -> Any:
        source = request.client.host if request.client else "unknown"
        try:
            return await self._handle().gateway.remote(bearer(request), source, operation, payload)
        except ray.exceptions.RayTaskError as exc:
            cause = getattr(exc, "cause", None)
            raise cause if isinstance(cause, Exception) else exc from None
        except ray.exceptions.RayActorError:
            self._scheduler = None
            raise RuntimeNotRunningError("the farm's scheduler is restarting") from None

    async def _answer(
        self, request: Request, operation: str, payload: dict[str, Any], status: int = 200
    ) -> JSONResponse:
        try:
            out = await self._call(request, operation, payload)
        except _TooLarge as exc:
            return JSONResponse(
                {"error": {"type": "ValidationError", "message": str(exc)}}, status_code=413
            )
        except Exception as exc:
            return error_response(exc)
        return JSONResponse(out, status_code=status)

    @app.get("/v1/health", summary="Whether the gateway answers (no token needed)")
    async def health(self) -> dict[str, Any]:
        return {"ok": True, "api": API_VERSION}

    @app.get("/v1/whoami", summary="The tenant, user and scopes of your token")
    async def whoami(self, request: Request) -> JSONResponse:
        return await self._answer(request, "whoami", {})

    @app.post("/v1/jobs", status_code=201, summary="Submit jobs (OpenQASM circuits)")
    async def submit(self, request: Request) -> JSONResponse:
        if split_token(bearer(request)) is None:  # refused before its body is read
            return await self._answer(request, "submit", {})
        try:
            body = await read_json(request)
            texts = spec_texts(body, request.headers.get("idempotency-key"))
        except _TooLarge as exc:
            return JSONResponse(
                {"error": {"type": "ValidationError", "message": str(exc)}}, status_code=413
            )
        except ValidationError as exc:
            return error_response(exc)
        answer = await self._answer(request, "submit", {"jobs": texts}, status=201)
        if answer.status_code == 201:
            answer.body = json.dumps({"jobs": json.loads(answer.body)}).encode()
            answer.headers["content-length"] = str(len(answer.body))
        return answer

    @app.get("/v1/jobs", summary="Your jobs, newest first")
    async def jobs(
        self, request: Request, state: str | None = None, limit: int = 50, tenant: str | None = None
    ) -> JSONResponse:
        payload: dict[str, Any] = {"limit": limit}
        if state:
            payload["states"] = state.split(",")
        if tenant:
            payload["tenant"] = tenant
        return await self._answer(request, "jobs", payload)

    @app.get("/v1/jobs/{job_id}", summary="One job: state, device, placement, error")
    async def job(self, request: Request, job_id: str) -> JSONResponse:
        return await self._answer(request, "job", {"job_id": job_id})

    @app.get("/v1/jobs/{job_id}/events", summary="A job's lifecycle transitions")
    async def events(self, request: Request, job_id: str) -> JSONResponse:
        return await self._answer(request, "events", {"job_id": job_id})

    @app.get("/v1/jobs/{job_id}/result", summary="A DONE job's result and its sha256")
    async def result(self, request: Request, job_id: str) -> JSONResponse:
        answer = await self._answer(request, "results", {"job_ids": [job_id]})
        if answer.status_code == 200:
            answer.body = json.dumps(json.loads(answer.body)[0]).encode()
            answer.headers["content-length"] = str(len(answer.body))
        return answer

    @app.post("/v1/results", summary="Results of many DONE jobs")
    async def results(self, request: Request) -> JSONResponse:
        return await self._forward(request, "results")

    @app.post("/v1/jobs/{job_id}/cancel", summary="Cancel a job that is not final")
    async def cancel(self, request: Request, job_id: str) -> JSONResponse:
        return await self._answer(request, "cancel", {"job_id": job_id})

    @app.delete("/v1/jobs/{job_id}", summary="Cancel a job (as POST .../cancel)")
    async def delete(self, request: Request, job_id: str) -> JSONResponse:
        return await self._answer(request, "cancel", {"job_id": job_id})

    @app.post("/v1/wait", summary="Wait (at most 20 s a call) for jobs to be final")
    async def wait(self, request: Request) -> JSONResponse:
        return await self._forward(request, "wait")

    @app.post("/v1/estimate", summary="What a job would get on each device")
    async def estimate(self, request: Request) -> JSONResponse:
        return await self._forward(request, "estimate")

    @app.get("/v1/usage", summary="Your month: billed, held, limits, budget alerts")
    async def usage(self, request: Request, month: str | None = None) -> JSONResponse:
        return await self._answer(request, "usage", {"month": month} if month else {})

    @app.post("/v1/readout", summary="A device's readout errors (billed when measured)")
    async def readout(self, request: Request) -> JSONResponse:
        return await self._forward(request, "readout")

    @app.get("/v1/mitigation", summary="The post-processing version of each method served")
    async def mitigation(self, request: Request) -> JSONResponse:
        return await self._answer(request, "mitigation", {})

    @app.get("/v1/devices", summary="The farm's devices and their calibrations")
    async def devices(self, request: Request) -> JSONResponse:
        return await self._answer(request, "devices", {})

    async def _forward(self, request: Request, operation: str) -> JSONResponse:
        if split_token(bearer(request)) is None:  # refused before its body is read
            return await self._answer(request, operation, {})
        try:
            body = await read_json(request)
        except _TooLarge as exc:
            return JSONResponse(
                {"error": {"type": "ValidationError", "message": str(exc)}}, status_code=413
            )
        except ValidationError as exc:
            return error_response(exc)
        if not isinstance(body, dict):
            return error_response(ValidationError("body: expected a JSON object"))
        return await self._answer(request, operation, body)


def start_gateway(
    namespace: str = DEFAULT_NAMESPACE,
    *,
    host: str = "127.0.0.1",
    port: int = DEFAULT_PORT,
    tls_cert: str | None = None,
    tls_key: str | None = None,
) -> str:
    """Serve the gateway on this Ray cluster (loopback unless ``host`` says otherwise);
    returns its URL. Ray must be initialised (the operator's connection).

    Raises:
        ValidationError: only one of ``tls_cert`` and ``tls_key``.
    """
    if bool(tls_cert) != bool(tls_key):
        raise ValidationError("tls: give both --tls-cert and --tls-key, or neither")
    running = _serving_at()
    if running is not None and running != (host, port):
        raise ValidationError(
            f"Ray Serve already serves HTTP on this cluster at {running[0]}:{running[1]}; "
            f"start the gateway there (--host {running[0]} --port {running[1]}), or stop "
            "Serve first (`serve shutdown`)"
        )
    options: dict[str, Any] = {"host": host, "port": port}
    if tls_cert:
        options.update(ssl_certfile=tls_cert, ssl_keyfile=tls_key)
    # no per-request access log: it costs each request a write in two processes, and
    # the scheduler counts and audits what matters
    quiet = {"enable_access_log": False, "log_level": "WARNING"}
    serve.start(http_options=options, detached=True, logging_config=quiet)
    serve.run(
        Gateway.bind(namespace),
        name=APP_PREFIX + namespace,
        route_prefix="/",
        blocking=False,
        logging_config=quiet,
    )
    scheme = "https" if tls_cert else "http"
    return f"{scheme}://{host}:{port}"


def _serving_at() -> tuple[str, int] | None:
    """(host, port) of the HTTP proxy of a Serve already running on this cluster."""
    try:
        controller = ray.get_actor(SERVE_CONTROLLER, namespace="serve")
    except ValueError:
        return None
    config = ray.get(controller.get_http_config.remote(), timeout=30)
    return config.host, config.port


def stop_gateway(namespace: str = DEFAULT_NAMESPACE) -> bool:
    """Stop the gateway of the farm in ``namespace`` if it runs (Serve itself stays
    for others); returns whether one ran. Ray must be initialised."""
    name = APP_PREFIX + namespace
    try:
        running = name in serve.status().applications
    except Exception:  # Serve was never started on this cluster
        return False
    if running:
        serve.delete(name)
    return running
