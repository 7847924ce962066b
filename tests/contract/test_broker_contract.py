"""The broker conformance suite (DESIGN §4): one contract, run against every backend.

Every backend in :data:`BACKENDS` runs every test of the contract section
through the ``harness`` fixture, which gives each test fresh queue names (and
its own dead-letter queue, via a unique ``prefix``) on a server shared by the
session (``tests/services.py`` starts the real RabbitMQ, Tansu and moto).

To add a backend, append a :class:`BrokerBackend` whose ``start`` builds a
:class:`Harness`: ``open()`` must return a *new* connected client of the same
broker each time (for an in-process broker, the broker itself). The ``local``
backend (the dev server's built-in broker over HTTP) is added when
``brokers/local.py`` exposes ``LocalBrokerClient``.

The sections after the contract test what only one broker has: RabbitMQ's
error messages and a real node restart, Kafka's retry by re-publish, SQS's
visibility extension and FIFO queues.
"""

from __future__ import annotations

import asyncio
import contextlib
import importlib.util
import time
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator
from dataclasses import dataclass, field
from typing import Any

import pytest

from brokers.base import Broker, BrokerError, DeadLetter, Delivery, open_broker, queue_name
from brokers.memory import MemoryBroker
from tests import services
from tests.services import (  # noqa: F401  (session fixtures, requested by name)
    KafkaServer,
    RabbitMQServer,
    SQSServer,
    kafka_server,
    rabbitmq_server,
    sqs_server,
)

MAX_DELIVERIES = 3


# harness ---------------------------------------------------------------------------------------


@dataclass
class Harness:
    """One test's view of a backend: fresh names, new connections, and how a consumer dies."""

    backend: BrokerBackend
    connect: Callable[[], Awaitable[Broker]]
    prefix: str
    max_deliveries: int = MAX_DELIVERIES
    cleanup: Callable[[], Awaitable[None]] | None = None
    _open: list[Broker] = field(default_factory=list)

    async def open(self) -> Broker:
        broker = await self.connect()
        if broker not in self._open:
            self._open.append(broker)
        return broker

    @property
    def visibility_timeout(self) -> float:
        return self.backend.visibility_timeout

    @property
    def quiet_period(self) -> float:
        return self.backend.quiet_period

    def queue(self, name: str = "q") -> str:
        return queue_name(self.prefix, "default", name, "act")

    async def disconnect(self, broker: Broker) -> None:
        """Close a client; an in-process broker has no connection to close, so it stays."""
        if not self.backend.in_process:
            await broker.aclose()
            self._open.remove(broker)

    async def crash(self, broker: Broker) -> None:
        """Abandon whatever ``broker`` received and did not settle, as a consumer that died."""
        if self.backend.redelivers_on_close:
            await broker.aclose()
            self._open.remove(broker)

    async def close(self) -> None:
        for broker in reversed(self._open):
            with contextlib.suppress(BrokerError):
                await broker.aclose()
        if self.cleanup is not None:
            await self.cleanup()


@dataclass(frozen=True)
class BrokerBackend:
    """How the suite reaches one kind of broker (see module docstring)."""

    name: str
    start: Callable[[pytest.FixtureRequest, str], Awaitable[Harness]]
    """Build the harness for one test; ``str`` is the test's unique prefix."""
    in_process: bool = False
    """The broker lives in the test process: ``open()`` returns it, not a new connection."""
    redelivers_on_close: bool = False
    """An unacked message comes back when its consumer's connection closes (no visibility timeout)."""
    counts_crash_redeliveries: bool = True
    """A delivery repeated after a consumer died has a higher ``delivery_count``."""
    ordered: bool = True
    """Messages with the same ``key`` header are delivered in publish order."""
    redelivery_timeout: float = 10.0
    """How long a redelivery after a crash may take (Kafka: the session timeout plus a rebalance)."""
    visibility_timeout: float = 0.0
    """The short visibility timeout the test broker is built with (0: the broker has none)."""
    quiet_period: float = 0.5
    """How long an empty receive waits to show that nothing comes back (covers the visibility timeout)."""


async def _memory(_: pytest.FixtureRequest, prefix: str) -> Harness:
    broker = MemoryBroker(visibility_timeout=MEMORY.visibility_timeout, max_deliveries=MAX_DELIVERIES)

    async def connect() -> Broker:
        return broker

    return Harness(MEMORY, connect, prefix)


async def _rabbitmq(request: pytest.FixtureRequest, prefix: str) -> Harness:
    server: RabbitMQServer = request.getfixturevalue("rabbitmq_server")
    url = (
        f"{server.url}?prefix={prefix}&prefetch=32&max_deliveries={MAX_DELIVERIES}&queue_type=quorum"
        "&reconnect_interval=0.5"
    )
    return Harness(RABBITMQ, lambda: open_broker(url), prefix)


