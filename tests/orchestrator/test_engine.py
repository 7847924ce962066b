"""Unit tests of the pure history engine: no store, no broker, no I/O."""

from __future__ import annotations

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from orchestrator.api import commands as C
from orchestrator.api import events as E
from orchestrator.api.common import Failure, RetryPolicySpec
from orchestrator.api.enums import EventType as ET
from orchestrator.api.enums import WorkflowExecutionStatus as WS
from orchestrator.api.tasks import TimerKind, TimerTask, TransferKind
from orchestrator.errors import StaleTaskError, WorkflowAlreadyStartedError, WorkflowNotRunningError
from orchestrator.history.engine import HistoryEngine, Mutation, StartRequest, check_id_reuse
from orchestrator.history.state import ExecutionState
from orchestrator.persistence.base import CurrentRun

engine = HistoryEngine()


class Run:
    """Drives one execution through the engine, keeping its whole history."""

    def __init__(self, **start: object) -> None:
        self.now = 1000.0
        req = StartRequest(namespace="default", workflow_id="wf-1", workflow_type="Trip", task_queue="q", **start)  # type: ignore[arg-type]
        m = engine.start(req, now=self.now)
        self.state: ExecutionState = m.state
        self.history: list[E.HistoryEvent] = list(m.events)
        self.last = m

    def apply(self, m: Mutation) -> Mutation:
        if m.needs_write:
            assert m.state.db_version == (m.expected_version or 0) + 1
            assert [e.event_id for e in m.events] == list(
                range(self.history[-1].event_id + 1, self.history[-1].event_id + 1 + len(m.events))
            )
            self.history.extend(m.events)
        self.state = m.state
        self.last = m
        return m

    def types(self, m: Mutation | None = None) -> list[str]:
        return [e.event_type.value for e in (m or self.last).events]

    @property
    def wft(self) -> tuple[int, int]:
        assert self.state.workflow_task is not None
        return self.state.workflow_task.scheduled_event_id, self.state.workflow_task.attempt

    def complete(self, *commands: C.Command) -> Mutation:
        sid, attempt = self.wft
        return self.apply(engine.complete_workflow_task(self.state, sid, attempt, list(commands), now=self.now))

    def timer(self, kind: TimerKind) -> TimerTask:
        return next(t for t in self.last.timer_tasks if t.kind == kind)


def activity(activity_id: str = "1", **kw: object) -> C.ScheduleActivityTask:
    kw.setdefault("start_to_close_timeout", 10.0)
    return C.ScheduleActivityTask(activity_id=activity_id, activity_type="book_car", task_queue="q", **kw)  # type: ignore[arg-type]


def test_start_writes_started_and_first_workflow_task() -> None:
    run = Run(run_timeout=60.0)
    assert run.types() == ["WorkflowExecutionStarted", "WorkflowTaskScheduled"]
    assert [t.kind for t in run.last.transfer_tasks] == [TransferKind.WORKFLOW_TASK]
    assert {t.kind for t in run.last.timer_tasks} == {TimerKind.WORKFLOW_TASK_TIMEOUT, TimerKind.WORKFLOW_RUN_TIMEOUT}
    assert run.last.set_current and run.last.expected_version is None and run.state.db_version == 1


def test_activity_happy_path_is_one_write_per_step() -> None:
    run = Run()
    m = run.complete(activity())
    assert run.types(m) == ["WorkflowTaskStarted", "WorkflowTaskCompleted", "ActivityTaskScheduled"]
    assert [t.kind for t in m.transfer_tasks] == [TransferKind.ACTIVITY_TASK]
    sched = m.events[-1].event_id
    m = run.apply(engine.activity_completed(run.state, sched, 1, {"ok": True}, now=run.now + 1))
    assert run.types(m) == ["ActivityTaskStarted", "ActivityTaskCompleted", "WorkflowTaskScheduled"]
    completed = m.events[1]
    assert isinstance(completed, E.ActivityTaskCompleted)
    assert completed.started_event_id == m.events[0].event_id and completed.result == {"ok": True}
    m = run.complete(C.CompleteWorkflowExecution(result="done"))
    assert run.types(m)[-1] == "WorkflowExecutionCompleted"
    assert run.state.status == WS.COMPLETED and run.state.result == "done"
    assert {t.kind for t in m.transfer_tasks} == {TransferKind.CLOSE_EXECUTION}
    assert m.visibility is not None and m.visibility.status == "Completed"


