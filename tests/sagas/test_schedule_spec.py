"""Fire times of a ScheduleSpec: pure functions, no server."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from zoneinfo import ZoneInfo

from sagas.client import ScheduleCalendarSpec, ScheduleIntervalSpec, ScheduleRange, ScheduleSpec
from sagas.client._schedule import calendar_to_cron, fire_times, jitter_delay, next_fire_time, rfc3339

T0 = datetime(2026, 3, 27, tzinfo=UTC).timestamp()  # a Friday, two days before Paris moves to summer time


def utc(t: float) -> str:
    return rfc3339(t)


def test_interval_with_offset_is_aligned_to_the_epoch() -> None:
    spec = ScheduleSpec(intervals=[ScheduleIntervalSpec(every=timedelta(hours=1), offset=timedelta(minutes=5))])
    assert [utc(t) for t in fire_times(spec, T0, T0 + 3 * 3600, limit=10)] == [
        "2026-03-27T00:05:00Z", "2026-03-27T01:05:00Z", "2026-03-27T02:05:00Z",
    ]


def test_cron_in_a_time_zone_follows_daylight_saving() -> None:
    spec = ScheduleSpec(cron_expressions=["0 9 * * *"], time_zone_name="Europe/Paris")
    times = fire_times(spec, T0, T0 + 4 * 86400, limit=10)
    assert [utc(t) for t in times] == [
        "2026-03-27T08:00:00Z", "2026-03-28T08:00:00Z", "2026-03-29T07:00:00Z", "2026-03-30T07:00:00Z",
    ]
    assert {datetime.fromtimestamp(t, ZoneInfo("Europe/Paris")).hour for t in times} == {9}


def test_union_skip_and_bounds() -> None:
    weekdays_9 = ScheduleCalendarSpec(hour=[ScheduleRange(9)], day_of_week=[ScheduleRange(1, 5)])
    assert calendar_to_cron(weekdays_9) == "0 9 1-31 1-12 1-5 0 *"
    spec = ScheduleSpec(
        calendars=[weekdays_9],
        cron_expressions=["30 12 * * *"],
        skip=[ScheduleCalendarSpec(hour=[ScheduleRange(9)], day_of_month=[ScheduleRange(30)])],
        start_at=datetime(2026, 3, 27, 10, tzinfo=UTC),
        end_at=datetime(2026, 3, 31, 0, tzinfo=UTC),
    )
    assert [utc(t) for t in fire_times(spec, T0, T0 + 30 * 86400, limit=20)] == [
        "2026-03-27T12:30:00Z",  # 09:00 Friday is before start_at
        "2026-03-28T12:30:00Z",  # weekend: no 09:00
        "2026-03-29T12:30:00Z",
        "2026-03-30T12:30:00Z",  # Monday 30th: 09:00 skipped
    ]
    assert next_fire_time(spec, datetime(2026, 3, 31, tzinfo=UTC).timestamp()) is None


def test_jitter_is_deterministic_and_bounded() -> None:
    jitter = timedelta(minutes=10)
    delays = [jitter_delay("s", T0 + i * 3600, jitter) for i in range(200)]
    assert delays == [jitter_delay("s", T0 + i * 3600, jitter) for i in range(200)]
    assert all(0 <= d < 600 for d in delays) and len(set(delays)) > 150
    assert jitter_delay("s", T0, None) == 0.0
    assert jitter_delay("other", T0, jitter) != jitter_delay("s", T0, jitter)


def test_an_empty_spec_never_fires() -> None:
    assert next_fire_time(ScheduleSpec(), T0) is None
