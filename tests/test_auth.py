"""JWT and API-key verification, topic ACLs and auth configuration (PROTOCOL.md section 7)."""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
import time
from typing import Any

import jwt
import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec, rsa

from dash_stream.protocol.errors import ErrorCode, Unauthorized
from dash_stream.server.auth import Authenticator, AuthSettings, Principal, mint_token

SECRET = "s" * 32
OTHER_SECRET = "o" * 32


def _private_pem(key: rsa.RSAPrivateKey | ec.EllipticCurvePrivateKey) -> str:
    return key.private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
    ).decode()


def _public_pem(key: rsa.RSAPrivateKey | ec.EllipticCurvePrivateKey) -> str:
    return (
        key.public_key()
        .public_bytes(serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo)
        .decode()
    )


@pytest.fixture(scope="module")
def rsa_key() -> rsa.RSAPrivateKey:
    return rsa.generate_private_key(public_exponent=65537, key_size=2048)


@pytest.fixture(scope="module")
def ec_key() -> ec.EllipticCurvePrivateKey:
    return ec.generate_private_key(ec.SECP256R1())


@pytest.fixture
def hs_auth() -> Authenticator:
    return Authenticator(AuthSettings(jwt_secret=SECRET))


def _b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


def _raw_token(header: dict[str, Any], claims: dict[str, Any], sign: bytes | None = None) -> str:
    """A hand-built JWT: HMAC-SHA256 signed with `sign`, or with an empty signature when None."""
    signing_input = f"{_b64(json.dumps(header).encode())}.{_b64(json.dumps(claims).encode())}"
    signature = b"" if sign is None else hmac.new(sign, signing_input.encode(), hashlib.sha256).digest()
    return f"{signing_input}.{_b64(signature)}"


def _claims(**overrides: Any) -> dict[str, Any]:
    claims: dict[str, Any] = {"sub": "agent-7", "exp": int(time.time()) + 600, "dash": {}}
    claims.update(overrides)
    return {k: v for k, v in claims.items() if v is not None}


def _hs_token(**overrides: Any) -> str:
    return jwt.encode(_claims(**overrides), SECRET, algorithm="HS256")


def _rejects(auth: Authenticator, token: str, message: str) -> Unauthorized:
    with pytest.raises(Unauthorized) as info:
        auth.verify_token(token)
    error = info.value
    assert error.message == message
    assert error.code is ErrorCode.UNAUTHORIZED
    assert not token or token not in str(error)
    # no library error (which may quote the token) rides along in a traceback
    assert error.__cause__ is None
    assert error.__context__ is None or error.__suppress_context__
    return error


# ---------------------------------------------------------------- JWT: HS256


def test_hs256_token_verifies_to_its_principal(hs_auth: Authenticator) -> None:
    token = mint_token(SECRET, sub="dash-ui", subscribe=["swarm.>"], publish=["swarm.s1.>"], ttl_s=60)
    principal = hs_auth.verify_token(token)
    assert principal.sub == "dash-ui"
    assert principal.kind == "jwt"
    assert principal.subscribe == ("swarm.>",)
    assert principal.publish == ("swarm.s1.>",)
    assert principal.exp is not None
    assert time.time() + 50 < principal.exp <= time.time() + 61
    assert not principal.expired(time.time())
    assert principal.expired(principal.exp)
    assert hs_auth.enabled


def test_expired_token_is_rejected(hs_auth: Authenticator) -> None:
    token = mint_token(SECRET, sub="a", subscribe=[], publish=[], ttl_s=-60)
    _rejects(hs_auth, token, "token expired")


def test_token_just_expired_is_accepted_within_leeway(hs_auth: Authenticator) -> None:
    token = mint_token(SECRET, sub="a", subscribe=[], publish=[], ttl_s=-2)
    assert hs_auth.verify_token(token).sub == "a"
    strict = Authenticator(AuthSettings(jwt_secret=SECRET, leeway_s=0))
    _rejects(strict, token, "token expired")


def test_token_signed_with_another_secret_is_rejected(hs_auth: Authenticator) -> None:
    token = mint_token(OTHER_SECRET, sub="a", subscribe=[">"], publish=[">"])
    _rejects(hs_auth, token, "token signature invalid")


