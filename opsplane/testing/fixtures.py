"""pytest plugin (``-p opsplane.testing.fixtures``): fixtures every app's tests share.

Users per role, a real Celery worker on the real broker, and a live server for
end-to-end tests. SSH fixtures live in ``tests/conftest.py`` (built on
``opsplane.testing.ssh``).
"""

import pytest


@pytest.fixture(autouse=True, scope="session")
def _fast_password_hashing():
    """Users are made by the dozen; PBKDF2's deliberate slowness only slows the suite."""
    from django.conf import settings

    settings.PASSWORD_HASHERS = ["django.contrib.auth.hashers.MD5PasswordHasher"]


@pytest.fixture(autouse=True)
def _fresh_process_caches():
    """Per-process caches keyed by what a rolled-back test can reuse (the alert routing
    tree is cached by version number): every test starts and ends without them."""
    from alerts import routing_state

    routing_state.forget()
    yield
    routing_state.forget()


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


# --- the ASGI application served for real ---------------------------------------------------

@pytest.fixture(autouse=True)
def _fresh_channel_layer():
    """Each test gets channel-layer instances of its own. channels keeps one per process,
    and a Redis layer binds its receive state to the event loop that first receives: a
    loop of an earlier test (or of a server thread) would otherwise make the next test's
    receive fail with "Two event loops are trying to receive()"."""
    from channels.layers import channel_layers

    channel_layers.backends.clear()
    yield
    channel_layers.backends.clear()


@pytest.fixture
def asgi_server(transactional_db):
    """The project's ASGI application under uvicorn in a thread: HTTP and websockets
    (pytest-django's ``live_server`` speaks WSGI only). Modules whose browser tests need
    websockets make the ``page`` fixture browse it::

        @pytest.fixture
        def live_server(asgi_server):
            return asgi_server
    """
    import threading
    import time
    from types import SimpleNamespace

    import uvicorn

    from opsplane.asgi import application
    from opsplane.testing.ssh import free_port

    port = free_port()
    # A short graceful shutdown: open websockets must not keep the thread (and the
    # consumers' channel-layer reads) alive after the test.
    server = uvicorn.Server(uvicorn.Config(application, host="127.0.0.1", port=port,
                                           log_level="warning", lifespan="off",
                                           timeout_graceful_shutdown=2))
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    deadline = time.monotonic() + 10
    while not server.started:
        assert thread.is_alive() and time.monotonic() < deadline, "uvicorn did not start"
        time.sleep(0.02)
    # pytest-django's autouse helper toggles settings on whatever `live_server` is.
    noop = SimpleNamespace(enable=lambda: None, disable=lambda: None)
    yield SimpleNamespace(url=f"http://127.0.0.1:{port}", _live_server_modified_settings=noop)
    server.should_exit = True
    thread.join(10)
    # The alert intake's threads keep their connections between requests: left open,
    # they would keep the test database from being dropped at the end.
    from alerts import api as alerts_api

    alerts_api.close_db_connections()


# --- websockets ---------------------------------------------------------------------------

@pytest.fixture
async def websockets():
    """Open websocket communicators on the project's ASGI application:
    ``await websockets(path, user=None, origin=b"http://127.0.0.1", headers=())``.

    Every communicator opened is disconnected at teardown, refused ones and those of a
    failed test included: a consumer left running keeps a blocking channel-layer read
    that the event loop's teardown then waits on."""
    from channels.db import database_sync_to_async
    from channels.testing import WebsocketCommunicator
    from django.test import Client

    from opsplane.asgi import application

    @database_sync_to_async
    def cookie(user):
        client = Client()
        client.force_login(user)
        return f"sessionid={client.cookies['sessionid'].value}".encode()

    opened = []

    async def open_(path, user=None, *, origin=b"http://127.0.0.1", headers=()):
        sent = [(b"origin", origin), *headers]
        if user is not None:
            sent.append((b"cookie", await cookie(user)))
        communicator = WebsocketCommunicator(application, path, headers=sent)
        opened.append(communicator)
        return communicator

    yield open_
    for communicator in opened:
        await _close(communicator)


async def _close(communicator):
    import asyncio
    import contextlib

    future = communicator._future  # the property would start an application
    if future is None or future.done():
        return
    # The test's own failure is what matters, not how its consumer ended.
    with contextlib.suppress(Exception):
        await communicator.disconnect(timeout=5)
    if not future.done():
        future.cancel()
        await asyncio.gather(future, return_exceptions=True)


# --- a real browser ------------------------------------------------------------------------

CHROMIUM_ARGS = ["--headless", "--no-sandbox", "--disable-gpu",
                 "--disable-background-networking", "--disable-component-update",
                 "--disable-sync", "--no-first-run", "--disable-quic"]


@pytest.fixture(scope="module")
def browser():
    """Debian's chromium driven by Playwright (never a downloaded browser). Module-scoped:
    Playwright's sync API keeps an event loop running in this thread while it lives, and
    async tests in other modules need the thread's loop free."""
    import os
    import shutil

    from opsplane.testing.require import unavailable

    # Playwright's sync API keeps an event loop running in this thread, which Django
    # would take for async code calling the ORM; the tests' ORM calls are plain sync.
    os.environ.setdefault("DJANGO_ALLOW_ASYNC_UNSAFE", "true")
    executable = shutil.which("chromium")
    if executable is None:
        unavailable("chromium is not installed (apt-get install chromium)")
    try:
        from playwright.sync_api import sync_playwright
    except ImportError:
        unavailable("playwright is not installed")
    with sync_playwright() as playwright:
        try:
            instance = playwright.chromium.launch(executable_path=executable,
                                                  args=CHROMIUM_ARGS)
        except Exception as exc:  # noqa: BLE001 - any launch failure means no browser
            unavailable(f"chromium does not start: {exc}")
        yield instance
        instance.close()


@pytest.fixture
def page(browser, live_server, request):
    """A fresh browser tab on the live server. Console errors and Content-Security-Policy
    violations fail the test: the UI must run under its own policy."""
    from playwright.sync_api import expect

    # The suite shares two cores with a worker, a server and Chromium: Playwright's 5 s
    # default for ``expect`` is tight under that load, and waiting longer costs nothing
    # when the page is right.
    expect.set_options(timeout=15_000)
    context = browser.new_context(base_url=live_server.url, viewport={"width": 1280,
                                                                      "height": 800})
    context.set_default_timeout(15_000)
    tab = context.new_page()
    problems = []
    tab.on("console", lambda msg: msg.type == "error" and problems.append(msg.text))
    tab.on("pageerror", lambda exc: problems.append(str(exc)))
    yield tab
    context.close()
    assert problems == [], f"browser errors: {problems}"


@pytest.fixture(scope="session")
def screenshots():
    """Where browser tests save screenshots of key pages for reviewers (printed)."""
    import os
    from pathlib import Path

    folder = Path(os.environ.get("OPSPLANE_ARTIFACTS", "artifacts")) / "screenshots"
    folder.mkdir(parents=True, exist_ok=True)
    print(f"\nscreenshots: {folder.resolve()}")
    return folder


def login(page, user, password="correct horse battery"):
    page.goto("/login/")
    page.fill("#id_username", user.username)
    page.fill("#id_password", password)
    page.click("button[type=submit]")
    page.wait_for_url("**/")
