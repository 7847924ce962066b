"""The client: start workflows and talk to running ones over the HTTP API."""

from __future__ import annotations

import os
import socket
import ssl
import uuid
from collections.abc import AsyncIterator, Mapping, Sequence
from datetime import timedelta
from enum import StrEnum
from typing import Any, Generic, TypeVar
from urllib.parse import quote

from brokers import tracing
from brokers.base import Delivery
from brokers.envelope import ActivityHeartbeat, ActivityResult
from orchestrator.api.common import Failure
from orchestrator.api.enums import TimeoutType, WorkflowExecutionStatus, WorkflowIDReusePolicy
from orchestrator.api.events import HistoryEvent, parse_events
from orchestrator.api.http import (
    Ack,
    ArchivedHistoryResponse,
    CancelRequest,
    ClusterInfo,
    CompleteTaskResponse,
    CountWorkflowsResponse,
    DescribeWorkflowResponse,
    HistoryResponse,
    ListWorkflowsResponse,
    QueryWorkflowRequest,
    QueryWorkflowResponse,
    ResetWorkflowRequest,
    ResetWorkflowResponse,
    SignalRequest,
    SignalWithStart,
    StartWorkflowRequest,
    StartWorkflowResponse,
    TerminateRequest,
    UpdateWorkflowRequest,
    UpdateWorkflowResponse,
    WorkflowResultResponse,
)
from sagas.client._batch import BatchOperation, BatchOperationHandle, start_batch_operation
from sagas.client._schedule import (
    Schedule,
    ScheduleBackfill,
    ScheduleHandle,
    ScheduleListDescription,
    create_schedule,
    list_schedules,
)
from sagas.client._tls import TLSConfig
from sagas.client._transport import Transport
from sagas.client._types import (
    AsyncActivityCancelledError,
    WorkflowContinuedAsNewError,
    WorkflowExecution,
    WorkflowExecutionAsyncIterator,
    WorkflowExecutionCount,
    WorkflowExecutionDescription,
)
from sagas.converter import DataConverter, return_hint
from sagas.converter import default as default_converter
from sagas.exceptions import (
    ApplicationError,
    CancelledError,
    TerminatedError,
    TimeoutError,
    WorkflowFailureError,
    WorkflowUpdateFailedError,
    error_to_failure,
    failure_to_error,
)
from sagas.worker._replayer import WorkflowHistory
from sagas.workflow._definition import handler_name_of
from sagas.workflow._instance import workflow_type_name

ReturnT = TypeVar("ReturnT")


class _Unset:
    def __repr__(self) -> str:
        return "<unset>"


ARG_UNSET: Any = _Unset()
"""Default of ``arg`` parameters: distinguishes "no argument" from ``None``."""

RESULT_POLL_SECONDS = 30.0
"""How long one ``/result`` long poll waits on the server."""

UPDATE_WAIT_SECONDS = 30.0
HISTORY_PAGE_SIZE = 1000


def arg_or_args(arg: Any, args: Sequence[Any]) -> list[Any]:
    """The argument list of a call that takes ``arg`` or ``args=[...]``."""
    if arg is not ARG_UNSET:
        if args:
            raise ValueError("pass either arg or args=[...], not both")
        return [arg]
    return list(args)


def seconds(value: timedelta | float | None) -> float | None:
    """A duration in seconds (``timedelta`` or number), or None."""
    if value is None:
        return None
    if isinstance(value, timedelta):
        return value.total_seconds()
    return float(value)


def handler_name_and_result_type(handler: Any, kind: str) -> tuple[str, Any]:
    """(name, result type hint) of a signal/query/update given as the decorated method or its name.

    An undecorated method falls back to its ``__name__``.
    """
    if isinstance(handler, str):
        return handler, None
    try:
        name = handler_name_of(handler, kind)
    except TypeError:
        name = getattr(handler, "__name__", "")
        if not name:
            raise
    return name, return_hint(handler)


def default_identity() -> str:
    return f"{os.getpid()}@{socket.gethostname()}"


def _reuse_policy(policy: Any) -> str:
    """Wire value of a reuse policy given as the enum, its value or its name."""
    if isinstance(policy, WorkflowIDReusePolicy):
        return policy.value
    text = str(getattr(policy, "name", policy))
    if text in WorkflowIDReusePolicy._value2member_map_:
        return text
    if text in WorkflowIDReusePolicy.__members__:
        return WorkflowIDReusePolicy[text].value
    choices = ", ".join(p.name for p in WorkflowIDReusePolicy)
    raise ValueError(f"unknown workflow id reuse policy {policy!r}; use one of {choices}")


