"""The system worker: internal workflows, written with the sagas SDK and run by the server itself.

* ``sagas.Schedule`` (:mod:`orchestrator.system.schedules`): one per schedule
  created with ``client.create_schedule``;
* ``sagas.BatchOperation`` (:mod:`orchestrator.system.batch`): signal, cancel or
  terminate every workflow a visibility query matches.

They are ordinary workflows on the task queue ``sagas-system`` of the
namespace they belong to, so they are durable the same way (timers, history,
continue-as-new) and show up in ``sagas workflow list``. :class:`SystemWorker`
is an SDK :class:`~sagas.worker.Worker` per namespace, connected to this
server's own frontend; ``DevServer`` starts it once the frontend is up
(``OrchestratorConfig.system_worker``). It serves every namespace the server
knows, and picks up new ones as they are first used.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import socket
from collections.abc import Callable
from datetime import timedelta
from typing import TYPE_CHECKING, Any

from brokers.base import Broker, DeadLetter, Delivery
from brokers.memory import MemoryBroker
from orchestrator.system.batch import BatchOperationWorkflow, apply_batch_page
from orchestrator.system.schedules import ScheduleWorkflow, running_runs, terminate_runs
from sagas.client import Client
from sagas.client._schedule import SYSTEM_TASK_QUEUE
from sagas.worker import Worker

if TYPE_CHECKING:
    from orchestrator.server import DevServer, Orchestrator

log = logging.getLogger("sagas.system")

SYSTEM_WORKFLOWS: list[type] = [ScheduleWorkflow, BatchOperationWorkflow]
SYSTEM_ACTIVITIES: list[Callable[..., Any]] = [running_runs, terminate_runs, apply_batch_page]

__all__ = ["SYSTEM_TASK_QUEUE", "SYSTEM_ACTIVITIES", "SYSTEM_WORKFLOWS", "SystemWorker"]


class _InProcessBroker(Broker):
    """The server's own built-in broker, used directly (no HTTP long polls), with polls that end at once on stop."""

    durable = False

    def __init__(self, inner: MemoryBroker) -> None:
        self._inner = inner
        self._closing = asyncio.Event()

    def close_polls(self) -> None:
        """Make every open and future receive return nothing (so the worker stops without waiting)."""
        self._closing.set()

    async def aclose(self) -> None:
        self.close_polls()  # the inner broker belongs to the orchestrator

    async def declare_queue(self, queue: str) -> None:
        await self._inner.declare_queue(queue)

    async def publish(self, queue: str, body: bytes, headers: dict[str, str] | None = None) -> str:
        return await self._inner.publish(queue, body, headers)

    async def receive(self, queue: str, max_messages: int = 1, wait: float = 0.0) -> list[Delivery]:
        if self._closing.is_set():
            return []
        received = asyncio.ensure_future(self._inner.receive(queue, max_messages, wait))
        closing = asyncio.ensure_future(self._closing.wait())
        await asyncio.wait({received, closing}, return_when=asyncio.FIRST_COMPLETED)
        closing.cancel()
        received.cancel()  # a receive that already took messages is done: cancel() is then a no-op
        with contextlib.suppress(asyncio.CancelledError):
            return await received
        return []

    async def ack(self, delivery: Delivery) -> None:
        await self._inner.ack(delivery)

    async def nack(self, delivery: Delivery, *, requeue: bool = True, reason: str = "") -> None:
        await self._inner.nack(delivery, requeue=requeue, reason=reason)

    async def dead_letters(self, limit: int = 100) -> list[DeadLetter]:
        return await self._inner.dead_letters(limit)


class _SystemTaskQueueWorker(Worker):
    """An SDK worker that takes its tasks straight from the server's built-in broker when there is one."""

    def __init__(self, client: Client, broker: _InProcessBroker | None, **kwargs: Any) -> None:
        super().__init__(client, **kwargs)
        self._in_process = broker

    async def _open_broker(self, url: str) -> Broker:
        if self._in_process is not None:
            return self._in_process
        return await super()._open_broker(url)


