"""Requests and decisions wired into changes: what you approve is exactly what runs."""

from datetime import timedelta

import pytest
from django.contrib.auth.models import Group
from django.core.exceptions import PermissionDenied, ValidationError
from django.utils import timezone

from approvals import services
from approvals.models import ApprovalPolicy, ApprovalRequest, Decision
from approvals.testing import approve, mail_channel, request_of
from changes import executor, states
from changes import services as changes
from changes.models import Change, HostResult, Run, Runbook
from cmdb.models import Environment, Host, Service
from opsplane.models import AuditEvent
from opsplane.notify.testing import deliver_outbox

pytestmark = pytest.mark.django_db

S = ApprovalRequest.Status
DEFINITION = """
parameters:
  - name: service
    type: choice
    choices: [nginx, redis]
    required: true
  - name: token
    type: string
    secret: true
steps:
  - name: restart
    kind: shell
    command: echo restarting {{ service }}
"""


@pytest.fixture
def inventory():
    prod = Environment.objects.create(name="prod", protected=True)
    dev = Environment.objects.create(name="dev")
    for i in (1, 2):
        Host.objects.create(name=f"web-{i}", environment=prod, labels={"role": "web"})
    db = Host.objects.create(name="db-1", environment=prod, labels={"role": "db"})
    Service.objects.create(name="orders", tier=Service.Tier.CRITICAL).hosts.set([db])
    Host.objects.create(name="dev-1", environment=dev, labels={"role": "web"})


@pytest.fixture
def runbook(operator, inventory):
    return changes.save_runbook(Runbook(), name="restart", description="",
                                definition=DEFINITION, by=operator)


def compose(operator, runbook, selector="env=prod,role=web", change=None, **fields):
    fields.setdefault("params", {"service": "nginx", "token": "hunter2"})
    change = changes.compose_change(title=fields.pop("title", "Restart nginx"), runbook=runbook,
                                    selector=selector, by=operator, change=change, **fields)
    if change.status == Change.Status.DRAFT:
        changes.submit_change(change, by=operator)
    change.refresh_from_db()
    return change


def two_approvers(admin_user):
    ApprovalPolicy.objects.create(name="two", environments=["prod"],
                                  requirements=[{"group": "approver", "count": 2}])


def test_no_policy_and_nothing_protected_is_ready_at_once(operator, runbook,
                                                          django_capture_on_commit_callbacks):
    change = compose(operator, runbook, selector="env=dev")
    assert change.status == Change.Status.READY
    req = request_of(change)
    assert req.status == S.APPROVED and req.automatic and req.digest == changes.change_digest(
        change)
    with django_capture_on_commit_callbacks():
        changes.start_run(change, by=operator)
    req.refresh_from_db()
    assert req.started_at is not None


def test_protected_environment_needs_one_approver_and_never_the_author(
        make_user, runbook, approver, django_capture_on_commit_callbacks):
    author = make_user("operator")
    author.groups.add(Group.objects.get(name="approver"))  # an approver too: still not alone
    change = compose(author, runbook)
    assert change.status == Change.Status.PENDING_APPROVAL
    req = request_of(change)
    with pytest.raises(PermissionDenied, match="someone else must approve"):
        services.decide(req, by=author, kind=Decision.Kind.APPROVE)
    with pytest.raises(services.NotCleared, match="awaits approval: 0 of 1 from approver"):
        changes.start_run(change, by=author)
    approve(change, by=approver)
    with django_capture_on_commit_callbacks():
        run = changes.start_run(change, by=author)
    change.refresh_from_db()
    assert change.status == Change.Status.RUNNING and run.number == 1
    actions = list(AuditEvent.objects.filter(object_type="changes.change").order_by("id")
                   .values_list("action", flat=True))
    assert actions == ["change.create", "change.pending_approval", "change.ready",
                       "change.running"]


