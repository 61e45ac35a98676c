"""Rotations expanded into shifts (``oncall/rotations.py``, no database): hand-offs at the
right local time across DST changes with no gap and no overlap, lengths, layers,
restrictions and overrides."""

from datetime import UTC, date, datetime, time, timedelta

import pytest

from oncall.rotations import (
    DAYS,
    HOURS,
    LayerSpec,
    OverrideSpec,
    Restriction,
    expand,
    layer_shifts,
    to_instant,
    zone,
)

ALICE, BOB, CAROL, DAVE = 1, 2, 3, 4


def utc(*args):
    return datetime(*args, tzinfo=UTC)


def local(instant, name):
    return instant.astimezone(zone(name)).replace(tzinfo=None)


def assert_contiguous(found, start, end):
    """The shifts cover [start, end) exactly: each ends where the next begins."""
    assert found[0].start == start
    assert found[-1].end == end
    for before, after in zip(found, found[1:], strict=False):
        assert before.end == after.start, (before, after)
        assert before.start < before.end


def expected_user(instant, name, participants=(ALICE, BOB, CAROL), start_date=date(2025, 12, 1)):
    """Whose daily shift begins on the local day of ``instant``."""
    return participants[(local(instant, name).date() - start_date).days % len(participants)]


def daily(handoff, participants=(ALICE, BOB, CAROL), start_date=date(2025, 12, 1), **kw):
    return LayerSpec(id=1, level=1, participants=participants, start_date=start_date,
                     handoff=handoff, **kw)


# --- the wall-clock → instant rule ----------------------------------------------------------------


def test_nonexistent_wall_time_is_the_instant_the_clocks_jump():
    berlin, new_york = zone("Europe/Berlin"), zone("America/New_York")
    # Berlin 2026-03-29: 02:00 CET -> 03:00 CEST, at 01:00 UTC.
    assert to_instant(datetime(2026, 3, 29, 2, 30), berlin) == utc(2026, 3, 29, 1)
    assert to_instant(datetime(2026, 3, 29, 2, 0), berlin) == utc(2026, 3, 29, 1)
    assert to_instant(datetime(2026, 3, 29, 3, 0), berlin) == utc(2026, 3, 29, 1)
    # New York 2026-03-08: 02:00 EST -> 03:00 EDT, at 07:00 UTC.
    assert to_instant(datetime(2026, 3, 8, 2, 59), new_york) == utc(2026, 3, 8, 7)


def test_ambiguous_wall_time_is_its_first_occurrence():
    # Berlin 2026-10-25: 03:00 CEST -> 02:00 CET; 02:30 happens at 00:30 and 01:30 UTC.
    berlin, new_york = zone("Europe/Berlin"), zone("America/New_York")
    assert to_instant(datetime(2026, 10, 25, 2, 30), berlin) == utc(2026, 10, 25, 0, 30)
    # New York 2026-11-01: 02:00 EDT -> 01:00 EST; 01:30 happens at 05:30 and 06:30 UTC.
    assert to_instant(datetime(2026, 11, 1, 1, 30), new_york) == utc(2026, 11, 1, 5, 30)


def test_unknown_zone_is_refused():
    for name in ("Mars/Olympus", "", "../etc/passwd", None):
        with pytest.raises(ValueError, match="unknown time zone"):
            zone(name)


# --- DST: Europe/Berlin ---------------------------------------------------------------------


def test_berlin_spring_forward_daily_0230_hands_off_when_the_clocks_jump():
    start, end = utc(2026, 3, 27), utc(2026, 3, 31)
    found = expand([daily(time(2, 30))], [], "Europe/Berlin", start, end)
    assert_contiguous(found, start, end)
    handoffs = [s.start for s in found[1:]]
    assert handoffs == [
        utc(2026, 3, 27, 1, 30),  # 02:30 CET
        utc(2026, 3, 28, 1, 30),  # 02:30 CET
        utc(2026, 3, 29, 1, 0),   # 02:30 does not exist: 03:00 CEST, the first valid instant
        utc(2026, 3, 30, 0, 30),  # 02:30 CEST
    ]
    # The shift across the change is 23.5 hours, the next one 23.5 too: no gap, no overlap.
    assert found[3].end - found[3].start == timedelta(hours=23, minutes=30)
    assert found[4].end - found[4].start == timedelta(hours=23, minutes=30)


