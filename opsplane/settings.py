"""opsplane settings: everything comes from the environment (see the README's table).

Unset variables fall back to the embedded defaults a laptop needs: a SQLite file and
an embedded Redis under ``var/``. Production sets ``DATABASE_URL`` and ``REDIS_URL``;
the code paths are the same, only the URLs differ.
"""

import os
from pathlib import Path

from django.utils.translation import gettext_lazy as _
from kombu import Queue

from opsplane import env

BASE_DIR = Path(__file__).resolve().parent.parent
VAR_DIR = Path(os.environ.get("OPSPLANE_VAR_DIR") or BASE_DIR / "var").resolve()

SECRET_KEY = env.secret_key(key_file=VAR_DIR / "secret_key")
# Encrypts secrets at rest (opsplane/secrets.py); newest key first.
OPSPLANE_FERNET_KEYS = env.fernet_keys(key_file=VAR_DIR / "fernet_key")
DEBUG = env.env_bool("DEBUG", False)
ALLOWED_HOSTS = env.env_list("ALLOWED_HOSTS", ["127.0.0.1", "localhost", "[::1]"])
CSRF_TRUSTED_ORIGINS = env.env_list("CSRF_TRUSTED_ORIGINS", [])

INSTALLED_APPS = [
    "django.contrib.admin",
    "django.contrib.auth",
    "django.contrib.contenttypes",
    "django.contrib.sessions",
    "django.contrib.messages",
    "django.contrib.staticfiles",
    "rest_framework",
    "drf_spectacular",
    "drf_spectacular_sidecar",
    "channels",
    "django_htmx",
    "template_partials",
    "csp",
    "axes",
    "opsplane",
    "cmdb",
    "oncall",
    "changes",
    "approvals",
    "alerts",
]

MIDDLEWARE = [
    # First: probes answer before the Host header is checked (load balancers and
    # Prometheus reach replicas by IP address).
    "opsplane.middleware.ProbeMiddleware",
    "django.middleware.security.SecurityMiddleware",
    "whitenoise.middleware.WhiteNoiseMiddleware",
    "django.contrib.sessions.middleware.SessionMiddleware",
    "django.middleware.locale.LocaleMiddleware",
    "opsplane.middleware.TimezoneMiddleware",
    "django.middleware.common.CommonMiddleware",
    "django.middleware.csrf.CsrfViewMiddleware",
    "django.contrib.auth.middleware.AuthenticationMiddleware",
    "django.contrib.messages.middleware.MessageMiddleware",
    "django.middleware.clickjacking.XFrameOptionsMiddleware",
    "csp.middleware.CSPMiddleware",
    "django_htmx.middleware.HtmxMiddleware",
    "opsplane.middleware.LoginRequiredMiddleware",
    # last, as django-axes asks: it turns a lockout into its response
    "axes.middleware.AxesMiddleware",
]

ROOT_URLCONF = "opsplane.urls"
ASGI_APPLICATION = "opsplane.asgi.application"

TEMPLATES = [
    {
        "BACKEND": "django.template.backends.django.DjangoTemplates",
        "DIRS": [BASE_DIR / "templates"],
        "APP_DIRS": True,
        "OPTIONS": {
            "context_processors": [
                "django.template.context_processors.request",
                "django.template.context_processors.i18n",
                "django.contrib.auth.context_processors.auth",
                "django.contrib.messages.context_processors.messages",
                "opsplane.roles.navigation",
            ],
        },
    },
]

# --- data stores -------------------------------------------------------------------

DATABASES = {"default": env.database_config(default_sqlite=VAR_DIR / "opsplane.sqlite3")}
DEFAULT_AUTO_FIELD = "django.db.models.BigAutoField"

# Unset: the embedded server `manage.py up` starts (opsplane/embedded_redis.py).
EMBEDDED_REDIS_DIR = VAR_DIR / "redis"
REDIS_URL = env.redis_url(default_socket=EMBEDDED_REDIS_DIR / "redis.sock")