def test_n_of_m_counts_each_approver_once(operator, runbook, approver, make_user, admin_user):
    two_approvers(admin_user)
    change = compose(operator, runbook)
    req = request_of(change)
    approve(change, by=approver)
    with pytest.raises(services.ApprovalError, match="already decided"):
        approve(change, by=approver)  # a double click
    req.refresh_from_db()
    assert req.status == S.PENDING and services.progress_text(req) == "1 of 2 from approver"
    with pytest.raises(services.NotCleared, match="1 of 2 from approver"):
        changes.start_run(change, by=operator)
    approve(change, by=make_user("approver"))
    req.refresh_from_db()
    assert req.status == S.APPROVED
    with pytest.raises(services.ApprovalError, match="approved"):
        approve(change, by=make_user("approver"))
    assert req.decisions.filter(kind="approve").count() == 2


def test_one_of_dba_and_one_of_approver_takes_two_people(operator, runbook, approver,
                                                         make_user):
    dba = Group.objects.create(name="dba")
    ApprovalPolicy.objects.create(name="db", selector="role=db", requirements=[
        {"group": "dba", "count": 1}, {"group": "approver", "count": 1}])
    change = compose(operator, runbook, selector="role=db")
    req = request_of(change)
    assert [s["policy"] for s in req.requirements] == ["db"]
    both = make_user("approver")
    both.groups.add(dba)
    approve(change, by=both)
    req.refresh_from_db()
    assert req.status == S.PENDING
    assert services.progress(req)[0]["requirements"] == [
        {"group": "dba", "count": 1, "by": [both.username]},
        {"group": "approver", "count": 1, "by": []}]
    approve(change, by=approver)
    req.refresh_from_db()
    assert req.status == S.APPROVED
    # The change touches a critical service: its risk is critical.
    assert req.facts["risk"] == "critical" and req.summary["by_service"] == {"orders": 1}


def test_the_author_may_approve_when_the_policy_says_so(make_user, runbook):
    author = make_user("operator")
    author.groups.add(Group.objects.get(name="approver"))
    ApprovalPolicy.objects.create(name="self", runbooks=["restart"], allow_author=True,
                                  requirements=[{"group": "approver", "count": 1}])
    change = compose(author, runbook)
    approve(change, by=author)
    assert request_of(change).status == S.APPROVED


def test_an_edit_sends_the_change_back_and_earlier_approvals_stop_counting(
        operator, runbook, approver, make_user, mailoutbox, settings,
        django_capture_on_commit_callbacks):
    mail_channel(settings)
    approver.email = "ann@example.com"
    approver.save()
    change = compose(operator, runbook)
    deliver_outbox()
    assert [m.to for m in mailoutbox] == [["ann@example.com"]]
    assert mailoutbox[0].subject == f"Approval needed: #{change.pk} Restart nginx"
    approve(change, by=approver)
    first = request_of(change)
    assert first.status == S.APPROVED and first.round == 1
    # A title edit does not change what runs: the approval stands.
    change = compose(operator, runbook, change=change, title="Restart nginx now")
    assert request_of(change).status == S.APPROVED and request_of(change).round == 1
    # A new secret value does: a new digest, a new round, approvers asked again.
    change = compose(operator, runbook, change=change, params={"service": "nginx",
                                                               "token": "other"})
    deliver_outbox()
    req = request_of(change)
    assert req.status == S.PENDING and req.round == 2 and req.digest != first.digest
    assert change.status == Change.Status.PENDING_APPROVAL
    assert mailoutbox[-1].subject.startswith("Approval needed again")
    with pytest.raises(services.NotCleared, match="awaits approval"):
        changes.start_run(change, by=operator)
    earlier = [i for i in services.timeline(req) if i.get("decision")]
    assert [(i["decision"].by_name, i["earlier_version"]) for i in earlier] == [
        (approver.username, True)]
    assert "other" not in str(req.summary) and req.summary["params"]["token"] == "********"
    approve(change, by=approver)  # the same approver, on the new version
    with django_capture_on_commit_callbacks():
        changes.start_run(change, by=operator)


