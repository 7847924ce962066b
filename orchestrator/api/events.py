"""History events: frozen value objects, one class per Temporal event type.

An execution's history is an append-only list of these, numbered from 1 by
``event_id``. Parse one from JSON with :func:`parse_event`; every event
serialises with ``model_dump(mode="json")``.

>>> e = parse_event({"event_id": 1, "event_time": "2026-01-01T00:00:00Z",
...     "event_type": "TimerFired", "timer_id": "1", "started_event_id": 5})
>>> e.timer_id
'1'
"""

from __future__ import annotations

from datetime import datetime
from typing import Annotated, Any, Literal

from pydantic import Field, TypeAdapter

from orchestrator.api.common import Failure, Frozen, Payloads, RetryPolicySpec, WorkflowRef
from orchestrator.api.enums import EventType as ET

EVENT_FORMAT_VERSION = 1
"""Version of the stored event format; a store refuses events of a newer one."""


class EventBase(Frozen):
    """Fields every event has."""

    event_id: int
    event_time: datetime
    v: int = EVENT_FORMAT_VERSION


class WorkflowExecutionStarted(EventBase):
    event_type: Literal[ET.WORKFLOW_EXECUTION_STARTED] = ET.WORKFLOW_EXECUTION_STARTED
    workflow_type: str
    task_queue: str
    input: Payloads = Field(default_factory=list)
    workflow_execution_timeout: float | None = None
    workflow_run_timeout: float | None = None
    workflow_task_timeout: float = 10.0
    retry_policy: RetryPolicySpec | None = None
    attempt: int = 1
    cron_schedule: str | None = None
    parent: WorkflowRef | None = None
    parent_initiated_event_id: int | None = None
    continued_from_run_id: str | None = None
    first_run_id: str = ""
    original_execution_run_id: str = ""
    memo: dict[str, Any] = Field(default_factory=dict)
    search_attributes: dict[str, Any] = Field(default_factory=dict)
    headers: dict[str, Any] = Field(default_factory=dict)
    request_id: str = ""
    identity: str = ""
    last_completion_result: Any = None
    continued_failure: Failure | None = None


class WorkflowExecutionCompleted(EventBase):
    event_type: Literal[ET.WORKFLOW_EXECUTION_COMPLETED] = ET.WORKFLOW_EXECUTION_COMPLETED
    result: Any = None
    workflow_task_completed_event_id: int = 0
    new_run_id: str | None = None


class WorkflowExecutionFailed(EventBase):
    event_type: Literal[ET.WORKFLOW_EXECUTION_FAILED] = ET.WORKFLOW_EXECUTION_FAILED
    failure: Failure
    retry_state: str = "RetryPolicyNotSet"
    workflow_task_completed_event_id: int = 0
    new_run_id: str | None = None


class WorkflowExecutionCanceled(EventBase):
    event_type: Literal[ET.WORKFLOW_EXECUTION_CANCELED] = ET.WORKFLOW_EXECUTION_CANCELED
    details: Payloads = Field(default_factory=list)
    workflow_task_completed_event_id: int = 0


class WorkflowExecutionTerminated(EventBase):
    event_type: Literal[ET.WORKFLOW_EXECUTION_TERMINATED] = ET.WORKFLOW_EXECUTION_TERMINATED
    reason: str = ""
    details: Payloads = Field(default_factory=list)
    identity: str = ""


class WorkflowExecutionTimedOut(EventBase):
    event_type: Literal[ET.WORKFLOW_EXECUTION_TIMED_OUT] = ET.WORKFLOW_EXECUTION_TIMED_OUT
    retry_state: str = "Timeout"
    new_run_id: str | None = None


class WorkflowExecutionContinuedAsNew(EventBase):
    event_type: Literal[ET.WORKFLOW_EXECUTION_CONTINUED_AS_NEW] = (
        ET.WORKFLOW_EXECUTION_CONTINUED_AS_NEW
    )
    new_run_id: str
    workflow_type: str
    task_queue: str
    input: Payloads = Field(default_factory=list)
    workflow_run_timeout: float | None = None
    workflow_task_timeout: float = 10.0
    backoff_start_interval: float = 0.0
    initiator: str = "Workflow"
    failure: Failure | None = None
    last_completion_result: Any = None
    workflow_task_completed_event_id: int = 0


