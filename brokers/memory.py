"""In-process broker: ``memory://`` for tests, and the queues behind the built-in ``local://`` broker.

Messages live in this process only (``durable = False``): the orchestrator
keeps each task's outbox row until the task is done, so after a restart it
publishes again whatever was still pending. Receivers get a *lease*: a message
not acked within ``visibility_timeout`` becomes visible again, and after
``max_deliveries`` deliveries it goes to the dead-letter list.

Sticky queues (:meth:`MemoryBroker.declare_sticky_queue`): the queue is alive
while its worker receives from it (each receive renews it for ``timeout``
seconds past the end of the long poll). A message that waited ``timeout``
unreceived, and, once the worker stopped receiving for ``timeout``, everything
the queue holds (leased messages too) move to the fallback queue and the queue
is deleted; ``publish_sticky`` to a deleted queue publishes to the fallback. A
background sweep checks every quarter of the shortest timeout (at most 0.25 s).

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
    enqueued: float = 0.0


@dataclass
class _Queue:
    ready: deque[_Message] = field(default_factory=deque)
    leased: dict[str, tuple[_Message, float]] = field(default_factory=dict)
    wakeup: asyncio.Event = field(default_factory=asyncio.Event)


@dataclass
class _Sticky:
    fallback: str
    timeout: float
    alive_until: float
    polls: int = 0


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
        self._sticky: dict[str, _Sticky] = {}
        self._sticky_sweeper: asyncio.Task[None] | None = None
        self.on_dead_letter: Callable[[str], None] | None = None
        """Called with the queue name whenever a message is dead-lettered (the server counts them)."""

    @classmethod
    def from_url(cls, url: str) -> MemoryBroker:
        _, _, options = parse_broker_url(url)
        return cls(
            visibility_timeout=float(options.get("visibility_timeout", 30.0)),
            max_deliveries=int(options.get("max_deliveries", 5)),
        )

    sticky_routing = True

    async def aclose(self) -> None:
        self._closed = True
        if self._sticky_sweeper is not None:
            self._sticky_sweeper.cancel()
            self._sticky_sweeper = None
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
        sticky = self._sticky.get(queue)
        if sticky is not None:
            sticky.polls += 1
            sticky.alive_until = max(sticky.alive_until, time.monotonic() + wait + sticky.timeout)
            try:
                return await self._receive(queue, max_messages, wait)
            finally:
                sticky.polls -= 1
                sticky.alive_until = time.monotonic() + sticky.timeout
        return await self._receive(queue, max_messages, wait)

    async def _receive(self, queue: str, max_messages: int, wait: float) -> list[Delivery]:
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

    # -- sticky queues -------------------------------------------------------

    async def declare_sticky_queue(self, queue: str, *, fallback: str, timeout: float) -> None:
        if timeout <= 0:
            raise BrokerError(f"sticky queue {queue!r}: timeout must be positive, got {timeout}")
        self._queue(queue)
        self._queue(fallback)
        now = time.monotonic()
        current = self._sticky.get(queue)
        if current is None:
            self._sticky[queue] = _Sticky(fallback, timeout, now + timeout)
        else:
            current.fallback, current.timeout = fallback, timeout
            current.alive_until = max(current.alive_until, now + timeout)
        if self._sticky_sweeper is None or self._sticky_sweeper.done():
            self._sticky_sweeper = asyncio.create_task(self._sweep_sticky(), name="memory-broker-sticky")

    async def delete_sticky_queue(self, queue: str) -> None:
        sticky = self._sticky.pop(queue, None)
        if sticky is not None:
            self._move_all(queue, sticky.fallback)

    async def publish_sticky(self, queue: str, fallback: str, body: bytes, headers: dict[str, str] | None = None) -> str:
        sticky = self._sticky.get(queue)
        if sticky is None or sticky.alive_until <= time.monotonic():
            return await self.publish(fallback, body, headers)
        if self._closed:
            raise BrokerError("broker is closed")
        msg = _Message(uuid.uuid4().hex, body, dict(headers or {}), enqueued=time.monotonic())
        q = self._queue(queue)
        q.ready.append(msg)
        q.wakeup.set()
        return msg.message_id

    def _move_all(self, queue: str, fallback: str) -> None:
        """The worker is gone: its queue's waiting and leased messages go to ``fallback``."""
        q = self._queues.pop(queue, None)
        if q is None:
            return
        target = self._queue(fallback)
        target.ready.extend(q.ready)
        target.ready.extend(msg for msg, _ in q.leased.values())
        target.wakeup.set()
        q.wakeup.set()  # a receive still waiting on it returns (empty)

    def sweep_sticky(self) -> None:
        """Move what waited too long, and the queues of workers that went away (see module docstring)."""
        now = time.monotonic()
        for name, sticky in list(self._sticky.items()):
            if sticky.polls == 0 and sticky.alive_until <= now:
                del self._sticky[name]
                self._move_all(name, sticky.fallback)
                continue
            q = self._queues.get(name)
            if q is None or not q.ready:
                continue
            stale = [m for m in q.ready if m.enqueued + sticky.timeout <= now]
            if stale:
                for m in stale:
                    q.ready.remove(m)
                target = self._queue(sticky.fallback)
                target.ready.extend(stale)
                target.wakeup.set()

    async def _sweep_sticky(self) -> None:
        while self._sticky and not self._closed:
            await asyncio.sleep(min(0.25, min(s.timeout for s in self._sticky.values()) / 4))
            self.sweep_sticky()

    def busy(self) -> bool:
        """True while any message is waiting or leased (used by time skipping)."""
        return any(q.ready or q.leased for q in self._queues.values())

    def queue_names(self) -> list[str]:
        return list(self._queues)

    def depth(self, queue: str) -> int:
        q = self._queues.get(queue)
        return len(q.ready) if q else 0
