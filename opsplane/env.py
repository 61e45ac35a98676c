"""Reading settings from the environment.

Every helper raises ``ImproperlyConfigured`` with a message that starts with the
variable's name, so a bad value stops start-up with one line an operator can act on
(``manage.py`` and the process entry points print that line instead of a traceback).
This module imports nothing from Django settings: it is used while they are built.
"""

import os
import secrets
from pathlib import Path
from urllib.parse import quote, unquote, urlsplit, urlunsplit

import dj_database_url
from django.core.exceptions import ImproperlyConfigured

TRUE = {"1", "true", "yes", "on"}
FALSE = {"0", "false", "no", "off", ""}


def _raw(name, environ):
    value = environ.get(name)
    return None if value is None else value.strip()


def env_bool(name, default=False, environ=os.environ):
    value = _raw(name, environ)
    if value is None:
        return default
    if value.lower() in TRUE:
        return True
    if value.lower() in FALSE:
        return False
    raise ImproperlyConfigured(
        f"{name}: expected one of 1/0, true/false, yes/no, on/off; got {value!r}"
    )


def env_int(name, default, environ=os.environ, minimum=None, maximum=None):
    value = _raw(name, environ)
    if value is None or value == "":
        return default
    try:
        number = int(value)
    except ValueError:
        raise ImproperlyConfigured(f"{name}: expected a whole number, got {value!r}") from None
    if minimum is not None and number < minimum or maximum is not None and number > maximum:
        raise ImproperlyConfigured(f"{name}: {number} is outside {minimum}..{maximum}")
    return number


def env_list(name, default, environ=os.environ):
    """A comma-separated list; blanks are dropped."""
    value = _raw(name, environ)
    if value is None:
        return list(default)
    return [item.strip() for item in value.split(",") if item.strip()]


def redact_url(url):
    """The URL with any password replaced by ``***``, for messages and logs."""
    try:
        parts = urlsplit(url)
    except ValueError:
        return "<unparseable>"
    if parts.password is None:
        return url
    netloc = parts.netloc.rsplit("@", 1)[1]
    user = parts.username or ""
    return urlunsplit(parts._replace(netloc=f"{user}:***@{netloc}"))


def database_config(environ=os.environ, *, default_sqlite):
    """``DATABASES['default']`` from ``DATABASE_URL``; a SQLite file when unset.

    Only PostgreSQL and SQLite are supported: the code relies on their locking and
    JSON behaviour, and the test suite runs on both.
    """
    url = _raw("DATABASE_URL", environ)
    if not url:
        return _sqlite(Path(default_sqlite))
    try:
        parts = urlsplit(url)
    except ValueError as exc:
        raise ImproperlyConfigured(
            f"DATABASE_URL: cannot parse {redact_url(url)!r}: {exc}"
        ) from None
    scheme = parts.scheme.lower()
    if scheme in {"postgres", "postgresql", "pgsql"}:
        try:
            parts.port  # noqa: B018 - raises ValueError on a bad port
        except ValueError:
            raise ImproperlyConfigured(f"DATABASE_URL: bad port in {redact_url(url)!r}") from None
        pool_size = env_int("DATABASE_POOL_MAX_SIZE", 20, environ, minimum=0)
        try:
            # No persistent per-thread connections: under ASGI every request may run in
            # a thread of its own, and each would keep a connection open. A psycopg pool
            # per process instead (DATABASE_POOL_MAX_SIZE=0: plain connect per use).
            config = dj_database_url.parse(url, conn_max_age=0)
        except Exception as exc:  # dj-database-url raises several types for bad input
            raise ImproperlyConfigured(
                f"DATABASE_URL: cannot parse {redact_url(url)!r}: {exc}"
            ) from None
        if not config.get("NAME"):
            raise ImproperlyConfigured(
                f"DATABASE_URL: {redact_url(url)!r} names no database "
                "(expected postgresql://user:password@host:5432/dbname)"
            )
        config["ENGINE"] = "django.db.backends.postgresql"
        options = config.setdefault("OPTIONS", {})
        options["connect_timeout"] = 5
        if pool_size:
            options["pool"] = {"min_size": 1, "max_size": pool_size, "timeout": 10}
        return config
    if scheme == "sqlite":
        path = unquote(parts.path)
        if parts.netloc or not path or path == "/":
            raise ImproperlyConfigured(
                f"DATABASE_URL: {url!r} is not a SQLite file URL (expected sqlite:////absolute/path.db)"
            )
        return _sqlite(Path(path))
    raise ImproperlyConfigured(
        f"DATABASE_URL: unsupported scheme {scheme!r} in {redact_url(url)!r} "
        "(expected postgresql://... or sqlite:///...)"
        if scheme
        else f"DATABASE_URL: cannot parse {redact_url(url)!r} (expected postgresql://user@host/dbname)"
    )


