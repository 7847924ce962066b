"""RabbitMQ broker (``amqp://``) on aio-pika: quorum queues, publisher confirms, dead-lettering.

::

    broker = await open_broker("amqp://guest:guest@127.0.0.1:5672/?prefetch=32&max_deliveries=5")
    await broker.publish("sagas.default.trips.act", b'{"v":1}', {"key": "trip-1"})
    [d] = await broker.receive("sagas.default.trips.act", max_messages=10, wait=5)
    await broker.ack(d)

URL options (query string; the rest of the URL is aio-pika's, so ``heartbeat``
and ``reconnect_interval`` pass through to the connection):

``prefix`` (``sagas``)
    Names the dead-letter exchange ``{prefix}.dlx`` and queue ``{prefix}.dlq``.
``prefetch`` (32)
    Unacked messages the broker may push to each consumer (basic.qos).
``max_deliveries`` (5)
    Deliveries of one message before it is dead-lettered.
``queue_type`` (``quorum``)
    ``quorum`` (replicated; the broker counts deliveries and enforces the limit)
    or ``classic`` (the client counts: see below).
``connect_timeout`` (10), ``publish_timeout`` (30)
    Seconds.

How the broker contract maps onto RabbitMQ:

* **Connection**: ``connect_robust``; after a lost connection it reconnects
  every ``reconnect_interval`` seconds and restores channels, QoS, the declared
  exchange and queues and the consumers. Messages that were delivered on the
  lost channel go back to their queue; an ``ack`` of such a stale delivery is
  a no-op (the message will be delivered again: consumers are idempotent).
* **publish**: on a channel with publisher confirms and ``mandatory=True``;
  it returns once the broker confirmed the (persistent) message. The message id
  is the AMQP ``message_id`` property (a fresh UUID).
* **receive**: one consumer per queue (started on the first ``receive``)
  feeds an in-process buffer; ``prefetch`` bounds how many unacked messages the
  broker pushes to it. ``receive`` takes up to ``max_messages`` from the buffer,
  waiting up to ``wait`` seconds for the first. Messages in the buffer are
  unacked and held by this connection: a worker that stops receiving should
  close the broker so that they go to other consumers.
* **delivery_count**: quorum queues stamp ``x-delivery-count`` (the number of
  earlier failed deliveries, counting deliveries lost with a connection); for a
  classic queue this client stamps it when it requeues.
* **visibility timeout**: RabbitMQ has none: an unacked message comes back when
  its consumer's connection or channel is lost (or after the server's
  ``consumer_timeout``), never while the consumer is alive.
* **nack(requeue=True)**: ``basic.nack(requeue)`` on a quorum queue; a classic
  queue gets a copy with ``x-delivery-count`` + 1 and the original is acked.
  When the delivery was the ``max_deliveries``-th, the message is dead-lettered
  instead, with the reason.
* **nack(requeue=False, reason)** and the client-side limit: a copy goes to
  ``{prefix}.dlq`` (confirmed) with the reason in the ``x-sagas-reason`` header
  and the source queue in ``x-sagas-queue``; then the original is acked. (A
  broker-side ``basic.reject`` would lose the reason.)
* **Streams** (:meth:`RabbitMQBroker.declare_stream`, :meth:`~RabbitMQBroker.read_stream`):
  the history stream ``{prefix}.history`` is a RabbitMQ stream
  (``x-queue-type=stream``, in core since 3.9): published to like a queue,
  read from its first offset by any number of readers, nothing removed.
* **Delivery limit**: every work queue is declared with ``x-delivery-limit``
  and ``x-dead-letter-exchange`` = ``{prefix}.dlx`` (fanout, bound to
  ``{prefix}.dlq``), so a message whose consumers keep crashing is
  dead-lettered by the broker itself; it then carries RabbitMQ's ``x-death``
  header instead of ``x-sagas-reason``. RabbitMQ allows ``x-delivery-limit``
  *returns*, i.e. limit + 1 deliveries, so the argument is ``max_deliveries - 1``.
* **dead_letters**: reads ``{prefix}.dlq`` on a private channel with
  ``basic.get`` and gives every message back with ``basic.nack(requeue)``.
  RabbitMQ queues cannot be browsed without taking messages, and get + requeue
  needs no plugin and works on quorum and classic queues alike; the cost is
  that a concurrent DLQ consumer does not see the messages while they are
  being read, and that each read bumps their ``x-delivery-count`` (the DLQ has
  no delivery limit).
* **Sticky queues** (:meth:`RabbitMQBroker.declare_sticky_queue`): a classic,
  non-durable queue with ``x-message-ttl`` = the sticky timeout,
  ``x-dead-letter-exchange`` = ``""`` (the default exchange) and
  ``x-dead-letter-routing-key`` = the fallback queue, and ``x-expires`` (twice
  the timeout, at least 10 s more). A task nobody took within the timeout --
  including one its worker held unacked when its connection died, which
  RabbitMQ requeues with its original expiry -- is dead-lettered by RabbitMQ
  itself into the normal queue; the queue is deleted once unused for
  ``x-expires``. ``publish_sticky`` first asks (passive declare on a private
  channel) whether the queue still has a consumer: if not, or if the queue is
  gone (404, or the ``mandatory`` publish comes back unroutable), the task goes
  straight to the fallback queue.
"""

