"""`dash-stream publish`: one event from flags, or many from a JSON-lines file, over HTTP.

Lines are checked here first (a bad line is reported with its number and skipped), then sent in
batches to `POST /v1/events`. Each batch carries an `Idempotency-Key`, so a batch retried after a
429/503 or a dropped connection is never appended twice. A batch the server rejects because of
one event (it names `events[i]`) is sent again without that event, so one bad event costs only
itself.
"""

from __future__ import annotations

import enum
import re
import sys
import time
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import IO, TYPE_CHECKING, Annotated, Any

import msgspec
import typer

from dash_stream.cli.tools import (
    DEFAULT_URL,
    EXIT_FAILED,
    TokenOption,
    UrlOption,
    cannot_connect,
    fail,
    progress_enabled,
)
from dash_stream.events import EventIn

if TYPE_CHECKING:  # imported where used, so that `dash-stream --help` and `serve` start fast
    import httpx
    from rich.console import Console

_MAX_ATTEMPTS = 30  # per batch, for 429/503/5xx and dropped connections
_INDEX = re.compile(r"events\[(\d+)\]")
_event_decoder = msgspec.json.Decoder(EventIn)


class PriorityChoice(enum.StrEnum):
    """Event priorities (PROTOCOL.md section 1)."""

    low = "low"
    normal = "normal"
    high = "high"
    critical = "critical"


class Tally:
    """What happened to the events so far."""

    def __init__(self) -> None:
        self.accepted = 0
        self.duplicates = 0
        self.failed = 0
        self.offsets: list[str] = []

    def line(self, elapsed: float) -> str:
        """The summary line, e.g. `accepted 998, duplicates 2, failed 1 in 0.41s (2434 events/s)`."""
        rate = (self.accepted + self.duplicates) / elapsed if elapsed > 0 else 0.0
        return (
            f"accepted {self.accepted}, duplicates {self.duplicates}, failed {self.failed} "
            f"in {elapsed:.2f}s ({rate:.0f} events/s)"
        )


class _Fatal(Exception):
    """Nothing more can succeed (unreachable server, bad credentials, wrong URL)."""


class Sender:
    """Sends batches to `POST /v1/events`, honouring Retry-After, and reports per line."""

    def __init__(self, url: str, token: str | None, report: Callable[[str], None], tally: Tally) -> None:
        """`report(message)` prints a per-line problem without disturbing the progress bar."""
        self.url = url.rstrip("/")
        headers = {"Content-Type": "application/json"}
        if token:
            headers["Authorization"] = f"Bearer {token}"
        import httpx

        self.http = httpx.Client(base_url=self.url, headers=headers, timeout=30.0)
        self.report = report
        self.tally = tally

    def close(self) -> None:
        """Release the HTTP connection pool."""
        self.http.close()

    def send(self, batch: list[tuple[int, bytes]], *, single: bool = False) -> None:
        """Publish `(line number, event JSON)` pairs; failures are counted and reported by line."""
        while batch:
            body = batch[0][1] if single else b'{"events":[' + b",".join(raw for _, raw in batch) + b"]}"
            status, doc = self._post(body)
            if status == 202:
                duplicates = int(doc.get("duplicates", 0))
                self.tally.duplicates += duplicates
                self.tally.accepted += int(doc.get("accepted", len(batch))) - duplicates
                self.tally.offsets.extend(doc.get("offsets", []))
                return
            message = _error_message(doc, status)
            match = _INDEX.search(message)
            if single or match is None or int(match.group(1)) >= len(batch):
                first, last = batch[0][0], batch[-1][0]
                where = f"line {first}" if first == last else f"lines {first}-{last}"
                self.report(f"{where}: {message}" if first > 0 else message)
                self.tally.failed += len(batch)
                return
            index = int(match.group(1))
            number, _ = batch.pop(index)
            self.report(f"line {number}: {_INDEX.sub('event', message, count=1)}")
            self.tally.failed += 1

    def _post(self, body: bytes) -> tuple[int, dict[str, Any]]:
        """POST with retries for 429, 503/5xx and dropped connections; the same key every time."""
        import httpx

        key = uuid.uuid4().hex
        for attempt in range(1, _MAX_ATTEMPTS + 1):
            try:
                response = self.http.post("/v1/events", content=body, headers={"Idempotency-Key": key})
            except httpx.ConnectError as e:
                raise _Fatal(cannot_connect(self.url, _connect_reason(e))) from None
            except httpx.ConnectTimeout:
                raise _Fatal(cannot_connect(self.url, "timed out")) from None
            except httpx.TransportError as e:
                if attempt >= 3:
                    raise _Fatal(f"lost the connection to {self.url}: {type(e).__name__}") from None
                time.sleep(0.5 * attempt)
                continue
            doc = _json(response)
            status = response.status_code
            if status in (429, 500, 502, 503, 504) and attempt < _MAX_ATTEMPTS:
                time.sleep(_retry_after(response, doc, attempt))
                continue
            if status == 401:
                detail = _error_message(doc, status, with_code=False)
                raise _Fatal(f"unauthorized: {detail} (pass --token or set DASH_TOKEN)")
            if status in (404, 405):
                raise _Fatal(f"{self.url}/v1/events answered {status}: is this a dash-stream server?")
            return status, doc
        raise AssertionError("unreachable")  # the last attempt returns


