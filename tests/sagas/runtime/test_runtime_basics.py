"""WorkflowInstance driven directly: activities, timers, signals, queries, completion."""

from __future__ import annotations

import asyncio
import sys
from datetime import timedelta

import pytest

from orchestrator.api import commands as cmd
from orchestrator.api import events as ev
from sagas.exceptions import ApplicationError, NondeterminismError
from sagas.workflow._instance import StaleInstanceError, WorkflowRunner, _DeadlockError
from tests.sagas.runtime.fakeserver import HANG, T0, FakeServer
from tests.sagas.runtime.workflows import (
    AbandonWorkflow,
    ActivityFailureWorkflow,
    ApprovalWorkflow,
    BlockingWorkflow,
    Booking,
    BufferedSignalWorkflow,
    BuggyWorkflow,
    DeterministicHelpersWorkflow,
    FailingWorkflow,
    GatherWorkflow,
    OneActivityWorkflow,
    SleepWorkflow,
    WaitForTimeoutWorkflow,
)


@pytest.fixture(params=[True, False], ids=["cached", "replay-every-task"])
def cached(request: pytest.FixtureRequest) -> bool:
    return bool(request.param)


def car(req: dict[str, object]) -> dict[str, object]:
    return {"ref": "C-1", "city": req["city"]}


async def test_one_activity(cached: bool) -> None:
    server = FakeServer([OneActivityWorkflow], activities={"book_car": car}, cached=cached)
    server.start("OneActivityWorkflow", Booking("Lisbon"))
    first = await server.run_task()
    assert len(first) == 1 and isinstance(first[0], cmd.ScheduleActivityTask)
    assert first[0].activity_type == "book_car"
    assert first[0].activity_id == "1"
    assert first[0].input == [{"city": "Lisbon", "nights": 1}]
    assert first[0].start_to_close_timeout == 30.0
    assert first[0].task_queue == "tq"
    await server.run()
    assert server.result == {"ref": "C-1", "city": "Lisbon"}
    instance = server.instance
    assert instance is not None and not instance.is_completed  # the close command is not confirmed yet
    assert await instance.activate(server.history[instance.next_event_id - 1 :]) == []
    assert instance.is_completed
    assert instance.next_event_id == len(server.history) + 1


async def test_fresh_instance_expects_event_one() -> None:
    instance = WorkflowRunner([OneActivityWorkflow]).create_instance(
        namespace="default", workflow_id="w", run_id="r", workflow_type="OneActivityWorkflow", task_queue="tq"
    )
    assert instance.next_event_id == 1
    assert not instance.is_completed


def test_unknown_workflow_type() -> None:
    with pytest.raises(ApplicationError) as info:
        WorkflowRunner([OneActivityWorkflow]).create_instance(
            namespace="default", workflow_id="w", run_id="r", workflow_type="Nope", task_queue="tq"
        )
    assert info.value.type == "WorkflowTypeNotRegistered"
    assert "OneActivityWorkflow" in info.value.message


async def test_gather_three_activities(cached: bool) -> None:
    server = FakeServer([GatherWorkflow], activities={"greet": lambda n: f"hi {n}"}, cached=cached)
    server.start("GatherWorkflow", ["a", "b", "c"])
    first = await server.run_task()
    assert [c.activity_id for c in first if isinstance(c, cmd.ScheduleActivityTask)] == ["1", "2", "3"]
    # Answer out of order: the result keeps the call order.
    server.complete_activity("3", "hi c")
    server.complete_activity("1", "hi a")
    assert await server.run_task() == []
    server.complete_activity("2", "hi b")
    await server.run()
    assert server.result == ["hi a", "hi b", "hi c"]


async def test_sleep_and_asyncio_sleep_are_durable_timers(cached: bool) -> None:
    server = FakeServer([SleepWorkflow], cached=cached)
    server.start("SleepWorkflow")
    first = await server.run_task()
    assert first == [cmd.StartTimer(timer_id="1", start_to_fire_timeout=10.0)]
    server.fire_timer("1")
    second = await server.run_task()
    assert second == [cmd.StartTimer(timer_id="2", start_to_fire_timeout=5.0)]
    await server.run()
    assert server.result == {
        "start": T0.isoformat(),
        "end": (T0 + timedelta(seconds=15)).isoformat(),
    }


