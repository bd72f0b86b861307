"""The process configuration: read from the environment once, into one typed object.

Nothing else in the application reads ``os.environ``; everything receives a
``Settings`` (tests build their own with ``Settings.from_env(overrides)``).

This module is the table: each setting is declared once, as ``env(VARIABLE, default, reader,
description)``, and ``from_env`` reads every declared field the same way; ``variables()``
lists them for a reference. How one variable's text is read (its type and bounds, and the
one-line error naming it) is ``app/env_parsing.py``; what a Supabase project's URL and key
names imply is ``app/supabase.py``.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from dataclasses import dataclass
from decimal import Decimal
from pathlib import Path
from typing import Any, Literal, get_args

from app import supabase
from app.env_parsing import SettingsError as SettingsError  # raised here, caught by importers
from app.env_parsing import (
    Variable,
    boolean,
    choice,
    decimal_number,
    declared,
    env,
    header_names,
    integer,
    names,
    number,
    optional_integer,
    origins,
    path,
    postgres_url,
    postgres_urls,
    reads,
    text,
)
from app.retired_variables import refuse_retired

APP_ROLES = ("anon", "authenticated", "service_role", "compliance_auditor")
"""The database roles a request may run as; the token's ``role`` claim picks one of them."""

MIN_HS256_SECRET_LENGTH = 32

CHECKOUT_DATA_DIR = Path(__file__).resolve().parents[1] / ".order-api"
"""``ORDER_API_DATA_DIR``'s default: beside ``app/`` in this checkout (git ignores it).

Per checkout, not per user: what it holds (the embedded cluster, the dev JWT secret, the
paper venue's file) belongs to this checkout's migrations and seed, and lives and dies with
it. One per-user directory shared by every checkout let a branch migrate another's cluster,
and let a paper venue file of an older run meet a fresh cluster (its orders unknown there)."""

LOG_FORMATS = ("text", "json")
TRUSTED_DOCUMENT_MODES = ("allow", "require", "off")

PoolerMode = Literal["none", "session", "transaction"]
"""What sits between the pool and PostgreSQL (``DB_POOLER``): nothing or a session-mode
pooler (one server session per client connection), or a transaction-mode pooler
(PgBouncer ``pool_mode = transaction``, Supavisor on port 6543), which hands each
*transaction* to whichever server session is free."""


@reads(f"text of ≥ {MIN_HS256_SECRET_LENGTH} characters")
def _jwt_secret(env: Mapping[str, str], name: str, default: None) -> str | None:
    return supabase.jwt_secret(env)