def _sqlite(path):
    return {
        "ENGINE": "django.db.backends.sqlite3",
        "NAME": str(path),
        # WAL lets the web process read while a worker writes; the busy timeout makes
        # concurrent writers wait instead of failing with "database is locked".
        "OPTIONS": {
            "timeout": 20,
            "transaction_mode": "IMMEDIATE",
            "init_command": "PRAGMA journal_mode=WAL; PRAGMA synchronous=NORMAL;",
        },
        "TEST": {"NAME": str(path.with_name(f"test_{path.name}"))},
    }


def redis_url(environ=os.environ, *, default_socket):
    """The validated ``REDIS_URL``; the embedded server's unix socket when unset."""
    url = _raw("REDIS_URL", environ)
    if not url:
        return f"unix://{quote(str(default_socket))}"
    try:
        parts = urlsplit(url)
        port = parts.port
    except ValueError as exc:
        raise ImproperlyConfigured(f"REDIS_URL: cannot parse {redact_url(url)!r}: {exc}") from None
    if parts.scheme in {"redis", "rediss"}:
        if not parts.hostname:
            raise ImproperlyConfigured(f"REDIS_URL: {redact_url(url)!r} names no host")
        db = parts.path.lstrip("/")
        if db and not db.isdigit():
            raise ImproperlyConfigured(
                f"REDIS_URL: database {db!r} in {redact_url(url)!r} is not a number"
            )
        del port
        return url
    if parts.scheme == "unix":
        if not parts.path:
            raise ImproperlyConfigured(f"REDIS_URL: {url!r} names no socket path")
        return url
    raise ImproperlyConfigured(
        f"REDIS_URL: unsupported scheme {parts.scheme!r} in {redact_url(url)!r} "
        "(expected redis://host:6379/0, rediss://... or unix:///path/redis.sock)"
    )


def celery_broker_url(url):
    """Kombu spells a unix socket ``redis+socket://``; redis-py spells it ``unix://``."""
    parts = urlsplit(url)
    if parts.scheme != "unix":
        return url
    # kombu reads the db number from the ``virtual_host`` query parameter
    db = dict(p.split("=", 1) for p in parts.query.split("&") if "=" in p).get("db", "0")
    return f"redis+socket://{parts.path}?virtual_host={db}"


def secret_key(environ=os.environ, *, key_file):
    """``SECRET_KEY``, or one generated on first start and kept in ``var/``."""
    value = _raw("SECRET_KEY", environ)
    if value:
        if len(value) < 32:
            raise ImproperlyConfigured("SECRET_KEY: must be at least 32 characters long")
        return value
    return _generated_secret(Path(key_file), lambda: secrets.token_urlsafe(50))


def fernet_keys(environ=os.environ, *, key_file):
    """``OPSPLANE_FERNET_KEYS``: comma-separated Fernet keys, newest first.

    The first key encrypts; every key decrypts, so a key is rotated by putting a new one
    in front and running ``manage.py rotate_credentials`` before removing the old one.
    Unset: one key generated on first start and kept in ``var/`` (laptop mode).
    """
    from cryptography.fernet import Fernet

    value = _raw("OPSPLANE_FERNET_KEYS", environ)
    if value:
        keys = [key.strip() for key in value.split(",") if key.strip()]
        for number, key in enumerate(keys, 1):
            try:
                Fernet(key)
            except (ValueError, TypeError):
                raise ImproperlyConfigured(
                    f"OPSPLANE_FERNET_KEYS: key {number} is not a Fernet key "
                    "(32 url-safe base64-encoded bytes; make one with "
                    "`python -c 'from cryptography.fernet import Fernet; "
                    "print(Fernet.generate_key().decode())'`)"
                ) from None
        return keys
    return [_generated_secret(Path(key_file), lambda: Fernet.generate_key().decode())]


def _generated_secret(key_file, make):
    """A secret made once and kept in ``key_file`` (mode 0600)."""
    try:
        return key_file.read_text().strip()
    except FileNotFoundError:
        pass
    key_file.parent.mkdir(parents=True, exist_ok=True)
    # Write a temporary file, then link it into place: when two processes start at
    # once, exactly one link succeeds and both end up reading the same secret.
    tmp = key_file.with_name(f".{key_file.name}.{os.getpid()}")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w") as fh:
        fh.write(make())
    try:
        os.link(tmp, key_file)
    except FileExistsError:
        pass
    finally:
        tmp.unlink()
    return key_file.read_text().strip()
