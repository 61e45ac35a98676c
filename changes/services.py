"""Every write of the changes app and the rules that go with it: runbooks, composing and
submitting changes, starting (exactly once), cancelling and retrying runs, the reaper.

Views, the API, tasks and tests call these functions.
"""

import hashlib
import json
from collections import Counter
from datetime import UTC, timedelta

from django.core.exceptions import PermissionDenied, ValidationError
from django.db import transaction
from django.urls import reverse
from django.utils import timezone
from django.utils.crypto import salted_hmac
from django.utils.translation import gettext as _

from approvals import services as approvals
from changes import runbooks, states
from changes.models import Change, HostResult, Run, RunbookVersion
from cmdb import selectors
from opsplane import audit
from opsplane import secrets as vault
from opsplane.errors import DomainError
from opsplane.roles import Role, has_role, require

STALE_AFTER = timedelta(seconds=90)  # a run whose worker stopped beating this long ago


class ChangeError(DomainError):
    pass


# --- who may do what ---------------------------------------------------------------------


def can_view(user, change=None):
    """Anyone with a role sees changes (on-call needs them next to incidents)."""
    return has_role(user, Role.OPERATOR, Role.APPROVER, Role.ONCALL) or (
        change is not None and change.author_id == getattr(user, "pk", None))


def can_operate(user):
    """Compose, start, cancel and retry changes; write runbooks."""
    return has_role(user, Role.OPERATOR)


# --- runbooks ---------------------------------------------------------------------------


def save_runbook(runbook, *, name, description, definition, by, request=None):
    """Create a runbook or edit it. A changed definition makes a new version; old changes
    keep pointing at the version they were composed from."""
    require(can_operate(by))
    try:
        parameters, steps = runbooks.parse_definition(definition)
    except runbooks.RunbookError as exc:
        raise ValidationError({"definition": [f"{path}: {message}" for path, message
                                              in exc.errors.items()]}) from None
    digest = runbooks.definition_digest(parameters, steps)
    created = runbook.pk is None
    runbook.name, runbook.description = name, description
    if created:
        runbook.created_by = by
    runbook.full_clean()
    with transaction.atomic():
        runbook.save()
        latest = runbook.versions.select_for_update().order_by("-number").first()
        if latest is None or latest.digest != digest:
            version = RunbookVersion.objects.create(
                runbook=runbook, number=(latest.number + 1) if latest else 1,
                parameters=parameters, steps=steps, digest=digest, created_by=by)
            audit.record("runbook.create" if created else "runbook.new_version", by=by,
                         obj=runbook, request=request, detail={"version": version.number})
    return runbook


# --- composing and submitting changes -------------------------------------------------------


