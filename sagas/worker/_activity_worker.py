"""Activity tasks: run the registered function, heartbeat, enforce the deadline, report.

For each task message (``brokers.envelope.ActivityTask``):

* ``ActivityStarted`` is reported in the background once the function has run for
  :data:`STARTED_REPORT_DELAY` (one that finishes sooner is never reported started:
  its result implies the start);
* arguments are converted by the function's type hints;
* the attempt's ``deadline`` is enforced locally: the coroutine is cancelled
  (a sync function is abandoned and sees ``is_cancelled()``) and nothing is
  reported -- the server's durable timer times the attempt out;
* ``activity.heartbeat()`` is throttled and its answer may request
  cancellation (async: ``asyncio.CancelledError``; sync: ``is_cancelled()``);
* the outcome is reported as ``ActivityResult`` (result, failure or
  ``canceled``), except after ``activity.raise_complete_async()``. With the
  built-in broker the report carries the delivery, which the server acks once
  it applied the result (no separate ack).
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import contextvars
import functools
import logging
import time
from collections.abc import Callable, Coroutine, Mapping
from datetime import UTC, datetime, timedelta
from typing import TYPE_CHECKING, Any

from brokers import tracing
from brokers.base import Delivery
from brokers.envelope import (
    ActivityHeartbeat,
    ActivityResult,
    ActivityStarted,
    ActivityTask,
    EnvelopeError,
    parse_task,
)
from orchestrator.api.common import Failure
from sagas.activity import CompleteAsyncError
from sagas.activity._context import (
    ActivityContext,
    CancellationDetails,
    CompositeEvent,
    Info,
    reset_current,
    set_current,
)
from sagas.activity._definition import ActivityDefinition
from sagas.exceptions import CancelledError, RPCError, error_to_failure
from sagas.worker._poller import ACK, REQUEUE, SETTLED, Settle, dead_letter

if TYPE_CHECKING:
    from sagas.client import Client

_log = logging.getLogger("sagas.worker")

_GONE_CODES = frozenset({"stale_task", "workflow_not_found", "workflow_not_running", "invalid_task_token"})
"""Heartbeat answers meaning the server no longer waits for this attempt."""

_RETRYABLE_CODES = frozenset({"unavailable", "deadline_exceeded", "rate_limited", "internal"})

STARTED_REPORT_DELAY = 0.1
"""Seconds an activity runs before the worker reports ``ActivityStarted``.

Most activities finish sooner, and their result alone is enough: the server records
``ActivityTaskStarted`` together with the outcome, so not reporting the start saves one request
per activity. Until the start is reported (or a heartbeat arrives) the server counts
start-to-close from the dispatch (a safe, earlier bound), a schedule-to-start timeout may still
fire, and a cancellation request from the workflow cancels the attempt at once instead of
waiting for the activity to acknowledge it.
"""

HEARTBEAT_DEFAULT_INTERVAL = 1.0
HEARTBEAT_MAX_INTERVAL = 30.0


def heartbeat_interval(heartbeat_timeout: float | None) -> float:
    """How often heartbeats are sent: 0.8 x the heartbeat timeout, or every second without one."""
    if not heartbeat_timeout:
        return HEARTBEAT_DEFAULT_INTERVAL
    return min(max(0.8 * heartbeat_timeout, 0.05), HEARTBEAT_MAX_INTERVAL)


class _Heartbeater:
    """Sends an attempt's heartbeats, at most one per interval; the latest details win."""

    def __init__(self, client: Client, running: _RunningActivity, interval: float) -> None:
        self._client = client
        self._running = running
        self._interval = interval
        self._loop = asyncio.get_running_loop()
        self._pending: list[Any] | None = None
        self._sender: asyncio.Task[None] | None = None
        self._closed = False

    def heartbeat(self, *details: Any) -> None:
        """Called by the activity (any thread); converts now so a bad detail raises in the activity."""
        payloads = self._client.data_converter.to_payloads(list(details))
        try:
            in_loop = asyncio.get_running_loop() is self._loop
        except RuntimeError:
            in_loop = False
        if in_loop:
            self._queue(payloads)
        elif not self._loop.is_closed():
            self._loop.call_soon_threadsafe(self._queue, payloads)

    def _queue(self, payloads: list[Any]) -> None:
        if self._closed:
            return
        self._pending = payloads
        if self._sender is None:
            self._sender = self._loop.create_task(self._send_loop())

    async def _send_loop(self) -> None:
        try:
            while self._pending is not None and not self._closed:
                details, self._pending = self._pending, None
                await self._send(details)
                await asyncio.sleep(self._interval)
        finally:
            self._sender = None

    async def _send(self, details: list[Any]) -> None:
        msg = self._running.msg
        try:
            ack = await self._client._complete_task(ActivityHeartbeat(task_token=msg.task_token, details=details))
        except RPCError as exc:
            if exc.code in _GONE_CODES:
                _log.info(
                    "activity %s (%s) of %s is no longer expected (%s); cancelling it",
                    msg.activity_id,
                    msg.activity_type,
                    msg.workflow_id,
                    exc.code,
                )
                self._running.cancel(CancellationDetails(not_found=True))
            else:
                _log.warning("heartbeat of activity %s failed: %s", msg.activity_id, exc)
            return
        if ack.cancel_requested:
            self._running.cancel(CancellationDetails(cancel_requested=True))

    async def close(self) -> None:
        self._closed = True
        if self._sender is not None:
            self._sender.cancel()
            try:
                await self._sender
            except asyncio.CancelledError:
                pass


