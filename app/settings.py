"""The process configuration: read from the environment once, into one typed object.

Nothing else in the application reads ``os.environ``; everything receives a
``Settings`` (tests build their own with ``Settings.from_env(overrides)``).
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from dataclasses import dataclass, field
from decimal import Decimal
from pathlib import Path

import platformdirs

APP_ROLES = ("anon", "authenticated", "service_role", "compliance_auditor")
"""The database roles a request may run as; the token's ``role`` claim picks one of them."""

MIN_HS256_SECRET_LENGTH = 32


class SettingsError(ValueError):
    """A variable is missing or malformed; the message names it."""


def _bool(env: Mapping[str, str], name: str, default: bool) -> bool:
    raw = env.get(name)
    if raw is None or raw == "":
        return default
    value = raw.strip().lower()
    if value in ("1", "true", "yes", "on"):
        return True
    if value in ("0", "false", "no", "off"):
        return False
    raise SettingsError(f"{name} must be true or false, got {raw!r}")


def _int(env: Mapping[str, str], name: str, default: int, *, minimum: int = 0) -> int:
    raw = env.get(name)
    if raw is None or raw == "":
        return default
    try:
        value = int(raw)
    except ValueError:
        raise SettingsError(f"{name} must be an integer, got {raw!r}") from None
    if value < minimum:
        raise SettingsError(f"{name} must be at least {minimum}, got {value}")
    return value


def _float(env: Mapping[str, str], name: str, default: float) -> float:
    raw = env.get(name)
    if raw is None or raw == "":
        return default
    try:
        return float(raw)
    except ValueError:
        raise SettingsError(f"{name} must be a number, got {raw!r}") from None


def _decimal(env: Mapping[str, str], name: str, default: Decimal) -> Decimal:
    raw = env.get(name)
    if raw is None or raw == "":
        return default
    try:
        return Decimal(raw)
    except ArithmeticError:
        raise SettingsError(f"{name} must be a decimal number, got {raw!r}") from None


def _str(env: Mapping[str, str], name: str) -> str | None:
    raw = env.get(name)
    return raw if raw else None


def _csv(env: Mapping[str, str], name: str, default: tuple[str, ...]) -> tuple[str, ...]:
    raw = env.get(name)
    if raw is None or raw.strip() == "":
        return default
    return tuple(part.strip() for part in raw.split(",") if part.strip())