def _json(response: httpx.Response) -> dict[str, Any]:
    try:
        doc = response.json()
    except ValueError:
        return {}
    return doc if isinstance(doc, dict) else {}


def _error_message(doc: dict[str, Any], status: int, with_code: bool = True) -> str:
    """`code: message` from the one error shape of PROTOCOL.md section 5."""
    error = doc.get("error")
    if isinstance(error, dict) and isinstance(error.get("message"), str):
        code = error.get("code")
        return f"{code}: {error['message']}" if code and with_code else str(error["message"])
    return f"HTTP {status}"


def _retry_after(response: httpx.Response, doc: dict[str, Any], attempt: int) -> float:
    header = response.headers.get("retry-after", "")
    try:
        return min(60.0, max(0.05, float(header)))
    except ValueError:
        return min(30.0, 0.25 * 2.0**attempt)


def _connect_reason(error: httpx.ConnectError) -> str:
    text = str(error).lower()
    if "refused" in text:
        return "connection refused"
    if "name or service" in text or "nodename" in text or "getaddrinfo" in text:
        return "unknown host"
    return str(error) or "connect failed"


# ---------------------------------------------------------------- input


def _lines(source: IO[bytes]) -> Iterator[tuple[int, bytes]]:
    """Non-blank lines with their 1-based numbers."""
    for number, line in enumerate(source, start=1):
        stripped = line.strip()
        if stripped:
            yield number, stripped


def _check_line(raw: bytes) -> str | None:
    """Why a line is not a publishable event, or None when it is."""
    try:
        _event_decoder.decode(raw)
    except msgspec.ValidationError as e:
        return str(e).replace("`$.", "`").replace("`$`", "the line")
    except msgspec.DecodeError as e:
        return f"not valid JSON ({e})"
    return None


def _event_from_flags(
    topic: str,
    type_: str,
    priority: PriorityChoice | None,
    source: str | None,
    labels: list[str] | None,
    data: str | None,
    id_: str | None,
) -> bytes:
    doc: dict[str, Any] = {"topic": topic, "type": type_}
    if priority is not None:
        doc["priority"] = priority.value
    if source is not None:
        doc["source"] = source
    if id_ is not None:
        doc["id"] = id_
    if labels:
        pairs: dict[str, str] = {}
        for item in labels:
            key, eq, value = item.partition("=")
            if not eq or not key:
                fail(f"--label {item!r}: expected KEY=VALUE")
            pairs[key] = value
        doc["labels"] = pairs
    if data is not None:
        try:
            doc["data"] = msgspec.json.decode(data)
        except msgspec.DecodeError as e:
            fail(f"--data is not valid JSON ({e}); quote strings: --data '\"text\"'")
    raw = msgspec.json.encode(doc)
    problem = _check_line(raw)
    if problem is not None:
        fail(f"invalid event: {problem}")
    return raw


# ---------------------------------------------------------------- command


