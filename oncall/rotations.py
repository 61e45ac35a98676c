"""Expanding a schedule's layers and overrides into shifts: pure functions, no Django.

A *layer* is a rotation: participants in order, a shift length (N days, or N hours), a
hand-off wall-clock time and a start date, all in the schedule's IANA zone, optionally
restricted to weekly windows ("Mon–Fri 09:00–18:00"). Shift ``k`` of a layer begins at
the local wall-clock time ``start_date + handoff + k × length`` and belongs to
participant ``k mod len(participants)``. Higher layers win where they cover an instant;
overrides (one-off ranges of instants) win over every layer, the latest override over
earlier ones.

The DST rule. Every boundary (hand-off, restriction edge) is a *local wall-clock* time,
turned into an instant with ``zoneinfo``:

- a wall time that happens twice (autumn, fall back) is its **first** occurrence
  (``fold=0``);
- a wall time that does not exist (spring forward) is the **first valid instant after
  the gap**, i.e. the instant the clocks jump (a hand-off "daily at 02:30" in
  Europe/Berlin on the last Sunday of March is 03:00 CEST = 01:00 UTC).

This mapping never goes backwards in time, and a shift ends exactly where the next one
begins (both are the same boundary), so consecutive shifts always touch: no gap, no
overlap. A shift therefore lasts its wall-clock length, one hour more or less across a
change; a shift that falls wholly inside a gap (a 1-hour rotation at 02:00 on the
spring-forward night) lasts zero seconds and is dropped, the rotation still advancing.

Every instant here is an aware ``datetime``; results are in UTC. Intervals are
half-open ``[start, end)``: whoever takes over at a hand-off is on call at that instant.
"""

from dataclasses import dataclass
from datetime import UTC, date, datetime, time, timedelta
from typing import NamedTuple
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

DAYS, HOURS = "days", "hours"
LAYER, OVERRIDE = "layer", "override"


def zone(name):
    """The ``ZoneInfo`` for an IANA name; ``ValueError`` when there is none."""
    if not isinstance(name, str) or not name.strip():
        raise ValueError(f"unknown time zone {name!r}")
    try:
        return ZoneInfo(name)
    except (ZoneInfoNotFoundError, ValueError, TypeError):
        raise ValueError(f"unknown time zone {name!r}") from None


def to_instant(local, tz):
    """The UTC instant of naive wall-clock time ``local`` in ``tz`` (the DST rule above)."""
    first = local.replace(tzinfo=tz, fold=0)
    if first.astimezone(UTC).astimezone(tz).replace(tzinfo=None) == local:
        return first.astimezone(UTC)
    # In a gap: fold=1 reads it with the offset after the jump (an instant before the
    # jump), fold=0 with the offset before (an instant after). The jump lies between;
    # find it to the second. Zones jump on whole seconds.
    low = local.replace(tzinfo=tz, fold=1).astimezone(UTC)
    high = first.astimezone(UTC)
    if low > high:
        low, high = high, low
    after = high.astimezone(tz).utcoffset()
    lo, hi = 0, int((high - low).total_seconds())
    while lo < hi:
        mid = (lo + hi) // 2
        if (low + timedelta(seconds=mid)).astimezone(tz).utcoffset() == after:
            hi = mid
        else:
            lo = mid + 1
    return low + timedelta(seconds=lo)


def local_wall(instant, tz):
    """The naive wall-clock time in ``tz`` of an aware instant."""
    return instant.astimezone(tz).replace(tzinfo=None)


@dataclass(frozen=True)
class Restriction:
    """Weekly windows a layer is limited to: on each of ``days`` (0 = Monday), from
    ``start`` to ``end`` wall-clock time; ``end <= start`` runs into the next day,
    ``end == start`` is a whole day."""

    days: frozenset
    start: time
    end: time

    def windows(self, tz, since, until):
        """(start, end) instants of the windows overlapping ``[since, until)``."""
        found = []
        day = local_wall(since, tz).date() - timedelta(days=2)
        last = local_wall(until, tz).date() + timedelta(days=1)
        while day <= last:
            if day.weekday() in self.days:
                end_day = day if self.end > self.start else day + timedelta(days=1)
                start = to_instant(datetime.combine(day, self.start), tz)
                end = to_instant(datetime.combine(end_day, self.end), tz)
                if start < until and end > since and start < end:
                    if found and found[-1][1] >= start:  # adjacent or overlapping: join
                        found[-1] = (found[-1][0], max(found[-1][1], end))
                    else:
                        found.append((start, end))
            day += timedelta(days=1)
        return found


