"""Matching: the transfer queue processor and the completion handler.

* :class:`TransferQueueProcessor` carries out transfer tasks: it publishes
  workflow and activity tasks to broker queues, starts child workflows,
  delivers signals and cancel requests to other workflows and reports closed
  runs to their parents. It gets tasks in memory right after each commit; the
  outbox rows are the safety net: at start and then periodically, a sweep
  re-drives rows that are still pending (lost messages, crashes).
* :class:`CompletionHandler` applies what workers and services send back,
  verifying task tokens, and drops stale or duplicate completions with a
  metric instead of applying them twice.
"""

from __future__ import annotations

import asyncio
import collections
import logging
import uuid
from collections.abc import Awaitable, Callable
from datetime import UTC, datetime
from typing import Any

from tenacity import AsyncRetrying, retry_if_exception, stop_after_delay, wait_exponential

from brokers import envelope as env
from brokers import tracing
from brokers.base import Broker, BrokerError, Delivery, queue_name
from orchestrator.api import commands as C
from orchestrator.api import events as E
from orchestrator.api.common import Failure, WorkflowRef
from orchestrator.api.enums import WorkflowExecutionStatus
from orchestrator.api.tasks import TransferKind, TransferTask
from orchestrator.errors import (
    InvalidArgumentError,
    InvalidTaskTokenError,
    OrchestratorError,
    QueryFailedError,
    QueryTimeoutError,
    ShardNotOwnedError,
    StaleTaskError,
    UnavailableError,
    WorkflowNotFoundError,
)
from orchestrator.history.engine import StartRequest, activity_deadline
from orchestrator.history.service import HistoryService
from orchestrator.history.state import ExecutionState
from orchestrator.logging import reset_log_context, set_log_context
from orchestrator.matching.cross_shard import CrossShardClient, HistoryOp, apply, child_closed_op, start_op
from orchestrator.metrics import METRICS

log = logging.getLogger("sagas.matching")


def _note_worker_start(state: ExecutionState, scheduled_event_id: int, attempt: int, started_at: float | None,
                       now: float) -> ExecutionState:
    """Take the worker's start time of an attempt it sent no start report for (a quick one) into the
    cached state, so the latency metrics split schedule-to-start from start-to-close; cache only."""
    info = state.activities.get(scheduled_event_id)
    if started_at is not None and info is not None and info.attempt == attempt and info.started_time is None:
        info.started_time = min(max(started_at, info.dispatch_time or started_at), now)
    return state


