"""`dash-stream events`: recent history of an agent (or a swarm, a type, a mention) from `GET /v1/events`.

Without a cursor it prints the `--limit` most recent matching events, oldest first. With
`--cursor` / `--cursor-file` it prints the first `--limit` matching events after the cursor (a
cursor file that does not exist yet starts at the earliest retained event) and hands back (or
saves) the cursor just past the last one printed: run it again to read on, with no gap and no
repeat. That is how an agent reads its notifications.

Exit codes: 0 done, 2 usage, connection or credential error.
"""

from __future__ import annotations

import json
from collections import deque
from pathlib import Path
from typing import Annotated, Any

import msgspec
import typer
from rich.console import Console

from dash_stream.cli.api import ApiError, api_failure, get_json, print_json
from dash_stream.cli.tail import pretty_line, read_cursor, write_cursor
from dash_stream.cli.tools import DEFAULT_URL, TokenOption, UrlOption, fail, warn
from dash_stream.client.cursors import advance
from dash_stream.events import Event

_PAGE = 1000
_MAX_PAGES = 10_000  # a bound on one run: 10 million events examined


def agent_filter(agent: str, swarm: str | None) -> dict[str, Any]:
    """Events naming the agent: `data.agent_id`, `labels.agent`, or (with a swarm) its own topics."""
    branches: list[dict[str, Any]] = [{"data.agent_id": agent}, {"labels.agent": agent}]
    if swarm is not None:
        own = f"swarm.{swarm}.agent.{agent}"
        branches += [{"topic": own}, {"topic": {"prefix": own + "."}}]
    return {"any": branches}


def mentions(event: dict[str, Any], name: str) -> bool:
    """Whether `labels.mentions` (a comma list of names, `@` optional) names `name`."""
    labels = event.get("labels") or {}
    value = labels.get("mentions") if isinstance(labels, dict) else None
    if not isinstance(value, str):
        return False
    wanted = name.lstrip("@")
    return any(item.strip().lstrip("@") == wanted for item in value.split(","))


def build_query(
    agent: str | None, swarm: str | None, types: list[str] | None, mention: str | None, topics: str | None
) -> tuple[str, dict[str, Any] | None]:
    """The `topics` and `where` of the history request."""
    if topics is None:
        topics = f"swarm.{swarm}.>" if swarm else "swarm.>"
    where: dict[str, Any] = {}
    if agent is not None:
        where.update(agent_filter(agent, swarm))
    if types:
        where["type"] = {"in": types}
    if mention is not None:
        where["labels.mentions"] = {"exists": True}  # the name itself is matched here, client-side
    return topics, where or None


def events(
    agent: Annotated[str | None, typer.Option("--agent", "-a", help="Events naming this agent.")] = None,
    swarm: Annotated[
        str | None, typer.Option("--swarm", "-s", help="Only this swarm (topics swarm.<id>.>).")
    ] = None,
    type_: Annotated[
        list[str] | None, typer.Option("--type", help="Only this event type (repeatable).")
    ] = None,
    mention: Annotated[
        str | None,
        typer.Option("--mention", "-m", help="Only events whose labels.mentions names this (notifications)."),
    ] = None,
    topics: Annotated[
        str | None, typer.Option(help="Topic patterns, comma separated (default swarm.> or swarm.<id>.>).")
    ] = None,
    limit: Annotated[int, typer.Option(min=1, max=10_000, help="At most this many events.")] = 20,
    cursor: Annotated[
        str | None, typer.Option(help="Only events after this cursor (the oldest first).")
    ] = None,
    cursor_file: Annotated[
        Path | None, typer.Option(help="Read the cursor from this file and save the new one back (read on).")
    ] = None,
    as_json: Annotated[bool, typer.Option("--json", help="Print one JSON document.")] = False,
    url: UrlOption = DEFAULT_URL,
    token: TokenOption = None,
) -> None:
    """Recent events of an agent, a swarm, a type, or mentioning a name, from the retained history.

    Examples:

      dash-stream events --agent a7 --swarm s1 --limit 10 --json

      dash-stream events --swarm s1 --type agent.failed --type error

      dash-stream events --mention a7 --cursor-file .a7-inbox --json   # new notifications only
    """
    if cursor is not None and cursor_file is not None:
        fail("give either --cursor or --cursor-file, not both")
    start = cursor if cursor is not None else (read_cursor(cursor_file) if cursor_file is not None else None)
    topic_patterns, where = build_query(agent, swarm, type_, mention, topics)
    params: dict[str, str] = {"topics": topic_patterns, "limit": str(_PAGE)}
    if where is not None:
        params["where"] = json.dumps(where, separators=(",", ":"))
    forward = start is not None or cursor_file is not None  # a new cursor file reads from the earliest
    picked: deque[dict[str, Any]] = deque(maxlen=None if forward else limit)
    position = start
    recovered, reason, more = True, None, False
    try:
        for _ in range(_MAX_PAGES):
            page_params = dict(params, cursor=position) if position else params
            page = get_json(url, token, "/v1/events", page_params)
            if not page.get("recovered", True):
                recovered, reason = False, page.get("reason")
                position = page.get("cursor")
                break
            for event in page.get("events", []):
                if mention is not None and not mentions(event, mention):
                    continue
                picked.append(event)
                if forward:
                    position = advance(position, event.get("offset"))
                    if len(picked) >= limit:
                        more = True
                        break
            if forward and len(picked) >= limit:
                break
            position = page.get("cursor", position)
            if not page.get("more"):
                break
    except ApiError as e:
        api_failure(e, as_json)
    if cursor_file is not None and position is not None:
        write_cursor(cursor_file, position)
    if not recovered:
        warn(f"the cursor could not be resumed ({reason}): events may be missing; continuing from now")
    found = list(picked)
    if as_json:
        doc: dict[str, Any] = {
            "agent_id": agent,
            "swarm_id": swarm,
            "mention": mention,
            "topics": topic_patterns.split(","),
            "count": len(found),
            "events": found,
            "cursor": position,
            "more": more,
            "recovered": recovered,
        }
        if reason is not None:
            doc["reason"] = reason
        print_json(doc)
        return
    console = Console(highlight=False, soft_wrap=True)
    if not found:
        console.print("no matching events", style="dim")
    for event in found:
        console.print(pretty_line(msgspec.convert(event, Event)))


def register(app: typer.Typer) -> None:
    """Add `events` to the CLI."""
    app.command(help=events.__doc__)(events)
