"""The timer queue processor: fires durable timers when they are due.

Timer tasks live in the store (written with the events that made them). The
processor sleeps until the earliest fire time of its shards -- woken early
when a commit adds an earlier timer -- loads the due window, fires each
through the engine and deletes the rows. A timer fired twice (a crash between
firing and deleting) is harmless: the engine sees it is stale. After a restart
the processor simply starts from the store again, so nothing is lost.

Time skipping (tests): when ``idle()`` says no task is in flight anywhere, the
clock jumps to the next fire time instead of sleeping.

``delete_history`` (retention) archives the closed run first when its namespace has archival
(``self.archival``, ``orchestrator.archival``); when archiving fails, the run is kept and a new
``delete_history`` row is written for later (doubling back-off), so nothing is deleted unarchived.
"""

from __future__ import annotations

import asyncio
import logging
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
        self._wake = asyncio.Event()
        self._sem = asyncio.Semaphore(concurrency)
        self._task: asyncio.Task[None] | None = None
        self._next_hint: float | None = None
        self.fired = 0
        self.archival: ArchivalService | None = None
        """Archives closed runs before retention deletes them (None: no archival)."""

    @property
    def time_skipping(self) -> bool:
        return self._idle is not None

    def submit_timers(self, tasks: list[TimerTask]) -> None:
        earliest = min(t.fire_time for t in tasks)
        if self._next_hint is None or earliest < self._next_hint:
            self._next_hint = earliest
            self._wake.set()

    def wake(self) -> None:
        """Look at the store again now (e.g. shards were just acquired: their timer rows are due)."""
        self._next_hint = None
        self._wake.set()

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
                await self._sleep_until_next()  # reads the store too: same back-off when it fails
                failures = 0
            except Exception:  # noqa: BLE001 - store trouble: back off and try again, never die
                failures += 1
                log.exception("timer processing failed")
                await asyncio.sleep(min(0.1 * 2**failures, 5.0))

    async def _next_fire_time(self) -> float | None:
        # A copy: the membership controller adds and drops shards while this awaits.
        times = [await self.history.store.next_timer_time(shard) for shard in list(self.history.range_ids)]
        known = [t for t in times if t is not None]
        return min(known) if known else None

    async def _sleep_until_next(self) -> None:
        self._wake.clear()
        self._next_hint = None
        next_time = await self._next_fire_time()
        now = self.history.clock.now()
        if next_time is not None and next_time <= now:
            return
        if self.time_skipping and next_time is not None and await self._settled_idle():
            clock = self.history.clock
            if isinstance(clock, SystemClock):
                clock.offset += next_time - clock.now()
            return
        delay = self.max_sleep if next_time is None else min(self.max_sleep, next_time - now)
        if self.time_skipping:
            delay = min(delay, 0.05)
        try:
            await asyncio.wait_for(self._wake.wait(), delay)
        except TimeoutError:
            pass

    async def _settled_idle(self) -> bool:
        assert self._idle is not None
        for _ in range(3):
            if not self._idle():
                return False
            await asyncio.sleep(0.01)
        return self._idle()

    async def _fire_due(self) -> None:
        for shard in list(self.history.range_ids):
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
                    break  # some failed: retry them after a pause

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
