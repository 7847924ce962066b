"""Schedules (mirrors the schedule classes of ``temporalio.client``).

::

    from sagas.client import (
        Client, Schedule, ScheduleActionStartWorkflow, ScheduleIntervalSpec, ScheduleSpec,
    )

    handle = await client.create_schedule(
        "nightly-report",
        Schedule(
            action=ScheduleActionStartWorkflow(Report.run, "eu", id="report", task_queue="reports"),
            spec=ScheduleSpec(cron_expressions=["0 2 * * *"], time_zone_name="Europe/Paris"),
        ),
    )
    await handle.pause(note="maintenance")
    print((await handle.describe()).info.next_action_times)

How it works: each schedule is a *system workflow* (type ``sagas.Schedule``,
workflow id ``sagas-schedule:{id}``, task queue ``sagas-system``) run by the
server's own system worker. It sleeps on a durable timer until the next fire
time, starts the action's workflow as an abandoned child with workflow id
``{action id}-{fire time, RFC 3339 in UTC to the second}`` (so a fire is never
started twice), follows the runs it started to apply the overlap policy, and
takes pause / unpause / trigger / backfill / update / delete as workflow
updates and ``describe`` as a query. Nothing here needs a cron daemon: a
schedule survives server restarts like any workflow.

Fire times come from :class:`ScheduleSpec`: the union of its cron
expressions, intervals and calendars, minus ``skip``, between ``start_at``
and ``end_at``, read in ``time_zone_name``; ``jitter`` delays each fire by a
deterministic amount in ``[0, jitter)``.
"""

from __future__ import annotations

import asyncio
import hashlib
import inspect
import math
from collections.abc import AsyncIterator, Awaitable, Callable, Mapping, Sequence
from dataclasses import dataclass, field, replace
from datetime import UTC, datetime, timedelta, tzinfo
from enum import IntEnum
from typing import TYPE_CHECKING, Any
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from orchestrator.api.cron import cron_next_fire
from orchestrator.errors import InvalidArgumentError
from sagas.common import RetryPolicy
from sagas.converter import DataConverter
from sagas.converter import default as default_converter
from sagas.exceptions import (
    InvalidScheduleError,
    RPCError,
    ScheduleAlreadyRunningError,
    ScheduleNotFoundError,
    WorkflowAlreadyStartedError,
    WorkflowNotFoundError,
    WorkflowQueryFailedError,
    WorkflowUpdateFailedError,
)
from sagas.workflow._instance import workflow_type_name

if TYPE_CHECKING:
    from sagas.client._client import Client, WorkflowHandle

SYSTEM_TASK_QUEUE = "sagas-system"
"""Task queue of the system workflows (schedules, batch operations), served by the server itself."""

SCHEDULE_WORKFLOW_TYPE = "sagas.Schedule"
SCHEDULE_WORKFLOW_ID_PREFIX = "sagas-schedule:"

SCHEDULED_BY_ID_ATTRIBUTE = "SagasScheduledById"
"""Search attribute set on every run a schedule starts: the schedule id (``SagasScheduledById = 'nightly'``)."""
SCHEDULED_START_TIME_ATTRIBUTE = "SagasScheduledStartTime"
"""Search attribute set on every run a schedule starts: the nominal fire time (RFC 3339, UTC)."""

MAX_RECENT_ACTIONS = 10
UPDATE_TIMEOUT = 60.0
"""Seconds a schedule change may take before the client gives up (the system worker is not running)."""
NEXT_ACTION_TIMES = 10


class ScheduleOverlapPolicy(IntEnum):
    """What a schedule does when an action is due while a run it started is still open.

    Example::

        policy = SchedulePolicy(overlap=ScheduleOverlapPolicy.BUFFER_ONE)
        await client.get_schedule_handle("nightly-report").trigger(overlap=ScheduleOverlapPolicy.ALLOW_ALL)
    """

    SKIP = 1
    """Do not start; count the action as skipped (the default)."""
    BUFFER_ONE = 2
    """Start it as soon as the open run closes; at most one waits, later ones are skipped."""
    BUFFER_ALL = 3
    """Start each, one after the other, as the open runs close."""
    CANCEL_OTHER = 4
    """Request cancellation of the open run, and start this one once it has closed."""
    TERMINATE_OTHER = 5
    """Terminate the open run and start this one at once."""
    ALLOW_ALL = 6
    """Start it at once, whatever else is running."""


