"""All freellm settings, read from the environment in one place (documented in .env.example)."""

from __future__ import annotations

import os
import secrets
from pathlib import Path

import environ
from django.core.exceptions import ImproperlyConfigured

BASE_DIR = Path(__file__).resolve().parent.parent

env = environ.Env()
if (BASE_DIR / ".env").exists():
    environ.Env.read_env(BASE_DIR / ".env", overwrite=False)

# "production" refuses to invent secrets; "development" (the embedded default) keeps them under var/.
FREELLM_ENV = env.str("FREELLM_ENV", default="development")
PRODUCTION = FREELLM_ENV == "production"
VAR_DIR = Path(env.str("FREELLM_VAR_DIR", default=str(BASE_DIR / "var")))
VAR_DIR.mkdir(parents=True, exist_ok=True)


def _secret_from_var(name: str, make) -> str:
    """A secret generated once into var/ so the embedded default needs no setup; never used in production."""
    path = VAR_DIR / name
    if not path.exists():
        path.write_text(make())
        path.chmod(0o600)
    return path.read_text().strip()


def _required_in_production(var: str, name: str, make) -> str:
    value = env.str(var, default="")
    if value:
        return value
    if PRODUCTION:
        raise ImproperlyConfigured(f"{var} must be set when FREELLM_ENV=production (see .env.example)")
    return _secret_from_var(name, make)


SECRET_KEY = _required_in_production("SECRET_KEY", "secret_key", lambda: secrets.token_urlsafe(50))
# "<key id>:<base64 32-byte key>" comma separated; the first encrypts, all decrypt.
FREELLM_ENCRYPTION_KEYS = _required_in_production(
    "FREELLM_ENCRYPTION_KEYS", "encryption_keys", lambda: "k1:" + __import__("base64").b64encode(secrets.token_bytes(32)).decode()
)

DEBUG = env.bool("DEBUG", default=False)
ALLOWED_HOSTS = env.list("ALLOWED_HOSTS", default=["127.0.0.1", "localhost", "[::1]", "testserver"])
CSRF_TRUSTED_ORIGINS = env.list("CSRF_TRUSTED_ORIGINS", default=[])
FREELLM_BIND = env.str("FREELLM_BIND", default="127.0.0.1")
FREELLM_PORT = env.int("FREELLM_PORT", default=8000)
# The ASGI server `./dev run` starts: daphne (the default), or uvicorn with httptools and uvloop, which
# tests/bench_gateway.py measures at about a third less CPU per request (README "Performance").
FREELLM_SERVER = env.str("FREELLM_SERVER", default="daphne")
if FREELLM_SERVER not in ("daphne", "uvicorn"):
    raise ImproperlyConfigured(f"FREELLM_SERVER must be daphne or uvicorn, not {FREELLM_SERVER!r}")
# The URL clients reach this server at (the root, without /v1): what `manage.py client_config` and the
# admin's "Connect a client" page put into the snippets. A wildcard bind address is no address to connect
# to, so the default then names the loopback one.
_connect_host = {"0.0.0.0": "127.0.0.1", "::": "[::1]"}.get(FREELLM_BIND, FREELLM_BIND)
if ":" in _connect_host and not _connect_host.startswith("["):
    _connect_host = f"[{_connect_host}]"
FREELLM_PUBLIC_URL = env.str("FREELLM_PUBLIC_URL", default=f"http://{_connect_host}:{FREELLM_PORT}").rstrip("/")

INSTALLED_APPS = [
    "daphne",
    "django.contrib.admin",
    "django.contrib.auth",
    "django.contrib.contenttypes",
    "django.contrib.sessions",
    "django.contrib.messages",
    "django.contrib.staticfiles",
    "channels",
    "django_celery_beat",
    "adminsortable2",
    "axes",
    "providers",
    "routing",
    "analytics",
]

MIDDLEWARE = [
    "django.middleware.security.SecurityMiddleware",
    "django.contrib.sessions.middleware.SessionMiddleware",
    "django.middleware.common.CommonMiddleware",
    "django.middleware.csrf.CsrfViewMiddleware",
    "django.contrib.auth.middleware.AuthenticationMiddleware",
    "django.contrib.messages.middleware.MessageMiddleware",
    "django.middleware.clickjacking.XFrameOptionsMiddleware",
    # Last, as django-axes asks: answers a locked-out login with its message.
    "axes.middleware.AxesMiddleware",
]

