"""The versioned JSON envelope of every message on a task queue (DESIGN §5).

Messages the orchestrator sends to workers and services:

* :class:`ActivityTask` -- what a plain-JSON microservice receives::

    {"v":1,"kind":"activity_task","namespace":"default","workflow_id":"trip-1",
     "run_id":"...","activity_id":"1","activity_type":"book_car","attempt":1,
     "task_token":"...","input":[{"city":"Lisbon"}],"headers":{},
     "reply_to":"sagas.completions","deadline":"2026-01-01T00:00:10Z"}

* :class:`WorkflowTask` -- for SDK workers only.

Messages workers and services send back (to ``reply_to`` or over HTTP):

* :class:`ActivityResult` -- ``{"v":1,"kind":"activity_result","task_token":"...",
  "result":...}`` or with ``"failure":{"message":...,"type":...,"non_retryable":false}``
* :class:`ActivityHeartbeat`, :class:`ActivityStarted`
* :class:`WorkflowTaskCompleted`, :class:`WorkflowTaskFailed`

Task tokens are opaque to receivers: base64url JSON of :class:`TaskToken`
plus an HMAC so that a forged or altered token is refused.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
from datetime import datetime
from typing import Annotated, Any, Literal

from pydantic import BaseModel, ConfigDict, Field, TypeAdapter, ValidationError

from orchestrator.api.common import Failure, Payloads

ENVELOPE_VERSION = 1
DEFAULT_MAX_MESSAGE_BYTES = 2 * 1024 * 1024


class EnvelopeError(ValueError):
    """A message could not be accepted; ``reason`` is a stable short code.

    Reasons: ``malformed_json``, ``invalid_message``, ``unknown_version``,
    ``too_large``, ``invalid_token``.
    """

    def __init__(self, reason: str, message: str) -> None:
        super().__init__(f"{reason}: {message}")
        self.reason = reason


class _Msg(BaseModel):
    model_config = ConfigDict(extra="ignore", frozen=True)
    v: int = ENVELOPE_VERSION


class UpdateRequest(BaseModel):
    """An update waiting for the workflow to validate and accept it."""

    model_config = ConfigDict(frozen=True)
    update_id: str
    name: str
    input: Payloads = Field(default_factory=list)


class QueryRequest(BaseModel):
    """A query the worker answers from the workflow's current state."""

    model_config = ConfigDict(frozen=True)
    query_id: str
    name: str
    input: Payloads = Field(default_factory=list)


class WorkflowTask(_Msg):
    kind: Literal["workflow_task"] = "workflow_task"
    namespace: str
    workflow_id: str
    run_id: str
    workflow_type: str
    task_queue: str
    scheduled_event_id: int
    attempt: int
    task_token: str
    events: list[dict[str, Any]] = Field(default_factory=list)
    """New events since the previous completed workflow task (inclusive of
    this task's ``WorkflowTaskScheduled``). A worker without the instance in
    its cache fetches the full history instead."""
    first_event_id: int = 1
    next_event_id: int = 1
    updates: list[UpdateRequest] = Field(default_factory=list)
    query: QueryRequest | None = None


class ActivityTask(_Msg):
    kind: Literal["activity_task"] = "activity_task"
    namespace: str
    workflow_id: str
    run_id: str
    workflow_type: str = ""
    activity_id: str
    activity_type: str
    attempt: int
    task_token: str
    input: Payloads = Field(default_factory=list)
    headers: dict[str, Any] = Field(default_factory=dict)
    reply_to: str = ""
    deadline: datetime | None = None
    heartbeat_timeout: float | None = None
    heartbeat_details: Payloads = Field(default_factory=list)
    scheduled_event_id: int = 0
    task_queue: str = ""


class ActivityResult(_Msg):
    kind: Literal["activity_result"] = "activity_result"
    task_token: str
    result: Any = None
    failure: Failure | None = None
    canceled: bool = False
    identity: str = ""
    started_at: float | None = None
    """When the attempt began on the worker (Unix seconds), sent when no ``activity_started``
    was: the server's activity latency metrics split schedule-to-start from start-to-close by it."""


class ActivityHeartbeat(_Msg):
    kind: Literal["activity_heartbeat"] = "activity_heartbeat"
    task_token: str
    details: Payloads = Field(default_factory=list)


class ActivityStarted(_Msg):
    kind: Literal["activity_started"] = "activity_started"
    task_token: str
    identity: str = ""


class WorkflowTaskCompleted(_Msg):
    kind: Literal["workflow_task_completed"] = "workflow_task_completed"
    task_token: str
    commands: list[dict[str, Any]] = Field(default_factory=list)
    identity: str = ""
    query_result: Any = None
    query_failure: Failure | None = None
    sticky_queue: str = ""
    """The worker keeps the run cached: send its next workflow task to this sticky queue
    (``{prefix}.{ns}.sticky.{worker}``; the broker falls back to the normal queue)."""