class WorkflowTaskScheduled(EventBase):
    event_type: Literal[ET.WORKFLOW_TASK_SCHEDULED] = ET.WORKFLOW_TASK_SCHEDULED
    task_queue: str
    start_to_close_timeout: float = 10.0
    attempt: int = 1


class WorkflowTaskStarted(EventBase):
    event_type: Literal[ET.WORKFLOW_TASK_STARTED] = ET.WORKFLOW_TASK_STARTED
    scheduled_event_id: int
    identity: str = ""


class WorkflowTaskCompleted(EventBase):
    event_type: Literal[ET.WORKFLOW_TASK_COMPLETED] = ET.WORKFLOW_TASK_COMPLETED
    scheduled_event_id: int
    started_event_id: int
    identity: str = ""


class WorkflowTaskFailed(EventBase):
    event_type: Literal[ET.WORKFLOW_TASK_FAILED] = ET.WORKFLOW_TASK_FAILED
    scheduled_event_id: int
    started_event_id: int
    cause: str = "WorkflowWorkerUnhandledFailure"
    failure: Failure | None = None
    identity: str = ""


class WorkflowTaskTimedOut(EventBase):
    event_type: Literal[ET.WORKFLOW_TASK_TIMED_OUT] = ET.WORKFLOW_TASK_TIMED_OUT
    scheduled_event_id: int
    started_event_id: int = 0
    timeout_type: str = "StartToClose"


class ActivityTaskScheduled(EventBase):
    event_type: Literal[ET.ACTIVITY_TASK_SCHEDULED] = ET.ACTIVITY_TASK_SCHEDULED
    activity_id: str
    activity_type: str
    task_queue: str
    input: Payloads = Field(default_factory=list)
    headers: dict[str, Any] = Field(default_factory=dict)
    schedule_to_close_timeout: float | None = None
    schedule_to_start_timeout: float | None = None
    start_to_close_timeout: float | None = None
    heartbeat_timeout: float | None = None
    retry_policy: RetryPolicySpec | None = None
    workflow_task_completed_event_id: int = 0


class ActivityTaskStarted(EventBase):
    event_type: Literal[ET.ACTIVITY_TASK_STARTED] = ET.ACTIVITY_TASK_STARTED
    scheduled_event_id: int
    attempt: int = 1
    identity: str = ""
    last_failure: Failure | None = None


class ActivityTaskCompleted(EventBase):
    event_type: Literal[ET.ACTIVITY_TASK_COMPLETED] = ET.ACTIVITY_TASK_COMPLETED
    scheduled_event_id: int
    started_event_id: int
    result: Any = None
    identity: str = ""


class ActivityTaskFailed(EventBase):
    event_type: Literal[ET.ACTIVITY_TASK_FAILED] = ET.ACTIVITY_TASK_FAILED
    scheduled_event_id: int
    started_event_id: int
    failure: Failure
    retry_state: str = "NonRetryableFailure"
    identity: str = ""


class ActivityTaskTimedOut(EventBase):
    event_type: Literal[ET.ACTIVITY_TASK_TIMED_OUT] = ET.ACTIVITY_TASK_TIMED_OUT
    scheduled_event_id: int
    started_event_id: int
    failure: Failure
    retry_state: str = "Timeout"


class ActivityTaskCancelRequested(EventBase):
    event_type: Literal[ET.ACTIVITY_TASK_CANCEL_REQUESTED] = ET.ACTIVITY_TASK_CANCEL_REQUESTED
    scheduled_event_id: int
    workflow_task_completed_event_id: int = 0


class ActivityTaskCanceled(EventBase):
    event_type: Literal[ET.ACTIVITY_TASK_CANCELED] = ET.ACTIVITY_TASK_CANCELED
    scheduled_event_id: int
    started_event_id: int = 0
    details: Payloads = Field(default_factory=list)
    identity: str = ""


