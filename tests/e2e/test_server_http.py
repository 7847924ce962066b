"""The dev server end to end over HTTP, driven by a minimal raw worker (no SDK runtime)."""

from __future__ import annotations

import json
import sqlite3
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest

from orchestrator.server import DevServer
from tests.e2e.minimal_worker import MinimalWorker, complete_workflow, fail_workflow, of_type, schedule


@pytest.fixture
async def server(tmp_path: Path) -> AsyncIterator[DevServer]:
    srv = DevServer(store_url=f"sqlite:///{tmp_path / 'h.db'}", port=0)
    await srv.start()
    yield srv
    await srv.stop()


@pytest.fixture
async def worker(server: DevServer) -> AsyncIterator[MinimalWorker]:
    w = MinimalWorker(f"http://{server.target}")
    yield w
    await w.aclose()


def one_activity(events: list[dict[str, Any]]) -> list[dict[str, Any]]:
    if done := of_type(events, "ActivityTaskCompleted"):
        return [complete_workflow(done[-1]["result"])]
    if failed := of_type(events, "ActivityTaskFailed") + of_type(events, "ActivityTaskTimedOut"):
        return [fail_workflow(failed[-1]["failure"]["message"])]
    return [] if of_type(events, "ActivityTaskScheduled") else [schedule(
        retry_policy={"initial_interval": 0.05, "maximum_attempts": 3}, start_to_close_timeout=10
    )]


async def test_one_activity(worker: MinimalWorker) -> None:
    await worker.start("w1", input=[{"trip": 1}])
    await worker.workflow_task(one_activity)
    task = await worker.activity_task(lambda t: {"result": {"echo": t["input"]}})
    assert task["kind"] == "activity_task" and task["activity_type"] == "work" and task["attempt"] == 1
    assert task["reply_to"] == "sagas.completions" and task["deadline"]
    await worker.workflow_task(one_activity)
    res = await worker.result("w1")
    assert res["status"] == "Completed" and res["result"] == {"echo": []}


async def test_activity_fails_twice_then_succeeds(worker: MinimalWorker, server: DevServer) -> None:
    await worker.start("w2")
    await worker.workflow_task(one_activity)
    attempts = []
    for _ in range(3):
        def reply(t: dict[str, Any]) -> dict[str, Any]:
            attempts.append(t["attempt"])
            if t["attempt"] < 3:
                return {"failure": {"message": "flaky", "type": "Flaky"}}
            return {"result": "ok"}
        await worker.activity_task(reply)
    assert attempts == [1, 2, 3]
    await worker.workflow_task(one_activity)
    assert (await worker.result("w2"))["result"] == "ok"
    types = [e["event_type"] for e in await worker.history("w2")]
    # retries wrote no event of their own: one Started + one Completed for three attempts
    assert types.count("ActivityTaskStarted") == 1 and types.count("ActivityTaskCompleted") == 1
    started = of_type(await worker.history("w2"), "ActivityTaskStarted")[0]
    assert started["attempt"] == 3 and started["last_failure"]["message"] == "flaky"


async def test_durable_timer(worker: MinimalWorker) -> None:
    def decide(events: list[dict[str, Any]]) -> list[dict[str, Any]]:
        if of_type(events, "TimerFired"):
            return [complete_workflow("woke")]
        return [{"command_type": "StartTimer", "timer_id": "1", "start_to_fire_timeout": 0.2}]
    await worker.start("w3")
    await worker.workflow_task(decide)
    await worker.workflow_task(decide)
    assert (await worker.result("w3"))["result"] == "woke"


async def test_signal(worker: MinimalWorker) -> None:
    def decide(events: list[dict[str, Any]]) -> list[dict[str, Any]]:
        signals = of_type(events, "WorkflowExecutionSignaled")
        return [complete_workflow(signals[0]["input"])] if signals else []
    await worker.start("w4")
    await worker.workflow_task(decide)
    r = await worker.http.post("/api/v1/namespaces/default/workflows/w4/signal", json={"name": "approve", "input": [True]})
    assert r.status_code == 200
    await worker.workflow_task(decide)
    assert (await worker.result("w4"))["result"] == [True]


async def test_cancel(worker: MinimalWorker) -> None:
    def decide(events: list[dict[str, Any]]) -> list[dict[str, Any]]:
        if of_type(events, "WorkflowExecutionCancelRequested"):
            return [{"command_type": "CancelWorkflowExecution"}]
        return []
    await worker.start("w5")
    await worker.workflow_task(decide)
    assert (await worker.http.post("/api/v1/namespaces/default/workflows/w5/cancel", json={})).status_code == 200
    await worker.workflow_task(decide)
    assert (await worker.result("w5"))["status"] == "Canceled"


async def test_start_to_close_timeout(worker: MinimalWorker) -> None:
    def decide(events: list[dict[str, Any]]) -> list[dict[str, Any]]:
        if timed_out := of_type(events, "ActivityTaskTimedOut"):
            return [fail_workflow(timed_out[0]["failure"]["timeout_type"])]
        return [] if of_type(events, "ActivityTaskScheduled") else [
            schedule(start_to_close_timeout=0.3, retry_policy={"maximum_attempts": 1})
        ]
    await worker.start("w6")
    await worker.workflow_task(decide)
    await worker.activity_task(lambda t: None)  # take it and never answer
    await worker.workflow_task(decide)
    res = await worker.result("w6")
    assert res["status"] == "Failed" and res["failure"]["message"] == "StartToClose"


