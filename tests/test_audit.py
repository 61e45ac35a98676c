import pytest
from django.test import RequestFactory

from opsplane import audit
from opsplane.models import AuditEvent

pytestmark = pytest.mark.django_db


def test_record_keeps_who_what_on_which_object_and_from_where(operator):
    request = RequestFactory().post("/", REMOTE_ADDR="192.0.2.7")
    request.user = operator
    event = audit.record("environment.update", obj=operator, request=request,
                         detail={"field": "protected"})
    event.refresh_from_db()
    assert event.actor == operator and event.actor_name == operator.username
    assert event.object_type == "auth.user" and event.object_id == str(operator.pk)
    assert event.source == "192.0.2.7"
    assert event.detail == {"field": "protected"}


def test_trail_survives_deleting_the_actor(operator):
    audit.record("login", by=operator)
    name = operator.username
    operator.delete()
    event = AuditEvent.objects.get(action="login")
    assert event.actor is None and event.actor_name == name
    assert name in str(event)


def test_system_actions_have_no_actor():
    event = audit.record("beat.tick", source="beat")
    assert event.actor is None and event.source == "beat"


def test_record_many_writes_one_event_per_object(operator, make_user):
    others = [make_user("oncall"), make_user("approver")]
    events = audit.record_many("user.import", others, by=operator,
                               details={others[0].pk: {"created": True}})
    assert len(events) == 2
    stored = AuditEvent.objects.filter(action="user.import").order_by("object_id")
    assert [e.object_id for e in stored] == sorted(str(u.pk) for u in others)
    assert {e.actor_name for e in stored} == {operator.username}
    assert AuditEvent.objects.get(object_id=str(others[0].pk)).detail == {"created": True}
