"""Cron strings: the next fire time, shared by cron workflows (the engine) and schedules (the SDK).

Pure functions, no I/O::

    >>> cron_next_fire("@every 30s", 100.0)
    130.0
    >>> cron_next_fire("0 * * * *", 0.0)      # top of the next hour, UTC
    3600.0
"""

from __future__ import annotations

import re
from datetime import UTC, datetime, tzinfo

from croniter import croniter

from orchestrator.errors import InvalidArgumentError

_EVERY = re.compile(r"^@every\s+(\d+(?:\.\d+)?)(ms|s|m|h|d)$")
_UNIT_SECONDS = {"ms": 0.001, "s": 1.0, "m": 60.0, "h": 3600.0, "d": 86400.0}

CRON_HINT = "Use 5 fields (minute hour day-of-month month day-of-week), e.g. '*/15 * * * *', or '@every 30s'."


def cron_next_fire(schedule: str, after: float, tz: tzinfo = UTC, *, day_or: bool = True) -> float:
    """Next fire time (epoch seconds) of a cron string strictly after ``after``.

    Standard 5-field cron (``"*/5 * * * *"``), 6 fields with seconds first is not
    accepted; ``@hourly``/``@daily``-style macros and ``@every 30s`` are. The
    fields are read as wall-clock time in ``tz`` (UTC by default), so
    ``"0 9 * * *"`` with ``ZoneInfo("Europe/Paris")`` fires at 09:00 Paris time,
    across daylight-saving changes. ``@every`` ignores ``tz``. With
    ``day_or=False`` a time must match both day-of-month and day-of-week
    (standard cron matches either when both are restricted).

    Raises :class:`~orchestrator.errors.InvalidArgumentError` naming the
    problem when the string does not parse.
    """
    m = _EVERY.match(schedule.strip())
    if m:
        return after + float(m.group(1)) * _UNIT_SECONDS[m.group(2)]
    try:
        it = croniter(schedule, datetime.fromtimestamp(after, tz), day_or=day_or)
        return float(it.get_next(float))
    except (ValueError, KeyError) as exc:
        raise InvalidArgumentError(f"invalid cron schedule {schedule!r}: {exc}", hint=CRON_HINT) from exc