def test_the_digest_covers_what_runs_and_never_a_secret_in_the_clear(operator, runbook):
    change = compose(operator, runbook)
    digest = changes.change_digest(change)
    assert len(digest) == 64
    same = Change.objects.get(pk=change.pk)
    assert changes.change_digest(same) == digest  # stable across a database round trip
    for field, value in [("params", {"service": "redis"}), ("target_names", ["web-1"]),
                         ("strategy", {**change.strategy, "parallelism": 1}),
                         ("scheduled_at", timezone.now())]:
        edited = Change.objects.get(pk=change.pk)
        setattr(edited, field, value)
        assert changes.change_digest(edited) != digest, field
    assert not AuditEvent.objects.filter(detail__icontains="hunter2").exists()


def test_the_worker_refuses_a_run_whose_digest_was_not_approved(
        operator, runbook, approver, django_capture_on_commit_callbacks):
    change = compose(operator, runbook)
    approve(change, by=approver)
    with django_capture_on_commit_callbacks():
        run = changes.start_run(change, by=operator)
    # Someone changes what would run behind the approval's back (a bug, a database edit).
    Change.objects.filter(pk=change.pk).update(params={"service": "redis"})
    run = executor.execute(run.pk)
    assert run.status == Run.Status.FAILED
    assert run.aborted_reason.startswith("refused: digest ")
    assert set(run.results.values_list("state", "error_reason")) == {
        (HostResult.State.SKIPPED, "approval")}
    change.refresh_from_db()
    assert change.status == Change.Status.FAILED


def test_a_rejection_needs_a_reason_ends_the_request_and_tells_the_author(
        operator, runbook, approver, mailoutbox, settings):
    mail_channel(settings)
    operator.email = "olga@example.com"
    operator.save()
    change = compose(operator, runbook)
    req = request_of(change)
    with pytest.raises(ValidationError) as info:
        services.decide(req, by=approver, kind=Decision.Kind.REJECT, comment="  ")
    assert "comment" in info.value.message_dict
    services.decide(req, by=approver, kind=Decision.Kind.REJECT, comment="not on Friday")
    deliver_outbox()
    req.refresh_from_db()
    assert req.status == S.REJECTED and req.close_reason == "not on Friday"
    assert mailoutbox[-1].to == ["olga@example.com"] and "not on Friday" in mailoutbox[-1].body
    with pytest.raises(services.NotCleared, match="rejected"):
        changes.start_run(change, by=operator)
    with pytest.raises(services.ApprovalError):
        approve(change, by=approver)
    # The author may ask again: a new round, the rejection stays in the history.
    again = services.resubmit(req, by=operator)
    assert again.status == S.PENDING and again.round == 2
    assert req.decisions.filter(kind="reject").count() == 1


def test_a_rejection_that_does_not_end_the_request_still_counts_against(
        operator, runbook, approver, make_user):
    ApprovalPolicy.objects.create(name="soft", rejection_ends=False,
                                  requirements=[{"group": "approver", "count": 1}])
    change = compose(operator, runbook)
    req = request_of(change)
    services.decide(req, by=approver, kind=Decision.Kind.REJECT, comment="hmm")
    req.refresh_from_db()
    assert req.status == S.PENDING
    with pytest.raises(services.ApprovalError, match="already decided"):
        approve(change, by=approver)  # no approving after rejecting in the same round
    approve(change, by=make_user("approver"))
    assert request_of(change).status == S.APPROVED


def test_an_approver_who_approved_may_still_reject(operator, runbook, approver, admin_user):
    two_approvers(admin_user)
    change = compose(operator, runbook)
    req = request_of(change)
    approve(change, by=approver)
    services.decide(req, by=approver, kind=Decision.Kind.REJECT, comment="saw the diff")
    req.refresh_from_db()
    assert req.status == S.REJECTED


