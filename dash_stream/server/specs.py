"""`/openapi.json` (HTTP API) and `/asyncapi.json` (the WebSocket contract), built from the wire structs."""

from __future__ import annotations

from functools import cache
from typing import Any

import msgspec

from dash_stream import __version__
from dash_stream.events import Event, EventIn
from dash_stream.protocol import frames as f
from dash_stream.state import SwarmView

_REF = "#/components/schemas/{name}"


def _error_schema() -> dict[str, Any]:
    return {
        "type": "object",
        "required": ["error"],
        "properties": {
            "error": {
                "type": "object",
                "required": ["code", "message", "request_id"],
                "properties": {
                    "code": {
                        "type": "string",
                        "enum": [
                            "bad_request",
                            "unauthorized",
                            "forbidden",
                            "not_found",
                            "conflict",
                            "too_large",
                            "rate_limited",
                            "unavailable",
                            "internal",
                        ],
                    },
                    "message": {"type": "string"},
                    "request_id": {"type": "string"},
                    "retry_after_ms": {"type": "integer"},
                },
            }
        },
    }


def _errors(*statuses: int) -> dict[str, Any]:
    ref = {"$ref": "#/components/schemas/Error"}
    return {
        str(s): {"description": "error", "content": {"application/json": {"schema": ref}}} for s in statuses
    }


def _swarm_list_schema() -> dict[str, Any]:
    return {
        "type": "object",
        "required": ["swarms", "cursor", "time"],
        "properties": {
            "swarms": {"type": "array", "items": {"$ref": _REF.format(name="SwarmView")}},
            "cursor": {"type": "string", "description": "the fold position the state is taken at"},
            "time": {"type": "number", "description": "server time (unix seconds) the rates end at"},
        },
    }


def _swarm_paths() -> dict[str, Any]:
    """`GET /v1/swarms` and `GET /v1/swarms/{swarm_id}`: the live swarm state (docs/protocol.md 8)."""
    bearer: list[dict[str, list[str]]] = [{"bearer": []}]
    agents = {
        "name": "agents",
        "in": "query",
        "schema": {"type": "boolean", "default": True},
        "description": "false leaves each swarm's agent list empty (counts stay)",
    }
    one = {
        "allOf": [
            {"$ref": _REF.format(name="SwarmView")},
            {"type": "object", "required": ["cursor"], "properties": {"cursor": {"type": "string"}}},
        ]
    }
    return {
        "/v1/swarms": {
            "get": {
                "summary": "The live state of every swarm the caller may subscribe to (swarm.<id>.>)",
                "security": bearer,
                "parameters": [agents],
                "responses": {
                    "200": {
                        "description": "swarms",
                        "content": {"application/json": {"schema": {"$ref": _REF.format(name="SwarmList")}}},
                    },
                    **_errors(400, 401, 503),
                },
            }
        },
        "/v1/swarms/{swarm_id}": {
            "get": {
                "summary": "The live state of one swarm; 404 when none of its events is retained",
                "security": bearer,
                "parameters": [
                    {"name": "swarm_id", "in": "path", "required": True, "schema": {"type": "string"}},
                    agents,
                ],
                "responses": {
                    "200": {"description": "swarm", "content": {"application/json": {"schema": one}}},
                    **_errors(400, 401, 403, 404, 503),
                },
            }
        },
    }