class WorkflowUpdateStage(StrEnum):
    """How far an update must have progressed before ``start_update`` returns.

    Example::

        handle = await client.get_workflow_handle("order-7").start_update(
            OrderWorkflow.set_address, address, wait_for_stage=WorkflowUpdateStage.ACCEPTED
        )
        print(await handle.result())
    """

    ADMITTED = "Admitted"
    ACCEPTED = "Accepted"
    COMPLETED = "Completed"


class Client:
    """Connection to an orchestrator for one namespace (mirrors ``temporalio.client.Client``).

    Example::

        client = await Client.connect("localhost:7233")
        result = await client.execute_workflow(
            BookTrip.run, trip, id="trip-1", task_queue="trips"
        )

    The client is cheap to share: one per process is enough. Close it with
    :meth:`close` (or ``async with``) when done.
    """

    def __init__(
        self,
        transport: Transport,
        *,
        namespace: str = "default",
        data_converter: DataConverter | None = None,
        identity: str | None = None,
        target_host: str = "",
    ) -> None:
        """Use :meth:`connect` instead, unless you bring your own :class:`Transport`."""
        self._transport = transport
        self._namespace = namespace
        self._data_converter = data_converter or default_converter()
        self._identity = identity or default_identity()
        self._target_host = target_host
        self._cluster_info: ClusterInfo | None = None

    @classmethod
    async def connect(
        cls,
        target_host: str = "localhost:7233",
        *,
        namespace: str = "default",
        api_key: str | None = None,
        tls: bool | ssl.SSLContext | TLSConfig = False,
        data_converter: DataConverter | None = None,
        identity: str | None = None,
        lazy: bool = False,
        rpc_timeout: timedelta | float = 30.0,
    ) -> Client:
        """Connect to the orchestrator at ``host:port`` (checks it answers unless ``lazy``).

        ``api_key`` (an API key or a JWT) is sent as ``Authorization: Bearer ...``;
        ``tls=True`` uses HTTPS with the system's CA store; a :class:`TLSConfig`
        brings a private CA and a client certificate (mutual TLS); or pass an
        ``ssl.SSLContext``. Workers built on this client use the same settings
        for the built-in broker.
        Raises :class:`~sagas.exceptions.RPCError` (code ``unavailable``) when
        nothing answers at ``target_host``.
        """
        transport = Transport(
            target_host, api_key=api_key, tls=tls, timeout=seconds(rpc_timeout) or 30.0
        )
        client = cls(
            transport,
            namespace=namespace,
            data_converter=data_converter,
            identity=identity,
            target_host=target_host,
        )
        if not lazy:
            try:
                await client.cluster_info()
            except BaseException:
                await transport.aclose()
                raise
        return client

    @property
    def namespace(self) -> str:
        """The namespace every call of this client goes to."""
        return self._namespace

    @property
    def identity(self) -> str:
        """Who this client says it is in history events (default ``pid@hostname``)."""
        return self._identity

    @property
    def data_converter(self) -> DataConverter:
        """The converter for arguments, results and details (workers use it too)."""
        return self._data_converter

    @property
    def target_host(self) -> str:
        """The ``host:port`` (or URL) the client connected to."""
        return self._target_host

    @property
    def transport(self) -> Transport:
        """The HTTP transport (used by workers sharing this client)."""
        return self._transport

    async def close(self) -> None:
        """Close the client's connections."""
        await self._transport.aclose()

    async def __aenter__(self) -> Client:
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.close()

    async def cluster_info(self, *, refresh: bool = False) -> ClusterInfo:
        """What the server says about itself: version, broker URL for workers, limits."""
        if self._cluster_info is None or refresh:
            self._cluster_info = await self._transport.call_model(ClusterInfo, "GET", "/cluster")
        return self._cluster_info

    def _ns_path(self) -> str:
        return f"/namespaces/{quote(self._namespace, safe='')}"

    def _wf_path(self, workflow_id: str) -> str:
        return f"{self._ns_path()}/workflows/{quote(workflow_id, safe='')}"

    # -- workflows -------------------------------------------------------

    async def start_workflow(
        self,
        workflow: Any,
        arg: Any = ARG_UNSET,
        *,
        args: Sequence[Any] = (),
        id: str,
        task_queue: str,
        result_type: Any = None,
        execution_timeout: timedelta | None = None,
        run_timeout: timedelta | None = None,
        task_timeout: timedelta | None = None,
        id_reuse_policy: Any = WorkflowIDReusePolicy.ALLOW_DUPLICATE,
        retry_policy: Any = None,
        cron_schedule: str = "",
        memo: Mapping[str, Any] | None = None,
        search_attributes: Mapping[str, Any] | None = None,
        start_signal: str | None = None,
        start_signal_args: Sequence[Any] = (),
        start_delay: timedelta | None = None,
        request_id: str | None = None,
    ) -> WorkflowHandle[Any]:
        """Start a workflow and return its handle.

        ``workflow`` is the ``@workflow.run`` method (``MyWorkflow.run``), the
        ``@workflow.defn`` class, or the workflow type name. The result type
        comes from the run method's return annotation (or ``result_type``).
        With ``start_signal`` this is signal-with-start: the signal is
        delivered, and the workflow started only if it is not running.

        Raises :class:`~sagas.exceptions.WorkflowAlreadyStartedError` when a
        run with this id exists and the reuse policy refuses another.
        """
        name, hinted_type = workflow_type_name(workflow)
        conv = self._data_converter
        req = StartWorkflowRequest(
            workflow_id=id,
            workflow_type=name,
            task_queue=task_queue,
            input=conv.to_payloads(arg_or_args(arg, args)),
            id_reuse_policy=_reuse_policy(id_reuse_policy),
            request_id=request_id or str(uuid.uuid4()),
            execution_timeout=seconds(execution_timeout),
            run_timeout=seconds(run_timeout),
            task_timeout=seconds(task_timeout),
            retry_policy=retry_policy.to_spec() if retry_policy is not None else None,
            cron_schedule=cron_schedule or None,
            memo={k: conv.to_payload(v) for k, v in (memo or {}).items()},
            search_attributes={k: conv.to_payload(v) for k, v in (search_attributes or {}).items()},
            start_delay=seconds(start_delay),
            signal=(
                SignalWithStart(name=start_signal, input=conv.to_payloads(list(start_signal_args)))
                if start_signal
                else None
            ),
            identity=self._identity,
        )
        with tracing.span(f"StartWorkflow:{name}", kind="client",
                          attributes={"sagas.workflow_id": id, "sagas.task_queue": task_queue}):  # fmt: skip
            tracing.inject(req.headers)
            # The request id makes a retried start harmless (the server answers with the same run).
            resp = await self._transport.call_model(
                StartWorkflowResponse,
                "POST",
                f"{self._ns_path()}/workflows",
                req,
                idempotent=True,
                context={"workflow_id": id, "workflow_type": name},
            )
        return WorkflowHandle(
            self,
            id,
            result_run_id=resp.run_id,
            first_execution_run_id=resp.run_id,
            result_type=result_type if result_type is not None else hinted_type,
        )

    async def execute_workflow(
        self,
        workflow: Any,
        arg: Any = ARG_UNSET,
        *,
        args: Sequence[Any] = (),
        id: str,
        task_queue: str,
        result_type: Any = None,
        execution_timeout: timedelta | None = None,
        run_timeout: timedelta | None = None,
        task_timeout: timedelta | None = None,
        id_reuse_policy: Any = WorkflowIDReusePolicy.ALLOW_DUPLICATE,
        retry_policy: Any = None,
        cron_schedule: str = "",
        memo: Mapping[str, Any] | None = None,
        search_attributes: Mapping[str, Any] | None = None,
        start_signal: str | None = None,
        start_signal_args: Sequence[Any] = (),
        start_delay: timedelta | None = None,
        request_id: str | None = None,
    ) -> Any:
        """:meth:`start_workflow` and wait for its result (see :meth:`WorkflowHandle.result`)."""
        handle = await self.start_workflow(
            workflow,
            arg,
            args=args,
            id=id,
            task_queue=task_queue,
            result_type=result_type,
            execution_timeout=execution_timeout,
            run_timeout=run_timeout,
            task_timeout=task_timeout,
            id_reuse_policy=id_reuse_policy,
            retry_policy=retry_policy,
            cron_schedule=cron_schedule,
            memo=memo,
            search_attributes=search_attributes,
            start_signal=start_signal,
            start_signal_args=start_signal_args,
            start_delay=start_delay,
            request_id=request_id,
        )
        return await handle.result()

    def get_workflow_handle(
        self,
        workflow_id: str,
        *,
        run_id: str | None = None,
        first_execution_run_id: str | None = None,
        result_type: Any = None,
    ) -> WorkflowHandle[Any]:
        """A handle to an existing workflow (its latest run unless ``run_id`` is given)."""
        return WorkflowHandle(
            self,
            workflow_id,
            run_id=run_id,
            result_run_id=run_id,
            first_execution_run_id=first_execution_run_id,
            result_type=result_type,
        )

    def get_workflow_handle_for(
        self,
        workflow: Any,
        workflow_id: str,
        *,
        run_id: str | None = None,
        first_execution_run_id: str | None = None,
    ) -> WorkflowHandle[Any]:
        """Like :meth:`get_workflow_handle`, taking the result type from ``MyWorkflow.run``."""
        _, result_type = workflow_type_name(workflow)
        return self.get_workflow_handle(
            workflow_id, run_id=run_id, first_execution_run_id=first_execution_run_id, result_type=result_type
        )

    def list_workflows(
        self,
        query: str | None = None,
        *,
        limit: int | None = None,
        page_size: int = 1000,
        next_page_token: str | None = None,
    ) -> WorkflowExecutionAsyncIterator:
        """``async for`` over the runs matching a visibility ``query`` (all when empty).

        ::

            async for wf in client.list_workflows("WorkflowType = 'BookTrip' AND ExecutionStatus = 'Running'"):
                print(wf.id, wf.status)
        """

        async def fetch(token: str | None, size: int) -> tuple[list[WorkflowExecution], str | None]:
            resp = await self._transport.call_model(
                ListWorkflowsResponse,
                "GET",
                f"{self._ns_path()}/workflows",
                params={"query": query or "", "page_size": size, "next_page_token": token},
            )
            return [WorkflowExecution.from_info(i) for i in resp.executions], resp.next_page_token or None

        return WorkflowExecutionAsyncIterator(
            fetch, page_size=page_size, limit=limit, next_page_token=next_page_token
        )

    async def count_workflows(self, query: str | None = None) -> WorkflowExecutionCount:
        """How many runs match a visibility ``query``."""
        resp = await self._transport.call_model(
            CountWorkflowsResponse, "GET", f"{self._ns_path()}/workflow-count", params={"query": query or ""}
        )
        return WorkflowExecutionCount(count=resp.count)

    def get_async_activity_handle(self, *, task_token: bytes | str) -> AsyncActivityHandle:
        """A handle to complete, fail or heartbeat an activity that called ``raise_complete_async()``."""
        token = task_token.decode() if isinstance(task_token, bytes) else task_token
        return AsyncActivityHandle(self, token)

    # -- schedules and batch operations (system workflows run by the server) ---------------

    async def create_schedule(
        self,
        id: str,
        schedule: Schedule,
        *,
        trigger_immediately: bool = False,
        backfill: Sequence[ScheduleBackfill] = (),
        memo: Mapping[str, Any] | None = None,
        search_attributes: Mapping[str, Any] | None = None,
    ) -> ScheduleHandle:
        """Create a schedule (see :mod:`sagas.client._schedule`) and return its handle.

        ::

            handle = await client.create_schedule(
                "hourly-sync",
                Schedule(
                    action=ScheduleActionStartWorkflow(Sync.run, id="sync", task_queue="sync"),
                    spec=ScheduleSpec(intervals=[ScheduleIntervalSpec(every=timedelta(hours=1))]),
                ),
            )

        Raises :class:`~sagas.exceptions.InvalidScheduleError` (bad cron
        string, unknown time zone, ...) and
        :class:`~sagas.exceptions.ScheduleAlreadyRunningError` (the id is taken).
        """
        return await create_schedule(
            self,
            id,
            schedule,
            trigger_immediately=trigger_immediately,
            backfill=backfill,
            memo=memo,
            search_attributes=search_attributes,
        )

    def get_schedule_handle(self, id: str) -> ScheduleHandle:
        """A handle to an existing schedule (nothing is checked until it is used)."""
        return ScheduleHandle(self, id)

    async def list_schedules(self, query: str | None = None) -> AsyncIterator[ScheduleListDescription]:
        """The schedules of this namespace (``async for s in await client.list_schedules(): ...``).

        ``query`` narrows them by the schedules' own search attributes.
        """
        return list_schedules(self, query)

    async def start_batch_operation(
        self,
        operation: BatchOperation,
        query: str,
        *,
        id: str | None = None,
        rps: float = 50.0,
        page_size: int = 100,
    ) -> BatchOperationHandle:
        """Apply ``operation`` (:class:`BatchSignal`, :class:`BatchCancel`, :class:`BatchTerminate`) to every
        running workflow that ``query`` matches, at most ``rps`` per second (see :mod:`sagas.client._batch`).

        A query that does not parse raises :class:`~sagas.exceptions.RPCError`
        (code ``invalid_argument``) naming the problem, before anything is done.
        """
        return await start_batch_operation(self, operation, query, id=id, rps=rps, page_size=page_size)

    def get_batch_operation_handle(self, id: str) -> BatchOperationHandle:
        """A handle to a batch operation started earlier (by its id)."""
        return BatchOperationHandle(self, id)

    # -- used by handles and workers -------------------------------------

    async def _fetch_history_page(
        self, workflow_id: str, run_id: str | None, first_event_id: int, page_size: int
    ) -> HistoryResponse:
        return await self._transport.call_model(
            HistoryResponse,
            "GET",
            f"{self._wf_path(workflow_id)}/history",
            params={"run_id": run_id or None, "first_event_id": first_event_id, "page_size": page_size},
        )

    async def _history_events(
        self,
        workflow_id: str,
        run_id: str | None,
        *,
        first_event_id: int = 1,
        last_event_id: int | None = None,
        page_size: int = HISTORY_PAGE_SIZE,
    ) -> AsyncIterator[HistoryEvent]:
        """Events of a run in order, from ``first_event_id`` up to ``last_event_id`` (inclusive)."""
        next_id = first_event_id
        while last_event_id is None or next_id <= last_event_id:
            page = await self._fetch_history_page(workflow_id, run_id, next_id, page_size)
            events = parse_events(page.events)
            for event in events:
                if event.event_id < next_id:
                    continue  # the server included what we already have
                if last_event_id is not None and event.event_id > last_event_id:
                    return
                yield event
                next_id = event.event_id + 1
            if not events or (page.next_page_token is None and len(events) < page_size):
                return

    async def _complete_task(self, reply: Any, *, ack: Delivery | None = None) -> CompleteTaskResponse:
        """POST a worker reply (``brokers.envelope`` message) to ``/tasks/complete``.

        ``ack``: a delivery of the server's built-in broker that this reply answers; the server
        acks it once the reply is applied (answer ``acked``), saving a ``/queues/{q}/ack`` request.
        """
        params = None if ack is None else {"ack_queue": ack.queue, "ack_receipt": str(ack.receipt)}
        return await self._transport.call_model(
            CompleteTaskResponse, "POST", "/tasks/complete", reply, params=params, idempotent=True
        )