async def _kafka(request: pytest.FixtureRequest, prefix: str) -> Harness:
    server: KafkaServer = request.getfixturevalue("kafka_server")
    # Tansu answers a JoinGroup once half the session timeout has passed, in whole seconds: 2000
    # makes each join 1 s (3 s at 6000); it holds an empty fetch for all of fetch_max_wait_ms.
    url = (
        f"kafka://{server.bootstrap}?group=sagas&prefix={prefix}&max_deliveries={MAX_DELIVERIES}"
        "&session_timeout_ms=2000&heartbeat_interval_ms=100&fetch_max_wait_ms=100"
    )
    return Harness(KAFKA, lambda: open_broker(url), prefix)


def _sqs_url(server: SQSServer, prefix: str, *, fifo: bool) -> str:
    return (
        f"sqs://127.0.0.1:{server.port}?endpoint_url={server.endpoint_url}&region=us-east-1"
        f"&visibility_timeout={SQS.visibility_timeout:.0f}&max_deliveries={MAX_DELIVERIES}&prefix={prefix}"
        f"&fifo={'true' if fifo else 'false'}"
    )


async def _sqs(request: pytest.FixtureRequest, prefix: str) -> Harness:
    url = _sqs_url(request.getfixturevalue("sqs_server"), prefix, fifo=False)
    return Harness(SQS, lambda: open_broker(url), prefix)


async def _sqs_fifo(request: pytest.FixtureRequest, prefix: str) -> Harness:
    url = _sqs_url(request.getfixturevalue("sqs_server"), prefix, fifo=True)
    return Harness(SQS_FIFO, lambda: open_broker(url), prefix)


async def _local(_: pytest.FixtureRequest, prefix: str) -> Harness:
    """The dev server's built-in broker, served over HTTP by a server in this process."""
    from brokers.local import LocalBrokerClient
    from orchestrator.server import DevServer

    server = DevServer(store_url="memory://", port=0, visibility_timeout=LOCAL.visibility_timeout)
    await server.start()

    async def connect() -> Broker:
        client = LocalBrokerClient.from_url(f"local://127.0.0.1:{server.port}")
        await client.connect()
        return client

    # The built-in broker keeps the server's own limit (MemoryBroker's default).
    return Harness(LOCAL, connect, prefix, max_deliveries=MemoryBroker().max_deliveries, cleanup=server.stop)


MEMORY = BrokerBackend("memory", _memory, in_process=True, visibility_timeout=0.3, quiet_period=0.8)
RABBITMQ = BrokerBackend("rabbitmq", _rabbitmq, redelivers_on_close=True)
# Kafka hands a dead member's partitions over after session_timeout_ms (2 s here) and a rebalance;
# a closed consumer leaves its group at once (KafkaBroker sends LeaveGroup even in Tansu's
# generation 0), so its partitions move at the next join.
KAFKA = BrokerBackend(
    "kafka", _kafka, redelivers_on_close=True, counts_crash_redeliveries=False, redelivery_timeout=45.0
)
# SQS counts whole seconds; a 1 s long poll started after the ack covers the 1 s visibility timeout.
SQS = BrokerBackend("sqs", _sqs, ordered=False, visibility_timeout=1.0, quiet_period=1.0)
SQS_FIFO = BrokerBackend("sqs-fifo", _sqs_fifo, visibility_timeout=1.0, quiet_period=1.0)
LOCAL = BrokerBackend("local", _local, visibility_timeout=1.0, quiet_period=1.5)  # HTTP round trips


def _local_backends() -> list[BrokerBackend]:
    """The ``local`` slot: on once ``brokers/local.py`` exposes ``LocalBrokerClient``."""
    if importlib.util.find_spec("brokers.local") is None:
        return []
    import brokers.local

    return [LOCAL] if hasattr(brokers.local, "LocalBrokerClient") else []


BACKENDS: list[BrokerBackend] = [MEMORY, KAFKA, SQS, *_local_backends(), RABBITMQ]
"""What the whole contract runs against (RabbitMQ last: it boots while the others run)."""
ORDERED_BACKENDS = [b for b in BACKENDS if b.ordered] + [SQS_FIFO]
"""Order per key: SQS keeps it only in FIFO queues, so that variant runs the order test."""


@pytest.fixture(scope="session", autouse=True)
def _boot_servers_early(request: pytest.FixtureRequest) -> Iterator[None]:
    """Start the servers the selected tests name in the background (RabbitMQ takes seconds)."""
    needed = {name for name in ("rabbitmq", "kafka", "sqs") for item in request.session.items if name in item.nodeid}
    services.start_early(*sorted(needed))
    yield
    services.stop_unclaimed()


