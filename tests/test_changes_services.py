"""Runbooks, composing, the status machine, exactly-once start, cancel, retry, reaper."""

import threading
from datetime import timedelta

import pytest
from django.core.exceptions import PermissionDenied, ValidationError
from django.db import connection
from django.utils import timezone

from approvals.testing import approve
from changes import runbooks, services, states
from changes.models import Change, HostResult, Run, Runbook
from cmdb.models import Environment, Host
from opsplane.models import AuditEvent

pytestmark = pytest.mark.django_db

DEFINITION = """
parameters:
  - name: service
    type: choice
    choices: [nginx, redis]
    required: true
  - name: count
    type: int
    default: 3
  - name: token
    type: string
    secret: true
steps:
  - name: restart
    kind: shell
    command: echo restarting {{ service }} {{ count }}
    timeout: 30
"""


@pytest.fixture
def hosts():
    prod = Environment.objects.create(name="prod", protected=True)
    return [Host.objects.create(name=f"web-{i}", environment=prod,
                                labels={"role": "web", "site": "sh"}) for i in range(1, 4)]


@pytest.fixture
def runbook(operator):
    return services.save_runbook(Runbook(), name="restart", description="",
                                 definition=DEFINITION, by=operator)


def compose(operator, runbook, **overrides):
    kwargs = {"title": "Restart nginx", "runbook": runbook, "selector": "role=web",
              "params": {"service": "nginx", "token": "hunter2"},
              "strategy": {"parallelism": 2}, "by": operator}
    kwargs.update(overrides)
    return services.compose_change(**kwargs)


@pytest.mark.parametrize(("definition", "path"), [
    ("steps: []", "steps"),
    ("steps:\n  - kind: teleport", "steps[0].kind"),
    ("steps:\n  - kind: shell", "steps[0].command"),
    ("steps:\n  - kind: shell\n    command: x\n    timeout: -1", "steps[0].timeout"),
    ("steps:\n  - kind: shell\n    command: '{{ x'", "steps[0].command"),
    ("steps:\n  - kind: upload\n    template: x\n    dest: relative", "steps[0].dest"),
    ("steps:\n  - kind: shell\n    command: x\n    when: 'a =='", "steps[0].when"),
    ("parameters:\n  - name: 9bad\nsteps:\n  - kind: shell\n    command: x",
     "parameters[0].name"),
    ("parameters:\n  - name: s\n    type: choice\nsteps:\n  - kind: shell\n    command: x",
     "parameters[0].choices"),
    ("steps: [\n", "line 2"),
])
def test_runbook_errors_name_the_field(definition, path):
    with pytest.raises(runbooks.RunbookError) as info:
        runbooks.parse_definition(definition)
    assert path in info.value.errors


def test_editing_a_runbook_makes_a_version_and_old_changes_keep_theirs(
        operator, runbook, hosts):
    change = compose(operator, runbook)
    services.save_runbook(runbook, name="restart", description="edited",
                          definition=DEFINITION.replace("restarting", "bouncing"), by=operator)
    assert runbook.versions.count() == 2
    change.refresh_from_db()
    assert change.runbook_version.number == 1
    # Saving the same definition again makes no new version.
    services.save_runbook(runbook, name="restart", description="again",
                          definition=DEFINITION.replace("restarting", "bouncing"), by=operator)
    assert runbook.versions.count() == 2


def test_compose_freezes_targets_and_keeps_secrets_encrypted(operator, runbook, hosts):
    change = compose(operator, runbook)
    assert change.target_names == ["web-1", "web-2", "web-3"]
    assert change.params == {"service": "nginx", "count": 3}
    assert "hunter2" not in change.secret_params
    assert services.secret_values(change) == {"token": "hunter2"}
    assert change.queue == "runs.sh"
    Host.objects.create(name="web-4", environment=hosts[0].environment,
                        labels={"role": "web"})
    change.refresh_from_db()
    assert len(change.target_names) == 3  # frozen
    assert not AuditEvent.objects.filter(detail__icontains="hunter2").exists()


def test_compose_errors_per_field(operator, runbook, hosts):
    with pytest.raises(ValidationError) as info:
        compose(operator, runbook, title=" ", selector="role in (",
                params={"service": "apache", "count": "many", "typo": 1},
                strategy={"parallelism": 0, "batches": "1, 200%"})
    errors = info.value.message_dict
    assert {"title", "selector", "param_service", "param_count", "param_typo", "parallelism",
            "batches"} <= set(errors)


def test_selector_matching_nothing_is_refused(operator, runbook, hosts):
    with pytest.raises(ValidationError) as info:
        compose(operator, runbook, selector="role=db")
    assert "selector" in info.value.message_dict


def test_only_operators_compose(approver, runbook, hosts):
    with pytest.raises(PermissionDenied):
        compose(approver, runbook)