async def test_wait_condition_times_out(cached: bool) -> None:
    server = FakeServer([ApprovalWorkflow], cached=cached)
    server.start("ApprovalWorkflow", 60)
    assert await server.run_task() == [cmd.StartTimer(timer_id="1", start_to_fire_timeout=60.0)]
    await server.run()
    assert server.result == "timed out"


async def test_signal_satisfies_wait_condition_and_cancels_timer(cached: bool) -> None:
    server = FakeServer([ApprovalWorkflow], cached=cached)
    server.start("ApprovalWorkflow", 60)
    await server.run_task()
    server.signal("approve", "ana")
    commands = await server.run_task()
    assert commands[0] == cmd.CancelTimer(timer_id="1")
    assert isinstance(commands[1], cmd.CompleteWorkflowExecution)
    assert server.result == "approved by ana"
    assert server.events_of(ev.TimerCanceled)


async def test_query_reads_current_state() -> None:
    server = FakeServer([ApprovalWorkflow])
    server.start("ApprovalWorkflow", 60)
    await server.run_task()
    assert server.instance is not None
    assert server.instance.query("status", []) == "waiting"
    assert "wait_condition" in server.instance.query("__stack_trace", [])
    server.signal("approve", "bo")
    await server.run_task()
    assert server.instance.query("status", []) == "approved by bo"
    with pytest.raises(ApplicationError) as info:
        server.instance.query("nope", [])
    assert info.value.type == "QueryNotFound" and "status" in info.value.message


async def test_signal_before_handler_is_buffered(cached: bool) -> None:
    server = FakeServer([BufferedSignalWorkflow], cached=cached)
    server.start("BufferedSignalWorkflow")
    await server.run_task()
    server.signal("late", "one")
    server.signal("late", "two")
    await server.run()
    assert server.result == ["one", "two"]


async def test_activity_failure_raises_activity_error_with_cause(cached: bool) -> None:
    def fail(req: object) -> None:
        raise ApplicationError("no cars", type="SoldOut", non_retryable=True)

    server = FakeServer([ActivityFailureWorkflow], activities={"book_car": fail}, cached=cached)
    server.start("ActivityFailureWorkflow", Booking("Lisbon"))
    schedule = (await server.run_task())[0]
    assert isinstance(schedule, cmd.ScheduleActivityTask)
    assert schedule.retry_policy is not None and schedule.retry_policy.maximum_attempts == 3
    await server.run()
    assert server.result == {
        "error": "ActivityError",
        "cause": "ApplicationError",
        "cause_type": "SoldOut",
        "message": "no cars",
    }


async def test_activity_timeout_cause_is_timeout_error() -> None:
    from orchestrator.api.common import Failure

    server = FakeServer([ActivityFailureWorkflow])
    server.start("ActivityFailureWorkflow", Booking("Lisbon"))
    await server.run_task()
    server.fail_activity(
        "book_car", Failure(message="activity timed out", kind="timeout", timeout_type="StartToClose")
    )
    await server.run()
    assert server.result["cause"] == "TimeoutError"


async def test_failure_error_fails_the_workflow(cached: bool) -> None:
    server = FakeServer([FailingWorkflow], cached=cached)
    server.start("FailingWorkflow")
    (command,) = await server.run_task()
    assert isinstance(command, cmd.FailWorkflowExecution)
    assert command.failure.message == "no cars left"
    assert command.failure.type == "SoldOut"
    assert command.failure.non_retryable
    assert command.failure.details == [{"city": "Lisbon"}]


async def test_other_exception_fails_the_task_and_poisons_the_instance() -> None:
    server = FakeServer([BuggyWorkflow])
    server.start("BuggyWorkflow")
    with pytest.raises(TypeError, match="a bug"):
        await server.run_task()
    assert server.instance is not None
    with pytest.raises(StaleInstanceError):
        await server.instance.activate([])


async def test_deterministic_helpers(cached: bool) -> None:
    runs = []
    for run_id in ("run-a", "run-a", "run-b"):
        server = FakeServer([DeterministicHelpersWorkflow], run_id=run_id, cached=cached)
        server.start("DeterministicHelpersWorkflow")
        upsert, complete = await server.run_task()
        assert upsert == cmd.UpsertWorkflowSearchAttributes(search_attributes={"CustomerId": "c-42"})
        runs.append(server.result)
    assert runs[0] == runs[1]
    assert runs[0]["random"] != runs[2]["random"]
    assert runs[0]["time"] == T0.timestamp()
    assert runs[0]["workflow_id"] == "wf-1"
    assert runs[0]["run_id"] == "run-a"
    assert runs[0]["workflow_type"] == "DeterministicHelpersWorkflow"
    assert runs[0]["task_queue"] == "tq"
    assert runs[0]["namespace"] == "default"
    assert runs[0]["attempt"] == 1
    assert runs[0]["replaying"] is False