@dataclass
class ScheduleRange:
    """Inclusive range ``start..end`` with ``step`` (``end`` < ``start`` means just ``start``; step 0 means 1).

    >>> from sagas.client import ScheduleCalendarSpec, ScheduleRange
    >>> weekdays = ScheduleRange(1, 5)             # Monday..Friday
    >>> every_15_minutes = ScheduleRange(0, 59, step=15)
    >>> ScheduleCalendarSpec(hour=[ScheduleRange(9)], minute=[every_15_minutes], day_of_week=[weekdays]).hour
    [ScheduleRange(start=9, end=0, step=0)]
    """

    start: int
    end: int = 0
    step: int = 0


@dataclass
class ScheduleCalendarSpec:
    """Fire times by calendar fields, all of which must match (like cron, but day-of-month AND day-of-week).

    Each field is a list of ranges; the defaults fire at midnight every day.
    ``day_of_week`` counts from 0 = Sunday; ``year`` empty means every year.

    Example (09:30 on the first day of each quarter)::

        ScheduleCalendarSpec(
            hour=[ScheduleRange(9)],
            minute=[ScheduleRange(30)],
            day_of_month=[ScheduleRange(1)],
            month=[ScheduleRange(1, 12, step=3)],
            comment="quarter start",
        )
    """

    second: Sequence[ScheduleRange] = (ScheduleRange(0),)
    minute: Sequence[ScheduleRange] = (ScheduleRange(0),)
    hour: Sequence[ScheduleRange] = (ScheduleRange(0),)
    day_of_month: Sequence[ScheduleRange] = (ScheduleRange(1, 31),)
    month: Sequence[ScheduleRange] = (ScheduleRange(1, 12),)
    year: Sequence[ScheduleRange] = ()
    day_of_week: Sequence[ScheduleRange] = (ScheduleRange(0, 6),)
    comment: str | None = None


@dataclass
class ScheduleIntervalSpec:
    """Fire every ``every``, at ``offset`` past each multiple of ``every`` since the Unix epoch.

    ``ScheduleIntervalSpec(every=timedelta(hours=1), offset=timedelta(minutes=5))``
    fires at 00:05, 01:05, ... UTC.

    >>> from datetime import timedelta
    >>> from sagas.client import ScheduleIntervalSpec, ScheduleSpec
    >>> spec = ScheduleSpec(intervals=[ScheduleIntervalSpec(every=timedelta(hours=1), offset=timedelta(minutes=5))])
    >>> spec.intervals[0].every
    datetime.timedelta(seconds=3600)
    """

    every: timedelta
    offset: timedelta | None = None


@dataclass
class ScheduleSpec:
    """When a schedule fires: the union of ``cron_expressions``, ``intervals`` and ``calendars``.

    * ``cron_expressions``: 5-field cron strings (``"0 9 * * mon-fri"``),
      ``@hourly``-style macros or ``@every 90s``;
    * ``skip``: calendar specs whose matching times are left out;
    * ``start_at`` / ``end_at``: no fire before / after these instants;
    * ``jitter``: each fire is delayed by a deterministic amount in ``[0, jitter)``;
    * ``time_zone_name``: IANA zone the cron and calendar fields are read in
      (default UTC); intervals are zone-independent.

    Example::

        ScheduleSpec(
            cron_expressions=["0 9 * * mon-fri"],
            time_zone_name="Europe/Lisbon",
            jitter=timedelta(minutes=2),
            end_at=datetime(2027, 1, 1, tzinfo=UTC),
        )
    """

    calendars: Sequence[ScheduleCalendarSpec] = ()
    intervals: Sequence[ScheduleIntervalSpec] = ()
    cron_expressions: Sequence[str] = ()
    skip: Sequence[ScheduleCalendarSpec] = ()
    start_at: datetime | None = None
    end_at: datetime | None = None
    jitter: timedelta | None = None
    time_zone_name: str | None = None


class ScheduleAction:
    """Base of what a schedule does when it fires (only :class:`ScheduleActionStartWorkflow` today).

    Example::

        action: ScheduleAction = ScheduleActionStartWorkflow(Report.run, "eu", id="report", task_queue="reports")
    """


