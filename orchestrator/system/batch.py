"""The batch-operation system workflow (``sagas.BatchOperation``); the client side is :mod:`sagas.client._batch`.

One activity per page: list the page (a keyset token, so pages do not shift
as runs stop matching), apply the operation to its running runs with a few
calls in flight, and return the counts. Between pages the workflow sleeps on
a durable timer so that at most ``rps`` runs are handled per second; it
answers ``progress`` by query and returns the final report.
"""

from __future__ import annotations

import asyncio
from datetime import timedelta

from orchestrator.api.enums import WorkflowExecutionStatus
from sagas import activity, workflow
from sagas.client._batch import (
    BATCH_WORKFLOW_TYPE,
    MAX_REPORTED_FAILURES,
    BatchOperationFailure,
    BatchOperationInput,
    BatchOperationProgress,
    BatchPageResult,
)
from sagas.client._schedule import SYSTEM_TASK_QUEUE
from sagas.common import RetryPolicy
from sagas.exceptions import RPCError

PAGES_PER_RUN = 100
"""Pages after which the batch continues as new (bounded history for any size)."""
CONCURRENCY = 10
"""Operations in flight at once within a page."""


@activity.defn(name="sagas.system.apply_batch_page")
async def apply_batch_page(input: BatchOperationInput, token: str | None, page_size: int) -> BatchPageResult:
    """List one page of ``input.query`` from ``token`` and apply the operation to its running runs."""
    client = activity.client()
    listing = client.list_workflows(input.query, page_size=page_size, next_page_token=token)
    await listing.fetch_next_page()
    page = listing.current_page or []
    result = BatchPageResult(next_page_token=listing.next_page_token)
    slots = asyncio.Semaphore(CONCURRENCY)

    async def apply(workflow_id: str, run_id: str) -> None:
        handle = client.get_workflow_handle(workflow_id, run_id=run_id)
        async with slots:
            try:
                if input.operation == "reset":
                    current = await client.get_workflow_handle(workflow_id).describe()
                    if current.run_id != run_id:  # an older run: only the current one is reset
                        result.skipped += 1
                        return
                    await handle.reset(reset_type=input.reset_type, reason=input.reason or "batch reset",
                                       reapply_signals=input.reapply_signals)  # fmt: skip
                elif input.operation == "signal":
                    await handle.signal(input.signal, args=input.signal_args)
                elif input.operation == "cancel":
                    await handle.cancel(reason=input.reason)
                else:
                    await handle.terminate(reason=input.reason or "batch terminate")
            except RPCError as exc:
                if exc.code == "workflow_not_running":  # closed since it was listed
                    result.skipped += 1
                    return
                result.failed += 1
                if len(result.failures) < MAX_REPORTED_FAILURES:
                    result.failures.append(BatchOperationFailure(workflow_id, run_id, f"{exc.code}: {exc}"))
                return
        result.succeeded += 1

    targets = []
    for run in page:
        if run.task_queue == SYSTEM_TASK_QUEUE:
            result.skipped += 1
        elif input.operation == "reset":  # closed runs too; not the runs started after the batch (its own)
            if input.started_before is not None and run.start_time is not None and run.start_time > input.started_before:
                result.skipped += 1
            else:
                targets.append(apply(run.id, run.run_id))
        elif run.status != WorkflowExecutionStatus.RUNNING:
            result.skipped += 1
        else:
            targets.append(apply(run.id, run.run_id))
    await asyncio.gather(*targets)
    activity.heartbeat(len(page))
    return result


@workflow.defn(name=BATCH_WORKFLOW_TYPE)
class BatchOperationWorkflow:
    """One batch operation (see the module docstring)."""

    @workflow.init
    def __init__(
        self, input: BatchOperationInput, progress: BatchOperationProgress, token: str | None = None
    ) -> None:
        self.report = progress
        if self.report.started_at is None:
            self.report.started_at = workflow.now()

    @workflow.run
    async def run(
        self, input: BatchOperationInput, progress: BatchOperationProgress, token: str | None = None
    ) -> BatchOperationProgress:
        p = self.report
        # One page is about one second of the rate budget; the timer between pages enforces it.
        page_size = max(1, min(input.page_size, int(input.rps) or 1))
        for _ in range(PAGES_PER_RUN):
            began = workflow.time()
            page = await workflow.execute_activity(
                apply_batch_page,
                args=[input, token, page_size],
                start_to_close_timeout=timedelta(minutes=5),
                retry_policy=RetryPolicy(maximum_interval=timedelta(seconds=30)),
                result_type=BatchPageResult,
            )
            p.pages += 1
            p.succeeded += page.succeeded
            p.failed += page.failed
            p.skipped += page.skipped
            p.processed = p.succeeded + p.failed + p.skipped
            p.failures = (p.failures + page.failures)[:MAX_REPORTED_FAILURES]
            token = page.next_page_token
            if token is None:
                p.state = "completed"
                p.closed_at = workflow.now()
                return p
            handled = page.succeeded + page.failed
            wait = handled / input.rps - (workflow.time() - began)
            if wait > 0:
                await workflow.sleep(wait)
        workflow.continue_as_new(args=[input, p, token])

    @workflow.query
    def progress(self) -> BatchOperationProgress:
        return self.report

