"""The functions workflow code calls (``workflow.execute_activity``, ``workflow.sleep``, ...).

Each looks up the running :class:`~sagas.workflow._instance.WorkflowInstance`
(the workflow's own event loop), so user code never passes a context around.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable, Mapping, MutableMapping, Sequence
from datetime import datetime, timedelta
from random import Random
from typing import Any, NoReturn
from uuid import UUID

from orchestrator.api.enums import ActivityCancellationType, ParentClosePolicy
from sagas.common import RetryPolicy, SearchAttributeUpdate, WorkflowIDReusePolicy
from sagas.workflow._instance import (
    _NO_ARG,
    ActivityHandle,
    ChildWorkflowHandle,
    ExternalWorkflowHandle,
    Info,
    _resolve_args,
    current,
    current_or_none,
)
from sagas.workflow._session import session_for_activity


def in_workflow() -> bool:
    """True when called from workflow code.

    Example::

        def log(msg: str) -> None:   # shared by workflow and non-workflow code
            (workflow.logger if workflow.in_workflow() else logging.getLogger(__name__)).info(msg)
    """
    return current_or_none() is not None


def info() -> Info:
    """Information about the running workflow (ids, type, task queue, attempt, start time, ...).

    Example (inside a workflow)::

        workflow.logger.info("run %s of %s", workflow.info().run_id, workflow.info().workflow_id)
    """
    return current().info


def instance() -> Any:
    """The running workflow's object (the instance of the ``@workflow.defn`` class).

    Example (inside a workflow)::

        wf: BookTrip = workflow.instance()
        workflow.logger.info("approved: %s", wf.approved)
    """
    return current().workflow_object


def memo() -> Mapping[str, Any]:
    """The workflow's memo, as given at start.

    Example (inside a workflow)::

        region = workflow.memo().get("region", "eu")
    """
    return current().info.memo


def now() -> datetime:
    """Workflow time as an aware UTC ``datetime``; deterministic on replay (use it, not ``datetime.now``).

    Example (inside a workflow)::

        deadline = workflow.now() + timedelta(days=2)
    """
    return current().now()


def time() -> float:
    """Workflow time in seconds since the epoch; deterministic on replay.

    Example (inside a workflow)::

        started = workflow.time()
        await workflow.sleep(60)
        elapsed = workflow.time() - started   # 60.0, also on replay
    """
    return current().time()


def random() -> Random:
    """A ``random.Random`` seeded from the run id: the same numbers on every replay.

    Example (inside a workflow)::

        dice = workflow.random().randint(1, 6)
    """
    return current().random()


def uuid4() -> UUID:
    """A random UUID drawn from :func:`random` (deterministic on replay).

    Example (inside a workflow)::

        idempotency_key = str(workflow.uuid4())
        await workflow.execute_activity(charge_card, order, idempotency_key, start_to_close_timeout=T)
    """
    return current().uuid4()


def _td(value: timedelta | float) -> float:
    return value.total_seconds() if isinstance(value, timedelta) else float(value)


async def sleep(duration: timedelta | float) -> None:
    """Sleep durably (a server-side timer that survives restarts). ``asyncio.sleep`` works too.

    Example (inside a workflow)::

        await workflow.sleep(timedelta(days=1))   # survives worker restarts
    """
    await asyncio.sleep(_td(duration))


async def wait_condition(fn: Callable[[], bool], timeout: timedelta | float | None = None) -> None:
    """Wait until ``fn()`` is true (checked whenever the workflow is idle).

    With ``timeout``, raises ``asyncio.TimeoutError`` when it expires (a durable timer).

    Example (inside a workflow)::

        await workflow.wait_condition(lambda: self.approved, timeout=timedelta(hours=1))
    """
    await current().wait_condition(fn, _td(timeout) if timeout is not None else None)


def start_activity(
    activity: Any,
    *arg_list: Any,
    arg: Any = _NO_ARG,
    args: Sequence[Any] | None = None,
    task_queue: str | None = None,
    schedule_to_close_timeout: timedelta | None = None,
    schedule_to_start_timeout: timedelta | None = None,
    start_to_close_timeout: timedelta | None = None,
    heartbeat_timeout: timedelta | None = None,
    retry_policy: RetryPolicy | None = None,
    cancellation_type: ActivityCancellationType = ActivityCancellationType.TRY_CANCEL,
    activity_id: str | None = None,
    result_type: Any = None,
    headers: Mapping[str, Any] | None = None,
) -> ActivityHandle[Any]:
    """Schedule an activity and return its handle (an ``asyncio.Task``: await it, or ``cancel()`` it).

    ``activity`` is an ``@activity.defn`` function or the activity's name.
    Arguments go positionally, as ``arg=`` or as ``args=[...]``. One of
    ``start_to_close_timeout`` / ``schedule_to_close_timeout`` is required.
    The result is converted to ``result_type`` or the function's return
    annotation. Failures raise :class:`~sagas.exceptions.ActivityError`
    whose ``cause`` is the real error.

    Cancelling the handle (or the task awaiting it) depends on
    ``cancellation_type``: ``TRY_CANCEL`` requests cancellation and raises at
    once, ``WAIT_CANCELLATION_COMPLETED`` waits for the activity to
    acknowledge, ``ABANDON`` raises at once without telling the activity.

    Inside ``async with workflow.create_session(...)`` (and with
    ``task_queue=session.task_queue``) the activity runs on the session's
    worker; see :func:`~sagas.workflow.create_session`.

    Example (inside a workflow)::

        handle = workflow.start_activity(book_car, req, start_to_close_timeout=timedelta(seconds=30))
        car = await handle
    """
    instance = current()
    in_session = session_for_activity(task_queue)
    if in_session is not None:  # inside `async with workflow.create_session()`, or its task queue given
        task_queue = in_session._queue_for_activity()
    handle = instance.start_activity(
        activity,
        _resolve_args(arg_list, arg, args),
        task_queue=task_queue,
        schedule_to_close_timeout=schedule_to_close_timeout,
        schedule_to_start_timeout=schedule_to_start_timeout,
        start_to_close_timeout=start_to_close_timeout,
        heartbeat_timeout=heartbeat_timeout,
        retry_policy=retry_policy,
        cancellation_type=cancellation_type,
        activity_id=activity_id,
        result_type=result_type,
        headers=headers,
    )
    if in_session is not None:
        in_session._track(handle)
    return handle


async def execute_activity(
    activity: Any,
    *arg_list: Any,
    arg: Any = _NO_ARG,
    args: Sequence[Any] | None = None,
    task_queue: str | None = None,
    schedule_to_close_timeout: timedelta | None = None,
    schedule_to_start_timeout: timedelta | None = None,
    start_to_close_timeout: timedelta | None = None,
    heartbeat_timeout: timedelta | None = None,
    retry_policy: RetryPolicy | None = None,
    cancellation_type: ActivityCancellationType = ActivityCancellationType.TRY_CANCEL,
    activity_id: str | None = None,
    result_type: Any = None,
    headers: Mapping[str, Any] | None = None,
) -> Any:
    """Run an activity and return its result (see :func:`start_activity`).

    Example (inside a workflow)::

        car = await workflow.execute_activity(
            book_car, req, start_to_close_timeout=timedelta(seconds=30),
            retry_policy=RetryPolicy(maximum_attempts=3),
        )
    """
    return await start_activity(
        activity,
        *arg_list,
        arg=arg,
        args=args,
        task_queue=task_queue,
        schedule_to_close_timeout=schedule_to_close_timeout,
        schedule_to_start_timeout=schedule_to_start_timeout,
        start_to_close_timeout=start_to_close_timeout,
        heartbeat_timeout=heartbeat_timeout,
        retry_policy=retry_policy,
        cancellation_type=cancellation_type,
        activity_id=activity_id,
        result_type=result_type,
        headers=headers,
    )


start_activity_method = start_activity
"""Alias of :func:`start_activity` for activities defined as methods (temporalio compatibility)."""
execute_activity_method = execute_activity
"""Alias of :func:`execute_activity` for activities defined as methods (temporalio compatibility)."""


def start_local_activity(
    activity: Any,
    *arg_list: Any,
    arg: Any = _NO_ARG,
    args: Sequence[Any] | None = None,
    schedule_to_close_timeout: timedelta | None = None,
    start_to_close_timeout: timedelta | None = None,
    retry_policy: RetryPolicy | None = None,
    cancellation_type: ActivityCancellationType = ActivityCancellationType.TRY_CANCEL,
    activity_id: str | None = None,
    result_type: Any = None,
) -> ActivityHandle[Any]:
    """Start a local activity: run by this worker inside the workflow task, its outcome kept in a marker.

    Good for short work (milliseconds) that does not need a queue round trip.
    The function is the worker's registered activity of that name (or the
    function passed, when not registered). It is retried in-process by
    ``retry_policy`` (default: 5 attempts, 100 ms backoff doubling up to 2 s),
    each attempt bounded by ``start_to_close_timeout`` and all of them by
    ``schedule_to_close_timeout``. On replay the recorded outcome is used and
    the function is not called.

    Example (inside a workflow)::

        handle = workflow.start_local_activity(get_rate, "EUR", start_to_close_timeout=timedelta(seconds=5))
        rate = await handle
    """
    return current().start_local_activity(
        activity,
        _resolve_args(arg_list, arg, args),
        schedule_to_close_timeout=schedule_to_close_timeout,
        start_to_close_timeout=start_to_close_timeout,
        retry_policy=retry_policy,
        cancellation_type=cancellation_type,
        activity_id=activity_id,
        result_type=result_type,
    )


async def execute_local_activity(
    activity: Any,
    *arg_list: Any,
    arg: Any = _NO_ARG,
    args: Sequence[Any] | None = None,
    schedule_to_close_timeout: timedelta | None = None,
    start_to_close_timeout: timedelta | None = None,
    retry_policy: RetryPolicy | None = None,
    cancellation_type: ActivityCancellationType = ActivityCancellationType.TRY_CANCEL,
    activity_id: str | None = None,
    result_type: Any = None,
) -> Any:
    """Run a local activity and return its result (see :func:`start_local_activity`).

    Example (inside a workflow)::

        rate = await workflow.execute_local_activity(get_rate, "EUR", start_to_close_timeout=timedelta(seconds=5))
    """
    return await start_local_activity(
        activity,
        *arg_list,
        arg=arg,
        args=args,
        schedule_to_close_timeout=schedule_to_close_timeout,
        start_to_close_timeout=start_to_close_timeout,
        retry_policy=retry_policy,
        cancellation_type=cancellation_type,
        activity_id=activity_id,
        result_type=result_type,
    )


async def start_child_workflow(
    workflow: Any,
    *arg_list: Any,
    arg: Any = _NO_ARG,
    args: Sequence[Any] | None = None,
    id: str | None = None,
    task_queue: str | None = None,
    execution_timeout: timedelta | None = None,
    run_timeout: timedelta | None = None,
    task_timeout: timedelta | None = None,
    parent_close_policy: ParentClosePolicy = ParentClosePolicy.TERMINATE,
    id_reuse_policy: WorkflowIDReusePolicy = WorkflowIDReusePolicy.ALLOW_DUPLICATE,
    retry_policy: RetryPolicy | None = None,
    cron_schedule: str | None = None,
    memo: Mapping[str, Any] | None = None,
    search_attributes: Mapping[str, Any] | None = None,
    result_type: Any = None,
) -> ChildWorkflowHandle[Any]:
    """Start a child workflow and return its handle once it has started.

    ``workflow`` is a ``@workflow.defn`` class, its run method, or a type
    name. ``id`` defaults to a deterministic UUID. Raises
    :class:`~sagas.exceptions.WorkflowAlreadyStartedError` if the id is taken.

    Example (inside a workflow)::

        child = await workflow.start_child_workflow(ChargeWorkflow.run, order, id=f"charge-{order.id}")
        await child.signal(ChargeWorkflow.approve)
        receipt = await child
    """
    return await current().start_child_workflow(
        workflow,
        _resolve_args(arg_list, arg, args),
        id=id,
        task_queue=task_queue,
        execution_timeout=execution_timeout,
        run_timeout=run_timeout,
        task_timeout=task_timeout,
        parent_close_policy=parent_close_policy,
        id_reuse_policy=id_reuse_policy,
        retry_policy=retry_policy,
        cron_schedule=cron_schedule,
        memo=memo,
        search_attributes=search_attributes,
        result_type=result_type,
    )


async def execute_child_workflow(
    workflow: Any,
    *arg_list: Any,
    arg: Any = _NO_ARG,
    args: Sequence[Any] | None = None,
    id: str | None = None,
    task_queue: str | None = None,
    execution_timeout: timedelta | None = None,
    run_timeout: timedelta | None = None,
    task_timeout: timedelta | None = None,
    parent_close_policy: ParentClosePolicy = ParentClosePolicy.TERMINATE,
    id_reuse_policy: WorkflowIDReusePolicy = WorkflowIDReusePolicy.ALLOW_DUPLICATE,
    retry_policy: RetryPolicy | None = None,
    cron_schedule: str | None = None,
    memo: Mapping[str, Any] | None = None,
    search_attributes: Mapping[str, Any] | None = None,
    result_type: Any = None,
) -> Any:
    """Run a child workflow and return its result; failures raise :class:`~sagas.exceptions.ChildWorkflowError`.

    Example (inside a workflow)::

        receipt = await workflow.execute_child_workflow(
            ChargeWorkflow.run, order, id=f"charge-{order.id}", execution_timeout=timedelta(hours=1)
        )
    """
    handle = await start_child_workflow(
        workflow,
        *arg_list,
        arg=arg,
        args=args,
        id=id,
        task_queue=task_queue,
        execution_timeout=execution_timeout,
        run_timeout=run_timeout,
        task_timeout=task_timeout,
        parent_close_policy=parent_close_policy,
        id_reuse_policy=id_reuse_policy,
        retry_policy=retry_policy,
        cron_schedule=cron_schedule,
        memo=memo,
        search_attributes=search_attributes,
        result_type=result_type,
    )
    return await handle


def get_external_workflow_handle(workflow_id: str, run_id: str | None = None) -> ExternalWorkflowHandle:
    """A handle to signal or cancel another workflow.

    Example (inside a workflow)::

        await workflow.get_external_workflow_handle("order-7").signal("paid", receipt)
    """
    return ExternalWorkflowHandle(current(), workflow_id, run_id)


def patched(patch_id: str) -> bool:
    """Branch safely around a code change: True for runs that reach this point with the new code.

    Live, returns True and records a marker; on replay, True only if the
    history recorded that marker here (the run took the new path before).

    Example (inside a workflow)::

        if workflow.patched("use-new-car-api"):
            await workflow.execute_activity(book_car_v2, req, start_to_close_timeout=T)
        else:
            await workflow.execute_activity(book_car, req, start_to_close_timeout=T)
    """
    return current().patched(patch_id, deprecated=False)


def deprecate_patch(patch_id: str) -> None:
    """Mark a patch as deprecated once no running workflow can take the old path (records nothing).

    Example (inside a workflow)::

        # once no run from before "use-new-car-api" is still open:
        workflow.deprecate_patch("use-new-car-api")
        await workflow.execute_activity(book_car_v2, req, start_to_close_timeout=T)
    """
    current().patched(patch_id, deprecated=True)


def continue_as_new(
    *arg_list: Any,
    arg: Any = _NO_ARG,
    args: Sequence[Any] | None = None,
    workflow: Any = None,
    task_queue: str | None = None,
    run_timeout: timedelta | None = None,
    task_timeout: timedelta | None = None,
    memo: Mapping[str, Any] | None = None,
    search_attributes: Mapping[str, Any] | None = None,
) -> NoReturn:
    """End this run and start a fresh one (same workflow id, empty history) with new arguments.

    Raises :class:`ContinueAsNewError`; do not catch it.

    Example (inside a workflow)::

        if processed > 1000:
            workflow.continue_as_new(cursor)
    """
    current().continue_as_new(
        _resolve_args(arg_list, arg, args),
        workflow=workflow,
        task_queue=task_queue,
        run_timeout=run_timeout,
        task_timeout=task_timeout,
        memo=memo,
        search_attributes=search_attributes,
    )


def upsert_search_attributes(attributes: Mapping[str, Any] | Sequence[SearchAttributeUpdate]) -> None:
    """Set (or, with value ``None``, remove) search attributes of this run.

    Example (inside a workflow)::

        workflow.upsert_search_attributes({"CustomerId": "c-42"})
        workflow.upsert_search_attributes([CUSTOMER.value_set("c-42")])
    """
    current().upsert_search_attributes(attributes)


def set_signal_handler(name: str, handler: Callable[..., Any] | None) -> None:
    """Set or remove a signal handler at run time; buffered signals of that name are delivered now.

    Example (inside a workflow)::

        def on_discount(percent: int) -> None:
            self.discount = percent

        workflow.set_signal_handler("discount", on_discount)
    """
    current().set_signal_handler(name, handler)


def set_dynamic_signal_handler(handler: Callable[..., Any] | None) -> None:
    """Set or remove the handler for signals without a handler; it gets ``(name, args)``.

    Example (inside a workflow)::

        def on_any(name: str, args: Sequence[Any]) -> None:
            self.events.append((name, list(args)))

        workflow.set_dynamic_signal_handler(on_any)
    """
    current().set_signal_handler(None, handler)


def set_query_handler(name: str, handler: Callable[..., Any] | None) -> None:
    """Set or remove a query handler at run time.

    Example (inside a workflow)::

        workflow.set_query_handler("progress", lambda: f"{self.done}/{self.total}")
    """
    current().set_query_handler(name, handler)


class unsafe:  # noqa: N801 - a namespace, named like temporalio's
    """Escape hatches; use with care.

    Example (inside a workflow)::

        if not workflow.unsafe.is_replaying():
            metrics.increment("trips.started")   # a side effect only on the first execution

        with workflow.unsafe.imports_passed_through():   # accepted for temporalio code
            import pricing
    """

    @staticmethod
    def is_replaying() -> bool:
        """True while the workflow is replaying history (no new side effects should happen)."""
        inst = current_or_none()
        return inst is not None and inst.is_replaying

    @staticmethod
    def imports_passed_through() -> _NoOpContext:
        """No-op context manager for temporalio compatibility (sagas has no import sandbox)."""
        return _NoOpContext()


class _NoOpContext:
    def __enter__(self) -> None:
        return None

    def __exit__(self, *exc: object) -> None:
        return None


class _ReplaySafeLoggerAdapter(logging.LoggerAdapter):  # type: ignore[type-arg]
    """``workflow.logger``: drops records while replaying, adds the workflow's ids to the others."""

    def isEnabledFor(self, level: int) -> bool:
        inst = current_or_none()
        if inst is not None and inst.is_replaying:
            return False
        return bool(self.logger.isEnabledFor(level))

    def process(self, msg: Any, kwargs: MutableMapping[str, Any]) -> tuple[Any, MutableMapping[str, Any]]:
        inst = current_or_none()
        if inst is not None and inst._info is not None:
            i = inst._info
            extra = dict(kwargs.get("extra") or {})
            extra.setdefault(
                "sagas_workflow",
                {"workflow_id": i.workflow_id, "run_id": i.run_id, "workflow_type": i.workflow_type},
            )
            kwargs["extra"] = extra
            msg = f"{msg} ({i.workflow_type} {i.workflow_id})"
        return msg, kwargs


logger = _ReplaySafeLoggerAdapter(logging.getLogger("sagas.workflow"), {})
"""A logger for workflow code: silent while replaying, so each message is logged once.

Example (inside a workflow)::

    workflow.logger.info("booking %s for %s", req.car, workflow.info().workflow_id)
"""
