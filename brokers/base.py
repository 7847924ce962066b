"""The broker contract (DESIGN §4): one interface, every backend.

Semantics every broker gives:

* at-least-once delivery: a message received and not acked is delivered again
  (after ``visibility_timeout`` or when the consumer's connection is lost);
* explicit :meth:`Broker.ack` / :meth:`Broker.nack`; ``nack(requeue=False)``
  and the ``max_deliveries``-th failed delivery move the message to the
  dead-letter queue with the reason attached;
* :meth:`Broker.publish` returns only after the broker confirmed the message
  (``durable`` brokers) -- the caller may then delete its outbox row.

Choose a backend by URL with :func:`open_broker`::

    broker = await open_broker("memory://")
    await broker.publish("sagas.default.trips.act", b'{"v":1}')
    [d] = await broker.receive("sagas.default.trips.act", max_messages=1, wait=1.0)
    await broker.ack(d)
"""

from __future__ import annotations

import abc
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import parse_qs, urlparse


class BrokerError(Exception):
    """A broker could not be reached or refused an operation."""


@dataclass
class Delivery:
    """One delivery of a message; pass it back to ``ack``/``nack``."""

    queue: str
    body: bytes
    headers: dict[str, str] = field(default_factory=dict)
    message_id: str = ""
    delivery_count: int = 1
    receipt: Any = None


@dataclass
class DeadLetter:
    """A message in the dead-letter queue with why it is there."""

    queue: str
    body: bytes
    reason: str
    headers: dict[str, str] = field(default_factory=dict)
    message_id: str = ""


def queue_name(prefix: str, namespace: str, task_queue: str, kind: str) -> str:
    """Broker queue name for a task queue: ``{prefix}.{namespace}.{task_queue}.{kind}``."""
    return f"{prefix}.{namespace}.{task_queue}.{kind}"


class Broker(abc.ABC):
    """Abstract message broker. Implementations are async context managers."""

    durable: bool = True
    """True when a confirmed publish survives a broker crash. When False (memory,
    built-in), the publisher keeps its outbox row until the message is acked."""

    max_deliveries: int = 5
    visibility_timeout: float = 30.0

    receive_cancellable: bool = False
    """True when cancelling a pending :meth:`receive` leases nothing (what it had taken comes back
    at once), so a stopping worker need not wait for its long polls to return."""

    async def __aenter__(self) -> Broker:
        await self.connect()
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.aclose()

    async def connect(self) -> None:  # noqa: B027 - optional hook
        """Open connections and check the broker is reachable."""

    @abc.abstractmethod
    async def aclose(self) -> None:
        """Close connections; unacked messages become deliverable again."""

    @abc.abstractmethod
    async def declare_queue(self, queue: str) -> None:
        """Create ``queue`` (and its dead-letter routing) if it does not exist."""

    @abc.abstractmethod
    async def publish(self, queue: str, body: bytes, headers: dict[str, str] | None = None) -> str:
        """Publish and wait for the broker's confirmation; returns a message id."""

    @abc.abstractmethod
    async def receive(
        self, queue: str, max_messages: int = 1, wait: float = 0.0
    ) -> list[Delivery]:
        """Take up to ``max_messages``, waiting up to ``wait`` seconds for the first."""

    @abc.abstractmethod
    async def ack(self, delivery: Delivery) -> None:
        """The message was handled; it is gone for good."""

    @abc.abstractmethod
    async def nack(self, delivery: Delivery, *, requeue: bool = True, reason: str = "") -> None:
        """Give the message back (``requeue``) or dead-letter it with ``reason``."""

    @abc.abstractmethod
    async def dead_letters(self, limit: int = 100) -> list[DeadLetter]:
        """Read (without removing) what is in the dead-letter queue."""

    # -- sticky queues -----------------------------------------------------
    #
    # A worker's sticky queue (``{prefix}.{ns}.sticky.{worker}``) receives the
    # workflow tasks of the runs it holds in its cache. It only lives as long as
    # its worker: nothing sent to it may be lost when the worker goes away.
    # Every broker guarantees that a message given to ``publish_sticky`` is
    # received from the sticky queue by its worker, or else reaches ``fallback``
    # (the task queue's normal ``.wf`` queue) at most about ``timeout`` seconds
    # after it was published or after the worker went away (Temporal's sticky
    # schedule-to-start timeout). Brokers without sticky routing
    # (``sticky_routing = False``) send it to ``fallback`` at once.

    sticky_routing: bool = False
    """True when ``publish_sticky`` can route to a worker's own queue; False: it
    always publishes to the fallback queue and workers need not poll a sticky queue."""

    async def declare_sticky_queue(self, queue: str, *, fallback: str, timeout: float) -> None:  # noqa: B027
        """Create this worker's sticky ``queue``: a message not received within
        ``timeout`` seconds, and everything it holds once its worker stopped
        receiving (closed, crashed) for ``timeout``, moves to ``fallback``; then
        the queue is deleted. A no-op without sticky routing."""

    async def delete_sticky_queue(self, queue: str) -> None:  # noqa: B027
        """The worker is leaving: hand what ``queue`` holds to its fallback now (best effort;
        the timeout does it otherwise). A no-op without sticky routing."""

    async def publish_sticky(
        self, queue: str, fallback: str, body: bytes, headers: dict[str, str] | None = None
    ) -> str:
        """Publish to the sticky ``queue`` while its worker is there, else to ``fallback``."""
        return await self.publish(fallback, body, headers)


def parse_broker_url(url: str) -> tuple[str, str, dict[str, str]]:
    """Split a broker URL into (scheme, netloc+path, options from the query string)."""
    parsed = urlparse(url)
    options = {k: v[-1] for k, v in parse_qs(parsed.query).items()}
    return parsed.scheme, parsed.netloc + parsed.path, options


async def open_broker(url: str) -> Broker:
    """Open a broker by URL and connect it.

    ``memory://`` (in-process), ``local://host:port`` (the dev server's built-in
    broker, reached over HTTP), ``amqp://``, ``kafka://``, ``sqs://``.
    """
    scheme, _, _ = parse_broker_url(url)
    broker: Broker
    if scheme == "memory":
        from brokers.memory import MemoryBroker

        broker = MemoryBroker.from_url(url)
    elif scheme == "local":
        from brokers.local import LocalBrokerClient

        broker = LocalBrokerClient.from_url(url)
    elif scheme in ("amqp", "amqps"):
        from brokers.rabbitmq import RabbitMQBroker

        broker = RabbitMQBroker.from_url(url)
    elif scheme == "kafka":
        from brokers.kafka import KafkaBroker

        broker = KafkaBroker.from_url(url)
    elif scheme == "sqs":
        from brokers.sqs import SQSBroker

        broker = SQSBroker.from_url(url)
    else:
        raise BrokerError(
            f"unknown broker URL scheme {scheme!r} in {url!r}; use memory://, local://host:port, "
            "amqp://, kafka:// or sqs://"
        )
    await broker.connect()
    return broker
