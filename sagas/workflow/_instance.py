"""The deterministic workflow runtime: one :class:`WorkflowInstance` per workflow run.

A :class:`WorkflowInstance` *is* an asyncio event loop (like temporalio's
``_WorkflowInstanceImpl``): ``call_soon`` queues callbacks in a deque,
``call_later``/``call_at`` become durable ``StartTimer`` commands, and a task
that awaits an activity becomes a ``ScheduleActivityTask`` command. Nothing
in it does I/O, except local activities, which :meth:`WorkflowInstance.activate`
awaits on the caller's (real) loop.

How a history slice is processed (``activate``):

1. Events are split at ``WorkflowTaskCompleted``. The *command events* right
   after it (``ActivityTaskScheduled``, ``TimerStarted``, ``MarkerRecorded``,
   ...) were produced by the activation before it; every other event is an
   *input* (a result, a signal, a cancel request) of the next activation.
2. On each ``WorkflowTaskCompleted`` the collected inputs are applied and the
   loop runs (replaying) until every task is blocked; the commands it produced
   are matched in order against the command events that follow. A mismatch
   raises :class:`~sagas.exceptions.NondeterminismError`.
3. After the last event, the remaining inputs run one live activation whose
   commands are returned; they are confirmed by the command events at the
   start of the next slice.
"""

from __future__ import annotations

import asyncio
import collections
import contextlib
import dataclasses
import hashlib
import inspect
import logging
import os
import random as _random
import sys
import time as _time
import traceback
import uuid
from collections.abc import Callable, Coroutine, Iterator, Mapping, Sequence
from datetime import UTC, datetime, timedelta
from typing import Any, NoReturn, TypeVar

from brokers.envelope import UpdateRequest
from brokers.tracing import trace_headers
from orchestrator.api import commands as cmd
from orchestrator.api import events as ev
from orchestrator.api.common import Failure
from orchestrator.api.enums import (
    ActivityCancellationType,
    EventType,
    ParentClosePolicy,
    RetryState,
    TimeoutType,
)
from sagas.common import RetryPolicy, SearchAttributeUpdate, WorkflowIDReusePolicy
from sagas.converter import DataConverter, default, parameter_hints, return_hint
from sagas.exceptions import (
    ActivityError,
    ApplicationError,
    CancelledError,
    ChildWorkflowError,
    FailureError,
    NondeterminismError,
    TerminatedError,
    TimeoutError,
    WorkflowAlreadyStartedError,
    _retry_state,
    error_to_failure,
    failure_to_error,
    is_cancelled_error,
)
from sagas.workflow._definition import WORKFLOW_NAME_ATTR, WorkflowDefinition, get_definition, handler_name_of

__all__ = [
    "ActivityHandle",
    "ChildWorkflowHandle",
    "ContinueAsNewError",
    "ExternalWorkflowHandle",
    "Info",
    "ParentInfo",
    "StaleInstanceError",
    "WorkflowInstance",
    "WorkflowRunner",
]

_T = TypeVar("_T")
_log = logging.getLogger("sagas.workflow")

_SAGAS_DIR = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
_ASYNCIO_DIR = os.path.dirname(os.path.abspath(asyncio.__file__))
_ASYNCIO_EVENTS = os.path.join(_ASYNCIO_DIR, "events.py")
_THIS_FILE = os.path.abspath(__file__)

PATCH_MARKER = "core_patch"
LOCAL_ACTIVITY_MARKER = "local_activity"

_DEFAULT_LOCAL_RETRY = RetryPolicy(
    initial_interval=timedelta(milliseconds=100),
    backoff_coefficient=2.0,
    maximum_interval=timedelta(seconds=2),
    maximum_attempts=5,
)

_COMMAND_EVENTS = frozenset(
    {
        EventType.ACTIVITY_TASK_SCHEDULED,
        EventType.ACTIVITY_TASK_CANCEL_REQUESTED,
        EventType.TIMER_STARTED,
        EventType.TIMER_CANCELED,
        EventType.MARKER_RECORDED,
        EventType.START_CHILD_WORKFLOW_EXECUTION_INITIATED,
        EventType.SIGNAL_EXTERNAL_WORKFLOW_EXECUTION_INITIATED,
        EventType.REQUEST_CANCEL_EXTERNAL_WORKFLOW_EXECUTION_INITIATED,
        EventType.UPSERT_WORKFLOW_SEARCH_ATTRIBUTES,
        EventType.WORKFLOW_EXECUTION_UPDATE_ACCEPTED,
        EventType.WORKFLOW_EXECUTION_UPDATE_COMPLETED,
        EventType.WORKFLOW_EXECUTION_COMPLETED,
        EventType.WORKFLOW_EXECUTION_FAILED,
        EventType.WORKFLOW_EXECUTION_CANCELED,
        EventType.WORKFLOW_EXECUTION_CONTINUED_AS_NEW,
    }
)
_CLOSE_COMMAND_EVENTS = frozenset(
    {
        EventType.WORKFLOW_EXECUTION_COMPLETED,
        EventType.WORKFLOW_EXECUTION_FAILED,
        EventType.WORKFLOW_EXECUTION_CANCELED,
        EventType.WORKFLOW_EXECUTION_CONTINUED_AS_NEW,
    }
)
_IGNORED_EVENTS = frozenset(
    {
        EventType.WORKFLOW_TASK_STARTED,
        EventType.WORKFLOW_TASK_FAILED,
        EventType.WORKFLOW_TASK_TIMED_OUT,
        EventType.ACTIVITY_TASK_STARTED,
    }
)
# The server writes no event for these when the activity/timer already finished
# (its result may be buffered while the workflow task was out).
_OPTIONAL_EVENT_COMMANDS = (cmd.RequestCancelActivityTask, cmd.CancelTimer)
_SERVER_CLOSE_EVENTS = frozenset(
    {EventType.WORKFLOW_EXECUTION_TERMINATED, EventType.WORKFLOW_EXECUTION_TIMED_OUT}
)


class ContinueAsNewError(BaseException):
    """Raised by ``workflow.continue_as_new``; ends this run and starts a new one.

    A ``BaseException`` so that ``except Exception`` in workflow code cannot
    swallow it. Do not raise it yourself.

    Example (inside a workflow)::

        try:
            workflow.continue_as_new(cursor)
        except Exception:
            ...   # not reached: ContinueAsNewError is not an Exception
    """

    def __init__(self, command: cmd.ContinueAsNewWorkflowExecution) -> None:
        super().__init__("continue as new")
        self.command = command


class StaleInstanceError(Exception):
    """The instance cannot continue from the given history slice.

    Raised when the slice does not start at :attr:`WorkflowInstance.next_event_id`,
    when the commands of the last task were not confirmed (the task failed or
    timed out), or when the instance is used after an ``activate`` raised.
    Evict the instance and replay the full history on a fresh one.
    """


class _DeadlockError(Exception):
    """A workflow task blocked its event loop for longer than the deadlock timeout."""


@dataclasses.dataclass(frozen=True)
class ParentInfo:
    """The parent of a child workflow.

    Example (inside a workflow)::

        parent = workflow.info().parent
        if parent is not None:
            await workflow.get_external_workflow_handle(parent.workflow_id).signal("child_started")
    """

    namespace: str
    workflow_id: str
    run_id: str


@dataclasses.dataclass(frozen=True)
class Info:
    """What a workflow knows about its own run (``workflow.info()``).

    Example (inside a workflow)::

        info = workflow.info()
        workflow.logger.info("%s attempt %d on %s", info.workflow_type, info.attempt, info.task_queue)
    """

    namespace: str
    workflow_id: str
    run_id: str
    workflow_type: str
    task_queue: str
    attempt: int
    start_time: datetime
    first_execution_run_id: str
    continued_run_id: str | None
    parent: ParentInfo | None
    cron_schedule: str | None
    execution_timeout: timedelta | None
    run_timeout: timedelta | None
    task_timeout: timedelta
    retry_policy: RetryPolicy | None
    headers: Mapping[str, Any]
    memo: Mapping[str, Any]
    search_attributes: Mapping[str, Any]


@dataclasses.dataclass(eq=False)
class _PendingCommand:
    command: cmd.Command
    source: str
    on_event: Callable[[Any], None] | None = None


def _user_source() -> str:
    """File:line of the workflow code that is creating a command (cheap stack walk).

    The walk stops at the loop's callback runner (``Handle._run``) or at the
    activation itself: the frames above drive the workflow (worker, replayer,
    CLI) and are not its code.
    """
    frame = sys._getframe(2)
    fallback = ""
    while frame is not None:
        code = frame.f_code
        filename = code.co_filename
        if filename.startswith(_ASYNCIO_DIR):
            if code.co_name == "_run" and filename == _ASYNCIO_EVENTS:
                break
        elif filename.startswith(_SAGAS_DIR):
            if code.co_name == "_activate" and filename == _THIS_FILE:
                break
            fallback = fallback or f"{filename}:{frame.f_lineno} in {code.co_name}"
        else:
            return f"{filename}:{frame.f_lineno} in {code.co_name}"
        frame = frame.f_back  # type: ignore[assignment]
    return fallback


def error_source(err: BaseException) -> str:
    """File:line of the innermost workflow-code frame an error was raised through, or ``""``."""
    where = ""
    for frame in traceback.extract_tb(err.__traceback__):
        if not frame.filename.startswith((_SAGAS_DIR, _ASYNCIO_DIR)):
            where = f"{frame.filename}:{frame.lineno} in {frame.name}"
    return where