from __future__ import annotations

import asyncio
import logging
import re
import uuid
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import unquote, urlencode, urlparse

import aio_pika
from aio_pika.abc import (
    AbstractIncomingMessage,
    AbstractQueue,
    AbstractRobustChannel,
    AbstractRobustConnection,
)
from aio_pika.exceptions import (
    AMQPError,
    ChannelInvalidStateError,
    ChannelNotFoundEntity,
    ChannelPreconditionFailed,
    DeliveryError,
    MessageProcessError,
    ProbableAuthenticationError,
    PublishError,
)

from brokers.base import Broker, BrokerError, DeadLetter, Delivery, parse_broker_url

log = logging.getLogger("sagas.brokers.rabbitmq")

REASON_HEADER = "x-sagas-reason"
SOURCE_QUEUE_HEADER = "x-sagas-queue"
DELIVERY_COUNT_HEADER = "x-delivery-count"

# Headers the broker or this module adds; receivers see only the publisher's headers.
_INTERNAL_HEADERS = frozenset({DELIVERY_COUNT_HEADER, "x-death", REASON_HEADER, SOURCE_QUEUE_HEADER})
_INTERNAL_PREFIXES = ("x-first-death-", "x-last-death-", "x-sagas-")

# Options this module reads; anything else in the query string is aio-pika's.
_OWN_OPTIONS = frozenset({"prefix", "prefetch", "max_deliveries", "queue_type", "connect_timeout", "publish_timeout"})
_QUEUE_TYPES = ("quorum", "classic")

_INEQUIVALENT = re.compile(
    r"inequivalent arg '(?P<arg>[^']+)' for queue '(?P<queue>[^']+)'.*?: received (?P<received>.+?) but current is (?P<current>.+)$"
)


@dataclass(frozen=True)
class QueueSpec:
    """How one queue is declared (see :meth:`RabbitMQBroker.queue_spec`)."""

    durable: bool = True
    auto_delete: bool = False
    arguments: dict[str, Any] = field(default_factory=dict)


