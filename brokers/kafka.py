"""Kafka broker (``kafka://``) on aiokafka: a topic per queue, manual commit after ack, retry by re-publish.

::

    broker = await open_broker("kafka://127.0.0.1:9092?group=sagas")
    await broker.publish("sagas.default.trips.act", b'{"v":1}', {"key": "trip-1"})
    [d] = await broker.receive("sagas.default.trips.act", max_messages=10, wait=5)
    await broker.ack(d)

URL: ``kafka://host:port[,host:port...]`` and options:

``prefix`` (``sagas``)
    The dead-letter topic is ``{prefix}.dlq``.
``group`` (``sagas``)
    Each queue is consumed by the consumer group ``{group}.{topic}``.
``max_deliveries`` (5), ``partitions`` (3), ``replication_factor`` (1)
    Topics are created with ``partitions`` and ``replication_factor`` when first used.
``session_timeout_ms``, ``heartbeat_interval_ms``, ``max_poll_interval_ms``,
``request_timeout_ms``, ``fetch_max_wait_ms``
    Passed to the consumer; unset means aiokafka's defaults. Tests against a
    single local broker (Tansu) use ``session_timeout_ms=2000``,
    ``heartbeat_interval_ms=100`` and ``fetch_max_wait_ms=100`` (why: ``docs/how-to/brokers.md``).
    A worker that does not call ``receive`` for ``max_poll_interval_ms`` leaves
    the group and its partitions go to other workers (its acks are then ignored).
    ``fetch_max_wait_ms`` (aiokafka: 500) is how long the broker may hold a fetch
    that found nothing; Kafka answers as soon as a record arrives, but a broker
    that holds every empty fetch for the whole time (Tansu) delays each delivery
    by up to that much.
``client_id`` (``sagas``)

How the broker contract maps onto Kafka:

* **Queues**: one topic per queue, its name sanitised to Kafka's characters
  (``[A-Za-z0-9._-]``, at most 249). The record key is the message's ``key``
  header when given (the orchestrator passes the workflow id), so one
  workflow's tasks land on one partition, in order.
* **publish**: ``acks=all``, awaited; the message id is a UUID carried in the
  ``x-message-id`` record header. No idempotent or transactional producer (not
  every Kafka-protocol broker has them; a duplicate is harmless: consumers are
  idempotent).
* **receive / ack**: a queue's consumer is created at its first ``receive``
  and joins its group in the background; ``receive`` keeps to its ``wait``
  while the join (or a rebalance) runs and returns nothing until the group has
  assigned it partitions. Offsets are committed by hand, only after ack. Per
  partition the consumer tracks the offsets it handed out and not yet settled;
  it commits the highest *contiguous* settled offset, so an unsettled message
  holds the commit point and is delivered again after a crash or a rebalance
  (to whichever consumer then owns the partition). A consumer that crashes is
  noticed after ``session_timeout_ms``; one that is closed leaves its group at
  once (even in generation 0, which Tansu uses and aiokafka alone would not leave).
* **visibility timeout**: none: an unacked message is delivered again only
  after its consumer is gone (crash, close, or missing ``max_poll_interval_ms``).
* **nack(requeue=True) -- retry by re-publish**: a Kafka partition is a log,
  not a queue: a message cannot be put back, and not committing it would
  block its whole partition (Kafka would only deliver it again after a
  restart). So the message is published again to the same topic, with the same
  key and ``x-delivery-count`` + 1, and its offset then counts as settled. The
  retry goes to the end of the partition: a single failing message never blocks
  the messages behind it (order per key holds for first deliveries).
* **delivery_count**: the ``x-delivery-count`` header, raised by every
  re-publish. A delivery repeated after a crash is not counted (the consumer
  that crashed could not tell anyone).
* **Dead letters**: after ``max_deliveries``, or on ``nack(requeue=False)``,
  the message is published to the topic ``{prefix}.dlq`` with the reason in
  ``x-sagas-reason`` and the source queue in ``x-sagas-queue``, then settled.
  :meth:`KafkaBroker.dead_letters` reads the newest records of that topic
  with a group-less consumer: reading never removes anything.
"""