def test_activity_retries_are_durable_timers_without_events() -> None:
    run = Run()
    policy = RetryPolicySpec(initial_interval=2.0, backoff_coefficient=3.0, maximum_attempts=3)
    sched = run.complete(activity(retry_policy=policy)).events[-1].event_id
    boom = Failure(message="car service down", type="Unavailable")
    delays = []
    for attempt in (1, 2):
        m = run.apply(engine.activity_failed(run.state, sched, attempt, boom, now=run.now))
        assert m.events == []  # no event per attempt
        retry = run.timer(TimerKind.ACTIVITY_RETRY)
        delays.append(retry.fire_time - run.now)
        run.now = retry.fire_time
        m = run.apply(engine.activity_timer_fired(run.state, retry, now=run.now))
        assert [t.kind for t in m.transfer_tasks] == [TransferKind.ACTIVITY_TASK]
        assert m.transfer_tasks[0].attempt == attempt + 1
    assert delays == [2.0, 6.0]
    m = run.apply(engine.activity_failed(run.state, sched, 3, boom, now=run.now))
    assert run.types(m) == ["ActivityTaskStarted", "ActivityTaskFailed", "WorkflowTaskScheduled"]
    failed = m.events[1]
    assert isinstance(failed, E.ActivityTaskFailed) and failed.retry_state == "MaximumAttemptsReached"
    started = m.events[0]
    assert isinstance(started, E.ActivityTaskStarted) and started.attempt == 3 and started.last_failure == boom


def test_non_retryable_failure_is_final_at_once() -> None:
    run = Run()
    sched = run.complete(activity()).events[-1].event_id
    m = run.apply(engine.activity_failed(run.state, sched, 1, Failure(message="no", non_retryable=True), now=run.now))
    assert run.types(m)[1] == "ActivityTaskFailed"
    assert m.events[1].retry_state == "NonRetryableFailure"  # type: ignore[union-attr]


def test_stale_and_duplicate_completions_are_refused() -> None:
    run = Run()
    sched = run.complete(activity()).events[-1].event_id
    before = run.state
    run.apply(engine.activity_completed(run.state, sched, 1, 1, now=run.now))
    with pytest.raises(StaleTaskError):
        engine.activity_completed(run.state, sched, 1, 1, now=run.now)
    with pytest.raises(StaleTaskError):
        engine.activity_completed(before, sched, 2, 1, now=run.now)  # wrong attempt
    with pytest.raises(StaleTaskError):
        engine.complete_workflow_task(run.state, 2, 1, [], now=run.now)  # old workflow task


def test_start_to_close_timeout_retries_then_times_out() -> None:
    run = Run()
    policy = RetryPolicySpec(maximum_attempts=2, initial_interval=1.0)
    sched = run.complete(activity(start_to_close_timeout=5.0, retry_policy=policy)).events[-1].event_id
    timeout = run.timer(TimerKind.ACTIVITY_TIMEOUT)
    assert timeout.fire_time == run.now + 5.0
    run.now = timeout.fire_time
    m = run.apply(engine.activity_timer_fired(run.state, timeout, now=run.now))
    assert m.events == [] and run.state.activities[sched].attempt == 2
    retry = run.timer(TimerKind.ACTIVITY_RETRY)
    run.now = retry.fire_time
    run.apply(engine.activity_timer_fired(run.state, retry, now=run.now))
    timeout = run.timer(TimerKind.ACTIVITY_TIMEOUT)
    run.now = timeout.fire_time
    m = run.apply(engine.activity_timer_fired(run.state, timeout, now=run.now))
    assert run.types(m) == ["ActivityTaskStarted", "ActivityTaskTimedOut", "WorkflowTaskScheduled"]
    timed_out = m.events[1]
    assert isinstance(timed_out, E.ActivityTaskTimedOut) and timed_out.failure.timeout_type == "StartToClose"