def test_berlin_fall_back_daily_0230_hands_off_at_the_first_occurrence():
    start, end = utc(2026, 10, 23), utc(2026, 10, 28)
    found = expand([daily(time(2, 30))], [], "Europe/Berlin", start, end)
    assert_contiguous(found, start, end)
    handoffs = [s.start for s in found[1:]]
    assert handoffs == [
        utc(2026, 10, 23, 0, 30),
        utc(2026, 10, 24, 0, 30),
        utc(2026, 10, 25, 0, 30),  # the first 02:30 (CEST)
        utc(2026, 10, 26, 1, 30),  # 02:30 CET
        utc(2026, 10, 27, 1, 30),
    ]
    assert found[3].end - found[3].start == timedelta(hours=25)
    # Participants rotate one per local day: the extra hour skips nobody.
    for shift in found[1:]:
        assert shift.user_id == expected_user(shift.start, "Europe/Berlin")


def test_berlin_daily_0900_hands_off_at_0900_local_all_year():
    start, end = utc(2026, 1, 1), utc(2027, 1, 1)
    found = expand([daily(time(9))], [], "Europe/Berlin", start, end)
    assert_contiguous(found, start, end)
    for shift in found[1:]:
        assert local(shift.start, "Europe/Berlin").time() == time(9)
    lengths = {s.end - s.start for s in found[1:-1]}
    assert lengths == {timedelta(hours=23), timedelta(hours=24), timedelta(hours=25)}


@pytest.mark.parametrize("name", ["Europe/Berlin", "America/New_York"])
@pytest.mark.parametrize("unit,length", [(DAYS, 1), (DAYS, 7), (DAYS, 3), (HOURS, 12),
                                         (HOURS, 5), (HOURS, 1)])
