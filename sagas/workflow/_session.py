"""Worker sessions: run a group of activities on one worker process (Temporal Go's sessions).

Built only on existing primitives:

* ``create_session`` schedules the *session creation activity*
  (:data:`SESSION_CREATION_ACTIVITY`) on the creation queue of a task queue
  (:func:`session_creation_queue`), which only workers started with
  ``max_concurrent_sessions`` poll -- each at most that many at once, so a
  worker without a free slot never takes one.
* The worker that takes it signals the workflow (:data:`SESSION_CREATED_SIGNAL`)
  with its own per-process queue (:func:`session_task_queue`) and keeps the
  activity running, heartbeating, for the session's lifetime.
* Activities of the session are scheduled on that queue, so only that process
  runs them.
* ``complete_session`` cancels the creation activity (the worker frees the
  slot). If the worker dies, the creation activity's heartbeat timeout fires
  and the session fails: its activities raise :class:`SessionFailedError`.
"""

from __future__ import annotations

import asyncio
import contextvars
import dataclasses
import enum
import weakref
from collections.abc import Generator
from datetime import timedelta
from typing import Any

from orchestrator.api.enums import ActivityCancellationType, TimeoutType
from sagas.common import RetryPolicy
from sagas.exceptions import SessionFailedError, TimeoutError
from sagas.workflow._instance import ActivityHandle, WorkflowInstance, current

SESSION_CREATION_ACTIVITY = "__sagas_session_creation"
"""Activity type of the session creation activity (run by session-enabled workers only)."""

SESSION_CREATED_SIGNAL = "__sagas_session_created"
"""Signal the hosting worker sends with ``{"session_id", "task_queue", "identity"}``."""


def session_creation_queue(task_queue: str) -> str:
    """The task queue of session creation activities for ``task_queue``.

    Example::

        session_creation_queue("media")  # 'media.__session_creation'
    """
    return f"{task_queue}.__session_creation"


def session_task_queue(task_queue: str, worker_key: str) -> str:
    """The per-process task queue a session worker of ``task_queue`` polls for its sessions' activities.

    Example::

        session_task_queue("media", "3f2a9c")  # 'media.__session.3f2a9c'
    """
    return f"{task_queue}.__session.{worker_key}"


class SessionState(enum.StrEnum):
    """State of a worker session: ``OPEN``, ``COMPLETED`` (by the workflow) or ``FAILED``.

    Example (inside a workflow)::

        if workflow.get_session_info().state is workflow.SessionState.FAILED:
            ...
    """

    OPEN = "open"
    COMPLETED = "completed"
    FAILED = "failed"


@dataclasses.dataclass(frozen=True)
class SessionOptions:
    """How a session is created (Temporal Go's ``SessionOptions``).

    * ``execution_timeout``: the longest the session may stay open; then it fails.
    * ``creation_timeout``: how long to wait for a worker with a free session slot.
    * ``heartbeat_timeout``: how soon a dead worker is noticed (the worker
      heartbeats several times within it).
    * ``task_queue``: the task queue whose session workers may host it (default:
      the workflow's task queue).

    Example (inside a workflow)::

        opts = workflow.SessionOptions(execution_timeout=timedelta(minutes=30),
                                       heartbeat_timeout=timedelta(seconds=10))
        async with workflow.create_session(opts):
            ...
    """

    execution_timeout: timedelta = timedelta(hours=1)
    creation_timeout: timedelta = timedelta(minutes=1)
    heartbeat_timeout: timedelta = timedelta(seconds=20)
    task_queue: str | None = None

    def __post_init__(self) -> None:
        for name in ("execution_timeout", "creation_timeout", "heartbeat_timeout"):
            value = getattr(self, name)
            if not isinstance(value, timedelta) or value <= timedelta(0):
                raise ValueError(f"SessionOptions.{name} must be a positive timedelta, got {value!r}")
        if self.task_queue is not None and not self.task_queue:
            raise ValueError("SessionOptions.task_queue must not be empty")


