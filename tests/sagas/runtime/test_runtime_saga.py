"""sagas.Saga: reverse / parallel compensation, markers, cancellation, compensation failures."""

from __future__ import annotations

from typing import Any

import pytest

from orchestrator.api import commands as cmd
from orchestrator.api import events as ev
from sagas.exceptions import ApplicationError
from tests.sagas.runtime.fakeserver import HANG, FakeServer
from tests.sagas.runtime.workflows import (
    Booking,
    CancelledSagaWorkflow,
    InlineCompensationSagaWorkflow,
    ParallelSagaWorkflow,
    SagaCompensationFailureWorkflow,
    TripSagaWorkflow,
)


def booked(req: dict[str, Any]) -> dict[str, Any]:
    return {"ref": "R", "city": req["city"]}


def sold_out(req: dict[str, Any]) -> None:
    raise ApplicationError("sold out", type="SoldOut", non_retryable=True)


def ok(req: dict[str, Any]) -> None:
    return None


@pytest.fixture(params=[True, False], ids=["cached", "replay-every-task"])
def cached(request: pytest.FixtureRequest) -> bool:
    return bool(request.param)


def saga_markers(server: FakeServer) -> list[tuple[str, str, int]]:
    return [
        (m.details["event"], m.details["name"], m.details["index"])
        for m in server.events_of(ev.MarkerRecorded)
        if m.marker_name == "saga"
    ]


def scheduled(server: FakeServer) -> list[str]:
    return [e.activity_type for e in server.events_of(ev.ActivityTaskScheduled)]


async def test_success_runs_no_compensation(cached: bool) -> None:
    acts = {n: booked for n in ("book_car", "book_hotel", "book_flight")}
    server = FakeServer([TripSagaWorkflow], activities=acts, cached=cached)
    server.start("TripSagaWorkflow", Booking("Lisbon"))
    await server.run()
    assert server.result == "booked"
    assert scheduled(server) == ["book_car", "book_hotel", "book_flight"]
    assert saga_markers(server) == [
        ("step_registered", "cancel_car", 0),
        ("step_registered", "cancel_hotel", 1),
        ("step_registered", "cancel_flight", 2),
    ]


async def test_failure_compensates_in_reverse_order(cached: bool) -> None:
    acts = {
        "book_car": booked,
        "book_hotel": booked,
        "book_flight": sold_out,
        "cancel_car": ok,
        "cancel_hotel": ok,
    }
    server = FakeServer([TripSagaWorkflow], activities=acts, cached=cached)
    server.start("TripSagaWorkflow", Booking("Lisbon"))
    await server.run()
    assert scheduled(server) == ["book_car", "book_hotel", "book_flight", "cancel_hotel", "cancel_car"]
    # The original error fails the workflow after compensation.
    assert isinstance(server.close_event, ev.WorkflowExecutionFailed)
    assert server.close_event.failure.kind == "activity"
    assert server.close_event.failure.cause is not None
    assert server.close_event.failure.cause.type == "SoldOut"
    assert saga_markers(server)[2:] == [
        ("compensation_started", "cancel_hotel", 1),
        ("compensation_completed", "cancel_hotel", 1),
        ("compensation_started", "cancel_car", 0),
        ("compensation_completed", "cancel_car", 0),
    ]
    markers = [m for m in server.events_of(ev.MarkerRecorded) if m.marker_name == "saga"]
    assert {m.details["saga_id"] for m in markers} == {"saga-1"}
    # Compensations get the default "retry forever, capped at 60s" policy.
    comp = [e for e in server.events_of(ev.ActivityTaskScheduled) if e.activity_type == "cancel_car"][0]
    assert comp.retry_policy is not None
    assert comp.retry_policy.maximum_attempts == 0 and comp.retry_policy.maximum_interval == 60.0