async def test_logger_is_silent_while_replaying(caplog: pytest.LogCaptureFixture) -> None:
    server = FakeServer([DeterministicHelpersWorkflow])
    server.start("DeterministicHelpersWorkflow")
    with caplog.at_level("INFO", logger="sagas.workflow"):
        await server.run_task()
        assert [r.message for r in caplog.records if "running helpers" in r.message]
        caplog.clear()
        replay = server.new_instance()
        await replay.activate(server.history)
        assert not [r for r in caplog.records if "running helpers" in r.message]


async def test_wait_for_timeouts_are_durable_timers(cached: bool) -> None:
    server = FakeServer([WaitForTimeoutWorkflow], activities={"greet": lambda n: HANG}, cached=cached)
    server.start("WaitForTimeoutWorkflow")
    assert await server.run_task() == [cmd.StartTimer(timer_id="1", start_to_fire_timeout=60.0)]
    server.fire_timer("1")
    second = await server.run_task()
    assert sorted(type(c).__name__ for c in second) == ["ScheduleActivityTask", "StartTimer"]
    await server.run()
    assert server.result == ["timed out", "activity CancelledError"]
    assert len(server.events_of(ev.ActivityTaskCancelRequested)) == 1


async def test_wait_for_in_time_cancels_the_timer(cached: bool) -> None:
    server = FakeServer([WaitForTimeoutWorkflow], activities={"greet": lambda n: "fast"}, cached=cached)
    server.start("WaitForTimeoutWorkflow")
    await server.run_task()
    server.signal("wake")
    await server.run()
    assert server.result == ["signalled", "activity in time"]
    assert len(server.events_of(ev.TimerCanceled)) == 2


async def test_abandon_and_unsent_activity_cancellation(cached: bool) -> None:
    server = FakeServer([AbandonWorkflow], activities={"greet": lambda n: HANG}, cached=cached)
    server.start("AbandonWorkflow")
    await server.run()
    assert server.result == ["CancelledError", "CancelledError"]
    scheduled = [e.input for e in server.events_of(ev.ActivityTaskScheduled)]
    assert scheduled == [["forever"]]  # the second was cancelled before it was ever sent
    assert len(server.events_of(ev.ActivityTaskCancelRequested)) == 1


@pytest.mark.skipif(sys.gettrace() is not None, reason="the check is off under a debugger or tracer")
async def test_deadlock_is_detected() -> None:
    server = FakeServer([BlockingWorkflow], deadlock_timeout=0.1)
    server.start("BlockingWorkflow")
    with pytest.raises(_DeadlockError, match="blocked its event loop"):
        await server.run_task()


async def test_slice_with_a_gap_is_refused() -> None:
    server = FakeServer([OneActivityWorkflow], activities={"book_car": car})
    server.start("OneActivityWorkflow", Booking("Lisbon"))
    await server.run_task()
    server.resolve_outstanding()
    assert server.instance is not None
    with pytest.raises(StaleInstanceError, match="not contiguous"):
        await server.instance.activate(server.history[server.instance.next_event_id :])


async def test_unconfirmed_commands_need_a_full_replay() -> None:
    server = FakeServer([OneActivityWorkflow], activities={"book_car": car})
    server.start("OneActivityWorkflow", Booking("Lisbon"))
    instance = server.new_instance()
    await instance.activate(server.history)
    # The task failed on the server: no WorkflowTaskCompleted follows.
    failed = ev.WorkflowTaskFailed(event_id=3, event_time=T0, scheduled_event_id=2, started_event_id=0)
    with pytest.raises(StaleInstanceError, match="not confirmed"):
        await instance.activate([failed])


async def test_replay_of_closed_history_returns_no_commands() -> None:
    server = FakeServer([GatherWorkflow], activities={"greet": lambda n: n})
    server.start("GatherWorkflow", ["x", "y"])
    await server.run()
    replay = server.new_instance()
    assert await replay.activate(server.history) == []
    assert replay.is_completed


