"""Functions an activity calls while it runs (mirrors ``temporalio.activity``).

An activity is ordinary code with side effects, decorated with :func:`defn`.

Example::

    from sagas import activity

    @activity.defn
    async def charge_card(order: Order) -> Receipt:
        activity.heartbeat("contacting bank")
        ...

Inside a running activity, :func:`info`, :func:`heartbeat`,
:func:`is_cancelled`, :func:`wait_for_cancelled` and :data:`logger` reach the
current activity through a context variable; outside one they raise
``RuntimeError``. Sync activities run in the worker's ``activity_executor``
with a copy of the context, so they may call these functions as well.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping, MutableMapping
from datetime import timedelta
from typing import TYPE_CHECKING, Any, NoReturn

from sagas.activity._context import CancellationDetails, Info, in_activity
from sagas.activity._context import current as _current
from sagas.activity._definition import ActivityDefinition, defn

if TYPE_CHECKING:
    from sagas.client import Client

__all__ = [
    "ActivityCancellationDetails",
    "ActivityDefinition",
    "CompleteAsyncError",
    "Info",
    "LoggerAdapter",
    "cancellation_details",
    "client",
    "defn",
    "heartbeat",
    "in_activity",
    "info",
    "is_cancelled",
    "is_worker_shutdown",
    "logger",
    "raise_complete_async",
    "wait_for_cancelled",
    "wait_for_cancelled_sync",
    "wait_for_worker_shutdown",
    "wait_for_worker_shutdown_sync",
]

ActivityCancellationDetails = CancellationDetails


class CompleteAsyncError(BaseException):
    """Raised by :func:`raise_complete_async`: the activity will be completed by someone else.

    It derives from ``BaseException`` so that a broad ``except Exception`` in
    the activity does not swallow it.

    Example (inside an activity)::

        try:
            activity.raise_complete_async()
        except Exception:
            ...   # not reached: CompleteAsyncError is not an Exception
    """


def info() -> Info:
    """Information about the running activity (ids, attempt, task token, deadline...).

    >>> from sagas import activity
    >>> from sagas.testing import ActivityEnvironment
    >>> ActivityEnvironment().run(lambda: activity.info().workflow_id)
    'test'
    """
    return _current().info()


def heartbeat(*details: Any) -> None:
    """Tell the server the activity is alive, with optional progress ``details``.

    Heartbeats are throttled (sent at most every 0.8 x heartbeat timeout, or
    every second); the last details win. The answer tells the worker whether
    the workflow asked to cancel the activity: an async activity then gets
    ``asyncio.CancelledError``, a sync one sees :func:`is_cancelled`.

    Example::

        @activity.defn
        async def import_rows(path: str) -> int:
            info = activity.info()
            start = info.heartbeat_details[0] if info.heartbeat_details else 0
            for n, row in enumerate(read_rows(path)):
                if n >= start:
                    await store(row)
                    activity.heartbeat(n + 1)      # resume after row n on the next attempt
            return n + 1
    """
    _current().heartbeat(*details)


def is_cancelled() -> bool:
    """True once cancellation of this activity was requested (or it timed out on the worker).

    Example (a sync activity)::

        @activity.defn
        def resize_images(paths: list[str]) -> int:
            for n, path in enumerate(paths):
                if activity.is_cancelled():
                    raise ApplicationError("cancelled", non_retryable=True)
                resize(path)
                activity.heartbeat(n)
            return len(paths)
    """
    return _current().cancelled.is_set()


async def wait_for_cancelled() -> None:
    """Wait until cancellation is requested (async activities only).

    Example::

        @activity.defn
        async def hold_seat(seat: str) -> None:
            await reserve(seat)
            try:
                await activity.wait_for_cancelled()   # hold the seat until the workflow cancels us
            finally:
                await release(seat)
    """
    await _current().cancelled.wait()


def wait_for_cancelled_sync(timeout: timedelta | float | None = None) -> None:
    """Block until cancellation is requested or ``timeout`` passed (sync activities).

    Example (a sync activity)::

        @activity.defn
        def poll_printer(job: str) -> None:
            while not printer_done(job):
                activity.heartbeat()
                activity.wait_for_cancelled_sync(timeout=5)   # a cancellable sleep
                if activity.is_cancelled():
                    cancel_print(job)
                    return
    """
    seconds = timeout.total_seconds() if isinstance(timeout, timedelta) else timeout
    _current().cancelled.wait_sync(seconds)


def cancellation_details() -> ActivityCancellationDetails | None:
    """Why the activity was cancelled, or None while it is not.

    Example (inside an activity)::

        details = activity.cancellation_details()
        if details is not None and details.worker_shutdown:
            activity.heartbeat(progress)   # save progress for the next attempt
    """
    reasons = _current().cancellation
    return reasons[0] if reasons else None


def is_worker_shutdown() -> bool:
    """True once the worker began shutting down.

    Example (inside an activity)::

        for batch in batches:
            if activity.is_worker_shutdown():
                raise ApplicationError("worker stopping; retry elsewhere")
            process(batch)
    """
    return _current().worker_shutdown.is_set()


async def wait_for_worker_shutdown() -> None:
    """Wait until the worker begins shutting down (async activities only).

    Example (inside an activity)::

        shutdown = asyncio.create_task(activity.wait_for_worker_shutdown())
        done, _ = await asyncio.wait([shutdown, asyncio.create_task(long_call())],
                                     return_when=asyncio.FIRST_COMPLETED)
    """
    await _current().worker_shutdown.wait()


def wait_for_worker_shutdown_sync(timeout: timedelta | float | None = None) -> None:
    """Block until the worker begins shutting down or ``timeout`` passed.

    Example (a sync activity)::

        while not activity.is_worker_shutdown():
            process_next_message()
            activity.wait_for_worker_shutdown_sync(timeout=1.0)
    """
    seconds = timeout.total_seconds() if isinstance(timeout, timedelta) else timeout
    _current().worker_shutdown.wait_sync(seconds)


def raise_complete_async() -> NoReturn:
    """Return from the activity without a result; complete it later by its task token.

    Example::

        token = activity.info().task_token
        await send_to_human_approver(token)
        activity.raise_complete_async()
        # later, elsewhere:
        await client.get_async_activity_handle(task_token=token).complete("approved")
    """
    raise CompleteAsyncError()


def client() -> Client:
    """The client of the worker running this (async) activity.

    Example (inside an activity)::

        handle = activity.client().get_workflow_handle(activity.info().workflow_id)
        await handle.signal("car_booked", car_id)
    """
    found = _current().client
    if found is None:
        raise RuntimeError(
            "no client in this activity context: it is only set for async activities run by a "
            "Worker (or an ActivityEnvironment created with a client)"
        )
    return found


class LoggerAdapter(logging.LoggerAdapter):  # type: ignore[type-arg]
    """Logger that adds the running activity's ids to each record.

    The details go at the end of the message and into ``extra["sagas_activity"]``.

    Example::

        import logging

        from sagas.activity import LoggerAdapter

        log = LoggerAdapter(logging.getLogger("payments"))

        @activity.defn
        async def charge_card(order: Order) -> Receipt:
            log.info("charging %s", order.id)   # ... ({'activity_id': '1', 'workflow_id': ...})
            ...
    """

    def __init__(self, base: logging.Logger, extra: Mapping[str, Any] | None = None) -> None:
        super().__init__(base, extra or {})
        self.activity_info_on_message = True
        self.activity_info_on_extra = True

    def process(self, msg: Any, kwargs: MutableMapping[str, Any]) -> tuple[Any, MutableMapping[str, Any]]:
        if in_activity():
            details = _current().info().logger_details()
            if self.activity_info_on_message:
                msg = f"{msg} ({details})"
            if self.activity_info_on_extra:
                extra = dict(kwargs.get("extra") or {})
                extra["sagas_activity"] = details
                kwargs["extra"] = extra
        return msg, kwargs

    @property
    def base_logger(self) -> logging.Logger:
        """The wrapped logger, to add handlers or formatters."""
        base: logging.Logger = self.logger
        return base


logger = LoggerAdapter(logging.getLogger(__name__))
"""Logger with the running activity's details on every record.

Example (inside an activity)::

    activity.logger.info("charging card for order %s", order.id)
"""
