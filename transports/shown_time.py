"""When a message was written, as people read it, in both clients: its local time of day
("17:05") and its local day ("Today", "Yesterday", "Tuesday", "Tuesday 17 November").

A history spans days, so a transcript shows the day above the first message of each. A
timestamp of 0 is unknown: it has no time and no day. What "now" is comes from the caller.
"""

from __future__ import annotations

from datetime import date, datetime

WEEKDAY_NAMED = 5
"""The days before yesterday named by their weekday alone ("Tuesday"); older ones have a date.
Not 6: a week ago would then bear today's weekday, as if it were today."""
_WEEKDAYS = ("Monday", "Tuesday", "Wednesday", "Thursday", "Friday", "Saturday", "Sunday")
_MONTHS = (
    "January",
    "February",
    "March",
    "April",
    "May",
    "June",
    "July",
    "August",
    "September",
    "October",
    "November",
    "December",
)
"""English names, whatever the locale, as everything else both clients say."""


def local_day(ts: float) -> date | None:
    """The local day of ``ts`` (None if it is unknown)."""
    return datetime.fromtimestamp(ts).date() if ts else None


def same_day(first: float, second: float) -> bool:
    """Whether ``first`` and ``second`` fall on the same local day (never if one is unknown)."""
    day = local_day(first)
    return day is not None and day == local_day(second)


def clock_time(ts: float) -> str:
    """The local time of day of ``ts``, "17:05" ("" if it is unknown)."""
    return datetime.fromtimestamp(ts).strftime("%H:%M") if ts else ""


def day_label(ts: float, now: float) -> str:
    """The local day of ``ts`` as seen at ``now``: "Today", "Yesterday", the weekday for the
    :data:`WEEKDAY_NAMED` days before ("Tuesday"), else the weekday and the date, with the
    year unless it is the current one ("Tuesday 17 November", "Monday 17 November 2025"); a
    day after today (a clock behind the server's) has a date too. "" if ``ts`` is unknown."""
    day = local_day(ts)
    if day is None:
        return ""
    today = datetime.fromtimestamp(now).date()
    ago = (today - day).days
    if ago == 0:
        return "Today"
    if ago == 1:
        return "Yesterday"
    weekday = _WEEKDAYS[day.weekday()]
    if 1 < ago <= 1 + WEEKDAY_NAMED:
        return weekday
    year = "" if day.year == today.year else f" {day.year}"
    return f"{weekday} {day.day} {_MONTHS[day.month - 1]}{year}"