def test_asking_for_changes_keeps_it_pending_and_needs_a_comment(operator, runbook, approver):
    change = compose(operator, runbook)
    req = request_of(change)
    with pytest.raises(ValidationError):
        services.decide(req, by=approver, kind=Decision.Kind.REQUEST_CHANGES)
    services.decide(req, by=approver, kind=Decision.Kind.REQUEST_CHANGES,
                    comment="batches of one, please")
    req.refresh_from_db()
    assert req.status == S.PENDING
    # Anyone who may see it can comment, the author too.
    services.decide(req, by=operator, kind=Decision.Kind.COMMENT, comment="will do")
    assert list(req.decisions.values_list("kind", flat=True)) == ["request_changes", "comment"]


def test_requests_expire_after_the_policy_validity(operator, runbook, approver):
    ApprovalPolicy.objects.create(name="short", validity_hours=2, environments=["prod"],
                                  requirements=[{"group": "approver", "count": 1}])
    pending = compose(operator, runbook)
    approved = compose(operator, runbook, title="approved")
    started = compose(operator, runbook, title="started")
    approve(approved, by=approver)
    approve(started, by=approver)
    changes.start_run(started, by=operator)
    automatic = compose(operator, runbook, selector="env=dev", title="dev")
    req = request_of(pending)
    assert req.expires_at - req.opened_at == timedelta(hours=2)
    assert services.expire_due(now=timezone.now() + timedelta(hours=1)) == []
    expired = services.expire_due(now=timezone.now() + timedelta(hours=2, seconds=1))
    assert sorted(r.subject_id for r in expired) == sorted([str(pending.pk), str(approved.pk)])
    assert request_of(started).status == S.APPROVED  # it ran: nothing left to expire
    assert request_of(automatic).status == S.APPROVED  # nobody approved: nothing goes stale
    with pytest.raises(services.NotCleared, match="expired"):
        changes.start_run(approved, by=operator)


def test_an_expired_approval_refuses_a_start_even_before_beat_marks_it(
        operator, runbook, approver, monkeypatch):
    change = compose(operator, runbook)
    approve(change, by=approver)
    later = request_of(change).expires_at + timedelta(seconds=1)
    monkeypatch.setattr(timezone, "now", lambda: later)
    with pytest.raises(services.NotCleared, match="expired at"):
        changes.start_run(change, by=operator)


def test_withdrawal_and_cancel_take_the_request_out_of_the_inbox(operator, runbook, approver,
                                                                  make_user):
    first = compose(operator, runbook)
    second = compose(operator, runbook, title="second")
    assert [r.subject_id for r in services.inbox(approver)] == [str(first.pk), str(second.pk)]
    with pytest.raises(PermissionDenied):
        services.withdraw(request_of(first), by=make_user("operator"))
    services.withdraw(request_of(first), by=operator, reason="wrong hosts")
    changes.cancel_change(second, by=operator)
    assert services.inbox(approver) == []
    assert request_of(second).status == S.WITHDRAWN
    with pytest.raises(services.NotCleared, match="withdrawn"):
        changes.start_run(first, by=operator)
    assert services.resubmit(request_of(first), by=operator).status == S.PENDING


def test_only_the_required_groups_decide(operator, runbook, make_user):
    change = compose(operator, runbook)
    req = request_of(change)
    for user in (make_user("oncall"), make_user("operator"), make_user(None)):
        with pytest.raises(PermissionDenied, match="must come from: approver"):
            services.decide(req, by=user, kind=Decision.Kind.APPROVE)
    # An admin holds every role, approver included.
    admin = make_user("admin")
    services.decide(req, by=admin, kind=Decision.Kind.APPROVE)
    assert request_of(change).status == S.APPROVED