class SessionInfo:
    """A worker session of this workflow run (Temporal Go's ``SessionInfo``).

    Returned by ``await workflow.create_session(...)`` and by
    ``async with workflow.create_session(...) as session``;
    :func:`get_session_info` gives the current one. ``task_queue`` is the
    hosting worker's own queue: activities scheduled there run on that worker
    (inside ``async with`` they are scheduled there by default).

    Example (inside a workflow)::

        session = await workflow.create_session(execution_timeout=timedelta(minutes=10))
        try:
            await workflow.execute_activity(download, url, task_queue=session.task_queue,
                                            start_to_close_timeout=timedelta(minutes=5))
        finally:
            workflow.complete_session(session)
    """

    def __init__(self, session_id: str, options: SessionOptions, instance: WorkflowInstance) -> None:
        self._session_id = session_id
        self._options = options
        self._instance = instance
        self._task_queue = ""
        self._identity = ""
        self._state = SessionState.OPEN
        self._creation: ActivityHandle[Any] | None = None
        self._activities: list[ActivityHandle[Any]] = []
        self._error: SessionFailedError | None = None

    @property
    def session_id(self) -> str:
        """The session's id (a deterministic UUID of the workflow)."""
        return self._session_id

    @property
    def task_queue(self) -> str:
        """The hosting worker's session task queue (empty until the session is open)."""
        return self._task_queue

    @property
    def worker_identity(self) -> str:
        """Identity of the worker hosting the session (Temporal Go's ``HostName``)."""
        return self._identity

    @property
    def state(self) -> SessionState:
        """``OPEN``, ``COMPLETED`` or ``FAILED``."""
        return self._state

    @property
    def options(self) -> SessionOptions:
        """The options the session was created with."""
        return self._options

    def __repr__(self) -> str:
        return f"SessionInfo(session_id={self._session_id!r}, state={self._state.value}, worker={self._identity!r})"

    def _failed_error(self) -> SessionFailedError:
        err = SessionFailedError(
            f"session {self._session_id} failed: "
            f"{self._error.message if self._error is not None else 'unknown reason'} "
            f"(worker {self._identity or 'unknown'}); redo the session's work in a new session",
            session_id=self._session_id,
        )
        if self._error is not None:
            err.__cause__ = self._error.__cause__
        return err

    def _queue_for_activity(self) -> str:
        if self._state is SessionState.FAILED:
            raise self._failed_error()
        if self._state is SessionState.COMPLETED:
            raise RuntimeError(
                f"session {self._session_id} is completed: no activity can be started in it; "
                "create a new session (workflow.create_session) for more work"
            )
        return self._task_queue

    def _track(self, handle: ActivityHandle[Any]) -> None:
        self._activities = [h for h in self._activities if not h.done()]
        self._activities.append(handle)

    def _on_creation_done(self, handle: ActivityHandle[Any]) -> None:
        cause = None if handle.cancelled() else handle.exception()
        if self._state is not SessionState.OPEN:
            return  # completed by the workflow: the cancellation we asked for
        self._state = SessionState.FAILED
        self._error = SessionFailedError(_reason(cause), session_id=self._session_id)
        self._error.__cause__ = cause
        for activity in self._activities:
            if activity.done():
                continue
            err = self._failed_error()
            self._instance._cancel_activity(activity._sagas_state, err)
            if not activity._sagas_state.future.done():  # WAIT_CANCELLATION_COMPLETED: its worker is gone
                activity._sagas_state.future.set_exception(err)
        self._activities = []

    def _complete(self) -> None:
        if self._state is not SessionState.OPEN:
            return
        self._state = SessionState.COMPLETED
        if self._creation is not None and not self._creation.done():
            self._creation.cancel()


_TIMEOUT_REASONS = {
    TimeoutType.HEARTBEAT: "its worker stopped heartbeating (died, hung or lost the server) within heartbeat_timeout",
    TimeoutType.START_TO_CLOSE: "it reached its execution_timeout",
    TimeoutType.SCHEDULE_TO_START: "no worker with a free session slot took it within creation_timeout",
}


