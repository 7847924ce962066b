"""Rebuild executions from their histories: fold events into mutable state, and refill an empty store.

What ``sagas admin rebuild --from URL --store URL`` does when the store is
lost but the history stream ``{prefix}.history`` still has every event:

1. read the stream from its beginning (Kafka topic, RabbitMQ stream), group the
   messages by run, de-duplicate by event id (a conflicting duplicate is an
   error), and check each run with :func:`~orchestrator.api.history_check.check_history`;
2. :func:`fold_history`: the run's mutable state, by applying its events in order;
3. write each run into the **empty** store in one transaction: its events, the
   folded state, its visibility row, the current-run pointer (the open run, else
   the latest) and the outbox rows that make it move again: the pending workflow
   task, activities, children and external requests are dispatched again, and
   user timers, workflow timeouts, start back-off and retention are timer rows;
4. verify: read every run back, fold its stored events again, and compare with
   the stored state (:func:`state_differences`).

Any problem raises :class:`RebuildError` (or ``HistoryIntegrityError``) naming
the run, the message position and the event id; nothing is written before
every run folded cleanly.

What a history cannot give back (documented in ``docs/operations.md``): state
that is never written as an event. Signals that arrived while a workflow task
was out (*buffered*, they become events only when the task ends), update
requests not yet accepted, the de-duplication window of request ids, an
activity's retry attempt and last failure while it backs off (a retry writes no
event: the rebuilt activity restarts at attempt 1), and cache-only fields
(activity start and heartbeat). :data:`NOT_FROM_HISTORY` lists the fields the
comparison ignores for that reason.
"""

from __future__ import annotations

import math
import time
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from typing import Any

from orchestrator.api import events as E
from orchestrator.api.cron import cron_next_fire
from orchestrator.api.enums import WorkflowExecutionStatus
from orchestrator.api.history_check import HistoryIntegrityError, check_history
from orchestrator.api.tasks import TimerKind, TimerTask, TransferKind, TransferTask
from orchestrator.history.engine import activity_deadline, visibility_of
from orchestrator.history.state import (
    ActivityInfo,
    ChildInfo,
    ExecutionState,
    ExternalRequestInfo,
    TimerInfo,
    UpdateInfo,
    WorkflowTaskInfo,
)
from orchestrator.persistence.base import (
    ExecutionWrite,
    HistoryStore,
    NamespaceRecord,
    shard_for,
)

__all__ = [
    "NOT_FROM_HISTORY",
    "RebuildError",
    "RebuildReport",
    "RunHistory",
    "fold_history",
    "rebuild_store",
    "state_differences",
]

NOT_FROM_HISTORY: frozenset[str] = frozenset(
    {
        "db_version",  # a store counter: the rebuilt run starts again at 1
        "request_ids",  # the de-duplication window of signal request ids
        "buffered_events",  # inputs that arrived while a workflow task was out
        "activities.*.attempt", "activities.*.dispatch_time", "activities.*.last_failure",  # retries write no event
        "activities.*.started_time", "activities.*.started_identity",  # cache-only
        "activities.*.last_heartbeat_time", "activities.*.heartbeat_details",  # cache-only
        "workflow_task.dispatch_time",  # when matching handed the task out
        "updates",  # requested but not accepted updates exist only in the state
    }
)
"""State fields a history does not record; :func:`state_differences` skips them."""

_TIME_TOLERANCE = 1e-5
"""Event times are microseconds: a time recomputed from them may differ from the original float by that."""


class RebuildError(Exception):
    """The stream cannot be rebuilt into a store as it is (the message names the run and what is wrong)."""


@dataclass
class RunHistory:
    """One run's events as read from the stream (or a store)."""

    namespace: str
    workflow_id: str
    run_id: str
    events: list[E.HistoryEvent]

    @property
    def where(self) -> str:
        return f"{self.namespace}/{self.workflow_id}/{self.run_id}"


def _t(event: E.HistoryEvent) -> float:
    return event.event_time.timestamp()


