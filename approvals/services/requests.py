"""Approval requests and decisions: opening rounds bound to a digest, counting
approvals, rejections, withdrawal, emergencies, expiry, and the checks an owner makes
before it starts its subject. Every write locks the request row first."""

from datetime import timedelta

from django.contrib.auth import get_user_model
from django.core.exceptions import PermissionDenied, ValidationError
from django.db import IntegrityError, transaction
from django.db.models import Q
from django.utils import timezone
from django.utils.translation import gettext as _

from approvals import matching, metrics, notifications
from approvals.matching import Subject, hosts_from_facts
from approvals.models import (
    DEFAULT_VALIDITY_HOURS,
    EMERGENCY_GROUP,
    TRANSITIONS,
    ApprovalRequest,
    Decision,
)
from approvals.services.access import (
    ApprovalError,
    Frozen,
    NotCleared,
    can_view,
    eligible_groups,
    groups_in,
    in_group,
    is_emergency_approver,
    require,
)
from approvals.services.policies import requirements_for
from approvals.services.schedule import active_freezes, freeze_message, maintenance_problem
from opsplane import audit
from opsplane.roles import Role, has_role

S = ApprovalRequest.Status
K = Decision.Kind


def _transition(req, to, *, by=None, request=None, source="", detail=None, **fields):
    """Move ``req`` to ``to`` with ``UPDATE ... WHERE status=<from> AND round=<round>``;
    zero rows means someone else moved it first. Call inside ``transaction.atomic()``."""
    current = req.status
    if to not in TRANSITIONS[current]:
        raise ApprovalError(_("This request is %(status)s; it cannot become %(to)s.") % {
            "status": req.get_status_display(), "to": S(to).label})
    now = timezone.now()
    fields.setdefault("decided_at", None if to == S.PENDING else now)
    updated = ApprovalRequest.objects.filter(pk=req.pk, status=current, round=req.round) \
        .update(status=to, updated_at=now, **fields)
    if not updated:
        req.refresh_from_db()
        raise ApprovalError(_("This request changed meanwhile: it is now %(status)s.") % {
            "status": req.get_status_display()})
    audit.record(f"approval.{to}", by=by, obj=req, request=request, source=source,
                 detail={"from": current, "round": fields.get("round", req.round),
                         **(detail or {})})
    req.refresh_from_db()
    return req


def _expiry(snapshot, not_before, now):
    hours = min((s["validity_hours"] for s in snapshot), default=DEFAULT_VALIDITY_HOURS)
    start = max(now, not_before) if not_before else now
    return start + timedelta(hours=hours)


def open_request(subject, *, by, request=None):
    """Open the subject's request, or a new round of it when the content changed (or the
    last round ended): earlier decisions stay in the history and no longer count.
    Re-submitting the same content while a round is open only refreshes what approvers
    see. Approved at once (``automatic``) when no policy asks for anyone.
    Call inside the owner's transaction; returns the request."""
    now = timezone.now()
    snapshot = requirements_for(subject)
    automatic = not snapshot
    common = {
        "title": subject.title[:300], "link": subject.link[:500], "facts": subject.facts(),
        "summary": subject.summary, "environments": subject.environments,
        "not_before": subject.not_before,
        "author": subject.author, "author_name": subject.author.get_username()[:150],
    }
    new_round = {
        "digest": subject.digest, "automatic": automatic, "requirements": snapshot,
        "opened_at": now, "started_at": None, "close_reason": "",
        "expires_at": _expiry(snapshot, subject.not_before, now),
    }
    status = S.APPROVED if automatic else S.PENDING
    with transaction.atomic():
        req = ApprovalRequest.objects.select_for_update().filter(
            subject_type=subject.type, subject_id=str(subject.id)).first()
        if req is None:
            req = ApprovalRequest.objects.create(
                subject_type=subject.type, subject_id=str(subject.id), status=status,
                decided_at=now if automatic else None, **common, **new_round)
            audit.record("approval.open", by=by, obj=req, request=request, detail={
                "digest": subject.digest, "status": status,
                "policies": [s["policy"] or "default" for s in snapshot]})
            again = False
        elif req.digest == subject.digest and req.is_open and req.started_at is None:
            ApprovalRequest.objects.filter(pk=req.pk).update(updated_at=now, **common)
            req.refresh_from_db()
            return req
        else:
            again = req.digest != subject.digest and req.decisions.filter(
                round=req.round, kind=K.APPROVE).exists()
            req = _transition(req, status, by=by, request=request, detail={
                "digest": subject.digest, "previous_digest": req.digest,
                "policies": [s["policy"] or "default" for s in snapshot]},
                round=req.round + 1, **common, **new_round)
        if req.status == S.PENDING:
            notifications.approvers_needed(req, _approver_ids(req), again=again)
    return req


