"""The history stream: every committed history event, published after the commit to ``{prefix}.history``.

Consumers (audit, analytics, ``sagas workflow replay --broker-log``) read the
stream instead of polling the store. Enable it with
``OrchestratorConfig.history_stream_url`` (any broker URL: ``kafka://`` gives a
topic keyed by workflow id, ``amqp://`` a RabbitMQ stream (``x-queue-type=stream``), ``local://`` the
server's built-in broker, ``memory://`` a private in-process broker for tests)
and optionally ``history_stream_namespaces`` (an allow-list; ``None`` = all)::

    OrchestratorConfig(broker_url="kafka://k1:9092", history_stream_url="kafka://k1:9092")

Each event is one :class:`~orchestrator.api.history_stream.HistoryEventMessage`
whose broker key (the ``key`` header) is the workflow id, published in commit
order per workflow.

**Best-effort; the store is the source of truth.** The publisher never blocks
or fails a history write: :meth:`HistoryStreamPublisher.submit_events` only
appends to a bounded in-memory queue, and a background task publishes it in
batches. When the queue is full, or the broker keeps refusing a publish, the
events are dropped, counted in ``sagas_history_stream_dropped_total{reason}``
and logged; ``sagas_history_stream_lag_seconds`` is the age of the oldest
event not yet published. A consumer sees a dropped event as a gap in a run's
event ids (and a duplicate, after a retry or a republish, by its event id);
:meth:`HistoryStreamPublisher.republish` publishes a workflow's history again
from the store to close the gap.
"""

from __future__ import annotations

import asyncio
import logging
import time
import weakref
from collections import deque
from collections.abc import Collection, Sequence
from dataclasses import dataclass

from brokers.base import Broker, open_broker, parse_broker_url
from orchestrator.api.events import HistoryEvent
from orchestrator.api.history_stream import KEY_HEADER, HistoryEventMessage, history_stream_name
from orchestrator.metrics import METRICS
from orchestrator.persistence.base import HistoryStore

log = logging.getLogger("sagas.history.stream")

_SCHEMES = frozenset({"memory", "local", "amqp", "amqps", "kafka", "sqs"})
_LOG_EVERY = 30.0
"""Seconds between two warnings of the same kind (drops, connection failures)."""


@dataclass(slots=True)
class _Queued:
    namespace: str
    workflow_id: str
    run_id: str
    event: HistoryEvent
    queued_at: float  # time.monotonic()


_ACTIVE: weakref.WeakSet[HistoryStreamPublisher] = weakref.WeakSet()


def _max_lag() -> float:
    return max((p.lag_seconds() for p in list(_ACTIVE)), default=0.0)


METRICS.history_stream_lag.set_function(_max_lag)


