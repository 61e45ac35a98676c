"""Every write of the notification layer: channels, the outbox, delivery, digests.

The public API other apps call:

- ``enqueue(channel, message, *, key, ref="")`` -> ``Notification``: inside the caller's
  transaction; idempotent by ``key``; delivery is queued when that transaction commits.
- ``Message`` (``opsplane.notify.message``): what to say.
- ``send_test(channel, *, by)``, ``retry(notification, *, by)``: people's buttons.

Delivery, in order (``deliver``):
1. Claim: ``UPDATE ... SET state='sending' WHERE id=? AND state IN ('pending','failed')
   AND next_attempt_at <= now``. Zero rows: a redelivered or duplicate task; it exits.
2. Budget: the channel's rate windows in Redis (``budget.py``). While the channel has
   rows held back, a new row joins them; when the budget is spent, the row is held.
   Held rows are folded into ONE digest notification per channel when the budget
   returns (``flush``): the held rows become ``folded`` and point at the digest row,
   which is delivered (and retried) like any other. Nothing is dropped.
3. Send outside any transaction; record an ``Attempt`` with the HTTP status and the
   provider's own code; then ``sent``, or ``failed`` with exponential backoff and jitter
   (``next_attempt_at``, a countdown task), or ``dead`` after the last attempt.

A beat task (``sweep``) re-queues rows whose task never came (broker down at commit,
a lost countdown, a worker killed mid-send): the claim makes that harmless. A send
that happened just before a worker died may be repeated once after the lease: the
only duplicate possible, and webhook receivers get ``X-Opsplane-Idempotency-Key``.
"""

import contextlib
import functools
import json
import logging
import random
import time
import uuid
from datetime import timedelta
from urllib.parse import urlsplit

import redis
from django.conf import settings
from django.core.exceptions import PermissionDenied, ValidationError
from django.core.validators import validate_email
from django.db import IntegrityError, transaction
from django.db.models import F
from django.utils import timezone
from django.utils.translation import gettext as _
from django.utils.translation import ngettext

from opsplane import audit, secrets
from opsplane.errors import DomainError
from opsplane.notify import budget, render, senders
from opsplane.notify import metrics as notify_metrics
from opsplane.notify.message import SEVERITY_RANK, Message
from opsplane.notify.models import Attempt, Channel, Notification, parse_budget
from opsplane.roles import Role, has_role

logger = logging.getLogger(__name__)

S = Notification.State
K = Channel.Kind

TRANSITIONS = {
    S.PENDING: {S.SENDING, S.DEAD},
    S.FAILED: {S.SENDING, S.DEAD},
    S.SENDING: {S.SENT, S.FAILED, S.PENDING, S.HELD, S.DEAD},
    S.HELD: {S.SENDING, S.FOLDED, S.DEAD},
    S.DEAD: {S.PENDING},  # an admin's "retry"
    S.SENT: set(),
    S.FOLDED: set(),
}

# Rows folded into one digest at most (a bigger storm makes a digest per this many).
DIGEST_MAX_ROWS = 5000
# Lines a digest lists before "... and N more".
DIGEST_LINES = 20
FLUSH_LOCK = "opsplane:notify:flush:"
SWEEP_BATCH = 1000


class NotifyError(DomainError):
    """A notification rule refused the request."""


class IdempotencyConflict(NotifyError):
    """The key is already used by a notification to another channel."""


# --- permissions -----------------------------------------------------------------------------


def can_manage(user):
    """Create, edit, test channels; retry notifications: admins."""
    return has_role(user, Role.ADMIN)


def can_view(user):
    """See channels (without secrets) and the outbox: admins, on-call staff and operators
    (who route alerts to channels)."""
    return has_role(user, Role.ADMIN, Role.ONCALL, Role.OPERATOR)


# --- the outbox: enqueue ---------------------------------------------------------------------


