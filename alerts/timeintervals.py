"""Alertmanager's time intervals (``time_intervals`` / ``mute_time_intervals``): weekdays,
times of day, days of the month, months and years, in an IANA location.

An entry matches when every field it sets matches (an empty entry matches always); a
named interval matches when any of its entries does. Times of day: start inclusive,
end exclusive, minute precision, ``24:00`` allowed as an end. Negative days of the month
count from its end (-1 is the last day).
"""

import calendar
import re
from dataclasses import dataclass, field
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

WEEKDAYS = {name: i for i, name in enumerate(
    ["sunday", "monday", "tuesday", "wednesday", "thursday", "friday", "saturday"])}
MONTHS = {name: i for i, name in enumerate(
    ["january", "february", "march", "april", "may", "june", "july", "august", "september",
     "october", "november", "december"], start=1)}
_TIME = re.compile(r"^(\d{1,2}):(\d{2})$")
FIELDS = {"times", "weekdays", "days_of_month", "months", "years", "location"}


class IntervalError(ValueError):
    def __init__(self, path, message):
        super().__init__(message)
        self.path = path


@dataclass
class TimeInterval:
    times: list = field(default_factory=list)        # [(start_minute, end_minute)]
    weekdays: list = field(default_factory=list)     # [(a, b)] with sunday = 0
    days_of_month: list = field(default_factory=list)
    months: list = field(default_factory=list)
    years: list = field(default_factory=list)
    location: ZoneInfo | None = None

    def contains(self, moment):
        if self.location is not None:
            moment = moment.astimezone(self.location)
        if self.times:
            minute = moment.hour * 60 + moment.minute
            if not any(start <= minute < end for start, end in self.times):
                return False
        if self.weekdays:
            day = (moment.weekday() + 1) % 7  # Python: monday = 0; Go: sunday = 0
            if not any(a <= day <= b for a, b in self.weekdays):
                return False
        if self.days_of_month:
            length = calendar.monthrange(moment.year, moment.month)[1]
            if not any(_in_month_range(moment.day, a, b, length) for a, b in self.days_of_month):
                return False
        if self.months and not any(a <= moment.month <= b for a, b in self.months):
            return False
        return not self.years or any(a <= moment.year <= b for a, b in self.years)


def _in_month_range(day, begin, end, length):
    if begin < 0:
        begin = length + begin + 1
    if end < 0:
        end = length + end + 1
    return max(begin, 1) <= day <= min(end, length)


def _range(path, text, parse_item, low=None, high=None, signed=False):
    text = str(text).strip().lower()
    parts = text.split(":")
    if len(parts) > 2 or not all(parts):
        raise IntervalError(path, f"{text!r} is not a value or a range a:b")
    values = [parse_item(path, p) for p in parts]
    a, b = values[0], values[-1]
    for v in (a, b):
        if low is not None and not low <= abs(v) <= high:
            raise IntervalError(path, f"{v} is outside {low}..{high}")
    if a > b and (not signed or (a > 0) == (b > 0)):
        raise IntervalError(path, f"{text!r}: the start is after the end")
    return a, b


def _named(table, what):
    def parse(path, text):
        if text in table:
            return table[text]
        if text.lstrip("-").isdigit() and what == "month" and 1 <= int(text) <= 12:
            return int(text)
        raise IntervalError(path, f"{text!r} is not a {what}")
    return parse


def _number(path, text):
    try:
        return int(text)
    except ValueError:
        raise IntervalError(path, f"{text!r} is not a number") from None


def _minutes(path, text, *, end):
    match = _TIME.match(str(text).strip())
    if not match:
        raise IntervalError(path, f"{text!r} is not a time HH:MM")
    hour, minute = int(match.group(1)), int(match.group(2))
    if minute > 59 or hour > 24 or hour == 24 and (minute or not end):
        raise IntervalError(path, f"{text!r} is not a valid time of day")
    return hour * 60 + minute


def parse_interval(data, path):
    """One entry of a named interval's ``time_intervals`` list."""
    if data is None:
        return TimeInterval()
    if not isinstance(data, dict):
        raise IntervalError(path, "expected a mapping")
    unknown = set(data) - FIELDS
    if unknown:
        raise IntervalError(f"{path}.{sorted(unknown)[0]}", "unknown field")
    result = TimeInterval()
    for i, item in enumerate(_as_list(data.get("times"), f"{path}.times")):
        item_path = f"{path}.times[{i}]"
        if not isinstance(item, dict) or set(item) != {"start_time", "end_time"}:
            raise IntervalError(item_path, "expected start_time and end_time")
        start = _minutes(f"{item_path}.start_time", item["start_time"], end=False)
        end = _minutes(f"{item_path}.end_time", item["end_time"], end=True)
        if start >= end:
            raise IntervalError(item_path, "start_time must be before end_time")
        result.times.append((start, end))
    for i, text in enumerate(_as_list(data.get("weekdays"), f"{path}.weekdays")):
        result.weekdays.append(_range(f"{path}.weekdays[{i}]", text,
                                      _named(WEEKDAYS, "weekday")))
    for i, text in enumerate(_as_list(data.get("days_of_month"), f"{path}.days_of_month")):
        result.days_of_month.append(_range(f"{path}.days_of_month[{i}]", text, _number, 1, 31,
                                           signed=True))
    for i, text in enumerate(_as_list(data.get("months"), f"{path}.months")):
        result.months.append(_range(f"{path}.months[{i}]", text, _named(MONTHS, "month")))
    for i, text in enumerate(_as_list(data.get("years"), f"{path}.years")):
        result.years.append(_range(f"{path}.years[{i}]", text, _number))
    if data.get("location") not in (None, ""):
        try:
            result.location = ZoneInfo(str(data["location"]))
        except (ZoneInfoNotFoundError, ValueError):
            raise IntervalError(f"{path}.location",
                                f"{data['location']!r} is not an IANA time zone") from None
    return result


def _as_list(value, path):
    if value is None:
        return []
    if not isinstance(value, list):
        raise IntervalError(path, "expected a list")
    return value


def active(intervals, moment):
    """True when ``moment`` falls in any of ``intervals``."""
    return any(interval.contains(moment) for interval in intervals)
