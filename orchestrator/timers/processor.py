"""The timer queue processor: fires durable timers when they are due.

Timer tasks live in the store (written with the events that made them). The
processor sleeps until the earliest fire time of its shards, loads the due
window, fires each through the engine and deletes the rows. A timer fired
twice (a crash between firing and deleting) is harmless: the engine sees it
is stale. After a restart the processor simply starts from the store again,
so nothing is lost.

It keeps, per owned shard, a time no later than the shard's earliest timer
row: read from the store after firing the shard's due rows, and lowered by
every commit's new timers (``submit_timers``). Only a shard whose time has
come is read again, and only a timer due before the current sleep ends wakes
the processor early: the many timeout timers that commits write far ahead
cost neither a wake-up nor a store read. A shard acquired at a new
``range_id`` (or after ``wake()``) is read from the store, and every
``max_sleep`` seconds every shard is (rows this process was not told about:
a commit whose outcome was unknown).

Time skipping (tests): when ``idle()`` says no task is in flight anywhere, the
clock jumps to the next fire time instead of sleeping.

``delete_history`` (retention) archives the closed run first when its namespace has archival
(``self.archival``, ``orchestrator.archival``); when archiving fails, the run is kept and a new
``delete_history`` row is written for later (doubling back-off), so nothing is deleted unarchived.
"""

from __future__ import annotations

import asyncio
import logging
import math
from collections.abc import Callable
from typing import TYPE_CHECKING

from orchestrator.api.tasks import TimerKind, TimerTask
from orchestrator.errors import OrchestratorError, WorkflowNotFoundError
from orchestrator.history.engine import Mutation
from orchestrator.history.service import HistoryService, SystemClock
from orchestrator.history.state import ExecutionState
from orchestrator.metrics import METRICS

if TYPE_CHECKING:
    from orchestrator.archival import ArchivalService

log = logging.getLogger("sagas.timers")