class RabbitMQBroker(Broker):
    """Task queues on RabbitMQ (see the module docstring for the semantics)."""

    durable = True

    def __init__(
        self,
        amqp_url: str,
        *,
        prefix: str = "sagas",
        prefetch: int = 32,
        max_deliveries: int = 5,
        queue_type: str = "quorum",
        connect_timeout: float = 10.0,
        publish_timeout: float = 30.0,
    ) -> None:
        """``amqp_url`` is passed to aio-pika as is (credentials, vhost, its own options)."""
        if queue_type not in _QUEUE_TYPES:
            raise BrokerError(f"queue_type={queue_type!r} is not supported; use one of {', '.join(_QUEUE_TYPES)}")
        if max_deliveries < 1:
            raise BrokerError(f"max_deliveries must be at least 1, got {max_deliveries}")
        self.amqp_url = amqp_url
        self.prefix = prefix
        self.prefetch = prefetch
        self.max_deliveries = max_deliveries
        self.queue_type = queue_type
        self.connect_timeout = connect_timeout
        self.publish_timeout = publish_timeout
        self.dead_letter_exchange = f"{prefix}.dlx"
        self.dead_letter_queue = f"{prefix}.dlq"
        self.display_url = _display_url(amqp_url)
        self._connection: AbstractRobustConnection | None = None
        self._publish_channel: AbstractRobustChannel | None = None
        self._consume_channel: AbstractRobustChannel | None = None
        self._declared: dict[str, AbstractQueue] = {}
        self._declare_lock = asyncio.Lock()
        self._buffers: dict[str, asyncio.Queue[AbstractIncomingMessage | None]] = {}
        self._consumer_lock = asyncio.Lock()
        self._closed = False
        self._probe: aio_pika.Channel | None = None
        self._consumer_tags: dict[str, str] = {}

    sticky_routing = True

    @classmethod
    def from_url(cls, url: str) -> RabbitMQBroker:
        """Build from ``amqp://user:pass@host:port/vhost?prefetch=32&max_deliveries=5&queue_type=quorum``."""
        scheme, _, options = parse_broker_url(url)
        if scheme not in ("amqp", "amqps"):
            raise BrokerError(f"RabbitMQBroker needs an amqp:// or amqps:// URL, got {url!r}")
        parsed = urlparse(url)
        passthrough = {k: v for k, v in options.items() if k not in _OWN_OPTIONS}
        amqp_url = parsed._replace(query=urlencode(passthrough)).geturl()
        try:
            return cls(
                amqp_url,
                prefix=options.get("prefix", "sagas"),
                prefetch=int(options.get("prefetch", 32)),
                max_deliveries=int(options.get("max_deliveries", 5)),
                queue_type=options.get("queue_type", "quorum"),
                connect_timeout=float(options.get("connect_timeout", 10.0)),
                publish_timeout=float(options.get("publish_timeout", 30.0)),
            )
        except ValueError as exc:
            raise BrokerError(f"invalid option in broker URL {_display_url(url)}: {exc}") from exc

    # -- lifecycle ---------------------------------------------------------

    async def connect(self) -> None:
        if self._connection is not None:
            return
        try:
            connection = await aio_pika.connect_robust(self.amqp_url, timeout=self.connect_timeout)
        except ProbableAuthenticationError as exc:
            raise BrokerError(
                f"authentication failed for {self.display_url}: the broker refused the user name or "
                f"password ({exc}); check the credentials in the broker URL"
            ) from exc
        except (AMQPError, OSError, TimeoutError) as exc:
            raise BrokerError(
                f"cannot connect to RabbitMQ at {self.display_url} ({type(exc).__name__}: {exc}); "
                "is the server running and are the host, port and virtual host right?"
            ) from exc
        try:
            self._publish_channel = await connection.channel(publisher_confirms=True, on_return_raises=True)
            self._consume_channel = await connection.channel(publisher_confirms=False)
            await self._consume_channel.set_qos(prefetch_count=self.prefetch)
        except (AMQPError, OSError) as exc:
            await connection.close()
            raise BrokerError(f"cannot open channels on {self.display_url}: {exc}") from exc
        connection.reconnect_callbacks.add(self._on_reconnect)
        self._connection = connection

    async def aclose(self) -> None:
        self._closed = True
        for buffer in self._buffers.values():
            buffer.put_nowait(None)  # wakes receivers
        connection, self._connection = self._connection, None
        if connection is not None:
            # Closing the connection gives every unacked message back to its queue.
            await connection.close()

    def _on_reconnect(self, *_: Any) -> None:
        log.warning("reconnected to %s; channels, queues and consumers restored", self.display_url)

    def _channels(self) -> tuple[AbstractRobustConnection, AbstractRobustChannel, AbstractRobustChannel]:
        if self._closed:
            raise BrokerError(f"broker {self.display_url} is closed")
        if self._connection is None or self._publish_channel is None or self._consume_channel is None:
            raise BrokerError(f"broker {self.display_url} is not connected (call connect() first)")
        return self._connection, self._publish_channel, self._consume_channel

    # -- topology ----------------------------------------------------------

    def queue_spec(self, queue: str) -> QueueSpec:
        """How ``queue`` is declared.

        Every queue is durable, of ``queue_type``, dead-letters to
        ``{prefix}.dlx`` and (quorum) has the delivery limit. This is the hook
        for other kinds of queue; sticky queues are declared by
        :meth:`declare_sticky_queue` (their spec depends on the fallback).
        """
        arguments: dict[str, Any] = {
            "x-queue-type": self.queue_type,
            "x-dead-letter-exchange": self.dead_letter_exchange,
        }
        if self.queue_type == "quorum":
            # RabbitMQ allows ``limit`` returns, i.e. limit + 1 deliveries.
            arguments["x-delivery-limit"] = self.max_deliveries - 1
        return QueueSpec(arguments=arguments)

    async def declare_queue(self, queue: str) -> None:
        """Declare ``queue`` and the dead-letter exchange and queue; idempotent.

        Raises :class:`BrokerError` naming the argument when the queue already
        exists with other arguments (RabbitMQ's ``PRECONDITION_FAILED``).
        """
        if queue in self._declared:
            return
        async with self._declare_lock:
            if queue in self._declared:
                return
            if self.dead_letter_queue not in self._declared:
                dlq_spec = QueueSpec(arguments={"x-queue-type": self.queue_type})
                self._declared[self.dead_letter_queue] = await self._declare(self.dead_letter_queue, dlq_spec, bind_dlx=True)
            self._declared[queue] = await self._declare(queue, self.queue_spec(queue))

    async def _declare(self, queue: str, spec: QueueSpec, *, bind_dlx: bool = False) -> AbstractQueue:
        connection, _, channel = self._channels()
        # A PRECONDITION_FAILED closes the channel it happens on: try on a
        # throwaway channel first, so the shared ones never see it.
        try:
            probe = await _plain_channel(connection)
        except (AMQPError, OSError, RuntimeError) as exc:
            raise BrokerError(f"cannot declare queue {queue!r} on {self.display_url}: {exc}") from exc
        try:
            await probe.declare_queue(queue, durable=spec.durable, auto_delete=spec.auto_delete, arguments=spec.arguments)
        except ChannelPreconditionFailed as exc:
            raise BrokerError(_explain_precondition(queue, spec, exc, self.display_url)) from exc
        except (AMQPError, OSError) as exc:
            raise BrokerError(f"cannot declare queue {queue!r} on {self.display_url}: {exc}") from exc
        finally:
            await _close_quietly(probe)
        try:
            # Declared again on the robust channel: this is what a reconnect restores.
            declared = await channel.declare_queue(
                queue, durable=spec.durable, auto_delete=spec.auto_delete, arguments=spec.arguments
            )
            if bind_dlx:
                exchange = await channel.declare_exchange(self.dead_letter_exchange, aio_pika.ExchangeType.FANOUT, durable=True)
                await declared.bind(exchange)
        except (AMQPError, OSError, RuntimeError) as exc:  # RuntimeError: connection closed (node down)
            raise BrokerError(f"cannot declare queue {queue!r} on {self.display_url}: {exc}") from exc
        return declared

    # -- streams (the history stream) --------------------------------------

    @staticmethod
    def stream_spec() -> QueueSpec:
        """A RabbitMQ stream: an append-only log, read from any offset, as often as wanted (no plugin since 3.9)."""
        return QueueSpec(durable=True, arguments={"x-queue-type": "stream"})

    async def declare_stream(self, queue: str) -> None:
        """Declare ``queue`` as a stream (``x-queue-type=stream``); :meth:`publish` then appends to it."""
        async with self._declare_lock:
            if queue not in self._declared:
                self._declared[queue] = await self._declare(queue, self.stream_spec())

    async def read_stream(
        self,
        queue: str,
        *,
        offset: str | int = "first",
        first_wait: float = 10.0,
        idle: float = 2.0,
        limit: int | None = None,
    ) -> list[tuple[int, bytes]]:
        """Read the stream ``queue`` from ``offset`` (``"first"``: its start) until quiet for ``idle`` seconds.

        Returns ``(stream offset, body)`` pairs. Reading removes nothing: each
        call reads the stream again. A stream consumer needs a prefetch; each
        message is acked (that only grants credit to the consumer).
        ``first_wait``: how long to wait for the first message.
        """
        await self.declare_stream(queue)
        connection, _, _ = self._channels()
        out: list[tuple[int, bytes]] = []
        try:
            channel = await _plain_channel(connection)
        except (AMQPError, OSError, RuntimeError) as exc:
            raise BrokerError(f"cannot read stream {queue!r} on {self.display_url}: {exc}") from exc
        try:
            await channel.set_qos(prefetch_count=max(self.prefetch, 500))
            declared = await channel.declare_queue(queue, durable=True, arguments=self.stream_spec().arguments)
            buffer: asyncio.Queue[AbstractIncomingMessage] = asyncio.Queue()
            await declared.consume(buffer.put, no_ack=False, arguments={"x-stream-offset": offset})
            loop = asyncio.get_running_loop()
            started, last = loop.time(), None
            while limit is None or len(out) < limit:
                remaining = (started + first_wait if last is None else last + idle) - loop.time()
                try:
                    message = await asyncio.wait_for(buffer.get(), max(remaining, 0.0)) if remaining > 0 else None
                except TimeoutError:
                    message = None
                if message is None:
                    break
                await message.ack()
                position = (message.headers or {}).get("x-stream-offset")
                out.append((position if isinstance(position, int) else len(out), message.body))
                last = loop.time()
        except (AMQPError, OSError, RuntimeError) as exc:
            raise BrokerError(f"cannot read stream {queue!r} on {self.display_url}: {exc}") from exc
        finally:
            await _close_quietly(channel)
        return out

    # -- publish -----------------------------------------------------------

    async def publish(self, queue: str, body: bytes, headers: dict[str, str] | None = None) -> str:
        await self.declare_queue(queue)
        message_id = uuid.uuid4().hex
        await self._send(queue, body, dict(headers or {}), message_id)
        return message_id

    async def _send(self, queue: str, body: bytes, headers: dict[str, Any], message_id: str) -> None:
        _, channel, _ = self._channels()
        message = aio_pika.Message(
            body, headers=headers, message_id=message_id, delivery_mode=aio_pika.DeliveryMode.PERSISTENT
        )
        try:
            await channel.default_exchange.publish(message, routing_key=queue, mandatory=True, timeout=self.publish_timeout)
        except DeliveryError as exc:
            raise BrokerError(f"RabbitMQ at {self.display_url} refused the message for {queue!r} (basic.nack): {exc}") from exc
        except PublishError as exc:
            raise BrokerError(
                f"RabbitMQ at {self.display_url} could not route the message to {queue!r} (no such queue?): {exc}"
            ) from exc
        except (AMQPError, OSError, RuntimeError, TimeoutError) as exc:
            raise BrokerError(
                f"publish to {queue!r} on {self.display_url} was not confirmed ({type(exc).__name__}: {exc}); "
                "the connection reconnects by itself: publish again"
            ) from exc

    # -- receive -----------------------------------------------------------

    async def _buffer(self, queue: str) -> asyncio.Queue[AbstractIncomingMessage | None]:
        buffer = self._buffers.get(queue)
        if buffer is not None:
            return buffer
        async with self._consumer_lock:
            buffer = self._buffers.get(queue)
            if buffer is not None:
                return buffer
            await self.declare_queue(queue)
            buffer = asyncio.Queue()
            try:
                # A robust queue's consumer is re-registered after a reconnect.
                self._consumer_tags[queue] = await self._declared[queue].consume(buffer.put, no_ack=False)
            except (AMQPError, OSError, RuntimeError) as exc:
                raise BrokerError(f"cannot consume from {queue!r} on {self.display_url}: {exc}") from exc
            self._buffers[queue] = buffer
            return buffer

    async def receive(self, queue: str, max_messages: int = 1, wait: float = 0.0) -> list[Delivery]:
        self._channels()
        buffer = await self._buffer(queue)
        loop = asyncio.get_running_loop()
        deadline = loop.time() + wait
        out: list[Delivery] = []
        while len(out) < max_messages:
            if not buffer.empty():
                message = buffer.get_nowait()
            elif out:
                break
            else:
                remaining = deadline - loop.time()
                if remaining <= 0:
                    break
                try:
                    message = await asyncio.wait_for(buffer.get(), remaining)
                except TimeoutError:
                    break
            if message is None:  # closed
                buffer.put_nowait(None)
                break
            if _is_stale(message):
                continue  # its channel was lost: the broker delivers it again
            out.append(self._delivery(queue, message))
        return out

    def _delivery(self, queue: str, message: AbstractIncomingMessage) -> Delivery:
        raw = dict(message.headers or {})
        count = raw.get(DELIVERY_COUNT_HEADER)
        if isinstance(count, int):
            delivery_count = count + 1 if self.queue_type == "quorum" else count
            if message.redelivered and self.queue_type == "classic":
                delivery_count += 1
        else:
            delivery_count = 2 if message.redelivered else 1
        return Delivery(
            queue=queue,
            body=message.body,
            headers=_user_headers(raw),
            message_id=message.message_id or "",
            delivery_count=delivery_count,
            receipt=message,
        )

    # -- settle ------------------------------------------------------------

    async def ack(self, delivery: Delivery) -> None:
        message = _message(delivery)
        try:
            await message.ack()
        except (ChannelInvalidStateError, MessageProcessError) as exc:
            # The channel it came on is gone (the broker requeued it) or it was settled already.
            log.info("ack of %s on %s ignored: %s", delivery.message_id, delivery.queue, exc)
        except (AMQPError, OSError) as exc:
            raise BrokerError(f"ack on {delivery.queue!r} at {self.display_url} failed: {exc}") from exc

    async def nack(self, delivery: Delivery, *, requeue: bool = True, reason: str = "") -> None:
        message = _message(delivery)
        if _is_stale(message):
            log.info("nack of %s on %s ignored: its channel was lost, the broker delivers it again", delivery.message_id, delivery.queue)
            return
        if not requeue:
            await self._dead_letter(delivery, message, reason or "rejected")
        elif delivery.delivery_count >= self.max_deliveries:
            await self._dead_letter(
                delivery, message, f"max_deliveries ({self.max_deliveries}) reached; last: {reason or 'nack'}"
            )
        elif self.queue_type == "quorum":
            await self._settle(delivery, message.nack(requeue=True))
        else:
            # Classic queues do not count deliveries: requeue a counted copy.
            headers = {**delivery.headers, DELIVERY_COUNT_HEADER: delivery.delivery_count + 1}
            await self._send(delivery.queue, delivery.body, headers, delivery.message_id)
            await self.ack(delivery)

    async def _dead_letter(self, delivery: Delivery, message: AbstractIncomingMessage, reason: str) -> None:
        await self.declare_queue(delivery.queue)
        headers = {**delivery.headers, REASON_HEADER: reason, SOURCE_QUEUE_HEADER: delivery.queue}
        await self._send(self.dead_letter_queue, delivery.body, headers, delivery.message_id)
        await self._settle(delivery, message.ack())

    async def _settle(self, delivery: Delivery, op: Any) -> None:
        try:
            await op
        except (ChannelInvalidStateError, MessageProcessError) as exc:
            log.info("settling %s on %s ignored: %s", delivery.message_id, delivery.queue, exc)
        except (AMQPError, OSError) as exc:
            raise BrokerError(f"settling a message on {delivery.queue!r} at {self.display_url} failed: {exc}") from exc

    # -- sticky queues -----------------------------------------------------

    def sticky_spec(self, fallback: str, timeout: float) -> QueueSpec:
        """How a sticky queue is declared (see the module docstring)."""
        ttl_ms = max(1, int(timeout * 1000))
        return QueueSpec(
            durable=False,
            arguments={
                "x-queue-type": "classic",
                "x-message-ttl": ttl_ms,
                "x-dead-letter-exchange": "",
                "x-dead-letter-routing-key": fallback,
                "x-expires": max(2 * ttl_ms, ttl_ms + 10_000),
            },
        )

    async def declare_sticky_queue(self, queue: str, *, fallback: str, timeout: float) -> None:
        if timeout <= 0:
            raise BrokerError(f"sticky queue {queue!r}: timeout must be positive, got {timeout}")
        await self.declare_queue(fallback)  # the dead-letter target must exist
        async with self._declare_lock:
            if queue not in self._declared:
                self._declared[queue] = await self._declare(queue, self.sticky_spec(fallback, timeout))

    async def delete_sticky_queue(self, queue: str) -> None:
        """Stop consuming, so publishers send to the fallback; what the queue holds expires into it."""
        declared = self._declared.get(queue)
        buffer = self._buffers.pop(queue, None)
        tag = self._consumer_tags.pop(queue, None)
        if declared is None or buffer is None or tag is None:
            return
        try:
            await declared.cancel(tag)
        except (AMQPError, OSError, RuntimeError) as exc:
            log.debug("cancelling the consumer of %s failed: %s", queue, exc)
        while not buffer.empty():  # prefetched, never handed out: give them back now
            message = buffer.get_nowait()
            if message is not None and not _is_stale(message):
                try:
                    await message.nack(requeue=True)
                except (AMQPError, OSError, ChannelInvalidStateError, MessageProcessError) as exc:
                    log.debug("returning %s failed: %s", message.message_id, exc)
        buffer.put_nowait(None)

    async def _has_consumer(self, queue: str) -> bool:
        """Whether ``queue`` exists and someone consumes it (passive declare on a private channel)."""
        connection, _, _ = self._channels()
        probe = self._probe
        try:
            if probe is None or probe.is_closed:
                probe = self._probe = await _plain_channel(connection)
            declared = await probe.declare_queue(queue, passive=True)
        except ChannelNotFoundEntity:
            self._probe = None  # a 404 closes the channel
            return False
        except (AMQPError, OSError, RuntimeError) as exc:
            self._probe = None
            raise BrokerError(f"cannot check sticky queue {queue!r} on {self.display_url}: {exc}") from exc
        result = declared.declaration_result
        return bool(result and result.consumer_count)

    async def publish_sticky(self, queue: str, fallback: str, body: bytes, headers: dict[str, str] | None = None) -> str:
        if await self._has_consumer(queue):
            message_id = uuid.uuid4().hex
            try:
                await self._send(queue, body, dict(headers or {}), message_id)
                return message_id
            except BrokerError as exc:  # deleted in between (unroutable): fall back
                log.info("sticky queue %s is gone (%s); publishing to %s", queue, exc, fallback)
        return await self.publish(fallback, body, headers)

    # -- dead letters ------------------------------------------------------

    async def dead_letters(self, limit: int = 100) -> list[DeadLetter]:
        """The first ``limit`` messages of ``{prefix}.dlq``, left in place (see module docstring)."""
        connection, _, _ = self._channels()
        await self.declare_queue(self.dead_letter_queue)
        out: list[DeadLetter] = []
        # A private channel: whatever is not given back explicitly returns when it closes.
        try:
            channel = await _plain_channel(connection)
        except (AMQPError, OSError, RuntimeError) as exc:
            raise BrokerError(f"cannot read {self.dead_letter_queue!r} on {self.display_url}: {exc}") from exc
        try:
            dlq = await channel.get_queue(self.dead_letter_queue, ensure=False)
            taken: list[AbstractIncomingMessage] = []
            while len(taken) < limit:
                message = await dlq.get(no_ack=False, fail=False)
                if message is None:
                    break
                taken.append(message)
                out.append(self._dead_letter_of(message))
            for message in taken:
                await message.nack(requeue=True)
        except (AMQPError, OSError) as exc:
            raise BrokerError(f"cannot read {self.dead_letter_queue!r} on {self.display_url}: {exc}") from exc
        finally:
            await _close_quietly(channel)
        return out

    def _dead_letter_of(self, message: AbstractIncomingMessage) -> DeadLetter:
        raw = dict(message.headers or {})
        reason = raw.get(REASON_HEADER)
        queue = raw.get(SOURCE_QUEUE_HEADER)
        if reason is None:
            deaths = raw.get("x-death")
            death = deaths[0] if isinstance(deaths, list) and deaths and isinstance(deaths[0], dict) else {}
            cause = _text(death.get("reason", raw.get("x-first-death-reason", "unknown")))
            queue = queue or death.get("queue") or raw.get("x-first-death-queue")
            if cause == "delivery_limit":
                reason = f"max_deliveries ({self.max_deliveries}) reached (RabbitMQ delivery limit)"
            else:
                reason = f"dead-lettered by RabbitMQ: {cause}"
        return DeadLetter(
            queue=_text(queue or ""),
            body=message.body,
            reason=_text(reason),
            headers=_user_headers(raw),
            message_id=message.message_id or "",
        )


