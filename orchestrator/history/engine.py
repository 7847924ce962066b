"""The history engine: a pure function from (mutable state, input) to (new state, events, tasks).

Nothing here does I/O. The history service loads an execution, calls one of
the ``HistoryEngine`` methods, and writes the returned :class:`Mutation` in one
store transaction (CAS on ``db_version``). Tests drive the engine directly.

Rules worth knowing:

* While a workflow task is out (dispatched, not completed) new input events
  (signals, activity results, timer fires) are *buffered* in the state and
  appended after that task's ``WorkflowTaskCompleted``, so every event a worker
  saw precedes the task's completion in history.
* ``WorkflowTaskStarted`` and ``WorkflowTaskCompleted`` are written together
  when the task completes (one transaction per workflow task).
* Activity retries append no event: the back-off is a durable timer and only
  the final outcome (with its attempt and last failure) is written.
* Every task carries the ids (``event_id``/``attempt``) it was made for; a
  task that no longer matches the state is *stale* and ignored.
"""

from __future__ import annotations

import math
import uuid
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

from orchestrator.api import commands as C
from orchestrator.api import events as E
from orchestrator.api.common import Failure, Payloads, RetryPolicySpec, WorkflowRef
from orchestrator.api.cron import cron_next_fire
from orchestrator.api.enums import (
    RetryState,
    TimeoutType,
    WorkflowExecutionStatus,
    WorkflowIDReusePolicy,
)
from orchestrator.api.tasks import TimerKind, TimerTask, TransferKind, TransferTask
from orchestrator.errors import (
    InvalidArgumentError,
    StaleTaskError,
    WorkflowAlreadyStartedError,
    WorkflowNotRunningError,
)
from orchestrator.history.state import (
    ActivityInfo,
    ChildInfo,
    ExecutionState,
    ExternalRequestInfo,
    TimerInfo,
    UpdateInfo,
    WorkflowTaskInfo,
)
from orchestrator.persistence.base import CurrentRun, VisibilityRecord

DEFAULT_ACTIVITY_RETRY = RetryPolicySpec(initial_interval=1.0, backoff_coefficient=2.0, maximum_interval=100.0)
MAX_REQUEST_IDS = 200
MAX_WORKFLOW_TASK_TIMEOUT = 600.0
_EPSILON = 0.001

_CLOSE_COMMANDS = (
    C.CompleteWorkflowExecution,
    C.FailWorkflowExecution,
    C.CancelWorkflowExecution,
    C.ContinueAsNewWorkflowExecution,
)


def _ts(now: float) -> datetime:
    return datetime.fromtimestamp(now, UTC)


@dataclass
class StartRequest:
    """Everything needed to start a run (from the frontend, a child start or continue-as-new)."""

    namespace: str
    workflow_id: str
    workflow_type: str
    task_queue: str
    input: Payloads = field(default_factory=list)
    request_id: str = ""
    id_reuse_policy: str = WorkflowIDReusePolicy.ALLOW_DUPLICATE
    execution_timeout: float | None = None
    run_timeout: float | None = None
    task_timeout: float | None = None
    retry_policy: RetryPolicySpec | None = None
    cron_schedule: str | None = None
    memo: dict[str, Any] = field(default_factory=dict)
    search_attributes: dict[str, Any] = field(default_factory=dict)
    start_delay: float | None = None
    signal_name: str | None = None
    signal_input: Payloads = field(default_factory=list)
    identity: str = ""
    parent: WorkflowRef | None = None
    parent_initiated_event_id: int | None = None
    first_run_id: str = ""
    continued_from_run_id: str | None = None
    attempt: int = 1
    execution_deadline: float | None = None
    last_completion_result: Any = None
    continued_failure: Failure | None = None
    run_id: str = ""
    headers: dict[str, Any] = field(default_factory=dict)


@dataclass
class Mutation:
    """What one engine call produced: write it atomically, or drop it if ``noop``."""

    state: ExecutionState
    expected_version: int | None
    events: list[E.HistoryEvent] = field(default_factory=list)
    transfer_tasks: list[TransferTask] = field(default_factory=list)
    timer_tasks: list[TimerTask] = field(default_factory=list)
    visibility: VisibilityRecord | None = None
    set_current: bool = False
    expected_current_run_id: str | None = None
    follow_up: Mutation | None = None
    """A second execution written in the same transaction (continue-as-new's new run)."""
    cache_only: bool = False
    """Only cache-only fields changed: update the cached state, write nothing."""
    noop: bool = False
    result: Any = None

    @property
    def needs_write(self) -> bool:
        return not (self.noop or self.cache_only)


