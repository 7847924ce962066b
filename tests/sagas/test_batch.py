"""Batch operations (signal / cancel / terminate by visibility query), run by the server's system worker."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator

import pytest

from orchestrator.system import SYSTEM_WORKFLOWS
from sagas import workflow
from sagas.client import (
    BatchCancel,
    BatchOperationProgress,
    BatchSignal,
    BatchTerminate,
    Client,
    RPCError,
    WorkflowAlreadyStartedError,
)
from sagas.testing import WorkflowEnvironment
from sagas.worker import Replayer, Worker

TQ = "batch-targets"


@workflow.defn
class Waiter:
    def __init__(self) -> None:
        self.released: str | None = None

    @workflow.run
    async def run(self) -> str:
        await workflow.wait_condition(lambda: self.released is not None)
        assert self.released is not None
        return self.released

    @workflow.signal
    def release(self, by: str) -> None:
        self.released = by


@pytest.fixture
async def env() -> AsyncIterator[WorkflowEnvironment]:
    async with await WorkflowEnvironment.start_time_skipping() as environment:
        async with Worker(environment.client, task_queue=TQ, workflows=[Waiter], poll_wait=0.1):
            yield environment


async def start_waiters(client: Client, prefix: str, n: int) -> None:
    slots = asyncio.Semaphore(20)

    async def one(i: int) -> None:
        async with slots:
            await client.start_workflow(Waiter.run, id=f"{prefix}-{i}", task_queue=TQ)

    await asyncio.gather(*(one(i) for i in range(n)))


async def count(client: Client, query: str) -> int:
    return (await client.count_workflows(query)).count


async def test_batch_terminate_of_200_workflows_reports_accurately(env: WorkflowEnvironment) -> None:
    client = env.client
    await start_waiters(client, "doomed", 200)
    await start_waiters(client, "spared", 5)
    query = "WorkflowId STARTS_WITH 'doomed-' AND ExecutionStatus = 'Running'"
    handle = await client.start_batch_operation(BatchTerminate(reason="cleanup"), query, rps=50, id="cleanup")
    report = await handle.result()
    assert isinstance(report, BatchOperationProgress)
    assert (report.state, report.operation, report.total_estimate) == ("completed", "terminate", 200)
    assert (report.succeeded, report.failed, report.skipped, report.processed) == (200, 0, 0, 200)
    assert report.failures == [] and report.pages == 4  # 50 per page at 50 per second
    assert report.started_at is not None and report.closed_at is not None
    assert await count(client, "WorkflowId STARTS_WITH 'doomed-' AND ExecutionStatus = 'Terminated'") == 200
    assert await count(client, "WorkflowId STARTS_WITH 'spared-' AND ExecutionStatus = 'Running'") == 5
    # The rate limit is durable timers between pages: 4 pages of 50 at 50/s span at least 3 s of workflow time.
    assert (report.closed_at - report.started_at).total_seconds() >= 3
    assert await handle.describe() == report
    history = await handle.workflow_handle.fetch_history()
    await Replayer(workflows=SYSTEM_WORKFLOWS).replay_workflow(history)
    with pytest.raises(WorkflowAlreadyStartedError):
        await client.start_batch_operation(BatchTerminate(), query, id="cleanup")


async def test_batch_signal_and_cancel(env: WorkflowEnvironment) -> None:
    client = env.client
    await start_waiters(client, "signalled", 20)
    await start_waiters(client, "cancelled", 10)
    signal = await client.start_batch_operation(
        BatchSignal(Waiter.release, args=["batch"]), "WorkflowId STARTS_WITH 'signalled-'"
    )
    cancel = await client.start_batch_operation(
        BatchCancel(reason="not needed"), "WorkflowId STARTS_WITH 'cancelled-' AND ExecutionStatus = 'Running'"
    )
    assert ((await signal.result()).succeeded, (await cancel.result()).succeeded) == (20, 10)
    assert await client.get_workflow_handle("signalled-7").result() == "batch"

    async def settled() -> bool:
        return (
            await count(client, "WorkflowId STARTS_WITH 'signalled-' AND ExecutionStatus = 'Completed'") == 20
            and await count(client, "WorkflowId STARTS_WITH 'cancelled-' AND ExecutionStatus = 'Canceled'") == 10
        )

    for _ in range(200):
        if await settled():
            break
        await asyncio.sleep(0.05)
    assert await settled()
    # A second signal batch over the same query finds only closed runs: all skipped, none failed.
    again = await (await client.start_batch_operation(BatchSignal("release", args=["x"]), "WorkflowId STARTS_WITH 'signalled-'")).result()
    assert (again.succeeded, again.failed, again.skipped) == (0, 0, 20)


async def test_batch_bad_input(env: WorkflowEnvironment) -> None:
    with pytest.raises(RPCError) as info:
        await env.client.start_batch_operation(BatchTerminate(), "WorkflowType = 'X' OR WorkflowType = 'Y'")
    assert info.value.code == "invalid_argument" and "OR" in str(info.value)
    with pytest.raises(ValueError, match="rps must be a positive number"):
        await env.client.start_batch_operation(BatchTerminate(), "", rps=0)
    assert await count(env.client, "WorkflowType = 'sagas.BatchOperation'") == 0


async def test_batch_reset_resets_each_current_run_once(env: WorkflowEnvironment) -> None:
    from sagas.client import BatchReset

    client = env.client
    await start_waiters(client, "rs", 20)
    for i in range(10):  # half of them finish first: a reset applies to closed runs too
        await client.get_workflow_handle(f"rs-{i}").signal(Waiter.release, "before")
    for i in range(10):
        assert await client.get_workflow_handle(f"rs-{i}").result() == "before"
    op = BatchReset(reset_type="FirstWorkflowTask", reason="redo", reapply_signals=False)
    report = await (await client.start_batch_operation(op, "WorkflowId STARTS_WITH 'rs-'", rps=50, id="redo")).result()
    assert (report.operation, report.succeeded, report.failed) == ("reset", 20, 0), report
    # each workflow id got exactly one new run (the batch skipped the runs it created itself)
    assert await count(client, "WorkflowId STARTS_WITH 'rs-' AND ExecutionStatus = 'Running'") == 20
    assert await count(client, "WorkflowId STARTS_WITH 'rs-' AND ExecutionStatus = 'Terminated'") == 10
    assert await count(client, "WorkflowId STARTS_WITH 'rs-' AND ExecutionStatus = 'Completed'") == 10
    assert await count(client, "WorkflowId STARTS_WITH 'rs-'") == 40
    # the new runs start from the first workflow task without the old signal: they wait again
    await client.get_workflow_handle("rs-3").signal(Waiter.release, "after")
    assert await client.get_workflow_handle("rs-3").result() == "after"


async def test_batch_reset_with_an_unknown_type_is_refused(env: WorkflowEnvironment) -> None:
    from sagas.client import BatchReset

    with pytest.raises(ValueError, match="reset_type must be FirstWorkflowTask or LastWorkflowTask"):
        await env.client.start_batch_operation(BatchReset(reset_type="Middle"), "WorkflowId STARTS_WITH 'x'")
