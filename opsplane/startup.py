"""Start-up checks shared by every process: one clear line instead of a traceback.

``run_cli`` wraps ``manage.py``; ``asgi.py`` and ``celery.py`` call ``load_settings``;
``check_database``/``check_redis`` are also what ``/readyz`` asks.
"""

import sys

from django.core.exceptions import ImproperlyConfigured


class StartupError(Exception):
    """A setting that parses but does not work (e.g. an unreachable database)."""


def fail(message, code=2):
    sys.stderr.write(f"opsplane: {message}\n")
    sys.stderr.flush()
    raise SystemExit(code)


def load_settings():
    """Import the settings now, so a bad value stops the process with one line."""
    from django.conf import settings

    try:
        settings.DATABASES  # noqa: B018 - forces the settings module to load
    except ImproperlyConfigured as exc:
        fail(str(exc))
    return settings


def run_cli(argv):
    load_settings()
    from django.core.management import execute_from_command_line

    try:
        execute_from_command_line(argv)
    except (ImproperlyConfigured, StartupError) as exc:
        fail(str(exc))


def check_database(alias="default"):
    """Raise ``StartupError`` naming ``DATABASE_URL`` when the database cannot be reached."""
    from django.db import connections

    from opsplane.env import redact_url

    connection = connections[alias]
    try:
        if connection.vendor == "postgresql":
            # A connection of its own, not one from the pool: the pool would retry quietly
            # for its whole timeout before saying anything.
            import psycopg

            with psycopg.connect(**connection.get_connection_params()) as conn:
                conn.execute("SELECT 1")
        else:
            connection.ensure_connection()
            with connection.cursor() as cursor:
                cursor.execute("SELECT 1")
    except Exception as exc:
        params = connection.settings_dict
        if "sqlite" in params["ENGINE"]:
            where = params["NAME"]
        else:
            host, port = params.get("HOST") or "localhost", params.get("PORT") or 5432
            where = f"{host}:{port}/{params['NAME']}"
        first_line = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        raise StartupError(f"DATABASE_URL: cannot reach the database at {redact_url(where)}: "
                           f"{first_line}") from None


def check_redis(url=None, timeout=2.0):
    """Raise ``StartupError`` naming ``REDIS_URL`` when Redis does not answer PING."""
    import redis
    from django.conf import settings

    from opsplane.env import redact_url

    url = url or settings.REDIS_URL
    client = redis.Redis.from_url(url, socket_connect_timeout=timeout, socket_timeout=timeout)
    try:
        client.ping()
    except Exception as exc:
        raise StartupError(f"REDIS_URL: cannot reach Redis at {redact_url(url)}: {exc}") from None
    finally:
        client.close()


def check_services():
    check_database()
    check_redis()
