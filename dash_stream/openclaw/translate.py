"""Pure translation of OpenClaw gateway frames (OPENCLAW.md §9) into dash-stream event drafts.

No I/O, no clock, no state: each function takes a frame's `payload` (JSON-decoded) and returns
`Draft`s. `finish` turns a draft into the `EventIn` to publish once its placement (topic, labels)
and its run's origin are known.

| gateway frame                                   | event                      | priority |
|-------------------------------------------------|----------------------------|----------|
| `agent` lifecycle `start` (repeats on retries)  | `agent.started` (once)     | normal   |
| `agent` lifecycle `end`                         | `agent.completed`          | normal   |
| `agent` lifecycle `error`                       | `agent.failed`             | high     |
| `agent` run_status `retrying`                   | `agent.retrying`           | normal   |
| `agent` item `kind:"tool"` start/end, `session.tool` start/result | `agent.tool` | low   |
| `chat` `final`                                  | `agent.message`            | normal   |
| `sessions.changed` start/end (wake, heartbeat)  | `agent.started` / `agent.completed` / `agent.failed` |
| `health`, `shutdown`, hello, unreachable        | `openclaw.gateway.status`  | low / normal / high |

Event ids are derived from (gateway name, run id, what happened): `lifecycle:start`,
`lifecycle:end`, `lifecycle:error`, `retry:<attempt>`, `tool:<call id>:start|end`, `chat:final:<seq>`.
Every watcher of a gateway derives the same id for the same happening, so the server's (source, id)
dedup drops what a reconnect, a restarted watcher or a second watcher sends again.
"""

from __future__ import annotations

import hashlib
from datetime import UTC, datetime
from typing import Any, Final

import msgspec

from dash_stream.events import EventIn, Priority
from dash_stream.openclaw.mapping import Placement

START: Final = "lifecycle:start"
END: Final = "lifecycle:end"
ERROR: Final = "lifecycle:error"
ID_PREFIX: Final = "oc-"
_TOOL_PHASES: Final = {"start": "start", "end": "end", "result": "end"}


class Draft(msgspec.Struct, frozen=True, kw_only=True):
    """An event before its placement and its run's origin are known.

    `scope` + `key` make the event id: the run id for run events, `gateway` or `session:<key>`
    otherwise. `transcript` says whether the run has a transcript to read its origin from (runs seen
    only through `sessions.changed`, e.g. heartbeats of a main session, have none).
    """

    type: str
    scope: str
    key: str
    priority: Priority = "normal"
    ts_ms: int | None = None
    run_id: str | None = None
    session_key: str | None = None
    agent_id: str | None = None
    data: dict[str, Any] = {}
    transcript: bool = True


# ---------------------------------------------------------------- helpers


def get_str(doc: Any, key: str) -> str | None:
    """`doc[key]` when `doc` is an object and the value a non-empty string, else None."""
    value = doc.get(key) if isinstance(doc, dict) else None
    return value if isinstance(value, str) and value else None


def get_int(doc: Any, key: str) -> int | None:
    """`doc[key]` as an int when it is a number (not a bool), else None."""
    value = doc.get(key) if isinstance(doc, dict) else None
    return int(value) if isinstance(value, int | float) and not isinstance(value, bool) else None


def get_dict(doc: Any, key: str) -> dict[str, Any]:
    """`doc[key]` when it is an object, else an empty one."""
    value = doc.get(key) if isinstance(doc, dict) else None
    return value if isinstance(value, dict) else {}


def rfc3339(ms: int | None) -> str | None:
    """Epoch milliseconds as an RFC 3339 UTC time (millisecond precision), None for None."""
    if ms is None:
        return None
    return datetime.fromtimestamp(ms / 1000, UTC).isoformat(timespec="milliseconds").replace("+00:00", "Z")


def cut(text: str, limit: int) -> str:
    """`text` cut to `limit` characters (an ellipsis marks the cut)."""
    return text if len(text) <= limit else text[: max(0, limit - 1)] + "…"


def event_id(gateway: str, scope: str, key: str) -> str:
    """The deterministic event id of a happening: `oc-` + 32 hex digits of SHA-256."""
    digest = hashlib.sha256(f"{gateway}\x00{scope}\x00{key}".encode()).hexdigest()
    return ID_PREFIX + digest[:32]