@pytest.fixture(params=BACKENDS, ids=lambda b: b.name)
def broker_backend(request: pytest.FixtureRequest) -> BrokerBackend:
    backend: BrokerBackend = request.param
    return backend


@pytest.fixture(params=ORDERED_BACKENDS, ids=lambda b: b.name)
def ordered_backend(request: pytest.FixtureRequest) -> BrokerBackend:
    backend: BrokerBackend = request.param
    return backend


@pytest.fixture(params=[b for b in BACKENDS if b.counts_crash_redeliveries], ids=lambda b: b.name)
def counting_backend(request: pytest.FixtureRequest) -> BrokerBackend:
    backend: BrokerBackend = request.param
    return backend


async def _harness(backend: BrokerBackend, request: pytest.FixtureRequest) -> AsyncIterator[Harness]:
    harness = await backend.start(request, f"t{uuid.uuid4().hex[:10]}")
    try:
        yield harness
    finally:
        await harness.close()


@pytest.fixture
async def harness(broker_backend: BrokerBackend, request: pytest.FixtureRequest) -> AsyncIterator[Harness]:
    async for h in _harness(broker_backend, request):
        yield h


@pytest.fixture
async def ordered_harness(ordered_backend: BrokerBackend, request: pytest.FixtureRequest) -> AsyncIterator[Harness]:
    async for h in _harness(ordered_backend, request):
        yield h


@pytest.fixture
async def counting_harness(counting_backend: BrokerBackend, request: pytest.FixtureRequest) -> AsyncIterator[Harness]:
    async for h in _harness(counting_backend, request):
        yield h


# The servers, under names that do not shadow the imported session fixtures.
@pytest.fixture
def rabbitmq(request: pytest.FixtureRequest) -> RabbitMQServer:
    server: RabbitMQServer = request.getfixturevalue("rabbitmq_server")
    return server


@pytest.fixture
def kafka(request: pytest.FixtureRequest) -> KafkaServer:
    server: KafkaServer = request.getfixturevalue("kafka_server")
    return server


@pytest.fixture
def sqs(request: pytest.FixtureRequest) -> SQSServer:
    server: SQSServer = request.getfixturevalue("sqs_server")
    return server


# helpers ---------------------------------------------------------------------------------------


async def receive_n(broker: Broker, queue: str, n: int, timeout: float, *, batch: int = 10) -> list[Delivery]:
    """Receive until ``n`` deliveries arrived or ``timeout`` passed (returns what arrived)."""
    out: list[Delivery] = []
    deadline = time.monotonic() + timeout
    while len(out) < n:
        remaining = deadline - time.monotonic()
        if remaining <= 0:
            break
        out += await broker.receive(queue, max_messages=min(batch, n - len(out)), wait=min(remaining, 2.0))
    return out


async def find_dead_letter(broker: Broker, message_id: str, timeout: float = 10.0) -> DeadLetter:
    deadline = time.monotonic() + timeout
    while True:
        found = [d for d in await broker.dead_letters(limit=100) if d.message_id == message_id]
        if found:
            assert len(found) == 1, found
            return found[0]
        assert time.monotonic() < deadline, f"message {message_id} never reached the dead-letter queue"
        await asyncio.sleep(0.2)


async def assert_empty(broker: Broker, queue: str, wait: float) -> None:
    extra = await broker.receive(queue, max_messages=10, wait=wait)
    assert extra == [], [(d.body, d.delivery_count) for d in extra]


# the contract ----------------------------------------------------------------------------------


async def test_publish_receive_ack_round_trip(harness: Harness) -> None:
    broker = await harness.open()
    queue = harness.queue()
    headers = {"key": "wf-1", "traceparent": "00-abc-01"}
    message_id = await broker.publish(queue, b'{"v":1,"n":1}', headers)
    assert message_id

    [delivery] = await receive_n(broker, queue, 1, timeout=15)
    assert delivery.queue == queue
    assert delivery.body == b'{"v":1,"n":1}'
    assert delivery.headers == headers
    assert delivery.message_id == message_id
    assert delivery.delivery_count == 1
    await broker.ack(delivery)
    # Acked is gone for good: not even a lapsed visibility timeout brings it back.
    await assert_empty(broker, queue, wait=harness.quiet_period)


async def test_unacked_message_is_redelivered(harness: Harness) -> None:
    publisher = await harness.open()
    queue = harness.queue()
    message_id = await publisher.publish(queue, b'{"n":"lost"}', {"key": "wf-1"})
    consumer = await harness.open()
    [first] = await receive_n(consumer, queue, 1, timeout=15)
    await harness.crash(consumer)  # neither acked nor nacked

    survivor = await harness.open()
    [again] = await receive_n(survivor, queue, 1, timeout=harness.backend.redelivery_timeout)
    assert again.message_id == message_id == first.message_id
    assert again.body == b'{"n":"lost"}'
    assert again.headers == {"key": "wf-1"}
    if harness.backend.counts_crash_redeliveries:
        assert again.delivery_count > first.delivery_count
    await survivor.ack(again)


