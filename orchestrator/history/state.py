"""Mutable state of one workflow run: what the engine needs without reading history.

It is stored next to the events and replaced with compare-and-swap on
``db_version`` in the same transaction as the events it summarises.
Fields marked *cache-only* may be lost in a crash; the engine copes (for
instance an activity's ``started_time`` only pushes a deadline later).
"""

from __future__ import annotations

from typing import Any

from pydantic import BaseModel, Field

from orchestrator.api.common import Failure, Payloads, RetryPolicySpec, WorkflowRef
from orchestrator.api.enums import WorkflowExecutionStatus


class WorkflowTaskInfo(BaseModel):
    scheduled_event_id: int
    attempt: int = 1
    task_queue: str
    dispatch_time: float
    timeout: float = 10.0
    first_event_id: int = 1
    """First event the worker has not seen yet (after the last completed task)."""


class ActivityInfo(BaseModel):
    scheduled_event_id: int
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
    scheduled_time: float
    attempt: int = 1
    dispatch_time: float | None = None
    """When the current attempt was handed to matching; None while backing off."""
    started_time: float | None = None  # cache-only
    started_identity: str = ""  # cache-only
    last_heartbeat_time: float | None = None  # cache-only
    heartbeat_details: Payloads = Field(default_factory=list)
    last_failure: Failure | None = None
    cancel_requested: bool = False


class TimerInfo(BaseModel):
    timer_id: str
    started_event_id: int
    fire_time: float


class ChildInfo(BaseModel):
    initiated_event_id: int
    namespace: str
    workflow_id: str
    workflow_type: str
    run_id: str = ""
    started_event_id: int = 0
    parent_close_policy: str = "Terminate"


class ExternalRequestInfo(BaseModel):
    initiated_event_id: int
    namespace: str
    workflow_id: str
    run_id: str = ""
    kind: str  # "signal" | "cancel"


class UpdateInfo(BaseModel):
    update_id: str
    name: str
    input: Payloads = Field(default_factory=list)
    accepted_event_id: int = 0
    completed: bool = False
    result: Any = None
    failure: Failure | None = None


class ExecutionState(BaseModel):
    """The mutable state of one run (see module docstring)."""

    namespace: str
    workflow_id: str
    run_id: str
    first_run_id: str
    workflow_type: str
    task_queue: str
    status: WorkflowExecutionStatus = WorkflowExecutionStatus.RUNNING
    start_time: float
    execution_time: float
    close_time: float | None = None
    next_event_id: int = 1
    db_version: int = 0
    input: Payloads = Field(default_factory=list)
    workflow_execution_timeout: float | None = None
    workflow_run_timeout: float | None = None
    workflow_task_timeout: float = 10.0
    execution_deadline: float | None = None
    retry_policy: RetryPolicySpec | None = None
    attempt: int = 1
    cron_schedule: str | None = None
    parent: WorkflowRef | None = None
    parent_initiated_event_id: int | None = None
    memo: dict[str, Any] = Field(default_factory=dict)
    search_attributes: dict[str, Any] = Field(default_factory=dict)
    start_request_id: str = ""
    request_ids: list[str] = Field(default_factory=list)
    """Recent request ids of signals etc., for de-duplication (bounded)."""

    workflow_task: WorkflowTaskInfo | None = None
    last_completed_wft_event_id: int = 0
    wft_failures: int = 0
    buffered_events: list[dict[str, Any]] = Field(default_factory=list)
    """Events that arrived while a workflow task was out; appended at its end."""

    activities: dict[int, ActivityInfo] = Field(default_factory=dict)
    timers: dict[str, TimerInfo] = Field(default_factory=dict)
    children: dict[int, ChildInfo] = Field(default_factory=dict)
    external_requests: dict[int, ExternalRequestInfo] = Field(default_factory=dict)
    updates: dict[str, UpdateInfo] = Field(default_factory=dict)
    cancel_requested: bool = False

    result: Any = None
    failure: Failure | None = None
    new_run_id: str | None = None
    last_completion_result: Any = None

    @property
    def is_open(self) -> bool:
        return self.status == WorkflowExecutionStatus.RUNNING

    @property
    def ref(self) -> WorkflowRef:
        return WorkflowRef(namespace=self.namespace, workflow_id=self.workflow_id, run_id=self.run_id)
