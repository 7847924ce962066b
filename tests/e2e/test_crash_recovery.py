"""SIGKILL the dev server mid-run, restart it on the same file: nothing is lost."""

from __future__ import annotations

import asyncio
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from tests.e2e.conftest import ServerProcess, free_port
from tests.e2e.minimal_worker import MinimalWorker, complete_workflow, of_type, schedule


@pytest.fixture
def server(tmp_path: Path) -> Iterator[ServerProcess]:
    srv = ServerProcess(tmp_path / "history.db", free_port(), tmp_path)
    srv.start()
    yield srv
    srv.stop()


def timer_flow(events: list[dict[str, Any]]) -> list[dict[str, Any]]:
    if of_type(events, "TimerFired"):
        return [complete_workflow("timer fired")]
    return [] if of_type(events, "TimerStarted") else [
        {"command_type": "StartTimer", "timer_id": "1", "start_to_fire_timeout": 1.0}
    ]


def activity_flow(events: list[dict[str, Any]]) -> list[dict[str, Any]]:
    if done := of_type(events, "ActivityTaskCompleted"):
        return [complete_workflow(done[0]["result"])]
    return [] if of_type(events, "ActivityTaskScheduled") else [schedule(start_to_close_timeout=60)]


async def test_kill9_mid_run_loses_nothing(server: ServerProcess) -> None:
    url = f"http://127.0.0.1:{server.port}"
    worker = MinimalWorker(url)
    await worker.start("timer-wf")
    await worker.workflow_task(timer_flow)
    await worker.start("activity-wf")
    await worker.workflow_task(activity_flow)
    taken = await worker.activity_task(lambda t: None)  # the worker took it ... then the server dies
    await worker.aclose()

    server.kill9()
    server.start()

    worker = MinimalWorker(url)
    try:
        # the pending activity is dispatched again by the restarted server
        again = await worker.activity_task(lambda t: {"result": "paid"}, wait=15)
        assert again["workflow_id"] == "activity-wf" and again["activity_id"] == taken["activity_id"]
        for _ in range(2):  # one workflow task each: the timer fired, the activity completed
            got = await worker.receive(worker.wf_queue, wait=15)
            assert got is not None
            task, receipt = got
            events = [e for e in await worker.history(task["workflow_id"]) if e["event_id"] < task["next_event_id"]]
            decide = timer_flow if task["workflow_id"] == "timer-wf" else activity_flow
            r = await worker.complete({"kind": "workflow_task_completed", "task_token": task["task_token"], "commands": decide(events)})
            assert r.status_code == 200, r.text
            await worker.ack(worker.wf_queue, receipt)
        assert (await worker.result("timer-wf"))["result"] == "timer fired"
        assert (await worker.result("activity-wf"))["result"] == "paid"
        for wid in ("timer-wf", "activity-wf"):
            events = await worker.history(wid)
            assert [e["event_id"] for e in events] == list(range(1, len(events) + 1))
        assert len(of_type(await worker.history("timer-wf"), "TimerFired")) == 1
        assert len(of_type(await worker.history("activity-wf"), "ActivityTaskCompleted")) == 1
        # nothing else is waiting: no duplicate task was published
        await asyncio.sleep(0)
        assert await worker.receive(worker.wf_queue, wait=0.5) is None
    finally:
        await worker.aclose()
