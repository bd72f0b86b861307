"""Bearer token verification: every refusal rule, JWKS loading and caching, minting, headers.

Tokens are built and signed here by hand (hmac and cryptography), not with PyJWT, so that the
tests can produce exactly the malformed and hostile tokens the verifier must refuse.
"""

from __future__ import annotations

import asyncio
import base64
import functools
import hashlib
import hmac
import json
import threading
import time
import uuid
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from http.server import BaseHTTPRequestHandler, HTTPServer
from pathlib import Path
from typing import Any
from uuid import UUID

import pytest
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec, padding, rsa
from cryptography.hazmat.primitives.asymmetric.utils import decode_dss_signature

from app.auth.claims import Claims
from app.auth.jwt import (
    InvalidToken,
    SigningKeysUnavailable,
    TokenVerifier,
    bearer_token,
    mint_token,
)
from app.settings import APP_ROLES, Settings, SettingsError

SECRET = "a-test-secret-that-is-comfortably-longer-than-32-chars"
TRADER = UUID("0b0e5f3c-7d4a-4c47-9a49-2f6f1d0c2a11")
REMOVE = object()
"""Passed as a claim value to make_payload: leave the claim out."""

PrivateKey = rsa.RSAPrivateKey | ec.EllipticCurvePrivateKey


# --- builders --------------------------------------------------------------------------------


def b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


def make_settings(**overrides: Any) -> Settings:
    values: dict[str, Any] = {"jwt_secret": SECRET}
    values.update(overrides)
    return Settings(**values)


def make_payload(**changes: Any) -> dict[str, Any]:
    """A payload shaped like the access tokens Supabase Auth issues for a signed-in user."""
    now = int(time.time())
    payload: dict[str, Any] = {
        "iss": "https://project.supabase.co/auth/v1",
        "sub": str(TRADER),
        "aud": "authenticated",
        "exp": now + 3600,
        "iat": now,
        "email": "trader@example.com",
        "phone": "",
        "app_metadata": {"provider": "email", "providers": ["email"], "desk": "equities"},
        "user_metadata": {"email_verified": True, "display_name": "Ada"},
        "role": "authenticated",
        "aal": "aal1",
        "amr": [{"method": "password", "timestamp": now}],
        "session_id": "6d3c1f9e-58b2-4c4b-a7a5-3f1f0f6c9b21",
        "is_anonymous": False,
    }
    for name, value in changes.items():
        if value is REMOVE:
            payload.pop(name, None)
        else:
            payload[name] = value
    return payload


def sign(signing_input: bytes, alg: str, key: str | bytes | PrivateKey | None) -> bytes:
    if alg == "none" or key is None:
        return b""
    if alg in ("HS256", "HS512"):
        secret = key.encode() if isinstance(key, str) else key
        assert isinstance(secret, bytes)
        digest = hashlib.sha256 if alg == "HS256" else hashlib.sha512
        return hmac.new(secret, signing_input, digest).digest()
    if alg == "RS256":
        assert isinstance(key, rsa.RSAPrivateKey)
        return key.sign(signing_input, padding.PKCS1v15(), hashes.SHA256())
    if alg == "ES256":
        assert isinstance(key, ec.EllipticCurvePrivateKey)
        r, s = decode_dss_signature(key.sign(signing_input, ec.ECDSA(hashes.SHA256())))
        return r.to_bytes(32, "big") + s.to_bytes(32, "big")
    raise ValueError(alg)


def make_token(
    payload: Mapping[str, Any] | None = None,
    *,
    alg: str = "HS256",
    key: str | bytes | PrivateKey | None = SECRET,
    kid: str | None = None,
    header: Mapping[str, Any] | None = None,
    **changes: Any,
) -> str:
    """A compact JWS over ``payload`` (default: make_payload(**changes)), signed as told."""
    head: dict[str, Any] = {"alg": alg, "typ": "JWT"}
    if kid is not None:
        head["kid"] = kid
    head.update(header or {})
    body = make_payload(**changes) if payload is None else dict(payload)
    signing_input = f"{b64(json.dumps(head).encode())}.{b64(json.dumps(body).encode())}"
    return f"{signing_input}.{b64(sign(signing_input.encode(), alg, key))}"


@functools.cache
def rsa_key(name: str = "rsa", bits: int = 2048) -> rsa.RSAPrivateKey:
    return rsa.generate_private_key(public_exponent=65537, key_size=bits)


@functools.cache
def ec_key(name: str = "ec") -> ec.EllipticCurvePrivateKey:
    return ec.generate_private_key(ec.SECP256R1())


