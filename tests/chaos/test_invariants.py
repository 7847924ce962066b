"""The invariant checker catches what it claims to: fed broken histories, ledgers and DLQs."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

import pytest

from orchestrator.api import events as E
from orchestrator.api.common import Failure
from tests.chaos.invariants import (
    LedgerRow,
    SagaSpec,
    check_dead_letters,
    check_history,
    check_ledgers_known,
    check_replay,
    check_saga,
)

pytestmark = pytest.mark.chaos

T0 = datetime(2026, 1, 1, tzinfo=UTC)
ROME = SagaSpec("trip-1", "Rome")
ATLANTIS = SagaSpec("trip-2", "Atlantis")


class History:
    """Builds a saga-shaped history with contiguous event ids (not a replayable one)."""

    def __init__(self) -> None:
        self.events: list[E.HistoryEvent] = []
        self.add(E.WorkflowExecutionStarted, workflow_type="TripBooking", task_queue="trips")

    def add(self, cls: type[Any], **fields: Any) -> Any:
        event = cls(event_id=len(self.events) + 1, event_time=T0, **fields)
        self.events.append(event)
        return event

    def activity(self, activity_type: str, result: Any = None, failure: Failure | None = None) -> int:
        sid: int = self.add(
            E.ActivityTaskScheduled,
            activity_id=str(len(self.events)),
            activity_type=activity_type,
            task_queue="q",
        ).event_id
        started = self.add(E.ActivityTaskStarted, scheduled_event_id=sid).event_id
        if failure is None:
            self.add(E.ActivityTaskCompleted, scheduled_event_id=sid, started_event_id=started, result=result)
        else:
            self.add(E.ActivityTaskFailed, scheduled_event_id=sid, started_event_id=started, failure=failure)
        return sid


def booked(ids: dict[str, str]) -> History:
    h = History()
    for kind in ("car", "hotel", "flight"):
        h.activity(f"book_{kind}", {"booking_id": ids[kind]})
    trip = {"destination": "Rome", **{f"{k}_booking": v for k, v in ids.items()}}
    h.add(E.WorkflowExecutionCompleted, result={"status": "booked", "trip": trip})
    return h


def compensated() -> History:
    h = History()
    h.activity("book_car", {"booking_id": "c1"})
    h.activity("book_hotel", {"booking_id": "h1"})
    no_flight = Failure(message="no flight", type="NoAvailability", non_retryable=True)
    h.activity("book_flight", failure=no_flight)
    h.activity("cancel_hotel", {"cancelled": True})
    h.activity("cancel_car", {"cancelled": True})
    h.add(
        E.WorkflowExecutionFailed,
        failure=Failure(message="activity failed", kind="activity", cause=no_flight),
    )
    return h


IDS = {"car": "c1", "hotel": "h1", "flight": "f1"}
RUN = [{"status": "Completed"}]
FAILED_RUN = [{"status": "Failed"}]


def ledgers(wid: str, status: dict[str, str], ids: dict[str, str] = IDS) -> dict[str, list[LedgerRow]]:
    return {k: [LedgerRow(wid, ids.get(k, ""), s, "Rome")] if s else [] for k, s in status.items()}


def test_a_good_completed_saga_and_a_good_compensated_saga_pass() -> None:
    assert check_history("trip-1", booked(IDS).events) == []
    assert check_saga(ROME, booked(IDS).events, RUN, ledgers("trip-1", dict.fromkeys(IDS, "booked"))) == []
    comp = compensated().events
    assert check_history("trip-2", comp) == []
    cancelled = ledgers("trip-2", {"car": "cancelled", "hotel": "cancelled", "flight": ""})
    assert check_saga(ATLANTIS, comp, FAILED_RUN, cancelled) == []


def test_undoing_the_step_in_flight_too_is_allowed_but_nothing_twice() -> None:
    h = History()
    h.activity("book_car", {"booking_id": "c1"})
    h.activity("book_hotel", failure=Failure(message="gone", type="Unavailable"))
    h.activity("cancel_hotel", {"cancelled": True})  # compensation registered before the step
    h.activity("cancel_car", {"cancelled": True})
    h.add(E.WorkflowExecutionFailed, failure=Failure(message="activity failed", type="Unavailable"))
    tombstone = ledgers("trip-1", {"car": "cancelled", "hotel": "cancelled", "flight": ""})
    assert check_saga(ROME, h.events, FAILED_RUN, tombstone) == []
    h.events.insert(-1, h.events[-2])  # cancel_car completed twice
    out = check_saga(ROME, h.events, FAILED_RUN, tombstone)
    assert any("each once" in v for v in out), out


def test_event_ids_must_be_contiguous_and_unique() -> None:
    events = booked(IDS).events
    gap = events[:3] + [e.model_copy(update={"event_id": e.event_id + 1}) for e in events[3:]]
    dup = events[:3] + [events[2]] + events[3:]
    assert any("not 1.." in v for v in check_history("w", gap))
    assert any("duplicated [3]" in v for v in check_history("w", dup))


def test_exactly_one_close_event_and_it_is_last() -> None:
    h = booked(IDS)
    h.add(E.WorkflowExecutionFailed, failure=Failure(message="late"))
    assert any("2 close events" in v for v in check_history("w", h.events))
    events = booked(IDS).events
    close_not_last = [*events[:-2], events[-1], events[-2]]
    assert any("not the last" in v for v in check_history("w", close_not_last))


def test_an_activity_closed_twice_is_a_duplicate_applied() -> None:
    h = booked(IDS)
    close = h.events.pop()
    assert isinstance(close, E.WorkflowExecutionCompleted)
    h.add(E.ActivityTaskFailed, scheduled_event_id=2, started_event_id=3, failure=Failure(message="dup"))
    h.add(E.WorkflowExecutionCompleted, result=close.result)
    assert any("closed 2 times" in v for v in check_history("w", h.events))


def test_ledgers_must_match_the_outcome() -> None:
    events = booked(IDS).events
    cancelled_car = ledgers("trip-1", {"car": "cancelled", "hotel": "booked", "flight": "booked"})
    assert any("car ledger has" in v for v in check_saga(ROME, events, RUN, cancelled_car))
    other_ids = ledgers("trip-1", dict.fromkeys(IDS, "booked"), {"car": "XX", "hotel": "h1", "flight": "f1"})
    assert any("returned car booking 'c1'" in v for v in check_saga(ROME, events, RUN, other_ids))
    left_booked = ledgers("trip-2", {"car": "cancelled", "hotel": "booked", "flight": ""})
    assert any(
        "hotel is still booked" in v
        for v in check_saga(ATLANTIS, compensated().events, FAILED_RUN, left_booked)
    )
    double = {"car": [LedgerRow("trip-1", "c1", "booked", ""), LedgerRow("trip-1", "c2", "booked", "")]}
    assert any("double booking" in v for v in check_saga(ROME, events, RUN, double))


def test_the_saga_shape_and_outcome() -> None:
    # a compensated saga that forgot the car
    h = compensated()
    h.events = [e for e in h.events if getattr(e, "activity_type", "") != "cancel_car"]
    h.events = [e.model_copy(update={"event_id": i}) for i, e in enumerate(h.events, 1)]
    out = check_saga(ATLANTIS, h.events, FAILED_RUN, {})
    assert any("want ['hotel', 'car']" in v for v in out), out
    # Atlantis never completes; a served destination fails only on a transient give-up
    assert any(
        "never served" in v
        for v in check_saga(
            ATLANTIS, booked(IDS).events, RUN, ledgers("trip-2", dict.fromkeys(IDS, "booked"))
        )
    )
    assert any("although Rome is served" in v for v in check_saga(ROME, compensated().events, FAILED_RUN, {}))
    assert any(
        "2 runs" in v
        for v in check_saga(
            ROME, booked(IDS).events, RUN * 2, ledgers("trip-1", dict.fromkeys(IDS, "booked"))
        )
    )
    assert any(
        "visibility says" in v
        for v in check_saga(
            ROME, booked(IDS).events, FAILED_RUN, ledgers("trip-1", dict.fromkeys(IDS, "booked"))
        )
    )
    assert any("not closed" in v for v in check_saga(ROME, booked(IDS).events[:-1], RUN, {}))


def test_unknown_ledger_rows_and_dead_letters() -> None:
    assert check_ledgers_known([ROME], {"car": [LedgerRow("ghost", "g", "booked", "")]}) != []
    dlq = [{"queue": "sagas.completions", "reason": "max_deliveries", "body": "a real reply"}]
    assert any("nobody poisoned" in v for v in check_dead_letters(dlq, ["poison"], expect_poison=False))
    assert any("was not dead-lettered" in v for v in check_dead_letters([], ["poison"], expect_poison=True))
    assert (
        check_dead_letters([{"queue": "q", "reason": "r", "body": "poison"}], ["poison"], expect_poison=True)
        == []
    )


async def test_a_history_that_does_not_replay_is_reported() -> None:
    h = History()
    h.add(E.WorkflowTaskScheduled, task_queue="trips")
    h.add(E.WorkflowTaskStarted, scheduled_event_id=2)
    h.add(E.WorkflowTaskCompleted, scheduled_event_id=2, started_event_id=3)
    h.add(
        E.ActivityTaskScheduled, activity_id="1", activity_type="book_hotel", task_queue="hotels"
    )  # code books a car first
    out = await check_replay({"trip-1": h.events}, {})
    assert len(out) == 1 and "does not replay" in out[0], out
