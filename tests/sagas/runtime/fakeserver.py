"""A tiny in-memory stand-in for the history service, for driving WorkflowInstance directly.

It writes history the way our server does (``WorkflowTaskStarted`` and
``WorkflowTaskCompleted`` together when a task completes, then one event per
command), answers commands from canned activity / child functions, and can
run a workflow to completion:

    server = FakeServer([TripWorkflow], activities={"book_car": lambda req: "car-1"})
    server.start("TripWorkflow", {"city": "Lisbon"})
    close = await server.run()
    assert close.result == ...

With ``cached=False`` every task replays the full history on a fresh
instance (a sticky-cache miss), which exercises replay at every step.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Mapping, Sequence
from datetime import UTC, datetime, timedelta
from typing import Any

from brokers.envelope import UpdateRequest
from orchestrator.api import commands as cmd
from orchestrator.api import events as ev
from orchestrator.api.common import Failure
from sagas.converter import DataConverter, default
from sagas.exceptions import error_to_failure
from sagas.worker._replayer import WorkflowHistory
from sagas.workflow._instance import WorkflowInstance, WorkflowRunner

T0 = datetime(2026, 1, 1, tzinfo=UTC)

HANG = object()
"""Return this from a canned activity/child function to leave it running."""


class FakeServer:
    """Simulates one workflow run's history and the world around it."""

    def __init__(
        self,
        workflows: Sequence[type],
        *,
        activities: Mapping[str, Callable[..., Any]] | None = None,
        children: Mapping[str, Callable[..., Any]] | None = None,
        local_activities: Mapping[str, Callable[..., Any]] | None = None,
        data_converter: DataConverter | None = None,
        workflow_id: str = "wf-1",
        run_id: str = "run-1",
        task_queue: str = "tq",
        cached: bool = True,
        deadlock_timeout: float | None = 2.0,
    ) -> None:
        self.runner = WorkflowRunner(
            workflows,
            data_converter=data_converter,
            local_activities=local_activities,
            deadlock_timeout=deadlock_timeout,
        )
        self.converter = data_converter or default()
        self.activities = dict(activities or {})
        self.children = dict(children or {})
        self.workflow_id = workflow_id
        self.run_id = run_id
        self.task_queue = task_queue
        self.cached = cached
        self.history: list[ev.HistoryEvent] = []
        self.now = T0
        self.instance: WorkflowInstance | None = None
        self.workflow_type = ""
        self.task_scheduled = False
        self.close_event: ev.HistoryEvent | None = None
        self.commands: list[list[cmd.Command]] = []
        self.activity_calls: list[tuple[str, list[Any]]] = []
        # Outstanding work, keyed by the event id that started it.
        self.pending_activities: dict[int, ev.ActivityTaskScheduled] = {}
        self.cancel_requested_activities: set[int] = set()
        self.pending_timers: dict[str, tuple[datetime, int]] = {}
        self.pending_children: dict[int, ev.StartChildWorkflowExecutionInitiated] = {}
        self.started_children: dict[int, str] = {}
        self.pending_externals: list[ev.HistoryEvent] = []
        self._updates: dict[str, UpdateRequest] = {}
        self._queued_updates: list[UpdateRequest] = []
        self._accepted: dict[str, int] = {}

    # ------------------------------------------------------------ history writing

    def _add(self, cls: type, **fields: Any) -> Any:
        event = cls(event_id=len(self.history) + 1, event_time=self.now, **fields)
        self.history.append(event)
        return event

    def start(self, workflow_type: str, *args: Any, **fields: Any) -> None:
        """Write WorkflowExecutionStarted (with JSON ``args``) and schedule the first task."""
        self.workflow_type = workflow_type
        self._add(
            ev.WorkflowExecutionStarted,
            workflow_type=workflow_type,
            task_queue=self.task_queue,
            input=self.converter.to_payloads(args),
            first_run_id=self.run_id,
            original_execution_run_id=self.run_id,
            **fields,
        )
        self.schedule_task()

    def schedule_task(self) -> None:
        if not self.task_scheduled and self.close_event is None:
            self._add(ev.WorkflowTaskScheduled, task_queue=self.task_queue)
            self.task_scheduled = True

    def signal(self, name: str, *args: Any) -> None:
        self._add(ev.WorkflowExecutionSignaled, signal_name=name, input=self.converter.to_payloads(args))
        self.schedule_task()

    def cancel_workflow(self) -> None:
        self._add(ev.WorkflowExecutionCancelRequested, cause="test")
        self.schedule_task()

    def update(self, name: str, *args: Any, update_id: str = "u-1") -> None:
        """Queue an update for the next task (and schedule one)."""
        request = UpdateRequest(update_id=update_id, name=name, input=self.converter.to_payloads(args))
        self._updates[update_id] = request
        self._queued_updates.append(request)
        self.schedule_task()

    def advance(self, delta: timedelta) -> None:
        self.now += delta

    # ------------------------------------------------------------ workflow tasks

    def new_instance(self) -> WorkflowInstance:
        return self.runner.create_instance(
            namespace="default",
            workflow_id=self.workflow_id,
            run_id=self.run_id,
            workflow_type=self.workflow_type,
            task_queue=self.task_queue,
        )

    async def run_task(self) -> list[cmd.Command]:
        """Hand the new events (or, uncached, the whole history) to the worker; record its commands."""
        assert self.task_scheduled, "no workflow task is scheduled"
        if self.instance is None or not self.cached:
            self.instance = self.new_instance()
        updates, self._queued_updates = self._queued_updates, []
        events = self.history[self.instance.next_event_id - 1 :]
        commands = await self.instance.activate(events, updates=updates)
        self.task_scheduled = False
        self.commands.append(commands)
        self._complete_task(commands)
        return commands

    def _complete_task(self, commands: Sequence[cmd.Command]) -> None:
        scheduled = next(e for e in reversed(self.history) if isinstance(e, ev.WorkflowTaskScheduled))
        started = self._add(ev.WorkflowTaskStarted, scheduled_event_id=scheduled.event_id)
        completed = self._add(
            ev.WorkflowTaskCompleted, scheduled_event_id=scheduled.event_id, started_event_id=started.event_id
        )
        wft = completed.event_id
        for c in commands:
            self._apply_command(c, wft)

    def _apply_command(self, c: cmd.Command, wft: int) -> None:
        if isinstance(c, cmd.ScheduleActivityTask):
            e = self._add(
                ev.ActivityTaskScheduled,
                activity_id=c.activity_id,
                activity_type=c.activity_type,
                task_queue=c.task_queue,
                input=c.input,
                start_to_close_timeout=c.start_to_close_timeout,
                schedule_to_close_timeout=c.schedule_to_close_timeout,
                retry_policy=c.retry_policy,
                workflow_task_completed_event_id=wft,
            )
            self.pending_activities[e.event_id] = e
        elif isinstance(c, cmd.RequestCancelActivityTask):
            self._add(
                ev.ActivityTaskCancelRequested,
                scheduled_event_id=c.scheduled_event_id,
                workflow_task_completed_event_id=wft,
            )
            self.cancel_requested_activities.add(c.scheduled_event_id)
        elif isinstance(c, cmd.StartTimer):
            e = self._add(
                ev.TimerStarted,
                timer_id=c.timer_id,
                start_to_fire_timeout=c.start_to_fire_timeout,
                workflow_task_completed_event_id=wft,
            )
            self.pending_timers[c.timer_id] = (
                self.now + timedelta(seconds=c.start_to_fire_timeout),
                e.event_id,
            )
        elif isinstance(c, cmd.CancelTimer):
            _, started = self.pending_timers.pop(c.timer_id)
            self._add(
                ev.TimerCanceled,
                timer_id=c.timer_id,
                started_event_id=started,
                workflow_task_completed_event_id=wft,
            )
        elif isinstance(c, cmd.RecordMarker):
            self._add(
                ev.MarkerRecorded,
                marker_name=c.marker_name,
                details=c.details,
                failure=c.failure,
                workflow_task_completed_event_id=wft,
            )
        elif isinstance(c, cmd.StartChildWorkflowExecution):
            e = self._add(
                ev.StartChildWorkflowExecutionInitiated,
                namespace=c.namespace or "default",
                workflow_id=c.workflow_id,
                workflow_type=c.workflow_type,
                task_queue=c.task_queue,
                input=c.input,
                workflow_task_completed_event_id=wft,
            )
            self.pending_children[e.event_id] = e
        elif isinstance(c, cmd.SignalExternalWorkflowExecution):
            e = self._add(
                ev.SignalExternalWorkflowExecutionInitiated,
                namespace=c.namespace or "default",
                workflow_id=c.workflow_id,
                run_id=c.run_id,
                signal_name=c.signal_name,
                input=c.input,
                child_workflow_only=c.child_workflow_only,
                workflow_task_completed_event_id=wft,
            )
            self.pending_externals.append(e)
        elif isinstance(c, cmd.RequestCancelExternalWorkflowExecution):
            e = self._add(
                ev.RequestCancelExternalWorkflowExecutionInitiated,
                namespace=c.namespace or "default",
                workflow_id=c.workflow_id,
                run_id=c.run_id,
                child_workflow_only=c.child_workflow_only,
                workflow_task_completed_event_id=wft,
            )
            self.pending_externals.append(e)
        elif isinstance(c, cmd.UpsertWorkflowSearchAttributes):
            self._add(
                ev.UpsertWorkflowSearchAttributes,
                search_attributes=c.search_attributes,
                workflow_task_completed_event_id=wft,
            )
        elif isinstance(c, cmd.AcceptUpdate):
            req = self._updates[c.update_id]
            e = self._add(
                ev.WorkflowExecutionUpdateAccepted,
                update_id=c.update_id,
                update_name=req.name,
                input=req.input,
            )
            self._accepted[c.update_id] = e.event_id
        elif isinstance(c, cmd.CompleteUpdate):
            self._add(
                ev.WorkflowExecutionUpdateCompleted,
                update_id=c.update_id,
                accepted_event_id=self._accepted[c.update_id],
                result=c.result,
                failure=c.failure,
            )
        elif isinstance(c, cmd.RejectUpdate):
            pass
        elif isinstance(c, cmd.CompleteWorkflowExecution):
            self.close_event = self._add(
                ev.WorkflowExecutionCompleted, result=c.result, workflow_task_completed_event_id=wft
            )
        elif isinstance(c, cmd.FailWorkflowExecution):
            self.close_event = self._add(
                ev.WorkflowExecutionFailed, failure=c.failure, workflow_task_completed_event_id=wft
            )
        elif isinstance(c, cmd.CancelWorkflowExecution):
            self.close_event = self._add(
                ev.WorkflowExecutionCanceled, details=c.details, workflow_task_completed_event_id=wft
            )
        elif isinstance(c, cmd.ContinueAsNewWorkflowExecution):
            self.close_event = self._add(
                ev.WorkflowExecutionContinuedAsNew,
                new_run_id=self.run_id + "-next",
                workflow_type=c.workflow_type or self.workflow_type,
                task_queue=c.task_queue or self.task_queue,
                input=c.input,
                workflow_task_completed_event_id=wft,
            )
        else:  # pragma: no cover - a new command type
            raise AssertionError(f"fake server cannot apply {c!r}")

    # ------------------------------------------------------------ the outside world

    def _scheduled(self, activity: str | int) -> ev.ActivityTaskScheduled:
        for sid, e in self.pending_activities.items():
            if activity in (sid, e.activity_id, e.activity_type):
                return e
        raise KeyError(f"no pending activity {activity!r}")

    def complete_activity(self, activity: str | int, result: Any = None) -> None:
        e = self.pending_activities.pop(self._scheduled(activity).event_id)
        started = self._add(ev.ActivityTaskStarted, scheduled_event_id=e.event_id)
        self._add(
            ev.ActivityTaskCompleted,
            scheduled_event_id=e.event_id,
            started_event_id=started.event_id,
            result=self.converter.to_payload(result),
        )
        self.schedule_task()

    def fail_activity(self, activity: str | int, error: BaseException | Failure) -> None:
        e = self.pending_activities.pop(self._scheduled(activity).event_id)
        started = self._add(ev.ActivityTaskStarted, scheduled_event_id=e.event_id)
        failure = error if isinstance(error, Failure) else error_to_failure(error)
        if failure.kind == "timeout":
            self._add(
                ev.ActivityTaskTimedOut,
                scheduled_event_id=e.event_id,
                started_event_id=started.event_id,
                failure=failure,
            )
        else:
            self._add(
                ev.ActivityTaskFailed,
                scheduled_event_id=e.event_id,
                started_event_id=started.event_id,
                failure=failure,
            )
        self.schedule_task()

    def cancel_activity(self, activity: str | int) -> None:
        """Write ActivityTaskCanceled (the activity acknowledged a cancel request)."""
        e = self.pending_activities.pop(self._scheduled(activity).event_id)
        self._add(ev.ActivityTaskCanceled, scheduled_event_id=e.event_id)
        self.schedule_task()

    def fire_timer(self, timer_id: str | None = None) -> None:
        """Fire a timer (default: the earliest), moving the clock to its fire time."""
        if timer_id is None:
            timer_id = min(self.pending_timers, key=lambda t: self.pending_timers[t][0])
        fire_at, started = self.pending_timers.pop(timer_id)
        self.now = max(self.now, fire_at)
        self._add(ev.TimerFired, timer_id=timer_id, started_event_id=started)
        self.schedule_task()

    def resolve_outstanding(self) -> bool:
        """Answer whatever the workflow is waiting for; False when nothing could be answered."""
        progressed = False
        for sid in list(self.pending_activities):
            e = self.pending_activities[sid]
            if sid in self.cancel_requested_activities:
                self.cancel_activity(sid)
                progressed = True
                continue
            fn = self.activities.get(e.activity_type)
            if fn is None:
                continue
            self.activity_calls.append((e.activity_type, list(e.input)))
            try:
                result = fn(*e.input)
            except Exception as err:
                self.fail_activity(sid, err)
                progressed = True
                continue
            if result is HANG:
                continue
            self.complete_activity(sid, result)
            progressed = True
        for iid in list(self.pending_children):
            child = self.pending_children.pop(iid)
            run_id = f"{child.workflow_id}-run"
            self._add(
                ev.ChildWorkflowExecutionStarted,
                initiated_event_id=iid,
                workflow_id=child.workflow_id,
                run_id=run_id,
                workflow_type=child.workflow_type,
            )
            self.started_children[iid] = child.workflow_id
            progressed = True
            fn = self.children.get(child.workflow_type)
            if fn is None:
                continue
            common = {
                "initiated_event_id": iid,
                "started_event_id": len(self.history),
                "workflow_id": child.workflow_id,
                "run_id": run_id,
                "workflow_type": child.workflow_type,
            }
            try:
                result = fn(*child.input)
            except Exception as err:
                self._add(ev.ChildWorkflowExecutionFailed, failure=error_to_failure(err), **common)
                del self.started_children[iid]
                continue
            if result is not HANG:
                self._add(
                    ev.ChildWorkflowExecutionCompleted, result=self.converter.to_payload(result), **common
                )
                del self.started_children[iid]
        for e in self.pending_externals:
            progressed = True
            if isinstance(e, ev.SignalExternalWorkflowExecutionInitiated):
                self._add(
                    ev.ExternalWorkflowExecutionSignaled,
                    initiated_event_id=e.event_id,
                    workflow_id=e.workflow_id,
                )
            else:
                assert isinstance(e, ev.RequestCancelExternalWorkflowExecutionInitiated)
                self._add(
                    ev.ExternalWorkflowExecutionCancelRequested,
                    initiated_event_id=e.event_id,
                    workflow_id=e.workflow_id,
                )
                for iid, wid in list(self.started_children.items()):
                    if wid == e.workflow_id:
                        del self.started_children[iid]
                        self._add(
                            ev.ChildWorkflowExecutionCanceled,
                            initiated_event_id=iid,
                            started_event_id=iid,
                            workflow_id=wid,
                            run_id=f"{wid}-run",
                        )
        self.pending_externals = []
        if not progressed and self.pending_timers:  # time skipping: only when nothing else can move
            self.fire_timer()
            progressed = True
        if progressed:
            self.schedule_task()
        return progressed

    async def run(self, *, max_tasks: int = 200) -> ev.HistoryEvent:
        """Run tasks and answer commands until the workflow closes; returns the close event."""
        for _ in range(max_tasks):
            if self.task_scheduled:
                await self.run_task()
            if self.close_event is not None:
                return self.close_event
            if not self.task_scheduled and not self.resolve_outstanding():
                raise AssertionError(f"workflow is stuck; history:\n{self.describe()}")
            await asyncio.sleep(0)
        raise AssertionError("workflow did not finish within max_tasks")

    # ------------------------------------------------------------ inspection

    def events_of(self, cls: type) -> list[Any]:
        return [e for e in self.history if isinstance(e, cls)]

    def describe(self) -> str:
        return "\n".join(f"{e.event_id:3} {e.event_type}" for e in self.history)

    def to_history(self) -> WorkflowHistory:
        return WorkflowHistory(workflow_id=self.workflow_id, run_id=self.run_id, events=list(self.history))

    @property
    def result(self) -> Any:
        assert isinstance(self.close_event, ev.WorkflowExecutionCompleted), self.describe()
        return self.close_event.result
