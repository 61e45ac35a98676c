"""Changes executed for real: a Celery worker runs the engine on lab hosts over SSH and
the results land in the database."""

import json
import time

import pytest
from django.contrib.auth import get_user_model

from approvals.testing import approve
from changes import output, services
from changes.models import Change, Run, Runbook
from opsplane import demo

pytestmark = pytest.mark.django_db(transaction=True)


@pytest.fixture
def lab_inventory(ssh_lab, tmp_path, admin_user):
    path = tmp_path / "inventory.json"
    path.write_text(json.dumps(ssh_lab))
    demo.load(tmp_path / "logins.json", lab_inventory=path)
    return ssh_lab


def wait_for(run, timeout=60):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        run.refresh_from_db()
        if run.is_terminal:
            return run
        time.sleep(0.2)
    raise AssertionError(f"{run} still {run.status} after {timeout} s")


def make_change(operator, definition, selector, params=None, **strategy):
    runbook = services.save_runbook(Runbook(), name=f"rb-{time.monotonic_ns()}",
                                    description="", definition=definition, by=operator)
    change = services.compose_change(title="test", runbook=runbook, selector=selector,
                                     params=params or {}, strategy=strategy, by=operator)
    services.submit_change(change, by=operator)
    # The selectors take lab hosts in prod (protected): the demo approver signs off.
    approve(change, by=get_user_model().objects.get(username="approver"))
    return change


def test_a_change_runs_on_lab_hosts_through_the_worker(celery_worker, lab_inventory, operator,
                                                      client):
    change = make_change(operator, """
parameters:
  - name: word
    type: string
steps:
  - name: greet
    kind: shell
    command: echo hello {{ word }} from $OPSPLANE_LAB_HOST
""", "role=web", params={"word": "world; touch /tmp/opsplane-pwned"})
    run = wait_for(services.start_run(change, by=operator))
    assert run.status == Run.Status.SUCCEEDED, list(run.results.values())
    results = {r.host_name: r for r in run.results.all()}
    assert len(results) == 6 and {r.state for r in results.values()} == {"ok"}
    log = "".join(output.host_text(e) for e in output.iter_events(run.pk, host="lab-001"))
    assert "hello world; touch /tmp/opsplane-pwned from lab-001" in log
    change.refresh_from_db()
    assert change.status == Change.Status.SUCCEEDED
    body = client.get("/metrics").content.decode()
    assert 'opsplane_change_runs_total{status="succeeded"}' in body
    assert 'opsplane_change_host_results_total{state="ok"}' in body


def test_failure_and_retry_of_only_the_failed_hosts(celery_worker, lab_inventory, operator):
    change = make_change(operator, """
steps:
  - name: fail on db
    kind: shell
    command: test -e {{ marker }} || [ "$OPSPLANE_LAB_HOST" != lab-007 ]
parameters:
  - name: marker
    type: string
""", "role in (web,db)", params={"marker": "/tmp/opsplane-test-retry-marker"})
    run = wait_for(services.start_run(change, by=operator))
    assert run.status == Run.Status.FAILED
    failed = list(run.results.filter(state="failed").values_list("host_name", flat=True))
    assert failed == ["lab-007"]
    assert run.results.get(host_name="lab-007").exit_status == 1
    retry = wait_for(services.retry_run(run, by=operator))
    assert list(retry.results.values_list("host_name", flat=True)) == ["lab-007"]


def test_cancel_stops_a_running_change(celery_worker, lab_inventory, operator):
    change = make_change(operator, """
steps:
  - name: wait
    kind: shell
    command: sleep 30
""", "role=web", parallelism=2)
    run = services.start_run(change, by=operator)
    deadline = time.monotonic() + 20
    while not run.results.filter(state="running").exists():
        assert time.monotonic() < deadline, "nothing started"
        time.sleep(0.1)
    asked = time.monotonic()
    services.request_cancel(run, by=operator)
    run = wait_for(run, timeout=15)
    assert time.monotonic() - asked < 5
    assert run.status == Run.Status.CANCELLED
    assert set(run.results.values_list("state", flat=True)) == {"cancelled"}