# Admin login brute force (django-axes): after FREELLM_LOGIN_FAILURE_LIMIT wrong passwords for one
# user name from one address, that pair is locked out for FREELLM_LOGIN_LOCKOUT_MINUTES (429 and a
# message). By user name and address together, so that nobody can lock the admin out from elsewhere.
AUTHENTICATION_BACKENDS = ["routing.auth_backends.LoginLockoutBackend", "django.contrib.auth.backends.ModelBackend"]
AXES_FAILURE_LIMIT = env.int("FREELLM_LOGIN_FAILURE_LIMIT", default=5)
AXES_COOLOFF_TIME = env.float("FREELLM_LOGIN_LOCKOUT_MINUTES", default=15.0) / 60
AXES_LOCKOUT_PARAMETERS = [["username", "ip_address"]]
AXES_RESET_ON_SUCCESS = True
AXES_CLIENT_IP_CALLABLE = "routing.throttle.client_address"
AXES_LOCKOUT_TEMPLATE = "admin/login_locked.html"

ROOT_URLCONF = "freellm.urls"
ASGI_APPLICATION = "freellm.asgi.application"
WSGI_APPLICATION = None

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
            ]
        },
    }
]

DATABASES = {"default": env.db("DATABASE_URL", default=f"sqlite:///{VAR_DIR / 'freellm.sqlite3'}")}
if DATABASES["default"]["ENGINE"] == "django.db.backends.sqlite3":
    # WAL + a busy timeout let daphne, the Celery worker and the log writer share one file.
    DATABASES["default"].setdefault("OPTIONS", {}).update(
        {"timeout": 20, "init_command": "PRAGMA journal_mode=WAL; PRAGMA synchronous=NORMAL;"}
    )
    # A file (not :memory:) so live servers in other threads/processes see the test data; one per run
    # so that parallel runs do not share it.
    DATABASES["default"].setdefault("TEST", {})["NAME"] = str(VAR_DIR / f"test-{os.getpid()}.sqlite3")
else:
    # A connection is kept (and checked before reuse) for this many seconds, so the request-log writer and
    # the admin do not open a PostgreSQL session per batch or page; a server that does not answer a new
    # connection within connect_timeout is an outage (the request log spools, unknown keys get a 503).
    DATABASES["default"]["CONN_MAX_AGE"] = env.int("FREELLM_DB_CONN_MAX_AGE", default=60)
    DATABASES["default"]["CONN_HEALTH_CHECKS"] = True
    DATABASES["default"].setdefault("OPTIONS", {}).setdefault("connect_timeout", 5)
DEFAULT_AUTO_FIELD = "django.db.models.BigAutoField"

REDIS_URL = env.str("REDIS_URL", default="")
# Connections each gateway process (per event loop) may hold to Redis; requests beyond it wait for one.
FREELLM_REDIS_MAX_CONNECTIONS = env.int("FREELLM_REDIS_MAX_CONNECTIONS", default=200)

if REDIS_URL:
    CACHES = {"default": {"BACKEND": "django.core.cache.backends.redis.RedisCache", "LOCATION": REDIS_URL}}
    CHANNEL_LAYERS = {"default": {"BACKEND": "channels_redis.core.RedisChannelLayer", "CONFIG": {"hosts": [REDIS_URL]}}}
    CELERY_BROKER_URL = REDIS_URL
else:
    CACHES = {"default": {"BACKEND": "django.core.cache.backends.locmem.LocMemCache"}}
    CHANNEL_LAYERS = {"default": {"BACKEND": "channels.layers.InMemoryChannelLayer"}}
    CELERY_BROKER_URL = "filesystem://"
    _broker_dir = VAR_DIR / "broker"
    for _sub in ("queue", "processed", "control"):
        (_broker_dir / _sub).mkdir(parents=True, exist_ok=True)
    CELERY_BROKER_TRANSPORT_OPTIONS = {
        "data_folder_in": str(_broker_dir / "queue"),
        "data_folder_out": str(_broker_dir / "queue"),
        "processed_folder": str(_broker_dir / "processed"),
        # Broadcast (pidbox) tables; kombu's default is ./control, relative to whatever the cwd is.
        "control_folder": str(_broker_dir / "control"),
    }
CELERY_TASK_IGNORE_RESULT = True
CELERY_BEAT_SCHEDULER = "django_celery_beat.schedulers:DatabaseScheduler"
CELERY_TIMEZONE = "UTC"
CELERY_TASK_ALWAYS_EAGER = env.bool("CELERY_TASK_ALWAYS_EAGER", default=False)

AUTH_PASSWORD_VALIDATORS = [
    {"NAME": "django.contrib.auth.password_validation.MinimumLengthValidator"},
]

LANGUAGE_CODE = "en-us"
TIME_ZONE = "UTC"
USE_I18N = True
USE_TZ = True