CHANNEL_LAYERS = {
    "default": {
        "BACKEND": "channels_redis.core.RedisChannelLayer",
        # A consumer waits on Redis with a blocking pop of up to 5 s (channels_redis'
        # brpop_timeout); redis-py 8's default socket timeout is also 5 s, which turned
        # every consumer that heard nothing for 5 s into a TimeoutError. A little more
        # than the pop, and no more: it also bounds how long a cancelled pop lingers.
        "CONFIG": {"hosts": [{"address": REDIS_URL, "socket_timeout": 6}],
                   "prefix": "opsplane:ws", "capacity": 1000, "expiry": 30},
    },
}

CACHES = {
    "default": {
        "BACKEND": "django.core.cache.backends.redis.RedisCache",
        "LOCATION": REDIS_URL,
        "KEY_PREFIX": "opsplane:cache",
        "OPTIONS": {"socket_connect_timeout": 2, "socket_timeout": 2},
    },
}

# --- Celery ------------------------------------------------------------------------

CELERY_BROKER_URL = env.celery_broker_url(REDIS_URL)
CELERY_RESULT_BACKEND = CELERY_BROKER_URL
CELERY_RESULT_EXPIRES = 3600
CELERY_TASK_SERIALIZER = "json"
CELERY_ACCEPT_CONTENT = ["json"]
# A task is acknowledged after it ran, so a worker killed mid-task does not lose it;
# tasks that touch hosts guard against a redelivery themselves (see STYLE.md).
CELERY_TASK_ACKS_LATE = True
CELERY_TASK_REJECT_ON_WORKER_LOST = True
CELERY_WORKER_PREFETCH_MULTIPLIER = 1
CELERY_BROKER_CONNECTION_RETRY_ON_STARTUP = True
CELERY_BROKER_TRANSPORT_OPTIONS = {"visibility_timeout": 3600, "socket_connect_timeout": 5}
CELERY_TASK_SOFT_TIME_LIMIT = 300
CELERY_TASK_TIME_LIMIT = 360
CELERY_WORKER_HIJACK_ROOT_LOGGER = False
CELERY_BEAT_SCHEDULE_FILENAME = str(VAR_DIR / "celerybeat-schedule")
CELERY_BEAT_SCHEDULE = {
    "opsplane-heartbeat": {"task": "opsplane.heartbeat", "schedule": 15.0},
    "changes-reaper": {"task": "changes.reap_stale_runs", "schedule": 30.0},
    "changes-scheduled": {"task": "changes.start_due_changes", "schedule": 30.0},
    # Approval requests past their validity become expired (approvals.services.expire_due).
    "approvals-expiry": {"task": "approvals.expire_requests", "schedule": 60.0},
}
# Runs go to the `runs` queue (or `runs.<site>`, see changes.services.queue_for); other
# tasks to `celery`. A worker near a site's hosts consumes `runs.<site>`.
CELERY_TASK_ROUTES = {"changes.execute_run": {"queue": "runs"}}
CELERY_TASK_QUEUES = [Queue(name) for name in
                      env.env_list("OPSPLANE_WORKER_QUEUES", ["celery", "runs"])]
# Refresh every host's facts this often (0: never; a run from the UI still works).
OPSPLANE_FACTS_INTERVAL_HOURS = env.env_int("OPSPLANE_FACTS_INTERVAL_HOURS", 6, minimum=0)
if OPSPLANE_FACTS_INTERVAL_HOURS:
    CELERY_BEAT_SCHEDULE["cmdb-facts"] = {
        "task": "cmdb.gather_facts_scheduled",
        "schedule": OPSPLANE_FACTS_INTERVAL_HOURS * 3600.0,
    }
# Runs' output is deleted this many days after they finished (0: kept for ever); their
# per-host results stay. Beat's sweep also compacts output a worker left uncompacted.
OPSPLANE_OUTPUT_RETENTION_DAYS = env.env_int("OPSPLANE_OUTPUT_RETENTION_DAYS", 90, minimum=0)
CELERY_BEAT_SCHEDULE["changes-output"] = {"task": "changes.sweep_output", "schedule": 600.0}

# --- notifications (opsplane/notify) ---------------------------------------------------

