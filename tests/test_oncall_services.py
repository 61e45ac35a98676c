"""The on-call services: ``on_call`` at the edges, next shifts, overrides, and the
create/edit services' validation, permissions and audit trail."""

from datetime import UTC, date, datetime, time, timedelta

import pytest
from django.core.exceptions import PermissionDenied

from oncall import services
from oncall.models import Layer, Override, Schedule
from opsplane.models import AuditEvent

pytestmark = pytest.mark.django_db


def utc(*args):
    return datetime(*args, tzinfo=UTC)


@pytest.fixture
def people(make_user):
    return [make_user("oncall", username=name) for name in ("alice", "bob", "carol")]


@pytest.fixture
def berlin(admin_user, people):
    """Daily at 09:00 Europe/Berlin: alice, bob, carol from Monday 2 March 2026."""
    schedule = services.create_schedule(by=admin_user, name="Platform", time_zone="Europe/Berlin")
    services.create_layer(schedule, by=admin_user, name="Primary", participants=people,
                          rotation=Layer.Rotation.DAILY, handoff_time=time(9),
                          start_date=date(2026, 3, 2))
    return schedule


def names(users):
    return [u.username for u in users]


def test_on_call_at_a_handoff_is_the_incoming_person(berlin):
    handoff = utc(2026, 3, 3, 8)  # 09:00 CET on Tuesday: alice -> bob
    assert names(services.on_call(berlin, handoff - timedelta(microseconds=1))) == ["alice"]
    assert names(services.on_call(berlin, handoff)) == ["bob"]
    assert names(services.on_call(berlin, utc(2026, 3, 4, 7, 59, 59))) == ["bob"]
    assert names(services.on_call(berlin, utc(2026, 3, 4, 8))) == ["carol"]


def test_on_call_follows_local_time_across_dst(berlin):
    # After the spring change 09:00 Berlin is 07:00 UTC.
    assert names(services.on_call(berlin, utc(2026, 3, 30, 6, 59))) == \
        names(services.on_call(berlin, utc(2026, 3, 29, 7)))
    days = (date(2026, 3, 30) - date(2026, 3, 2)).days
    expected = ["alice", "bob", "carol"][days % 3]
    assert names(services.on_call(berlin, utc(2026, 3, 30, 7))) == [expected]


def test_nobody_on_call_is_an_empty_list(admin_user, berlin):
    assert services.on_call(berlin, utc(2026, 3, 2, 7)) == []  # before the first hand-off
    empty = services.create_schedule(by=admin_user, name="Empty", time_zone="Asia/Shanghai")
    assert services.on_call(empty) == []


def test_on_call_defaults_to_now(admin_user, people):
    schedule = services.create_schedule(by=admin_user, name="Now", time_zone="Asia/Shanghai")
    services.create_layer(schedule, by=admin_user, name="Only", participants=people[:1],
                          rotation=Layer.Rotation.WEEKLY, start_date=date(2020, 1, 6))
    assert names(services.on_call(schedule)) == ["alice"]


def test_override_wins_and_its_edges_are_exact(berlin, people, oncall):
    alice, bob, carol = people
    start, end = utc(2026, 3, 2, 12), utc(2026, 3, 2, 14)
    services.create_override(berlin, user=carol, start=start, end=end, by=oncall, note="dentist")
    assert names(services.on_call(berlin, start - timedelta(microseconds=1))) == ["alice"]
    assert names(services.on_call(berlin, start)) == ["carol"]
    assert names(services.on_call(berlin, end - timedelta(microseconds=1))) == ["carol"]
    assert names(services.on_call(berlin, end)) == ["alice"]
    day = services.shifts(berlin, utc(2026, 3, 2, 8), utc(2026, 3, 3, 8))
    assert [(s.start, s.user_id, s.kind) for s in day] == [
        (utc(2026, 3, 2, 8), alice.pk, "layer"), (start, carol.pk, "override"),
        (end, alice.pk, "layer")]