def _reason(error: BaseException | None) -> str:
    """Why the creation activity ended, in the words of sessions."""
    if error is None:
        return "the session creation activity ended"
    cause = error.__cause__
    if isinstance(cause, TimeoutError) and cause.type in _TIMEOUT_REASONS:
        return _TIMEOUT_REASONS[cause.type]
    reason = str(getattr(error, "message", None) or error or type(error).__name__)
    if cause is not None:
        reason = f"{reason}: {getattr(cause, 'message', None) or cause}"
    return reason


class _Sessions:
    """The sessions of one workflow instance (and the handler of the creation signal)."""

    def __init__(self, instance: WorkflowInstance) -> None:
        self.instance = instance
        self.pending: dict[str, asyncio.Future[dict[str, Any]]] = {}
        self.by_queue: dict[str, SessionInfo] = {}
        instance.set_signal_handler(SESSION_CREATED_SIGNAL, self.on_created)

    def on_created(self, payload: Any) -> None:
        if not isinstance(payload, dict):
            return
        future = self.pending.pop(str(payload.get("session_id", "")), None)
        if future is not None and not future.done():  # else: a stale or duplicate creation
            future.set_result(payload)


_registries: weakref.WeakKeyDictionary[WorkflowInstance, _Sessions] = weakref.WeakKeyDictionary()
_current_session: contextvars.ContextVar[SessionInfo | None] = contextvars.ContextVar(
    "sagas_current_session", default=None
)


def _sessions(instance: WorkflowInstance) -> _Sessions:
    found = _registries.get(instance)
    if found is None:
        found = _registries[instance] = _Sessions(instance)
    return found


def _options(
    options: SessionOptions | None,
    task_queue: str | None,
    execution_timeout: timedelta | None,
    creation_timeout: timedelta | None,
    heartbeat_timeout: timedelta | None,
) -> SessionOptions:
    opts = options or SessionOptions()
    changes: dict[str, Any] = {
        name: value
        for name, value in (
            ("task_queue", task_queue),
            ("execution_timeout", execution_timeout),
            ("creation_timeout", creation_timeout),
            ("heartbeat_timeout", heartbeat_timeout),
        )
        if value is not None
    }
    return dataclasses.replace(opts, **changes) if changes else opts


async def _open_session(options: SessionOptions) -> SessionInfo:
    instance = current()
    active = _current_session.get()
    if active is not None and active.state is SessionState.OPEN:
        raise RuntimeError(
            f"already inside session {active.session_id}: sessions do not nest; "
            "complete it first (leave its 'async with' block)"
        )
    registry = _sessions(instance)
    session = SessionInfo(str(instance.uuid4()), options, instance)
    created: asyncio.Future[dict[str, Any]] = instance.create_future()
    registry.pending[session.session_id] = created
    base_queue = options.task_queue or instance.info.task_queue
    creation = instance.start_activity(
        SESSION_CREATION_ACTIVITY,
        [{"session_id": session.session_id}],
        task_queue=session_creation_queue(base_queue),
        schedule_to_close_timeout=None,
        schedule_to_start_timeout=options.creation_timeout,
        start_to_close_timeout=options.execution_timeout,
        heartbeat_timeout=options.heartbeat_timeout,
        retry_policy=RetryPolicy(maximum_attempts=1),
        cancellation_type=ActivityCancellationType.TRY_CANCEL,
        activity_id=f"__session.{session.session_id}",
        result_type=None,
        headers=None,
    )
    session._creation = creation
    try:
        await asyncio.wait([created, creation], return_when=asyncio.FIRST_COMPLETED)
    except asyncio.CancelledError:
        registry.pending.pop(session.session_id, None)
        creation.cancel()
        raise
    registry.pending.pop(session.session_id, None)
    if not created.done():
        error = creation.exception() if not creation.cancelled() else None
        failed = SessionFailedError(
            f"could not create session {session.session_id} on task queue {base_queue!r}: {_reason(error)} "
            f"({options.creation_timeout}); start workers with max_concurrent_sessions on that task queue, "
            "or allow more sessions per worker",
            session_id=session.session_id,
        )
        failed.__cause__ = error
        raise failed
    payload = created.result()
    session._task_queue = str(payload.get("task_queue", ""))
    session._identity = str(payload.get("identity", ""))
    registry.by_queue[session._task_queue] = session
    creation.add_done_callback(session._on_creation_done)
    if creation.done():  # failed in the same workflow task as it was opened
        raise session._failed_error()
    return session