class TimerStarted(EventBase):
    event_type: Literal[ET.TIMER_STARTED] = ET.TIMER_STARTED
    timer_id: str
    start_to_fire_timeout: float
    workflow_task_completed_event_id: int = 0


class TimerFired(EventBase):
    event_type: Literal[ET.TIMER_FIRED] = ET.TIMER_FIRED
    timer_id: str
    started_event_id: int


class TimerCanceled(EventBase):
    event_type: Literal[ET.TIMER_CANCELED] = ET.TIMER_CANCELED
    timer_id: str
    started_event_id: int
    workflow_task_completed_event_id: int = 0


class WorkflowExecutionSignaled(EventBase):
    event_type: Literal[ET.WORKFLOW_EXECUTION_SIGNALED] = ET.WORKFLOW_EXECUTION_SIGNALED
    signal_name: str
    input: Payloads = Field(default_factory=list)
    headers: dict[str, Any] = Field(default_factory=dict)
    identity: str = ""


class WorkflowExecutionCancelRequested(EventBase):
    event_type: Literal[ET.WORKFLOW_EXECUTION_CANCEL_REQUESTED] = (
        ET.WORKFLOW_EXECUTION_CANCEL_REQUESTED
    )
    cause: str = ""
    identity: str = ""


class MarkerRecorded(EventBase):
    event_type: Literal[ET.MARKER_RECORDED] = ET.MARKER_RECORDED
    marker_name: str
    details: dict[str, Any] = Field(default_factory=dict)
    failure: Failure | None = None
    workflow_task_completed_event_id: int = 0


class StartChildWorkflowExecutionInitiated(EventBase):
    event_type: Literal[ET.START_CHILD_WORKFLOW_EXECUTION_INITIATED] = (
        ET.START_CHILD_WORKFLOW_EXECUTION_INITIATED
    )
    namespace: str
    workflow_id: str
    workflow_type: str
    task_queue: str
    input: Payloads = Field(default_factory=list)
    workflow_execution_timeout: float | None = None
    workflow_run_timeout: float | None = None
    workflow_task_timeout: float = 10.0
    parent_close_policy: str = "Terminate"
    workflow_id_reuse_policy: str = "AllowDuplicate"
    retry_policy: RetryPolicySpec | None = None
    cron_schedule: str | None = None
    memo: dict[str, Any] = Field(default_factory=dict)
    search_attributes: dict[str, Any] = Field(default_factory=dict)
    workflow_task_completed_event_id: int = 0


class StartChildWorkflowExecutionFailed(EventBase):
    event_type: Literal[ET.START_CHILD_WORKFLOW_EXECUTION_FAILED] = (
        ET.START_CHILD_WORKFLOW_EXECUTION_FAILED
    )
    initiated_event_id: int
    workflow_id: str
    workflow_type: str
    cause: str = "WorkflowAlreadyExists"


class ChildWorkflowExecutionStarted(EventBase):
    event_type: Literal[ET.CHILD_WORKFLOW_EXECUTION_STARTED] = ET.CHILD_WORKFLOW_EXECUTION_STARTED
    initiated_event_id: int
    workflow_id: str
    run_id: str
    workflow_type: str


class _ChildClosed(EventBase):
    initiated_event_id: int
    started_event_id: int
    workflow_id: str
    run_id: str
    workflow_type: str = ""


class ChildWorkflowExecutionCompleted(_ChildClosed):
    event_type: Literal[ET.CHILD_WORKFLOW_EXECUTION_COMPLETED] = (
        ET.CHILD_WORKFLOW_EXECUTION_COMPLETED
    )
    result: Any = None


class ChildWorkflowExecutionFailed(_ChildClosed):
    event_type: Literal[ET.CHILD_WORKFLOW_EXECUTION_FAILED] = ET.CHILD_WORKFLOW_EXECUTION_FAILED
    failure: Failure
    retry_state: str = "NonRetryableFailure"


