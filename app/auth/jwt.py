"""Bearer token verification and minting; with auth/jwks.py (the JWKS cache), the only modules
that import PyJWT.

PyJWT checks signatures only. The claim rules are enforced here, by hand, because the library is
lenient where this API cannot be: it accepts ``"exp": "123"`` and ``true`` as numbers, a missing
``aud`` when no audience is asked for, and says nothing about ``role`` or ``sub``, which Postgres
turns into the database role and ``auth.uid()``.

One kind of token gets two checks relaxed: Supabase's API keys. A project's anon and service_role
keys are HS256 tokens signed with its JWT secret, ``{"iss": "supabase", "ref": ..., "role": "anon"
| "service_role", "iat", "exp"}``, with no ``aud`` and no ``sub``; Supabase's Data API accepts
them, so this API does too. For exactly those (HS256, ``iss`` "supabase", role anon or
service_role) a missing ``aud`` is allowed and ``iss`` "supabase" stands beside the configured
issuer. Every other rule holds for them, and every other token, ``authenticated`` above all, keeps
every check: a forged "key" with role authenticated still needs the audience and a ``sub``.
"""

from __future__ import annotations

import base64
import binascii
import json
import logging
import math
import re
import time
from collections.abc import Callable, Mapping, Sequence
from datetime import UTC, datetime
from types import MappingProxyType
from typing import Any
from uuid import UUID

import jwt

from app.auth.claims import Claims, expired
from app.auth.jwks import JWKSCache
from app.settings import APP_ROLES, MIN_HS256_SECRET_LENGTH, Settings, SettingsError

log = logging.getLogger(__name__)

SUPPORTED_ALGORITHMS = frozenset({"HS256", "RS256", "ES256"})
ASYMMETRIC_ALGORITHMS = frozenset({"RS256", "ES256"})

MAX_TOKEN_LENGTH = 16 * 1024
"""Beyond any real Supabase token; bounds the parsing an unauthenticated caller can cause."""

SUPABASE_KEY_ISSUER = "supabase"
SUPABASE_KEY_ROLES = frozenset({"anon", "service_role"})
"""Supabase's API keys: the only tokens that may omit ``aud`` (see the module docstring)."""

_BASE64URL = re.compile(r"[A-Za-z0-9_-]*")
_TOKEN68 = re.compile(r"[A-Za-z0-9._~+/-]+=*")


class InvalidToken(Exception):
    """The token is refused. ``reason`` is a short fixed phrase, safe to show to the client."""

    def __init__(self, reason: str) -> None:
        super().__init__(reason)
        self.reason = reason


class SigningKeysUnavailable(InvalidToken):
    """No JWKS could ever be loaded, so no asymmetric token can be checked.

    A subclass so that callers treating every InvalidToken as 401 stay correct, while those that
    care can answer 503 instead: the fault is the key server's, not the client's.
    """


# --- token parsing -----------------------------------------------------------------------------


def _b64decode(segment: str) -> bytes:
    # JWS compact serialisation forbids padding; anything outside the alphabet is an attack
    # on a lenient decoder rather than a token.
    if _BASE64URL.fullmatch(segment) is None or len(segment) % 4 == 1:
        raise InvalidToken("malformed token")
    try:
        return base64.urlsafe_b64decode(segment + "=" * (-len(segment) % 4))
    except (binascii.Error, ValueError):
        raise InvalidToken("malformed token") from None


