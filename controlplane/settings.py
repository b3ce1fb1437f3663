"""Settings, read from the environment (see README "Configuration"); bad values stop start-up loudly."""

from __future__ import annotations

import contextlib
from datetime import timedelta
from pathlib import Path
from typing import Any

from celery.schedules import crontab
from django.core.exceptions import ImproperlyConfigured

from controlplane.env import (
    database_from_url,
    env_bool,
    env_float,
    env_int,
    env_list,
    env_rate,
    env_str,
    env_time_of_day,
)

BASE_DIR = Path(__file__).resolve().parent.parent

DEBUG = env_bool("DEBUG", False)
_DEV_SECRET = "dev-only-insecure-secret-key-do-not-use-in-production"  # noqa: S105 (only with DEBUG)
SECRET_KEY = env_str("SECRET_KEY", _DEV_SECRET if DEBUG else "")
if not SECRET_KEY:
    raise ImproperlyConfigured("SECRET_KEY is required when DEBUG is off (or set SECRET_KEY_FILE)")
ALLOWED_HOSTS = env_list("ALLOWED_HOSTS", ["localhost", "127.0.0.1", "[::1]", "testserver"])
CSRF_TRUSTED_ORIGINS = env_list("CSRF_TRUSTED_ORIGINS", [])

INSTALLED_APPS = [
    "django.contrib.admin",
    "django.contrib.auth",
    "django.contrib.contenttypes",
    "django.contrib.sessions",
    "django.contrib.messages",
    "django.contrib.staticfiles",
    "axes",
    "rest_framework",
    "drf_spectacular",
    "drf_spectacular_sidecar",
    "controlplane.audit",
    "controlplane.catalog",
    "controlplane.incidents",
    "controlplane.actions",
    "controlplane.api",
    "controlplane.web",
    "runbooks",
    "controlplane.slack",
    "controlplane.quarantine",
]

MIDDLEWARE = [
    "controlplane.middleware.RequestIdMiddleware",
    "controlplane.middleware.BodySizeLimitMiddleware",
    "django.middleware.security.SecurityMiddleware",
    "whitenoise.middleware.WhiteNoiseMiddleware",
    "django.contrib.sessions.middleware.SessionMiddleware",
    "django.middleware.common.CommonMiddleware",
    "django.middleware.csrf.CsrfViewMiddleware",
    "django.contrib.auth.middleware.AuthenticationMiddleware",
    "django.contrib.messages.middleware.MessageMiddleware",
    "django.middleware.clickjacking.XFrameOptionsMiddleware",
    "controlplane.middleware.ChangeContextMiddleware",
    "axes.middleware.AxesMiddleware",  # last, as axes asks: answers a locked-out login with its page (429)
]

ROOT_URLCONF = "controlplane.urls"
WSGI_APPLICATION = "controlplane.wsgi.application"
ASGI_APPLICATION = "controlplane.asgi.application"

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
                "controlplane.web.context.navigation",
            ],
        },
    },
]

# Collected static files (STATIC_ROOT below).
DATA_DIR = Path(env_str("DATA_DIR", str(BASE_DIR / "var")))
# Postgres, required: the demo, the tests and compose run the same engine (controlplane/env.py).
DATABASES: dict[str, dict[str, Any]] = {"default": database_from_url(env_str("DATABASE_URL", ""))}
# The database role web, worker and beat connect as: ``migrate``, run as the tables' owner, grants it only what
# the app needs after every run (audit.services.audit_app_role_grant). Empty: no grants made.
DATABASE_APP_ROLE = env_str("DATABASE_APP_ROLE", "")
DEFAULT_AUTO_FIELD = "django.db.models.BigAutoField"

AUTH_PASSWORD_VALIDATORS = [
    {"NAME": "django.contrib.auth.password_validation.MinimumLengthValidator", "OPTIONS": {"min_length": 8}},
]
LOGIN_URL = "login"
LOGIN_REDIRECT_URL = "web:dashboard"
LOGOUT_REDIRECT_URL = "login"