class WorkflowHandle(Generic[ReturnT]):
    """Handle to one workflow (mirrors ``temporalio.client.WorkflowHandle``).

    Like temporalio, a handle from :meth:`Client.start_workflow` has
    ``run_id`` None (calls target the latest run) and ``result_run_id`` set to
    the started run; :meth:`Client.get_workflow_handle` with ``run_id`` pins
    every call to that run.

    Example::

        handle = client.get_workflow_handle("trip-1")
        await handle.signal(BookTrip.approve, "ok")
        status = await handle.query(BookTrip.status)
        desc = await handle.describe()
        print(status, desc.status, await handle.result())
    """

    def __init__(
        self,
        client: Client,
        id: str,
        *,
        run_id: str | None = None,
        result_run_id: str | None = None,
        first_execution_run_id: str | None = None,
        result_type: Any = None,
    ) -> None:
        self._client = client
        self._id = id
        self._run_id = run_id
        self._result_run_id = result_run_id
        self._first_execution_run_id = first_execution_run_id
        self._result_type = result_type

    @property
    def id(self) -> str:
        """The workflow id."""
        return self._id

    @property
    def run_id(self) -> str | None:
        """The run every call targets, or None for the latest run."""
        return self._run_id

    @property
    def result_run_id(self) -> str | None:
        """The run :meth:`result` starts from (the started run for ``start_workflow`` handles)."""
        return self._result_run_id

    @property
    def first_execution_run_id(self) -> str | None:
        """The first run of the chain this handle follows, when known."""
        return self._first_execution_run_id

    @property
    def client(self) -> Client:
        """The client this handle calls through."""
        return self._client

    def _path(self, suffix: str = "") -> str:
        return self._client._wf_path(self._id) + suffix

    async def result(self, *, follow_runs: bool = True, rpc_timeout: timedelta | None = None) -> ReturnT:
        """Wait for the workflow to close and return its result.

        Follows continue-as-new, retries and cron runs when ``follow_runs``.
        Raises :class:`~sagas.exceptions.WorkflowFailureError` whose ``cause``
        is the failure (``ApplicationError``...), ``CancelledError``,
        ``TerminatedError`` or ``TimeoutError``.
        """
        transport = self._client.transport
        conv = self._client.data_converter
        wait = min(seconds(rpc_timeout) or RESULT_POLL_SECONDS, RESULT_POLL_SECONDS)
        run_id = self._result_run_id
        while True:
            resp = await transport.call_model(
                WorkflowResultResponse,
                "GET",
                self._path("/result"),
                params={"run_id": run_id or None, "wait": wait},
                timeout=wait + transport.timeout,
            )
            run_id = resp.run_id or run_id  # pin the run so a continue-as-new is seen, not skipped
            status = resp.status
            if status == WorkflowExecutionStatus.RUNNING:
                continue
            if follow_runs and resp.new_run_id and status in _FOLLOWED_STATUSES:
                run_id = resp.new_run_id
                continue
            if status == WorkflowExecutionStatus.COMPLETED:
                result: ReturnT = conv.from_payload(resp.result, self._result_type)
                return result
            if status == WorkflowExecutionStatus.CONTINUED_AS_NEW:
                raise WorkflowContinuedAsNewError(resp.new_run_id or "")
            raise WorkflowFailureError(cause=_close_cause(status, resp.failure))

    async def signal(self, signal: Any, arg: Any = ARG_UNSET, *, args: Sequence[Any] = ()) -> None:
        """Send a signal (the ``@workflow.signal`` method or its name) with its argument(s)."""
        name, _ = handler_name_and_result_type(signal, "signal")
        req = SignalRequest(
            name=name,
            input=self._client.data_converter.to_payloads(arg_or_args(arg, args)),
            run_id=self._run_id or "",
            request_id=str(uuid.uuid4()),
            identity=self._client.identity,
        )
        await self._client.transport.call_model(Ack, "POST", self._path("/signal"), req)

    async def query(
        self,
        query: Any,
        arg: Any = ARG_UNSET,
        *,
        args: Sequence[Any] = (),
        result_type: Any = None,
        rpc_timeout: timedelta | None = None,
    ) -> Any:
        """Ask a ``@workflow.query`` handler; a worker answers from the workflow's current state.

        Raises :class:`~sagas.exceptions.WorkflowQueryFailedError` when the
        handler raised or does not exist.
        """
        name, hinted = handler_name_and_result_type(query, "query")
        timeout = seconds(rpc_timeout) or 10.0
        req = QueryWorkflowRequest(
            name=name,
            input=self._client.data_converter.to_payloads(arg_or_args(arg, args)),
            run_id=self._run_id or "",
            timeout=timeout,
        )
        transport = self._client.transport
        resp = await transport.call_model(
            QueryWorkflowResponse, "POST", self._path("/query"), req, timeout=timeout + transport.timeout
        )
        return self._client.data_converter.from_payload(resp.result, result_type or hinted)

    async def execute_update(
        self,
        update: Any,
        arg: Any = ARG_UNSET,
        *,
        args: Sequence[Any] = (),
        id: str | None = None,
        result_type: Any = None,
    ) -> Any:
        """Send an update and wait for its result.

        Raises :class:`~sagas.exceptions.WorkflowUpdateFailedError` when the
        validator rejected it or the handler raised.
        """
        handle = await self.start_update(
            update, arg, args=args, id=id, result_type=result_type, wait_for_stage=WorkflowUpdateStage.COMPLETED
        )
        return await handle.result()

    async def start_update(
        self,
        update: Any,
        arg: Any = ARG_UNSET,
        *,
        wait_for_stage: WorkflowUpdateStage | str = WorkflowUpdateStage.ACCEPTED,
        args: Sequence[Any] = (),
        id: str | None = None,
        result_type: Any = None,
    ) -> WorkflowUpdateHandle:
        """Send an update and return once it reached ``wait_for_stage`` (default: accepted)."""
        name, hinted = handler_name_and_result_type(update, "update")
        handle = WorkflowUpdateHandle(
            self,
            id or str(uuid.uuid4()),
            name,
            self._client.data_converter.to_payloads(arg_or_args(arg, args)),
            result_type=result_type or hinted,
        )
        await handle._poll(str(WorkflowUpdateStage(wait_for_stage)))
        return handle

    async def cancel(self, *, reason: str = "") -> None:
        """Ask the workflow to cancel (it may clean up, e.g. run saga compensations, first)."""
        req = CancelRequest(
            run_id=self._run_id or "", reason=reason, request_id=str(uuid.uuid4()), identity=self._client.identity
        )
        await self._client.transport.call_model(Ack, "POST", self._path("/cancel"), req)

    async def terminate(self, *args: Any, reason: str | None = None) -> None:
        """Stop the workflow at once, without running any of its code."""
        req = TerminateRequest(
            run_id=self._run_id or "",
            reason=reason or "",
            details=self._client.data_converter.to_payloads(list(args)),
            identity=self._client.identity,
        )
        await self._client.transport.call_model(Ack, "POST", self._path("/terminate"), req, idempotent=False)

    async def reset(
        self,
        *,
        event_id: int | None = None,
        reset_type: str | None = None,
        reason: str = "",
        reapply_signals: bool = True,
    ) -> WorkflowHandle[Any]:
        """Start a new run from a workflow task of this run (like Temporal's reset), e.g. after fixing a bug.

        Name the reset point with ``event_id`` (any event of a started workflow task: its
        ``WorkflowTaskCompleted`` is the usual choice) or ``reset_type`` (``"FirstWorkflowTask"`` or
        ``"LastWorkflowTask"``). The new run keeps the history up to that task, so activities that
        completed before it are not run again; the workflow code decides again from there. Signals
        received after that point are delivered again unless ``reapply_signals=False``. The current
        run, if still running, is terminated. Returns a handle to the new run.

        Example::

            handle = client.get_workflow_handle("trip-42")
            new_run = await handle.reset(reset_type="LastWorkflowTask", reason="hotel bug fixed")
            print(await new_run.result())
        """
        req = ResetWorkflowRequest(
            run_id=self._run_id or "",
            event_id=event_id,
            reset_type=reset_type,
            reason=reason,
            reapply_signals=reapply_signals,
            identity=self._client.identity,
        )
        resp = await self._client.transport.call_model(
            ResetWorkflowResponse, "POST", self._path("/reset"), req, idempotent=False
        )
        return WorkflowHandle(self._client, self._id, run_id=resp.run_id, result_run_id=resp.run_id,
                              result_type=self._result_type)  # fmt: skip

    async def describe(self) -> WorkflowExecutionDescription:
        """Status, times, pending activities and timers of the run."""
        resp = await self._client.transport.call_model(
            DescribeWorkflowResponse, "GET", self._path(), params={"run_id": self._run_id or None}
        )
        return WorkflowExecutionDescription.from_response(resp)

    async def fetch_history_events(self, *, page_size: int = HISTORY_PAGE_SIZE) -> AsyncIterator[HistoryEvent]:
        """The run's events in order, fetched page by page."""
        async for event in self._client._history_events(self._id, self._run_id, page_size=page_size):
            yield event

    async def fetch_history(self) -> WorkflowHistory:
        """The run's whole history, e.g. to save it for replay tests (``Replayer.replay_workflow``)."""
        run_id = self._run_id or (await self.describe()).run_id  # pin the run: it may continue as new
        events = [e async for e in self._client._history_events(self._id, run_id)]
        return WorkflowHistory(
            workflow_id=self._id, events=events, run_id=run_id, namespace=self._client.namespace
        )

    async def fetch_archived_history(self) -> WorkflowHistory:
        """The run's history from its namespace's archive, once retention deleted it from the store.

        Without a run id: the run of this workflow id that closed last. Raises
        :class:`~sagas.exceptions.RPCError` with code ``workflow_not_archived`` (not in the archive,
        e.g. its retention has not ended yet) or ``archival_not_enabled`` (the namespace has no
        ``history_archival_uri``).
        """
        resp = await self._client.transport.call_model(
            ArchivedHistoryResponse,
            "GET",
            f"{self._client._ns_path()}/archived-workflows/{quote(self._id, safe='')}/history",
            params={"run_id": self._run_id or None},
        )
        return WorkflowHistory(
            workflow_id=resp.workflow_id, events=parse_events(resp.events), run_id=resp.run_id, namespace=resp.namespace
        )


