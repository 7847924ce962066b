"""SQLite point reads run on the event loop's thread, and still see every committed write.

Point reads (a run's state, the current run, the next timer, a few events) use a connection of
the loop's thread instead of a hop to the reader thread; scans and long histories still go to
the reader thread; a busy answer or a call from another thread falls back to it.
"""

from __future__ import annotations

import asyncio
import sqlite3
import threading
from collections.abc import AsyncIterator, Callable
from pathlib import Path
from typing import Any

import pytest

from orchestrator.api.events import HistoryEvent
from orchestrator.persistence.sqlite import INLINE_ROWS, SqliteHistoryStore

from .conftest import NS, create, make_state, marker, timer_task, update

SHARD = 1


@pytest.fixture
async def sqlite_store(tmp_path: Path) -> AsyncIterator[SqliteHistoryStore]:
    store = SqliteHistoryStore(str(tmp_path / "history.db"))
    await store.open()
    try:
        yield store
    finally:
        await store.aclose()


class HopCounter:
    """Counts the reads handed to the reader thread."""

    def __init__(self, store: SqliteHistoryStore) -> None:
        assert store._reader is not None
        self.hops = 0
        submit = store._reader.submit

        def counted(fn: Callable[..., Any], /, *args: Any, **kwargs: Any) -> Any:
            self.hops += 1
            return submit(fn, *args, **kwargs)

        store._reader.submit = counted  # type: ignore[method-assign]


async def test_point_reads_see_each_committed_write_at_once_without_a_thread_hop(
    sqlite_store: SqliteHistoryStore,
) -> None:
    range_id = await sqlite_store.acquire_shard(SHARD, "me")
    hops = HopCounter(sqlite_store)
    state = make_state()
    await sqlite_store.write(SHARD, range_id, [create(state, timer_tasks=[timer_task(state, 50.0, task_id="t50")])])
    assert await sqlite_store.get_execution(NS, state.workflow_id, state.run_id) == state
    assert await sqlite_store.next_timer_time(SHARD) == 50.0
    for i in range(20):  # each write is visible to the very next read (no stale read snapshot)
        fire_time = 40.0 - i
        state, write = update(state, [marker(state.next_event_id)], timer_tasks=[timer_task(state, fire_time, task_id=f"t{i}")])
        await sqlite_store.write(SHARD, range_id, [write])
        assert await sqlite_store.next_timer_time(SHARD) == fire_time
        assert await sqlite_store.get_execution(NS, state.workflow_id, state.run_id) == state
        current = await sqlite_store.get_current_run(NS, state.workflow_id)
        assert current is not None and current.run_id == state.run_id
        events = await sqlite_store.read_events(NS, state.workflow_id, state.run_id, state.next_event_id - 1)
        assert [e.event_id for e in events] == [state.next_event_id - 1]
        due = await sqlite_store.get_timer_tasks(SHARD, fire_before=fire_time)
        assert [t.task_id for t in due] == [f"t{i}"]
    assert hops.hops == 0, "point reads went through the reader thread"


async def test_concurrent_writes_and_reads_still_share_commits(sqlite_store: SqliteHistoryStore) -> None:
    range_id = await sqlite_store.acquire_shard(SHARD, "me")
    states = [make_state(f"wf-{i}") for i in range(40)]
    before = sqlite_store.commits

    async def write_then_read(state: Any) -> None:
        await sqlite_store.write(SHARD, range_id, [create(state)])
        assert await sqlite_store.get_execution(NS, state.workflow_id, state.run_id) == state

    await asyncio.gather(*(write_then_read(s) for s in states))
    assert sqlite_store.commits - before < len(states), "group commit stopped grouping"


async def test_long_histories_are_read_whole_and_in_order(sqlite_store: SqliteHistoryStore) -> None:
    range_id = await sqlite_store.acquire_shard(SHARD, "me")
    state = make_state()
    await sqlite_store.write(SHARD, range_id, [create(state)])
    total = 2 * INLINE_ROWS + 7
    events: list[HistoryEvent] = [marker(i) for i in range(3, total + 1)]
    state, write = update(state, events)
    await sqlite_store.write(SHARD, range_id, [write])
    key = (NS, state.workflow_id, state.run_id)
    hops = HopCounter(sqlite_store)

    everything = await sqlite_store.read_events(*key)
    assert [e.event_id for e in everything] == list(range(1, total + 1))
    assert hops.hops == 1, "the part past INLINE_ROWS is read on the reader thread"
    for first, limit in [(1, INLINE_ROWS), (1, INLINE_ROWS + 1), (5, 2 * INLINE_ROWS), (total - 3, None), (3, 0), (1, 10)]:
        got = await sqlite_store.read_events(*key, first, limit)
        end = total + 1 if limit is None else min(total + 1, first + limit)
        assert [e.event_id for e in got] == list(range(first, end)), (first, limit)


async def test_a_busy_inline_read_is_done_again_on_the_reader_thread(sqlite_store: SqliteHistoryStore) -> None:
    range_id = await sqlite_store.acquire_shard(SHARD, "me")
    state = make_state()
    await sqlite_store.write(SHARD, range_id, [create(state)])
    real = sqlite_store._inline_conn

    class Busy:
        def execute(self, *args: Any) -> Any:
            error = sqlite3.OperationalError("database is locked")
            error.sqlite_errorcode = sqlite3.SQLITE_BUSY
            raise error

    sqlite_store._inline_conn = Busy()  # type: ignore[assignment]
    hops = HopCounter(sqlite_store)
    try:
        assert await sqlite_store.get_execution(NS, state.workflow_id, state.run_id) == state
    finally:
        sqlite_store._inline_conn = real
    assert hops.hops == 1


async def test_reads_from_another_thread_go_through_the_reader_thread(sqlite_store: SqliteHistoryStore) -> None:
    range_id = await sqlite_store.acquire_shard(SHARD, "me")
    state = make_state()
    await sqlite_store.write(SHARD, range_id, [create(state)])
    hops = HopCounter(sqlite_store)
    seen: list[Any] = []

    def other_thread() -> None:
        seen.append(asyncio.run(sqlite_store.get_current_run(NS, state.workflow_id)))

    thread = threading.Thread(target=other_thread)
    thread.start()
    await asyncio.get_running_loop().run_in_executor(None, thread.join)
    assert seen and seen[0] is not None and seen[0].run_id == state.run_id
    assert hops.hops == 1