def test_illegal_transitions_are_refused_with_a_message(operator, runbook, hosts):
    change = compose(operator, runbook)
    with pytest.raises(states.TransitionError, match="cannot become succeeded"):
        states.transition(change, Change.Status.SUCCEEDED, by=operator)


def test_start_is_exactly_once(operator, approver, runbook, hosts,
                               django_capture_on_commit_callbacks):
    change = compose(operator, runbook)
    services.submit_change(change, by=operator)
    approve(change, by=approver)  # prod is protected: one approver
    with django_capture_on_commit_callbacks() as callbacks:
        run = services.start_run(change, by=operator)
    assert len(callbacks) == 1  # one task queued
    assert run.results.count() == 3
    with pytest.raises(states.TransitionError):
        services.start_run(change, by=operator)
    assert Run.objects.filter(change=change).count() == 1


@pytest.mark.django_db(transaction=True)
def test_concurrent_starts_make_one_run(operator, approver, runbook, hosts):
    change = compose(operator, runbook)
    services.submit_change(change, by=operator)
    approve(change, by=approver)  # prod is protected: one approver
    barrier, outcomes = threading.Barrier(2), []

    def start():
        barrier.wait()
        try:
            services.start_run(Change.objects.get(pk=change.pk), by=operator)
            outcomes.append("started")
        except states.TransitionError:
            outcomes.append("refused")
        finally:
            connection.close()

    threads = [threading.Thread(target=start) for _ in range(2)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert sorted(outcomes) == ["refused", "started"]
    assert Run.objects.filter(change=change).count() == 1


def test_cancel_a_queued_run_finishes_it_and_the_change(operator, approver, runbook, hosts):
    change = compose(operator, runbook)
    services.submit_change(change, by=operator)
    approve(change, by=approver)  # prod is protected: one approver
    run = services.start_run(change, by=operator)
    run = services.request_cancel(run, by=operator)
    assert run.status == Run.Status.CANCELLED and run.finished_at is not None
    assert set(run.results.values_list("state", flat=True)) == {"cancelled"}
    change.refresh_from_db()
    assert change.status == Change.Status.CANCELLED
    # A run nobody started cannot be claimed by a late worker.
    assert services.claim_run(run.pk, "late-worker") is None


def test_retry_runs_only_the_hosts_that_did_not_finish_ok(operator, approver, runbook, hosts):
    change = compose(operator, runbook)
    services.submit_change(change, by=operator)
    approve(change, by=approver)  # prod is protected: one approver
    run = services.start_run(change, by=operator)
    services.claim_run(run.pk, "w")
    run.results.filter(host_name="web-1").update(state="ok")
    run.results.filter(host_name="web-2").update(state="failed")
    run.results.filter(host_name="web-3").update(state="unreachable")
    from django.db import transaction
    with transaction.atomic():
        services.finish_run(Run.objects.get(pk=run.pk), Run.Status.FAILED)
    retry = services.retry_run(Run.objects.get(pk=run.pk), by=operator)
    assert retry.number == 2
    assert sorted(retry.results.values_list("host_name", flat=True)) == ["web-2", "web-3"]


def test_reaper_interrupts_runs_whose_worker_died(operator, approver, runbook, hosts):
    change = compose(operator, runbook)
    services.submit_change(change, by=operator)
    approve(change, by=approver)  # prod is protected: one approver
    run = services.start_run(change, by=operator)
    run = services.claim_run(run.pk, "w")
    run.results.filter(host_name="web-1").update(state="ok")
    Run.objects.filter(pk=run.pk).update(heartbeat_at=timezone.now() - timedelta(minutes=5))
    reaped = services.reap_stale_runs()
    assert [r.pk for r in reaped] == [run.pk]
    run.refresh_from_db()
    assert run.status == Run.Status.INTERRUPTED
    states_ = dict(run.results.values_list("host_name", "state"))
    assert states_ == {"web-1": "ok", "web-2": "unknown", "web-3": "unknown"}
    change.refresh_from_db()
    assert change.status == Change.Status.INTERRUPTED
    # A live run is left alone.
    assert services.reap_stale_runs() == []


def test_scheduled_change_waits_for_its_time(operator, approver, runbook, hosts, monkeypatch):
    at = timezone.now() + timedelta(hours=1)
    change = compose(operator, runbook, scheduled_at=at)
    services.submit_change(change, by=operator)
    approve(change, by=approver)  # prod is protected: one approver
    with pytest.raises(services.ChangeError, match="scheduled"):
        services.start_run(change, by=operator)
    assert services.start_due_changes() == []
    # The clock moves on (moving the schedule instead would change what was approved).
    monkeypatch.setattr(timezone, "now", lambda: at + timedelta(seconds=1))
    assert [r.change_id for r in services.start_due_changes()] == [change.pk]


def test_host_results_states_cover_retryable():
    assert HostResult.RETRYABLE <= HostResult.DONE