def test_tampered_claims_are_rejected(hs_auth: Authenticator) -> None:
    header, _, signature = _hs_token(dash={"subscribe": ["a.>"]}).split(".")
    forged = _b64(json.dumps(_claims(dash={"subscribe": [">"]})).encode())
    _rejects(hs_auth, f"{header}.{forged}.{signature}", "token signature invalid")


@pytest.mark.parametrize("alg", ["none", "None", "NONE"])
def test_alg_none_is_rejected(alg: str) -> None:
    token = _raw_token({"alg": alg, "typ": "JWT"}, _claims(dash={"publish": [">"]}))
    # even when configured: "none" is never accepted
    auth = Authenticator(AuthSettings(jwt_secret=SECRET, algorithms=("HS256", "none")))
    _rejects(auth, token, "token algorithm 'none' not allowed")


@pytest.mark.parametrize(
    "token",
    ["", "abc", "a.b.c", "a.b", "....", "x" * 20_000, "\udcff.a.b", "ключ.a.b", "eyJhbGciOiJIUzI1NiJ9.é.x"],
)
def test_malformed_tokens_are_rejected(hs_auth: Authenticator, token: str) -> None:
    _rejects(hs_auth, token, "token malformed")


def test_unknown_header_algorithm_is_not_echoed(hs_auth: Authenticator) -> None:
    token = _raw_token({"alg": "evil<script>"}, _claims(), sign=SECRET.encode())
    _rejects(hs_auth, token, "token algorithm not allowed")


def test_algorithm_not_in_the_allowed_list_is_rejected() -> None:
    auth = Authenticator(AuthSettings(jwt_secret="h" * 64, algorithms=("HS512",)))
    token = jwt.encode(_claims(), "h" * 64, algorithm="HS256")
    _rejects(auth, token, "token algorithm 'HS256' not allowed")
    assert auth.verify_token(jwt.encode(_claims(), "h" * 64, algorithm="HS512")).sub == "agent-7"


# ---------------------------------------------------------------- JWT: RS256 / ES256


def test_rs256_token_verifies(rsa_key: rsa.RSAPrivateKey) -> None:
    auth = Authenticator(AuthSettings(jwt_public_key=_public_pem(rsa_key), algorithms=("RS256",)))
    token = mint_token(_private_pem(rsa_key), sub="rs", subscribe=["a.*"], publish=[], algorithm="RS256")
    principal = auth.verify_token(token)
    assert (principal.sub, principal.subscribe, principal.publish) == ("rs", ("a.*",), ())


def test_es256_token_verifies(ec_key: ec.EllipticCurvePrivateKey) -> None:
    auth = Authenticator(AuthSettings(jwt_public_key=_public_pem(ec_key), algorithms=("ES256",)))
    token = mint_token(_private_pem(ec_key), sub="es", subscribe=[], publish=["b.>"], algorithm="ES256")
    assert auth.verify_token(token).publish == ("b.>",)


def test_es256_token_from_another_key_is_rejected(ec_key: ec.EllipticCurvePrivateKey) -> None:
    auth = Authenticator(AuthSettings(jwt_public_key=_public_pem(ec_key), algorithms=("ES256",)))
    stranger = _private_pem(ec.generate_private_key(ec.SECP256R1()))
    token = mint_token(stranger, sub="es", subscribe=[], publish=[], algorithm="ES256")
    _rejects(auth, token, "token signature invalid")


def test_rs256_server_rejects_hs256_token_signed_with_its_public_key(rsa_key: rsa.RSAPrivateKey) -> None:
    public_pem = _public_pem(rsa_key)
    auth = Authenticator(AuthSettings(jwt_public_key=public_pem, algorithms=("RS256",)))
    forged = _raw_token({"alg": "HS256", "typ": "JWT"}, _claims(), sign=public_pem.encode())
    _rejects(auth, forged, "token algorithm 'HS256' not allowed")