def compose_change(*, title, runbook, params, selector, strategy=None, description="",
                   scheduled_at=None, by, request=None, change=None):
    """Create a change (or edit a change not yet running) from the runbook's latest
    version. Parameters and strategy are checked; the selector's hosts are frozen now.
    Raises ``ValidationError`` with per-field messages."""
    require(can_operate(by))
    version = runbook.latest
    if version is None:
        raise ValidationError({"runbook": _("This runbook has no version yet.")})
    params = dict(params or {})
    if change is not None and change.secret_params:
        # An edit leaves secret fields empty (they are never sent back to the browser):
        # keep the stored values unless new ones are given.
        for name, value in secret_values(change).items():
            if params.get(name) in (None, ""):
                params[name] = value
    values, param_errors = runbooks.clean_params(version.parameters, params)
    clean_strategy, strategy_errors = runbooks.clean_strategy(strategy)
    errors = {f"param_{k}": [v] for k, v in param_errors.items()}
    errors.update({k: [v] for k, v in strategy_errors.items()})
    try:
        hosts = list(selectors.resolve(selector).select_related("environment")
                     .prefetch_related("services"))
    except selectors.SelectorError as exc:
        errors["selector"] = [str(exc)]
        hosts = []
    if not errors.get("selector") and not hosts:
        errors["selector"] = [_("No enabled host matches this selector.")]
    if not title.strip():
        errors["title"] = [_("Say in a few words what this change does.")]
    if scheduled_at is not None and scheduled_at <= timezone.now():
        errors["scheduled_at"] = [_("The schedule must be in the future.")]
    elif scheduled_at is not None and hosts and (
            problem := approvals.schedule_problem(_host_facts(hosts), scheduled_at)):
        # Inside the hosts' maintenance windows and outside their freezes (approvals).
        errors["scheduled_at"] = [problem]
    if errors:
        raise ValidationError(errors)
    secret_names = {p["name"] for p in version.parameters if p["secret"]}
    plain = {k: v for k, v in values.items() if k not in secret_names}
    secret = {k: v for k, v in values.items() if k in secret_names}
    with transaction.atomic():
        if change is None:
            change = Change(author=by)
        elif change.status not in {Change.Status.DRAFT, Change.Status.PENDING_APPROVAL,
                                   Change.Status.READY}:
            raise ChangeError(_("%(change)s is %(status)s and can no longer be edited.")
                              % {"change": change, "status": change.get_status_display()})
        change.title, change.description = title.strip(), description
        change.runbook_version = version
        change.params = plain
        change.secret_params = vault.encrypt(secret) if secret else ""
        change.selector, change.strategy = selector, clean_strategy
        change.scheduled_at = scheduled_at
        change.target_names = sorted(h.name for h in hosts)
        change.queue = queue_for(hosts)
        created = change.pk is None
        change.save()
        change.targets.set(hosts)
        audit.record("change.create" if created else "change.edit", by=by, obj=change,
                     request=request, detail={"hosts": len(hosts), "runbook": str(version)})
        if change.status in (Change.Status.PENDING_APPROVAL, Change.Status.READY):
            change = _resubmit(change, by=by, request=request)
    return change


def queue_for(hosts):
    """``runs.<site>`` when every target carries the same ``site`` label (a worker near
    those hosts consumes it), else ``runs``."""
    sites = {h.labels.get("site") for h in hosts}
    if len(sites) == 1 and None not in sites:
        return f"runs.{sites.pop()}"
    return "runs"


def secret_values(change):
    return vault.decrypt(change.secret_params) if change.secret_params else {}


# --- approvals: what is approved is exactly what runs ----------------------------------------

APPROVAL_SUBJECT = "changes.change"  # Change._meta.label_lower
RISK_ORDER = ("low", "medium", "high", "critical")  # cmdb Service tiers, approvals risks


def change_digest(change):
    """sha256 of the canonical JSON of what a run of ``change`` executes: the runbook
    version's digest, the parameter values, the frozen target names, the strategy and
    the schedule. An approval counts only for this digest, and the worker checks it
    again before it touches a host.

    Secret values enter as keyed hashes (HMAC-SHA256 under ``SECRET_KEY``), never in the
    clear: a plain sha256 of a short password, next to the other fields everyone can
    read, would let anyone who sees the digest guess the password offline."""
    secrets = {name: "hmac-sha256:" + salted_hmac("opsplane.changes.digest", str(value),
                                                  algorithm="sha256").hexdigest()
               for name, value in secret_values(change).items()}
    scheduled = change.scheduled_at
    content = {
        "runbook_version": change.runbook_version.digest,
        "params": {**change.params, **secrets},
        "targets": sorted(change.target_names),
        "strategy": change.strategy,
        "scheduled_at": scheduled.astimezone(UTC).isoformat() if scheduled else None,
    }
    canonical = json.dumps(content, sort_keys=True, separators=(",", ":"),
                           ensure_ascii=False, default=str)
    return hashlib.sha256(canonical.encode()).hexdigest()