def enqueue(channel, message, *, key, ref=""):
    """Put ``message`` for ``channel`` into the outbox; returns the ``Notification``.

    Call inside your own ``transaction.atomic()`` with the rows the notification is
    about: it is committed with them or not at all, and its delivery is queued only on
    commit. ``key`` (up to 255 characters) makes it idempotent: enqueueing a key that
    exists returns that row and sends nothing again, so build it from what identifies
    this message, e.g. ``f"alerts:{receiver.pk}:{group.pk}:{round}:{channel.pk}"``.
    A key already used for another channel raises ``IdempotencyConflict``.
    A disabled channel's row is recorded as ``dead`` ("channel disabled").
    """
    if not isinstance(message, Message):
        raise TypeError("enqueue() takes an opsplane.notify.message.Message")
    if not key or len(key) > 255:
        raise ValueError("the idempotency key must be 1-255 characters")
    fields = {"channel": channel, "idempotency_key": key, "ref": ref[:100],
              "payload": message.as_dict(), "next_attempt_at": timezone.now()}
    if not channel.enabled:
        fields.update(state=S.DEAD, last_error="channel disabled")
    try:
        with transaction.atomic():  # a savepoint: a duplicate key leaves the caller's
            row = Notification.objects.create(**fields)  # transaction usable
    except IntegrityError:
        row = Notification.objects.filter(idempotency_key=key).first()
        if row is None:  # not the key after all
            raise
        if row.channel_id != channel.pk:
            raise IdempotencyConflict(
                f"idempotency key {key!r} is already used for channel {row.channel_id}"
            ) from None
        return row
    if row.state == S.PENDING:
        transaction.on_commit(functools.partial(_queue_delivery, row.pk), robust=True)
    return row


def _queue_delivery(notification_id, countdown=None):
    """Hand a row to Celery. A broker outage is logged, not raised: the row is committed
    and beat's sweep will queue it again."""
    from opsplane.notify import tasks

    try:
        tasks.deliver.apply_async((notification_id,), countdown=countdown)
    except Exception:  # noqa: BLE001 - kombu raises many kinds when the broker is away
        logger.warning("notification %s: could not queue its delivery; the sweep will",
                       notification_id, exc_info=True)


# --- delivery --------------------------------------------------------------------------------


def deliver(notification_id):
    """Deliver one outbox row (the ``notify.deliver`` task). Returns the row, or None when
    it was not due or someone else has it."""
    row = _claim(notification_id)
    if row is None:
        return None
    channel = row.channel
    if not channel.enabled:
        _finish(row, S.DEAD, last_error="channel disabled")
        return row
    if not row.is_digest and _has_held(channel, row):
        # The channel is in a storm: join the rows waiting for the digest, then see
        # whether the budget lets the digest (with this row in it) go now.
        _hold(row, 0)
        wait = flush(channel.pk)
        if wait:
            Notification.objects.filter(pk=row.pk, state=S.HELD).update(
                next_attempt_at=timezone.now() + timedelta(seconds=wait))
        return row
    try:
        granted, wait, _member = budget.take(channel.pk, channel.budget())
    except redis.RedisError:
        logger.warning("channel %s: rate budget unavailable; retrying later", channel.pk,
                       exc_info=True)
        _finish(row, S.FAILED, next_attempt_at=timezone.now() + timedelta(seconds=30),
                last_error="rate budget unavailable (Redis)")
        transaction.on_commit(functools.partial(_queue_delivery, row.pk, 30), robust=True)
        return row
    if not granted:
        if row.is_digest:  # a digest waits for the budget; it is never folded again
            _finish(row, S.PENDING, next_attempt_at=timezone.now() + timedelta(seconds=wait))
            _queue_delivery(row.pk, wait)
        else:
            _hold(row, wait)
            schedule_flush(channel.pk, wait)
        return row
    return _send_claimed(row, channel)


def _claim(notification_id):
    """pending/failed -> sending when due; the claimed row, or None. ``claimed_at`` is the
    claim's fence: only the holder of this claim may finish the row."""
    now = timezone.now()
    # A countdown task may fire a moment before next_attempt_at on another clock.
    updated = Notification.objects.filter(
        pk=notification_id, state__in=Notification.WAITING,
        next_attempt_at__lte=now + timedelta(seconds=1),
    ).update(state=S.SENDING, claimed_at=now)
    if not updated:
        return None
    return Notification.objects.select_related("channel").get(pk=notification_id)


def _transition(row, to, **fields):
    """Move a claimed row on: conditional on its state and its claim. False when the
    claim was taken over (the sweep reset it after the lease ran out)."""
    assert to in TRANSITIONS[row.state], f"{row.state} -> {to}"
    updated = Notification.objects.filter(
        pk=row.pk, state=row.state, claimed_at=row.claimed_at,
    ).update(state=to, **fields)
    if updated:
        row.state = to
        for name, value in fields.items():
            if not hasattr(value, "resolve_expression"):
                setattr(row, name, value)
    return bool(updated)