def test_heartbeat_pushes_the_deadline_and_its_absence_times_out() -> None:
    run = Run()
    sched = run.complete(activity(start_to_close_timeout=100.0, heartbeat_timeout=3.0, retry_policy=RetryPolicySpec(maximum_attempts=1))).events[-1].event_id
    timer = run.timer(TimerKind.ACTIVITY_TIMEOUT)
    assert timer.fire_time == run.now + 3.0
    run.apply(engine.activity_heartbeat(run.state, sched, 1, ["50%"], now=run.now + 2.0))
    run.now = timer.fire_time
    m = run.apply(engine.activity_timer_fired(run.state, timer, now=run.now))
    assert m.events == [] and run.timer(TimerKind.ACTIVITY_TIMEOUT).fire_time == pytest.approx(run.now + 2.0)
    timer = run.timer(TimerKind.ACTIVITY_TIMEOUT)
    run.now = timer.fire_time
    m = run.apply(engine.activity_timer_fired(run.state, timer, now=run.now))
    timed_out = m.events[1]
    assert isinstance(timed_out, E.ActivityTaskTimedOut)
    assert timed_out.failure.timeout_type == "Heartbeat" and timed_out.failure.last_heartbeat_details == ["50%"]


def test_user_timer_fires_once() -> None:
    run = Run()
    m = run.complete(C.StartTimer(timer_id="t1", start_to_fire_timeout=30.0))
    timer = run.timer(TimerKind.USER_TIMER)
    assert timer.fire_time == run.now + 30.0 and run.types(m)[-1] == "TimerStarted"
    m = run.apply(engine.user_timer_fired(run.state, timer, now=timer.fire_time))
    assert run.types(m) == ["TimerFired", "WorkflowTaskScheduled"]
    assert engine.user_timer_fired(run.state, timer, now=timer.fire_time).noop  # fired twice: harmless


def test_cancelled_timer_does_not_fire() -> None:
    run = Run()
    run.complete(C.StartTimer(timer_id="t1", start_to_fire_timeout=30.0))
    timer = run.timer(TimerKind.USER_TIMER)
    run.apply(engine.signal(run.state, "go", [], now=run.now))
    m = run.complete(C.CancelTimer(timer_id="t1"))
    assert "TimerCanceled" in run.types(m)
    assert engine.user_timer_fired(run.state, timer, now=timer.fire_time).noop


def test_signal_while_workflow_task_is_out_is_buffered_after_completion() -> None:
    run = Run()
    m = run.apply(engine.signal(run.state, "approve", [True], now=run.now))
    assert m.events == [] and len(run.state.buffered_events) == 1
    m = run.complete(activity())
    assert run.types(m) == [
        "WorkflowTaskStarted", "WorkflowTaskCompleted", "ActivityTaskScheduled",
        "WorkflowExecutionSignaled", "WorkflowTaskScheduled",
    ]
    assert run.state.workflow_task is not None and run.state.workflow_task.first_event_id == 3


def test_signal_dedup_by_request_id() -> None:
    run = Run()
    run.apply(engine.signal(run.state, "s", [], now=run.now, request_id="r1"))
    assert engine.signal(run.state, "s", [], now=run.now, request_id="r1").noop


def test_close_command_with_unseen_input_fails_the_task_instead() -> None:
    run = Run()
    run.apply(engine.signal(run.state, "late", [], now=run.now))
    m = run.complete(C.CompleteWorkflowExecution(result=1))
    assert m.result == "unhandled_command"
    assert run.types(m) == ["WorkflowTaskStarted", "WorkflowTaskFailed", "WorkflowExecutionSignaled", "WorkflowTaskScheduled"]
    assert run.state.is_open


def test_cancel_request_and_cancel_command() -> None:
    run = Run()
    run.complete(activity())
    m = run.apply(engine.request_cancel(run.state, now=run.now, reason="user"))
    assert run.types(m) == ["WorkflowExecutionCancelRequested", "WorkflowTaskScheduled"]
    assert engine.request_cancel(run.state, now=run.now).noop
    run.complete(C.CancelWorkflowExecution())
    assert run.state.status == WS.CANCELED
    with pytest.raises(WorkflowNotRunningError):
        engine.signal(run.state, "x", [], now=run.now)


def test_request_cancel_of_unstarted_activity_cancels_at_once() -> None:
    run = Run()
    sched = run.complete(activity()).events[-1].event_id
    run.apply(engine.signal(run.state, "stop", [], now=run.now))
    m = run.complete(C.RequestCancelActivityTask(scheduled_event_id=sched))
    # never reported started: cancelled at once, and the workflow hears of it in a new task
    assert run.types(m)[2:] == ["ActivityTaskCancelRequested", "ActivityTaskCanceled", "WorkflowTaskScheduled"]
    assert sched not in run.state.activities