def _host_facts(hosts):
    """Hosts (with ``environment`` and ``services`` loaded) as approvals matches them."""
    return [approvals.HostFacts(name=h.name, environment=h.environment.name,
                                labels=dict(h.labels),
                                services=tuple(sorted(s.name for s in h.services.all())))
            for h in hosts]


def approval_subject(change):
    """The change as the approvals app sees it: digest, the hosts' environments, labels
    and services, the runbook, the risk (the highest tier among the services it
    touches) and the summary approvers read (steps, parameters with secrets masked,
    hosts by environment and service)."""
    hosts = list(change.targets.select_related("environment").prefetch_related("services"))
    facts = _host_facts(hosts)
    version = change.runbook_version
    risk = max((s.tier for h in hosts for s in h.services.all() if s.tier in RISK_ORDER),
               key=RISK_ORDER.index, default="low")
    masked = {name: "********" for name in secret_values(change)}
    summary = {
        "runbook": version.runbook.name, "version": version.number, "steps": version.steps,
        "params": {**change.params, **masked}, "selector": change.selector,
        "strategy": change.strategy, "hosts": len(change.target_names),
        "by_environment": dict(sorted(Counter(h.environment for h in facts).items())),
        "by_service": dict(sorted(Counter(s for h in facts for s in h.services).items())),
        "scheduled_at": change.scheduled_at.isoformat() if change.scheduled_at else None,
    }
    return approvals.Subject(
        type=APPROVAL_SUBJECT, id=str(change.pk), title=str(change), digest=change_digest(change),
        author=change.author, link=reverse("changes:change", args=[change.pk]), hosts=facts,
        protected_environments=frozenset(h.environment.name for h in hosts
                                         if h.environment.protected),
        runbook=version.runbook.name, risk=risk, not_before=change.scheduled_at,
        summary=summary)


def approval_problem(change):
    """For the worker: "" when the change's current digest is the approved one."""
    return approvals.approved_digest_problem(APPROVAL_SUBJECT, change.pk, change_digest(change))


def _follow_request(change, approval, *, by, request=None):
    """Move the change to where its request puts it: ready when approval was automatic
    (no policy asked), awaiting approval otherwise. A human approval leaves it awaiting
    approval: ``start_run`` reads the request (approvals never calls back)."""
    target = Change.Status.READY if approval.automatic else Change.Status.PENDING_APPROVAL
    if change.status == target:
        return change
    detail = {"approval": approval.pk, "digest": approval.digest}
    if target not in states.CHANGE_TRANSITIONS[change.status]:
        change = states.transition(change, Change.Status.DRAFT, by=by, request=request,
                                   detail={**detail, "reason": "edited"})
    return states.transition(change, target, by=by, request=request, detail=detail)


def submit_change(change, *, by, request=None):
    """Ask for the change to run: opens its approval request with the change's digest.
    Ready at once when no policy asks for approval; otherwise it waits for the
    approvers (notified by approvals)."""
    require(can_operate(by))
    with transaction.atomic():
        locked = Change.objects.select_for_update().get(pk=change.pk)
        if locked.status != Change.Status.DRAFT:
            states.transition(locked, Change.Status.PENDING_APPROVAL, by=by,
                              request=request)  # refused, with the usual message
        approval = approvals.open_request(approval_subject(locked), by=by, request=request)
        _follow_request(locked, approval, by=by, request=request)
    change.refresh_from_db()  # callers keep using their object, as with a transition
    return change


def _resubmit(change, *, by, request=None):
    """An edit of a submitted change: a changed digest opens a new approval round, so
    earlier approvals stop counting and approvers are asked again. Call inside a
    transaction."""
    change = Change.objects.select_for_update().get(pk=change.pk)
    approval = approvals.open_request(approval_subject(change), by=by, request=request)
    return _follow_request(change, approval, by=by, request=request)


