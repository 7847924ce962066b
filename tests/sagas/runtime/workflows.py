"""Sample workflows used by the runtime and replay tests (one per workflow shape)."""

from __future__ import annotations

import asyncio
from dataclasses import dataclass
from datetime import timedelta
from typing import Any

from sagas import Saga, workflow
from sagas.common import RetryPolicy
from sagas.exceptions import ActivityError, ApplicationError, ChildWorkflowError

T = timedelta(seconds=30)


def activity_defn(fn: Any) -> Any:
    """Mark a function as an activity the way ``@activity.defn`` does (name attribute only)."""
    fn.__sagas_activity_name__ = fn.__name__
    return fn


@dataclass
class Booking:
    city: str
    nights: int = 1


@dataclass
class Confirmation:
    ref: str
    city: str


@activity_defn
async def book_car(req: Booking) -> Confirmation:
    raise NotImplementedError  # answered by the fake server


@activity_defn
async def book_hotel(req: Booking) -> Confirmation:
    raise NotImplementedError


@activity_defn
async def book_flight(req: Booking) -> Confirmation:
    raise NotImplementedError


@activity_defn
async def cancel_car(req: Booking) -> None:
    raise NotImplementedError


@activity_defn
async def cancel_hotel(req: Booking) -> None:
    raise NotImplementedError


@activity_defn
async def cancel_flight(req: Booking) -> None:
    raise NotImplementedError


@activity_defn
async def greet(name: str) -> str:
    raise NotImplementedError


@workflow.defn
class OneActivityWorkflow:
    @workflow.run
    async def run(self, req: Booking) -> Confirmation:
        conf = await workflow.execute_activity(book_car, req, start_to_close_timeout=T)
        assert isinstance(conf, Confirmation)
        return conf


@workflow.defn(name="OneActivityWorkflow")
class OneActivityWorkflowChanged:
    """Same type name, but books a hotel instead of a car: not replay-safe."""

    @workflow.run
    async def run(self, req: Booking) -> Confirmation:
        result: Confirmation = await workflow.execute_activity(book_hotel, req, start_to_close_timeout=T)
        return result


@workflow.defn
class GatherWorkflow:
    @workflow.run
    async def run(self, names: list[str]) -> list[str]:
        results = await asyncio.gather(
            *(workflow.execute_activity(greet, n, start_to_close_timeout=T) for n in names)
        )
        return list(results)


@workflow.defn
class SleepWorkflow:
    @workflow.run
    async def run(self) -> dict[str, str]:
        start = workflow.now()
        await workflow.sleep(timedelta(seconds=10))
        await asyncio.sleep(5)
        return {"start": start.isoformat(), "end": workflow.now().isoformat()}


@workflow.defn
class ApprovalWorkflow:
    """Waits for an ``approve`` signal (with a timeout); answers a ``status`` query."""

    def __init__(self) -> None:
        self.approved_by: str | None = None
        self.status_text = "waiting"

    @workflow.run
    async def run(self, timeout_s: float) -> str:
        try:
            await workflow.wait_condition(lambda: self.approved_by is not None, timeout=timeout_s)
        except TimeoutError:
            self.status_text = "timed out"
            return "timed out"
        self.status_text = f"approved by {self.approved_by}"
        return self.status_text

    @workflow.signal
    def approve(self, who: str) -> None:
        self.approved_by = who

    @workflow.query
    def status(self) -> str:
        return self.status_text


@workflow.defn
class CounterWorkflow:
    """Updates change a counter (validator rejects negatives); a ``finish`` signal ends it."""

    def __init__(self) -> None:
        self.value = 0
        self.done = False

    @workflow.run
    async def run(self) -> int:
        await workflow.wait_condition(lambda: self.done)
        return self.value

    @workflow.update
    async def add(self, amount: int) -> int:
        await workflow.execute_activity(greet, f"add {amount}", start_to_close_timeout=T)
        self.value += amount
        return self.value

    @add.validator
    def validate_add(self, amount: int) -> None:
        if amount < 0:
            raise ValueError("amount must not be negative")

    @workflow.signal
    def finish(self) -> None:
        self.done = True


@workflow.defn
class CancellableWorkflow:
    """Runs a long activity; when cancelled, runs a cleanup activity and re-raises."""

    @workflow.run
    async def run(self, req: Booking) -> str:
        try:
            await workflow.execute_activity(book_car, req, start_to_close_timeout=T)
        except ActivityError:
            await workflow.execute_activity(cancel_car, req, start_to_close_timeout=T)
            raise
        return "done"


@workflow.defn
class TimerCancelWorkflow:
    """Sleeps; on cancellation records that it cleaned up and re-raises."""

    @workflow.run
    async def run(self) -> str:
        try:
            await workflow.sleep(3600)
        except asyncio.CancelledError:
            await workflow.execute_activity(greet, "cleanup", start_to_close_timeout=T)
            raise
        return "slept"