def publish(
    topic: Annotated[str | None, typer.Option(help="Topic of the one event, e.g. swarm.s1.agent.a7.")] = None,
    type_: Annotated[str | None, typer.Option("--type", help="Event type, e.g. agent.failed.")] = None,
    priority: Annotated[PriorityChoice | None, typer.Option(help="Priority (default normal).")] = None,
    source: Annotated[str | None, typer.Option(help="Who emitted it (default unknown).")] = None,
    label: Annotated[
        list[str] | None, typer.Option("--label", "-l", help="Label KEY=VALUE (repeatable).")
    ] = None,
    data: Annotated[str | None, typer.Option(help="Payload as JSON.")] = None,
    id_: Annotated[
        str | None, typer.Option("--id", help="Event id: a retry with the same id is dropped.")
    ] = None,
    file: Annotated[
        str | None, typer.Option("--file", "-f", help="JSON-lines file of events, or - for stdin.")
    ] = None,
    batch_size: Annotated[int, typer.Option(min=1, max=1000, help="Events per HTTP request.")] = 500,
    url: UrlOption = DEFAULT_URL,
    token: TokenOption = None,
    quiet: Annotated[bool, typer.Option("--quiet", "-q", help="No progress bar and no summary.")] = False,
) -> None:
    """Publish one event from flags, or many from a JSON-lines file, over HTTP.

    Examples:

      dash-stream publish --topic swarm.s1.a7 --type agent.failed --data '{"n":1}'

      dash-stream publish --topic jobs.j1 --type task.done --priority high -l swarm=s1

      dash-stream publish --file events.jsonl --batch-size 1000

      generate-events | dash-stream publish --file - --quiet

    Exit codes:

      0  all published (repeats are counted as duplicates)

      1  some events failed; each is reported with its line number

      2  usage, connection or credential error
    """
    if file is not None and (topic is not None or type_ is not None):
        fail("give either --topic/--type for one event, or --file for many, not both")
    if file is None and (topic is None or type_ is None):
        fail("give --topic and --type for one event, or --file PATH (- for stdin) for many")
    show_progress = progress_enabled(quiet)
    from rich.console import Console

    console = Console(stderr=True)
    tally = Tally()

    def report(message: str) -> None:
        console.print(f"[red]error:[/red] {message}", markup=True, highlight=False, soft_wrap=True)

    sender = Sender(url, token, report, tally)
    started = time.perf_counter()
    try:
        if file is None:
            assert topic is not None and type_ is not None
            sender.send(
                [(0, _event_from_flags(topic, type_, priority, source, label, data, id_))], single=True
            )
        else:
            _publish_file(file, sender, tally, report, batch_size, show_progress, console)
    except _Fatal as e:
        fail(str(e))
    except KeyboardInterrupt:
        fail(f"interrupted; {tally.line(time.perf_counter() - started)}", EXIT_FAILED)
    finally:
        sender.close()
    if not quiet:
        summary = tally.line(time.perf_counter() - started)
        if file is None and tally.offsets:
            summary += f"; offset {tally.offsets[0]}"
        typer.echo(summary)
    if tally.failed:
        raise typer.Exit(EXIT_FAILED)


def _publish_file(
    file: str,
    sender: Sender,
    tally: Tally,
    report: Callable[[str], None],
    batch_size: int,
    show_progress: bool,
    console: Console,
) -> None:
    if file == "-":
        source: IO[bytes] = sys.stdin.buffer
        total: int | None = None
    else:
        path = Path(file)
        try:
            source = path.open("rb")
        except OSError as e:
            fail(f"cannot read {path}: {e.strerror}")
        total = _count_lines(path) if show_progress else None
    from rich.progress import (
        BarColumn,
        MofNCompleteColumn,
        Progress,
        SpinnerColumn,
        TextColumn,
        TimeElapsedColumn,
    )

    progress = Progress(
        SpinnerColumn(),
        TextColumn("publishing"),
        BarColumn(),
        MofNCompleteColumn(),
        TextColumn("{task.fields[rate]} events/s"),
        TimeElapsedColumn(),
        console=console,
        disable=not show_progress,
        transient=True,
    )
    started = time.perf_counter()
    with source, progress:
        task = progress.add_task("publish", total=total, rate="0")
        batch: list[tuple[int, bytes]] = []

        def flush() -> None:
            sender.send(batch)
            batch.clear()
            done = tally.accepted + tally.duplicates + tally.failed
            rate = f"{done / max(1e-9, time.perf_counter() - started):.0f}"
            progress.update(task, completed=done, rate=rate)

        for number, raw in _lines(source):
            problem = _check_line(raw)
            if problem is not None:
                report(f"line {number}: {problem}")
                tally.failed += 1
                continue
            batch.append((number, raw))
            if len(batch) >= batch_size:
                flush()
        if batch:
            flush()


def _count_lines(path: Path) -> int | None:
    try:
        with path.open("rb") as f:
            return sum(1 for line in f if line.strip())
    except OSError:
        return None


def register(app: typer.Typer) -> None:
    """Add `publish` to the CLI."""
    app.command(help=publish.__doc__)(publish)
