"""Request and response bodies of the frontend's HTTP/JSON API (port 7233).

Shared by the server (FastAPI) and the SDK client so that both sides agree.
All paths are under ``/api/v1``; ``{ns}`` is a namespace name.

| method | path | body -> response |
|---|---|---|
| GET  | /cluster | -> :class:`ClusterInfo` |
| POST | /namespaces | :class:`RegisterNamespaceRequest` -> :class:`NamespaceInfo` (admin) |
| GET  | /namespaces | -> :class:`ListNamespacesResponse` (those the caller may read) |
| GET  | /namespaces/{ns} | -> :class:`NamespaceInfo` |
| PATCH | /namespaces/{ns} | :class:`UpdateNamespaceRequest` -> :class:`NamespaceInfo` (admin) |
| POST | /namespaces/{ns}/workflows | :class:`StartWorkflowRequest` -> :class:`StartWorkflowResponse` |
| GET  | /namespaces/{ns}/workflows?query=&page_size=&next_page_token= | -> :class:`ListWorkflowsResponse` |
| GET  | /namespaces/{ns}/workflow-count?query= | -> :class:`CountWorkflowsResponse` |
| GET  | /namespaces/{ns}/workflows/{wid}?run_id= | -> :class:`DescribeWorkflowResponse` |
| GET  | /namespaces/{ns}/workflows/{wid}/history?run_id=&first_event_id=&page_size= | -> :class:`HistoryResponse` |
| GET  | /namespaces/{ns}/workflows/{wid}/result?run_id=&wait= | -> :class:`WorkflowResultResponse` (long poll) |
| POST | /namespaces/{ns}/workflows/{wid}/signal | :class:`SignalRequest` -> :class:`Ack` |
| POST | /namespaces/{ns}/workflows/{wid}/query | :class:`QueryWorkflowRequest` -> :class:`QueryWorkflowResponse` |
| POST | /namespaces/{ns}/workflows/{wid}/update | :class:`UpdateWorkflowRequest` -> :class:`UpdateWorkflowResponse` |
| POST | /namespaces/{ns}/workflows/{wid}/cancel | :class:`CancelRequest` -> :class:`Ack` |
| POST | /namespaces/{ns}/workflows/{wid}/terminate | :class:`TerminateRequest` -> :class:`Ack` |
| GET  | /namespaces/{ns}/archived-workflows/{wid}/history?run_id= | -> :class:`ArchivedHistoryResponse` (archival) |
| POST | /tasks/complete?ack_queue=&ack_receipt= | any ``brokers.envelope.Reply`` -> :class:`CompleteTaskResponse` (optionally acks the built-in broker delivery it answers) |
| POST | /queues/{queue}/receive | :class:`ReceiveRequest` -> :class:`ReceiveResponse` (built-in broker, long poll) |
| POST | /queues/{queue}/ack | :class:`SettleRequest` -> :class:`Ack` |
| POST | /queues/{queue}/nack | :class:`SettleRequest` -> :class:`Ack` |
| POST | /queues/{queue}/publish | :class:`PublishRequest` -> :class:`PublishResponse` (``fallback``: publish to a sticky queue) |
| POST | /queues/{queue}/sticky | :class:`StickyQueueRequest` -> :class:`Ack` (declare a worker's sticky queue) |
| DELETE | /queues/{queue}/sticky | -> :class:`Ack` (the worker leaves: its tasks go to the fallback) |
| GET  | /dlq?limit= | -> :class:`DeadLettersResponse` |
| POST | /codec/decode | :class:`CodecRequest` -> :class:`CodecResponse` (the payload codec server) |
| POST | /codec/encode | :class:`CodecRequest` -> :class:`CodecResponse` |

Every route needs a permission on its namespace (``orchestrator.frontend.auth``);
``/namespaces/{ns}/workflows...`` routes are rate limited per namespace (429).

Errors are JSON :class:`ErrorBody` with a stable ``code`` (see
``orchestrator.errors``) and the HTTP status that fits it.
"""

from __future__ import annotations

from typing import Any

from pydantic import BaseModel, Field

from orchestrator.api.common import Failure, Payloads, RetryPolicySpec


class ErrorBody(BaseModel):
    code: str
    message: str
    hint: str = ""
    details: dict[str, Any] = Field(default_factory=dict)


class Ack(BaseModel):
    ok: bool = True
    cancel_requested: bool = False
    """Set on a heartbeat's answer when the workflow asked to cancel the activity."""


class CompleteTaskResponse(Ack):
    """The answer to ``POST /tasks/complete``."""

    acked: bool = False
    """True when the request named a built-in broker delivery (``ack_queue`` + ``ack_receipt``) and the
    server acked it after applying the reply; False otherwise (the worker acks it itself)."""