def _uint(value: int, size: int | None = None) -> str:
    return b64(value.to_bytes(size or (value.bit_length() + 7) // 8, "big"))


def jwk(key: PrivateKey, kid: str) -> dict[str, Any]:
    if isinstance(key, rsa.RSAPrivateKey):
        numbers = key.public_key().public_numbers()
        return {
            "kty": "RSA",
            "alg": "RS256",
            "use": "sig",
            "kid": kid,
            "n": _uint(numbers.n),
            "e": _uint(numbers.e),
        }
    point = key.public_key().public_numbers()
    return {
        "kty": "EC",
        "alg": "ES256",
        "use": "sig",
        "crv": "P-256",
        "kid": kid,
        "x": _uint(point.x, 32),
        "y": _uint(point.y, 32),
    }


def jwks_file(directory: Path, *keys: Mapping[str, Any]) -> str:
    path = directory / "jwks.json"
    path.write_text(json.dumps({"keys": list(keys)}))
    return str(path)


def public_pem(key: rsa.RSAPrivateKey) -> bytes:
    return key.public_key().public_bytes(
        serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
    )


async def refusal(verifier: TokenVerifier, token: str) -> str:
    with pytest.raises(InvalidToken) as caught:
        await verifier.verify(token)
    return caught.value.reason


@dataclass
class FakeClock:
    now: float = 1000.0

    def __call__(self) -> float:
        return self.now


@dataclass
class JWKSServer:
    url: str = ""
    keys: list[dict[str, Any]] = field(default_factory=list)
    status: int = 200
    hits: int = 0


@pytest.fixture
def jwks_server() -> Iterator[JWKSServer]:
    state = JWKSServer()

    class Handler(BaseHTTPRequestHandler):
        def do_GET(self) -> None:
            state.hits += 1
            body = json.dumps({"keys": state.keys}).encode()
            self.send_response(state.status)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def log_message(self, format: str, *args: Any) -> None:
            pass

    server = HTTPServer(("127.0.0.1", 0), Handler)
    thread = threading.Thread(target=server.serve_forever, args=(0.05,), daemon=True)
    thread.start()
    state.url = f"http://127.0.0.1:{server.server_port}/auth/v1/.well-known/jwks.json"
    try:
        yield state
    finally:
        server.shutdown()
        server.server_close()
        thread.join()


# --- acceptance ------------------------------------------------------------------------------


async def test_supabase_shaped_token_is_accepted_with_every_claim_preserved() -> None:
    payload = make_payload()
    claims = await TokenVerifier(make_settings()).verify(make_token(payload))

    assert claims.role == "authenticated"
    assert claims.sub == TRADER
    assert claims.expires_at == datetime.fromtimestamp(payload["exp"], tz=UTC)
    assert dict(claims.raw) == payload
    assert json.loads(claims.to_json()) == payload


async def test_claims_json_is_compact() -> None:
    claims = await TokenVerifier(make_settings()).verify(make_token())
    assert ", " not in claims.to_json()
    assert ": " not in claims.to_json()


def test_anonymous_claims_have_role_anon_and_nothing_else() -> None:
    anon = Claims.anonymous()
    assert (anon.role, anon.sub, anon.expires_at) == ("anon", None, None)
    assert anon.to_json() == '{"role":"anon"}'


@pytest.mark.parametrize("role", [r for r in APP_ROLES if r != "authenticated"])
async def test_every_non_user_app_role_is_accepted_without_sub(role: str) -> None:
    claims = await TokenVerifier(make_settings()).verify(make_token(role=role, sub=REMOVE))
    assert (claims.role, claims.sub) == (role, None)


async def test_service_token_with_a_uuid_sub_keeps_it() -> None:
    claims = await TokenVerifier(make_settings()).verify(make_token(role="service_role"))
    assert claims.sub == TRADER


async def test_token_expired_within_the_leeway_is_accepted() -> None:
    verifier = TokenVerifier(make_settings(jwt_leeway_seconds=30))
    assert (await verifier.verify(make_token(exp=int(time.time()) - 10))).sub == TRADER


async def test_audience_list_containing_ours_is_accepted() -> None:
    token = make_token(aud=["realtime", "authenticated"])
    assert (await TokenVerifier(make_settings()).verify(token)).sub == TRADER


async def test_issuer_is_not_checked_when_none_is_configured() -> None:
    token = make_token(iss="https://somewhere-else.example")
    assert (await TokenVerifier(make_settings()).verify(token)).sub == TRADER


async def test_float_exp_is_accepted_as_a_number() -> None:
    token = make_token(exp=time.time() + 600.5)
    assert (await TokenVerifier(make_settings()).verify(token)).sub == TRADER


# --- time claims -----------------------------------------------------------------------------


async def test_expired_token_is_refused() -> None:
    token = make_token(exp=int(time.time()) - 120)
    assert await refusal(TokenVerifier(make_settings(jwt_leeway_seconds=30)), token) == "expired"


async def test_token_without_exp_is_refused() -> None:
    assert await refusal(TokenVerifier(make_settings()), make_token(exp=REMOVE)) == "missing exp"


@pytest.mark.parametrize("exp", ["4102444800", True, [4102444800], {"at": 1}, 10**30])
async def test_non_numeric_exp_is_refused(exp: Any) -> None:
    assert await refusal(TokenVerifier(make_settings()), make_token(exp=exp)) == "invalid exp"


async def test_exp_overflowing_to_infinity_is_refused() -> None:
    header = b64(b'{"alg":"HS256","typ":"JWT"}')
    body = json.dumps(make_payload(exp=REMOVE))[:-1] + ', "exp": 1e400}'
    signing_input = f"{header}.{b64(body.encode())}"
    token = f"{signing_input}.{b64(sign(signing_input.encode(), 'HS256', SECRET))}"
    assert await refusal(TokenVerifier(make_settings()), token) == "invalid exp"


@pytest.mark.parametrize("claim", ["iat", "nbf"])
@pytest.mark.parametrize("value", ["1700000000", False, [1]])
async def test_non_numeric_iat_or_nbf_is_refused(claim: str, value: Any) -> None:
    token = make_token(**{claim: value})
    assert await refusal(TokenVerifier(make_settings()), token) == f"invalid {claim}"


@pytest.mark.parametrize("claim", ["iat", "nbf"])
async def test_token_not_yet_valid_is_refused(claim: str) -> None:
    future: dict[str, Any] = {claim: int(time.time()) + 600}
    token = make_token(**future)
    verifier = TokenVerifier(make_settings(jwt_leeway_seconds=30))
    assert await refusal(verifier, token) == "not yet valid"


async def test_token_issued_slightly_in_the_future_is_accepted_within_leeway() -> None:
    token = make_token(iat=int(time.time()) + 10, nbf=int(time.time()) + 10)
    assert (await TokenVerifier(make_settings(jwt_leeway_seconds=30)).verify(token)).sub == TRADER


# --- audience and issuer ---------------------------------------------------------------------


async def test_token_for_another_audience_is_refused() -> None:
    assert (
        await refusal(TokenVerifier(make_settings()), make_token(aud="admin")) == "wrong audience"
    )


@pytest.mark.parametrize("aud", [["admin", "realtime"], 42, None, ""])
async def test_malformed_or_foreign_audience_is_refused(aud: Any) -> None:
    assert await refusal(TokenVerifier(make_settings()), make_token(aud=aud)) == "wrong audience"


async def test_token_without_audience_is_refused() -> None:
    assert (
        await refusal(TokenVerifier(make_settings()), make_token(aud=REMOVE)) == "missing audience"
    )


async def test_token_from_another_issuer_is_refused_when_issuer_is_configured() -> None:
    verifier = TokenVerifier(make_settings(jwt_issuer="https://project.supabase.co/auth/v1"))
    assert await refusal(verifier, make_token(iss="https://evil.example/auth/v1")) == "wrong issuer"


async def test_token_without_issuer_is_refused_when_issuer_is_configured() -> None:
    verifier = TokenVerifier(make_settings(jwt_issuer="https://project.supabase.co/auth/v1"))
    assert await refusal(verifier, make_token(iss=REMOVE)) == "missing issuer"


# --- role and sub ----------------------------------------------------------------------------


async def test_token_without_role_is_refused() -> None:
    assert await refusal(TokenVerifier(make_settings()), make_token(role=REMOVE)) == "missing role"


@pytest.mark.parametrize(
    "role", ["postgres", "authenticator", "supabase_admin", "Authenticated", "", None, 1]
)
async def test_token_for_a_role_outside_the_app_roles_is_refused(role: Any) -> None:
    assert (
        await refusal(TokenVerifier(make_settings()), make_token(role=role)) == "role not allowed"
    )


async def test_authenticated_token_without_sub_is_refused() -> None:
    assert await refusal(TokenVerifier(make_settings()), make_token(sub=REMOVE)) == "missing sub"


@pytest.mark.parametrize(
    "sub",
    [
        "trader-1",
        "",
        str(TRADER).upper(),
        "{" + str(TRADER) + "}",
        TRADER.hex,
        "urn:uuid:" + str(TRADER),
        42,
        [str(TRADER)],
    ],
)
@pytest.mark.parametrize("role", ["authenticated", "service_role", "anon"])
async def test_sub_that_is_not_a_canonical_uuid_is_refused(role: str, sub: Any) -> None:
    assert (
        await refusal(TokenVerifier(make_settings()), make_token(role=role, sub=sub))
        == "invalid sub"
    )


# --- malformed tokens ------------------------------------------------------------------------


def _segments(header: bytes, payload: bytes) -> str:
    return f"{b64(header)}.{b64(payload)}.{b64(b'signature')}"


@pytest.mark.parametrize(
    "token",
    [
        pytest.param("", id="empty"),
        pytest.param("not-a-token", id="one segment"),
        pytest.param("a.b", id="two segments"),
        pytest.param(make_token() + ".extra", id="four segments"),
        pytest.param("!!!!." + make_token().split(".", 1)[1], id="bad base64 header"),
        pytest.param(make_token().replace(".", ".%", 1), id="bad base64 payload"),
        pytest.param(make_token() + "=", id="padded signature"),
        pytest.param(_segments(b"{not json", json.dumps(make_payload()).encode()), id="header"),
        pytest.param(_segments(b'{"alg":"HS256"}', b"{not json"), id="payload not json"),
        pytest.param(_segments(b'{"alg":"HS256"}', b"[1, 2]"), id="payload not an object"),
        pytest.param(_segments(b'["HS256"]', b"{}"), id="header not an object"),
        pytest.param(_segments(b'{"alg":"HS256"}', b"\xff\xfe"), id="payload not utf-8"),
        pytest.param(".".join(["", b64(b"{}"), ""]), id="empty header"),
        pytest.param("x" * 20_000, id="oversized"),
    ],
)
async def test_malformed_token_is_refused(token: str) -> None:
    assert await refusal(TokenVerifier(make_settings()), token) == "malformed token"


async def test_payload_with_duplicate_claims_is_refused_as_malformed() -> None:
    header = b64(b'{"alg":"HS256","typ":"JWT"}')
    body = json.dumps(make_payload(role="authenticated"))[:-1] + ', "role": "service_role"}'
    signing_input = f"{header}.{b64(body.encode())}"
    token = f"{signing_input}.{b64(sign(signing_input.encode(), 'HS256', SECRET))}"
    assert await refusal(TokenVerifier(make_settings()), token) == "malformed token"


async def test_payload_with_nan_is_refused_as_malformed() -> None:
    header = b64(b'{"alg":"HS256","typ":"JWT"}')
    body = json.dumps(make_payload())[:-1] + ', "score": NaN}'
    signing_input = f"{header}.{b64(body.encode())}"
    token = f"{signing_input}.{b64(sign(signing_input.encode(), 'HS256', SECRET))}"
    assert await refusal(TokenVerifier(make_settings()), token) == "malformed token"


@pytest.mark.parametrize("header", [{"kid": 7}, {"crit": ["exp"]}, {"b64": False}])
async def test_token_with_an_unsupported_header_is_refused_as_malformed(
    header: dict[str, Any],
) -> None:
    token = make_token(header=header)
    assert await refusal(TokenVerifier(make_settings()), token) == "malformed token"


# --- signatures and algorithms ---------------------------------------------------------------


async def test_token_signed_with_another_secret_is_refused() -> None:
    token = make_token(key="another-secret-that-is-also-longer-than-32-chars")
    assert await refusal(TokenVerifier(make_settings()), token) == "bad signature"


async def test_token_with_a_tampered_payload_is_refused() -> None:
    header, _, signature = make_token().split(".")
    forged = b64(json.dumps(make_payload(role="service_role")).encode())
    assert await refusal(TokenVerifier(make_settings()), f"{header}.{forged}.{signature}") == (
        "bad signature"
    )


@pytest.mark.parametrize("alg", ["none", "None", "NONE", "nOnE"])
async def test_unsigned_token_with_alg_none_is_refused(alg: str) -> None:
    token = make_token(alg="none", header={"alg": alg}, key=None)
    assert token.endswith(".")
    assert await refusal(TokenVerifier(make_settings()), token) == "algorithm not allowed"


async def test_token_without_alg_is_refused() -> None:
    token = make_token(header={"alg": None})
    assert await refusal(TokenVerifier(make_settings()), token) == "algorithm not allowed"


async def test_algorithm_outside_the_allow_list_is_refused() -> None:
    token = make_token(alg="HS512")
    assert await refusal(TokenVerifier(make_settings()), token) == "algorithm not allowed"


async def test_hs256_is_refused_when_jwt_algorithms_leaves_it_out(tmp_path: Path) -> None:
    settings = make_settings(
        jwt_algorithms=("RS256",), jwt_jwks=jwks_file(tmp_path, jwk(rsa_key(), "k1"))
    )
    assert await refusal(TokenVerifier(settings), make_token()) == "algorithm not allowed"


async def test_rs256_token_is_refused_when_no_jwks_is_configured() -> None:
    token = make_token(alg="RS256", key=rsa_key(), kid="k1")
    assert await refusal(TokenVerifier(make_settings()), token) == "algorithm not allowed"


async def test_hs256_token_signed_with_the_rsa_public_key_is_refused_alongside_a_secret(
    tmp_path: Path,
) -> None:
    # The classic confusion attack: the public key is public, so anyone can HMAC with it.
    settings = make_settings(jwt_jwks=jwks_file(tmp_path, jwk(rsa_key(), "k1")))
    token = make_token(alg="HS256", key=public_pem(rsa_key()), kid="k1")
    assert await refusal(TokenVerifier(settings), token) == "bad signature"


async def test_hs256_token_signed_with_the_rsa_public_key_is_refused_without_a_secret(
    tmp_path: Path,
) -> None:
    settings = make_settings(jwt_secret=None, jwt_jwks=jwks_file(tmp_path, jwk(rsa_key(), "k1")))
    token = make_token(alg="HS256", key=public_pem(rsa_key()), kid="k1")
    assert await refusal(TokenVerifier(settings), token) == "algorithm not allowed"


async def test_symmetric_key_in_the_jwks_never_verifies_hs256(tmp_path: Path) -> None:
    oct_key = {"kty": "oct", "kid": "sym", "alg": "HS256", "k": b64(b"k" * 40)}
    settings = make_settings(
        jwt_secret=None, jwt_jwks=jwks_file(tmp_path, oct_key, jwk(rsa_key(), "k1"))
    )
    token = make_token(alg="HS256", key=b"k" * 40, kid="sym")
    assert await refusal(TokenVerifier(settings), token) == "algorithm not allowed"


# --- JWKS from a file ------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("alg", "key"), [("RS256", rsa_key()), ("ES256", ec_key())], ids=["RS256", "ES256"]
)
async def test_asymmetric_token_is_accepted_with_keys_from_a_jwks_file(
    tmp_path: Path, alg: str, key: PrivateKey
) -> None:
    settings = make_settings(jwt_secret=None, jwt_jwks=jwks_file(tmp_path, jwk(key, "k1")))
    claims = await TokenVerifier(settings).verify(make_token(alg=alg, key=key, kid="k1"))
    assert (claims.role, claims.sub) == ("authenticated", TRADER)


async def test_token_without_kid_is_accepted_when_the_jwks_has_a_single_key(tmp_path: Path) -> None:
    settings = make_settings(jwt_secret=None, jwt_jwks=jwks_file(tmp_path, jwk(ec_key(), "k1")))
    assert (
        await TokenVerifier(settings).verify(make_token(alg="ES256", key=ec_key()))
    ).sub == TRADER


async def test_token_signed_by_a_stranger_under_a_known_kid_is_refused(tmp_path: Path) -> None:
    settings = make_settings(jwt_jwks=jwks_file(tmp_path, jwk(rsa_key(), "k1")))
    token = make_token(alg="RS256", key=rsa_key("stranger"), kid="k1")
    assert await refusal(TokenVerifier(settings), token) == "bad signature"


async def test_rs256_token_naming_an_ec_key_is_refused(tmp_path: Path) -> None:
    settings = make_settings(
        jwt_jwks=jwks_file(tmp_path, jwk(ec_key(), "ec1"), jwk(rsa_key(), "rsa1"))
    )
    token = make_token(alg="RS256", key=rsa_key(), kid="ec1")
    assert await refusal(TokenVerifier(settings), token) == "unknown signing key"


async def test_es256_is_refused_when_jwt_algorithms_allows_only_rs256(tmp_path: Path) -> None:
    settings = make_settings(
        jwt_algorithms=("RS256",), jwt_jwks=jwks_file(tmp_path, jwk(ec_key(), "k1"))
    )
    token = make_token(alg="ES256", key=ec_key(), kid="k1")
    assert await refusal(TokenVerifier(settings), token) == "algorithm not allowed"


async def test_private_members_published_in_the_jwks_are_ignored(tmp_path: Path) -> None:
    leaked = jwk(ec_key(), "k1") | {"d": _uint(ec_key().private_numbers().private_value, 32)}
    settings = make_settings(jwt_jwks=jwks_file(tmp_path, leaked))
    token = make_token(alg="ES256", key=ec_key(), kid="k1")
    assert (await TokenVerifier(settings).verify(token)).sub == TRADER


async def test_rsa_key_shorter_than_2048_bits_is_ignored(tmp_path: Path) -> None:
    weak = rsa_key("weak", 1024)
    settings = make_settings(jwt_jwks=jwks_file(tmp_path, jwk(weak, "weak"), jwk(ec_key(), "k1")))
    token = make_token(alg="RS256", key=weak, kid="weak")
    assert await refusal(TokenVerifier(settings), token) == "unknown signing key"


async def test_missing_jwks_file_means_signing_keys_unavailable(tmp_path: Path) -> None:
    settings = make_settings(jwt_jwks=str(tmp_path / "absent.json"))
    with pytest.raises(SigningKeysUnavailable) as caught:
        await TokenVerifier(settings).verify(make_token(alg="RS256", key=rsa_key(), kid="k1"))
    assert caught.value.reason == "signing keys unavailable"


# --- JWKS over HTTP ----------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("alg", "key"), [("RS256", rsa_key()), ("ES256", ec_key())], ids=["RS256", "ES256"]
)
async def test_asymmetric_token_is_accepted_with_keys_from_a_jwks_url(
    jwks_server: JWKSServer, alg: str, key: PrivateKey
) -> None:
    jwks_server.keys = [jwk(key, "k1")]
    verifier = TokenVerifier(make_settings(jwt_jwks=jwks_server.url))
    for _ in range(3):
        assert (await verifier.verify(make_token(alg=alg, key=key, kid="k1"))).sub == TRADER
    assert jwks_server.hits == 1