# The outbox's tasks live outside an app's tasks.py, so the worker is told to load them.
CELERY_IMPORTS = ["opsplane.notify.tasks"]
# Re-queue outbox rows whose task never came (broker down at commit, worker lost).
CELERY_BEAT_SCHEDULE["notify-sweep"] = {"task": "notify.sweep", "schedule": 30.0}
OPSPLANE_NOTIFY_MAX_ATTEMPTS = env.env_int("OPSPLANE_NOTIFY_MAX_ATTEMPTS", 8, minimum=1)
# The first retry waits about this long; each further one twice as long, up to the cap.
OPSPLANE_NOTIFY_RETRY_SECONDS = env.env_int("OPSPLANE_NOTIFY_RETRY_SECONDS", 10, minimum=1)
OPSPLANE_NOTIFY_RETRY_MAX_SECONDS = 600
# A provider that answered "too fast" (HTTP 429, DingTalk 130101...) waits at least this.
OPSPLANE_NOTIFY_THROTTLED_SECONDS = 60
OPSPLANE_NOTIFY_TIMEOUT = env.env_int("OPSPLANE_NOTIFY_TIMEOUT_SECONDS", 10, minimum=1)
# A due row's task may take this long to arrive before the sweep queues it again...
OPSPLANE_NOTIFY_SWEEP_GRACE = 60
# ...and a row may stay `sending` this long (well above notify.deliver's time limit).
OPSPLANE_NOTIFY_LEASE = 300
# E-mail channels send through this SMTP server.
EMAIL_HOST = os.environ.get("EMAIL_HOST", "localhost")
EMAIL_PORT = env.env_int("EMAIL_PORT", 25, minimum=1, maximum=65535)
EMAIL_HOST_USER = os.environ.get("EMAIL_HOST_USER", "")
EMAIL_HOST_PASSWORD = os.environ.get("EMAIL_HOST_PASSWORD", "")
EMAIL_USE_TLS = env.env_bool("EMAIL_USE_TLS", False)
EMAIL_TIMEOUT = OPSPLANE_NOTIFY_TIMEOUT
DEFAULT_FROM_EMAIL = os.environ.get("DEFAULT_FROM_EMAIL", "opsplane@localhost")

# --- alerts ----------------------------------------------------------------------------

# Group timers (group_wait/group_interval/repeat_interval) run on this tick, never on one
# countdown per alert; endsAt expiry and silences on the next; heartbeats once a minute.
CELERY_BEAT_SCHEDULE["alerts-flush"] = {"task": "alerts.flush_due", "schedule": 5.0}
CELERY_BEAT_SCHEDULE["alerts-expire"] = {"task": "alerts.expire", "schedule": 15.0}
CELERY_BEAT_SCHEDULE["alerts-heartbeats"] = {"task": "alerts.check_heartbeats",
                                             "schedule": 60.0}
# Escalation steps, ack timeouts and snooze ends advance on this tick (state in the
# database, alerts/escalation.py); one-click ack links in its messages last this long.
OPSPLANE_ESCALATION_TICK_SECONDS = env.env_int("OPSPLANE_ESCALATION_TICK_SECONDS", 15, minimum=1)
CELERY_BEAT_SCHEDULE["alerts-escalate"] = {"task": "alerts.escalate",
                                           "schedule": float(OPSPLANE_ESCALATION_TICK_SECONDS)}
OPSPLANE_ACK_LINK_MAX_AGE = env.env_int("OPSPLANE_ACK_LINK_MAX_AGE_SECONDS", 24 * 3600,
                                        minimum=60)
# Resolved incidents and alerts are deleted this many days after they ended (0: kept
# for ever); open incidents and their alerts never are.
OPSPLANE_ALERT_RETENTION_DAYS = env.env_int("OPSPLANE_ALERT_RETENTION_DAYS", 90, minimum=0)
CELERY_BEAT_SCHEDULE["alerts-prune"] = {"task": "alerts.prune", "schedule": 600.0}
# The intake refuses larger bodies with 413 (on their Content-Length, before parsing).
OPSPLANE_ALERTS_MAX_BODY_BYTES = env.env_int("OPSPLANE_ALERTS_MAX_BODY_BYTES", 10 * 1024 * 1024,
                                             minimum=1024)
# The address people reach the web UI at: links in notifications are built on it.
OPSPLANE_BASE_URL = os.environ.get("OPSPLANE_BASE_URL", "http://127.0.0.1:8000").rstrip("/")