class ChildWorkflowExecutionCanceled(_ChildClosed):
    event_type: Literal[ET.CHILD_WORKFLOW_EXECUTION_CANCELED] = (
        ET.CHILD_WORKFLOW_EXECUTION_CANCELED
    )
    details: Payloads = Field(default_factory=list)


class ChildWorkflowExecutionTerminated(_ChildClosed):
    event_type: Literal[ET.CHILD_WORKFLOW_EXECUTION_TERMINATED] = (
        ET.CHILD_WORKFLOW_EXECUTION_TERMINATED
    )


class ChildWorkflowExecutionTimedOut(_ChildClosed):
    event_type: Literal[ET.CHILD_WORKFLOW_EXECUTION_TIMED_OUT] = (
        ET.CHILD_WORKFLOW_EXECUTION_TIMED_OUT
    )
    retry_state: str = "Timeout"


class SignalExternalWorkflowExecutionInitiated(EventBase):
    event_type: Literal[ET.SIGNAL_EXTERNAL_WORKFLOW_EXECUTION_INITIATED] = (
        ET.SIGNAL_EXTERNAL_WORKFLOW_EXECUTION_INITIATED
    )
    namespace: str
    workflow_id: str
    run_id: str = ""
    signal_name: str
    input: Payloads = Field(default_factory=list)
    child_workflow_only: bool = False
    workflow_task_completed_event_id: int = 0


class SignalExternalWorkflowExecutionFailed(EventBase):
    event_type: Literal[ET.SIGNAL_EXTERNAL_WORKFLOW_EXECUTION_FAILED] = (
        ET.SIGNAL_EXTERNAL_WORKFLOW_EXECUTION_FAILED
    )
    initiated_event_id: int
    workflow_id: str
    run_id: str = ""
    cause: str = "ExternalWorkflowExecutionNotFound"


class ExternalWorkflowExecutionSignaled(EventBase):
    event_type: Literal[ET.EXTERNAL_WORKFLOW_EXECUTION_SIGNALED] = (
        ET.EXTERNAL_WORKFLOW_EXECUTION_SIGNALED
    )
    initiated_event_id: int
    workflow_id: str
    run_id: str = ""


class RequestCancelExternalWorkflowExecutionInitiated(EventBase):
    event_type: Literal[ET.REQUEST_CANCEL_EXTERNAL_WORKFLOW_EXECUTION_INITIATED] = (
        ET.REQUEST_CANCEL_EXTERNAL_WORKFLOW_EXECUTION_INITIATED
    )
    namespace: str
    workflow_id: str
    run_id: str = ""
    child_workflow_only: bool = False
    reason: str = ""
    workflow_task_completed_event_id: int = 0


class RequestCancelExternalWorkflowExecutionFailed(EventBase):
    event_type: Literal[ET.REQUEST_CANCEL_EXTERNAL_WORKFLOW_EXECUTION_FAILED] = (
        ET.REQUEST_CANCEL_EXTERNAL_WORKFLOW_EXECUTION_FAILED
    )
    initiated_event_id: int
    workflow_id: str
    run_id: str = ""
    cause: str = "ExternalWorkflowExecutionNotFound"


class ExternalWorkflowExecutionCancelRequested(EventBase):
    event_type: Literal[ET.EXTERNAL_WORKFLOW_EXECUTION_CANCEL_REQUESTED] = (
        ET.EXTERNAL_WORKFLOW_EXECUTION_CANCEL_REQUESTED
    )
    initiated_event_id: int
    workflow_id: str
    run_id: str = ""


class WorkflowExecutionUpdateAccepted(EventBase):
    event_type: Literal[ET.WORKFLOW_EXECUTION_UPDATE_ACCEPTED] = (
        ET.WORKFLOW_EXECUTION_UPDATE_ACCEPTED
    )
    update_id: str
    update_name: str
    input: Payloads = Field(default_factory=list)


