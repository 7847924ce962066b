"""Workflow definitions and the APIs workflow code calls (mirrors ``temporalio.workflow``).

A workflow is a class whose ``@workflow.run`` method orchestrates activities,
timers, child workflows and signals. It must be deterministic: it runs on
its own event loop and is replayed from history after a crash, so it must
not do I/O or read the clock directly (use :func:`now`, :func:`random`,
:func:`uuid4`, :func:`sleep`). Plain ``asyncio`` (``gather``, ``wait``,
``create_task``, ``wait_for``, ``sleep``) works and is deterministic.

>>> from datetime import timedelta
>>> from sagas import workflow
>>> @workflow.defn
... class TripWorkflow:
...     def __init__(self) -> None:
...         self.approved = False
...
...     @workflow.run
...     async def run(self, city: str) -> str:
...         await workflow.wait_condition(lambda: self.approved, timeout=timedelta(days=1))
...         return await workflow.execute_activity(
...             "book_car", city, start_to_close_timeout=timedelta(seconds=30))
...
...     @workflow.signal
...     def approve(self) -> None:
...         self.approved = True
...
...     @workflow.query
...     def is_approved(self) -> bool:
...         return self.approved
"""

from orchestrator.api.enums import ActivityCancellationType, ParentClosePolicy
from sagas.exceptions import NondeterminismError, SessionFailedError
from sagas.workflow._api import (
    continue_as_new,
    deprecate_patch,
    execute_activity,
    execute_activity_method,
    execute_child_workflow,
    execute_local_activity,
    get_external_workflow_handle,
    in_workflow,
    info,
    instance,
    logger,
    memo,
    now,
    patched,
    random,
    set_dynamic_signal_handler,
    set_query_handler,
    set_signal_handler,
    sleep,
    start_activity,
    start_activity_method,
    start_child_workflow,
    start_local_activity,
    time,
    unsafe,
    upsert_search_attributes,
    uuid4,
    wait_condition,
)
from sagas.workflow._definition import UpdateMethod, defn, init, query, run, signal, update
from sagas.workflow._instance import (
    ActivityHandle,
    ChildWorkflowHandle,
    ContinueAsNewError,
    ExternalWorkflowHandle,
    Info,
    ParentInfo,
)
from sagas.workflow._session import (
    SessionInfo,
    SessionOptions,
    SessionState,
    complete_session,
    create_session,
    get_session_info,
    session,
)

__all__ = [
    "ActivityCancellationType",
    "ActivityHandle",
    "ChildWorkflowHandle",
    "ContinueAsNewError",
    "ExternalWorkflowHandle",
    "Info",
    "NondeterminismError",
    "ParentClosePolicy",
    "ParentInfo",
    "SessionFailedError",
    "SessionInfo",
    "SessionOptions",
    "SessionState",
    "UpdateMethod",
    "complete_session",
    "continue_as_new",
    "create_session",
    "defn",
    "deprecate_patch",
    "execute_activity",
    "execute_activity_method",
    "execute_child_workflow",
    "execute_local_activity",
    "get_external_workflow_handle",
    "get_session_info",
    "in_workflow",
    "info",
    "init",
    "instance",
    "logger",
    "memo",
    "now",
    "patched",
    "query",
    "random",
    "run",
    "session",
    "set_dynamic_signal_handler",
    "set_query_handler",
    "set_signal_handler",
    "signal",
    "sleep",
    "start_activity",
    "start_activity_method",
    "start_child_workflow",
    "start_local_activity",
    "time",
    "unsafe",
    "update",
    "upsert_search_attributes",
    "uuid4",
    "wait_condition",
]