class TimerQueueProcessor:
    """Fires the due timer tasks of the shards this process owns."""

    RETRY_PAUSE = 0.2
    """Seconds before the timers that failed to fire are tried again."""

    def __init__(
        self,
        history: HistoryService,
        *,
        batch_size: int = 500,
        max_sleep: float = 5.0,
        concurrency: int = 32,
        idle: Callable[[], bool] | None = None,
    ) -> None:
        self.history = history
        self.batch_size = batch_size
        self.max_sleep = max_sleep
        self._idle = idle
        self._sem = asyncio.Semaphore(concurrency)
        self._task: asyncio.Task[None] | None = None
        self._shard_next: dict[int, tuple[int, float]] = {}
        """shard -> (its range_id, a time no later than its earliest timer row); missing: read the store."""
        self._sleeper: asyncio.Future[None] | None = None
        self._wake_at = -math.inf
        """While sleeping, when the sleep ends: an earlier timer wakes the processor."""
        self._full_scan_at = 0.0
        """Loop time of the next read of every shard."""
        self._rescan = False
        """Read every shard before sleeping again (``wake()``, or after an error)."""
        self.fired = 0
        self.archival: ArchivalService | None = None
        """Archives closed runs before retention deletes them (None: no archival)."""

    @property
    def time_skipping(self) -> bool:
        return self._idle is not None

    def submit_timers(self, tasks: list[TimerTask]) -> None:
        """Committed timer rows (called after each commit): earlier ones lower their shard's time."""
        wake = False
        for task in tasks:
            known = self._shard_next.get(task.shard_id)
            if known is not None and task.fire_time < known[1]:
                self._shard_next[task.shard_id] = (known[0], task.fire_time)
            wake = wake or task.fire_time < self._wake_at
        if wake:
            self._wake_up()

    def wake(self) -> None:
        """Look at the store again now (e.g. shards were just acquired: their timer rows are due)."""
        self._rescan = True
        self._wake_up()

    def _wake_up(self) -> None:
        sleeper = self._sleeper
        if sleeper is not None and not sleeper.done():
            sleeper.set_result(None)

    async def start(self) -> None:
        self._task = asyncio.create_task(self._run(), name="timer-queue")

    async def stop(self) -> None:
        if self._task:
            self._task.cancel()
            await asyncio.gather(self._task, return_exceptions=True)

    async def _run(self) -> None:
        failures = 0
        while True:
            try:
                await self._fire_due()
                await self._sleep_until_next()
                failures = 0
            except Exception:  # noqa: BLE001 - store trouble: back off and try again, never die
                failures += 1
                log.exception("timer processing failed")
                self._rescan = True
                await asyncio.sleep(min(0.1 * 2**failures, 5.0))
            await asyncio.sleep(0)  # store reads may not yield: let others run between rounds

    def _next_fire_time(self) -> float | None:
        """The earliest known timer of the owned shards (inf: none); None when a shard must be read."""
        earliest = math.inf
        for shard, range_id in self.history.range_ids.items():
            known = self._shard_next.get(shard)
            if known is None or known[0] != range_id:
                return None
            earliest = min(earliest, known[1])
        return earliest

    async def _sleep_until_next(self) -> None:
        next_time = self._next_fire_time()
        now = self.history.clock.now()
        if next_time is None or next_time <= now or self._rescan:
            return
        if self.time_skipping and next_time < math.inf and await self._settled_idle():
            next_time = self._next_fire_time()  # commits may have come meanwhile
            clock = self.history.clock
            if next_time is not None and not self._rescan and isinstance(clock, SystemClock):
                clock.offset += max(0.0, next_time - clock.now())
            return
        loop = asyncio.get_running_loop()
        delay = min(self.max_sleep, next_time - now, max(0.0, self._full_scan_at - loop.time()))
        if self.time_skipping:
            delay = min(delay, 0.05)
        # A bare future, not wait_for(): Python 3.11's wait_for loses a cancellation that comes
        # just as the awaited thing completes, and stop() would then wait forever.
        self._sleeper = sleeper = loop.create_future()
        self._wake_at = now + delay
        timeout = loop.call_later(delay, _resolve, sleeper)
        try:
            await sleeper
        finally:
            timeout.cancel()
            self._sleeper = None
            self._wake_at = -math.inf

    async def _settled_idle(self) -> bool:
        assert self._idle is not None
        for _ in range(3):
            if not self._idle():
                return False
            await asyncio.sleep(0.01)
        return self._idle()

    async def _fire_due(self) -> None:
        loop = asyncio.get_running_loop()
        if self._rescan or loop.time() >= self._full_scan_at:
            self._rescan = False
            self._shard_next.clear()
            self._full_scan_at = loop.time() + self.max_sleep
        # A copy: the membership controller adds and drops shards while this awaits.
        for shard, range_id in list(self.history.range_ids.items()):
            known = self._shard_next.get(shard)
            if known is None or known[0] != range_id or known[1] <= self.history.clock.now():
                await self._fire_shard(shard, range_id)

    async def _fire_shard(self, shard: int, range_id: int) -> None:
        """Fire the due timers of ``shard``, then learn when its next one is due."""
        self._shard_next[shard] = (range_id, math.inf)  # from now on, commits lower it
        retry_at = -math.inf
        while True:
            now = self.history.clock.now()
            due = await self.history.store.get_timer_tasks(shard, now, self.batch_size)
            if not due:
                break
            results = await asyncio.gather(*(self._fire_one(t, now) for t in due))
            done = [t.task_id for t, ok in zip(due, results, strict=True) if ok]
            if done:
                await self.history.store.delete_timer_tasks(shard, done)
            if len(done) < len(due):
                retry_at = now + self.RETRY_PAUSE  # some failed: retry them after a pause
                break
        stored = await self.history.store.next_timer_time(shard)
        next_time = math.inf if stored is None else stored
        known = self._shard_next.get(shard)
        if known is not None and known[0] == range_id:
            next_time = min(next_time, known[1])
        self._shard_next[shard] = (range_id, max(next_time, retry_at))

    async def _fire_one(self, timer: TimerTask, now: float) -> bool:
        async with self._sem:
            try:
                await self._apply(timer)
            except WorkflowNotFoundError:
                return True
            except OrchestratorError as exc:
                if exc.code == "workflow_not_running":
                    return True
                log.warning("timer %s of %s failed: %s", timer.kind, timer.workflow_id, exc)
                return False
            except Exception:  # noqa: BLE001 - keep the row; it fires again
                log.exception("timer %s of %s failed", timer.kind, timer.workflow_id)
                return False
        METRICS.timers_fired.labels(kind=str(timer.kind)).inc()
        METRICS.timer_lag.observe(max(0.0, now - timer.fire_time))
        self.fired += 1
        return True

    async def _apply(self, timer: TimerTask) -> None:
        engine = self.history.engine
        op: Callable[[ExecutionState, float], Mutation]
        match timer.kind:
            case TimerKind.USER_TIMER:
                op = lambda s, now: engine.user_timer_fired(s, timer, now=now)  # noqa: E731
            case TimerKind.ACTIVITY_TIMEOUT | TimerKind.ACTIVITY_RETRY:
                op = lambda s, now: engine.activity_timer_fired(s, timer, now=now)  # noqa: E731
            case TimerKind.WORKFLOW_TASK_TIMEOUT | TimerKind.WORKFLOW_TASK_RETRY:
                op = lambda s, now: engine.workflow_task_timer_fired(s, timer, now=now)  # noqa: E731
            case TimerKind.WORKFLOW_RUN_TIMEOUT | TimerKind.WORKFLOW_EXECUTION_TIMEOUT:
                op = lambda s, now: engine.workflow_timeout_fired(s, timer, now=now)  # noqa: E731
            case TimerKind.WORKFLOW_BACKOFF:
                op = lambda s, now: engine.workflow_backoff_fired(s, timer, now=now)  # noqa: E731
            case TimerKind.DELETE_HISTORY:
                await self._delete_history(timer)
                return
            case _:
                return
        await self.history.update(timer.namespace, timer.workflow_id, timer.run_id, op)

    async def _delete_history(self, timer: TimerTask) -> None:
        """Retention: archive the closed run (when its namespace archives), then delete it."""
        ns, wid, rid = timer.namespace, timer.workflow_id, timer.run_id
        state = await self.history.get_state(ns, wid, rid)
        if state.is_open:
            return
        archival = self.archival
        if archival is not None and archival.enabled(ns):
            try:
                events = await self.history.store.read_events(ns, wid, rid)
                await archival.archive(state, events)
            except Exception as exc:  # noqa: BLE001 - the archive is down or refuses: keep the run, retry later
                delay = archival.retry_delay(timer.attempt)
                log.warning(
                    "archiving %s/%s run %s failed (attempt %d), not deleting it; next try in %.0f s: %s",
                    ns, wid, rid, timer.attempt, delay, exc,
                )
                engine = self.history.engine
                await self.history.update(
                    ns, wid, rid,
                    lambda s, now: engine.rearm_delete_history(s, timer, now=now, fire_time=now + delay),
                )
                return
        await self.history.store.delete_execution(ns, wid, rid)
        self.history.forget(ns, wid, rid)


def _resolve(future: asyncio.Future[None]) -> None:
    if not future.done():
        future.set_result(None)
