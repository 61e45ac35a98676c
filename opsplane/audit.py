"""The audit trail: ``record()`` is the one way anything writes an ``AuditEvent``.

Call it inside the transaction that makes the change, so the event exists exactly when
the change does.
"""

from opsplane.models import AuditEvent


def client_address(request):
    """The client address for the trail (the proxy-aware one django-axes computed)."""
    if request is None:
        return ""
    return getattr(request, "axes_ip_address", None) or request.META.get("REMOTE_ADDR", "")


def record(action, *, by=None, obj=None, request=None, source="", detail=None):
    """Record that ``by`` (a user or None for the system) did ``action`` to ``obj``.

    ``action`` is a dotted verb such as ``"change.start"``; ``detail`` a small JSON-able
    dict. Never put secrets in ``detail``.
    """
    if by is None and request is not None and request.user.is_authenticated:
        by = request.user
    event = AuditEvent(
        action=action,
        actor=by if by is not None and by.pk else None,
        actor_name=by.get_username() if by is not None else "",
        source=source or client_address(request),
        detail=detail or {},
    )
    if obj is not None:
        event.object_type = obj._meta.label_lower
        event.object_id = str(obj.pk)
        event.object_repr = str(obj)[:200]
    event.save()
    return event


def record_many(action, objects, *, by=None, request=None, source="", details=None):
    """``record()`` for many objects in one INSERT (imports, bulk edits).

    ``details`` maps an object's pk to its ``detail`` dict; objects without an entry get
    an empty one.
    """
    details = details or {}
    if by is None and request is not None and request.user.is_authenticated:
        by = request.user
    common = {
        "action": action,
        "actor": by if by is not None and by.pk else None,
        "actor_name": by.get_username() if by is not None else "",
        "source": source or client_address(request),
    }
    return AuditEvent.objects.bulk_create([
        AuditEvent(
            **common,
            object_type=obj._meta.label_lower,
            object_id=str(obj.pk),
            object_repr=str(obj)[:200],
            detail=details.get(obj.pk, {}),
        )
        for obj in objects
    ], batch_size=1000)