class ClusterInfo(BaseModel):
    server_version: str
    worker_broker_url: str
    """The broker URL workers should use (``local://host:port`` for the built-in one)."""
    queue_prefix: str = "sagas"
    max_payload_bytes: int = 2 * 1024 * 1024
    namespaces: list[str] = Field(default_factory=list)


class SignalWithStart(BaseModel):
    name: str
    input: Payloads = Field(default_factory=list)


class StartWorkflowRequest(BaseModel):
    workflow_id: str
    workflow_type: str
    task_queue: str
    input: Payloads = Field(default_factory=list)
    id_reuse_policy: str = "AllowDuplicate"
    request_id: str = ""
    execution_timeout: float | None = None
    run_timeout: float | None = None
    task_timeout: float | None = None
    retry_policy: RetryPolicySpec | None = None
    cron_schedule: str | None = None
    memo: dict[str, Any] = Field(default_factory=dict)
    search_attributes: dict[str, Any] = Field(default_factory=dict)
    start_delay: float | None = None
    signal: SignalWithStart | None = None
    """Signal-with-start: deliver this signal, starting the workflow if it is not running."""
    identity: str = ""
    headers: dict[str, Any] = Field(default_factory=dict)
    """Kept on ``WorkflowExecutionStarted``: e.g. the W3C trace context (``traceparent``)."""


class StartWorkflowResponse(BaseModel):
    run_id: str
    started: bool = True
    """False when an existing run was reused (same request id, or signal-with-start)."""


class PendingActivity(BaseModel):
    activity_id: str
    activity_type: str
    scheduled_event_id: int
    attempt: int
    state: str
    last_failure: Failure | None = None
    heartbeat_details: Payloads = Field(default_factory=list)
    last_heartbeat_time: float | None = None
    scheduled_time: float


class PendingTimer(BaseModel):
    timer_id: str
    started_event_id: int
    fire_time: float


class WorkflowExecutionInfo(BaseModel):
    namespace: str
    workflow_id: str
    run_id: str
    workflow_type: str
    task_queue: str
    status: str
    start_time: float
    close_time: float | None = None
    execution_time: float
    history_length: int = 0
    search_attributes: dict[str, Any] = Field(default_factory=dict)
    memo: dict[str, Any] = Field(default_factory=dict)
    parent_workflow_id: str | None = None


class DescribeWorkflowResponse(BaseModel):
    info: WorkflowExecutionInfo
    pending_activities: list[PendingActivity] = Field(default_factory=list)
    pending_timers: list[PendingTimer] = Field(default_factory=list)
    pending_children: list[dict[str, Any]] = Field(default_factory=list)
    input: Payloads = Field(default_factory=list)
    result: Any = None
    failure: Failure | None = None
    warnings: list[str] = Field(default_factory=list)
    """E.g. the history is past the namespace's warning threshold: continue-as-new soon."""


class HistoryResponse(BaseModel):
    events: list[dict[str, Any]]
    next_page_token: str | None = None


class ArchivedHistoryResponse(BaseModel):
    """A run's history read back from the namespace's archive after retention deleted it."""

    namespace: str
    workflow_id: str
    run_id: str
    archived_at: float
    """When the run was archived (epoch seconds)."""
    info: WorkflowExecutionInfo | None = None
    """The run's visibility record as it was when archived."""
    events: list[dict[str, Any]]


class WorkflowResultResponse(BaseModel):
    status: str
    """Running (the wait ran out), Completed, Failed, Canceled, Terminated, TimedOut, ContinuedAsNew."""
    run_id: str
    result: Any = None
    failure: Failure | None = None
    new_run_id: str | None = None


class SignalRequest(BaseModel):
    name: str
    input: Payloads = Field(default_factory=list)
    run_id: str = ""
    request_id: str = ""
    identity: str = ""


class QueryWorkflowRequest(BaseModel):
    name: str
    input: Payloads = Field(default_factory=list)
    run_id: str = ""
    timeout: float = 10.0


class QueryWorkflowResponse(BaseModel):
    result: Any = None


class UpdateWorkflowRequest(BaseModel):
    name: str
    input: Payloads = Field(default_factory=list)
    update_id: str = ""
    run_id: str = ""
    wait_for_stage: str = "Completed"
    """``Accepted`` returns once the workflow accepted the update; ``Completed`` waits for the result."""
    timeout: float = 30.0


class UpdateWorkflowResponse(BaseModel):
    update_id: str
    stage: str
    result: Any = None
    failure: Failure | None = None


class CancelRequest(BaseModel):
    run_id: str = ""
    reason: str = ""
    request_id: str = ""
    identity: str = ""


class TerminateRequest(BaseModel):
    run_id: str = ""
    reason: str = ""
    details: Payloads = Field(default_factory=list)
    identity: str = ""


