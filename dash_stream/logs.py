"""Structured logging: JSON lines (or text) carrying the request id, never payloads or tokens."""

from __future__ import annotations

import logging
import re
import sys
from typing import Any

import orjson

from dash_stream.server.errors import request_id_var

_TOKEN_IN_URL = re.compile(r"([?&](?:token|access_token)=)[^&\s\"']+", re.IGNORECASE)
# uvicorn's websockets logs request headers and frames at debug level: bearer credentials and the
# `token` of auth/refresh frames must not reach the log either
_BEARER = re.compile(r"(\bbearer\s+)[^\s\"',]+", re.IGNORECASE)
_TOKEN_IN_JSON = re.compile(r'("token"\s*:\s*")[^"]*')
_STANDARD = set(logging.LogRecord("", 0, "", 0, "", None, None).__dict__) | {"message", "asctime"}


def redact(text: str) -> str:
    """Replace token values in URLs, bearer credentials and JSON `token` fields with [redacted]."""
    text = _TOKEN_IN_URL.sub(r"\1[redacted]", text)
    text = _BEARER.sub(r"\1[redacted]", text)
    return _TOKEN_IN_JSON.sub(r"\1[redacted]", text)


class RedactFilter(logging.Filter):
    """Scrubs `?token=` from every record (uvicorn logs WebSocket paths with their query string)."""

    def filter(self, record: logging.LogRecord) -> bool:
        record.request_id = request_id_var.get()
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
        for key, value in record.__dict__.items():
            if key not in _STANDARD and key not in doc:
                doc[key] = value
        if record.exc_info:
            doc["exc"] = self.formatException(record.exc_info)
        return orjson.dumps(doc, default=str).decode()


def setup_logging(fmt: str = "text", level: str = "info") -> dict[str, Any]:
    """Configure the root and uvicorn loggers; returns a dictConfig for uvicorn's `log_config`."""
    formatter = "json" if fmt == "json" else "text"
    return {
        "version": 1,
        "disable_existing_loggers": False,
        "filters": {"redact": {"()": RedactFilter}},
        "formatters": {
            "json": {"()": JsonFormatter},
            "text": {"format": "%(asctime)s %(levelname)-7s %(name)s [%(request_id)s] %(message)s"},
        },
        "handlers": {
            "stderr": {
                "class": "logging.StreamHandler",
                "stream": sys.stderr,
                "formatter": formatter,
                "filters": ["redact"],
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
