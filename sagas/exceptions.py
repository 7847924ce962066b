"""Errors of the sagas SDK, mirroring ``temporalio.exceptions``.

Users catch these, never a third-party library's exceptions. The hierarchy::

    SagasError(Exception)                  root of every SDK error
    ├── FailureError                       an error that travels as a Failure
    │   │                                  (.message, .failure, .cause)
    │   ├── ApplicationError               raised by user code (type, details,
    │   │   │                              non_retryable, next_retry_delay)
    │   │   ├── PayloadSizeError           a payload is over the converter's limit
    │   │   ├── SagaCompensationError      one or more saga compensations failed
    │   │   └── SessionFailedError         a worker session failed (its worker died)
    │   ├── CancelledError                 the work was cancelled
    │   ├── TimeoutError                   a timeout fired (.type: TimeoutType)
    │   ├── TerminatedError                the workflow was terminated
    │   ├── ServerError                    the orchestrator reported an error
    │   ├── ActivityError                  wraps an activity's failure (.cause)
    │   ├── ChildWorkflowError             wraps a child workflow's failure (.cause)
    │   └── WorkflowAlreadyStartedError    a run with that workflow id exists
    ├── NondeterminismError                replay produced different commands
    ├── WorkflowFailureError               client: the workflow failed (.cause)
    ├── WorkflowQueryFailedError           client: the query handler raised
    ├── WorkflowUpdateFailedError          client: the update failed (.cause)
    ├── InvalidScheduleError               client: a schedule's spec/action/policy is wrong
    ├── ScheduleAlreadyRunningError        client: a schedule with that id exists
    └── RPCError                           client: the server refused a call
        ├── WorkflowNotFoundError          client: no such workflow run
        └── ScheduleNotFoundError          client: no such schedule (or it was deleted)

Inside a workflow, raising a :class:`FailureError` fails the workflow; any
other exception fails only the workflow *task*, which is retried (so a bug
can be fixed and deployed without losing the run), like temporalio.

Failures cross the wire as :class:`orchestrator.api.common.Failure`;
:func:`error_to_failure` and :func:`failure_to_error` convert both ways and
keep type, message, details, ``non_retryable`` and the ``cause`` chain:

>>> err = failure_to_error(error_to_failure(ApplicationError("no car", type="NoCar")))
>>> (type(err).__name__, err.message, err.type)
('ApplicationError', 'no car', 'NoCar')
"""

from __future__ import annotations

import asyncio
import traceback
from collections.abc import Sequence
from datetime import timedelta
from typing import Any

from pydantic_core import to_jsonable_python

from orchestrator.api.common import Failure
from orchestrator.api.enums import RetryState, TimeoutType

__all__ = [
    "ActivityError",
    "ApplicationError",
    "CancelledError",
    "ChildWorkflowError",
    "FailureError",
    "InvalidScheduleError",
    "NondeterminismError",
    "PayloadSizeError",
    "RPCError",
    "SagaCompensationError",
    "SagasError",
    "ScheduleAlreadyRunningError",
    "ScheduleNotFoundError",
    "ServerError",
    "SessionFailedError",
    "TerminatedError",
    "TimeoutError",
    "WorkflowAlreadyStartedError",
    "WorkflowFailureError",
    "WorkflowNotFoundError",
    "WorkflowQueryFailedError",
    "WorkflowUpdateFailedError",
    "error_to_failure",
    "failure_to_error",
    "is_cancelled_error",
]


class SagasError(Exception):
    """Root of every error the sagas SDK raises.

    >>> from sagas.exceptions import ApplicationError, RPCError, SagasError
    >>> all(issubclass(t, SagasError) for t in (ApplicationError, RPCError))
    True
    """

    @property
    def message(self) -> str:
        """The error's message (``str(err)``)."""
        return str(self.args[0]) if self.args else ""


class FailureError(SagasError):
    """An error that is (or can be) carried as a :class:`Failure`.

    ``failure`` is the wire form it was built from, when it came over the wire;
    ``cause`` is the error that caused it (``__cause__``).

    Example (in a workflow)::

        try:
            await workflow.execute_activity(book_car, req, start_to_close_timeout=T)
        except FailureError as err:        # ActivityError, whose cause is the activity's error
            workflow.logger.warning("booking failed: %s (cause: %r)", err.message, err.cause)
            raise
    """

    def __init__(self, message: str, *, failure: Failure | None = None) -> None:
        super().__init__(message)
        self._message = message
        self._failure = failure

    @property
    def message(self) -> str:
        """The error's message, without the class name."""
        return self._message

    @property
    def failure(self) -> Failure | None:
        """The :class:`Failure` this error was built from, if it came over the wire."""
        return self._failure

    @property
    def cause(self) -> BaseException | None:
        """The error that caused this one (``__cause__``)."""
        return self.__cause__


