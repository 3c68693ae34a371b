"""Structured logging: JSON lines (or text) carrying the request and trace ids, never payloads or tokens."""

from __future__ import annotations

import logging
import re
import sys
import time
from typing import Any

import orjson

from dash_stream.server.errors import request_id_var
from dash_stream.telemetry import current_trace_ids

# the server decodes `?tok%65n=` as `token` too, so percent-encoded names are matched as well
_TOKEN_IN_URL = re.compile(
    r"([?&](?:(?:t|%74)(?:o|%6f)(?:k|%6b)(?:e|%65)(?:n|%6e)|access_token)=)[^&\s\"']+", re.IGNORECASE
)
# whatever carried it: a compact JWT (its header is JSON, so base64url of `{"`) never reaches the log
_JWT = re.compile(r"\beyJ[A-Za-z0-9_-]{4,}\.[A-Za-z0-9_-]{4,}\.[A-Za-z0-9_-]*")
# websockets' debug log of a binary frame is a hex dump of its first and last bytes: a MessagePack
# `auth` frame's token would show there
_BINARY_DUMP = re.compile(r"(\bBINARY )[0-9a-f]{2}(?: [0-9a-f]{2}| \.\.\.)*")
# uvicorn's websockets logs request headers and frames at debug level: bearer credentials and the
# `token` of auth/refresh frames must not reach the log either
_BEARER = re.compile(r"(\bbearer\s+)[^\s\"',]+", re.IGNORECASE)
_TOKEN_IN_JSON = re.compile(r'("token"\s*:\s*")[^"]*')
_STANDARD = set(logging.LogRecord("", 0, "", 0, "", None, None).__dict__) | {"message", "asctime"}
_TRACE_FIELDS = frozenset({"trace_id", "span_id", "trace"})


def redact(text: str) -> str:
    """Replace token values in URLs, bearer credentials and JSON `token` fields with [redacted]."""
    text = _TOKEN_IN_URL.sub(r"\1[redacted]", text)
    text = _BEARER.sub(r"\1[redacted]", text)
    text = _JWT.sub("[redacted-jwt]", text)
    text = _BINARY_DUMP.sub(r"\1[redacted]", text)
    return _TOKEN_IN_JSON.sub(r"\1[redacted]", text)


class RedactFilter(logging.Filter):
    """Scrubs `?token=` from every record (uvicorn logs WebSocket paths with their query string)."""

    def filter(self, record: logging.LogRecord) -> bool:
        record.request_id = request_id_var.get()
        ids = current_trace_ids()  # the current span's, else the caller's traceparent
        record.trace_id, record.span_id = ids if ids is not None else (None, None)
        record.trace = f" trace_id={ids[0]} span_id={ids[1]}" if ids is not None else ""
        if record.args:
            # format first: header names and values, and frames, arrive as separate or non-str args
            try:
                message = record.getMessage()
            except Exception:  # a broken format string is reported by logging itself
                return True
            record.msg, record.args = redact(message), None
        elif isinstance(record.msg, str):
            record.msg = redact(record.msg)
        return True


class JsonFormatter(logging.Formatter):
    """One JSON object per line."""

    def format(self, record: logging.LogRecord) -> str:
        doc: dict[str, Any] = {
            "ts": self.formatTime(record, "%Y-%m-%dT%H:%M:%S") + f".{int(record.msecs):03d}Z",
            "level": record.levelname.lower(),
            "logger": record.name,
            "msg": record.getMessage(),
            "request_id": getattr(record, "request_id", request_id_var.get()),
        }
        trace_id = getattr(record, "trace_id", None)
        if trace_id is not None:
            doc["trace_id"] = trace_id
            doc["span_id"] = getattr(record, "span_id", None)
        for key, value in record.__dict__.items():
            if key not in _STANDARD and key not in doc and key not in _TRACE_FIELDS:
                doc[key] = value
        if record.exc_info:
            doc["exc"] = self.formatException(record.exc_info)
        return orjson.dumps(doc, default=str).decode()


class QuietTelemetryFilter(logging.Filter):
    """Lets one record per message template through per minute from OpenTelemetry's own loggers.

    An exporter whose collector is down logs every failed export; that must not flood the log.
    """

    def __init__(self, name: str = "", interval_s: float = 60.0, max_templates: int = 256) -> None:
        super().__init__(name)
        self.interval_s = interval_s
        self.max_templates = max_templates
        self._last: dict[tuple[str, str], float] = {}

    def filter(self, record: logging.LogRecord) -> bool:
        if not record.name.startswith("opentelemetry"):
            return True
        key = (record.name, str(record.msg))
        now = time.monotonic()
        last = self._last.get(key)
        if last is not None and now - last < self.interval_s:
            return False
        if len(self._last) >= self.max_templates:
            self._last.clear()
        self._last[key] = now
        return True


def setup_logging(fmt: str = "text", level: str = "info") -> dict[str, Any]:
    """Configure the root and uvicorn loggers; returns a dictConfig for uvicorn's `log_config`."""
    formatter = "json" if fmt == "json" else "text"
    return {
        "version": 1,
        "disable_existing_loggers": False,
        "filters": {"redact": {"()": RedactFilter}, "quiet_telemetry": {"()": QuietTelemetryFilter}},
        "formatters": {
            "json": {"()": JsonFormatter},
            "text": {"format": "%(asctime)s %(levelname)-7s %(name)s [%(request_id)s%(trace)s] %(message)s"},
        },
        "handlers": {
            "stderr": {
                "class": "logging.StreamHandler",
                "stream": sys.stderr,
                "formatter": formatter,
                "filters": ["quiet_telemetry", "redact"],
            },
        },
        "loggers": {
            "": {"handlers": ["stderr"], "level": level.upper()},
            "uvicorn": {"handlers": ["stderr"], "level": level.upper(), "propagate": False},
            # uvicorn logs every WebSocket open at info: too chatty for thousands of dashboards
            "uvicorn.error": {
                "handlers": ["stderr"],
                "level": "DEBUG" if level.lower() == "debug" else "WARNING",
                "propagate": False,
            },
            "uvicorn.access": {"handlers": ["stderr"], "level": "WARNING", "propagate": False},
        },
    }
