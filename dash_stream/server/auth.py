"""Authentication (PROTOCOL.md section 7): JWT and API-key verification and topic ACLs.

A verified credential becomes a `Principal`, a frozen value that answers "may this client subscribe
to that pattern / publish to that topic". Token text never appears in an exception message: every
failure is an `Unauthorized` with a fixed, human-readable reason, raised `from None` so that no
library error carrying token fragments rides along in a traceback.
"""

from __future__ import annotations

import hashlib
import hmac
import time
from collections.abc import Sequence
from typing import Any, Final, Literal

import jwt
import msgspec
from cryptography.hazmat.primitives.asymmetric.types import PublicKeyTypes
from cryptography.hazmat.primitives.serialization import load_pem_public_key
from jwt.exceptions import InvalidSubjectError

from dash_stream.filters import pattern_covers, topic_matches, validate_pattern
from dash_stream.protocol.errors import BadRequest, Unauthorized

HMAC_ALGORITHMS: Final = frozenset({"HS256", "HS384", "HS512"})
PUBLIC_KEY_ALGORITHMS: Final = frozenset(
    {"RS256", "RS384", "RS512", "PS256", "PS384", "PS512", "ES256", "ES384", "ES512", "EdDSA"}
)
KNOWN_ALGORITHMS: Final = HMAC_ALGORITHMS | PUBLIC_KEY_ALGORITHMS

MAX_TOKEN_CHARS: Final = 16 * 1024
MAX_SUB_CHARS: Final = 256
MAX_ACL_PATTERNS: Final = 256
ALL_TOPICS: Final = ">"

_MISSING_BEARER: Final = "missing Authorization: Bearer token"

# PyJWT failure -> the fixed reason we report; checked in order, so subclasses come first.
_JWT_ERRORS: Final[tuple[tuple[type[jwt.PyJWTError], str], ...]] = (
    (jwt.ExpiredSignatureError, "token expired"),
    (jwt.InvalidSignatureError, "token signature invalid"),
    (jwt.ImmatureSignatureError, "token not yet valid"),
    (jwt.InvalidIssuedAtError, "token claim 'iat' invalid"),
    (jwt.InvalidIssuerError, "token issuer invalid"),
    (jwt.InvalidAudienceError, "token audience invalid"),
    (jwt.InvalidAlgorithmError, "token algorithm not allowed"),
    (InvalidSubjectError, "token claim 'sub' must be a non-empty string"),
    (jwt.DecodeError, "token malformed"),
)


class AuthSettings(msgspec.Struct, frozen=True, kw_only=True):
    """How clients prove who they are; auth is off only with an explicit `dev=True`."""

    dev: bool = False
    jwt_secret: str | None = None
    jwt_public_key: str | None = None
    algorithms: tuple[str, ...] = ("HS256",)
    issuer: str | None = None
    audience: str | None = None
    leeway_s: float = 5.0
    api_keys: tuple[str, ...] = ()


class Principal(msgspec.Struct, frozen=True, kw_only=True):
    """A verified client: who it is, until when, and which topic patterns it may use."""

    sub: str
    kind: Literal["jwt", "api_key", "dev"]
    exp: float | None = None
    subscribe: tuple[str, ...] = ()
    publish: tuple[str, ...] = ()

    def can_subscribe(self, pattern: str) -> bool:
        """Whether some subscribe ACL covers every topic `pattern` can match (dev: always)."""
        if self.kind == "dev":
            return True
        return any(pattern_covers(acl, pattern) for acl in self.subscribe)

    def can_publish(self, topic: str) -> bool:
        """Whether some publish ACL matches the concrete `topic` (dev: always)."""
        if self.kind == "dev":
            return True
        return any(topic_matches(acl, topic) for acl in self.publish)

    def expired(self, now: float) -> bool:
        """Whether the credential has expired at unix time `now` (never, without an `exp`)."""
        return self.exp is not None and now >= self.exp


class _ApiKey(msgspec.Struct, frozen=True):
    digest: bytes
    principal: Principal