class ApplicationError(FailureError):
    """An error raised by user code, optionally non-retryable.

    ``type`` names the error for retry policies' ``non_retryable_error_types``
    (defaults to the class name of the Python exception it was converted from).
    ``next_retry_delay`` is kept on the object for callers but is not carried
    over the wire.

    >>> raise ApplicationError("card declined", {"code": 51}, type="Declined", non_retryable=True)
    Traceback (most recent call last):
    ...
    sagas.exceptions.ApplicationError: card declined
    """

    def __init__(
        self,
        message: str,
        *details: Any,
        type: str | None = None,
        non_retryable: bool = False,
        next_retry_delay: timedelta | None = None,
        failure: Failure | None = None,
    ) -> None:
        super().__init__(message, failure=failure)
        self._details = tuple(details)
        self._type = type
        self._non_retryable = non_retryable
        self._next_retry_delay = next_retry_delay

    @property
    def details(self) -> Sequence[Any]:
        """Extra values attached to the error (JSON values after a round trip)."""
        return self._details

    @property
    def type(self) -> str | None:
        """The error's type name, if set."""
        return self._type

    @property
    def non_retryable(self) -> bool:
        """True when retry policies must not retry this error."""
        return self._non_retryable

    @property
    def next_retry_delay(self) -> timedelta | None:
        """Delay the raiser asked for before the next retry (not sent over the wire)."""
        return self._next_retry_delay


class PayloadSizeError(ApplicationError):
    """A payload is larger than the data converter's ``max_payload_bytes``.

    Non-retryable: the same value will be too large again. Keep large data
    outside the workflow (object storage, a database) and pass a reference.

    >>> from sagas.converter import DataConverter
    >>> from sagas.exceptions import PayloadSizeError
    >>> try:
    ...     DataConverter(max_payload_bytes=100).to_payload("x" * 1000)
    ... except PayloadSizeError as err:
    ...     print(err.non_retryable, err.limit)
    True 100
    """

    def __init__(self, message: str, *, size: int = 0, limit: int = 0) -> None:
        super().__init__(message, type="PayloadSizeError", non_retryable=True)
        self.size = size
        self.limit = limit


class SagaCompensationError(ApplicationError):
    """One or more compensations of a :class:`sagas.Saga` failed.

    ``errors`` holds every compensation failure in the order they happened;
    ``__cause__`` is the first one. ``details`` lists the failed steps' names.

    Example (in a workflow)::

        try:
            async with Saga() as saga:
                ...
        except SagaCompensationError as err:
            workflow.logger.error("undo failed for %s: %s", err.details, err.errors)
            raise
    """

    def __init__(self, message: str, *, errors: Sequence[BaseException], names: Sequence[str] = ()) -> None:
        super().__init__(message, *names, type="SagaCompensationError")
        self.errors = list(errors)


class SessionFailedError(ApplicationError):
    """A worker session failed: its worker died or stopped, or the session timed out.

    Raised inside a workflow (like ``ErrSessionFailed`` of Temporal's Go SDK)
    by ``workflow.create_session`` when no worker could host the session, and
    by the session's activities -- running or started later -- once the
    session's worker stopped heartbeating. ``__cause__`` is the failure of the
    session's creation activity (usually a heartbeat ``TimeoutError``). The
    files the session's activities left on that worker are gone with it:
    catch this error and redo the whole session on another worker.
    ``session_id`` names the failed session.

    Example (inside a workflow)::

        for attempt in range(3):
            try:
                async with workflow.create_session(execution_timeout=timedelta(minutes=10)):
                    path = await workflow.execute_activity(download, url, start_to_close_timeout=timedelta(minutes=5))
                    return await workflow.execute_activity(process, path, start_to_close_timeout=timedelta(minutes=5))
            except SessionFailedError:
                workflow.logger.warning("session lost its worker; starting over")
        raise ApplicationError("no worker kept a session alive", non_retryable=True)
    """

    def __init__(self, message: str, *, session_id: str = "", failure: Failure | None = None) -> None:
        super().__init__(message, session_id, type="SessionFailedError", failure=failure)
        self.session_id = session_id


