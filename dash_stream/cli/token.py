"""`dash-stream token`: mint a JWT with topic ACLs for a client (PROTOCOL.md section 7)."""

from __future__ import annotations

import re
from pathlib import Path
from typing import Annotated

import typer

from dash_stream.cli.tools import fail, warn

_DURATION = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*([smhd]?)\s*$")
_UNIT_SECONDS = {"": 1, "s": 1, "m": 60, "h": 3600, "d": 86400}


def parse_duration(text: str) -> float:
    """Seconds from `90`, `90s`, `15m`, `1h` or `7d`; ValueError otherwise."""
    match = _DURATION.match(text.lower())
    if match is None:
        raise ValueError(f"{text!r} is not a duration like 90s, 15m, 1h or 7d")
    seconds = float(match.group(1)) * _UNIT_SECONDS[match.group(2)]
    if seconds <= 0:
        raise ValueError("the duration must be positive")
    return seconds


def token(
    sub: Annotated[str, typer.Option(help="Token subject: who the client is.")],
    subscribe: Annotated[
        list[str] | None, typer.Option(help="Topic pattern the client may subscribe to (repeatable).")
    ] = None,
    publish: Annotated[
        list[str] | None, typer.Option(help="Topic pattern the client may publish to (repeatable).")
    ] = None,
    ttl: Annotated[str, typer.Option(help="Lifetime: 90s, 15m, 1h, 7d.")] = "1h",
    secret: Annotated[
        str | None,
        typer.Option(
            help="HS256 secret (>= 32 bytes); prefer --secret-file or the env var.", envvar="DASH_JWT_SECRET"
        ),
    ] = None,
    secret_file: Annotated[
        Path | None,
        typer.Option(help="File holding the HS secret, or the PEM private key for RS256/ES256."),
    ] = None,
    algorithm: Annotated[
        str, typer.Option(help="HS256 (default), HS384, HS512, RS256, ES256, ...")
    ] = "HS256",
    issuer: Annotated[str | None, typer.Option(help="`iss` claim, if the server requires one.")] = None,
    audience: Annotated[str | None, typer.Option(help="`aud` claim, if the server requires one.")] = None,
) -> None:
    """Print a signed JWT for a client, with the topics it may subscribe and publish to.

    Examples:

      dash-stream token --secret-file secret --sub dash --subscribe 'swarm.>'

      export DASH_JWT_SECRET=...

      dash-stream token --sub agent-a7 --publish 'swarm.s1.agent.a7' --ttl 15m

      dash-stream token --algorithm RS256 --secret-file key.pem --sub b --subscribe '>'

    For RS256/ES256, --secret-file holds the PEM private key.
    """
    from dash_stream.filters import validate_pattern
    from dash_stream.protocol.errors import BadRequest
    from dash_stream.server.auth import HMAC_ALGORITHMS, mint_token

    if secret is not None and secret_file is not None:
        fail("give either --secret (or DASH_JWT_SECRET) or --secret-file, not both")
    key = secret
    if secret_file is not None:
        try:
            key = secret_file.read_text().strip() if algorithm in HMAC_ALGORITHMS else secret_file.read_text()
        except OSError as e:
            fail(f"cannot read {secret_file}: {e.strerror}")
    if not key:
        fail("no signing key: pass --secret-file, --secret or set DASH_JWT_SECRET")
    try:
        ttl_s = parse_duration(ttl)
    except ValueError as e:
        fail(f"--ttl: {e}")
    for flag, patterns in (("--subscribe", subscribe or []), ("--publish", publish or [])):
        for pattern in patterns:
            try:
                validate_pattern(pattern)
            except BadRequest as e:
                fail(f"{flag} {pattern!r}: {e.message}")
    if not subscribe and not publish:
        warn("the token allows no topics: add --subscribe and/or --publish patterns")
    try:
        jwt = mint_token(
            key,
            sub=sub,
            subscribe=subscribe or [],
            publish=publish or [],
            ttl_s=ttl_s,
            algorithm=algorithm,
            issuer=issuer,
            audience=audience,
        )
    except ValueError as e:
        fail(str(e))
    typer.echo(jwt)


def register(app: typer.Typer) -> None:
    """Add `token` to the CLI."""
    app.command(help=token.__doc__)(token)