@workflow.defn
class ActivityFailureWorkflow:
    @workflow.run
    async def run(self, req: Booking) -> dict[str, Any]:
        try:
            await workflow.execute_activity(
                book_car, req, start_to_close_timeout=T, retry_policy=RetryPolicy(maximum_attempts=3)
            )
        except ActivityError as err:
            cause = err.cause
            return {
                "error": type(err).__name__,
                "cause": type(cause).__name__,
                "cause_type": getattr(cause, "type", None),
                "message": getattr(cause, "message", ""),
            }
        return {}


@workflow.defn
class FailingWorkflow:
    @workflow.run
    async def run(self) -> None:
        raise ApplicationError("no cars left", {"city": "Lisbon"}, type="SoldOut", non_retryable=True)


@workflow.defn
class BuggyWorkflow:
    @workflow.run
    async def run(self) -> None:
        raise TypeError("a bug")


@workflow.defn
class ChildWorkflow:
    @workflow.run
    async def run(self, name: str) -> str:
        return f"child {name}"


@workflow.defn
class ParentWorkflow:
    @workflow.run
    async def run(self, name: str) -> dict[str, Any]:
        handle = await workflow.start_child_workflow(ChildWorkflow, name, id=f"child-{name}")
        await handle.signal("poke", 1)
        result = await handle
        try:
            await workflow.execute_child_workflow("FailingChild", id="child-fail")
        except ChildWorkflowError as err:
            failed = type(err.cause).__name__
        await workflow.get_external_workflow_handle("other").signal("hello", "there")
        return {
            "result": result,
            "child_id": handle.id,
            "run_id": handle.first_execution_run_id,
            "failed": failed,
        }


@workflow.defn
class LoopingWorkflow:
    """Counts to ``limit`` by continuing as new every ``per_run`` iterations."""

    @workflow.run
    async def run(self, count: int, limit: int) -> int:
        while count < limit:
            count += 1
            await workflow.execute_activity(greet, str(count), start_to_close_timeout=T)
            if count % 2 == 0 and count < limit:
                workflow.continue_as_new(count, limit)
        return count


@workflow.defn(name="PatchedWorkflow")
class PatchedWorkflowV1:
    @workflow.run
    async def run(self) -> str:
        await workflow.execute_activity(greet, "one", start_to_close_timeout=T)
        await workflow.execute_activity(greet, "old", start_to_close_timeout=T)
        return "v1"


@workflow.defn(name="PatchedWorkflow")
class PatchedWorkflowV2:
    @workflow.run
    async def run(self) -> str:
        await workflow.execute_activity(greet, "one", start_to_close_timeout=T)
        if workflow.patched("new-greeting"):
            await workflow.execute_activity(book_car, Booking("Porto"), start_to_close_timeout=T)
            return "v2-new"
        await workflow.execute_activity(greet, "old", start_to_close_timeout=T)
        return "v2-old"


@workflow.defn(name="PatchedWorkflow")
class PatchedWorkflowV3:
    """The patch is deprecated: every run takes the new path, no marker is recorded."""

    @workflow.run
    async def run(self) -> str:
        await workflow.execute_activity(greet, "one", start_to_close_timeout=T)
        workflow.deprecate_patch("new-greeting")
        await workflow.execute_activity(book_car, Booking("Porto"), start_to_close_timeout=T)
        return "v2-new"


LOCAL_CALLS: list[str] = []


@activity_defn
def lookup_rate(currency: str) -> float:
    LOCAL_CALLS.append(currency)
    rates = {"EUR": 1.1, "GBP": 1.3}
    if currency not in rates:
        raise ApplicationError(f"unknown currency {currency}", type="UnknownCurrency", non_retryable=True)
    return rates[currency]


@workflow.defn
class LocalActivityWorkflow:
    @workflow.run
    async def run(self, currency: str) -> float:
        rate: float = await workflow.execute_local_activity(
            lookup_rate, currency, start_to_close_timeout=timedelta(seconds=5)
        )
        await workflow.sleep(1)
        return rate * 2


@workflow.defn
class DeterministicHelpersWorkflow:
    @workflow.run
    async def run(self) -> dict[str, Any]:
        info = workflow.info()
        workflow.logger.info("running helpers")
        workflow.upsert_search_attributes({"CustomerId": "c-42"})
        return {
            "random": workflow.random().randint(0, 1_000_000),
            "uuid": str(workflow.uuid4()),
            "time": workflow.time(),
            "workflow_id": info.workflow_id,
            "run_id": info.run_id,
            "workflow_type": info.workflow_type,
            "task_queue": info.task_queue,
            "namespace": info.namespace,
            "attempt": info.attempt,
            "replaying": workflow.unsafe.is_replaying(),
        }


