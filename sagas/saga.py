"""Saga compensation for workflows: undo completed steps, in reverse, when a later step fails.

Use it as an async context manager inside a workflow: register a
compensation right after each step succeeds; if the block raises (a failed
activity, a cancellation), the compensations run and the error is re-raised.

.. code-block:: python

    @workflow.defn
    class TripWorkflow:
        @workflow.run
        async def run(self, req: TripRequest) -> str:
            T = timedelta(seconds=30)
            async with Saga() as saga:
                await workflow.execute_activity(book_car, req, start_to_close_timeout=T)
                saga.add_compensation(cancel_car, req, start_to_close_timeout=T)
                await workflow.execute_activity(book_hotel, req, start_to_close_timeout=T)
                saga.add_compensation(cancel_hotel, req, start_to_close_timeout=T)
                await workflow.execute_activity(book_flight, req, start_to_close_timeout=T)
            return "booked"

Or by hand: ``saga = Saga(parallel=False)`` ... ``await saga.compensate()``.

Behaviour:

* Compensations run in reverse registration order, or all at once with
  ``parallel=True``.
* An activity compensation is a durable activity with its own options; its
  default retry policy retries forever with backoff capped at 60 s, because
  giving up on an undo leaves the system inconsistent. A plain (async)
  callable is run inline in the workflow (keep it deterministic).
* Compensations still run when the workflow is being cancelled: they are
  shielded from the workflow's cancellation, which is re-raised afterwards.
* With ``continue_on_compensation_error=True`` (the default) a failing
  compensation does not stop the others; once all have run, a
  :class:`~sagas.exceptions.SagaCompensationError` is raised whose ``errors``
  lists every failure (``__cause__`` is the first). With ``False`` the first
  failure stops compensation and is raised the same way.
* Every registration and compensation is recorded as a ``MarkerRecorded``
  event named ``saga`` with details ``{"saga_id", "event", "name", "index"}``
  where ``event`` is ``step_registered``, ``compensation_started``,
  ``compensation_completed`` or ``compensation_failed``, so tools can draw
  the saga.
"""

from __future__ import annotations

import asyncio
import dataclasses
import inspect
from collections.abc import Callable
from datetime import timedelta
from types import TracebackType
from typing import Any

from sagas.common import RetryPolicy
from sagas.exceptions import SagaCompensationError
from sagas.workflow import _api
from sagas.workflow._instance import _NO_ARG, _resolve_args, activity_name, current

__all__ = ["SAGA_MARKER", "Saga"]

SAGA_MARKER = "saga"
"""``marker_name`` of the markers a saga records.

Example (the saga steps of a recorded run)::

    history = await client.get_workflow_handle("trip-1").fetch_history()
    steps = [
        e.details for e in history.events
        if getattr(e, "marker_name", None) == SAGA_MARKER
    ]
"""

DEFAULT_COMPENSATION_RETRY = RetryPolicy(maximum_interval=timedelta(seconds=60))
"""Retry forever, backoff doubling from 1 s up to 60 s."""


@dataclasses.dataclass
class _Compensation:
    index: int
    name: str
    fn: Any
    args: list[Any]
    options: dict[str, Any]
    is_activity: bool


def _is_activity(fn: Any) -> bool:
    return isinstance(fn, str) or hasattr(fn, "__sagas_activity_name__")


