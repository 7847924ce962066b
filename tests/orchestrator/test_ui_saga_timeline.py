"""The web UI's saga timeline, drawn from histories the SDK's ``Saga`` really recorded.

The histories are the replay suite's (``tests/replay/histories``), so a change
in what ``sagas.Saga`` records shows up here as well as in replay.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from orchestrator.api.events import HistoryEvent, parse_event
from orchestrator.frontend.ui import _saga_section, _saga_timeline

HISTORIES = Path(__file__).parent.parent / "replay" / "histories"


def history(name: str) -> list[HistoryEvent]:
    return [parse_event(e) for e in json.loads((HISTORIES / f"{name}.json").read_text())["events"]]


@pytest.mark.parametrize(
    ("name", "state", "trigger", "steps"),
    [
        (
            "saga_success",
            "steps done",
            "",
            [("book_car", "cancel_car", "done"), ("book_hotel", "cancel_hotel", "done"), ("book_flight", "cancel_flight", "done")],
        ),
        (
            "saga_compensation",
            "compensated",
            "book_flight failed: SoldOut: sold out",
            [("book_car", "cancel_car", "compensated"), ("book_hotel", "cancel_hotel", "compensated")],
        ),
        (
            "saga_compensation_failure",
            "compensation failed",
            "book_flight failed: SoldOut: sold out",
            [("book_car", "cancel_car", "compensated"), ("book_hotel", "cancel_hotel", "compensation failed")],
        ),
        ("saga_cancelled", "compensated", "workflow cancellation requested", [("book_car", "cancel_car", "compensated")]),
        (
            "saga_parallel",
            "compensated",
            "book_flight failed: SoldOut: sold out",
            [("book_car", "cancel_car", "compensated"), ("book_hotel", "cancel_hotel", "compensated")],
        ),
    ],
)
def test_sagas_from_recorded_histories(name: str, state: str, trigger: str, steps: list[tuple[str, str, str]]) -> None:
    [saga], entries = _saga_timeline(history(name))
    assert (saga.saga_id, saga.state, saga.trigger) == ("saga-1", state, trigger)
    got = [(s.after.activity_type if s.after else None, s.compensation, s.state) for s in saga.steps.values()]
    assert got == steps
    for step in saga.steps.values():  # each started compensation found its activity
        if step.state != "done":
            assert step.compensation_activity is not None
            assert step.compensation_activity.activity_type == step.compensation
    assert [e.event_id for e in entries] == sorted(e.event_id for e in entries)


def test_timeline_of_a_failed_compensation() -> None:
    _, entries = _saga_timeline(history("saga_compensation_failure"))
    assert [(e.css, e.title) for e in entries] == [
        ("act", "activity book_car: completed"),
        ("step", "step #0 done: book_car"),
        ("act", "activity book_hotel: completed"),
        ("step", "step #1 done: book_hotel"),
        ("act-bad", "activity book_flight: failed"),
        ("comp", "compensating step #1: cancel_hotel"),
        ("act-bad", "compensation activity cancel_hotel: failed"),
        ("comp-bad", "compensation of step #1 failed: cancel_hotel"),
        ("comp", "compensating step #0: cancel_car"),
        ("act-comp", "compensation activity cancel_car: completed"),
        ("comp-ok", "step #0 compensated: cancel_car"),
    ]
    assert entries[4].detail == "SoldOut: sold out"


def test_no_saga_no_section() -> None:
    assert _saga_timeline(history("one_activity")) == ([], [])
    assert _saga_section("/w", history("one_activity"), 10) == ""


def test_section_links_events_and_says_when_it_is_partial() -> None:
    events = history("saga_compensation")
    html = _saga_section("/namespaces/default/workflows/w?run_id=r", events, 250)
    assert "Drawn from the first 41 of 250 events." in html
    assert 'href="/namespaces/default/workflows/w?run_id=r&amp;first_event_id=1#e11">#11</a>' in html
