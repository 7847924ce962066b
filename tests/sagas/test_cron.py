"""Cron workflows and workflow retries, with time skipping (durable timers jump when idle)."""

from __future__ import annotations

import asyncio
import time

import pytest

from sagas import workflow
from sagas.client import Client
from sagas.common import RetryPolicy
from sagas.exceptions import ApplicationError, WorkflowFailureError
from sagas.testing import WorkflowEnvironment
from sagas.worker import Worker


@workflow.defn
class Tick:
    @workflow.run
    async def run(self) -> int:
        return workflow.info().attempt


@workflow.defn
class FailsTwice:
    @workflow.run
    async def run(self) -> int:
        attempt = workflow.info().attempt
        if attempt < 3:
            raise ApplicationError(f"attempt {attempt} failed")
        return attempt


async def _closed_runs(client: Client, workflow_id: str) -> int:
    return (await client.count_workflows(f"WorkflowId = '{workflow_id}' AND ExecutionStatus = 'Completed'")).count


async def test_cron_workflow_runs_again_and_keeps_its_id() -> None:
    async with await WorkflowEnvironment.start_time_skipping() as env:
        async with Worker(env.client, task_queue="cron", workflows=[Tick]):
            handle = await env.client.start_workflow(Tick.run, id="hourly", task_queue="cron", cron_schedule="@every 1h")
            deadline = time.monotonic() + 30
            while await _closed_runs(env.client, "hourly") < 3:
                assert time.monotonic() < deadline, "cron did not run three times"
                await asyncio.sleep(0.05)
            runs = [e async for e in env.client.list_workflows("WorkflowId = 'hourly'")]
            assert len({r.run_id for r in runs}) == len(runs) >= 4  # three done + the one waiting
            assert {r.id for r in runs} == {"hourly"}
            await handle.terminate("enough")


async def test_workflow_retry_policy_retries_the_run() -> None:
    async with await WorkflowEnvironment.start_time_skipping() as env:
        async with Worker(env.client, task_queue="retry", workflows=[FailsTwice]):
            result = await env.client.execute_workflow(
                FailsTwice.run, id="retried", task_queue="retry",
                retry_policy=RetryPolicy(maximum_attempts=5),
            )
            assert result == 3
            with pytest.raises(WorkflowFailureError):
                await env.client.execute_workflow(
                    FailsTwice.run, id="not-retried", task_queue="retry", retry_policy=RetryPolicy(maximum_attempts=2)
                )


async def test_time_skipping_keeps_closed_histories() -> None:
    """The clock jumps to the next timer when idle; a retention timer must not be one of them."""
    async with await WorkflowEnvironment.start_time_skipping() as env:
        async with Worker(env.client, task_queue="keep", workflows=[Tick]):
            handle = await env.client.start_workflow(Tick.run, id="kept", task_queue="keep")
            await handle.result()
            await asyncio.sleep(0.3)  # idle: let the time-skipping timer loop run a few rounds
            history = await handle.fetch_history()
    assert history.events[-1].event_type.value == "WorkflowExecutionCompleted"
