"""Bugs the chaos suite found, each pinned by the smallest test that shows it.

The bugs are fixed; each test stays as a regression test.
"""

from __future__ import annotations

import asyncio
import json
import time
from collections.abc import AsyncIterator, Callable
from datetime import timedelta
from pathlib import Path

import httpx
import pytest

from orchestrator.persistence._faults import FaultInjectingHistoryStore
from orchestrator.persistence.base import HistoryStore
from orchestrator.server import DevServer
from sagas import Saga, workflow
from sagas.client import Client
from sagas.exceptions import WorkflowFailureError
from sagas.worker import Replayer, Worker
from services_demo.trip_booking.services import KINDS
from services_demo.trip_booking.workflow import TripBooking
from tests.chaos.harness import ChildProcess, TripSystem
from tests.chaos.invariants import read_ledger
from tests.e2e.minimal_worker import MinimalWorker, complete_workflow, of_type, schedule

pytestmark = pytest.mark.chaos


class Wrapper:
    """``OrchestratorConfig.store_wrapper`` that keeps the fault injector it built."""

    def __init__(self) -> None:
        self.faults: FaultInjectingHistoryStore | None = None

    def __call__(self, raw: HistoryStore) -> HistoryStore:
        self.faults = FaultInjectingHistoryStore(raw, seed=1)
        return self.faults


@pytest.fixture
async def faulty() -> AsyncIterator[tuple[DevServer, FaultInjectingHistoryStore]]:
    wrapper = Wrapper()
    server = DevServer(store_url="memory://", port=0, store_wrapper=wrapper)
    await server.start()
    assert wrapper.faults is not None
    try:
        yield server, wrapper.faults
    finally:
        await server.stop()


async def poll(check: Callable[[], object], timeout: float) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if await check():  # type: ignore[misc]
            return True
        await asyncio.sleep(0.05)
    return False


async def test_timers_still_fire_after_the_store_failed_to_say_when_the_next_one_is_due(
    faulty: tuple[DevServer, FaultInjectingHistoryStore],
) -> None:
    server, faults = faulty
    # More failures than the retrying layer's attempts: the error reaches the timer loop once.
    faults.fail_next("next_timer_time", times=8)
    async with httpx.AsyncClient(base_url=f"http://{server.target}", timeout=10) as http:
        r = await http.post(
            "/api/v1/namespaces/default/workflows",
            json={"workflow_id": "delayed", "workflow_type": "W", "task_queue": "q", "start_delay": 0.3},
        )
        assert r.status_code == 200, r.text

        async def first_task_scheduled() -> bool:
            h = await http.get("/api/v1/namespaces/default/workflows/delayed/history")
            return any(e["event_type"] == "WorkflowTaskScheduled" for e in h.json()["events"])

        # the start delay is a durable timer (WORKFLOW_BACKOFF) of 0.3 s
        assert await poll(first_task_scheduled, timeout=5.0), (
            f"the 0.3 s start-delay timer never fired; timer task: {server.orchestrator.timers._task}"
        )


async def test_a_valid_reply_survives_a_short_store_outage(
    faulty: tuple[DevServer, FaultInjectingHistoryStore],
) -> None:
    server, faults = faulty
    worker = MinimalWorker(f"http://{server.target}")
    try:
        await worker.start("outage")

        def flow(events: list[dict[str, object]]) -> list[dict[str, object]]:
            if of_type(events, "ActivityTaskCompleted"):
                return [complete_workflow("done")]
            return [schedule(start_to_close_timeout=60)]

        await worker.workflow_task(flow)
        got = await worker.receive(worker.act_queue, wait=10)
        assert got is not None
        task, receipt = got
        reply = {"v": 1, "kind": "activity_result", "task_token": task["task_token"], "result": "paid"}

        faults.set_error_rate("write", 1.0)  # the store is down for a few seconds ...
        r = await worker.http.post(
            "/api/v1/queues/sagas.completions/publish", json={"body": json.dumps(reply)}
        )
        assert r.status_code == 200
        await worker.ack(worker.act_queue, receipt)

        async def dead_lettered() -> bool:
            dlq = (await worker.http.get("/api/v1/dlq")).json()["dead_letters"]
            return any(d["queue"] == "sagas.completions" for d in dlq)

        lost = await poll(dead_lettered, timeout=4.0)
        faults.set_error_rate("write", 0.0)  # ... and back

        async def applied() -> bool:
            return bool(of_type(await worker.history("outage"), "ActivityTaskCompleted"))

        assert not lost, "a valid activity reply was dead-lettered because the store was briefly unavailable"
        assert await poll(applied, timeout=10.0), "the reply was never applied once the store was back"
    finally:
        await worker.aclose()


async def test_a_saga_cancelled_while_a_booking_is_in_flight_leaves_nothing_booked(tmp_path: Path) -> None:
    server = DevServer(store_url=f"sqlite:///{tmp_path / 'history.db'}", port=0)
    await server.start()
    system = TripSystem(tmp_path, server.target, seed=3, secret="", transient_failure_rate=0.0)
    # The hotel books at once, then takes 5 s to answer: the workflow is cancelled in between.
    system.services["hotel"] = ChildProcess(
        "hotel", system.service_argv("hotel", 1, 0.0, "--delay", "5"), tmp_path
    )
    client = await Client.connect(server.target)
    try:
        await system.start()
        handle = await client.start_workflow(
            TripBooking.run, {"destination": "Rome"}, id="trip-cancel", task_queue="trips"
        )

        async def hotel_booked() -> bool:
            return any(r.key == "trip-cancel" for r in read_ledger(tmp_path / "hotel.db"))

        assert await poll(hotel_booked, timeout=20.0)
        await handle.cancel()
        with pytest.raises(WorkflowFailureError):
            await asyncio.wait_for(handle.result(), 8)
        still_booked = {
            kind: [r for r in read_ledger(tmp_path / f"{kind}.db") if r.status == "booked"] for kind in KINDS
        }
        assert still_booked == dict.fromkeys(KINDS, []), (
            f"the cancelled saga left bookings behind: {still_booked}"
        )
    finally:
        await client.close()
        await system.stop()
        await server.stop()


@workflow.defn
class UndoOnCancel:
    """One step whose compensation must run if the workflow is cancelled while the step is queued."""

    @workflow.run
    async def run(self) -> None:
        async with Saga() as saga:
            saga.add_compensation("undo", task_queue="nobody", start_to_close_timeout=timedelta(seconds=30))
            await workflow.execute_activity(
                "step", task_queue="nobody", start_to_close_timeout=timedelta(seconds=30)
            )


async def test_a_saga_cancelled_while_a_step_is_queued_replays() -> None:
    server = DevServer(store_url="memory://", port=0)
    await server.start()
    client = await Client.connect(server.target)
    try:
        async with Worker(client, task_queue="undo", workflows=[UndoOnCancel]):
            handle = await client.start_workflow(UndoOnCancel.run, id="undo-on-cancel", task_queue="undo")

            async def scheduled(activity_type: str) -> bool:
                history = await handle.fetch_history()
                return any(getattr(e, "activity_type", None) == activity_type for e in history.events)

            assert await poll(lambda: scheduled("step"), timeout=10.0)
            await handle.cancel()
            assert await poll(lambda: scheduled("undo"), timeout=10.0), "the compensation was never scheduled"
        history = await handle.fetch_history()
        kinds = [e.event_type.value for e in history.events]
        assert "ActivityTaskCanceled" in kinds
        await Replayer(workflows=[UndoOnCancel]).replay_workflow(history)  # NondeterminismError today
    finally:
        await client.close()
        await server.stop()
