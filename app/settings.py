"""The process configuration: read from the environment once, into one typed object.

Nothing else in the application reads ``os.environ``; everything receives a
``Settings`` (tests build their own with ``Settings.from_env(overrides)``).

This module is the table: which variables exist, their defaults, and the combinations
refused. How one variable's text is parsed is ``app/env_parsing.py``; what a Supabase
project's URL and key names imply is ``app/supabase.py``.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from dataclasses import dataclass, field
from decimal import Decimal
from pathlib import Path
from typing import Literal

import platformdirs

from app import supabase
from app.env_parsing import SettingsError as SettingsError  # raised here, caught by importers
from app.env_parsing import (
    parse_bool,
    parse_choice,
    parse_csv,
    parse_decimal,
    parse_float,
    parse_int,
    parse_one_of,
    parse_origins,
    parse_postgres_url,
    parse_str,
)

APP_ROLES = ("anon", "authenticated", "service_role", "compliance_auditor")
"""The database roles a request may run as; the token's ``role`` claim picks one of them."""

MIN_HS256_SECRET_LENGTH = 32

LOG_FORMATS = ("text", "json")

PoolerMode = Literal["none", "session", "transaction"]
"""What sits between the pool and PostgreSQL (``DB_POOLER``): nothing or a session-mode
pooler (one server session per client connection), or a transaction-mode pooler
(PgBouncer ``pool_mode = transaction``, Supavisor on port 6543), which hands each
*transaction* to whichever server session is free."""

MOVED_TO_ORDER_LIMITS = {
    "MAX_ORDER_QUANTITY": "max_quantity",
    "RISK_MAX_QUANTITY": "max_quantity",
    "RISK_MAX_NOTIONAL": "max_notional",
    "RISK_SYMBOLS": "symbols",
}
"""Order limits once read from the environment; now one row in the database (order_limits)."""


def _refuse_moved_limits(env: Mapping[str, str]) -> None:
    # Ignoring them would leave a limit the operator believes in unenforced.
    for name, column in MOVED_TO_ORDER_LIMITS.items():
        if env.get(name):
            raise SettingsError(
                f"{name} is no longer read: order limits live in the database, set them with"
                f' python -m app db psql -c "UPDATE order_limits SET {column} = ..."'
                " (README, Order limits)"
            )