class WorkflowUpdateHandle:
    """Handle to one update; :meth:`result` waits for it to complete.

    Example::

        update = await handle.start_update(OrderWorkflow.set_address, address)
        ...                                  # do other work meanwhile
        print(await update.result())         # raises WorkflowUpdateFailedError if it failed
    """

    def __init__(
        self, handle: WorkflowHandle[Any], id: str, name: str, payloads: list[Any], *, result_type: Any = None
    ) -> None:
        self._handle = handle
        self._id = id
        self._name = name
        self._payloads = payloads
        self._result_type = result_type
        self._outcome: UpdateWorkflowResponse | None = None

    @property
    def id(self) -> str:
        """The update's id (unique within the workflow)."""
        return self._id

    @property
    def name(self) -> str:
        """The update's handler name."""
        return self._name

    @property
    def workflow_id(self) -> str:
        """The id of the workflow the update was sent to."""
        return self._handle.id

    async def _poll(self, stage: str) -> UpdateWorkflowResponse:
        # The same update id makes a repeated request join the first one.
        transport = self._handle.client.transport
        while True:
            req = UpdateWorkflowRequest(
                name=self._name,
                input=self._payloads,
                update_id=self._id,
                run_id=self._handle.run_id or "",
                wait_for_stage=stage,
                timeout=UPDATE_WAIT_SECONDS,
            )
            resp = await transport.call_model(
                UpdateWorkflowResponse,
                "POST",
                self._handle._path("/update"),
                req,
                timeout=UPDATE_WAIT_SECONDS + transport.timeout,
            )
            if resp.failure is not None:
                raise WorkflowUpdateFailedError(cause=failure_to_error(resp.failure))
            if resp.stage == WorkflowUpdateStage.COMPLETED:
                self._outcome = resp
                return resp
            if stage != WorkflowUpdateStage.COMPLETED and _stage_rank(resp.stage) >= _stage_rank(stage):
                return resp

    async def result(self) -> Any:
        """Wait for the update to complete and return its result."""
        outcome = self._outcome or await self._poll(WorkflowUpdateStage.COMPLETED)
        return self._handle.client.data_converter.from_payload(outcome.result, self._result_type)