def resubmit(req, *, by, request=None):
    """Ask again for the same content after a rejection, expiry or withdrawal (the
    author or an admin): a new round, with today's policies."""
    require(_owns(by, req))
    if req.status == S.MISSED:
        raise ApprovalError(_("It missed its scheduled start: edit it to choose a new time."))
    if req.is_open:
        raise ApprovalError(_("This request is still %(status)s.") % {
            "status": req.get_status_display()})
    facts = req.facts
    subject = Subject(
        type=req.subject_type, id=req.subject_id, title=req.title, link=req.link,
        digest=req.digest, author=req.author or by, hosts=hosts_from_facts(facts),
        protected_environments=frozenset(facts.get("protected_environments", [])),
        runbook=facts.get("runbook", ""), risk=facts.get("risk", "low"),
        not_before=req.not_before, summary=req.summary)
    with transaction.atomic():
        return open_request(subject, by=by, request=request)


def _decisions_of_round(req):
    return [d for d in req.decisions.all() if d.round == req.round]


def progress(req, decisions=None):
    """Per requirement set: who counts for what, and whether it is met.

    [{"policy", "met", "requirements": [{"group", "count", "by": [names]}]}]. An
    approval counts once per set; a person who rejected in this round counts for none;
    the author counts only where the set allows it."""
    decisions = _decisions_of_round(req) if decisions is None else decisions
    rejecters = {d.by_id for d in decisions if d.kind == K.REJECT}
    approvals = {d.by_id: d for d in decisions if d.kind == K.APPROVE
                 and d.by_id not in rejecters}
    result = []
    for entry in req.requirements:
        slots = [r["group"] for r in entry["requirements"] for _ in range(r["count"])]
        eligible = {uid: set(d.groups) for uid, d in approvals.items()
                    if entry["allow_author"] or uid != req.author_id}
        owner = matching.assign(slots, eligible)
        rows, index = [], 0
        for r in entry["requirements"]:
            names = [approvals[owner[i]].by_name for i in range(index, index + r["count"])
                     if i in owner]
            rows.append({"group": r["group"], "count": r["count"], "by": names})
            index += r["count"]
        result.append({"policy": entry["policy"], "environments": entry.get("environments", []),
                       "met": len(owner) == len(slots), "requirements": rows})
    return result


def is_met(req, decisions=None):
    return bool(req.requirements) and all(p["met"] for p in progress(req, decisions))


def decision_refusal(user, req, decisions=None, *, kind=K.APPROVE):
    """Why ``user`` cannot give verdict ``kind`` (approve or reject) on ``req`` now (""
    when they can). One approval and one rejection per person and round: someone who
    approved may still reject (they noticed something), not the other way round."""
    if req.status != S.PENDING:
        return _("This request is %(status)s.") % {"status": req.get_status_display()}
    if not eligible_groups(user, req):
        if req.author_id == user.pk and any(
                in_group(user, g) for g in groups_in(req.requirements)):
            return _("You wrote this; someone else must approve it.")
        return _("Approval must come from: %(groups)s.") % {
            "groups": ", ".join(groups_in(req.requirements))}
    decisions = _decisions_of_round(req) if decisions is None else decisions
    mine = {d.kind for d in decisions if d.by_id == user.pk}
    if K.REJECT in mine or (kind == K.APPROVE and K.APPROVE in mine):
        return _("You already decided on this version.")
    return ""


