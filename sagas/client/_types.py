"""Value types the client returns: executions, descriptions, counts, histories."""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

from orchestrator.api.common import Failure
from orchestrator.api.enums import WorkflowExecutionStatus
from orchestrator.api.http import (
    DescribeWorkflowResponse,
    PendingActivity,
    PendingTimer,
    WorkflowExecutionInfo,
)
from sagas.exceptions import SagasError


class WorkflowContinuedAsNewError(SagasError):
    """``result(follow_runs=False)`` met a run that continued as new.

    Example::

        try:
            await handle.result(follow_runs=False)
        except WorkflowContinuedAsNewError as err:
            print("continued as new in run", err.new_execution_run_id)
    """

    def __init__(self, new_execution_run_id: str) -> None:
        super().__init__(f"workflow continued as new (new run id {new_execution_run_id})")
        self.new_execution_run_id = new_execution_run_id


class AsyncActivityCancelledError(SagasError):
    """A heartbeat of an asynchronously completed activity learned that it was cancelled.

    Example::

        try:
            await client.get_async_activity_handle(task_token=token).heartbeat()
        except AsyncActivityCancelledError:
            await client.get_async_activity_handle(task_token=token).report_cancellation()
    """

    def __init__(self) -> None:
        super().__init__("activity was cancelled; report it with AsyncActivityHandle.report_cancellation()")


def _ts(value: float | None) -> datetime | None:
    return datetime.fromtimestamp(value, UTC) if value is not None else None


@dataclass(frozen=True)
class WorkflowExecution:
    """One workflow run as listed or described (mirrors temporalio's ``WorkflowExecution``).

    Example::

        async for wf in client.list_workflows("WorkflowType = 'BookTrip' AND ExecutionStatus = 'Running'"):
            print(wf.id, wf.run_id, wf.status, wf.start_time)
    """

    id: str
    run_id: str
    workflow_type: str
    task_queue: str
    status: WorkflowExecutionStatus | str
    start_time: datetime
    execution_time: datetime | None
    close_time: datetime | None
    history_length: int
    namespace: str
    search_attributes: dict[str, Any]
    parent_id: str | None
    raw_info: WorkflowExecutionInfo

    @classmethod
    def from_info(cls, info: WorkflowExecutionInfo) -> WorkflowExecution:
        """Build from the server's ``WorkflowExecutionInfo`` (as listed)."""
        return cls(**_execution_fields(info))

    async def memo(self) -> dict[str, Any]:
        """The run's memo (async, as in temporalio)."""
        return dict(self.raw_info.memo)

    async def memo_value(self, key: str, default: Any = None) -> Any:
        """One memo value, or ``default`` when the key is absent."""
        return self.raw_info.memo.get(key, default)


def _execution_fields(info: WorkflowExecutionInfo) -> dict[str, Any]:
    try:
        status: WorkflowExecutionStatus | str = WorkflowExecutionStatus(info.status)
    except ValueError:
        status = info.status
    return {
        "id": info.workflow_id,
        "run_id": info.run_id,
        "workflow_type": info.workflow_type,
        "task_queue": info.task_queue,
        "status": status,
        "start_time": _ts(info.start_time),
        "execution_time": _ts(info.execution_time),
        "close_time": _ts(info.close_time),
        "history_length": info.history_length,
        "namespace": info.namespace,
        "search_attributes": dict(info.search_attributes),
        "parent_id": info.parent_workflow_id,
        "raw_info": info,
    }


@dataclass(frozen=True)
class WorkflowExecutionDescription(WorkflowExecution):
    """:meth:`WorkflowHandle.describe`: the run plus what it is waiting for.

    Example::

        desc = await client.get_workflow_handle("trip-1").describe()
        print(desc.status, [a.activity_type for a in desc.pending_activities])
    """

    pending_activities: list[PendingActivity] = field(default_factory=list)
    pending_timers: list[PendingTimer] = field(default_factory=list)
    pending_children: list[dict[str, Any]] = field(default_factory=list)
    input: list[Any] = field(default_factory=list)
    """The run's input payloads (JSON)."""
    result: Any = None
    """The run's result payload (JSON), once completed."""
    failure: Failure | None = None
    raw_description: DescribeWorkflowResponse | None = None

    @classmethod
    def from_response(cls, resp: DescribeWorkflowResponse) -> WorkflowExecutionDescription:
        """Build from the server's describe response."""
        return cls(
            **_execution_fields(resp.info),
            pending_activities=list(resp.pending_activities),
            pending_timers=list(resp.pending_timers),
            pending_children=list(resp.pending_children),
            input=list(resp.input),
            result=resp.result,
            failure=resp.failure,
            raw_description=resp,
        )


@dataclass(frozen=True)
class WorkflowExecutionCount:
    """:meth:`Client.count_workflows`.

    Example::

        count = await client.count_workflows("ExecutionStatus = 'Failed'")
        print(count.count)
    """

    count: int
    groups: Sequence[Any] = ()


class WorkflowExecutionAsyncIterator:
    """``async for`` over :meth:`Client.list_workflows`, fetching pages lazily.

    Example::

        async for wf in client.list_workflows("ExecutionStatus = 'Running'"):
            print(wf.id)

        # or page by page
        it = client.list_workflows(page_size=100)
        await it.fetch_next_page()
        print(len(it.current_page or []), it.next_page_token)
    """

    def __init__(
        self,
        fetch_page: Callable[[str | None, int], Awaitable[tuple[list[WorkflowExecution], str | None]]],
        *,
        page_size: int,
        limit: int | None,
        next_page_token: str | None = None,
    ) -> None:
        self._fetch_page = fetch_page
        self._page_size = page_size
        self._limit = limit
        self._next_page_token = next_page_token
        self._page: list[WorkflowExecution] | None = None
        self._index = 0
        self._yielded = 0
        self._done = False

    @property
    def current_page(self) -> list[WorkflowExecution] | None:
        """The page fetched last (``None`` before the first fetch)."""
        return self._page

    @property
    def next_page_token(self) -> str | None:
        """The token of the next page (``None`` after the last page)."""
        return self._next_page_token

    async def fetch_next_page(self, *, page_size: int | None = None) -> None:
        """Fetch the next page into :attr:`current_page`."""
        page, token = await self._fetch_page(self._next_page_token, page_size or self._page_size)
        self._page, self._index, self._next_page_token = page, 0, token
        if token is None:
            self._done = True

    def __aiter__(self) -> WorkflowExecutionAsyncIterator:
        return self

    async def __anext__(self) -> WorkflowExecution:
        if self._limit is not None and self._yielded >= self._limit:
            raise StopAsyncIteration
        while self._page is None or self._index >= len(self._page):
            if self._done and self._page is not None:
                raise StopAsyncIteration
            await self.fetch_next_page()
            if not self._page and self._done:
                raise StopAsyncIteration
        item = self._page[self._index]
        self._index += 1
        self._yielded += 1
        return item