async def test_parallel_compensation(cached: bool) -> None:
    acts = {"book_car": booked, "book_hotel": booked, "book_flight": sold_out}
    server = FakeServer([ParallelSagaWorkflow], activities=acts, cached=cached)
    server.start("ParallelSagaWorkflow", Booking("Lisbon"))
    for _ in range(4):
        await server.run_task()
        server.resolve_outstanding()
    # Both compensations were scheduled in the same workflow task, before either finished.
    last_task = server.commands[-1]
    assert [c.activity_type for c in last_task if isinstance(c, cmd.ScheduleActivityTask)] == [
        "cancel_hotel",
        "cancel_car",
    ]
    server.activities.update({"cancel_car": ok, "cancel_hotel": ok})
    await server.run()
    assert server.result == "compensated"


async def test_inline_callable_compensations() -> None:
    server = FakeServer(
        [InlineCompensationSagaWorkflow], activities={"book_car": booked, "book_hotel": sold_out}
    )
    server.start("InlineCompensationSagaWorkflow", Booking("Lisbon"))
    await server.run()
    assert server.result == ["sync", "car"]
    assert scheduled(server) == ["book_car", "book_hotel"]


async def test_compensation_runs_when_workflow_is_cancelled(cached: bool) -> None:
    acts = {"book_car": booked, "book_hotel": lambda r: HANG, "cancel_car": ok}
    server = FakeServer([CancelledSagaWorkflow], activities=acts, cached=cached)
    server.start("CancelledSagaWorkflow", Booking("Lisbon"))
    await server.run_task()
    server.resolve_outstanding()
    await server.run_task()  # book_hotel scheduled and hangs
    server.cancel_workflow()
    commands = await server.run_task()
    types = [type(c).__name__ for c in commands]
    assert types[0] == "RequestCancelActivityTask"
    assert "ScheduleActivityTask" in types  # cancel_car, despite the cancellation
    await server.run()
    assert isinstance(server.close_event, ev.WorkflowExecutionCanceled)
    assert "cancel_car" in scheduled(server)
    assert ("compensation_completed", "cancel_car", 0) in saga_markers(server)


async def test_cancel_during_compensation_is_shielded() -> None:
    acts = {"book_car": booked, "book_hotel": booked, "book_flight": sold_out, "cancel_car": ok}
    acts["cancel_hotel"] = lambda r: HANG
    server = FakeServer([TripSagaWorkflow], activities=acts)
    server.start("TripSagaWorkflow", Booking("Lisbon"))
    for _ in range(4):
        await server.run_task()
        server.resolve_outstanding()
    assert scheduled(server)[-1] == "cancel_hotel"
    server.cancel_workflow()
    commands = await server.run_task()
    assert not [c for c in commands if isinstance(c, cmd.RequestCancelActivityTask)]
    server.complete_activity("cancel_hotel")
    await server.run()
    assert scheduled(server)[-2:] == ["cancel_hotel", "cancel_car"]
    assert isinstance(server.close_event, ev.WorkflowExecutionCanceled)


async def test_compensation_failure_keeps_going_then_raises(cached: bool) -> None:
    def broken(req: dict[str, Any]) -> None:
        raise ApplicationError("cannot undo", type="Stuck", non_retryable=True)

    acts = {
        "book_car": booked,
        "book_hotel": booked,
        "book_flight": sold_out,
        "cancel_hotel": broken,
        "cancel_car": ok,
    }
    server = FakeServer([SagaCompensationFailureWorkflow], activities=acts, cached=cached)
    server.start("SagaCompensationFailureWorkflow", Booking("Lisbon"))
    await server.run()
    assert scheduled(server)[-2:] == ["cancel_hotel", "cancel_car"]
    assert isinstance(server.close_event, ev.WorkflowExecutionFailed)
    failure = server.close_event.failure
    assert failure.type == "SagaCompensationError"
    assert failure.details == ["cancel_hotel"]
    assert failure.cause is not None and failure.cause.kind == "activity"
    assert failure.cause.cause is not None and failure.cause.cause.type == "Stuck"
    assert ("compensation_failed", "cancel_hotel", 1) in saga_markers(server)
