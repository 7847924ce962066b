"""Wipe the store, rebuild it from the history stream, and carry on (``sagas admin rebuild``).

500 workflows run on a SQLite store with the history stream on a real
Kafka-protocol broker (Tansu): completed ones, failed ones whose saga
compensated, open ones sleeping on a one-hour durable timer, and open ones
waiting for a signal. Then the store is put aside and a new, empty one is
rebuilt from the stream alone; every run's state, visibility row, current-run
pointer and pending timer must equal the original's field by field (except what
history does not record, ``NOT_FROM_HISTORY``). Finally a time-skipping server
on the rebuilt store, with fresh workers, fires the timers, takes the signals,
and every open workflow completes with the right result.
"""

from __future__ import annotations

import asyncio
import dataclasses
import math
import os
import time
import uuid
from datetime import timedelta
from pathlib import Path
from typing import Any

import pytest
from typer.testing import CliRunner

from orchestrator.api.tasks import TimerKind, TimerTask
from orchestrator.history.rebuild import NOT_FROM_HISTORY, state_differences
from orchestrator.history.state import ExecutionState
from orchestrator.persistence.base import HistoryStore, VisibilityRecord, open_store
from sagas import activity, workflow
from sagas.cli.admin import rebuild_from_stream
from sagas.cli.main import app
from sagas.exceptions import ApplicationError, WorkflowFailureError
from sagas.testing import WorkflowEnvironment
from sagas.worker import Worker
from tests.services import kafka_server  # noqa: F401 - the session fixture

T = timedelta(seconds=30)
KINDS = ("complete", "compensate", "timer", "signal")
COUNT = int(os.environ.get("SAGAS_REBUILD_COUNT", "500"))  # a multiple of 4
SHARDS = 4


@activity.defn
async def book(what: str) -> str:
    if what.startswith("fail"):
        raise ApplicationError(f"cannot book {what}", non_retryable=True)
    return f"booked {what}"


@activity.defn
async def cancel_booking(what: str) -> str:
    return f"cancelled {what}"


@workflow.defn
class MixedTrip:
    """One of four shapes, by ``kind``: the store ends up with closed and open runs of each sort."""

    def __init__(self) -> None:
        self.approved: str | None = None

    @workflow.signal
    def approve(self, by: str) -> None:
        self.approved = by

    @workflow.run
    async def run(self, kind: str, n: int) -> str:
        car = await workflow.execute_activity(book, f"car-{n}", start_to_close_timeout=T)
        if kind == "compensate":
            try:
                await workflow.execute_activity(book, f"fail-hotel-{n}", start_to_close_timeout=T)
            except Exception:  # noqa: BLE001 - the saga: undo the car, then fail
                await workflow.execute_activity(cancel_booking, f"car-{n}", start_to_close_timeout=T)
                raise ApplicationError(f"trip {n} compensated", non_retryable=True) from None
        if kind == "timer":
            await workflow.sleep(3600)
            return f"{car} after the hour"
        if kind == "signal":
            await workflow.wait_condition(lambda: self.approved is not None)
            return f"{car} approved by {self.approved}"
        return car


def expected_result(kind: str, n: int) -> str:
    return {
        "complete": f"booked car-{n}",
        "timer": f"booked car-{n} after the hour",
        "signal": f"booked car-{n} approved by ops",
    }[kind]


async def all_runs(store: HistoryStore, namespace: str = "default") -> dict[str, VisibilityRecord]:
    out: dict[str, VisibilityRecord] = {}
    token: str | None = None
    while True:
        page = await store.list_visibility(namespace, page_size=1000, next_page_token=token)
        out.update({r.run_id: r for r in page.records})
        token = page.next_page_token
        if not token:
            return out


async def pending_timers(store: HistoryStore, kinds: set[TimerKind]) -> dict[tuple[str, str, str, str], TimerTask]:
    out = {}
    for shard in range(SHARDS):
        for t in await store.get_timer_tasks(shard, fire_before=math.inf, limit=100_000):
            if t.kind in kinds:
                out[(t.run_id, str(t.kind), str(t.event_id), t.timer_id)] = t
    return out


def settled(wid: str, state: ExecutionState | None) -> bool:
    """Closed, or open and waiting (its timer or signal) with no workflow task or activity out."""
    if state is None:
        return False
    if not state.is_open:
        return True
    waiting = bool(state.timers) if wid.startswith("timer") else state.last_completed_wft_event_id > 0
    return waiting and not (state.workflow_task or state.activities or state.buffered_events)


async def wait_settled(store: HistoryStore, ids: list[str], deadline: float) -> None:
    """Poll the store until every workflow settled (a settled one stays so: nothing else moves it)."""
    left = list(ids)
    while left:
        states = {}
        for wid in left:
            current = await store.get_current_run("default", wid)
            states[wid] = await store.get_execution("default", wid, current.run_id) if current else None
        left = [wid for wid in left if not settled(wid, states[wid])]
        if left:
            assert time.monotonic() < deadline, f"{left[0]} did not settle: {states[left[0]]}"
            await asyncio.sleep(0.2)  # poll interval; the loop checks the store, it does not guess


def vis_dict(r: VisibilityRecord) -> dict[str, Any]:
    """The row to compare; times to the microsecond (what an event time keeps)."""
    d = dataclasses.asdict(r)
    if r.status == "Running":  # the engine updates an open run's row on start and upserts only
        d.pop("history_length")
    for key in ("start_time", "execution_time", "close_time"):
        d[key] = pytest.approx(d[key], abs=1e-5) if d[key] is not None else None
    return d


