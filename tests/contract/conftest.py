"""Backends for the store contract suite, and builders of minimal valid store inputs.

Every backend in :data:`STORE_BACKENDS` runs the whole of
``HistoryStoreContract``. To add one, append a :class:`StoreBackend` whose
``open`` returns a fresh, empty store for each test; give ``reopen`` if the
store is durable and ``insert_raw_event`` if the test can write a stored event
row by hand.

MongoDB (backend ``mongo``) runs against ``SAGAS_TEST_MONGODB_URL`` when it is
set (a real replica set, ``mongodb://host:port/?replicaSet=rs0``), otherwise
against the SecantusDB stand-in (see ``shared/SERVICES.md``), which
:func:`mongo_server_url` starts once per test session as a subprocess. Each
test gets a database of its own. When the stand-in cannot start, the MongoDB
tests are skipped, except in CI (``CI=true``), where they fail.
"""

from __future__ import annotations

import atexit
import importlib.util
import json
import os
import re
import shutil
import sqlite3
import subprocess
import sys
import tempfile
import time
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator
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


# MongoDB -------------------------------------------------------------------------
class SecantusServer:
    """The SecantusDB stand-in for MongoDB, as a subprocess on 127.0.0.1 (a one-node replica set).

    It picks its own free port (``--port 0``) and reports it in its log;
    :meth:`start` waits until the port answers ``ping``, polling, never sleeping
    a fixed time.
    """

    def __init__(self) -> None:
        self.proc: subprocess.Popen[bytes] | None = None
        self.workdir: Path | None = None
        self.port: int | None = None

    @property
    def log_tail(self) -> str:
        log = self.workdir / "server.log" if self.workdir else None
        return log.read_text(errors="replace")[-3000:] if log and log.exists() else ""

    def start(self, timeout: float = 60.0) -> None:
        from pymongo import MongoClient
        from pymongo.errors import PyMongoError

        self.workdir = Path(tempfile.mkdtemp(prefix="sagas-secantus-"))
        with open(self.workdir / "server.log", "wb") as log:
            # `python -m secantus` is the `secantusd-py` command, from this interpreter's environment.
            self.proc = subprocess.Popen(
                [
                    sys.executable,
                    "-m",
                    "secantus",
                    "--host",
                    "127.0.0.1",
                    "--port",
                    "0",
                    "--storage-path",
                    str(self.workdir / "data"),
                    "--log-level",
                    "INFO",
                ],
                stdout=log,
                stderr=subprocess.STDOUT,
                stdin=subprocess.DEVNULL,
            )
        deadline = time.monotonic() + timeout
        while True:
            if self.proc.poll() is not None:
                raise RuntimeError(f"SecantusDB exited with {self.proc.returncode}:\n{self.log_tail}")
            if time.monotonic() > deadline:
                self.stop()
                raise TimeoutError(f"SecantusDB did not answer within {timeout} s:\n{self.log_tail}")
            if self.port is None:
                found = re.search(r"listening on 127\.0\.0\.1:(\d+)", self.log_tail)
                self.port = int(found.group(1)) if found else None
            if self.port is not None:
                client: MongoClient[dict[str, Any]] = MongoClient(
                    self.url("admin"), serverSelectionTimeoutMS=250, connectTimeoutMS=250
                )
                try:
                    client.admin.command("ping")
                    return
                except PyMongoError:
                    pass
                finally:
                    client.close()
            time.sleep(0.02)  # poll interval

    def url(self, database: str) -> str:
        return f"mongodb://127.0.0.1:{self.port}/{database}?replicaSet=secantus&directConnection=true"

    def stop(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(10)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(10)
        self.proc = None
        if self.workdir is not None:
            shutil.rmtree(self.workdir, ignore_errors=True)
            self.workdir = None


_secantus: SecantusServer | None = None


def stop_mongo_server() -> None:
    """Stop the stand-in if this session started it (idempotent)."""
    global _secantus
    if _secantus is not None:
        _secantus.stop()
        _secantus = None


def mongo_server_url(database: str) -> str:
    """A URL of ``database`` on the MongoDB the tests use; skips (fails in CI) when there is none.

    ``SAGAS_TEST_MONGODB_URL`` (``mongodb://host:port/?replicaSet=rs0``) names a
    real replica set; without it the SecantusDB stand-in is started, once.
    """
    global _secantus
    url = os.environ.get("SAGAS_TEST_MONGODB_URL")
    if url:
        host, _, query = url.partition("?")
        host = host.split("://", 1)[0] + "://" + host.split("://", 1)[1].split("/", 1)[0]
        return f"{host}/{database}?{query}"
    if _secantus is None:
        in_ci = os.environ.get("CI", "").lower() == "true"
        if importlib.util.find_spec("secantus") is None or importlib.util.find_spec("pymongo") is None:
            reason = "SecantusDB==0.7.0b3 and pymongo are not installed (run scripts/install-services.sh)"
            if in_ci:
                pytest.fail(f"CI=true and the MongoDB stand-in is missing: {reason}", pytrace=False)
            pytest.skip(reason)
        server = SecantusServer()
        try:
            server.start()
        except (OSError, RuntimeError, TimeoutError) as exc:
            server.stop()
            if in_ci:
                pytest.fail(f"CI=true and the MongoDB stand-in did not start: {exc}", pytrace=False)
            pytest.skip(f"the MongoDB stand-in did not start: {exc}")
        _secantus = server
        atexit.register(stop_mongo_server)  # a backstop; the session fixture below stops it first
    return _secantus.url(database)


@pytest.fixture(scope="session", autouse=True)
def _mongo_server_lifetime() -> Iterator[None]:
    yield
    stop_mongo_server()


def _mongo_database(tmp_path: Path) -> str:
    # One database per test (tmp_path is per test); reopen finds the same one.
    return f"sagas_test_{uuid.uuid5(uuid.NAMESPACE_URL, str(tmp_path)).hex[:12]}"


async def _open_mongo(tmp_path: Path) -> HistoryStore:
    return await open_store(mongo_server_url(_mongo_database(tmp_path)))


async def _raw_mongo_event(store: HistoryStore, key: RunKey, data: dict[str, Any]) -> None:
    from orchestrator.persistence.mongo import MongoHistoryStore

    inner = innermost(store)
    assert isinstance(inner, MongoHistoryStore)
    namespace, workflow_id, run_id = key
    await inner._coll("history_events").insert_one(
        {
            "namespace": namespace,
            "workflow_id": workflow_id,
            "run_id": run_id,
            "event_id": data["event_id"],
            "data": json.dumps(data),
        }
    )


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
    StoreBackend("mongo", _open_mongo, reopen=_open_mongo, insert_raw_event=_raw_mongo_event),
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
