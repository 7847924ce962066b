"""Batch operations: signal, cancel or terminate every workflow a visibility query matches.

::

    from sagas.client import BatchTerminate

    handle = await client.start_batch_operation(
        BatchTerminate(reason="bad deploy"),
        query="WorkflowType = 'BookTrip' AND ExecutionStatus = 'Running'",
        rps=100,
    )
    print(await handle.describe())        # progress so far
    report = await handle.result()        # waits; succeeded / failed / skipped counts and failures
    assert report.failed == 0

A batch is a *system workflow* (type ``sagas.BatchOperation``, workflow id
``sagas-batch:{id}``, task queue ``sagas-system``) run by the server's system
worker. It pages through the query (newest runs first; a keyset page token,
so runs that stop matching do not shift the pages), applies the operation to
each *running* run of a page in an activity, and sleeps on a durable timer
between pages so that at most ``rps`` operations are applied per second. It
continues as new every 100 pages, so a batch of any size has a bounded
history. Runs that are not running when their page is read (and the system
workflows themselves) are counted as ``skipped``, not touched.

A page is applied at least once: if its activity is retried (the worker died
half way), the runs it already handled no longer run and are counted as
skipped, so ``succeeded`` may then under-count.
"""

from __future__ import annotations

import math
import uuid
from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any, Literal

from orchestrator.api.enums import WorkflowIDReusePolicy
from sagas.client._schedule import SYSTEM_TASK_QUEUE, _system_client

if TYPE_CHECKING:
    from sagas.client._client import Client, WorkflowHandle

BATCH_WORKFLOW_TYPE = "sagas.BatchOperation"
BATCH_WORKFLOW_ID_PREFIX = "sagas-batch:"
MAX_REPORTED_FAILURES = 100


class BatchOperation:
    """Base of what a batch does to each matching run.

    Example::

        op: BatchOperation = BatchCancel(reason="release 42 rolled back")
        handle = await client.start_batch_operation(op, "WorkflowType = 'BookTrip'")
    """

    kind: str = ""


@dataclass
class BatchSignal(BatchOperation):
    """Send ``signal`` (a name or the ``@workflow.signal`` method) with ``args`` to each run.

    Example::

        handle = await client.start_batch_operation(
            BatchSignal(BookTrip.approve, args=["ops"]),
            "WorkflowType = 'BookTrip' AND ExecutionStatus = 'Running'",
        )
    """

    signal: Any
    args: Sequence[Any] = ()
    kind: str = "signal"


@dataclass
class BatchCancel(BatchOperation):
    """Request cancellation of each run (its code may clean up first, e.g. compensate).

    Example::

        await client.start_batch_operation(BatchCancel(reason="supplier down"), "WorkflowType = 'BookTrip'", rps=10)
    """

    reason: str = ""
    kind: str = "cancel"


@dataclass
class BatchTerminate(BatchOperation):
    """Terminate each run at once, without running any of its code.

    Example::

        await client.start_batch_operation(BatchTerminate(reason="test data"), "CustomerId = 'test-customer'")
    """

    reason: str = ""
    kind: str = "terminate"


@dataclass
class BatchReset(BatchOperation):
    """Reset each matching workflow: a new run from its first or last completed workflow task.

    Only each workflow id's current run is reset (older runs the query matches are skipped, and so
    are runs started after the batch began, such as the new runs the batch itself creates). A
    running run is terminated by its reset. See :meth:`WorkflowHandle.reset`.

    Example::

        await client.start_batch_operation(
            BatchReset(reset_type="LastWorkflowTask", reason="hotel bug fixed"),
            "WorkflowType = 'BookTrip' AND ExecutionStatus = 'Failed'",
        )
    """

    reset_type: str = "LastWorkflowTask"
    reason: str = ""
    reapply_signals: bool = True
    kind: str = "reset"


@dataclass
class BatchOperationFailure:
    """A run the operation could not be applied to, and why.

    Example::

        report = await handle.result()
        for failure in report.failures:
            print(failure.workflow_id, failure.run_id, failure.message)
    """

    workflow_id: str
    run_id: str
    message: str


@dataclass
class BatchOperationProgress:
    """Progress of a batch (:meth:`BatchOperationHandle.describe`), and its final report (``result()``).

    Example::

        progress = await client.get_batch_operation_handle(batch_id).describe()
        print(f"{progress.processed}/{progress.total_estimate} done, {progress.failed} failed")
    """

    operation: str
    query: str
    state: Literal["running", "completed"] = "running"
    total_estimate: int = 0
    """How many runs the query matched when the batch started."""
    processed: int = 0
    succeeded: int = 0
    failed: int = 0
    skipped: int = 0
    """Matched, but not running when reached (or a system workflow): left alone."""
    failures: list[BatchOperationFailure] = field(default_factory=list)
    """The first 100 failures."""
    pages: int = 0
    started_at: datetime | None = None
    closed_at: datetime | None = None