class CancelledError(FailureError):
    """The work was cancelled (an activity, a child workflow, the workflow itself).

    Example (in a workflow)::

        try:
            await workflow.execute_activity(book_car, req, start_to_close_timeout=T)
        except ActivityError as err:
            if isinstance(err.cause, CancelledError):
                return "cancelled"
            raise
    """

    def __init__(self, message: str = "Cancelled", *details: Any, failure: Failure | None = None) -> None:
        super().__init__(message, failure=failure)
        self._details = tuple(details)

    @property
    def details(self) -> Sequence[Any]:
        """Details given with the cancellation."""
        return self._details


class TimeoutError(FailureError):
    """A timeout fired; ``type`` says which one (:class:`TimeoutType`).

    >>> from orchestrator.api.enums import TimeoutType
    >>> from sagas.exceptions import TimeoutError
    >>> err = TimeoutError("activity timed out", type=TimeoutType.HEARTBEAT, last_heartbeat_details=[42])
    >>> (err.type is TimeoutType.HEARTBEAT, err.last_heartbeat_details)
    (True, (42,))
    """

    def __init__(
        self,
        message: str,
        *,
        type: TimeoutType | None,
        last_heartbeat_details: Sequence[Any] = (),
        failure: Failure | None = None,
    ) -> None:
        super().__init__(message, failure=failure)
        self._type = type
        self._last_heartbeat_details = tuple(last_heartbeat_details)

    @property
    def type(self) -> TimeoutType | None:
        """Which timeout fired."""
        return self._type

    @property
    def last_heartbeat_details(self) -> Sequence[Any]:
        """Details of the activity's last heartbeat, if any."""
        return self._last_heartbeat_details


class TerminatedError(FailureError):
    """The workflow was terminated.

    Example::

        try:
            await client.get_workflow_handle("trip-1").result()
        except WorkflowFailureError as err:
            if isinstance(err.cause, TerminatedError):
                print("terminated:", err.cause.message)
    """

    def __init__(self, message: str = "Terminated", *details: Any, failure: Failure | None = None) -> None:
        super().__init__(message, failure=failure)
        self._details = tuple(details)

    @property
    def details(self) -> Sequence[Any]:
        """Details given with the termination."""
        return self._details


class ServerError(FailureError):
    """The orchestrator reported an error.

    Example (in a workflow)::

        try:
            await workflow.execute_child_workflow(ChargeWorkflow.run, order, id=f"charge-{order.id}")
        except ChildWorkflowError as err:
            if isinstance(err.cause, ServerError):
                workflow.logger.error("the orchestrator failed the child: %s", err.cause.message)
            raise
    """

    def __init__(self, message: str, *, non_retryable: bool = False, failure: Failure | None = None) -> None:
        super().__init__(message, failure=failure)
        self._non_retryable = non_retryable

    @property
    def non_retryable(self) -> bool:
        """True when the operation must not be retried."""
        return self._non_retryable


class ActivityError(FailureError):
    """An activity failed; ``cause`` is the real error (ApplicationError, TimeoutError, CancelledError).

    Example (in a workflow)::

        try:
            await workflow.execute_activity(book_car, req, start_to_close_timeout=T)
        except ActivityError as err:
            if isinstance(err.cause, ApplicationError) and err.cause.type == "NoCarAvailable":
                return "no car"
            raise
    """

    def __init__(
        self,
        message: str,
        *,
        activity_type: str = "",
        activity_id: str = "",
        scheduled_event_id: int = 0,
        retry_state: RetryState | None = None,
        failure: Failure | None = None,
    ) -> None:
        super().__init__(message, failure=failure)
        self.activity_type = activity_type
        self.activity_id = activity_id
        self.scheduled_event_id = scheduled_event_id
        self.retry_state = retry_state


class ChildWorkflowError(FailureError):
    """A child workflow failed; ``cause`` is the real error.

    Example (in a workflow)::

        try:
            receipt = await workflow.execute_child_workflow(ChargeWorkflow.run, order, id=f"charge-{order.id}")
        except ChildWorkflowError as err:
            workflow.logger.warning("child %s failed: %r", err.workflow_id, err.cause)
            raise
    """

    def __init__(
        self,
        message: str,
        *,
        workflow_id: str = "",
        workflow_type: str = "",
        retry_state: RetryState | None = None,
        failure: Failure | None = None,
    ) -> None:
        super().__init__(message, failure=failure)
        self.workflow_id = workflow_id
        self.workflow_type = workflow_type
        self.retry_state = retry_state