class TransferQueueProcessor:
    """Carries out transfer tasks (see module docstring)."""

    def __init__(
        self,
        history: HistoryService,
        broker: Broker,
        *,
        token_key: bytes,
        prefix: str = "sagas",
        sweep_interval: float = 5.0,
        concurrency: int = 8,
    ) -> None:
        self.history = history
        self.broker = broker
        self.token_key = token_key
        self.prefix = prefix
        self.sweep_interval = sweep_interval
        self._queue: asyncio.Queue[TransferTask] = asyncio.Queue()
        self._inflight: set[str] = set()
        self._done_ids: dict[int, list[str]] = {}
        self._tasks: list[asyncio.Task[None]] = []
        self._concurrency = concurrency
        self._busy = 0
        self._queries: dict[str, asyncio.Future[Any]] = {}
        self._published: set[str] = set()
        self._declared: set[str] = set()
        self._sticky: collections.OrderedDict[str, str] = collections.OrderedDict()
        """Run id -> the sticky queue of the worker that completed its last workflow task."""
        self.remote: CrossShardClient | None = None
        """In a cluster: sends operations on workflows of shards owned elsewhere to their owner."""
        """Tasks this process already published to a non-durable broker: their rows stay
        until the task is done, and the sweep must not publish them again (the durable
        timeout timers re-drive a lost one)."""

    max_sticky_runs = 100_000
    """Runs whose sticky queue is remembered (least recently used forgotten first)."""

    def set_sticky(self, namespace: str, run_id: str, queue: str) -> None:
        """Send the run's next workflow task to ``queue`` (a sticky queue of ``namespace``), or not ("")."""
        if queue and queue.startswith(f"{self.prefix}.{namespace}.sticky.") and self.broker.sticky_routing:
            self._sticky[run_id] = queue
            self._sticky.move_to_end(run_id)
            while len(self._sticky) > self.max_sticky_runs:
                self._sticky.popitem(last=False)
        else:
            self._sticky.pop(run_id, None)

    def sticky_queue_of(self, run_id: str) -> str | None:
        return self._sticky.get(run_id)

    @property
    def completions_queue(self) -> str:
        return f"{self.prefix}.completions"

    def busy(self) -> bool:
        return self._busy > 0 or not self._queue.empty()

    # lifecycle -----------------------------------------------------------------------------
    async def start(self) -> None:
        await self.broker.declare_queue(self.completions_queue)
        await self.sweep()
        self._tasks = [asyncio.create_task(self._worker(), name=f"transfer-{i}") for i in range(self._concurrency)]
        self._tasks.append(asyncio.create_task(self._sweeper(), name="transfer-sweeper"))

    async def stop(self) -> None:
        for t in self._tasks:
            t.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)
        await self._flush_deletes()

    def submit_transfer(self, tasks: list[TransferTask]) -> None:
        for task in tasks:
            if task.task_id not in self._inflight:
                self._inflight.add(task.task_id)
                self._queue.put_nowait(task)

    async def sweep(self) -> None:
        """Re-drive outbox rows: everything still there that is not being processed."""
        for shard in list(self.history.range_ids):  # a copy: shards come and go while this awaits
            for task in await self.history.store.get_transfer_tasks(shard, limit=10_000):
                self.submit_transfer([task])
        await self._flush_deletes()

    async def _sweeper(self) -> None:
        while True:
            await asyncio.sleep(self.sweep_interval)
            try:
                await self.sweep()
            except Exception:  # noqa: BLE001 - keep sweeping; the next round retries
                log.exception("transfer sweep failed")

    async def _worker(self) -> None:
        while True:
            task = await self._queue.get()
            self._busy += 1
            ctx = set_log_context(
                namespace=task.namespace, workflow_id=task.workflow_id, run_id=task.run_id, shard=task.shard_id
            )
            try:
                done = await self._process(task)
            except Exception as exc:  # noqa: BLE001 - the row stays; the sweep retries
                done = False
                log.warning("transfer task %s %s failed: %s", task.kind, task.workflow_id, exc)
            finally:
                self._busy -= 1
                reset_log_context(ctx)
            self._inflight.discard(task.task_id)
            if done:
                self._published.discard(task.task_id)
                self._done_ids.setdefault(task.shard_id, []).append(task.task_id)
                if self._queue.empty():
                    await self._flush_deletes()

    async def _flush_deletes(self) -> None:
        done, self._done_ids = self._done_ids, {}
        for shard, ids in done.items():
            try:
                await self.history.store.delete_transfer_tasks(shard, ids)
            except Exception:  # noqa: BLE001 - rows come back in the next sweep; processing is idempotent
                log.warning("could not delete %d transfer rows", len(ids))

    # processing ----------------------------------------------------------------------------
    async def _process(self, task: TransferTask) -> bool:
        """Carry out one task; True when its outbox row can be deleted."""
        try:
            state = await self.history.get_state(task.namespace, task.workflow_id, task.run_id)
        except WorkflowNotFoundError:
            return True
        match task.kind:
            case TransferKind.WORKFLOW_TASK:
                wft = state.workflow_task
                if not state.is_open or wft is None or wft.scheduled_event_id != task.event_id or wft.attempt != task.attempt:
                    return True
                if task.task_id in self._published:
                    return False
                events = await self.history.store.read_events(
                    state.namespace, state.workflow_id, state.run_id, wft.first_event_id
                )
                updates = [
                    env.UpdateRequest(update_id=u.update_id, name=u.name, input=u.input)
                    for u in state.updates.values()
                    if not u.accepted_event_id and not u.completed
                ]
                token = env.TaskToken(
                    namespace=state.namespace,
                    workflow_id=state.workflow_id,
                    run_id=state.run_id,
                    scheduled_event_id=wft.scheduled_event_id,
                    attempt=wft.attempt,
                    kind="wf",
                )
                msg = env.WorkflowTask(
                    namespace=state.namespace,
                    workflow_id=state.workflow_id,
                    run_id=state.run_id,
                    workflow_type=state.workflow_type,
                    task_queue=wft.task_queue,
                    scheduled_event_id=wft.scheduled_event_id,
                    attempt=wft.attempt,
                    task_token=env.sign_token(token, self.token_key),
                    events=[e.model_dump(mode="json") for e in events if e.event_id <= wft.scheduled_event_id],
                    first_event_id=wft.first_event_id,
                    next_event_id=wft.scheduled_event_id + 1,
                    updates=updates,
                )
                normal = queue_name(self.prefix, state.namespace, wft.task_queue, "wf")
                # A first attempt goes to the sticky queue of the worker that has the run cached;
                # the broker falls back to the normal queue when that worker is gone.
                sticky = self._sticky.get(state.run_id) if wft.attempt == 1 else None
                await self._publish(normal, env.encode(msg), sticky=sticky)
                METRICS.tasks_dispatched.labels(kind="workflow").inc()
                return self._published_ok(task)
            case TransferKind.ACTIVITY_TASK:
                info = state.activities.get(task.event_id) if state.is_open else None
                if info is None or info.attempt != task.attempt or info.dispatch_time is None:
                    return True
                if task.task_id in self._published:
                    return False
                token = env.TaskToken(
                    namespace=state.namespace,
                    workflow_id=state.workflow_id,
                    run_id=state.run_id,
                    scheduled_event_id=info.scheduled_event_id,
                    attempt=info.attempt,
                    kind="act",
                    activity_id=info.activity_id,
                )
                deadline = activity_deadline(info)[0] if info.started_time is None else None
                amsg = env.ActivityTask(
                    namespace=state.namespace,
                    workflow_id=state.workflow_id,
                    run_id=state.run_id,
                    workflow_type=state.workflow_type,
                    activity_id=info.activity_id,
                    activity_type=info.activity_type,
                    attempt=info.attempt,
                    task_token=env.sign_token(token, self.token_key),
                    input=info.input,
                    headers=info.headers,
                    reply_to=self.completions_queue,
                    deadline=datetime.fromtimestamp(deadline, UTC) if deadline else None,
                    heartbeat_timeout=info.heartbeat_timeout,
                    heartbeat_details=info.heartbeat_details,
                    scheduled_event_id=info.scheduled_event_id,
                    task_queue=info.task_queue,
                )
                with tracing.span(f"DispatchActivity:{info.activity_type}", parent=info.headers, kind="producer",
                                  attributes={"sagas.workflow_id": state.workflow_id,
                                              "sagas.activity_id": info.activity_id, "sagas.attempt": info.attempt}):  # fmt: skip
                    await self._publish(
                        queue_name(self.prefix, state.namespace, info.task_queue, "act"), env.encode(amsg),
                        tracing.inject({}) if tracing.trace_headers(info.headers) else None,
                    )
                METRICS.tasks_dispatched.labels(kind="activity").inc()
                return self._published_ok(task)
            case TransferKind.START_CHILD:
                await self._start_child(state.namespace, state.workflow_id, state.run_id, task.event_id)
                return True
            case TransferKind.SIGNAL_EXTERNAL | TransferKind.CANCEL_EXTERNAL:
                await self._external(state.namespace, state.workflow_id, state.run_id, task)
                return True
            case TransferKind.CLOSE_EXECUTION:
                self._sticky.pop(state.run_id, None)
                await self._closed(state.namespace, state.workflow_id, state.run_id)
                return True
        return True

    def _published_ok(self, task: TransferTask) -> bool:
        if self.broker.durable:
            return True
        self._published.add(task.task_id)
        return False

    async def _publish(
        self, queue: str, body: bytes, headers: dict[str, str] | None = None, *, sticky: str | None = None
    ) -> None:
        try:
            if queue not in self._declared:  # a real broker may refuse a message for a queue nobody declared yet
                await self.broker.declare_queue(queue)
                self._declared.add(queue)
            if sticky is not None:
                await self.broker.publish_sticky(sticky, queue, body, headers)
            else:
                await self.broker.publish(queue, body, headers)
        except BrokerError:
            METRICS.broker_errors.inc()
            raise

    async def _read_event(self, ns: str, wid: str, rid: str, event_id: int) -> E.HistoryEvent:
        [event] = await self.history.store.read_events(ns, wid, rid, event_id, 1)
        return event

    async def _on(self, op: HistoryOp) -> tuple[str, bool]:
        """Run ``op`` here when this process owns its workflow's shard, else on the owner."""
        if self.remote is None or self.history.owns(op.namespace, op.workflow_id):
            result = await apply(self.history, op)
        else:
            result = await self.remote.call(self.history.shard_of(op.namespace, op.workflow_id), op)
        return result.run_id, result.started

    async def _start_child(self, ns: str, wid: str, rid: str, initiated_id: int) -> None:
        ev = await self._read_event(ns, wid, rid, initiated_id)
        assert isinstance(ev, E.StartChildWorkflowExecutionInitiated)
        req = StartRequest(
            namespace=ev.namespace,
            workflow_id=ev.workflow_id,
            workflow_type=ev.workflow_type,
            task_queue=ev.task_queue,
            input=ev.input,
            request_id=f"child:{rid}:{initiated_id}",
            id_reuse_policy=ev.workflow_id_reuse_policy,
            execution_timeout=ev.workflow_execution_timeout,
            run_timeout=ev.workflow_run_timeout,
            task_timeout=ev.workflow_task_timeout,
            retry_policy=ev.retry_policy,
            cron_schedule=ev.cron_schedule,
            memo=ev.memo,
            search_attributes=ev.search_attributes,
            parent=WorkflowRef(namespace=ns, workflow_id=wid, run_id=rid),
            parent_initiated_event_id=initiated_id,
        )
        engine = self.history.engine
        try:
            child_run_id, _ = await self._on(start_op(req))
        except OrchestratorError as exc:
            if exc.code != "workflow_already_started":
                raise
            await self.history.update(ns, wid, rid, lambda s, now: engine.child_start_failed(s, initiated_id, "WorkflowAlreadyExists", now=now))
            return
        await self.history.update(ns, wid, rid, lambda s, now: engine.child_started(s, initiated_id, child_run_id, now=now))

    async def _external(self, ns: str, wid: str, rid: str, task: TransferTask) -> None:
        ev = await self._read_event(ns, wid, rid, task.event_id)
        engine = self.history.engine
        ok, cause = True, ""
        try:
            if isinstance(ev, E.SignalExternalWorkflowExecutionInitiated):
                await self._on(HistoryOp(
                    op="signal", namespace=ev.namespace, workflow_id=ev.workflow_id, run_id=ev.run_id,
                    signal_name=ev.signal_name, input=list(ev.input), request_id=f"ext:{rid}:{task.event_id}",
                ))  # fmt: skip
            else:
                assert isinstance(ev, E.RequestCancelExternalWorkflowExecutionInitiated)
                await self._on(HistoryOp(op="request_cancel", namespace=ev.namespace, workflow_id=ev.workflow_id,
                                         run_id=ev.run_id, reason=ev.reason))  # fmt: skip
        except (WorkflowNotFoundError, OrchestratorError) as exc:
            if exc.code not in ("workflow_not_found", "workflow_not_running"):
                raise
            ok, cause = False, "ExternalWorkflowExecutionNotFound"
        initiated = task.event_id
        await self.history.update(ns, wid, rid, lambda s, now: engine.external_request_done(s, initiated, ok=ok, cause=cause, now=now))

    async def _closed(self, ns: str, wid: str, rid: str) -> None:
        state = await self.history.get_state(ns, wid, rid)
        # Parent close policy: act on children still open.
        for child in list(state.children.values()):
            if not child.run_id or child.parent_close_policy == "Abandon":
                continue
            try:
                if child.parent_close_policy == "Terminate":
                    await self._on(HistoryOp(op="terminate", namespace=child.namespace, workflow_id=child.workflow_id,
                                             run_id=child.run_id, reason="parent closed (ParentClosePolicy.TERMINATE)"))  # fmt: skip
                else:
                    await self._on(HistoryOp(op="request_cancel", namespace=child.namespace,
                                             workflow_id=child.workflow_id, run_id=child.run_id,
                                             reason="parent closed"))  # fmt: skip
            except OrchestratorError as exc:
                if exc.code not in ("workflow_not_found", "workflow_not_running"):
                    raise
        if state.parent is None or state.parent_initiated_event_id is None:
            return
        if state.status == WorkflowExecutionStatus.CONTINUED_AS_NEW:
            return  # the parent hears from the last run of the chain
        close_event = (await self.history.store.read_events(ns, wid, rid, state.next_event_id - 1, 1))[0]
        parent, initiated = state.parent, state.parent_initiated_event_id
        try:
            await self._on(child_closed_op(parent.namespace, parent.workflow_id, parent.run_id, initiated, close_event))
        except OrchestratorError as exc:
            if exc.code not in ("workflow_not_found", "workflow_not_running"):
                raise

    # queries --------------------------------------------------------------------------------
    async def query(self, ns: str, wid: str, rid: str, name: str, payloads: list[Any], timeout: float) -> Any:
        state = await self.history.get_state(ns, wid, rid)
        query_id = uuid.uuid4().hex
        token = env.TaskToken(
            namespace=ns, workflow_id=wid, run_id=state.run_id, scheduled_event_id=0, attempt=0, kind="wf",
            activity_id=f"query:{query_id}",
        )
        msg = env.WorkflowTask(
            namespace=ns,
            workflow_id=wid,
            run_id=state.run_id,
            workflow_type=state.workflow_type,
            task_queue=state.task_queue,
            scheduled_event_id=0,
            attempt=0,
            task_token=env.sign_token(token, self.token_key),
            first_event_id=state.next_event_id,
            next_event_id=state.next_event_id,
            query=env.QueryRequest(query_id=query_id, name=name, input=payloads),
        )
        future: asyncio.Future[Any] = asyncio.get_running_loop().create_future()
        self._queries[query_id] = future
        try:
            await self._publish(queue_name(self.prefix, ns, state.task_queue, "wf"), env.encode(msg))
            return await asyncio.wait_for(future, timeout)
        except TimeoutError as exc:
            raise QueryTimeoutError(f"no worker answered query {name!r} within {timeout}s") from exc
        finally:
            self._queries.pop(query_id, None)

    def answer_query(self, query_id: str, reply: env.WorkflowTaskCompleted) -> None:
        future = self._queries.get(query_id)
        if future is None or future.done():
            raise StaleTaskError(f"query {query_id} is no longer waiting (timed out?)")
        if reply.query_failure is not None:
            future.set_exception(QueryFailedError(reply.query_failure.message, details={"failure": reply.query_failure.model_dump(mode="json")}))
        else:
            future.set_result(reply.query_result)