class Authenticator:
    """Verifies bearer credentials against validated settings; construct once at start-up."""

    def __init__(self, settings: AuthSettings) -> None:
        """Validate `settings`; a configuration that cannot work raises ValueError saying why."""
        self.settings = settings
        self.enabled = not settings.dev
        self._keys: dict[str, Any] = {}
        self._api_keys: tuple[_ApiKey, ...] = ()
        # enforce_minimum_key_length turns PyJWT's weak-key warning into an error; the keys were
        # already checked here, so it never fires in practice.
        self._jwt = jwt.PyJWT(options={"require": ["exp", "sub"], "enforce_minimum_key_length": True})
        if not self.enabled:
            return
        if settings.leeway_s < 0:
            raise ValueError("auth leeway_s must be >= 0")
        if settings.jwt_secret is None and settings.jwt_public_key is None and not settings.api_keys:
            raise ValueError(
                "auth is on but no credentials are configured: set jwt_secret (HS256), "
                "jwt_public_key (RS256/ES256) or api_keys, or turn auth off explicitly with dev mode"
            )
        if settings.jwt_secret is not None or settings.jwt_public_key is not None:
            self._keys = _verification_keys(settings)
        self._api_keys = _parse_api_keys(settings.api_keys)

    def dev_principal(self) -> Principal:
        """The all-access principal every client becomes when auth is off."""
        return Principal(sub="dev", kind="dev", subscribe=(ALL_TOPICS,), publish=(ALL_TOPICS,))

    def verify_token(self, token: str) -> Principal:
        """Verify a JWT and return its principal; Unauthorized with a fixed reason otherwise."""
        if not self.enabled:
            return self.dev_principal()
        if not self._keys:
            raise Unauthorized("token auth is not configured on this server")
        # A compact JWT is ASCII (base64url and dots); anything else never reaches the parser.
        if not isinstance(token, str) or not token or len(token) > MAX_TOKEN_CHARS or not token.isascii():
            raise Unauthorized("token malformed")
        try:
            header = jwt.get_unverified_header(token)
        except (jwt.PyJWTError, ValueError, TypeError):
            raise Unauthorized("token malformed") from None
        alg = header.get("alg")
        if not isinstance(alg, str):
            raise Unauthorized("token malformed")
        if alg.lower() == "none":
            raise Unauthorized("token algorithm 'none' not allowed")
        key = self._keys.get(alg)
        if key is None:
            # Echo the header value only when it is a name we know, never arbitrary token text.
            shown = f" {alg!r}" if alg in KNOWN_ALGORITHMS else ""
            raise Unauthorized(f"token algorithm{shown} not allowed")
        try:
            # The key was chosen by algorithm family, and only that one algorithm is allowed for
            # it: an HS256 token can never be checked against an RS/ES public key.
            claims = self._jwt.decode(
                token,
                key,
                algorithms=[alg],
                issuer=self.settings.issuer,
                audience=self.settings.audience,
                leeway=self.settings.leeway_s,
            )
        except jwt.MissingRequiredClaimError as exc:
            raise Unauthorized(f"token lacks {exc.claim!r}") from None
        except jwt.PyJWTError as exc:
            raise Unauthorized(_jwt_reason(exc)) from None
        except (ValueError, TypeError):
            raise Unauthorized("token malformed") from None
        return _principal_from_claims(claims)

    def verify_bearer(self, authorization: str | None) -> Principal:
        """Verify an HTTP `Authorization: Bearer <jwt or API key>` header value."""
        if not self.enabled:
            return self.dev_principal()
        if authorization is None or not authorization.strip():
            raise Unauthorized(_MISSING_BEARER)
        scheme, *rest = authorization.split(None, 1)
        credential = rest[0].strip() if rest else ""
        if scheme.lower() != "bearer":
            raise Unauthorized("Authorization must use the Bearer scheme")
        if not credential:
            raise Unauthorized(_MISSING_BEARER)
        principal = self._match_api_key(credential)
        if principal is not None:
            return principal
        if self._keys and credential.count(".") == 2:
            return self.verify_token(credential)
        raise Unauthorized("invalid API key or token" if self._keys else "invalid API key")

    def _match_api_key(self, credential: str) -> Principal | None:
        # Compare fixed-length digests against every key, without stopping early, so that neither
        # the key's length nor its position in the configuration shows in the timing.
        digest = hashlib.sha256(credential.encode("utf-8", "surrogatepass")).digest()
        found: Principal | None = None
        for entry in self._api_keys:
            if hmac.compare_digest(digest, entry.digest):
                found = entry.principal
        return found