def _definition_source(fn: Callable[..., Any], what: str) -> str:
    """File:line where ``fn`` is defined, e.g. for the command of a workflow that returned."""
    code = getattr(fn, "__code__", None)
    if code is None:
        return ""
    return f"{code.co_filename}:{code.co_firstlineno} in {code.co_name} ({what})"


def _task_stack(task: asyncio.Task[Any]) -> str:
    """The stack of a suspended task, following the chain of awaited coroutines."""
    frames = []
    coro: Any = task.get_coro()
    while coro is not None:
        frame = getattr(coro, "cr_frame", None) or getattr(coro, "gi_frame", None)
        if frame is None:
            break
        frames.append((frame, frame.f_lineno))
        coro = getattr(coro, "cr_await", None) or getattr(coro, "gi_yieldfrom", None)
    lines = "".join(traceback.StackSummary.extract(iter(frames)).format())
    return f"Stack of {task.get_name()} (most recent call last):\n{lines}"


def _suspended_at(task: asyncio.Task[Any]) -> str:
    """File:line of the innermost workflow-code frame a suspended task is waiting in."""
    where = ""
    coro: Any = task.get_coro()
    while coro is not None:
        frame = getattr(coro, "cr_frame", None) or getattr(coro, "gi_frame", None)
        if frame is None:
            break
        filename = frame.f_code.co_filename
        if not filename.startswith((_SAGAS_DIR, _ASYNCIO_DIR)):
            where = f"{filename}:{frame.f_lineno} in {frame.f_code.co_name}"
        coro = getattr(coro, "cr_await", None) or getattr(coro, "gi_yieldfrom", None)
    return where


def _seconds(value: timedelta | float | None) -> float | None:
    if value is None:
        return None
    if isinstance(value, timedelta):
        return value.total_seconds()
    return float(value)


def _fmt(name: str, key: Mapping[str, Any]) -> str:
    return f"{name}({', '.join(f'{k}={v!r}' for k, v in key.items())})"


def _command_match_key(c: cmd.Command) -> tuple[EventType, dict[str, Any]] | None:
    """The event a command produces and the fields that must agree; ``None``: no event."""
    if isinstance(c, cmd.ScheduleActivityTask):
        return EventType.ACTIVITY_TASK_SCHEDULED, {
            "activity_id": c.activity_id,
            "activity_type": c.activity_type,
        }
    if isinstance(c, cmd.RequestCancelActivityTask):
        return EventType.ACTIVITY_TASK_CANCEL_REQUESTED, {"scheduled_event_id": c.scheduled_event_id}
    if isinstance(c, cmd.StartTimer):
        return EventType.TIMER_STARTED, {"timer_id": c.timer_id}
    if isinstance(c, cmd.CancelTimer):
        return EventType.TIMER_CANCELED, {"timer_id": c.timer_id}
    if isinstance(c, cmd.RecordMarker):
        return EventType.MARKER_RECORDED, _marker_key(c.marker_name, c.details)
    if isinstance(c, cmd.StartChildWorkflowExecution):
        return EventType.START_CHILD_WORKFLOW_EXECUTION_INITIATED, {
            "workflow_id": c.workflow_id,
            "workflow_type": c.workflow_type,
        }
    if isinstance(c, cmd.SignalExternalWorkflowExecution):
        return EventType.SIGNAL_EXTERNAL_WORKFLOW_EXECUTION_INITIATED, {
            "workflow_id": c.workflow_id,
            "signal_name": c.signal_name,
        }
    if isinstance(c, cmd.RequestCancelExternalWorkflowExecution):
        return EventType.REQUEST_CANCEL_EXTERNAL_WORKFLOW_EXECUTION_INITIATED, {"workflow_id": c.workflow_id}
    if isinstance(c, cmd.UpsertWorkflowSearchAttributes):
        return EventType.UPSERT_WORKFLOW_SEARCH_ATTRIBUTES, {}
    if isinstance(c, cmd.AcceptUpdate):
        return EventType.WORKFLOW_EXECUTION_UPDATE_ACCEPTED, {"update_id": c.update_id}
    if isinstance(c, cmd.CompleteUpdate):
        return EventType.WORKFLOW_EXECUTION_UPDATE_COMPLETED, {"update_id": c.update_id}
    if isinstance(c, cmd.CompleteWorkflowExecution):
        return EventType.WORKFLOW_EXECUTION_COMPLETED, {}
    if isinstance(c, cmd.FailWorkflowExecution):
        return EventType.WORKFLOW_EXECUTION_FAILED, {}
    if isinstance(c, cmd.CancelWorkflowExecution):
        return EventType.WORKFLOW_EXECUTION_CANCELED, {}
    if isinstance(c, cmd.ContinueAsNewWorkflowExecution):
        return EventType.WORKFLOW_EXECUTION_CONTINUED_AS_NEW, {}
    return None  # RejectUpdate leaves no event


def _marker_key(name: str, details: Mapping[str, Any]) -> dict[str, Any]:
    key: dict[str, Any] = {"marker_name": name}
    if name == PATCH_MARKER:
        key["patch_id"] = details.get("patch_id")
    elif name == LOCAL_ACTIVITY_MARKER:
        key["activity_type"] = details.get("activity_type")
        key["seq"] = details.get("seq")
    return key


def _event_match_key(e: Any) -> dict[str, Any]:
    if isinstance(e, ev.ActivityTaskScheduled):
        return {"activity_id": e.activity_id, "activity_type": e.activity_type}
    if isinstance(e, ev.ActivityTaskCancelRequested):
        return {"scheduled_event_id": e.scheduled_event_id}
    if isinstance(e, ev.TimerStarted | ev.TimerCanceled):
        return {"timer_id": e.timer_id}
    if isinstance(e, ev.MarkerRecorded):
        return _marker_key(e.marker_name, e.details)
    if isinstance(e, ev.StartChildWorkflowExecutionInitiated):
        return {"workflow_id": e.workflow_id, "workflow_type": e.workflow_type}
    if isinstance(e, ev.SignalExternalWorkflowExecutionInitiated):
        return {"workflow_id": e.workflow_id, "signal_name": e.signal_name}
    if isinstance(e, ev.RequestCancelExternalWorkflowExecutionInitiated):
        return {"workflow_id": e.workflow_id}
    if isinstance(e, ev.WorkflowExecutionUpdateAccepted | ev.WorkflowExecutionUpdateCompleted):
        return {"update_id": e.update_id}
    return {}


def _is_patch_marker(e: Any) -> bool:
    return isinstance(e, ev.MarkerRecorded) and e.marker_name == PATCH_MARKER


class _NoArg:
    pass


_NO_ARG: Any = _NoArg()


class _TimerHandle(asyncio.TimerHandle):
    """A durable timer: created by ``call_later``; ``cancel`` before it fires emits ``CancelTimer``."""

    def __init__(
        self,
        when: float,
        callback: Callable[..., Any],
        args: Sequence[Any],
        loop: WorkflowInstance,
        context: Any,
        timer_id: str,
    ) -> None:
        super().__init__(when, callback, args, loop, context)
        self.timer_id = timer_id
        self.fired = False
        self.pending: _PendingCommand | None = None
        self._instance = loop

    def cancel(self) -> None:
        if not self._cancelled and not self.fired:
            self._instance._cancel_timer(self)
        asyncio.Handle.cancel(self)


@dataclasses.dataclass(eq=False)
class _ActivityState:
    seq: int
    activity_id: str
    activity_type: str
    cancellation_type: ActivityCancellationType
    result_hint: Any
    future: asyncio.Future[Any]
    pending: _PendingCommand | None = None
    scheduled_event_id: int | None = None
    cancel_requested: bool = False
    # Local activities only:
    source: str = ""  # the workflow code that started it (file:line), for NondeterminismError
    local_input: list[Any] = dataclasses.field(default_factory=list)
    local_options: dict[str, Any] = dataclasses.field(default_factory=dict)

    def cancelled_error(self) -> ActivityError:
        err = ActivityError(
            "Activity cancelled",
            activity_type=self.activity_type,
            activity_id=self.activity_id,
            scheduled_event_id=self.scheduled_event_id or 0,
            retry_state=RetryState.CANCEL_REQUESTED,
        )
        err.__cause__ = CancelledError("Activity cancelled")
        return err


class ActivityHandle(asyncio.Task[_T]):
    """A started activity: await it for the result, ``cancel()`` it to cancel the activity.

    Returned by ``workflow.start_activity``. It is an ``asyncio.Task``, so it
    works with ``asyncio.gather``, ``asyncio.wait`` and ``asyncio.wait_for``.

    Example (inside a workflow)::

        car = workflow.start_activity(book_car, req, start_to_close_timeout=T)
        hotel = workflow.start_activity(book_hotel, req, start_to_close_timeout=T)
        done, pending = await asyncio.wait([car, hotel], timeout=60)
        for handle in pending:
            handle.cancel()
    """

    _sagas_state: _ActivityState
    _sagas_instance: WorkflowInstance

    def cancel(self, msg: Any = None) -> bool:
        """Cancel the activity (how depends on its ``cancellation_type``); awaiting it then raises.

        The task itself is not cancelled: it ends with the activity's outcome,
        ``ActivityError(cause=CancelledError)`` unless it completed first.
        """
        if self.done():
            return False
        self._sagas_instance._cancel_activity(self._sagas_state)
        return True


