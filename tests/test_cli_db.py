"""``python -m app db``: help and stray arguments never act, and stopping the embedded
database is refused while another command uses it."""

from __future__ import annotations

import os
import subprocess
import sys
import time
from pathlib import Path

import pytest

from app.db import embedded
from app.db.migrations import PROJECT_ROOT
from app.settings import Settings
from tests.test_cli import run_app


def env_for(data_dir: Path) -> dict[str, str]:
    return {"ORDER_API_DATA_DIR": str(data_dir), "DATABASE_URL": "", "API_DATABASE_URL": ""}


def running(data_dir: Path) -> bool:
    return (data_dir / "pgdata" / "postmaster.pid").exists()


@pytest.fixture
def data_dir(tmp_path: Path):
    data_dir = tmp_path / "data"
    started = run_app("db", "url", env=env_for(data_dir))
    assert started.returncode == 0, started.stderr
    assert running(data_dir)
    yield data_dir
    run_app("db", "stop", "--force", env=env_for(data_dir))


@pytest.mark.parametrize("action", ["stop", "upgrade", "seed", "url", "psql"])
def test_help_of_a_db_action_prints_help_and_does_nothing(data_dir: Path, action: str) -> None:
    result = run_app("db", action, "--help", env=env_for(data_dir))

    assert (result.returncode, result.stderr) == (0, "")
    assert result.stdout.startswith(f"usage: python -m app db {action}")
    assert "\nexample:\n  " in result.stdout
    assert running(data_dir)
    # Neither migrated nor seeded: the fresh cluster has no table of ours.
    tables = run_app(
        "db",
        "psql",
        "-tAc",
        "select count(*) from pg_tables where schemaname = 'public'",
        env=env_for(data_dir),
    )
    assert tables.stdout.strip() == "0", tables


@pytest.mark.parametrize("args", [["stop", "extra-junk"], ["upgrade", "now"], ["seed", "--all"]])
def test_a_db_action_refuses_arguments_it_does_not_take(data_dir: Path, args: list[str]) -> None:
    result = run_app("db", *args, env=env_for(data_dir))

    assert result.returncode == 2
    assert result.stderr.splitlines() == [
        f"python -m app db {args[0]}: error: unrecognized arguments: {args[1]}"
        f" (see python -m app db {args[0]} --help)"
    ]
    assert running(data_dir)


def test_db_stop_is_refused_while_another_command_uses_the_database_unless_forced(
    data_dir: Path,
) -> None:
    holder = subprocess.Popen(
        [sys.executable, "-m", "app", "db", "psql", "-c", "select pg_sleep(60)"],
        cwd=PROJECT_ROOT,
        env={**os.environ, **env_for(data_dir)},
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    try:
        deadline = time.monotonic() + 30
        while not embedded.in_use(data_dir):
            assert time.monotonic() < deadline
            assert holder.poll() is None
            time.sleep(0.1)

        refused = run_app("db", "stop", env=env_for(data_dir))
        assert refused.returncode == 1
        [line] = refused.stderr.splitlines()
        assert line.startswith("python -m app db stop: error: the embedded PostgreSQL in ")
        assert "is in use by another command" in line
        assert "python -m app db stop --force" in line
        assert running(data_dir)

        forced = run_app("db", "stop", "--force", env=env_for(data_dir))
        assert (forced.returncode, forced.stdout) == (0, "embedded PostgreSQL stopped\n")
        assert not running(data_dir)
    finally:
        holder.kill()
        holder.wait()


def test_db_stop_stops_a_database_nobody_uses(data_dir: Path) -> None:
    result = run_app("db", "stop", env=env_for(data_dir))

    assert (result.returncode, result.stdout) == (0, "embedded PostgreSQL stopped\n")
    assert not running(data_dir)
    again = run_app("db", "stop", env=env_for(data_dir))
    assert (again.returncode, again.stdout) == (0, "embedded PostgreSQL was not running\n")


def test_the_data_directory_is_per_checkout_and_ignored_by_git() -> None:
    settings = Settings.from_env({"ORDER_API_DATA_DIR": ""})  # unset

    assert settings.data_dir == PROJECT_ROOT / ".order-api"
    ignored = subprocess.run(
        ["git", "check-ignore", "-q", str(settings.data_dir / "pgdata")],
        cwd=PROJECT_ROOT,
        check=False,
    )
    assert ignored.returncode == 0
