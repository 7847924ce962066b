"""Reset: a new run from a workflow task of an earlier run, with the fixed code deciding again.

Against a real in-process orchestrator and SDK worker. Each activity counts its executions, so
"what completed before the reset point does not run again" is checked, not assumed.
"""

from __future__ import annotations

import asyncio
from collections import Counter
from collections.abc import AsyncIterator
from datetime import timedelta

import pytest
from typer.testing import CliRunner

from orchestrator.api import events as E
from sagas import activity, workflow
from sagas.cli.main import app as cli
from sagas.client import WorkflowFailureError
from sagas.common import RetryPolicy
from sagas.exceptions import ApplicationError, RPCError
from sagas.testing import WorkflowEnvironment
from sagas.worker import Worker

T = timedelta(seconds=10)
RUNS: Counter[str] = Counter()
HOTEL_BUG = {"on": True}


@activity.defn
async def reset_book(item: str) -> str:
    RUNS[item] += 1
    if item == "hotel" and HOTEL_BUG["on"]:
        raise ApplicationError("hotel: the bug", non_retryable=True)
    return f"{item} booked"


@workflow.defn
class ResetTrip:
    @workflow.run
    async def run(self) -> list[str]:
        out = []
        for item in ("car", "hotel"):
            out.append(await workflow.execute_activity(reset_book, item, start_to_close_timeout=T,
                                                       retry_policy=RetryPolicy(maximum_attempts=1)))  # fmt: skip
        return out


@workflow.defn
class ResetWaiter:
    def __init__(self) -> None:
        self.got: list[str] = []

    @workflow.signal
    def add(self, value: str) -> None:
        self.got.append(value)

    @workflow.run
    async def run(self) -> list[str]:
        await workflow.execute_activity(reset_book, "waiter-car", start_to_close_timeout=T)
        await workflow.wait_condition(lambda: len(self.got) >= 2)
        return self.got


@pytest.fixture
async def env() -> AsyncIterator[WorkflowEnvironment]:
    environment = await WorkflowEnvironment.start_local()
    try:
        async with Worker(environment.client, task_queue="reset", workflows=[ResetTrip, ResetWaiter],
                          activities=[reset_book]):  # fmt: skip
            yield environment
    finally:
        await environment.shutdown()


def completed_wft_after(events: list[E.HistoryEvent], activity_item_event: type, nth: int = 0) -> int:
    """The WorkflowTaskCompleted that follows the ``nth`` event of ``activity_item_event``."""
    marks = [e.event_id for e in events if isinstance(e, activity_item_event)]
    return next(e.event_id for e in events if isinstance(e, E.WorkflowTaskCompleted) and e.event_id > marks[nth])


async def settled_after_car(handle: object) -> list[E.HistoryEvent]:
    """Poll the history until the workflow task after the car's completion completed (it now waits)."""
    while True:
        events = (await handle.fetch_history()).events  # type: ignore[attr-defined]
        done = [e.event_id for e in events if isinstance(e, E.ActivityTaskCompleted)]
        if done and any(isinstance(e, E.WorkflowTaskCompleted) and e.event_id > done[0] for e in events):
            return list(events)
        await asyncio.sleep(0.02)  # polling the history, not waiting a fixed time


async def test_reset_after_a_fix_keeps_completed_work_and_runs_the_rest(env: WorkflowEnvironment) -> None:
    RUNS.clear()
    HOTEL_BUG["on"] = True
    handle = await env.client.start_workflow(ResetTrip.run, id="reset-trip", task_queue="reset")
    with pytest.raises(WorkflowFailureError):
        await handle.result()
    old = await handle.fetch_history()
    assert RUNS == {"car": 1, "hotel": 1}

    HOTEL_BUG["on"] = False  # the fix is deployed
    point = completed_wft_after(old.events, E.ActivityTaskCompleted)  # the task that scheduled the hotel
    new = await handle.reset(event_id=point, reason="hotel bug fixed")
    assert new.run_id and new.run_id != old.run_id
    assert await new.result() == ["car booked", "hotel booked"]
    assert RUNS == {"car": 1, "hotel": 2}  # the car was not booked twice

    history = await new.fetch_history()
    started_id = point - 1
    assert [e.model_dump() for e in history.events[:started_id]] == [e.model_dump() for e in old.events[:started_id]]
    failed = history.events[started_id]
    assert isinstance(failed, E.WorkflowTaskFailed) and failed.cause == "ResetWorkflow"
    assert failed.failure is not None and "hotel bug fixed" in failed.failure.message
    assert old.run_id in failed.failure.message
    # the current run is the new one; the old one stays as it was (failed)
    assert (await env.client.get_workflow_handle("reset-trip").describe()).run_id == new.run_id
    assert (await env.client.get_workflow_handle("reset-trip", run_id=old.run_id).describe()).status.name == "FAILED"