class Saga:
    """Collects compensations and runs them when the saga fails (see the module docs).

    Example (inside a workflow)::

        T = timedelta(seconds=30)
        async with Saga(parallel=False) as saga:
            await workflow.execute_activity(book_car, req, start_to_close_timeout=T)
            saga.add_compensation(cancel_car, req, start_to_close_timeout=T)
            await workflow.execute_activity(book_hotel, req, start_to_close_timeout=T)
            saga.add_compensation(cancel_hotel, req, start_to_close_timeout=T)
    """

    def __init__(self, *, parallel: bool = False, continue_on_compensation_error: bool = True) -> None:
        self.parallel = parallel
        self.continue_on_compensation_error = continue_on_compensation_error
        self._saga_id: str | None = None
        self._steps: list[_Compensation] = []
        self._compensated = False

    @property
    def saga_id(self) -> str:
        """Deterministic id of this saga within its workflow run (``saga-1``, ``saga-2``, ...)."""
        if self._saga_id is None:
            self._saga_id = f"saga-{current().next_seq('saga')}"
        return self._saga_id

    def add_compensation(
        self,
        compensation: Callable[..., Any] | str,
        *arg_list: Any,
        arg: Any = _NO_ARG,
        args: list[Any] | None = None,
        task_queue: str | None = None,
        schedule_to_close_timeout: timedelta | None = None,
        schedule_to_start_timeout: timedelta | None = None,
        start_to_close_timeout: timedelta | None = None,
        heartbeat_timeout: timedelta | None = None,
        retry_policy: RetryPolicy | None = None,
    ) -> None:
        """Register what undoes the step that just succeeded.

        ``compensation`` is an ``@activity.defn`` function or activity name
        (run as a durable activity with these options), or a plain callable
        (sync or async, run inline in the workflow; options are ignored).
        """
        is_activity = _is_activity(compensation)
        if is_activity and start_to_close_timeout is None and schedule_to_close_timeout is None:
            raise ValueError(
                "a compensation activity needs start_to_close_timeout or schedule_to_close_timeout"
            )
        name = (
            activity_name(compensation)
            if is_activity
            else getattr(compensation, "__name__", repr(compensation))
        )
        step = _Compensation(
            index=len(self._steps),
            name=name,
            fn=compensation,
            args=_resolve_args(arg_list, arg, args),
            options={
                "task_queue": task_queue,
                "schedule_to_close_timeout": schedule_to_close_timeout,
                "schedule_to_start_timeout": schedule_to_start_timeout,
                "start_to_close_timeout": start_to_close_timeout,
                "heartbeat_timeout": heartbeat_timeout,
                "retry_policy": retry_policy or DEFAULT_COMPENSATION_RETRY,
            },
            is_activity=is_activity,
        )
        self._steps.append(step)
        self._record("step_registered", step)

    async def compensate(self) -> None:
        """Run the registered compensations (once; later calls do nothing).

        Shielded from the workflow's cancellation: if the workflow is
        cancelled meanwhile, compensation finishes and then
        ``asyncio.CancelledError`` is raised.
        """
        if self._compensated:
            return
        self._compensated = True
        task = current().create_task(self._compensate_all(), name=f"compensate:{self.saga_id}")
        cancelled = False
        while True:
            try:
                await asyncio.shield(task)
                break
            except asyncio.CancelledError:
                if task.done():
                    raise
                cancelled = True
        if cancelled:
            raise asyncio.CancelledError()

    async def __aenter__(self) -> Saga:
        return self

    async def __aexit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> bool:
        if isinstance(exc, Exception | asyncio.CancelledError):
            await self.compensate()
        return False

    async def _compensate_all(self) -> None:
        steps = list(reversed(self._steps))
        failed: list[tuple[_Compensation, BaseException]] = []
        if self.parallel:
            results = await asyncio.gather(*(self._run(s) for s in steps), return_exceptions=True)
            failed = [(s, r) for s, r in zip(steps, results, strict=True) if isinstance(r, BaseException)]
        else:
            for step in steps:
                try:
                    await self._run(step)
                except Exception as err:
                    failed.append((step, err))
                    if not self.continue_on_compensation_error:
                        break
        if failed:
            names = [s.name for s, _ in failed]
            error = SagaCompensationError(
                f"saga {self.saga_id}: {len(failed)} compensation(s) failed: {', '.join(names)}",
                errors=[e for _, e in failed],
                names=names,
            )
            raise error from failed[0][1]

    async def _run(self, step: _Compensation) -> None:
        self._record("compensation_started", step)
        try:
            if step.is_activity:
                await _api.execute_activity(step.fn, args=step.args, **step.options)
            else:
                result = step.fn(*step.args)
                if inspect.isawaitable(result):
                    await result
        except Exception as err:
            self._record("compensation_failed", step, error=str(err) or type(err).__name__)
            raise
        self._record("compensation_completed", step)

    def _record(self, event: str, step: _Compensation, **extra: Any) -> None:
        current().record_marker(
            SAGA_MARKER,
            {"saga_id": self.saga_id, "event": event, "name": step.name, "index": step.index, **extra},
        )
