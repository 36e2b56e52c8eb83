"""leadrank settings: one module, every deployment difference comes from the environment.

The README's configuration table lists each variable read here.
"""

import ipaddress
from pathlib import Path

import dj_database_url
import django_stubs_ext

from config.embedded_postgres import embedded_database_url
from config.env import EnvironmentVariableError, env_bool, env_int, env_list, env_str, make_folder

# Lets classes such as ModelAdmin[Lead] be subscripted at run time, as the type hints do.
django_stubs_ext.monkeypatch()

BASE_DIR = Path(__file__).resolve().parent.parent
VAR_DIR = Path(env_str("LEADRANK_VAR_DIR", str(BASE_DIR / "var")))

DEBUG = env_bool("DJANGO_DEBUG", default=False)
SECRET_KEY = env_str("SECRET_KEY")
if not SECRET_KEY:
    if not DEBUG:
        raise EnvironmentVariableError("SECRET_KEY must be set when DJANGO_DEBUG is off")
    SECRET_KEY = "insecure-development-key-only-used-with-DJANGO_DEBUG"  # noqa: S105

ALLOWED_HOSTS = env_list("ALLOWED_HOSTS", ["127.0.0.1", "localhost", "testserver"])
CSRF_TRUSTED_ORIGINS = env_list("CSRF_TRUSTED_ORIGINS", [])

INSTALLED_APPS = [
    "django.contrib.admin",
    "django.contrib.auth",
    "django.contrib.contenttypes",
    "django.contrib.sessions",
    "django.contrib.messages",
    "whitenoise.runserver_nostatic",
    "django.contrib.staticfiles",
    "rest_framework",
    "rest_framework_api_key",
    "drf_spectacular",
    "drf_spectacular_sidecar",
    "django_celery_beat",
    "leads",
    "prioritization",
]

MIDDLEWARE = [
    "django.middleware.security.SecurityMiddleware",
    "config.middleware.refuse_nul_in_query_string",
    "whitenoise.middleware.WhiteNoiseMiddleware",
    "django.contrib.sessions.middleware.SessionMiddleware",
    "config.middleware.CommonMiddleware",  # Django's, redirecting with a 308
    "django.middleware.csrf.CsrfViewMiddleware",
    "django.contrib.auth.middleware.AuthenticationMiddleware",
    "django.contrib.messages.middleware.MessageMiddleware",
    "django.middleware.clickjacking.XFrameOptionsMiddleware",
]

ROOT_URLCONF = "config.urls"
WSGI_APPLICATION = "config.wsgi.application"

TEMPLATES = [
    {
        "BACKEND": "django.template.backends.django.DjangoTemplates",
        "DIRS": [BASE_DIR / "templates"],
        "APP_DIRS": True,
        "OPTIONS": {
            "context_processors": [
                "django.template.context_processors.request",
                "django.contrib.auth.context_processors.auth",
                "django.contrib.messages.context_processors.messages",
            ],
        },
    },
]

# --- Database -------------------------------------------------------------------------
# With no DATABASE_URL the embedded PostgreSQL in var/pgdata is started (or attached to),
# so `make run`, `make test` and every manage.py command share one database.
DATABASE_URL = env_str("DATABASE_URL") or embedded_database_url(VAR_DIR / "pgdata")
_conn_max_age = env_int("DATABASE_CONN_MAX_AGE", 60, minimum=0)
# A health check is one more round trip at the start of every request: a third of a
# claim's. Off by default: a request that meets a dead connection answers 503
# (leads/api_errors.py) and Django drops the connection for the next one.
_conn_health_checks = env_bool("DATABASE_CONN_HEALTH_CHECKS", False)
try:
    _database = dj_database_url.parse(
        DATABASE_URL, conn_max_age=_conn_max_age, conn_health_checks=_conn_health_checks
    )
except ValueError:
    # The URL itself is not repeated: it holds the password.
    raise EnvironmentVariableError(
        "DATABASE_URL is not a valid URL: write it as postgres://USER:PASSWORD@HOST:PORT/DATABASE, "
        "with special characters of the password %-encoded"
    ) from None
