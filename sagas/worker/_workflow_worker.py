"""Workflow tasks: keep a sticky cache of instances, activate them, report commands.

For each task message (``brokers.envelope.WorkflowTask``):

1. a cached instance whose ``next_event_id`` is the message's
   ``first_event_id`` is activated with the message's events; otherwise the
   history is fetched (``/history``, paged) and replayed on a fresh instance;
2. the commands go back in ``WorkflowTaskCompleted``; an exception from the
   workflow code (a bug, a nondeterminism) fails the task with
   ``WorkflowTaskFailed`` (the server retries it) and evicts the instance;
3. a query (``msg.query``) is answered from the instance's current state
   with ``query_result`` / ``query_failure``, without commands.

Tasks of one run are handled one at a time; different runs in parallel.
"""

from __future__ import annotations

import asyncio
import collections
import logging
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import TYPE_CHECKING

from brokers.base import Delivery
from brokers.envelope import (
    EnvelopeError,
    WorkflowTask,
    WorkflowTaskCompleted,
    WorkflowTaskFailed,
    parse_task,
)
from orchestrator.api.commands import Command, dump_commands
from orchestrator.api.common import Failure
from orchestrator.api.enums import EventType
from orchestrator.api.events import HistoryEvent, parse_events
from sagas.exceptions import NondeterminismError, RPCError, error_to_failure
from sagas.worker._poller import ACK, REQUEUE, SETTLED, Settle, dead_letter
from sagas.workflow._instance import StaleInstanceError, WorkflowInstance, WorkflowRunner

if TYPE_CHECKING:
    from sagas.client import Client

_log = logging.getLogger("sagas.worker")

_RETRYABLE_CODES = frozenset({"unavailable", "deadline_exceeded", "rate_limited", "internal"})

_TASK_CLOSED_ELSEWHERE = frozenset({EventType.WORKFLOW_TASK_FAILED, EventType.WORKFLOW_TASK_TIMED_OUT})
"""Answers to a task completion after which the task should be retried (delivery requeued)."""


class _RunLocks:
    """One lock per run id, dropped when nobody holds or waits for it."""

    def __init__(self) -> None:
        self._locks: dict[str, tuple[asyncio.Lock, int]] = {}

    @asynccontextmanager
    async def hold(self, run_id: str) -> AsyncIterator[None]:
        lock, users = self._locks.get(run_id, (asyncio.Lock(), 0))
        self._locks[run_id] = (lock, users + 1)
        try:
            async with lock:
                yield
        finally:
            lock, users = self._locks[run_id]
            if users <= 1:
                del self._locks[run_id]
            else:
                self._locks[run_id] = (lock, users - 1)