async def test_concurrent_requests_on_a_cold_cache_share_one_fetch(
    jwks_server: JWKSServer,
) -> None:
    jwks_server.keys = [jwk(rsa_key(), "k1")]
    verifier = TokenVerifier(make_settings(jwt_jwks=jwks_server.url))
    token = make_token(alg="RS256", key=rsa_key(), kid="k1")
    results = await asyncio.gather(*(verifier.verify(token) for _ in range(10)))
    assert {claims.sub for claims in results} == {TRADER}
    assert jwks_server.hits == 1


async def test_new_kid_triggers_one_refetch_and_a_flood_of_unknown_kids_is_rate_limited(
    jwks_server: JWKSServer,
) -> None:
    clock = FakeClock()
    jwks_server.keys = [jwk(rsa_key(), "k1")]
    verifier = TokenVerifier(make_settings(jwt_jwks=jwks_server.url), clock=clock)
    await verifier.verify(make_token(alg="RS256", key=rsa_key(), kid="k1"))
    assert jwks_server.hits == 1

    # The issuer rotates: a new key is published and tokens start naming it.
    jwks_server.keys = [jwk(rsa_key(), "k1"), jwk(ec_key(), "k2")]
    clock.now += 31
    claims = await verifier.verify(make_token(alg="ES256", key=ec_key(), kid="k2"))
    assert claims.sub == TRADER
    assert jwks_server.hits == 2

    for _ in range(25):
        token = make_token(alg="RS256", key=rsa_key(), kid=str(uuid.uuid4()))
        assert await refusal(verifier, token) == "unknown signing key"
    assert jwks_server.hits == 2

    clock.now += 31
    token = make_token(alg="RS256", key=rsa_key(), kid="still-unknown")
    assert await refusal(verifier, token) == "unknown signing key"
    assert jwks_server.hits == 3