def test_mixed_server_checks_hs256_against_the_secret_only(rsa_key: rsa.RSAPrivateKey) -> None:
    public_pem = _public_pem(rsa_key)
    auth = Authenticator(
        AuthSettings(jwt_secret=SECRET, jwt_public_key=public_pem, algorithms=("HS256", "RS256"))
    )
    forged = _raw_token({"alg": "HS256", "typ": "JWT"}, _claims(), sign=public_pem.encode())
    _rejects(auth, forged, "token signature invalid")
    assert auth.verify_token(_hs_token()).sub == "agent-7"
    rs = mint_token(_private_pem(rsa_key), sub="rs", subscribe=[], publish=[], algorithm="RS256")
    assert auth.verify_token(rs).sub == "rs"


def test_es256_token_on_rs256_server_is_rejected(ec_key: ec.EllipticCurvePrivateKey) -> None:
    rsa_public = _public_pem(rsa.generate_private_key(public_exponent=65537, key_size=2048))
    auth = Authenticator(AuthSettings(jwt_public_key=rsa_public, algorithms=("RS256",)))
    token = mint_token(_private_pem(ec_key), sub="es", subscribe=[], publish=[], algorithm="ES256")
    _rejects(auth, token, "token algorithm 'ES256' not allowed")


# ---------------------------------------------------------------- issuer, audience, required claims


def test_issuer_is_enforced_when_configured() -> None:
    auth = Authenticator(AuthSettings(jwt_secret=SECRET, issuer="https://issuer.example"))
    good = mint_token(SECRET, sub="a", subscribe=[], publish=[], issuer="https://issuer.example")
    assert auth.verify_token(good).sub == "a"
    wrong = mint_token(SECRET, sub="a", subscribe=[], publish=[], issuer="https://evil.example")
    _rejects(auth, wrong, "token issuer invalid")
    _rejects(auth, mint_token(SECRET, sub="a", subscribe=[], publish=[]), "token lacks 'iss'")


def test_audience_is_enforced_when_configured() -> None:
    auth = Authenticator(AuthSettings(jwt_secret=SECRET, audience="dash-stream"))
    good = mint_token(SECRET, sub="a", subscribe=[], publish=[], audience="dash-stream")
    assert auth.verify_token(good).sub == "a"
    wrong = mint_token(SECRET, sub="a", subscribe=[], publish=[], audience="other-service")
    _rejects(auth, wrong, "token audience invalid")
    _rejects(auth, mint_token(SECRET, sub="a", subscribe=[], publish=[]), "token lacks 'aud'")


def test_token_for_another_audience_is_rejected_when_none_configured(hs_auth: Authenticator) -> None:
    token = mint_token(SECRET, sub="a", subscribe=[], publish=[], audience="other-service")
    _rejects(hs_auth, token, "token audience invalid")


def test_missing_exp_is_rejected(hs_auth: Authenticator) -> None:
    token = jwt.encode({"sub": "a"}, SECRET, algorithm="HS256")
    _rejects(hs_auth, token, "token lacks 'exp'")


def test_missing_sub_is_rejected(hs_auth: Authenticator) -> None:
    _rejects(hs_auth, _hs_token(sub=None), "token lacks 'sub'")


@pytest.mark.parametrize("sub", ["", 42, "x" * 257])
def test_bad_sub_is_rejected(hs_auth: Authenticator, sub: object) -> None:
    with pytest.raises(Unauthorized, match="token claim 'sub' must be a non-empty string"):
        hs_auth.verify_token(_hs_token(sub=sub))


def test_non_numeric_exp_is_rejected(hs_auth: Authenticator) -> None:
    with pytest.raises(Unauthorized):
        hs_auth.verify_token(_hs_token(exp="tomorrow"))
    _rejects(hs_auth, _hs_token(exp=str(int(time.time()) + 600)), "token claim 'exp' must be a number")


# ---------------------------------------------------------------- the dash claim


def test_missing_dash_claim_means_no_access(hs_auth: Authenticator) -> None:
    principal = hs_auth.verify_token(_hs_token(dash=None))
    assert (principal.subscribe, principal.publish) == ((), ())
    assert not principal.can_subscribe("a")
    assert not principal.can_publish("a")


def test_dash_claim_may_omit_one_list(hs_auth: Authenticator) -> None:
    principal = hs_auth.verify_token(_hs_token(dash={"subscribe": ["a.>"]}))
    assert (principal.subscribe, principal.publish) == (("a.>",), ())


