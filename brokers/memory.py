"""In-process broker: ``memory://`` for tests, and the queues behind the built-in ``local://`` broker.

Messages live in this process only (``durable = False``): the orchestrator
keeps each task's outbox row until the task is done, so after a restart it
publishes again whatever was still pending. Receivers get a *lease*: a message
not acked within ``visibility_timeout`` becomes visible again, and after
``max_deliveries`` deliveries it goes to the dead-letter list.

    broker = MemoryBroker(visibility_timeout=5)
    await broker.publish("q", b"{}")
    [d] = await broker.receive("q", wait=1)
    await broker.ack(d)
"""

from __future__ import annotations

import asyncio
import itertools
import time
import uuid
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass, field

from brokers.base import Broker, BrokerError, DeadLetter, Delivery, parse_broker_url


@dataclass
class _Message:
    message_id: str
    body: bytes
    headers: dict[str, str]
    delivery_count: int = 0


@dataclass
class _Queue:
    ready: deque[_Message] = field(default_factory=deque)
    leased: dict[str, tuple[_Message, float]] = field(default_factory=dict)
    wakeup: asyncio.Event = field(default_factory=asyncio.Event)


class MemoryBroker(Broker):
    """A broker in this process's memory (see module docstring)."""

    durable = False

    def __init__(self, *, visibility_timeout: float = 30.0, max_deliveries: int = 5, max_dead_letters: int = 10_000) -> None:
        self.visibility_timeout = visibility_timeout
        self.max_deliveries = max_deliveries
        self._queues: dict[str, _Queue] = {}
        self._dead: deque[DeadLetter] = deque(maxlen=max_dead_letters)
        self._receipts = itertools.count(1)
        self._closed = False
        self.on_dead_letter: Callable[[str], None] | None = None
        """Called with the queue name whenever a message is dead-lettered (the server counts them)."""

    @classmethod
    def from_url(cls, url: str) -> MemoryBroker:
        _, _, options = parse_broker_url(url)
        return cls(
            visibility_timeout=float(options.get("visibility_timeout", 30.0)),
            max_deliveries=int(options.get("max_deliveries", 5)),
        )

    async def aclose(self) -> None:
        self._closed = True
        for q in self._queues.values():
            q.wakeup.set()

    def _queue(self, name: str) -> _Queue:
        q = self._queues.get(name)
        if q is None:
            q = self._queues[name] = _Queue()
        return q

    async def declare_queue(self, queue: str) -> None:
        self._queue(queue)

    async def publish(self, queue: str, body: bytes, headers: dict[str, str] | None = None) -> str:
        if self._closed:
            raise BrokerError("broker is closed")
        msg = _Message(uuid.uuid4().hex, body, dict(headers or {}))
        q = self._queue(queue)
        q.ready.append(msg)
        q.wakeup.set()
        return msg.message_id

    def _expire_leases(self, name: str, q: _Queue) -> None:
        now = time.monotonic()
        expired = [r for r, (_, deadline) in q.leased.items() if deadline <= now]
        for receipt in expired:
            msg, _ = q.leased.pop(receipt)
            self._requeue(name, q, msg, "visibility_timeout")

    def _dead_letter(self, letter: DeadLetter) -> None:
        self._dead.append(letter)
        if self.on_dead_letter is not None:
            self.on_dead_letter(letter.queue)

    def _requeue(self, name: str, q: _Queue, msg: _Message, reason: str) -> None:
        if msg.delivery_count >= self.max_deliveries:
            self._dead_letter(
                DeadLetter(name, msg.body, f"max_deliveries ({self.max_deliveries}) reached; last: {reason}", msg.headers, msg.message_id)
            )
            return
        q.ready.appendleft(msg)
        q.wakeup.set()

    async def receive(self, queue: str, max_messages: int = 1, wait: float = 0.0) -> list[Delivery]:
        q = self._queue(queue)
        deadline = time.monotonic() + wait
        while True:
            self._expire_leases(queue, q)
            if q.ready or self._closed:
                break
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                return []
            q.wakeup.clear()
            next_expiry = min((d for _, d in q.leased.values()), default=None)
            timeout = remaining if next_expiry is None else max(0.0, min(remaining, next_expiry - time.monotonic()))
            try:
                await asyncio.wait_for(q.wakeup.wait(), timeout)
            except TimeoutError:
                pass
        out: list[Delivery] = []
        lease_until = time.monotonic() + self.visibility_timeout
        while q.ready and len(out) < max_messages:
            msg = q.ready.popleft()
            msg.delivery_count += 1
            receipt = f"{next(self._receipts)}"
            q.leased[receipt] = (msg, lease_until)
            out.append(Delivery(queue, msg.body, dict(msg.headers), msg.message_id, msg.delivery_count, receipt))
        return out

    def _settle(self, delivery: Delivery) -> _Message | None:
        q = self._queue(delivery.queue)
        entry = q.leased.pop(str(delivery.receipt), None)
        return entry[0] if entry else None

    async def ack(self, delivery: Delivery) -> None:
        self._settle(delivery)

    async def nack(self, delivery: Delivery, *, requeue: bool = True, reason: str = "") -> None:
        msg = self._settle(delivery)
        if msg is None:
            return
        if requeue:
            self._requeue(delivery.queue, self._queue(delivery.queue), msg, reason or "nack")
        else:
            self._dead_letter(DeadLetter(delivery.queue, msg.body, reason or "rejected", msg.headers, msg.message_id))

    async def dead_letters(self, limit: int = 100) -> list[DeadLetter]:
        return list(self._dead)[-limit:]

    def busy(self) -> bool:
        """True while any message is waiting or leased (used by time skipping)."""
        return any(q.ready or q.leased for q in self._queues.values())

    def queue_names(self) -> list[str]:
        return list(self._queues)

    def depth(self, queue: str) -> int:
        q = self._queues.get(queue)
        return len(q.ready) if q else 0
