"""`dash-stream swarm status|list`: the live swarm state (`GET /v1/swarms[/{id}]`) as a table or JSON.

Exit codes: 0 done, 1 no such swarm (not_found), 2 usage, connection or credential error.
"""

from __future__ import annotations

from typing import Annotated, Any

import typer
from rich.console import Console
from rich.table import Table
from rich.text import Text

from dash_stream.cli.api import ApiError, api_failure, get_json, print_json
from dash_stream.cli.tail import PRIORITY_STYLES, short_time
from dash_stream.cli.tools import DEFAULT_URL, TokenOption, UrlOption, fail

STATUS_STYLES = {
    "running": "green",
    "spawned": "blue",
    "completed": "dim",
    "failed": "bold red",
    "killed": "yellow",
    "unknown": "magenta",
    "up": "green",
    "degraded": "yellow",
    "down": "bold red",
    "starting": "blue",
    "stopped": "dim",
}

swarm_app = typer.Typer(
    name="swarm",
    help="Live swarm state: agents by status, running tasks, last error, event rates.",
    no_args_is_help=True,
)

JsonOption = Annotated[bool, typer.Option("--json", help="Print the state as one JSON document.")]


def _counts_line(counts: dict[str, int]) -> Text:
    line = Text()
    for status, n in counts.items():
        if n:
            if line:
                line.append(" · ")
            line.append(f"{status} {n}", style=STATUS_STYLES.get(status))
    return line or Text("no agents", style="dim")


def render_swarm(view: dict[str, Any], console: Console) -> None:
    """One swarm as a header, an agent table, running tasks and the last error."""
    head = Text()
    head.append(f"swarm {view['swarm_id']}", style="bold")
    status = view.get("status")
    head.append("  status ")
    head.append(status or "(no swarm.status event)", style=STATUS_STYLES.get(status or "", "dim"))
    if view.get("status_message"):
        head.append(f" ({view['status_message']})", style="dim")
    rates = view.get("rates", {})
    head.append(f"  events {view.get('events', 0)} ({rates.get('events', 0)}/min)")
    if view.get("last_event_time"):
        head.append(f"  last {short_time(view['last_event_time'])}", style="dim")
    console.print(head)
    console.print(Text("agents: ") + _counts_line(view.get("agent_counts", {})))
    agents = view.get("agents") or []
    if agents:
        table = Table(show_edge=False, pad_edge=False, header_style="bold")
        for column in ("agent", "status", "last event", "type", "reason"):
            table.add_column(column)
        for a in agents:
            table.add_row(
                a["agent_id"],
                Text(a["status"], style=STATUS_STYLES.get(a["status"], "")),
                short_time(a.get("last_event_time") or ""),
                a.get("last_type") or "",
                a.get("reason") or "",
            )
        console.print(table)
    tasks = view.get("tasks_running") or []
    console.print(
        f"tasks: {len(tasks)} running, {view.get('tasks_completed', 0)} completed, "
        f"{view.get('tasks_failed', 0)} failed"
    )
    for t in tasks[:20]:
        who = f" ({t['agent_id']})" if t.get("agent_id") else ""
        console.print(f"  {t['task_id']}{who} since {short_time(t.get('started_time') or '')}", style="dim")
    error = view.get("last_error")
    if error:
        line = Text("last error: ")
        line.append(
            f"[{error['type']}] {error['message']}", style=PRIORITY_STYLES.get(error.get("priority"), "")
        )
        if error.get("agent_id"):
            line.append(f" (agent {error['agent_id']})", style="dim")
        line.append(f" at {short_time(error.get('time') or '')}", style="dim")
        console.print(line)


@swarm_app.command("status")
def status(
    swarm_id: Annotated[str, typer.Argument(help="The swarm id: the <id> of topics swarm.<id>.…")],
    as_json: JsonOption = False,
    agents: Annotated[bool, typer.Option("--agents/--no-agents", help="Include the agent list.")] = True,
    url: UrlOption = DEFAULT_URL,
    token: TokenOption = None,
) -> None:
    """Show one swarm's live state.

    Examples:

      dash-stream swarm status s1

      dash-stream swarm status s1 --json | jq '.agent_counts'
    """
    params = {} if agents else {"agents": "false"}
    try:
        view = get_json(url, token, f"/v1/swarms/{swarm_id}", params)
    except ApiError as e:
        api_failure(e, as_json)
    if not isinstance(view, dict):
        fail("the server answered something that is not a swarm")
    if as_json:
        print_json(view)
        return
    render_swarm(view, Console(highlight=False, soft_wrap=True))


@swarm_app.command("list")
def list_swarms(
    as_json: JsonOption = False,
    agents: Annotated[bool, typer.Option("--agents/--no-agents", help="Include agent lists.")] = False,
    url: UrlOption = DEFAULT_URL,
    token: TokenOption = None,
) -> None:
    """List every swarm you may read, one line each (or the full state with --json)."""
    params = {} if agents else {"agents": "false"}
    try:
        doc = get_json(url, token, "/v1/swarms", params)
    except ApiError as e:
        api_failure(e, as_json)
    if as_json:
        print_json(doc)
        return
    console = Console(highlight=False, soft_wrap=True)
    swarms = doc.get("swarms", []) if isinstance(doc, dict) else []
    if not swarms:
        console.print("no swarms yet", style="dim")
        return
    table = Table(show_edge=False, pad_edge=False, header_style="bold")
    for column in ("swarm", "status", "agents", "tasks", "events/min", "last error"):
        table.add_column(column)
    for v in swarms:
        error = v.get("last_error")
        table.add_row(
            v["swarm_id"],
            Text(v.get("status") or "-", style=STATUS_STYLES.get(v.get("status") or "", "")),
            _counts_line(v.get("agent_counts", {})),
            str(len(v.get("tasks_running") or [])),
            str(v.get("rates", {}).get("events", 0)),
            Text(f"[{error['type']}] {error['message'][:60]}") if error else "",
        )
    console.print(table)


def register(app: typer.Typer) -> None:
    """Add `swarm status` and `swarm list` to the CLI."""
    app.add_typer(swarm_app)