def _unique_object(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
    # With duplicate keys Python keeps the last one, Postgres' jsonb too, but other parsers may
    # not; a token that means different things to different readers is refused.
    obj = dict(pairs)
    if len(obj) != len(pairs):
        raise ValueError("duplicate key")
    return obj


def _reject_constant(name: str) -> Any:
    raise ValueError(f"{name} is not JSON")


def _json_object(data: bytes) -> dict[str, Any]:
    try:
        value = json.loads(data, object_pairs_hook=_unique_object, parse_constant=_reject_constant)
    except (ValueError, RecursionError):
        raise InvalidToken("malformed token") from None
    if not isinstance(value, dict):
        raise InvalidToken("malformed token")
    return value


def _split(raw_token: str) -> tuple[dict[str, Any], dict[str, Any]]:
    if not isinstance(raw_token, str) or len(raw_token) > MAX_TOKEN_LENGTH:
        raise InvalidToken("malformed token")
    parts = raw_token.split(".")
    if len(parts) != 3 or not parts[0] or not parts[1]:
        raise InvalidToken("malformed token")
    header = _json_object(_b64decode(parts[0]))
    payload = _json_object(_b64decode(parts[1]))
    # An empty signature is left for the algorithm check, so that "alg": "none" gets its own reason.
    _b64decode(parts[2])
    if "crit" in header or "b64" in header:
        raise InvalidToken("malformed token")
    kid = header.get("kid")
    if kid is not None and not isinstance(kid, str):
        raise InvalidToken("malformed token")
    return header, payload


# --- claim rules -------------------------------------------------------------------------------


def _numeric_date(payload: Mapping[str, Any], name: str) -> float | None:
    value = payload.get(name)
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, int | float) or not math.isfinite(value):
        raise InvalidToken(f"invalid {name}")
    return float(value)


def _uuid(value: Any) -> UUID:
    # Canonical form only: the database casts sub to uuid, and code comparing the raw claim as
    # text must see the same spelling the database does.
    if not isinstance(value, str):
        raise InvalidToken("invalid sub")
    try:
        parsed = UUID(value)
    except ValueError:
        raise InvalidToken("invalid sub") from None
    if str(parsed) != value:
        raise InvalidToken("invalid sub")
    return parsed


def _is_supabase_api_key(payload: Mapping[str, Any], alg: str) -> bool:
    # HS256 only: the keys are signed with the project's JWT secret, never with Auth's JWKS.
    return (
        alg == "HS256"
        and payload.get("iss") == SUPABASE_KEY_ISSUER
        and payload.get("role") in SUPABASE_KEY_ROLES
    )


def _check_claims(
    payload: dict[str, Any], *, alg: str, audience: str, issuer: str | None, leeway: float
) -> Claims:
    now = time.time()
    exp = _numeric_date(payload, "exp")
    if exp is None:
        raise InvalidToken("missing exp")
    iat = _numeric_date(payload, "iat")
    nbf = _numeric_date(payload, "nbf")
    try:
        expires_at = datetime.fromtimestamp(exp, tz=UTC)
    except (OverflowError, ValueError, OSError):
        raise InvalidToken("invalid exp") from None
    if expired(expires_at, datetime.fromtimestamp(now, tz=UTC), leeway):
        raise InvalidToken("expired")
    if (nbf is not None and nbf > now + leeway) or (iat is not None and iat > now + leeway):
        raise InvalidToken("not yet valid")

    api_key = _is_supabase_api_key(payload, alg)
    if "aud" not in payload:
        if not api_key:
            raise InvalidToken("missing audience")
    else:
        # An API key that does carry an audience must carry ours, like any token.
        aud = payload["aud"]
        audiences = [aud] if isinstance(aud, str) else aud if isinstance(aud, list) else []
        if audience not in audiences:
            raise InvalidToken("wrong audience")

    if issuer is not None and not api_key:
        if "iss" not in payload:
            raise InvalidToken("missing issuer")
        if payload["iss"] != issuer:
            raise InvalidToken("wrong issuer")

    if "role" not in payload:
        raise InvalidToken("missing role")
    role = payload["role"]
    if not isinstance(role, str) or role not in APP_ROLES:
        raise InvalidToken("role not allowed")

    raw_sub = payload.get("sub")
    if raw_sub is None and role == "authenticated":
        raise InvalidToken("missing sub")
    sub = None if raw_sub is None else _uuid(raw_sub)

    return Claims(role=role, sub=sub, raw=MappingProxyType(payload), expires_at=expires_at)


# --- the verifier ------------------------------------------------------------------------------


VERIFIED_CACHE_SIZE = 4096
VERIFIED_CACHE_SECONDS = 60.0