# --- approvals -------------------------------------------------------------------------

# Notification channels (names) that hear about requests no policy matched (the protected
# environments' default); a policy names its own channels.
APPROVALS_DEFAULT_CHANNELS = env.env_list("OPSPLANE_APPROVALS_CHANNELS", [])
# The e-mail channel (a name) that mails approvers and authors personally; "": no mail.
APPROVALS_EMAIL_CHANNEL = os.environ.get("OPSPLANE_APPROVALS_EMAIL_CHANNEL", "").strip()
# Panels the inbox and the request page load beside a subject (htmx, lazily): URL names
# reversed with the subject's id. Set here because approvals imports no other app.
APPROVALS_SUBJECT_PANELS = {"changes.change": ["alerts:subject_open_alerts"]}

# --- auth, roles, sessions -----------------------------------------------------------

AUTHENTICATION_BACKENDS = [
    "axes.backends.AxesStandaloneBackend",
    "django.contrib.auth.backends.ModelBackend",
]
AUTH_PASSWORD_VALIDATORS = [
    {"NAME": "django.contrib.auth.password_validation.UserAttributeSimilarityValidator"},
    {"NAME": "django.contrib.auth.password_validation.MinimumLengthValidator",
     "OPTIONS": {"min_length": 10}},
    {"NAME": "django.contrib.auth.password_validation.CommonPasswordValidator"},
    {"NAME": "django.contrib.auth.password_validation.NumericPasswordValidator"},
]
LOGIN_URL = "login"
LOGIN_REDIRECT_URL = "home"
LOGOUT_REDIRECT_URL = "login"

# Login throttling (django-axes): lock a username+address pair after repeated failures.
AXES_FAILURE_LIMIT = env.env_int("OPSPLANE_LOGIN_FAILURE_LIMIT", 5, minimum=1)
AXES_COOLOFF_TIME = env.env_int("OPSPLANE_LOGIN_COOLOFF_MINUTES", 15, minimum=1) / 60  # hours
AXES_LOCKOUT_PARAMETERS = [["username", "ip_address"]]
AXES_RESET_ON_SUCCESS = True
AXES_LOCKOUT_TEMPLATE = "registration/locked_out.html"
AXES_VERBOSE = False
# The client address is REMOTE_ADDR. Behind a reverse proxy, uvicorn's --proxy-headers
# sets it from X-Forwarded-For for the proxies FORWARDED_ALLOW_IPS trusts.

SESSION_COOKIE_HTTPONLY = True
SESSION_COOKIE_SAMESITE = "Lax"
SESSION_COOKIE_AGE = 12 * 3600
CSRF_COOKIE_SAMESITE = "Lax"
X_FRAME_OPTIONS = "DENY"
SECURE_CONTENT_TYPE_NOSNIFF = True
SECURE_REFERRER_POLICY = "same-origin"

# Served behind TLS (a reverse proxy terminating HTTPS): secure cookies, HSTS, redirect.
OPSPLANE_TLS = env.env_bool("OPSPLANE_TLS", False)
if OPSPLANE_TLS:
    SESSION_COOKIE_SECURE = True
    CSRF_COOKIE_SECURE = True
    SECURE_SSL_REDIRECT = True
    SECURE_HSTS_SECONDS = env.env_int("OPSPLANE_HSTS_SECONDS", 31536000, minimum=0)
    SECURE_HSTS_INCLUDE_SUBDOMAINS = True
    SECURE_REDIRECT_EXEMPT = [r"^healthz$", r"^readyz$", r"^metrics$"]
if env.env_bool("OPSPLANE_BEHIND_PROXY", False):
    SECURE_PROXY_SSL_HEADER = ("HTTP_X_FORWARDED_PROTO", "https")
    USE_X_FORWARDED_HOST = True

# Content-Security-Policy: no inline scripts or styles; everything comes from static/.
CONTENT_SECURITY_POLICY = {
    "DIRECTIVES": {
        "default-src": ["'self'"],
        "script-src": ["'self'"],
        "style-src": ["'self'"],
        "img-src": ["'self'", "data:"],
        "connect-src": ["'self'"],
        "font-src": ["'self'"],
        "object-src": ["'none'"],
        "base-uri": ["'self'"],
        "frame-ancestors": ["'none'"],
        "form-action": ["'self'"],
    },
}