class CompletionHandler:
    """Applies workers' and services' replies to history (HTTP and the completions queue)."""

    def __init__(self, history: HistoryService, matching: TransferQueueProcessor, *, token_key: bytes) -> None:
        self.history = history
        self.matching = matching
        self.token_key = token_key
        self._consumer: asyncio.Task[None] | None = None
        self.store_outage_patience = 20.0
        """Seconds a reply from the completions queue is retried through a store outage."""
        self.forward: Callable[[int, bytes], Awaitable[bool]] | None = None
        """Hands a reply for a shard owned by another process to that process (True: applied there)."""

    async def handle(self, reply: env.Reply) -> bool:
        """Apply one reply; returns ``cancel_requested`` for heartbeats. Raises OrchestratorError."""
        try:
            token = env.verify_token(reply.task_token, self.token_key)
        except env.EnvelopeError as exc:
            METRICS.completions_rejected.labels(reason="invalid_token").inc()
            raise InvalidTaskTokenError(str(exc)) from exc
        ctx = set_log_context(
            namespace=token.namespace,
            workflow_id=token.workflow_id,
            run_id=token.run_id,
            shard=self.history.shard_of(token.namespace, token.workflow_id),
        )
        try:
            return await self._apply(reply, token)
        finally:
            reset_log_context(ctx)

    async def _apply(self, reply: env.Reply, token: env.TaskToken) -> bool:
        engine = self.history.engine
        ns, wid, rid = token.namespace, token.workflow_id, token.run_id
        sid, attempt = token.scheduled_event_id, token.attempt
        try:
            match reply:
                case env.WorkflowTaskCompleted() if token.activity_id.startswith("query:"):
                    self.matching.answer_query(token.activity_id[len("query:") :], reply)
                    return False
                case env.WorkflowTaskCompleted():
                    # Before the write: its commit hands the next workflow task to matching.
                    self.matching.set_sticky(ns, rid, reply.sticky_queue)
                    try:
                        cmds = C.parse_commands(reply.commands)
                    except ValueError as exc:
                        failure = Failure(message=f"worker sent invalid commands: {exc}", type="BadCommand", kind="server")
                        await self.history.update(ns, wid, rid, lambda s, now: engine.fail_workflow_task(s, sid, attempt, failure, now=now, cause="BadCommand"))
                        raise InvalidArgumentError(f"invalid commands: {exc}") from exc
                    await self.history.update(
                        ns, wid, rid, lambda s, now: engine.complete_workflow_task(s, sid, attempt, cmds, now=now, identity=reply.identity)
                    )
                case env.WorkflowTaskFailed():
                    self.matching.set_sticky(ns, rid, "")
                    await self.history.update(
                        ns, wid, rid,
                        lambda s, now: engine.fail_workflow_task(s, sid, attempt, reply.failure, now=now, cause=reply.cause, identity=reply.identity),
                    )
                case env.ActivityStarted():
                    await self.history.update(ns, wid, rid, lambda s, now: engine.activity_started(s, sid, attempt, now=now, identity=reply.identity))
                case env.ActivityHeartbeat():
                    m = await self.history.update(ns, wid, rid, lambda s, now: engine.activity_heartbeat(s, sid, attempt, reply.details, now=now))
                    return bool(m.result)
                case env.ActivityResult() if reply.canceled:
                    details = [reply.result] if reply.result is not None else []
                    await self.history.update(ns, wid, rid, lambda s, now: engine.activity_canceled(
                        _note_worker_start(s, sid, attempt, reply.started_at, now), sid, attempt, details, now=now,
                        identity=reply.identity))  # fmt: skip
                case env.ActivityResult() if reply.failure is not None:
                    failure = reply.failure
                    await self.history.update(ns, wid, rid, lambda s, now: engine.activity_failed(
                        _note_worker_start(s, sid, attempt, reply.started_at, now), sid, attempt, failure, now=now,
                        identity=reply.identity))  # fmt: skip
                case env.ActivityResult():
                    await self.history.update(ns, wid, rid, lambda s, now: engine.activity_completed(
                        _note_worker_start(s, sid, attempt, reply.started_at, now), sid, attempt, reply.result, now=now,
                        identity=reply.identity))  # fmt: skip
        except StaleTaskError:
            METRICS.completions_rejected.labels(reason="stale").inc()
            raise
        except WorkflowNotFoundError as exc:
            METRICS.completions_rejected.labels(reason="stale").inc()
            raise StaleTaskError(str(exc)) from exc
        METRICS.completions_applied.labels(kind=reply.kind).inc()
        return False

    # the completions queue (plain-JSON services reply there) ----------------------------------
    def start_consumer(self) -> None:
        self._consumer = asyncio.create_task(self._consume(), name="completions-consumer")

    async def stop(self) -> None:
        if self._consumer:
            self._consumer.cancel()
            await asyncio.gather(self._consumer, return_exceptions=True)

    async def _handle_patiently(self, reply: env.Reply) -> None:
        """Apply a reply, riding out a store outage while the message stays leased: requeueing at
        once would burn its deliveries in seconds and dead-letter a perfectly valid reply."""
        async for attempt in AsyncRetrying(
            # a shard owned by another process is not an outage: the caller forwards at once
            retry=retry_if_exception(lambda e: isinstance(e, UnavailableError) and not isinstance(e, ShardNotOwnedError)),
            wait=wait_exponential(multiplier=0.1, max=2.0),
            stop=stop_after_delay(self.store_outage_patience),
            reraise=True,
        ):
            with attempt:
                await self.handle(reply)

    @staticmethod
    def _count_dead_letter(broker: Any, queue: str) -> None:
        # The built-in broker counts its own dead letters (``on_dead_letter``); others are counted here.
        if getattr(broker, "on_dead_letter", None) is None:
            METRICS.dead_letters.labels(queue=queue).inc()

    async def _consume(self) -> None:
        broker, queue = self.matching.broker, self.matching.completions_queue
        while True:
            try:
                deliveries = await broker.receive(queue, max_messages=32, wait=5.0)
            except BrokerError:
                await asyncio.sleep(1.0)
                continue
            for d in deliveries:
                try:
                    await self._consume_one(broker, queue, d)
                except BrokerError as exc:
                    # Settling failed (the broker went away): it delivers the message again, and a
                    # reply applied already is then dropped as stale. Never let this end the loop.
                    METRICS.broker_errors.inc()
                    log.warning("could not settle a completion on %s (it will be redelivered): %s", queue, exc)

    async def _consume_one(self, broker: Broker, queue: str, d: Delivery) -> None:
        """Apply one reply from the completions queue and settle it (BrokerError: settling failed)."""
        try:
            reply = env.parse_reply(d.body)
            await self._handle_patiently(reply)
        except env.EnvelopeError as exc:
            METRICS.completions_rejected.labels(reason=exc.reason).inc()
            await broker.nack(d, requeue=False, reason=f"{exc.reason}: {exc}")
            self._count_dead_letter(broker, queue)
            return
        except StaleTaskError:
            pass  # a duplicate or late reply: counted, dropped, never applied twice
        except ShardNotOwnedError as exc:
            # Another process owns the workflow's shard: hand the reply to it.
            if self.forward is None or not await self.forward(exc.shard, d.body):
                await broker.nack(d, requeue=True, reason=exc.message)
                return
        except InvalidTaskTokenError as exc:
            await broker.nack(d, requeue=False, reason=f"{exc.code}: {exc.message}")
            self._count_dead_letter(broker, queue)
            return
        except Exception as exc:  # noqa: BLE001 - transient: let the broker redeliver
            log.warning("completion failed, will be redelivered: %s", exc)
            await broker.nack(d, requeue=True, reason=str(exc))
            return
        await broker.ack(d)