_FOLLOWED_STATUSES = frozenset(
    {
        WorkflowExecutionStatus.COMPLETED,
        WorkflowExecutionStatus.FAILED,
        WorkflowExecutionStatus.TIMED_OUT,
        WorkflowExecutionStatus.CONTINUED_AS_NEW,
    }
)
"""Closed runs whose ``new_run_id`` (retry, cron, continue-as-new) ``result()`` follows."""


def _stage_rank(stage: str) -> int:
    order = [WorkflowUpdateStage.ADMITTED, WorkflowUpdateStage.ACCEPTED, WorkflowUpdateStage.COMPLETED]
    return order.index(WorkflowUpdateStage(stage)) if stage in WorkflowUpdateStage._value2member_map_ else 0


def _close_cause(status: str, failure: Failure | None) -> BaseException:
    """The ``cause`` of a WorkflowFailureError for a run that closed with ``status``."""
    if status == WorkflowExecutionStatus.CANCELED:
        if failure is not None and failure.kind == "canceled":
            return failure_to_error(failure)
        return CancelledError("Workflow cancelled")
    if status == WorkflowExecutionStatus.TERMINATED:
        if failure is not None:
            err = failure_to_error(failure)
            return err if isinstance(err, TerminatedError) else TerminatedError(failure.message or "Workflow terminated")
        return TerminatedError("Workflow terminated")
    if status == WorkflowExecutionStatus.TIMED_OUT:
        if failure is not None and failure.kind == "timeout":
            return failure_to_error(failure)
        return TimeoutError("Workflow timed out", type=TimeoutType.START_TO_CLOSE)
    if failure is not None:
        return failure_to_error(failure)
    return ApplicationError(f"workflow closed with status {status} and no failure details")