# --- REST API --------------------------------------------------------------------------

REST_FRAMEWORK = {
    "DEFAULT_AUTHENTICATION_CLASSES": [
        "opsplane.tokens.TokenAuthentication",
        "rest_framework.authentication.SessionAuthentication",
    ],
    "DEFAULT_PERMISSION_CLASSES": ["rest_framework.permissions.IsAuthenticated"],
    "DEFAULT_SCHEMA_CLASS": "drf_spectacular.openapi.AutoSchema",
    "DEFAULT_PAGINATION_CLASS": "rest_framework.pagination.LimitOffsetPagination",
    "PAGE_SIZE": 50,
    "DEFAULT_THROTTLE_RATES": {"anon": "30/min"},
    "EXCEPTION_HANDLER": "opsplane.errors.api_exception_handler",
    # `format` is ours (exports); clients choose JSON with the Accept header.
    "URL_FORMAT_OVERRIDE": None,
}
SPECTACULAR_SETTINGS = {
    "TITLE": "opsplane API",
    "DESCRIPTION": "Inventory, changes, approvals and alerts. Authenticate with "
    "`Authorization: Bearer <token>` (create tokens on your profile page).",
    "VERSION": "1",
    "SERVE_INCLUDE_SCHEMA": False,
    "SERVE_PERMISSIONS": ["rest_framework.permissions.IsAuthenticated"],
    "SWAGGER_UI_DIST": "SIDECAR",
    "SWAGGER_UI_FAVICON_HREF": "SIDECAR",
    # Choice sets whose field names other components use too ("kind", "state").
    "ENUM_NAME_OVERRIDES": {
        "NotifyChannelKindEnum": "opsplane.notify.models.Channel.Kind",
        "NotificationStateEnum": "opsplane.notify.models.Notification.State",
    },
}

# --- i18n ------------------------------------------------------------------------------

LANGUAGE_CODE = "en"
LANGUAGES = [("en", _("English")), ("zh-hans", _("Simplified Chinese"))]
LOCALE_PATHS = [BASE_DIR / "locale"]
USE_I18N = True
TIME_ZONE = os.environ.get("TIME_ZONE", "UTC")
USE_TZ = True

# --- static files ----------------------------------------------------------------------

STATIC_URL = "static/"
STATICFILES_DIRS = [BASE_DIR / "static"]
STATIC_ROOT = Path(os.environ.get("STATIC_ROOT") or VAR_DIR / "staticfiles")
STATIC_ROOT.mkdir(parents=True, exist_ok=True)  # WhiteNoise warns about a missing one
STORAGES = {
    "default": {"BACKEND": "django.core.files.storage.FileSystemStorage"},
    "staticfiles": {"BACKEND": "django.contrib.staticfiles.storage.StaticFilesStorage"},
}
# Without collectstatic (make run, tests) WhiteNoise serves straight from the finders.
WHITENOISE_USE_FINDERS = True
WHITENOISE_AUTOREFRESH = DEBUG

# --- logging ---------------------------------------------------------------------------

LOG_LEVEL = os.environ.get("LOG_LEVEL", "INFO").upper()
LOGGING = {
    "version": 1,
    "disable_existing_loggers": False,
    "formatters": {"plain": {"format": "%(asctime)s %(levelname)s %(name)s %(message)s"}},
    "handlers": {"console": {"class": "logging.StreamHandler", "formatter": "plain"}},
    "root": {"handlers": ["console"], "level": LOG_LEVEL},
    "loggers": {
        "django.db.backends": {"level": "INFO"},
        "asyncssh": {"level": "WARNING"},
        "axes": {"level": "WARNING"},
    },
}

# --- opsplane ---------------------------------------------------------------------------

OPSPLANE_VERSION = "0.1.0"
# Where `make run` and the tests find the SSH lab's inventory.
OPSPLANE_LAB_DIR = VAR_DIR / "lab"
# When set, /metrics wants `Authorization: Bearer <this>` (Prometheus: `authorization`).
OPSPLANE_METRICS_TOKEN = os.environ.get("OPSPLANE_METRICS_TOKEN", "")
