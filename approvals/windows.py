"""When freeze and maintenance windows are open: wall-clock times in a named time zone.

A window is either *weekly* ("Fri 18:00 – Mon 08:00, Asia/Shanghai": every week, from a
weekday and time to a weekday and time) or *dated* ("2026-10-01 00:00 – 2026-10-08 00:00,
Asia/Shanghai": once). Times are what the clocks on the wall say in the window's zone,
so "18:00 Europe/Berlin" is 17:00 UTC in winter and 16:00 UTC in summer.

Daylight saving: each edge is converted from local wall time to an instant with
``zoneinfo`` and ``fold=0``. A wall time that does not exist (the hour skipped in spring)
is read with the offset from before the jump, i.e. one hour later on the new clock
(02:30 becomes 03:30); a wall time that happens twice (autumn) is its first occurrence.
A window therefore lasts its wall-clock length, one hour more or less on the nights
the clocks change. All comparisons are between aware instants.

Pure functions of a ``Window``-like object (``kind``, ``timezone``, ``start_weekday``,
``end_weekday``, ``start_date``, ``end_date``, ``start_time``, ``end_time``): no database.
"""

from datetime import UTC, datetime, timedelta
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

WEEKLY, DATED = "weekly", "dated"


def zone(name):
    """The ``ZoneInfo`` for an IANA name; ``ValueError`` when there is none."""
    try:
        return ZoneInfo(name)
    except (ZoneInfoNotFoundError, ValueError, TypeError):
        raise ValueError(f"unknown time zone {name!r}") from None


def _instant(local, tz):
    return local.replace(tzinfo=tz, fold=0).astimezone(UTC)


def _weekly_length(window):
    """Days from the start weekday to the end weekday (a full week when they meet)."""
    days = (window.end_weekday - window.start_weekday) % 7
    if days == 0 and window.end_time <= window.start_time:
        days = 7
    return days


def occurrences(window, since, until):
    """(start, end) instants (UTC) of the window's occurrences that overlap
    ``[since, until)``, in order."""
    tz = zone(window.timezone)
    if window.kind == DATED:
        start = _instant(datetime.combine(window.start_date, window.start_time), tz)
        end = _instant(datetime.combine(window.end_date, window.end_time), tz)
        return [(start, end)] if start < until and end > since and start < end else []
    found = []
    first = since.astimezone(tz).date() - timedelta(days=8)
    last = until.astimezone(tz).date() + timedelta(days=1)
    length = _weekly_length(window)
    day = first + timedelta(days=(window.start_weekday - first.weekday()) % 7)
    while day <= last:
        local_start = datetime.combine(day, window.start_time)
        local_end = datetime.combine(day + timedelta(days=length), window.end_time)
        start, end = _instant(local_start, tz), _instant(local_end, tz)
        if start < until and end > since and start < end:
            found.append((start, end))
        day += timedelta(days=7)
    return found


def open_at(window, at):
    """The (start, end) of the occurrence open at instant ``at``, or None."""
    for start, end in occurrences(window, at, at + timedelta(microseconds=1)):
        if start <= at < end:
            return start, end
    return None


def describe(window):
    """"Fri 18:00 – Mon 08:00 Asia/Shanghai" or "2026-10-01 00:00 – 2026-10-08 00:00 UTC"."""
    days = ("Mon", "Tue", "Wed", "Thu", "Fri", "Sat", "Sun")
    if window.kind == DATED:
        return (f"{window.start_date:%Y-%m-%d} {window.start_time:%H:%M} – "
                f"{window.end_date:%Y-%m-%d} {window.end_time:%H:%M} {window.timezone}")
    return (f"{days[window.start_weekday]} {window.start_time:%H:%M} – "
            f"{days[window.end_weekday]} {window.end_time:%H:%M} {window.timezone}")
