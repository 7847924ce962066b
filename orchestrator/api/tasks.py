"""Outbox tasks written by the history engine in the same transaction as events.

* :class:`TransferTask`: something to do *now* (dispatch a workflow or activity
  task to a broker queue, start a child, deliver a signal to another
  workflow, report a closed run). Deleted once the effect is confirmed.
* :class:`TimerTask`: something to do at ``fire_time`` (a user timer, an
  activity retry back-off, a timeout check). Deleted after it fired.

Both carry the execution's identity plus the ids needed to recognise a stale
task: a task whose ``event_id``/``attempt`` no longer matches the mutable state
is dropped by the engine, so replays and duplicates are harmless.
"""

from __future__ import annotations

import uuid
from enum import StrEnum
from typing import Any

from pydantic import Field

from orchestrator.api.common import Frozen


class TransferKind(StrEnum):
    WORKFLOW_TASK = "workflow_task"
    ACTIVITY_TASK = "activity_task"
    START_CHILD = "start_child"
    SIGNAL_EXTERNAL = "signal_external"
    CANCEL_EXTERNAL = "cancel_external"
    CLOSE_EXECUTION = "close_execution"


class TimerKind(StrEnum):
    USER_TIMER = "user_timer"
    ACTIVITY_TIMEOUT = "activity_timeout"
    ACTIVITY_RETRY = "activity_retry"
    WORKFLOW_TASK_TIMEOUT = "workflow_task_timeout"
    WORKFLOW_TASK_RETRY = "workflow_task_retry"
    WORKFLOW_RUN_TIMEOUT = "workflow_run_timeout"
    WORKFLOW_EXECUTION_TIMEOUT = "workflow_execution_timeout"
    WORKFLOW_BACKOFF = "workflow_backoff"
    DELETE_HISTORY = "delete_history"


def new_task_id() -> str:
    """A unique, roughly time-ordered task id."""
    return uuid.uuid4().hex


class TransferTask(Frozen):
    """An outbox row: an effect to carry out right after the commit."""

    task_id: str = Field(default_factory=new_task_id)
    shard_id: int = 0
    namespace: str
    workflow_id: str
    run_id: str
    kind: TransferKind
    event_id: int = 0
    attempt: int = 1
    task_queue: str = ""
    data: dict[str, Any] = Field(default_factory=dict)


class TimerTask(Frozen):
    """A durable timer row: fired by the timer queue processor at ``fire_time``."""

    task_id: str = Field(default_factory=new_task_id)
    shard_id: int = 0
    namespace: str
    workflow_id: str
    run_id: str
    kind: TimerKind
    fire_time: float
    event_id: int = 0
    attempt: int = 1
    timer_id: str = ""
    data: dict[str, Any] = Field(default_factory=dict)
