"""The process configuration: read from the environment once, into one typed object.

Nothing else in the application reads ``os.environ``; everything receives a
``Settings`` (tests build their own with ``Settings.from_env(overrides)``).
"""

from __future__ import annotations

import os
import urllib.parse
from collections.abc import Mapping
from dataclasses import dataclass, field
from decimal import Decimal
from pathlib import Path
from typing import Literal

import platformdirs
from sqlalchemy.engine import make_url
from sqlalchemy.exc import ArgumentError

APP_ROLES = ("anon", "authenticated", "service_role", "compliance_auditor")
"""The database roles a request may run as; the token's ``role`` claim picks one of them."""

MIN_HS256_SECRET_LENGTH = 32

SUPABASE_AUTH_PATH = "/auth/v1"
"""Where a Supabase project serves Auth: its tokens' ``iss``, and its JWKS below it."""
SUPABASE_JWKS_PATH = SUPABASE_AUTH_PATH + "/.well-known/jwks.json"

LOG_FORMATS = ("text", "json")

PoolerMode = Literal["none", "session", "transaction"]
"""What sits between the pool and PostgreSQL (``DB_POOLER``): nothing or a session-mode
pooler (one server session per client connection), or a transaction-mode pooler
(PgBouncer ``pool_mode = transaction``, Supavisor on port 6543), which hands each
*transaction* to whichever server session is free."""


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


def _postgres_url(env: Mapping[str, str], name: str) -> str | None:
    """A PostgreSQL connection URL, refused here when malformed. The message never repeats the
    value: it may hold a password."""
    raw = _str(env, name)
    if raw is None:
        return None
    try:
        backend = make_url(raw).get_backend_name()
    except (ValueError, ArgumentError):  # unparsable, or a port that is not a number
        backend = None
    if backend not in ("postgresql", "postgres"):
        raise SettingsError(
            f"{name} is not a PostgreSQL URL; expected postgresql://user:password@host:port/database"
        )
    return raw


def _choice(env: Mapping[str, str], name: str, default: str, choices: tuple[str, ...]) -> str:
    raw = (env.get(name) or "").strip().lower()
    if raw == "":
        return default
    if raw not in choices:
        raise SettingsError(f"{name} must be one of {', '.join(choices)}, got {env.get(name)!r}")
    return raw


def _csv(env: Mapping[str, str], name: str, default: tuple[str, ...]) -> tuple[str, ...]:
    raw = env.get(name)
    if raw is None or raw.strip() == "":
        return default
    return tuple(part.strip() for part in raw.split(",") if part.strip())


def _supabase_url(env: Mapping[str, str]) -> str | None:
    raw = _str(env, "SUPABASE_URL")
    if raw is None:
        return None
    url = urllib.parse.urlsplit(raw)
    if url.scheme not in ("http", "https") or not url.hostname or url.path.strip("/"):
        raise SettingsError(
            f"SUPABASE_URL must be the project URL, like https://<ref>.supabase.co, got {raw!r}"
        )
    if url.query or url.fragment or url.username or url.password:
        raise SettingsError(f"SUPABASE_URL must be a bare project URL, got {raw!r}")
    return f"{url.scheme}://{url.netloc}"


def _one_of(env: Mapping[str, str], name: str, derived: str | None, source: str) -> str | None:
    """``name``'s value, or the one ``source`` implies; both given and different is an error."""
    explicit = _str(env, name)
    if explicit is not None and derived is not None and explicit != derived:
        raise SettingsError(
            f"{name} ({explicit!r}) contradicts {source} (which implies {derived!r}); set one"
        )
    return explicit if explicit is not None else derived


def _jwt_secret(env: Mapping[str, str]) -> str | None:
    # Supabase names the project's HS256 secret SUPABASE_JWT_SECRET; accept either name.
    ours, theirs = _str(env, "JWT_SECRET"), _str(env, "SUPABASE_JWT_SECRET")
    if ours is not None and theirs is not None and ours != theirs:
        raise SettingsError("JWT_SECRET and SUPABASE_JWT_SECRET are both set and differ; set one")
    return ours if ours is not None else theirs


_DEFAULT_PORTS = {"http": 80, "https": 443}