from __future__ import annotations

import asyncio
import hashlib
import logging
import re
import uuid
from dataclasses import dataclass, field
from typing import Any

from aiokafka import AIOKafkaConsumer, AIOKafkaProducer, ConsumerRebalanceListener, TopicPartition
from aiokafka.admin import AIOKafkaAdminClient, NewTopic
from aiokafka.consumer.group_coordinator import GroupCoordinator
from aiokafka.errors import CommitFailedError, IllegalStateError, KafkaError
from aiokafka.protocol.group import LeaveGroupRequest

from brokers.base import Broker, BrokerError, DeadLetter, Delivery, parse_broker_url

log = logging.getLogger("sagas.brokers.kafka")

MESSAGE_ID_HEADER = "x-message-id"
DELIVERY_COUNT_HEADER = "x-delivery-count"
REASON_HEADER = "x-sagas-reason"
SOURCE_QUEUE_HEADER = "x-sagas-queue"
KEY_HEADER = "key"

_INTERNAL_HEADERS = frozenset({MESSAGE_ID_HEADER, DELIVERY_COUNT_HEADER})
_TOPIC_ALREADY_EXISTS = 36
_MAX_TOPIC_LENGTH = 249
_INVALID_TOPIC_CHARS = re.compile(r"[^A-Za-z0-9._-]")
_JOIN_SLACK = 0.1
"""Seconds a receive may overrun its ``wait`` while its consumer's group is (re)forming."""
_CONSUMER_OPTIONS = (
    "session_timeout_ms",
    "heartbeat_interval_ms",
    "max_poll_interval_ms",
    "request_timeout_ms",
    "fetch_max_wait_ms",
)


def topic_name(queue: str) -> str:
    """The Kafka topic for ``queue``: invalid characters become ``_``; long names end in a hash."""
    topic = _INVALID_TOPIC_CHARS.sub("_", queue)
    if topic in ("", ".", ".."):
        topic = f"_{topic}"
    if len(topic) > _MAX_TOPIC_LENGTH:
        digest = hashlib.sha256(queue.encode()).hexdigest()[:16]
        topic = f"{topic[: _MAX_TOPIC_LENGTH - 17]}-{digest}"
    return topic


@dataclass
class _PartitionState:
    """Offsets handed out on one partition since it was assigned to this consumer."""

    epoch: int
    committed: int
    next_offset: int
    pending: set[int] = field(default_factory=set)

    def commit_point(self) -> int:
        """Kafka's committed offset is the next one to read: everything before it is settled."""
        return min(self.pending) if self.pending else self.next_offset


@dataclass(frozen=True)
class _Receipt:
    partition: TopicPartition
    offset: int
    epoch: int
    key: bytes | None


class _QueueConsumer:
    """The consumer-group member for one queue and its offset bookkeeping."""

    def __init__(self, consumer: AIOKafkaConsumer) -> None:
        self.consumer = consumer
        self.partitions: dict[TopicPartition, _PartitionState] = {}
        self.commit_lock = asyncio.Lock()
        self._epochs = 0

    def track(self, partition: TopicPartition, offset: int) -> int:
        state = self.partitions.get(partition)
        if state is None:
            self._epochs += 1
            state = self.partitions[partition] = _PartitionState(self._epochs, committed=offset, next_offset=offset)
        state.pending.add(offset)
        state.next_offset = max(state.next_offset, offset + 1)
        return state.epoch

    def owns(self, receipt: _Receipt) -> bool:
        state = self.partitions.get(receipt.partition)
        return state is not None and state.epoch == receipt.epoch and receipt.offset in state.pending

    async def settle(self, receipt: _Receipt) -> None:
        """Mark one offset settled and commit as far as every earlier offset is settled too."""
        state = self.partitions.get(receipt.partition)
        if state is None or state.epoch != receipt.epoch:
            return
        state.pending.discard(receipt.offset)
        await self.commit(receipt.partition)

    async def commit(self, partition: TopicPartition) -> None:
        async with self.commit_lock:
            state = self.partitions.get(partition)
            if state is None:
                return
            point = state.commit_point()
            if point <= state.committed:
                return
            try:
                await self.consumer.commit({partition: point})
            except (CommitFailedError, IllegalStateError) as exc:
                # The partition moved to another member: it redelivers what we did not commit.
                log.warning("commit of %s@%d failed during a rebalance: %s", partition, point, exc)
                return
            state.committed = point

    def forget(self, partitions: Any) -> None:
        for partition in partitions:
            self.partitions.pop(partition, None)