def fold_history(
    events: Sequence[E.HistoryEvent],
    *,
    namespace: str,
    workflow_id: str,
    run_id: str,
    execution_deadline: float | None = None,
) -> ExecutionState:
    """The mutable state after ``events`` (checked first: raises ``HistoryIntegrityError``).

    ``execution_deadline``: for a run continued from another (continue-as-new,
    retry, cron), the workflow execution deadline counts from the first run's
    start, which its own events do not say; pass it when known.
    """
    where = f"{namespace}/{workflow_id}/{run_id}"
    check_history(events, where=where)
    first = events[0]
    assert isinstance(first, E.WorkflowExecutionStarted)
    start = _t(first)
    deadline = execution_deadline
    if deadline is None and first.workflow_execution_timeout and first.continued_from_run_id is None:
        deadline = start + first.workflow_execution_timeout
    s = ExecutionState(
        namespace=namespace,
        workflow_id=workflow_id,
        run_id=run_id,
        first_run_id=first.first_run_id or run_id,
        workflow_type=first.workflow_type,
        task_queue=first.task_queue,
        start_time=start,
        execution_time=start + _start_delay(first, start),
        input=list(first.input),
        workflow_execution_timeout=first.workflow_execution_timeout,
        workflow_run_timeout=first.workflow_run_timeout,
        workflow_task_timeout=first.workflow_task_timeout,
        execution_deadline=deadline,
        retry_policy=first.retry_policy,
        attempt=first.attempt,
        cron_schedule=first.cron_schedule,
        parent=first.parent,
        parent_initiated_event_id=first.parent_initiated_event_id,
        memo=dict(first.memo),
        search_attributes=dict(first.search_attributes),
        start_request_id=first.request_id,
        last_completion_result=first.last_completion_result,
        db_version=1,
    )
    backoff = False  # the last workflow task failed (not timed out): its next attempt backs off
    for ev in events[1:]:
        _apply(s, ev, backoff)
        if isinstance(ev, E.WorkflowTaskFailed | E.WorkflowTaskTimedOut | E.WorkflowTaskCompleted):
            backoff = isinstance(ev, E.WorkflowTaskFailed) and ev.cause != "UnhandledCommand"
    s.next_event_id = events[-1].event_id + 1
    return s


def _start_delay(first: E.WorkflowExecutionStarted, start: float) -> float:
    """The back-off before the first workflow task (cron, retry), as the engine computed it."""
    if first.attempt > 1 and first.retry_policy is not None:
        return first.retry_policy.backoff(first.attempt - 1)
    if first.cron_schedule:
        return max(0.0, cron_next_fire(first.cron_schedule, start) - start)
    return 0.0