def _finish(row, to, **fields):
    fields.setdefault("claimed_at", None)
    if to == S.DEAD:
        notify_metrics.dead.labels(row.channel.kind).inc()
    return _transition(row, to, **fields)


def _has_held(channel, row):
    return Notification.objects.filter(channel=channel, state=S.HELD).exclude(pk=row.pk).exists()


def _hold(row, wait):
    """sending -> held: this row waits for the channel's next digest."""
    _transition(row, S.HELD, claimed_at=None,
                next_attempt_at=timezone.now() + timedelta(seconds=wait))


def _send_claimed(row, channel):
    """Send a claimed row once and record what happened."""
    message = Message.from_dict(row.payload)
    started, clock = timezone.now(), time.monotonic()
    try:
        result = senders.send(channel, message, key=row.idempotency_key)
    except Exception as exc:  # a bug must fail the attempt, not leave the row sending
        logger.exception("notification %s: sender crashed", row.pk)
        result = senders.Result(False, error=f"{type(exc).__name__}: {exc}"[:500])
    duration_ms = int((time.monotonic() - clock) * 1000)
    return _record(row, channel, result, started, duration_ms)


def backoff(attempt, *, throttled=False):
    """Seconds before attempt ``attempt + 1``: exponential from
    ``OPSPLANE_NOTIFY_RETRY_SECONDS``, capped, with equal jitter (half fixed, half
    random) so rows that failed together do not retry together. A provider that said
    "too fast" gets at least ``OPSPLANE_NOTIFY_THROTTLED_SECONDS``."""
    delay = min(settings.OPSPLANE_NOTIFY_RETRY_MAX_SECONDS,
                settings.OPSPLANE_NOTIFY_RETRY_SECONDS * 2 ** (attempt - 1))
    delay = delay / 2 + random.uniform(0, delay / 2)
    if throttled:
        delay = max(delay, settings.OPSPLANE_NOTIFY_THROTTLED_SECONDS)
    return delay


def _record(row, channel, result, started, duration_ms):
    kind = channel.kind
    with transaction.atomic():
        current = Notification.objects.select_for_update().get(pk=row.pk)
        number = current.attempts + 1
        Attempt.objects.create(
            notification_id=row.pk, number=number, started_at=started,
            duration_ms=duration_ms, ok=result.ok, http_status=result.http_status,
            provider_code=result.provider_code[:50],
            provider_message=result.provider_message[:500], error=result.error,
        )
        if current.state != S.SENDING or current.claimed_at != row.claimed_at:
            # Our claim ran out and the sweep gave the row to someone else: they decide.
            logger.warning("notification %s: finished after its claim was taken over", row.pk)
            return current
        now = timezone.now()
        common = {"attempts": number, "provider_code": result.provider_code[:50]}
        if result.ok:
            _finish(row, S.SENT, sent_at=now, last_error="", **common)
            notify_metrics.sent.labels(kind).inc()
            return row
        notify_metrics.failed.labels(kind).inc()
        error = result.error or _("failed")
        if number >= settings.OPSPLANE_NOTIFY_MAX_ATTEMPTS:
            _finish(row, S.DEAD, last_error=error, **common)
            return row
        delay = backoff(number, throttled=result.throttled)
        _finish(row, S.FAILED, last_error=error,
                next_attempt_at=now + timedelta(seconds=delay), **common)
        notify_metrics.retried.labels(kind).inc()
        transaction.on_commit(functools.partial(_queue_delivery, row.pk, delay), robust=True)
    return row


# --- rate budget digests ------------------------------------------------------------------


def schedule_flush(channel_id, wait):
    """Queue one ``notify.flush`` for when the budget returns; further calls meanwhile
    do nothing (a Redis key marks the one queued). The sweep re-queues a lost one."""
    try:
        fresh = budget.client().set(f"{FLUSH_LOCK}{channel_id}", "1", nx=True,
                                    px=int((wait + 5) * 1000))
    except redis.RedisError:
        fresh = True
    if not fresh:
        return
    from opsplane.notify import tasks

    try:
        tasks.flush.apply_async((channel_id,), countdown=wait)
    except Exception:  # noqa: BLE001 - the sweep queues it
        logger.warning("channel %s: could not queue the digest; the sweep will", channel_id,
                       exc_info=True)


