"""Serve activities from a plain Python service that does not use the SDK.

A service that never imports ``sagas`` joins a saga by consuming
``activity_task`` messages from its queue and publishing an
``activity_result`` to the message's ``reply_to`` queue (DESIGN §5). This
helper does exactly that, so the demos show the integration without the
workflow runtime::

    async def handle(task: ActivityTask) -> dict:
        if task.activity_type == "book_car":
            return {"booking_id": "car-123"}
        raise ServiceError(f"unknown operation {task.activity_type}", non_retryable=True)

    await serve("cars", handle, broker_url="local://127.0.0.1:7233")

A message that does not parse goes to the dead-letter queue with the reason
and the service goes on; an exception becomes a failure reply (retryable
unless it is a :class:`ServiceError` with ``non_retryable=True``).
"""

from __future__ import annotations

import asyncio
import logging
import traceback
from collections.abc import Awaitable, Callable
from typing import Any

from brokers import envelope as env
from brokers.base import Broker, BrokerError, Delivery, open_broker, queue_name
from orchestrator.api.common import Failure

log = logging.getLogger("sagas.service")

Handler = Callable[[env.ActivityTask], Awaitable[Any]]


class ServiceError(Exception):
    """A business failure to report to the workflow (``type`` defaults to the class name)."""

    def __init__(self, message: str, *, type: str | None = None, non_retryable: bool = False, details: list[Any] | None = None) -> None:
        super().__init__(message)
        self.type = type or self.__class__.__name__
        self.non_retryable = non_retryable
        self.details = details or []


def failure_of(exc: BaseException) -> Failure:
    """The reply ``failure`` for an exception raised by a handler."""
    if isinstance(exc, ServiceError):
        return Failure(message=str(exc), type=exc.type, non_retryable=exc.non_retryable, details=exc.details)
    return Failure(message=str(exc) or type(exc).__name__, type=type(exc).__name__, stack_trace="".join(traceback.format_exception(exc)))


async def _handle_one(broker: Broker, delivery: Delivery, handler: Handler, default_reply_to: str) -> None:
    try:
        task = env.parse_task(delivery.body)
        if not isinstance(task, env.ActivityTask):
            raise env.EnvelopeError("invalid_message", "expected an activity_task message")
    except env.EnvelopeError as exc:
        log.warning("dead-lettering a message from %s: %s", delivery.queue, exc)
        await broker.nack(delivery, requeue=False, reason=f"{exc.reason}: {exc}")
        return
    reply: env.ActivityResult
    try:
        result = await handler(task)
        reply = env.ActivityResult(task_token=task.task_token, result=result)
    except asyncio.CancelledError:
        await broker.nack(delivery, requeue=True, reason="service shutting down")
        raise
    except Exception as exc:  # noqa: BLE001 - every failure becomes a reply
        reply = env.ActivityResult(task_token=task.task_token, failure=failure_of(exc))
    try:
        await broker.publish(task.reply_to or default_reply_to, env.encode(reply))
    except BrokerError as exc:
        log.warning("could not publish the reply (the task will be redelivered): %s", exc)
        await broker.nack(delivery, requeue=True, reason=str(exc))
        return
    await broker.ack(delivery)


async def serve(
    task_queue: str,
    handler: Handler,
    *,
    broker_url: str = "local://127.0.0.1:7233",
    namespace: str = "default",
    prefix: str = "sagas",
    concurrency: int = 8,
    stop: asyncio.Event | None = None,
    ready: Callable[[], None] | None = None,
) -> None:
    """Consume ``task_queue``'s activity tasks with ``handler`` until ``stop`` is set."""
    broker = await open_broker(broker_url)
    queue = queue_name(prefix, namespace, task_queue, "act")
    reply_to = f"{prefix}.completions"
    stop = stop or asyncio.Event()
    running: set[asyncio.Task[None]] = set()
    slots = asyncio.Semaphore(concurrency)

    def _finished(task: asyncio.Task[None]) -> None:
        running.discard(task)
        slots.release()
        if not task.cancelled() and (exc := task.exception()) is not None:
            # e.g. settling failed while the broker was down: the broker delivers the task again
            log.warning("handling a task from %s failed (it will be redelivered): %s", queue, exc)

    try:
        await broker.declare_queue(queue)
        if ready:
            ready()
        while not stop.is_set():
            try:
                deliveries = await broker.receive(queue, max_messages=concurrency, wait=1.0)
            except BrokerError as exc:
                log.warning("broker unavailable (%s); retrying", exc)
                await asyncio.sleep(0.5)
                continue
            for d in deliveries:
                await slots.acquire()
                t = asyncio.create_task(_handle_one(broker, d, handler, reply_to))
                running.add(t)
                t.add_done_callback(_finished)
        await asyncio.gather(*running, return_exceptions=True)
    finally:
        await broker.aclose()
