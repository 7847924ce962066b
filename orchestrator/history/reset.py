"""Reset: start a new run of a workflow from a workflow task in an earlier run's history.

Like Temporal's reset, for getting a workflow out of a bug once the fix is
deployed. The new run's history is the base run's events up to and including
the ``WorkflowTaskStarted`` of the chosen workflow task, then:

* ``WorkflowTaskFailed`` with cause ``ResetWorkflow`` (the commands that task
  produced in the base run are dropped: the fixed code decides again);
* the signals the base run received after that point, again as
  ``WorkflowExecutionSignaled`` (unless ``reapply_signals=False``);
* a new ``WorkflowTaskScheduled``.

Its mutable state is the fold of those events
(:func:`orchestrator.history.rebuild.fold_history`): activities, timers and
children that were pending at that point are pending again and dispatched
again; what completed before it keeps its result and does not run twice. The
new run becomes the workflow id's current run; if the current run was still
running it is terminated in the same transaction (reason: ``reset to run ...``).

A reset point is named by the id of any event of a *started* workflow task
(its ``WorkflowTaskScheduled``, ``WorkflowTaskStarted``, ``WorkflowTaskCompleted``,
``WorkflowTaskFailed`` or ``WorkflowTaskTimedOut``), or by a reset type:
``FirstWorkflowTask`` or ``LastWorkflowTask`` (the last *completed* one).

Example::

    mutation = build_reset_run(events, namespace="default", workflow_id="trip-1",
                               new_run_id=uuid.uuid4().hex, event_id=9, reason="fixed the hotel bug",
                               now=time.time(), shard_id=0)
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from orchestrator.api import events as E
from orchestrator.api.common import Failure
from orchestrator.errors import InvalidArgumentError
from orchestrator.history.engine import Mutation, _ts, visibility_of
from orchestrator.history.rebuild import fold_history, pending_tasks

RESET_TYPES = ("FirstWorkflowTask", "LastWorkflowTask")
RESET_CAUSE = "ResetWorkflow"

_WFT_EVENTS = (
    E.WorkflowTaskScheduled,
    E.WorkflowTaskStarted,
    E.WorkflowTaskCompleted,
    E.WorkflowTaskFailed,
    E.WorkflowTaskTimedOut,
)


def _started_by_scheduled(events: Sequence[E.HistoryEvent]) -> dict[int, int]:
    """``WorkflowTaskScheduled`` event id -> its ``WorkflowTaskStarted`` event id (started tasks only)."""
    return {e.scheduled_event_id: e.event_id for e in events if isinstance(e, E.WorkflowTaskStarted)}


def reset_point(events: Sequence[E.HistoryEvent], *, event_id: int | None, reset_type: str | None) -> int:
    """The ``WorkflowTaskStarted`` event id the new run's history ends with (before the reset events).

    Raises :class:`InvalidArgumentError` naming what is wrong (no such event, not a workflow task
    event, a task that never started, an unknown reset type).

    Example::

        started_id = reset_point(events, event_id=None, reset_type="LastWorkflowTask")
    """
    if (event_id is None) == (reset_type is None):
        raise InvalidArgumentError("a reset needs exactly one of event_id or reset_type")
    started = _started_by_scheduled(events)
    tasks = ", ".join(f"{s}-{t}" for s, t in sorted(started.items())) or "none"
    if reset_type is not None:
        if reset_type not in RESET_TYPES:
            raise InvalidArgumentError(f"unknown reset type {reset_type!r}; use one of {', '.join(RESET_TYPES)}")
        completed = [e.started_event_id for e in events if isinstance(e, E.WorkflowTaskCompleted)]
        if not completed:
            raise InvalidArgumentError("this run has no completed workflow task to reset to")
        return completed[0] if reset_type == "FirstWorkflowTask" else completed[-1]
    assert event_id is not None
    by_id = {e.event_id: e for e in events}
    target = by_id.get(event_id)
    if target is None:
        raise InvalidArgumentError(f"event {event_id} is not in this run's history (it has events 1-{len(events)})")
    if not isinstance(target, _WFT_EVENTS):
        raise InvalidArgumentError(
            f"event {event_id} is a {target.event_type.value}; a reset point is an event of a started workflow task "
            f"(this run's started workflow tasks, scheduled-started: {tasks})"
        )
    scheduled_id = event_id if isinstance(target, E.WorkflowTaskScheduled) else target.scheduled_event_id
    started_id = started.get(scheduled_id)
    if started_id is None:
        raise InvalidArgumentError(
            f"the workflow task scheduled at event {scheduled_id} never started, so it is no reset point "
            f"(this run's started workflow tasks, scheduled-started: {tasks})"
        )
    return started_id


def build_reset_run(
    events: Sequence[E.HistoryEvent],
    *,
    namespace: str,
    workflow_id: str,
    new_run_id: str,
    now: float,
    shard_id: int,
    event_id: int | None = None,
    reset_type: str | None = None,
    reason: str = "",
    identity: str = "",
    reapply_signals: bool = True,
    base_run_id: str = "",
    retention_days: float = 3.0,
) -> Mutation:
    """The creation of the new run (a :class:`Mutation` with ``set_current``; see the module docstring).

    The caller sets ``expected_current_run_id`` and, when the current run is open, writes its
    termination in the same transaction.
    """
    started_id = reset_point(events, event_id=event_id, reset_type=reset_type)
    prefix = [e for e in events if e.event_id <= started_id]
    started = prefix[-1]
    assert isinstance(started, E.WorkflowTaskStarted)
    scheduled = next(e for e in prefix if e.event_id == started.scheduled_event_id)
    assert isinstance(scheduled, E.WorkflowTaskScheduled)
    out: list[E.HistoryEvent] = list(prefix)

    def add(cls: type[Any], **fields: Any) -> None:
        out.append(cls(event_id=len(out) + 1, event_time=_ts(now), **fields))

    what = f"reset from run {base_run_id} at event {started_id}" if base_run_id else f"reset at event {started_id}"
    add(
        E.WorkflowTaskFailed,
        scheduled_event_id=scheduled.event_id,
        started_event_id=started_id,
        cause=RESET_CAUSE,
        failure=Failure(message=f"{what}: {reason}" if reason else what, type=RESET_CAUSE, kind="server"),
        identity=identity,
    )
    if reapply_signals:
        for e in events:
            if e.event_id > started_id and isinstance(e, E.WorkflowExecutionSignaled):
                add(E.WorkflowExecutionSignaled, signal_name=e.signal_name, input=list(e.input),
                    headers=dict(e.headers), identity=e.identity)  # fmt: skip
    add(E.WorkflowTaskScheduled, task_queue=scheduled.task_queue,
        start_to_close_timeout=scheduled.start_to_close_timeout, attempt=1)  # fmt: skip

    state = fold_history(out, namespace=namespace, workflow_id=workflow_id, run_id=new_run_id)
    # The work pending at the reset point starts afresh now (its old dispatch times are long gone).
    if state.workflow_task is not None:
        state.workflow_task.dispatch_time = now
    for info in state.activities.values():
        info.scheduled_time, info.dispatch_time, info.started_time, info.attempt = now, now, None, 1
    transfer, timers = pending_tasks(state, shard_id, now=now, retention_days=retention_days)
    return Mutation(
        state=state,
        expected_version=None,
        events=out,
        transfer_tasks=transfer,
        timer_tasks=timers,
        visibility=visibility_of(state),
        set_current=True,
    )
