"""The users' journeys: the product running as it does in production (uvicorn, a Celery
worker and beat as separate processes, PostgreSQL, Redis, the SSH lab), driven through
Debian's Chromium.

One stack serves every journey of this package (``stack``, started once, stopped after
the last journey). Its processes read and write the test database, so the journeys are
transactional tests (``django_db(transaction=True)``): ``world`` commits what a journey
starts from (the demo inventory on the lab's hosts, people, a policy, a runbook), the
journey adds what it does through the browser, and the database is flushed after it.

On a failure the report carries the stack's log (every process, prefixed by name).
"""

import contextlib
import json
import shutil

import pytest

from opsplane.testing.require import unavailable
from opsplane.testing.stack import StackError, database_url, run_stack

PASSWORD = "journey-password-1"  # noqa: S105 - a test login on loopback
# Who walks through the journeys (username, roles).
PEOPLE = {
    "olga": ("operator",),              # composes and runs changes
    "pat": ("operator", "approver"),    # an operator who may approve others' changes
    "ann": ("approver",),
    "bob": ("approver",),
    "otto": ("oncall",),
    "ada": ("admin",),
}
RUNBOOK = """\
parameters:
  - name: service
    type: choice
    choices: [nginx, api]
    required: true
  - name: pause
    type: int
    default: 2
    description: Seconds to wait at most for the load balancer to drain the host.
steps:
  - name: drain
    kind: shell
    command: |
      echo "draining {{ service }} on $OPSPLANE_LAB_HOST"
      i=0
      while [ ! -e "$HOME/lb-drained" ] && [ $i -lt $(({{ pause }} * 10)) ]; do
        sleep 0.1; i=$((i + 1))
      done
      echo "drained {{ service }} on $OPSPLANE_LAB_HOST"
  - name: restart
    kind: shell
    command: |
      if [ -e "$HOME/maintenance.lock" ]; then
        echo "$OPSPLANE_LAB_HOST is under maintenance: $(cat "$HOME/maintenance.lock")" >&2
        exit 3
      fi
      echo "restarted {{ service }} on $OPSPLANE_LAB_HOST"
"""
# The drain step waits (up to ``pause`` seconds) for the lab's stand-in of a load
# balancer, a file ``lb-drained`` in the host's home, so a journey decides when the
# hosts are drained; the restart step fails on a host whose home holds
# ``maintenance.lock``.
# The stack's own settings: escalation steps are taken within a second of being due
# (production: every 15 s), so a journey watches a step happen without waiting for beat.
STACK_ENV = {"OPSPLANE_ESCALATION_TICK_SECONDS": "1"}
_current = {}


def _low_cost_password(password):
    """A PBKDF2 hash the web process accepts (it reads the iterations from the hash) but
    cheap to make; the first login upgrades it, as Django does."""
    from django.contrib.auth.hashers import PBKDF2PasswordHasher

    hasher = PBKDF2PasswordHasher()
    return hasher.encode(password, hasher.salt(), iterations=1000)


def _load_world(lab, directory):
    from django.contrib.auth import get_user_model

    from approvals import services as approvals_services
    from approvals.models import ApprovalPolicy
    from changes import services as changes_services
    from changes.models import Runbook
    from cmdb.models import Host, HostKey
    from opsplane import demo
    from opsplane.roles import ensure_role_groups

    groups = ensure_role_groups()
    users = {}
    for name, roles in PEOPLE.items():
        user = get_user_model().objects.create(
            username=name, password=_low_cost_password(PASSWORD),
            is_staff="admin" in roles, is_superuser="admin" in roles)
        user.groups.add(*(groups[role] for role in roles))
        users[name] = user
    # Four eyes on production: two approvers, never the author (the demo's own policy
    # asks for one; it is only made when no policy exists).
    approvals_services.save_policy(ApprovalPolicy(), {
        "name": "prod-four-eyes", "description": "Two approvers for production changes.",
        "environments": ["prod"], "requirements": [{"group": "approver", "count": 2}],
        "validity_hours": 24}, by=users["ada"])
    inventory = directory / "inventory.json"
    inventory.write_text(json.dumps(lab))
    demo.load(directory / "logins.json", lab_inventory=inventory)
    changes_services.save_runbook(
        Runbook(), name="rolling-restart", by=users["ada"],
        description="Drain a service, restart it, check it came back.", definition=RUNBOOK)
    # lab-004 (prod, web) was racked after the import: no host key pinned yet.
    HostKey.objects.filter(host__name="lab-004").delete()
    Host.objects.filter(name="lab-004").update(host_key_state=Host.HostKeyState.UNKNOWN)
    return {"users": users, "password": PASSWORD, "lab": lab}