def cancel_change(change, *, by, request=None):
    """Withdraw a change that has not started; a running one is stopped through its run."""
    require(can_operate(by) or change.author_id == by.pk)
    with transaction.atomic():
        if change.status == Change.Status.RUNNING:
            run = change.runs.order_by("-number").first()
            request_cancel(run, by=by, request=request)
            return change
        change = states.transition(change, Change.Status.CANCELLED, by=by, request=request)
        # Approvers must not be left deciding a change nobody will run.
        approvals.withdraw_subject(APPROVAL_SUBJECT, change.pk, by=by, request=request,
                                   reason=_("the change was cancelled"))
        return change


# --- runs -------------------------------------------------------------------------------------


def start_run(change, *, by, request=None, hosts=None):
    """Start a run of ``change`` exactly once: the change's status moves to running in a
    conditional UPDATE, so a second click, a second request or a retried task fails
    with ``TransitionError`` instead of starting twice. ``hosts`` (names) limits the run,
    as a retry does; default: every frozen target.

    Only what was approved starts: the change's approval request must be approved for
    its current digest, and no freeze window may be open on its hosts (an emergency
    bypass aside); otherwise ``approvals.NotCleared`` says why."""
    require(can_operate(by))
    with transaction.atomic():
        change = Change.objects.select_for_update().get(pk=change.pk)
        if hosts is None and change.status not in (Change.Status.READY,
                                                   Change.Status.PENDING_APPROVAL):
            raise states.TransitionError(
                _("%(change)s is %(status)s: only a ready change starts (a finished one "
                  "can be retried).") % {"change": change,
                                          "status": change.get_status_display()})
        if change.scheduled_at and change.scheduled_at > timezone.now():
            raise ChangeError(_("%(change)s is scheduled for %(at)s.")
                              % {"change": change, "at": change.scheduled_at})
        approval = approvals.check_may_start(approval_subject(change))
        if change.status == Change.Status.PENDING_APPROVAL:
            change = states.transition(change, Change.Status.READY, by=by, request=request,
                                       detail={"approval": approval.pk})
        number = (change.runs.order_by("-number").values_list("number", flat=True).first()
                  or 0) + 1
        states.transition(change, Change.Status.RUNNING, by=by, request=request,
                          detail={"run": number})
        names = hosts if hosts is not None else change.target_names
        by_name = {h.name: h for h in change.targets.all()}
        run = Run.objects.create(change=change, number=number, started_by=by,
                                 check_mode=change.check_mode)
        HostResult.objects.bulk_create([
            HostResult(run=run, host=by_name.get(name), host_name=name) for name in names
        ])
        audit.record("run.queued", by=by, obj=run, request=request,
                     detail={"hosts": len(names)})
        approvals.record_start(approval, by=by, request=request)
        transaction.on_commit(lambda: _enqueue(run))
    return run


def _enqueue(run):
    from changes import tasks

    tasks.execute_run.apply_async((run.pk,), queue=run.change.queue)


def retry_run(run, *, by, request=None):
    """A new run of the same change on the hosts that did not finish ok."""
    require(can_operate(by))
    if not run.is_terminal:
        raise ChangeError(_("%(run)s is still going.") % {"run": run})
    names = list(run.results.filter(state__in=HostResult.RETRYABLE)
                 .values_list("host_name", flat=True))
    if not names:
        raise ChangeError(_("Every host of %(run)s finished; there is nothing to retry.")
                          % {"run": run})
    return start_run(run.change, by=by, request=request, hosts=names)


def request_cancel(run, *, by, request=None):
    """Ask the worker to stop: no new host starts and running sessions are closed. A
    queued run that no worker has taken yet is cancelled here and now."""
    require(can_operate(by) or run.change.author_id == by.pk)
    with transaction.atomic():
        run = Run.objects.select_for_update().get(pk=run.pk)
        if run.is_terminal:
            raise ChangeError(_("%(run)s has already finished.") % {"run": run})
        if run.cancel_requested_at is None:
            Run.objects.filter(pk=run.pk).update(cancel_requested_at=timezone.now(),
                                                 cancelled_by=by)
            audit.record("run.cancel_requested", by=by, obj=run, request=request)
        if run.status == Run.Status.QUEUED:
            finish_run(run, Run.Status.CANCELLED, by=by)
    run.refresh_from_db()
    return run


