"""Record with one workflow version, replay with a changed one: the error names what diverged."""

from __future__ import annotations

import pytest

from sagas import workflow
from sagas.exceptions import NondeterminismError
from sagas.worker._replayer import Replayer, WorkflowHistory
from tests.replay.record_histories import HISTORIES
from tests.sagas.runtime.workflows import OneActivityWorkflowChanged, SleepWorkflow, T, greet


async def test_changed_activity_names_event_and_both_commands() -> None:
    history = WorkflowHistory.from_json((HISTORIES / "one_activity.json").read_text())
    with pytest.raises(NondeterminismError) as info:
        await Replayer(workflows=[OneActivityWorkflowChanged]).replay_workflow(history)
    message = str(info.value)
    assert "event 5" in message
    assert "history recorded ActivityTaskScheduled(activity_id='1', activity_type='book_car')" in message
    assert (
        "the workflow produced ScheduleActivityTask(activity_id='1', activity_type='book_hotel')" in message
    )
    assert "workflows.py:" in message  # the source line that produced the command
    assert "workflow.patched" in message  # and what to do about it


async def test_extra_command_is_reported() -> None:
    @workflow.defn(name="SleepWorkflow")
    class SleepThenActivity:
        @workflow.run
        async def run(self) -> None:
            await workflow.sleep(10)
            await workflow.execute_activity(greet, "extra", start_to_close_timeout=T)
            await workflow.sleep(5)

    history = WorkflowHistory.from_json((HISTORIES / "timers.json").read_text())
    with pytest.raises(NondeterminismError) as info:
        await Replayer(workflows=[SleepThenActivity]).replay_workflow(history)
    message = str(info.value)
    assert "TimerStarted(timer_id='2')" in message
    assert "ScheduleActivityTask(activity_id='1', activity_type='greet')" in message


async def test_missing_command_is_reported() -> None:
    @workflow.defn(name="SleepWorkflow")
    class ReturnsEarly:
        @workflow.run
        async def run(self) -> dict[str, str]:
            await workflow.sleep(10)
            return {}

    history = WorkflowHistory.from_json((HISTORIES / "timers.json").read_text())
    with pytest.raises(NondeterminismError) as info:
        await Replayer(workflows=[ReturnsEarly]).replay_workflow(history)
    message = str(info.value)
    assert "TimerStarted(timer_id='2')" in message
    assert "CompleteWorkflowExecution()" in message


async def test_unchanged_code_replays() -> None:
    history = WorkflowHistory.from_json((HISTORIES / "timers.json").read_text())
    result = await Replayer(workflows=[SleepWorkflow]).replay_workflow(history)
    assert result.replay_failure is None