def _origins(env: Mapping[str, str], name: str) -> tuple[str, ...]:
    """Exact origins (``scheme://host[:port]``, as browsers send them), or ``*`` alone."""
    entries = _csv(env, name, ())
    if "*" in entries:
        if len(entries) > 1:
            raise SettingsError(f"{name}: '*' allows every origin; list no others beside it")
        return entries
    origins = []
    for entry in entries:
        try:
            url = urllib.parse.urlsplit(entry)
            port = url.port
        except ValueError:
            port, url = None, urllib.parse.urlsplit("")
        scheme = url.scheme.lower()
        if (
            scheme not in _DEFAULT_PORTS
            or not url.hostname
            or url.path not in ("", "/")
            or url.query
            or url.fragment
            or url.username
        ):
            raise SettingsError(
                f"{name}: {entry!r} is not an origin like https://app.example.com[:port]"
            )
        host = f"[{url.hostname}]" if ":" in url.hostname else url.hostname
        if port is not None and port != _DEFAULT_PORTS[scheme]:
            host = f"{host}:{port}"
        origins.append(f"{scheme}://{host}")
    return tuple(origins)


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
        data_dir = _str(env, "ORDER_API_DATA_DIR")
        prices_csv = _str(env, "VENUE_PRICES_CSV")
        supabase_url = _supabase_url(env)
        auth_url = None if supabase_url is None else supabase_url + SUPABASE_AUTH_PATH
        jwks_url = None if supabase_url is None else supabase_url + SUPABASE_JWKS_PATH
        return cls(
            database_url=_postgres_url(env, "DATABASE_URL"),
            api_database_url=_postgres_url(env, "API_DATABASE_URL"),
            engine_database_url=_postgres_url(env, "ENGINE_DATABASE_URL"),
            db_pooler=_pooler(env, "DB_POOLER"),
            data_dir=Path(data_dir) if data_dir else Path(platformdirs.user_data_dir("order-api")),
            authenticator_password=_str(env, "AUTHENTICATOR_PASSWORD"),
            db_pool_size=_int(env, "DB_POOL_SIZE", 10, minimum=1),
            db_pool_timeout=_float(env, "DB_POOL_TIMEOUT", 5.0),
            db_connect_timeout=_float(env, "DB_CONNECT_TIMEOUT", 3.0),
            statement_timeout_ms=_int(env, "STATEMENT_TIMEOUT_MS", 5000),
            change_feed_poll_ms=_int(env, "CHANGE_FEED_POLL_MS", 5, minimum=1),
            supabase_url=supabase_url,
            jwt_secret=_jwt_secret(env),
            jwt_jwks=_one_of(env, "JWT_JWKS", jwks_url, "SUPABASE_URL"),
            jwt_audience=env.get("JWT_AUDIENCE") or "authenticated",
            jwt_issuer=_one_of(env, "JWT_ISSUER", auth_url, "SUPABASE_URL"),
            jwt_algorithms=_csv(env, "JWT_ALGORITHMS", ("HS256", "RS256", "ES256")),
            jwt_leeway_seconds=_int(env, "JWT_LEEWAY_SECONDS", 30),
            jwks_cache_seconds=_int(env, "JWKS_CACHE_SECONDS", 600),
            host=env.get("HOST") or "127.0.0.1",
            port=_int(env, "PORT", 8000, minimum=1),
            graphiql=_bool(env, "GRAPHIQL", True),
            introspection=_bool(env, "GRAPHQL_INTROSPECTION", True),
            cors_origins=_origins(env, "CORS_ORIGINS"),
            max_query_depth=_int(env, "MAX_QUERY_DEPTH", 10, minimum=1),
            max_aliases=_int(env, "MAX_ALIASES", 30, minimum=1),
            max_tokens=_int(env, "MAX_TOKENS", 2000, minimum=1),
            max_document_bytes=_int(env, "MAX_DOCUMENT_BYTES", 20_000, minimum=100),
            compiled_queries=_bool(env, "COMPILED_QUERIES", True),
            compiled_mutations=_bool(env, "COMPILED_MUTATIONS", True),
            compiled_queries_strict=_bool(env, "COMPILED_QUERIES_STRICT", False),
            metrics=_bool(env, "METRICS", True),
            log_format=_choice(env, "LOG_FORMAT", "text", LOG_FORMATS),
            worker_metrics_port=(
                _int(env, "WORKER_METRICS_PORT", 0, minimum=1)
                if _str(env, "WORKER_METRICS_PORT")
                else None
            ),
            otel_traces_exporter=_str(env, "OTEL_TRACES_EXPORTER"),
            request_read_timeout_seconds=_float(env, "REQUEST_READ_TIMEOUT_SECONDS", 10.0),
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
            raise SettingsError(
                "set JWT_SECRET or SUPABASE_JWT_SECRET (HS256), or JWT_JWKS or SUPABASE_URL "
                "(RS256/ES256), to verify tokens"
            )
        if self.jwt_secret is not None and len(self.jwt_secret) < MIN_HS256_SECRET_LENGTH:
            raise SettingsError(
                f"JWT_SECRET must be at least {MIN_HS256_SECRET_LENGTH} characters "
                f"(got {len(self.jwt_secret)})"
            )