def flush(channel_id, *, scheduled=False):
    """Send what the channel holds back, within its budget: one held row goes out as
    itself; several become one digest row standing for all of them. Returns 0, or the
    seconds until the budget has room (a flush task is then queued, once).
    ``scheduled``: called by that task (``notify.flush``), which clears its marker."""
    if scheduled:
        with contextlib.suppress(redis.RedisError):
            budget.client().delete(f"{FLUSH_LOCK}{channel_id}")
    channel = Channel.objects.filter(pk=channel_id).first()
    if channel is None or not Notification.objects.filter(channel=channel,
                                                          state=S.HELD).exists():
        return 0
    if not channel.enabled:
        with transaction.atomic():
            Notification.objects.filter(channel=channel, state=S.HELD).update(
                state=S.DEAD, last_error="channel disabled")
        return 0
    granted, wait, member = budget.take(channel.pk, channel.budget())
    if not granted:
        schedule_flush(channel.pk, wait)
        return wait
    now = timezone.now()
    with transaction.atomic():
        held = list(Notification.objects.select_for_update()
                    .filter(channel=channel, state=S.HELD).order_by("id")[:DIGEST_MAX_ROWS])
        if not held:  # another flush took them
            budget.refund(channel.pk, member)
            return 0
        if len(held) == 1:
            row = held[0]
            if not _transition(row, S.SENDING, claimed_at=now):
                budget.refund(channel.pk, member)
                return 0
        else:
            row = Notification.objects.create(
                channel=channel, idempotency_key=f"digest:{held[0].pk}", ref="digest",
                payload=digest_message(held).as_dict(), is_digest=True,
                state=S.SENDING, claimed_at=now, next_attempt_at=now,
            )
            folded = Notification.objects.filter(
                pk__in=[h.pk for h in held], state=S.HELD,
            ).update(state=S.FOLDED, digest=row, claimed_at=None)
            notify_metrics.folded.labels(channel.kind).inc(folded)
    _send_claimed(row, channel)
    # More than one digest's worth held: the next digest when the budget allows.
    if len(held) == DIGEST_MAX_ROWS:
        schedule_flush(channel.pk, 0)
    return 0


def digest_message(rows):
    """One message standing for ``rows`` (held notifications, oldest first): a line per
    ``digest_key`` (the latest title of that key, and how many there were), the most
    severe severity, everyone mentioned."""
    messages = [(row, Message.from_dict(row.payload)) for row in rows]
    groups = {}
    for row, message in messages:
        groups.setdefault(message.digest_key or f"#{row.pk}", []).append(message)
    severity = min((m.severity for _r, m in messages), key=SEVERITY_RANK.__getitem__)
    lines = []
    for group in list(groups.values())[:DIGEST_LINES]:
        last = group[-1]
        title = f"[{last.title}]({last.link})" if last.link else last.title
        times = f" (×{len(group)})" if len(group) > 1 else ""
        lines.append(f"- **{last.severity.upper()}** {title}{times}")
    if len(groups) > DIGEST_LINES:
        more = len(groups) - DIGEST_LINES
        lines.append("- " + ngettext("… and %(count)d more", "… and %(count)d more",
                                     more) % {"count": more})
    count = len(rows)
    title = ngettext("+%(count)d more notification", "+%(count)d more notifications",
                     count) % {"count": count}
    intro = _("Held back by this channel's rate limit:")
    mentions = []
    for _row, message in messages:
        mentions.extend(m for m in message.mentions if m not in mentions)
    return Message(
        title=title, text=intro + "\n\n" + "\n".join(lines), severity=severity,
        mentions=tuple(mentions), digest_key="digest",
        data={"digest": True, "count": count,
              "items": [{"id": row.pk, "title": m.title, "severity": m.severity,
                         "link": m.link, "digest_key": m.digest_key}
                        for row, m in messages[:200]]},
    )


# --- the sweep ---------------------------------------------------------------------------