class _RunningActivity:
    """One attempt in progress: its context, task and why it was cancelled."""

    def __init__(self, msg: ActivityTask, defn: ActivityDefinition, delivery: Delivery) -> None:
        self.msg = msg
        self.defn = defn
        self.delivery = delivery
        self.ctx: ActivityContext | None = None
        self.task: asyncio.Future[Any] | None = None
        self.started_at: float | None = None
        """When the attempt began, if no start report was sent (it then travels with the outcome)."""

    def cancel(self, details: CancellationDetails) -> None:
        if self.ctx is None:
            return
        first = not self.ctx.cancellation
        self.ctx.cancel(details)
        if first and self.defn.is_async and self.task is not None and not self.task.done():
            self.task.cancel()

    @property
    def reason(self) -> CancellationDetails | None:
        return self.ctx.cancellation[0] if self.ctx is not None and self.ctx.cancellation else None


class ActivityTaskHandler:
    """Handles deliveries from an activity task queue (see module docstring)."""

    def __init__(
        self,
        client: Client,
        activities: Mapping[str, ActivityDefinition],
        *,
        executor: concurrent.futures.Executor | None,
        identity: str,
        task_queue: str,
        max_message_bytes: int,
        ack_with_completion: bool = False,
    ) -> None:
        self._client = client
        self._activities = dict(activities)
        self._ack_with_completion = ack_with_completion
        """The broker is the built-in broker of the server we report to: a result carries the
        delivery it answers and the server acks it (one request instead of two)."""
        self._executor = executor
        self._identity = identity
        self._task_queue = task_queue
        self._max_message_bytes = max_message_bytes
        self._running: set[_RunningActivity] = set()
        self._shutdown = False
        self._background: set[asyncio.Task[Any]] = set()

    def begin_shutdown(self) -> None:
        """Tell running activities the worker is shutting down (``activity.is_worker_shutdown()``)."""
        self._shutdown = True
        for running in list(self._running):
            if running.ctx is not None:
                running.ctx.worker_shutdown.set()

    async def handle(self, delivery: Delivery) -> Settle:
        try:
            msg = parse_task(delivery.body, self._max_message_bytes)
        except EnvelopeError as exc:
            _log.warning("dead-lettering an unreadable activity task from %s: %s", delivery.queue, exc)
            return dead_letter(str(exc))
        if not isinstance(msg, ActivityTask):
            return dead_letter(f"invalid_message: a {msg.kind} on an activity task queue")
        defn = self._activities.get(msg.activity_type)
        if defn is None:
            known = ", ".join(sorted(self._activities)) or "none"
            failure = Failure(
                message=(
                    f"activity type {msg.activity_type!r} is not registered on the worker for task queue "
                    f"{self._task_queue!r} (registered: {known}); add it to the worker's activities"
                ),
                type="ActivityTypeNotRegistered",
                non_retryable=False,
            )
            _log.warning("%s", failure.message)
            return await self._report(msg, ActivityResult(task_token=msg.task_token, failure=failure), delivery)
        running = _RunningActivity(msg, defn, delivery)
        self._running.add(running)
        try:
            with tracing.span(f"RunActivity:{msg.activity_type}", parent=delivery.headers, kind="consumer",
                              attributes={"sagas.workflow_id": msg.workflow_id, "sagas.activity_id": msg.activity_id,
                                          "sagas.attempt": msg.attempt}):  # fmt: skip
                return await self._execute(running)
        finally:
            self._running.discard(running)

    async def _execute(self, running: _RunningActivity) -> Settle:
        msg, defn = running.msg, running.defn
        loop = asyncio.get_running_loop()
        remaining = _remaining(msg.deadline)
        if remaining is not None and remaining <= 0:
            _log.info("activity %s of %s arrived after its deadline; skipping it", msg.activity_id, msg.workflow_id)
            return ACK
        started = _StartedReport(self, ActivityStarted(task_token=msg.task_token, identity=self._identity))
        heartbeater = _Heartbeater(self._client, running, heartbeat_interval(msg.heartbeat_timeout))
        info = _info(msg, self._task_queue)
        running.ctx = ActivityContext(
            info=lambda: info,
            heartbeat=heartbeater.heartbeat,
            cancelled=CompositeEvent(loop),
            worker_shutdown=CompositeEvent(loop),
            client=self._client if defn.is_async else None,
        )
        if self._shutdown:
            running.ctx.worker_shutdown.set()
        try:
            outcome = await self._run_to_outcome(running, remaining)
        finally:
            await heartbeater.close()
            if not await started.finish():
                running.started_at = started.began
        if outcome is None:
            return ACK  # deadline passed: the server's durable timer times the attempt out
        result, error = outcome
        return await self._report_outcome(running, result, error)

    async def _run_to_outcome(
        self, running: _RunningActivity, remaining: float | None
    ) -> tuple[Any, BaseException | None] | None:
        """Run the attempt; (result, error) once it ended, None when its deadline passed."""
        try:
            args = self._client.data_converter.from_payloads(running.msg.input, running.defn.arg_types)
            running.task = self._start(running, args)
            done, _ = await asyncio.wait({running.task}, timeout=remaining)
        except asyncio.CancelledError:
            # The worker is cancelling this handler (graceful shutdown ran out).
            running.cancel(CancellationDetails(worker_shutdown=True))
            raise
        except Exception as exc:  # arguments that do not convert
            return None, exc
        if not done:
            running.cancel(CancellationDetails(timed_out=True))
            if running.defn.is_async:
                # Deliver its CancelledError, but do not wait for long.
                await asyncio.wait({running.task}, timeout=1.0)
            return None
        try:
            return running.task.result(), None
        except (KeyboardInterrupt, SystemExit):
            raise
        except BaseException as exc:  # the activity's own exception, CancelledError, CompleteAsyncError
            return None, exc

    def _start(self, running: _RunningActivity, args: list[Any]) -> asyncio.Future[Any]:
        """Start the function with the activity context set (copied into the executor thread)."""
        assert running.ctx is not None
        fn = running.defn.fn
        token = set_current(running.ctx)
        try:
            if running.defn.is_async:
                task: asyncio.Future[Any] = asyncio.ensure_future(fn(*args))  # copies the context
                return task
            ctx = contextvars.copy_context()
        finally:
            reset_current(token)
        loop = asyncio.get_running_loop()
        if isinstance(self._executor, concurrent.futures.ThreadPoolExecutor) or self._executor is None:
            call: Callable[[], Any] = functools.partial(ctx.run, fn, *args)
        else:
            # A process pool cannot take a context; activity.* functions are unavailable there.
            call = functools.partial(fn, *args)
        return loop.run_in_executor(self._executor, call)

    async def _report_outcome(self, running: _RunningActivity, result: Any, error: BaseException | None) -> Settle:
        msg = running.msg
        reason = running.reason
        if isinstance(error, CompleteAsyncError):
            return ACK  # someone else completes it by task token
        if reason is not None and not reason.cancel_requested:
            # Timed out locally, gone on the server, or worker shutdown: the server decides.
            _log.debug("not reporting activity %s: %s", msg.activity_id, reason)
            return ACK
        if error is None:
            try:
                payload = self._client.data_converter.to_payload(result)
            except Exception as exc:  # not JSON, or over the payload limit
                return await self._report(
                    msg, ActivityResult(task_token=msg.task_token, failure=error_to_failure(exc)), running.delivery
                )
            return await self._report(
                msg, ActivityResult(task_token=msg.task_token, result=payload, started_at=running.started_at), running.delivery
            )
        if reason is not None and reason.cancel_requested and isinstance(error, (asyncio.CancelledError, CancelledError)):
            return await self._report(
                msg, ActivityResult(task_token=msg.task_token, canceled=True, started_at=running.started_at), running.delivery
            )
        _log.warning(
            "activity %s (%s) of workflow %s failed on attempt %d: %s",
            msg.activity_id,
            msg.activity_type,
            msg.workflow_id,
            msg.attempt,
            error,
            exc_info=error if not isinstance(error, asyncio.CancelledError) else None,
        )
        return await self._report(
            msg,
            ActivityResult(task_token=msg.task_token, failure=error_to_failure(error), started_at=running.started_at),
            running.delivery,
        )

    async def _report(self, msg: ActivityTask, reply: ActivityResult, delivery: Delivery) -> Settle:
        """Report the outcome; SETTLED when the server acked the delivery with it (see ``ack_with_completion``).

        A refused report acks nothing: the delivery is then settled by the poller (ACK or REQUEUE).
        """
        reply = reply.model_copy(update={"identity": self._identity})
        try:
            answer = await self._client._complete_task(reply, ack=delivery if self._ack_with_completion else None)
            if answer.acked:
                return SETTLED
        except RPCError as exc:
            if exc.code in _RETRYABLE_CODES:
                _log.warning("could not report activity %s (%s); will retry the task", msg.activity_id, exc)
                return REQUEUE
            _log.info("server did not take the outcome of activity %s: %s", msg.activity_id, exc)
        return ACK

    def _in_background(self, coro: Coroutine[Any, Any, Any]) -> asyncio.Task[Any]:
        task = asyncio.create_task(coro)
        self._background.add(task)
        task.add_done_callback(self._background.discard)
        task.add_done_callback(_log_started_failure)
        return task

    async def aclose(self) -> None:
        for task in list(self._background):
            await _quietly(task)


