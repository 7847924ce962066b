"""Take tasks from one broker queue and hand each to a handler, within a concurrency limit.

The poller settles every delivery itself, after the handler returned: ack,
requeue (``nack(requeue=True)``) or dead-letter (``nack(requeue=False)``),
unless the handler says it is already settled (``SETTLED``).
A handler that is still running when the worker gives up on it (graceful
shutdown timed out) is cancelled and its delivery requeued.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable
from dataclasses import dataclass

from brokers.base import Broker, BrokerError, Delivery

_log = logging.getLogger("sagas.worker")

MAX_BATCH = 16
"""Most deliveries one receive asks for (bounded by free concurrency slots)."""


@dataclass(frozen=True)
class Settle:
    """What to do with a delivery once handled."""

    requeue: bool | None = None
    """None: ack. True: give it back for redelivery. False: dead-letter it."""
    reason: str = ""


ACK = Settle()
REQUEUE = Settle(requeue=True, reason="worker could not finish the task")
SETTLED = Settle(reason="settled by the handler")
"""The delivery is already settled, and the poller must not settle it again: the handler acked it
itself (early), or the server acked it with the completion that answered it (built-in broker)."""


def dead_letter(reason: str) -> Settle:
    return Settle(requeue=False, reason=reason)


class QueuePoller:
    """Long-polls ``queue`` and runs ``handle`` for each delivery, at most ``max_concurrent`` at once."""

    def __init__(
        self,
        broker: Broker,
        queue: str,
        handle: Callable[[Delivery], Awaitable[Settle]],
        *,
        max_concurrent: int,
        poll_wait: float = 5.0,
    ) -> None:
        if max_concurrent < 1:
            raise ValueError("max_concurrent must be at least 1")
        self.queue = queue
        self._broker = broker
        self._handle = handle
        self._slots = asyncio.Semaphore(max_concurrent)
        self._poll_wait = poll_wait
        self._in_flight: dict[asyncio.Task[None], Delivery] = {}
        self._stopping = False
        self._receive_task: asyncio.Task[list[Delivery]] | None = None

    @property
    def in_flight(self) -> int:
        return len(self._in_flight)

    async def run(self) -> None:
        """Poll until :meth:`stop_polling`; broker errors are logged and retried with back-off."""
        failures = 0
        while not self._stopping:
            await self._slots.acquire()
            taken = 1
            while taken < MAX_BATCH and not self._slots.locked():
                await self._slots.acquire()
                taken += 1
            deliveries: list[Delivery] = []
            try:
                if self._stopping:
                    break
                self._receive_task = asyncio.ensure_future(
                    self._broker.receive(self.queue, max_messages=taken, wait=self._poll_wait)
                )
                deliveries = await self._receive_task
                failures = 0
            except asyncio.CancelledError:
                if not self._stopping:
                    raise
                break
            except BrokerError as exc:
                failures += 1
                delay = min(0.2 * 2 ** min(failures, 5), 5.0)
                log = _log.warning if failures in (1, 10) or failures % 50 == 0 else _log.debug
                log("polling %s failed (%s); retrying in %.1fs", self.queue, exc, delay)
                await self._sleep_unless_stopping(delay)
            finally:
                self._receive_task = None
                for _ in range(taken - len(deliveries)):
                    self._slots.release()
            for delivery in deliveries:
                if self._stopping:
                    await self._settle(delivery, Settle(requeue=True, reason="worker shutting down"))
                    self._slots.release()
                    continue
                task = asyncio.create_task(self._run_one(delivery))
                self._in_flight[task] = delivery

    async def _sleep_unless_stopping(self, delay: float) -> None:
        end = asyncio.get_running_loop().time() + delay
        while not self._stopping:
            left = end - asyncio.get_running_loop().time()
            if left <= 0:
                return
            await asyncio.sleep(min(left, 0.1))

    async def _run_one(self, delivery: Delivery) -> None:
        try:
            try:
                outcome = await self._handle(delivery)
            except asyncio.CancelledError:
                await self._settle(delivery, Settle(requeue=True, reason="worker shut down before finishing"))
                raise
            except Exception:
                _log.exception("unexpected error handling a task from %s; requeueing it", self.queue)
                outcome = REQUEUE
            await self._settle(delivery, outcome)
        finally:
            self._in_flight.pop(asyncio.current_task(), None)  # type: ignore[arg-type]
            self._slots.release()

    async def _settle(self, delivery: Delivery, outcome: Settle) -> None:
        if outcome is SETTLED:
            return
        try:
            if outcome.requeue is None:
                await self._broker.ack(delivery)
            else:
                await self._broker.nack(delivery, requeue=outcome.requeue, reason=outcome.reason)
        except BrokerError as exc:
            # The broker will redeliver it; handlers are idempotent (stale tasks are refused).
            _log.warning("could not settle message %s on %s: %s", delivery.message_id, self.queue, exc)

    def stop_polling(self) -> None:
        """Stop taking new tasks once the open long poll (if any) returns.

        The open poll is not abandoned: a server may already have handed it
        messages, which would then stay leased until their visibility timeout.
        Whatever it returns is requeued at once. :meth:`abandon_poll` cuts it short.
        """
        self._stopping = True

    def abandon_poll(self) -> None:
        """Cancel the open long poll (messages the server gave it come back after their lease)."""
        self._stopping = True
        if self._receive_task is not None:
            self._receive_task.cancel()

    async def drain(self, timeout: float) -> None:
        """Wait up to ``timeout`` for in-flight tasks; cancel (and requeue) what is left."""
        pending = set(self._in_flight)
        if pending:
            _, still = await asyncio.wait(pending, timeout=timeout)
            for task in still:
                task.cancel()
            if still:
                await asyncio.wait(still)