async def test_nack_requeue_redelivers_with_higher_count(harness: Harness) -> None:
    broker = await harness.open()
    queue = harness.queue()
    message_id = await broker.publish(queue, b'{"n":2}', {"key": "wf-2"})
    [first] = await receive_n(broker, queue, 1, timeout=15)
    await broker.nack(first, requeue=True, reason="worker busy")

    [second] = await receive_n(broker, queue, 1, timeout=15)
    assert second.message_id == message_id
    assert second.body == b'{"n":2}'
    assert second.headers == {"key": "wf-2"}
    assert second.delivery_count == first.delivery_count + 1
    await broker.ack(second)
    await assert_empty(broker, queue, wait=harness.quiet_period)


async def test_nack_without_requeue_dead_letters_with_reason(harness: Harness) -> None:
    broker = await harness.open()
    queue = harness.queue()
    message_id = await broker.publish(queue, b'{"not":"a task"}', {"key": "wf-3"})
    others = [await broker.publish(queue, f'{{"other":{i}}}'.encode()) for i in range(2)]
    deliveries = await receive_n(broker, queue, 3, timeout=15)
    assert len(deliveries) == 3
    for delivery in deliveries:
        await broker.nack(delivery, requeue=False, reason=f"invalid_message: kind: field required ({delivery.message_id})")

    dead = await find_dead_letter(broker, message_id)
    assert dead.queue == queue
    assert dead.body == b'{"not":"a task"}'
    assert f"invalid_message: kind: field required ({message_id})" in dead.reason
    assert dead.headers.get("key") == "wf-3"
    await assert_empty(broker, queue, wait=harness.quiet_period)
    # Reading the dead letters leaves them there, ``limit`` at a time.
    assert await find_dead_letter(broker, message_id) == dead
    for other in others:
        await find_dead_letter(broker, other)
    limited = await broker.dead_letters(limit=2)
    assert len(limited) == 2 and {d.message_id for d in limited} <= {message_id, *others}


async def test_max_deliveries_then_dead_lettered(harness: Harness) -> None:
    broker = await harness.open()
    queue = harness.queue()
    message_id = await broker.publish(queue, b'{"poison":true}')
    for attempt in range(1, harness.max_deliveries + 1):
        [delivery] = await receive_n(broker, queue, 1, timeout=15)
        assert delivery.message_id == message_id
        assert delivery.delivery_count == attempt
        await broker.nack(delivery, requeue=True, reason=f"attempt {attempt} failed")

    dead = await find_dead_letter(broker, message_id)
    assert dead.queue == queue
    assert str(harness.max_deliveries) in dead.reason and "max_deliveries" in dead.reason
    assert f"attempt {harness.max_deliveries} failed" in dead.reason
    await assert_empty(broker, queue, wait=harness.quiet_period)


async def test_consumers_that_keep_dying_dead_letter_the_message(counting_harness: Harness) -> None:
    """The broker itself enforces the limit when no consumer lives to nack (not Kafka: see brokers.kafka)."""
    harness = counting_harness
    publisher = await harness.open()
    queue = harness.queue()
    message_id = await publisher.publish(queue, b'{"crashes":"the worker"}')
    for attempt in range(1, harness.max_deliveries + 1):
        consumer = await harness.open()
        [delivery] = await receive_n(consumer, queue, 1, timeout=harness.backend.redelivery_timeout)
        assert (delivery.message_id, delivery.delivery_count) == (message_id, attempt)
        await harness.crash(consumer)

    consumer = await harness.open()
    # The next receive finds nothing: the message went to the dead-letter queue.
    await assert_empty(consumer, queue, wait=harness.visibility_timeout + harness.quiet_period)
    dead = await find_dead_letter(consumer, message_id)
    assert dead.queue == queue
    assert "max_deliveries" in dead.reason


async def test_publish_is_confirmed_before_it_returns(harness: Harness) -> None:
    publisher = await harness.open()
    queue = harness.queue()
    ids = [await publisher.publish(queue, f'{{"n":{i}}}'.encode()) for i in range(3)]
    assert len(set(ids)) == 3 and all(ids)
    await harness.disconnect(publisher)  # closing right after the confirm loses nothing

    consumer = await harness.open()
    deliveries = await receive_n(consumer, queue, 3, timeout=15)
    assert sorted(d.message_id for d in deliveries) == sorted(ids)
    for d in deliveries:
        await consumer.ack(d)