def mint_token(
    secret_or_private_key: str,
    *,
    sub: str,
    subscribe: Sequence[str],
    publish: Sequence[str],
    ttl_s: float = 3600,
    algorithm: str = "HS256",
    issuer: str | None = None,
    audience: str | None = None,
    now: float | None = None,
) -> str:
    """Sign a dash-stream JWT (for `dash-stream token` and tests); `now` defaults to the wall clock."""
    if algorithm not in KNOWN_ALGORITHMS:
        raise ValueError(f"cannot sign with algorithm {algorithm!r}; use one of {sorted(KNOWN_ALGORITHMS)}")
    if algorithm in HMAC_ALGORITHMS:
        _check_secret_length(secret_or_private_key, algorithm)
    issued = time.time() if now is None else now
    claims: dict[str, Any] = {
        "sub": sub,
        "iat": int(issued),
        "exp": int(issued + ttl_s),
        "dash": {"subscribe": list(subscribe), "publish": list(publish)},
    }
    if issuer is not None:
        claims["iss"] = issuer
    if audience is not None:
        claims["aud"] = audience
    try:
        return jwt.PyJWT(options={"enforce_minimum_key_length": True}).encode(
            claims, secret_or_private_key, algorithm=algorithm
        )
    except (jwt.PyJWTError, ValueError, TypeError) as exc:
        raise ValueError(
            f"cannot sign a {algorithm} token with the given key: {type(exc).__name__}"
        ) from None


# ---------------------------------------------------------------- configuration


def _check_secret_length(secret: str, algorithm: str) -> None:
    minimum = {"HS256": 32, "HS384": 48, "HS512": 64}[algorithm]
    size = len(secret.encode())
    if size < minimum:
        raise ValueError(
            f"jwt_secret is {size} bytes; {algorithm} needs at least {minimum} bytes (RFC 7518 section 3.2)"
        )


def _verification_keys(settings: AuthSettings) -> dict[str, Any]:
    """The verification key for each allowed algorithm, checked once so a bad key fails at start-up."""
    algorithms = [alg for alg in settings.algorithms if alg.lower() != "none"]
    if not algorithms:
        raise ValueError("auth algorithms must list at least one of HS256, RS256, ES256 ('none' is ignored)")
    unknown = [alg for alg in algorithms if alg not in KNOWN_ALGORITHMS]
    if unknown:
        raise ValueError(f"unknown auth algorithms {unknown}; supported: {sorted(KNOWN_ALGORITHMS)}")
    public_key = _load_public_key(settings.jwt_public_key) if settings.jwt_public_key is not None else None
    keys: dict[str, Any] = {}
    for alg in algorithms:
        if alg in HMAC_ALGORITHMS:
            if settings.jwt_secret is None:
                raise ValueError(f"auth algorithm {alg} needs jwt_secret")
            _check_secret_length(settings.jwt_secret, alg)
            keys[alg] = settings.jwt_secret.encode()
        else:
            if public_key is None:
                raise ValueError(f"auth algorithm {alg} needs jwt_public_key (PEM)")
            keys[alg] = _prepare_public_key(public_key, alg)
    if settings.jwt_secret is not None and not HMAC_ALGORITHMS & keys.keys():
        raise ValueError(f"jwt_secret is set but no HS algorithm is allowed (algorithms={list(algorithms)})")
    if public_key is not None and not PUBLIC_KEY_ALGORITHMS & keys.keys():
        raise ValueError(
            f"jwt_public_key is set but no RS/ES algorithm is allowed (algorithms={list(algorithms)})"
        )
    return keys