def _approver_ids(req):
    """Users to ask: explicit members of a requirement group (admins and superusers may
    decide but are not mailed every request), minus the author where the policies keep
    the author out, minus those who already decided this round."""
    ids = set()
    for entry in req.requirements:
        users = get_user_model().objects.filter(
            is_active=True, groups__name__in=[r["group"] for r in entry["requirements"]])
        if not entry["allow_author"] and req.author_id:
            users = users.exclude(pk=req.author_id)
        ids |= set(users.values_list("pk", flat=True))
    decided = set(req.decisions.filter(round=req.round, kind__in=Decision.VERDICTS)
                  .values_list("by_id", flat=True))
    return ids - decided


def decide(req, *, by, kind, comment="", request=None):
    """Approve, reject, ask for changes or comment on the current round of ``req``.

    A rejection and a request for changes need a reason; asking for changes takes the
    same standing as approving (a required group) and leaves the request pending.
    Approving is refused while a freeze window is open on the subject's hosts at its
    planned start. Locks the request, so concurrent decisions are counted one after the
    other; a second identical verdict by the same person is refused (and the database's
    unique constraint backs that)."""
    comment = (comment or "").strip()
    if kind not in (K.APPROVE, K.REJECT, K.REQUEST_CHANGES, K.COMMENT):
        raise ValidationError({"kind": _("Unknown decision.")})
    if kind != K.APPROVE and not comment:
        raise ValidationError({"comment": _("Say why: the author needs to know.")
                               if kind != K.COMMENT else _("Write a comment.")})
    with transaction.atomic():
        req = ApprovalRequest.objects.select_for_update().get(pk=req.pk)
        if kind == K.COMMENT:
            require(can_view(by, req))
            groups = []
        else:
            verdict = K.REJECT if kind == K.REJECT else K.APPROVE
            refusal = decision_refusal(by, req, kind=verdict)
            if refusal:
                if req.status == S.PENDING and not eligible_groups(by, req):
                    raise PermissionDenied(refusal)
                raise ApprovalError(refusal)
            groups = sorted(eligible_groups(by, req))
        if kind == K.APPROVE:
            now = timezone.now()
            at = max(now, req.not_before) if req.not_before else now
            frozen = active_freezes(hosts_from_facts(req.facts), at)
            if frozen:
                metrics.freeze_refusals.labels(stage="approve").inc()
                raise Frozen(freeze_message(frozen))
        try:
            with transaction.atomic():
                decision = Decision.objects.create(
                    request=req, round=req.round, digest=req.digest, kind=kind, by=by,
                    by_name=by.get_username()[:150], groups=groups, comment=comment)
        except IntegrityError:
            raise ApprovalError(_("You already decided on this version.")) from None
        audit.record(f"approval.decision.{kind}", by=by, obj=req, request=request,
                     detail={"round": req.round, "digest": req.digest,
                             "comment": comment[:500]})
        if kind == K.REJECT and _rejection_ends(req, by):
            req = _transition(req, S.REJECTED, by=by, request=request, close_reason=comment)
            metrics.decision_seconds.labels(outcome="rejected").observe(
                (req.decided_at - req.opened_at).total_seconds())
        elif kind == K.APPROVE and is_met(req):
            req = _transition(req, S.APPROVED, by=by, request=request)
            metrics.decision_seconds.labels(outcome="approved").observe(
                (req.decided_at - req.opened_at).total_seconds())
        notifications.decided(req, decision)
    return decision