def test_terminate_flushes_buffer_and_closes() -> None:
    run = Run()
    run.apply(engine.signal(run.state, "s", [], now=run.now))
    m = run.apply(engine.terminate(run.state, now=run.now, reason="ops"))
    assert run.types(m) == ["WorkflowExecutionSignaled", "WorkflowExecutionTerminated"]
    assert run.state.status == WS.TERMINATED and run.state.workflow_task is None


def test_workflow_task_failure_and_timeout_reschedule_with_more_attempts() -> None:
    run = Run()
    sid, attempt = run.wft
    m = run.apply(engine.fail_workflow_task(run.state, sid, attempt, Failure(message="bug"), now=run.now))
    assert run.types(m) == ["WorkflowTaskStarted", "WorkflowTaskFailed", "WorkflowTaskScheduled"]
    assert run.wft[1] == 2
    wft_timeout = run.timer(TimerKind.WORKFLOW_TASK_TIMEOUT)
    m = run.apply(engine.workflow_task_timer_fired(run.state, wft_timeout, now=wft_timeout.fire_time))
    assert run.types(m) == ["WorkflowTaskTimedOut", "WorkflowTaskScheduled"] and run.wft[1] == 3
    # the third attempt's dispatch waits for a back-off timer
    sid, attempt = run.wft
    run.apply(engine.fail_workflow_task(run.state, sid, attempt, Failure(message="bug"), now=run.now))
    assert any(t.kind == TimerKind.WORKFLOW_TASK_RETRY for t in run.last.timer_tasks)
    assert not run.last.transfer_tasks


def test_bad_command_fails_the_workflow_task() -> None:
    run = Run()
    m = run.complete(C.ScheduleActivityTask(activity_id="1", activity_type="x", task_queue="q"))
    assert m.result == "bad_command" and "WorkflowTaskFailed" in run.types(m)


def test_continue_as_new_creates_the_next_run_in_the_same_write() -> None:
    run = Run()
    m = run.complete(C.ContinueAsNewWorkflowExecution(input=[2]))
    assert run.state.status == WS.CONTINUED_AS_NEW and m.follow_up is not None
    new = m.follow_up
    assert new.state.run_id == run.state.new_run_id and new.set_current
    assert new.expected_current_run_id == run.state.run_id
    started = new.events[0]
    assert isinstance(started, E.WorkflowExecutionStarted) and started.continued_from_run_id == run.state.run_id
    assert started.input == [2]


def test_child_lifecycle() -> None:
    run = Run()
    m = run.complete(C.StartChildWorkflowExecution(workflow_id="child-1", workflow_type="Child"))
    initiated = m.events[-1].event_id
    assert [t.kind for t in m.transfer_tasks] == [TransferKind.START_CHILD]
    m = run.apply(engine.child_started(run.state, initiated, "run-c", now=run.now))
    assert run.types(m)[0] == "ChildWorkflowExecutionStarted"
    run.complete()
    close = E.WorkflowExecutionCompleted(event_id=9, event_time=run.history[0].event_time, result=7)
    m = run.apply(engine.child_closed(run.state, initiated, close, now=run.now))
    done = m.events[0]
    assert isinstance(done, E.ChildWorkflowExecutionCompleted) and done.result == 7


def test_update_accept_and_complete() -> None:
    run = Run()
    run.complete()
    m = run.apply(engine.request_update(run.state, "u1", "set_price", [5], now=run.now))
    assert run.types(m) == ["WorkflowTaskScheduled"]
    m = run.complete(C.AcceptUpdate(update_id="u1"), C.CompleteUpdate(update_id="u1", result=5))
    assert run.types(m)[2:] == ["WorkflowExecutionUpdateAccepted", "WorkflowExecutionUpdateCompleted"]
    assert run.state.updates["u1"].completed and run.state.updates["u1"].result == 5


def test_rejected_update_writes_no_event() -> None:
    run = Run()
    run.complete()
    run.apply(engine.request_update(run.state, "u1", "set_price", [-1], now=run.now))
    m = run.complete(C.RejectUpdate(update_id="u1", failure=Failure(message="negative")))
    assert run.types(m) == ["WorkflowTaskStarted", "WorkflowTaskCompleted"]
    assert run.state.updates["u1"].failure is not None


