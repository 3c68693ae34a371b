"""`dash-stream tail`: follow topics live, as coloured lines or JSON lines, resumable by cursor file."""

from __future__ import annotations

import asyncio
import contextlib
import enum
import json
import os
import sys
import tempfile
from datetime import datetime
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any, Literal

import msgspec
import typer

from dash_stream.cli.tools import DEFAULT_URL, TokenOption, UrlOption, cannot_connect, fail, warn

if TYPE_CHECKING:  # imported where used, so that `dash-stream --help` and `serve` start fast
    from rich.text import Text

    from dash_stream.events import Event

PRIORITY_STYLES = {"critical": "bold red", "high": "yellow", "normal": "", "low": "dim"}
_DATA_CHARS = 120
_encoder = msgspec.json.Encoder()


class FromChoice(enum.StrEnum):
    """Where a subscription without a saved cursor starts."""

    latest = "latest"
    earliest = "earliest"


# ---------------------------------------------------------------- output


def short_time(value: str) -> str:
    """`HH:MM:SS.mmm` in local time from an RFC 3339 string (the string itself if it does not parse)."""
    try:
        parsed = datetime.fromisoformat(value.replace("Z", "+00:00"))
    except ValueError:
        return value
    if parsed.tzinfo is not None:
        parsed = parsed.astimezone()
    return parsed.strftime("%H:%M:%S.") + f"{parsed.microsecond // 1000:03d}"


def short_data(data: Any, limit: int = _DATA_CHARS) -> str:
    """Compact JSON of `data`, cut to `limit` characters."""
    if data is None:
        return ""
    text = _encoder.encode(data).decode()
    return text if len(text) <= limit else text[: limit - 1] + "…"


def pretty_line(event: Event) -> Text:
    """One event as a coloured line: time, priority, topic, type, short data."""
    from rich.text import Text

    style = PRIORITY_STYLES.get(event.priority, "")
    line = Text(no_wrap=False)
    line.append(short_time(event.time), style="dim")
    line.append("  ")
    line.append(f"{event.priority:<8}", style=style or None)
    line.append("  ")
    line.append(event.topic, style="cyan")
    line.append("  ")
    line.append(event.type, style="bold" if event.priority == "critical" else style or None)
    data = short_data(event.data)
    if data:
        line.append("  ")
        line.append(data, style="dim" if event.priority == "low" else None)
    return line


# ---------------------------------------------------------------- cursor file


def read_cursor(path: Path) -> str | None:
    """The saved cursor, or None when the file does not exist or is empty."""
    try:
        text = path.read_text().strip()
    except FileNotFoundError:
        return None
    except OSError as e:
        fail(f"cannot read cursor file {path}: {e.strerror}")
    return text or None


def write_cursor(path: Path, cursor: str) -> None:
    """Replace the cursor file atomically: a reader sees the old cursor or the new one, never half."""
    directory = path.parent if str(path.parent) else Path(".")
    fd, temp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=directory)
    try:
        with os.fdopen(fd, "w") as f:
            f.write(cursor + "\n")
        os.replace(temp, path)
    except BaseException:
        with contextlib.suppress(OSError):
            os.unlink(temp)
        raise


# ---------------------------------------------------------------- command


async def _follow(
    url: str,
    token: str | None,
    topics: list[str],
    where: dict[str, Any] | None,
    start: Literal["latest", "earliest"],
    as_json: bool,
    cursor_file: Path | None,
    limit: int | None,
) -> None:
    from rich.console import Console

    from dash_stream.client import Client
    from dash_stream.client.cursors import advance

    cursor = read_cursor(cursor_file) if cursor_file is not None else None
    console = Console(highlight=False, soft_wrap=True)
    out = sys.stdout
    saved = cursor
    async with (
        Client(url, token=token) as client,
        client.subscribe(topics, where=where, cursor=cursor, from_=None if cursor else start) as stream,
    ):
        if cursor is not None and not stream.recovered:
            warn(f"could not resume from the saved cursor ({stream.reason}); following from now")
        position = stream.cursor
        if cursor_file is not None and position is not None and position != saved:
            write_cursor(cursor_file, position)  # even a run that sees nothing moves the start on
            saved = position
        count = 0
        async for batch in stream.batches():
            for event in batch.events:
                if as_json:
                    out.write(_encoder.encode(event).decode() + "\n")
                    out.flush()
                else:
                    console.print(pretty_line(event))
                count += 1
                position = advance(position, event.offset)
                if limit is not None and count >= limit:
                    break
            else:
                position = batch.cursor
            if cursor_file is not None and position is not None and position != saved:
                write_cursor(cursor_file, position)
                saved = position
            if limit is not None and count >= limit:
                return


def tail(
    topics: Annotated[list[str], typer.Argument(help="Topic patterns: `*` one segment, `>` the rest.")],
    where: Annotated[
        str | None, typer.Option(help='Filter as JSON, e.g. \'{"priority":{"gte":"high"}}\'.')
    ] = None,
    from_: Annotated[
        FromChoice, typer.Option("--from", help="Start without a saved cursor: latest or earliest.")
    ] = FromChoice.latest,
    as_json: Annotated[bool, typer.Option("--json", help="Print raw JSON lines (one event each).")] = False,
    cursor_file: Annotated[
        Path | None,
        typer.Option(help="Resume from the cursor in this file, and save the cursor after every frame."),
    ] = None,
    limit: Annotated[int | None, typer.Option(min=1, help="Exit after this many events.")] = None,
    url: UrlOption = DEFAULT_URL,
    token: TokenOption = None,
) -> None:
    """Follow topics live: coloured lines, or JSON lines with --json. Ctrl-C stops.

    Examples:

      dash-stream tail 'swarm.>'

      dash-stream tail 'swarm.*.agent.>' --where '{"priority":{"gte":"high"}}'

      dash-stream tail metrics.cpu --from earliest --json --limit 100 | jq .data

      dash-stream tail 'jobs.>' --cursor-file jobs.cursor

    With --cursor-file, a restart resumes where the last run stopped: no gap, no repeat.
    """
    from dash_stream.client import ClientError, ConnectError

    where_doc: dict[str, Any] | None = None
    if where is not None:
        try:
            where_doc = json.loads(where)
        except ValueError as e:
            fail(f"--where is not valid JSON ({e})")
        if not isinstance(where_doc, dict):
            fail("--where must be a JSON object of field -> condition")
    try:
        start: Literal["latest", "earliest"] = "earliest" if from_ is FromChoice.earliest else "latest"
        asyncio.run(_follow(url, token, topics, where_doc, start, as_json, cursor_file, limit))
    except KeyboardInterrupt:
        raise typer.Exit(0) from None
    except ConnectError as e:
        fail(cannot_connect(url, e.reason))
    except ClientError as e:
        hint = " (pass --token or set DASH_TOKEN)" if e.code == "unauthorized" and not token else ""
        fail((e.message if e.code == "closed" else f"{e.code}: {e.message}") + hint)
    except BrokenPipeError:
        # the reader went away (`| head`): exit quietly, as Unix filters do
        with contextlib.suppress(OSError):
            sys.stdout.close()
        raise typer.Exit(0) from None


def register(app: typer.Typer) -> None:
    """Add `tail` to the CLI."""
    app.command(help=tail.__doc__)(tail)