class WorkflowAlreadyStartedError(FailureError):
    """A workflow run with this id already exists (and the reuse policy refused a new one).

    Example::

        try:
            await client.start_workflow(BookTrip.run, trip, id="trip-1", task_queue="trips",
                                        id_reuse_policy=WorkflowIDReusePolicy.REJECT_DUPLICATE)
        except WorkflowAlreadyStartedError:
            handle = client.get_workflow_handle("trip-1")
    """

    def __init__(self, workflow_id: str, workflow_type: str, *, run_id: str | None = None) -> None:
        super().__init__(
            f"workflow {workflow_id!r} of type {workflow_type!r} is already started; "
            "use another workflow id or a WorkflowIDReusePolicy that allows it"
        )
        self.workflow_id = workflow_id
        self.workflow_type = workflow_type
        self.run_id = run_id


class NondeterminismError(SagasError):
    """Replaying a workflow's history produced different commands than the history recorded.

    The message names the event id, the command recorded in history and the
    command the code produced (with the source line when known). Usually the
    workflow code changed in a way that is not replay-safe; guard the change
    with ``workflow.patched(...)``.

    The same facts are attributes, for tools (``sagas workflow replay``,
    ``sagas.testing.replay``); each is ``None`` when it does not apply:

    * ``event_id``: the history event where replay diverged;
    * ``recorded``: what history recorded there, e.g.
      ``ActivityTaskScheduled(activity_id='1', activity_type='book_car')``;
    * ``produced``: the command the code produced instead, e.g.
      ``ScheduleActivityTask(activity_id='1', activity_type='book_hotel')``;
    * ``source``: ``file:line in function`` of the workflow code that produced
      that command (or, when it produced none, where the workflow was waiting).

    Example::

        try:
            await Replayer(workflows=[BookTrip]).replay_workflow(history)
        except NondeterminismError as err:
            print(f"event {err.event_id}: recorded {err.recorded}, produced {err.produced} at {err.source}")
    """

    def __init__(
        self,
        message: str,
        *,
        event_id: int | None = None,
        recorded: str | None = None,
        produced: str | None = None,
        source: str | None = None,
    ) -> None:
        super().__init__(message)
        self.event_id = event_id
        self.recorded = recorded
        self.produced = produced
        self.source = source


class WorkflowFailureError(SagasError):
    """The workflow closed as failed, cancelled, terminated or timed out; ``cause`` says how.

    Example::

        try:
            await client.execute_workflow(BookTrip.run, trip, id="trip-1", task_queue="trips")
        except WorkflowFailureError as err:
            print("trip failed:", err.cause)
    """

    def __init__(self, *, cause: BaseException, message: str = "Workflow execution failed") -> None:
        super().__init__(message)
        self.__cause__ = cause

    @property
    def cause(self) -> BaseException:
        """The error the workflow closed with."""
        assert self.__cause__ is not None
        return self.__cause__


class WorkflowQueryFailedError(SagasError):
    """A query handler raised, or the query named no handler.

    Example::

        try:
            status = await handle.query("status")
        except WorkflowQueryFailedError as err:
            print("query failed:", err.message)
    """


class WorkflowUpdateFailedError(SagasError):
    """An update was rejected by its validator or its handler failed; ``cause`` says why.

    Example::

        try:
            await handle.execute_update(OrderWorkflow.set_limit, -1)
        except WorkflowUpdateFailedError as err:
            print("rejected:", err.cause)     # e.g. the validator's ApplicationError
    """

    def __init__(self, *, cause: BaseException, message: str = "Workflow update failed") -> None:
        super().__init__(message)
        self.__cause__ = cause

    @property
    def cause(self) -> BaseException:
        """The update's failure."""
        assert self.__cause__ is not None
        return self.__cause__


class RPCError(SagasError):
    """The orchestrator refused a client call; ``code`` is its stable error code, ``status`` the HTTP status.

    Example::

        try:
            await client.get_workflow_handle("trip-1").cancel()
        except RPCError as err:
            print(err.code, err.status)       # e.g. "unavailable" 503 when no server answers
    """

    def __init__(self, message: str, code: str = "internal", status: int = 500) -> None:
        super().__init__(message)
        self.code = code
        self.status = status


