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

Spans are built as finished OpenTelemetry SDK spans (``ReadableSpan``) from the times
they cover and handed to batch span processors: about 10 µs each on the scheduler's
loop, where starting and ending them through a tracer cost 37 µs (measured with
``benchmarks/observability.py`` in mind: ten spans a job at 200 jobs a second).
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import logging
import os
import random
import threading
import time
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from opentelemetry.sdk.resources import Resource
from opentelemetry.sdk.trace import ReadableSpan
from opentelemetry.sdk.trace.export import (
    BatchSpanProcessor,
    SpanExporter,
    SpanExportResult,
)
from opentelemetry.trace import SpanContext, SpanKind, TraceFlags

logger = logging.getLogger("qrt.tracing")

ENV_OTLP = "QRT_OTLP_ENDPOINT"
ENV_FILE = "QRT_TRACE_FILE"
SERVICE_NAME = "qrt-ray"
ROOT_SPAN = "qrt.job"
# spans buffered per exporter before the oldest are dropped (a slow collector must
# not grow the scheduler's memory without bound)
QUEUE_SIZE = 65_536

_lock = threading.Lock()
_configured: TracingConfig | None = None
_processors: list[BatchSpanProcessor] = []
_resource: Resource | None = None
_SAMPLED = TraceFlags(TraceFlags.SAMPLED)


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


def parse_traceparent(traceparent: str) -> tuple[int, int] | None:
    """(trace id, parent span id) of a W3C ``traceparent``; None if it does not parse
    (a span then starts a trace of its own)."""
    parts = traceparent.split("-") if len(traceparent) <= 64 else []
    if len(parts) != 4 or len(parts[1]) != 32 or len(parts[2]) != 16:
        return None
    try:
        trace_id, span_id = int(parts[1], 16), int(parts[2], 16)
    except ValueError:
        return None
    return (trace_id, span_id) if trace_id and span_id else None


# == setup =========================================================================


def configure(config: TracingConfig | None = None) -> bool:
    """Start exporting this process's spans (once; later calls keep the first
    configuration). Returns whether tracing is on."""
    global _configured, _resource
    config = TracingConfig.from_env() if config is None else config
    with _lock:
        if _configured is not None or not config.enabled:
            return _configured is not None
        exporters: list[SpanExporter] = []
        if config.trace_file:
            exporters.append(_FileExporter(config.trace_file))
        if config.otlp_endpoint:
            otlp = _otlp(config.otlp_endpoint)
            if otlp is not None:
                exporters.append(otlp)
        _processors[:] = [
            BatchSpanProcessor(
                e, max_queue_size=QUEUE_SIZE, schedule_delay_millis=500, max_export_batch_size=2048
            )
            for e in exporters
        ]
        _resource = Resource.create({"service.name": SERVICE_NAME})
        _configured = config
        return True


def enabled() -> bool:
    """Whether this process exports spans."""
    return _configured is not None


def current() -> TracingConfig | None:
    """Where this process exports spans (None: it does not): what a Ray task it
    starts must be told, so the task exports there too."""
    return _configured


def flush(timeout_s: float = 5.0) -> None:
    """Export the spans still buffered (a process about to exit, a test)."""
    for p in list(_processors):
        p.force_flush(int(timeout_s * 1000))


def shutdown() -> None:
    """Export what is buffered and stop tracing in this process (a later
    :func:`configure` may start it again, elsewhere)."""
    global _configured
    with _lock:
        for p in _processors:
            p.shutdown()
        _processors.clear()
        _configured = None


def _otlp(endpoint: str) -> SpanExporter | None:
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


def _emit(
    trace_id: int,
    span_id: int,
    parent_id: int | None,
    name: str,
    start_ns: int,
    end_ns: int,
    attributes: Mapping[str, Any],
) -> None:
    """Hand one finished span to every exporter's batch processor."""
    parent = SpanContext(trace_id, parent_id, False, _SAMPLED) if parent_id else None
    span = ReadableSpan(
        name=name,
        context=SpanContext(trace_id, span_id, False, _SAMPLED),
        parent=parent,
        resource=_resource,
        attributes=_clean(attributes),
        kind=SpanKind.INTERNAL,
        start_time=start_ns,
        end_time=max(start_ns, end_ns),
    )
    for p in _processors:
        p.on_end(span)


def span_between(
    traceparent: str | None,
    name: str,
    start_s: float,
    end_s: float,
    attributes: Mapping[str, Any],
) -> None:
    """Record work that ran from ``start_s`` to ``end_s`` (unix seconds) under
    ``traceparent`` (a no-op when tracing is off or there is no parent)."""
    if _configured is None or not traceparent:
        return
    parent = parse_traceparent(traceparent)
    if parent is None:
        _emit(
            random.getrandbits(128) or 1,
            random.getrandbits(64) or 1,
            None,
            name,
            _ns(start_s),
            _ns(end_s),
            attributes,
        )
        return
    _emit(
        parent[0],
        random.getrandbits(64) or 1,
        parent[1],
        name,
        _ns(start_s),
        _ns(end_s),
        attributes,
    )


def stage_span(
    job_id: str, name: str, start_s: float, end_s: float, attributes: Mapping[str, Any]
) -> None:
    """Record a finished stage of a job under its root span."""
    if _configured is None:
        return
    trace_id, root = job_ids(job_id)
    _emit(trace_id, random.getrandbits(64) or 1, root, name, _ns(start_s), _ns(end_s), attributes)


def job_span(job_id: str, start_s: float, end_s: float, attributes: Mapping[str, Any]) -> None:
    """Record the job's root span (submission to final state), with the job's ids."""
    if _configured is None:
        return
    trace_id, root = job_ids(job_id)
    _emit(trace_id, root, None, ROOT_SPAN, _ns(start_s), _ns(end_s), attributes)


@contextlib.contextmanager
def live_span(
    traceparent: str | None, name: str, attributes: Mapping[str, Any] | None = None
) -> Iterator[dict[str, Any]]:
    """Time the work inside as a span under ``traceparent``; the dict it yields takes
    more attributes (a no-op when tracing is off or there is no parent)."""
    extra: dict[str, Any] = dict(attributes or {})
    start = time.time()
    try:
        yield extra
    except BaseException as exc:
        extra["error"] = type(exc).__name__
        raise
    finally:
        span_between(traceparent, name, start, time.time(), extra)


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
    with live_span(traceparent, name, {"qrt.pid": os.getpid()}):
        return fn(*args, **kwargs)


# == the file exporter =============================================================


class _FileExporter(SpanExporter):
    """Spans as JSON lines appended to a file: one ``write`` per batch, so processes
    sharing the file never interleave within a line."""

    def __init__(self, path: str) -> None:
        self._path = path

    def export(self, spans: Sequence[ReadableSpan]) -> SpanExportResult:
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


def _span_dict(span: ReadableSpan) -> dict[str, Any]:
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
