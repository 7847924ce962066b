"""The schedule system workflow (``sagas.Schedule``): one run chain per schedule.

The client side and the data types are in :mod:`sagas.client._schedule`; this
is the part the server's system worker runs. The loop::

    while not deleted:
        take the actions that are due: scheduled fires (unless paused; older than
        the catch-up window -> missed), triggers, backfills, buffered starts
        sleep (a durable timer) until the next fire, or until an update arrives
        continue as new every MAX_ACTIONS_PER_RUN actions to bound the history

Each action starts the target workflow as an *abandoned* child (it outlives
the schedule), so its start is exactly once (a command in history) and its
close wakes the schedule at once, which is what the buffering overlap
policies need. Runs carried over a continue-as-new are no longer children:
their state is read with the ``sagas.system.running_runs`` activity.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta

from sagas import activity, workflow
from sagas.client._schedule import (
    MAX_RECENT_ACTIONS,
    NEXT_ACTION_TIMES,
    SCHEDULE_WORKFLOW_TYPE,
    SCHEDULED_BY_ID_ATTRIBUTE,
    SCHEDULED_START_TIME_ATTRIBUTE,
    Schedule,
    ScheduleActionExecutionStartWorkflow,
    ScheduleActionResult,
    ScheduleBackfill,
    ScheduleInfo,
    ScheduleOverlapPolicy,
    ScheduleSnapshot,
    ScheduleWorkflowInput,
    action_workflow_id,
    fire_times,
    jitter_delay,
    next_fire_time,
    rfc3339,
    validate_schedule,
)
from sagas.exceptions import (
    ApplicationError,
    CancelledError,
    ChildWorkflowError,
    RPCError,
    TerminatedError,
    WorkflowAlreadyStartedError,
    WorkflowNotFoundError,
)
from sagas.workflow import ParentClosePolicy

MAX_ACTIONS_PER_RUN = 500
"""Actions (and wake-ups, counted together) after which the schedule continues as new."""
MAX_ACTIONS_PER_TICK = 200
"""Most actions taken in one workflow task; more (a long backfill) go to the next ones."""
MAX_MISSED_COUNTED = 10_000
"""Fire times older than the catch-up window counted one by one per wake-up; the rest are skipped uncounted."""
MAX_BUFFERED = 1000
"""BUFFER_ALL keeps at most this many waiting starts; later ones are skipped."""
INHERITED_POLL = timedelta(minutes=1)
"""How often a buffered start waiting only on runs carried over a continue-as-new re-checks them."""

_ACTIVITY_TIMEOUT = timedelta(seconds=30)


@dataclass
class RunningAction:
    workflow_id: str
    run_id: str = ""
    inherited: bool = False
    """Started by an earlier run of this schedule (before a continue-as-new): not our child."""


@dataclass
class BufferedAction:
    nominal: float
    overlap: ScheduleOverlapPolicy


@dataclass
class ScheduleRunState:
    """What a schedule carries over a continue-as-new (besides the schedule itself)."""

    last_processed: float
    """Scheduled fire times up to here are done (taken, skipped, missed or passed while paused)."""
    info: ScheduleInfo
    running: list[RunningAction] = field(default_factory=list)
    buffer: list[BufferedAction] = field(default_factory=list)
    backfills: list[ScheduleBackfill] = field(default_factory=list)
    triggers: list[ScheduleOverlapPolicy] = field(default_factory=list)


@dataclass
class RunRef:
    workflow_id: str
    run_id: str


@activity.defn(name="sagas.system.running_runs")
async def running_runs(runs: list[RunRef]) -> list[RunRef]:
    """Those of ``runs`` that are still running."""
    client = activity.client()
    out: list[RunRef] = []
    for ref in runs:
        try:
            desc = await client.get_workflow_handle(ref.workflow_id, run_id=ref.run_id or None).describe()
        except WorkflowNotFoundError:
            continue
        if desc.status == "Running":
            out.append(ref)
    return out


@activity.defn(name="sagas.system.terminate_runs")
async def terminate_runs(runs: list[RunRef], reason: str) -> None:
    """Terminate each of ``runs`` (those already closed are left alone)."""
    client = activity.client()
    for ref in runs:
        try:
            await client.get_workflow_handle(ref.workflow_id, run_id=ref.run_id or None).terminate(reason=reason)
        except RPCError as exc:
            if exc.code not in ("workflow_not_found", "workflow_not_running"):
                raise


def _dt(t: float) -> datetime:
    return datetime.fromtimestamp(t, UTC)


def _epoch(value: datetime) -> float:
    return (value if value.tzinfo else value.replace(tzinfo=UTC)).timestamp()


@workflow.defn(name=SCHEDULE_WORKFLOW_TYPE)
class ScheduleWorkflow:
    """One schedule (see the module docstring)."""

    @workflow.init
    def __init__(self, input: ScheduleWorkflowInput, state: ScheduleRunState | None = None) -> None:
        self.id = input.schedule_id
        self.schedule = input.schedule
        now = workflow.time()
        if state is None:
            state = ScheduleRunState(last_processed=now, info=ScheduleInfo(created_at=_dt(now)))
            if input.trigger_immediately:
                state.triggers.append(self.schedule.policy.overlap)
            state.backfills.extend(input.backfills)
        self.st = state
        self.deleted = False
        self.wake = False
        self.requests = 0
        """Updates received; ``handled`` catches up when the loop has applied them."""
        self.handled = 0
        self.in_flight = 0
        self.actions_this_run = 0
        self.starts: list[Awaitable[None]] = []
        """What the current tick waits for before it ends: child starts, terminations."""

    # -- loop ---------------------------------------------------------------------------------
    @workflow.run
    async def run(self, input: ScheduleWorkflowInput, state: ScheduleRunState | None = None) -> None:
        while not self.deleted:
            seen = self.requests
            more = await self._tick()
            self.handled = seen
            if self.deleted:
                break
            if more:
                await workflow.sleep(0.001)  # a new workflow task for the rest: bounded work per task
                continue
            if self.requests != seen:
                continue
            if self.actions_this_run >= MAX_ACTIONS_PER_RUN:
                # Let the updates just applied return first; one that arrives meanwhile is applied
                # by another tick (waiting for it here would deadlock: it waits for a tick).
                await workflow.wait_condition(lambda: self.in_flight == 0 or self.requests != self.handled)
                if self.requests != self.handled:
                    continue
                for r in self.st.running:
                    r.inherited = True
                carried = ScheduleWorkflowInput(schedule_id=self.id, schedule=self.schedule)
                workflow.continue_as_new(args=[carried, self.st])
            self.wake = False
            wake_at = self._wake_time()
            timeout = None if wake_at is None else max(0.001, wake_at - workflow.time())
            try:
                await workflow.wait_condition(lambda: self.wake, timeout=timeout)
            except TimeoutError:
                pass
            self.actions_this_run += 1  # a wake-up adds history too
        await workflow.wait_condition(lambda: self.in_flight == 0)

    async def _tick(self) -> bool:
        """Take what is due; True when more is due than one tick takes."""
        if any(r.inherited for r in self.st.running):
            await self._refresh_inherited()
        now = workflow.time()
        budget = MAX_ACTIONS_PER_TICK
        policy = self.schedule.policy
        if self.schedule.state.paused:
            self.st.last_processed = max(self.st.last_processed, now)
        else:
            catchup = policy.catchup_window.total_seconds()
            t = self.st.last_processed
            scanned = 0
            while budget > 0:
                nominal = next_fire_time(self.schedule.spec, t)
                if nominal is None or nominal + jitter_delay(self.id, nominal, self.schedule.spec.jitter) > now:
                    break
                t = nominal
                state = self.schedule.state
                if state.limited_actions and state.remaining_actions <= 0:
                    t = now  # nothing more to run: no need to walk the fire times
                    break
                if now - nominal > catchup:
                    self.st.info.num_actions_missed_catchup_window += 1
                    scanned += 1
                    if scanned >= MAX_MISSED_COUNTED:
                        t = max(t, now - catchup)  # a long outage of a frequent schedule: stop counting
                    continue
                if state.limited_actions:
                    state.remaining_actions -= 1
                self._take(nominal, policy.overlap)
                budget -= 1
            self.st.last_processed = t
        while self.st.triggers and budget > 0:
            self._take(now, self.st.triggers.pop(0))
            budget -= 1
        while self.st.backfills and budget > 0:
            b = self.st.backfills[0]
            times = fire_times(self.schedule.spec, _epoch(b.start_at) - 0.001, _epoch(b.end_at), limit=budget)
            for nominal in times:
                self._take(nominal, b.overlap or policy.overlap)
            budget -= len(times)
            if budget > 0:
                self.st.backfills.pop(0)
            else:  # the rest of this range in the next tick
                self.st.backfills[0] = ScheduleBackfill(_dt(times[-1] + 0.001), b.end_at, b.overlap)
        self._start_buffered()
        starts, self.starts = self.starts, []
        if starts:
            await asyncio.gather(*starts)
        return budget <= 0

    def _wake_time(self) -> float | None:
        times: list[float] = []
        if self.st.triggers or self.st.backfills or (self.st.buffer and not self.st.running):
            times.append(workflow.time())
        state = self.schedule.state
        if not state.paused and not (state.limited_actions and state.remaining_actions <= 0):
            nominal = next_fire_time(self.schedule.spec, self.st.last_processed)
            if nominal is not None:
                times.append(nominal + jitter_delay(self.id, nominal, self.schedule.spec.jitter))
        if self.st.buffer and self.st.running and all(r.inherited for r in self.st.running):
            times.append(workflow.time() + INHERITED_POLL.total_seconds())
        return min(times) if times else None

    # -- actions ------------------------------------------------------------------------------
    def _take(self, nominal: float, overlap: ScheduleOverlapPolicy) -> None:
        """Apply the overlap policy to one due action."""
        overlap = ScheduleOverlapPolicy(overlap)
        info = self.st.info
        if overlap == ScheduleOverlapPolicy.ALLOW_ALL or not (self.st.running or self.st.buffer):
            self._start(nominal)
        elif overlap == ScheduleOverlapPolicy.SKIP:
            info.num_actions_skipped_overlap += 1
        elif overlap == ScheduleOverlapPolicy.BUFFER_ONE:
            if any(b.overlap == ScheduleOverlapPolicy.BUFFER_ONE for b in self.st.buffer):
                info.num_actions_skipped_overlap += 1
            else:
                self.st.buffer.append(BufferedAction(nominal, overlap))
        elif overlap == ScheduleOverlapPolicy.BUFFER_ALL:
            if len(self.st.buffer) >= MAX_BUFFERED:
                info.num_actions_skipped_overlap += 1
            else:
                self.st.buffer.append(BufferedAction(nominal, overlap))
        elif overlap == ScheduleOverlapPolicy.CANCEL_OTHER:
            self._cancel_running()
            self.st.buffer = [b for b in self.st.buffer if b.overlap != ScheduleOverlapPolicy.CANCEL_OTHER]
            self.st.buffer.append(BufferedAction(nominal, overlap))
        else:  # TERMINATE_OTHER
            victims, self.st.running = self.st.running, []
            self.starts.append(asyncio.ensure_future(self._terminate(victims)))
            self._start(nominal)

    def _start_buffered(self) -> None:
        while self.st.buffer and not self.st.running:
            self._start(self.st.buffer.pop(0).nominal)

    def _start(self, nominal: float) -> None:
        action = self.schedule.action
        running = RunningAction(action_workflow_id(action, nominal))
        self.st.running.append(running)
        self.actions_this_run += 1
        started: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        asyncio.ensure_future(self._run_action(running, nominal, started))
        self.starts.append(started)

    async def _run_action(self, running: RunningAction, nominal: float, started: asyncio.Future[None]) -> None:
        action = self.schedule.action
        try:
            handle = await workflow.start_child_workflow(
                action.workflow,
                args=list(action.args),
                id=running.workflow_id,
                task_queue=action.task_queue,
                execution_timeout=action.execution_timeout,
                run_timeout=action.run_timeout,
                task_timeout=action.task_timeout,
                retry_policy=action.retry_policy,
                memo=action.memo,
                search_attributes={
                    **(action.search_attributes or {}),
                    SCHEDULED_BY_ID_ATTRIBUTE: self.id,
                    SCHEDULED_START_TIME_ATTRIBUTE: rfc3339(nominal),
                },
                parent_close_policy=ParentClosePolicy.ABANDON,
            )
        except WorkflowAlreadyStartedError:
            # This fire's run exists already (e.g. a backfill of a time that also fired): nothing to do.
            self._forget(running)
            self.st.info.num_actions_skipped_overlap += 1
            started.set_result(None)
            return
        running.run_id = handle.first_execution_run_id or ""
        info = self.st.info
        info.num_actions += 1
        result = ScheduleActionResult(
            scheduled_at=_dt(nominal),
            started_at=workflow.now(),
            action=ScheduleActionExecutionStartWorkflow(running.workflow_id, running.run_id),
        )
        info.recent_actions = [*info.recent_actions, result][-MAX_RECENT_ACTIONS:]
        started.set_result(None)
        try:
            await handle
        except ChildWorkflowError as exc:
            if self.schedule.policy.pause_on_failure and not isinstance(exc.cause, CancelledError | TerminatedError):
                self.schedule.state.paused = True
                self.schedule.state.note = f"paused: run {running.workflow_id} failed: {exc.cause}"
        except asyncio.CancelledError:
            return
        self._forget(running)
        self.wake = True

    def _forget(self, running: RunningAction) -> None:
        self.st.running = [r for r in self.st.running if r is not running]

    def _cancel_running(self) -> None:
        for r in self.st.running:
            asyncio.ensure_future(workflow.get_external_workflow_handle(r.workflow_id, r.run_id or None).cancel())

    async def _terminate(self, victims: list[RunningAction]) -> None:
        if victims:
            await workflow.execute_activity(
                terminate_runs,
                args=[[RunRef(r.workflow_id, r.run_id) for r in victims], f"schedule {self.id}: overlap policy TERMINATE_OTHER"],
                start_to_close_timeout=_ACTIVITY_TIMEOUT,
            )

    async def _refresh_inherited(self) -> None:
        inherited = [r for r in self.st.running if r.inherited]
        alive = await workflow.execute_activity(
            running_runs,
            [RunRef(r.workflow_id, r.run_id) for r in inherited],
            start_to_close_timeout=_ACTIVITY_TIMEOUT,
            result_type=list[RunRef],
        )
        keep = {(a.workflow_id, a.run_id) for a in alive}
        self.st.running = [r for r in self.st.running if not r.inherited or (r.workflow_id, r.run_id) in keep]

    # -- updates and the query ------------------------------------------------------------------
    async def _apply(self) -> None:
        if self.deleted:
            raise ApplicationError("the schedule was deleted", type="ScheduleDeleted", non_retryable=True)
        self.requests += 1
        seq = self.requests
        self.wake = True
        self.in_flight += 1
        try:
            self.st.info.last_updated_at = workflow.now()
            await workflow.wait_condition(lambda: self.handled >= seq or self.deleted)
        finally:
            self.in_flight -= 1

    @workflow.update
    async def pause(self, note: str) -> None:
        self.schedule.state.paused, self.schedule.state.note = True, note
        await self._apply()

    @workflow.update
    async def unpause(self, note: str) -> None:
        if self.schedule.state.paused:
            self.st.last_processed = workflow.time()  # the times that passed while paused are not run
        self.schedule.state.paused, self.schedule.state.note = False, note
        await self._apply()

    @workflow.update
    async def trigger(self, overlap: int | None) -> None:
        self.st.triggers.append(ScheduleOverlapPolicy(overlap or self.schedule.policy.overlap))
        await self._apply()

    @workflow.update
    async def backfill(self, backfills: list[ScheduleBackfill]) -> None:
        self.st.backfills.extend(backfills)
        await self._apply()

    @workflow.update
    async def update(self, schedule: Schedule) -> None:
        self.schedule = schedule
        self.st.last_processed = max(self.st.last_processed, workflow.time())
        await self._apply()

    @update.validator
    def _validate_update(self, schedule: Schedule) -> None:
        validate_schedule(schedule)

    @workflow.update
    async def delete(self) -> None:
        self.deleted = True
        self.wake = True

    @workflow.query
    def describe(self) -> ScheduleSnapshot:
        info = self.st.info
        running = [ScheduleActionExecutionStartWorkflow(r.workflow_id, r.run_id) for r in self.st.running]
        next_times: list[datetime] = []
        t: float | None = self.st.last_processed
        state = self.schedule.state
        limit = min(NEXT_ACTION_TIMES, state.remaining_actions) if state.limited_actions else NEXT_ACTION_TIMES
        while len(next_times) < limit and t is not None:
            t = next_fire_time(self.schedule.spec, t)
            if t is not None:
                next_times.append(_dt(t + jitter_delay(self.id, t, self.schedule.spec.jitter)))
        snapshot_info = ScheduleInfo(
            num_actions=info.num_actions,
            num_actions_missed_catchup_window=info.num_actions_missed_catchup_window,
            num_actions_skipped_overlap=info.num_actions_skipped_overlap,
            running_actions=running,
            recent_actions=list(info.recent_actions),
            next_action_times=next_times,
            created_at=info.created_at,
            last_updated_at=info.last_updated_at,
        )
        return ScheduleSnapshot(schedule=self.schedule, info=snapshot_info, deleted=self.deleted)