@pytest.mark.parametrize(
    ("dash", "message"),
    [
        ("swarm.>", "token claim 'dash' must be an object with 'subscribe' and 'publish' lists"),
        (["swarm.>"], "token claim 'dash' must be an object with 'subscribe' and 'publish' lists"),
        ({"subscribe": "swarm.>"}, "token claim 'dash.subscribe' must be a list of topic patterns"),
        ({"subscribe": [1]}, "token claim 'dash.subscribe' must be a list of topic patterns"),
        ({"subscribe": ["a..b"]}, "token claim 'dash.subscribe' must be a list of topic patterns"),
        ({"subscribe": ["a.>.b"]}, "token claim 'dash.subscribe' must be a list of topic patterns"),
        ({"publish": {"a": 1}}, "token claim 'dash.publish' must be a list of topic patterns"),
        ({"publish": ["ok", "bad topic"]}, "token claim 'dash.publish' must be a list of topic patterns"),
        ({"publish": ["a"] * 257}, "token claim 'dash.publish' must be a list of topic patterns"),
    ],
)
def test_malformed_dash_claim_is_rejected(hs_auth: Authenticator, dash: object, message: str) -> None:
    _rejects(hs_auth, _hs_token(dash=dash), message)


# ---------------------------------------------------------------- ACLs


def _principal(subscribe: tuple[str, ...] = (), publish: tuple[str, ...] = ()) -> Principal:
    return Principal(sub="t", kind="jwt", exp=None, subscribe=subscribe, publish=publish)


def test_subscribe_acl_must_cover_the_whole_pattern() -> None:
    principal = _principal(subscribe=("swarm.s1.>",))
    for allowed in ("swarm.s1.>", "swarm.s1.*", "swarm.s1.agent.a7", "swarm.s1.*.a7", "swarm.s1.agent.>"):
        assert principal.can_subscribe(allowed), allowed
    for denied in ("swarm.>", "swarm.*.x", "swarm.*.>", "swarm.s1", "swarm.s2.x", ">", "*.s1.x"):
        assert not principal.can_subscribe(denied), denied


def test_subscribe_with_several_acl_patterns() -> None:
    principal = _principal(subscribe=("metrics.*", "swarm.s1.>"))
    assert principal.can_subscribe("metrics.cpu")
    assert principal.can_subscribe("metrics.*")
    assert not principal.can_subscribe("metrics.>")
    assert not principal.can_subscribe("metrics.cpu.core0")
    assert principal.can_subscribe("swarm.s1.x")


def test_invalid_subscribe_pattern_is_never_allowed() -> None:
    assert not _principal(subscribe=(">",)).can_subscribe("a..b")


def test_publish_acl_matches_concrete_topics() -> None:
    principal = _principal(publish=("swarm.s1.>", "metrics.*"))
    assert principal.can_publish("swarm.s1.agent.a7")
    assert principal.can_publish("metrics.cpu")
    assert not principal.can_publish("swarm.s1")
    assert not principal.can_publish("swarm.s2.agent.a7")
    assert not principal.can_publish("metrics.cpu.core0")


def test_publish_acl_is_separate_from_subscribe_acl() -> None:
    principal = _principal(subscribe=(">",))
    assert principal.can_subscribe("anything.at.all")
    assert not principal.can_publish("anything")


def test_principal_without_exp_never_expires() -> None:
    assert not _principal().expired(1e12)
    assert Principal(sub="t", kind="jwt", exp=100.0).expired(100.0)
    assert not Principal(sub="t", kind="jwt", exp=100.0).expired(99.9)


# ---------------------------------------------------------------- HTTP bearer and API keys


@pytest.fixture
def key_auth() -> Authenticator:
    return Authenticator(
        AuthSettings(jwt_secret=SECRET, api_keys=("plain-key-123", "scoped-key-456=swarm.s1.>,metrics.*"))
    )


def test_bearer_jwt(key_auth: Authenticator) -> None:
    assert key_auth.verify_bearer(f"Bearer {_hs_token()}").sub == "agent-7"
    assert key_auth.verify_bearer(f"bearer  {_hs_token()} ").kind == "jwt"
    assert key_auth.verify_bearer(f"Bearer\t{_hs_token()}").kind == "jwt"
    with pytest.raises(Unauthorized, match="token malformed"):
        key_auth.verify_bearer("Bearer \udcff.a.b")


