"""Log lines as text (default) or as one JSON object per line.

``qrt --log-format json`` or ``QRT_LOG_FORMAT=json`` (which the farm hands to its
actors) turns on JSON. A line about a job carries its job id, tenant, device and
calibration id as fields of their own (``None`` where the job has none yet), so a
log store can find every line of a job, a tenant or a device without parsing text:

    logger.info("job %s failed", job_id, extra=job_fields(job_id, tenant, device, cal))
"""

from __future__ import annotations

import json
import logging
import os
import sys
import time
from typing import Any

ENV_FORMAT = "QRT_LOG_FORMAT"
FORMATS = ("text", "json")
JOB_FIELDS = ("job_id", "tenant", "device", "calibration_id")
TEXT_FORMAT = "%(levelname)s %(name)s: %(message)s"
# the loggers of the runtime ("qrt.scheduler", "qrt.device", ...)
ROOT = "qrt"


def job_fields(
    job_id: str, tenant: str | None, device: str | None, calibration_id: str | None
) -> dict[str, Any]:
    """The ``extra=`` of a log call about a job."""
    return {"job_id": job_id, "tenant": tenant, "device": device, "calibration_id": calibration_id}


class JsonFormatter(logging.Formatter):
    """One JSON object per record: time, level, logger, message, the job's fields
    when the record is about a job, and the exception text when there is one."""

    def format(self, record: logging.LogRecord) -> str:
        out: dict[str, Any] = {
            "ts": time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(record.created))
            + f".{int(record.msecs):03d}Z",
            "level": record.levelname,
            "logger": record.name,
            "message": record.getMessage(),
        }
        if hasattr(record, "job_id"):
            for name in JOB_FIELDS:
                out[name] = getattr(record, name, None)
        if record.exc_info:
            out["exception"] = self.formatException(record.exc_info)
        return json.dumps(out, default=str)


def check_format(value: str) -> str:
    """``value`` if it names a log format.

    Raises:
        ValueError: it does not, with the formats there are.
    """
    if value not in FORMATS:
        raise ValueError(f"log format {value[:40]!r} is not one of: {', '.join(FORMATS)}")
    return value


def setup(log_format: str | None = None, level: int = logging.WARNING) -> None:
    """Log to stderr in ``log_format`` (default: ``$QRT_LOG_FORMAT``, else text)."""
    chosen = check_format(log_format or os.environ.get(ENV_FORMAT) or "text")
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(JsonFormatter() if chosen == "json" else logging.Formatter(TEXT_FORMAT))
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(level)


def setup_actor() -> None:
    """In a farm process: JSON lines for the runtime's loggers when the operator asked
    for them (Ray keeps its own handlers for everything else)."""
    if os.environ.get(ENV_FORMAT) != "json":
        return
    logger = logging.getLogger(ROOT)
    if any(isinstance(h.formatter, JsonFormatter) for h in logger.handlers):
        return
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(JsonFormatter())
    logger.addHandler(handler)
    logger.setLevel(logging.INFO)
    logger.propagate = False