async def _count(worker: MinimalWorker) -> int:
    r = await worker.http.get("/api/v1/namespaces/default/workflow-count")
    return int(r.json()["count"])


async def test_bad_input_gives_stable_codes_and_changes_nothing(worker: MinimalWorker) -> None:
    await worker.start("dup")
    before = await _count(worker)
    http = worker.http
    r = await http.post("/api/v1/namespaces/default/workflows", content=b"{not json", headers={"content-type": "application/json"})
    assert r.status_code == 400 and r.json()["code"] == "malformed_json"
    r = await http.post("/api/v1/namespaces/default/workflows", json={"workflow_id": "x"})
    assert r.status_code == 400 and r.json()["code"] == "invalid_argument" and "workflow_type" in r.json()["message"]
    r = await http.get("/api/v1/namespaces/default/workflows/nope")
    assert r.status_code == 404 and r.json()["code"] == "workflow_not_found" and r.json()["hint"]
    r = await http.post("/api/v1/namespaces/default/workflows", json={"workflow_id": "dup", "workflow_type": "Test", "task_queue": "q"})
    assert r.status_code == 409 and r.json()["code"] == "workflow_already_started"
    big = "x" * (2 * 1024 * 1024 + 10)
    r = await http.post("/api/v1/namespaces/default/workflows", json={"workflow_id": "big", "workflow_type": "T", "task_queue": "q", "input": [big]})
    assert r.status_code == 413 and r.json()["code"] == "payload_too_large" and "2097152" in r.json()["message"]
    r = await http.post("/api/v1/namespaces/default/workflows/dup/signal", json={"name": "s", "input": ["x" * (2 * 1024 * 1024)]})
    assert r.status_code == 413
    r = await worker.complete({"kind": "activity_result", "task_token": "forged.token", "result": 1})
    assert r.status_code == 400 and r.json()["code"] == "invalid_task_token"
    r = await http.post("/api/v1/namespaces/default/workflows", json={"workflow_id": "u", "workflow_type": "T", "task_queue": "q", "id_reuse_policy": "Whatever"})
    assert await _count(worker) == before + (1 if r.status_code == 200 else 0)
    r = await http.post("/api/v1/namespaces/nosuch/workflows", json={"workflow_id": "n", "workflow_type": "T", "task_queue": "q"})
    assert r.status_code == 404 and r.json()["code"] == "namespace_not_found"


async def test_duplicate_start_with_same_request_id_is_idempotent(worker: MinimalWorker) -> None:
    body = {"workflow_id": "idem", "workflow_type": "T", "task_queue": "q", "request_id": "req-1"}
    r1 = await worker.http.post("/api/v1/namespaces/default/workflows", json=body)
    r2 = await worker.http.post("/api/v1/namespaces/default/workflows", json=body)
    assert r1.json()["run_id"] == r2.json()["run_id"] and r2.json()["started"] is False


async def test_stale_completion_is_rejected(worker: MinimalWorker) -> None:
    await worker.start("stale")
    task = await worker.workflow_task(lambda ev: [])
    r = await worker.complete({"kind": "workflow_task_completed", "task_token": task["task_token"], "commands": []})
    assert r.status_code == 409 and r.json()["code"] == "stale_task"


async def test_unknown_event_version_is_a_clear_error(worker: MinimalWorker, server: DevServer, tmp_path: Path) -> None:
    await worker.start("future")
    db = sqlite3.connect(tmp_path / "h.db")
    rows = db.execute("SELECT event_id, data FROM history_events WHERE workflow_id = 'future'").fetchall()
    assert rows
    event_id, data = rows[0]
    doc = json.loads(data)
    doc["v"] = 99
    db.execute("UPDATE history_events SET data = ? WHERE workflow_id = 'future' AND event_id = ?", (json.dumps(doc), event_id))
    db.commit()
    db.close()
    r = await worker.http.get("/api/v1/namespaces/default/workflows/future/history")
    assert r.status_code == 500 and r.json()["code"] == "unsupported_event_version"


async def test_poison_reply_on_completions_queue_goes_to_dlq(worker: MinimalWorker) -> None:
    r = await worker.http.post("/api/v1/queues/sagas.completions/publish", json={"body": "{oops"})
    assert r.status_code == 200
    for _ in range(200):
        dlq = (await worker.http.get("/api/v1/dlq")).json()["dead_letters"]
        if dlq:
            break
        await worker.receive("sagas.nothing", wait=0.02)
    assert dlq[0]["queue"] == "sagas.completions" and dlq[0]["reason"].startswith("malformed_json")


async def test_cluster_info_redacts_broker_password_for_non_workers(tmp_path: Path) -> None:
    from orchestrator.frontend.app import _redact_url

    assert _redact_url("amqp://guest:secret@127.0.0.1:5672/?x=1") == "amqp://guest:***@127.0.0.1:5672/?x=1"
    assert _redact_url("local://127.0.0.1:7233") == "local://127.0.0.1:7233"


async def test_unexpected_errors_are_json(worker: MinimalWorker, server: DevServer, monkeypatch: pytest.MonkeyPatch) -> None:
    async def boom(*args: Any, **kwargs: Any) -> Any:
        raise RuntimeError("kaput")

    monkeypatch.setattr(server.orchestrator.visibility, "count", boom)
    r = await worker.http.get("/api/v1/namespaces/default/workflow-count")
    assert r.status_code == 500 and r.json()["code"] == "internal" and "kaput" in r.json()["message"]