class _Builder:
    """Collects the effects of one engine call on a private copy of the state."""

    def __init__(self, state: ExecutionState, now: float, shard_id: int, *, create: bool = False) -> None:
        self.expected_version = None if create else state.db_version
        self.state = state if create else state.model_copy(deep=True)
        self.state.db_version = 1 if create else state.db_version + 1
        self.now = now
        self.shard_id = shard_id
        self.events: list[E.HistoryEvent] = []
        self.transfer: list[TransferTask] = []
        self.timers: list[TimerTask] = []
        self.visibility_changed = create
        self.follow_up_start: StartRequest | None = None
        self.needs_workflow_task = False

    # events -------------------------------------------------------------------------
    def add(self, cls: type[Any], **fields: Any) -> Any:
        if fields.get("started_event_id") == -1:  # "the event appended just before"
            fields["started_event_id"] = self.state.next_event_id - 1
        event = cls(event_id=self.state.next_event_id, event_time=_ts(self.now), **fields)
        self.state.next_event_id += 1
        self.events.append(event)
        return event

    def add_input(self, cls: type[Any], **fields: Any) -> None:
        """Append an input event now, or buffer it while a workflow task is out."""
        if self.state.workflow_task is not None:
            self.state.buffered_events.append({"cls": cls.__name__, "time": self.now, **fields})
            return
        self.add(cls, **fields)
        self.needs_workflow_task = True

    def flush_buffer(self) -> bool:
        buffered, self.state.buffered_events = self.state.buffered_events, []
        for item in buffered:
            fields = dict(item)
            cls = getattr(E, fields.pop("cls"))
            fields.pop("time", None)
            self.add(cls, **fields)
        if buffered:
            self.needs_workflow_task = True
        return bool(buffered)

    # tasks --------------------------------------------------------------------------
    def transfer_task(self, kind: TransferKind, **fields: Any) -> None:
        s = self.state
        self.transfer.append(
            TransferTask(
                shard_id=self.shard_id,
                namespace=s.namespace,
                workflow_id=s.workflow_id,
                run_id=s.run_id,
                kind=kind,
                **fields,
            )
        )

    def timer_task(self, kind: TimerKind, fire_time: float, **fields: Any) -> None:
        s = self.state
        self.timers.append(
            TimerTask(
                shard_id=self.shard_id,
                namespace=s.namespace,
                workflow_id=s.workflow_id,
                run_id=s.run_id,
                kind=kind,
                fire_time=fire_time,
                **fields,
            )
        )

    # workflow tasks -----------------------------------------------------------------
    def schedule_workflow_task(self, attempt: int = 1, delay: float = 0.0) -> None:
        s = self.state
        if s.workflow_task is not None or not s.is_open:
            return
        timeout = min(s.workflow_task_timeout * (2 ** min(attempt - 1, 10)), MAX_WORKFLOW_TASK_TIMEOUT)
        ev = self.add(E.WorkflowTaskScheduled, task_queue=s.task_queue, start_to_close_timeout=timeout, attempt=attempt)
        s.workflow_task = WorkflowTaskInfo(
            scheduled_event_id=ev.event_id,
            attempt=attempt,
            task_queue=s.task_queue,
            dispatch_time=self.now + delay,
            timeout=timeout,
            first_event_id=s.last_completed_wft_event_id + 1,
        )
        if delay > 0:
            self.timer_task(TimerKind.WORKFLOW_TASK_RETRY, self.now + delay, event_id=ev.event_id, attempt=attempt)
        else:
            self.dispatch_workflow_task()

    def dispatch_workflow_task(self) -> None:
        wft = self.state.workflow_task
        assert wft is not None
        wft.dispatch_time = self.now
        self.transfer_task(
            TransferKind.WORKFLOW_TASK,
            event_id=wft.scheduled_event_id,
            attempt=wft.attempt,
            task_queue=wft.task_queue,
        )
        self.timer_task(
            TimerKind.WORKFLOW_TASK_TIMEOUT,
            self.now + wft.timeout,
            event_id=wft.scheduled_event_id,
            attempt=wft.attempt,
        )

    # activities ---------------------------------------------------------------------
    def dispatch_activity(self, info: ActivityInfo) -> None:
        info.dispatch_time = self.now
        info.started_time = None
        info.last_heartbeat_time = None
        self.transfer_task(
            TransferKind.ACTIVITY_TASK,
            event_id=info.scheduled_event_id,
            attempt=info.attempt,
            task_queue=info.task_queue,
        )
        self.timer_task(
            TimerKind.ACTIVITY_TIMEOUT,
            activity_deadline(info)[0],
            event_id=info.scheduled_event_id,
            attempt=info.attempt,
        )

    # closing ------------------------------------------------------------------------
    def close(self, status: WorkflowExecutionStatus, *, retention_days: float = 3.0) -> None:
        s = self.state
        s.status = status
        s.close_time = self.now
        s.workflow_task = None
        self.visibility_changed = True
        self.transfer_task(TransferKind.CLOSE_EXECUTION, data={"status": str(status)})
        if math.isfinite(retention_days):  # infinite: keep forever (the time-skipping test server)
            self.timer_task(TimerKind.DELETE_HISTORY, self.now + retention_days * 86400)

    def mutation(self, **kwargs: Any) -> Mutation:
        s = self.state
        if self.needs_workflow_task:
            self.schedule_workflow_task()
        vis = visibility_of(s) if self.visibility_changed else None
        return Mutation(
            state=s,
            expected_version=self.expected_version,
            events=self.events,
            transfer_tasks=self.transfer,
            timer_tasks=self.timers,
            visibility=vis,
            **kwargs,
        )


def visibility_of(s: ExecutionState) -> VisibilityRecord:
    """The list API's row for a run, from its state (what the engine writes with each change).

    Example::

        record = visibility_of(state)
        assert record.history_length == state.next_event_id - 1
    """
    return VisibilityRecord(
        namespace=s.namespace,
        workflow_id=s.workflow_id,
        run_id=s.run_id,
        workflow_type=s.workflow_type,
        task_queue=s.task_queue,
        status=str(s.status),
        start_time=s.start_time,
        execution_time=s.execution_time,
        close_time=s.close_time,
        history_length=s.next_event_id - 1,
        search_attributes=dict(s.search_attributes),
        memo=dict(s.memo),
        parent_workflow_id=s.parent.workflow_id if s.parent else None,
    )


def activity_deadline(info: ActivityInfo) -> tuple[float, TimeoutType]:
    """The earliest pending deadline of an activity attempt and which timeout it is.

    Start-to-close counts from the attempt's dispatch unless the worker reported
    the start (which only moves it later); heartbeat counts from the last
    heartbeat, start or dispatch.
    """
    candidates: list[tuple[float, TimeoutType]] = []
    dispatched = info.dispatch_time if info.dispatch_time is not None else info.scheduled_time
    if info.schedule_to_close_timeout:
        candidates.append((info.scheduled_time + info.schedule_to_close_timeout, TimeoutType.SCHEDULE_TO_CLOSE))
    if info.schedule_to_start_timeout and info.started_time is None:
        candidates.append((dispatched + info.schedule_to_start_timeout, TimeoutType.SCHEDULE_TO_START))
    if info.start_to_close_timeout:
        started = info.started_time if info.started_time is not None else dispatched
        candidates.append((started + info.start_to_close_timeout, TimeoutType.START_TO_CLOSE))
    if info.heartbeat_timeout:
        last = max(t for t in (info.last_heartbeat_time, info.started_time, dispatched) if t is not None)
        candidates.append((last + info.heartbeat_timeout, TimeoutType.HEARTBEAT))
    return min(candidates, key=lambda c: c[0])


def check_id_reuse(policy: str, current: CurrentRun | None, request_id: str) -> str | None:
    """Decide a start against the current run of the workflow id.

    Returns ``"reuse"`` (same request id: idempotent start), ``"terminate"``
    (terminate the running one first), or None (go ahead). Raises
    :class:`WorkflowAlreadyStartedError` when the policy forbids the start.
    """
    if current is None:
        return None
    if request_id and current.start_request_id == request_id:
        return "reuse"
    running = current.status == WorkflowExecutionStatus.RUNNING
    if running:
        if policy == WorkflowIDReusePolicy.TERMINATE_IF_RUNNING:
            return "terminate"
        raise WorkflowAlreadyStartedError(
            f"a run of this workflow id is already running (run id {current.run_id})",
            details={"run_id": current.run_id},
        )
    if policy == WorkflowIDReusePolicy.REJECT_DUPLICATE:
        raise WorkflowAlreadyStartedError(
            f"workflow id was used before (run id {current.run_id}) and the id reuse policy is RejectDuplicate",
            details={"run_id": current.run_id},
        )
    if policy == WorkflowIDReusePolicy.ALLOW_DUPLICATE_FAILED_ONLY and current.status in (
        WorkflowExecutionStatus.COMPLETED,
        WorkflowExecutionStatus.CONTINUED_AS_NEW,
    ):
        raise WorkflowAlreadyStartedError(
            f"previous run {current.run_id} completed and the id reuse policy is AllowDuplicateFailedOnly",
            details={"run_id": current.run_id},
        )
    return None