@dataclass(frozen=True, kw_only=True)
class Settings:
    # --- database -----------------------------------------------------------
    database_url: str | None = None
    """Owner connection (migrations, seeds). None: the embedded PostgreSQL."""
    api_database_url: str | None = None
    """Login as ``authenticator`` for the API and the engine. None: derived from the embedded server."""
    data_dir: Path = field(default_factory=lambda: Path(platformdirs.user_data_dir("order-api")))
    """Where the embedded PostgreSQL keeps its cluster (``ORDER_API_DATA_DIR``)."""
    authenticator_password: str | None = None
    db_pool_size: int = 10
    db_pool_timeout: float = 5.0
    statement_timeout_ms: int = 5000

    # --- tokens -------------------------------------------------------------
    jwt_secret: str | None = None
    jwt_jwks: str | None = None
    """A JWKS URL (https://...) or a file path with the public keys for RS256/ES256."""
    jwt_audience: str = "authenticated"
    jwt_issuer: str | None = None
    jwt_algorithms: tuple[str, ...] = ("HS256", "RS256", "ES256")
    jwt_leeway_seconds: int = 30
    jwks_cache_seconds: int = 600

    # --- HTTP and GraphQL ----------------------------------------------------
    host: str = "127.0.0.1"
    port: int = 8000
    graphiql: bool = True
    introspection: bool = True
    max_query_depth: int = 10
    max_aliases: int = 30
    max_tokens: int = 2000
    max_document_bytes: int = 20_000
    max_order_quantity: int = 1_000_000
    compiled_queries: bool = True
    """Answer hot read queries with one SQL statement (graphql/compiled.py); off = resolvers only."""
    request_read_timeout_seconds: float = 10.0
    """Time a client has to send a request's headers, and again its body (app/server.py)."""

    # --- execution engine ----------------------------------------------------
    risk_max_quantity: int = 100_000
    risk_max_notional: Decimal = Decimal("5000000")
    risk_symbols: tuple[str, ...] = ()
    """Symbol allow-list for pre-trade checks; empty means every symbol is allowed."""
    engine_poll_seconds: float = 0.2
    engine_max_retries: int = 5
    engine_retry_base_seconds: float = 0.2
    venue_seed: int = 42
    venue_prices_csv: Path | None = None
    venue_liquidity: int = 500
    """Most shares the paper venue fills per order per tick."""
    venue_tick_seconds: float = 0.25
    venue_commission_per_share: Decimal = Decimal("0.005")
    venue_commission_minimum: Decimal = Decimal("1.00")
    venue_transient_failure_rate: float = 0.0
    venue_permanent_failure_rate: float = 0.0

    @classmethod
    def from_env(cls, overrides: Mapping[str, str] | None = None) -> Settings:
        env: dict[str, str] = dict(os.environ)
        if overrides:
            env.update(overrides)
        data_dir = _str(env, "ORDER_API_DATA_DIR")
        prices_csv = _str(env, "VENUE_PRICES_CSV")
        return cls(
            database_url=_str(env, "DATABASE_URL"),
            api_database_url=_str(env, "API_DATABASE_URL"),
            data_dir=Path(data_dir) if data_dir else Path(platformdirs.user_data_dir("order-api")),
            authenticator_password=_str(env, "AUTHENTICATOR_PASSWORD"),
            db_pool_size=_int(env, "DB_POOL_SIZE", 10, minimum=1),
            db_pool_timeout=_float(env, "DB_POOL_TIMEOUT", 5.0),
            statement_timeout_ms=_int(env, "STATEMENT_TIMEOUT_MS", 5000),
            jwt_secret=_str(env, "JWT_SECRET"),
            jwt_jwks=_str(env, "JWT_JWKS"),
            jwt_audience=env.get("JWT_AUDIENCE") or "authenticated",
            jwt_issuer=_str(env, "JWT_ISSUER"),
            jwt_algorithms=_csv(env, "JWT_ALGORITHMS", ("HS256", "RS256", "ES256")),
            jwt_leeway_seconds=_int(env, "JWT_LEEWAY_SECONDS", 30),
            jwks_cache_seconds=_int(env, "JWKS_CACHE_SECONDS", 600),
            host=env.get("HOST") or "127.0.0.1",
            port=_int(env, "PORT", 8000, minimum=1),
            graphiql=_bool(env, "GRAPHIQL", True),
            introspection=_bool(env, "GRAPHQL_INTROSPECTION", True),
            max_query_depth=_int(env, "MAX_QUERY_DEPTH", 10, minimum=1),
            max_aliases=_int(env, "MAX_ALIASES", 30, minimum=1),
            max_tokens=_int(env, "MAX_TOKENS", 2000, minimum=1),
            max_document_bytes=_int(env, "MAX_DOCUMENT_BYTES", 20_000, minimum=100),
            max_order_quantity=_int(env, "MAX_ORDER_QUANTITY", 1_000_000, minimum=1),
            compiled_queries=_bool(env, "COMPILED_QUERIES", True),
            request_read_timeout_seconds=_float(env, "REQUEST_READ_TIMEOUT_SECONDS", 10.0),
            risk_max_quantity=_int(env, "RISK_MAX_QUANTITY", 100_000, minimum=1),
            risk_max_notional=_decimal(env, "RISK_MAX_NOTIONAL", Decimal("5000000")),
            risk_symbols=tuple(s.upper() for s in _csv(env, "RISK_SYMBOLS", ())),
            engine_poll_seconds=_float(env, "ENGINE_POLL_SECONDS", 0.2),
            engine_max_retries=_int(env, "ENGINE_MAX_RETRIES", 5),
            engine_retry_base_seconds=_float(env, "ENGINE_RETRY_BASE_SECONDS", 0.2),
            venue_seed=_int(env, "VENUE_SEED", 42),
            venue_prices_csv=Path(prices_csv) if prices_csv else None,
            venue_liquidity=_int(env, "VENUE_LIQUIDITY", 500, minimum=1),
            venue_tick_seconds=_float(env, "VENUE_TICK_SECONDS", 0.25),
            venue_commission_per_share=_decimal(
                env, "VENUE_COMMISSION_PER_SHARE", Decimal("0.005")
            ),
            venue_commission_minimum=_decimal(env, "VENUE_COMMISSION_MINIMUM", Decimal("1.00")),
            venue_transient_failure_rate=_float(env, "VENUE_TRANSIENT_FAILURE_RATE", 0.0),
            venue_permanent_failure_rate=_float(env, "VENUE_PERMANENT_FAILURE_RATE", 0.0),
        )

    def check_token_config(self) -> None:
        """Refuse to serve with no usable key, or with an HS256 secret short enough to brute-force."""
        if self.jwt_secret is None and self.jwt_jwks is None:
            raise SettingsError("set JWT_SECRET (HS256) or JWT_JWKS (RS256/ES256) to verify tokens")
        if self.jwt_secret is not None and len(self.jwt_secret) < MIN_HS256_SECRET_LENGTH:
            raise SettingsError(
                f"JWT_SECRET must be at least {MIN_HS256_SECRET_LENGTH} characters "
                f"(got {len(self.jwt_secret)})"
            )
