"""Pure translation of the gateway's own state into events: status (hello, health, shutdown,
unreachable) on `openclaw.gateway.status`, and the start-up snapshot of `sessions.list`.

Ids are deterministic like every other (`translate.event_id`): `up:<bootId>`, `health:<bootId>:<ts>`,
`stopping:<bootId>`, `unreachable:<bootId>` in the `gateway` scope, `snapshot:<updatedAt>` in a
session's scope, so two watchers of one gateway publish each status once.
"""

from __future__ import annotations

from typing import Any, Final

from dash_stream.events import Priority
from dash_stream.openclaw.translate import START, Draft, cut, get_dict, get_int, get_str, rfc3339, run_draft

GATEWAY_STATUS: Final = "openclaw.gateway.status"
SESSION_SNAPSHOT: Final = "openclaw.session"


def _status(key: str, status: str, priority: Priority, ts_ms: int | None, **data: Any) -> Draft:
    body = {"status": status, **{k: v for k, v in data.items() if v is not None}}
    return Draft(type=GATEWAY_STATUS, scope="gateway", key=key, priority=priority, ts_ms=ts_ms, data=body)


def gateway_up(hello: dict[str, Any], agents: dict[str, Any], sessions: dict[str, Any], ts_ms: int) -> Draft:
    """The status after a connection: version, boot id, agents and sessions (the start-up snapshot)."""
    server = get_dict(hello, "server")
    boot = get_str(server, "bootId") or get_str(server, "connId") or "unknown"
    listed = [s for s in sessions.get("sessions") or () if isinstance(s, dict)]
    active = sum(1 for s in listed if s.get("hasActiveRun") is True or s.get("status") == "running")
    agent_ids = [a.get("id") for a in agents.get("agents") or () if isinstance(a, dict)]
    return _status(
        f"up:{boot}",
        "up",
        "normal",
        ts_ms,
        version=get_str(server, "version"),
        boot_id=boot,
        agents=[a for a in agent_ids if isinstance(a, str)][:100],
        default_agent=get_str(agents, "defaultId"),
        sessions=get_int(sessions, "totalCount")
        if get_int(sessions, "totalCount") is not None
        else len(listed),
        active_sessions=active,
    )


def health_frame(p: dict[str, Any], boot_id: str) -> Draft:
    """A `health` event (about every 60 s): low priority when ok, high when not."""
    ok = p.get("ok") is True
    ts = get_int(p, "ts")
    return _status(
        f"health:{boot_id}:{ts}",
        "ok" if ok else "degraded",
        "low" if ok else "high",
        ts,
        ok=ok,
        boot_id=boot_id,
    )


def shutdown_frame(p: dict[str, Any], boot_id: str, ts_ms: int) -> Draft:
    """The gateway announced it stops (`shutdown`, then close 1012)."""
    reason = get_str(p, "reason") or "gateway stopping"
    return _status(f"stopping:{boot_id}", "stopping", "normal", ts_ms, reason=reason, boot_id=boot_id)


def gateway_unreachable(boot_id: str, ts_ms: int, reason: str, down_s: float) -> Draft:
    """No connection for `down_s` seconds after the one to boot `boot_id` was lost."""
    return _status(
        f"unreachable:{boot_id}",
        "unreachable",
        "high",
        ts_ms,
        reason=cut(reason, 300),
        boot_id=boot_id,
        down_s=round(down_s, 1),
    )


def snapshot(sessions: dict[str, Any], limit: int) -> list[Draft]:
    """The start-up `sessions.list`: an `openclaw.session` per session (low), and an `agent.started`
    per active run, with the live start's id (so a dashboard sees runs already going)."""
    out: list[Draft] = []
    for s in list(sessions.get("sessions") or ())[:limit]:
        key = get_str(s, "key")
        if key is None:
            continue
        agent = get_str(s, "agentId")
        fields = {
            "session_key": key,
            "agent_id": agent or "unknown",
            "session_id": get_str(s, "sessionId"),
            "classification": get_str(s, "classification"),
            "status": get_str(s, "status"),
            "last_run_id": get_str(s, "lastRunId"),
            "has_active_run": s.get("hasActiveRun") is True,
            "updated_at": rfc3339(get_int(s, "updatedAt")),
        }
        data = {k: v for k, v in fields.items() if v is not None}
        updated = get_int(s, "updatedAt")
        out.append(
            Draft(
                type=SESSION_SNAPSHOT,
                scope=f"session:{key}",
                key=f"snapshot:{updated}",
                priority="low",
                ts_ms=updated,
                session_key=key,
                agent_id=agent,
                data=data,
            )
        )
        for run in s.get("activeRunIds") or ():
            if isinstance(run, str) and run:
                frame = {"runId": run, "agentId": agent, "sessionKey": key, "ts": get_int(s, "startedAt")}
                out.append(run_draft(frame, "agent.started", START, {"snapshot": True}))
    return out