def test_plain_api_key_may_publish_anywhere(key_auth: Authenticator) -> None:
    principal = key_auth.verify_bearer("Bearer plain-key-123")
    assert principal.kind == "api_key"
    assert principal.exp is None
    assert "plain-key-123" not in principal.sub
    assert principal.can_publish("any.topic.at.all")
    assert not principal.can_subscribe("any.topic")


def test_scoped_api_key_publishes_only_its_patterns(key_auth: Authenticator) -> None:
    principal = key_auth.verify_bearer("Bearer scoped-key-456")
    assert principal.publish == ("swarm.s1.>", "metrics.*")
    assert principal.can_publish("swarm.s1.agent.a7")
    assert principal.can_publish("metrics.cpu")
    assert not principal.can_publish("swarm.s2.agent.a7")
    assert "scoped-key-456" not in principal.sub
    assert principal.sub != key_auth.verify_bearer("Bearer plain-key-123").sub


@pytest.mark.parametrize("credential", ["plain-key-12", "plain-key-1234", "PLAIN-KEY-123", "ключ", "\udcff"])
def test_wrong_api_key_is_rejected(key_auth: Authenticator, credential: str) -> None:
    with pytest.raises(Unauthorized, match=r"^invalid API key or token$") as info:
        key_auth.verify_bearer(f"Bearer {credential}")
    assert credential not in str(info.value)


def test_bad_jwt_in_bearer_is_rejected(key_auth: Authenticator) -> None:
    with pytest.raises(Unauthorized, match="token signature invalid"):
        key_auth.verify_bearer(f"Bearer {mint_token(OTHER_SECRET, sub='a', subscribe=[], publish=[])}")


@pytest.mark.parametrize("header", [None, "", "   ", "Bearer", "Bearer   "])
def test_missing_bearer_token(key_auth: Authenticator, header: str | None) -> None:
    with pytest.raises(Unauthorized, match=r"^missing Authorization: Bearer token$"):
        key_auth.verify_bearer(header)


def test_other_auth_schemes_are_rejected(key_auth: Authenticator) -> None:
    with pytest.raises(Unauthorized, match="Bearer scheme"):
        key_auth.verify_bearer("Basic cGxhaW4ta2V5LTEyMw==")


def test_api_keys_only_server() -> None:
    auth = Authenticator(AuthSettings(api_keys=("only-key",)))
    assert auth.verify_bearer("Bearer only-key").kind == "api_key"
    with pytest.raises(Unauthorized, match=r"^invalid API key$"):
        auth.verify_bearer(f"Bearer {_hs_token()}")
    with pytest.raises(Unauthorized, match="token auth is not configured"):
        auth.verify_token(_hs_token())


# ---------------------------------------------------------------- dev mode


def test_dev_mode_makes_everyone_the_dev_principal() -> None:
    auth = Authenticator(AuthSettings(dev=True))
    assert not auth.enabled
    principal = auth.verify_bearer(None)
    assert principal == auth.dev_principal()
    assert principal.sub == "dev"
    assert principal.kind == "dev"
    assert principal.subscribe == principal.publish == (">",)
    assert principal.can_subscribe(">")
    assert principal.can_subscribe("a.*.b")
    assert principal.can_publish("a")
    assert not principal.expired(time.time())
    assert auth.verify_token("garbage").kind == "dev"


# ---------------------------------------------------------------- configuration


def test_auth_without_any_credentials_is_a_config_error() -> None:
    with pytest.raises(ValueError, match="no credentials are configured"):
        Authenticator(AuthSettings())


