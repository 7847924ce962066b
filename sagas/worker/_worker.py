"""The Worker: polls a task queue's workflow and activity queues on the broker."""

from __future__ import annotations

import asyncio
import concurrent.futures
import logging
import uuid
from collections.abc import Callable, Sequence
from datetime import timedelta
from typing import TYPE_CHECKING, Any

from brokers.base import Broker, BrokerError, open_broker, parse_broker_url, queue_name
from brokers.local import LocalBrokerClient
from sagas.activity._definition import ActivityDefinition
from sagas.worker._activity_worker import ActivityTaskHandler
from sagas.worker._poller import QueuePoller
from sagas.worker._session import SessionCreationHandler
from sagas.worker._workflow_worker import WorkflowTaskHandler
from sagas.workflow._instance import WorkflowRunner
from sagas.workflow._session import session_creation_queue, session_task_queue

if TYPE_CHECKING:
    from sagas.client import Client

_log = logging.getLogger("sagas.worker")


def _activity_definitions(
    activities: Sequence[Callable[..., Any]], executor: concurrent.futures.Executor | None
) -> dict[str, ActivityDefinition]:
    found: dict[str, ActivityDefinition] = {}
    for fn in activities:
        defn = ActivityDefinition.must_from_callable(fn)
        if defn.name in found:
            raise ValueError(f"two activities are registered under the name {defn.name!r}")
        if not defn.is_async and executor is None:
            raise TypeError(
                f"activity {defn.name!r} is a sync function, so the worker needs an activity_executor "
                "to run it (e.g. activity_executor=concurrent.futures.ThreadPoolExecutor(max_workers=10)); "
                "or make it 'async def'"
            )
        found[defn.name] = defn
    return found