async def test_changed_code_raises_nondeterminism_on_cache_miss() -> None:
    server = FakeServer([OneActivityWorkflow])
    server.start("OneActivityWorkflow", Booking("Lisbon"))
    await server.run_task()
    server.signal("irrelevant")
    from tests.sagas.runtime.workflows import OneActivityWorkflowChanged

    changed = WorkflowRunner([OneActivityWorkflowChanged]).create_instance(
        namespace="default",
        workflow_id="wf-1",
        run_id="run-1",
        workflow_type="OneActivityWorkflow",
        task_queue="tq",
    )
    with pytest.raises(NondeterminismError) as info:
        await changed.activate(server.history)
    message = str(info.value)
    assert "event 5" in message
    assert "ActivityTaskScheduled(activity_id='1', activity_type='book_car')" in message
    assert "ScheduleActivityTask(activity_id='1', activity_type='book_hotel')" in message
    assert "workflows.py" in message


async def test_asyncio_primitives_work_inside_workflows() -> None:
    from sagas import workflow

    @workflow.defn
    class Primitives:
        @workflow.run
        async def run(self) -> list[str]:
            out: list[str] = []
            event = asyncio.Event()
            queue: asyncio.Queue[str] = asyncio.Queue()

            async def producer() -> None:
                await asyncio.sleep(1)
                await queue.put("item")
                event.set()

            task = asyncio.create_task(producer())
            done, pending = await asyncio.wait([task], timeout=10)
            out.append(f"done={len(done)} pending={len(pending)}")
            await event.wait()
            out.append(await queue.get())
            async with asyncio.Lock():
                out.append("locked")
            return out

    server = FakeServer([Primitives])
    server.start("Primitives")
    await server.run()
    assert server.result == ["done=1 pending=0", "item", "locked"]


async def test_cancel_requested_before_the_workflow_ever_ran() -> None:
    server = FakeServer([SleepWorkflow])
    server.start("SleepWorkflow")
    server.history.append(ev.WorkflowExecutionCancelRequested(event_id=3, event_time=T0))
    instance = server.new_instance()
    assert await instance.activate(server.history) == [cmd.CancelWorkflowExecution()]


async def test_failure_exception_types_fail_the_workflow() -> None:
    from sagas import workflow

    @workflow.defn(failure_exception_types=[KeyError])
    class Strict:
        @workflow.run
        async def run(self) -> None:
            raise KeyError("missing")

    server = FakeServer([Strict])
    server.start("Strict")
    (fail,) = await server.run_task()
    assert isinstance(fail, cmd.FailWorkflowExecution) and fail.failure.type == "KeyError"


async def test_query_must_not_create_commands() -> None:
    from sagas import workflow

    @workflow.defn
    class BadQuery:
        @workflow.run
        async def run(self) -> None:
            await workflow.wait_condition(lambda: False)

        @workflow.query
        def sneaky(self) -> None:
            workflow.start_activity("greet", start_to_close_timeout=timedelta(seconds=1))

    server = FakeServer([BadQuery])
    server.start("BadQuery")
    await server.run_task()
    assert server.instance is not None
    with pytest.raises(ApplicationError, match="must not change workflow state"):
        server.instance.query("sneaky", [])


def test_workflow_apis_outside_a_workflow_raise() -> None:
    from sagas import workflow

    with pytest.raises(RuntimeError, match="not in a workflow"):
        workflow.now()
    assert not workflow.in_workflow()
    assert not workflow.unsafe.is_replaying()


async def test_replay_only_for_queries_runs_nothing_live() -> None:
    server = FakeServer([ApprovalWorkflow])
    server.start("ApprovalWorkflow", 60)
    await server.run_task()
    server.signal("approve", "cy")  # not yet handled by a completed task
    instance = server.new_instance()
    await instance.replay(server.history)
    assert instance.query("status", []) == "waiting"


async def test_cancel_commands_without_events_are_tolerated() -> None:
    # The server records no TimerCanceled when the timer had already fired.
    server = FakeServer([ApprovalWorkflow])
    server.start("ApprovalWorkflow", 60)
    await server.run_task()
    server.signal("approve", "ana")
    await server.run_task()
    history = [e for e in server.history if not isinstance(e, ev.TimerCanceled)]
    history = [e.model_copy(update={"event_id": i + 1}) for i, e in enumerate(history)]
    replay = server.new_instance()
    assert await replay.activate(history) == []
    assert replay.is_completed
