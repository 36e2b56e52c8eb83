"""Throwaway databases on the configured PostgreSQL server, for benchmarks and the simulator.

They never touch the project's own data: a new database is created next to it, migrated
by a ``manage.py migrate`` subprocess and dropped afterwards.
"""

import os
import secrets
import subprocess
import sys
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from urllib.parse import quote

import psycopg
from django.conf import settings
from django.db import DatabaseError, connection
from psycopg import sql


class ThrowawayDatabaseError(DatabaseError):
    """The throwaway database could not be made ready (its migrate failed: the server went
    away, the database was dropped meanwhile); the commands say it in one line, as they do
    PostgreSQL's own errors."""


def database_url(name: str) -> str:
    """A DATABASE_URL for database ``name`` on the server the project uses."""
    params = connection.get_connection_params()
    user = quote(str(params.get("user") or "postgres"))
    password = quote(str(params.get("password") or ""))
    host = str(params.get("host") or "")
    port = str(params.get("port") or "")
    if host.startswith("/"):
        return f"postgresql://{user}:{password}@/{name}?host={quote(host)}" + (
            f"&port={port}" if port else ""
        )
    return f"postgresql://{user}:{password}@{host or 'localhost'}{':' + port if port else ''}/{name}"


def _admin_connection() -> psycopg.Connection[tuple[object, ...]]:
    params = {
        k: v
        for k, v in connection.get_connection_params().items()
        if k in ("user", "password", "host", "port")
    }
    return psycopg.connect(dbname="postgres", autocommit=True, **params)


def child_environment(url: str, **extra: str) -> dict[str, str]:
    """The environment for a subprocess (manage.py, the web server) that must use ``url``."""
    env = dict(os.environ)
    env.update(
        DATABASE_URL=url,
        SECRET_KEY=env.get("SECRET_KEY") or "throwaway-database-secret",
        PATH=f"{Path(sys.executable).parent}{os.pathsep}{env.get('PATH', '')}",
    )
    env.update(extra)
    return env


@contextmanager
def throwaway_database(prefix: str, *, keep: bool = False) -> Iterator[str]:
    """Create and migrate a fresh database; yield its URL; drop it afterwards."""
    # The process id alone is no unique name: two containers both run their command as
    # process 1, and each dropped the other's database.
    name = f"{prefix}_{os.getpid()}_{secrets.token_hex(3)}"
    with _admin_connection() as admin:
        admin.execute(sql.SQL("CREATE DATABASE {}").format(sql.Identifier(name)))
    url = database_url(name)
    try:
        migrated = subprocess.run(
            [sys.executable, "manage.py", "migrate", "--verbosity", "0"],
            cwd=settings.BASE_DIR,
            env=child_environment(url),
            capture_output=True,
            text=True,
            check=False,
        )
        if migrated.returncode != 0:
            said = migrated.stderr.strip().splitlines() or [f"exit status {migrated.returncode}"]
            raise ThrowawayDatabaseError(f"migrating the throwaway database {name} failed: {said[-1]}")
        yield url
    finally:
        if not keep:
            with _admin_connection() as admin:
                admin.execute(sql.SQL("DROP DATABASE IF EXISTS {} WITH (FORCE)").format(sql.Identifier(name)))
