"""pytest plugin (``-p opsplane.testing.fixtures``): fixtures every app's tests share.

Users per role, a real Celery worker on the real broker, and a live server for
end-to-end tests. SSH fixtures live in ``tests/conftest.py`` (built on
``opsplane.testing.ssh``).
"""

import pytest


@pytest.fixture
def make_user(db, django_user_model):
    """``make_user("operator")`` -> a user holding that role (None: no role at all)."""
    from opsplane.roles import ensure_role_groups

    counter = iter(range(1, 10_000))

    def make(role=None, *, username=None, password="correct horse battery", **fields):
        groups = ensure_role_groups()
        user = django_user_model.objects.create_user(
            username=username or f"{role or 'norole'}-{next(counter)}", password=password,
            **fields,
        )
        if role is not None:
            user.groups.add(groups[role])
        return user

    return make


@pytest.fixture
def operator(make_user):
    return make_user("operator")


@pytest.fixture
def approver(make_user):
    return make_user("approver")


@pytest.fixture
def oncall(make_user):
    return make_user("oncall")


@pytest.fixture
def admin_user(make_user):
    return make_user("admin")


@pytest.fixture
def outsider(make_user):
    """Logged in, but with no role."""
    return make_user(None)


@pytest.fixture(scope="session")
def celery_app():
    from opsplane.celery import app

    return app


@pytest.fixture(scope="session")
def _celery_session_worker(celery_app, django_db_setup, django_db_blocker):
    """A real Celery worker (threads, in this process) consuming from the real broker."""
    from celery.contrib.testing.worker import start_worker

    from opsplane.testing.require import unavailable

    celery_app.loader.import_task_module("celery.contrib.testing.tasks")
    with django_db_blocker.unblock():
        running = start_worker(celery_app, pool="threads", concurrency=2,
                               perform_ping_check=True, shutdown_timeout=30)
        try:
            worker = running.__enter__()
        except Exception as exc:  # e.g. the broker does not answer
            unavailable(f"cannot start a Celery worker on the broker: {exc}")
        try:
            yield worker
        finally:
            running.__exit__(None, None, None)

@pytest.fixture
def celery_worker(_celery_session_worker, transactional_db):
    """Use with tests that need tasks executed for real. The worker thread has its own
    database connection, so the test must commit what the task is to see
    (``transactional_db`` is implied)."""
    return _celery_session_worker


@pytest.fixture
def unused_tcp_port():
    """A loopback port nothing listens on (bound, then released)."""
    import socket

    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]