@dataclass(init=False)
class ScheduleActionStartWorkflow(ScheduleAction):
    """Start a workflow. Each run gets workflow id ``{id}-{fire time}``.

    Example::

        ScheduleActionStartWorkflow(Report.run, "eu", id="report", task_queue="reports")
        ScheduleActionStartWorkflow("Report", args=["eu", 3], id="report", task_queue="reports")
    """

    workflow: str
    args: Sequence[Any]
    id: str
    task_queue: str
    execution_timeout: timedelta | None
    run_timeout: timedelta | None
    task_timeout: timedelta | None
    retry_policy: RetryPolicy | None
    memo: Mapping[str, Any] | None
    search_attributes: Mapping[str, Any] | None

    def __init__(
        self,
        workflow: Any,
        arg: Any = inspect.Parameter.empty,
        *,
        args: Sequence[Any] = (),
        id: str,
        task_queue: str,
        execution_timeout: timedelta | None = None,
        run_timeout: timedelta | None = None,
        task_timeout: timedelta | None = None,
        retry_policy: RetryPolicy | None = None,
        memo: Mapping[str, Any] | None = None,
        search_attributes: Mapping[str, Any] | None = None,
    ) -> None:
        if arg is not inspect.Parameter.empty and args:
            raise ValueError("pass either arg or args=[...], not both")
        self.workflow = workflow_type_name(workflow)[0]
        self.args = [arg] if arg is not inspect.Parameter.empty else list(args)
        self.id = id
        self.task_queue = task_queue
        self.execution_timeout = execution_timeout
        self.run_timeout = run_timeout
        self.task_timeout = task_timeout
        self.retry_policy = retry_policy
        self.memo = memo
        self.search_attributes = search_attributes


@dataclass
class SchedulePolicy:
    """How a schedule treats overlapping runs and fire times it missed.

    ``catchup_window``: after an outage (server down), fire times older than
    this are not run but counted in ``num_actions_missed_catchup_window``.

    Example::

        SchedulePolicy(
            overlap=ScheduleOverlapPolicy.SKIP,
            catchup_window=timedelta(hours=1),
            pause_on_failure=True,
        )
    """

    overlap: ScheduleOverlapPolicy = ScheduleOverlapPolicy.SKIP
    catchup_window: timedelta = timedelta(days=365)
    pause_on_failure: bool = False
    """Pause the schedule when a run it started fails (or times out)."""


@dataclass
class ScheduleState:
    """Whether the schedule is paused (with a note saying why), and an optional action budget.

    With ``limited_actions``, only ``remaining_actions`` more scheduled fires
    run (triggers and backfills do not count).

    Example (run ten times, then stop)::

        ScheduleState(note="trial run", limited_actions=True, remaining_actions=10)
    """

    note: str | None = None
    paused: bool = False
    limited_actions: bool = False
    remaining_actions: int = 0


@dataclass
class Schedule:
    """A schedule: what to do (``action``), when (``spec``), how (``policy``), and its ``state``.

    Example::

        await client.create_schedule(
            "nightly-report",
            Schedule(
                action=ScheduleActionStartWorkflow(Report.run, "eu", id="report", task_queue="reports"),
                spec=ScheduleSpec(cron_expressions=["0 2 * * *"]),
            ),
        )
    """

    action: ScheduleActionStartWorkflow
    spec: ScheduleSpec
    policy: SchedulePolicy = field(default_factory=SchedulePolicy)
    state: ScheduleState = field(default_factory=ScheduleState)


@dataclass
class ScheduleBackfill:
    """Run the fire times of the spec in ``[start_at, end_at]`` now (past times too), with ``overlap``.

    Backfills ignore the catch-up window and the pause.

    Example (run the fire times of last week again)::

        now = datetime.now(UTC)
        await client.get_schedule_handle("nightly-report").backfill(
            ScheduleBackfill(start_at=now - timedelta(days=7), end_at=now, overlap=ScheduleOverlapPolicy.ALLOW_ALL)
        )
    """

    start_at: datetime
    end_at: datetime
    overlap: ScheduleOverlapPolicy | None = None