DATABASES = {"default": _database}
# The next-lead engine prepares its hot statements (``prepare=True``, see
# prioritization.services.statement_cursor): planning one cost more than running it.
# Django turns psycopg's prepared statements off (threshold None); a threshold no query
# reaches keeps Django's own queries unprepared while allowing explicit preparation. The
# engine's statements look up one campaign's index at a time; PostgreSQL's choice between
# a generic and a per-call plan keeps re-planning some of them forever (a generic plan's
# estimate for an array parameter is pessimistic), so prepared statements use the generic
# plan. Only parameterised statements are affected: Django binds its parameters on the
# client.
_database_options = DATABASES["default"].setdefault("OPTIONS", {})
_database_options["prepare_threshold"] = 1 << 30
_database_options["options"] = " ".join(
    filter(None, [_database_options.get("options"), "-c plan_cache_mode=force_generic_plan"])
)
if not DATABASES["default"]["ENGINE"].endswith("postgresql"):
    raise EnvironmentVariableError("leadrank runs on PostgreSQL only: DATABASE_URL must be postgres://")
if not DATABASES["default"].get("NAME") and "service" not in _database_options:
    raise EnvironmentVariableError("DATABASE_URL names no database: end it with /DATABASE")
DEFAULT_AUTO_FIELD = "django.db.models.BigAutoField"

AUTH_PASSWORD_VALIDATORS = [
    {"NAME": "django.contrib.auth.password_validation.MinimumLengthValidator"},
    {"NAME": "django.contrib.auth.password_validation.CommonPasswordValidator"},
]

LANGUAGE_CODE = "en-us"
TIME_ZONE = "UTC"
USE_I18N = True
USE_TZ = True

STATIC_URL = "static/"
STATIC_ROOT = BASE_DIR / "staticfiles"
STATIC_ROOT.mkdir(exist_ok=True)  # WhiteNoise serves from finders; it only warns when this is missing
MEDIA_ROOT = Path(env_str("MEDIA_ROOT", str(VAR_DIR / "media")))
# Never served as files: uploads hold customers' leads; the admin serves an import's error
# report itself, after its permission checks.
MEDIA_URL = "media/"
STORAGES = {
    "default": {"BACKEND": "django.core.files.storage.FileSystemStorage"},
    "staticfiles": {"BACKEND": "whitenoise.storage.CompressedStaticFilesStorage"},
}
WHITENOISE_USE_FINDERS = True

# Uploads above this are refused with a message (the CLI has no limit).
FILE_UPLOAD_MAX_MEMORY_SIZE = 5 * 1024 * 1024
# Uploaded lead files and their error reports hold customers' leads: readable by the user
# (and group) the web and worker processes run as, not by every user of the machine, whatever
# the process's umask (a small upload would otherwise be world-readable, as 0o644).
FILE_UPLOAD_PERMISSIONS = 0o640
FILE_UPLOAD_DIRECTORY_PERMISSIONS = 0o750
DATA_UPLOAD_MAX_MEMORY_SIZE = env_int("DATA_UPLOAD_MAX_MEMORY_SIZE", 32 * 1024 * 1024, minimum=1)

# --- REST API -------------------------------------------------------------------------
REST_FRAMEWORK = {
    "DEFAULT_AUTHENTICATION_CLASSES": [
        "leads.authentication.ApiKeyAuthentication",
        "rest_framework.authentication.SessionAuthentication",
    ],
    "DEFAULT_PERMISSION_CLASSES": ["leads.permissions.IsAdminScope"],
    "DEFAULT_RENDERER_CLASSES": ["rest_framework.renderers.JSONRenderer"],
    "DEFAULT_PARSER_CLASSES": ["leads.parsers.StrictJSONParser"],
    "DEFAULT_SCHEMA_CLASS": "drf_spectacular.openapi.AutoSchema",
    "DEFAULT_PAGINATION_CLASS": "leads.pagination.ListPagination",
    "PAGE_SIZE": 100,
    "EXCEPTION_HANDLER": "leads.api_errors.exception_handler",
    "UNAUTHENTICATED_USER": None,
}
SPECTACULAR_SETTINGS = {
    "TITLE": "leadrank API",
    "DESCRIPTION": "Lead ingestion and next-lead decisions. Send `Authorization: Api-Key <key>`.",
    "VERSION": "1",
    "SERVE_INCLUDE_SCHEMA": False,
    "SWAGGER_UI_DIST": "SIDECAR",
    "SWAGGER_UI_FAVICON_HREF": "SIDECAR",
    "REDOC_DIST": "SIDECAR",
    "SERVE_PERMISSIONS": ["leads.permissions.CanReadDocs"],
    "SERVE_AUTHENTICATION": [
        "leads.authentication.ApiKeyAuthentication",
        "rest_framework.authentication.SessionAuthentication",
    ],
    "APPEND_COMPONENTS": {
        "securitySchemes": {"ApiKey": {"type": "apiKey", "in": "header", "name": "Authorization"}}
    },
    "SECURITY": [{"ApiKey": []}],
}