def _rejection_ends(req, user):
    return any(entry["rejection_ends"] and (entry["allow_author"] or req.author_id != user.pk)
               and any(in_group(user, r["group"]) for r in entry["requirements"])
               for entry in req.requirements)


def withdraw(req, *, by, reason="", request=None):
    """The author (or an admin) takes back a request that has not started."""
    require(_owns(by, req))
    with transaction.atomic():
        req = ApprovalRequest.objects.select_for_update().get(pk=req.pk)
        if not req.is_open or req.started_at is not None:
            raise ApprovalError(_("Only a request that is open and not started can be "
                                  "withdrawn; this one is %(status)s.") % {
                "status": req.get_status_display()})
        req = _transition(req, S.WITHDRAWN, by=by, request=request,
                          close_reason=reason.strip() or _("withdrawn"))
        notifications.closed(req, "withdrawn", comment=reason.strip(), by=by)
        return req


def withdraw_subject(subject_type, subject_id, *, by, reason, request=None):
    """The owner cancelled the subject: its open request, if any, is withdrawn. The
    caller has checked permissions. Call inside the owner's transaction."""
    req = ApprovalRequest.objects.select_for_update().filter(
        subject_type=subject_type, subject_id=str(subject_id)).first()
    if req is not None and req.is_open and req.started_at is None:
        req = _transition(req, S.WITHDRAWN, by=by, request=request, close_reason=reason)
        notifications.closed(req, "withdrawn", comment=reason, by=by)


def emergency_bypass(req, *, by, reason, request=None):
    """An emergency: approve this round now, freeze windows notwithstanding. Only for
    members of the ``emergency_approver`` group, only with a reason; flagged for review
    after the incident. Bound to the current digest like any approval."""
    require(is_emergency_approver(by),
             _("Only members of the %(group)s group may bypass approval in an emergency.")
             % {"group": EMERGENCY_GROUP})
    reason = (reason or "").strip()
    if not reason:
        raise ValidationError({"reason": _("State the emergency: it is reviewed afterwards.")})
    with transaction.atomic():
        req = ApprovalRequest.objects.select_for_update().get(pk=req.pk)
        if not req.is_open:
            raise ApprovalError(_("This request is %(status)s: submit it again first.") % {
                "status": req.get_status_display()})
        if has_emergency(req):
            raise ApprovalError(_("This version already has an emergency bypass."))
        decision = Decision.objects.create(
            request=req, round=req.round, digest=req.digest, kind=K.EMERGENCY, by=by,
            by_name=by.get_username()[:150], groups=[EMERGENCY_GROUP], comment=reason)
        audit.record("approval.emergency", by=by, obj=req, request=request,
                     detail={"round": req.round, "digest": req.digest, "reason": reason[:500]})
        if req.status == S.PENDING:
            req = _transition(req, S.APPROVED, by=by, request=request,
                              detail={"emergency": True})
        transaction.on_commit(metrics.emergency_bypasses.inc)
        notifications.decided(req, decision)
    return decision


def _owns(user, req):
    """The author (or an admin) withdraws and resubmits a request."""
    return req.author_id == user.pk or has_role(user, Role.ADMIN)


def can_withdraw(user, req):
    """Whether ``withdraw`` would accept ``user`` on ``req`` as it stands (for pages)."""
    return _owns(user, req) and req.is_open and req.started_at is None


def can_resubmit(user, req):
    """Whether ``resubmit`` would accept ``user`` on ``req`` as it stands (for pages)."""
    return _owns(user, req) and not req.is_open and req.status != S.MISSED


def can_emergency(user, req, decisions=None):
    """Whether ``emergency_bypass`` would accept ``user`` on ``req`` (a reason aside)."""
    return is_emergency_approver(user) and req.is_open and not has_emergency(req, decisions)


def has_emergency(req, decisions=None):
    decisions = _decisions_of_round(req) if decisions is None else decisions
    return any(d.kind == K.EMERGENCY and d.digest == req.digest for d in decisions)


