import os
import secrets
import sys
from pathlib import Path
from typing import Any

from django.conf import settings
from django.contrib.auth import get_user_model
from django.core.exceptions import ImproperlyConfigured
from django.core.management import call_command
from django.core.management.base import BaseCommand, CommandError, CommandParser
from django.db import connection
from honcho.environ import parse_procfile
from honcho.manager import Manager

from config.env import env_int
from prioritization.metrics import reset_multiprocess_dir


class Command(BaseCommand):
    help = (
        "Set up and start everything: migrate, admin user, demo data, periodic tasks, then the "
        "Procfile's web server, Celery worker and Celery beat until Ctrl-C."
    )

    def add_arguments(self, parser: CommandParser) -> None:
        # The default is read in handle(): a bad PORT is then one line, not a traceback
        # raised while the parser is being built.
        parser.add_argument("--port", type=int, default=None, help="default: PORT, else 8000")
        parser.add_argument("--no-demo", action="store_true", help="Do not load the demo data set.")

    def handle(self, *args: Any, port: int | None, no_demo: bool, **options: Any) -> None:
        if port is None:
            try:
                port = env_int("PORT", 8000)
            except ImproperlyConfigured as exc:
                raise CommandError(str(exc)) from None
        if not 1 <= port <= 65_535:
            raise CommandError(f"The port must be between 1 and 65535, got {port}.")
        call_command("migrate", interactive=False, verbosity=0)
        username, password = self._ensure_admin()
        if not no_demo:
            call_command("load_demo_data")
        call_command("setup_periodic_tasks")

        env = dict(os.environ)
        env["PORT"] = str(port)
        env["PATH"] = f"{Path(sys.executable).parent}{os.pathsep}{env.get('PATH', '')}"
        # Children use this process's database directly; only this process holds the
        # embedded server open, so it stops when this process exits.
        env["DATABASE_URL"] = settings.DATABASE_URL
        # Web, worker and beat sum their Prometheus counters through one folder, emptied first.
        metrics_dir = Path(env.get("PROMETHEUS_MULTIPROC_DIR") or Path(settings.VAR_DIR) / "metrics")
        reset_multiprocess_dir(metrics_dir)
        env["PROMETHEUS_MULTIPROC_DIR"] = str(metrics_dir)
        base = f"http://127.0.0.1:{port}"
        self.stdout.write(
            "\n".join(
                [
                    "",
                    f"leadrank is starting on {base}",
                    f"  admin     {base}/admin/   (user {username!r}, password {password!r})",
                    f"  API docs  {base}/api/docs/",
                    f"  health    {base}/healthz",
                    "  database  "
                    + (
                        "embedded PostgreSQL in var/pgdata"
                        if not os.environ.get("DATABASE_URL")
                        else "DATABASE_URL"
                    ),
                    "  broker    "
                    + (os.environ.get("CELERY_BROKER_URL") or "filesystem (var/broker), no server"),
                    "Press Ctrl-C to stop everything.",
                    "",
                ]
            )
        )
        procfile = parse_procfile((Path(settings.BASE_DIR) / "Procfile").read_text())
        manager = Manager()
        for name, command in procfile.processes.items():
            manager.add_process(name, command, env=env, cwd=str(settings.BASE_DIR))
        manager.loop()
        connection.close()
        sys.exit(manager.returncode or 0)

    def _ensure_admin(self) -> tuple[str, str]:
        """The admin user from DJANGO_SUPERUSER_USERNAME / _PASSWORD, else `admin` with a
        password generated once and kept in var/admin_password."""
        user_model = get_user_model()
        # Set empty (an env file's "NAME="), each means its default: a user named "" cannot
        # be created, and an empty password cannot be typed into the login form.
        username = os.environ.get("DJANGO_SUPERUSER_USERNAME", "").strip() or "admin"
        password = os.environ.get("DJANGO_SUPERUSER_PASSWORD") or None
        stored = Path(settings.VAR_DIR) / "admin_password"
        if password is None:
            try:
                if stored.exists() and stored.read_text().strip():
                    password = stored.read_text().strip()
                else:
                    password = secrets.token_urlsafe(12)
                    stored.parent.mkdir(parents=True, exist_ok=True)
                    stored.write_text(password)
                    stored.chmod(0o600)
            except OSError as exc:
                raise CommandError(
                    f"LEADRANK_VAR_DIR: cannot keep the admin password in {stored} ({exc.strerror})"
                ) from None
        user = user_model.objects.filter(username=username).first()
        if user is None:
            user_model.objects.create_superuser(username=username, email="", password=password)
        elif not (user.check_password(password) and user.is_active and user.is_staff and user.is_superuser):
            # The credentials printed are the admin's: a user of that name who could not sign
            # in to the admin (not staff, deactivated) becomes the admin user it is said to be.
            user.set_password(password)
            user.is_active = user.is_staff = user.is_superuser = True
            user.save(update_fields=["password", "is_active", "is_staff", "is_superuser"])
        return username, password
