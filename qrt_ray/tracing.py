"""One OpenTelemetry trace per job, across the processes that work on it.

A job's trace id and root span id are derived from its job id, so every process that
touches the job (scheduler, compile task, device actor, a client's mitigation tasks)
joins the same trace, and a scheduler restarted halfway through a job goes on with
it. What crosses a process boundary is a W3C ``traceparent`` string; its parent is
the job's root span. The scheduler writes the stage spans (queue wait, compile,
device wait, run, post-processing) from the times it stores, and the root span
(``qrt.job``) when the job ends; the processes that do the work add live spans
(compile task, device run, mitigation task) under it.

Tracing is off unless an exporter is configured, so it costs nothing by default:

- ``QRT_OTLP_ENDPOINT``: an OTLP/HTTP collector (``http://127.0.0.1:4318/v1/traces``);
  needs ``opentelemetry-exporter-otlp-proto-http`` (``pip install 'qrt-ray[otlp]'``).
- ``QRT_TRACE_FILE``: spans as JSON lines appended to this file (one per span).

The farm hands these to its actors; ``qrt trace JOB`` draws a job's waterfall from
the store without any of them.
"""

from __future__ import annotations

import contextlib
import contextvars
import hashlib
import json
import logging
import os
import threading
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from opentelemetry import trace
from opentelemetry.context import Context
from opentelemetry.sdk.resources import Resource
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import (
    BatchSpanProcessor,
    SpanExporter,
    SpanExportResult,
)
from opentelemetry.sdk.trace.id_generator import IdGenerator, RandomIdGenerator
from opentelemetry.trace import NonRecordingSpan, SpanContext, TraceFlags

logger = logging.getLogger("qrt.tracing")

ENV_OTLP = "QRT_OTLP_ENDPOINT"
ENV_FILE = "QRT_TRACE_FILE"
SERVICE_NAME = "qrt-ray"
ROOT_SPAN = "qrt.job"

_lock = threading.Lock()
_configured: TracingConfig | None = None
_tracer: trace.Tracer = trace.NoOpTracer()
_provider: TracerProvider | None = None
# ids the next span started with no parent must take (the job's root span)
_forced: contextvars.ContextVar[tuple[int, int] | None] = contextvars.ContextVar(
    "qrt_forced_ids", default=None
)


@dataclass(frozen=True, slots=True)
class TracingConfig:
    """Where spans go: an OTLP/HTTP endpoint, a JSON-lines file, both or neither."""

    otlp_endpoint: str = ""
    trace_file: str = ""

    @property
    def enabled(self) -> bool:
        """Whether any exporter is configured."""
        return bool(self.otlp_endpoint or self.trace_file)

    @classmethod
    def from_env(cls, env: Mapping[str, str] | None = None) -> TracingConfig:
        """The configuration in ``env`` (default: this process's environment)."""
        env = os.environ if env is None else env
        return cls(env.get(ENV_OTLP, "").strip(), env.get(ENV_FILE, "").strip())

    def env(self) -> dict[str, str]:
        """As environment variables, for the processes the farm starts."""
        out = {}
        if self.otlp_endpoint:
            out[ENV_OTLP] = self.otlp_endpoint
        if self.trace_file:
            out[ENV_FILE] = self.trace_file
        return out


# == ids ===========================================================================


def job_ids(job_id: str) -> tuple[int, int]:
    """(trace id, root span id) of a job: the same in every process."""
    digest = hashlib.sha256(f"qrt-trace:{job_id}".encode()).digest()
    trace_id = int.from_bytes(digest[:16], "big") or 1
    span_id = int.from_bytes(digest[16:24], "big") or 1
    return trace_id, span_id


def job_trace_id(job_id: str) -> str:
    """The job's trace id as 32 hex digits (what a trace backend searches for)."""
    return f"{job_ids(job_id)[0]:032x}"


def job_traceparent(job_id: str) -> str:
    """The W3C ``traceparent`` of the job's root span."""
    trace_id, span_id = job_ids(job_id)
    return f"00-{trace_id:032x}-{span_id:016x}-01"


def context_of(traceparent: str) -> Context:
    """A context whose current span is the one ``traceparent`` names (an empty context
    when it does not parse: a span then starts a trace of its own)."""
    parts = traceparent.split("-")
    try:
        if len(parts) != 4 or len(parts[1]) != 32 or len(parts[2]) != 16:
            raise ValueError(traceparent)
        ctx = SpanContext(
            int(parts[1], 16), int(parts[2], 16), is_remote=True, trace_flags=TraceFlags(1)
        )
    except ValueError:
        return Context()
    return trace.set_span_in_context(NonRecordingSpan(ctx), Context())


# == setup =========================================================================


def configure(config: TracingConfig | None = None) -> bool:
    """Install the tracer provider of this process (once; later calls keep the first
    configuration). Returns whether tracing is on."""
    global _configured, _tracer, _provider
    config = TracingConfig.from_env() if config is None else config
    with _lock:
        if _configured is not None or not config.enabled:
            return enabled()
        provider = TracerProvider(
            resource=Resource.create({"service.name": SERVICE_NAME}), id_generator=_JobIds()
        )
        if config.trace_file:
            provider.add_span_processor(
                BatchSpanProcessor(_FileExporter(config.trace_file), schedule_delay_millis=500)
            )
        if config.otlp_endpoint:
            exporter = _otlp(config.otlp_endpoint)
            if exporter is not None:
                provider.add_span_processor(BatchSpanProcessor(exporter))
        _tracer = provider.get_tracer("qrt_ray")
        _provider = provider
        _configured = config
        return True