LANGUAGE_CODE = "en-us"
TIME_ZONE = "UTC"
USE_I18N = False
USE_TZ = True

STATIC_URL = "static/"
STATICFILES_DIRS = [BASE_DIR / "static"]
STATIC_ROOT = DATA_DIR / "staticfiles"
WHITENOISE_USE_FINDERS = True  # serves static/ and app assets without collectstatic (demo, tests)
with contextlib.suppress(OSError):  # WhiteNoise warns about a missing STATIC_ROOT; a read-only DATA_DIR is fine
    STATIC_ROOT.mkdir(parents=True, exist_ok=True)
WHITENOISE_AUTOREFRESH = DEBUG

# HTTPS (README "Configuration"). With DEBUG off, cookies are sent over HTTPS only and browsers are told to
# keep to HTTPS for a year (SecurityMiddleware sends HSTS on HTTPS responses only, so plain http is unaffected);
# a plain-http deployment (the local demo) sets SECURE_COOKIES=false. A TLS-terminating proxy's
# X-Forwarded-Proto is believed only when TRUST_X_FORWARDED_PROTO says a proxy sets it.
SESSION_COOKIE_HTTPONLY = True
SESSION_COOKIE_SECURE = env_bool("SECURE_COOKIES", not DEBUG)
CSRF_COOKIE_SECURE = SESSION_COOKIE_SECURE
SECURE_HSTS_SECONDS = env_int("SECURE_HSTS_SECONDS", 0 if DEBUG else 365 * 24 * 3600, minimum=0)
SECURE_HSTS_INCLUDE_SUBDOMAINS = env_bool("SECURE_HSTS_INCLUDE_SUBDOMAINS", False)
SECURE_HSTS_PRELOAD = env_bool("SECURE_HSTS_PRELOAD", False)
SECURE_PROXY_SSL_HEADER = ("HTTP_X_FORWARDED_PROTO", "https") if env_bool("TRUST_X_FORWARDED_PROTO", False) else None
SECURE_SSL_REDIRECT = env_bool("SECURE_SSL_REDIRECT", False)
X_FRAME_OPTIONS = "DENY"

# Proxies in front of the app that append to X-Forwarded-For (0: none, the peer address is the client).
# controlplane/clientip.py reads the client address by it for the API throttles and the login lockout.
TRUSTED_PROXY_COUNT = env_int("TRUSTED_PROXY_COUNT", 0, minimum=0)

# Password guessing (django-axes): a username is locked from one address after LOGIN_FAILURE_LIMIT failures in
# a row, for LOGIN_LOCKOUT_MINUTES, on the login page and the admin login alike. Attempts are rows in the
# database (listed and cleared in the admin, or with `manage.py axes_reset`); a success resets the count.
AUTHENTICATION_BACKENDS = [
    "axes.backends.AxesStandaloneBackend",
    "django.contrib.auth.backends.ModelBackend",
]
AXES_HANDLER = "axes.handlers.database.AxesDatabaseHandler"
AXES_FAILURE_LIMIT = env_int("LOGIN_FAILURE_LIMIT", 5, minimum=1)
AXES_COOLOFF_TIME = timedelta(minutes=env_int("LOGIN_LOCKOUT_MINUTES", 15, minimum=1))
AXES_LOCKOUT_PARAMETERS = [["username", "ip_address"]]
AXES_RESET_ON_SUCCESS = True
AXES_CLIENT_IP_CALLABLE = "controlplane.clientip.client_ip"
AXES_LOCKOUT_TEMPLATE = "registration/locked_out.html"
AXES_DISABLE_ACCESS_LOG = True  # successful logins are not kept: only the failures the lockout counts
# Masked in the stored request data and axes' log lines (the password always is).
AXES_SENSITIVE_PARAMETERS = ["username", "ip_address", "csrfmiddlewaretoken"]

# Bodies larger than this are refused with 413 before any parsing (bots send small JSON).
DATA_UPLOAD_MAX_MEMORY_SIZE = env_int("MAX_REQUEST_BYTES", 64 * 1024, minimum=1024)