@dataclasses.dataclass(eq=False)
class _ChildState:
    seq: int
    workflow_id: str
    workflow_type: str
    result_hint: Any
    started: asyncio.Future[str]
    result: asyncio.Future[Any]
    pending: _PendingCommand | None = None
    initiated_event_id: int | None = None
    run_id: str | None = None
    cancel_requested: bool = False


class ChildWorkflowHandle(asyncio.Task[_T]):
    """A started child workflow: await it for the result; ``cancel()`` requests the child's cancellation.

    Returned by ``workflow.start_child_workflow`` once the child has started.

    Example (inside a workflow)::

        child = await workflow.start_child_workflow(ChargeWorkflow.run, order, id=f"charge-{order.id}")
        await child.signal(ChargeWorkflow.approve)
        receipt = await child
    """

    _sagas_state: _ChildState
    _sagas_instance: WorkflowInstance

    def cancel(self, msg: Any = None) -> bool:
        """Request the child's cancellation; awaiting the handle then raises ``ChildWorkflowError``."""
        if self.done():
            return False
        self._sagas_instance._cancel_child(self._sagas_state)
        return True

    @property
    def id(self) -> str:
        """The child's workflow id."""
        return self._sagas_state.workflow_id

    @property
    def first_execution_run_id(self) -> str | None:
        """The run id of the child's first run."""
        return self._sagas_state.run_id

    async def signal(self, signal: Any, arg: Any = _NO_ARG, *, args: Sequence[Any] = ()) -> None:
        """Send a signal to the child (durably; returns once delivered)."""
        await self._sagas_instance._signal_external(
            self._sagas_state.workflow_id, "", signal, arg, args, child_workflow_only=True
        )


class ExternalWorkflowHandle:
    """A handle to another workflow, from ``workflow.get_external_workflow_handle``.

    Example (inside a workflow)::

        other = workflow.get_external_workflow_handle("order-7")
        await other.signal(OrderWorkflow.paid, receipt)
        await other.cancel()
    """

    def __init__(self, instance: WorkflowInstance, workflow_id: str, run_id: str | None) -> None:
        self._instance = instance
        self.id = workflow_id
        self.run_id = run_id

    async def signal(self, signal: Any, arg: Any = _NO_ARG, *, args: Sequence[Any] = ()) -> None:
        """Signal the workflow; raises ``ApplicationError`` if it does not exist."""
        await self._instance._signal_external(self.id, self.run_id or "", signal, arg, args)

    async def cancel(self) -> None:
        """Request the workflow's cancellation; raises ``ApplicationError`` if it does not exist."""
        await self._instance._cancel_external(self.id, self.run_id or "")


def _resolve_args(positional: Sequence[Any], arg: Any, args: Sequence[Any] | None) -> list[Any]:
    given = sum((bool(positional), arg is not _NO_ARG, args is not None))
    if given > 1:
        raise ValueError("pass arguments either positionally, as arg=, or as args=[...], not several ways")
    if arg is not _NO_ARG:
        return [arg]
    if args is not None:
        return list(args)
    return list(positional)


def activity_name(activity: Any) -> str:
    """The registered name of an activity function (or the string itself)."""
    if isinstance(activity, str):
        return activity
    name = getattr(activity, "__sagas_activity_name__", None) or getattr(activity, "__name__", None)
    if not name:
        raise TypeError(f"{activity!r} is not an activity; pass an @activity.defn function or its name")
    return str(name)


def workflow_type_name(workflow: Any) -> tuple[str, Any]:
    """(type name, result hint) of a workflow class, its run method, or a name string."""
    if isinstance(workflow, str):
        return workflow, None
    if isinstance(workflow, type):
        d = get_definition(workflow)
        return d.name, return_hint(d.run_fn)
    name = getattr(workflow, WORKFLOW_NAME_ATTR, None)
    if name is None:
        raise TypeError(f"{workflow!r} is not a workflow; pass a @workflow.defn class or its name")
    return str(name), return_hint(workflow)


