"""The public signing keys from ``JWT_JWKS``: fetched, filtered and cached.

A JWKS document is read from a URL (Supabase Auth's ``/.well-known/jwks.json``) or a file. Only
RS256 and ES256 (P-256) signing keys are kept, and only their public members; weak keys are
skipped with a warning. auth/jwt.py asks this cache for the key a token names and decides what
a missing key means for the token.
"""

from __future__ import annotations

import asyncio
import http.client
import json
import logging
import urllib.request
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

import jwt

log = logging.getLogger(__name__)

JWKS_REFETCH_INTERVAL_SECONDS = 30.0
"""Least time between two JWKS fetches, whatever prompts them (expiry or an unknown ``kid``)."""
JWKS_FETCH_TIMEOUT_SECONDS = 5.0
JWKS_MAX_BYTES = 1 << 20


class _JWKSError(Exception):
    pass


def _is_url(source: str) -> bool:
    return source.lower().startswith(("http://", "https://"))


def _read_jwks_source(source: str) -> Any:
    """Blocking: fetch or read the JWKS document. Run it in a thread from async code."""
    try:
        if _is_url(source):
            request = urllib.request.Request(
                source, headers={"Accept": "application/json", "User-Agent": "order-api"}
            )
            with urllib.request.urlopen(request, timeout=JWKS_FETCH_TIMEOUT_SECONDS) as response:
                body: bytes = response.read(JWKS_MAX_BYTES + 1)
        else:
            with Path(source).open("rb") as file:
                body = file.read(JWKS_MAX_BYTES + 1)
        if len(body) > JWKS_MAX_BYTES:
            raise _JWKSError("document larger than 1 MiB")
        return json.loads(body)
    except (OSError, ValueError, http.client.HTTPException) as exc:
        raise _JWKSError(str(exc) or type(exc).__name__) from exc


def _jwk_algorithm(entry: Mapping[str, Any]) -> str | None:
    kty = entry.get("kty")
    if kty == "RSA":
        implied = "RS256"
    elif kty == "EC" and entry.get("crv") == "P-256":
        implied = "ES256"
    else:
        return None
    declared = entry.get("alg")
    if declared is not None and declared != implied:
        return None
    return implied


_PUBLIC_MEMBERS = {"RS256": ("kty", "n", "e", "kid"), "ES256": ("kty", "crv", "x", "y", "kid")}


def _parse_jwks(document: Any, algorithms: frozenset[str]) -> tuple[jwt.PyJWK, ...]:
    if not isinstance(document, dict) or not isinstance(document.get("keys"), list):
        raise _JWKSError("not a JWKS document")
    keys: list[jwt.PyJWK] = []
    for entry in document["keys"]:
        if not isinstance(entry, dict):
            continue
        alg = _jwk_algorithm(entry)
        if alg is None or alg not in algorithms or entry.get("use", "sig") != "sig":
            continue
        # Only public members are kept: a published private part must not turn into a key we
        # hold, and a symmetric ("oct") key never becomes an HS256 key through the JWKS.
        public = {name: entry[name] for name in _PUBLIC_MEMBERS[alg] if name in entry}
        try:
            key = jwt.PyJWK(public, algorithm=alg)
        except jwt.PyJWTError as exc:
            log.warning("skipping unusable JWK kid=%r: %s", entry.get("kid"), exc)
            continue
        weakness = key.Algorithm.check_key_length(key.key)
        if weakness:
            log.warning("skipping weak JWK kid=%r: %s", entry.get("kid"), weakness)
            continue
        keys.append(key)
    if not keys:
        raise _JWKSError("no usable RS256/ES256 signing keys")
    return tuple(keys)


class JWKSCache:
    """The public keys from ``JWT_JWKS``, refreshed on expiry and on an unknown ``kid``.

    Every fetch, whatever prompted it, counts against one rate limit: tokens are attacker
    controlled, and a flood of random kids must not become a flood of requests to the key server.
    When a refresh fails the previous keys stay in use, so an outage of the key server does not
    log every trader out.
    """

    def __init__(
        self,
        source: str,
        algorithms: frozenset[str],
        cache_seconds: float,
        clock: Callable[[], float],
    ) -> None:
        self._source = source
        self._algorithms = algorithms
        self._cache_seconds = cache_seconds
        self._clock = clock
        self._keys: tuple[jwt.PyJWK, ...] = ()
        self._loaded_at: float | None = None
        self._last_attempt: float | None = None
        self._lock = asyncio.Lock()

    @property
    def ever_loaded(self) -> bool:
        """Whether any JWKS was ever loaded: without one, no asymmetric token can be checked."""
        return self._loaded_at is not None

    def _stale(self) -> bool:
        return self._loaded_at is None or self._clock() - self._loaded_at >= self._cache_seconds

    def _may_fetch(self) -> bool:
        return (
            self._last_attempt is None
            or self._clock() - self._last_attempt >= JWKS_REFETCH_INTERVAL_SECONDS
        )

    def _find(self, alg: str, kid: str | None) -> jwt.PyJWK | None:
        candidates = [key for key in self._keys if key.algorithm_name == alg]
        if kid is None:
            # Without a kid the choice is only unambiguous with a single candidate key.
            return candidates[0] if len(candidates) == 1 else None
        return next((key for key in candidates if key.key_id == kid), None)

    def _install(self, document: Any) -> None:
        try:
            keys = _parse_jwks(document, self._algorithms)
        except _JWKSError as exc:
            self._failed(exc)
            return
        self._keys = keys
        self._loaded_at = self._clock()

    def _failed(self, exc: Exception) -> None:
        log.warning(
            "could not load the JWKS from %s (%s); keeping %d cached key(s)",
            self._source,
            exc,
            len(self._keys),
        )

    async def _refresh(self) -> None:
        self._last_attempt = self._clock()
        try:
            document = await asyncio.to_thread(_read_jwks_source, self._source)
        except _JWKSError as exc:
            self._failed(exc)
            return
        self._install(document)

    async def _refresh_if(self, needed: Callable[[], bool]) -> None:
        # A request arriving while a fetch is in flight waits for it (the lock is held) instead
        # of failing on the keys it is about to replace; the condition is checked again under
        # the lock so that the waiters do not each fetch in turn.
        if not self._may_fetch() and not self._lock.locked():
            return
        async with self._lock:
            if needed() and self._may_fetch():
                await self._refresh()

    async def key_for(self, alg: str, kid: str | None) -> jwt.PyJWK | None:
        """The key for a token signed with ``alg`` naming ``kid``; None when there is none."""
        if self._stale():
            await self._refresh_if(self._stale)
        key = self._find(alg, kid)
        if key is None:
            await self._refresh_if(lambda: self._find(alg, kid) is None)
            key = self._find(alg, kid)
        return key
