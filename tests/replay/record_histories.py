"""Record one JSON history per workflow shape into ``tests/replay/histories/``.

The files are frozen on purpose: replaying them against today's code is the
guard against determinism regressions. Re-record only after a deliberate,
replay-safe change in how histories are written::

    python -m tests.replay.record_histories
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from sagas.exceptions import ApplicationError
from sagas.worker._replayer import WorkflowHistory
from tests.sagas.runtime import workflows as w
from tests.sagas.runtime.fakeserver import HANG, FakeServer

HISTORIES = Path(__file__).parent / "histories"

REPLAY_WORKFLOWS: list[type] = [
    w.OneActivityWorkflow,
    w.GatherWorkflow,
    w.SleepWorkflow,
    w.ApprovalWorkflow,
    w.CounterWorkflow,
    w.CancellableWorkflow,
    w.TimerCancelWorkflow,
    w.ActivityFailureWorkflow,
    w.FailingWorkflow,
    w.ParentWorkflow,
    w.ChildWorkflow,
    w.LoopingWorkflow,
    w.PatchedWorkflowV2,
    w.LocalActivityWorkflow,
    w.DeterministicHelpersWorkflow,
    w.TripSagaWorkflow,
    w.ParallelSagaWorkflow,
    w.CancelledSagaWorkflow,
    w.SagaCompensationFailureWorkflow,
    w.WaitForTimeoutWorkflow,
    w.AbandonWorkflow,
    w.BufferedSignalWorkflow,
]
"""The workflows today's code registers; every recorded history must replay against them."""


def _booked(req: dict[str, Any]) -> dict[str, Any]:
    return {"ref": "R-1", "city": req["city"]}


def _sold_out(req: dict[str, Any]) -> None:
    raise ApplicationError("sold out", type="SoldOut", non_retryable=True)


def _ok(*_: Any) -> None:
    return None


def _echo(value: Any) -> Any:
    return value


def _failing_child() -> None:
    raise ApplicationError("child broke", type="Broken")


Driver = Callable[[FakeServer], Awaitable[None]]


async def _run(server: FakeServer) -> None:
    await server.run()


async def _signal_approve(server: FakeServer) -> None:
    await server.run_task()
    server.signal("approve", "ana")
    await server.run()


async def _updates(server: FakeServer) -> None:
    await server.run_task()
    server.update("add", 5, update_id="u-1")
    await server.run_task()
    server.update("add", -1, update_id="u-2")  # rejected: leaves no event
    server.resolve_outstanding()
    await server.run_task()
    server.signal("finish")
    await server.run()


async def _cancel_after_first_task(server: FakeServer) -> None:
    await server.run_task()
    server.resolve_outstanding()
    await server.run_task()
    server.cancel_workflow()
    await server.run()


async def _cancel_now(server: FakeServer) -> None:
    await server.run_task()
    server.cancel_workflow()
    await server.run()


async def _buffered(server: FakeServer) -> None:
    await server.run_task()
    server.signal("late", "one")
    server.signal("late", "two")
    await server.run()


async def _wait_for(server: FakeServer) -> None:
    await server.run_task()
    server.signal("wake")
    await server.run()


@dataclass
class Shape:
    name: str
    workflows: list[type]
    workflow_type: str
    args: list[Any] = field(default_factory=list)
    activities: dict[str, Callable[..., Any]] = field(default_factory=dict)
    children: dict[str, Callable[..., Any]] = field(default_factory=dict)
    local_activities: dict[str, Callable[..., Any]] = field(default_factory=dict)
    drive: Driver = _run