def test_higher_layer_and_restriction(admin_user, berlin, people, make_user):
    dave = make_user("oncall", username="dave")
    services.create_layer(berlin, by=admin_user, name="Business hours", participants=[dave],
                          rotation=Layer.Rotation.WEEKLY, start_date=date(2026, 3, 2),
                          handoff_time=time(9), restrict_days=[0, 1, 2, 3, 4],
                          restrict_start=time(9), restrict_end=time(17))
    assert names(services.on_call(berlin, utc(2026, 3, 3, 10))) == ["dave"]  # Tue 11:00 CET
    assert names(services.on_call(berlin, utc(2026, 3, 3, 16))) == ["bob"]   # Tue 17:00 CET
    assert names(services.on_call(berlin, utc(2026, 3, 7, 10))) == ["carol"]  # Saturday


def test_next_shifts_and_current_shift(berlin, people):
    at = utc(2026, 3, 2, 12)
    upcoming = services.next_shifts(berlin, at, 3)
    assert [(s.start, s.user_id) for s in upcoming] == [
        (utc(2026, 3, 3, 8), people[1].pk), (utc(2026, 3, 4, 8), people[2].pk),
        (utc(2026, 3, 5, 8), people[0].pk)]
    current = services.current_shift(berlin, at)
    assert (current.start, current.end, current.user_id) == \
        (utc(2026, 3, 2, 8), utc(2026, 3, 3, 8), people[0].pk)
    assert services.current_shift(berlin, utc(2026, 3, 1)) is None


def test_next_shift_far_ahead(admin_user, people):
    schedule = services.create_schedule(by=admin_user, name="Later", time_zone="UTC")
    services.create_layer(schedule, by=admin_user, name="L", participants=people,
                          rotation=Layer.Rotation.DAILY, start_date=date(2026, 9, 1))
    (first,) = services.next_shifts(schedule, utc(2026, 3, 1), 1)
    assert first.start == utc(2026, 9, 1, 9)


# --- validation ---------------------------------------------------------------------------------


def test_unknown_zone_is_a_domain_error(admin_user):
    with pytest.raises(services.OnCallError, match="Unknown time zone"):
        services.create_schedule(by=admin_user, name="X", time_zone="Mars/Base")
    assert not Schedule.objects.exists()


def test_empty_rotation_is_a_domain_error(admin_user, berlin):
    with pytest.raises(services.OnCallError, match="at least one participant"):
        services.create_layer(berlin, by=admin_user, name="Empty", participants=[],
                              start_date=date(2026, 3, 2))
    layer = berlin.layers.get()
    with pytest.raises(services.OnCallError, match="at least one participant"):
        services.save_layer(layer, {}, participants=[], by=admin_user)
    assert layer.members.count() == 3


def test_bad_layers_are_domain_errors(admin_user, berlin, people):
    bad = [
        ({"rotation": "custom", "shift_length": 0, "start_date": date(2026, 1, 1)},
         "at least one hour"),
        ({"rotation": "custom", "shift_unit": "weeks", "start_date": date(2026, 1, 1)},
         "Unknown unit"),
        ({"rotation": "monthly", "start_date": date(2026, 1, 1)}, "Unknown rotation"),
        ({"start_date": date(2026, 1, 1), "restrict_days": [7], "restrict_start": time(9),
          "restrict_end": time(17)}, "weekdays"),
        ({"start_date": date(2026, 1, 1), "restrict_days": [1]}, "from and an until"),
        ({"start_date": date(2026, 1, 1), "level": 1}, "level 1 already"),
        ({"start_date": None}, "start date"),
    ]
    for data, message in bad:
        with pytest.raises(services.OnCallError, match=message):
            services.create_layer(berlin, by=admin_user, name="Bad", participants=people, **data)
    assert berlin.layers.count() == 1