async def test_order_is_kept_per_key(ordered_harness: Harness) -> None:
    broker = await ordered_harness.open()
    queue = ordered_harness.queue()
    published: dict[str, list[bytes]] = {"wf-a": [], "wf-b": [], "wf-c": []}
    for i in range(8):
        for key, bodies in published.items():
            body = f'{{"key":"{key}","seq":{i}}}'.encode()
            await broker.publish(queue, body, {"key": key})
            bodies.append(body)

    received: dict[str, list[bytes]] = {key: [] for key in published}
    deadline = time.monotonic() + 30
    while sum(map(len, received.values())) < 24 and time.monotonic() < deadline:
        for delivery in await broker.receive(queue, max_messages=10, wait=2.0):
            received[delivery.headers["key"]].append(delivery.body)
            await broker.ack(delivery)
    assert received == published


async def test_declare_is_idempotent_and_an_empty_receive_returns_after_waiting(harness: Harness) -> None:
    broker = await harness.open()
    queue = harness.queue()
    await broker.declare_queue(queue)
    await broker.declare_queue(queue)
    other = await harness.open()
    await other.declare_queue(queue)

    started = time.monotonic()
    assert await asyncio.wait_for(broker.receive(queue, max_messages=5, wait=0.5), timeout=20) == []
    assert time.monotonic() - started < 15  # it returned; the exact time is the broker's business

    await other.publish(queue, b"{}")
    [delivery] = await receive_n(broker, queue, 1, timeout=15)
    await broker.ack(delivery)


async def test_many_messages_are_each_delivered_once(harness: Harness) -> None:
    broker = await harness.open()
    queue = harness.queue()
    count = 200
    gate = asyncio.Semaphore(20)

    async def publish(i: int) -> str:
        async with gate:
            return await broker.publish(queue, f'{{"n":{i}}}'.encode(), {"key": f"wf-{i % 7}"})

    ids = await asyncio.gather(*(publish(i) for i in range(count)))
    assert len(set(ids)) == count

    seen: list[bytes] = []
    deadline = time.monotonic() + 60
    while len(seen) < count and time.monotonic() < deadline:
        # Batches small enough to be acked well within the 1 s visibility timeouts used here.
        batch = await broker.receive(queue, max_messages=10, wait=2.0)
        seen += [d.body for d in batch]
        await asyncio.gather(*(broker.ack(d) for d in batch))
    assert sorted(seen) == sorted(f'{{"n":{i}}}'.encode() for i in range(count))
    await assert_empty(broker, queue, wait=harness.quiet_period)


# sticky queues: a worker's own queue, which falls back to the normal one when the worker goes away

STICKY_TIMEOUT = 1.5
"""The sticky schedule-to-start timeout the tests use (seconds)."""


async def _sticky(harness: Harness) -> tuple[Broker, Broker, str, str]:
    """(publisher, worker, normal queue, the worker's sticky queue), declared."""
    publisher, worker = await harness.open(), await harness.open()
    normal = queue_name(harness.prefix, "default", "wfq", "wf")
    sticky = f"{harness.prefix}.default.sticky.w{uuid.uuid4().hex[:8]}"
    await publisher.declare_queue(normal)
    await worker.declare_sticky_queue(sticky, fallback=normal, timeout=STICKY_TIMEOUT)
    if worker.sticky_routing:
        assert await worker.receive(sticky, max_messages=1, wait=0.0) == []  # the worker is there
    return publisher, worker, normal, sticky


async def test_sticky_queue_delivers_to_its_live_worker(harness: Harness) -> None:
    publisher, worker, normal, sticky = await _sticky(harness)
    message_id = await publisher.publish_sticky(sticky, normal, b'{"n":"live"}', {"key": "wf-1"})
    if not worker.sticky_routing:  # no sticky routing: straight to the normal queue
        [d] = await receive_n(publisher, normal, 1, timeout=harness.backend.redelivery_timeout)
        assert (d.body, d.message_id) == (b'{"n":"live"}', message_id)
        await publisher.ack(d)
        return
    [d] = await receive_n(worker, sticky, 1, timeout=5)
    assert (d.body, d.headers, d.message_id) == (b'{"n":"live"}', {"key": "wf-1"}, message_id)
    await worker.ack(d)
    assert await publisher.receive(normal, max_messages=1, wait=0.2) == []