def run_draft(p: dict[str, Any], type_: str, key: str, data: dict[str, Any], **kw: Any) -> Draft:
    """A draft of a run event, with the run's identity in `data` (AgentData-compatible)."""
    run_id = get_str(p, "runId") or ""
    agent_id = get_str(p, "agentId")
    session_key = get_str(p, "sessionKey")
    base: dict[str, Any] = {"agent_id": agent_id or "unknown", "run_id": run_id}
    if session_key:
        base["session_key"] = session_key
    base.update({k: v for k, v in data.items() if v is not None})
    return Draft(
        type=type_,
        scope=run_id,
        key=key,
        ts_ms=get_int(p, "ts"),
        run_id=run_id,
        session_key=session_key,
        agent_id=agent_id,
        data=base,
        **kw,
    )


def _times(data: dict[str, Any]) -> dict[str, Any]:
    started, ended = get_int(data, "startedAt"), get_int(data, "endedAt")
    out: dict[str, Any] = {"started_at": rfc3339(started), "ended_at": rfc3339(ended)}
    if started is not None and ended is not None:
        out["duration_ms"] = ended - started
    return out


# ---------------------------------------------------------------- run frames


def agent_frame(p: dict[str, Any]) -> list[Draft]:
    """An `agent` event: lifecycle start/end/error, run_status retrying, tool items; else nothing."""
    if not get_str(p, "runId"):
        return []
    stream = p.get("stream")
    data = get_dict(p, "data")
    phase = data.get("phase")
    if stream == "lifecycle":
        if phase == "start":
            started = {
                "started_at": rfc3339(get_int(data, "startedAt")),
                "session_id": get_str(p, "sessionId"),
            }
            return [run_draft(p, "agent.started", START, started)]
        if phase == "end":
            done = {"stop_reason": get_str(data, "stopReason"), "aborted": data.get("aborted") is True}
            return [run_draft(p, "agent.completed", END, {**done, **_times(data)})]
        if phase == "error":
            return [run_draft(p, "agent.failed", ERROR, _failure(data), priority="high")]
        return []
    if stream == "run_status" and phase == "retrying":
        attempt = get_int(data, "retryAttempt") or get_int(data, "attempt") or get_int(p, "seq") or 0
        retry = {
            "message": get_str(data, "message"),
            "attempt": get_int(data, "attempt"),
            "max_attempts": get_int(data, "maxAttempts"),
            "delay_ms": get_int(data, "delayMs"),
            "reason": get_str(data, "reason"),
        }
        return [run_draft(p, "agent.retrying", f"retry:{attempt}", retry)]
    if stream == "item" and data.get("kind") == "tool" and phase in _TOOL_PHASES:
        call = get_str(data, "toolCallId") or get_str(data, "itemId") or f"seq{get_int(p, 'seq')}"
        step = _TOOL_PHASES[str(phase)]
        tool = {
            "tool": get_str(data, "name"),
            "tool_call_id": call,
            "phase": step,
            "status": get_str(data, "status"),
            "title": get_str(data, "title"),
        }
        return [run_draft(p, "agent.tool", f"tool:{call}:{step}", tool, priority="low")]
    return []


def _failure(data: dict[str, Any]) -> dict[str, Any]:
    observation = get_dict(data, "errorObservation")
    return {
        "error": cut(get_str(data, "error") or "run failed", 2000),
        "failure_kind": get_str(observation, "failoverReason"),
        "provider": get_str(observation, "provider"),
        "model": get_str(observation, "model"),
        **_times(data),
    }


def session_tool_frame(p: dict[str, Any]) -> list[Draft]:
    """A `session.tool` event (tool start/result, after `sessions.subscribe`): `agent.tool`."""
    data = get_dict(p, "data")
    phase = data.get("phase")
    if not get_str(p, "runId") or phase not in _TOOL_PHASES:
        return []
    call = get_str(data, "toolCallId") or f"seq{get_int(p, 'seq')}"
    step = _TOOL_PHASES[str(phase)]
    tool: dict[str, Any] = {"tool": get_str(data, "name"), "tool_call_id": call, "phase": step}
    if step == "end":
        tool["is_error"] = data.get("isError") is True
    return [run_draft(p, "agent.tool", f"tool:{call}:{step}", tool, priority="low")]


def chat_frame(p: dict[str, Any], *, max_text: int) -> list[Draft]:
    """A `chat` event: the final reply becomes `agent.message`; deltas and errors are left out."""
    if p.get("state") != "final" or not get_str(p, "runId"):
        return []
    text = message_text(get_dict(p, "message"))
    reply = {"text": cut(text, max_text), "stop_reason": get_str(p, "stopReason")}
    return [run_draft(p, "agent.message", f"chat:final:{get_int(p, 'seq')}", reply)]