async def test_reset_of_a_running_workflow_terminates_it_and_reapplies_signals(env: WorkflowEnvironment) -> None:
    handle = await env.client.start_workflow(ResetWaiter.run, id="reset-waiter", task_queue="reset")
    first = await handle.describe()
    events = await settled_after_car(handle)
    await handle.signal(ResetWaiter.add, "a")
    while not any(isinstance(e, E.WorkflowExecutionSignaled) for e in events):
        await asyncio.sleep(0.02)  # polling the history for the signal's event
        events = (await handle.fetch_history()).events
    point = completed_wft_after(events, E.ActivityTaskCompleted)  # after the car, before the signal
    assert point < next(e.event_id for e in events if isinstance(e, E.WorkflowExecutionSignaled))

    new = await handle.reset(event_id=point, reason="try again")
    old = env.client.get_workflow_handle("reset-waiter", run_id=first.run_id)
    assert (await old.describe()).status.name == "TERMINATED"
    old_events = (await old.fetch_history()).events
    assert isinstance(old_events[-1], E.WorkflowExecutionTerminated) and new.run_id in old_events[-1].reason
    await env.client.get_workflow_handle("reset-waiter").signal(ResetWaiter.add, "b")
    assert await new.result() == ["a", "b"]  # "a" came again after the reset point
    reapplied = [e for e in (await new.fetch_history()).events if isinstance(e, E.WorkflowExecutionSignaled)]
    assert [e.input for e in reapplied] == [["a"], ["b"]]


async def test_reset_without_reapplying_signals_and_by_type(env: WorkflowEnvironment) -> None:
    handle = await env.client.start_workflow(ResetWaiter.run, id="reset-noreapply", task_queue="reset")
    await handle.signal(ResetWaiter.add, "a")
    await handle.signal(ResetWaiter.add, "b")
    assert await handle.result() == ["a", "b"]
    new = await handle.reset(reset_type="FirstWorkflowTask", reapply_signals=False)
    await env.client.get_workflow_handle("reset-noreapply").signal(ResetWaiter.add, "c")
    await env.client.get_workflow_handle("reset-noreapply").signal(ResetWaiter.add, "d")
    assert await new.result() == ["c", "d"]


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"event_id": 5}, "event 5 is a ActivityTaskScheduled; a reset point is an event of a started workflow task"),
        ({"event_id": 999}, "event 999 is not in this run's history"),
        ({"event_id": 2, "reset_type": "LastWorkflowTask"}, "exactly one of event_id or reset_type"),
        ({}, "exactly one of event_id or reset_type"),
        ({"reset_type": "Middle"}, "unknown reset type 'Middle'"),
    ],
)
async def test_bad_reset_points_are_refused_with_the_reason(
    env: WorkflowEnvironment, kwargs: dict[str, object], message: str
) -> None:
    RUNS.clear()
    HOTEL_BUG["on"] = False
    handle = await env.client.start_workflow(ResetTrip.run, id="reset-bad", task_queue="reset")
    await handle.result()
    events = (await handle.fetch_history()).events
    assert isinstance(events[4], E.ActivityTaskScheduled)  # so the first case names a real non-task event
    with pytest.raises(RPCError) as info:
        await handle.reset(**kwargs)  # type: ignore[arg-type]
    assert info.value.code == "invalid_argument" and message in str(info.value)
    assert (await handle.describe()).run_id == (await env.client.get_workflow_handle("reset-bad").describe()).run_id


async def test_reset_of_an_unknown_workflow_is_not_found(env: WorkflowEnvironment) -> None:
    with pytest.raises(RPCError) as info:
        await env.client.get_workflow_handle("no-such-workflow").reset(reset_type="LastWorkflowTask")
    assert info.value.code == "workflow_not_found"


async def test_cli_reset(env: WorkflowEnvironment) -> None:
    assert env.server is not None
    HOTEL_BUG["on"] = False
    handle = await env.client.start_workflow(ResetTrip.run, id="reset-cli", task_queue="reset")
    await handle.result()
    first = (await handle.describe()).run_id
    address = env.server.url.removeprefix("http://")
    result = await asyncio.to_thread(CliRunner().invoke, cli, [
        "workflow", "reset", "-w", "reset-cli", "--type", "LastWorkflowTask", "--reason", "cli", "--address", address])  # fmt: skip
    assert result.exit_code == 0, result.output
    current = (await env.client.get_workflow_handle("reset-cli").describe()).run_id
    assert current != first and current in result.output
    assert await env.client.get_workflow_handle("reset-cli").result() == ["car booked", "hotel booked"]
    refused = await asyncio.to_thread(CliRunner().invoke, cli, ["workflow", "reset", "-w", "reset-cli", "--address", address])
    assert refused.exit_code != 0 and "exactly one of --to-event or --type" in refused.output