REDIS_URL = env_str("REDIS_URL", "redis://127.0.0.1:6379/0")

CELERY_BROKER_URL = REDIS_URL
if REDIS_URL.startswith("redis://"):  # kombu's Redis transport, reusing its publish client (controlplane/broker.py)
    CELERY_BROKER_TRANSPORT = "controlplane.broker:Transport"
# Actions keep their own state; a result backend is only for tooling such as the dispatch benchmark.
CELERY_RESULT_BACKEND = env_str("CELERY_RESULT_BACKEND", "") or None
CELERY_TASK_ACKS_LATE = True
CELERY_TASK_REJECT_ON_WORKER_LOST = True
CELERY_WORKER_PREFETCH_MULTIPLIER = 1
# Slack's tasks (presses, commands, the outbox) have their own queue, served by their own worker (bin/demo,
# docker-compose.yml): an action holds a worker process for as long as it runs (a backfill polls Airflow for
# minutes), and a press must not wait behind it. Every other task goes to the default queue ("celery").
CELERY_TASK_ROUTES = {"controlplane.slack.tasks.*": {"queue": "slack"}}
CELERY_TASK_IGNORE_RESULT = True
CELERY_BROKER_CONNECTION_RETRY_ON_STARTUP = True
CELERY_BROKER_TRANSPORT_OPTIONS = {
    "visibility_timeout": 3600,
    "socket_timeout": 5,
    "socket_connect_timeout": 5,
}
CELERY_BROKER_CONNECTION_TIMEOUT = 5
CELERY_TASK_ALWAYS_EAGER = False
CELERY_WORKER_HIJACK_ROOT_LOGGER = False
# Celery's Django fixup closes the database connection around every task unless told to reuse it; a new
# connection per task would sit between every commit and its connector call.
CELERY_DB_REUSE_MAX = env_int("CELERY_DB_REUSE_MAX", 1000, minimum=0)

CONTROLPLANE: dict[str, Any] = {
    # A running action's lease; the worker renews it every third of this, the reaper acts when it lapses.
    # Requests that may wait for an action's end at once (GET /api/v1/actions/<id>?wait=N), per web process:
    # each holds a thread, so keep it below the threads per process.
    "API_WAIT_SLOTS": env_int("API_WAIT_SLOTS", 2, minimum=0),
    "LEASE_SECONDS": env_int("ACTION_LEASE_SECONDS", 60, minimum=2),
    # A queued action not claimed this long after dispatch is dispatched again (broker loss).
    "DISPATCH_GRACE_SECONDS": env_int("ACTION_DISPATCH_GRACE_SECONDS", 60, minimum=1),
    "REAPER_INTERVAL_SECONDS": env_int("REAPER_INTERVAL_SECONDS", 15, minimum=1),
    "MAX_ATTEMPTS": env_int("ACTION_MAX_ATTEMPTS", 3, minimum=1),
    "RETRY_BACKOFF_SECONDS": env_int("ACTION_RETRY_BACKOFF_SECONDS", 5, minimum=0),
    "EXECUTE_TIMEOUT_SECONDS": env_int("ACTION_EXECUTE_TIMEOUT_SECONDS", 900, minimum=1),
    # Plans at or above this risk need a second person even outside protected environments.
    "APPROVAL_RISK": env_str("APPROVAL_RISK", "high"),
    # Plans whose estimated cost (Plan.estimated_cost_usd) is at or over this many US dollars need a second
    # person in every environment (controlplane/actions/policy.py).
    "APPROVAL_COST_USD": env_float("APPROVAL_COST_USD", 50.0, minimum=0),
    # An action awaiting approval longer than this can no longer be approved: it ends expired.
    "APPROVAL_TTL_HOURS": env_int("ACTION_APPROVAL_TTL_HOURS", 24, minimum=1),
    "API_TOKEN_DEFAULT_DAYS": env_int("API_TOKEN_DEFAULT_DAYS", 90, minimum=1),
    # How often the connectors' watch asks each watched connection for problems (incidents.connections_watch).
    "WATCH_INTERVAL_SECONDS": env_int("WATCH_INTERVAL_SECONDS", 300, minimum=10),
}

