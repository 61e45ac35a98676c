"""Helpers for other apps' tests: approve a subject's request as a test would by hand."""

from approvals import services
from approvals.models import ApprovalRequest, Decision


def request_of(subject):
    """The approval request of a model instance (``changes.Change``, ...)."""
    return ApprovalRequest.objects.get(subject_type=subject._meta.label_lower,
                                       subject_id=str(subject.pk))


def approve(subject, *, by, comment=""):
    """``by`` approves the current round of ``subject``'s request (through the service,
    with every check); returns the request afterwards."""
    services.decide(request_of(subject), by=by, kind=Decision.Kind.APPROVE, comment=comment)
    return request_of(subject)


def host(name, environment="prod", services=(), **labels):
    """``HostFacts`` for tests: ``host("db-1", "prod", services=["orders"], role="db")``."""
    from approvals.matching import HostFacts

    return HostFacts(name=name, environment=environment, labels=labels,
                     services=tuple(services))


def subject(author, *hosts, digest="d" * 64, protected=("prod",), **fields):
    """A ``Subject`` about ``hosts`` (``host(...)``), as an owning app would build it."""
    from approvals.matching import Subject

    fields.setdefault("id", "1")
    fields.setdefault("type", "tests.thing")
    fields.setdefault("title", f"thing {fields['id']}")
    return Subject(digest=digest, author=author, hosts=list(hosts),
                   protected_environments=frozenset(protected), **fields)


def mail_channel(settings, name="approvals-mail"):
    """An e-mail channel without fixed recipients, made the one approvals mails people
    through (``settings``: pytest-django's fixture)."""
    from opsplane.notify.testing import make_channel

    settings.APPROVALS_EMAIL_CHANNEL = name
    return make_channel("email", name=name)