@dataclass(frozen=True, kw_only=True)
class Settings:
    # Each description is one or two sentences of Markdown, rendered into the configuration
    # reference (docs/hooks/configuration.py): `code` for names and values, links relative to
    # docs/. The reader says the type and bounds; the default is the field's.

    # --- database -----------------------------------------------------------
    database_url: str | None = env(
        "DATABASE_URL",
        None,
        postgres_url,
        "The owner's connection, for migrations and seeds; direct or session-mode."
        " Unset: the embedded PostgreSQL.",
    )
    api_database_url: str | None = env(
        "API_DATABASE_URL",
        None,
        postgres_url,
        "The API's (and by default the engine's) login as `authenticator`; it may go through a"
        " transaction pooler (`DB_POOLER`). Unset: `DATABASE_URL` as `authenticator` with"
        " `AUTHENTICATOR_PASSWORD`, or the embedded server's; with `DATABASE_URL` set and"
        " neither, `serve`, `worker` and `dev` refuse to start.",
    )
    data_dir: Path = env(
        "ORDER_API_DATA_DIR",
        CHECKOUT_DATA_DIR,
        path,
        "The embedded cluster, the dev JWT secret and the paper venue's file: one set per"
        " checkout (git ignores it), removed with it.",
    )
    authenticator_password: str | None = env(
        "AUTHENTICATOR_PASSWORD",
        None,
        text,
        "At migration time, lets `authenticator` log in with it (printable ASCII, sent as a"
        " SCRAM verifier; only on a role the migration created); also derives"
        " `API_DATABASE_URL`.",
    )
    market_close: str | None = env(
        "MARKET_CLOSE",
        None,
        text,
        "`HH:MM Zone` (e.g. `16:00 America/New_York`), the close DAY orders end at: written"
        " into the database's `trading_session` by `db upgrade` and `dev`, which the API and"
        " the engine read, never this ([Time in force](api/orders.md#time-in-force-stop-limit-and-replace))."
        " Unset: the database keeps its close.",
    )
    read_database_urls: tuple[str, ...] = env(
        "API_READ_DATABASE_URLS",
        (),
        postgres_urls,
        "Read replicas, comma-separated, each logged in as `authenticator` directly or through a"
        " pooler (`DB_POOLER` applies to them too): queries and subscription re-reads go to a"
        " healthy one, mutations to `API_DATABASE_URL`"
        " ([Read replicas](deploying/replicas.md)). Unset: every read goes to the primary.",
    )
    read_your_writes_wait_ms: int = env(
        "READ_YOUR_WRITES_WAIT_MS",
        500,
        integer(),
        "How long, in milliseconds, a request carrying an `X-Consistency-Token` waits for a"
        " replica that has applied the write it names; then the primary answers it.",
    )
    read_replica_max_lag_seconds: float = env(
        "READ_REPLICA_MAX_LAG_SECONDS",
        10.0,
        number,
        "A replica further behind than this many seconds (as PostgreSQL reports it, see"
        " [Read replicas](deploying/replicas.md#lag)) is not read from until it catches up.",
    )
    engine_database_url: str | None = env(
        "ENGINE_DATABASE_URL",
        None,
        postgres_url,
        "The execution engine's login as `authenticator`, direct or session-mode (its leases are"
        " session advisory locks); required when `DB_POOLER=transaction`."
        " Unset: `API_DATABASE_URL`.",
    )
    db_pooler: PoolerMode = env(
        "DB_POOLER",
        "none",
        choice(*get_args(PoolerMode)),
        "What `API_DATABASE_URL` goes through: nothing or a session-mode pooler, or a"
        " transaction-mode one (PgBouncer `pool_mode = transaction`, Supavisor on 6543), which"
        " gets unnamed prepared statements.",
    )
    db_pool_size: int = env("DB_POOL_SIZE", 10, integer(minimum=1), "Connections per pool.")
    db_pool_timeout: float = env(
        "DB_POOL_TIMEOUT",
        5.0,
        number,
        "Seconds to wait for a free pooled connection, then HTTP 503 `POOL_EXHAUSTED`.",
    )
    db_connect_timeout: float = env(
        "DB_CONNECT_TIMEOUT",
        3.0,
        number,
        "Seconds to open a new connection, then HTTP 503 `DATABASE_UNREACHABLE`.",
    )
    statement_timeout_ms: int = env(
        "STATEMENT_TIMEOUT_MS",
        5000,
        integer(),
        "Per-statement limit in milliseconds, set in each transaction (and, with"
        " `DB_POOLER=none`, in the session of a connection that runs compiled mutations), then"
        " HTTP 503 `STATEMENT_TIMEOUT`; the client gives up 1 s later itself. `0`: none.",
    )
    change_feed_poll_ms: int = env(
        "CHANGE_FEED_POLL_MS",
        5,
        integer(minimum=1),
        "How often, in milliseconds, a process with subscribers reads the change feed: its"
        " delivery latency.",
    )
    subscription_max_lag_ms: int = env(
        "SUBSCRIPTION_MAX_LAG_MS",
        1000,
        integer(minimum=1),
        "How long, in milliseconds, a change may wait for a subscriber's re-read; older, the"
        " subscriber gets `UPDATES_MISSED` instead (see [Live updates](api/subscriptions.md)).",
    )

    # --- tokens -------------------------------------------------------------
    supabase_url: str | None = env(
        "SUPABASE_URL",
        None,
        supabase.url_reader,
        "The Supabase project URL (`https://<ref>.supabase.co`): sets `JWT_JWKS` to"
        f" `<SUPABASE_URL>{supabase.JWKS_PATH}` and `JWT_ISSUER` to"
        f" `<SUPABASE_URL>{supabase.AUTH_PATH}`; an explicit different value is refused.",
    )
    jwt_secret: str | None = env(
        "JWT_SECRET",
        None,
        _jwt_secret,
        "The HS256 secret (Supabase's JWT secret); `SUPABASE_JWT_SECRET` is accepted as its name"
        " too (both set and different: refused). Unset under `dev`: one generated in"
        " `ORDER_API_DATA_DIR`.",
    )
    jwt_jwks: str | None = env(
        "JWT_JWKS",
        None,
        supabase.implied(supabase.JWKS_PATH, "URL or path"),
        "A JWKS URL (`https://...`) or file with the public keys for RS256/ES256 (Supabase's"
        " signing keys).",
    )
    jwt_audience: str = env(
        "JWT_AUDIENCE",
        "authenticated",
        text,
        "The required `aud`, except on Supabase's anon and service_role API keys"
        " ([Security model](security.md#supabases-api-keys)).",
    )
    jwt_issuer: str | None = env(
        "JWT_ISSUER",
        None,
        supabase.implied(supabase.AUTH_PATH, "text"),
        "The required `iss`, when set; Supabase's API keys carry `iss` `supabase` instead.",
    )
    jwt_algorithms: tuple[str, ...] = env(
        "JWT_ALGORITHMS",
        ("HS256", "RS256", "ES256"),
        names,
        "Allowed algorithms, intersected with the configured keys.",
    )
    jwt_leeway_seconds: int = env(
        "JWT_LEEWAY_SECONDS",
        30,
        integer(),
        "Clock skew allowed on `exp`, `nbf` and `iat`, in seconds.",
    )
    jwks_cache_seconds: int = env(
        "JWKS_CACHE_SECONDS",
        600,
        integer(),
        "How long fetched public keys are kept, in seconds; an unknown `kid` refreshes them early.",
    )

    # --- HTTP and GraphQL ----------------------------------------------------
    host: str = env(
        "HOST", "127.0.0.1", text, "Where the API listens; `--host` of `dev` and `serve` wins."
    )
    port: int = env(
        "PORT",
        8000,
        integer(minimum=1),
        "Where the API listens; `--port` of `dev` and `serve` wins.",
    )
    graphiql: bool = env(
        "GRAPHIQL",
        True,
        boolean,
        "Serve GraphiQL to browsers, with its assets at `/graphiql/`; `false` in production.",
    )
    introspection: bool = env(
        "GRAPHQL_INTROSPECTION",
        True,
        boolean,
        "Allow introspection and `GET /graphql/schema.graphql`, and suggest names in errors;"
        " `false` in production.",
    )
    cors_origins: tuple[str, ...] = env(
        "CORS_ORIGINS",
        (),
        origins,
        # Never with credentials: callers send Authorization, the API sets no cookies, so
        # CORS credentials are not allowed at all and * is safe to offer.
        "Browser origins allowed to call the API, over HTTP and the WebSocket upgrade, exactly"
        " as browsers send them (`https://app.example.com`, `http://localhost:5173`), or `*`"
        " alone for any; never with credentials.",
    )
    cors_allow_headers: tuple[str, ...] = env(
        "CORS_ALLOW_HEADERS",
        (),
        header_names,
        # The four are app/main.py's CORS_HEADERS (tests/test_configuration_reference.py).
        "Request headers browsers may send besides `Authorization`, `Content-Type`,"
        " `X-Request-Id` and `X-Consistency-Token` (e.g. a client's `X-Client-Version`), or `*`"
        " alone for any; a header"
        " in neither fails the preflight.",
    )
    max_query_depth: int = env(
        "MAX_QUERY_DEPTH", 10, integer(minimum=1), "Deepest selection allowed."
    )
    max_aliases: int = env("MAX_ALIASES", 30, integer(minimum=1), "Aliased fields per document.")
    max_tokens: int = env(
        "MAX_TOKENS",
        2000,
        integer(minimum=1),
        "Lexical tokens per document; also the fields an operation may select once its"
        " fragments are expanded.",
    )
    max_document_bytes: int = env(
        "MAX_DOCUMENT_BYTES",
        20_000,
        integer(minimum=100),
        "Document size, HTTP 413 beyond; a request body, or a WebSocket message, may be twice"
        " this.",
    )
    trusted_documents: str = env(
        "TRUSTED_DOCUMENTS",
        "allow",
        choice(*TRUSTED_DOCUMENT_MODES),
        "Trusted documents ([Trusted documents](api/trusted-documents.md)), loaded with"
        " `python -m app documents add`: `allow` answers a `documentId` and a document's text"
        " alike; `require` refuses text (HTTP 400 `PERSISTED_DOCUMENT_REQUIRED`, GraphiQL"
        " included); `off` reads no ids.",
    )
    compiled_queries: bool = env(
        "COMPILED_QUERIES",
        True,
        boolean,
        "Answer hot read queries with one SQL statement"
        " ([Compiled queries](performance/index.md#compiled-queries)); `false`: the resolvers.",
    )
    compiled_mutations: bool = env(
        "COMPILED_MUTATIONS",
        True,
        boolean,
        "Answer learned `submitOrder`/`cancelOrder` documents with one autocommit statement"
        " ([Compiled mutations](performance/index.md#compiled-mutations)).",
    )
    compiled_queries_strict: bool = env(
        "COMPILED_QUERIES_STRICT",
        False,
        boolean,
        "A query that fails to compile or bind (a compiler bug) fails its request instead of"
        " taking the resolvers, as does a compiled mutation's statement failing for any reason"
        " but an unavailable database; on in the tests (off, the fallback is logged and"
        " counted in `/metrics`).",
    )

    # --- operations ----------------------------------------------------------
    metrics: bool = env(
        "METRICS",
        True,
        boolean,
        "Serve `GET /metrics`: Prometheus text, counts and timings only, no trader data"
        " ([Metrics](operations/index.md#metrics)).",
    )
    log_format: str = env(
        "LOG_FORMAT",
        "text",
        choice(*LOG_FORMATS),
        "How log lines, the per-request line included, are written; `json`: one JSON object"
        " per line.",
    )
    worker_metrics_port: int | None = env(
        "WORKER_METRICS_PORT",
        None,
        optional_integer(minimum=1),
        "Where `python -m app worker` serves its metrics (engine counters), on `HOST`."
        " Unset: nowhere.",
    )
    otel_traces_exporter: str | None = env(
        "OTEL_TRACES_EXPORTER",
        None,
        text,
        "OpenTelemetry's own variable: with the `otel` extra installed, an exporter (`otlp`,"
        " `console`, ...) traces requests and SQL statements"
        " ([Tracing](operations/index.md#tracing)); OpenTelemetry reads the other `OTEL_*`.",
    )
    request_read_timeout_seconds: float = env(
        "REQUEST_READ_TIMEOUT_SECONDS",
        10.0,
        number,
        "Seconds a client has to send a request's headers, and again its body; then the"
        " connection is closed, or HTTP 408.",
    )

    # --- execution engine ----------------------------------------------------
    engine_poll_seconds: float = env(
        "ENGINE_POLL_SECONDS", 0.2, number, "The engine loop's period, in seconds."
    )
    engine_max_retries: int = env(
        "ENGINE_MAX_RETRIES", 5, integer(), "Attempts at a venue before an order is rejected."
    )
    engine_retry_base_seconds: float = env(
        "ENGINE_RETRY_BASE_SECONDS",
        0.2,
        number,
        "The first retry's backoff in seconds, doubled each time.",
    )
    engine_max_in_flight: int = env(
        "ENGINE_MAX_IN_FLIGHT",
        1000,
        integer(minimum=1),
        "Most orders one worker holds approved but not yet accepted by the venue; orders"
        " resting at the venue do not count.",
    )
    venue_seed: int = env("VENUE_SEED", 42, integer(), "The paper venue's price seed.")
    venue_prices_csv: Path | None = env(
        "VENUE_PRICES_CSV", None, path, "Prices for the paper venue instead of simulated ones."
    )
    venue_liquidity: int = env(
        "VENUE_LIQUIDITY",
        500,
        integer(minimum=1),
        "Most shares the paper venue fills per order per tick.",
    )
    venue_tick_seconds: float = env(
        "VENUE_TICK_SECONDS", 0.25, number, "The paper venue's tick, in seconds."
    )
    venue_commission_per_share: Decimal = env(
        "VENUE_COMMISSION_PER_SHARE",
        Decimal("0.005"),
        decimal_number,
        "The paper venue's commission per share.",
    )
    venue_commission_minimum: Decimal = env(
        "VENUE_COMMISSION_MINIMUM",
        Decimal("1.00"),
        decimal_number,
        "The paper venue's least commission.",
    )
    venue_transient_failure_rate: float = env(
        "VENUE_TRANSIENT_FAILURE_RATE", 0.0, number, "Injected transient venue failures."
    )
    venue_permanent_failure_rate: float = env(
        "VENUE_PERMANENT_FAILURE_RATE", 0.0, number, "Injected permanent venue failures."
    )

    @classmethod
    def from_env(cls, overrides: Mapping[str, str] | None = None) -> Settings:
        environ: dict[str, str] = dict(os.environ)
        if overrides:
            environ.update(overrides)
        refuse_retired(environ)
        values = {
            name: variable.read(environ, variable.name, default)
            for name, variable, default in declared(cls)
        }
        return cls(**values)


def variables() -> list[tuple[Variable, Any]]:
    """Every variable with its default, in declaration order (the configuration reference)."""
    return [(variable, default) for _, variable, default in declared(Settings)]
