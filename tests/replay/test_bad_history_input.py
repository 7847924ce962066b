"""Bad history input is refused with the position and event id, on the replay and the rebuild paths.

A truncated log, a reordered one, events of two runs interleaved, an unknown
event type: each is a clear error, never a silently wrong state. Duplicates
(the same event id with the same contents: a publish retry, a republish) are
de-duplicated, not an error.
"""

from __future__ import annotations

import json
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest

from orchestrator.api.events import HistoryEvent, dump_events, parse_event
from orchestrator.api.history_check import HistoryIntegrityError, check_history
from orchestrator.api.history_stream import HistoryEventMessage
from orchestrator.history.rebuild import (
    RebuildError,
    RunHistory,
    fold_history,
    rebuild_store,
    state_differences,
)
from orchestrator.persistence.base import open_store
from sagas.cli.admin import runs_from_stream
from sagas.testing.replay import load_histories
from sagas.worker._history_stream import histories_from_stream

T0 = datetime(2026, 1, 1, tzinfo=UTC)


def ev(event_id: int, event_type: str, **fields: Any) -> HistoryEvent:
    when = (T0 + timedelta(seconds=event_id)).isoformat()
    return parse_event({"event_id": event_id, "event_time": when, "event_type": event_type, **fields})


def history(run_id: str = "r1", *, close: bool = True) -> list[HistoryEvent]:
    """A run that sleeps on a timer then completes (or stays open on the timer)."""
    events = [
        ev(1, "WorkflowExecutionStarted", workflow_type="Trip", task_queue="q", first_run_id=run_id),
        ev(2, "WorkflowTaskScheduled", task_queue="q"),
        ev(3, "WorkflowTaskStarted", scheduled_event_id=2),
        ev(4, "WorkflowTaskCompleted", scheduled_event_id=2, started_event_id=3),
        ev(5, "TimerStarted", timer_id="t1", start_to_fire_timeout=60.0, workflow_task_completed_event_id=4),
    ]
    if close:
        events += [
            ev(6, "TimerFired", timer_id="t1", started_event_id=5),
            ev(7, "WorkflowTaskScheduled", task_queue="q"),
            ev(8, "WorkflowTaskStarted", scheduled_event_id=7),
            ev(9, "WorkflowTaskCompleted", scheduled_event_id=7, started_event_id=8),
            ev(10, "WorkflowExecutionCompleted", result="done", workflow_task_completed_event_id=9),
        ]
    return events


def bodies_of(events: list[HistoryEvent], *, workflow_id: str = "w", run_id: str = "r1") -> list[bytes]:
    return [HistoryEventMessage.of("default", workflow_id, run_id, e).encode() for e in events]


def renumbered(events: list[HistoryEvent]) -> list[HistoryEvent]:
    """The same events with ids 1, 2, 3... in list order (a log whose content was reordered)."""
    return [e.model_copy(update={"event_id": i + 1}) for i, e in enumerate(events)]


def expect_refused(bodies: list[bytes], *match: str, incomplete: bool = False) -> str:
    """The run is refused by the replay path (with ``match`` in the reason) and by the rebuild path."""
    found = histories_from_stream(bodies)
    assert found.histories == []
    reasons = found.incomplete if incomplete else found.invalid
    [reason] = reasons.values()
    for m in match:
        assert m in reason, reason
    with pytest.raises(RebuildError) as info:
        runs_from_stream(bodies)
    for m in match:
        assert m in str(info.value)
    return reason


# -- the valid case first -----------------------------------------------------------------------------


def test_a_valid_history_folds_and_duplicates_are_dropped() -> None:
    events = history()
    bodies = bodies_of(events)
    found = histories_from_stream(bodies + bodies[3:6])  # a republish of events 4-6
    assert found.duplicates == 3 and found.invalid == {} and found.incomplete == {}
    [h] = found.histories
    assert [e.event_id for e in h.events] == list(range(1, 11))
    [run] = runs_from_stream(bodies + bodies[:2])
    state = fold_history(run.events, namespace="default", workflow_id="w", run_id="r1")
    assert (str(state.status), state.result, state.next_event_id, state.timers) == ("Completed", "done", 11, {})
    open_state = fold_history(history(close=False), namespace="default", workflow_id="w", run_id="r1")
    assert open_state.is_open and open_state.timers["t1"].fire_time == pytest.approx((T0 + timedelta(seconds=65)).timestamp())


def test_messages_out_of_order_are_sorted_and_reported() -> None:
    bodies = bodies_of(history())
    bodies[5], bodies[6] = bodies[6], bodies[5]  # event 7 arrives before event 6 (a late republish)
    found = histories_from_stream(bodies)
    assert [e.event_id for e in found.histories[0].events] == list(range(1, 11))
    assert found.out_of_order == 1
    assert "event 6 at message 6 came after event 7" in found.out_of_order_example


# -- truncated --------------------------------------------------------------------------------------


def test_missing_events_in_the_middle() -> None:
    bodies = bodies_of(history())
    del bodies[5]  # event 6
    reason = expect_refused(bodies, "events 6 are missing", incomplete=True)
    assert "republish" in reason
    events = history()
    with pytest.raises(HistoryIntegrityError, match=r"position 5, event 7: events 6 are missing"):
        check_history(events[:5] + events[6:])