# --- Celery ---------------------------------------------------------------------------
# With no CELERY_BROKER_URL the broker is kombu's filesystem transport under var/broker:
# it needs no server, which is what the one-command start wants. Production uses Redis.
_BROKER_DIR = VAR_DIR / "broker"
CELERY_BROKER_URL = env_str("CELERY_BROKER_URL") or "filesystem://"
if CELERY_BROKER_URL == "filesystem://":
    for _folder in ("out", "processed", "control"):
        make_folder(_BROKER_DIR / _folder, variable="LEADRANK_VAR_DIR")
    CELERY_BROKER_TRANSPORT_OPTIONS = {
        "data_folder_in": str(_BROKER_DIR / "out"),
        "data_folder_out": str(_BROKER_DIR / "out"),
        "processed_folder": str(_BROKER_DIR / "processed"),
        "control_folder": str(_BROKER_DIR / "control"),
        "store_processed": False,
    }
CELERY_TASK_IGNORE_RESULT = True
CELERY_TASK_ACKS_LATE = True
CELERY_WORKER_PREFETCH_MULTIPLIER = 1
CELERY_TASK_SERIALIZER = "json"
CELERY_ACCEPT_CONTENT = ["json"]
CELERY_TIMEZONE = "UTC"
CELERY_BEAT_SCHEDULER = "django_celery_beat.schedulers:DatabaseScheduler"
CELERY_BROKER_CONNECTION_RETRY_ON_STARTUP = True

# --- leadrank -------------------------------------------------------------------------
# Seconds a web process trusts an API key it has verified (revocation takes this long).
LEADRANK_API_KEY_CACHE_SECONDS = env_int("LEADRANK_API_KEY_CACHE_SECONDS", 30, minimum=0)
# Largest batch accepted by POST /api/v1/leads/ (the API contract says 10,000).
LEADRANK_API_BATCH_MAX = env_int("LEADRANK_API_BATCH_MAX", 10_000, minimum=1)
# Largest file the admin import accepts; the CLI reads files of any size.
LEADRANK_IMPORT_MAX_BYTES = env_int("LEADRANK_IMPORT_MAX_BYTES", 200 * 1024 * 1024, minimum=1)
# Uploads up to this size have every row checked (the preview) inside the request; larger
# ones in Celery (a 200 MB file takes tens of seconds), the preview page following along.
LEADRANK_IMPORT_CHECK_INLINE_BYTES = env_int("LEADRANK_IMPORT_CHECK_INLINE_BYTES", 2 * 1024 * 1024, minimum=0)
# Files up to this many rows are imported inside the request; larger ones in Celery.
LEADRANK_IMPORT_INLINE_ROWS = env_int("LEADRANK_IMPORT_INLINE_ROWS", 2_000, minimum=0)
# A running import whose worker gave no sign of life (a stored chunk) for this long is failed
# by the beat task leads.tasks.sweep_import_jobs; a job not yet taken by a worker this long
# after it was sent is sent again.
# At most a year: the sweep's cutoff (now minus this) must stay a date Python can represent.
LEADRANK_IMPORT_STALL_MINUTES = env_int("LEADRANK_IMPORT_STALL_MINUTES", 15, minimum=1, maximum=525_600)
# Uploaded files and error reports hold customers' leads: the same sweep removes those of
# jobs finished (or previewed and never confirmed) this many days ago; the jobs stay.
LEADRANK_IMPORT_RETENTION_DAYS = env_int("LEADRANK_IMPORT_RETENTION_DAYS", 30, minimum=1, maximum=36_500)
# Where the real public data sets live (demo data, simulator, model evaluation).
LEADRANK_DATA_DIR = Path(env_str("LEADRANK_DATA_DIR", str(BASE_DIR.parent / "shared" / "data")))