def test_workflow_run_timeout() -> None:
    run = Run(run_timeout=60.0)
    timer = run.timer(TimerKind.WORKFLOW_RUN_TIMEOUT)
    m = run.apply(engine.workflow_timeout_fired(run.state, timer, now=timer.fire_time))
    assert run.types(m) == ["WorkflowExecutionTimedOut"] and run.state.status == WS.TIMED_OUT


def test_start_delay_uses_a_backoff_timer() -> None:
    run = Run(start_delay=30.0)
    assert run.types() == ["WorkflowExecutionStarted"]
    timer = run.timer(TimerKind.WORKFLOW_BACKOFF)
    m = run.apply(engine.workflow_backoff_fired(run.state, timer, now=timer.fire_time))
    assert run.types(m) == ["WorkflowTaskScheduled"]


@pytest.mark.parametrize(
    ("policy", "status", "expected"),
    [
        ("AllowDuplicate", "Completed", None),
        ("AllowDuplicate", "Running", WorkflowAlreadyStartedError),
        ("RejectDuplicate", "Failed", WorkflowAlreadyStartedError),
        ("AllowDuplicateFailedOnly", "Completed", WorkflowAlreadyStartedError),
        ("AllowDuplicateFailedOnly", "Failed", None),
        ("TerminateIfRunning", "Running", "terminate"),
    ],
)
def test_id_reuse_policy(policy: str, status: str, expected: object) -> None:
    current = CurrentRun(run_id="r1", status=status, start_request_id="req-1")
    if isinstance(expected, type):
        with pytest.raises(expected):
            check_id_reuse(policy, current, "req-2")
    else:
        assert check_id_reuse(policy, current, "req-2") == expected
    assert check_id_reuse(policy, current, "req-1") == "reuse"  # same request: idempotent start


OPS = st.lists(
    st.sampled_from(["complete_activity", "fail_activity", "signal", "timer_fire", "wft_complete", "cancel", "retry_fire"]),
    max_size=40,
)


@settings(max_examples=150, deadline=None)
@given(OPS)
def test_any_sequence_keeps_history_well_formed(ops: list[str]) -> None:
    """Whatever arrives in whatever order: event ids stay contiguous, nothing follows a close event,
    and a workflow task is pending whenever unseen input exists."""
    run = Run()
    run.complete(activity("a"), activity("b", retry_policy=RetryPolicySpec(maximum_attempts=2)), C.StartTimer(timer_id="t", start_to_fire_timeout=5))
    timers = list(run.last.timer_tasks)
    for op in ops:
        s = run.state
        try:
            if op == "wft_complete" and s.workflow_task:
                run.complete()
            elif op in ("complete_activity", "fail_activity") and s.activities:
                sched, info = next(iter(s.activities.items()))
                if info.dispatch_time is None:
                    continue
                if op == "complete_activity":
                    run.apply(engine.activity_completed(s, sched, info.attempt, 1, now=run.now))
                else:
                    run.apply(engine.activity_failed(s, sched, info.attempt, Failure(message="x"), now=run.now))
            elif op == "signal" and s.is_open:
                run.apply(engine.signal(s, "s", [], now=run.now))
            elif op == "cancel" and s.is_open:
                run.apply(engine.request_cancel(s, now=run.now))
            elif op in ("timer_fire", "retry_fire"):
                timers.extend(run.last.timer_tasks)
                kind = TimerKind.USER_TIMER if op == "timer_fire" else TimerKind.ACTIVITY_RETRY
                for t in [t for t in timers if t.kind == kind]:
                    fire = engine.user_timer_fired if kind == TimerKind.USER_TIMER else engine.activity_timer_fired
                    run.apply(fire(run.state, t, now=t.fire_time))
        except StaleTaskError:
            pytest.fail("engine raised for a task taken from the current state")
        timers.extend(run.last.timer_tasks)
    ids = [e.event_id for e in run.history]
    assert ids == list(range(1, len(ids) + 1))
    closes = [i for i, e in enumerate(run.history) if e.event_type in E.CLOSE_EVENT_TYPES]
    assert closes == [] or closes == [len(run.history) - 1]
    if run.state.is_open and run.state.buffered_events:
        assert run.state.workflow_task is not None
    last_wft_done = max((i for i, e in enumerate(run.history) if e.event_type == ET.WORKFLOW_TASK_COMPLETED), default=-1)
    inputs_after = [e for e in run.history[last_wft_done + 1 :] if e.event_type in (ET.WORKFLOW_EXECUTION_SIGNALED, ET.ACTIVITY_TASK_COMPLETED, ET.TIMER_FIRED)]
    if inputs_after and run.state.is_open:
        assert run.state.workflow_task is not None