def check_token_config(settings: Settings) -> None:
    """Refuse to serve with no usable key, or with an HS256 secret short enough to brute-force."""
    if settings.jwt_secret is None and settings.jwt_jwks is None:
        raise SettingsError(
            "set JWT_SECRET or SUPABASE_JWT_SECRET (HS256), or JWT_JWKS or SUPABASE_URL "
            "(RS256/ES256), to verify tokens"
        )
    if settings.jwt_secret is not None and len(settings.jwt_secret) < MIN_HS256_SECRET_LENGTH:
        raise SettingsError(
            f"JWT_SECRET must be at least {MIN_HS256_SECRET_LENGTH} characters "
            f"(got {len(settings.jwt_secret)})"
        )


class TokenVerifier:
    """Turns a bearer token into Claims, or raises InvalidToken.

    HS256 is verified only with ``JWT_SECRET`` and RS256/ES256 only with keys from ``JWT_JWKS``,
    so a token can never pick a key of the wrong kind (algorithm confusion).
    """

    def __init__(self, settings: Settings, *, clock: Callable[[], float] = time.monotonic) -> None:
        check_token_config(settings)
        unsupported = sorted(set(settings.jwt_algorithms) - SUPPORTED_ALGORITHMS)
        if unsupported:
            raise SettingsError(
                f"JWT_ALGORITHMS has unsupported algorithm(s) {', '.join(unsupported)}; "
                f"supported: {', '.join(sorted(SUPPORTED_ALGORITHMS))}"
            )
        usable: set[str] = set()
        if settings.jwt_secret is not None:
            usable.add("HS256")
        if settings.jwt_jwks is not None:
            usable |= ASYMMETRIC_ALGORITHMS
        self.algorithms = frozenset(usable.intersection(settings.jwt_algorithms))
        if not self.algorithms:
            raise SettingsError(
                f"JWT_ALGORITHMS ({', '.join(settings.jwt_algorithms)}) allows none of the "
                f"algorithms the configured keys support ({', '.join(sorted(usable))})"
            )

        self._secret: bytes | None = None
        if "HS256" in self.algorithms and settings.jwt_secret is not None:
            self._secret = settings.jwt_secret.encode()
            try:
                jwt.get_algorithm_by_name("HS256").prepare_key(self._secret)
            except jwt.InvalidKeyError:
                # PyJWT refuses PEM- or JWK-shaped HMAC secrets; better to learn it at startup.
                raise SettingsError(
                    "JWT_SECRET looks like a public key, not an HS256 secret"
                ) from None

        self._verified: dict[str, tuple[Claims, float]] = {}
        self._jwks: JWKSCache | None = None
        if settings.jwt_jwks is not None and self.algorithms & ASYMMETRIC_ALGORITHMS:
            self._jwks = JWKSCache(
                settings.jwt_jwks,
                self.algorithms & ASYMMETRIC_ALGORITHMS,
                settings.jwks_cache_seconds,
                clock,
            )

        self._audience = settings.jwt_audience
        self._issuer = settings.jwt_issuer
        self._leeway = float(settings.jwt_leeway_seconds)
        # Raise rather than warn on weak keys: warnings are errors under pytest, and a weak key
        # that slipped past the JWKS filter must not verify anything.
        self._jws = jwt.PyJWS(
            algorithms=sorted(self.algorithms), options={"enforce_minimum_key_length": True}
        )

    def _algorithm(self, header: Mapping[str, Any]) -> str:
        alg = header.get("alg")
        if not isinstance(alg, str) or alg not in self.algorithms:
            raise InvalidToken("algorithm not allowed")
        return alg

    def _finish(
        self, raw_token: str, alg: str, key: jwt.PyJWK | bytes, payload: dict[str, Any]
    ) -> Claims:
        try:
            self._jws.decode_complete(raw_token, key, algorithms=[alg])
        except jwt.InvalidSignatureError:
            raise InvalidToken("bad signature") from None
        except jwt.InvalidAlgorithmError:
            raise InvalidToken("algorithm not allowed") from None
        except jwt.DecodeError:
            raise InvalidToken("malformed token") from None
        except jwt.PyJWTError as exc:
            log.warning("token refused by PyJWT: %s: %s", type(exc).__name__, exc)
            raise InvalidToken("invalid token") from None
        return _check_claims(
            payload, alg=alg, audience=self._audience, issuer=self._issuer, leeway=self._leeway
        )

    def _hs256_key(self) -> bytes:
        if self._secret is None:  # unreachable: HS256 is only allowed with a secret
            raise InvalidToken("algorithm not allowed")
        return self._secret

    async def _jwks_key(self, alg: str, kid: str | None) -> jwt.PyJWK:
        if self._jwks is None:  # unreachable: RS256/ES256 are only allowed with a JWKS
            raise InvalidToken("algorithm not allowed")
        key = await self._jwks.key_for(alg, kid)
        if key is None:
            if not self._jwks.ever_loaded:
                raise SigningKeysUnavailable("signing keys unavailable")
            raise InvalidToken("unknown signing key")
        return key

    async def verify(self, raw_token: str) -> Claims:
        cached = self._verified.get(raw_token)
        if cached is not None and self._still_valid(cached):
            return cached[0]
        header, payload = _split(raw_token)
        alg = self._algorithm(header)
        key: jwt.PyJWK | bytes
        if alg == "HS256":
            key = self._hs256_key()
        else:
            key = await self._jwks_key(alg, header.get("kid"))
        claims = self._finish(raw_token, alg, key, payload)
        if alg == "HS256":
            # Only HS256: its secret is fixed for the process' life, while JWKS keys can be
            # withdrawn, and a token must stop working as soon as its key is gone.
            self._remember(raw_token, claims)
        return claims

    def _still_valid(self, entry: tuple[Claims, float]) -> bool:
        claims, verified_at = entry
        now = time.time()
        if now - verified_at > VERIFIED_CACHE_SECONDS:
            return False
        return not claims.expired(datetime.fromtimestamp(now, tz=UTC), self._leeway)

    def _remember(self, raw_token: str, claims: Claims) -> None:
        # A client sends the same token with every request: checking its signature and
        # claims once a minute, not once a request, saves a fifth of a short request's CPU.
        # Entries expire with the token, and after VERIFIED_CACHE_SECONDS in any case.
        if len(self._verified) >= VERIFIED_CACHE_SIZE:
            self._verified.pop(next(iter(self._verified)))
        self._verified[raw_token] = (claims, time.time())


