"""What an SDK worker sends over HTTP to the dev server (built-in broker).

* the delivery of a task travels with the task's completion (``/tasks/complete?ack_queue=&ack_receipt=``):
  the server acks it once the reply is applied, so there is no ``/queues/{q}/ack`` request;
* a completion the server refuses acks nothing: the delivery stays leased and comes back;
* ``ActivityStarted`` is only sent for an activity still running after ``STARTED_REPORT_DELAY``.
"""

from __future__ import annotations

import asyncio
import json
import uuid
from collections.abc import Iterator
from datetime import timedelta
from typing import Any

import httpx
import pytest

from brokers.base import queue_name
from brokers.local import LocalBrokerClient
from orchestrator.errors import UnavailableError
from sagas import activity, workflow
from sagas.testing import WorkflowEnvironment
from sagas.worker import Worker
from sagas.worker._activity_worker import STARTED_REPORT_DELAY

T = timedelta(seconds=60)
"""Long timeouts: a lost delivery would then hang the test instead of being re-driven by a timer."""


def new_queue() -> str:
    return f"tq-{uuid.uuid4().hex[:8]}"


@pytest.fixture
def sent(monkeypatch: pytest.MonkeyPatch) -> Iterator[list[httpx.Request]]:
    """Every request any httpx client of this process sends (client, worker, broker client)."""
    requests: list[httpx.Request] = []
    original = httpx.AsyncClient.send

    async def send(self: httpx.AsyncClient, request: httpx.Request, **kwargs: Any) -> httpx.Response:
        requests.append(request)
        return await original(self, request, **kwargs)

    monkeypatch.setattr(httpx.AsyncClient, "send", send)
    yield requests


def completions(requests: list[httpx.Request]) -> list[tuple[str, dict[str, str]]]:
    """(reply kind, query parameters) of every ``/tasks/complete`` request."""
    return [
        (json.loads(r.content)["kind"], dict(r.url.params))
        for r in requests
        if r.url.path.endswith("/api/v1/tasks/complete")
    ]


def acks(requests: list[httpx.Request]) -> list[str]:
    return [r.url.path for r in requests if r.url.path.endswith("/ack")]


RUNS: dict[str, int] = {}


@activity.defn
async def quick(key: str) -> str:
    RUNS[key] = RUNS.get(key, 0) + 1
    return f"done {key}"


@activity.defn
async def slow(key: str) -> str:
    await asyncio.sleep(STARTED_REPORT_DELAY * 4)
    return f"slept {key}"


@workflow.defn
class QuickWorkflow:
    @workflow.run
    async def run(self, key: str) -> str:
        return str(await workflow.execute_activity(quick, key, start_to_close_timeout=T))


@workflow.defn
class SlowWorkflow:
    @workflow.run
    async def run(self, key: str) -> str:
        return str(await workflow.execute_activity(slow, key, start_to_close_timeout=T))


async def test_the_ack_travels_with_the_completion(env: WorkflowEnvironment, sent: list[httpx.Request]) -> None:
    tq = new_queue()
    async with Worker(env.client, task_queue=tq, workflows=[QuickWorkflow], activities=[quick]):
        assert await env.client.execute_workflow(QuickWorkflow.run, tq, id=f"ack-{tq}", task_queue=tq) == f"done {tq}"
    replies = completions(sent)
    # two workflow task completions and one activity result, each carrying its delivery; no start report
    assert sorted(kind for kind, _ in replies) == ["activity_result", "workflow_task_completed", "workflow_task_completed"]
    for _, params in replies:
        assert set(params) == {"ack_queue", "ack_receipt"}
        assert tq in params["ack_queue"] or ".sticky." in params["ack_queue"]
    assert acks(sent) == []  # one request fewer per task
    assert env.server is not None
    assert not env.server.orchestrator.broker.busy()  # type: ignore[attr-defined]  # nothing left leased