def test_every_handoff_time_across_a_year_has_no_gap_no_overlap(name, unit, length):
    """Hand-offs at many times of day, a year long: consecutive shifts touch; each
    begins at its hand-off wall time (its first occurrence), or, when the clocks skipped
    that wall time, at the instant they jumped."""
    tz = zone(name)
    start, end = utc(2026, 1, 1), utc(2027, 1, 1)
    step = timedelta(days=length) if unit == DAYS else timedelta(hours=length)
    for minutes in range(0, 24 * 60, 30 if unit == DAYS else 90):
        handoff = time(minutes // 60, minutes % 60)
        layer = daily(handoff, length=length, unit=unit)
        found = expand([layer], [], tz, start, end)
        assert_contiguous(found, start, end)
        origin = datetime.combine(layer.start_date, handoff)
        for shift in found[1:]:
            wall = local(shift.start, name)
            before = local(shift.start - timedelta(seconds=1), name)
            off_grid = (wall - origin) % step
            if not off_grid:
                # On the grid, and its first occurrence: an hour earlier was not the same wall time.
                assert local(shift.start - timedelta(hours=1), name) != wall
            else:
                # The grid time it stands for was skipped: the clocks jumped right here.
                grid = wall - off_grid
                assert before < grid < wall
                assert wall - before > timedelta(seconds=1)
def test_new_york_spring_forward_and_fall_back():
    name = "America/New_York"
    # Daily 02:30: on 2026-03-08 02:30 does not exist, the hand-off is 03:00 EDT (07:00 UTC).
    start, end = utc(2026, 3, 6), utc(2026, 3, 11)
    found = expand([daily(time(2, 30))], [], name, start, end)
    assert_contiguous(found, start, end)
    assert [s.start for s in found[1:]] == [
        utc(2026, 3, 6, 7, 30), utc(2026, 3, 7, 7, 30), utc(2026, 3, 8, 7, 0),
        utc(2026, 3, 9, 6, 30), utc(2026, 3, 10, 6, 30)]
    # Daily 01:30: on 2026-11-01 01:30 happens twice; the hand-off is the first (EDT).
    start, end = utc(2026, 10, 30), utc(2026, 11, 3)
    found = expand([daily(time(1, 30))], [], name, start, end)
    assert_contiguous(found, start, end)
    assert [s.start for s in found[1:]] == [
        utc(2026, 10, 30, 5, 30), utc(2026, 10, 31, 5, 30), utc(2026, 11, 1, 5, 30),
        utc(2026, 11, 2, 6, 30)]
    assert found[3].end - found[3].start == timedelta(hours=25)


def test_new_york_twelve_hour_shifts_keep_0800_and_2000_across_dst():
    name = "America/New_York"
    layer = daily(time(8), participants=(ALICE, BOB), length=12, unit=HOURS)
    start, end = utc(2026, 3, 7), utc(2026, 3, 10)
    found = expand([layer], [], name, start, end)
    assert_contiguous(found, start, end)
    for shift in found[1:]:
        assert local(shift.start, name).time() in (time(8), time(20))
    night = next(s for s in found if local(s.start, name) == datetime(2026, 3, 7, 20))
    assert night.end - night.start == timedelta(hours=11)  # the night the clocks jump
    # 08:00 shifts are Alice's, 20:00 shifts Bob's, every day.
    for shift in found[1:]:
        assert shift.user_id == (ALICE if local(shift.start, name).hour == 8 else BOB)


def test_hourly_shift_inside_the_gap_is_dropped_but_the_rotation_advances():
    layer = daily(time(0), participants=(ALICE, BOB, CAROL), length=1, unit=HOURS,
                  start_date=date(2026, 3, 29))
    start, end = utc(2026, 3, 28, 23), utc(2026, 3, 29, 3)
    found = expand([layer], [], "Europe/Berlin", start, end)
    assert_contiguous(found, start, end)
    # 00:00 Alice, 01:00 Bob, 02:00 Carol (does not exist), 03:00 CEST Alice, 04:00 Bob.
    assert [(s.start, s.user_id) for s in found] == [
        (utc(2026, 3, 28, 23), ALICE), (utc(2026, 3, 29, 0), BOB),
        (utc(2026, 3, 29, 1), ALICE), (utc(2026, 3, 29, 2), BOB)]


# --- no DST: Asia/Shanghai ------------------------------------------------------------------------


def test_shanghai_daily_0900_is_always_0100_utc_and_24_hours():
    start, end = utc(2026, 1, 1), utc(2027, 1, 1)
    found = expand([daily(time(9))], [], "Asia/Shanghai", start, end)
    assert_contiguous(found, start, end)
    for shift in found[1:-1]:
        assert shift.start.time() == time(1)
        assert shift.end - shift.start == timedelta(hours=24)
        assert shift.user_id == expected_user(shift.start, "Asia/Shanghai")


# --- lengths -------------------------------------------------------------------------------------


def test_weekly_rotation_hands_off_on_the_start_weekday():
    # 2026-03-02 is a Monday; weekly at 10:00 Europe/Berlin, across the March change.
    layer = daily(time(10), participants=(ALICE, BOB), start_date=date(2026, 3, 2), length=7)
    start, end = utc(2026, 3, 2, 9), utc(2026, 4, 13)  # from the first hand-off (10:00 CET)
    found = expand([layer], [], "Europe/Berlin", start, end)
    assert_contiguous(found, start, end)
    for shift in found:
        wall = local(shift.start, "Europe/Berlin")
        assert (wall.weekday(), wall.time()) == (0, time(10))
    assert [s.user_id for s in found] == [ALICE, BOB, ALICE, BOB, ALICE, BOB]
    across = found[3]  # 2026-03-23 .. 2026-03-30 contains the change
    assert across.end - across.start == timedelta(days=7) - timedelta(hours=1)


def test_custom_three_day_rotation():
    layer = daily(time(18), participants=(ALICE, BOB, CAROL), start_date=date(2026, 5, 1),
                  length=3)
    start, end = utc(2026, 5, 1), utc(2026, 5, 20)
    found = expand([layer], [], "Asia/Shanghai", start, end)
    # Before the first hand-off (2026-05-01 18:00 +08) nobody is on call on this layer.
    assert found[0].start == utc(2026, 5, 1, 10)
    assert [(s.start, s.user_id) for s in found[:4]] == [
        (utc(2026, 5, 1, 10), ALICE), (utc(2026, 5, 4, 10), BOB),
        (utc(2026, 5, 7, 10), CAROL), (utc(2026, 5, 10, 10), ALICE)]


def test_a_range_far_after_the_start_finds_the_right_participant():
    layer = daily(time(9), participants=(ALICE, BOB, CAROL), start_date=date(2020, 1, 1))
    found = layer_shifts(layer, zone("Asia/Shanghai"), utc(2026, 6, 1, 2), utc(2026, 6, 1, 3))
    days = (date(2026, 6, 1) - date(2020, 1, 1)).days
    assert [s.user_id for s in found] == [(ALICE, BOB, CAROL)[days % 3]]


def test_empty_rotation_and_zero_length_are_refused():
    with pytest.raises(ValueError, match="participant"):
        daily(time(9), participants=())
    with pytest.raises(ValueError, match="at least"):
        daily(time(9), length=0)


# --- layers, restrictions, overrides --------------------------------------------------------


def test_higher_layer_wins_and_a_restricted_layer_lets_the_lower_one_show():
    base = LayerSpec(id=1, level=1, participants=(ALICE,), start_date=date(2026, 1, 1),
                     handoff=time(9), length=7)
    business = LayerSpec(id=2, level=2, participants=(BOB,), start_date=date(2026, 1, 1),
                         handoff=time(9), restriction=Restriction(frozenset(range(5)), time(9),
                                                                  time(18)))
    # Fri 2026-03-06 00:00 to Tue 2026-03-10 00:00, Shanghai (+08).
    start, end = utc(2026, 3, 5, 16), utc(2026, 3, 9, 16)
    found = expand([base, business], [], "Asia/Shanghai", start, end)
    assert_contiguous(found, start, end)
    assert [(local(s.start, "Asia/Shanghai"), s.user_id, s.source) for s in found] == [
        (datetime(2026, 3, 6, 0), ALICE, "layer:1"),
        (datetime(2026, 3, 6, 9), BOB, "layer:2"),   # Friday business hours
        (datetime(2026, 3, 6, 18), ALICE, "layer:1"),  # the weekend
        (datetime(2026, 3, 9, 9), BOB, "layer:2"),   # Monday
        (datetime(2026, 3, 9, 18), ALICE, "layer:1"),
    ]


def test_overnight_restriction_and_uncovered_time():
    nights = LayerSpec(id=1, level=1, participants=(CAROL,), start_date=date(2026, 1, 1),
                       handoff=time(0), restriction=Restriction(frozenset({0}), time(22), time(6)))
    start, end = utc(2026, 3, 2), utc(2026, 3, 4)  # Mon 2 and Tue 3 March, in UTC
    found = expand([nights], [], "UTC", start, end)
    assert found == [(utc(2026, 3, 2, 22), utc(2026, 3, 3, 6), CAROL, "layer:1")]


def test_overrides_win_over_layers_and_newer_over_older():
    base = daily(time(9), participants=(ALICE,))
    older = OverrideSpec(id=5, user_id=BOB, start=utc(2026, 3, 2, 10), end=utc(2026, 3, 2, 14))
    newer = OverrideSpec(id=6, user_id=CAROL, start=utc(2026, 3, 2, 12), end=utc(2026, 3, 2, 13))
    start, end = utc(2026, 3, 2, 8), utc(2026, 3, 2, 16)
    found = expand([base], [older, newer], "UTC", start, end)
    assert_contiguous(found, start, end)
    assert [(s.start.hour, s.user_id, s.kind) for s in found] == [
        (8, ALICE, "layer"), (10, BOB, "override"), (12, CAROL, "override"),
        (13, BOB, "override"), (14, ALICE, "layer")]
    assert found[1].source_id == 5


def test_override_covers_time_no_layer_covers():
    override = OverrideSpec(id=1, user_id=DAVE, start=utc(2026, 3, 2, 1), end=utc(2026, 3, 2, 2))
    found = expand([], [override], "UTC", utc(2026, 3, 2), utc(2026, 3, 3))
    assert found == [(utc(2026, 3, 2, 1), utc(2026, 3, 2, 2), DAVE, "override:1")]


def test_range_must_be_aware_and_ordered():
    with pytest.raises(ValueError):
        expand([], [], "UTC", datetime(2026, 1, 1), datetime(2026, 1, 2))
    with pytest.raises(ValueError):
        expand([], [], "UTC", utc(2026, 1, 2), utc(2026, 1, 1))


def test_weekend_layer_over_the_autumn_change_is_49_hours():
    """Whole days (from == until) on Sat and Sun join into one window; the weekend the
    clocks go back lasts 49 hours, and the weekday layer takes over at local midnight."""
    weekdays = LayerSpec(id=1, level=1, participants=(ALICE,), start_date=date(2026, 1, 1),
                         handoff=time(0), length=7)
    weekend = LayerSpec(id=2, level=2, participants=(BOB,), start_date=date(2026, 1, 1),
                        handoff=time(0), restriction=Restriction(frozenset({5, 6}), time(0),
                                                                 time(0)))
    start, end = utc(2026, 10, 23), utc(2026, 10, 28)
    found = expand([weekdays, weekend], [], "Europe/Berlin", start, end)
    assert_contiguous(found, start, end)
    bob = [s for s in found if s.user_id == BOB]
    assert len(bob) == 1
    assert local(bob[0].start, "Europe/Berlin") == datetime(2026, 10, 24, 0)
    assert local(bob[0].end, "Europe/Berlin") == datetime(2026, 10, 26, 0)
    assert bob[0].end - bob[0].start == timedelta(hours=49)
