"""The `dash-stream` command line: serve, publish, tail, token (and bench, bridge as they land)."""

from __future__ import annotations

import typer

from dash_stream.cli import serve

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

try:  # commands that live in modules of their own
    import dash_stream.cli.tools as tools

    tools.register(app)
except ImportError:  # pragma: no cover - during development only
    pass

try:
    import dash_stream.cli.bench as bench

    bench.register(app)
except ImportError:  # pragma: no cover - during development only
    pass


def main() -> None:
    """Console script entry point."""
    app()