class HistoryEngine:
    """The state transitions of a workflow run. Stateless; safe to share.

    >>> engine = HistoryEngine()
    >>> m = engine.start(StartRequest(namespace="default", workflow_id="w", workflow_type="T",
    ...                               task_queue="q"), now=0.0)
    >>> [e.event_type.value for e in m.events]
    ['WorkflowExecutionStarted', 'WorkflowTaskScheduled']
    """

    def __init__(
        self, *, shard_of: Any = None, default_task_timeout: float = 10.0, retention_days: float = 3.0
    ) -> None:
        self._shard_of = shard_of or (lambda ns, wid: 0)
        self.default_task_timeout = default_task_timeout
        self.retention_days = retention_days
        self.retention_of: Callable[[str], float] | None = None
        """Per-namespace retention (the server's namespace registry); ``retention_days`` when None."""

    def retention_days_of(self, namespace: str) -> float:
        """Days a closed run of ``namespace`` is kept before its history is deleted."""
        return self.retention_of(namespace) if self.retention_of is not None else self.retention_days

    def _builder(self, state: ExecutionState, now: float) -> _Builder:
        return _Builder(state, now, self._shard_of(state.namespace, state.workflow_id))

    def rearm_delete_history(self, state: ExecutionState, timer: TimerTask, *, now: float, fire_time: float) -> Mutation:
        """A new ``delete_history`` timer at ``fire_time`` (attempt + 1): archiving the closed run failed,
        so it is kept and tried again then. No event; the old row is deleted once this is written."""
        b = self._builder(state, now)
        b.timer_task(TimerKind.DELETE_HISTORY, fire_time, attempt=timer.attempt + 1)
        return b.mutation()

    # start ----------------------------------------------------------------------------
    def start(self, req: StartRequest, *, now: float) -> Mutation:
        """A new run: ``WorkflowExecutionStarted`` (+ signal) + first workflow task."""
        if not req.workflow_id or not req.workflow_type or not req.task_queue:
            raise InvalidArgumentError("workflow_id, workflow_type and task_queue are required")
        run_id = req.run_id or str(uuid.uuid4())
        task_timeout = min(req.task_timeout or self.default_task_timeout, MAX_WORKFLOW_TASK_TIMEOUT)
        deadline = req.execution_deadline
        if deadline is None and req.execution_timeout:
            deadline = now + req.execution_timeout
        delay = req.start_delay or 0.0
        if req.cron_schedule:
            first_fire = cron_next_fire(req.cron_schedule, now)  # validates the string too
            if req.continued_from_run_id is None:
                delay = max(delay, first_fire - now)
        state = ExecutionState(
            namespace=req.namespace,
            workflow_id=req.workflow_id,
            run_id=run_id,
            first_run_id=req.first_run_id or run_id,
            workflow_type=req.workflow_type,
            task_queue=req.task_queue,
            start_time=now,
            execution_time=now + delay,
            input=req.input,
            workflow_execution_timeout=req.execution_timeout,
            workflow_run_timeout=req.run_timeout,
            workflow_task_timeout=task_timeout,
            execution_deadline=deadline,
            retry_policy=req.retry_policy,
            attempt=req.attempt,
            cron_schedule=req.cron_schedule,
            parent=req.parent,
            parent_initiated_event_id=req.parent_initiated_event_id,
            memo=req.memo,
            search_attributes=req.search_attributes,
            start_request_id=req.request_id,
            last_completion_result=req.last_completion_result,
        )
        b = _Builder(state, now, self._shard_of(req.namespace, req.workflow_id), create=True)
        b.add(
            E.WorkflowExecutionStarted,
            workflow_type=req.workflow_type,
            task_queue=req.task_queue,
            input=req.input,
            workflow_execution_timeout=req.execution_timeout,
            workflow_run_timeout=req.run_timeout,
            workflow_task_timeout=task_timeout,
            retry_policy=req.retry_policy,
            attempt=req.attempt,
            cron_schedule=req.cron_schedule,
            parent=req.parent,
            parent_initiated_event_id=req.parent_initiated_event_id,
            continued_from_run_id=req.continued_from_run_id,
            first_run_id=state.first_run_id,
            original_execution_run_id=run_id,
            memo=req.memo,
            search_attributes=req.search_attributes,
            headers=req.headers,
            request_id=req.request_id,
            identity=req.identity,
            last_completion_result=req.last_completion_result,
            continued_failure=req.continued_failure,
        )
        if req.signal_name:
            b.add(E.WorkflowExecutionSignaled, signal_name=req.signal_name, input=req.signal_input, identity=req.identity)
        if delay > 0:
            b.timer_task(TimerKind.WORKFLOW_BACKOFF, now + delay)
        else:
            b.schedule_workflow_task()
        if req.run_timeout:
            b.timer_task(TimerKind.WORKFLOW_RUN_TIMEOUT, now + delay + req.run_timeout)
        if deadline is not None:
            b.timer_task(TimerKind.WORKFLOW_EXECUTION_TIMEOUT, deadline)
        return b.mutation(set_current=True)

    def workflow_backoff_fired(self, state: ExecutionState, timer: TimerTask, *, now: float) -> Mutation:
        if not state.is_open or state.workflow_task is not None or state.last_completed_wft_event_id:
            return Mutation(state=state, expected_version=state.db_version, noop=True)
        b = self._builder(state, now)
        b.schedule_workflow_task()
        return b.mutation()

    # external inputs ------------------------------------------------------------------
    def _require_open(self, state: ExecutionState, what: str) -> None:
        if not state.is_open:
            raise WorkflowNotRunningError(
                f"cannot {what}: workflow {state.workflow_id} run {state.run_id} is {state.status.value}",
                hint="Start a new run, or target the latest run by leaving run_id empty.",
            )

    def _seen_request(self, b: _Builder, request_id: str) -> bool:
        if not request_id:
            return False
        if request_id in b.state.request_ids:
            return True
        b.state.request_ids = (b.state.request_ids + [request_id])[-MAX_REQUEST_IDS:]
        return False

    def signal(
        self, state: ExecutionState, name: str, payloads: Payloads, *, now: float, request_id: str = "", identity: str = ""
    ) -> Mutation:
        self._require_open(state, "signal")
        if request_id and request_id in state.request_ids:
            return Mutation(state=state, expected_version=state.db_version, noop=True)
        b = self._builder(state, now)
        self._seen_request(b, request_id)
        b.add_input(E.WorkflowExecutionSignaled, signal_name=name, input=payloads, identity=identity)
        return b.mutation()

    def request_cancel(self, state: ExecutionState, *, now: float, reason: str = "", identity: str = "") -> Mutation:
        self._require_open(state, "cancel")
        if state.cancel_requested:
            return Mutation(state=state, expected_version=state.db_version, noop=True)
        b = self._builder(state, now)
        b.state.cancel_requested = True
        b.add_input(E.WorkflowExecutionCancelRequested, cause=reason, identity=identity)
        return b.mutation()

    def terminate(
        self, state: ExecutionState, *, now: float, reason: str = "", details: Payloads | None = None, identity: str = ""
    ) -> Mutation:
        self._require_open(state, "terminate")
        b = self._builder(state, now)
        b.state.workflow_task = None
        b.flush_buffer()
        b.add(E.WorkflowExecutionTerminated, reason=reason, details=details or [], identity=identity)
        b.close(WorkflowExecutionStatus.TERMINATED, retention_days=self.retention_days_of(b.state.namespace))
        return b.mutation()

    def request_update(self, state: ExecutionState, update_id: str, name: str, payloads: Payloads, *, now: float) -> Mutation:
        self._require_open(state, "update")
        if update_id in state.updates:
            return Mutation(state=state, expected_version=state.db_version, noop=True)
        b = self._builder(state, now)
        b.state.updates[update_id] = UpdateInfo(update_id=update_id, name=name, input=payloads)
        b.needs_workflow_task = True
        return b.mutation()

    # workflow tasks ------------------------------------------------------------------
    def _current_wft(self, state: ExecutionState, scheduled_event_id: int, attempt: int) -> WorkflowTaskInfo:
        wft = state.workflow_task
        if not state.is_open or wft is None or wft.scheduled_event_id != scheduled_event_id or wft.attempt != attempt:
            raise StaleTaskError(
                f"workflow task {scheduled_event_id} (attempt {attempt}) of {state.workflow_id} is no longer pending"
            )
        return wft

    def complete_workflow_task(
        self,
        state: ExecutionState,
        scheduled_event_id: int,
        attempt: int,
        commands: list[C.Command],
        *,
        now: float,
        identity: str = "",
    ) -> Mutation:
        """Apply a worker's commands: WFTStarted + WFTCompleted + one event per command."""
        self._current_wft(state, scheduled_event_id, attempt)
        b = self._builder(state, now)
        s = b.state
        started = b.add(E.WorkflowTaskStarted, scheduled_event_id=scheduled_event_id, identity=identity)
        closes = any(isinstance(c, _CLOSE_COMMANDS) for c in commands)
        if closes and (s.buffered_events or self._unaddressed_updates(s, commands)):
            # New input arrived while the worker ran: it must see it before closing.
            b.add(
                E.WorkflowTaskFailed,
                scheduled_event_id=scheduled_event_id,
                started_event_id=started.event_id,
                cause="UnhandledCommand",
                identity=identity,
            )
            s.workflow_task = None
            b.flush_buffer()
            b.schedule_workflow_task()
            return b.mutation(result="unhandled_command")
        completed = b.add(
            E.WorkflowTaskCompleted,
            scheduled_event_id=scheduled_event_id,
            started_event_id=started.event_id,
            identity=identity,
        )
        s.workflow_task = None
        s.last_completed_wft_event_id = scheduled_event_id
        s.wft_failures = 0
        try:
            for command in commands:
                self._apply_command(b, command, completed.event_id)
                if not s.is_open:
                    break
        except InvalidArgumentError as exc:
            return self._bad_command(state, scheduled_event_id, attempt, str(exc), now=now, identity=identity)
        if s.is_open:
            b.flush_buffer()
            if self._unaddressed_updates(s, []):
                b.needs_workflow_task = True
        return self._finish(b)

    def _finish(self, b: _Builder) -> Mutation:
        """The builder's mutation, plus the next run when the closing one asked for it."""
        mutation = b.mutation()
        if b.follow_up_start is not None:
            new_run = self.start(b.follow_up_start, now=b.now)
            new_run.expected_current_run_id = b.state.run_id
            mutation.follow_up = new_run
        return mutation

    def _next_run(self, b: _Builder, failure: Failure | None) -> str | None:
        """Arrange the next run of a closing run: a retry (workflow retry policy) or the next cron fire."""
        s = b.state
        delay: float | None = None
        attempt = 1
        policy = s.retry_policy
        if failure is not None and policy is not None and policy.allows_retry(s.attempt, failure.type, failure.non_retryable):
            delay, attempt = policy.backoff(s.attempt), s.attempt + 1
            if s.execution_deadline is not None and b.now + delay >= s.execution_deadline:
                delay = None
        if delay is None and s.cron_schedule:
            delay, attempt = max(0.0, cron_next_fire(s.cron_schedule, b.now) - b.now), 1
        if delay is None:
            return None
        new_run_id = str(uuid.uuid4())
        b.follow_up_start = StartRequest(
            namespace=s.namespace,
            workflow_id=s.workflow_id,
            workflow_type=s.workflow_type,
            task_queue=s.task_queue,
            input=s.input,
            run_timeout=s.workflow_run_timeout,
            task_timeout=s.workflow_task_timeout,
            execution_timeout=s.workflow_execution_timeout,
            execution_deadline=s.execution_deadline,
            retry_policy=s.retry_policy,
            cron_schedule=s.cron_schedule,
            memo=s.memo,
            search_attributes=s.search_attributes,
            parent=s.parent,
            parent_initiated_event_id=s.parent_initiated_event_id,
            first_run_id=s.first_run_id,
            continued_from_run_id=s.run_id,
            attempt=attempt,
            start_delay=delay,
            last_completion_result=s.result if failure is None else s.last_completion_result,
            continued_failure=failure,
            run_id=new_run_id,
        )
        s.new_run_id = new_run_id
        return new_run_id

    @staticmethod
    def _unaddressed_updates(s: ExecutionState, commands: list[C.Command]) -> bool:
        addressed = {c.update_id for c in commands if isinstance(c, (C.AcceptUpdate, C.RejectUpdate))}
        return any(u.accepted_event_id == 0 and not u.completed and uid not in addressed for uid, u in s.updates.items())

    def _bad_command(
        self, state: ExecutionState, scheduled_event_id: int, attempt: int, message: str, *, now: float, identity: str
    ) -> Mutation:
        failure = Failure(message=message, type="BadCommand", kind="server", non_retryable=True)
        m = self.fail_workflow_task(
            state, scheduled_event_id, attempt, failure, cause="BadCommand", now=now, identity=identity
        )
        m.result = "bad_command"
        return m

    def fail_workflow_task(
        self,
        state: ExecutionState,
        scheduled_event_id: int,
        attempt: int,
        failure: Failure,
        *,
        now: float,
        cause: str = "WorkflowWorkerUnhandledFailure",
        identity: str = "",
    ) -> Mutation:
        """The worker could not run the task (a bug, non-determinism): retry it with back-off."""
        wft = self._current_wft(state, scheduled_event_id, attempt)
        b = self._builder(state, now)
        started = b.add(E.WorkflowTaskStarted, scheduled_event_id=scheduled_event_id, identity=identity)
        b.add(
            E.WorkflowTaskFailed,
            scheduled_event_id=scheduled_event_id,
            started_event_id=started.event_id,
            cause=cause,
            failure=failure,
            identity=identity,
        )
        b.state.workflow_task = None
        b.state.wft_failures += 1
        b.flush_buffer()
        delay = 0.0 if wft.attempt == 1 else float(min(2 ** (wft.attempt - 2), 60))
        b.schedule_workflow_task(attempt=wft.attempt + 1, delay=delay)
        return b.mutation()

    def workflow_task_timer_fired(self, state: ExecutionState, timer: TimerTask, *, now: float) -> Mutation:
        wft = state.workflow_task
        if not state.is_open or wft is None or wft.scheduled_event_id != timer.event_id or wft.attempt != timer.attempt:
            return Mutation(state=state, expected_version=state.db_version, noop=True)
        b = self._builder(state, now)
        if timer.kind == TimerKind.WORKFLOW_TASK_RETRY:
            b.dispatch_workflow_task()
            return b.mutation()
        b.add(E.WorkflowTaskTimedOut, scheduled_event_id=wft.scheduled_event_id, timeout_type="StartToClose")
        b.state.workflow_task = None
        b.flush_buffer()
        b.schedule_workflow_task(attempt=wft.attempt + 1)
        return b.mutation()

    # commands ------------------------------------------------------------------------
    def _apply_command(self, b: _Builder, command: C.Command, wft_completed_id: int) -> None:
        s = b.state
        match command:
            case C.ScheduleActivityTask():
                self._schedule_activity(b, command, wft_completed_id)
            case C.RequestCancelActivityTask():
                info = s.activities.get(command.scheduled_event_id)
                if info is None:
                    return
                b.add(
                    E.ActivityTaskCancelRequested,
                    scheduled_event_id=info.scheduled_event_id,
                    workflow_task_completed_event_id=wft_completed_id,
                )
                info.cancel_requested = True
                if info.started_time is None:
                    # Never reported started (queued or backing off): cancel at once. The event is an
                    # input for the *next* task, so it is buffered and appended after this task's
                    # command events (appending it here would interleave it with them).
                    s.buffered_events.append(
                        {"cls": "ActivityTaskCanceled", "time": b.now, "scheduled_event_id": info.scheduled_event_id}
                    )
                    del s.activities[info.scheduled_event_id]
            case C.StartTimer():
                if command.timer_id in s.timers:
                    raise InvalidArgumentError(f"timer id {command.timer_id!r} is already in use")
                if command.start_to_fire_timeout <= 0:
                    raise InvalidArgumentError("timer duration must be positive")
                ev = b.add(
                    E.TimerStarted,
                    timer_id=command.timer_id,
                    start_to_fire_timeout=command.start_to_fire_timeout,
                    workflow_task_completed_event_id=wft_completed_id,
                )
                fire = b.now + command.start_to_fire_timeout
                s.timers[command.timer_id] = TimerInfo(timer_id=command.timer_id, started_event_id=ev.event_id, fire_time=fire)
                b.timer_task(TimerKind.USER_TIMER, fire, event_id=ev.event_id, timer_id=command.timer_id)
            case C.CancelTimer():
                timer = s.timers.pop(command.timer_id, None)
                if timer is not None:
                    b.add(
                        E.TimerCanceled,
                        timer_id=timer.timer_id,
                        started_event_id=timer.started_event_id,
                        workflow_task_completed_event_id=wft_completed_id,
                    )
            case C.CompleteWorkflowExecution():
                s.result = command.result
                new_run_id = self._next_run(b, None)
                b.add(
                    E.WorkflowExecutionCompleted,
                    result=command.result,
                    workflow_task_completed_event_id=wft_completed_id,
                    new_run_id=new_run_id,
                )
                b.close(WorkflowExecutionStatus.COMPLETED, retention_days=self.retention_days_of(b.state.namespace))
            case C.FailWorkflowExecution():
                s.failure = command.failure
                new_run_id = self._next_run(b, command.failure)
                if b.follow_up_start is not None and b.follow_up_start.attempt > 1:
                    retry_state = RetryState.IN_PROGRESS
                elif s.retry_policy is None:
                    retry_state = RetryState.RETRY_POLICY_NOT_SET
                elif command.failure.non_retryable or command.failure.type in s.retry_policy.non_retryable_error_types:
                    retry_state = RetryState.NON_RETRYABLE_FAILURE
                else:
                    retry_state = RetryState.MAXIMUM_ATTEMPTS_REACHED
                b.add(
                    E.WorkflowExecutionFailed,
                    failure=command.failure,
                    retry_state=retry_state,
                    workflow_task_completed_event_id=wft_completed_id,
                    new_run_id=new_run_id,
                )
                b.close(WorkflowExecutionStatus.FAILED, retention_days=self.retention_days_of(b.state.namespace))
            case C.CancelWorkflowExecution():
                b.add(E.WorkflowExecutionCanceled, details=command.details, workflow_task_completed_event_id=wft_completed_id)
                b.close(WorkflowExecutionStatus.CANCELED, retention_days=self.retention_days_of(b.state.namespace))
            case C.ContinueAsNewWorkflowExecution():
                self._continue_as_new(b, command, wft_completed_id)
            case C.RecordMarker():
                b.add(
                    E.MarkerRecorded,
                    marker_name=command.marker_name,
                    details=command.details,
                    failure=command.failure,
                    workflow_task_completed_event_id=wft_completed_id,
                )
            case C.StartChildWorkflowExecution():
                ns = command.namespace or s.namespace
                ev = b.add(
                    E.StartChildWorkflowExecutionInitiated,
                    namespace=ns,
                    workflow_id=command.workflow_id,
                    workflow_type=command.workflow_type,
                    task_queue=command.task_queue or s.task_queue,
                    input=command.input,
                    workflow_execution_timeout=command.workflow_execution_timeout,
                    workflow_run_timeout=command.workflow_run_timeout,
                    workflow_task_timeout=command.workflow_task_timeout or s.workflow_task_timeout,
                    parent_close_policy=command.parent_close_policy,
                    workflow_id_reuse_policy=command.workflow_id_reuse_policy,
                    retry_policy=command.retry_policy,
                    cron_schedule=command.cron_schedule,
                    memo=command.memo,
                    search_attributes=command.search_attributes,
                    workflow_task_completed_event_id=wft_completed_id,
                )
                s.children[ev.event_id] = ChildInfo(
                    initiated_event_id=ev.event_id,
                    namespace=ns,
                    workflow_id=command.workflow_id,
                    workflow_type=command.workflow_type,
                    parent_close_policy=command.parent_close_policy,
                )
                b.transfer_task(TransferKind.START_CHILD, event_id=ev.event_id)
            case C.SignalExternalWorkflowExecution():
                self._external_request(
                    b, command, "signal", E.SignalExternalWorkflowExecutionInitiated, TransferKind.SIGNAL_EXTERNAL,
                    wft_completed_id, signal_name=command.signal_name, input=command.input,
                )
            case C.RequestCancelExternalWorkflowExecution():
                self._external_request(
                    b, command, "cancel", E.RequestCancelExternalWorkflowExecutionInitiated, TransferKind.CANCEL_EXTERNAL,
                    wft_completed_id, reason=command.reason,
                )
            case C.UpsertWorkflowSearchAttributes():
                s.search_attributes.update(command.search_attributes)
                b.add(
                    E.UpsertWorkflowSearchAttributes,
                    search_attributes=command.search_attributes,
                    workflow_task_completed_event_id=wft_completed_id,
                )
                b.visibility_changed = True
            case C.AcceptUpdate():
                upd = s.updates.get(command.update_id)
                if upd is None:
                    raise InvalidArgumentError(f"unknown update id {command.update_id!r}")
                if upd.accepted_event_id:
                    return
                ev = b.add(E.WorkflowExecutionUpdateAccepted, update_id=upd.update_id, update_name=upd.name, input=upd.input)
                upd.accepted_event_id = ev.event_id
            case C.CompleteUpdate():
                upd = s.updates.get(command.update_id)
                if upd is None or not upd.accepted_event_id:
                    raise InvalidArgumentError(f"update {command.update_id!r} was not accepted")
                b.add(
                    E.WorkflowExecutionUpdateCompleted,
                    update_id=upd.update_id,
                    accepted_event_id=upd.accepted_event_id,
                    result=command.result,
                    failure=command.failure,
                )
                upd.completed, upd.result, upd.failure = True, command.result, command.failure
            case C.RejectUpdate():
                upd = s.updates.get(command.update_id)
                if upd is not None and not upd.accepted_event_id:
                    upd.completed, upd.failure = True, command.failure

    @staticmethod
    def _external_request(
        b: _Builder,
        command: C.SignalExternalWorkflowExecution | C.RequestCancelExternalWorkflowExecution,
        kind: str,
        event_cls: type[Any],
        transfer_kind: TransferKind,
        wft_completed_id: int,
        **fields: Any,
    ) -> None:
        """A signal or cancel request to another workflow: event, pending request, transfer task."""
        ns = command.namespace or b.state.namespace
        ev = b.add(
            event_cls,
            namespace=ns,
            workflow_id=command.workflow_id,
            run_id=command.run_id,
            child_workflow_only=command.child_workflow_only,
            workflow_task_completed_event_id=wft_completed_id,
            **fields,
        )
        b.state.external_requests[ev.event_id] = ExternalRequestInfo(
            initiated_event_id=ev.event_id, namespace=ns, workflow_id=command.workflow_id, run_id=command.run_id, kind=kind
        )
        b.transfer_task(transfer_kind, event_id=ev.event_id)

    def _schedule_activity(self, b: _Builder, cmd: C.ScheduleActivityTask, wft_completed_id: int) -> None:
        s = b.state
        if not cmd.activity_type:
            raise InvalidArgumentError("activity_type is required")
        if not cmd.start_to_close_timeout and not cmd.schedule_to_close_timeout:
            raise InvalidArgumentError(
                f"activity {cmd.activity_type!r} needs start_to_close_timeout or schedule_to_close_timeout"
            )
        if any(a.activity_id == cmd.activity_id for a in s.activities.values()):
            raise InvalidArgumentError(f"activity id {cmd.activity_id!r} is already in use by a pending activity")
        start_to_close = cmd.start_to_close_timeout or cmd.schedule_to_close_timeout
        ev = b.add(
            E.ActivityTaskScheduled,
            activity_id=cmd.activity_id,
            activity_type=cmd.activity_type,
            task_queue=cmd.task_queue or s.task_queue,
            input=cmd.input,
            headers=cmd.headers,
            schedule_to_close_timeout=cmd.schedule_to_close_timeout,
            schedule_to_start_timeout=cmd.schedule_to_start_timeout,
            start_to_close_timeout=start_to_close,
            heartbeat_timeout=cmd.heartbeat_timeout,
            retry_policy=cmd.retry_policy,
            workflow_task_completed_event_id=wft_completed_id,
        )
        info = ActivityInfo(
            scheduled_event_id=ev.event_id,
            activity_id=cmd.activity_id,
            activity_type=cmd.activity_type,
            task_queue=cmd.task_queue or s.task_queue,
            input=cmd.input,
            headers=cmd.headers,
            schedule_to_close_timeout=cmd.schedule_to_close_timeout,
            schedule_to_start_timeout=cmd.schedule_to_start_timeout,
            start_to_close_timeout=start_to_close,
            heartbeat_timeout=cmd.heartbeat_timeout,
            retry_policy=cmd.retry_policy,
            scheduled_time=b.now,
        )
        s.activities[ev.event_id] = info
        b.dispatch_activity(info)

    def _continue_as_new(self, b: _Builder, cmd: C.ContinueAsNewWorkflowExecution, wft_completed_id: int) -> None:
        s = b.state
        new_run_id = str(uuid.uuid4())
        b.add(
            E.WorkflowExecutionContinuedAsNew,
            new_run_id=new_run_id,
            workflow_type=cmd.workflow_type or s.workflow_type,
            task_queue=cmd.task_queue or s.task_queue,
            input=cmd.input,
            workflow_run_timeout=cmd.workflow_run_timeout or s.workflow_run_timeout,
            workflow_task_timeout=cmd.workflow_task_timeout or s.workflow_task_timeout,
            workflow_task_completed_event_id=wft_completed_id,
        )
        s.new_run_id = new_run_id
        b.close(WorkflowExecutionStatus.CONTINUED_AS_NEW, retention_days=self.retention_days_of(b.state.namespace))
        b.follow_up_start = StartRequest(
            namespace=s.namespace,
            workflow_id=s.workflow_id,
            workflow_type=cmd.workflow_type or s.workflow_type,
            task_queue=cmd.task_queue or s.task_queue,
            input=cmd.input,
            run_timeout=cmd.workflow_run_timeout or s.workflow_run_timeout,
            task_timeout=cmd.workflow_task_timeout or s.workflow_task_timeout,
            execution_timeout=s.workflow_execution_timeout,
            execution_deadline=s.execution_deadline,
            retry_policy=s.retry_policy,
            memo=cmd.memo if cmd.memo is not None else s.memo,
            search_attributes=cmd.search_attributes if cmd.search_attributes is not None else s.search_attributes,
            parent=s.parent,
            parent_initiated_event_id=s.parent_initiated_event_id,
            first_run_id=s.first_run_id,
            continued_from_run_id=s.run_id,
            run_id=new_run_id,
        )

    # activities ----------------------------------------------------------------------
    def _current_activity(self, state: ExecutionState, scheduled_event_id: int, attempt: int) -> ActivityInfo:
        info = state.activities.get(scheduled_event_id) if state.is_open else None
        if info is None or info.attempt != attempt or info.dispatch_time is None:
            raise StaleTaskError(
                f"activity task {scheduled_event_id} (attempt {attempt}) of {state.workflow_id} is no longer pending"
            )
        return info

    def activity_started(self, state: ExecutionState, scheduled_event_id: int, attempt: int, *, now: float, identity: str = "") -> Mutation:
        """A worker began the attempt: recorded in the cached state only (see DESIGN §4)."""
        info = self._current_activity(state, scheduled_event_id, attempt)
        if info.started_time is None:
            info.started_time = now
            info.started_identity = identity
        return Mutation(state=state, expected_version=state.db_version, cache_only=True)

    def activity_heartbeat(self, state: ExecutionState, scheduled_event_id: int, attempt: int, details: Payloads, *, now: float) -> Mutation:
        info = self._current_activity(state, scheduled_event_id, attempt)
        info.last_heartbeat_time = now
        if info.started_time is None:
            info.started_time = now
        info.heartbeat_details = details
        return Mutation(state=state, expected_version=state.db_version, cache_only=True, result=info.cancel_requested)

    def activity_completed(
        self, state: ExecutionState, scheduled_event_id: int, attempt: int, result: Any, *, now: float, identity: str = ""
    ) -> Mutation:
        self._current_activity(state, scheduled_event_id, attempt)
        b = self._builder(state, now)
        info = b.state.activities.pop(scheduled_event_id)
        b.add_input(E.ActivityTaskStarted, scheduled_event_id=scheduled_event_id, attempt=info.attempt, identity=identity, last_failure=info.last_failure)
        b.add_input(E.ActivityTaskCompleted, scheduled_event_id=scheduled_event_id, started_event_id=-1, result=result, identity=identity)
        return b.mutation()

    def activity_canceled(
        self, state: ExecutionState, scheduled_event_id: int, attempt: int, details: Payloads, *, now: float, identity: str = ""
    ) -> Mutation:
        info = self._current_activity(state, scheduled_event_id, attempt)
        if not info.cancel_requested:
            failure = Failure(message="activity reported cancellation that was not requested", type="UnexpectedCancel")
            return self.activity_failed(state, scheduled_event_id, attempt, failure, now=now, identity=identity)
        b = self._builder(state, now)
        b.state.activities.pop(scheduled_event_id)
        b.add_input(E.ActivityTaskStarted, scheduled_event_id=scheduled_event_id, attempt=attempt, identity=identity)
        b.add_input(E.ActivityTaskCanceled, scheduled_event_id=scheduled_event_id, started_event_id=-1, details=details, identity=identity)
        return b.mutation()

    def activity_failed(
        self, state: ExecutionState, scheduled_event_id: int, attempt: int, failure: Failure, *, now: float, identity: str = ""
    ) -> Mutation:
        self._current_activity(state, scheduled_event_id, attempt)
        b = self._builder(state, now)
        self._fail_or_retry(b, b.state.activities[scheduled_event_id], failure, identity=identity, timed_out=False)
        return b.mutation()

    def _fail_or_retry(self, b: _Builder, info: ActivityInfo, failure: Failure, *, identity: str, timed_out: bool) -> None:
        policy = info.retry_policy or DEFAULT_ACTIVITY_RETRY
        retry_state = RetryState.NON_RETRYABLE_FAILURE
        if info.cancel_requested:
            retry_state = RetryState.CANCEL_REQUESTED
        elif failure.timeout_type in (TimeoutType.SCHEDULE_TO_CLOSE, TimeoutType.SCHEDULE_TO_START):
            retry_state = RetryState.TIMEOUT
        elif policy.allows_retry(info.attempt, failure.type, failure.non_retryable):
            delay = policy.backoff(info.attempt)
            within = info.schedule_to_close_timeout is None or (
                b.now + delay < info.scheduled_time + info.schedule_to_close_timeout
            )
            if within:
                info.attempt += 1
                info.dispatch_time = None
                info.started_time = None
                info.last_failure = failure
                b.timer_task(TimerKind.ACTIVITY_RETRY, b.now + delay, event_id=info.scheduled_event_id, attempt=info.attempt)
                return
            retry_state = RetryState.TIMEOUT
        else:
            retry_state = (
                RetryState.NON_RETRYABLE_FAILURE
                if failure.non_retryable or (failure.type in policy.non_retryable_error_types)
                else RetryState.MAXIMUM_ATTEMPTS_REACHED
            )
        b.state.activities.pop(info.scheduled_event_id)
        b.add_input(E.ActivityTaskStarted, scheduled_event_id=info.scheduled_event_id, attempt=info.attempt, identity=identity, last_failure=info.last_failure)
        if timed_out:
            b.add_input(E.ActivityTaskTimedOut, scheduled_event_id=info.scheduled_event_id, started_event_id=-1, failure=failure, retry_state=retry_state)
        else:
            b.add_input(E.ActivityTaskFailed, scheduled_event_id=info.scheduled_event_id, started_event_id=-1, failure=failure, retry_state=retry_state, identity=identity)

    def activity_timer_fired(self, state: ExecutionState, timer: TimerTask, *, now: float) -> Mutation:
        info = state.activities.get(timer.event_id) if state.is_open else None
        if info is None or info.attempt != timer.attempt:
            return Mutation(state=state, expected_version=state.db_version, noop=True)
        b = self._builder(state, now)
        info = b.state.activities[timer.event_id]
        if timer.kind == TimerKind.ACTIVITY_RETRY:
            if info.dispatch_time is not None:
                return Mutation(state=state, expected_version=state.db_version, noop=True)
            b.dispatch_activity(info)
            return b.mutation()
        if info.dispatch_time is None:
            return Mutation(state=state, expected_version=state.db_version, noop=True)
        deadline, kind = activity_deadline(info)
        if deadline > now + _EPSILON:
            b.timer_task(TimerKind.ACTIVITY_TIMEOUT, deadline, event_id=info.scheduled_event_id, attempt=info.attempt)
            return b.mutation()
        failure = Failure(
            message=f"activity {info.activity_type} timed out ({kind.value})",
            kind="timeout",
            type="TimeoutError",
            timeout_type=kind.value,
            last_heartbeat_details=info.heartbeat_details or None,
            cause=info.last_failure if kind == TimeoutType.SCHEDULE_TO_CLOSE else None,
        )
        self._fail_or_retry(b, info, failure, identity=info.started_identity, timed_out=True)
        return b.mutation()

    # timers --------------------------------------------------------------------------
    def user_timer_fired(self, state: ExecutionState, timer: TimerTask, *, now: float) -> Mutation:
        info = state.timers.get(timer.timer_id) if state.is_open else None
        if info is None or info.started_event_id != timer.event_id:
            return Mutation(state=state, expected_version=state.db_version, noop=True)
        b = self._builder(state, now)
        del b.state.timers[timer.timer_id]
        b.add_input(E.TimerFired, timer_id=timer.timer_id, started_event_id=timer.event_id)
        return b.mutation()

    def workflow_timeout_fired(self, state: ExecutionState, timer: TimerTask, *, now: float) -> Mutation:
        if not state.is_open:
            return Mutation(state=state, expected_version=state.db_version, noop=True)
        b = self._builder(state, now)
        b.state.workflow_task = None
        b.flush_buffer()
        new_run_id = None
        if timer.kind == TimerKind.WORKFLOW_RUN_TIMEOUT:
            new_run_id = self._next_run(b, Failure(message="workflow run timed out", kind="timeout", timeout_type="StartToClose"))
        b.add(E.WorkflowExecutionTimedOut, retry_state=RetryState.TIMEOUT, new_run_id=new_run_id)
        b.close(WorkflowExecutionStatus.TIMED_OUT, retention_days=self.retention_days_of(b.state.namespace))
        return self._finish(b)

    # children and external workflows --------------------------------------------------
    def child_started(self, state: ExecutionState, initiated_event_id: int, run_id: str, *, now: float) -> Mutation:
        child = state.children.get(initiated_event_id) if state.is_open else None
        if child is None or child.started_event_id:
            return Mutation(state=state, expected_version=state.db_version, noop=True)
        b = self._builder(state, now)
        child = b.state.children[initiated_event_id]
        child.run_id = run_id
        child.started_event_id = -1  # "started"; the event id is known only once appended
        b.add_input(
            E.ChildWorkflowExecutionStarted,
            initiated_event_id=initiated_event_id,
            workflow_id=child.workflow_id,
            run_id=run_id,
            workflow_type=child.workflow_type,
        )
        return b.mutation()

    def child_start_failed(self, state: ExecutionState, initiated_event_id: int, cause: str, *, now: float) -> Mutation:
        child = state.children.get(initiated_event_id) if state.is_open else None
        if child is None or child.started_event_id:
            return Mutation(state=state, expected_version=state.db_version, noop=True)
        b = self._builder(state, now)
        child = b.state.children.pop(initiated_event_id)
        b.add_input(
            E.StartChildWorkflowExecutionFailed,
            initiated_event_id=initiated_event_id,
            workflow_id=child.workflow_id,
            workflow_type=child.workflow_type,
            cause=cause,
        )
        return b.mutation()

    def child_closed(self, state: ExecutionState, initiated_event_id: int, close_event: E.HistoryEvent, *, now: float) -> Mutation:
        child = state.children.get(initiated_event_id) if state.is_open else None
        if child is None or not child.started_event_id:
            return Mutation(state=state, expected_version=state.db_version, noop=True)
        b = self._builder(state, now)
        child = b.state.children.pop(initiated_event_id)
        started_id = max(child.started_event_id, 0)
        common = {
            "initiated_event_id": initiated_event_id,
            "started_event_id": started_id,
            "workflow_id": child.workflow_id,
            "run_id": child.run_id,
            "workflow_type": child.workflow_type,
        }
        match close_event:
            case E.WorkflowExecutionCompleted():
                b.add_input(E.ChildWorkflowExecutionCompleted, result=close_event.result, **common)
            case E.WorkflowExecutionFailed():
                b.add_input(E.ChildWorkflowExecutionFailed, failure=close_event.failure, retry_state=close_event.retry_state, **common)
            case E.WorkflowExecutionCanceled():
                b.add_input(E.ChildWorkflowExecutionCanceled, details=close_event.details, **common)
            case E.WorkflowExecutionTerminated():
                b.add_input(E.ChildWorkflowExecutionTerminated, **common)
            case _:
                b.add_input(E.ChildWorkflowExecutionTimedOut, **common)
        return b.mutation()

    def external_request_done(
        self, state: ExecutionState, initiated_event_id: int, *, ok: bool, cause: str = "", now: float
    ) -> Mutation:
        req = state.external_requests.get(initiated_event_id) if state.is_open else None
        if req is None:
            return Mutation(state=state, expected_version=state.db_version, noop=True)
        b = self._builder(state, now)
        req = b.state.external_requests.pop(initiated_event_id)
        ids = {"initiated_event_id": initiated_event_id, "workflow_id": req.workflow_id, "run_id": req.run_id}
        if req.kind == "signal":
            if ok:
                b.add_input(E.ExternalWorkflowExecutionSignaled, **ids)
            else:
                b.add_input(E.SignalExternalWorkflowExecutionFailed, cause=cause, **ids)
        elif ok:
            b.add_input(E.ExternalWorkflowExecutionCancelRequested, **ids)
        else:
            b.add_input(E.RequestCancelExternalWorkflowExecutionFailed, cause=cause, **ids)
        return b.mutation()