class Worker:
    """Runs workflows and activities for one task queue (mirrors ``temporalio.worker.Worker``).

    Example::

        async with Worker(client, task_queue="trips", workflows=[BookTrip], activities=[book_car]):
            await client.execute_workflow(BookTrip.run, trip, id="trip-1", task_queue="trips")

        # or, in a worker process:
        await Worker(client, task_queue="trips", workflows=[BookTrip], activities=[book_car]).run()

    Sync (non-``async``) activities need ``activity_executor``, a
    ``ThreadPoolExecutor`` in which they run with the activity context.

    ``poll_wait`` is how long one broker long poll waits for a task; shutdown
    lets the open poll return (and requeues what it got) rather than abandon
    it, so it also bounds how long stopping takes beyond in-flight tasks.

    ``max_concurrent_sessions`` (default 0: off) lets this worker host up to
    that many worker sessions at once (``workflow.create_session``): it then
    also polls the task queue's session creation queue, and its own session
    queue (:attr:`session_task_queue`), where the activities of the sessions it
    hosts arrive. Stopping the worker fails the sessions it hosts.
    """

    def __init__(
        self,
        client: Client,
        *,
        task_queue: str,
        workflows: Sequence[type] = (),
        activities: Sequence[Callable[..., Any]] = (),
        activity_executor: concurrent.futures.Executor | None = None,
        max_concurrent_workflow_tasks: int = 100,
        max_concurrent_activities: int = 100,
        max_cached_workflows: int = 1000,
        graceful_shutdown_timeout: timedelta = timedelta(seconds=5),
        identity: str | None = None,
        deadlock_timeout: float | None = 2.0,
        poll_wait: float = 1.0,
        max_concurrent_sessions: int = 0,
        sticky_queue_schedule_to_start_timeout: timedelta = timedelta(seconds=5),
    ) -> None:
        if not task_queue:
            raise ValueError("task_queue must not be empty")
        if not workflows and not activities:
            raise ValueError("a Worker needs at least one workflow or activity")
        if max_concurrent_sessions < 0:
            raise ValueError("max_concurrent_sessions must be 0 (no sessions) or more")
        if max_concurrent_sessions and not activities:
            raise ValueError("max_concurrent_sessions needs activities: a session runs this worker's activities")
        self._client = client
        self._task_queue = task_queue
        self._activity_defs = _activity_definitions(activities, activity_executor)
        self._runner = (
            WorkflowRunner(
                list(workflows),
                data_converter=client.data_converter,
                local_activities={name: d.fn for name, d in self._activity_defs.items()},
                deadlock_timeout=deadlock_timeout if deadlock_timeout is not None else float("inf"),
            )
            if workflows
            else None
        )
        self._workflow_count = len(workflows)
        self._activity_executor = activity_executor
        self._max_wf = max_concurrent_workflow_tasks
        self._max_act = max_concurrent_activities
        self._max_cached = max_cached_workflows
        self._graceful = graceful_shutdown_timeout.total_seconds()
        self._identity = identity or client.identity
        self._poll_wait = poll_wait
        self._sticky_timeout = sticky_queue_schedule_to_start_timeout.total_seconds()
        self._sticky_queue: str | None = None
        self._max_sessions = max_concurrent_sessions
        self._session_task_queue = (
            session_task_queue(task_queue, uuid.uuid4().hex) if max_concurrent_sessions else None
        )
        self._session_handlers: list[ActivityTaskHandler | SessionCreationHandler] = []
        self._broker: Broker | None = None
        self._ack_with_completion = False
        """The broker is the built-in broker of the server the client talks to: completions carry
        the delivery they answer and the server acks it (``POST /tasks/complete?ack_queue=...``)."""
        self._pollers: list[QueuePoller] = []
        self._activity_handler: ActivityTaskHandler | None = None
        self._workflow_handler: WorkflowTaskHandler | None = None
        self._run_task: asyncio.Task[None] | None = None
        self._started = asyncio.Event()
        self._stop = asyncio.Event()
        self._stopped = False

    @property
    def task_queue(self) -> str:
        """The task queue this worker polls."""
        return self._task_queue

    @property
    def client(self) -> Client:
        """The client the worker was created with."""
        return self._client

    @property
    def session_task_queue(self) -> str | None:
        """This process's own session task queue (None without ``max_concurrent_sessions``)."""
        return self._session_task_queue

    @property
    def open_sessions(self) -> int:
        """How many sessions this worker hosts right now."""
        return sum(h.open_sessions for h in self._session_handlers if isinstance(h, SessionCreationHandler))

    @property
    def is_running(self) -> bool:
        """True from when the worker has started polling until it stops."""
        return self._started.is_set() and not self._stopped

    @property
    def is_shutdown(self) -> bool:
        """True once the worker has stopped."""
        return self._stopped

    async def _open_broker(self, url: str) -> Broker:
        scheme, _, _ = parse_broker_url(url)
        if scheme == "local":
            # The built-in broker is served by the frontend this client talks to: reuse its
            # address, credentials and TLS settings (the server may only know its bind address).
            transport = self._client.transport
            local = LocalBrokerClient(
                transport.base_url,
                headers=dict(transport.headers),
                verify=transport.verify,
                sni_hostname=transport.sni_hostname,
            )
            await local.connect()
            self._ack_with_completion = True
            return local
        return await open_broker(url)

    async def _start(self) -> None:
        info = await self._client.cluster_info(refresh=True)
        self._broker = await self._open_broker(info.worker_broker_url)
        namespace = self._client.namespace
        # Refuse only absurd messages: a workflow task carries many events, each with payloads.
        max_bytes = max(64 * 1024 * 1024, info.max_payload_bytes * 4)
        if self._runner is not None:
            self._workflow_handler = WorkflowTaskHandler(
                self._client,
                self._runner,
                identity=self._identity,
                max_cached_workflows=self._max_cached,
                max_message_bytes=max_bytes,
                ack_with_completion=self._ack_with_completion,
            )
            self._pollers.append(
                QueuePoller(
                    self._broker,
                    queue_name(info.queue_prefix, namespace, self._task_queue, "wf"),
                    self._workflow_handler.handle,
                    max_concurrent=self._max_wf,
                    poll_wait=self._poll_wait,
                )
            )
            if self._broker.sticky_routing and self._sticky_timeout > 0:
                await self._start_sticky(info.queue_prefix, namespace)
        if self._activity_defs:
            self._activity_handler = ActivityTaskHandler(
                self._client,
                self._activity_defs,
                executor=self._activity_executor,
                identity=self._identity,
                task_queue=self._task_queue,
                max_message_bytes=max_bytes,
                ack_with_completion=self._ack_with_completion,
            )
            self._pollers.append(
                QueuePoller(
                    self._broker,
                    queue_name(info.queue_prefix, namespace, self._task_queue, "act"),
                    self._activity_handler.handle,
                    max_concurrent=self._max_act,
                    poll_wait=self._poll_wait,
                )
            )
        if self._session_task_queue is not None:
            self._start_sessions(info.queue_prefix, max_bytes)
        for poller in self._pollers:
            await self._broker.declare_queue(poller.queue)

    def _start_sessions(self, prefix: str, max_bytes: int) -> None:
        assert self._broker is not None and self._session_task_queue is not None
        namespace = self._client.namespace
        creation = SessionCreationHandler(
            self._client,
            self._broker,
            identity=self._identity,
            session_task_queue=self._session_task_queue,
            max_message_bytes=max_bytes,
        )
        in_session = ActivityTaskHandler(
            self._client,
            self._activity_defs,
            executor=self._activity_executor,
            identity=self._identity,
            task_queue=self._session_task_queue,
            max_message_bytes=max_bytes,
            ack_with_completion=self._ack_with_completion,
        )
        self._session_handlers = [creation, in_session]
        self._pollers.append(
            QueuePoller(
                self._broker,
                queue_name(prefix, namespace, session_creation_queue(self._task_queue), "act"),
                creation.handle,
                max_concurrent=self._max_sessions,
                poll_wait=self._poll_wait,
            )
        )
        self._pollers.append(
            QueuePoller(
                self._broker,
                queue_name(prefix, namespace, self._session_task_queue, "act"),
                in_session.handle,
                max_concurrent=self._max_act,
                poll_wait=self._poll_wait,
            )
        )

    async def _start_sticky(self, prefix: str, namespace: str) -> None:
        """This worker's own queue for the runs it caches; the broker hands its tasks to the
        normal queue when the worker is gone (see ``docs/brokers.md``)."""
        assert self._broker is not None and self._workflow_handler is not None
        normal = queue_name(prefix, namespace, self._task_queue, "wf")
        self._sticky_queue = f"{prefix}.{namespace}.sticky.{uuid.uuid4().hex}"
        await self._broker.declare_queue(normal)
        await self._broker.declare_sticky_queue(self._sticky_queue, fallback=normal, timeout=self._sticky_timeout)
        self._workflow_handler.sticky_queue = self._sticky_queue
        self._pollers.append(
            QueuePoller(
                self._broker,
                self._sticky_queue,
                self._workflow_handler.handle,
                max_concurrent=self._max_wf,
                poll_wait=min(self._poll_wait, self._sticky_timeout / 2),
            )
        )

    async def run(self) -> None:
        """Run until :meth:`shutdown` is called (or the task running this is cancelled)."""
        if self._run_task is not None or self._stopped:
            raise RuntimeError("this Worker was already started; create a new one")
        self._run_task = asyncio.current_task()
        try:
            await self._start()
            polls = [asyncio.create_task(p.run(), name=f"sagas-poll-{p.queue}") for p in self._pollers]
            self._started.set()
            _log.info(
                "worker %s polling task queue %r (%d workflows, %d activities)",
                self._identity,
                self._task_queue,
                self._workflow_count,
                len(self._activity_defs),
            )
            stop = asyncio.create_task(self._stop.wait())
            try:
                done, _ = await asyncio.wait([stop, *polls], return_when=asyncio.FIRST_COMPLETED)
                for task in done:
                    if task is not stop and task.exception() is not None:
                        raise task.exception()  # type: ignore[misc]
            finally:
                stop.cancel()
                await self._finish(polls)
        finally:
            if self._broker is not None:  # start failed half way
                broker, self._broker = self._broker, None
                await broker.aclose()
            self._started.set()
            self._stopped = True

    async def _finish(self, polls: list[asyncio.Task[None]]) -> None:
        for poller in self._pollers:
            poller.stop_polling()
        if self._activity_handler is not None:
            self._activity_handler.begin_shutdown()
        for handler in self._session_handlers:
            handler.begin_shutdown()
        # Let open long polls return (at most poll_wait) so nothing they were given stays leased,
        # unless the broker can cut them short without leasing anything.
        pending = [t for t in polls if not t.done()]
        if pending and not (self._broker is not None and self._broker.receive_cancellable):
            await asyncio.wait(pending, timeout=self._poll_wait + 1.0)
        for poller in self._pollers:
            poller.abandon_poll()
        await asyncio.gather(*(p.drain(self._graceful) for p in self._pollers), return_exceptions=True)
        for task in polls:
            task.cancel()
        await asyncio.gather(*polls, return_exceptions=True)
        if self._activity_handler is not None:
            await self._activity_handler.aclose()
        for handler in self._session_handlers:
            if isinstance(handler, ActivityTaskHandler):
                await handler.aclose()
        if self._workflow_handler is not None:
            self._workflow_handler.evict_all()
        if self._broker is not None and self._sticky_queue is not None:
            try:  # hand what still waits for this worker to the others now, not after the timeout
                await self._broker.delete_sticky_queue(self._sticky_queue)
            except BrokerError as exc:
                _log.info("could not hand over sticky queue %s (%s); its tasks fall back by timeout", self._sticky_queue, exc)
        if self._broker is not None:
            broker, self._broker = self._broker, None
            await broker.aclose()

    async def shutdown(self) -> None:
        """Stop polling, let in-flight tasks finish (up to ``graceful_shutdown_timeout``), then stop."""
        self._stop.set()
        task = self._run_task
        if task is not None and task is not asyncio.current_task():
            await asyncio.gather(task, return_exceptions=True)

    async def __aenter__(self) -> Worker:
        runner = asyncio.create_task(self.run(), name=f"sagas-worker-{self._task_queue}")
        started = asyncio.create_task(self._started.wait())
        await asyncio.wait([runner, started], return_when=asyncio.FIRST_COMPLETED)
        if runner.done():
            started.cancel()
            runner.result()  # raises why the worker could not start
        self._run_task = runner
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.shutdown()
        task = self._run_task
        if task is not None and task.done() and not task.cancelled() and task.exception() is not None:
            raise task.exception()  # type: ignore[misc]