@dataclass(frozen=True)
class LayerSpec:
    """One layer as plain data. ``length`` ``unit`` (DAYS or HOURS) is the shift length;
    ``level``: higher wins."""

    id: int
    level: int
    participants: tuple
    start_date: date
    handoff: time
    length: int = 1
    unit: str = DAYS
    restriction: Restriction | None = None

    def __post_init__(self):
        if not self.participants:
            raise ValueError("a rotation needs at least one participant")
        if self.length < 1 or self.unit not in (DAYS, HOURS):
            raise ValueError("a shift is at least 1 hour or 1 day long")

    @property
    def step(self):
        return timedelta(days=self.length) if self.unit == DAYS else timedelta(hours=self.length)

    def boundary(self, k, tz):
        """The instant shift ``k`` begins (shift ``k - 1`` ends)."""
        origin = datetime.combine(self.start_date, self.handoff)
        return to_instant(origin + k * self.step, tz)


@dataclass(frozen=True)
class OverrideSpec:
    """``user_id`` takes ``[start, end)`` (aware instants); a higher ``id`` is newer."""

    id: int
    user_id: int
    start: datetime
    end: datetime


class Shift(NamedTuple):
    start: datetime
    end: datetime
    user_id: int
    source: str  # "layer:<id>" or "override:<id>"

    @property
    def kind(self):
        return self.source.split(":", 1)[0]

    @property
    def source_id(self):
        return int(self.source.split(":", 1)[1])


def _check_range(start, end):
    if start.tzinfo is None or end.tzinfo is None:
        raise ValueError("start and end must be aware datetimes")
    if end < start:
        raise ValueError("the end is before the start")


def layer_shifts(layer, tz, start, end):
    """The shifts of one layer overlapping ``[start, end)``, clipped to it, restriction
    applied, in order."""
    _check_range(start, end)
    origin = datetime.combine(layer.start_date, layer.handoff)
    first_local = local_wall(start, tz)
    k = 0 if first_local <= origin else max(0, int((first_local - origin) / layer.step) - 1)
    # Boundaries are monotonic: step forward until shift k reaches ``start``.
    while layer.boundary(k + 1, tz) <= start:
        k += 1
    found = []
    count = len(layer.participants)
    begin = layer.boundary(k, tz)
    while begin < end:
        finish = layer.boundary(k + 1, tz)
        lo, hi = max(begin, start), min(finish, end)
        if lo < hi:
            found.append(Shift(lo, hi, layer.participants[k % count], f"{LAYER}:{layer.id}"))
        k += 1
        begin = finish
    if layer.restriction is None or not found:
        return found
    windows = layer.restriction.windows(tz, start, end)
    clipped = []
    first = 0  # shifts and windows are both sorted and disjoint: walk them together
    for shift in found:
        while first < len(windows) and windows[first][1] <= shift.start:
            first += 1
        i = first
        while i < len(windows) and windows[i][0] < shift.end:
            lo, hi = max(shift.start, windows[i][0]), min(shift.end, windows[i][1])
            if lo < hi:
                clipped.append(shift._replace(start=lo, end=hi))
            i += 1
    return clipped


def expand(layers, overrides, time_zone, start, end):
    """Who is on call over ``[start, end)``: a list of ``Shift`` in time order, clipped
    to the range, never overlapping. Where nobody is on call there is no shift.
    Adjacent pieces of the same person from the same source are joined."""
    _check_range(start, end)
    tz = zone(time_zone) if isinstance(time_zone, str) else time_zone
    # (priority, pieces): overrides above every layer, newer overrides above older.
    ranked = []
    for layer in layers:
        ranked.append(((0, layer.level, layer.id), layer_shifts(layer, tz, start, end)))
    for override in overrides:
        lo, hi = max(override.start, start), min(override.end, end)
        if lo < hi:
            ranked.append(((1, 0, override.id),
                           [Shift(lo, hi, override.user_id, f"{OVERRIDE}:{override.id}")]))
    points = sorted({start, end} | {p for _, pieces in ranked for s in pieces
                                    for p in (s.start, s.end)})
    ranked.sort(key=lambda item: item[0], reverse=True)
    cursors = [0] * len(ranked)  # each source's pieces are sorted and disjoint
    result = []
    for lo, hi in zip(points, points[1:], strict=False):
        winner = None
        for i, (_, pieces) in enumerate(ranked):
            while cursors[i] < len(pieces) and pieces[cursors[i]].end <= lo:
                cursors[i] += 1
            if cursors[i] < len(pieces) and pieces[cursors[i]].start <= lo:
                winner = pieces[cursors[i]]
                break
        if winner is None:
            continue
        last = result[-1] if result else None
        if (last is not None and last.end == lo and last.user_id == winner.user_id
                and last.source == winner.source):
            result[-1] = last._replace(end=hi)
        else:
            result.append(Shift(lo, hi, winner.user_id, winner.source))
    return result