def test_override_end_before_start_is_a_domain_error(berlin, people, oncall):
    with pytest.raises(services.OnCallError, match="after its start"):
        services.create_override(berlin, user=people[0], start=utc(2026, 3, 2, 12),
                                 end=utc(2026, 3, 2, 11), by=oncall)
    with pytest.raises(services.OnCallError, match="start and an end"):
        services.create_override(berlin, user=people[0], start=datetime(2026, 3, 2, 12),
                                 end=utc(2026, 3, 2, 13), by=oncall)
    with pytest.raises(services.OnCallError, match="end is before the start"):
        services.shifts(berlin, utc(2026, 3, 2), utc(2026, 3, 1))
    assert not Override.objects.exists()


def test_duplicate_schedule_name(admin_user, berlin):
    with pytest.raises(services.OnCallError, match="exists already"):
        services.create_schedule(by=admin_user, name="Platform", time_zone="UTC")


# --- permissions and audit ----------------------------------------------------------------------


def test_only_admins_edit_schedules_and_layers(berlin, people, operator, oncall, outsider):
    for user in (operator, oncall, outsider):
        with pytest.raises(PermissionDenied):
            services.create_schedule(by=user, name="Nope", time_zone="UTC")
        with pytest.raises(PermissionDenied):
            services.create_layer(berlin, by=user, name="Nope", participants=people,
                                  start_date=date(2026, 3, 2))
        with pytest.raises(PermissionDenied):
            services.delete_schedule(berlin, by=user)
    assert Schedule.objects.count() == 1


def test_oncall_and_admin_add_overrides_others_do_not(berlin, people, operator, outsider,
                                                      oncall, admin_user):
    args = {"user": people[1], "start": utc(2026, 3, 2, 12), "end": utc(2026, 3, 2, 13)}
    for user in (operator, outsider):
        with pytest.raises(PermissionDenied):
            services.create_override(berlin, by=user, **args)
    first = services.create_override(berlin, by=oncall, **args)
    services.create_override(berlin, by=admin_user, **args)
    with pytest.raises(PermissionDenied):
        services.delete_override(first, by=operator)
    services.delete_override(first, by=oncall)
    assert Override.objects.count() == 1


def test_writes_are_audited(admin_user, berlin, people, oncall):
    layer = berlin.layers.get()
    services.save_layer(layer, {"handoff_time": time(10)}, participants=people[::-1], by=admin_user)
    override = services.create_override(berlin, user=people[0], start=utc(2026, 3, 2, 12),
                                        end=utc(2026, 3, 2, 13), by=oncall)
    services.delete_override(override, by=oncall)
    services.delete_layer(layer, by=admin_user)
    services.delete_schedule(berlin, by=admin_user)
    events = list(AuditEvent.objects.order_by("id").values_list("action", "actor_name"))
    assert events == [
        ("oncall_schedule.create", admin_user.username),
        ("oncall_layer.create", admin_user.username),
        ("oncall_layer.edit", admin_user.username),
        ("oncall_override.create", oncall.username),
        ("oncall_override.delete", oncall.username),
        ("oncall_layer.delete", admin_user.username),
        ("oncall_schedule.delete", admin_user.username),
    ]
    edit = AuditEvent.objects.get(action="oncall_layer.edit")
    assert edit.detail["participants"] == ["carol", "bob", "alice"]
    assert edit.detail["handoff"] == "10:00"


def test_on_call_query_count(berlin, django_assert_num_queries):
    with django_assert_num_queries(4):  # members, layers, overrides, users
        services.on_call(berlin, utc(2026, 3, 3, 12))


def test_demo_schedule_is_idempotent(make_user, admin_user):
    from opsplane import demo

    make_user("oncall", username="oncall")
    assert admin_user.username == "admin"  # the demo's admin
    demo.load_oncall(by=admin_user)
    demo.load_oncall(by=admin_user)
    schedule = Schedule.objects.get()
    assert schedule.time_zone == "Asia/Shanghai" and schedule.layers.count() == 1
    assert names(services.on_call(schedule)) in (["oncall"], ["admin"])