class _StartedReport:
    """``ActivityStarted`` for one attempt, posted after :data:`STARTED_REPORT_DELAY` unless the attempt ended first."""

    def __init__(self, handler: ActivityTaskHandler, reply: ActivityStarted) -> None:
        self._sending = False
        self.began = time.time()
        self._task = handler._in_background(self._post_later(handler._client, reply))

    async def _post_later(self, client: Client, reply: ActivityStarted) -> None:
        await asyncio.sleep(STARTED_REPORT_DELAY)
        self._sending = True
        await client._complete_task(reply)

    async def finish(self) -> bool:
        """The attempt ended: drop the report if it is not on its way yet, else wait for it (so it
        precedes the outcome). True when it was sent."""
        if not self._sending:
            self._task.cancel()
        await _quietly(self._task)
        return self._sending


def _log_started_failure(task: asyncio.Task[Any]) -> None:
    if not task.cancelled() and task.exception() is not None:
        _log.debug("could not report an activity start: %s", task.exception())


async def _quietly(task: asyncio.Future[Any]) -> None:
    try:
        await task
    except (Exception, asyncio.CancelledError):
        pass


def _remaining(deadline: datetime | None) -> float | None:
    if deadline is None:
        return None
    if deadline.tzinfo is None:
        deadline = deadline.replace(tzinfo=UTC)
    return (deadline - datetime.now(UTC)).total_seconds()


def _info(msg: ActivityTask, task_queue: str) -> Info:
    now = datetime.now(UTC)
    return Info(
        activity_id=msg.activity_id,
        activity_type=msg.activity_type,
        attempt=msg.attempt,
        namespace=msg.namespace,
        task_queue=msg.task_queue or task_queue,
        task_token=msg.task_token.encode(),
        workflow_id=msg.workflow_id or None,
        workflow_run_id=msg.run_id or None,
        workflow_type=msg.workflow_type or None,
        heartbeat_details=list(msg.heartbeat_details),
        heartbeat_timeout=timedelta(seconds=msg.heartbeat_timeout) if msg.heartbeat_timeout else None,
        deadline=msg.deadline,
        started_time=now,
        current_attempt_scheduled_time=now,
    )