@pytest.mark.parametrize("how", ["dies", "closes"])
async def test_sticky_tasks_fall_back_to_the_normal_queue_when_the_worker_goes_away(harness: Harness, how: str) -> None:
    """Nothing sent to a worker's sticky queue is lost when the worker goes away: what it
    held unacked, what waited for it, and what is sent after it left reach the normal
    queue within about the sticky timeout."""
    publisher, worker, normal, sticky = await _sticky(harness)
    await publisher.publish_sticky(sticky, normal, b"held")
    if worker.sticky_routing:
        [held] = await receive_n(worker, sticky, 1, timeout=5)  # received, never settled
        assert held.body == b"held"
    await publisher.publish_sticky(sticky, normal, b"waiting")
    gone = time.monotonic()
    if how == "dies":
        await harness.crash(worker)  # in process or over HTTP: it simply stops receiving
    else:
        await worker.delete_sticky_queue(sticky)
        await harness.disconnect(worker)
    await publisher.publish_sticky(sticky, normal, b"after")

    got = await receive_n(publisher, normal, 3, timeout=STICKY_TIMEOUT + harness.backend.redelivery_timeout)
    elapsed = time.monotonic() - gone
    assert sorted(d.body for d in got) == [b"after", b"held", b"waiting"]
    if worker.sticky_routing:
        assert elapsed < STICKY_TIMEOUT + 3.0, f"fell back after {elapsed:.1f}s"
    await asyncio.gather(*(publisher.ack(d) for d in got))
    await assert_empty(publisher, normal, wait=harness.quiet_period)


# RabbitMQ --------------------------------------------------------------------------------------


def _rabbit_url(server: RabbitMQServer, prefix: str, **options: Any) -> str:
    query = "&".join(f"{k}={v}" for k, v in {"prefix": prefix, "reconnect_interval": 0.5, **options}.items())
    return f"{server.url}?{query}"


async def test_rabbitmq_wrong_credentials_say_authentication_failed(rabbitmq: RabbitMQServer) -> None:
    with pytest.raises(BrokerError) as err:
        await open_broker(f"amqp://guest:wrong-secret@127.0.0.1:{rabbitmq.port}/")
    text = str(err.value)
    assert f"authentication failed for amqp://guest@127.0.0.1:{rabbitmq.port}/" in text
    assert "wrong-secret" not in text


async def test_rabbitmq_down_names_the_url() -> None:
    from tests.services import free_port

    port = free_port()
    with pytest.raises(BrokerError) as err:
        await open_broker(f"amqp://guest:guest@127.0.0.1:{port}/?connect_timeout=5")
    assert f"amqp://guest@127.0.0.1:{port}/" in str(err.value)
    assert "cannot connect" in str(err.value)


async def test_rabbitmq_queue_with_other_arguments_is_explained(rabbitmq: RabbitMQServer) -> None:
    prefix = f"t{uuid.uuid4().hex[:10]}"
    queue = queue_name(prefix, "default", "q", "act")
    first = await open_broker(_rabbit_url(rabbitmq, prefix, max_deliveries=3))
    other_limit = await open_broker(_rabbit_url(rabbitmq, prefix, max_deliveries=5))
    other_type = await open_broker(_rabbit_url(rabbitmq, prefix, queue_type="classic"))
    try:
        await first.declare_queue(queue)
        with pytest.raises(BrokerError) as err:
            await other_limit.declare_queue(queue)
        text = str(err.value)
        assert "x-delivery-limit" in text and "max_deliveries=" in text and queue in text
        with pytest.raises(BrokerError) as err:
            await other_type.declare_queue(queue)  # its dead-letter queue already clashes
        assert "x-queue-type" in str(err.value) and "queue_type=" in str(err.value)
        # A failed declaration does not break the client that made it.
        await other_limit.publish(queue_name(prefix, "default", "other", "act"), b"{}")
    finally:
        for broker in (first, other_limit, other_type):
            await broker.aclose()


async def test_rabbitmq_classic_queues_count_requeues(rabbitmq: RabbitMQServer) -> None:
    prefix = f"t{uuid.uuid4().hex[:10]}"
    queue = queue_name(prefix, "default", "q", "act")
    broker = await open_broker(_rabbit_url(rabbitmq, prefix, queue_type="classic", max_deliveries=2))
    try:
        message_id = await broker.publish(queue, b"{}", {"key": "wf"})
        [first] = await receive_n(broker, queue, 1, timeout=10)
        await broker.nack(first, requeue=True, reason="retry")
        [second] = await receive_n(broker, queue, 1, timeout=10)
        assert (second.message_id, second.delivery_count, second.headers) == (message_id, 2, {"key": "wf"})
        await broker.nack(second, requeue=True, reason="again")
        dead = await find_dead_letter(broker, message_id)
        assert "max_deliveries (2)" in dead.reason
    finally:
        await broker.aclose()