class _Rebalance(ConsumerRebalanceListener):  # type: ignore[misc]  # aiokafka is untyped
    def __init__(self, owner: _QueueConsumer) -> None:
        self.owner = owner

    async def on_partitions_revoked(self, revoked: Any) -> None:
        # Commit what is settled while we still own the partitions, then forget
        # them: the new owner delivers the rest again, and our acks become no-ops.
        for partition in revoked:
            try:
                await self.owner.commit(partition)
            except KafkaError as exc:
                log.warning("commit of %s on revocation failed: %s", partition, exc)
        self.owner.forget(revoked)

    async def on_partitions_assigned(self, assigned: Any) -> None:
        return None


def _leave_group_on_close(consumer: AIOKafkaConsumer) -> None:
    """Make ``consumer.stop()`` leave its group whatever the generation.

    aiokafka sends LeaveGroup on close only in a generation above 0: Kafka numbers a group's
    generations from 1. Tansu numbers them from 0, and counts a member from the moment it hands
    out its member id, before the join completes. Without a LeaveGroup a closed consumer stays a
    member until its session times out: the next join (a restarted worker) makes it the leader or
    gives it partitions, and their records wait for the session timeout and another rebalance.
    LeaveGroup for a member the broker does not know is answered with an error and changes nothing.
    """
    coordinator = getattr(consumer, "_coordinator", None)
    if not isinstance(coordinator, GroupCoordinator):
        return
    maybe_leave = coordinator._maybe_leave_group

    async def leave() -> None:  # close() calls it once heartbeats and joins have stopped
        if coordinator.generation <= 0 and coordinator.member_id and coordinator._group_instance_id is None:
            try:
                await coordinator._send_req(LeaveGroupRequest(coordinator.group_id, coordinator.member_id))
            except KafkaError as exc:
                group = coordinator.group_id
                log.info("LeaveGroup for %s failed (%s); its session timeout removes the member", group, exc)
        await maybe_leave()

    coordinator._maybe_leave_group = leave