def enabled() -> bool:
    """Whether this process exports spans."""
    return _configured is not None


def flush(timeout_s: float = 5.0) -> None:
    """Export the spans still buffered (a process about to exit, a test)."""
    if _provider is not None:
        _provider.force_flush(int(timeout_s * 1000))


def shutdown() -> None:
    """Export what is buffered and stop tracing in this process (a later
    :func:`configure` may start it again, elsewhere)."""
    global _configured, _tracer, _provider
    with _lock:
        if _provider is not None:
            _provider.shutdown()
        _configured, _provider, _tracer = None, None, trace.NoOpTracer()


def _otlp(endpoint: str) -> Any:
    try:
        from opentelemetry.exporter.otlp.proto.http.trace_exporter import OTLPSpanExporter
    except ImportError:
        logger.warning(
            "%s is set but the OTLP exporter is not installed: pip install 'qrt-ray[otlp]'",
            ENV_OTLP,
        )
        return None
    return OTLPSpanExporter(endpoint=endpoint)


# == spans =========================================================================


def _ns(t: float) -> int:
    return int(t * 1e9)


def stage_span(
    job_id: str, name: str, start_s: float, end_s: float, attributes: Mapping[str, Any]
) -> None:
    """Record a finished stage of a job (times in unix seconds) under its root span."""
    if _configured is not None:
        span_between(job_traceparent(job_id), name, start_s, end_s, attributes)


def span_between(
    traceparent: str | None,
    name: str,
    start_s: float,
    end_s: float,
    attributes: Mapping[str, Any],
) -> None:
    """Record work that ran from ``start_s`` to ``end_s`` under ``traceparent``."""
    if _configured is None or not traceparent:
        return
    span = _tracer.start_span(
        name,
        context=context_of(traceparent),
        start_time=_ns(start_s),
        attributes=_clean(attributes),
    )
    span.end(end_time=_ns(max(start_s, end_s)))


def job_span(job_id: str, start_s: float, end_s: float, attributes: Mapping[str, Any]) -> None:
    """Record the job's root span (submission to final state), with the job's ids."""
    if _configured is None:
        return
    token = _forced.set(job_ids(job_id))
    try:
        span = _tracer.start_span(
            ROOT_SPAN, context=Context(), start_time=_ns(start_s), attributes=_clean(attributes)
        )
    finally:
        _forced.reset(token)
    span.end(end_time=_ns(max(start_s, end_s)))


@contextlib.contextmanager
def live_span(
    traceparent: str | None, name: str, attributes: Mapping[str, Any] | None = None
) -> Iterator[Any]:
    """A span around work done now, under ``traceparent`` (a no-op when tracing is
    off or there is no parent)."""
    if _configured is None or not traceparent:
        yield None
        return
    with _tracer.start_as_current_span(
        name, context=context_of(traceparent), attributes=_clean(attributes or {})
    ) as span:
        yield span


def _clean(attributes: Mapping[str, Any]) -> dict[str, Any]:
    """Attributes OpenTelemetry accepts: no None, sequences of plain values."""
    out: dict[str, Any] = {}
    for k, v in attributes.items():
        if v is None:
            continue
        if isinstance(v, (str, bool, int, float)):
            out[k] = v
        elif isinstance(v, Sequence):
            out[k] = [str(x) for x in v]
        else:
            out[k] = str(v)
    return out


def traced_call(
    traceparent: str | None,
    name: str,
    config: TracingConfig | None,
    fn: Any,
    *args: Any,
    **kwargs: Any,
) -> Any:
    """``fn(*args, **kwargs)`` inside a span under ``traceparent``: how a Ray task
    joins the trace of the job it works for (``config`` travels with the call, so the
    worker exports where the caller does)."""
    if config is not None and config.enabled:
        configure(config)
    with live_span(traceparent, name):
        return fn(*args, **kwargs)


# == the SDK plumbing ==============================================================


class _JobIds(IdGenerator):
    """Random ids, except for a job's root span, which takes the job's own."""

    def __init__(self) -> None:
        self._random = RandomIdGenerator()

    def generate_span_id(self) -> int:
        forced = _forced.get()
        return forced[1] if forced else self._random.generate_span_id()

    def generate_trace_id(self) -> int:
        forced = _forced.get()
        return forced[0] if forced else self._random.generate_trace_id()


class _FileExporter(SpanExporter):
    """Spans as JSON lines appended to a file: one ``write`` per line, so processes
    sharing the file never interleave within a line."""

    def __init__(self, path: str) -> None:
        self._path = path

    def export(self, spans: Sequence[Any]) -> SpanExportResult:
        lines = "".join(json.dumps(_span_dict(s), separators=(",", ":")) + "\n" for s in spans)
        try:
            fd = os.open(self._path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o600)
            try:
                os.write(fd, lines.encode())
            finally:
                os.close(fd)
        except OSError:
            logger.warning("could not write spans to %s", self._path, exc_info=True)
            return SpanExportResult.FAILURE
        return SpanExportResult.SUCCESS

    def shutdown(self) -> None:
        return None

    def force_flush(self, timeout_millis: int = 30000) -> bool:
        return True


def _span_dict(span: Any) -> dict[str, Any]:
    ctx = span.get_span_context()
    parent = span.parent
    return {
        "name": span.name,
        "trace_id": f"{ctx.trace_id:032x}",
        "span_id": f"{ctx.span_id:016x}",
        "parent_id": f"{parent.span_id:016x}" if parent is not None else None,
        "start_ns": span.start_time,
        "end_ns": span.end_time,
        "attributes": dict(span.attributes or {}),
        "pid": os.getpid(),
    }