def _apply(s: ExecutionState, ev: E.HistoryEvent, backoff: bool) -> None:  # noqa: C901 - one case per type
    now = _t(ev)
    match ev:
        case E.WorkflowTaskScheduled():
            delay = float(min(2 ** (ev.attempt - 3), 60)) if backoff and ev.attempt > 2 else 0.0
            s.workflow_task = WorkflowTaskInfo(
                scheduled_event_id=ev.event_id,
                attempt=ev.attempt,
                task_queue=ev.task_queue,
                dispatch_time=now + delay,
                timeout=ev.start_to_close_timeout,
                first_event_id=s.last_completed_wft_event_id + 1,
            )
        case E.WorkflowTaskCompleted():
            s.workflow_task = None
            s.last_completed_wft_event_id = ev.scheduled_event_id
            s.wft_failures = 0
        case E.WorkflowTaskFailed():
            s.workflow_task = None
            if ev.cause != "UnhandledCommand":
                s.wft_failures += 1
        case E.WorkflowTaskTimedOut():
            s.workflow_task = None
        case E.ActivityTaskScheduled():
            s.activities[ev.event_id] = ActivityInfo(
                scheduled_event_id=ev.event_id,
                activity_id=ev.activity_id,
                activity_type=ev.activity_type,
                task_queue=ev.task_queue,
                input=list(ev.input),
                headers=dict(ev.headers),
                schedule_to_close_timeout=ev.schedule_to_close_timeout,
                schedule_to_start_timeout=ev.schedule_to_start_timeout,
                start_to_close_timeout=ev.start_to_close_timeout,
                heartbeat_timeout=ev.heartbeat_timeout,
                retry_policy=ev.retry_policy,
                scheduled_time=now,
                dispatch_time=now,
            )
        case E.ActivityTaskCompleted() | E.ActivityTaskFailed() | E.ActivityTaskTimedOut() | E.ActivityTaskCanceled():
            s.activities.pop(ev.scheduled_event_id, None)
        case E.ActivityTaskCancelRequested():
            s.activities[ev.scheduled_event_id].cancel_requested = True
        case E.TimerStarted():
            s.timers[ev.timer_id] = TimerInfo(
                timer_id=ev.timer_id, started_event_id=ev.event_id, fire_time=now + ev.start_to_fire_timeout
            )
        case E.TimerFired() | E.TimerCanceled():
            s.timers.pop(ev.timer_id, None)
        case E.WorkflowExecutionCancelRequested():
            s.cancel_requested = True
        case E.StartChildWorkflowExecutionInitiated():
            s.children[ev.event_id] = ChildInfo(
                initiated_event_id=ev.event_id,
                namespace=ev.namespace,
                workflow_id=ev.workflow_id,
                workflow_type=ev.workflow_type,
                parent_close_policy=ev.parent_close_policy,
            )
        case E.ChildWorkflowExecutionStarted():
            child = s.children[ev.initiated_event_id]
            child.run_id = ev.run_id
            child.started_event_id = -1  # what the engine records ("started")
        case (
            E.StartChildWorkflowExecutionFailed() | E.ChildWorkflowExecutionCompleted() | E.ChildWorkflowExecutionFailed()
            | E.ChildWorkflowExecutionCanceled() | E.ChildWorkflowExecutionTerminated() | E.ChildWorkflowExecutionTimedOut()
        ):
            s.children.pop(ev.initiated_event_id, None)
        case E.SignalExternalWorkflowExecutionInitiated() | E.RequestCancelExternalWorkflowExecutionInitiated():
            kind = "signal" if isinstance(ev, E.SignalExternalWorkflowExecutionInitiated) else "cancel"
            s.external_requests[ev.event_id] = ExternalRequestInfo(
                initiated_event_id=ev.event_id, namespace=ev.namespace, workflow_id=ev.workflow_id, run_id=ev.run_id, kind=kind
            )
        case (
            E.ExternalWorkflowExecutionSignaled() | E.SignalExternalWorkflowExecutionFailed()
            | E.ExternalWorkflowExecutionCancelRequested() | E.RequestCancelExternalWorkflowExecutionFailed()
        ):
            s.external_requests.pop(ev.initiated_event_id, None)
        case E.WorkflowExecutionUpdateAccepted():
            s.updates[ev.update_id] = UpdateInfo(
                update_id=ev.update_id, name=ev.update_name, input=list(ev.input), accepted_event_id=ev.event_id
            )
        case E.WorkflowExecutionUpdateCompleted():
            upd = s.updates[ev.update_id]
            upd.completed, upd.result, upd.failure = True, ev.result, ev.failure
        case E.UpsertWorkflowSearchAttributes():
            s.search_attributes.update(ev.search_attributes)
        case E.WorkflowExecutionCompleted():
            s.result, s.new_run_id = ev.result, ev.new_run_id
            _close(s, WorkflowExecutionStatus.COMPLETED, now)
        case E.WorkflowExecutionFailed():
            s.failure, s.new_run_id = ev.failure, ev.new_run_id
            _close(s, WorkflowExecutionStatus.FAILED, now)
        case E.WorkflowExecutionCanceled():
            _close(s, WorkflowExecutionStatus.CANCELED, now)
        case E.WorkflowExecutionTerminated():
            _close(s, WorkflowExecutionStatus.TERMINATED, now)
        case E.WorkflowExecutionTimedOut():
            s.new_run_id = ev.new_run_id
            _close(s, WorkflowExecutionStatus.TIMED_OUT, now)
        case E.WorkflowExecutionContinuedAsNew():
            s.new_run_id = ev.new_run_id
            _close(s, WorkflowExecutionStatus.CONTINUED_AS_NEW, now)
        case _:
            pass  # signals, markers, workflow task starts, activity starts: history only