class AsyncActivityHandle:
    """Complete, fail or heartbeat an activity from outside the worker (by its task token).

    Example::

        # the activity called activity.raise_complete_async() and handed out its task token
        handle = client.get_async_activity_handle(task_token=token)
        await handle.heartbeat("waiting for the manager")
        await handle.complete("approved")    # or: await handle.fail(ApplicationError("refused"))
    """

    def __init__(self, client: Client, task_token: str) -> None:
        self._client = client
        self._task_token = task_token

    @property
    def task_token(self) -> str:
        """The task token that identifies the activity attempt."""
        return self._task_token

    async def heartbeat(self, *details: Any) -> None:
        """Record progress; raises :class:`AsyncActivityCancelledError` when cancellation was requested."""
        ack = await self._client._complete_task(
            ActivityHeartbeat(task_token=self._task_token, details=self._client.data_converter.to_payloads(details))
        )
        if ack.cancel_requested:
            raise AsyncActivityCancelledError()

    async def complete(self, result: Any = None) -> None:
        """Complete the activity with ``result``."""
        await self._client._complete_task(
            ActivityResult(
                task_token=self._task_token,
                result=self._client.data_converter.to_payload(result),
                identity=self._client.identity,
            )
        )

    async def fail(self, error: BaseException, *, last_heartbeat_details: Sequence[Any] = ()) -> None:
        """Fail the activity with ``error`` (retried per the activity's retry policy)."""
        failure = error_to_failure(error)
        if last_heartbeat_details:
            failure = failure.model_copy(
                update={"last_heartbeat_details": self._client.data_converter.to_payloads(last_heartbeat_details)}
            )
        await self._client._complete_task(
            ActivityResult(task_token=self._task_token, failure=failure, identity=self._client.identity)
        )

    async def report_cancellation(self, *details: Any) -> None:
        """Report that the activity honoured a cancellation request (``details`` are not recorded)."""
        await self._client._complete_task(
            ActivityResult(task_token=self._task_token, canceled=True, identity=self._client.identity)
        )


__all__ = [
    "ARG_UNSET",
    "AsyncActivityHandle",
    "Client",
    "WorkflowHandle",
    "WorkflowUpdateHandle",
    "WorkflowUpdateStage",
]