def sweep():
    """Re-queue what was left behind (beat's ``notify.sweep``); idempotent.

    - rows ``sending`` longer than the lease (a worker died mid-send): back to
      ``failed`` (or ``dead`` when that was the last attempt) and re-queued;
    - ``pending``/``failed`` rows due for longer than the grace period (the broker was
      down at commit, a countdown task was lost): re-queued;
    - channels with rows ``held`` past the time their digest was due: a flush queued.
    Returns what it did, as counts."""
    now = timezone.now()
    grace = timedelta(seconds=settings.OPSPLANE_NOTIFY_SWEEP_GRACE)
    lease = timedelta(seconds=settings.OPSPLANE_NOTIFY_LEASE)
    recovered = 0
    stuck = Notification.objects.filter(state=S.SENDING, claimed_at__lt=now - lease)
    for row in stuck.select_related("channel").order_by("claimed_at")[:SWEEP_BATCH]:
        with transaction.atomic():
            number = row.attempts + 1
            last = number >= settings.OPSPLANE_NOTIFY_MAX_ATTEMPTS
            error = "interrupted: no result within the lease (worker lost?)"
            if _finish(row, S.DEAD if last else S.FAILED, attempts=F("attempts") + 1,
                       last_error=error, next_attempt_at=now):
                Attempt.objects.create(notification=row, number=number, started_at=now,
                                       error=error)
                recovered += 1
                if not last:
                    transaction.on_commit(functools.partial(_queue_delivery, row.pk),
                                          robust=True)
    due = list(Notification.objects.filter(
        state__in=Notification.WAITING, next_attempt_at__lt=now - grace,
    ).order_by("next_attempt_at").values_list("pk", flat=True)[:SWEEP_BATCH])
    for pk in due:
        _queue_delivery(pk)
    channels = list(Notification.objects.filter(
        state=S.HELD, next_attempt_at__lt=now - grace,
    ).order_by().values_list("channel_id", flat=True).distinct())
    for channel_id in channels:
        schedule_flush(channel_id, 0)
    return {"recovered": recovered, "requeued": len(due), "flushed": len(channels)}


# --- people's buttons --------------------------------------------------------------------------


def send_test(channel, *, by, request=None):
    """Queue a test message to ``channel`` (admins)."""
    if not can_manage(by):
        raise PermissionDenied(_("Only admins may test channels."))
    if not channel.enabled:
        raise NotifyError(_("The channel is disabled."))
    message = Message(
        title=_("Test message from opsplane"),
        text=_("If you can read this, channel **%(name)s** works.") % {"name": channel.name},
        severity="info", digest_key=f"test:{channel.pk}",
    )
    with transaction.atomic():
        row = enqueue(channel, message, key=f"test:{channel.pk}:{uuid.uuid4().hex}",
                      ref="test")
        audit.record("notify.channel.test", by=by, obj=channel, request=request,
                     detail={"notification": row.pk})
    return row


def retry(notification, *, by, request=None):
    """Try a dead notification again, with a fresh set of attempts (admins)."""
    if not can_manage(by):
        raise PermissionDenied(_("Only admins may retry notifications."))
    with transaction.atomic():
        updated = Notification.objects.filter(pk=notification.pk, state=S.DEAD).update(
            state=S.PENDING, attempts=0, next_attempt_at=timezone.now(), claimed_at=None)
        if not updated:
            raise NotifyError(_("Only a notification that gave up can be retried."))
        audit.record("notify.notification.retry", by=by, obj=notification, request=request,
                     detail={"previous_error": notification.last_error[:200]})
        transaction.on_commit(functools.partial(_queue_delivery, notification.pk),
                              robust=True)
    notification.refresh_from_db()
    return notification


# --- channels --------------------------------------------------------------------------------

# The secret fields each kind takes (all stored encrypted, never shown back).
SECRET_FIELDS = {
    K.WEBHOOK: ("url", "signing_secret", "token"),
    K.DINGTALK: ("url", "signing_secret"),
    K.WECOM: ("url",),
    K.FEISHU: ("url", "signing_secret"),
    K.SLACK: ("url",),
    K.EMAIL: (),
    K.SMS: ("url", "token"),
}
# The settings each kind takes (``Channel.config``): name -> type or choices.
CONFIG_FIELDS = {
    K.WEBHOOK: {},
    K.DINGTALK: {"mentions": list, "at_all": bool, "format": ("markdown", "text")},
    K.WECOM: {"mentions": list, "format": ("markdown", "text")},
    K.FEISHU: {"mentions": list, "format": ("interactive", "post", "text")},
    K.SLACK: {"mentions": list},
    K.EMAIL: {"recipients": list, "from_email": str},
    K.SMS: {"recipients": list, "method": ("POST", "GET", "PUT"), "content_type": str,
            "body_template": str, "headers": dict, "result_field": str, "ok_values": list},
}