def _close(s: ExecutionState, status: WorkflowExecutionStatus, now: float) -> None:
    s.status, s.close_time, s.workflow_task = status, now, None


def pending_tasks(
    s: ExecutionState, shard_id: int, *, now: float, retention_days: float = 3.0
) -> tuple[list[TransferTask], list[TimerTask]]:
    """The outbox rows that make a rebuilt run move again (see the module docstring)."""
    ids = {"shard_id": shard_id, "namespace": s.namespace, "workflow_id": s.workflow_id, "run_id": s.run_id}
    transfer: list[TransferTask] = []
    timers: list[TimerTask] = []
    if not s.is_open:
        if s.parent is not None:
            transfer.append(TransferTask(kind=TransferKind.CLOSE_EXECUTION, data={"status": str(s.status)}, **ids))
        if s.close_time is not None and math.isfinite(retention_days):
            timers.append(TimerTask(kind=TimerKind.DELETE_HISTORY, fire_time=s.close_time + retention_days * 86400, **ids))
        return transfer, timers
    wft = s.workflow_task
    if wft is not None:
        if wft.dispatch_time > now:
            timers.append(TimerTask(kind=TimerKind.WORKFLOW_TASK_RETRY, fire_time=wft.dispatch_time,
                                    event_id=wft.scheduled_event_id, attempt=wft.attempt, **ids))
        else:
            transfer.append(TransferTask(kind=TransferKind.WORKFLOW_TASK, event_id=wft.scheduled_event_id,
                                         attempt=wft.attempt, task_queue=wft.task_queue, **ids))
            timers.append(TimerTask(kind=TimerKind.WORKFLOW_TASK_TIMEOUT, fire_time=now + wft.timeout,
                                    event_id=wft.scheduled_event_id, attempt=wft.attempt, **ids))
    elif not s.last_completed_wft_event_id:
        timers.append(TimerTask(kind=TimerKind.WORKFLOW_BACKOFF, fire_time=s.execution_time, **ids))
    for info in s.activities.values():
        transfer.append(TransferTask(kind=TransferKind.ACTIVITY_TASK, event_id=info.scheduled_event_id,
                                     attempt=info.attempt, task_queue=info.task_queue, **ids))
        timers.append(TimerTask(kind=TimerKind.ACTIVITY_TIMEOUT, fire_time=activity_deadline(info)[0],
                                event_id=info.scheduled_event_id, attempt=info.attempt, **ids))
    for timer in s.timers.values():
        timers.append(TimerTask(kind=TimerKind.USER_TIMER, fire_time=timer.fire_time, event_id=timer.started_event_id,
                                timer_id=timer.timer_id, **ids))
    for child in s.children.values():
        if not child.started_event_id:
            transfer.append(TransferTask(kind=TransferKind.START_CHILD, event_id=child.initiated_event_id, **ids))
    for req in s.external_requests.values():
        kind = TransferKind.SIGNAL_EXTERNAL if req.kind == "signal" else TransferKind.CANCEL_EXTERNAL
        transfer.append(TransferTask(kind=kind, event_id=req.initiated_event_id, **ids))
    if s.workflow_run_timeout:
        timers.append(TimerTask(kind=TimerKind.WORKFLOW_RUN_TIMEOUT,
                                fire_time=s.execution_time + s.workflow_run_timeout, **ids))
    if s.execution_deadline is not None:
        timers.append(TimerTask(kind=TimerKind.WORKFLOW_EXECUTION_TIMEOUT, fire_time=s.execution_deadline, **ids))
    return transfer, timers


# -- comparing states ------------------------------------------------------------------------------