# Slack as a channel (controlplane/slack/, docs/slack.md). Off until a bot token reference is set: nothing is
# posted and /slack/* answers 404. The token and the signing secret are references (env:NAME, file:/path),
# resolved where they are used and never stored.
SLACK: dict[str, Any] = {
    "BOT_TOKEN_REF": env_str("SLACK_BOT_TOKEN_REF", ""),
    "SIGNING_SECRET_REF": env_str("SLACK_SIGNING_SECRET_REF", ""),
    # Slack's Web API; the demo points it at its stand-in (sandbox/slack.py).
    "API_URL": env_str("SLACK_API_URL", "https://slack.com/api/"),
    # Where an incident is posted when neither its pipeline nor its environment names a channel.
    "DEFAULT_CHANNEL": env_str("SLACK_DEFAULT_CHANNEL", "#data-incidents"),
    # Approval requests go to this channel; empty: a direct message to each approver who has a Slack link.
    "APPROVALS_CHANNEL": env_str("SLACK_APPROVALS_CHANNEL", ""),
    # The control plane's address as people reach it, for the links in messages.
    "PUBLIC_URL": env_str("PUBLIC_URL", "http://127.0.0.1:8000"),
    "TIMEOUT_SECONDS": env_int("SLACK_TIMEOUT_SECONDS", 5, minimum=1),
}

QUARANTINE_DAILY_AT = env_time_of_day("QUARANTINE_DAILY_AT", "06:00")

CELERY_BEAT_SCHEDULE = {
    "reap-actions": {
        "task": "controlplane.actions.tasks.reap_actions",
        "schedule": float(CONTROLPLANE["REAPER_INTERVAL_SECONDS"]),
    },
    "verify-audit-chain": {
        "task": "controlplane.audit.tasks.verify_audit_chain",
        "schedule": float(env_int("AUDIT_VERIFY_INTERVAL_SECONDS", 600, minimum=10)),
    },
    "resume-stalled-runbook-runs": {
        "task": "runbooks.tasks.resume_stalled_runs",
        "schedule": 60.0,
    },
    "check-connections": {
        "task": "controlplane.catalog.tasks.check_connections_health",
        "schedule": float(env_int("HEALTH_CHECK_INTERVAL_SECONDS", 300, minimum=10)),
    },
    # Connectors that watch their systems (Connector.alerts: a failed task, a paused pipe) open incidents.
    "watch-connections": {
        "task": "controlplane.incidents.tasks.watch_connections",
        "schedule": float(CONTROLPLANE["WATCH_INTERVAL_SECONDS"]),
    },
    # Slack queues whose delivery task was lost (broker outage, killed worker) start again (slack/outbound.py).
    "kick-slack-queues": {
        "task": "controlplane.slack.tasks.kick_pending_queues",
        "schedule": 30.0,
    },
    # Quarantine (controlplane/quarantine/tasks.py): the weekly reviews' moments are data (ReviewSchedule,
    # admin); this tick asks every 15 minutes whether one passed (idempotent per source and week).
    "quarantine-reviews-due": {
        "task": "controlplane.quarantine.tasks.request_due_reviews",
        "schedule": 900.0,
    },
    # Daily at QUARANTINE_DAILY_AT (UTC), once yesterday's files are in: incidents for the threshold breaches
    # and escalation rules; the retention cleanup request. A fixed hour, not every 24 h from beat's start: an
    # interval restarts with beat (a fresh schedule file), and a beat restarted daily by deploys never ran them.
    "quarantine-breaches": {
        "task": "controlplane.quarantine.tasks.open_breach_incidents",
        "schedule": crontab(hour=QUARANTINE_DAILY_AT[0], minute=QUARANTINE_DAILY_AT[1]),
    },
    "quarantine-retention-cleanup": {
        "task": "controlplane.quarantine.tasks.request_retention_cleanups",
        "schedule": crontab(hour=QUARANTINE_DAILY_AT[0], minute=QUARANTINE_DAILY_AT[1]),
    },
}