class _SessionCreation:
    """What :func:`create_session` returns: await it, or use it with ``async with``."""

    def __init__(self, options: SessionOptions) -> None:
        self._options = options
        self._session: SessionInfo | None = None
        self._token: contextvars.Token[SessionInfo | None] | None = None

    def __await__(self) -> Generator[Any, None, SessionInfo]:
        return _open_session(self._options).__await__()

    async def __aenter__(self) -> SessionInfo:
        if self._session is not None:
            raise RuntimeError("this create_session(...) was already entered; call create_session again")
        self._session = await _open_session(self._options)
        self._token = _current_session.set(self._session)
        return self._session

    async def __aexit__(self, *exc: object) -> None:
        if self._token is not None:
            _current_session.reset(self._token)
            self._token = None
        if self._session is not None:
            self._session._complete()


def create_session(
    options: SessionOptions | None = None,
    *,
    task_queue: str | None = None,
    execution_timeout: timedelta | None = None,
    creation_timeout: timedelta | None = None,
    heartbeat_timeout: timedelta | None = None,
) -> _SessionCreation:
    """Open a worker session: the activities started in it all run on one worker process.

    Like Temporal Go's ``workflow.CreateSession``. Use it as an async context
    manager -- activities started inside the block (by this task and the tasks
    it creates) go to the session's worker unless they name another
    ``task_queue``, and the session is completed when the block ends -- or
    await it for a :class:`SessionInfo` and pass ``task_queue=session.task_queue``
    yourself, then call :func:`complete_session`.

    Keyword arguments override the fields of ``options`` (:class:`SessionOptions`).
    A worker hosts sessions only when started with ``max_concurrent_sessions``;
    the session waits up to ``creation_timeout`` for one with a free slot.
    Raises :class:`~sagas.exceptions.SessionFailedError` when no worker took
    it, or when its worker fails (the session's activities raise it too); a
    workflow that catches it can create a new session, usually on another worker.

    Example (inside a workflow)::

        async with workflow.create_session(execution_timeout=timedelta(minutes=10)) as session:
            path = await workflow.execute_activity(download, url, start_to_close_timeout=timedelta(minutes=5))
            size = await workflow.execute_activity(transcode, path, start_to_close_timeout=timedelta(minutes=5))
        # both ran on session.worker_identity, which still has the file from download
    """
    return _SessionCreation(_options(options, task_queue, execution_timeout, creation_timeout, heartbeat_timeout))


session = create_session
"""Alias of :func:`create_session`, read naturally with ``async with workflow.session(...) as s:``."""


def complete_session(session: SessionInfo) -> None:
    """Complete a session: its worker frees the slot (Temporal Go's ``workflow.CompleteSession``).

    No new activity can be started in it (``RuntimeError``). Completing a
    failed or already completed session does nothing. ``async with
    workflow.create_session(...)`` calls it when the block ends.

    Example (inside a workflow)::

        session = await workflow.create_session()
        try:
            await workflow.execute_activity(clean_up, task_queue=session.task_queue,
                                            start_to_close_timeout=timedelta(seconds=30))
        finally:
            workflow.complete_session(session)
    """
    if not isinstance(session, SessionInfo):
        raise TypeError(f"complete_session takes the SessionInfo create_session gave, not {session!r}")
    session._complete()


def get_session_info() -> SessionInfo | None:
    """The session of the enclosing ``async with workflow.create_session(...)`` block, or None.

    Like Temporal Go's ``workflow.GetSessionInfo``.

    Example (inside a workflow)::

        async with workflow.create_session():
            workflow.logger.info("running on %s", workflow.get_session_info().worker_identity)
    """
    current()  # only in workflow code
    return _current_session.get()


def session_for_activity(task_queue: str | None) -> SessionInfo | None:
    """The session an activity with this ``task_queue`` argument belongs to, if any."""
    if task_queue is None:
        return _current_session.get()
    registry = _registries.get(current())
    return registry.by_queue.get(task_queue) if registry is not None else None