# --- Learned models (prioritization.training) ----------------------------------------------
# Outcomes of leads created this many days back train the models.
LEADRANK_TRAINING_WINDOW_DAYS = env_int("LEADRANK_TRAINING_WINDOW_DAYS", 365, minimum=1, maximum=36_500)
# How often beat trains them (setup_periodic_tasks); the admin's "Train now" any time. At
# most a year: the interval is stored in seconds in django-celery-beat's 32-bit column.
LEADRANK_TRAINING_EVERY_HOURS = env_int("LEADRANK_TRAINING_EVERY_HOURS", 24, minimum=1, maximum=8_760)

# --- Metrics and alerts (prioritization.metrics, prioritization.alerts) ------------------------
# /metrics without DEBUG: open to these client addresses (CIDR, the TCP peer) ...
LEADRANK_METRICS_ALLOWED_IPS = env_list("LEADRANK_METRICS_ALLOWED_IPS", ["127.0.0.1/32", "::1/128"])
for _cidr in LEADRANK_METRICS_ALLOWED_IPS:
    try:
        ipaddress.ip_network(_cidr, strict=False)
    except ValueError:
        raise EnvironmentVariableError(
            f"LEADRANK_METRICS_ALLOWED_IPS: {_cidr!r} is not an address or CIDR network (e.g. 10.0.0.0/8)"
        ) from None
# ... and to requests with "Authorization: Bearer <this>" from anywhere (empty: no token).
LEADRANK_METRICS_TOKEN = env_str("LEADRANK_METRICS_TOKEN")
# prometheus_client's multiprocess mode: every web and worker process writes its counters to
# this folder and /metrics sums them. Read by prometheus_client itself when it is imported
# (after settings); `make run` sets and empties it. Unset: each process counts alone.
if env_str("PROMETHEUS_MULTIPROC_DIR"):
    make_folder(Path(env_str("PROMETHEUS_MULTIPROC_DIR")), variable="PROMETHEUS_MULTIPROC_DIR")
# Seconds to wait for a customer's alert webhook (connect and read each) before retrying;
# at most an hour (a socket's timeout has a limit, and a worker waits that long).
LEADRANK_ALERT_WEBHOOK_TIMEOUT_SECONDS = env_int(
    "LEADRANK_ALERT_WEBHOOK_TIMEOUT_SECONDS", 5, minimum=1, maximum=3_600
)

LOG_LEVEL = env_str("LOG_LEVEL", "INFO").strip().upper()
# The five standard names only: logging also takes NOTSET (which on the root logger means
# everything, like DEBUG) and the aliases WARN and FATAL, which the message does not offer.
_LOG_LEVELS = ("DEBUG", "INFO", "WARNING", "ERROR", "CRITICAL")
if LOG_LEVEL not in _LOG_LEVELS:
    raise EnvironmentVariableError(
        f"LOG_LEVEL must be one of {', '.join(_LOG_LEVELS)}, got {env_str('LOG_LEVEL')!r}"
    )
LOGGING = {
    "version": 1,
    "disable_existing_loggers": False,
    "formatters": {"plain": {"format": "%(asctime)s %(levelname)s %(name)s %(message)s"}},
    "handlers": {"console": {"class": "logging.StreamHandler", "formatter": "plain"}},
    "root": {"handlers": ["console"], "level": LOG_LEVEL},
    "loggers": {"embedded_postgres": {"level": "WARNING"}},
}

if not DEBUG:
    SESSION_COOKIE_SECURE = env_bool("SESSION_COOKIE_SECURE", default=False)
    CSRF_COOKIE_SECURE = env_bool("CSRF_COOKIE_SECURE", default=False)
