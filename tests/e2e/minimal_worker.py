"""A minimal worker speaking the raw HTTP API: proves the server without the SDK runtime.

Workflow logic is a plain function ``decide(history) -> commands`` over the
whole history (no determinism machinery needed for such small workflows).
"""

from __future__ import annotations

import json
from collections.abc import Callable
from typing import Any

import httpx

Decider = Callable[[list[dict[str, Any]]], list[dict[str, Any]]]


class MinimalWorker:
    def __init__(self, base_url: str, task_queue: str = "q", namespace: str = "default") -> None:
        self.http = httpx.AsyncClient(base_url=base_url, timeout=30)
        self.ns = namespace
        self.wf_queue = f"sagas.{namespace}.{task_queue}.wf"
        self.act_queue = f"sagas.{namespace}.{task_queue}.act"

    async def aclose(self) -> None:
        await self.http.aclose()

    async def receive(self, queue: str, wait: float = 10.0) -> tuple[dict[str, Any], str] | None:
        r = await self.http.post(f"/api/v1/queues/{queue}/receive", json={"max_messages": 1, "wait": wait})
        r.raise_for_status()
        deliveries = r.json()["deliveries"]
        if not deliveries:
            return None
        d = deliveries[0]
        return json.loads(d["body"]), d["receipt"]

    async def ack(self, queue: str, receipt: str) -> None:
        (await self.http.post(f"/api/v1/queues/{queue}/ack", json={"receipt": receipt})).raise_for_status()

    async def history(self, workflow_id: str) -> list[dict[str, Any]]:
        r = await self.http.get(f"/api/v1/namespaces/{self.ns}/workflows/{workflow_id}/history")
        r.raise_for_status()
        return list(r.json()["events"])

    async def complete(self, body: dict[str, Any]) -> httpx.Response:
        return await self.http.post("/api/v1/tasks/complete", json={"v": 1, **body})

    async def workflow_task(self, decide: Decider, wait: float = 10.0) -> dict[str, Any]:
        """Take one workflow task, decide on the full history, complete it."""
        got = await self.receive(self.wf_queue, wait)
        assert got is not None, "no workflow task arrived"
        task, receipt = got
        events = await self.history(task["workflow_id"])
        events = [e for e in events if e["event_id"] < task["next_event_id"]]
        commands = decide(events)
        r = await self.complete({"kind": "workflow_task_completed", "task_token": task["task_token"], "commands": commands})
        assert r.status_code == 200, r.text
        await self.ack(self.wf_queue, receipt)
        return task

    async def activity_task(self, reply: Callable[[dict[str, Any]], dict[str, Any] | None], wait: float = 10.0) -> dict[str, Any]:
        """Take one activity task; ``reply(task)`` gives the result body (None: no reply)."""
        got = await self.receive(self.act_queue, wait)
        assert got is not None, "no activity task arrived"
        task, receipt = got
        body = reply(task)
        if body is not None:
            r = await self.complete({"kind": "activity_result", "task_token": task["task_token"], **body})
            assert r.status_code == 200, r.text
        await self.ack(self.act_queue, receipt)
        return task

    async def start(self, workflow_id: str, **extra: Any) -> str:
        body = {"workflow_id": workflow_id, "workflow_type": "Test", "task_queue": self.wf_queue.split(".")[2], **extra}
        r = await self.http.post(f"/api/v1/namespaces/{self.ns}/workflows", json=body)
        assert r.status_code == 200, r.text
        return str(r.json()["run_id"])

    async def result(self, workflow_id: str, wait: float = 10.0) -> dict[str, Any]:
        r = await self.http.get(f"/api/v1/namespaces/{self.ns}/workflows/{workflow_id}/result", params={"wait": wait})
        r.raise_for_status()
        return dict(r.json())


def of_type(events: list[dict[str, Any]], event_type: str) -> list[dict[str, Any]]:
    return [e for e in events if e["event_type"] == event_type]


def schedule(activity_type: str = "work", activity_id: str = "1", **kw: Any) -> dict[str, Any]:
    kw.setdefault("start_to_close_timeout", 10)
    return {"command_type": "ScheduleActivityTask", "activity_id": activity_id, "activity_type": activity_type, "task_queue": "", **kw}


def complete_workflow(result: Any) -> dict[str, Any]:
    return {"command_type": "CompleteWorkflowExecution", "result": result}


def fail_workflow(message: str) -> dict[str, Any]:
    return {"command_type": "FailWorkflowExecution", "failure": {"message": message}}