class WorkflowTaskFailed(_Msg):
    kind: Literal["workflow_task_failed"] = "workflow_task_failed"
    task_token: str
    failure: Failure
    cause: str = "WorkflowWorkerUnhandledFailure"
    identity: str = ""


Reply = Annotated[
    ActivityResult | ActivityHeartbeat | ActivityStarted | WorkflowTaskCompleted | WorkflowTaskFailed,
    Field(discriminator="kind"),
]
"""Any message a worker or service sends back to the orchestrator."""

_REPLY: TypeAdapter[Reply] = TypeAdapter(Reply)


def _check_size(body: bytes, max_bytes: int) -> None:
    if len(body) > max_bytes:
        raise EnvelopeError(
            "too_large",
            f"message of {len(body)} bytes is over the limit of {max_bytes} bytes; "
            "keep large data outside the message and pass a reference",
        )


def _load_json(body: bytes) -> dict[str, Any]:
    try:
        data = json.loads(body)
    except (UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise EnvelopeError("malformed_json", f"message is not JSON ({exc})") from exc
    if not isinstance(data, dict):
        raise EnvelopeError("invalid_message", "message must be a JSON object")
    version = data.get("v", ENVELOPE_VERSION)
    if version != ENVELOPE_VERSION:
        raise EnvelopeError(
            "unknown_version", f"envelope version {version!r} is not supported (this server speaks 1)"
        )
    return data


def parse_reply(body: bytes, max_bytes: int = DEFAULT_MAX_MESSAGE_BYTES) -> Reply:
    """Parse a reply from a worker or service; raises :class:`EnvelopeError`."""
    _check_size(body, max_bytes)
    data = _load_json(body)
    try:
        return _REPLY.validate_python(data)
    except ValidationError as exc:
        raise EnvelopeError("invalid_message", _summarise(exc)) from exc


def parse_task(body: bytes, max_bytes: int = DEFAULT_MAX_MESSAGE_BYTES) -> WorkflowTask | ActivityTask:
    """Parse a task from a queue; raises :class:`EnvelopeError`."""
    _check_size(body, max_bytes)
    data = _load_json(body)
    try:
        if data.get("kind") == "workflow_task":
            return WorkflowTask.model_validate(data)
        return ActivityTask.model_validate(data)
    except ValidationError as exc:
        raise EnvelopeError("invalid_message", _summarise(exc)) from exc


def encode(msg: BaseModel) -> bytes:
    """Serialise a message to JSON bytes."""
    return msg.model_dump_json(exclude_none=True).encode()


def _summarise(exc: ValidationError) -> str:
    parts = []
    for err in exc.errors()[:3]:
        loc = ".".join(str(p) for p in err["loc"]) or "<message>"
        parts.append(f"{loc}: {err['msg']}")
    return "; ".join(parts)


class TaskToken(BaseModel):
    """What a task token identifies (the receiver never needs to look inside)."""

    model_config = ConfigDict(frozen=True)
    namespace: str
    workflow_id: str
    run_id: str
    scheduled_event_id: int
    attempt: int
    kind: Literal["wf", "act"]
    activity_id: str = ""


def _b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


def _unb64(text: str) -> bytes:
    return base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))


def sign_token(token: TaskToken, key: bytes) -> str:
    """Encode and sign a task token with the namespace's key."""
    body = _b64(token.model_dump_json().encode())
    mac = hmac.new(key + token.namespace.encode(), body.encode(), hashlib.sha256).digest()[:16]
    return f"{body}.{_b64(mac)}"


def verify_token(text: str, key: bytes) -> TaskToken:
    """Decode a task token and check its signature; raises :class:`EnvelopeError`."""
    try:
        body, mac = text.split(".", 1)
        token = TaskToken.model_validate_json(_unb64(body))
        expected = hmac.new(key + token.namespace.encode(), body.encode(), hashlib.sha256).digest()[:16]
        ok = hmac.compare_digest(expected, _unb64(mac))
    except (ValueError, ValidationError) as exc:
        raise EnvelopeError("invalid_token", "task token is malformed") from exc
    if not ok:
        raise EnvelopeError("invalid_token", "task token signature does not match (forged or from another cluster)")
    return token


def peek_token(text: str) -> TaskToken:
    """Decode a task token without checking its signature (for workers' own bookkeeping)."""
    try:
        return TaskToken.model_validate_json(_unb64(text.split(".", 1)[0]))
    except (ValueError, ValidationError) as exc:
        raise EnvelopeError("invalid_token", "task token is malformed") from exc