def clean_config(kind, config, *, complete=True):
    """``config`` checked and normalized for ``kind``; ``ValidationError`` names the field.
    ``complete``: also insist on what a channel needs to send (recipients)."""
    allowed = CONFIG_FIELDS[kind]
    unknown = sorted(set(config) - set(allowed))
    if unknown:
        raise ValidationError({"config": _("Unknown settings for this kind: %(names)s.")
                               % {"names": ", ".join(unknown)}})
    clean = {}
    for name, kind_of in allowed.items():
        value = config.get(name)
        if value is None or value is False or value in ("", [], {}):
            continue
        if kind_of is list:
            if isinstance(value, str):
                value = value.replace("\n", ",").split(",")
            if not isinstance(value, list):
                raise ValidationError({name: _("Expected a list.")})
            value = [str(item).strip() for item in value if str(item).strip()]
        elif kind_of is bool:
            value = bool(value)
        elif kind_of is dict:
            if not isinstance(value, dict) or not all(
                    isinstance(k, str) and isinstance(v, str) for k, v in value.items()):
                raise ValidationError({name: _("Expected names and text values.")})
        elif kind_of is str:
            value = str(value)
        elif str(value) not in kind_of:
            raise ValidationError({name: _("One of: %(choices)s.")
                                   % {"choices": ", ".join(kind_of)}})
        clean[name] = value
    if kind == K.EMAIL:
        addresses = [("recipients", a) for a in clean.get("recipients", [])]
        if clean.get("from_email"):
            addresses.append(("from_email", clean["from_email"]))
        for name, address in addresses:
            try:
                validate_email(address)
            except ValidationError:
                raise ValidationError({name: _("%(address)s is not an e-mail address.")
                                       % {"address": address}}) from None
        # No fixed recipients: the channel mails only the addresses each message names
        # (``Message.mentions``), e.g. approvals' personal mail to approvers.
    if kind == K.SMS:
        if complete and not any(senders.MOBILE.match(m) for m in clean.get("recipients", [])):
            raise ValidationError({"recipients": _("Give at least one mobile number.")})
        if clean.get("body_template"):
            try:
                render.validate(clean["body_template"])
            except render.TemplateError as exc:
                raise ValidationError({"body_template": str(exc)}) from None
    return clean


def _target(kind, config, secret_fields):
    """Where messages go, as people may see it: the URL's host, or the recipients."""
    if kind == K.EMAIL:
        return ", ".join(config.get("recipients", []))[:200]
    host = urlsplit(secret_fields.get("url", "")).hostname or ""
    if kind == K.SMS:
        return f"{config.get('method', 'POST')} {host}"[:200]
    return host[:200]


