"""Logging set-up: plain text for people, JSON lines for log pipelines."""

from __future__ import annotations

import json
import logging
import sys
import time
from typing import TextIO

from sycri.observability.tracing import current_ids


class JsonFormatter(logging.Formatter):
    """One JSON object per line; trace ids are added by the tracing filter when present."""

    def format(self, record: logging.LogRecord) -> str:
        out = {
            "time": time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(record.created))
            + f".{int(record.msecs):03d}Z",
            "level": record.levelname.lower(),
            "logger": record.name,
            "msg": record.getMessage(),
        }
        for key in ("trace_id", "span_id"):
            value = getattr(record, key, None)
            if value:
                out[key] = value
        if record.exc_info:
            out["exception"] = self.formatException(record.exc_info)
        return json.dumps(out)


PLAIN = "%(asctime)s %(levelname)s %(name)s: %(message)s"


class PlainFormatter(logging.Formatter):
    """The plain line, with ``trace_id=... span_id=...`` appended inside a traced span."""

    def __init__(self) -> None:
        super().__init__(PLAIN)

    def format(self, record: logging.LogRecord) -> str:
        line = super().format(record)
        trace_id = getattr(record, "trace_id", None)
        if trace_id:
            line += f" trace_id={trace_id} span_id={getattr(record, 'span_id', '')}"
        return line


class TraceContextFilter(logging.Filter):
    """Puts the current OpenTelemetry trace and span ids on every record."""

    def filter(self, record: logging.LogRecord) -> bool:
        ids = current_ids()
        if ids and not getattr(record, "trace_id", None):
            record.trace_id, record.span_id = ids
        return True


def handler(fmt: str, stream: TextIO | None = None) -> logging.Handler:
    """A stream handler writing ``fmt`` (plain or json) lines with trace ids."""
    out = logging.StreamHandler(stream or sys.stderr)
    out.setFormatter(JsonFormatter() if fmt == "json" else PlainFormatter())
    out.addFilter(TraceContextFilter())
    return out


def configure(level: str, fmt: str) -> None:
    handler_ = handler(fmt)
    root = logging.getLogger()
    root.handlers[:] = [handler_]
    root.setLevel(level.upper())
    # grpc and urllib3 are chatty at debug level and say nothing a sycri user needs.
    for noisy in ("grpc", "urllib3", "asyncio"):
        logging.getLogger(noisy).setLevel(max(logging.INFO, root.level))
