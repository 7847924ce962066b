"""Schedules, run by the server's system worker, with time skipping (durable timers jump when idle).

Virtual time only moves when nothing is in flight, so a schedule's timeline is
deterministic: with an hourly interval and a target that sleeps 110 minutes,
the n-th fire and the end of each run fall at known offsets from the first
fire, which is what the overlap-policy tests check.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator, Callable, Coroutine
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest

from orchestrator.system import SYSTEM_WORKFLOWS
from orchestrator.system import schedules as schedule_workflow
from sagas import workflow
from sagas.client import (
    Client,
    InvalidScheduleError,
    Schedule,
    ScheduleActionStartWorkflow,
    ScheduleAlreadyRunningError,
    ScheduleBackfill,
    ScheduleCalendarSpec,
    ScheduleIntervalSpec,
    ScheduleNotFoundError,
    ScheduleOverlapPolicy,
    SchedulePolicy,
    ScheduleRange,
    ScheduleSpec,
    ScheduleState,
    ScheduleUpdate,
    ScheduleUpdateInput,
    WorkflowExecution,
)
from sagas.exceptions import ApplicationError
from sagas.testing import WorkflowEnvironment
from sagas.worker import Replayer, Worker

HOUR = timedelta(hours=1)
TQ = "scheduled"


@workflow.defn
class Quick:
    @workflow.run
    async def run(self, label: str) -> str:
        return label


@workflow.defn
class Slow:
    """Runs 110 minutes: longer than the hourly interval, never ending on a fire time."""

    @workflow.run
    async def run(self) -> None:
        await workflow.sleep(timedelta(minutes=110))


@workflow.defn
class Nap:
    @workflow.run
    async def run(self, hours: float) -> None:
        await workflow.sleep(timedelta(hours=hours))


@pytest.fixture
async def env() -> AsyncIterator[WorkflowEnvironment]:
    async with await WorkflowEnvironment.start_time_skipping() as environment:
        async with Worker(environment.client, task_queue=TQ, workflows=[Quick, Slow, Nap, Fails], poll_wait=0.1):
            yield environment


def hourly(workflow_: Any, *args: Any, overlap: ScheduleOverlapPolicy = ScheduleOverlapPolicy.SKIP,
           paused: bool = False) -> Schedule:
    return Schedule(
        action=ScheduleActionStartWorkflow(workflow_, args=list(args), id="run", task_queue=TQ),
        spec=ScheduleSpec(intervals=[ScheduleIntervalSpec(every=HOUR)]),
        policy=SchedulePolicy(overlap=overlap),
        state=ScheduleState(paused=paused, note="created paused" if paused else None),
    )


async def wait_for(check: Callable[[], Coroutine[Any, Any, bool]], what: str, timeout: float = 30.0) -> None:
    deadline = time.monotonic() + timeout
    while not await check():
        assert time.monotonic() < deadline, f"timed out waiting for {what}"
        await asyncio.sleep(0.05)


async def runs_of(client: Client, schedule_id: str) -> list[WorkflowExecution]:
    """Every run the schedule started, by nominal fire time."""
    runs = [r async for r in client.list_workflows(f"SagasScheduledById = '{schedule_id}'")]
    return sorted(runs, key=lambda r: r.search_attributes["SagasScheduledStartTime"])


def nominal(run: WorkflowExecution) -> datetime:
    return datetime.strptime(run.search_attributes["SagasScheduledStartTime"], "%Y-%m-%dT%H:%M:%SZ").replace(tzinfo=UTC)


async def test_interval_schedule_fires_every_interval(env: WorkflowEnvironment) -> None:
    handle = await env.client.create_schedule("every-hour", hourly(Quick.run, "tick"))

    async def five() -> bool:
        return len(await runs_of(env.client, "every-hour")) >= 5

    await wait_for(five, "five hourly runs")
    await handle.pause(note="enough")
    runs = await runs_of(env.client, "every-hour")
    times = [nominal(r) for r in runs]
    assert all(b - a == HOUR for a, b in zip(times, times[1:], strict=False))
    assert all(t.minute == 0 and t.second == 0 for t in times)  # aligned to the epoch, like Temporal
    assert runs[0].id == f"run-{times[0]:%Y-%m-%dT%H:%M:%SZ}"
    assert runs[0].parent_id == "sagas-schedule:every-hour"

    desc = await handle.describe()
    assert desc.schedule.state.paused and desc.schedule.state.note == "enough"
    assert desc.info.num_actions == len(runs)
    assert [a.action.workflow_id for a in desc.info.recent_actions] == [r.id for r in runs][-10:]
    assert desc.schedule.action.args == ["tick"]
    assert desc.info.next_action_times[0] - desc.info.next_action_times[-1] == -9 * HOUR
    assert await env.client.get_workflow_handle(runs[0].id).result() == "tick"


OVERLAP_CASES = {
    # policy: (nominal fire offsets in hours of the first four runs, start delay of each after its fire, in minutes)
    ScheduleOverlapPolicy.SKIP: ([0, 2, 4, 6], [0, 0, 0, 0]),
    ScheduleOverlapPolicy.BUFFER_ONE: ([0, 1, 2, 4], [0, 50, 100, 90]),
    ScheduleOverlapPolicy.BUFFER_ALL: ([0, 1, 2, 3], [0, 50, 100, 150]),
    ScheduleOverlapPolicy.ALLOW_ALL: ([0, 1, 2, 3], [0, 0, 0, 0]),
    ScheduleOverlapPolicy.TERMINATE_OTHER: ([0, 1, 2, 3], [0, 0, 0, 0]),
    ScheduleOverlapPolicy.CANCEL_OTHER: ([0, 1, 2, 3], [0, 0, 0, 0]),
}


@pytest.mark.parametrize("policy", list(OVERLAP_CASES), ids=lambda p: p.name)
async def test_overlap_policy(env: WorkflowEnvironment, policy: ScheduleOverlapPolicy) -> None:
    """Hourly fires, runs of 110 minutes: each policy starts runs at its documented times."""
    handle = await env.client.create_schedule("overlap", hourly(Slow.run, overlap=policy))

    async def four() -> bool:
        return len(await runs_of(env.client, "overlap")) >= 4

    await wait_for(four, f"four runs under {policy.name}")
    await handle.pause()
    runs = (await runs_of(env.client, "overlap"))[:4]
    first = nominal(runs[0])
    offsets, delays = OVERLAP_CASES[policy]
    assert [(nominal(r) - first) / HOUR for r in runs] == offsets
    got_delays = [round((r.start_time - nominal(r)).total_seconds() / 60) for r in runs]
    assert got_delays == delays
    info = (await handle.describe()).info
    if policy in (ScheduleOverlapPolicy.SKIP, ScheduleOverlapPolicy.BUFFER_ONE):
        assert info.num_actions_skipped_overlap >= 2
    else:
        assert info.num_actions_skipped_overlap == 0
    if policy in (ScheduleOverlapPolicy.TERMINATE_OTHER, ScheduleOverlapPolicy.CANCEL_OTHER):
        closed = "Terminated" if policy == ScheduleOverlapPolicy.TERMINATE_OTHER else "Canceled"
        for run in runs[:3]:
            assert (await env.client.get_workflow_handle(run.id).describe()).status == closed
    # The schedule workflow's history replays against today's code (determinism).
    history = await env.client.get_workflow_handle("sagas-schedule:overlap").fetch_history()
    await Replayer(workflows=SYSTEM_WORKFLOWS).replay_workflow(history)


async def test_paused_schedule_does_not_fire_but_trigger_does(env: WorkflowEnvironment) -> None:
    handle = await env.client.create_schedule("paused", hourly(Quick.run, "manual", paused=True))
    # Ten hours pass (another workflow's timer) while the schedule is paused.
    await env.client.execute_workflow(Nap.run, 10, id="ten-hours", task_queue=TQ)
    assert await runs_of(env.client, "paused") == []
    desc = await handle.describe()
    assert desc.info.num_actions == 0 and desc.schedule.state.note == "created paused"

    await handle.trigger()
    runs = await runs_of(env.client, "paused")
    assert len(runs) == 1 and (await handle.describe()).info.num_actions == 1

    await handle.unpause()

    async def fired() -> bool:
        return len(await runs_of(env.client, "paused")) >= 3

    await wait_for(fired, "fires after unpause")
    await handle.delete()


@workflow.defn
class Fails:
    @workflow.run
    async def run(self) -> None:
        raise ApplicationError("boom", non_retryable=True)


async def test_limited_actions_trigger_immediately_and_pause_on_failure(env: WorkflowEnvironment) -> None:
    limited = hourly(Quick.run, "limited")
    limited.state = ScheduleState(limited_actions=True, remaining_actions=2)
    await env.client.create_schedule("two-only", limited, trigger_immediately=True)
    failing = hourly(Fails.run)
    failing.policy = SchedulePolicy(pause_on_failure=True)
    failing_handle = await env.client.create_schedule("fails", failing)
    await env.client.execute_workflow(Nap.run, 5, id="five-hours", task_queue=TQ)
    # The immediate trigger does not count against the two scheduled actions.
    assert len(await runs_of(env.client, "two-only")) == 3
    desc = (await env.client.get_schedule_handle("two-only").describe())
    assert desc.schedule.state.remaining_actions == 0 and desc.info.next_action_times == []
    failed = await failing_handle.describe()
    assert failed.schedule.state.paused and "failed" in (failed.schedule.state.note or "")
    assert failed.info.num_actions >= 1 and not failed.info.running_actions


async def test_backfill_a_week_of_an_hourly_schedule_starts_168_runs(env: WorkflowEnvironment) -> None:
    schedule = Schedule(
        action=ScheduleActionStartWorkflow(Quick.run, "backfilled", id="report", task_queue=TQ),
        spec=ScheduleSpec(cron_expressions=["0 * * * *"]),
        state=ScheduleState(paused=True),
    )
    handle = await env.client.create_schedule("weekly-backfill", schedule)
    start = datetime(2024, 1, 1, 0, 30, tzinfo=UTC)
    await handle.backfill(
        ScheduleBackfill(start_at=start, end_at=start + timedelta(days=7), overlap=ScheduleOverlapPolicy.ALLOW_ALL)
    )

    async def all_done() -> bool:
        query = "SagasScheduledById = 'weekly-backfill' AND ExecutionStatus = 'Completed'"
        return (await env.client.count_workflows(query)).count >= 168

    await wait_for(all_done, "168 backfilled runs", timeout=60)
    runs = await runs_of(env.client, "weekly-backfill")
    assert len(runs) == 168
    assert nominal(runs[0]) == datetime(2024, 1, 1, 1, tzinfo=UTC)
    assert nominal(runs[-1]) == datetime(2024, 1, 8, 0, tzinfo=UTC)
    assert (await handle.describe()).info.num_actions == 168


async def test_schedule_continues_as_new_and_keeps_its_state(
    env: WorkflowEnvironment, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(schedule_workflow, "MAX_ACTIONS_PER_RUN", 4)  # a wake-up and a start per fire
    handle = await env.client.create_schedule("long-lived", hourly(Quick.run, "x"))

    async def six() -> bool:
        return len(await runs_of(env.client, "long-lived")) >= 6

    await wait_for(six, "six runs across continue-as-new")
    await handle.pause()
    chain = [r async for r in env.client.list_workflows("WorkflowId = 'sagas-schedule:long-lived'")]
    assert sum(r.status == "ContinuedAsNew" for r in chain) >= 2
    replayer = Replayer(workflows=SYSTEM_WORKFLOWS)
    for run in chain:
        await replayer.replay_workflow(
            await env.client.get_workflow_handle(run.id, run_id=run.run_id).fetch_history()
        )
    desc = await handle.describe()
    assert desc.info.num_actions == len(await runs_of(env.client, "long-lived"))
    assert desc.schedule.state.paused


async def test_update_list_and_delete(env: WorkflowEnvironment) -> None:
    handle = await env.client.create_schedule("changing", hourly(Quick.run, "v1", paused=True))

    def every_two_hours(input: ScheduleUpdateInput) -> ScheduleUpdate:
        schedule = input.description.schedule
        schedule.spec = ScheduleSpec(intervals=[ScheduleIntervalSpec(every=2 * HOUR)])
        schedule.action.args = ["v2"]
        schedule.state.note = "now every two hours"
        return ScheduleUpdate(schedule=schedule)

    await handle.update(every_two_hours)
    desc = await handle.describe()
    assert desc.schedule.action.args == ["v2"] and desc.schedule.state.note == "now every two hours"
    times = desc.info.next_action_times
    assert all(b - a == 2 * HOUR for a, b in zip(times, times[1:], strict=False))

    listed = [s async for s in await env.client.list_schedules()]
    assert [(s.id, s.schedule.action.workflow, s.schedule.state.paused) for s in listed] == [
        ("changing", "Quick", True)
    ]
    await handle.delete()
    with pytest.raises(ScheduleNotFoundError):
        await handle.describe()
    with pytest.raises(ScheduleNotFoundError):
        await handle.pause()
    assert [s async for s in await env.client.list_schedules()] == []
    # The id is free again once deleted.
    await env.client.create_schedule("changing", hourly(Quick.run, "v3", paused=True))


async def test_time_zone_and_calendar_specs(env: WorkflowEnvironment) -> None:
    schedule = Schedule(
        action=ScheduleActionStartWorkflow(Quick.run, "tz", id="tz", task_queue=TQ),
        spec=ScheduleSpec(
            calendars=[ScheduleCalendarSpec(hour=[ScheduleRange(9)], day_of_week=[ScheduleRange(1, 5)])],
            time_zone_name="Europe/Paris",
        ),
        state=ScheduleState(paused=True),
    )
    handle = await env.client.create_schedule("paris-mornings", schedule)
    times = (await handle.describe()).info.next_action_times
    from zoneinfo import ZoneInfo

    local = [t.astimezone(ZoneInfo("Europe/Paris")) for t in times]
    assert all(t.hour == 9 and t.minute == 0 and t.isoweekday() <= 5 for t in local)
    assert len(local) == 10


BAD_SPECS = [
    (ScheduleSpec(cron_expressions=["61 * * * *"]), "'61 * * * *'"),
    (ScheduleSpec(cron_expressions=["every hour"]), "'every hour'"),
    (ScheduleSpec(cron_expressions=["@hourly"], time_zone_name="Mars/Olympus_Mons"), "unknown time zone 'Mars/Olympus_Mons'"),
    (ScheduleSpec(intervals=[ScheduleIntervalSpec(every=timedelta(0))]), "every must be positive"),
    (ScheduleSpec(intervals=[ScheduleIntervalSpec(every=HOUR, offset=2 * HOUR)]), "offset must be in"),
    (ScheduleSpec(calendars=[ScheduleCalendarSpec(hour=[ScheduleRange(25)])]), "calendar"),
]


async def test_bad_schedules_are_refused_with_the_reason(env: WorkflowEnvironment) -> None:
    for spec, message in BAD_SPECS:
        schedule = Schedule(action=ScheduleActionStartWorkflow(Quick.run, "x", id="x", task_queue=TQ), spec=spec)
        with pytest.raises(InvalidScheduleError, match=message.replace("*", r"\*")):
            await env.client.create_schedule("bad", schedule)
    with pytest.raises(ScheduleNotFoundError):
        await env.client.get_schedule_handle("bad").describe()


async def test_existing_schedule_id_and_missing_fields(env: WorkflowEnvironment) -> None:
    await env.client.create_schedule("taken", hourly(Quick.run, "a", paused=True))
    with pytest.raises(ScheduleAlreadyRunningError, match="'taken' already exists"):
        await env.client.create_schedule("taken", hourly(Quick.run, "b"))
    no_queue = Schedule(
        action=ScheduleActionStartWorkflow(Quick.run, "x", id="x", task_queue=""),
        spec=ScheduleSpec(cron_expressions=["@daily"]),
    )
    with pytest.raises(InvalidScheduleError, match="task_queue must not be empty"):
        await env.client.create_schedule("no-queue", no_queue)
    handle = env.client.get_schedule_handle("taken")
    with pytest.raises(InvalidScheduleError, match="before start_at"):
        await handle.backfill(ScheduleBackfill(start_at=datetime(2024, 2, 1), end_at=datetime(2024, 1, 1)))
