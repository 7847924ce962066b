"""Updates (validator, accept/reject, replay), workflow cancellation, children, continue-as-new."""

from __future__ import annotations

import pytest

from orchestrator.api import commands as cmd
from orchestrator.api import events as ev
from sagas.exceptions import ApplicationError
from tests.sagas.runtime.fakeserver import HANG, FakeServer
from tests.sagas.runtime.workflows import (
    Booking,
    CancellableWorkflow,
    ChildWorkflow,
    CounterWorkflow,
    LoopingWorkflow,
    ParentWorkflow,
    TimerCancelWorkflow,
)


@pytest.fixture(params=[True, False], ids=["cached", "replay-every-task"])
def cached(request: pytest.FixtureRequest) -> bool:
    return bool(request.param)


async def test_update_accepted_runs_handler_and_completes(cached: bool) -> None:
    server = FakeServer([CounterWorkflow], activities={"greet": lambda s: s}, cached=cached)
    server.start("CounterWorkflow")
    assert await server.run_task() == []
    server.update("add", 5, update_id="u-1")
    commands = await server.run_task()
    assert commands[0] == cmd.AcceptUpdate(update_id="u-1")
    assert isinstance(commands[1], cmd.ScheduleActivityTask)
    server.resolve_outstanding()
    assert await server.run_task() == [cmd.CompleteUpdate(update_id="u-1", result=5)]
    accepted = server.events_of(ev.WorkflowExecutionUpdateAccepted)
    assert [(e.update_id, e.update_name, e.input) for e in accepted] == [("u-1", "add", [5])]
    server.signal("finish")
    await server.run()
    assert server.result == 5


async def test_update_rejected_by_validator_leaves_no_event(cached: bool) -> None:
    server = FakeServer([CounterWorkflow], cached=cached)
    server.start("CounterWorkflow")
    await server.run_task()
    server.update("add", -1, update_id="u-neg")
    (reject,) = await server.run_task()
    assert isinstance(reject, cmd.RejectUpdate)
    assert reject.update_id == "u-neg"
    assert reject.failure.message == "amount must not be negative"
    assert reject.failure.type == "ValueError"
    assert not server.events_of(ev.WorkflowExecutionUpdateAccepted)
    server.signal("finish")
    await server.run()
    assert server.result == 0


async def test_unknown_update_is_rejected() -> None:
    server = FakeServer([CounterWorkflow])
    server.start("CounterWorkflow")
    await server.run_task()
    server.update("nope", update_id="u-x")
    (reject,) = await server.run_task()
    assert isinstance(reject, cmd.RejectUpdate)
    assert reject.failure.type == "UpdateNotFound"
    assert "add" in reject.failure.message


async def test_update_in_first_task_and_duplicate_delivery() -> None:
    server = FakeServer([CounterWorkflow], activities={"greet": lambda s: s})
    server.start("CounterWorkflow")
    server.update("add", 2, update_id="u-1")
    commands = await server.run_task()
    assert [type(c).__name__ for c in commands] == ["AcceptUpdate", "ScheduleActivityTask"]
    server.update("add", 2, update_id="u-1")  # delivered again: ignored
    server.resolve_outstanding()
    assert await server.run_task() == [cmd.CompleteUpdate(update_id="u-1", result=2)]


async def test_workflow_cancellation_runs_cleanup_then_cancels(cached: bool) -> None:
    server = FakeServer(
        [CancellableWorkflow],
        activities={"book_car": lambda r: HANG, "cancel_car": lambda r: None},
        cached=cached,
    )
    server.start("CancellableWorkflow", Booking("Lisbon"))
    await server.run_task()
    server.cancel_workflow()
    commands = await server.run_task()
    assert isinstance(commands[0], cmd.RequestCancelActivityTask)
    assert commands[0].scheduled_event_id == 5
    assert isinstance(commands[1], cmd.ScheduleActivityTask) and commands[1].activity_type == "cancel_car"
    await server.run()
    assert isinstance(server.close_event, ev.WorkflowExecutionCanceled)


async def test_cancelled_timer_emits_cancel_timer(cached: bool) -> None:
    server = FakeServer([TimerCancelWorkflow], activities={"greet": lambda s: s}, cached=cached)
    server.start("TimerCancelWorkflow")
    assert await server.run_task() == [cmd.StartTimer(timer_id="1", start_to_fire_timeout=3600.0)]
    server.cancel_workflow()
    commands = await server.run_task()
    assert commands[0] == cmd.CancelTimer(timer_id="1")
    assert isinstance(commands[1], cmd.ScheduleActivityTask)
    await server.run()
    assert isinstance(server.close_event, ev.WorkflowExecutionCanceled)


async def test_child_workflow_commands_and_results(cached: bool) -> None:
    def failing_child() -> None:
        raise ApplicationError("child broke", type="Broken")

    server = FakeServer(
        [ParentWorkflow, ChildWorkflow],
        children={"ChildWorkflow": lambda name: f"child {name}", "FailingChild": failing_child},
        cached=cached,
    )
    server.start("ParentWorkflow", "ana")
    (start,) = await server.run_task()
    assert isinstance(start, cmd.StartChildWorkflowExecution)
    assert (start.workflow_id, start.workflow_type, start.input) == ("child-ana", "ChildWorkflow", ["ana"])
    assert start.task_queue == "tq" and start.parent_close_policy == "Terminate"
    await server.run()
    assert server.result == {
        "result": "child ana",
        "child_id": "child-ana",
        "run_id": "child-ana-run",
        "failed": "ApplicationError",
    }
    signals = server.events_of(ev.SignalExternalWorkflowExecutionInitiated)
    assert [(s.workflow_id, s.signal_name, s.child_workflow_only) for s in signals] == [
        ("child-ana", "poke", True),
        ("other", "hello", False),
    ]


async def test_continue_as_new(cached: bool) -> None:
    server = FakeServer([LoopingWorkflow], activities={"greet": lambda s: s}, cached=cached)
    server.start("LoopingWorkflow", 0, 5)
    close = await server.run()
    assert isinstance(close, ev.WorkflowExecutionContinuedAsNew)
    assert close.input == [2, 5]
    assert close.workflow_type == "LoopingWorkflow"
    # The next run picks up from there.
    nxt = FakeServer([LoopingWorkflow], activities={"greet": lambda s: s}, run_id="run-2", cached=cached)
    nxt.start("LoopingWorkflow", *close.input)
    close2 = await nxt.run()
    assert isinstance(close2, ev.WorkflowExecutionContinuedAsNew) and close2.input == [4, 5]
    last = FakeServer([LoopingWorkflow], activities={"greet": lambda s: s}, run_id="run-3", cached=cached)
    last.start("LoopingWorkflow", *close2.input)
    await last.run()
    assert last.result == 5