def _pooler(env: Mapping[str, str], name: str) -> PoolerMode:
    raw = (env.get(name) or "none").strip().lower()
    if raw == "none":
        return "none"
    if raw == "session":
        return "session"
    if raw == "transaction":
        return "transaction"
    raise SettingsError(f"{name} must be none, session or transaction, got {env.get(name)!r}")


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
    market_close: str | None = None
    """``MARKET_CLOSE`` as given: written into the database's trading_session by ``db upgrade``
    and ``dev`` (app/db/trading_session.py); the API and the engine ask the database."""
    engine_database_url: str | None = None
    """The execution engine's login, which needs a session (its advisory-lock leases): a direct
    or session-mode connection. None: ``api_database_url``."""
    db_pooler: PoolerMode = "none"
    """What ``api_database_url`` goes through (``DB_POOLER``); "transaction": PgBouncer in
    transaction mode or Supavisor on 6543 (unnamed prepared statements)."""
    db_pool_size: int = 10
    db_pool_timeout: float = 5.0
    db_connect_timeout: float = 3.0
    statement_timeout_ms: int = 5000
    change_feed_poll_ms: int = 5
    """How often a process with subscribers reads the change feed (db/change_feed.py)."""
    subscription_max_lag_ms: int = 1000
    """How long a change may wait for a subscriber before it gets the gap signal instead."""

    # --- tokens -------------------------------------------------------------
    supabase_url: str | None = None
    """The Supabase project URL; implies ``jwt_jwks`` and ``jwt_issuer`` (its Auth server)."""
    jwt_secret: str | None = None
    """``JWT_SECRET`` or ``SUPABASE_JWT_SECRET``."""
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
    cors_origins: tuple[str, ...] = ()
    """Browser origins allowed to call the API (HTTP and WebSocket); ``("*",)`` for any.

    Never with credentials: callers send ``Authorization``, the API sets no cookies, so CORS
    credentials are not allowed at all and ``*`` is safe to offer."""
    max_query_depth: int = 10
    max_aliases: int = 30
    max_tokens: int = 2000
    max_document_bytes: int = 20_000
    compiled_queries: bool = True
    """Answer hot read queries with one SQL statement (graphql/compiled/); off = resolvers only."""
    compiled_mutations: bool = True
    """Answer learned submitOrder/cancelOrder documents with one statement (migration 007)."""
    compiled_queries_strict: bool = False
    """A query that fails to compile or bind fails its request instead of taking the
    resolvers, so that a compiler bug cannot hide behind the fallback (on in the tests; off,
    the fallback is logged and counted in /metrics)."""

    # --- operations ----------------------------------------------------------
    metrics: bool = True
    """Serve ``GET /metrics`` (Prometheus text; counts and timings only, no trader data)."""
    log_format: str = "text"
    """``text`` or ``json``: how log lines (the per-request line included) are written."""
    worker_metrics_port: int | None = None
    """Where ``python -m app worker`` serves its metrics (engine counters); None: nowhere."""
    otel_traces_exporter: str | None = None
    """OpenTelemetry's own variable: tracing is on when it names an exporter (app/tracing.py)."""
    request_read_timeout_seconds: float = 10.0
    """Time a client has to send a request's headers, and again its body (app/serving.py)."""

    # --- execution engine ----------------------------------------------------
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
        _refuse_moved_limits(env)
        data_dir = parse_str(env, "ORDER_API_DATA_DIR")
        prices_csv = parse_str(env, "VENUE_PRICES_CSV")
        supabase_url = supabase.project_url(env)
        auth_url = None if supabase_url is None else supabase_url + supabase.AUTH_PATH
        jwks_url = None if supabase_url is None else supabase_url + supabase.JWKS_PATH
        return cls(
            database_url=parse_postgres_url(env, "DATABASE_URL"),
            api_database_url=parse_postgres_url(env, "API_DATABASE_URL"),
            engine_database_url=parse_postgres_url(env, "ENGINE_DATABASE_URL"),
            db_pooler=_pooler(env, "DB_POOLER"),
            data_dir=Path(data_dir) if data_dir else Path(platformdirs.user_data_dir("order-api")),
            authenticator_password=parse_str(env, "AUTHENTICATOR_PASSWORD"),
            market_close=parse_str(env, "MARKET_CLOSE"),
            db_pool_size=parse_int(env, "DB_POOL_SIZE", 10, minimum=1),
            db_pool_timeout=parse_float(env, "DB_POOL_TIMEOUT", 5.0),
            db_connect_timeout=parse_float(env, "DB_CONNECT_TIMEOUT", 3.0),
            statement_timeout_ms=parse_int(env, "STATEMENT_TIMEOUT_MS", 5000),
            change_feed_poll_ms=parse_int(env, "CHANGE_FEED_POLL_MS", 5, minimum=1),
            subscription_max_lag_ms=parse_int(env, "SUBSCRIPTION_MAX_LAG_MS", 1000, minimum=1),
            supabase_url=supabase_url,
            jwt_secret=supabase.jwt_secret(env),
            jwt_jwks=parse_one_of(env, "JWT_JWKS", jwks_url, "SUPABASE_URL"),
            jwt_audience=env.get("JWT_AUDIENCE") or "authenticated",
            jwt_issuer=parse_one_of(env, "JWT_ISSUER", auth_url, "SUPABASE_URL"),
            jwt_algorithms=parse_csv(env, "JWT_ALGORITHMS", ("HS256", "RS256", "ES256")),
            jwt_leeway_seconds=parse_int(env, "JWT_LEEWAY_SECONDS", 30),
            jwks_cache_seconds=parse_int(env, "JWKS_CACHE_SECONDS", 600),
            host=env.get("HOST") or "127.0.0.1",
            port=parse_int(env, "PORT", 8000, minimum=1),
            graphiql=parse_bool(env, "GRAPHIQL", True),
            introspection=parse_bool(env, "GRAPHQL_INTROSPECTION", True),
            cors_origins=parse_origins(env, "CORS_ORIGINS"),
            max_query_depth=parse_int(env, "MAX_QUERY_DEPTH", 10, minimum=1),
            max_aliases=parse_int(env, "MAX_ALIASES", 30, minimum=1),
            max_tokens=parse_int(env, "MAX_TOKENS", 2000, minimum=1),
            max_document_bytes=parse_int(env, "MAX_DOCUMENT_BYTES", 20_000, minimum=100),
            compiled_queries=parse_bool(env, "COMPILED_QUERIES", True),
            compiled_mutations=parse_bool(env, "COMPILED_MUTATIONS", True),
            compiled_queries_strict=parse_bool(env, "COMPILED_QUERIES_STRICT", False),
            metrics=parse_bool(env, "METRICS", True),
            log_format=parse_choice(env, "LOG_FORMAT", "text", LOG_FORMATS),
            worker_metrics_port=(
                parse_int(env, "WORKER_METRICS_PORT", 0, minimum=1)
                if parse_str(env, "WORKER_METRICS_PORT")
                else None
            ),
            otel_traces_exporter=parse_str(env, "OTEL_TRACES_EXPORTER"),
            request_read_timeout_seconds=parse_float(env, "REQUEST_READ_TIMEOUT_SECONDS", 10.0),
            engine_poll_seconds=parse_float(env, "ENGINE_POLL_SECONDS", 0.2),
            engine_max_retries=parse_int(env, "ENGINE_MAX_RETRIES", 5),
            engine_retry_base_seconds=parse_float(env, "ENGINE_RETRY_BASE_SECONDS", 0.2),
            venue_seed=parse_int(env, "VENUE_SEED", 42),
            venue_prices_csv=Path(prices_csv) if prices_csv else None,
            venue_liquidity=parse_int(env, "VENUE_LIQUIDITY", 500, minimum=1),
            venue_tick_seconds=parse_float(env, "VENUE_TICK_SECONDS", 0.25),
            venue_commission_per_share=parse_decimal(
                env, "VENUE_COMMISSION_PER_SHARE", Decimal("0.005")
            ),
            venue_commission_minimum=parse_decimal(
                env, "VENUE_COMMISSION_MINIMUM", Decimal("1.00")
            ),
            venue_transient_failure_rate=parse_float(env, "VENUE_TRANSIENT_FAILURE_RATE", 0.0),
            venue_permanent_failure_rate=parse_float(env, "VENUE_PERMANENT_FAILURE_RATE", 0.0),
        )

    def check_token_config(self) -> None:
        """Refuse to serve with no usable key, or with an HS256 secret short enough to brute-force."""
        if self.jwt_secret is None and self.jwt_jwks is None:
            raise SettingsError(
                "set JWT_SECRET or SUPABASE_JWT_SECRET (HS256), or JWT_JWKS or SUPABASE_URL "
                "(RS256/ES256), to verify tokens"
            )
        if self.jwt_secret is not None and len(self.jwt_secret) < MIN_HS256_SECRET_LENGTH:
            raise SettingsError(
                f"JWT_SECRET must be at least {MIN_HS256_SECRET_LENGTH} characters "
                f"(got {len(self.jwt_secret)})"
            )