class WorkflowNotFoundError(RPCError):
    """No workflow run with that workflow id (and run id).

    Example::

        try:
            await client.get_workflow_handle("no-such-trip").describe()
        except WorkflowNotFoundError:
            print("no such workflow")
    """

    def __init__(self, message: str, code: str = "workflow_not_found", status: int = 404) -> None:
        super().__init__(message, code, status)


class ScheduleNotFoundError(RPCError):
    """No schedule with that id: it was never created, or it was deleted (``.schedule_id``).

    Example::

        try:
            await client.get_schedule_handle("nightly-report").describe()
        except ScheduleNotFoundError as err:
            print("missing schedule", err.schedule_id)
    """

    def __init__(self, schedule_id: str) -> None:
        super().__init__(
            f"schedule {schedule_id!r} does not exist (never created, or deleted); "
            "see the existing ones with client.list_schedules() or 'sagas schedule list'",
            "schedule_not_found",
            404,
        )
        self.schedule_id = schedule_id


class ScheduleAlreadyRunningError(SagasError):
    """``create_schedule`` was given the id of a schedule that exists (``.schedule_id``).

    Example::

        try:
            await client.create_schedule("nightly-report", schedule)
        except ScheduleAlreadyRunningError:
            await client.get_schedule_handle("nightly-report").update(lambda _: ScheduleUpdate(schedule))
    """

    def __init__(self, schedule_id: str) -> None:
        super().__init__(
            f"schedule {schedule_id!r} already exists; change it with get_schedule_handle(id).update(...), "
            "or delete it first"
        )
        self.schedule_id = schedule_id


class InvalidScheduleError(SagasError, ValueError):
    """A schedule (or schedule change) names something invalid: a cron string that does not parse,
    an unknown time zone, a non-positive interval, a missing workflow id or task queue...

    The message names the field and the value, and says what is accepted.

    Example::

        try:
            await client.create_schedule("report", Schedule(action=action, spec=ScheduleSpec(cron_expressions=["0 25 * * *"])))
        except InvalidScheduleError as err:
            print(err)                        # names the field, the value and what is accepted
    """


def is_cancelled_error(err: BaseException) -> bool:
    """True for a cancellation: asyncio's or ours, directly or as an activity/child's cause.

    >>> import asyncio
    >>> from sagas.exceptions import ActivityError, CancelledError, is_cancelled_error
    >>> is_cancelled_error(asyncio.CancelledError())
    True
    >>> err = ActivityError("activity failed")
    >>> err.__cause__ = CancelledError()
    >>> is_cancelled_error(err), is_cancelled_error(ValueError())
    (True, False)
    """
    if isinstance(err, asyncio.CancelledError | CancelledError):
        return True
    if isinstance(err, ActivityError | ChildWorkflowError):
        return isinstance(err.cause, CancelledError)
    return False


def _json_details(details: Sequence[Any]) -> list[Any]:
    try:
        return list(to_jsonable_python(list(details)))
    except Exception:  # a detail that cannot become JSON is sent as its repr
        return [repr(d) for d in details]


def _stack(err: BaseException) -> str:
    if err.__traceback__ is None:
        return ""
    return "".join(traceback.format_tb(err.__traceback__))


