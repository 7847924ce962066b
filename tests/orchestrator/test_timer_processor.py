"""The timer queue processor: on time, without re-reading the store after every commit.

It sleeps until the earliest known timer of its shards; a commit's timer wakes it only when
it is due before the sleep ends. These tests fire timers through a recording ``_apply`` (the
engine is not the subject here) and measure lateness against each row's ``fire_time``.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass, field

import pytest

from orchestrator.api.tasks import TimerTask
from orchestrator.history.service import HistoryService
from orchestrator.persistence._instrumented import InstrumentedHistoryStore
from orchestrator.persistence.memory import MemoryHistoryStore
from orchestrator.persistence.sqlite import SqliteHistoryStore
from orchestrator.timers.processor import TimerQueueProcessor
from tests.contract.conftest import create, make_state, timer_task

ON_TIME = 1.0
"""A timer fires at most this late (seconds after its fire_time)."""


@dataclass
class Rig:
    history: HistoryService
    store: InstrumentedHistoryStore
    timers: TimerQueueProcessor
    fired: dict[str, float] = field(default_factory=dict)
    """task_id -> lateness in seconds when it fired."""
    failing: set[str] = field(default_factory=set)
    attempts: dict[str, int] = field(default_factory=dict)

    async def add(self, task_id: str, in_seconds: float, *, shard: int = 0, submit: bool = True) -> TimerTask:
        """Commit a timer row due ``in_seconds`` from now (and tell the processor, as commits do)."""
        state = make_state(workflow_id=task_id, run_id="r")
        task = timer_task(state, time.time() + in_seconds, task_id=task_id, shard_id=shard)
        range_id = self.history.range_ids.get(shard) or await self.store.acquire_shard(shard, "elsewhere")
        await self.store.write(shard, range_id, [create(state, timer_tasks=[task])])
        if submit:
            self.timers.submit_timers([task])
        return task

    def reads(self) -> int:
        return sum(self.store.stats[m].calls for m in ("get_timer_tasks", "next_timer_time") if m in self.store.stats)

    async def asleep(self) -> asyncio.Future[None]:
        await until(lambda: self.timers._sleeper, "the processor to sleep")
        sleeper = self.timers._sleeper
        assert sleeper is not None
        return sleeper


async def until(check: Callable[[], object], what: str, timeout: float = 5.0) -> object:
    deadline = time.monotonic() + timeout
    while not (value := check()):
        assert time.monotonic() < deadline, f"timed out waiting for {what}"
        await asyncio.sleep(0.01)
    return value


async def rig(store: InstrumentedHistoryStore, *, max_sleep: float, shards: tuple[int, ...] = (0, 1)) -> Rig:
    history = HistoryService(store, num_shards=4)
    for shard in shards:
        history.range_ids[shard] = await store.acquire_shard(shard, "me")
    r = Rig(history, store, TimerQueueProcessor(history, max_sleep=max_sleep))
    history.timer_sink = r.timers

    async def apply(timer: TimerTask) -> None:
        r.attempts[timer.task_id] = r.attempts.get(timer.task_id, 0) + 1
        if timer.task_id in r.failing:
            raise RuntimeError("the engine is having a bad day")
        r.fired.setdefault(timer.task_id, time.time() - timer.fire_time)

    r.timers._apply = apply  # type: ignore[method-assign]
    return r


@pytest.fixture(params=["memory", "sqlite"])
async def store(request: pytest.FixtureRequest, tmp_path: object) -> AsyncIterator[InstrumentedHistoryStore]:
    inner = MemoryHistoryStore() if request.param == "memory" else SqliteHistoryStore(f"{tmp_path}/h.db")
    if isinstance(inner, SqliteHistoryStore):
        await inner.open()
    s = InstrumentedHistoryStore(inner)
    try:
        yield s
    finally:
        await s.aclose()


@pytest.fixture
async def slow(store: InstrumentedHistoryStore) -> AsyncIterator[Rig]:
    """A processor whose periodic re-read of the store is a minute away: only submissions wake it."""
    r = await rig(store, max_sleep=60.0)
    await r.add("far", 30.0)
    await r.timers.start()
    try:
        yield r
    finally:
        await asyncio.wait_for(r.timers.stop(), 5.0)


async def test_an_earlier_timer_submitted_while_sleeping_fires_on_time(slow: Rig) -> None:
    await slow.asleep()
    await slow.add("soon", 0.3, shard=1)
    await until(lambda: "soon" in slow.fired, "the earlier timer to fire")
    assert 0 <= slow.fired["soon"] < ON_TIME
    assert "far" not in slow.fired


async def test_a_later_timer_neither_wakes_the_processor_nor_reads_the_store(slow: Rig) -> None:
    sleeper = await slow.asleep()
    reads = slow.reads()
    await slow.add("later", 45.0)  # after the sleep ends (the row due in 30 s)
    await slow.add("later-other-shard", 40.0, shard=1)
    assert not sleeper.done(), "a timer due after the current sleep woke the processor"
    assert slow.timers._sleeper is sleeper and slow.reads() == reads


async def test_many_commits_wake_the_processor_once_per_earlier_timer(slow: Rig) -> None:
    await slow.asleep()
    reads = slow.reads()
    await slow.add("first", 0.5)
    for i in range(50):  # each commit of a workflow writes a timeout timer further ahead
        await slow.add(f"timeout-{i}", 10.0 + i, shard=i % 2)
    await until(lambda: "first" in slow.fired, "the first timer to fire")
    await slow.asleep()
    assert slow.reads() - reads <= 4, "the processor re-read the store for timers it knew about"
    assert slow.fired["first"] < ON_TIME


async def test_stop_right_after_a_wake_up_returns(slow: Rig) -> None:
    sleeper = await slow.asleep()
    await slow.add("now", 0.0)
    assert sleeper.done()
    # Python 3.11's wait_for() swallowed a cancellation arriving just as its wait completed,
    # and stop() then waited forever (the fixture's wait_for(stop(), 5) fails if so).


async def test_timers_of_a_shard_acquired_later_fire_on_time(store: InstrumentedHistoryStore) -> None:
    r = await rig(store, max_sleep=60.0, shards=(0,))
    await r.add("owned", 30.0)
    await r.add("theirs", 0.2, shard=2, submit=False)  # written by the shard's previous owner
    await r.timers.start()
    try:
        await r.asleep()
        r.history.add_shard(2, await store.acquire_shard(2, "me"))
        r.timers.wake()  # what the membership controller does after acquiring shards
        await until(lambda: "theirs" in r.fired, "the new shard's timer to fire")
        assert r.fired["theirs"] < ON_TIME
    finally:
        await asyncio.wait_for(r.timers.stop(), 5.0)


async def test_a_row_nobody_was_told_about_fires_by_the_periodic_read(store: InstrumentedHistoryStore) -> None:
    r = await rig(store, max_sleep=0.3)
    await r.timers.start()
    try:
        await r.asleep()
        await r.add("untold", 0.1, submit=False)  # e.g. a commit whose outcome was unknown
        await until(lambda: "untold" in r.fired, "the untold timer to fire")
        assert r.fired["untold"] < ON_TIME
    finally:
        await asyncio.wait_for(r.timers.stop(), 5.0)


async def test_a_restarted_processor_fires_what_the_store_holds(store: InstrumentedHistoryStore) -> None:
    first = await rig(store, max_sleep=60.0)
    await first.add("overdue", -5.0, submit=False)
    await first.add("due-soon", 0.3, shard=1, submit=False)
    second = await rig(store, max_sleep=60.0)  # a new process on the same store
    await second.timers.start()
    try:
        await until(lambda: {"overdue", "due-soon"} <= second.fired.keys(), "the stored timers to fire")
        assert second.fired["due-soon"] < ON_TIME
        assert await store.next_timer_time(0) is None and await store.next_timer_time(1) is None
    finally:
        await asyncio.wait_for(second.timers.stop(), 5.0)


async def test_a_failing_timer_is_retried_after_a_pause_and_the_others_fire(slow: Rig) -> None:
    await slow.asleep()
    slow.failing.add("bad")
    await slow.add("bad", 0.0)
    await slow.add("good", 0.2)
    await until(lambda: "good" in slow.fired and slow.attempts.get("bad", 0) >= 2, "a retry of the failing timer")
    reads, started = slow.reads(), time.monotonic()
    await until(lambda: slow.attempts["bad"] >= 4, "two more retries")
    # A retry after a pause, not a busy loop: two rounds of reads per retry, the pauses in between.
    assert slow.reads() - reads <= 3 * 2
    assert time.monotonic() - started >= 1.5 * TimerQueueProcessor.RETRY_PAUSE
    slow.failing.clear()
    await until(lambda: "bad" in slow.fired, "the failing timer to fire once it works")
    assert await slow.store.next_timer_time(0) is not None  # "far" is still there