class ResetWorkflowRequest(BaseModel):
    """Start a new run from a workflow task of ``run_id`` (the current run when empty).

    Name the reset point with ``event_id`` (any event of a started workflow task) or
    ``reset_type`` (``FirstWorkflowTask`` or ``LastWorkflowTask``), not both.
    """

    run_id: str = ""
    event_id: int | None = Field(default=None, ge=1)
    reset_type: str | None = None
    """``FirstWorkflowTask`` or ``LastWorkflowTask`` (the last completed one)."""
    reason: str = ""
    reapply_signals: bool = True
    """Deliver again the signals the base run received after the reset point."""
    identity: str = ""


class ResetWorkflowResponse(BaseModel):
    run_id: str
    """The new run (now the workflow id's current run)."""


class ListWorkflowsResponse(BaseModel):
    executions: list[WorkflowExecutionInfo]
    next_page_token: str | None = None


class CountWorkflowsResponse(BaseModel):
    count: int


class ReceiveRequest(BaseModel):
    max_messages: int = 1
    wait: float = 20.0


class WireDelivery(BaseModel):
    message_id: str
    body: str
    headers: dict[str, str] = Field(default_factory=dict)
    delivery_count: int = 1
    receipt: str


class ReceiveResponse(BaseModel):
    deliveries: list[WireDelivery] = Field(default_factory=list)


class SettleRequest(BaseModel):
    receipt: str
    requeue: bool = True
    reason: str = ""


class PublishRequest(BaseModel):
    body: str
    headers: dict[str, str] = Field(default_factory=dict)
    fallback: str | None = None
    """Set when ``queue`` is a sticky queue: where the message goes when its worker is gone."""


class StickyQueueRequest(BaseModel):
    fallback: str
    """The task queue's normal workflow queue (``{prefix}.{ns}.{task_queue}.wf``), same namespace."""
    timeout: float = 5.0
    """The sticky schedule-to-start timeout, in seconds."""


class PublishResponse(BaseModel):
    message_id: str


class DeadLetterItem(BaseModel):
    queue: str
    body: str
    reason: str
    headers: dict[str, str] = Field(default_factory=dict)
    message_id: str = ""


class DeadLettersResponse(BaseModel):
    dead_letters: list[DeadLetterItem] = Field(default_factory=list)


class NamespaceLimits(BaseModel):
    """Settings of a namespace that a register or update may set (None: leave as is / cluster default)."""

    description: str | None = None
    retention_days: float | None = Field(default=None, gt=0)
    """Days a closed run is kept before its history is deleted."""
    rate_limit_rps: float | None = Field(default=None, ge=0)
    """Requests per second on ``/namespaces/{ns}/workflows...`` (token bucket); 0 or None: unlimited."""
    rate_limit_burst: int | None = Field(default=None, ge=1)
    """Bucket size (default: the rate rounded up, at least 1)."""
    max_payload_bytes: int | None = Field(default=None, ge=1)
    """Largest input/signal/update payload list accepted (cannot exceed the cluster's limit)."""
    max_history_events: int | None = Field(default=None, ge=10)
    """A run whose history would grow past this is terminated."""
    history_warn_events: int | None = Field(default=None, ge=1)
    """Past this, describe warns: continue-as-new before the hard limit."""
    history_archival_uri: str | None = None
    """Where closed histories are archived before retention deletes them: ``file:///dir`` or
    ``s3://bucket/prefix?endpoint_url=...&region=...``; ``""`` turns archival off."""
    visibility_archival_uri: str | None = None
    """Where closed runs' visibility records are archived (same schemes); ``""``: off."""


class RegisterNamespaceRequest(NamespaceLimits):
    # The registry checks the name (with a hint); the pattern is documented in the schema only.
    name: str = Field(json_schema_extra={"pattern": "^[A-Za-z0-9][A-Za-z0-9_-]{0,63}$"})


class UpdateNamespaceRequest(NamespaceLimits):
    pass


class NamespaceInfo(BaseModel):
    """A namespace with its effective settings (cluster defaults filled in)."""

    name: str
    description: str = ""
    retention_days: float
    rate_limit_rps: float | None = None
    rate_limit_burst: int | None = None
    max_payload_bytes: int
    max_history_events: int | None = None
    history_warn_events: int | None = None
    history_archival_uri: str | None = None
    visibility_archival_uri: str | None = None


class ListNamespacesResponse(BaseModel):
    namespaces: list[NamespaceInfo] = Field(default_factory=list)


class CodecRequest(BaseModel):
    namespace: str = "default"
    payloads: list[Any] = Field(default_factory=list)


class CodecResponse(BaseModel):
    payloads: list[Any] = Field(default_factory=list)