class WorkflowExecutionUpdateCompleted(EventBase):
    event_type: Literal[ET.WORKFLOW_EXECUTION_UPDATE_COMPLETED] = (
        ET.WORKFLOW_EXECUTION_UPDATE_COMPLETED
    )
    update_id: str
    accepted_event_id: int
    result: Any = None
    failure: Failure | None = None


class UpsertWorkflowSearchAttributes(EventBase):
    event_type: Literal[ET.UPSERT_WORKFLOW_SEARCH_ATTRIBUTES] = (
        ET.UPSERT_WORKFLOW_SEARCH_ATTRIBUTES
    )
    search_attributes: dict[str, Any] = Field(default_factory=dict)
    workflow_task_completed_event_id: int = 0


HistoryEvent = Annotated[
    WorkflowExecutionStarted
    | WorkflowExecutionCompleted
    | WorkflowExecutionFailed
    | WorkflowExecutionCanceled
    | WorkflowExecutionTerminated
    | WorkflowExecutionTimedOut
    | WorkflowExecutionContinuedAsNew
    | WorkflowTaskScheduled
    | WorkflowTaskStarted
    | WorkflowTaskCompleted
    | WorkflowTaskFailed
    | WorkflowTaskTimedOut
    | ActivityTaskScheduled
    | ActivityTaskStarted
    | ActivityTaskCompleted
    | ActivityTaskFailed
    | ActivityTaskTimedOut
    | ActivityTaskCancelRequested
    | ActivityTaskCanceled
    | TimerStarted
    | TimerFired
    | TimerCanceled
    | WorkflowExecutionSignaled
    | WorkflowExecutionCancelRequested
    | MarkerRecorded
    | StartChildWorkflowExecutionInitiated
    | StartChildWorkflowExecutionFailed
    | ChildWorkflowExecutionStarted
    | ChildWorkflowExecutionCompleted
    | ChildWorkflowExecutionFailed
    | ChildWorkflowExecutionCanceled
    | ChildWorkflowExecutionTerminated
    | ChildWorkflowExecutionTimedOut
    | SignalExternalWorkflowExecutionInitiated
    | SignalExternalWorkflowExecutionFailed
    | ExternalWorkflowExecutionSignaled
    | RequestCancelExternalWorkflowExecutionInitiated
    | RequestCancelExternalWorkflowExecutionFailed
    | ExternalWorkflowExecutionCancelRequested
    | WorkflowExecutionUpdateAccepted
    | WorkflowExecutionUpdateCompleted
    | UpsertWorkflowSearchAttributes,
    Field(discriminator="event_type"),
]
"""Any history event; the ``event_type`` field selects the class."""

_EVENT: TypeAdapter[HistoryEvent] = TypeAdapter(HistoryEvent)
_EVENTS: TypeAdapter[list[HistoryEvent]] = TypeAdapter(list[HistoryEvent])

CLOSE_EVENT_TYPES = frozenset(
    {
        ET.WORKFLOW_EXECUTION_COMPLETED,
        ET.WORKFLOW_EXECUTION_FAILED,
        ET.WORKFLOW_EXECUTION_CANCELED,
        ET.WORKFLOW_EXECUTION_TERMINATED,
        ET.WORKFLOW_EXECUTION_TIMED_OUT,
        ET.WORKFLOW_EXECUTION_CONTINUED_AS_NEW,
    }
)


def parse_event(data: dict[str, Any] | str | bytes) -> HistoryEvent:
    """Parse one event from a dict or JSON text; raises ``pydantic.ValidationError``."""
    if isinstance(data, (str, bytes)):
        return _EVENT.validate_json(data)
    return _EVENT.validate_python(data)


def parse_events(data: list[dict[str, Any]] | str | bytes) -> list[HistoryEvent]:
    """Parse a list of events (a whole history) from dicts or JSON text."""
    if isinstance(data, (str, bytes)):
        return _EVENTS.validate_json(data)
    return _EVENTS.validate_python(data)


def dump_events(events: list[HistoryEvent]) -> bytes:
    """Serialise events to JSON bytes (the inverse of :func:`parse_events`)."""
    return _EVENTS.dump_json(events)