@dataclass
class ScheduleActionExecutionStartWorkflow:
    """A run a schedule started.

    Example::

        info = (await client.get_schedule_handle("nightly-report").describe()).info
        for run in info.running_actions:
            print(run.workflow_id, run.first_execution_run_id)
    """

    workflow_id: str
    first_execution_run_id: str


@dataclass
class ScheduleActionResult:
    """One action taken: its nominal fire time, when it actually started, and the run.

    Example::

        info = (await client.get_schedule_handle("nightly-report").describe()).info
        for result in info.recent_actions:
            print(result.scheduled_at, result.started_at, result.action.workflow_id)
    """

    scheduled_at: datetime
    started_at: datetime
    action: ScheduleActionExecutionStartWorkflow


@dataclass
class ScheduleInfo:
    """What a schedule did and will do (``ScheduleHandle.describe().info``).

    Example::

        info = (await client.get_schedule_handle("nightly-report").describe()).info
        print(info.num_actions, info.num_actions_skipped_overlap, info.next_action_times[:3])
    """

    num_actions: int = 0
    num_actions_missed_catchup_window: int = 0
    num_actions_skipped_overlap: int = 0
    running_actions: Sequence[ScheduleActionExecutionStartWorkflow] = ()
    recent_actions: Sequence[ScheduleActionResult] = ()
    """The last ten, oldest first."""
    next_action_times: Sequence[datetime] = ()
    """The next ten fire times (jitter included)."""
    created_at: datetime = datetime.fromtimestamp(0, UTC)
    last_updated_at: datetime | None = None


@dataclass
class ScheduleDescription:
    """:meth:`ScheduleHandle.describe`: the schedule as it is now, and its info.

    Example::

        desc = await client.get_schedule_handle("nightly-report").describe()
        print(desc.id, desc.schedule.spec.cron_expressions, desc.schedule.state.paused)
    """

    id: str
    schedule: Schedule
    info: ScheduleInfo


@dataclass
class ScheduleUpdateInput:
    """What the updater of :meth:`ScheduleHandle.update` is given.

    Example::

        def pause_for_maintenance(input: ScheduleUpdateInput) -> ScheduleUpdate:
            schedule = input.description.schedule
            schedule.state = ScheduleState(paused=True, note="maintenance")
            return ScheduleUpdate(schedule=schedule)

        await client.get_schedule_handle("nightly-report").update(pause_for_maintenance)
    """

    description: ScheduleDescription


@dataclass
class ScheduleUpdate:
    """What the updater of :meth:`ScheduleHandle.update` returns: the new schedule.

    Example::

        def one_hour_later(input: ScheduleUpdateInput) -> ScheduleUpdate:
            schedule = input.description.schedule
            schedule.spec = ScheduleSpec(cron_expressions=["0 3 * * *"])
            return ScheduleUpdate(schedule=schedule)

        await client.get_schedule_handle("nightly-report").update(one_hour_later)
    """

    schedule: Schedule


@dataclass
class ScheduleListActionStartWorkflow:
    """The action of a listed schedule: the workflow type it starts.

    Example::

        async for s in await client.list_schedules():
            print(s.id, s.schedule.action.workflow, s.schedule.state.paused, s.info.next_action_times[:1])
    """

    workflow: str


@dataclass
class ScheduleListState:
    """Whether a listed schedule is paused, and the note saying why.

    Example::

        async for s in await client.list_schedules():
            print(s.id, s.schedule.action.workflow, s.schedule.state.paused, s.info.next_action_times[:1])
    """
    note: str | None
    paused: bool


@dataclass
class ScheduleListSchedule:
    """A listed schedule: the workflow type it starts, its spec and its state.

    Example::

        async for s in await client.list_schedules():
            print(s.id, s.schedule.action.workflow, s.schedule.state.paused, s.info.next_action_times[:1])
    """
    action: ScheduleListActionStartWorkflow
    spec: ScheduleSpec
    state: ScheduleListState


@dataclass
class ScheduleListInfo:
    """What a listed schedule did lately and will do next.

    Example::

        async for s in await client.list_schedules():
            print(s.id, s.schedule.action.workflow, s.schedule.state.paused, s.info.next_action_times[:1])
    """
    recent_actions: Sequence[ScheduleActionResult]
    next_action_times: Sequence[datetime]