async def _plain_channel(connection: AbstractRobustConnection) -> aio_pika.Channel:
    """A channel that is not restored after a reconnect (for one-off work that may fail)."""
    channel = aio_pika.Channel(connection, publisher_confirms=False)
    await channel.initialize()
    return channel


async def _close_quietly(channel: aio_pika.Channel) -> None:
    if not channel.is_closed:
        try:
            await channel.close()
        except (AMQPError, OSError) as exc:
            log.debug("closing a channel failed: %s", exc)


def _message(delivery: Delivery) -> AbstractIncomingMessage:
    message = delivery.receipt
    if not isinstance(message, AbstractIncomingMessage):
        raise BrokerError(f"delivery of {delivery.message_id!r} did not come from a RabbitMQBroker")
    return message


def _is_stale(message: AbstractIncomingMessage) -> bool:
    try:
        return bool(message.channel.is_closed)
    except ChannelInvalidStateError:
        return True


def _text(value: Any) -> str:
    if isinstance(value, bytes):
        return value.decode(errors="replace")
    return str(value)


def _user_headers(raw: dict[str, Any]) -> dict[str, str]:
    return {
        k: _text(v)
        for k, v in raw.items()
        if k not in _INTERNAL_HEADERS and not k.startswith(_INTERNAL_PREFIXES)
    }