def state_differences(a: ExecutionState, b: ExecutionState, *, ignore: Iterable[str] = NOT_FROM_HISTORY) -> list[str]:
    """Every field where two states differ, as ``path: a != b`` (times equal within microseconds).

    ``ignore`` holds field paths (``activities.*.attempt``: that field of every
    activity) to skip; by default what a history does not record.
    """
    skip = frozenset(ignore)
    out: list[str] = []
    _diff(a.model_dump(mode="json"), b.model_dump(mode="json"), "", skip, out)
    return out


def _diff(x: Any, y: Any, path: str, skip: frozenset[str], out: list[str]) -> None:
    if path in skip or _pattern(path) in skip:
        return
    if isinstance(x, dict) and isinstance(y, dict):
        for key in sorted(set(x) | set(y), key=str):
            sub = f"{path}.{key}" if path else str(key)
            if key not in x or key not in y:
                if sub not in skip and _pattern(sub) not in skip:
                    out.append(f"{sub}: {x.get(key, '<absent>')!r} != {y.get(key, '<absent>')!r}")
                continue
            _diff(x[key], y[key], sub, skip, out)
        return
    if isinstance(x, list) and isinstance(y, list) and len(x) == len(y):
        for i, (xi, yi) in enumerate(zip(x, y, strict=True)):
            _diff(xi, yi, f"{path}.{i}", skip, out)
        return
    if isinstance(x, float | int) and isinstance(y, float | int) and not isinstance(x, bool) and not isinstance(y, bool):
        if abs(x - y) <= _TIME_TOLERANCE:
            return
    if x != y:
        out.append(f"{path}: {x!r} != {y!r}")


def _pattern(path: str) -> str:
    """``activities.12.attempt`` -> ``activities.*.attempt`` (map keys are ids)."""
    parts = path.split(".")
    if len(parts) >= 3 and parts[0] in ("activities", "timers", "children", "external_requests", "updates"):
        parts[1] = "*"
    return ".".join(parts)


# -- rebuilding a store ----------------------------------------------------------------------------


@dataclass
class RebuildReport:
    """What :func:`rebuild_store` wrote."""

    runs: int = 0
    open_runs: int = 0
    events: int = 0
    transfer_tasks: int = 0
    timer_tasks: int = 0
    workflows: int = 0
    namespaces: list[str] = field(default_factory=list)
    verified: int = 0
    states: dict[tuple[str, str, str], ExecutionState] = field(default_factory=dict)
    """(namespace, workflow_id, run_id) -> the rebuilt state."""


def fold_runs(runs: Sequence[RunHistory]) -> dict[tuple[str, str, str], ExecutionState]:
    """Fold every run (first runs first, so a continued run inherits its chain's execution deadline).

    Raises ``HistoryIntegrityError`` for a run that is not coherent and
    :class:`RebuildError` when a workflow id has two open runs or a run's
    predecessor names another successor (runs mixed up).
    """
    by_key = {(r.namespace, r.workflow_id, r.run_id): r for r in runs}
    states: dict[tuple[str, str, str], ExecutionState] = {}

    def fold(key: tuple[str, str, str], depth: int = 0) -> ExecutionState:
        if key in states:
            return states[key]
        run = by_key[key]
        first = run.events[0] if run.events else None
        deadline = None
        if isinstance(first, E.WorkflowExecutionStarted) and first.continued_from_run_id and depth < 10_000:
            prev_key = (run.namespace, run.workflow_id, first.continued_from_run_id)
            if prev_key in by_key:
                prev = fold(prev_key, depth + 1)
                if prev.new_run_id != run.run_id:
                    raise RebuildError(
                        f"{run.where}: its first event says it continues run {prev.run_id}, but that run's close "
                        f"event names {prev.new_run_id or 'no next run'}: events of different runs are mixed up"
                    )
                deadline = prev.execution_deadline
        states[key] = fold_history(
            run.events, namespace=run.namespace, workflow_id=run.workflow_id, run_id=run.run_id,
            execution_deadline=deadline,
        )
        return states[key]

    for key in by_key:
        fold(key)
    open_runs: dict[tuple[str, str], str] = {}
    for (ns, wid, rid), s in states.items():
        if s.is_open:
            if (ns, wid) in open_runs:
                raise RebuildError(
                    f"{ns}/{wid}: runs {open_runs[(ns, wid)]} and {rid} are both open; a workflow id has one open "
                    "run at a time, so the stream mixes events of two clusters or is missing a close event"
                )
            open_runs[(ns, wid)] = rid
    return states