def review_list():
    """Emergency bypasses not reviewed yet, oldest first."""
    return (Decision.objects.filter(kind=K.EMERGENCY, reviewed_at__isnull=True)
            .select_related("request").order_by("created_at"))


def review_bypass(decision, *, by, note="", request=None):
    """Close the post-incident review of an emergency bypass (an approver or admin who
    did not make the bypass)."""
    require(has_role(by, Role.APPROVER))
    if decision.by_id == by.pk:
        raise PermissionDenied(_("Someone other than the emergency approver reviews it."))
    if decision.kind != K.EMERGENCY:
        raise ApprovalError(_("Only emergency bypasses are reviewed."))
    note = (note or "").strip()
    with transaction.atomic():
        updated = Decision.objects.filter(pk=decision.pk, reviewed_at__isnull=True).update(
            reviewed_at=timezone.now(), reviewed_by=by, review_note=note)
        if not updated:
            raise ApprovalError(_("This bypass was already reviewed."))
        audit.record("approval.emergency_reviewed", by=by, obj=decision.request,
                     request=request, detail={"decision": decision.pk, "note": note[:500]})
    decision.refresh_from_db()
    return decision


def expire_due(now=None):
    """Beat: requests past their validity (pending, or approved but never started)
    become expired. Automatic approvals do not expire. Returns the expired requests."""
    now = now or timezone.now()
    due = ApprovalRequest.objects.filter(
        Q(status=S.PENDING) | Q(status=S.APPROVED, started_at__isnull=True),
        automatic=False, expires_at__lte=now)
    expired = []
    for pk in due.values_list("pk", flat=True):
        with transaction.atomic():
            req = ApprovalRequest.objects.select_for_update().get(pk=pk)
            if req.is_open and req.started_at is None and not req.automatic \
                    and req.expires_at <= now:
                req = _transition(req, S.EXPIRED, source="beat", close_reason=_(
                    "not started within its validity"))
                notifications.closed(req, "expired")
                expired.append(req)
    return expired


def mark_missed(subject_type, subject_id, *, reason):
    """The scheduled start could not happen (beat): the open request becomes missed.
    Call inside the owner's transaction."""
    req = ApprovalRequest.objects.select_for_update().filter(
        subject_type=subject_type, subject_id=str(subject_id)).first()
    if req is None or not req.is_open:
        return req
    req = _transition(req, S.MISSED, source="beat", close_reason=reason)
    notifications.closed(req, "missed", comment=reason)
    return req


def request_for(subject_type, subject_id):
    return ApprovalRequest.objects.filter(subject_type=subject_type,
                                          subject_id=str(subject_id)).first()


def requests_for(subject_type, subject_ids):
    """{subject id (str): request} for many subjects at once (one query, decisions
    prefetched for ``standing``): for owners' list pages."""
    found = ApprovalRequest.objects.filter(
        subject_type=subject_type, subject_id__in=[str(i) for i in subject_ids],
    ).prefetch_related("decisions")
    return {req.subject_id: req for req in found}


def standing(req, now=None):
    """Where ``req`` stands, for the subject's owner to show: ``{"status", "got",
    "needed"}``. ``status`` is the request's, except that an approval past its validity
    reads ``expired`` before beat gets to it; ``got`` of ``needed`` approvals count
    (this round)."""
    now = now or timezone.now()
    status = req.status
    if status == S.APPROVED and req.started_at is None and not req.automatic \
            and req.expires_at <= now:
        status = S.EXPIRED
    rows = [r for entry in progress(req) for r in entry["requirements"]]
    return {"status": status, "got": sum(len(r["by"]) for r in rows),
            "needed": sum(r["count"] for r in rows)}


