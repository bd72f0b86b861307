"""``python -m app token``: mint a development token, and the secret that signs dev tokens."""

from __future__ import annotations

import argparse
import dataclasses
import secrets
from typing import Any

from app.cli import arguments
from app.settings import APP_ROLES, Settings

DEV_SECRET_FILE = "dev-jwt-secret"


def add_parser(sub: Any) -> None:
    token = arguments.add_command(
        sub,
        "token",
        "mint a development token signed with JWT_SECRET (or the dev secret of python -m app dev)",
        "python -m app token --sub 11111111-1111-4111-8111-111111111111 --ttl 86400",
    )
    token.add_argument(
        "--sub", type=arguments.uuid, help="trader UUID (required for role authenticated)"
    )
    token.add_argument("--role", default="authenticated", choices=APP_ROLES)
    token.add_argument(
        "--ttl", type=arguments.positive_seconds, default=3600, help="lifetime in seconds"
    )
    token.set_defaults(run=run)


def dev_secret(settings: Settings) -> str:
    """JWT_SECRET, else one generated once and kept beside the embedded cluster."""
    if settings.jwt_secret is not None:
        return settings.jwt_secret
    path = settings.data_dir / DEV_SECRET_FILE
    if not path.exists():
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(secrets.token_urlsafe(48))
        path.chmod(0o600)
    return path.read_text().strip()


def run(settings: Settings, args: argparse.Namespace) -> int:
    from app.auth.jwt import mint_token

    if args.role == "authenticated" and not args.sub:
        raise arguments.UsageError("--sub is required for role authenticated")
    if settings.jwt_secret is None and settings.database_url is None:
        settings = dataclasses.replace(settings, jwt_secret=dev_secret(settings))
    print(mint_token(settings, sub=args.sub, role=args.role, ttl_seconds=args.ttl))
    return 0