REST_FRAMEWORK = {
    "DEFAULT_AUTHENTICATION_CLASSES": [
        "controlplane.api.auth.BearerTokenAuthentication",
        "controlplane.api.auth.SessionWithContext",
    ],
    "DEFAULT_PERMISSION_CLASSES": ["controlplane.api.auth.RoleAndScope"],
    "DEFAULT_RENDERER_CLASSES": ["rest_framework.renderers.JSONRenderer"],
    "DEFAULT_PARSER_CLASSES": ["controlplane.api.parsers.LimitedJSONParser"],
    "DEFAULT_SCHEMA_CLASS": "drf_spectacular.openapi.AutoSchema",
    "EXCEPTION_HANDLER": "controlplane.api.errors.exception_handler",
    "DEFAULT_THROTTLE_CLASSES": [
        "controlplane.api.throttling.AnonThrottle",
        "controlplane.api.throttling.UserThrottle",
    ],
    "DEFAULT_THROTTLE_RATES": {
        "anon": env_rate("API_THROTTLE_ANON", "60/minute"),
        "user": env_rate("API_THROTTLE_USER", "6000/minute"),
        "alerts": env_rate("API_THROTTLE_ALERTS", "300/minute"),
    },
    "UNAUTHENTICATED_USER": None,
    "NUM_PROXIES": TRUSTED_PROXY_COUNT,  # the throttles read the address with controlplane.clientip, by this rule
}

SPECTACULAR_SETTINGS = {
    "TITLE": "Control plane API",
    "DESCRIPTION": "Launch, approve and follow audited remediation actions on data pipelines.",
    "VERSION": "1.0.0",
    "SERVE_INCLUDE_SCHEMA": False,
    "SWAGGER_UI_DIST": "SIDECAR",
    "SWAGGER_UI_FAVICON_HREF": "SIDECAR",
    "REDOC_DIST": "SIDECAR",
    "COMPONENT_SPLIT_REQUEST": True,
    # Fields of one name with several choice sets (state: actions', runs'; status: incidents', Alertmanager
    # alerts'): each set named, so none gets a hash suffix.
    "ENUM_NAME_OVERRIDES": {
        "StateEnum": "controlplane.actions.models.ActionState",
        "StatusEnum": "controlplane.incidents.models.Incident.Status",
        "AlertmanagerStatusEnum": ["firing", "resolved"],
        "RunbookRunStateEnum": "runbooks.models.RunbookRun.State",
    },
    "POSTPROCESSING_HOOKS": [
        "drf_spectacular.hooks.postprocess_schema_enums",
        "controlplane.api.schema.add_error_responses",
    ],
    # The schema and its docs page are public so bot authors can read them before holding a token.
    "SERVE_PERMISSIONS": ["rest_framework.permissions.AllowAny"],
    "SERVE_AUTHENTICATION": [],
}

CACHES = {
    "default": {
        "BACKEND": "django.core.cache.backends.redis.RedisCache",
        "LOCATION": REDIS_URL,
        "OPTIONS": {"socket_timeout": 2, "socket_connect_timeout": 2},
    }
}

LOG_LEVEL = env_str("LOG_LEVEL", "INFO")
LOGGING = {
    "version": 1,
    "disable_existing_loggers": False,
    "filters": {"context": {"()": "controlplane.audit.context.LogContextFilter"}},
    "formatters": {
        "line": {"format": "%(asctime)s %(levelname)s %(name)s [req=%(request_id)s] %(message)s"},
    },
    "handlers": {
        "console": {"class": "logging.StreamHandler", "formatter": "line", "filters": ["context"]},
    },
    "root": {"handlers": ["console"], "level": LOG_LEVEL},
    "loggers": {"django.db.backends": {"level": "INFO"}},
}
