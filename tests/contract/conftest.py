"""Backends for the store contract suite, and builders of minimal valid store inputs.

Every backend in :data:`STORE_BACKENDS` runs the whole of
``HistoryStoreContract``. To add one (MongoDB is next), append a
:class:`StoreBackend` whose ``open`` returns a fresh, empty store for each
test; give ``reopen`` if the store is durable and ``insert_raw_event`` if the
test can write a stored event row by hand. :func:`_mongo_backends` is the
place for MongoDB: it adds the backend only when ``SAGAS_TEST_MONGODB_URL``
names a replica set to test against.
"""

from __future__ import annotations

import json
import os
import sqlite3
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest

from orchestrator.api.enums import WorkflowExecutionStatus
from orchestrator.api.events import (
    HistoryEvent,
    MarkerRecorded,
    WorkflowExecutionStarted,
    WorkflowTaskScheduled,
)
from orchestrator.api.tasks import TimerKind, TimerTask, TransferKind, TransferTask
from orchestrator.history.state import ExecutionState
from orchestrator.persistence._delegating import _DelegatingStore
from orchestrator.persistence._faults import FaultInjectingHistoryStore
from orchestrator.persistence._instrumented import InstrumentedHistoryStore
from orchestrator.persistence._retrying import RetryingHistoryStore
from orchestrator.persistence.base import ExecutionWrite, HistoryStore, VisibilityRecord, open_store
from orchestrator.persistence.memory import MemoryHistoryStore
from orchestrator.persistence.sqlite import SqliteHistoryStore

RunKey = tuple[str, str, str]

NS = "default"
EVENT_TIME = datetime(2026, 1, 1, tzinfo=UTC)


# backends ---------------------------------------------------------------------
@dataclass(frozen=True)
class StoreBackend:
    """How the contract suite opens one backend (see module docstring)."""

    name: str
    open: Callable[[Path], Awaitable[HistoryStore]]
    """A fresh, empty store; ``Path`` is the test's private temporary directory."""
    reopen: Callable[[Path], Awaitable[HistoryStore]] | None = None
    """A second store on the same data (durable backends only)."""
    insert_raw_event: Callable[[HistoryStore, RunKey, dict[str, Any]], Awaitable[None]] | None = None
    """Store an event row as given, bypassing the models (to test newer event formats)."""


def innermost(store: HistoryStore) -> HistoryStore:
    """The backend under any decorator stores."""
    while isinstance(store, _DelegatingStore):
        store = store.inner
    return store


async def _open_memory(_: Path) -> HistoryStore:
    return MemoryHistoryStore()


async def _raw_memory_event(store: HistoryStore, key: RunKey, data: dict[str, Any]) -> None:
    inner = innermost(store)
    assert isinstance(inner, MemoryHistoryStore)
    inner._events.setdefault(key, {})[data["event_id"]] = json.dumps(data)


async def _open_sqlite(tmp_path: Path) -> HistoryStore:
    store = SqliteHistoryStore(str(tmp_path / "history.db"))
    await store.open()
    return store


async def _raw_sqlite_event(store: HistoryStore, key: RunKey, data: dict[str, Any]) -> None:
    inner = innermost(store)
    assert isinstance(inner, SqliteHistoryStore)
    with sqlite3.connect(inner.path) as conn:
        conn.execute(
            "INSERT INTO history_events VALUES (?, ?, ?, ?, ?)", (*key, data["event_id"], json.dumps(data))
        )
    conn.close()


async def _open_flaky_memory(_: Path) -> HistoryStore:
    # Three calls in ten fail before reaching the store; the retrying wrapper must hide that.
    flaky = FaultInjectingHistoryStore(MemoryHistoryStore(), error_rate=0.3, seed=7)
    return RetryingHistoryStore(flaky, attempts=15, initial_backoff=0)


async def _open_instrumented_sqlite(tmp_path: Path) -> HistoryStore:
    return InstrumentedHistoryStore(RetryingHistoryStore(await _open_sqlite(tmp_path), initial_backoff=0))


def _mongo_backends() -> list[StoreBackend]:
    """The MongoDB backend, when ``SAGAS_TEST_MONGODB_URL`` (``mongodb://host/?replicaSet=rs0``) is set.

    Each test gets its own database. When ``orchestrator.persistence.mongo``
    lands, give it an ``insert_raw_event`` that inserts into its events
    collection, and ``open_store`` a ``mongodb://`` branch.
    """
    url = os.environ.get("SAGAS_TEST_MONGODB_URL")
    if not url:
        return []
    host, _, query = url.partition("?")

    async def open_mongo(tmp_path: Path) -> HistoryStore:
        database = f"sagas_test_{uuid.uuid5(uuid.NAMESPACE_URL, str(tmp_path)).hex[:12]}"
        return await open_store(f"{host.rstrip('/')}/{database}?{query}")

    return [StoreBackend("mongodb", open_mongo, reopen=open_mongo)]


