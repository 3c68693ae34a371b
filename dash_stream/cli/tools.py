"""The client-side commands (`publish`, `tail`, `token`) and what they share: options, errors.

Every failure a person can fix ends in one line on stderr and a meaningful exit code:
0 done, 1 some events failed, 2 usage, connection or credential error.
"""

from __future__ import annotations

import os
import sys
from typing import Annotated, Final, NoReturn

import typer

DEFAULT_URL: Final = "http://127.0.0.1:8080"
EXIT_FAILED: Final = 1
EXIT_USAGE: Final = 2

UrlOption = Annotated[
    str,
    typer.Option("--url", "-u", help="Server URL (http:// or ws://).", envvar="DASH_URL", show_envvar=True),
]
TokenOption = Annotated[
    str | None,
    typer.Option(
        "--token",
        "-t",
        help="JWT or API key (see `dash-stream token`); prefer the env var to keep it out of `ps`.",
        envvar="DASH_TOKEN",
        show_envvar=True,
    ),
]


def fail(message: str, code: int = EXIT_USAGE) -> NoReturn:
    """Print `error: message` on stderr and exit with `code`."""
    typer.secho(f"error: {message}", err=True, fg="red")
    raise typer.Exit(code)


def warn(message: str) -> None:
    """Print `warning: message` on stderr."""
    typer.secho(f"warning: {message}", err=True, fg="yellow")


def cannot_connect(url: str, reason: str) -> str:
    """The one-line message for a server that cannot be reached."""
    return f"cannot connect to {url}: {reason} — is `dash-stream serve` running?"


def progress_enabled(quiet: bool) -> bool:
    """Progress bars only for a person watching a terminal."""
    return not quiet and sys.stderr.isatty() and os.environ.get("TERM") != "dumb"


def register(app: typer.Typer) -> None:
    """Add `publish`, `tail` and `token` to the CLI."""
    from dash_stream.cli import publish, tail, token

    publish.register(app)
    tail.register(app)
    token.register(app)