async def test_jwks_is_refetched_after_the_cache_lifetime(jwks_server: JWKSServer) -> None:
    clock = FakeClock()
    jwks_server.keys = [jwk(rsa_key(), "k1")]
    verifier = TokenVerifier(
        make_settings(jwt_jwks=jwks_server.url, jwks_cache_seconds=600), clock=clock
    )
    token = make_token(alg="RS256", key=rsa_key(), kid="k1")
    await verifier.verify(token)
    clock.now += 599
    await verifier.verify(token)
    assert jwks_server.hits == 1

    # The old key is withdrawn; once the cache expires tokens signed with it stop working.
    jwks_server.keys = [jwk(ec_key(), "k2")]
    clock.now += 2
    assert await refusal(verifier, token) == "unknown signing key"
    assert jwks_server.hits == 2


async def test_cached_keys_survive_a_key_server_outage(jwks_server: JWKSServer) -> None:
    clock = FakeClock()
    jwks_server.keys = [jwk(rsa_key(), "k1")]
    verifier = TokenVerifier(
        make_settings(jwt_jwks=jwks_server.url, jwks_cache_seconds=60), clock=clock
    )
    token = make_token(alg="RS256", key=rsa_key(), kid="k1")
    await verifier.verify(token)

    jwks_server.status = 503
    clock.now += 61
    assert (await verifier.verify(token)).sub == TRADER
    assert jwks_server.hits == 2
    clock.now += 5
    assert (await verifier.verify(token)).sub == TRADER
    assert jwks_server.hits == 2, "a failed fetch is not retried before the rate limit allows"

    jwks_server.status = 200
    clock.now += 30
    assert (await verifier.verify(token)).sub == TRADER
    assert jwks_server.hits == 3