def save_channel(channel, data, *, secret_fields=None, clear=(), by, request=None):
    """Create or update a channel (admins).

    ``data``: name, kind (only when creating), description, enabled, config,
    rate_budget, template. ``secret_fields``: url / signing_secret / token as the kind
    takes them; a given value replaces the stored one, an absent or empty one keeps it;
    ``clear`` names stored fields to remove. Secrets are never logged or audited."""
    if not can_manage(by):
        raise PermissionDenied(_("Only admins may change notification channels."))
    created = channel.pk is None
    saved = None if created else Channel.objects.get(pk=channel.pk)
    data = dict(data)
    kind = data.pop("kind", None) or channel.kind
    if saved is not None and kind != saved.kind:
        raise ValidationError({"kind": _("The kind of a channel cannot change; make a new "
                                         "channel instead.")})
    if kind not in K.values:
        raise ValidationError({"kind": _("Unknown kind.")})
    channel.kind = kind
    before = {} if saved is None else _audit_view(saved)
    config = clean_config(kind, data.pop("config", channel.config) or {})
    for name, value in data.items():
        setattr(channel, name, value)
    channel.config = config
    if channel.template:
        try:
            render.validate(channel.template)
        except render.TemplateError as exc:
            raise ValidationError({"template": str(exc)}) from None
    try:
        parse_budget(channel.rate_budget)
    except ValueError as exc:
        raise ValidationError({"rate_budget": str(exc)}) from None

    allowed = SECRET_FIELDS[kind]
    given = {k: v.strip() for k, v in (secret_fields or {}).items() if v and v.strip()}
    wrong = sorted(set(given) - set(allowed))
    if wrong:
        raise ValidationError({wrong[0]: _("This kind of channel takes no %(name)s.")
                               % {"name": wrong[0]}})
    stored = secrets.decrypt(channel.secret) if channel.secret else {}
    stored = {k: v for k, v in stored.items() if k in allowed and k not in clear}
    stored.update(given)
    if "url" in allowed:
        url = stored.get("url", "")
        # A disabled channel may wait for its URL (e.g. a placeholder made by the
        # alertmanager.yml import); enabling it needs one.
        if not url and channel.enabled:
            raise ValidationError({"url": _("The channel needs its URL.")})
        parts = urlsplit(url)
        if url and (parts.scheme not in {"http", "https"} or not parts.hostname
                    or any(c.isspace() or ord(c) < 32 for c in url)):
            raise ValidationError({"url": _("Give an http:// or https:// URL.")})
        if kind == K.SMS:  # the SMS gateway's URL may use the message's values
            try:
                render.validate(url)
            except render.TemplateError:
                raise ValidationError({"url": _("The URL is not a valid template.")}) from None
    signing_secret = stored.get("signing_secret", "")
    if kind == K.DINGTALK and signing_secret and not signing_secret.startswith("SEC"):
        raise ValidationError({"signing_secret": _("DingTalk signing secrets start with "
                                                   "SEC.")})
    channel.secret = secrets.encrypt(stored) if stored else ""
    channel.secret_fields = sorted(stored)
    channel.target = _target(kind, config, stored)
    if created:
        channel.created_by = by if by is not None and by.pk else None
    channel.full_clean(exclude=["secret", "secret_fields", "target"])
    with transaction.atomic():
        channel.save()
        after = _audit_view(channel)
        changed = sorted(k for k in after if before.get(k) != after[k])
        audit.record("notify.channel.create" if created else "notify.channel.update",
                     by=by, obj=channel, request=request,
                     detail={"changed": changed, "secrets_replaced": sorted(given),
                             "secrets_removed": sorted(set(clear) & set(allowed))})
    return channel


def _audit_view(channel):
    return {"name": channel.name, "kind": channel.kind, "description": channel.description,
            "enabled": channel.enabled, "config": channel.config,
            "rate_budget": channel.rate_budget, "template": channel.template,
            "target": channel.target}


def delete_channel(channel, *, by, request=None):
    """Delete a channel that never sent anything; otherwise disable it (its history
    stays)."""
    if not can_manage(by):
        raise PermissionDenied(_("Only admins may change notification channels."))
    if channel.notifications.exists():
        raise NotifyError(_("Channel %(name)s has notifications; disable it instead.")
                          % {"name": channel.name})
    with transaction.atomic():
        audit.record("notify.channel.delete", by=by, obj=channel, request=request)
        channel.delete()


def rotate_secrets():
    """Re-encrypt every channel's secret with the newest key in OPSPLANE_FERNET_KEYS
    (for ``manage.py rotate_credentials``). Returns how many were re-encrypted."""
    with transaction.atomic():
        channels = list(Channel.objects.select_for_update().exclude(secret="").order_by("pk"))
        for channel in channels:
            channel.secret = secrets.rotate(channel.secret)
        Channel.objects.bulk_update(channels, ["secret"], batch_size=200)
    return len(channels)


def preview(kind, template_text="", message=None, *, config=None):
    """What a channel of ``kind`` would send for ``message`` (a sample when None): the
    rendered text and the provider's JSON body, without URL or signature. Raises
    ``render.TemplateError`` for a broken template."""
    message = message or render.SAMPLE
    text = render.render_message(kind, template_text, message, channel="preview")
    body = None
    if kind in senders.BUILDERS:
        try:
            config = clean_config(kind, config or {}, complete=False)
            fake = Channel(name="preview", kind=kind, config=config)
            fake.secret = secrets.encrypt({"url": "https://example.invalid/hook"})
            body = senders.build_request(fake, message, text, key="preview").body.decode()
            with contextlib.suppress(ValueError):  # JSON bodies, indented for people
                body = json.dumps(json.loads(body), indent=2, ensure_ascii=False)
        except ValidationError as exc:
            body = " ".join(exc.messages)
        except (senders.ConfigError, render.TemplateError) as exc:
            body = str(exc)
    return {"title": message.title, "text": text, "body": body}