@dataclass
class ScheduleListDescription:
    """One entry of :meth:`Client.list_schedules`.

    Example::

        async for s in await client.list_schedules():
            print(s.id, s.schedule.action.workflow, s.schedule.state.paused, s.info.next_action_times[:1])
    """

    id: str
    schedule: ScheduleListSchedule
    info: ScheduleListInfo


# -- the wire form shared with the schedule workflow (orchestrator.system.schedules) ---------------


@dataclass
class ScheduleWorkflowInput:
    """Argument of the ``sagas.Schedule`` system workflow; action args are already payloads."""

    schedule_id: str
    schedule: Schedule
    trigger_immediately: bool = False
    backfills: list[ScheduleBackfill] = field(default_factory=list)


@dataclass
class ScheduleSnapshot:
    """What the ``describe`` query of the schedule workflow answers."""

    schedule: Schedule
    info: ScheduleInfo
    deleted: bool = False


# -- fire times --------------------------------------------------------------------------------------


def _zone(name: str | None) -> tzinfo:
    if not name or name.upper() == "UTC":
        return UTC
    try:
        return ZoneInfo(name)
    except (ZoneInfoNotFoundError, ValueError) as exc:
        raise InvalidScheduleError(
            f"unknown time zone {name!r} in ScheduleSpec.time_zone_name; "
            "use an IANA zone name such as 'Europe/Paris', 'America/New_York' or 'UTC'"
        ) from exc


def _ranges(ranges: Sequence[ScheduleRange], default: str = "*") -> str:
    parts = []
    for r in ranges:
        end = max(r.end, r.start)
        step = max(r.step, 1)
        text = str(r.start) if end == r.start else f"{r.start}-{end}"
        parts.append(f"{text}/{step}" if step > 1 else text)
    return ",".join(parts) or default


def calendar_to_cron(cal: ScheduleCalendarSpec) -> str:
    """The 7-field cron string (``min hour dom month dow sec year``) of a calendar spec."""
    return " ".join(
        [
            _ranges(cal.minute),
            _ranges(cal.hour),
            _ranges(cal.day_of_month),
            _ranges(cal.month),
            _ranges(cal.day_of_week),
            _ranges(cal.second),
            _ranges(cal.year),
        ]
    )


def _calendar_next(cal: ScheduleCalendarSpec, after: float, tz: tzinfo) -> float:
    # Temporal's calendars need day-of-month AND day-of-week (cron ORs them when both are set).
    return cron_next_fire(calendar_to_cron(cal), after, tz, day_or=False)


def _matches(cal: ScheduleCalendarSpec, t: float, tz: tzinfo) -> bool:
    return _calendar_next(cal, t - 0.001, tz) == t


def _epoch(value: datetime) -> float:
    return (value if value.tzinfo else value.replace(tzinfo=UTC)).timestamp()


def next_fire_time(spec: ScheduleSpec, after: float) -> float | None:
    """The first nominal fire time of ``spec`` strictly after ``after`` (epoch seconds), or None."""
    tz = _zone(spec.time_zone_name)
    if spec.start_at is not None:
        after = max(after, _epoch(spec.start_at) - 0.001)
    end = _epoch(spec.end_at) if spec.end_at is not None else math.inf
    for _ in range(1000):  # each round skips one excluded time
        candidates = [cron_next_fire(expr, after, tz) for expr in spec.cron_expressions]
        candidates += [_calendar_next(cal, after, tz) for cal in spec.calendars]
        for interval in spec.intervals:
            every = interval.every.total_seconds()
            offset = interval.offset.total_seconds() if interval.offset else 0.0
            candidates.append(offset + (math.floor((after - offset) / every) + 1) * every)
        if not candidates:
            return None
        t = min(candidates)
        if t > end:
            return None
        if not any(_matches(cal, t, tz) for cal in spec.skip):
            return t
        after = t
    return None


def fire_times(spec: ScheduleSpec, after: float, until: float, *, limit: int) -> list[float]:
    """Nominal fire times in ``(after, until]``, at most ``limit``."""
    out: list[float] = []
    t = after
    while len(out) < limit:
        found = next_fire_time(spec, t)
        if found is None or found > until:
            break
        out.append(found)
        t = found
    return out


