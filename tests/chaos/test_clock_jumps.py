"""Clock jumps under the timer processor: a wall clock stepped forward or back (an NTP step, a VM
resumed after a pause) must not fire a timer twice, early, or never.

The server's clock is ``SystemClock`` (``time.time() + offset``); moving ``offset`` is exactly what
an operating-system clock step looks like to the engine: durable timers, activity and
workflow-task timeouts are all due at wall-clock times stored in the history.

What is expected (and written in ``docs/operations.md``):

* **forward**: every timer now due fires at once (within the processor's ``max_sleep``, 5 s), in
  due order, exactly once; timeouts of tasks in flight fire too, and retries take over;
* **backward**: nothing fires early as seen by the new clock; timers fire late by the jump.
"""

from __future__ import annotations

import asyncio
import time
import uuid
from collections import Counter
from collections.abc import AsyncIterator
from datetime import timedelta
from pathlib import Path

import pytest

from orchestrator.api.enums import EventType
from orchestrator.server import DevServer
from sagas import activity, workflow
from sagas.client import Client, WorkflowHandle
from sagas.common import RetryPolicy
from sagas.worker import Worker

pytestmark = [pytest.mark.chaos, pytest.mark.timeout(120)]

RUNS: Counter[str] = Counter()
"""Attempts of ``slow_step`` started, per workflow (the activity's own ledger)."""
SLOW_FIRST_ATTEMPT: set[str] = set()
"""Workflow ids whose first attempt hangs until its 5 s timeout cuts it off."""


@activity.defn
async def slow_step(key: str) -> str:
    RUNS[key] += 1
    if key in SLOW_FIRST_ATTEMPT and activity.info().attempt == 1:
        await asyncio.Future()  # never finishes on its own: only its deadline ends it
    return f"done {key} on attempt {activity.info().attempt}"


@workflow.defn
class NapThenStep:
    @workflow.run
    async def run(self, nap: float) -> str:
        await workflow.sleep(nap)
        return await workflow.execute_activity(
            slow_step, workflow.info().workflow_id, start_to_close_timeout=timedelta(seconds=5),
            retry_policy=RetryPolicy(initial_interval=timedelta(milliseconds=100), maximum_attempts=0),
        )  # fmt: skip


@pytest.fixture
async def system(tmp_path: Path) -> AsyncIterator[tuple[DevServer, Client, str]]:
    server = DevServer(store_url=f"sqlite:///{tmp_path / 'h.db'}", broker_url="local://", host="127.0.0.1", port=0)
    await server.start()
    client = await Client.connect(server.target)
    tq = f"clock-{uuid.uuid4().hex[:8]}"
    try:
        async with Worker(client, task_queue=tq, workflows=[NapThenStep], activities=[slow_step]):
            yield server, client, tq
    finally:
        await client.close()
        await server.stop()


def jump(server: DevServer, seconds: float) -> None:
    server.orchestrator.clock.offset += seconds


async def event_counts(handle: WorkflowHandle) -> Counter[EventType]:
    return Counter([e.event_type async for e in handle.fetch_history_events()])


async def test_a_forward_jump_fires_every_due_timer_once(system: tuple[DevServer, Client, str]) -> None:
    server, client, tq = system
    handles = [await client.start_workflow(NapThenStep.run, 3600.0, id=f"fwd-{i}-{tq}", task_queue=tq)
               for i in range(20)]  # fmt: skip

    async def all_waiting() -> bool:
        return all([(await event_counts(h))[EventType.TIMER_STARTED] == 1 for h in handles])

    deadline = time.monotonic() + 20
    while not await all_waiting():
        assert time.monotonic() < deadline, "the workflows never started their hour-long timers"
        await asyncio.sleep(0.05)

    jumped_at = time.monotonic()
    jump(server, 3601)
    results = await asyncio.wait_for(asyncio.gather(*(h.result() for h in handles)), 30)

    assert results == [f"done {h.id} on attempt 1" for h in handles]
    # due an hour ago by the new clock: fired within the processor's longest sleep, not an hour later
    assert time.monotonic() - jumped_at < 5.0 + 5.0
    for h in handles:
        counts = await event_counts(h)
        assert counts[EventType.TIMER_STARTED] == counts[EventType.TIMER_FIRED] == 1, (h.id, counts)
        assert counts[EventType.ACTIVITY_TASK_COMPLETED] == 1, (h.id, counts)
        assert counts[EventType.WORKFLOW_EXECUTION_COMPLETED] == 1


async def test_a_forward_jump_mid_activity_times_it_out_and_the_retry_is_the_only_result(
    system: tuple[DevServer, Client, str],
) -> None:
    server, client, tq = system
    ids = [f"mid-{i}-{tq}" for i in range(10)]
    SLOW_FIRST_ATTEMPT.update(ids)
    handles = [await client.start_workflow(NapThenStep.run, 0.0, id=wid, task_queue=tq) for wid in ids]

    deadline = time.monotonic() + 20
    while not all(RUNS[h.id] for h in handles):
        assert time.monotonic() < deadline, "the activities never started"
        await asyncio.sleep(0.01)
    jump(server, 60)  # past the 5 s start-to-close timeout of every attempt in flight

    results = await asyncio.wait_for(asyncio.gather(*(h.result() for h in handles)), 40)

    # the jump timed the first attempts out; the retries' results closed the workflows
    assert results == [f"done {h.id} on attempt 2" for h in handles]
    for h in handles:
        counts = await event_counts(h)
        # one result: the first attempts were cut off by the worker at their deadline (or, had one
        # finished, its late result would have been refused as stale)
        assert counts[EventType.ACTIVITY_TASK_COMPLETED] == 1, (h.id, counts)
        assert counts[EventType.ACTIVITY_TASK_SCHEDULED] == 1, (h.id, counts)
        assert counts[EventType.WORKFLOW_EXECUTION_COMPLETED] == 1


async def test_a_backward_jump_delays_timers_and_never_fires_them_early(
    system: tuple[DevServer, Client, str],
) -> None:
    server, client, tq = system
    started = time.monotonic()
    handles = [await client.start_workflow(NapThenStep.run, 1.0, id=f"back-{i}-{tq}", task_queue=tq)
               for i in range(10)]  # fmt: skip
    jump(server, -2.0)

    results = await asyncio.wait_for(asyncio.gather(*(h.result() for h in handles)), 30)
    elapsed = time.monotonic() - started

    assert results == [f"done {h.id} on attempt 1" for h in handles]
    # due 1 s after start by the old clock = 3 s after start of real time by the new one
    assert elapsed >= 1.0 + 2.0 - 0.2, f"timers fired {3.0 - elapsed:.2f} s early after the clock went back"
    for h in handles:
        counts = await event_counts(h)
        assert counts[EventType.TIMER_FIRED] == 1 and counts[EventType.ACTIVITY_TASK_COMPLETED] == 1, (h.id, counts)