@dataclass
class BatchOperationInput:
    """Argument of the ``sagas.BatchOperation`` system workflow (signal args already payloads)."""

    operation: str
    query: str
    reason: str = ""
    signal: str = ""
    signal_args: list[Any] = field(default_factory=list)
    rps: float = 50.0
    page_size: int = 100
    identity: str = ""
    reset_type: str = ""
    reapply_signals: bool = True
    started_before: datetime | None = None
    """Reset only: runs started after this (e.g. the batch's own new runs) are skipped."""


@dataclass
class BatchPageResult:
    """What one page's activity did."""

    next_page_token: str | None
    succeeded: int = 0
    failed: int = 0
    skipped: int = 0
    failures: list[BatchOperationFailure] = field(default_factory=list)


class BatchOperationHandle:
    """Handle to one batch operation.

    Example::

        handle = await client.start_batch_operation(BatchCancel(), "WorkflowType = 'BookTrip'")
        report = await handle.result()       # waits until every matching run was handled
        print(report.succeeded, report.failed, report.skipped)
    """

    def __init__(self, client: Client, id: str) -> None:
        self._client = client
        self._id = id

    @property
    def id(self) -> str:
        """The batch operation's id."""
        return self._id

    @property
    def workflow_handle(self) -> WorkflowHandle[Any]:
        """The batch's system workflow (``sagas-batch:{id}``)."""
        return _system_client(self._client).get_workflow_handle(
            BATCH_WORKFLOW_ID_PREFIX + self._id, result_type=BatchOperationProgress
        )

    async def describe(self) -> BatchOperationProgress:
        """Progress so far (the final report once completed)."""
        progress: BatchOperationProgress = await self.workflow_handle.query(
            "progress", result_type=BatchOperationProgress
        )
        return progress

    async def result(self) -> BatchOperationProgress:
        """Wait for the batch to finish and return its report."""
        report: BatchOperationProgress = await self.workflow_handle.result()
        return report

    async def cancel(self) -> None:
        """Stop the batch after the page in progress (the runs handled so far stay handled)."""
        await self.workflow_handle.cancel(reason="batch operation cancelled")


async def start_batch_operation(
    client: Client,
    operation: BatchOperation,
    query: str,
    *,
    id: str | None = None,
    rps: float = 50.0,
    page_size: int = 100,
) -> BatchOperationHandle:
    """See :meth:`Client.start_batch_operation`."""
    from sagas.client._client import handler_name_and_result_type

    if not isinstance(operation, BatchSignal | BatchCancel | BatchTerminate | BatchReset):
        raise TypeError(f"operation must be BatchSignal, BatchCancel, BatchTerminate or BatchReset, got {operation!r}")
    if isinstance(operation, BatchReset) and operation.reset_type not in ("FirstWorkflowTask", "LastWorkflowTask"):
        raise ValueError(f"reset_type must be FirstWorkflowTask or LastWorkflowTask, got {operation.reset_type!r}")
    if not (rps > 0 and math.isfinite(rps)):
        raise ValueError(f"rps must be a positive number, got {rps!r}")
    if page_size < 1:
        raise ValueError(f"page_size must be at least 1, got {page_size}")
    # Parses the query on the server: a bad one fails here with RPCError(code="invalid_argument").
    total = (await client.count_workflows(query)).count
    wire = BatchOperationInput(
        operation=operation.kind, query=query, rps=float(rps), page_size=page_size, identity=client.identity
    )
    if isinstance(operation, BatchSignal):
        wire.signal = handler_name_and_result_type(operation.signal, "signal")[0]
        wire.signal_args = client.data_converter.to_payloads(list(operation.args))
    else:
        wire.reason = operation.reason
    if isinstance(operation, BatchReset):
        wire.reset_type, wire.reapply_signals = operation.reset_type, operation.reapply_signals
        wire.started_before = datetime.now(UTC)
    batch_id = id or uuid.uuid4().hex[:12]
    # A batch id in use raises WorkflowAlreadyStartedError (for workflow id sagas-batch:{id}).
    await _system_client(client).start_workflow(
        BATCH_WORKFLOW_TYPE,
        args=[wire, BatchOperationProgress(operation=operation.kind, query=query, total_estimate=total)],
        id=BATCH_WORKFLOW_ID_PREFIX + batch_id,
        task_queue=SYSTEM_TASK_QUEUE,
        id_reuse_policy=WorkflowIDReusePolicy.REJECT_DUPLICATE,
        memo={"operation": operation.kind, "query": query},
    )
    return BatchOperationHandle(client, batch_id)


__all__ = [
    "BatchCancel",
    "BatchReset",
    "BatchOperation",
    "BatchOperationFailure",
    "BatchOperationHandle",
    "BatchOperationProgress",
    "BatchSignal",
    "BatchTerminate",
]