async def test_unreachable_key_server_means_signing_keys_unavailable(
    jwks_server: JWKSServer,
) -> None:
    jwks_server.status = 500
    verifier = TokenVerifier(make_settings(jwt_jwks=jwks_server.url))
    with pytest.raises(SigningKeysUnavailable) as caught:
        await verifier.verify(make_token(alg="RS256", key=rsa_key(), kid="k1"))
    assert caught.value.reason == "signing keys unavailable"


# --- Supabase API keys -----------------------------------------------------------------------

AUTH_ISSUER = "https://project.supabase.co/auth/v1"


def supabase_key(role: str, **changes: Any) -> dict[str, Any]:
    """The payload of a Supabase project's anon or service_role API key, as Supabase mints it."""
    now = int(time.time())
    payload: dict[str, Any] = {
        "iss": "supabase",
        "ref": "abcdefghijklmnopqrst",
        "role": role,
        "iat": now,
        "exp": now + 10 * 365 * 24 * 3600,
    }
    for name, value in changes.items():
        if value is REMOVE:
            payload.pop(name, None)
        else:
            payload[name] = value
    return payload


@pytest.mark.parametrize("issuer", [None, AUTH_ISSUER], ids=["no issuer", "auth issuer"])
@pytest.mark.parametrize("role", ["anon", "service_role"])
async def test_supabase_api_keys_are_accepted_with_their_role_and_no_sub(
    role: str, issuer: str | None
) -> None:
    verifier = TokenVerifier(make_settings(jwt_issuer=issuer))
    claims = await verifier.verify(make_token(supabase_key(role)))
    assert (claims.role, claims.sub) == (role, None)
    assert claims.raw["iss"] == "supabase"


