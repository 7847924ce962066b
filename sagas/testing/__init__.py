"""Test helpers (mirrors ``temporalio.testing``).

* :class:`WorkflowEnvironment` -- a real orchestrator in this process, on an
  in-memory store and a free port, with a connected client.

  Example::

      async with await WorkflowEnvironment.start_local() as env:
          async with Worker(env.client, task_queue="tq", workflows=[MyWorkflow], activities=[act]):
              assert await env.client.execute_workflow(MyWorkflow.run, id="wf-1", task_queue="tq") == "done"

  :meth:`WorkflowEnvironment.start_time_skipping` does the same with durable
  timers that jump ahead whenever every worker is idle, so a workflow that
  sleeps for a day finishes at once.

* :class:`ActivityEnvironment` -- runs one activity function with a fake
  activity context: heartbeats are recorded, cancellation can be requested::

      env = ActivityEnvironment()
      result = await env.run(charge_card, order)
      assert env.heartbeats == [("contacting bank",)]
"""

from __future__ import annotations

import asyncio
import dataclasses
import inspect
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from typing import TYPE_CHECKING, Any, ParamSpec, TypeVar

from sagas.activity._context import (
    ActivityContext,
    CancellationDetails,
    CompositeEvent,
    Info,
    reset_current,
    set_current,
)
from sagas.activity._definition import is_async_callable
from sagas.client import Client
from sagas.converter import DataConverter

if TYPE_CHECKING:
    from orchestrator.server import DevServer

__all__ = ["ActivityEnvironment", "WorkflowEnvironment"]

_P = ParamSpec("_P")
_R = TypeVar("_R")


class WorkflowEnvironment:
    """A client connected to an orchestrator, plus the in-process server when it started one.

    Example (a pytest test, with pytest-asyncio)::

        async def test_trip_waits_a_day() -> None:
            async with await WorkflowEnvironment.start_time_skipping() as env:
                async with Worker(env.client, task_queue="trips", workflows=[BookTrip], activities=[book_car]):
                    result = await env.client.execute_workflow(BookTrip.run, trip, id="trip-1", task_queue="trips")
            assert result == "booked"
    """

    def __init__(self, client: Client, server: DevServer | None = None, *, time_skipping: bool = False) -> None:
        self._client = client
        self._server = server
        self._time_skipping = time_skipping

    @classmethod
    def from_client(cls, client: Client) -> WorkflowEnvironment:
        """Wrap an existing client (its server is not stopped by :meth:`shutdown`)."""
        return cls(client)

    @classmethod
    async def start_local(
        cls,
        *,
        namespace: str = "default",
        data_converter: DataConverter | None = None,
        **server_kwargs: Any,
    ) -> WorkflowEnvironment:
        """Start a dev server in this process (``memory://`` store, built-in broker, free port).

        ``server_kwargs`` go to ``orchestrator.server.DevServer`` (e.g.
        ``store_url="sqlite:///tmp/x.db"``).
        """
        from orchestrator.server import DevServer

        kwargs: dict[str, Any] = {"store_url": "memory://", "broker_url": "local://", "host": "127.0.0.1", "port": 0}
        kwargs.update(server_kwargs)
        server = DevServer(**kwargs)
        await server.start()
        try:
            client = await Client.connect(server.target, namespace=namespace, data_converter=data_converter)
        except BaseException:
            await server.stop()
            raise
        return cls(client, server, time_skipping=bool(kwargs.get("time_skipping", False)))

    @classmethod
    async def start_time_skipping(
        cls,
        *,
        namespace: str = "default",
        data_converter: DataConverter | None = None,
        **server_kwargs: Any,
    ) -> WorkflowEnvironment:
        """Like :meth:`start_local`, with durable timers that jump ahead when every worker is idle."""
        server_kwargs["time_skipping"] = True
        return await cls.start_local(namespace=namespace, data_converter=data_converter, **server_kwargs)

    @property
    def client(self) -> Client:
        """The client connected to the environment's orchestrator."""
        return self._client

    @property
    def server(self) -> DevServer | None:
        """The in-process server, when this environment started one."""
        return self._server

    @property
    def supports_time_skipping(self) -> bool:
        """True for an environment from :meth:`start_time_skipping`."""
        return self._time_skipping

    async def sleep(self, duration: timedelta | float) -> None:
        """Wait ``duration`` (real time; with time skipping, timers jump while workers are idle)."""
        seconds = duration.total_seconds() if isinstance(duration, timedelta) else float(duration)
        await asyncio.sleep(seconds)

    async def shutdown(self) -> None:
        """Close the client and stop the server this environment started."""
        try:
            await self._client.close()
        finally:
            if self._server is not None:
                server, self._server = self._server, None
                await server.stop()

    async def __aenter__(self) -> WorkflowEnvironment:
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.shutdown()