# --- worker side (called by changes.executor) ---------------------------------------------


def claim_run(run_id, worker):
    """Move a queued run to running for this worker; None when another delivery of the
    task already did (or the run was cancelled before it started)."""
    with transaction.atomic():
        run = Run.objects.select_for_update().filter(pk=run_id).first()
        if run is None or run.status != Run.Status.QUEUED:
            return None
        now = timezone.now()
        return states.transition(run, Run.Status.RUNNING, source=worker, started_at=now,
                                 heartbeat_at=now, worker=worker[:200])


def finish_run(run, status, *, by=None, aborted_reason="", source=""):
    """Close a run and its change, marking hosts that never finished ``unknown`` (or
    ``cancelled`` when the run was cancelled). Call inside a transaction."""
    leftover = (HostResult.State.CANCELLED if status == Run.Status.CANCELLED
                else HostResult.State.UNKNOWN)
    run.results.exclude(state__in=HostResult.DONE).update(
        state=leftover, finished_at=timezone.now())
    states.transition(run, status, by=by, source=source,
                      aborted_reason=aborted_reason[:200])
    change_status = {
        Run.Status.SUCCEEDED: Change.Status.SUCCEEDED,
        Run.Status.FAILED: Change.Status.FAILED,
        Run.Status.CANCELLED: Change.Status.CANCELLED,
        Run.Status.INTERRUPTED: Change.Status.INTERRUPTED,
    }[status]
    change = Change.objects.select_for_update().get(pk=run.change_id)
    if change.status == Change.Status.RUNNING:
        states.transition(change, change_status, by=by, source=source,
                          detail={"run": run.number})
    return run


def reap_stale_runs(now=None):
    """Beat: runs whose worker stopped beating become ``interrupted``, their unfinished
    hosts ``unknown``. Nothing is re-run: a command may have half-happened."""
    now = now or timezone.now()
    reaped = []
    stale = Run.objects.filter(status=Run.Status.RUNNING, heartbeat_at__lt=now - STALE_AFTER)
    for run_id in stale.values_list("id", flat=True):
        with transaction.atomic():
            run = Run.objects.select_for_update().get(pk=run_id)
            if run.status == Run.Status.RUNNING and run.heartbeat_at < now - STALE_AFTER:
                finish_run(run, Run.Status.INTERRUPTED, source="reaper",
                           aborted_reason="the worker stopped sending heartbeats")
                reaped.append(run)
    return reaped


def start_due_changes(now=None):
    """Beat: start scheduled changes whose time has come, exactly once (``start_run``'s
    conditional transition). A change that may not start (not approved, expired, a
    freeze, its maintenance window over) is marked missed with the reason, on its
    approval request and in its history, and goes back to draft: beat does not retry it,
    its author picks a new time."""
    now = now or timezone.now()
    started = []
    due = Change.objects.filter(status__in=[Change.Status.READY,
                                            Change.Status.PENDING_APPROVAL],
                                scheduled_at__lte=now)
    for change in due:
        try:
            started.append(start_run(change, by=change.author))
        except approvals.NotCleared as exc:
            _mark_missed(change, str(exc))
        except (DomainError, PermissionDenied):
            continue  # someone else started or withdrew it meanwhile, or author lost role
    return started


def _mark_missed(change, reason):
    with transaction.atomic():
        change = Change.objects.select_for_update().get(pk=change.pk)
        if change.status not in (Change.Status.READY, Change.Status.PENDING_APPROVAL):
            return  # started or cancelled meanwhile
        approvals.mark_missed(APPROVAL_SUBJECT, change.pk, reason=reason)
        states.transition(change, Change.Status.DRAFT, source="beat",
                          detail={"missed": reason[:500]})
