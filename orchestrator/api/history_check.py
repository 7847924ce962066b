"""Check that a list of events is one coherent run's history, before anything replays or rebuilds it.

A history read back from a file, a broker log or a stream may be truncated,
reordered, mixed with another run's events or written by a newer server. The
replayer and ``sagas admin rebuild`` would then compute a wrong state without
noticing, so :func:`check_history` walks the events once, tracking what is
pending (the workflow task, activities, timers, children, external requests,
updates), and raises :class:`HistoryIntegrityError` at the first event that
cannot follow the ones before it, naming its position and event id::

    check_history(events, where="default/trip-1/0b9c...")

The checks: the event ids are 1, 2, 3... in list order (a gap is a truncated
log, a lower id a reordered or duplicated one); event 1, and only event 1, is
``WorkflowExecutionStarted`` (a second one is another run's events mixed in);
nothing follows the close event; every event that refers to an earlier one
(a workflow task's start and end, an activity's or timer's outcome, a child's
or external request's result, a command's ``workflow_task_completed_event_id``)
finds it pending. :func:`check_event_json` names an unknown event type.

>>> from orchestrator.api.events import parse_event
>>> e = parse_event({"event_id": 2, "event_time": "2026-01-01T00:00:00Z", "event_type": "TimerFired",
...                  "timer_id": "1", "started_event_id": 1})
>>> try:
...     check_history([e])
... except HistoryIntegrityError as exc:
...     print(exc)
position 0, event 2: the first event is TimerFired with event id 2, not WorkflowExecutionStarted with event id 1: the log is truncated (its first events are missing)
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

from orchestrator.api import events as E
from orchestrator.api.enums import EventType as ET

__all__ = ["HistoryIntegrityError", "check_event_json", "check_history", "known_event_types"]


class HistoryIntegrityError(ValueError):
    """A history that is not one coherent run: ``position`` (0-based index in what was read) and ``event_id``."""

    def __init__(self, message: str, *, position: int | None = None, event_id: int | None = None, where: str = "") -> None:
        self.position = position
        self.event_id = event_id
        self.where = where
        self.reason = message
        at = ", ".join(
            p for p in (
                f"position {position}" if position is not None else "",
                f"event {event_id}" if event_id is not None else "",
            ) if p
        )
        super().__init__(f"{where + ': ' if where else ''}{at + ': ' if at else ''}{message}")


def known_event_types() -> frozenset[str]:
    """Every ``event_type`` this version understands."""
    return frozenset(t.value for t in ET)


def check_event_json(data: Any, *, position: int | None = None, where: str = "") -> None:
    """Raise :class:`HistoryIntegrityError` if ``data`` (an event as JSON) has an unknown or missing type."""
    event_type = data.get("event_type") if isinstance(data, dict) else None
    event_id = data.get("event_id") if isinstance(data, dict) else None
    event_id = event_id if isinstance(event_id, int) else None
    if event_type is None:
        raise HistoryIntegrityError("the event has no event_type", position=position, event_id=event_id, where=where)
    if event_type not in known_event_types():
        raise HistoryIntegrityError(
            f"unknown event type {event_type!r}: written by a newer server, or not a history event; "
            "upgrade this tool (nothing after this event can be trusted)",
            position=position, event_id=event_id, where=where,
        )


@dataclass
class _Pending:
    wft: int | None = None  # scheduled event id of the workflow task out
    wft_started: int | None = None
    last_wft_completed: int = 0
    activities: dict[int, bool] = field(default_factory=dict)  # scheduled id -> started event seen
    timers: dict[str, int] = field(default_factory=dict)  # timer id -> started event id
    children: dict[int, bool] = field(default_factory=dict)  # initiated id -> started
    external: set[int] = field(default_factory=set)
    updates: dict[str, int] = field(default_factory=dict)  # update id -> accepted event id
    closed_at: int | None = None


_COMMAND_EVENTS = (
    E.ActivityTaskScheduled, E.ActivityTaskCancelRequested, E.TimerStarted, E.TimerCanceled,
    E.WorkflowExecutionCompleted, E.WorkflowExecutionFailed, E.WorkflowExecutionCanceled,
    E.WorkflowExecutionContinuedAsNew, E.MarkerRecorded, E.StartChildWorkflowExecutionInitiated,
    E.SignalExternalWorkflowExecutionInitiated, E.RequestCancelExternalWorkflowExecutionInitiated,
    E.UpsertWorkflowSearchAttributes,
)


def check_history(events: Sequence[E.HistoryEvent], *, where: str = "") -> None:
    """Raise :class:`HistoryIntegrityError` at the first event that cannot follow the previous ones."""
    if not events:
        raise HistoryIntegrityError("the history has no events", where=where)
    p = _Pending()
    positions: dict[int, int] = {}
    for position, event in enumerate(events):
        positions.setdefault(event.event_id, position)
    for position, event in enumerate(events):
        _check_one(p, position, event, where, positions)


def _check_one(  # noqa: C901 - one case per event type
    p: _Pending, position: int, ev: E.HistoryEvent, where: str, positions: dict[int, int]
) -> None:
    expected = position + 1

    def fail(message: str) -> HistoryIntegrityError:
        return HistoryIntegrityError(message, position=position, event_id=ev.event_id, where=where)

    if ev.event_id != expected and positions.get(expected, -1) > position:
        raise fail(
            f"event id {ev.event_id} where {expected} was expected: the log is reordered "
            f"(event {expected} comes later, at position {positions[expected]})"
        )
    if position == 0 and (ev.event_id != 1 or not isinstance(ev, E.WorkflowExecutionStarted)):
        raise fail(
            f"the first event is {ev.event_type.value} with event id {ev.event_id}, not WorkflowExecutionStarted "
            "with event id 1: the log is truncated (its first events are missing)"
        )
    if ev.event_id > expected:
        missing = str(expected) if ev.event_id == expected + 1 else f"{expected}-{ev.event_id - 1}"
        raise fail(f"events {missing} are missing before it: the log is truncated or has a gap")
    if ev.event_id < expected:
        raise fail(
            f"event id {ev.event_id} where {expected} was expected (after event {expected - 1}): "
            "the log is reordered or holds a duplicate"
        )
    if isinstance(ev, E.WorkflowExecutionStarted) and position > 0:
        raise fail("a second WorkflowExecutionStarted: events of another run are mixed into this one")
    if p.closed_at is not None:
        raise fail(f"{ev.event_type.value} after the run closed at event {p.closed_at}: events of two runs are mixed")
    if isinstance(ev, _COMMAND_EVENTS):
        ref = ev.workflow_task_completed_event_id
        if ref and ref != p.last_wft_completed:
            raise fail(
                f"{ev.event_type.value} refers to workflow task completion {ref}, but the last one is "
                f"{p.last_wft_completed or 'none'}: the log is reordered"
            )
    match ev:
        case E.WorkflowTaskScheduled():
            if p.wft is not None:
                raise fail(f"a workflow task is scheduled while task {p.wft} is still pending: the log is reordered")
            p.wft, p.wft_started = ev.event_id, None
        case E.WorkflowTaskStarted():
            if p.wft != ev.scheduled_event_id or p.wft_started is not None:
                raise fail(_not_pending("workflow task", ev.scheduled_event_id))
            p.wft_started = ev.event_id
        case E.WorkflowTaskCompleted() | E.WorkflowTaskFailed():
            if p.wft != ev.scheduled_event_id or p.wft_started != ev.started_event_id:
                raise fail(_not_pending("started workflow task", ev.scheduled_event_id))
            if isinstance(ev, E.WorkflowTaskCompleted):
                p.last_wft_completed = ev.event_id
            p.wft = p.wft_started = None
        case E.WorkflowTaskTimedOut():
            if p.wft != ev.scheduled_event_id:
                raise fail(_not_pending("workflow task", ev.scheduled_event_id))
            p.wft = p.wft_started = None
        case E.ActivityTaskScheduled():
            p.activities[ev.event_id] = False
        case E.ActivityTaskStarted():
            if p.activities.get(ev.scheduled_event_id) is not False:
                raise fail(_not_pending("activity", ev.scheduled_event_id))
            p.activities[ev.scheduled_event_id] = True
        case E.ActivityTaskCompleted() | E.ActivityTaskFailed() | E.ActivityTaskTimedOut():
            if p.activities.get(ev.scheduled_event_id) is not True:
                raise fail(_not_pending("started activity", ev.scheduled_event_id))
            del p.activities[ev.scheduled_event_id]
        case E.ActivityTaskCancelRequested():
            if ev.scheduled_event_id not in p.activities:
                raise fail(_not_pending("activity", ev.scheduled_event_id))
        case E.ActivityTaskCanceled():
            if ev.scheduled_event_id not in p.activities:
                raise fail(_not_pending("activity", ev.scheduled_event_id))
            del p.activities[ev.scheduled_event_id]
        case E.TimerStarted():
            if ev.timer_id in p.timers:
                raise fail(f"timer {ev.timer_id!r} is started again while pending (event {p.timers[ev.timer_id]})")
            p.timers[ev.timer_id] = ev.event_id
        case E.TimerFired() | E.TimerCanceled():
            if p.timers.get(ev.timer_id) != ev.started_event_id:
                raise fail(_not_pending(f"timer {ev.timer_id!r} started by event", ev.started_event_id))
            del p.timers[ev.timer_id]
        case E.StartChildWorkflowExecutionInitiated():
            p.children[ev.event_id] = False
        case E.ChildWorkflowExecutionStarted():
            if p.children.get(ev.initiated_event_id) is not False:
                raise fail(_not_pending("child start", ev.initiated_event_id))
            p.children[ev.initiated_event_id] = True
        case E.StartChildWorkflowExecutionFailed():
            if p.children.get(ev.initiated_event_id) is not False:
                raise fail(_not_pending("child start", ev.initiated_event_id))
            del p.children[ev.initiated_event_id]
        case (
            E.ChildWorkflowExecutionCompleted() | E.ChildWorkflowExecutionFailed() | E.ChildWorkflowExecutionCanceled()
            | E.ChildWorkflowExecutionTerminated() | E.ChildWorkflowExecutionTimedOut()
        ):
            if p.children.get(ev.initiated_event_id) is not True:
                raise fail(_not_pending("started child", ev.initiated_event_id))
            del p.children[ev.initiated_event_id]
        case E.SignalExternalWorkflowExecutionInitiated() | E.RequestCancelExternalWorkflowExecutionInitiated():
            p.external.add(ev.event_id)
        case (
            E.ExternalWorkflowExecutionSignaled() | E.SignalExternalWorkflowExecutionFailed()
            | E.ExternalWorkflowExecutionCancelRequested() | E.RequestCancelExternalWorkflowExecutionFailed()
        ):
            if ev.initiated_event_id not in p.external:
                raise fail(_not_pending("external request", ev.initiated_event_id))
            p.external.discard(ev.initiated_event_id)
        case E.WorkflowExecutionUpdateAccepted():
            p.updates[ev.update_id] = ev.event_id
        case E.WorkflowExecutionUpdateCompleted():
            if p.updates.get(ev.update_id) != ev.accepted_event_id:
                raise fail(_not_pending(f"update {ev.update_id!r} accepted by event", ev.accepted_event_id))
        case _:
            pass
    if ev.event_type in E.CLOSE_EVENT_TYPES:
        p.closed_at = ev.event_id


def _not_pending(what: str, ref: int) -> str:
    return f"it refers to {what} {ref}, which is not pending at this point: the log is reordered or truncated"