# --- Production (FREELLM_ENV=production turns these on; `manage.py check --deploy` is then clean) ---------
# Session and CSRF cookies only over HTTPS.
SESSION_COOKIE_SECURE = CSRF_COOKIE_SECURE = env.bool("FREELLM_SECURE_COOKIES", default=PRODUCTION)
# HSTS: browsers use HTTPS only for this long (seconds; 0 = no header). Start small when trying TLS out.
SECURE_HSTS_SECONDS = env.int("FREELLM_HSTS_SECONDS", default=31_536_000 if PRODUCTION else 0)
SECURE_HSTS_INCLUDE_SUBDOMAINS = env.bool("FREELLM_HSTS_INCLUDE_SUBDOMAINS", default=PRODUCTION)
SECURE_HSTS_PRELOAD = env.bool("FREELLM_HSTS_PRELOAD", default=PRODUCTION)
# The admin redirects plain-HTTP requests to HTTPS (the /v1 API answers on what it is reached by).
SECURE_SSL_REDIRECT = env.bool("FREELLM_SSL_REDIRECT", default=PRODUCTION)
# Behind a proxy that terminates TLS: the header (as in request.META) and value it sets on HTTPS requests,
# e.g. "HTTP_X_FORWARDED_PROTO=https". Only behind such a proxy: it must strip that header from clients.
_proxy_ssl_header = env.str("FREELLM_PROXY_SSL_HEADER", default="")
if _proxy_ssl_header:
    _header, _, _value = _proxy_ssl_header.partition("=")
    SECURE_PROXY_SSL_HEADER = (_header.strip(), _value.strip() or "https")

STATIC_URL = "static/"
STATIC_ROOT = VAR_DIR / "static"

LOGGING = {
    "version": 1,
    "disable_existing_loggers": False,
    "formatters": {"plain": {"format": "%(asctime)s %(levelname)s %(name)s: %(message)s"}},
    "handlers": {"console": {"class": "logging.StreamHandler", "formatter": "plain"}},
    "root": {"handlers": ["console"], "level": env.str("LOG_LEVEL", default="INFO")},
    "loggers": {"django.channels.server": {"level": "WARNING"}, "httpx": {"level": "WARNING"}},
}