def _display_url(url: str) -> str:
    """The URL without password or query, for messages."""
    parsed = urlparse(url)
    user = f"{unquote(parsed.username)}@" if parsed.username else ""
    host = parsed.hostname or "localhost"
    port = f":{parsed.port}" if parsed.port else ""
    return f"{parsed.scheme}://{user}{host}{port}{parsed.path or '/'}"


def _explain_precondition(queue: str, spec: QueueSpec, exc: Exception, display_url: str) -> str:
    text = str(exc)
    match = _INEQUIVALENT.search(text)
    if match is None:
        return f"queue {queue!r} on {display_url} exists with other settings: {text}; delete it or change the broker URL"
    arg = match["arg"]
    wanted = spec.arguments.get(arg, "none")
    fixes = {
        "x-queue-type": "set queue_type= in the broker URL to the existing type",
        "x-delivery-limit": "set max_deliveries= in the broker URL to match (limit + 1)",
        "x-dead-letter-exchange": "set prefix= in the broker URL to the one the queue was created with",
    }
    fix = fixes.get(arg, "change the broker URL to match")
    return (
        f"queue {queue!r} on {display_url} already exists with {arg} = {match['current']}, but this broker "
        f"declares it with {arg} = {wanted!r}. RabbitMQ cannot change a queue's arguments: {fix}, or delete "
        f"the queue (rabbitmqctl delete_queue {queue}) after draining it."
    )
