"""The `dash-stream` command line: serve, publish, tail, token, bench, swarm, events, openclaw, bridge."""

from __future__ import annotations

import typer

from dash_stream.cli import bench, serve, tools
from dash_stream.cli import events as events_cli
from dash_stream.cli import swarm as swarm_cli
from dash_stream.openclaw import cli as openclaw_cli

app = typer.Typer(
    name="dash-stream",
    help="Real-time event streaming for OpenClaw agent swarms.",
    no_args_is_help=True,
    pretty_exceptions_enable=False,
    context_settings={"help_option_names": ["-h", "--help"]},
)


@app.callback()
def _root() -> None:
    """Real-time event streaming for OpenClaw agent swarms."""


serve.register(app)
tools.register(app)  # publish, tail, token
bench.register(app)
swarm_cli.register(app)  # the live swarm state, with --json output for agents
events_cli.register(app)  # recent history, with --json output for agents
openclaw_cli.register(app)  # openclaw watch: a gateway's agent runs as events

try:  # the event bridge is a package of its own (bridge/ imports dash_stream, never the reverse)
    import bridge.cli
except ModuleNotFoundError as e:  # an install without the bridge package; a broken bridge still fails
    if e.name not in ("bridge", "bridge.cli"):
        raise
else:
    bridge.cli.register(app)


def main() -> None:
    """Console script entry point."""
    app()