def test_every_step_is_audited(operator, runbook, approver, django_capture_on_commit_callbacks):
    change = compose(operator, runbook)
    approve(change, by=approver)
    with django_capture_on_commit_callbacks():
        changes.start_run(change, by=operator)
    req = request_of(change)
    actions = list(AuditEvent.objects.filter(object_type="approvals.approvalrequest",
                                             object_id=str(req.pk))
                   .order_by("id").values_list("action", "actor_name"))
    assert actions == [("approval.open", operator.username),
                       ("approval.decision.approve", approver.username),
                       ("approval.approved", approver.username),
                       ("approval.used", operator.username)]


def test_metrics_count_requests_decisions_and_refusals(client, operator, runbook, approver):
    change = compose(operator, runbook)
    approve(change, by=approver)
    compose(operator, runbook, title="waiting")
    body = client.get("/metrics").content.decode()
    assert 'opsplane_approval_requests{state="approved"} 1.0' in body
    assert 'opsplane_approval_requests{state="pending"} 1.0' in body
    assert 'opsplane_approval_decision_seconds_count{outcome="approved"}' in body


def test_submitting_twice_is_refused_like_any_illegal_move(operator, runbook):
    change = compose(operator, runbook)
    with pytest.raises(states.TransitionError):
        changes.submit_change(change, by=operator)
    assert request_of(change).round == 1


def test_the_change_list_page_and_api_read_the_approval_state(
        client, operator, runbook, approver, make_user, django_assert_max_num_queries,
        django_capture_on_commit_callbacks):
    ApprovalPolicy.objects.create(name="two", environments=["prod"],
                                  requirements=[{"group": "approver", "count": 2}])
    change = compose(operator, runbook)
    other = compose(operator, runbook, title="Restart again")
    client.force_login(operator)

    def shown():
        listing = client.get("/changes/").content.decode()
        page = client.get(f"/changes/{change.pk}/").content.decode()
        api = client.get("/api/v1/changes/").json()
        api = {c["id"]: (c["display_status"], c["display_label"]) for c in api["results"]}
        detail = client.get(f"/api/v1/changes/{change.pk}/").json()
        assert api[change.pk] == (detail["display_status"], detail["display_label"])
        return listing, page, api

    listing, page, api = shown()
    assert api[change.pk] == ("awaiting_approval", "awaiting approval (0 of 2)")
    assert "awaiting approval (0 of 2)" in listing and "awaiting approval (0 of 2)" in page
    approve(change, by=approver)
    listing, page, api = shown()
    assert api[change.pk] == ("awaiting_approval", "awaiting approval (1 of 2)")
    approve(change, by=make_user("approver"))
    listing, page, api = shown()
    assert Change.objects.get(pk=change.pk).status == Change.Status.PENDING_APPROVAL
    assert api[change.pk] == ("approved", "approved: ready to start")
    assert "approved: ready to start" in listing and "approved: ready to start" in page
    assert "awaiting approval" not in page.split("<h1>")[1].split("</h1>")[0]
    services.decide(request_of(other), by=approver, kind=Decision.Kind.REJECT,
                    comment="not today")
    listing, page, api = shown()
    assert api[other.pk] == ("rejected", "rejected")
    # An approval past its validity reads expired before beat marks it.
    ApprovalRequest.objects.filter(pk=request_of(change).pk).update(
        expires_at=timezone.now() - timedelta(minutes=1))
    assert shown()[2][change.pk] == ("expired", "approval expired")
    # Starting it: running, as the change itself says.
    ApprovalRequest.objects.filter(pk=request_of(change).pk).update(
        expires_at=timezone.now() + timedelta(hours=1))
    with django_capture_on_commit_callbacks():
        changes.start_run(change, by=operator)
    assert shown()[2][change.pk] == ("running", "running")
    # The list reads every request of the page at once, however many changes there are.
    for i in range(5):
        compose(operator, runbook, title=f"more {i}")
    with django_assert_max_num_queries(12):
        client.get("/changes/")