SHAPES = [
    Shape(
        "one_activity",
        [w.OneActivityWorkflow],
        "OneActivityWorkflow",
        [w.Booking("Lisbon")],
        {"book_car": _booked},
    ),
    Shape("gather", [w.GatherWorkflow], "GatherWorkflow", [["a", "b", "c"]], {"greet": lambda n: f"hi {n}"}),
    Shape("timers", [w.SleepWorkflow], "SleepWorkflow"),
    Shape("signal_wait_condition", [w.ApprovalWorkflow], "ApprovalWorkflow", [60], drive=_signal_approve),
    Shape("wait_condition_timeout", [w.ApprovalWorkflow], "ApprovalWorkflow", [60]),
    Shape("updates", [w.CounterWorkflow], "CounterWorkflow", activities={"greet": _echo}, drive=_updates),
    Shape(
        "cancel_activity",
        [w.CancellableWorkflow],
        "CancellableWorkflow",
        [w.Booking("Lisbon")],
        {"book_car": lambda r: HANG, "cancel_car": _ok},
        drive=_cancel_now,
    ),
    Shape(
        "cancel_timer",
        [w.TimerCancelWorkflow],
        "TimerCancelWorkflow",
        activities={"greet": _echo},
        drive=_cancel_now,
    ),
    Shape(
        "activity_failure",
        [w.ActivityFailureWorkflow],
        "ActivityFailureWorkflow",
        [w.Booking("X")],
        {"book_car": _sold_out},
    ),
    Shape("workflow_failure", [w.FailingWorkflow], "FailingWorkflow"),
    Shape(
        "child_workflows",
        [w.ParentWorkflow, w.ChildWorkflow],
        "ParentWorkflow",
        ["ana"],
        children={"ChildWorkflow": lambda n: f"child {n}", "FailingChild": _failing_child},
    ),
    Shape("continue_as_new", [w.LoopingWorkflow], "LoopingWorkflow", [0, 5], {"greet": _echo}),
    Shape(
        "patched_new",
        [w.PatchedWorkflowV2],
        "PatchedWorkflow",
        activities={"greet": _echo, "book_car": _booked},
    ),
    Shape("patched_old", [w.PatchedWorkflowV1], "PatchedWorkflow", activities={"greet": _echo}),
    Shape(
        "local_activity",
        [w.LocalActivityWorkflow],
        "LocalActivityWorkflow",
        ["EUR"],
        local_activities={"lookup_rate": w.lookup_rate},
    ),
    Shape("helpers", [w.DeterministicHelpersWorkflow], "DeterministicHelpersWorkflow"),
    Shape(
        "saga_compensation",
        [w.TripSagaWorkflow],
        "TripSagaWorkflow",
        [w.Booking("Lisbon")],
        {
            "book_car": _booked,
            "book_hotel": _booked,
            "book_flight": _sold_out,
            "cancel_car": _ok,
            "cancel_hotel": _ok,
        },
    ),
    Shape(
        "saga_success",
        [w.TripSagaWorkflow],
        "TripSagaWorkflow",
        [w.Booking("Lisbon")],
        {"book_car": _booked, "book_hotel": _booked, "book_flight": _booked},
    ),
    Shape(
        "saga_parallel",
        [w.ParallelSagaWorkflow],
        "ParallelSagaWorkflow",
        [w.Booking("Lisbon")],
        {
            "book_car": _booked,
            "book_hotel": _booked,
            "book_flight": _sold_out,
            "cancel_car": _ok,
            "cancel_hotel": _ok,
        },
    ),
    Shape(
        "saga_cancelled",
        [w.CancelledSagaWorkflow],
        "CancelledSagaWorkflow",
        [w.Booking("Lisbon")],
        {"book_car": _booked, "book_hotel": lambda r: HANG, "cancel_car": _ok},
        drive=_cancel_after_first_task,
    ),
    Shape(
        "saga_compensation_failure",
        [w.SagaCompensationFailureWorkflow],
        "SagaCompensationFailureWorkflow",
        [w.Booking("Lisbon")],
        {
            "book_car": _booked,
            "book_hotel": _booked,
            "book_flight": _sold_out,
            "cancel_car": _ok,
            "cancel_hotel": _sold_out,
        },
    ),
    Shape(
        "wait_for", [w.WaitForTimeoutWorkflow], "WaitForTimeoutWorkflow", activities={"greet": lambda n: HANG}
    ),
    Shape("abandon", [w.AbandonWorkflow], "AbandonWorkflow", activities={"greet": lambda n: HANG}),
    Shape("buffered_signals", [w.BufferedSignalWorkflow], "BufferedSignalWorkflow", drive=_buffered),
]


async def record(shape: Shape) -> WorkflowHistory:
    """Run one shape on the fake server and return its history."""
    server = FakeServer(
        shape.workflows,
        activities=shape.activities,
        children=shape.children,
        local_activities=shape.local_activities,
        workflow_id=f"replay-{shape.name}",
        run_id=f"run-{shape.name}",
    )
    server.start(shape.workflow_type, *shape.args)
    await shape.drive(server)
    assert server.close_event is not None, f"{shape.name} did not close:\n{server.describe()}"
    return server.to_history()


async def main() -> None:
    HISTORIES.mkdir(exist_ok=True)
    for shape in SHAPES:
        history = await record(shape)
        (HISTORIES / f"{shape.name}.json").write_text(history.to_json() + "\n")
        print(f"recorded {shape.name}: {len(history.events)} events")


if __name__ == "__main__":
    asyncio.run(main())
