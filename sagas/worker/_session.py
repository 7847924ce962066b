"""The worker side of sessions: host session creation activities (see ``sagas/workflow/_session.py``).

A worker started with ``max_concurrent_sessions=N`` polls two more queues:

* the task queue's session creation queue, at most ``N`` tasks at once. Each
  task is a session: :class:`SessionCreationHandler` acks the message at once
  (the server's heartbeat timeout, not the broker's redelivery, detects a dead
  host), signals the workflow this process's session queue, then heartbeats
  until the workflow completes the session (the activity is cancelled), the
  session's ``execution_timeout`` passes, or the worker shuts down (reported as
  a failure, so the workflow learns at once);
* this process's session queue, whose activities run like any others.
"""

from __future__ import annotations

import asyncio
import logging
from typing import TYPE_CHECKING, Any

from brokers.base import Broker, BrokerError, Delivery
from brokers.envelope import (
    ActivityHeartbeat,
    ActivityResult,
    ActivityStarted,
    ActivityTask,
    EnvelopeError,
    parse_task,
)
from sagas.exceptions import ApplicationError, RPCError, error_to_failure
from sagas.worker._activity_worker import _GONE_CODES, _remaining
from sagas.worker._poller import SETTLED, Settle, dead_letter
from sagas.workflow._session import SESSION_CREATED_SIGNAL, SESSION_CREATION_ACTIVITY

if TYPE_CHECKING:
    from sagas.client import Client

_log = logging.getLogger("sagas.worker")


def session_heartbeat_interval(heartbeat_timeout: float | None) -> float:
    """A third of the session's heartbeat timeout, at most a second (so a completed session frees its slot fast)."""
    if not heartbeat_timeout:
        return 1.0
    return max(0.05, min(heartbeat_timeout / 3, 1.0))


class SessionCreationHandler:
    """Runs session creation activities: one per open session hosted by this worker."""

    def __init__(
        self,
        client: Client,
        broker: Broker,
        *,
        identity: str,
        session_task_queue: str,
        max_message_bytes: int,
    ) -> None:
        self._client = client
        self._broker = broker
        self._identity = identity
        self._session_task_queue = session_task_queue
        self._max_message_bytes = max_message_bytes
        self._shutdown = asyncio.Event()
        self.open_sessions = 0
        """Sessions this worker hosts right now."""

    def begin_shutdown(self) -> None:
        """Fail the hosted sessions now, so their workflows can move them elsewhere."""
        self._shutdown.set()

    async def handle(self, delivery: Delivery) -> Settle:
        try:
            msg = parse_task(delivery.body, self._max_message_bytes)
        except EnvelopeError as exc:
            return dead_letter(str(exc))
        if not isinstance(msg, ActivityTask) or msg.activity_type != SESSION_CREATION_ACTIVITY:
            return dead_letter(f"invalid_message: not a session creation task on {delivery.queue}")
        try:
            await self._broker.ack(delivery)
        except BrokerError as exc:  # it may come back; its heartbeat then tells it is no longer pending
            _log.warning("could not ack session creation task %s: %s", msg.activity_id, exc)
        try:
            await self._host(msg)
        except asyncio.CancelledError:
            pass  # the worker gave up waiting for it: the server's heartbeat timeout fails the session
        except Exception:
            _log.exception("session %s of %s failed on this worker", msg.activity_id, msg.workflow_id)
        return SETTLED

    async def _host(self, msg: ActivityTask) -> None:
        remaining = _remaining(msg.deadline)
        if (remaining is not None and remaining <= 0) or self._shutdown.is_set():
            return
        payloads = self._client.data_converter.from_payloads(msg.input, [dict])
        session_id = str(payloads[0].get("session_id", "")) if payloads and isinstance(payloads[0], dict) else ""
        try:
            await self._client._complete_task(ActivityStarted(task_token=msg.task_token, identity=self._identity))
            await self._client.get_workflow_handle(msg.workflow_id, run_id=msg.run_id or None).signal(
                SESSION_CREATED_SIGNAL,
                {"session_id": session_id, "task_queue": self._session_task_queue, "identity": self._identity},
            )
        except RPCError as exc:
            _log.info("session %s of %s not opened: %s", session_id, msg.workflow_id, exc)
            return
        _log.info("hosting session %s of workflow %s", session_id, msg.workflow_id)
        self.open_sessions += 1
        try:
            await self._heartbeat_until_done(msg, session_id)
        finally:
            self.open_sessions -= 1

    async def _heartbeat_until_done(self, msg: ActivityTask, session_id: str) -> None:
        interval = session_heartbeat_interval(msg.heartbeat_timeout)
        loop = asyncio.get_running_loop()
        deadline = None if msg.deadline is None else loop.time() + (_remaining(msg.deadline) or 0.0)
        while True:
            try:
                ack = await self._client._complete_task(ActivityHeartbeat(task_token=msg.task_token, details=[]))
            except RPCError as exc:
                if exc.code in _GONE_CODES:  # the session ended (timed out, workflow closed)
                    return
                _log.warning("heartbeat of session %s failed: %s", session_id, exc)
            else:
                if ack.cancel_requested:  # the workflow completed the session
                    await self._report(msg, ActivityResult(task_token=msg.task_token, canceled=True))
                    return
            wait = interval if deadline is None else min(interval, deadline - loop.time())
            if wait <= 0:
                return  # execution_timeout: the server times the session out
            try:
                await asyncio.wait_for(self._shutdown.wait(), wait)
            except TimeoutError:
                continue
            failure = ApplicationError(
                f"worker {self._identity} is shutting down", type="WorkerShutdown", non_retryable=True
            )
            await self._report(msg, ActivityResult(task_token=msg.task_token, failure=error_to_failure(failure)))
            return

    async def _report(self, msg: ActivityTask, reply: ActivityResult) -> Any:
        try:
            await self._client._complete_task(reply.model_copy(update={"identity": self._identity}))
        except RPCError as exc:
            _log.info("server did not take the end of session %s: %s", msg.activity_id, exc)