def _current_runs(states: dict[tuple[str, str, str], ExecutionState]) -> dict[tuple[str, str], str]:
    """Per workflow id, the run the current pointer goes to: the open one, else the latest."""
    best: dict[tuple[str, str], ExecutionState] = {}
    for (ns, wid, _), s in states.items():
        cur = best.get((ns, wid))
        if cur is None or (s.is_open, s.start_time, s.next_event_id) > (cur.is_open, cur.start_time, cur.next_event_id):
            best[(ns, wid)] = s
    return {k: s.run_id for k, s in best.items()}


async def rebuild_store(
    store: HistoryStore,
    runs: Sequence[RunHistory],
    *,
    num_shards: int,
    owner: str = "sagas-rebuild",
    retention_days: float = 3.0,
    now: float | None = None,
    verify: bool = True,
) -> RebuildReport:
    """Write ``runs`` into the empty ``store`` (see the module docstring); raises :class:`RebuildError`."""
    now = time.time() if now is None else now
    states = fold_runs(runs)  # every run folds before anything is written
    for (ns, wid, rid) in states:
        if await store.get_execution(ns, wid, rid) is not None or await store.get_current_run(ns, wid) is not None:
            raise RebuildError(
                f"the store already holds workflow {ns}/{wid}: rebuild only into an empty store "
                "(a new database), never over a live one"
            )
    report = RebuildReport(states=states)
    ranges: dict[int, int] = {}
    current = _current_runs(states)
    by_key = {(r.namespace, r.workflow_id, r.run_id): r for r in runs}
    namespaces = sorted({k[0] for k in states})
    for ns in namespaces:
        if await store.get_namespace(ns) is None:
            await store.upsert_namespace(NamespaceRecord(name=ns, retention_days=retention_days))
    for key, s in states.items():
        ns, wid, rid = key
        shard = shard_for(ns, wid, num_shards)
        if shard not in ranges:
            ranges[shard] = await store.acquire_shard(shard, owner)
        transfer, timers = pending_tasks(s, shard, now=now, retention_days=retention_days)
        is_current = current[(ns, wid)] == rid
        await store.write(shard, ranges[shard], [ExecutionWrite(
            state=s, expected_version=None, events=list(by_key[key].events), transfer_tasks=transfer,
            timer_tasks=timers, visibility=visibility_of(s), set_current=is_current, expected_current_run_id=None,
        )])
        report.runs += 1
        report.open_runs += s.is_open
        report.events += len(by_key[key].events)
        report.transfer_tasks += len(transfer)
        report.timer_tasks += len(timers)
    for shard, range_id in ranges.items():
        await store.release_shard(shard, owner, range_id)
    report.workflows = len(current)
    report.namespaces = namespaces
    if verify:
        report.verified = await verify_store(store, states)
    return report


async def verify_store(store: HistoryStore, states: dict[tuple[str, str, str], ExecutionState]) -> int:
    """Fold every run's stored events again and compare with its stored state; raises :class:`RebuildError`."""
    checked = 0
    for (ns, wid, rid), expected in states.items():
        stored = await store.get_execution(ns, wid, rid)
        if stored is None:
            raise RebuildError(f"{ns}/{wid}/{rid}: not in the store after the rebuild")
        events = await store.read_events(ns, wid, rid)
        try:
            folded = fold_history(
                events, namespace=ns, workflow_id=wid, run_id=rid, execution_deadline=expected.execution_deadline
            )
        except HistoryIntegrityError as exc:
            raise RebuildError(f"the stored events of {ns}/{wid}/{rid} do not fold: {exc}") from exc
        diffs = state_differences(stored, folded, ignore=())
        if diffs:
            raise RebuildError(f"{ns}/{wid}/{rid}: the stored state differs from its folded events: {'; '.join(diffs[:5])}")
        checked += 1
    return checked