def sessions_changed_frame(p: dict[str, Any]) -> list[Draft]:
    """`sessions.changed` start/end with a run id: runs (wake, heartbeat) that send no `agent` events.

    Hook runs send these too; they map to the same ids as their `agent` lifecycle events.
    """
    phase = p.get("phase")
    if phase not in ("start", "end") or not get_str(p, "runId"):
        return []
    session = get_dict(p, "session")
    key = get_str(p, "sessionKey") or ""
    main = session.get("isMain") is True or session_is_main(key)
    frame = {**p, "ts": get_int(p, "ts")}
    if phase == "start":
        started = {"started_at": rfc3339(get_int(p, "ts")), "session_id": get_str(session, "sessionId")}
        return [run_draft(frame, "agent.started", START, started, transcript=not main)]
    times = {
        "started_at": rfc3339(get_int(session, "startedAt")),
        "ended_at": rfc3339(get_int(session, "endedAt")),
    }
    if session.get("status") == "failed":
        failure = {"error": cut(get_str(session, "lastRunError") or "run failed", 2000), **times}
        return [run_draft(frame, "agent.failed", ERROR, failure, priority="high", transcript=not main)]
    done = {**times, "duration_ms": get_int(session, "runtimeMs")}
    return [run_draft(frame, "agent.completed", END, done, transcript=not main)]


def session_is_main(session_key: str) -> bool:
    """Whether a key is an agent's main session (`agent:<id>:main`), which has no per-run transcript."""
    parts = session_key.split(":")
    return len(parts) == 3 and parts[0] == "agent" and parts[2] == "main"


def late_start(draft: Draft) -> Draft:
    """The `agent.started` of a run first seen after its start (e.g. by a watcher started mid-run)."""
    data = {k: v for k, v in draft.data.items() if k in ("agent_id", "run_id", "session_key")}
    data["late"] = True
    return msgspec.structs.replace(draft, type="agent.started", key=START, priority="normal", data=data)


# ---------------------------------------------------------------- transcripts (origin)


def message_text(message: dict[str, Any]) -> str:
    """The text of a transcript or chat message: a string, or its `text` parts joined."""
    content = message.get("content")
    if isinstance(content, str):
        return content
    if isinstance(content, list):
        parts = [c.get("text") for c in content if isinstance(c, dict) and c.get("type") == "text"]
        return "\n".join(p for p in parts if isinstance(p, str))
    return ""


def user_transcript(p: dict[str, Any]) -> tuple[str, str] | None:
    """(session key, text) of a `session.message` that is a user turn (a hook's prompt), else None."""
    message = get_dict(p, "message")
    key = get_str(p, "sessionKey")
    if key is None or message.get("role") != "user":
        return None
    return key, message_text(message)


def history_user_text(payload: dict[str, Any]) -> str | None:
    """The first user turn of a `chat.history` answer (the prompt that started the run), if any."""
    for message in payload.get("messages") or ():
        if isinstance(message, dict) and message.get("role") == "user":
            return message_text(message)
    return None


def carries_origin(text: str, origin: str) -> bool:
    """Whether a prompt is a bridge message: the hook name (`Task: <origin>` in OpenClaw's wrapper)
    or the bridge's footer line (`origin: <origin> | route … | message …`)."""
    task, footer = f"Task: {origin}", f"origin: {origin}"
    for line in text.splitlines():
        line = line.strip()
        if line in (task, footer) or line.startswith(footer + " |"):
            return True
    return False


# ---------------------------------------------------------------- the event


def finish(
    draft: Draft, *, gateway: str, source: str, placement: Placement, origin: str | None, now_ms: int
) -> EventIn:
    """The event to publish: deterministic id, the gateway's time, placement labels plus `origin`."""
    labels = dict(placement.labels)
    data = {"gateway": gateway, **draft.data}
    if origin is not None:
        labels["origin"] = origin
        data["origin"] = origin
    return EventIn(
        topic=placement.topic,
        type=draft.type,
        id=event_id(gateway, draft.scope, draft.key),
        source=source,
        time=rfc3339(draft.ts_ms if draft.ts_ms is not None else now_ms),
        priority=draft.priority,
        labels=labels,
        data=data,
    )
