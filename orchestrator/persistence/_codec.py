"""How the stores turn API objects into stored JSON text and back.

Every backend stores the same JSON text, including the in-memory one: a stored
copy is then truly immutable (a frozen pydantic model still holds mutable lists
and dicts), and the memory store round-trips exactly what SQLite and MongoDB
round-trip, so a value that does not survive JSON fails in the fast tests too.

Events are checked for their format version *before* they are parsed: an event
written by a newer server may not parse at all under today's models, and the
reader must be told "written by a newer server", not "invalid field".
"""

from __future__ import annotations

import dataclasses
import json
from typing import Any

from orchestrator.api.events import EVENT_FORMAT_VERSION, HistoryEvent, parse_event
from orchestrator.api.tasks import TimerTask, TransferTask
from orchestrator.history.state import ExecutionState
from orchestrator.persistence.base import (
    NamespaceRecord,
    UnsupportedEventVersionError,
    VisibilityRecord,
)

RunKey = tuple[str, str, str]
"""``(namespace, workflow_id, run_id)``: the identity of one run."""

WorkflowKey = tuple[str, str]
"""``(namespace, workflow_id)``: the identity of a workflow id's current-run pointer."""


def run_key(state: ExecutionState) -> RunKey:
    return (state.namespace, state.workflow_id, state.run_id)


def encode_state(state: ExecutionState) -> str:
    return state.model_dump_json()


def decode_state(text: str | bytes) -> ExecutionState:
    return ExecutionState.model_validate_json(text)


def encode_event(event: HistoryEvent) -> str:
    return event.model_dump_json()


def decode_event(text: str | bytes, key: RunKey) -> HistoryEvent:
    """Parse one stored event, refusing one of a newer format version first."""
    data: Any = json.loads(text)
    version = data.get("v", 1) if isinstance(data, dict) else None
    if not isinstance(version, int) or version > EVENT_FORMAT_VERSION:
        event_id = data.get("event_id", "?") if isinstance(data, dict) else "?"
        namespace, workflow_id, run_id = key
        raise UnsupportedEventVersionError(
            f"event {event_id} of {namespace}/{workflow_id}/{run_id} has format version {version!r}, "
            f"but this server reads versions up to {EVENT_FORMAT_VERSION}: it was written by a newer "
            "server. Upgrade this server before reading this history."
        )
    return parse_event(data)


def encode_transfer_task(task: TransferTask) -> str:
    return task.model_dump_json()


def decode_transfer_task(text: str | bytes) -> TransferTask:
    return TransferTask.model_validate_json(text)


def encode_timer_task(task: TimerTask) -> str:
    return task.model_dump_json()


def decode_timer_task(text: str | bytes) -> TimerTask:
    return TimerTask.model_validate_json(text)


def encode_namespace(record: NamespaceRecord) -> str:
    return json.dumps(dataclasses.asdict(record))


def decode_namespace(text: str | bytes) -> NamespaceRecord:
    return NamespaceRecord(**json.loads(text))


def encode_visibility(record: VisibilityRecord) -> str:
    return json.dumps(dataclasses.asdict(record))


def decode_visibility(text: str | bytes) -> VisibilityRecord:
    return VisibilityRecord(**json.loads(text))