class WorkflowInstance(asyncio.AbstractEventLoop):
    """One workflow run's deterministic state machine and event loop.

    Created by :meth:`WorkflowRunner.create_instance`. Feed it history with
    :meth:`activate`; answer queries with :meth:`query`. After ``activate``
    raises, the instance is unusable: evict it and replay the full history.
    """

    def __init__(
        self,
        *,
        definition: WorkflowDefinition,
        converter: DataConverter,
        local_activities: Mapping[str, Callable[..., Any]],
        deadlock_timeout: float | None,
        namespace: str,
        workflow_id: str,
        run_id: str,
        workflow_type: str,
        task_queue: str,
    ) -> None:
        self.next_event_id = 1
        """Id of the next history event this instance expects."""
        self.is_completed = False
        """True once a close command was produced and confirmed by history."""
        self._defn = definition
        self._converter = converter
        self._local_activities = local_activities
        self._deadlock_timeout = deadlock_timeout
        self._namespace = namespace
        self._workflow_id = workflow_id
        self._run_id = run_id
        self._workflow_type = workflow_type
        self._task_queue = task_queue

        self._ready: collections.deque[asyncio.Handle] = collections.deque()
        self._time = 0.0
        self._replaying = False
        self._in_activation = False
        self._in_query = False
        self._poisoned = False
        self._commands: list[_PendingCommand] = []
        self._front_commands: list[_PendingCommand] = []  # update accepts/rejects go first
        self._awaiting: list[_PendingCommand] | None = None
        self._unmatched: collections.deque[_PendingCommand] = collections.deque()
        self._seqs: dict[str, int] = collections.defaultdict(int)
        self._activities: dict[int, _ActivityState] = {}
        self._timers: dict[str, _TimerHandle] = {}
        self._children: dict[int, _ChildState] = {}
        self._externals: dict[int, asyncio.Future[None]] = {}
        self._conditions: list[tuple[Callable[[], bool], asyncio.Future[bool]]] = []
        self._local_pending: list[_ActivityState] = []
        self._local_markers: dict[int, ev.MarkerRecorded] = {}
        self._patches: dict[str, bool] = {}
        self._patch_scope: set[str] = set()
        self._seen_updates: set[str] = set()
        self._signal_handlers: dict[str, Callable[..., Any]] = {}
        self._dynamic_signal_handler: Callable[..., Any] | None = None
        self._query_handlers: dict[str, Callable[..., Any]] = {}
        self._buffered_signals: list[tuple[str, list[Any]]] = []
        self._main_task: asyncio.Task[None] | None = None
        self._object: Any = None
        self._info: Info | None = None
        self._search_attributes: dict[str, Any] = {}
        self._cancel_requested = False
        self._closed = False
        self._activation_error: BaseException | None = None
        seed = int.from_bytes(hashlib.sha256(run_id.encode()).digest()[:8], "big")
        self._random = _random.Random(seed)
        self._exception_handler: Any = None

    # ------------------------------------------------------------------ activation

    async def activate(
        self, events: Sequence[ev.HistoryEvent], *, updates: Sequence[UpdateRequest] = ()
    ) -> list[cmd.Command]:
        """Apply a contiguous slice of history (from :attr:`next_event_id`) and return new commands.

        Replays every completed workflow task in the slice (checking the
        recorded command events), then runs one live activation with the
        remaining inputs and ``updates``. Returns ``[]`` for a closed history.
        Raises :class:`~sagas.exceptions.NondeterminismError`,
        :class:`StaleInstanceError`, or whatever non-``FailureError`` the
        workflow code raised (the workflow task should then fail and be retried).
        """
        return await self._process(events, updates, run_final=True)

    async def replay(self, events: Sequence[ev.HistoryEvent]) -> None:
        """Apply history like :meth:`activate` but without the final live activation.

        The state then reflects only completed workflow tasks: use it to answer
        a query without a cached instance (nothing runs for real: no local
        activities, no logs), and for replay tests.
        """
        await self._process(events, (), run_final=False)

    async def _process(
        self, events: Sequence[ev.HistoryEvent], updates: Sequence[UpdateRequest], *, run_final: bool
    ) -> list[cmd.Command]:
        if self._poisoned:
            raise StaleInstanceError(
                f"workflow {self._workflow_id} run {self._run_id}: this instance failed earlier; "
                "evict it and replay the full history"
            )
        try:
            return await self._process_events(events, updates, run_final)
        except BaseException:
            self._poisoned = True
            raise

    async def _process_events(
        self, events: Sequence[ev.HistoryEvent], updates: Sequence[UpdateRequest], run_final: bool
    ) -> list[cmd.Command]:
        slice_ = [e for e in events if e.event_id >= self.next_event_id]
        for e in slice_:
            if isinstance(e, ev.MarkerRecorded) and e.marker_name == LOCAL_ACTIVITY_MARKER:
                self._local_markers[int(e.details.get("seq", 0))] = e
        inputs: list[Any] = []
        in_commands = False
        closed = False
        for idx, e in enumerate(slice_):
            if e.event_id != self.next_event_id:
                raise StaleInstanceError(
                    f"history slice is not contiguous: expected event {self.next_event_id}, got {e.event_id}; "
                    "evict the instance and replay the full history"
                )
            self.next_event_id += 1
            et = e.event_type
            if et == EventType.WORKFLOW_TASK_COMPLETED:
                self._check_all_matched(e)
                if self._awaiting is not None:
                    self._unmatched = collections.deque(self._awaiting)
                    self._awaiting = None
                else:
                    followers = []
                    for f in slice_[idx + 1 :]:
                        if f.event_type not in _COMMAND_EVENTS:
                            break
                        followers.append(f)
                    accepted = [f for f in followers if isinstance(f, ev.WorkflowExecutionUpdateAccepted)]
                    self._patch_scope = {
                        str(f.details.get("patch_id"))
                        for f in followers
                        if isinstance(f, ev.MarkerRecorded) and f.marker_name == PATCH_MARKER
                    }
                    produced = await self._activate(inputs, replaying=True, accepted=accepted)
                    self._unmatched = collections.deque(p for p in produced if _command_match_key(p.command))
                    inputs = []
                in_commands = True
                continue
            if et in _COMMAND_EVENTS:
                self._match(e)
                if et in _CLOSE_COMMAND_EVENTS:
                    closed = True
                    self.is_completed = True
                continue
            if in_commands:
                self._check_all_matched(e)
                in_commands = False
            if self._awaiting is not None and et != EventType.WORKFLOW_TASK_STARTED:
                raise StaleInstanceError(
                    f"the commands of the last workflow task were not confirmed: event {e.event_id} is {et}, "
                    "not WorkflowTaskCompleted (the task failed or timed out); evict the instance and "
                    "replay the full history"
                )
            if et in _SERVER_CLOSE_EVENTS:
                closed = True
            elif et not in _IGNORED_EVENTS:
                inputs.append(e)
        if in_commands:
            self._check_all_matched(None)
        if closed or not run_final or not (inputs or updates):
            return []
        produced = await self._activate(inputs, replaying=False, live_updates=updates)
        self._awaiting = [p for p in produced if _command_match_key(p.command)]
        return [p.command for p in produced]

    async def _activate(
        self,
        inputs: Sequence[Any],
        *,
        replaying: bool,
        accepted: Sequence[ev.WorkflowExecutionUpdateAccepted] = (),
        live_updates: Sequence[UpdateRequest] = (),
    ) -> list[_PendingCommand]:
        self._replaying = replaying
        self._commands = []
        self._front_commands = []
        for e in inputs:
            if isinstance(e, ev.WorkflowTaskScheduled | ev.WorkflowExecutionStarted):
                self._time = e.event_time.timestamp()
        with self._running():
            for e in inputs:
                self._apply(e)
            for a in accepted:
                self._deliver_update(a.update_id, a.update_name, a.input, validate=False)
            for u in live_updates:
                self._deliver_update(u.update_id, u.name, u.input, validate=True)
            self._run_until_blocked()
        while self._local_pending and not self._closed and self._activation_error is None:
            batch, self._local_pending = self._local_pending, []
            if replaying:
                outcomes = [self._recorded_local_outcome(s) for s in batch]
            else:
                outcomes = list(await asyncio.gather(*(self._execute_local(s) for s in batch)))
            with self._running():
                for state, (result, failure) in zip(batch, outcomes, strict=True):
                    self._resolve_local(state, result, failure)
                self._run_until_blocked()
        if self._activation_error is not None:
            err, self._activation_error = self._activation_error, None
            self._discard_ready()
            raise err
        if self._closed:
            self._discard_ready()
        return self._front_commands + self._commands

    def _discard_ready(self) -> None:
        """Drop callbacks that will never run; close coroutines that never started (no warnings)."""
        while self._ready:
            handle = self._ready.popleft()
            task = getattr(getattr(handle, "_callback", None), "__self__", None)
            if isinstance(task, asyncio.Task):
                coro = task.get_coro()
                if inspect.iscoroutine(coro) and inspect.getcoroutinestate(coro) == inspect.CORO_CREATED:
                    coro.close()
            handle.cancel()

    @contextlib.contextmanager
    def _running(self) -> Iterator[None]:
        outer = asyncio.events._get_running_loop()
        asyncio.events._set_running_loop(self)
        self._in_activation = True
        try:
            yield
        finally:
            self._in_activation = False
            asyncio.events._set_running_loop(outer)

    def _run_until_blocked(self) -> None:
        check = self._deadlock_timeout is not None and sys.gettrace() is None
        while not self._closed and self._activation_error is None:
            while self._ready and not self._closed and self._activation_error is None:
                handle = self._ready.popleft()
                if handle._cancelled:
                    continue
                started = _time.perf_counter()
                handle._run()
                if check and self._deadlock_timeout is not None:
                    elapsed = _time.perf_counter() - started
                    if elapsed > self._deadlock_timeout:
                        raise _DeadlockError(self._deadlock_message(handle, elapsed))
            if not self._check_conditions():
                break

    def _deadlock_message(self, handle: asyncio.Handle, elapsed: float) -> str:
        task = getattr(getattr(handle, "_callback", None), "__self__", None)
        stack = _task_stack(task) if isinstance(task, asyncio.Task) else ""
        return (
            f"workflow {self._workflow_type} ({self._workflow_id}) blocked its event loop for {elapsed:.1f}s "
            f"without yielding (deadlock_timeout={self._deadlock_timeout}s). Workflow code must not block: "
            f"move slow or blocking work into an activity, and use workflow.sleep instead of time.sleep.\n{stack}"
        )

    def _check_conditions(self) -> bool:
        resolved = False
        for fn, fut in list(self._conditions):
            if fut.done():
                self._conditions.remove((fn, fut))
                continue
            try:
                ok = fn()
            except Exception as err:
                fut.set_exception(err)
                ok = True
            else:
                if ok:
                    fut.set_result(True)
            if ok:
                self._conditions.remove((fn, fut))
                resolved = True
        return resolved

    # ------------------------------------------------------------------ matching

    def _match(self, e: Any) -> None:
        recorded = _fmt(e.event_type, _event_match_key(e))
        self._skip_optional(e)
        if not self._unmatched:
            if _is_patch_marker(e):
                return  # a patch whose patched() call was removed after deprecate_patch
            waiting = self._waiting_at()
            raise NondeterminismError(
                f"nondeterminism at event {e.event_id}: history recorded {recorded} but the workflow "
                f"produced no command there (it produced fewer commands than history recorded"
                f"{f'; it is waiting at {waiting}' if waiting else ''}). "
                f"The workflow code changed in a way that is not replay-safe; guard the change with "
                f"workflow.patched(...).",
                event_id=e.event_id,
                recorded=recorded,
                source=waiting or None,
            )
        pending = self._unmatched[0]
        key = _command_match_key(pending.command)
        assert key is not None
        if key[0] == e.event_type and key[1] == _event_match_key(e):
            self._unmatched.popleft()
            if pending.on_event is not None:
                pending.on_event(e)
            return
        if _is_patch_marker(e):
            return
        produced = _fmt(pending.command.command_type, key[1])
        raise NondeterminismError(
            f"nondeterminism at event {e.event_id}: history recorded {recorded} but the workflow produced "
            f"{produced}{self._at(pending)}. The workflow code changed in a way "
            f"that is not replay-safe; guard the change with workflow.patched(...).",
            event_id=e.event_id,
            recorded=recorded,
            produced=produced,
            source=pending.source or None,
        )

    def _skip_optional(self, e: Any) -> None:
        """Drop cancel commands the server recorded nothing for (their target had already finished)."""
        while self._unmatched and isinstance(self._unmatched[0].command, _OPTIONAL_EVENT_COMMANDS):
            key = _command_match_key(self._unmatched[0].command)
            if e is not None and key is not None and key == (e.event_type, _event_match_key(e)):
                return
            self._unmatched.popleft()

    def _check_all_matched(self, next_event: Any) -> None:
        self._skip_optional(None)
        if not self._unmatched:
            return
        pending = self._unmatched[0]
        key = _command_match_key(pending.command)
        assert key is not None
        if next_event is None:
            where = "history ends"
            event_id = self.next_event_id
        else:
            where = f"event {next_event.event_id} is {next_event.event_type}"
            event_id = next_event.event_id
        produced = _fmt(pending.command.command_type, key[1])
        raise NondeterminismError(
            f"nondeterminism at event {event_id}: the workflow produced "
            f"{produced}{self._at(pending)} but history recorded no "
            f"{key[0]} there ({where}). The workflow code changed in a way that is not replay-safe; "
            f"guard the change with workflow.patched(...).",
            event_id=event_id,
            recorded=f"no {key[0]} ({where})",
            produced=produced,
            source=pending.source or None,
        )

    @staticmethod
    def _at(pending: _PendingCommand) -> str:
        return f" at {pending.source}" if pending.source else ""

    def _waiting_at(self) -> str:
        """File:line where the workflow's code is suspended (main task first), or ``""``."""
        tasks = sorted(asyncio.all_tasks(self), key=lambda t: t is not self._main_task)
        for task in tasks:
            where = _suspended_at(task)
            if where:
                return where
        return ""

    # ------------------------------------------------------------------ inputs

    def _apply(self, e: Any) -> None:
        if isinstance(e, ev.WorkflowExecutionStarted):
            self._start(e)
        elif isinstance(e, ev.ActivityTaskCompleted):
            self._resolve_activity(e.scheduled_event_id, result=e.result)
        elif isinstance(e, ev.ActivityTaskFailed | ev.ActivityTaskTimedOut):
            self._resolve_activity(e.scheduled_event_id, failure=e.failure, retry_state=e.retry_state)
        elif isinstance(e, ev.ActivityTaskCanceled):
            self._resolve_activity(e.scheduled_event_id, canceled=e.details)
        elif isinstance(e, ev.TimerFired):
            handle = self._timers.pop(e.timer_id, None)
            if handle is not None and not handle._cancelled:
                handle.fired = True
                self._ready.append(handle)
        elif isinstance(e, ev.WorkflowExecutionSignaled):
            self._apply_signal(e.signal_name, e.input)
        elif isinstance(e, ev.WorkflowExecutionCancelRequested):
            self._cancel_requested = True
            if self._main_task is not None and not self._main_task.done():
                self._main_task.cancel()
        elif isinstance(
            e,
            ev.ChildWorkflowExecutionStarted
            | ev.StartChildWorkflowExecutionFailed
            | ev.ChildWorkflowExecutionCompleted
            | ev.ChildWorkflowExecutionFailed
            | ev.ChildWorkflowExecutionCanceled
            | ev.ChildWorkflowExecutionTerminated
            | ev.ChildWorkflowExecutionTimedOut,
        ):
            self._resolve_child(e)
        elif isinstance(
            e,
            ev.ExternalWorkflowExecutionSignaled
            | ev.SignalExternalWorkflowExecutionFailed
            | ev.ExternalWorkflowExecutionCancelRequested
            | ev.RequestCancelExternalWorkflowExecutionFailed,
        ):
            fut = self._externals.pop(e.initiated_event_id, None)
            if fut is not None and not fut.done():
                if isinstance(
                    e,
                    ev.SignalExternalWorkflowExecutionFailed
                    | ev.RequestCancelExternalWorkflowExecutionFailed,
                ):
                    action = "signal" if isinstance(e, ev.SignalExternalWorkflowExecutionFailed) else "cancel"
                    fut.set_exception(
                        ApplicationError(
                            f"unable to {action} external workflow {e.workflow_id!r}: {e.cause}",
                            type=e.cause,
                        )
                    )
                else:
                    fut.set_result(None)

    def _start(self, e: ev.WorkflowExecutionStarted) -> None:
        parent = (
            ParentInfo(e.parent.namespace, e.parent.workflow_id, e.parent.run_id)
            if e.parent is not None
            else None
        )
        self._search_attributes = dict(e.search_attributes)
        self._info = Info(
            namespace=self._namespace,
            workflow_id=self._workflow_id,
            run_id=self._run_id,
            workflow_type=self._workflow_type,
            task_queue=self._task_queue,
            attempt=e.attempt,
            start_time=e.event_time,
            first_execution_run_id=e.first_run_id or self._run_id,
            continued_run_id=e.continued_from_run_id,
            parent=parent,
            cron_schedule=e.cron_schedule,
            execution_timeout=timedelta(seconds=e.workflow_execution_timeout)
            if e.workflow_execution_timeout
            else None,
            run_timeout=timedelta(seconds=e.workflow_run_timeout) if e.workflow_run_timeout else None,
            task_timeout=timedelta(seconds=e.workflow_task_timeout),
            retry_policy=RetryPolicy.from_spec(e.retry_policy) if e.retry_policy is not None else None,
            headers=dict(e.headers),
            memo=dict(e.memo),
            search_attributes=self._search_attributes,
        )
        args = self._converter.from_payloads(e.input, parameter_hints(self._defn.run_fn, skip_self=True))
        try:
            self._object = self._defn.cls(*args) if self._defn.init_takes_args else self._defn.cls()
        except Exception as err:
            self._activation_error = err
            return
        self._main_task = self.create_task(self._run_main(args), name=f"workflow:{self._workflow_type}")
        # A cancel request in the very first activation cancels the task before
        # its coroutine starts, so _run_main never sees the CancelledError.
        self._main_task.add_done_callback(self._main_done)

    def _main_done(self, task: asyncio.Task[None]) -> None:
        if task.cancelled() and not self._closed:
            self._top_level_error(asyncio.CancelledError())

    async def _run_main(self, args: list[Any]) -> None:
        try:
            result = await self._defn.run_fn(self._object, *args)
            payload = self._converter.to_payload(result)
        except (Exception, asyncio.CancelledError, ContinueAsNewError) as err:
            self._top_level_error(err)
            return
        self._close(
            cmd.CompleteWorkflowExecution(result=payload),
            source=_definition_source(self._defn.run_fn, "the workflow returned"),
        )

    def _top_level_error(self, err: BaseException) -> None:
        """Decide what an error escaping the workflow (run or a handler) does to the run."""
        source = error_source(err)
        if isinstance(err, ContinueAsNewError):
            self._close(err.command, source=source)
        elif self._cancel_requested and is_cancelled_error(err):
            self._close(cmd.CancelWorkflowExecution(), source=source)
        elif isinstance(err, (FailureError, asyncio.CancelledError, *self._defn.failure_exception_types)):
            self._close(cmd.FailWorkflowExecution(failure=error_to_failure(err)), source=source)
        else:
            self._activation_error = err

    def _close(self, command: cmd.Command, *, source: str = "") -> None:
        if self._closed:
            return
        self._add_command(command, source=source)
        self._closed = True

    # ------------------------------------------------------------------ commands

    def _add_command(
        self,
        command: cmd.Command,
        on_event: Callable[[Any], None] | None = None,
        *,
        front: bool = False,
        source: str = "",
    ) -> _PendingCommand:
        """Queue a command; ``source`` (file:line) defaults to the workflow code calling this."""
        if self._in_query:
            raise RuntimeError(
                "a query handler must not change workflow state (start activities, timers, ...); "
                "use an update for that"
            )
        pending = _PendingCommand(command, source or _user_source(), on_event)
        if not self._closed:
            (self._front_commands if front else self._commands).append(pending)
        return pending

    def _remove_unsent(self, pending: _PendingCommand | None) -> bool:
        """Drop a command produced in this activation; False if it was already sent."""
        if pending is None or not self._in_activation:
            return False
        for i, p in enumerate(self._commands):
            if p is pending:
                del self._commands[i]
                return True
        return False

    def _next_seq(self, kind: str) -> int:
        self._seqs[kind] += 1
        return self._seqs[kind]

    # ------------------------------------------------------------------ asyncio loop

    def call_soon(  # type: ignore[override]
        self, callback: Callable[..., Any], *args: Any, context: Any = None
    ) -> asyncio.Handle:
        handle = asyncio.Handle(callback, args, self, context)
        self._ready.append(handle)
        return handle

    def call_later(  # type: ignore[override]
        self, delay: float, callback: Callable[..., Any], *args: Any, context: Any = None
    ) -> asyncio.TimerHandle:
        if delay <= 0:
            # No durable timer for "now": run it on the next loop iteration.
            handle = _TimerHandle(self._time, callback, args, self, context, "")
            handle.fired = True
            self._ready.append(handle)
            return handle
        timer_id = str(self._next_seq("timer"))
        handle = _TimerHandle(self._time + delay, callback, args, self, context, timer_id)
        handle.pending = self._add_command(cmd.StartTimer(timer_id=timer_id, start_to_fire_timeout=delay))
        self._timers[timer_id] = handle
        return handle

    def call_at(  # type: ignore[override]
        self, when: float, callback: Callable[..., Any], *args: Any, context: Any = None
    ) -> asyncio.TimerHandle:
        return self.call_later(when - self._time, callback, *args, context=context)

    def _cancel_timer(self, handle: _TimerHandle) -> None:
        if not self._in_activation:
            return  # garbage collection of an abandoned task: nothing to tell the server
        self._timers.pop(handle.timer_id, None)
        if not self._remove_unsent(handle.pending):
            self._add_command(cmd.CancelTimer(timer_id=handle.timer_id))

    def _timer_handle_cancelled(self, handle: asyncio.TimerHandle) -> None:
        pass

    def time(self) -> float:
        """Workflow time (seconds since the epoch), deterministic on replay."""
        return self._time

    def create_future(self) -> asyncio.Future[Any]:
        return asyncio.Future(loop=self)

    def create_task(  # type: ignore[override]
        self, coro: Coroutine[Any, Any, _T], *, name: str | None = None, context: Any = None
    ) -> asyncio.Task[_T]:
        return asyncio.Task(coro, loop=self, name=name, context=context)

    def get_debug(self) -> bool:
        return False

    def is_running(self) -> bool:
        return self._in_activation

    def is_closed(self) -> bool:
        return False

    def get_exception_handler(self) -> Any:
        return self._exception_handler

    def set_exception_handler(self, handler: Any) -> None:
        self._exception_handler = handler

    def default_exception_handler(self, context: dict[str, Any]) -> None:
        if str(context.get("message", "")).startswith("Task was destroyed but it is pending"):
            return  # an evicted instance's blocked tasks being garbage-collected: expected
        if not self._replaying:
            _log.error(
                "workflow %s (%s): %s",
                self._workflow_type,
                self._workflow_id,
                context.get("message"),
                exc_info=context.get("exception"),
            )

    def call_exception_handler(self, context: dict[str, Any]) -> None:
        if self._exception_handler is not None:
            self._exception_handler(self, context)
        else:
            self.default_exception_handler(context)

    # ------------------------------------------------------------------ activities

    def start_activity(
        self,
        activity: Any,
        args: list[Any],
        *,
        task_queue: str | None,
        schedule_to_close_timeout: timedelta | None,
        schedule_to_start_timeout: timedelta | None,
        start_to_close_timeout: timedelta | None,
        heartbeat_timeout: timedelta | None,
        retry_policy: RetryPolicy | None,
        cancellation_type: ActivityCancellationType,
        activity_id: str | None,
        result_type: Any,
        headers: Mapping[str, Any] | None,
    ) -> ActivityHandle[Any]:
        if start_to_close_timeout is None and schedule_to_close_timeout is None:
            raise ValueError("an activity needs start_to_close_timeout or schedule_to_close_timeout")
        name = activity_name(activity)
        seq = self._next_seq("activity")
        state = _ActivityState(
            seq=seq,
            activity_id=activity_id or str(seq),
            activity_type=name,
            cancellation_type=ActivityCancellationType(cancellation_type),
            result_hint=result_type if result_type is not None else self._return_hint(activity),
            future=self.create_future(),
        )
        command = cmd.ScheduleActivityTask(
            activity_id=state.activity_id,
            activity_type=name,
            task_queue=task_queue or self._task_queue,
            input=self._converter.to_payloads(args),
            # the run's trace context rides along (brokers.tracing); it is in the command, so replay agrees
            headers={**trace_headers(self._info.headers if self._info else None), **(headers or {})},
            schedule_to_close_timeout=_seconds(schedule_to_close_timeout),
            schedule_to_start_timeout=_seconds(schedule_to_start_timeout),
            start_to_close_timeout=_seconds(start_to_close_timeout),
            heartbeat_timeout=_seconds(heartbeat_timeout),
            retry_policy=retry_policy.to_spec() if retry_policy is not None else None,
        )

        def on_scheduled(e: ev.ActivityTaskScheduled) -> None:
            state.scheduled_event_id = e.event_id
            self._activities[e.event_id] = state

        state.pending = self._add_command(command, on_scheduled)
        return self._activity_handle(state)

    def _activity_handle(self, state: _ActivityState) -> ActivityHandle[Any]:
        handle: ActivityHandle[Any] = ActivityHandle(self._await_activity(state), loop=self)
        handle._sagas_state = state
        handle._sagas_instance = self
        return handle

    @staticmethod
    def _return_hint(fn: Any) -> Any:
        return None if isinstance(fn, str) else return_hint(fn)

    async def _await_activity(self, state: _ActivityState) -> Any:
        while True:
            try:
                return await asyncio.shield(state.future)
            except asyncio.CancelledError:
                # The activity's outcome (often ActivityError(cause=CancelledError)) is what we raise.
                self._cancel_activity(state)

    def _cancel_activity(self, state: _ActivityState, error: BaseException | None = None) -> None:
        """Cancel an activity; ``error`` (default: its cancelled error) is what awaiting it raises."""
        if state.future.done() or state.cancel_requested:
            return
        state.cancel_requested = True
        if state.local_options:
            # A local activity runs between loop iterations: if it has not run yet, drop it.
            if state in self._local_pending:
                self._local_pending.remove(state)
            state.future.set_exception(error or state.cancelled_error())
            return
        if self._remove_unsent(state.pending) or state.cancellation_type == ActivityCancellationType.ABANDON:
            state.future.set_exception(error or state.cancelled_error())
            return
        if state.scheduled_event_id is not None:
            self._add_command(cmd.RequestCancelActivityTask(scheduled_event_id=state.scheduled_event_id))
        if state.cancellation_type == ActivityCancellationType.TRY_CANCEL or state.scheduled_event_id is None:
            state.future.set_exception(error or state.cancelled_error())

    def _resolve_activity(
        self,
        scheduled_event_id: int,
        *,
        result: Any = None,
        failure: Failure | None = None,
        retry_state: str | None = None,
        canceled: list[Any] | None = None,
    ) -> None:
        state = self._activities.pop(scheduled_event_id, None)
        if state is None or state.future.done():
            return  # abandoned or already cancelled
        if canceled is not None:
            state.future.set_exception(state.cancelled_error())
        elif failure is not None:
            state.future.set_exception(self._activity_error(state, failure))
        else:
            try:
                state.future.set_result(self._converter.from_payload(result, state.result_hint))
            except ApplicationError as err:
                state.future.set_exception(err)

    @staticmethod
    def _activity_error(state: _ActivityState, failure: Failure) -> FailureError:
        err = failure_to_error(failure)
        if isinstance(err, ActivityError):
            return err
        wrapper = ActivityError(
            "Activity task failed" if not isinstance(err, TimeoutError) else "Activity task timed out",
            activity_type=state.activity_type,
            activity_id=state.activity_id,
            scheduled_event_id=state.scheduled_event_id or 0,
        )
        wrapper.__cause__ = err
        return wrapper

    # ------------------------------------------------------------------ local activities

    def start_local_activity(
        self,
        activity: Any,
        args: list[Any],
        *,
        schedule_to_close_timeout: timedelta | None,
        start_to_close_timeout: timedelta | None,
        retry_policy: RetryPolicy | None,
        cancellation_type: ActivityCancellationType,
        activity_id: str | None,
        result_type: Any,
    ) -> ActivityHandle[Any]:
        if start_to_close_timeout is None and schedule_to_close_timeout is None:
            raise ValueError("a local activity needs start_to_close_timeout or schedule_to_close_timeout")
        name = activity_name(activity)
        fn = self._local_activities.get(name) or (None if isinstance(activity, str) else activity)
        seq = self._next_seq("local_activity")
        state = _ActivityState(
            seq=seq,
            activity_id=activity_id or f"local-{seq}",
            activity_type=name,
            cancellation_type=ActivityCancellationType(cancellation_type),
            result_hint=result_type if result_type is not None else self._return_hint(fn or activity),
            future=self.create_future(),
            source=_user_source(),
            local_input=self._converter.to_payloads(args),
            local_options={
                "schedule_to_close_timeout": _seconds(schedule_to_close_timeout),
                "start_to_close_timeout": _seconds(start_to_close_timeout),
                "retry_policy": retry_policy or _DEFAULT_LOCAL_RETRY,
                "fn": fn,
            },
        )
        self._local_pending.append(state)
        return self._activity_handle(state)

    async def _execute_local(self, state: _ActivityState) -> tuple[Any, Failure | None]:
        """Run a local activity on the caller's loop with its retry policy (live only)."""
        fn = state.local_options["fn"]
        if fn is None:
            missing = ApplicationError(
                f"local activity {state.activity_type!r} is not registered on this worker; "
                "pass it in the worker's activities",
                type="NotFoundError",
                non_retryable=True,
            )
            return None, error_to_failure(missing)
        spec = state.local_options["retry_policy"].to_spec()
        start_to_close = state.local_options["start_to_close_timeout"]
        schedule_to_close = state.local_options["schedule_to_close_timeout"]
        loop = asyncio.get_running_loop()
        deadline = loop.time() + schedule_to_close if schedule_to_close else None
        attempt = 1
        while True:
            try:
                args = self._converter.from_payloads(state.local_input, parameter_hints(fn))
                timeout = start_to_close
                if deadline is not None:
                    remaining = deadline - loop.time()
                    timeout = min(timeout, remaining) if timeout else remaining
                if inspect.iscoroutinefunction(fn):
                    result = await asyncio.wait_for(fn(*args), timeout)
                else:
                    result = await asyncio.wait_for(asyncio.to_thread(fn, *args), timeout)
                return self._converter.to_payload(result), None
            except Exception as exc:
                err: BaseException = exc
                if type(exc) is asyncio.TimeoutError:
                    err = TimeoutError(
                        f"local activity {state.activity_type!r} timed out", type=TimeoutType.START_TO_CLOSE
                    )
                failure = error_to_failure(err)
                delay = spec.backoff(attempt)
                out_of_time = deadline is not None and loop.time() + delay >= deadline
                if out_of_time or not spec.allows_retry(attempt, failure.type, failure.non_retryable):
                    return None, failure
                await asyncio.sleep(delay)
                attempt += 1

    def _recorded_local_outcome(self, state: _ActivityState) -> tuple[Any, Failure | None]:
        marker = self._local_markers.get(state.seq)
        if marker is None or marker.details.get("activity_type") != state.activity_type:
            recorded = (
                f"a marker for {marker.details.get('activity_type')!r} (event {marker.event_id})"
                if marker is not None
                else "no local activity marker"
            )
            at = f" at {state.source}" if state.source else ""
            raise NondeterminismError(
                f"nondeterminism: the workflow ran local activity {state.activity_type!r} (seq {state.seq}){at} "
                f"but history has {recorded} for it. The workflow code changed in a way that is not "
                "replay-safe; guard the change with workflow.patched(...).",
                event_id=marker.event_id if marker is not None else None,
                recorded=recorded,
                produced=f"local activity {state.activity_type!r} (seq {state.seq})",
                source=state.source or None,
            )
        return marker.details.get("result"), marker.failure

    def _resolve_local(self, state: _ActivityState, result: Any, failure: Failure | None) -> None:
        details = {"activity_type": state.activity_type, "activity_id": state.activity_id, "seq": state.seq}
        if failure is None:
            details["result"] = result
        self._add_command(
            cmd.RecordMarker(marker_name=LOCAL_ACTIVITY_MARKER, details=details, failure=failure)
        )
        if state.future.done():
            return
        if failure is not None:
            wrapper = ActivityError(
                "Local activity failed", activity_type=state.activity_type, activity_id=state.activity_id
            )
            wrapper.__cause__ = failure_to_error(failure)
            state.future.set_exception(wrapper)
        else:
            try:
                state.future.set_result(self._converter.from_payload(result, state.result_hint))
            except ApplicationError as err:
                state.future.set_exception(err)

    # ------------------------------------------------------------------ child workflows

    async def start_child_workflow(
        self,
        workflow: Any,
        args: list[Any],
        *,
        id: str | None,
        task_queue: str | None,
        execution_timeout: timedelta | None,
        run_timeout: timedelta | None,
        task_timeout: timedelta | None,
        parent_close_policy: ParentClosePolicy,
        id_reuse_policy: WorkflowIDReusePolicy,
        retry_policy: RetryPolicy | None,
        cron_schedule: str | None,
        memo: Mapping[str, Any] | None,
        search_attributes: Mapping[str, Any] | None,
        result_type: Any,
    ) -> ChildWorkflowHandle[Any]:
        name, hint = workflow_type_name(workflow)
        seq = self._next_seq("child")
        workflow_id = id or str(self.uuid4())
        state = _ChildState(
            seq=seq,
            workflow_id=workflow_id,
            workflow_type=name,
            result_hint=result_type if result_type is not None else hint,
            started=self.create_future(),
            result=self.create_future(),
        )
        command = cmd.StartChildWorkflowExecution(
            namespace=self._namespace,
            workflow_id=workflow_id,
            workflow_type=name,
            task_queue=task_queue or self._task_queue,
            input=self._converter.to_payloads(args),
            workflow_execution_timeout=_seconds(execution_timeout),
            workflow_run_timeout=_seconds(run_timeout),
            workflow_task_timeout=_seconds(task_timeout),
            parent_close_policy=str(ParentClosePolicy(parent_close_policy)),
            workflow_id_reuse_policy=str(WorkflowIDReusePolicy(id_reuse_policy)),
            retry_policy=retry_policy.to_spec() if retry_policy is not None else None,
            cron_schedule=cron_schedule,
            memo=dict(memo or {}),
            search_attributes={
                k: self._converter.to_payload(v) for k, v in (search_attributes or {}).items()
            },
        )

        def on_initiated(e: ev.StartChildWorkflowExecutionInitiated) -> None:
            state.initiated_event_id = e.event_id
            self._children[e.event_id] = state

        state.pending = self._add_command(command, on_initiated)
        while True:
            try:
                await asyncio.shield(state.started)
                break
            except asyncio.CancelledError:
                if state.started.done():
                    raise
                if self._remove_unsent(state.pending):
                    state.started.cancel()
                    raise
                self._cancel_child(state)
        handle: ChildWorkflowHandle[Any] = ChildWorkflowHandle(self._await_child(state), loop=self)
        handle._sagas_state = state
        handle._sagas_instance = self
        return handle

    async def _await_child(self, state: _ChildState) -> Any:
        while True:
            try:
                return await asyncio.shield(state.result)
            except asyncio.CancelledError:
                self._cancel_child(state)

    def _cancel_child(self, state: _ChildState) -> None:
        if state.cancel_requested or state.result.done():
            return
        state.cancel_requested = True
        self._request_cancel_external(state.workflow_id, "", child_workflow_only=True)

    def _resolve_child(self, e: Any) -> None:
        state = self._children.get(e.initiated_event_id)
        if state is None:
            return
        if isinstance(e, ev.ChildWorkflowExecutionStarted):
            state.run_id = e.run_id
            if not state.started.done():
                state.started.set_result(e.run_id)
            return
        del self._children[e.initiated_event_id]
        if isinstance(e, ev.StartChildWorkflowExecutionFailed):
            err: BaseException = WorkflowAlreadyStartedError(e.workflow_id, e.workflow_type)
            for fut in (state.started, state.result):
                if not fut.done():
                    fut.set_exception(err)
            return
        if state.result.done():
            return
        if isinstance(e, ev.ChildWorkflowExecutionCompleted):
            try:
                state.result.set_result(self._converter.from_payload(e.result, state.result_hint))
            except ApplicationError as conv_err:
                state.result.set_exception(conv_err)
            return
        cause: FailureError
        retry_state = getattr(e, "retry_state", None)
        if isinstance(e, ev.ChildWorkflowExecutionFailed):
            cause = failure_to_error(e.failure)
            message = "Child workflow execution failed"
        elif isinstance(e, ev.ChildWorkflowExecutionCanceled):
            cause = CancelledError("Child workflow cancelled", *e.details)
            message = "Child workflow execution cancelled"
        elif isinstance(e, ev.ChildWorkflowExecutionTerminated):
            cause = TerminatedError("Child workflow terminated")
            message = "Child workflow execution terminated"
        else:
            cause = TimeoutError("Child workflow timed out", type=None)
            message = "Child workflow execution timed out"
        wrapper = ChildWorkflowError(
            message,
            workflow_id=state.workflow_id,
            workflow_type=state.workflow_type,
            retry_state=_retry_state(retry_state),
        )
        wrapper.__cause__ = cause
        state.result.set_exception(wrapper)

    # ------------------------------------------------------------------ external workflows

    def _external_command(self, command: cmd.Command) -> asyncio.Future[None]:
        fut: asyncio.Future[None] = self.create_future()

        def on_initiated(e: Any) -> None:
            self._externals[e.event_id] = fut

        fut._sagas_pending = self._add_command(command, on_initiated)  # type: ignore[attr-defined]
        return fut

    async def _signal_external(
        self,
        workflow_id: str,
        run_id: str,
        signal: Any,
        arg: Any,
        args: Sequence[Any],
        *,
        child_workflow_only: bool = False,
    ) -> None:
        values = _resolve_args((), arg, list(args) if args else None)
        fut = self._external_command(
            cmd.SignalExternalWorkflowExecution(
                namespace=self._namespace,
                workflow_id=workflow_id,
                run_id=run_id,
                signal_name=handler_name_of(signal, "signal"),
                input=self._converter.to_payloads(values),
                child_workflow_only=child_workflow_only,
            )
        )
        await self._await_external(fut)

    def _request_cancel_external(
        self, workflow_id: str, run_id: str, *, child_workflow_only: bool = False
    ) -> asyncio.Future[None]:
        return self._external_command(
            cmd.RequestCancelExternalWorkflowExecution(
                namespace=self._namespace,
                workflow_id=workflow_id,
                run_id=run_id,
                child_workflow_only=child_workflow_only,
            )
        )

    async def _cancel_external(self, workflow_id: str, run_id: str) -> None:
        await self._await_external(self._request_cancel_external(workflow_id, run_id))

    async def _await_external(self, fut: asyncio.Future[None]) -> None:
        try:
            await fut
        except asyncio.CancelledError:
            self._remove_unsent(getattr(fut, "_sagas_pending", None))
            raise

    # ------------------------------------------------------------------ signals, updates, queries

    def _signal_handler(self, name: str) -> tuple[Callable[..., Any] | None, bool]:
        """(handler, is_dynamic) for a signal name."""
        if name in self._signal_handlers:
            return self._signal_handlers[name], False
        d = self._defn.signals.get(name)
        if d is not None:
            return d.fn.__get__(self._object), False
        if self._dynamic_signal_handler is not None:
            return self._dynamic_signal_handler, True
        if self._defn.dynamic_signal is not None:
            return self._defn.dynamic_signal.fn.__get__(self._object), True
        return None, False

    def _apply_signal(self, name: str, payloads: list[Any]) -> None:
        handler, dynamic = self._signal_handler(name) if self._object is not None else (None, False)
        if handler is None:
            self._buffered_signals.append((name, payloads))
            return
        if dynamic:
            args: list[Any] = [name, list(payloads)]
        else:
            try:
                args = self._converter.from_payloads(payloads, parameter_hints(handler))
            except ApplicationError as err:
                if not self._replaying:
                    _log.warning(
                        "dropping signal %r of workflow %s: %s", name, self._workflow_id, err.message
                    )
                return
        self.create_task(self._run_handler(handler, args), name=f"signal:{name}")

    async def _run_handler(self, handler: Callable[..., Any], args: list[Any]) -> None:
        try:
            result = handler(*args)
            if inspect.isawaitable(result):
                await result
        except (Exception, asyncio.CancelledError, ContinueAsNewError) as err:
            self._top_level_error(err)

    def set_signal_handler(self, name: str | None, handler: Callable[..., Any] | None) -> None:
        """Set (or with ``None`` remove) a signal handler; buffered signals for it are delivered now."""
        if name is None:
            self._dynamic_signal_handler = handler
        elif handler is None:
            self._signal_handlers.pop(name, None)
        else:
            self._signal_handlers[name] = handler
        if handler is not None:
            buffered, self._buffered_signals = self._buffered_signals, []
            for signal_name, payloads in buffered:
                self._apply_signal(signal_name, payloads)

    def set_query_handler(self, name: str, handler: Callable[..., Any] | None) -> None:
        """Set (or with ``None`` remove) a query handler."""
        if handler is None:
            self._query_handlers.pop(name, None)
        else:
            self._query_handlers[name] = handler

    def _deliver_update(self, update_id: str, name: str, payloads: list[Any], *, validate: bool) -> None:
        if update_id in self._seen_updates:
            return
        self._seen_updates.add(update_id)
        d = self._defn.updates.get(name)
        dynamic = False
        if d is None and self._defn.dynamic_update is not None:
            d, dynamic = self._defn.dynamic_update, True
        if d is None or self._object is None:
            if not validate:
                raise NondeterminismError(
                    f"nondeterminism: history accepted update {name!r} (id {update_id}) but the workflow "
                    "has no handler for it",
                    recorded=f"WorkflowExecutionUpdateAccepted(update_id={update_id!r}, update_name={name!r})",
                )
            known = ", ".join(sorted(self._defn.updates)) or "none"
            self._reject_update(
                update_id,
                ApplicationError(
                    f"workflow {self._workflow_type} has no update handler {name!r} (known: {known})",
                    type="UpdateNotFound",
                ),
            )
            return
        handler = d.fn.__get__(self._object)
        validator = d.validator.__get__(self._object) if (validate and d.validator is not None) else None
        self.create_task(
            self._run_update(update_id, name, handler, validator, payloads, dynamic), name=f"update:{name}"
        )

    def _reject_update(self, update_id: str, err: BaseException) -> None:
        self._add_command(cmd.RejectUpdate(update_id=update_id, failure=error_to_failure(err)), front=True)

    async def _run_update(
        self,
        update_id: str,
        name: str,
        handler: Callable[..., Any],
        validator: Callable[..., Any] | None,
        payloads: list[Any],
        dynamic: bool,
    ) -> None:
        try:
            args = (
                [name, list(payloads)]
                if dynamic
                else self._converter.from_payloads(payloads, parameter_hints(handler))
            )
            if validator is not None:
                validator(*args)
        except Exception as err:
            if self._replaying:
                self._activation_error = err
            else:
                self._reject_update(update_id, err)
            return
        self._add_command(cmd.AcceptUpdate(update_id=update_id), front=True)
        try:
            result = handler(*args)
            if inspect.isawaitable(result):
                result = await result
            payload = self._converter.to_payload(result)
        except (FailureError, asyncio.CancelledError) as err:
            self._add_command(cmd.CompleteUpdate(update_id=update_id, failure=error_to_failure(err)))
            return
        except (Exception, ContinueAsNewError) as err:
            self._top_level_error(err)
            return
        self._add_command(cmd.CompleteUpdate(update_id=update_id, result=payload))

    def query(self, name: str, args: list[Any]) -> Any:
        """Run a query handler against the current state; returns its JSON-ready result.

        Raises ``ApplicationError`` (type ``QueryNotFound``) for an unknown
        query, or one carrying the handler's error. ``__stack_trace`` returns
        the stacks of the workflow's pending tasks.
        """
        if name == "__stack_trace":
            return self._stack_trace()
        if self._object is None:
            raise ApplicationError("the workflow has not started yet; retry the query", type="QueryNotReady")
        handler: Callable[..., Any] | None = self._query_handlers.get(name)
        dynamic = False
        if handler is None:
            d = self._defn.queries.get(name) or self._defn.dynamic_query
            if d is None:
                known = ", ".join(sorted(set(self._defn.queries) | set(self._query_handlers))) or "none"
                raise ApplicationError(
                    f"workflow {self._workflow_type} has no query handler {name!r} (known: {known})",
                    type="QueryNotFound",
                )
            handler = d.fn.__get__(self._object)
            dynamic = d.name is None
        with self._running(), self._query_mode():
            try:
                values = (
                    [name, list(args)]
                    if dynamic
                    else self._converter.from_payloads(args, parameter_hints(handler))
                )
                result = handler(*values)
                if inspect.isawaitable(result):
                    if inspect.iscoroutine(result):
                        result.close()
                    raise ApplicationError(f"query handler {name!r} must not be async", type="QueryFailed")
                return self._converter.to_payload(result)
            except ApplicationError:
                raise
            except Exception as err:
                raise ApplicationError(f"query {name!r} failed: {err}", type=type(err).__name__) from err

    @contextlib.contextmanager
    def _query_mode(self) -> Iterator[None]:
        self._in_query = True
        try:
            yield
        finally:
            self._in_query = False

    def _stack_trace(self) -> str:
        return "\n".join(_task_stack(task) for task in asyncio.all_tasks(self))

    # ------------------------------------------------------------------ helpers for workflow.*

    @property
    def info(self) -> Info:
        if self._info is None:
            raise RuntimeError("the workflow has not started yet")
        return self._info

    @property
    def is_replaying(self) -> bool:
        return self._replaying

    @property
    def workflow_object(self) -> Any:
        return self._object

    def now(self) -> datetime:
        return datetime.fromtimestamp(self._time, tz=UTC)

    def random(self) -> _random.Random:
        return self._random

    def uuid4(self) -> uuid.UUID:
        return uuid.UUID(int=self._random.getrandbits(128), version=4)

    async def wait_condition(self, fn: Callable[[], bool], timeout: float | None) -> None:
        fut: asyncio.Future[bool] = self.create_future()
        self._conditions.append((fn, fut))
        if timeout is None:
            await fut
        else:
            await asyncio.wait_for(fut, timeout)

    def patched(self, patch_id: str, *, deprecated: bool) -> bool:
        if patch_id in self._patches:
            return self._patches[patch_id]
        if deprecated:
            result = True
        elif not self._replaying:
            result = True
        else:
            result = patch_id in self._patch_scope
        if result and not deprecated:
            self._add_command(cmd.RecordMarker(marker_name=PATCH_MARKER, details={"patch_id": patch_id}))
        self._patches[patch_id] = result
        return result

    def record_marker(self, name: str, details: Mapping[str, Any], failure: Failure | None = None) -> None:
        """Record a ``MarkerRecorded`` event (informational; matched by name on replay)."""
        self._add_command(cmd.RecordMarker(marker_name=name, details=dict(details), failure=failure))

    def next_seq(self, kind: str) -> int:
        """A deterministic per-run counter (``kind`` separates independent counters)."""
        return self._next_seq(f"user:{kind}")

    def continue_as_new(
        self,
        args: list[Any],
        *,
        workflow: Any,
        task_queue: str | None,
        run_timeout: timedelta | None,
        task_timeout: timedelta | None,
        memo: Mapping[str, Any] | None,
        search_attributes: Mapping[str, Any] | None,
    ) -> NoReturn:
        name = workflow_type_name(workflow)[0] if workflow is not None else None
        raise ContinueAsNewError(
            cmd.ContinueAsNewWorkflowExecution(
                workflow_type=name,
                task_queue=task_queue,
                input=self._converter.to_payloads(args),
                workflow_run_timeout=_seconds(run_timeout),
                workflow_task_timeout=_seconds(task_timeout),
                memo=dict(memo) if memo is not None else None,
                search_attributes=dict(search_attributes) if search_attributes is not None else None,
            )
        )

    def upsert_search_attributes(
        self, attributes: Mapping[str, Any] | Sequence[SearchAttributeUpdate]
    ) -> None:
        if isinstance(attributes, Mapping):
            items = list(attributes.items())
        else:
            items = [(u.key.name, u.value) for u in attributes]
        payload = {k: self._converter.to_payload(v) for k, v in items}
        self._add_command(cmd.UpsertWorkflowSearchAttributes(search_attributes=payload))
        for k, v in payload.items():
            if v is None:
                self._search_attributes.pop(k, None)
            else:
                self._search_attributes[k] = v