# --- helpers for callers -------------------------------------------------------------------------


def mint_token(
    settings: Settings,
    *,
    sub: UUID | None,
    role: str = "authenticated",
    ttl_seconds: int = 3600,
    extra: Mapping[str, Any] | None = None,
    now: datetime | None = None,
) -> str:
    """An HS256 token shaped like Supabase's. ``extra`` is applied last and may override claims."""
    secret = settings.jwt_secret
    if secret is None:
        raise SettingsError("JWT_SECRET is not set; it is needed to sign HS256 tokens")
    if len(secret) < MIN_HS256_SECRET_LENGTH:
        raise SettingsError(f"JWT_SECRET must be at least {MIN_HS256_SECRET_LENGTH} characters")
    issued = datetime.now(UTC) if now is None else now
    if issued.tzinfo is None:
        raise ValueError("now must be timezone-aware")
    iat = int(issued.timestamp())
    payload: dict[str, Any] = {
        "aud": settings.jwt_audience,
        "exp": iat + ttl_seconds,
        "iat": iat,
        "role": role,
    }
    if settings.jwt_issuer is not None:
        payload["iss"] = settings.jwt_issuer
    if sub is not None:
        payload["sub"] = str(sub)
    if extra:
        payload.update(extra)
    return jwt.encode(payload, secret, algorithm="HS256", headers={"typ": "JWT"})


def sole_authorization(values: Sequence[str]) -> str | None:
    """The one Authorization header of a request, None without any; InvalidToken for two or
    more: which of them a server or proxy reads differs (Starlette's headers.get, the first),
    so a request carrying two credentials is refused rather than judged by either."""
    if len(values) > 1:
        raise InvalidToken("more than one Authorization header: send exactly one credential")
    return values[0] if values else None


def bearer_token(header_value: str | None) -> str | None:
    """The token in an ``Authorization`` header value; None when there is no credential at all."""
    if header_value is None or not header_value.strip():
        return None
    parts = header_value.split()
    if len(parts) != 2 or parts[0].lower() != "bearer" or _TOKEN68.fullmatch(parts[1]) is None:
        raise InvalidToken("malformed authorization header")
    return parts[1]