class SystemWorker:
    """One SDK worker per namespace on task queue ``sagas-system``, talking to this server's frontend.

    ::

        system = SystemWorker(orchestrator, "127.0.0.1:7233")
        await system.start()
        ...
        await system.stop()
    """

    def __init__(
        self,
        orchestrator: Orchestrator,
        target: str,
        *,
        api_key: str | None = None,
        namespace_poll_interval: float = 0.2,
        poll_wait: float = 1.0,
    ) -> None:
        self._orc = orchestrator
        self._target = target
        self._api_key = api_key
        self._interval = namespace_poll_interval
        self._poll_wait = poll_wait
        self._client: Client | None = None
        self._workers: dict[str, tuple[Worker, _InProcessBroker | None]] = {}
        self._watch: asyncio.Task[None] | None = None

    @classmethod
    async def start_for(cls, server: DevServer) -> SystemWorker | None:
        """Start the system worker of a dev server whose frontend is up (None when it cannot run).

        It reaches the frontend like any worker, so it cannot run (yet) when the
        frontend needs TLS or credentials: it then logs why and returns None.
        """
        if server.tls_cert is not None or server.orchestrator.auth.enabled:
            log.warning(
                "system worker not started: the frontend requires TLS or credentials, which the system "
                "worker does not have yet; schedules and batch operations will not run on this server"
            )
            return None
        # A wildcard bind address is not one to connect to; loopback reaches the same socket.
        host = "127.0.0.1" if server.host in ("0.0.0.0", "::", "") else server.host
        worker = cls(server.orchestrator, f"{host}:{server.port}")
        try:
            await worker.start()
        except Exception:  # noqa: BLE001 - the server is useful without it; say why it is missing
            log.exception("system worker could not start; schedules and batch operations will not run")
            await worker.stop()
            return None
        return worker

    @property
    def namespaces(self) -> list[str]:
        """The namespaces served so far."""
        return sorted(self._workers)

    async def start(self) -> None:
        identity = f"sagas-system@{os.getpid()}@{socket.gethostname()}"
        self._client = await Client.connect(self._target, api_key=self._api_key, identity=identity)
        for record in await self._orc.store.list_namespaces():
            await self._serve(record.name)
        await self._serve_new()
        self._watch = asyncio.create_task(self._watch_namespaces(), name="sagas-system-namespaces")

    async def _serve_new(self) -> None:
        known = set(self._orc.history.known_namespaces) | set(self._orc.namespaces.names())
        for namespace in sorted(known - self._workers.keys()):
            await self._serve(namespace)

    async def _serve(self, namespace: str) -> None:
        if namespace in self._workers:
            return
        assert self._client is not None
        client = Client(
            self._client.transport, namespace=namespace, identity=self._client.identity, target_host=self._target
        )
        broker = self._orc.broker
        in_process = _InProcessBroker(broker) if isinstance(broker, MemoryBroker) else None
        worker = _SystemTaskQueueWorker(
            client,
            in_process,
            task_queue=SYSTEM_TASK_QUEUE,
            workflows=SYSTEM_WORKFLOWS,
            activities=SYSTEM_ACTIVITIES,
            max_concurrent_activities=16,
            poll_wait=self._poll_wait,
            graceful_shutdown_timeout=timedelta(seconds=1),
        )
        await worker.__aenter__()
        self._workers[namespace] = (worker, in_process)
        log.debug("system worker serves namespace %r", namespace)

    async def _watch_namespaces(self) -> None:
        # Namespaces become known when first used (or registered); a set lookup is cheap.
        while True:
            await asyncio.sleep(self._interval)
            try:
                await self._serve_new()
            except Exception:  # noqa: BLE001 - keep watching; the next round retries
                log.exception("system worker could not start serving a namespace")

    async def stop(self) -> None:
        if self._watch is not None:
            self._watch.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._watch
        workers, self._workers = list(self._workers.values()), {}
        for _, in_process in workers:
            if in_process is not None:
                in_process.close_polls()
        await asyncio.gather(*(w.shutdown() for w, _ in workers), return_exceptions=True)
        if self._client is not None:
            await self._client.close()