@cache
def openapi() -> dict[str, Any]:
    """The OpenAPI 3.1 document of the HTTP API."""
    (event_in, event, _), components = msgspec.json.schema_components(
        [EventIn, Event, SwarmView], ref_template=_REF
    )
    components["Error"] = _error_schema()
    components["SwarmList"] = _swarm_list_schema()
    components["Batch"] = {
        "type": "object",
        "required": ["events"],
        "properties": {"events": {"type": "array", "items": event_in, "maxItems": 1000}},
    }
    components["Accepted"] = {
        "type": "object",
        "required": ["accepted", "duplicates", "offsets"],
        "properties": {
            "accepted": {"type": "integer"},
            "duplicates": {"type": "integer"},
            "offsets": {"type": "array", "items": {"type": "string"}},
        },
    }
    components["Page"] = {
        "type": "object",
        "required": ["events", "cursor", "recovered"],
        "properties": {
            "events": {"type": "array", "items": event},
            "cursor": {"type": "string"},
            "recovered": {"type": "boolean"},
            "reason": {"type": "string"},
            "more": {"type": "boolean"},
        },
    }
    bearer: list[dict[str, list[str]]] = [{"bearer": []}]
    q = "query"
    return {
        "openapi": "3.1.0",
        "info": {
            "title": "dash-stream",
            "version": __version__,
            "description": "Real-time event streaming for OpenClaw agent swarms. WebSocket: /asyncapi.json.",
        },
        "servers": [{"url": "/"}],
        "components": {
            "schemas": components,
            "securitySchemes": {
                "bearer": {
                    "type": "http",
                    "scheme": "bearer",
                    "description": "JWT (HS256/RS256/ES256) or API key",
                }
            },
        },
        "paths": {
            "/v1/events": {
                "post": {
                    "summary": "Publish one event, a batch, or CloudEvents (all-or-nothing)",
                    "security": bearer,
                    "parameters": [{"name": "Idempotency-Key", "in": "header", "schema": {"type": "string"}}],
                    "requestBody": {
                        "required": True,
                        "content": {
                            "application/json": {
                                "schema": {"oneOf": [event_in, {"$ref": _REF.format(name="Batch")}]}
                            },
                            "application/cloudevents+json": {"schema": {"type": "object"}},
                            "application/cloudevents-batch+json": {
                                "schema": {"type": "array", "items": {"type": "object"}}
                            },
                        },
                    },
                    "responses": {
                        "202": {
                            "description": "accepted",
                            "content": {
                                "application/json": {"schema": {"$ref": _REF.format(name="Accepted")}}
                            },
                        },
                        **_errors(400, 401, 403, 409, 413, 422, 429, 503),
                    },
                },
                "get": {
                    "summary": "A page of retained history",
                    "security": bearer,
                    "parameters": [
                        {
                            "name": "topics",
                            "in": q,
                            "schema": {"type": "string"},
                            "description": "comma list",
                        },
                        {"name": "cursor", "in": q, "schema": {"type": "string"}},
                        {
                            "name": "limit",
                            "in": q,
                            "schema": {"type": "integer", "minimum": 1, "maximum": 1000},
                        },
                        {
                            "name": "where",
                            "in": q,
                            "schema": {"type": "string"},
                            "description": "JSON filter",
                        },
                    ],
                    "responses": {
                        "200": {
                            "description": "page",
                            "content": {"application/json": {"schema": {"$ref": _REF.format(name="Page")}}},
                        },
                        **_errors(400, 401, 403, 429),
                    },
                },
            },
            "/v1/sse": {
                "get": {
                    "summary": "Server-Sent Events; resume with Last-Event-ID",
                    "security": bearer,
                    "parameters": [
                        {"name": "topics", "in": q, "required": True, "schema": {"type": "string"}},
                        {"name": "where", "in": q, "schema": {"type": "string"}},
                        {"name": "cursor", "in": q, "schema": {"type": "string"}},
                        {
                            "name": "from",
                            "in": q,
                            "schema": {"type": "string", "enum": ["latest", "earliest"]},
                        },
                        {"name": "Last-Event-ID", "in": "header", "schema": {"type": "string"}},
                    ],
                    "responses": {
                        "200": {
                            "description": "event stream",
                            "content": {"text/event-stream": {"schema": {"type": "string"}}},
                        },
                        **_errors(400, 401, 403),
                    },
                }
            },
            "/healthz": {"get": {"summary": "Process alive", "responses": {"200": {"description": "ok"}}}},
            "/readyz": {
                "get": {
                    "summary": "Bus reachable and not draining",
                    "responses": {"200": {"description": "ready"}, **_errors(503)},
                }
            },
            **_swarm_paths(),
            "/metrics": {
                "get": {
                    "summary": "Prometheus metrics",
                    "responses": {
                        "200": {
                            "description": "text format",
                            "content": {"text/plain": {"schema": {"type": "string"}}},
                        }
                    },
                }
            },
        },
    }


@cache
def asyncapi() -> dict[str, Any]:
    """The AsyncAPI 3.0 document of `/v1/ws`."""
    client = [f.Auth, f.Refresh, f.Subscribe, f.Unsubscribe, f.Publish, f.Ping]
    server = [f.Welcome, f.Authed, f.Ack, f.Subscribed, f.Unsubscribed, f.Pong, f.Error, f.Events, f.Snapshot]
    schemas, components = msgspec.json.schema_components(client + server, ref_template=_REF)
    messages = {
        t.__name__: {"name": t.__name__.lower(), "payload": s}
        for t, s in zip(client + server, schemas, strict=True)
    }
    return {
        "asyncapi": "3.0.0",
        "info": {
            "title": "dash-stream WebSocket",
            "version": __version__,
            "description": "Subprotocols dash.v1.json (text) and dash.v1.msgpack (binary). Close codes "
            "4000-4499: reconnect with the last cursor after retry_after_ms; 4500-4999: do not.",
        },
        "servers": {"local": {"host": "127.0.0.1:8080", "protocol": "ws", "pathname": "/v1/ws"}},
        "channels": {
            "ws": {
                "address": "/v1/ws",
                "messages": {k: {"$ref": f"#/components/messages/{k}"} for k in messages},
            }
        },
        "operations": {
            "send": {
                "action": "receive",
                "channel": {"$ref": "#/channels/ws"},
                "messages": [{"$ref": f"#/channels/ws/messages/{t.__name__}"} for t in client],
            },
            "receive": {
                "action": "send",
                "channel": {"$ref": "#/channels/ws"},
                "messages": [{"$ref": f"#/channels/ws/messages/{t.__name__}"} for t in server],
            },
        },
        "components": {"schemas": components, "messages": messages},
    }