class ActivityEnvironment:
    """Runs activity functions with a fake activity context.

    * ``info``: what ``activity.info()`` returns; change it with
      ``dataclasses.replace(env.info, attempt=3)``;
    * ``heartbeats``: one tuple of details per ``activity.heartbeat(...)`` call;
    * ``on_heartbeat``: also called with each heartbeat's details;
    * :meth:`cancel`: request cancellation (async activities get
      ``asyncio.CancelledError``; every activity sees ``activity.is_cancelled()``).

    >>> from sagas import activity
    >>> from sagas.testing import ActivityEnvironment
    >>> @activity.defn
    ... def resize(path: str) -> str:
    ...     activity.heartbeat("resizing")
    ...     return path.replace(".png", ".small.png")
    >>> env = ActivityEnvironment()
    >>> env.run(resize, "cat.png")
    'cat.small.png'
    >>> env.heartbeats
    [('resizing',)]
    """

    def __init__(self, client: Client | None = None) -> None:
        self.info: Info = ActivityEnvironment.default_info()
        self.heartbeats: list[tuple[Any, ...]] = []
        self.on_heartbeat: Callable[..., None] = lambda *details: None
        self._client = client
        self._cancellation: CancellationDetails | None = None
        self._worker_shutdown = False
        self._running: set[_ActivityRun] = set()

    @staticmethod
    def default_info() -> Info:
        """The ``info`` a new environment starts with."""
        epoch = datetime.fromtimestamp(0, UTC)
        return Info(
            activity_id="test",
            activity_type="unknown",
            attempt=1,
            namespace="default",
            task_queue="test",
            task_token=b"test",
            workflow_id="test",
            workflow_run_id="test-run",
            workflow_type="test",
            heartbeat_details=(),
            heartbeat_timeout=None,
            deadline=None,
            scheduled_time=epoch,
            started_time=epoch,
            current_attempt_scheduled_time=epoch,
            schedule_to_close_timeout=timedelta(seconds=1),
            start_to_close_timeout=timedelta(seconds=1),
        )

    def cancel(self, details: CancellationDetails | None = None) -> None:
        """Request cancellation of the running activity (and of those run afterwards)."""
        if self._cancellation is not None:
            return
        details = details or CancellationDetails(cancel_requested=True)
        self._cancellation = details
        for run in list(self._running):
            run.cancel(details)

    def worker_shutdown(self) -> None:
        """Tell the activity the worker is shutting down."""
        self._worker_shutdown = True
        for run in list(self._running):
            run.ctx.worker_shutdown.set()

    def run(self, fn: Callable[_P, _R], *args: _P.args, **kwargs: _P.kwargs) -> _R:
        """Call ``fn`` in the activity context; for an async ``fn`` this returns an awaitable."""
        result: _R = _ActivityRun(self, fn, is_async_callable(fn)).run(*args, **kwargs)
        return result

    def _heartbeat(self, *details: Any) -> None:
        self.heartbeats.append(tuple(details))
        self.on_heartbeat(*details)


class _ActivityRun:
    def __init__(self, env: ActivityEnvironment, fn: Callable[..., Any], is_async: bool) -> None:
        self.env = env
        self.fn = fn
        self.is_async = is_async
        self.task: asyncio.Task[Any] | None = None
        self.ctx = ActivityContext(
            info=lambda: env.info,
            heartbeat=env._heartbeat,
            cancelled=CompositeEvent(None),
            worker_shutdown=CompositeEvent(None),
            client=env._client,
        )

    def cancel(self, details: CancellationDetails) -> None:
        self.ctx.cancel(details)
        if self.task is not None and not self.task.done():
            self.task.cancel()

    def _enter(self) -> None:
        self.env._running.add(self)
        if self.env._cancellation is not None:
            self.ctx.cancel(self.env._cancellation)
        if self.env._worker_shutdown:
            self.ctx.worker_shutdown.set()

    def run(self, *args: Any, **kwargs: Any) -> Any:
        if not self.is_async:
            self._enter()
            token = set_current(self.ctx)
            try:
                return self.fn(*args, **kwargs)
            finally:
                reset_current(token)
                self.env._running.discard(self)
        return self._run_async(*args, **kwargs)

    async def _run_async(self, *args: Any, **kwargs: Any) -> Any:
        loop = asyncio.get_running_loop()
        self.ctx = dataclasses.replace(self.ctx, cancelled=CompositeEvent(loop), worker_shutdown=CompositeEvent(loop))
        self._enter()
        token = set_current(self.ctx)
        try:
            coro = self.fn(*args, **kwargs)
            if not inspect.isawaitable(coro):
                return coro
            self.task = asyncio.ensure_future(coro)
            if self.ctx.cancelled.is_set():
                self.task.cancel()
            return await self.task
        finally:
            reset_current(token)
            self.env._running.discard(self)
