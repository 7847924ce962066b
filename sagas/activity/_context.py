"""The running activity's context, found through a context variable.

The worker (or :class:`sagas.testing.ActivityEnvironment`) sets it before
calling the activity. A sync activity runs in a thread of the worker's
executor with a *copy* of the context, so the module functions work there too.
"""

from __future__ import annotations

import asyncio
import contextvars
import threading
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from sagas.client import Client


@dataclass(frozen=True)
class Info:
    """Information about the running activity, from :func:`sagas.activity.info`.

    ``heartbeat_details`` are the details of the last heartbeat of a
    *previous* attempt, so a retried activity can resume where it stopped::

        start = activity.info().heartbeat_details[0] if activity.info().heartbeat_details else 0

    >>> from sagas.testing import ActivityEnvironment
    >>> from sagas import activity
    >>> env = ActivityEnvironment()
    >>> env.run(lambda: (activity.info().activity_type, activity.info().attempt))
    ('unknown', 1)
    """

    activity_id: str
    activity_type: str
    attempt: int
    namespace: str
    task_queue: str
    task_token: bytes
    """Opaque token for ``Client.get_async_activity_handle(task_token=...)``."""
    workflow_id: str | None
    workflow_run_id: str | None
    workflow_type: str | None
    heartbeat_details: Sequence[Any] = ()
    heartbeat_timeout: timedelta | None = None
    deadline: datetime | None = None
    """When this attempt's start-to-close (or schedule-to-close) time runs out."""
    scheduled_time: datetime | None = None
    started_time: datetime | None = None
    current_attempt_scheduled_time: datetime | None = None
    schedule_to_close_timeout: timedelta | None = None
    start_to_close_timeout: timedelta | None = None
    is_local: bool = False

    @property
    def run_id(self) -> str | None:
        """Run id of the workflow that scheduled the activity (alias of ``workflow_run_id``)."""
        return self.workflow_run_id

    @property
    def workflow_namespace(self) -> str | None:
        """Namespace of the workflow (the activity's own namespace)."""
        return self.namespace if self.workflow_id is not None else None

    @property
    def in_workflow(self) -> bool:
        """True when a workflow scheduled this activity."""
        return self.workflow_id is not None

    def logger_details(self) -> dict[str, Any]:
        """The ids that :data:`sagas.activity.logger` adds to each record (activity, workflow, attempt...)."""
        return {
            "activity_id": self.activity_id,
            "activity_type": self.activity_type,
            "attempt": self.attempt,
            "namespace": self.namespace,
            "task_queue": self.task_queue,
            "workflow_id": self.workflow_id,
            "workflow_run_id": self.workflow_run_id,
            "workflow_type": self.workflow_type,
        }


class CompositeEvent:
    """An event that threads wait on synchronously and coroutines asynchronously.

    ``set`` may be called from any thread.
    """

    def __init__(self, loop: asyncio.AbstractEventLoop | None = None) -> None:
        self._thread_event = threading.Event()
        self._loop = loop
        self._async_event = asyncio.Event() if loop is not None else None

    def set(self) -> None:
        self._thread_event.set()
        if self._async_event is None or self._loop is None:
            return
        try:
            running = asyncio.get_running_loop()
        except RuntimeError:
            running = None
        if running is self._loop:
            self._async_event.set()
        elif not self._loop.is_closed():
            self._loop.call_soon_threadsafe(self._async_event.set)

    def is_set(self) -> bool:
        return self._thread_event.is_set()

    async def wait(self) -> None:
        if self._async_event is None:
            raise RuntimeError("wait_for_cancelled() is only available in async activities")
        await self._async_event.wait()

    def wait_sync(self, timeout: float | None = None) -> bool:
        return self._thread_event.wait(timeout)


@dataclass(frozen=True)
class CancellationDetails:
    """Why the activity was cancelled (the first reason wins).

    Example (inside an activity)::

        details = activity.cancellation_details()
        if details is not None and details.timed_out:
            activity.logger.warning("gave up: the activity timed out")
    """

    cancel_requested: bool = False
    """The workflow asked to cancel the activity."""
    not_found: bool = False
    """The server no longer knows this attempt (it timed out, or the workflow closed)."""
    timed_out: bool = False
    """The attempt's deadline passed on the worker."""
    worker_shutdown: bool = False


@dataclass
class ActivityContext:
    """What the module-level functions of :mod:`sagas.activity` act on."""

    info: Callable[[], Info]
    heartbeat: Callable[..., None]
    cancelled: CompositeEvent
    worker_shutdown: CompositeEvent
    client: Client | None = None
    cancellation: list[CancellationDetails] = field(default_factory=list)

    def cancel(self, details: CancellationDetails) -> None:
        if not self.cancellation:
            self.cancellation.append(details)
        self.cancelled.set()


_current: contextvars.ContextVar[ActivityContext] = contextvars.ContextVar("sagas_activity")


def current() -> ActivityContext:
    ctx = _current.get(None)
    if ctx is None:
        raise RuntimeError(
            "not in an activity: sagas.activity functions work only while a Worker or "
            "ActivityEnvironment runs an activity (in another thread, copy the context "
            "with contextvars.copy_context())"
        )
    return ctx


def set_current(ctx: ActivityContext) -> contextvars.Token[ActivityContext]:
    return _current.set(ctx)


def reset_current(token: contextvars.Token[ActivityContext]) -> None:
    _current.reset(token)


def in_activity() -> bool:
    """True when called from a running activity (also under :class:`~sagas.testing.ActivityEnvironment`).

    >>> from sagas import activity
    >>> from sagas.testing import ActivityEnvironment
    >>> activity.in_activity()
    False
    >>> ActivityEnvironment().run(activity.in_activity)
    True
    """
    return _current.get(None) is not None
