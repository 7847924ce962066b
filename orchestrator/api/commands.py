"""Commands: what a workflow task completes with (one class per command type).

The worker's runtime produces them in order; the history engine turns each
into events and tasks. Parse with :func:`parse_commands`.
"""

from __future__ import annotations

from typing import Annotated, Any, Literal

from pydantic import Field, TypeAdapter

from orchestrator.api.common import Failure, Frozen, Payloads, RetryPolicySpec
from orchestrator.api.enums import CommandType as CT


class ScheduleActivityTask(Frozen):
    command_type: Literal[CT.SCHEDULE_ACTIVITY_TASK] = CT.SCHEDULE_ACTIVITY_TASK
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


class RequestCancelActivityTask(Frozen):
    command_type: Literal[CT.REQUEST_CANCEL_ACTIVITY_TASK] = CT.REQUEST_CANCEL_ACTIVITY_TASK
    scheduled_event_id: int


class StartTimer(Frozen):
    command_type: Literal[CT.START_TIMER] = CT.START_TIMER
    timer_id: str
    start_to_fire_timeout: float


class CancelTimer(Frozen):
    command_type: Literal[CT.CANCEL_TIMER] = CT.CANCEL_TIMER
    timer_id: str


class CompleteWorkflowExecution(Frozen):
    command_type: Literal[CT.COMPLETE_WORKFLOW_EXECUTION] = CT.COMPLETE_WORKFLOW_EXECUTION
    result: Any = None


class FailWorkflowExecution(Frozen):
    command_type: Literal[CT.FAIL_WORKFLOW_EXECUTION] = CT.FAIL_WORKFLOW_EXECUTION
    failure: Failure


class CancelWorkflowExecution(Frozen):
    command_type: Literal[CT.CANCEL_WORKFLOW_EXECUTION] = CT.CANCEL_WORKFLOW_EXECUTION
    details: Payloads = Field(default_factory=list)


class ContinueAsNewWorkflowExecution(Frozen):
    command_type: Literal[CT.CONTINUE_AS_NEW_WORKFLOW_EXECUTION] = (
        CT.CONTINUE_AS_NEW_WORKFLOW_EXECUTION
    )
    workflow_type: str | None = None
    task_queue: str | None = None
    input: Payloads = Field(default_factory=list)
    workflow_run_timeout: float | None = None
    workflow_task_timeout: float | None = None
    memo: dict[str, Any] | None = None
    search_attributes: dict[str, Any] | None = None


class RecordMarker(Frozen):
    command_type: Literal[CT.RECORD_MARKER] = CT.RECORD_MARKER
    marker_name: str
    details: dict[str, Any] = Field(default_factory=dict)
    failure: Failure | None = None


class StartChildWorkflowExecution(Frozen):
    command_type: Literal[CT.START_CHILD_WORKFLOW_EXECUTION] = CT.START_CHILD_WORKFLOW_EXECUTION
    namespace: str = ""
    workflow_id: str
    workflow_type: str
    task_queue: str = ""
    input: Payloads = Field(default_factory=list)
    workflow_execution_timeout: float | None = None
    workflow_run_timeout: float | None = None
    workflow_task_timeout: float | None = None
    parent_close_policy: str = "Terminate"
    workflow_id_reuse_policy: str = "AllowDuplicate"
    retry_policy: RetryPolicySpec | None = None
    cron_schedule: str | None = None
    memo: dict[str, Any] = Field(default_factory=dict)
    search_attributes: dict[str, Any] = Field(default_factory=dict)


class SignalExternalWorkflowExecution(Frozen):
    command_type: Literal[CT.SIGNAL_EXTERNAL_WORKFLOW_EXECUTION] = (
        CT.SIGNAL_EXTERNAL_WORKFLOW_EXECUTION
    )
    namespace: str = ""
    workflow_id: str
    run_id: str = ""
    signal_name: str
    input: Payloads = Field(default_factory=list)
    child_workflow_only: bool = False


class RequestCancelExternalWorkflowExecution(Frozen):
    command_type: Literal[CT.REQUEST_CANCEL_EXTERNAL_WORKFLOW_EXECUTION] = (
        CT.REQUEST_CANCEL_EXTERNAL_WORKFLOW_EXECUTION
    )
    namespace: str = ""
    workflow_id: str
    run_id: str = ""
    child_workflow_only: bool = False
    reason: str = ""


class UpsertWorkflowSearchAttributes(Frozen):
    command_type: Literal[CT.UPSERT_WORKFLOW_SEARCH_ATTRIBUTES] = (
        CT.UPSERT_WORKFLOW_SEARCH_ATTRIBUTES
    )
    search_attributes: dict[str, Any]


class AcceptUpdate(Frozen):
    command_type: Literal[CT.ACCEPT_UPDATE] = CT.ACCEPT_UPDATE
    update_id: str


class CompleteUpdate(Frozen):
    command_type: Literal[CT.COMPLETE_UPDATE] = CT.COMPLETE_UPDATE
    update_id: str
    result: Any = None
    failure: Failure | None = None


class RejectUpdate(Frozen):
    command_type: Literal[CT.REJECT_UPDATE] = CT.REJECT_UPDATE
    update_id: str
    failure: Failure


Command = Annotated[
    ScheduleActivityTask
    | RequestCancelActivityTask
    | StartTimer
    | CancelTimer
    | CompleteWorkflowExecution
    | FailWorkflowExecution
    | CancelWorkflowExecution
    | ContinueAsNewWorkflowExecution
    | RecordMarker
    | StartChildWorkflowExecution
    | SignalExternalWorkflowExecution
    | RequestCancelExternalWorkflowExecution
    | UpsertWorkflowSearchAttributes
    | AcceptUpdate
    | CompleteUpdate
    | RejectUpdate,
    Field(discriminator="command_type"),
]
"""Any command; the ``command_type`` field selects the class."""

_COMMANDS = TypeAdapter(list[Command])


def parse_commands(data: list[dict[str, Any]] | str | bytes) -> list[Command]:
    """Parse a list of commands from dicts or JSON text."""
    if isinstance(data, (str, bytes)):
        return _COMMANDS.validate_json(data)
    return _COMMANDS.validate_python(data)


def dump_commands(commands: list[Command]) -> list[dict[str, Any]]:
    """Serialise commands to JSON-ready dicts."""
    return [c.model_dump(mode="json") for c in commands]