class HistoryStreamPublisher:
    """Publishes committed history events to ``{prefix}.history`` (see the module docstring).

    Give it a ``url`` (it opens, reconnects and closes that broker itself) or a
    ``broker`` it shares with its owner (it does not close it). Options:

    * ``store``: the history store, for :meth:`republish`;
    * ``prefix``: the stream is ``{prefix}.history``;
    * ``namespaces``: allow-list of namespaces to publish (``None``: all);
    * ``max_queue``: events held (queued and being published) before new ones are dropped;
    * ``batch_size``: events taken off the queue per round of publishes;
    * ``retries``, ``retry_delay`` (doubling), ``publish_timeout``: per publish, before the
      event (and the rest of its workflow's batch) is dropped;
    * ``reconnect_delay``: seconds between attempts to connect a ``url`` broker.

    It is the :class:`~orchestrator.history.service.HistorySink` of the history service::

        stream = HistoryStreamPublisher("kafka://k1:9092", store=store)
        await stream.start()
        history.history_sink = stream
        ...
        await stream.republish("default", "trip-1")   # resync a run from the store
        await stream.stop()
    """

    def __init__(
        self,
        url: str | None = None,
        *,
        broker: Broker | None = None,
        store: HistoryStore | None = None,
        prefix: str = "sagas",
        namespaces: Collection[str] | None = None,
        max_queue: int = 100_000,
        batch_size: int = 500,
        retries: int = 2,
        retry_delay: float = 0.2,
        publish_timeout: float = 10.0,
        reconnect_delay: float = 5.0,
    ) -> None:
        if (url is None) == (broker is None):
            raise ValueError("HistoryStreamPublisher needs a broker url or a broker, not both or neither")
        if url is not None:
            scheme = parse_broker_url(url)[0]
            if scheme not in _SCHEMES:
                raise ValueError(
                    f"history_stream_url {url!r} has the unknown scheme {scheme!r}; "
                    "use memory://, local://, amqp://, kafka:// or sqs://"
                )
        if max_queue < 1 or batch_size < 1:
            raise ValueError("max_queue and batch_size must be at least 1")
        self.url = url
        self.topic = history_stream_name(prefix)
        self.store = store
        self.namespaces = frozenset(namespaces) if namespaces is not None else None
        self.max_queue = max_queue
        self.batch_size = batch_size
        self.retries = retries
        self.retry_delay = retry_delay
        self.publish_timeout = publish_timeout
        self.reconnect_delay = reconnect_delay
        self._broker = broker
        self._owns_broker = broker is None
        self._declared = False
        self._queue: deque[_Queued] = deque()
        self._inflight: list[_Queued] = []
        self._wakeup = asyncio.Event()
        self._idle = asyncio.Event()
        self._idle.set()
        self._task: asyncio.Task[None] | None = None
        self._last_warning: dict[str, float] = {}

    @property
    def broker(self) -> Broker | None:
        """The broker published to (``None`` until a ``url`` broker is connected)."""
        return self._broker

    @property
    def queued(self) -> int:
        """Events accepted and not yet published (or dropped)."""
        return len(self._queue) + len(self._inflight)

    def enabled_for(self, namespace: str) -> bool:
        """Whether ``namespace``'s events are published (the allow-list; ``None`` allows all)."""
        return self.namespaces is None or namespace in self.namespaces

    def lag_seconds(self) -> float:
        """Age of the oldest event not yet published; 0 when everything is out."""
        oldest = self._inflight[0] if self._inflight else (self._queue[0] if self._queue else None)
        return max(0.0, time.monotonic() - oldest.queued_at) if oldest is not None else 0.0

    # -- the sink: called right after each commit, on the event loop -----------------------------

    def submit_events(self, namespace: str, workflow_id: str, run_id: str, events: list[HistoryEvent]) -> None:
        """Queue a commit's events for publishing; never blocks or raises (drops and counts on overflow)."""
        if not events or not self.enabled_for(namespace):
            return
        if self.queued + len(events) > self.max_queue:
            METRICS.history_stream_dropped.labels(reason="overflow").inc(len(events))
            self._warn(
                "overflow",
                "history stream queue is full (%d events): dropped events %d-%d of %s/%s run %s; the store "
                "still has them (republish to resync the stream); is the stream's broker slow or down?",
                self.max_queue, events[0].event_id, events[-1].event_id, namespace, workflow_id, run_id,
            )
            return
        now = time.monotonic()
        self._queue.extend(_Queued(namespace, workflow_id, run_id, e, now) for e in events)
        self._idle.clear()
        self._wakeup.set()

    # -- lifecycle -------------------------------------------------------------------------------

    async def start(self) -> None:
        """Start the background publisher (it connects a ``url`` broker itself, retrying)."""
        if self._task is None:
            _ACTIVE.add(self)
            self._task = asyncio.create_task(self._run(), name="history-stream")

    async def stop(self, timeout: float = 5.0) -> None:
        """Publish what is queued (for at most ``timeout`` seconds), then stop; the rest is dropped."""
        left = 0
        if self._task is not None:
            await self.flush(timeout)
            left = self.queued  # counted before cancelling: the task forgets its batch when cancelled
            self._task.cancel()
            await asyncio.gather(self._task, return_exceptions=True)
            self._task = None
        left = max(left, self.queued)
        if left:
            METRICS.history_stream_dropped.labels(reason="shutdown").inc(left)
            log.warning("history stream stopped with %d events unpublished (republish to resync)", left)
            self._queue.clear()
            self._inflight = []
        _ACTIVE.discard(self)
        if self._owns_broker and self._broker is not None:
            broker, self._broker = self._broker, None
            try:
                await broker.aclose()
            except Exception as exc:  # noqa: BLE001 - closing is best-effort too
                log.warning("closing the history stream broker failed: %s", exc)

    async def flush(self, timeout: float | None = None) -> bool:
        """Wait until every queued event is published or dropped; False if ``timeout`` passed first."""
        try:
            await asyncio.wait_for(self._idle.wait(), timeout)
        except TimeoutError:
            return False
        return True

    # -- resync ----------------------------------------------------------------------------------

    async def republish(self, namespace: str, workflow_id: str, run_id: str | None = None) -> int:
        """Publish a workflow's history again from the store; returns the number of events published.

        Every run of ``workflow_id`` (oldest first), or only ``run_id``. Consumers
        de-duplicate by event id, so republishing what they already have is
        harmless. Unlike the live path this raises: ``BrokerError`` if the
        broker refuses, ``ValueError`` if the namespace is not streamed or the
        workflow is unknown.
        """
        if self.store is None:
            raise ValueError("republish needs the history store: create the publisher with store=")
        if not self.enabled_for(namespace):
            raise ValueError(f"namespace {namespace!r} is not in the history stream's allow-list")
        runs = [run_id] if run_id else await self._runs_of(namespace, workflow_id)
        if not runs:
            raise ValueError(f"workflow {workflow_id!r} not found in namespace {namespace!r}")
        broker = await self._connect()
        published = 0
        for run in runs:
            events = await self.store.read_events(namespace, workflow_id, run)
            for event in events:
                await self._publish_one(broker, namespace, workflow_id, run, event)
                published += 1
        METRICS.history_stream_published.inc(published)
        return published

    async def _runs_of(self, namespace: str, workflow_id: str) -> list[str]:
        assert self.store is not None
        runs: list[str] = []
        token: str | None = None
        while True:
            page = await self.store.list_visibility(
                namespace, filters={"workflow_id": workflow_id}, page_size=1000, next_page_token=token
            )
            runs.extend(r.run_id for r in page.records)
            token = page.next_page_token
            if not token:
                break
        if not runs:
            current = await self.store.get_current_run(namespace, workflow_id)
            runs = [current.run_id] if current is not None else []
        return list(reversed(runs))  # visibility lists newest first

    # -- publishing ------------------------------------------------------------------------------

    async def _connect(self) -> Broker:
        if self._broker is None:
            assert self.url is not None
            self._broker = await open_broker(self.url)
        if not self._declared:
            # RabbitMQ: a stream (a log read again from its start), not a queue that reading empties.
            declare_stream = getattr(self._broker, "declare_stream", None)
            await (declare_stream or self._broker.declare_queue)(self.topic)
            self._declared = True
        return self._broker

    async def _connected(self) -> Broker:
        """The broker, connecting (and retrying every ``reconnect_delay``) until it answers."""
        while True:
            try:
                return await self._connect()
            except Exception as exc:  # noqa: BLE001 - any failure: keep queueing, retry later
                self._warn(
                    "connect",
                    "history stream: cannot reach %s (%s: %s); events queue up (and are dropped when the "
                    "queue is full) until it answers",
                    self.url or "the broker", type(exc).__name__, exc,
                )
                await asyncio.sleep(self.reconnect_delay)

    async def _run(self) -> None:
        while True:
            if not self._queue:
                self._idle.set()
                self._wakeup.clear()
                await self._wakeup.wait()
                continue
            broker = await self._connected()
            count = min(self.batch_size, len(self._queue))
            self._inflight = [self._queue.popleft() for _ in range(count)]
            try:
                await self._publish_batch(broker, self._inflight)
            finally:
                self._inflight = []

    async def _publish_batch(self, broker: Broker, batch: Sequence[_Queued]) -> None:
        """Publish a batch: workflows in parallel, each workflow's events in order."""
        by_workflow: dict[tuple[str, str], list[_Queued]] = {}
        for item in batch:
            by_workflow.setdefault((item.namespace, item.workflow_id), []).append(item)
        await asyncio.gather(*(self._publish_in_order(broker, items) for items in by_workflow.values()))

    async def _publish_in_order(self, broker: Broker, items: list[_Queued]) -> None:
        for i, item in enumerate(items):
            try:
                await self._publish_with_retries(broker, item)
            except Exception as exc:  # noqa: BLE001 - the stream is best-effort: count, log, go on
                # Later events of this workflow in the batch are dropped too: the gap
                # is then one range, which a consumer reports and a republish closes.
                dropped = len(items) - i
                METRICS.history_stream_dropped.labels(reason="broker_error").inc(dropped)
                self._warn(
                    "broker_error",
                    "history stream: publishing events %d-%d of %s/%s run %s to %r failed (%s: %s); "
                    "dropped them (republish to resync)",
                    item.event.event_id, items[-1].event.event_id, item.namespace, item.workflow_id,
                    item.run_id, self.topic, type(exc).__name__, exc,
                )
                return
            METRICS.history_stream_published.inc()

    async def _publish_with_retries(self, broker: Broker, item: _Queued) -> None:
        for attempt in range(self.retries + 1):
            try:
                await self._publish_one(broker, item.namespace, item.workflow_id, item.run_id, item.event)
                return
            except Exception:
                if attempt == self.retries:
                    raise
                await asyncio.sleep(self.retry_delay * (2**attempt))

    async def _publish_one(
        self, broker: Broker, namespace: str, workflow_id: str, run_id: str, event: HistoryEvent
    ) -> None:
        body = HistoryEventMessage.of(namespace, workflow_id, run_id, event).encode()
        await asyncio.wait_for(broker.publish(self.topic, body, {KEY_HEADER: workflow_id}), self.publish_timeout)

    def _warn(self, kind: str, message: str, *args: object) -> None:
        """Log a warning, at most once per ``_LOG_EVERY`` seconds per kind (drops come in floods)."""
        now = time.monotonic()
        if now - self._last_warning.get(kind, -_LOG_EVERY) >= _LOG_EVERY:
            self._last_warning[kind] = now
            log.warning(message, *args)