# --- Gateway behaviour -------------------------------------------------------------------------------
FREELLM_MAX_ATTEMPTS = env.int("FREELLM_MAX_ATTEMPTS", default=20)
# Bounds failover and a plain (non-stream) answer as a whole: room for a long answer from a slow free model.
FREELLM_TIME_BUDGET = env.float("FREELLM_TIME_BUDGET", default=120.0)
FREELLM_CONNECT_TIMEOUT = env.float("FREELLM_CONNECT_TIMEOUT", default=5.0)
FREELLM_FIRST_TOKEN_TIMEOUT = env.float("FREELLM_FIRST_TOKEN_TIMEOUT", default=30.0)
FREELLM_IDLE_TIMEOUT = env.float("FREELLM_IDLE_TIMEOUT", default=20.0)
# Largest request body: uploads (multipart: audio); JSON endpoints (chat, embeddings, ...) take less.
FREELLM_MAX_BODY_BYTES = env.int("FREELLM_MAX_BODY_BYTES", default=25 * 1024 * 1024)
FREELLM_MAX_JSON_BODY_BYTES = env.int("FREELLM_MAX_JSON_BODY_BYTES", default=10 * 1024 * 1024)
FREELLM_OUTPUT_RESERVE = env.int("FREELLM_OUTPUT_RESERVE", default=2000)
FREELLM_STICKY_TTL = env.int("FREELLM_STICKY_TTL", default=1800)
# Responses API answers stored with `store: true` (the default, as OpenAI) are kept this long (seconds).
FREELLM_RESPONSES_TTL = env.int("FREELLM_RESPONSES_TTL", default=30 * 24 * 3600)
FREELLM_CONTEXT_HANDOFF = env.bool("FREELLM_CONTEXT_HANDOFF", default=True)
FREELLM_LEASE_TTL = env.int("FREELLM_LEASE_TTL", default=120)
# Browser origins allowed to call the API surfaces (freellm/cors.py): "*" (any: the API takes bearer keys, no
# cookies), a comma list of origins such as https://app.example.com, or empty for no CORS. Never the admin.
FREELLM_CORS_ORIGINS = env.list("FREELLM_CORS_ORIGINS", default=["*"])
# Route stats (routing/stats.py) fade with this half-life; strategies (routing/strategies.py) put a member
# with fewer than MIN_SAMPLES recent samples first this share of the time, to keep its stats fresh.
FREELLM_STATS_HALF_LIFE = env.float("FREELLM_STATS_HALF_LIFE", default=600.0)
# Answers the in-process response cache keeps (REDIS_URL unset); least recently used go first.
FREELLM_CACHE_MAX_ENTRIES = env.int("FREELLM_CACHE_MAX_ENTRIES", default=2000)
FREELLM_EXPLORATION = env.float("FREELLM_EXPLORATION", default=0.05)
FREELLM_EXPLORATION_MIN_SAMPLES = env.int("FREELLM_EXPLORATION_MIN_SAMPLES", default=5)
# Upkeep jobs (Celery beat): at most one health probe per key per interval; request logs kept this long.
FREELLM_PROBE_INTERVAL = env.int("FREELLM_PROBE_INTERVAL", default=300)
FREELLM_LOG_RETENTION_DAYS = env.int("FREELLM_LOG_RETENTION_DAYS", default=30)
# SSRF guard (providers/netguard.py): internal hosts and addresses upstream calls may reach anyway
# (comma-separated host names and CIDRs, e.g. a local Ollama: "127.0.0.1/32"). Empty: public addresses only.
FREELLM_UPSTREAM_ALLOW = env.str("FREELLM_UPSTREAM_ALLOW", default="")
# Request log during a database outage: rows wait in memory (this many), then in a file under var/spool/
# (this many bytes), and are written when the database answers (tried every FREELLM_LOG_RETRY_SECONDS).
# Rows beyond both are dropped and counted (admin banner, metrics).
FREELLM_LOG_SPOOL_ROWS = env.int("FREELLM_LOG_SPOOL_ROWS", default=10_000)
FREELLM_LOG_SPOOL_BYTES = env.int("FREELLM_LOG_SPOOL_BYTES", default=50 * 1024 * 1024)
FREELLM_LOG_RETRY_SECONDS = env.float("FREELLM_LOG_RETRY_SECONDS", default=2.0)
# Brute force: after this many wrong API keys from one client address within the window (seconds), that
# address gets 429 until the window ends (routing/throttle.py). The admin login: django-axes, below.
FREELLM_AUTH_FAILURE_LIMIT = env.int("FREELLM_AUTH_FAILURE_LIMIT", default=20)
FREELLM_AUTH_FAILURE_WINDOW = env.int("FREELLM_AUTH_FAILURE_WINDOW", default=60)
# Reverse proxies in front of freellm that append to X-Forwarded-For (0: clients connect directly). The
# client address (throttles, admin lockout) is then the one the outermost proxy saw.
FREELLM_PROXY_COUNT = env.int("FREELLM_PROXY_COUNT", default=0)
# Ollama's front door (/api/*): the username whose requests from this machine need no key (editors that
# cannot send one); empty = every request needs a key. Only for a gateway not behind a proxy on this host.
FREELLM_OLLAMA_KEYLESS_USER = env.str("FREELLM_OLLAMA_KEYLESS_USER", default="")
# Tests set this so that a missing Redis/PostgreSQL is a failure, not a skip.
FREELLM_REQUIRE_SERVICES = env.bool("FREELLM_REQUIRE_SERVICES", default=False)
DATA_UPLOAD_MAX_MEMORY_SIZE = FREELLM_MAX_BODY_BYTES

# --- Operations --------------------------------------------------------------------------------------
# /metrics from other addresses than loopback needs `Authorization: Bearer <this>`; unset, it is a 404 there.
FREELLM_METRICS_TOKEN = env.str("FREELLM_METRICS_TOKEN", default="")
# Alerts (analytics/alerts.py): a Slack-compatible incoming webhook, told once per incident and once on recovery;
# a route alerts when this share of its calls failed over the window (with at least that many calls).
FREELLM_ALERT_WEBHOOK = env.str("FREELLM_ALERT_WEBHOOK", default="")
FREELLM_ALERT_WINDOW = env.int("FREELLM_ALERT_WINDOW", default=900)
FREELLM_ALERT_FAILURE_RATE = env.float("FREELLM_ALERT_FAILURE_RATE", default=0.5)
FREELLM_ALERT_MIN_CALLS = env.int("FREELLM_ALERT_MIN_CALLS", default=5)
# Every process's counters are files in one folder, added up per scrape (prometheus_client's multiprocess
# mode). Set before anything imports prometheus_client; `./dev run` empties it at start.
PROMETHEUS_MULTIPROC_DIR = env.str("PROMETHEUS_MULTIPROC_DIR", default=str(VAR_DIR / "metrics"))
os.environ["PROMETHEUS_MULTIPROC_DIR"] = PROMETHEUS_MULTIPROC_DIR
Path(PROMETHEUS_MULTIPROC_DIR).mkdir(parents=True, exist_ok=True)