class WorkflowTaskHandler:
    """Handles deliveries from a workflow task queue (see module docstring)."""

    def __init__(
        self,
        client: Client,
        runner: WorkflowRunner,
        *,
        identity: str,
        max_cached_workflows: int,
        max_message_bytes: int,
        ack_with_completion: bool = False,
    ) -> None:
        self._client = client
        self._runner = runner
        self._ack_with_completion = ack_with_completion
        """The broker is the built-in broker of the server we complete tasks on: a completion
        carries the delivery it answers and the server acks it (one request instead of two)."""
        self._identity = identity
        self._max_cached = max_cached_workflows
        self._max_message_bytes = max_message_bytes
        self._cache: collections.OrderedDict[str, WorkflowInstance] = collections.OrderedDict()
        self._locks = _RunLocks()
        self.sticky_queue = ""
        """This worker's sticky queue (set by the Worker when the broker routes sticky tasks):
        named in each completion of a run kept in the cache, so its next task comes here."""

    @property
    def cached_runs(self) -> list[str]:
        """Run ids in the sticky cache, least recently used first."""
        return list(self._cache)

    async def handle(self, delivery: Delivery) -> Settle:
        try:
            msg = parse_task(delivery.body, self._max_message_bytes)
        except EnvelopeError as exc:
            _log.warning("dead-lettering an unreadable workflow task from %s: %s", delivery.queue, exc)
            return dead_letter(str(exc))
        if not isinstance(msg, WorkflowTask):
            return dead_letter(f"invalid_message: a {msg.kind} on a workflow task queue")
        async with self._locks.hold(msg.run_id):
            return await self._handle_task(msg, delivery)

    # -- tasks -------------------------------------------------------------

    async def _handle_task(self, msg: WorkflowTask, delivery: Delivery) -> Settle:
        if msg.query is not None:
            return await self._answer_query(msg, delivery)
        try:
            commands = await self._activate(msg)
        except RPCError as exc:
            # Fetching history failed: retry the task later.
            self._evict(msg.run_id)
            if exc.code == "workflow_not_found":
                _log.info("workflow %s run %s is gone; dropping its task", msg.workflow_id, msg.run_id)
                return ACK
            _log.warning("could not load history of %s/%s: %s", msg.workflow_id, msg.run_id, exc)
            return REQUEUE
        except Exception as exc:
            self._evict(msg.run_id)
            _log.warning(
                "workflow task of %s (%s, run %s) failed: %s",
                msg.workflow_type,
                msg.workflow_id,
                msg.run_id,
                exc,
                exc_info=not _is_expected(exc),
            )
            return await self._fail(msg, exc, delivery)
        reply = WorkflowTaskCompleted(
            task_token=msg.task_token,
            commands=dump_commands(commands),
            identity=self._identity,
            sticky_queue=self.sticky_queue if msg.run_id in self._cache else "",
        )
        outcome = await self._send(msg, reply, delivery)
        if outcome is not ACK and outcome is not SETTLED:
            self._evict(msg.run_id)
        return outcome

    async def _activate(self, msg: WorkflowTask) -> list[Command]:
        instance = self._cache.get(msg.run_id)
        if instance is not None and instance.next_event_id == msg.first_event_id:
            events = self._message_events(msg)
            if events is not None:
                self._cache.move_to_end(msg.run_id)
                try:
                    commands = await instance.activate(events, updates=msg.updates)
                except StaleInstanceError as exc:
                    _log.debug("cached instance of %s is stale (%s); replaying", msg.run_id, exc)
                else:
                    self._keep(msg.run_id, instance)
                    return list(commands)
        self._evict(msg.run_id)
        instance = self._runner.create_instance(
            namespace=msg.namespace,
            workflow_id=msg.workflow_id,
            run_id=msg.run_id,
            workflow_type=msg.workflow_type,
            task_queue=msg.task_queue,
        )
        events = await self._history(msg)
        _log.debug("building %s run %s from %d events (not in the cache)", msg.workflow_id, msg.run_id, len(events))
        commands = await instance.activate(events, updates=msg.updates)
        self._keep(msg.run_id, instance)
        return list(commands)

    def _message_events(self, msg: WorkflowTask) -> list[HistoryEvent] | None:
        """The message's events when they are exactly ``[first_event_id, next_event_id)``."""
        if not msg.events:
            return None
        events = parse_events(msg.events)
        ids = [e.event_id for e in events]
        if ids != list(range(msg.first_event_id, msg.first_event_id + len(ids))):
            return None
        if msg.next_event_id > 1 and ids[-1] != msg.next_event_id - 1:
            return None
        return events

    async def _history(self, msg: WorkflowTask) -> list[HistoryEvent]:
        """The run's history up to the task: fetched up to the message's events, then those."""
        tail = self._message_events(msg)
        last = (msg.first_event_id - 1) if tail is not None else (msg.next_event_id - 1 if msg.next_event_id > 1 else None)
        events: list[HistoryEvent] = []
        if last is None or last >= 1:
            async for event in self._client._history_events(msg.workflow_id, msg.run_id, last_event_id=last):
                events.append(event)
        if tail is not None:
            events.extend(tail)
        return events

    async def _answer_query(self, msg: WorkflowTask, delivery: Delivery) -> Settle:
        assert msg.query is not None
        reply: WorkflowTaskCompleted
        try:
            instance = self._cache.get(msg.run_id)
            if instance is not None and not await self._cache_is_current(msg, instance):
                instance = None
            if instance is None:
                # Replay into a throw-away instance: it may run past the last completed
                # task, so it must not be cached for later tasks.
                instance = self._runner.create_instance(
                    namespace=msg.namespace,
                    workflow_id=msg.workflow_id,
                    run_id=msg.run_id,
                    workflow_type=msg.workflow_type,
                    task_queue=msg.task_queue,
                )
                await instance.activate(await self._history(msg))
            result = instance.query(msg.query.name, list(msg.query.input))
            reply = WorkflowTaskCompleted(task_token=msg.task_token, query_result=result, identity=self._identity)
        except RPCError as exc:
            _log.warning("could not load history of %s to answer a query: %s", msg.workflow_id, exc)
            return REQUEUE if exc.code in _RETRYABLE_CODES else ACK
        except Exception as exc:
            reply = WorkflowTaskCompleted(
                task_token=msg.task_token, query_failure=error_to_failure(exc), identity=self._identity
            )
        return await self._send(msg, reply, delivery)

    async def _cache_is_current(self, msg: WorkflowTask, instance: WorkflowInstance) -> bool:
        """True unless a task of this run was completed elsewhere since the cached instance's last one.

        Queries are answered from the cache; with several workers on a task
        queue another one may have moved the run on, which the events after the
        instance's last task show (more than its own ``WorkflowTaskCompleted``).
        """
        if instance.next_event_id >= msg.next_event_id:
            return True
        completed = 0
        async for event in self._client._history_events(
            msg.workflow_id, msg.run_id, first_event_id=instance.next_event_id, last_event_id=msg.next_event_id - 1
        ):
            if event.event_type in _TASK_CLOSED_ELSEWHERE:
                return False
            if event.event_type == EventType.WORKFLOW_TASK_COMPLETED:
                completed += 1
        return completed <= 1

    async def _fail(self, msg: WorkflowTask, exc: BaseException, delivery: Delivery) -> Settle:
        failure = error_to_failure(exc)
        cause = "NonDeterministicError" if isinstance(exc, NondeterminismError) else "WorkflowWorkerUnhandledFailure"
        if getattr(exc, "type", None) == "WorkflowTypeNotRegistered":
            cause = "WorkflowTypeNotRegistered"
        reply = WorkflowTaskFailed(task_token=msg.task_token, failure=failure, cause=cause, identity=self._identity)
        return await self._send(msg, reply, delivery)

    async def _send(
        self, msg: WorkflowTask, reply: WorkflowTaskCompleted | WorkflowTaskFailed, delivery: Delivery
    ) -> Settle:
        """POST the reply; decide how to settle the delivery from the answer.

        With ``ack_with_completion`` the reply carries the delivery and the server acks it once the
        reply is applied (SETTLED); a refused reply acks nothing, so the delivery is settled here.
        """
        try:
            answer = await self._client._complete_task(reply, ack=delivery if self._ack_with_completion else None)
            return SETTLED if answer.acked else ACK
        except RPCError as exc:
            if exc.code == "stale_task":
                _log.debug("task of %s was already completed or timed out: %s", msg.run_id, exc)
                self._evict(msg.run_id)
                return ACK
            if exc.code in _RETRYABLE_CODES:
                _log.warning("could not report workflow task of %s (%s); will retry", msg.workflow_id, exc)
                self._evict(msg.run_id)
                return REQUEUE
            self._evict(msg.run_id)
            if isinstance(reply, WorkflowTaskCompleted) and msg.query is None:
                # The server refused our commands (e.g. a payload over the limit): record why.
                _log.warning("server refused the commands of %s: %s", msg.workflow_id, exc)
                failure = Failure(
                    message=f"the server refused this workflow task's completion: {exc}",
                    type=f"Server:{exc.code}",
                )
                refusal = WorkflowTaskFailed(task_token=msg.task_token, failure=failure, identity=self._identity)
                try:
                    await self._client._complete_task(refusal)
                except RPCError as again:
                    _log.warning("could not report the refusal either: %s", again)
            else:
                _log.warning("server refused the reply for %s: %s", msg.workflow_id, exc)
            return ACK

    # -- cache ---------------------------------------------------------------

    def _keep(self, run_id: str, instance: WorkflowInstance) -> None:
        if instance.is_completed or self._max_cached <= 0:
            self._evict(run_id)
            return
        self._cache[run_id] = instance
        self._cache.move_to_end(run_id)
        while len(self._cache) > self._max_cached:
            self._cache.popitem(last=False)

    def _evict(self, run_id: str) -> None:
        self._cache.pop(run_id, None)

    def evict_all(self) -> None:
        self._cache.clear()


def _is_expected(exc: BaseException) -> bool:
    """Errors whose message says it all (no traceback in the worker's log)."""
    return isinstance(exc, NondeterminismError) or getattr(exc, "type", None) == "WorkflowTypeNotRegistered"
