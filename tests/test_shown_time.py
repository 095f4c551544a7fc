"""When a message was written, as people read it (``transports.shown_time``).

The times are made from local dates (``datetime(...).timestamp()``), so the tests hold in any
time zone; those about the zone itself set ``TZ``."""

from __future__ import annotations

import time
from collections.abc import Iterator
from datetime import datetime

import pytest

from sealchat.transports.shown_time import (
    WEEKDAY_NAMED,
    clock_time,
    day_label,
    local_day,
    same_day,
)


def at(*when: int) -> float:
    """The timestamp of a local date and time."""
    return datetime(*when).timestamp()


NOW = at(2026, 11, 24, 9, 30)  # a Tuesday morning


@pytest.mark.parametrize(
    ("ts", "label"),
    [
        (at(2026, 11, 24, 0, 1), "Today"),
        (at(2026, 11, 24, 23, 59), "Today"),  # later today than now: still today
        (at(2026, 11, 23, 23, 59), "Yesterday"),
        (at(2026, 11, 23, 0, 0), "Yesterday"),
        (at(2026, 11, 22, 12, 0), "Sunday"),
        (at(2026, 11, 18, 17, 5), "Wednesday"),  # the 5 days before yesterday
        (at(2026, 11, 17, 17, 5), "Tuesday 17 November"),  # a week ago: not "Tuesday"
        (at(2026, 1, 1, 12, 0), "Thursday 1 January"),
        (at(2025, 11, 17, 17, 5), "Monday 17 November 2025"),
        (at(2026, 11, 25, 8, 0), "Wednesday 25 November"),  # ahead of this clock
        (at(2027, 1, 1, 8, 0), "Friday 1 January 2027"),
    ],
)
def test_a_day_is_named_as_seen_from_now(ts: float, label: str) -> None:
    assert day_label(ts, NOW) == label


def test_weekdays_name_the_five_days_before_yesterday() -> None:
    assert WEEKDAY_NAMED == 5
    labels = [day_label(at(2026, 11, 24 - ago, 12, 0), NOW) for ago in range(9)]
    assert labels == [
        "Today",
        "Yesterday",
        "Sunday",
        "Saturday",
        "Friday",
        "Thursday",
        "Wednesday",
        "Tuesday 17 November",
        "Monday 16 November",
    ]


def test_days_count_across_the_new_year() -> None:
    new_year = at(2027, 1, 2, 10, 0)
    assert day_label(at(2026, 12, 31, 22, 0), new_year) == "Thursday"
    assert day_label(at(2026, 12, 27, 22, 0), new_year) == "Sunday"
    assert day_label(at(2026, 12, 26, 22, 0), new_year) == "Saturday 26 December 2026"


def test_an_unknown_time_has_no_day() -> None:
    assert day_label(0, NOW) == ""
    assert local_day(0) is None
    assert clock_time(0) == ""
    assert not same_day(0, 0)
    assert not same_day(0, NOW)
    assert not same_day(NOW, 0)


def test_the_same_day_runs_from_midnight_to_midnight() -> None:
    assert same_day(at(2026, 11, 24, 0, 0), at(2026, 11, 24, 23, 59, 59))
    assert not same_day(at(2026, 11, 23, 23, 59, 59), at(2026, 11, 24, 0, 0))
    assert not same_day(at(2026, 11, 24, 12, 0), at(2025, 11, 24, 12, 0))
    assert local_day(at(2026, 11, 24, 17, 5)) == datetime(2026, 11, 24).date()


def test_the_time_of_day_has_hours_and_minutes() -> None:
    assert clock_time(at(2026, 11, 24, 7, 5, 59)) == "07:05"
    assert clock_time(at(2026, 11, 24, 17, 30)) == "17:30"


@pytest.fixture
def zone(monkeypatch: pytest.MonkeyPatch) -> Iterator[pytest.MonkeyPatch]:
    """``TZ`` may be set (then ``time.tzset()``); the zone is as before afterwards."""
    yield monkeypatch
    monkeypatch.undo()
    time.tzset()


def test_days_and_times_are_those_of_the_local_time_zone(zone: pytest.MonkeyPatch) -> None:
    late_utc = 1_795_563_000.0  # 2026-11-24 23:30 UTC
    morning_utc = 1_795_518_000.0  # 2026-11-24 11:00 UTC
    zone.setenv("TZ", "UTC0")
    time.tzset()
    assert clock_time(late_utc) == "23:30"
    assert same_day(late_utc, morning_utc)
    assert day_label(late_utc, morning_utc) == "Today"
    zone.setenv("TZ", "JST-9")  # 9 hours ahead: the late one is tomorrow morning there
    time.tzset()
    assert clock_time(late_utc) == "08:30"
    assert not same_day(late_utc, morning_utc)
    assert day_label(morning_utc, late_utc) == "Yesterday"
