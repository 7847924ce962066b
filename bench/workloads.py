# mypy: allow-untyped-decorators
"""The benchmark workflows and activities, written once for both SDKs.

``sagas`` mirrors ``temporalio`` name for name, so one source serves both:
this module is written against ``workflow``, ``activity``, ``common`` and
``exceptions`` of the SDK named by :data:`SDK`. Get the definitions with
:func:`build`, which loads this file once per SDK under its own module name
(``bench.workloads_for_temporalio``, ``bench.workloads_for_sagas``):

    >>> import temporalio
    >>> wl = build(temporalio)
    >>> wl.by_workload["one_activity"].__module__
    'bench.workloads_for_temporalio'

Why a module per SDK and not a function: temporalio refuses workflow classes
defined inside a function (it looks them up by qualified name), so the classes
must be module-level. A plain ``import bench.workloads`` gets the ``sagas``
definitions.

The only difference between the two is compensation: :class:`sagas.Saga` is
ours, and temporalio has no Saga, so for temporalio :class:`HandWrittenSaga`
(same ``async with`` shape, a dozen lines) runs the compensations by hand.
temporalio workers run these classes with ``UnsandboxedWorkflowRunner`` (see
``bench.worker``): our SDK has no sandbox, so both run workflow code alike.
"""

import importlib
import importlib.util
import sys
from dataclasses import dataclass, field
from datetime import timedelta
from types import ModuleType
from typing import Any

TASK_QUEUE = "bench"
STEP_TIMEOUT = timedelta(seconds=30)
SAGA_STEPS = ("car", "hotel", "flight")
_MODULE_PREFIX = "bench.workloads_for_"

SDK = __name__.removeprefix(_MODULE_PREFIX) if __name__.startswith(_MODULE_PREFIX) else "sagas"
"""Root module of the SDK these definitions are written against (``sagas`` or ``temporalio``)."""

workflow = importlib.import_module(f"{SDK}.workflow")
activity = importlib.import_module(f"{SDK}.activity")
common = importlib.import_module(f"{SDK}.common")
exceptions = importlib.import_module(f"{SDK}.exceptions")


@dataclass(frozen=True)
class Workloads:
    """The workflow classes and activities of one SDK, keyed by workload name."""

    sdk: str
    by_workload: dict[str, type]
    activities: list[Any] = field(default_factory=list)

    @property
    def workflows(self) -> list[type]:
        return list(self.by_workload.values())


def build(sdk: ModuleType) -> Workloads:
    """The workflows and activities written against ``sdk`` (the ``sagas`` or ``temporalio`` module)."""
    name = f"{_MODULE_PREFIX}{sdk.__name__}"
    module = sys.modules.get(name)
    if module is None:
        spec = importlib.util.spec_from_file_location(name, __file__)
        assert spec is not None and spec.loader is not None
        module = importlib.util.module_from_spec(spec)
        sys.modules[name] = module
        spec.loader.exec_module(module)
    workloads: Workloads = module.WORKLOADS
    return workloads


class HandWrittenSaga:
    """What ``sagas.Saga`` does, by hand, for an SDK without one: compensate in reverse on error."""

    def __init__(self) -> None:
        self._compensations: list[tuple[Any, Any, dict[str, Any]]] = []

    def add_compensation(self, compensation: Any, arg: Any, **options: Any) -> None:
        self._compensations.append((compensation, arg, options))

    async def __aenter__(self) -> "HandWrittenSaga":
        return self

    async def __aexit__(self, exc_type: Any, exc: BaseException | None, tb: Any) -> bool:
        if isinstance(exc, Exception):
            for compensation, arg, options in reversed(self._compensations):
                await workflow.execute_activity(compensation, arg, **options)
        return False


Saga: Any = getattr(importlib.import_module(SDK), "Saga", None) or HandWrittenSaga
STEP_RETRY = common.RetryPolicy(initial_interval=timedelta(milliseconds=100), maximum_attempts=3)


# -- activities ----------------------------------------------------------------


@activity.defn(name="echo")
async def echo(value: int) -> int:
    return value


def _booking(kind: str) -> Any:
    async def book(trip: dict[str, Any]) -> str:
        if kind == "flight" and trip.get("fail"):
            raise exceptions.ApplicationError("no flights to Atlantis", type="NoFlights", non_retryable=True)
        return f"{kind}-{trip['id']}"

    return activity.defn(name=f"book_{kind}")(book)


def _cancellation(kind: str) -> Any:
    async def cancel(trip: dict[str, Any]) -> str:
        return f"cancelled {kind}-{trip['id']}"

    return activity.defn(name=f"cancel_{kind}")(cancel)


BOOK = {kind: _booking(kind) for kind in SAGA_STEPS}
CANCEL = {kind: _cancellation(kind) for kind in SAGA_STEPS}


# -- workflows -----------------------------------------------------------------


@workflow.defn(name="OneActivity")
class OneActivity:
    """start -> one activity -> result."""

    @workflow.run
    async def run(self, value: int) -> int:
        result: int = await workflow.execute_activity(echo, value, start_to_close_timeout=STEP_TIMEOUT)
        return result


@workflow.defn(name="TripSaga")
class TripSaga:
    """Book car, hotel, flight; when the flight fails (``trip["fail"]``), cancel hotel then car."""

    @workflow.run
    async def run(self, trip: dict[str, Any]) -> str:
        try:
            async with Saga() as saga:
                for kind in SAGA_STEPS:
                    await workflow.execute_activity(
                        BOOK[kind], trip, start_to_close_timeout=STEP_TIMEOUT, retry_policy=STEP_RETRY
                    )
                    saga.add_compensation(CANCEL[kind], trip, start_to_close_timeout=STEP_TIMEOUT)
        except exceptions.ActivityError:
            return "compensated"
        return "booked"


@workflow.defn(name="Sleeper")
class Sleeper:
    """One durable timer of ``seconds``."""

    @workflow.run
    async def run(self, seconds: float) -> float:
        await workflow.sleep(seconds)
        return seconds


@workflow.defn(name="OpenSleeper")
class OpenSleeper:
    """Stays open until ``due`` (seconds since the epoch) on one durable timer; returns
    ``[workflow time when it started, workflow time when it woke up]`` so that the harness can
    tell the timer's lag (woke up - due) without a result call in flight per open workflow."""

    @workflow.run
    async def run(self, due: float) -> list[float]:
        started = workflow.now().timestamp()
        await workflow.sleep(max(0.001, due - started))
        return [started, workflow.now().timestamp()]


@workflow.defn(name="SignalWaiter")
class SignalWaiter:
    """Waits for the ``proceed`` signal, then returns its value."""

    def __init__(self) -> None:
        self.value: str | None = None

    @workflow.run
    async def run(self) -> str:
        await workflow.wait_condition(lambda: self.value is not None)
        assert self.value is not None
        return self.value

    @workflow.signal(name="proceed")
    def proceed(self, value: str) -> None:
        self.value = value

    @workflow.query(name="waiting")
    def waiting(self) -> bool:
        return self.value is None


WORKLOADS = Workloads(
    sdk=SDK,
    by_workload={
        "one_activity": OneActivity, "saga3": TripSaga, "timers": Sleeper, "signal": SignalWaiter, "open": OpenSleeper,
    },
    activities=[echo, *BOOK.values(), *CANCEL.values()],
)