STORE_BACKENDS: list[StoreBackend] = [
    StoreBackend("memory", _open_memory, insert_raw_event=_raw_memory_event),
    StoreBackend("sqlite", _open_sqlite, reopen=_open_sqlite, insert_raw_event=_raw_sqlite_event),
    StoreBackend("retrying+faults+memory", _open_flaky_memory, insert_raw_event=_raw_memory_event),
    StoreBackend(
        "instrumented+retrying+sqlite",
        _open_instrumented_sqlite,
        reopen=_open_sqlite,
        insert_raw_event=_raw_sqlite_event,
    ),
    *_mongo_backends(),
]


@pytest.fixture(params=STORE_BACKENDS, ids=lambda backend: backend.name)
def backend(request: pytest.FixtureRequest) -> StoreBackend:
    param: StoreBackend = request.param
    return param


@pytest.fixture
async def store(backend: StoreBackend, tmp_path: Path) -> AsyncIterator[HistoryStore]:
    opened = await backend.open(tmp_path)
    try:
        yield opened
    finally:
        await opened.aclose()


# builders ----------------------------------------------------------------------
def make_state(
    workflow_id: str = "wf-1",
    run_id: str = "run-1",
    *,
    namespace: str = NS,
    db_version: int = 1,
    status: WorkflowExecutionStatus = WorkflowExecutionStatus.RUNNING,
    next_event_id: int = 3,
    start_time: float = 1000.0,
    start_request_id: str = "req-1",
) -> ExecutionState:
    """A minimal valid mutable state."""
    return ExecutionState(
        namespace=namespace,
        workflow_id=workflow_id,
        run_id=run_id,
        first_run_id=run_id,
        workflow_type="BookTrip",
        task_queue="trips",
        status=status,
        start_time=start_time,
        execution_time=start_time,
        next_event_id=next_event_id,
        db_version=db_version,
        input=[{"city": "Lisbon"}],
        start_request_id=start_request_id,
    )


def started_events() -> list[HistoryEvent]:
    """The first two events of a run."""
    return [
        WorkflowExecutionStarted(
            event_id=1, event_time=EVENT_TIME, workflow_type="BookTrip", task_queue="trips", input=[1]
        ),
        WorkflowTaskScheduled(event_id=2, event_time=EVENT_TIME, task_queue="trips"),
    ]


def marker(event_id: int, **details: Any) -> MarkerRecorded:
    return MarkerRecorded(event_id=event_id, event_time=EVENT_TIME, marker_name="saga", details=details)


def create(
    state: ExecutionState,
    events: list[HistoryEvent] | None = None,
    *,
    expected_current_run_id: str | None = None,
    **kwargs: Any,
) -> ExecutionWrite:
    """A write that creates ``state`` and makes it the current run."""
    return ExecutionWrite(
        state=state,
        expected_version=None,
        events=started_events() if events is None else events,
        set_current=True,
        expected_current_run_id=expected_current_run_id,
        **kwargs,
    )


def update(
    previous: ExecutionState, events: list[HistoryEvent] | None = None, **kwargs: Any
) -> tuple[ExecutionState, ExecutionWrite]:
    """The next version of ``previous`` and the write that stores it.

    ``kwargs`` go to :class:`ExecutionWrite`, except ``status`` which goes to the state.
    """
    events = events or []
    changes: dict[str, Any] = {
        "db_version": previous.db_version + 1,
        "next_event_id": previous.next_event_id + len(events),
    }
    if "status" in kwargs:
        changes["status"] = kwargs.pop("status")
    state = previous.model_copy(update=changes, deep=True)
    return state, ExecutionWrite(state=state, expected_version=previous.db_version, events=events, **kwargs)


def transfer_task(state: ExecutionState, event_id: int = 2, **kwargs: Any) -> TransferTask:
    return TransferTask(
        namespace=state.namespace,
        workflow_id=state.workflow_id,
        run_id=state.run_id,
        kind=TransferKind.WORKFLOW_TASK,
        event_id=event_id,
        task_queue=state.task_queue,
        **kwargs,
    )


def timer_task(state: ExecutionState, fire_time: float, **kwargs: Any) -> TimerTask:
    return TimerTask(
        namespace=state.namespace,
        workflow_id=state.workflow_id,
        run_id=state.run_id,
        kind=TimerKind.USER_TIMER,
        fire_time=fire_time,
        **kwargs,
    )


def visibility(state: ExecutionState, **kwargs: Any) -> VisibilityRecord:
    fields: dict[str, Any] = {
        "namespace": state.namespace,
        "workflow_id": state.workflow_id,
        "run_id": state.run_id,
        "workflow_type": state.workflow_type,
        "task_queue": state.task_queue,
        "status": state.status.value,
        "start_time": state.start_time,
        "execution_time": state.execution_time,
        "close_time": state.close_time,
        "history_length": state.next_event_id - 1,
    }
    fields.update(kwargs)
    return VisibilityRecord(**fields)