async def test_the_auth_issuer_still_works_beside_the_api_keys_issuer() -> None:
    verifier = TokenVerifier(make_settings(jwt_issuer=AUTH_ISSUER))
    assert (await verifier.verify(make_token(iss=AUTH_ISSUER))).sub == TRADER


@pytest.mark.parametrize(
    ("payload", "reason"),
    [
        # A forged "key" claiming a user's role: every user check still applies.
        (supabase_key("authenticated"), "missing audience"),
        (supabase_key("authenticated", aud="authenticated"), "missing sub"),
        (supabase_key("compliance_auditor"), "missing audience"),
        (supabase_key("postgres"), "missing audience"),
        (supabase_key("supabase_admin", aud="authenticated"), "role not allowed"),
        # Only the issuer Supabase writes into its keys relaxes anything.
        (supabase_key("service_role", iss="Supabase"), "missing audience"),
        (supabase_key("service_role", iss=["supabase"]), "missing audience"),
        (supabase_key("service_role", iss=REMOVE), "missing audience"),
        # An audience, when present, must still be ours.
        (supabase_key("service_role", aud="somebody-else"), "wrong audience"),
        # Every other claim rule holds for the keys too.
        (supabase_key("service_role", exp=REMOVE), "missing exp"),
        (supabase_key("service_role", exp=int(time.time()) - 3600), "expired"),
        (supabase_key("service_role", exp="2000000000"), "invalid exp"),
        (supabase_key("anon", iat=int(time.time()) + 3600), "not yet valid"),
        (supabase_key("service_role", sub="not-a-uuid"), "invalid sub"),
    ],
    ids=lambda value: value if isinstance(value, str) else None,
)
async def test_tokens_shaped_like_api_keys_are_refused_unless_they_are_one(
    payload: dict[str, Any], reason: str
) -> None:
    assert await refusal(TokenVerifier(make_settings()), make_token(payload)) == reason