def jitter_delay(schedule_id: str, nominal: float, jitter: timedelta | None) -> float:
    """Deterministic delay in ``[0, jitter)`` of one fire (the same on every replay and every server)."""
    if not jitter or jitter <= timedelta(0):
        return 0.0
    digest = hashlib.sha256(f"{schedule_id}@{nominal}".encode()).digest()
    return int.from_bytes(digest[:8], "big") / 2**64 * jitter.total_seconds()


def rfc3339(t: float) -> str:
    """``2026-01-05T09:00:00Z``: how a fire time appears in workflow ids and search attributes."""
    return datetime.fromtimestamp(t, UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def action_workflow_id(action: ScheduleActionStartWorkflow, nominal: float) -> str:
    """Workflow id of the run started for the fire at ``nominal``."""
    return f"{action.id}-{rfc3339(nominal)}"


def validate_schedule(schedule: Schedule) -> None:
    """Raise :class:`~sagas.exceptions.InvalidScheduleError` naming the first thing wrong with ``schedule``."""
    action, spec, policy = schedule.action, schedule.spec, schedule.policy
    if not isinstance(action, ScheduleActionStartWorkflow):
        raise InvalidScheduleError(f"Schedule.action must be a ScheduleActionStartWorkflow, got {type(action).__name__}")
    for name in ("workflow", "id", "task_queue"):
        if not getattr(action, name):
            raise InvalidScheduleError(f"ScheduleActionStartWorkflow.{name} must not be empty")
    if action.task_queue == SYSTEM_TASK_QUEUE:
        raise InvalidScheduleError(f"task queue {SYSTEM_TASK_QUEUE!r} is reserved for the server's system workflows")
    tz = _zone(spec.time_zone_name)
    for expr in spec.cron_expressions:
        try:
            cron_next_fire(expr, 0.0, tz)
        except InvalidArgumentError as exc:
            raise InvalidScheduleError(f"ScheduleSpec.cron_expressions: {exc.message.rstrip('.')}. {exc.hint}") from None
    for kind, cals in (("calendars", spec.calendars), ("skip", spec.skip)):
        for cal in cals:
            try:
                _calendar_next(cal, 0.0, tz)
            except InvalidArgumentError as exc:
                raise InvalidScheduleError(
                    f"ScheduleSpec.{kind}: calendar {calendar_to_cron(cal)!r} (min hour dom month dow sec year) "
                    f"is invalid: {exc.message}"
                ) from None
    for interval in spec.intervals:
        if interval.every <= timedelta(0):
            raise InvalidScheduleError(f"ScheduleIntervalSpec.every must be positive, got {interval.every}")
        if interval.offset is not None and not timedelta(0) <= interval.offset < interval.every:
            raise InvalidScheduleError(
                f"ScheduleIntervalSpec.offset must be in [0, every), got {interval.offset} (every {interval.every})"
            )
    if spec.jitter is not None and spec.jitter < timedelta(0):
        raise InvalidScheduleError(f"ScheduleSpec.jitter must not be negative, got {spec.jitter}")
    if spec.start_at is not None and spec.end_at is not None and spec.end_at < spec.start_at:
        raise InvalidScheduleError(f"ScheduleSpec.end_at ({spec.end_at}) is before start_at ({spec.start_at})")
    if policy.catchup_window <= timedelta(0):
        raise InvalidScheduleError(f"SchedulePolicy.catchup_window must be positive, got {policy.catchup_window}")
    try:
        ScheduleOverlapPolicy(policy.overlap)
    except ValueError:
        raise InvalidScheduleError(f"SchedulePolicy.overlap {policy.overlap!r} is not a ScheduleOverlapPolicy") from None
    if schedule.state.limited_actions and schedule.state.remaining_actions < 0:
        raise InvalidScheduleError("ScheduleState.remaining_actions must not be negative")


# -- client side -----------------------------------------------------------------------------------


def _system_client(client: Client) -> Client:
    """A client on the same connection whose converter the system worker can read (no codec)."""
    from sagas.client._client import Client

    return Client(client.transport, namespace=client.namespace, data_converter=default_converter(), identity=client.identity)


def _encode_action(schedule: Schedule, conv: DataConverter) -> Schedule:
    action = replace(schedule.action, args=conv.to_payloads(list(schedule.action.args)))
    return replace(schedule, action=action)


def _decode_action(schedule: Schedule, conv: DataConverter) -> Schedule:
    action = replace(schedule.action, args=conv.from_payloads(list(schedule.action.args)))
    return replace(schedule, action=action)


async def create_schedule(
    client: Client,
    id: str,
    schedule: Schedule,
    *,
    trigger_immediately: bool = False,
    backfill: Sequence[ScheduleBackfill] = (),
    memo: Mapping[str, Any] | None = None,
    search_attributes: Mapping[str, Any] | None = None,
) -> ScheduleHandle:
    """See :meth:`Client.create_schedule`."""
    if not id:
        raise InvalidScheduleError("the schedule id must not be empty")
    validate_schedule(schedule)
    wire = ScheduleWorkflowInput(
        schedule_id=id,
        schedule=_encode_action(schedule, client.data_converter),
        trigger_immediately=trigger_immediately,
        backfills=list(backfill),
    )
    try:
        await _system_client(client).start_workflow(
            SCHEDULE_WORKFLOW_TYPE,
            wire,
            id=SCHEDULE_WORKFLOW_ID_PREFIX + id,
            task_queue=SYSTEM_TASK_QUEUE,
            memo={"schedule_id": id, "workflow_type": schedule.action.workflow, **(memo or {})},
            search_attributes=search_attributes,
        )
    except WorkflowAlreadyStartedError:
        raise ScheduleAlreadyRunningError(id) from None
    return ScheduleHandle(client, id)


class ScheduleHandle:
    """Handle to one schedule (mirrors ``temporalio.client.ScheduleHandle``).

    Every call raises :class:`~sagas.exceptions.ScheduleNotFoundError` when
    the schedule does not exist (or was deleted). The changing calls return
    once the schedule applied the change (a trigger has started its run).

    Example::

        handle = client.get_schedule_handle("nightly-report")
        await handle.pause(note="database migration")
        await handle.trigger()                 # runs even while paused
        await handle.unpause()
        print((await handle.describe()).info.next_action_times[0])
    """

    def __init__(self, client: Client, id: str) -> None:
        self._client = client
        self._id = id

    @property
    def id(self) -> str:
        """The schedule's id."""
        return self._id

    @property
    def client(self) -> Client:
        """The client this handle calls through."""
        return self._client

    def _workflow(self) -> WorkflowHandle[Any]:
        return _system_client(self._client).get_workflow_handle(SCHEDULE_WORKFLOW_ID_PREFIX + self._id)

    async def _update(self, name: str, *args: Any) -> None:
        try:
            await asyncio.wait_for(self._workflow().execute_update(name, args=list(args)), UPDATE_TIMEOUT)
        except TimeoutError:
            raise RPCError(
                f"schedule {self._id!r} did not apply {name!r} within {UPDATE_TIMEOUT:g} s: is the server's system "
                "worker running (OrchestratorConfig.system_worker; it needs a frontend without TLS or auth)?",
                "unavailable",
                503,
            ) from None
        except WorkflowNotFoundError:
            raise ScheduleNotFoundError(self._id) from None
        except RPCError as exc:
            if exc.code == "workflow_not_running":
                raise ScheduleNotFoundError(self._id) from None
            raise
        except WorkflowUpdateFailedError as exc:
            if "deleted" in str(exc.cause):
                raise ScheduleNotFoundError(self._id) from None
            raise InvalidScheduleError(str(exc.cause)) from exc

    async def describe(self) -> ScheduleDescription:
        """The schedule, its recent and running actions and its next fire times."""
        try:
            snap: ScheduleSnapshot = await self._workflow().query("describe", result_type=ScheduleSnapshot)
        except WorkflowNotFoundError:
            raise ScheduleNotFoundError(self._id) from None
        except (WorkflowQueryFailedError, RPCError) as exc:
            if isinstance(exc, RPCError) and exc.code not in ("workflow_not_running", "query_failed"):
                raise
            raise ScheduleNotFoundError(self._id) from None
        if snap.deleted:
            raise ScheduleNotFoundError(self._id)
        return ScheduleDescription(
            id=self._id, schedule=_decode_action(snap.schedule, self._client.data_converter), info=snap.info
        )

    async def pause(self, *, note: str | None = None) -> None:
        """Stop firing (triggers and backfills still run) until :meth:`unpause`."""
        await self._update("pause", note if note is not None else "paused via the sagas SDK")

    async def unpause(self, *, note: str | None = None) -> None:
        """Fire again from now on (the times that passed while paused are not run)."""
        await self._update("unpause", note if note is not None else "unpaused via the sagas SDK")

    async def trigger(self, *, overlap: ScheduleOverlapPolicy | None = None) -> None:
        """Take the action now (``overlap`` defaults to the schedule's policy), even when paused."""
        await self._update("trigger", int(overlap) if overlap is not None else None)

    async def backfill(self, *backfill: ScheduleBackfill) -> None:
        """Take the actions of the fire times in each backfill's range now."""
        if not backfill:
            raise ValueError("pass at least one ScheduleBackfill")
        for b in backfill:
            if _epoch(b.end_at) < _epoch(b.start_at):
                raise InvalidScheduleError(f"ScheduleBackfill.end_at ({b.end_at}) is before start_at ({b.start_at})")
        await self._update("backfill", list(backfill))

    async def update(
        self, updater: Callable[[ScheduleUpdateInput], ScheduleUpdate | None | Awaitable[ScheduleUpdate | None]]
    ) -> None:
        """Change the schedule: ``updater`` gets the current description and returns the new schedule (or None).

        ::

            def every_two_hours(input: ScheduleUpdateInput) -> ScheduleUpdate:
                schedule = input.description.schedule
                schedule.spec = ScheduleSpec(intervals=[ScheduleIntervalSpec(every=timedelta(hours=2))])
                return ScheduleUpdate(schedule=schedule)

            await handle.update(every_two_hours)
        """
        result = updater(ScheduleUpdateInput(description=await self.describe()))
        if inspect.isawaitable(result):
            result = await result
        if result is None:
            return
        validate_schedule(result.schedule)
        await self._update("update", _encode_action(result.schedule, self._client.data_converter))

    async def delete(self) -> None:
        """Delete the schedule (the runs it started go on)."""
        await self._update("delete")


async def list_schedules(client: Client, query: str | None = None) -> AsyncIterator[ScheduleListDescription]:
    """See :meth:`Client.list_schedules`."""
    where = f"WorkflowType = '{SCHEDULE_WORKFLOW_TYPE}' AND ExecutionStatus = 'Running'"
    if query:
        where = f"{where} AND {query}"
    ids = [
        wf.id[len(SCHEDULE_WORKFLOW_ID_PREFIX) :]
        async for wf in client.list_workflows(where)
        if wf.id.startswith(SCHEDULE_WORKFLOW_ID_PREFIX)
    ]
    limit = asyncio.Semaphore(8)

    async def one(schedule_id: str) -> ScheduleDescription | None:
        async with limit:
            try:
                return await ScheduleHandle(client, schedule_id).describe()
            except ScheduleNotFoundError:
                return None  # deleted since it was listed

    for desc in await asyncio.gather(*(one(i) for i in sorted(ids))):
        if desc is None:
            continue
        s = desc.schedule
        yield ScheduleListDescription(
            id=desc.id,
            schedule=ScheduleListSchedule(
                action=ScheduleListActionStartWorkflow(workflow=s.action.workflow),
                spec=s.spec,
                state=ScheduleListState(note=s.state.note, paused=s.state.paused),
            ),
            info=ScheduleListInfo(recent_actions=desc.info.recent_actions, next_action_times=desc.info.next_action_times),
        )


__all__ = [
    "Schedule",
    "ScheduleAction",
    "ScheduleActionExecutionStartWorkflow",
    "ScheduleActionResult",
    "ScheduleActionStartWorkflow",
    "ScheduleBackfill",
    "ScheduleCalendarSpec",
    "ScheduleDescription",
    "ScheduleHandle",
    "ScheduleInfo",
    "ScheduleIntervalSpec",
    "ScheduleListActionStartWorkflow",
    "ScheduleListDescription",
    "ScheduleListInfo",
    "ScheduleListSchedule",
    "ScheduleListState",
    "ScheduleOverlapPolicy",
    "SchedulePolicy",
    "ScheduleRange",
    "ScheduleSpec",
    "ScheduleState",
    "ScheduleUpdate",
    "ScheduleUpdateInput",
]