@pytest.fixture
def world(transactional_db, ssh_lab, tmp_path):
    """The data a journey starts from, committed (the stack's processes read it);
    ``transactional_db`` flushes it after the test."""
    from pathlib import Path

    data = _load_world(ssh_lab, tmp_path)
    # The lab keeps each host's files in <lab dir>/hosts/<name>/ (also its HOME).
    data["lab_homes"] = Path(ssh_lab["client_key"]).parent / "hosts"
    return data


@pytest.fixture(scope="package")
def stack(django_db_setup, tmp_path_factory, django_db_blocker):
    """uvicorn + Celery worker + beat on the test database (see opsplane/testing/stack.py)."""
    from django.db import connection

    if not shutil.which("chromium"):
        unavailable("chromium is not installed (apt-get install chromium)")
    with contextlib.ExitStack() as exits:
        try:
            with django_db_blocker.unblock():
                url = database_url(connection.settings_dict)
            running = exits.enter_context(
                run_stack(tmp_path_factory.mktemp("stack"), database_url=url, env=STACK_ENV))
        except StackError as exc:
            unavailable(f"the opsplane stack does not start: {exc}")
        _current["stack"] = running
        try:
            yield running
        finally:
            _current.pop("stack", None)


@pytest.fixture(autouse=True)
def _stack_alive():
    """A process of the stack that died fails the journey with its log (a journey
    would otherwise only time out waiting for the page)."""
    yield
    if running := _current.get("stack"):
        running.check_running()


@pytest.hookimpl(wrapper=True)
def pytest_runtest_makereport(item, call):
    report = yield
    if report.failed and (running := _current.get("stack")):
        report.sections.append(("opsplane stack log (web, worker, beat)", running.tail()))
    if report.failed and (am := _current.get("alertmanager")):
        with contextlib.suppress(OSError):
            lines = am.log.read_text(errors="replace").splitlines()[-60:]
            report.sections.append(("Alertmanager log", "\n".join(lines)))
    return report


@pytest.fixture
def alertmanager(tmp_path):
    """``alertmanager(receivers)``: a real Prometheus Alertmanager sending to
    ``receivers`` (see opsplane/testing/alertmanager.py), stopped after the test."""
    from opsplane.testing.alertmanager import run_alertmanager
    from opsplane.testing.ssh import Unavailable

    with contextlib.ExitStack() as exits:

        def start(receivers, **timers):
            try:
                running = exits.enter_context(
                    run_alertmanager(tmp_path / "alertmanager", receivers=receivers, **timers))
            except Unavailable as exc:
                unavailable(f"Alertmanager: {exc}")
            _current["alertmanager"] = running
            return running

        try:
            yield start
        finally:
            _current.pop("alertmanager", None)


@pytest.fixture
def journey_shots(screenshots, request):
    """This journey's screenshot folder (printed), under the suite's screenshots."""
    folder = screenshots / request.node.name.removeprefix("test_")
    folder.mkdir(parents=True, exist_ok=True)
    print(f"\n{request.node.name}: screenshots in {folder.resolve()}")
    return folder


@pytest.fixture
def open_browser(browser, stack, world):
    """``open_browser("olga")``: a browser context of its own for that person, logged in
    through the login page; a page whose console errors and CSP violations fail the test
    (like the ``page`` fixture)."""
    from opsplane.testing.fixtures import login

    opened, problems = [], []

    def open_(username, *, locale="en-GB", timezone_id="Europe/Berlin"):
        context = browser.new_context(base_url=stack.url, locale=locale,
                                      timezone_id=timezone_id, accept_downloads=True,
                                      viewport={"width": 1280, "height": 800})
        opened.append(context)
        tab = context.new_page()
        tab.on("console", lambda msg: msg.type == "error" and problems.append(
            f"{username}: {msg.text}"))
        tab.on("pageerror", lambda exc: problems.append(f"{username}: {exc}"))
        login(tab, world["users"][username], world["password"])
        return tab

    yield open_
    for context in opened:
        context.close()
    assert problems == [], f"browser errors: {problems}"


@pytest.fixture
def confirm():
    """``confirm(page, lambda: button.click())``: click something that asks
    ``window.confirm`` (``data-confirm``), accept, and return the question asked."""

    def accept(page, click):
        asked = []

        def answer(dialog):
            asked.append(dialog.message)
            dialog.accept()

        page.once("dialog", answer)
        click()
        assert asked, "no confirmation was asked"
        return asked[0]

    return accept