async def test_a_refused_completion_acks_nothing(env: WorkflowEnvironment) -> None:
    """Straight at the API: a completion that fails leaves the delivery leased, so it comes back."""
    tq = new_queue()
    info = await env.client.cluster_info()
    queue = queue_name(info.queue_prefix, "default", tq, "act")
    broker = LocalBrokerClient(env.client.transport.base_url)
    await broker.connect()
    try:
        await broker.publish(queue, b'{"some": "task"}')
        [delivery] = await broker.receive(queue, wait=5)
        http = env.client.transport._http
        bad = {"v": 1, "kind": "activity_result", "task_token": "not-a-token", "result": 1}
        params = {"ack_queue": queue, "ack_receipt": str(delivery.receipt)}
        resp = await http.post("/tasks/complete", json=bad, params=params)
        assert resp.status_code == 400 and resp.json()["code"] == "invalid_task_token"
        # still leased (an ack would have removed it, and a nack of an unknown receipt does nothing)
        await broker.nack(delivery, requeue=True)
        [again] = await broker.receive(queue, wait=5)
        assert again.message_id == delivery.message_id and again.delivery_count == 2
        # half the pair is refused before anything happens
        resp = await http.post("/tasks/complete", json=bad, params={"ack_queue": queue})
        assert resp.status_code == 400 and resp.json()["code"] == "invalid_argument"
        await broker.ack(again)
    finally:
        await broker.aclose()


async def test_a_failed_completion_redelivers_the_task(
    env: WorkflowEnvironment, sent: list[httpx.Request], monkeypatch: pytest.MonkeyPatch
) -> None:
    """The server cannot apply the activity's result (503, past the client's retries): it acks nothing,
    the worker requeues the task, which runs again; nothing is lost although no timer would re-drive it."""
    assert env.server is not None
    completions_handler = env.server.orchestrator.completions
    original = completions_handler.handle
    refused = 0

    async def handle(reply: Any) -> bool:
        nonlocal refused
        if reply.kind == "activity_result" and refused < 4:  # the client retries a 503 three times
            refused += 1
            raise UnavailableError("store unavailable (injected)")
        return await original(reply)

    monkeypatch.setattr(completions_handler, "handle", handle)
    tq = new_queue()
    async with Worker(env.client, task_queue=tq, workflows=[QuickWorkflow], activities=[quick]):
        result = await asyncio.wait_for(
            env.client.execute_workflow(QuickWorkflow.run, tq, id=f"redo-{tq}", task_queue=tq), 30
        )
    assert result == f"done {tq}"
    assert refused == 4 and RUNS[tq] == 2
    nacks = [r.url.path for r in sent if r.url.path.endswith("/nack")]
    assert len(nacks) == 1 and acks(sent) == []


async def test_only_a_slow_activity_reports_its_start(env: WorkflowEnvironment, sent: list[httpx.Request]) -> None:
    tq = new_queue()
    async with Worker(env.client, task_queue=tq, workflows=[QuickWorkflow, SlowWorkflow], activities=[quick, slow]):
        assert await env.client.execute_workflow(QuickWorkflow.run, tq, id=f"quick-{tq}", task_queue=tq) == f"done {tq}"
        assert [k for k, _ in completions(sent)].count("activity_started") == 0
        handle = await env.client.start_workflow(SlowWorkflow.run, tq, id=f"slow-{tq}", task_queue=tq)

        async def reported_started() -> None:  # the server knows while the activity still runs
            while True:
                desc = await handle.describe()
                if desc.pending_activities and desc.pending_activities[0].state == "Started":
                    return
                await asyncio.sleep(0.01)

        await asyncio.wait_for(reported_started(), 10)
        assert await handle.result() == f"slept {tq}"
    kinds = [k for k, _ in completions(sent)]
    assert kinds.count("activity_started") == 1
    started_at = next(i for i, r in enumerate(sent) if r.url.path.endswith("/tasks/complete") and b"activity_started" in r.content)
    result_at = next(i for i, r in enumerate(sent) if r.url.path.endswith("/tasks/complete") and b"slept" in r.content)
    assert started_at < result_at
