"""Settings come from the environment; a bad value is one clear line naming it."""

import os
import subprocess
import sys
from pathlib import Path

import pytest
from django.core.exceptions import ImproperlyConfigured

from opsplane import env

ROOT = Path(__file__).resolve().parent.parent


def test_unset_database_url_is_a_sqlite_file_in_wal_mode(tmp_path):
    config = env.database_config({}, default_sqlite=tmp_path / "db.sqlite3")
    assert config["ENGINE"] == "django.db.backends.sqlite3"
    assert config["NAME"] == str(tmp_path / "db.sqlite3")
    assert "journal_mode=WAL" in config["OPTIONS"]["init_command"]


def test_postgres_url_is_parsed():
    config = env.database_config(
        {"DATABASE_URL": "postgresql://ops:s3cret@db.example:6432/opsplane"}, default_sqlite="x"
    )
    assert config["ENGINE"] == "django.db.backends.postgresql"
    assert (config["HOST"], config["PORT"], config["NAME"]) == ("db.example", 6432, "opsplane")
    assert config["USER"] == "ops" and config["PASSWORD"] == "s3cret"


@pytest.mark.parametrize(("value", "expected"), [
    ("mysql://root@localhost/ops", "unsupported scheme 'mysql'"),
    ("postgresql://ops@localhost:notaport/ops", "bad port"),
    ("postgresql://ops@localhost:5432", "names no database"),
    ("not a url", "cannot parse"),
    ("sqlite://relative.db", "not a SQLite file URL"),
])
def test_bad_database_url_names_the_variable(value, expected):
    with pytest.raises(ImproperlyConfigured) as info:
        env.database_config({"DATABASE_URL": value}, default_sqlite="x")
    message = str(info.value)
    assert message.startswith("DATABASE_URL: ")
    assert expected in message


def test_password_is_never_echoed_in_errors():
    with pytest.raises(ImproperlyConfigured) as info:
        env.database_config({"DATABASE_URL": "mysql://root:hunter2@db/ops"}, default_sqlite="x")
    assert "hunter2" not in str(info.value)
    assert "***" in str(info.value)


@pytest.mark.parametrize(("value", "expected"), [
    ("http://127.0.0.1:6379", "unsupported scheme 'http'"),
    ("redis://127.0.0.1:6379/zero", "is not a number"),
    ("redis://127.0.0.1:99999/0", "cannot parse"),
    ("redis:///0", "names no host"),
])
def test_bad_redis_url_names_the_variable(value, expected):
    with pytest.raises(ImproperlyConfigured) as info:
        env.redis_url({"REDIS_URL": value}, default_socket="/x")
    assert str(info.value).startswith("REDIS_URL: ")
    assert expected in str(info.value)


def test_unset_redis_url_is_the_embedded_socket_and_celery_speaks_it(tmp_path):
    url = env.redis_url({}, default_socket=tmp_path / "redis.sock")
    assert url == f"unix://{tmp_path}/redis.sock"
    assert env.celery_broker_url(url) == f"redis+socket://{tmp_path}/redis.sock?virtual_host=0"
    assert env.celery_broker_url("redis://h:6379/3") == "redis://h:6379/3"


def test_secret_key_is_generated_once_and_kept(tmp_path):
    first = env.secret_key({}, key_file=tmp_path / "var" / "secret_key")
    second = env.secret_key({}, key_file=tmp_path / "var" / "secret_key")
    assert first == second and len(first) >= 50
    assert (tmp_path / "var" / "secret_key").stat().st_mode & 0o777 == 0o600


def test_short_secret_key_is_refused():
    with pytest.raises(ImproperlyConfigured, match="^SECRET_KEY: "):
        env.secret_key({"SECRET_KEY": "short"}, key_file="/nonexistent")


@pytest.mark.parametrize(("value", "expected"), [("1", True), ("off", False), ("", False)])
def test_debug_flag(value, expected):
    assert env.env_bool("DEBUG", True, {"DEBUG": value}) is expected


def test_bad_boolean_names_the_variable():
    with pytest.raises(ImproperlyConfigured, match="^DEBUG: expected one of"):
        env.env_bool("DEBUG", False, {"DEBUG": "maybe"})


def test_allowed_hosts_list():
    assert env.env_list("ALLOWED_HOSTS", [], {"ALLOWED_HOSTS": "a.example, b.example,,"}) == [
        "a.example", "b.example",
    ]


def _manage(*args, **environ):
    clean = {k: v for k, v in os.environ.items() if k not in {"DATABASE_URL", "REDIS_URL"}}
    return subprocess.run(
        [sys.executable, "manage.py", *args], cwd=ROOT, env={**clean, **environ},
        capture_output=True, text=True, timeout=120,
    )


@pytest.mark.parametrize(("variable", "value", "expected"), [
    ("DATABASE_URL", "postgres://ops@localhost:5432", "DATABASE_URL: "),
    ("REDIS_URL", "memcached://localhost", "REDIS_URL: "),
    ("DEBUG", "perhaps", "DEBUG: "),
])
def test_bad_value_stops_start_up_with_one_line(variable, value, expected):
    result = _manage("check", **{variable: value})
    assert result.returncode == 2
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1, result.stderr
    assert lines[0].startswith(f"opsplane: {expected}")
    assert "Traceback" not in result.stderr


def test_unreachable_database_stops_start_up_with_one_line(unused_tcp_port):
    url = f"postgresql://ops:topsecret@127.0.0.1:{unused_tcp_port}/opsplane"
    result = _manage("checkservices", DATABASE_URL=url)
    assert result.returncode == 2
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1, result.stderr
    assert lines[0].startswith("opsplane: DATABASE_URL: cannot reach the database at 127.0.0.1:")
    assert "topsecret" not in result.stderr


def test_unreachable_redis_stops_start_up_with_one_line(unused_tcp_port):
    result = _manage("checkservices", REDIS_URL=f"redis://127.0.0.1:{unused_tcp_port}/0")
    assert result.returncode == 2
    assert result.stderr.strip().startswith("opsplane: REDIS_URL: cannot reach Redis")
    assert len(result.stderr.strip().splitlines()) == 1