def _load_public_key(pem: str) -> PublicKeyTypes:
    try:
        return load_pem_public_key(pem.encode())
    except (ValueError, TypeError):
        raise ValueError(
            "jwt_public_key is not a PEM public key (a private key does not belong on the server)"
        ) from None


def _prepare_public_key(public_key: PublicKeyTypes, alg: str) -> Any:
    algorithm = jwt.get_algorithm_by_name(alg)
    try:
        prepared = algorithm.prepare_key(public_key)
    except (jwt.PyJWTError, ValueError, TypeError):
        raise ValueError(f"jwt_public_key is not a {type(public_key).__name__} usable with {alg}") from None
    weak = algorithm.check_key_length(prepared)
    if weak:
        raise ValueError(f"jwt_public_key is too weak for {alg}: {weak}")
    return prepared


def _parse_api_keys(entries: Sequence[str]) -> tuple[_ApiKey, ...]:
    """Parse `KEY` (publish anywhere) and `KEY=pattern1,pattern2` entries; the key text is not kept."""
    parsed: list[_ApiKey] = []
    seen: set[bytes] = set()
    for number, entry in enumerate(entries, start=1):
        key, has_patterns, pattern_text = entry.partition("=")
        key = key.strip()
        if not key:
            raise ValueError(f"api_keys entry {number} has an empty key")
        publish: tuple[str, ...] = (ALL_TOPICS,)
        if has_patterns:
            publish = tuple(p.strip() for p in pattern_text.split(",") if p.strip())
            if not publish:
                raise ValueError(f"api_keys entry {number} has '=' but no publish patterns")
            bad = _first_bad_pattern(publish)
            if bad is not None:
                raise ValueError(f"api_keys entry {number}: invalid publish pattern {bad!r}")
        digest = hashlib.sha256(key.encode("utf-8", "surrogatepass")).digest()
        if digest in seen:
            raise ValueError(f"api_keys entry {number} repeats an earlier key")
        seen.add(digest)
        # The subject names the entry's position, never the key, so it is safe in logs and metrics.
        principal = Principal(sub=f"api-key:{number}", kind="api_key", publish=publish)
        parsed.append(_ApiKey(digest, principal))
    return tuple(parsed)


# ---------------------------------------------------------------- claims


def _jwt_reason(exc: jwt.PyJWTError) -> str:
    for kind, reason in _JWT_ERRORS:
        if isinstance(exc, kind):
            return reason
    return "token invalid"


def _principal_from_claims(claims: dict[str, Any]) -> Principal:
    sub = claims.get("sub")
    if not isinstance(sub, str) or not sub or len(sub) > MAX_SUB_CHARS:
        raise Unauthorized(f"token claim 'sub' must be a non-empty string of at most {MAX_SUB_CHARS} chars")
    exp = claims.get("exp")
    if isinstance(exp, bool) or not isinstance(exp, int | float):
        raise Unauthorized("token claim 'exp' must be a number")
    dash = claims.get("dash", {})
    if dash is None:
        dash = {}
    if not isinstance(dash, dict):
        raise Unauthorized("token claim 'dash' must be an object with 'subscribe' and 'publish' lists")
    return Principal(
        sub=sub,
        kind="jwt",
        exp=float(exp),
        subscribe=_acl(dash, "subscribe"),
        publish=_acl(dash, "publish"),
    )


def _acl(dash: dict[str, Any], name: str) -> tuple[str, ...]:
    value = dash.get(name, [])
    if value is None:
        value = []
    if (
        not isinstance(value, list)
        or len(value) > MAX_ACL_PATTERNS
        or not all(isinstance(p, str) for p in value)
        or _first_bad_pattern(value) is not None
    ):
        raise Unauthorized(f"token claim 'dash.{name}' must be a list of topic patterns")
    return tuple(value)


def _first_bad_pattern(patterns: Sequence[str]) -> str | None:
    """The first pattern that is not a valid topic pattern (PROTOCOL.md section 3), or None."""
    for pattern in patterns:
        try:
            validate_pattern(pattern)
        except BadRequest:
            return pattern
    return None