async def test_an_api_key_signed_with_another_secret_is_refused() -> None:
    token = make_token(supabase_key("service_role"), key="another-secret-" + "x" * 40)
    assert await refusal(TokenVerifier(make_settings()), token) == "bad signature"


async def test_an_api_key_shape_signed_with_a_jwks_key_is_refused(tmp_path: Path) -> None:
    # The keys are HS256 with the project's secret; Auth's signing keys never sign them.
    settings = make_settings(jwt_jwks=jwks_file(tmp_path, jwk(ec_key(), "k1")))
    token = make_token(supabase_key("service_role"), alg="ES256", key=ec_key(), kid="k1")
    assert await refusal(TokenVerifier(settings), token) == "missing audience"


async def test_with_an_issuer_configured_a_user_token_from_the_keys_issuer_is_refused() -> None:
    verifier = TokenVerifier(make_settings(jwt_issuer=AUTH_ISSUER))
    assert await refusal(verifier, make_token(iss="supabase")) == "wrong issuer"


# --- Supabase settings -------------------------------------------------------------------------


def test_supabase_url_implies_the_jwks_url_and_the_auth_issuer() -> None:
    settings = Settings.from_env({"SUPABASE_URL": "https://abcdefghijklmnopqrst.supabase.co/"})
    assert settings.supabase_url == "https://abcdefghijklmnopqrst.supabase.co"
    assert settings.jwt_issuer == "https://abcdefghijklmnopqrst.supabase.co/auth/v1"
    assert settings.jwt_jwks == (
        "https://abcdefghijklmnopqrst.supabase.co/auth/v1/.well-known/jwks.json"
    )


def test_supabase_url_agreeing_with_explicit_settings_is_accepted() -> None:
    url = "http://127.0.0.1:54321"
    settings = Settings.from_env({"SUPABASE_URL": url, "JWT_ISSUER": f"{url}/auth/v1"})
    assert settings.jwt_issuer == f"{url}/auth/v1"


@pytest.mark.parametrize("name", ["JWT_ISSUER", "JWT_JWKS"])
def test_supabase_url_contradicted_by_an_explicit_setting_is_refused(name: str) -> None:
    env = {"SUPABASE_URL": "https://abc.supabase.co", name: "https://elsewhere.example/x"}
    with pytest.raises(SettingsError, match=f"^{name} .* contradicts SUPABASE_URL"):
        Settings.from_env(env)


@pytest.mark.parametrize(
    "url",
    [
        "abc.supabase.co",
        "ftp://abc.supabase.co",
        "https://abc.supabase.co/auth/v1",
        "https://abc.supabase.co?x=1",
        "https://user:pw@abc.supabase.co",
        "https://",
    ],
)
def test_a_supabase_url_that_is_not_a_project_url_is_refused(url: str) -> None:
    with pytest.raises(SettingsError, match=r"^SUPABASE_URL must be"):
        Settings.from_env({"SUPABASE_URL": url})


async def test_supabase_jwt_secret_is_accepted_as_the_hs256_secret() -> None:
    settings = Settings.from_env({"JWT_SECRET": "", "SUPABASE_JWT_SECRET": SECRET})
    assert settings.jwt_secret == SECRET
    claims = await TokenVerifier(settings).verify(make_token(supabase_key("service_role")))
    assert claims.role == "service_role"


def test_both_secret_names_with_the_same_value_are_accepted() -> None:
    settings = Settings.from_env({"JWT_SECRET": SECRET, "SUPABASE_JWT_SECRET": SECRET})
    assert settings.jwt_secret == SECRET


def test_both_secret_names_with_different_values_are_refused_in_one_line() -> None:
    with pytest.raises(SettingsError) as caught:
        Settings.from_env({"JWT_SECRET": SECRET, "SUPABASE_JWT_SECRET": SECRET + "-other"})
    assert str(caught.value) == (
        "JWT_SECRET and SUPABASE_JWT_SECRET are both set and differ; set one"
    )
    assert SECRET not in str(caught.value)


