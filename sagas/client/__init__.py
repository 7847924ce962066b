"""Start workflows and talk to running ones (mirrors ``temporalio.client``).

Example::

    from sagas.client import Client

    client = await Client.connect("localhost:7233")
    handle = await client.start_workflow(BookTrip.run, trip, id="trip-1", task_queue="trips")
    await handle.signal(BookTrip.approve, "ok")
    print(await handle.result())

Schedules (:meth:`Client.create_schedule`, :class:`ScheduleHandle`) and batch
operations (:meth:`Client.start_batch_operation`) are system workflows run by
the server itself; see ``docs/schedules.md``.

Every error is a :mod:`sagas.exceptions` type: ``WorkflowFailureError`` when
the workflow failed (its ``cause`` says how), ``WorkflowNotFoundError``,
``WorkflowAlreadyStartedError``, ``WorkflowQueryFailedError``,
``WorkflowUpdateFailedError``, or ``RPCError`` with the server's stable
error ``code`` (``unavailable`` when no server answers).
"""

from orchestrator.api.enums import WorkflowExecutionStatus, WorkflowIDReusePolicy
from sagas.client._batch import (
    BatchCancel,
    BatchOperation,
    BatchOperationFailure,
    BatchOperationHandle,
    BatchOperationProgress,
    BatchReset,
    BatchSignal,
    BatchTerminate,
)
from sagas.client._client import (
    AsyncActivityHandle,
    Client,
    WorkflowHandle,
    WorkflowUpdateHandle,
    WorkflowUpdateStage,
)
from sagas.client._schedule import (
    Schedule,
    ScheduleAction,
    ScheduleActionExecutionStartWorkflow,
    ScheduleActionResult,
    ScheduleActionStartWorkflow,
    ScheduleBackfill,
    ScheduleCalendarSpec,
    ScheduleDescription,
    ScheduleHandle,
    ScheduleInfo,
    ScheduleIntervalSpec,
    ScheduleListActionStartWorkflow,
    ScheduleListDescription,
    ScheduleListInfo,
    ScheduleListSchedule,
    ScheduleListState,
    ScheduleOverlapPolicy,
    SchedulePolicy,
    ScheduleRange,
    ScheduleSpec,
    ScheduleState,
    ScheduleUpdate,
    ScheduleUpdateInput,
)
from sagas.client._tls import TLSConfig
from sagas.client._types import (
    AsyncActivityCancelledError,
    WorkflowContinuedAsNewError,
    WorkflowExecution,
    WorkflowExecutionAsyncIterator,
    WorkflowExecutionCount,
    WorkflowExecutionDescription,
)
from sagas.exceptions import (
    InvalidScheduleError,
    RPCError,
    ScheduleAlreadyRunningError,
    ScheduleNotFoundError,
    WorkflowAlreadyStartedError,
    WorkflowFailureError,
    WorkflowNotFoundError,
    WorkflowQueryFailedError,
    WorkflowUpdateFailedError,
)
from sagas.worker._replayer import WorkflowHistory

__all__ = [
    "AsyncActivityCancelledError",
    "AsyncActivityHandle",
    "BatchCancel",
    "BatchOperation",
    "BatchOperationFailure",
    "BatchOperationHandle",
    "BatchOperationProgress",
    "BatchReset",
    "BatchSignal",
    "BatchTerminate",
    "Client",
    "InvalidScheduleError",
    "RPCError",
    "Schedule",
    "ScheduleAction",
    "ScheduleActionExecutionStartWorkflow",
    "ScheduleActionResult",
    "ScheduleActionStartWorkflow",
    "ScheduleAlreadyRunningError",
    "ScheduleBackfill",
    "ScheduleCalendarSpec",
    "ScheduleDescription",
    "ScheduleHandle",
    "ScheduleInfo",
    "ScheduleIntervalSpec",
    "ScheduleListActionStartWorkflow",
    "ScheduleListDescription",
    "ScheduleListInfo",
    "ScheduleListSchedule",
    "ScheduleListState",
    "ScheduleNotFoundError",
    "ScheduleOverlapPolicy",
    "SchedulePolicy",
    "ScheduleRange",
    "ScheduleSpec",
    "ScheduleState",
    "ScheduleUpdate",
    "ScheduleUpdateInput",
    "TLSConfig",
    "WorkflowAlreadyStartedError",
    "WorkflowContinuedAsNewError",
    "WorkflowExecution",
    "WorkflowExecutionAsyncIterator",
    "WorkflowExecutionCount",
    "WorkflowExecutionDescription",
    "WorkflowExecutionStatus",
    "WorkflowFailureError",
    "WorkflowHandle",
    "WorkflowHistory",
    "WorkflowIDReusePolicy",
    "WorkflowNotFoundError",
    "WorkflowQueryFailedError",
    "WorkflowUpdateFailedError",
    "WorkflowUpdateHandle",
    "WorkflowUpdateStage",
]