async def test_rabbitmq_node_restart(rabbitmq: RabbitMQServer) -> None:
    """A real node stop and start: the robust connection comes back, and so does the unacked message."""
    prefix = f"t{uuid.uuid4().hex[:10]}"
    queue = queue_name(prefix, "default", "q", "act")
    broker = await open_broker(_rabbit_url(rabbitmq, prefix))
    try:
        message_id = await broker.publish(queue, b'{"before":"restart"}')
        [unacked] = await receive_n(broker, queue, 1, timeout=10)
        waiting = asyncio.create_task(receive_n(broker, queue, 1, timeout=120))
        await asyncio.sleep(0)  # yield once: the consumer is parked in receive() when the node goes down

        await asyncio.to_thread(rabbitmq.stop)
        assert not waiting.done()
        await asyncio.to_thread(rabbitmq.start)

        [again] = await waiting
        assert again.message_id == message_id and again.body == b'{"before":"restart"}'
        await broker.ack(unacked)  # its channel died with the node: a no-op, not an error
        await broker.ack(again)

        after = await _publish_when_reconnected(broker, queue, b'{"after":"restart"}')
        [delivery] = await receive_n(broker, queue, 1, timeout=30)
        assert delivery.message_id == after
        await broker.ack(delivery)
        await assert_empty(broker, queue, wait=0.5)
    finally:
        await broker.aclose()


async def _publish_when_reconnected(broker: Broker, queue: str, body: bytes, timeout: float = 60) -> str:
    """The outbox's retry loop in small: publish fails while the connection is being restored."""
    deadline = time.monotonic() + timeout
    while True:
        try:
            return await broker.publish(queue, body)
        except BrokerError:
            if time.monotonic() > deadline:
                raise
            await asyncio.sleep(0.2)


# Kafka -----------------------------------------------------------------------------------------


def test_kafka_topic_names_are_sanitised() -> None:
    from brokers.kafka import topic_name

    assert topic_name("sagas.default.trips.act") == "sagas.default.trips.act"
    assert topic_name("sagas.ns/with space.q:1") == "sagas.ns_with_space.q_1"
    long = topic_name("q" * 300)
    assert len(long) <= 249 and long != topic_name("q" * 301)


async def test_kafka_failing_message_does_not_block_its_partition(kafka: KafkaServer) -> None:
    prefix = f"t{uuid.uuid4().hex[:10]}"
    queue = queue_name(prefix, "default", "q", "act")
    url = (
        f"kafka://{kafka.bootstrap}?prefix={prefix}&session_timeout_ms=2000&heartbeat_interval_ms=100"
        "&fetch_max_wait_ms=100"
    )
    broker = await open_broker(url)
    try:
        first = await broker.publish(queue, b'{"n":1}', {"key": "wf"})
        second = await broker.publish(queue, b'{"n":2}', {"key": "wf"})
        [d1] = await receive_n(broker, queue, 1, timeout=20, batch=1)
        assert d1.message_id == first
        await broker.nack(d1, requeue=True, reason="retry later")  # re-published behind the second
        deliveries = await receive_n(broker, queue, 2, timeout=20)
        assert [(d.message_id, d.delivery_count) for d in deliveries] == [(second, 1), (first, 2)]
        for d in deliveries:
            await broker.ack(d)
    finally:
        await broker.aclose()


def _kafka_url(kafka: KafkaServer, prefix: str, group: str = "sagas") -> str:
    # Tansu answers a JoinGroup after half the session timeout (3 s here): long enough to tell a
    # receive that waits for the join, or two joins one after the other, from one join.
    return (
        f"kafka://{kafka.bootstrap}?prefix={prefix}&group={group}"
        "&session_timeout_ms=6000&heartbeat_interval_ms=100&fetch_max_wait_ms=100"
    )


def _key_per_partition(partitions: int) -> list[str]:
    """One record key for each partition (the producer's default partitioner: murmur2 of the key)."""
    from aiokafka.partitioner import murmur2

    keys: dict[int, str] = {}
    n = 0
    while len(keys) < partitions:
        key = f"wf-{n}"
        keys.setdefault((murmur2(key.encode()) & 0x7FFFFFFF) % partitions, key)
        n += 1
    return [keys[p] for p in range(partitions)]


async def test_kafka_receive_keeps_to_its_wait_while_the_consumer_joins_its_group(kafka: KafkaServer) -> None:
    """A first receive returns after ``wait`` even though the group join takes longer, and one
    queue's join does not hold up another's: a worker polls its workflow and activity queues at
    once, so an activity task must not wait for the workflow queue's join (a 500 ms deadline did)."""
    prefix = f"t{uuid.uuid4().hex[:10]}"
    first, second = (queue_name(prefix, "default", "q", kind) for kind in ("wf", "act"))
    broker = await open_broker(_kafka_url(kafka, prefix))
    try:
        await broker.publish(first, b'{"n":1}')
        await broker.publish(second, b'{"n":2}')
        started = time.monotonic()
        early = [await broker.receive(q, max_messages=1, wait=0.2) for q in (first, second)]
        assert time.monotonic() - started < 2.0  # each join alone takes 3 s here
        pairs = list(zip((first, second), early, strict=True))
        both = await asyncio.gather(*(receive_n(broker, q, 1 - len(got), timeout=20) for q, got in pairs))
        assert time.monotonic() - started < 5.0  # the joins ran at the same time (one after the other: 6 s)
        got = [e + b for e, b in zip(early, both, strict=True)]
        assert [[d.body for d in g] for g in got] == [[b'{"n":1}'], [b'{"n":2}']]
        for g in got:
            await broker.ack(g[0])
    finally:
        await broker.aclose()