@pytest.mark.parametrize(
    ("settings", "message"),
    [
        (AuthSettings(jwt_secret="short"), "jwt_secret is 5 bytes; HS256 needs at least 32 bytes"),
        (AuthSettings(jwt_secret=SECRET, algorithms=("HS512",)), "HS512 needs at least 64 bytes"),
        (AuthSettings(jwt_secret=SECRET, algorithms=("RS256",)), "RS256 needs jwt_public_key"),
        (AuthSettings(jwt_secret=SECRET, algorithms=("none",)), "must list at least one"),
        (AuthSettings(jwt_secret=SECRET, algorithms=()), "must list at least one"),
        (AuthSettings(jwt_secret=SECRET, algorithms=("HS1",)), "unknown auth algorithms"),
        (AuthSettings(jwt_public_key="not a pem", algorithms=("RS256",)), "not a PEM public key"),
        (AuthSettings(jwt_secret=SECRET, leeway_s=-1), "leeway_s"),
        (AuthSettings(api_keys=("",)), "empty key"),
        (AuthSettings(api_keys=("=a.b",)), "empty key"),
        (AuthSettings(api_keys=("k=",)), "no publish patterns"),
        (AuthSettings(api_keys=("k=a..b",)), "invalid publish pattern"),
        (AuthSettings(api_keys=("k", "k=a.>")), "repeats an earlier key"),
    ],
)
def test_config_errors(settings: AuthSettings, message: str) -> None:
    with pytest.raises(ValueError, match=message):
        Authenticator(settings)


def test_public_key_needs_an_asymmetric_algorithm(rsa_key: rsa.RSAPrivateKey) -> None:
    with pytest.raises(ValueError, match="HS256 needs jwt_secret"):
        Authenticator(AuthSettings(jwt_public_key=_public_pem(rsa_key)))
    with pytest.raises(ValueError, match="jwt_public_key is set but no RS/ES algorithm"):
        Authenticator(AuthSettings(jwt_secret=SECRET, jwt_public_key=_public_pem(rsa_key)))


def test_secret_needs_an_hs_algorithm(rsa_key: rsa.RSAPrivateKey) -> None:
    with pytest.raises(ValueError, match="jwt_secret is set but no HS algorithm"):
        Authenticator(
            AuthSettings(jwt_secret=SECRET, jwt_public_key=_public_pem(rsa_key), algorithms=("RS256",))
        )


def test_private_key_is_refused_as_public_key(rsa_key: rsa.RSAPrivateKey) -> None:
    with pytest.raises(ValueError, match="not a PEM public key"):
        Authenticator(AuthSettings(jwt_public_key=_private_pem(rsa_key), algorithms=("RS256",)))


def test_key_type_must_fit_the_algorithm(
    rsa_key: rsa.RSAPrivateKey, ec_key: ec.EllipticCurvePrivateKey
) -> None:
    with pytest.raises(ValueError, match="usable with ES256"):
        Authenticator(AuthSettings(jwt_public_key=_public_pem(rsa_key), algorithms=("ES256",)))
    with pytest.raises(ValueError, match="usable with RS256"):
        Authenticator(AuthSettings(jwt_public_key=_public_pem(ec_key), algorithms=("RS256",)))


def test_weak_rsa_key_is_refused() -> None:
    weak = rsa.generate_private_key(public_exponent=65537, key_size=1024)
    with pytest.raises(ValueError, match="too weak for RS256"):
        Authenticator(AuthSettings(jwt_public_key=_public_pem(weak), algorithms=("RS256",)))


def test_mint_token_refuses_unsafe_input() -> None:
    with pytest.raises(ValueError, match="cannot sign with algorithm 'none'"):
        mint_token(SECRET, sub="a", subscribe=[], publish=[], algorithm="none")
    with pytest.raises(ValueError, match="needs at least 32 bytes"):
        mint_token("short", sub="a", subscribe=[], publish=[])
    with pytest.raises(ValueError, match="cannot sign a RS256 token"):
        mint_token("not a pem", sub="a", subscribe=[], publish=[], algorithm="RS256")


def test_mint_token_claims() -> None:
    token = mint_token(
        SECRET, sub="cli", subscribe=["a.>"], publish=["b"], ttl_s=90, issuer="i", audience="d", now=1000.0
    )
    claims = jwt.decode(token, options={"verify_signature": False})
    assert claims == {
        "sub": "cli",
        "iat": 1000,
        "exp": 1090,
        "iss": "i",
        "aud": "d",
        "dash": {"subscribe": ["a.>"], "publish": ["b"]},
    }