async def test_wipe_and_rebuild_500_workflows_from_kafka(kafka_server: Any, tmp_path: Path) -> None:  # noqa: F811
    prefix = f"rb{uuid.uuid4().hex[:8]}"
    url = f"kafka://{kafka_server.bootstrap}?partitions=3&session_timeout_ms=2000&heartbeat_interval_ms=100&fetch_max_wait_ms=100"
    topic = f"{prefix}.history"
    original_db, rebuilt_db = tmp_path / "original.db", tmp_path / "rebuilt.db"
    plan = [(KINDS[i % len(KINDS)], i) for i in range(COUNT)]
    ids = [f"{kind}-{n}" for kind, n in plan]
    started = time.monotonic()

    # 1. run them on the original store, streaming history to Kafka
    async with await WorkflowEnvironment.start_local(
        store_url=f"sqlite:///{original_db}", history_stream_url=url, prefix=prefix, system_worker=False
    ) as env:
        async with Worker(env.client, task_queue="trips", workflows=[MixedTrip], activities=[book, cancel_booking]):
            handles = await asyncio.gather(*(
                env.client.start_workflow(MixedTrip.run, args=[kind, n], id=wid, task_queue="trips")
                for (kind, n), wid in zip(plan, ids, strict=True)
            ))
            assert env.server is not None
            await wait_settled(env.server.orchestrator.store, ids, time.monotonic() + 120)
            closed = [(kind, n, h) for (kind, n), h in zip(plan, handles, strict=True) if kind in ("complete", "compensate")]
            outcomes = await asyncio.gather(*(h.result() for _, _, h in closed), return_exceptions=True)
            for (kind, n, _), outcome in zip(closed, outcomes, strict=True):
                if kind == "complete":
                    assert outcome == expected_result(kind, n)
                else:
                    assert isinstance(outcome, WorkflowFailureError), outcome
        stream = env.server.orchestrator.history_stream
        assert stream is not None and await stream.flush(30)
    ran = time.monotonic() - started
    print(f"\n{COUNT} workflows ran in {ran:.1f}s")

    # 2. the original store, as it was when the server stopped
    original = await open_store(f"sqlite:///{original_db}")
    try:
        vis = await all_runs(original)
        assert len(vis) == COUNT
        states = {r.workflow_id: await original.get_execution("default", r.workflow_id, r.run_id) for r in vis.values()}
        currents = {wid: await original.get_current_run("default", wid) for wid in ids}
        timers = await pending_timers(original, {TimerKind.USER_TIMER, TimerKind.DELETE_HISTORY})
    finally:
        await original.aclose()
    by_status: dict[str, int] = {}
    for s in states.values():
        assert s is not None
        by_status[str(s.status)] = by_status.get(str(s.status), 0) + 1
    assert by_status == {"Completed": COUNT // 4, "Failed": COUNT // 4, "Running": COUNT // 2}, by_status

    # 3. wipe: a new, empty store, rebuilt from the stream alone
    rebuild_started = time.monotonic()
    store = await open_store(f"sqlite:///{rebuilt_db}")
    try:
        report = await rebuild_from_stream(url, store, topic=topic, num_shards=SHARDS, wait=30, idle=2)
        assert (report.runs, report.open_runs, report.verified, report.transfer_tasks) == (COUNT, COUNT // 2, COUNT, 0)
        rebuilt_vis = await all_runs(store)
        assert {k: vis_dict(v) for k, v in rebuilt_vis.items()} == {k: vis_dict(v) for k, v in vis.items()}
        for wid in ids:
            original_state = states[wid]
            assert original_state is not None
            rebuilt = await store.get_execution("default", wid, original_state.run_id)
            assert rebuilt is not None
            assert state_differences(original_state, rebuilt) == [], wid
            assert await store.get_current_run("default", wid) == currents[wid]
        rebuilt_timers = await pending_timers(store, set(TimerKind))
        assert set(rebuilt_timers) == set(timers)
        for key, t in timers.items():
            assert rebuilt_timers[key].fire_time == pytest.approx(t.fire_time, abs=1e-3), key
        assert sum(t.kind == TimerKind.USER_TIMER for t in rebuilt_timers.values()) == COUNT // 4
    finally:
        await store.aclose()
    rebuilt_in = time.monotonic() - rebuild_started
    print(f"rebuilt in {rebuilt_in:.1f}s")
    assert "buffered_events" in NOT_FROM_HISTORY

    # 4. the open ones carry on from the rebuilt store: timers fire (time skipping), signals arrive
    async with await WorkflowEnvironment.start_time_skipping(
        store_url=f"sqlite:///{rebuilt_db}", prefix=prefix, system_worker=False
    ) as env:
        async with Worker(env.client, task_queue="trips", workflows=[MixedTrip], activities=[book, cancel_booking]):
            open_ones = [(kind, n, wid) for (kind, n), wid in zip(plan, ids, strict=True) if kind in ("timer", "signal")]
            await asyncio.gather(*(
                env.client.get_workflow_handle(wid).signal(MixedTrip.approve, "ops")
                for kind, _, wid in open_ones if kind == "signal"
            ))
            results = await asyncio.gather(*(env.client.get_workflow_handle(wid).result() for _, _, wid in open_ones))
            assert results == [expected_result(kind, n) for kind, n, _ in open_ones]
            done = await env.client.get_workflow_handle("complete-0").result()
            assert done == expected_result("complete", 0)  # closed runs are there, with their results
    print(f"\n500 workflows: ran in {ran:.1f}s, rebuilt in {rebuilt_in:.1f}s, total {time.monotonic() - started:.1f}s")


def test_rebuild_cli_refuses_a_queue_broker_and_a_missing_stream(tmp_path: Path) -> None:
    result = CliRunner().invoke(app, ["admin", "rebuild", "--from", "local://", "--store", f"sqlite:///{tmp_path}/x.db"])
    assert result.exit_code == 1
    assert "is a queue" in result.output