class KafkaBroker(Broker):
    """Task queues on Kafka (see the module docstring for the semantics)."""

    durable = True
    receive_cancellable = True  # an uncommitted record is fetched again by the next member

    def __init__(
        self,
        bootstrap_servers: str,
        *,
        prefix: str = "sagas",
        group: str = "sagas",
        max_deliveries: int = 5,
        partitions: int = 3,
        replication_factor: int = 1,
        client_id: str = "sagas",
        consumer_options: dict[str, int] | None = None,
    ) -> None:
        if max_deliveries < 1:
            raise BrokerError(f"max_deliveries must be at least 1, got {max_deliveries}")
        self.bootstrap_servers = bootstrap_servers
        self.prefix = prefix
        self.group = group
        self.max_deliveries = max_deliveries
        self.partitions = partitions
        self.replication_factor = replication_factor
        self.client_id = client_id
        self.consumer_options = dict(consumer_options or {})
        self.dead_letter_topic = topic_name(f"{prefix}.dlq")
        self.display_url = f"kafka://{bootstrap_servers}"
        self._producer: AIOKafkaProducer | None = None
        self._admin: AIOKafkaAdminClient | None = None
        self._topics: set[str] = set()
        self._topic_lock = asyncio.Lock()
        self._consumers: dict[str, _QueueConsumer] = {}
        self._consumer_lock = asyncio.Lock()
        self._closed = False

    @classmethod
    def from_url(cls, url: str) -> KafkaBroker:
        """Build from ``kafka://host:port[,host:port]?group=sagas&max_deliveries=5&...``."""
        scheme, location, options = parse_broker_url(url)
        if scheme != "kafka":
            raise BrokerError(f"KafkaBroker needs a kafka:// URL, got {url!r}")
        servers = location.strip("/")
        if not servers:
            raise BrokerError(f"broker URL {url!r} names no Kafka server; use kafka://host:port")
        try:
            return cls(
                servers,
                prefix=options.get("prefix", "sagas"),
                group=options.get("group", "sagas"),
                max_deliveries=int(options.get("max_deliveries", 5)),
                partitions=int(options.get("partitions", 3)),
                replication_factor=int(options.get("replication_factor", 1)),
                client_id=options.get("client_id", "sagas"),
                consumer_options={k: int(options[k]) for k in _CONSUMER_OPTIONS if k in options},
            )
        except ValueError as exc:
            raise BrokerError(f"invalid option in broker URL {url!r}: {exc}") from exc

    # -- lifecycle ---------------------------------------------------------

    async def connect(self) -> None:
        if self._producer is not None:
            return
        producer = AIOKafkaProducer(
            bootstrap_servers=self.bootstrap_servers,
            client_id=self.client_id,
            acks="all",
            enable_idempotence=False,
        )
        admin = AIOKafkaAdminClient(bootstrap_servers=self.bootstrap_servers, client_id=self.client_id)
        try:
            await producer.start()
            await admin.start()
        except KafkaError as exc:
            await producer.stop()
            await admin.close()
            raise BrokerError(
                f"cannot connect to Kafka at {self.display_url} ({type(exc).__name__}: {exc}); "
                "is the broker running and is the address right?"
            ) from exc
        self._producer, self._admin = producer, admin

    async def aclose(self) -> None:
        self._closed = True
        consumers, self._consumers = list(self._consumers.values()), {}
        for queue_consumer in consumers:
            # Leaving the group hands the partitions over; uncommitted offsets are delivered again.
            await queue_consumer.consumer.stop()
        producer, self._producer = self._producer, None
        admin, self._admin = self._admin, None
        if producer is not None:
            await producer.stop()
        if admin is not None:
            await admin.close()

    def _client(self) -> tuple[AIOKafkaProducer, AIOKafkaAdminClient]:
        if self._closed:
            raise BrokerError(f"broker {self.display_url} is closed")
        if self._producer is None or self._admin is None:
            raise BrokerError(f"broker {self.display_url} is not connected (call connect() first)")
        return self._producer, self._admin

    # -- topics ------------------------------------------------------------

    async def declare_queue(self, queue: str) -> None:
        """Create the queue's topic and the dead-letter topic if they do not exist."""
        await self._ensure_topic(self.dead_letter_topic)
        await self._ensure_topic(topic_name(queue))

    async def _ensure_topic(self, topic: str) -> None:
        if topic in self._topics:
            return
        _, admin = self._client()
        async with self._topic_lock:
            if topic in self._topics:
                return
            try:
                response = await admin.create_topics(
                    [NewTopic(topic, num_partitions=self.partitions, replication_factor=self.replication_factor)]
                )
            except KafkaError as exc:
                raise BrokerError(f"cannot create topic {topic!r} on {self.display_url}: {exc}") from exc
            for _, code, *rest in response.topic_errors:
                if code not in (0, _TOPIC_ALREADY_EXISTS):
                    message = rest[0] if rest else ""
                    raise BrokerError(
                        f"cannot create topic {topic!r} on {self.display_url}: error {code} {message}; "
                        "check partitions= and replication_factor= in the broker URL"
                    )
            self._topics.add(topic)

    # -- publish -----------------------------------------------------------

    async def publish(self, queue: str, body: bytes, headers: dict[str, str] | None = None) -> str:
        headers = dict(headers or {})
        key = headers.get(KEY_HEADER)
        message_id = uuid.uuid4().hex
        await self.declare_queue(queue)
        await self._send(topic_name(queue), body, key.encode() if key is not None else None, headers, message_id, 1)
        return message_id

    async def _send(
        self, topic: str, body: bytes, key: bytes | None, headers: dict[str, str], message_id: str, delivery_count: int
    ) -> None:
        producer, _ = self._client()
        record_headers = [(k, v.encode()) for k, v in headers.items()]
        record_headers += [(MESSAGE_ID_HEADER, message_id.encode()), (DELIVERY_COUNT_HEADER, str(delivery_count).encode())]
        try:
            await producer.send_and_wait(topic, body, key=key, headers=record_headers)
        except KafkaError as exc:
            raise BrokerError(
                f"publish to topic {topic!r} on {self.display_url} was not acknowledged ({type(exc).__name__}: {exc}); "
                "publish again"
            ) from exc

    # -- receive -----------------------------------------------------------

    async def _consumer(self, queue: str) -> _QueueConsumer:
        existing = self._consumers.get(queue)
        if existing is not None:
            return existing
        async with self._consumer_lock:
            existing = self._consumers.get(queue)
            if existing is not None:
                return existing
            await self.declare_queue(queue)
            topic = topic_name(queue)
            consumer = AIOKafkaConsumer(
                bootstrap_servers=self.bootstrap_servers,
                client_id=self.client_id,
                group_id=f"{self.group}.{topic}",
                enable_auto_commit=False,
                auto_offset_reset="earliest",
                **self.consumer_options,
            )
            try:
                # Started before it subscribes, so start() only connects: subscribed first, it
                # would wait for the group join (seconds), holding this lock, i.e. every other
                # queue's first receive, and overrunning the caller's ``wait``.
                await consumer.start()
            except BaseException as exc:  # cancelled too: a started half must not stay a group member
                await consumer.stop()
                if isinstance(exc, KafkaError):
                    raise BrokerError(f"cannot consume topic {topic!r} on {self.display_url}: {exc}") from exc
                raise
            _leave_group_on_close(consumer)
            owner = _QueueConsumer(consumer)
            # The join runs in the background; receive() waits at most ``wait`` for it and its records.
            consumer.subscribe([topic], listener=_Rebalance(owner))
            self._consumers[queue] = owner
            return owner

    async def receive(self, queue: str, max_messages: int = 1, wait: float = 0.0) -> list[Delivery]:
        self._client()
        owner = await self._consumer(queue)
        wait = max(0.0, wait)
        try:
            # getmany() keeps to its timeout only once the group has assigned the partitions: while
            # a join or rebalance runs it waits for it (seconds), so bound it here. A getmany that
            # already took records returns them even when the bound is reached (asyncio.wait_for).
            fetch = owner.consumer.getmany(timeout_ms=int(wait * 1000), max_records=max_messages)
            batches = await asyncio.wait_for(fetch, wait + _JOIN_SLACK)
        except TimeoutError:
            return []
        except KafkaError as exc:
            raise BrokerError(f"receive from {queue!r} on {self.display_url} failed: {exc}") from exc
        out: list[Delivery] = []
        for partition, records in batches.items():
            for record in records:
                epoch = owner.track(partition, record.offset)
                raw = {k: v.decode(errors="replace") for k, v in record.headers or ()}
                out.append(
                    Delivery(
                        queue=queue,
                        body=record.value or b"",
                        headers={k: v for k, v in raw.items() if k not in _INTERNAL_HEADERS},
                        message_id=raw.get(MESSAGE_ID_HEADER) or f"{partition.topic}:{partition.partition}:{record.offset}",
                        delivery_count=_int(raw.get(DELIVERY_COUNT_HEADER), 1),
                        receipt=_Receipt(partition, record.offset, epoch, record.key),
                    )
                )
        return out

    # -- settle ------------------------------------------------------------

    def _owner(self, delivery: Delivery) -> tuple[_QueueConsumer | None, _Receipt]:
        receipt = delivery.receipt
        if not isinstance(receipt, _Receipt):
            raise BrokerError(f"delivery of {delivery.message_id!r} did not come from a KafkaBroker")
        owner = self._consumers.get(delivery.queue)
        if owner is None or not owner.owns(receipt):
            # Settled already, or the partition went to another consumer, which delivers it again.
            log.info("settling %s on %s ignored: this consumer no longer owns it", delivery.message_id, delivery.queue)
            return None, receipt
        return owner, receipt

    async def ack(self, delivery: Delivery) -> None:
        owner, receipt = self._owner(delivery)
        if owner is not None:
            await self._settle(owner, receipt, delivery)

    async def nack(self, delivery: Delivery, *, requeue: bool = True, reason: str = "") -> None:
        owner, receipt = self._owner(delivery)
        if owner is None:
            return
        if not requeue:
            await self._dead_letter(delivery, receipt, reason or "rejected")
        elif delivery.delivery_count >= self.max_deliveries:
            await self._dead_letter(
                delivery, receipt, f"max_deliveries ({self.max_deliveries}) reached; last: {reason or 'nack'}"
            )
        else:
            await self._send(
                receipt.partition.topic,
                delivery.body,
                receipt.key,
                delivery.headers,
                delivery.message_id,
                delivery.delivery_count + 1,
            )
        await self._settle(owner, receipt, delivery)

    async def _dead_letter(self, delivery: Delivery, receipt: _Receipt, reason: str) -> None:
        await self._ensure_topic(self.dead_letter_topic)
        headers = {**delivery.headers, REASON_HEADER: reason, SOURCE_QUEUE_HEADER: delivery.queue}
        await self._send(self.dead_letter_topic, delivery.body, receipt.key, headers, delivery.message_id, delivery.delivery_count)

    async def _settle(self, owner: _QueueConsumer, receipt: _Receipt, delivery: Delivery) -> None:
        try:
            await owner.settle(receipt)
        except KafkaError as exc:
            raise BrokerError(
                f"committing {delivery.queue!r} offset {receipt.offset} on {self.display_url} failed: {exc}; "
                "the message may be delivered again"
            ) from exc

    # -- dead letters ------------------------------------------------------

    async def dead_letters(self, limit: int = 100) -> list[DeadLetter]:
        """The latest ``limit`` records of ``{prefix}.dlq``, oldest first (reading removes nothing)."""
        self._client()
        await self._ensure_topic(self.dead_letter_topic)
        reader = AIOKafkaConsumer(
            bootstrap_servers=self.bootstrap_servers,
            client_id=self.client_id,
            group_id=None,
            enable_auto_commit=False,
            auto_offset_reset="earliest",
        )
        records: list[Any] = []
        try:
            await reader.start()
            await reader.topics()  # loads the metadata partitions_for_topic reads
            numbers = reader.partitions_for_topic(self.dead_letter_topic) or set()
            partitions = [TopicPartition(self.dead_letter_topic, n) for n in sorted(numbers)]
            if not partitions:
                return []
            reader.assign(partitions)
            starts: dict[TopicPartition, int] = await reader.beginning_offsets(partitions)
            ends: dict[TopicPartition, int] = await reader.end_offsets(partitions)
            # The newest ``limit`` of each partition hold the newest ``limit`` overall.
            for partition in partitions:
                reader.seek(partition, max(starts[partition], ends[partition] - limit))
            remaining = {p for p in partitions if ends[p] > starts[p]}
            idle_polls = 0
            while remaining and idle_polls < 20:
                batches = await reader.getmany(*remaining, timeout_ms=500)
                idle_polls = 0 if batches else idle_polls + 1
                for batch in batches.values():
                    records.extend(batch)
                for partition in list(remaining):
                    if await reader.position(partition) >= ends[partition]:
                        remaining.discard(partition)
        except KafkaError as exc:
            raise BrokerError(f"cannot read topic {self.dead_letter_topic!r} on {self.display_url}: {exc}") from exc
        finally:
            await reader.stop()
        records.sort(key=lambda r: (r.timestamp, r.partition, r.offset))
        return [_dead_letter_of(r) for r in records[-limit:]]


def _dead_letter_of(record: Any) -> DeadLetter:
    raw = {k: v.decode(errors="replace") for k, v in record.headers or ()}
    return DeadLetter(
        queue=raw.get(SOURCE_QUEUE_HEADER, ""),
        body=record.value or b"",
        reason=raw.get(REASON_HEADER, ""),
        headers={k: v for k, v in raw.items() if k not in _INTERNAL_HEADERS and not k.startswith("x-sagas-")},
        message_id=raw.get(MESSAGE_ID_HEADER, ""),
    )


def _int(text: str | None, default: int) -> int:
    try:
        return int(text) if text is not None else default
    except ValueError:
        return default