class WorkflowRunner:
    """Creates :class:`WorkflowInstance` objects for a worker's registered workflows.

    >>> from sagas import workflow
    >>> @workflow.defn
    ... class Hello:
    ...     @workflow.run
    ...     async def run(self) -> str:
    ...         return "hi"
    >>> WorkflowRunner([Hello]).has_workflow("Hello")
    True
    """

    def __init__(
        self,
        workflows: Sequence[type],
        *,
        data_converter: DataConverter | None = None,
        local_activities: Mapping[str, Callable[..., Any]] | None = None,
        deadlock_timeout: float | None = 2.0,
    ) -> None:
        """``deadlock_timeout``: seconds an activation may run without yielding (``None``: no check)."""
        self._definitions: dict[str, WorkflowDefinition] = {}
        for wf in workflows:
            d = get_definition(wf)
            if d.name in self._definitions:
                raise ValueError(f"two workflow classes are registered under the name {d.name!r}")
            self._definitions[d.name] = d
        self._converter = data_converter or default()
        self._local_activities = dict(local_activities or {})
        self._deadlock_timeout = deadlock_timeout

    def has_workflow(self, workflow_type: str) -> bool:
        """True if a workflow class is registered under ``workflow_type``."""
        return workflow_type in self._definitions

    def create_instance(
        self, *, namespace: str, workflow_id: str, run_id: str, workflow_type: str, task_queue: str
    ) -> WorkflowInstance:
        """A fresh instance for one run; ``ApplicationError`` (``WorkflowTypeNotRegistered``) if unknown."""
        d = self._definitions.get(workflow_type)
        if d is None:
            known = ", ".join(sorted(self._definitions)) or "none"
            raise ApplicationError(
                f"workflow type {workflow_type!r} is not registered on this worker (registered: {known}); "
                "add its class to the worker's workflows",
                type="WorkflowTypeNotRegistered",
            )
        # typeshed marks every AbstractEventLoop method abstract; the ones a
        # workflow may use are implemented, the rest raise NotImplementedError.
        return WorkflowInstance(  # type: ignore[abstract]
            definition=d,
            converter=self._converter,
            local_activities=self._local_activities,
            deadlock_timeout=self._deadlock_timeout,
            namespace=namespace,
            workflow_id=workflow_id,
            run_id=run_id,
            workflow_type=workflow_type,
            task_queue=task_queue,
        )


def current() -> WorkflowInstance:
    """The running workflow instance; ``RuntimeError`` outside workflow code."""
    loop = asyncio.events._get_running_loop()
    if not isinstance(loop, WorkflowInstance):
        raise RuntimeError("not in a workflow: this function may only be called from workflow code")
    return loop


def current_or_none() -> WorkflowInstance | None:
    """The running workflow instance, or ``None`` outside workflow code."""
    loop = asyncio.events._get_running_loop()
    return loop if isinstance(loop, WorkflowInstance) else None