# --- configuration ---------------------------------------------------------------------------


def test_verifier_refuses_settings_without_any_key() -> None:
    with pytest.raises(SettingsError, match="JWT_SECRET"):
        TokenVerifier(make_settings(jwt_secret=None))


def test_verifier_refuses_a_short_secret() -> None:
    with pytest.raises(SettingsError, match="at least 32"):
        TokenVerifier(make_settings(jwt_secret="short"))


def test_verifier_refuses_unsupported_algorithms_in_settings() -> None:
    with pytest.raises(SettingsError, match="HS512"):
        TokenVerifier(make_settings(jwt_algorithms=("HS256", "HS512")))


def test_verifier_refuses_algorithms_no_configured_key_can_verify() -> None:
    with pytest.raises(SettingsError, match="allows none"):
        TokenVerifier(make_settings(jwt_algorithms=("RS256",)))


def test_verifier_refuses_a_pem_public_key_as_secret() -> None:
    with pytest.raises(SettingsError, match="public key"):
        TokenVerifier(make_settings(jwt_secret=public_pem(rsa_key()).decode()))


# --- minting ---------------------------------------------------------------------------------


async def test_minted_token_is_accepted_and_shaped_like_supabase() -> None:
    settings = make_settings(jwt_issuer="https://project.supabase.co/auth/v1")
    token = mint_token(settings, sub=TRADER, extra={"email": "trader@example.com"})
    claims = await TokenVerifier(settings).verify(token)
    assert claims.sub == TRADER
    assert claims.role == "authenticated"
    assert claims.raw["aud"] == "authenticated"
    assert claims.raw["iss"] == "https://project.supabase.co/auth/v1"
    assert claims.raw["email"] == "trader@example.com"
    assert claims.raw["exp"] - claims.raw["iat"] == 3600


async def test_minted_service_token_without_sub_is_accepted() -> None:
    settings = make_settings()
    claims = await TokenVerifier(settings).verify(
        mint_token(settings, sub=None, role="service_role")
    )
    assert (claims.role, claims.sub) == ("service_role", None)
    assert "sub" not in claims.raw


async def test_token_minted_in_the_past_is_refused_as_expired() -> None:
    settings = make_settings()
    token = mint_token(
        settings, sub=TRADER, ttl_seconds=60, now=datetime.now(UTC) - timedelta(hours=1)
    )
    assert await refusal(TokenVerifier(settings), token) == "expired"


def test_minting_without_a_secret_is_a_clear_error() -> None:
    with pytest.raises(SettingsError, match="JWT_SECRET is not set"):
        mint_token(make_settings(jwt_secret=None), sub=TRADER)


def test_minting_with_a_naive_now_is_an_error() -> None:
    with pytest.raises(ValueError, match="timezone-aware"):
        mint_token(make_settings(), sub=TRADER, now=datetime(2030, 1, 1))  # noqa: DTZ001


# --- Authorization header --------------------------------------------------------------------


@pytest.mark.parametrize("value", [None, "", "   "])
def test_absent_authorization_header_means_no_token(value: str | None) -> None:
    assert bearer_token(value) is None


@pytest.mark.parametrize("scheme", ["Bearer", "bearer", "BEARER"])
def test_bearer_scheme_is_case_insensitive(scheme: str) -> None:
    token = make_token()
    assert bearer_token(f"{scheme} {token}") == token


@pytest.mark.parametrize(
    "value",
    ["Basic dXNlcjpwYXNz", "Bearer", "Bearer ", "Bearer a b", "Token abc", "Bearer a,b", "abc"],
)
def test_other_schemes_and_garbage_are_refused(value: str) -> None:
    with pytest.raises(InvalidToken) as caught:
        bearer_token(value)
    assert caught.value.reason == "malformed authorization header"


async def test_a_cached_hs256_token_still_stops_working_when_it_expires() -> None:
    settings = make_settings()
    verifier = TokenVerifier(settings)
    now = datetime.now(UTC)
    token = mint_token(settings, sub=TRADER, ttl_seconds=2, now=now - timedelta(seconds=31))
    # Valid only thanks to the 30 s leeway, and only for about a second more.
    assert (await verifier.verify(token)).sub == TRADER
    assert (await verifier.verify(token)).sub == TRADER  # served from the cache
    await asyncio.sleep(2.1)
    assert await refusal(verifier, token) == "expired"


def test_a_token_expires_at_exp_plus_the_leeway_and_anonymous_claims_never_do() -> None:
    # The one rule (auth/claims.py) that verification, its cache of verified tokens, the
    # WebSocket connection and every subscription event apply.
    exp = datetime(2030, 1, 1, tzinfo=UTC)
    claims = Claims(role="authenticated", sub=TRADER, raw={}, expires_at=exp)
    assert not claims.expired(exp + timedelta(seconds=29.5), 30)
    assert claims.expired(exp + timedelta(seconds=30), 30)
    assert claims.expired(exp, 0)
    assert not Claims.anonymous().expired(datetime(9999, 1, 1, tzinfo=UTC), 0)