def check_may_start(subject, *, at=None):
    """Raise ``NotCleared`` saying why ``subject`` may not start at ``at`` (default now),
    or return its request: approved for exactly ``subject.digest``, not expired, no
    freeze window open on its (current) hosts, and, for a scheduled start, inside a
    maintenance window of those hosts. An emergency bypass of this digest lifts the
    window checks. Call inside the owner's transaction (the request row is locked)."""
    at = at or timezone.now()
    req = ApprovalRequest.objects.select_for_update().filter(
        subject_type=subject.type, subject_id=str(subject.id)).first()
    if req is None:
        raise NotCleared(_("It was never submitted for approval."))
    if req.digest != subject.digest:
        raise NotCleared(_("What would run now is not what was submitted for approval "
                           "(digest %(now)s, submitted %(then)s): submit it again.") % {
            "now": subject.digest[:12], "then": req.digest[:12]})
    if req.status == S.PENDING:
        raise NotCleared(_("It awaits approval: %(progress)s.") % {
            "progress": progress_text(req)})
    if req.status != S.APPROVED:
        reason = f" ({req.close_reason})" if req.close_reason else ""
        raise NotCleared(_("Its approval request is %(status)s%(reason)s.") % {
            "status": req.get_status_display(), "reason": reason})
    if req.started_at is None and not req.automatic and req.expires_at <= at:
        raise NotCleared(_("Its approval expired at %(at)s: submit it again.") % {
            "at": timezone.localtime(req.expires_at).strftime("%Y-%m-%d %H:%M %Z")})
    if has_emergency(req):
        return req
    frozen = active_freezes(subject.hosts, at)
    if frozen:
        metrics.freeze_refusals.labels(stage="start").inc()
        raise Frozen(freeze_message(frozen))
    if req.not_before is not None and req.started_at is None:
        problem = maintenance_problem(subject.hosts, at)
        if problem:
            raise NotCleared(problem)
    return req


def record_start(req, *, by=None, request=None):
    """The owner started the subject (first time only; a retry changes nothing)."""
    if req.started_at is None:
        ApprovalRequest.objects.filter(pk=req.pk, started_at__isnull=True).update(
            started_at=timezone.now())
        audit.record("approval.used", by=by, obj=req, request=request,
                     detail={"digest": req.digest, "round": req.round})


def approved_digest_problem(subject_type, subject_id, digest):
    """For the executor: "" when ``digest`` is the approved content of the subject's
    request, else the reason (for the run's record)."""
    req = request_for(subject_type, subject_id)
    if req is None:
        return "no approval request"
    if req.status != S.APPROVED:
        return f"approval request is {req.status}"
    if req.digest != digest:
        return f"digest {digest[:12]} was not approved (approved: {req.digest[:12]})"
    return ""


def progress_text(req):
    parts = []
    for entry in progress(req):
        for r in entry["requirements"]:
            parts.append(f"{len(r['by'])} of {r['count']} from {r['group']}")
    return ", ".join(parts) or _("nobody asked")


def timeline(req):
    """The request's history, oldest first: audit events of the request and decisions,
    with decisions on earlier digests marked (``earlier_version``)."""
    from opsplane.models import AuditEvent

    items = []
    for d in req.decisions.select_related("reviewed_by"):
        items.append({"at": d.created_at, "decision": d, "kind": d.kind,
                      "earlier_version": d.digest != req.digest,
                      "earlier_round": d.round != req.round})
    events = AuditEvent.objects.filter(object_type=req._meta.label_lower,
                                       object_id=str(req.pk)) \
        .exclude(action__startswith="approval.decision.") \
        .exclude(action="approval.emergency").order_by("at", "id")
    for e in events:
        items.append({"at": e.at, "event": e, "kind": e.action.split(".", 1)[1]})
    return sorted(items, key=lambda i: i["at"])


def inbox(user):
    """Requests ``user`` may decide now, oldest first."""
    pending = ApprovalRequest.objects.filter(status=S.PENDING).order_by("opened_at", "id") \
        .prefetch_related("decisions")
    found = []
    for req in pending:
        decisions = _decisions_of_round(req)
        if not decision_refusal(user, req, decisions):
            found.append(req)
    return found