def test_first_event_is_not_workflow_execution_started() -> None:
    expect_refused(bodies_of(history())[2:], "events 1-2 are missing", incomplete=True)
    with pytest.raises(HistoryIntegrityError, match=r"position 0, event 3: the first event is WorkflowTaskStarted"):
        check_history(history()[2:])
    # event 1 present, but not a start: the log's first event was replaced
    bad = [ev(1, "WorkflowExecutionSignaled", signal_name="s")] + history()[1:]
    expect_refused(bodies_of(bad), "message 0, event 1", "not WorkflowExecutionStarted")


# -- reordered --------------------------------------------------------------------------------------


def test_reordered_events_are_refused_naming_the_position() -> None:
    events = history()
    swapped = renumbered(events[:4] + [events[5], events[4]] + events[6:])  # TimerFired before TimerStarted
    expect_refused(bodies_of(swapped), "message 4, event 5", "timer 't1'", "not pending", "reordered")
    with pytest.raises(HistoryIntegrityError, match=r"position 4, event 5: .*timer 't1'"):
        fold_history(swapped, namespace="default", workflow_id="w", run_id="r1")
    # a list (a history file) in the wrong order, ids kept
    with pytest.raises(HistoryIntegrityError, match=r"position 4, event 6: .*reordered \(event 5 comes later, at position 5\)"):
        check_history(events[:4] + [events[5], events[4]] + events[6:])


def test_reordered_history_file_is_refused_with_its_name(tmp_path: Path) -> None:
    events = history()
    path = tmp_path / "trip.json"
    path.write_bytes(dump_events(events[:6] + [events[7], events[6]] + events[8:]))
    with pytest.raises(HistoryIntegrityError, match=r"trip.json: position 6, event 8: .*reordered"):
        load_histories(path)


# -- two runs interleaved ---------------------------------------------------------------------------


def test_two_runs_under_one_run_id_conflict() -> None:
    other = [e.model_copy(update={"event_time": e.event_time + timedelta(hours=1)}) for e in history("r2")]
    bodies = bodies_of(history())
    mixed = [b for pair in zip(bodies, bodies_of(other), strict=True) for b in pair]  # both as run r1
    expect_refused(mixed, "messages 0 and 1 both carry event 1 with different contents", "two runs")


def test_two_runs_in_one_list_are_refused() -> None:
    first, second = history("r1"), history("r2")
    with pytest.raises(HistoryIntegrityError, match=r"position 10, event 1: .*reordered or holds a duplicate"):
        check_history(first + second)
    with pytest.raises(HistoryIntegrityError, match=r"position 10, event 11: a second WorkflowExecutionStarted"):
        check_history(renumbered(first + second))
    with pytest.raises(HistoryIntegrityError, match=r"position 5, event 6: .*WorkflowExecutionStarted"):
        check_history(renumbered(first[:5] + second))  # run r2 spliced into an open r1


async def test_rebuild_refuses_two_open_runs_of_one_workflow_id() -> None:
    runs = [RunHistory("default", "w", r, history(r, close=False)) for r in ("r1", "r2")]
    store = await open_store("memory://")
    with pytest.raises(RebuildError, match=r"default/w: runs r1 and r2 are both open"):
        await rebuild_store(store, runs, num_shards=4)
    assert await store.get_current_run("default", "w") is None  # nothing written


async def test_rebuild_refuses_a_continued_run_its_predecessor_does_not_name() -> None:
    first = history("r1")[:9] + [ev(10, "WorkflowExecutionContinuedAsNew", new_run_id="r3", workflow_type="Trip",
                                   task_queue="q", workflow_task_completed_event_id=9)]
    second = [ev(1, "WorkflowExecutionStarted", workflow_type="Trip", task_queue="q", first_run_id="r1",
                 continued_from_run_id="r1")] + history("r2")[1:]
    runs = [RunHistory("default", "w", "r1", first), RunHistory("default", "w", "r2", second)]
    with pytest.raises(RebuildError, match=r"default/w/r2: .*continues run r1, but that run's close event names r3"):
        await rebuild_store(await open_store("memory://"), runs, num_shards=4)


# -- unknown event type -----------------------------------------------------------------------------


def test_unknown_event_type_is_refused_naming_it() -> None:
    bodies = bodies_of(history())
    message = json.loads(bodies[6])
    message["event"]["event_type"] = "WorkflowExecutionPaused"
    bodies[6] = json.dumps(message).encode()
    reason = expect_refused(bodies, "message 6", "event 7", "unknown event type 'WorkflowExecutionPaused'")
    assert "newer server" in reason


def test_a_message_that_is_not_an_event_refuses_the_rebuild() -> None:
    bodies = bodies_of(history()) + [b"not json"]
    assert len(histories_from_stream(bodies).histories) == 1  # replay: counted and skipped, reported
    with pytest.raises(RebuildError, match=r"1 messages are not history events \(first: message 10"):
        runs_from_stream(bodies)


# -- rebuild writes what it folded, and verifies it ---------------------------------------------------


async def test_rebuild_into_memory_store_round_trips() -> None:
    runs = [RunHistory("default", "done", "r1", history("r1")), RunHistory("default", "open", "r2", history("r2", close=False))]
    store = await open_store("memory://")
    report = await rebuild_store(store, runs, num_shards=4, now=T0.timestamp() + 30)
    assert (report.runs, report.open_runs, report.verified, report.events) == (2, 1, 2, 15)
    stored = await store.get_execution("default", "open", "r2")
    assert stored is not None and state_differences(stored, report.states[("default", "open", "r2")], ignore=()) == []
    assert [e.event_id for e in await store.read_events("default", "done", "r1")] == list(range(1, 11))
    with pytest.raises(RebuildError, match="rebuild only into an empty store"):
        await rebuild_store(store, runs, num_shards=4)