async def test_kafka_closed_consumer_leaves_its_group_at_once(kafka: KafkaServer) -> None:
    """A consumer that closes leaves its group, so the next one gets every partition at its join
    instead of after the session timeout (a restarted worker answered its first query 10 s late).
    Tansu numbers a group's first generation 0, for which aiokafka itself sends no LeaveGroup."""
    prefix = f"t{uuid.uuid4().hex[:10]}"
    queue = queue_name(prefix, "default", "q", "wf")
    url = _kafka_url(kafka, prefix)
    first = await open_broker(url)
    try:
        await first.publish(queue, b'{"n":0}')
        [d] = await receive_n(first, queue, 1, timeout=20)
        await first.ack(d)
    finally:
        await first.aclose()

    second = await open_broker(url)
    try:
        keys = _key_per_partition(3)  # the topic's partitions (the broker's default)
        for key in keys:
            await second.publish(queue, key.encode(), {"key": key})
        started = time.monotonic()
        got = await receive_n(second, queue, len(keys), timeout=30)
        assert sorted(d.body for d in got) == sorted(k.encode() for k in keys)
        # One join (3 s); a member that stayed would keep some partitions until its session
        # timeout (6 s) and a rebalance.
        assert time.monotonic() - started < 5.5
        for d in got:
            await second.ack(d)
    finally:
        await second.aclose()


async def test_kafka_unreachable_names_the_url() -> None:
    from tests.services import free_port

    port = free_port()
    with pytest.raises(BrokerError) as err:
        await open_broker(f"kafka://127.0.0.1:{port}")
    assert f"kafka://127.0.0.1:{port}" in str(err.value)


# SQS -------------------------------------------------------------------------------------------


def test_sqs_queue_names_are_sanitised() -> None:
    from brokers.sqs import sqs_queue_name

    assert sqs_queue_name("sagas.default.trips.act") == "sagas-default-trips-act"
    assert sqs_queue_name("sagas.default.trips.act", fifo=True) == "sagas-default-trips-act.fifo"
    assert sqs_queue_name("a b/c") == "a_b_c"
    assert len(sqs_queue_name("q" * 200, fifo=True)) == 80


async def test_sqs_extend_visibility_keeps_a_long_task_hidden(sqs: SQSServer) -> None:
    from brokers.sqs import SQSBroker

    prefix = f"t{uuid.uuid4().hex[:10]}"
    queue = queue_name(prefix, "default", "q", "act")
    broker = await open_broker(_sqs_url(sqs, prefix, fifo=False))
    assert isinstance(broker, SQSBroker)
    try:
        await broker.publish(queue, b"{}")
        [delivery] = await receive_n(broker, queue, 1, timeout=10)
        await broker.extend_visibility(delivery, 30)
        await assert_empty(broker, queue, wait=2.5)  # past the queue's 1 s visibility timeout
        await broker.nack(delivery, requeue=True)
        [again] = await receive_n(broker, queue, 1, timeout=10)
        assert again.delivery_count == 2
        await broker.ack(again)
    finally:
        await broker.aclose()


async def test_sqs_binary_and_empty_bodies_round_trip(sqs: SQSServer) -> None:
    prefix = f"t{uuid.uuid4().hex[:10]}"
    queue = queue_name(prefix, "default", "q", "act")
    broker = await open_broker(_sqs_url(sqs, prefix, fifo=False))
    try:
        bodies = {b"\x00\xff\xfe binary", b""}
        for body in bodies:
            await broker.publish(queue, body)
        deliveries = await receive_n(broker, queue, 2, timeout=10)
        assert {d.body for d in deliveries} == bodies
        for d in deliveries:
            await broker.ack(d)
    finally:
        await broker.aclose()


async def test_sqs_unreachable_endpoint_names_it() -> None:
    from tests.services import free_port

    port = free_port()
    with pytest.raises(BrokerError) as err:
        await open_broker(f"sqs://127.0.0.1:{port}?endpoint_url=http://127.0.0.1:{port}&max_attempts=1")
    assert f"http://127.0.0.1:{port}" in str(err.value)