def test_cron_run_completes_and_schedules_the_next_run_with_the_same_id() -> None:
    run = Run(cron_schedule="@every 60s")
    assert run.types() == ["WorkflowExecutionStarted"]  # the first run waits for the schedule
    backoff = run.timer(TimerKind.WORKFLOW_BACKOFF)
    assert backoff.fire_time == run.now + 60
    run.now = backoff.fire_time
    run.apply(engine.workflow_backoff_fired(run.state, backoff, now=run.now))
    m = run.complete(C.CompleteWorkflowExecution(result=1))
    closed = m.events[-1]
    assert isinstance(closed, E.WorkflowExecutionCompleted) and closed.new_run_id
    nxt = m.follow_up
    assert nxt is not None and nxt.state.workflow_id == "wf-1" and nxt.state.run_id == closed.new_run_id
    assert nxt.state.cron_schedule == "@every 60s" and nxt.state.last_completion_result == 1
    started = nxt.events[0]
    assert isinstance(started, E.WorkflowExecutionStarted) and started.continued_from_run_id == run.state.run_id
    assert [t.kind for t in nxt.timer_tasks if t.kind == TimerKind.WORKFLOW_BACKOFF]


def test_invalid_cron_is_a_clear_error() -> None:
    from orchestrator.errors import InvalidArgumentError

    with pytest.raises(InvalidArgumentError, match="invalid cron schedule"):
        Run(cron_schedule="every tuesday")


def test_workflow_retry_policy_starts_a_new_attempt_after_back_off() -> None:
    run = Run(retry_policy=RetryPolicySpec(initial_interval=5.0, maximum_attempts=2))
    m = run.complete(C.FailWorkflowExecution(failure=Failure(message="boom")))
    failed = m.events[-1]
    assert isinstance(failed, E.WorkflowExecutionFailed) and failed.retry_state == "InProgress" and failed.new_run_id
    assert m.follow_up is not None and m.follow_up.state.attempt == 2
    backoff = next(t for t in m.follow_up.timer_tasks if t.kind == TimerKind.WORKFLOW_BACKOFF)
    assert backoff.fire_time == run.now + 5.0
    second = Run.__new__(Run)
    second.now, second.state, second.history, second.last = backoff.fire_time, m.follow_up.state, list(m.follow_up.events), m.follow_up
    second.apply(engine.workflow_backoff_fired(second.state, backoff, now=second.now))
    m2 = second.complete(C.FailWorkflowExecution(failure=Failure(message="boom again")))
    assert m2.follow_up is None and m2.events[-1].retry_state == "MaximumAttemptsReached"  # type: ignore[union-attr]


def test_signal_and_cancel_requests_to_other_workflows() -> None:
    run = Run()
    m = run.complete(
        C.SignalExternalWorkflowExecution(workflow_id="other", signal_name="ping", input=[1]),
        C.RequestCancelExternalWorkflowExecution(workflow_id="gone", reason="stop"),
    )
    signal_ev, cancel_ev = m.events[-2], m.events[-1]
    assert isinstance(signal_ev, E.SignalExternalWorkflowExecutionInitiated) and signal_ev.namespace == "default"
    assert isinstance(cancel_ev, E.RequestCancelExternalWorkflowExecutionInitiated) and cancel_ev.reason == "stop"
    assert [t.kind for t in m.transfer_tasks] == [TransferKind.SIGNAL_EXTERNAL, TransferKind.CANCEL_EXTERNAL]
    m = run.apply(engine.external_request_done(run.state, signal_ev.event_id, ok=True, now=run.now))
    assert run.types(m) == ["ExternalWorkflowExecutionSignaled", "WorkflowTaskScheduled"]
    run.complete()
    m = run.apply(engine.external_request_done(run.state, cancel_ev.event_id, ok=False, cause="ExternalWorkflowExecutionNotFound", now=run.now))
    assert run.types(m)[0] == "RequestCancelExternalWorkflowExecutionFailed"
    assert engine.external_request_done(run.state, cancel_ev.event_id, ok=True, now=run.now).noop  # done once