def error_to_failure(err: BaseException) -> Failure:
    """Convert an exception (and its ``__cause__`` chain) to its wire form.

    Exceptions that are not :class:`FailureError` become ``application``
    failures whose ``type`` is the exception's class name, as in temporalio.

    >>> from sagas.exceptions import error_to_failure
    >>> f = error_to_failure(KeyError("car"))
    >>> (f.kind, f.type, f.message)
    ('application', 'KeyError', "'car'")
    """
    cause = error_to_failure(err.__cause__) if err.__cause__ is not None else None
    stack = _stack(err)
    if isinstance(err, ApplicationError):
        return Failure(
            message=err.message,
            kind="application",
            type=err.type or type(err).__name__,
            non_retryable=err.non_retryable,
            details=_json_details(err.details),
            stack_trace=stack,
            cause=cause,
        )
    if isinstance(err, CancelledError):
        return Failure(
            message=err.message,
            kind="canceled",
            details=_json_details(err.details),
            stack_trace=stack,
            cause=cause,
        )
    if isinstance(err, asyncio.CancelledError):
        return Failure(message=str(err) or "Cancelled", kind="canceled", stack_trace=stack, cause=cause)
    if isinstance(err, TimeoutError):
        return Failure(
            message=err.message,
            kind="timeout",
            timeout_type=str(err.type) if err.type is not None else None,
            last_heartbeat_details=_json_details(err.last_heartbeat_details) or None,
            stack_trace=stack,
            cause=cause,
        )
    if isinstance(err, TerminatedError):
        return Failure(
            message=err.message,
            kind="terminated",
            details=_json_details(err.details),
            stack_trace=stack,
            cause=cause,
        )
    if isinstance(err, ServerError):
        return Failure(
            message=err.message,
            kind="server",
            non_retryable=err.non_retryable,
            stack_trace=stack,
            cause=cause,
        )
    if isinstance(err, ActivityError):
        return Failure(
            message=err.message,
            kind="activity",
            activity_type=err.activity_type or None,
            activity_id=err.activity_id or None,
            scheduled_event_id=err.scheduled_event_id or None,
            retry_state=str(err.retry_state) if err.retry_state is not None else None,
            stack_trace=stack,
            cause=cause,
        )
    if isinstance(err, ChildWorkflowError):
        return Failure(
            message=err.message,
            kind="child_workflow",
            workflow_id=err.workflow_id or None,
            workflow_type=err.workflow_type or None,
            retry_state=str(err.retry_state) if err.retry_state is not None else None,
            stack_trace=stack,
            cause=cause,
        )
    if isinstance(err, FailureError):
        return Failure(
            message=err.message, kind="application", type=type(err).__name__, stack_trace=stack, cause=cause
        )
    return Failure(
        message=str(err), kind="application", type=type(err).__name__, stack_trace=stack, cause=cause
    )


def _retry_state(value: str | None) -> RetryState | None:
    try:
        return RetryState(value) if value else None
    except ValueError:
        return None


def _timeout_type(value: str | None) -> TimeoutType | None:
    try:
        return TimeoutType(value) if value else None
    except ValueError:
        return None


def failure_to_error(failure: Failure) -> FailureError:
    """Convert a wire :class:`Failure` (and its ``cause`` chain) to an exception.

    ``kind`` selects the class; unknown kinds become :class:`ApplicationError`.
    The result's ``failure`` property is the given failure.

    >>> from sagas.exceptions import ApplicationError, error_to_failure, failure_to_error
    >>> err = failure_to_error(error_to_failure(ApplicationError("card declined", "c-42", non_retryable=True)))
    >>> (err.message, err.details, err.non_retryable)
    ('card declined', ('c-42',), True)
    """
    err: FailureError
    kind = failure.kind
    if kind == "canceled":
        err = CancelledError(failure.message, *failure.details, failure=failure)
    elif kind == "timeout":
        err = TimeoutError(
            failure.message,
            type=_timeout_type(failure.timeout_type),
            last_heartbeat_details=failure.last_heartbeat_details or (),
            failure=failure,
        )
    elif kind == "terminated":
        err = TerminatedError(failure.message, *failure.details, failure=failure)
    elif kind == "server":
        err = ServerError(failure.message, non_retryable=failure.non_retryable, failure=failure)
    elif kind == "activity":
        err = ActivityError(
            failure.message,
            activity_type=failure.activity_type or "",
            activity_id=failure.activity_id or "",
            scheduled_event_id=failure.scheduled_event_id or 0,
            retry_state=_retry_state(failure.retry_state),
            failure=failure,
        )
    elif kind == "child_workflow":
        err = ChildWorkflowError(
            failure.message,
            workflow_id=failure.workflow_id or "",
            workflow_type=failure.workflow_type or "",
            retry_state=_retry_state(failure.retry_state),
            failure=failure,
        )
    elif failure.type == "PayloadSizeError":
        err = PayloadSizeError(failure.message)
        err._failure = failure
    elif failure.type == "SessionFailedError":
        session_id = failure.details[0] if failure.details and isinstance(failure.details[0], str) else ""
        err = SessionFailedError(failure.message, session_id=session_id, failure=failure)
    else:
        err = ApplicationError(
            failure.message,
            *failure.details,
            type=failure.type,
            non_retryable=failure.non_retryable,
            failure=failure,
        )
    if failure.cause is not None:
        err.__cause__ = failure_to_error(failure.cause)
    return err