@workflow.defn
class TripSagaWorkflow:
    """Books car, hotel, flight; compensates what was booked when a step fails."""

    @workflow.run
    async def run(self, req: Booking) -> str:
        async with Saga() as saga:
            await workflow.execute_activity(book_car, req, start_to_close_timeout=T)
            saga.add_compensation(cancel_car, req, start_to_close_timeout=T)
            await workflow.execute_activity(book_hotel, req, start_to_close_timeout=T)
            saga.add_compensation(cancel_hotel, req, start_to_close_timeout=T)
            await workflow.execute_activity(book_flight, req, start_to_close_timeout=T)
            saga.add_compensation(cancel_flight, req, start_to_close_timeout=T)
        return "booked"


@workflow.defn
class ParallelSagaWorkflow:
    @workflow.run
    async def run(self, req: Booking) -> str:
        saga = Saga(parallel=True)
        try:
            await workflow.execute_activity(book_car, req, start_to_close_timeout=T)
            saga.add_compensation(cancel_car, req, start_to_close_timeout=T)
            await workflow.execute_activity(book_hotel, req, start_to_close_timeout=T)
            saga.add_compensation(cancel_hotel, req, start_to_close_timeout=T)
            await workflow.execute_activity(book_flight, req, start_to_close_timeout=T)
        except ActivityError:
            await saga.compensate()
            return "compensated"
        return "booked"


@workflow.defn
class InlineCompensationSagaWorkflow:
    def __init__(self) -> None:
        self.undone: list[str] = []

    @workflow.run
    async def run(self, req: Booking) -> list[str]:
        async def undo(what: str) -> None:
            self.undone.append(what)

        try:
            async with Saga() as saga:
                await workflow.execute_activity(book_car, req, start_to_close_timeout=T)
                saga.add_compensation(undo, "car")
                saga.add_compensation(lambda: self.undone.append("sync"))
                await workflow.execute_activity(book_hotel, req, start_to_close_timeout=T)
        except ActivityError:
            return self.undone
        return []


@workflow.defn
class CancelledSagaWorkflow:
    """Books a car, then waits for a hotel that never answers; cancelled -> cancel the car."""

    @workflow.run
    async def run(self, req: Booking) -> str:
        async with Saga() as saga:
            await workflow.execute_activity(book_car, req, start_to_close_timeout=T)
            saga.add_compensation(cancel_car, req, start_to_close_timeout=T)
            await workflow.execute_activity(book_hotel, req, start_to_close_timeout=T)
        return "booked"


@workflow.defn
class SagaCompensationFailureWorkflow:
    @workflow.run
    async def run(self, req: Booking) -> str:
        async with Saga() as saga:
            await workflow.execute_activity(book_car, req, start_to_close_timeout=T)
            saga.add_compensation(cancel_car, req, start_to_close_timeout=T)
            await workflow.execute_activity(book_hotel, req, start_to_close_timeout=T)
            saga.add_compensation(cancel_hotel, req, start_to_close_timeout=T)
            await workflow.execute_activity(book_flight, req, start_to_close_timeout=T)
        return "booked"


@workflow.defn
class WaitForTimeoutWorkflow:
    """asyncio.wait_for: the timeout is a durable timer.

    Around an activity, the timeout cancels the activity, which (as in
    temporalio) raises ActivityError(cause=CancelledError) out of wait_for.
    """

    def __init__(self) -> None:
        self.event = asyncio.Event()

    @workflow.run
    async def run(self) -> list[str]:
        out = []
        try:
            await asyncio.wait_for(self.event.wait(), timeout=60)
            out.append("signalled")
        except TimeoutError:
            out.append("timed out")
        try:
            await asyncio.wait_for(
                workflow.execute_activity(greet, "slow", start_to_close_timeout=T), timeout=60
            )
            out.append("activity in time")
        except ActivityError as err:
            out.append(f"activity {type(err.cause).__name__}")
        return out

    @workflow.signal
    def wake(self) -> None:
        self.event.set()


@workflow.defn
class AbandonWorkflow:
    @workflow.run
    async def run(self) -> list[str]:
        seen = []
        handle = workflow.start_activity(greet, "forever", start_to_close_timeout=T)
        await workflow.sleep(1)
        handle.cancel()
        try:
            await handle
        except ActivityError as err:
            seen.append(type(err.cause).__name__)
        # Cancelled in the same activation it was started in: never sent at all.
        unsent = workflow.start_activity(greet, "never", start_to_close_timeout=T)
        unsent.cancel()
        try:
            await unsent
        except ActivityError as err:
            seen.append(type(err.cause).__name__)
        return seen


@workflow.defn
class BufferedSignalWorkflow:
    """Signals arriving before a handler is set are buffered and delivered when it is."""

    def __init__(self) -> None:
        self.received: list[str] = []

    @workflow.run
    async def run(self) -> list[str]:
        await workflow.sleep(1)
        workflow.set_signal_handler("late", self.received.append)
        await workflow.wait_condition(lambda: len(self.received) >= 2)
        return self.received


@workflow.defn
class BlockingWorkflow:
    @workflow.run
    async def run(self) -> None:
        import time

        time.sleep(0.3)
