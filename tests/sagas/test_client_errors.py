"""The client maps HTTP answers to sagas.exceptions (no server: httpx.MockTransport)."""

from __future__ import annotations

import json
from collections.abc import Callable
from typing import Any

import httpx
import pytest

from orchestrator.api.common import Failure
from orchestrator.api.http import ErrorBody
from sagas.client import Client, WorkflowHandle
from sagas.client._transport import Transport
from sagas.exceptions import (
    ApplicationError,
    CancelledError,
    RPCError,
    TerminatedError,
    TimeoutError,
    WorkflowAlreadyStartedError,
    WorkflowFailureError,
    WorkflowNotFoundError,
    WorkflowQueryFailedError,
    WorkflowUpdateFailedError,
)

Handler = Callable[[httpx.Request], httpx.Response]


def make_client(handler: Handler) -> Client:
    return Client(Transport("test:7233", http_transport=httpx.MockTransport(handler)), namespace="default")


def error(status: int, code: str, message: str = "boom", **details: Any) -> httpx.Response:
    return httpx.Response(status, json=ErrorBody(code=code, message=message, hint="a hint", details=details).model_dump())


async def test_not_found_maps_to_workflow_not_found_error() -> None:
    client = make_client(lambda req: error(404, "workflow_not_found", "no run wf-1"))
    with pytest.raises(WorkflowNotFoundError) as info:
        await client.get_workflow_handle("wf-1").describe()
    assert info.value.code == "workflow_not_found"
    assert info.value.status == 404
    assert "no run wf-1" in str(info.value) and "a hint" in str(info.value)


async def test_already_started_maps_with_ids() -> None:
    client = make_client(lambda req: error(409, "workflow_already_started", run_id="r-1"))
    with pytest.raises(WorkflowAlreadyStartedError) as info:
        await client.start_workflow("MyWorkflow", id="wf-1", task_queue="q")
    assert (info.value.workflow_id, info.value.workflow_type, info.value.run_id) == ("wf-1", "MyWorkflow", "r-1")


async def test_query_failed_and_update_rejected() -> None:
    failure = Failure(message="limit must be >= 0", type="ValueError")

    def handler(req: httpx.Request) -> httpx.Response:
        if req.url.path.endswith("/query"):
            return error(400, "query_failed", "handler raised KeyError")
        return error(400, "update_rejected", "rejected", failure=failure.model_dump(mode="json"))

    handle = make_client(handler).get_workflow_handle("wf-1")
    with pytest.raises(WorkflowQueryFailedError, match="handler raised KeyError"):
        await handle.query("status")
    with pytest.raises(WorkflowUpdateFailedError) as info:
        await handle.execute_update("set_limit", -1)
    assert isinstance(info.value.cause, ApplicationError)
    assert info.value.cause.type == "ValueError"


async def test_update_failure_in_answer_is_raised() -> None:
    def handler(req: httpx.Request) -> httpx.Response:
        body = json.loads(req.content)
        return httpx.Response(
            200,
            json={"update_id": body["update_id"], "stage": "Completed", "failure": {"message": "nope", "type": "Bad"}},
        )

    with pytest.raises(WorkflowUpdateFailedError) as info:
        await make_client(handler).get_workflow_handle("wf-1").execute_update("u", 1, id="upd-1")
    assert str(info.value.cause) == "nope"


@pytest.mark.parametrize(
    ("status", "code"),
    [(400, "invalid_argument"), (409, "workflow_not_running"), (429, "rate_limited"), (500, "internal")],
)
async def test_other_codes_are_rpc_errors(status: int, code: str) -> None:
    client = make_client(lambda req: error(status, code))
    with pytest.raises(RPCError) as info:
        await client.get_workflow_handle("wf-1").signal("go")
    assert type(info.value) is RPCError
    assert (info.value.code, info.value.status) == (code, status)


async def test_non_json_error_body_is_rpc_error() -> None:
    client = make_client(lambda req: httpx.Response(502, text="<html>bad gateway</html>"))
    with pytest.raises(RPCError, match="HTTP 502") as info:
        await client.count_workflows()
    assert info.value.status == 502


async def test_connection_refused_is_unavailable_with_a_hint() -> None:
    with pytest.raises(RPCError) as info:
        await Client.connect("127.0.0.1:1")
    assert info.value.code == "unavailable"
    assert "sagas server start-dev" in str(info.value)
    assert "127.0.0.1:1" in str(info.value)


async def test_connect_errors_are_retried() -> None:
    calls = 0

    def handler(req: httpx.Request) -> httpx.Response:
        nonlocal calls
        calls += 1
        if calls < 3:
            raise httpx.ConnectError("refused", request=req)
        return httpx.Response(200, json={"count": 7})

    assert (await make_client(handler).count_workflows()).count == 7
    assert calls == 3


async def test_unavailable_is_retried_for_idempotent_calls() -> None:
    calls = 0

    def handler(req: httpx.Request) -> httpx.Response:
        nonlocal calls
        calls += 1
        return error(503, "unavailable") if calls == 1 else httpx.Response(200, json={"count": 1})

    assert (await make_client(handler).count_workflows()).count == 1
    assert calls == 2


def result_client(*answers: dict[str, Any]) -> tuple[Client, list[httpx.Request]]:
    seen: list[httpx.Request] = []
    queue = list(answers)

    def handler(req: httpx.Request) -> httpx.Response:
        seen.append(req)
        return httpx.Response(200, json=queue.pop(0))

    return make_client(handler), seen


async def test_result_polls_until_closed_and_follows_continue_as_new() -> None:
    client, seen = result_client(
        {"status": "Running", "run_id": "r1"},
        {"status": "ContinuedAsNew", "run_id": "r1", "new_run_id": "r2"},
        {"status": "Completed", "run_id": "r2", "result": {"n": 2}},
    )
    handle: WorkflowHandle[Any] = client.get_workflow_handle("wf-1")
    assert await handle.result() == {"n": 2}
    assert [r.url.params.get("run_id") for r in seen] == [None, "r1", "r2"]


@pytest.mark.parametrize(
    ("answer", "cause_type"),
    [
        ({"status": "Failed", "run_id": "r", "failure": {"message": "bad", "type": "Oops"}}, ApplicationError),
        ({"status": "Canceled", "run_id": "r"}, CancelledError),
        ({"status": "Terminated", "run_id": "r", "failure": {"message": "by ops", "kind": "terminated"}}, TerminatedError),
        ({"status": "TimedOut", "run_id": "r"}, TimeoutError),
    ],
)
async def test_result_raises_workflow_failure_error(answer: dict[str, Any], cause_type: type) -> None:
    client, _ = result_client(answer)
    with pytest.raises(WorkflowFailureError) as info:
        await client.get_workflow_handle("wf-1").result()
    assert isinstance(info.value.cause, cause_type)


async def test_result_is_converted_by_result_type() -> None:
    from dataclasses import dataclass

    @dataclass
    class Out:
        n: int

    client, _ = result_client({"status": "Completed", "run_id": "r", "result": {"n": 5}})
    assert await client.get_workflow_handle("wf-1", result_type=Out).result() == Out(5)


async def test_start_sends_request_and_handle_ids() -> None:
    bodies: list[dict[str, Any]] = []

    def handler(req: httpx.Request) -> httpx.Response:
        bodies.append(json.loads(req.content))
        return httpx.Response(200, json={"run_id": "run-9"})

    from datetime import timedelta

    from sagas.common import RetryPolicy

    handle = await make_client(handler).start_workflow(
        "Greet",
        args=["a", 1],
        id="wf-9",
        task_queue="q",
        execution_timeout=timedelta(minutes=1),
        retry_policy=RetryPolicy(maximum_attempts=2),
        start_signal="go",
        start_signal_args=[True],
    )
    assert (handle.id, handle.run_id, handle.result_run_id) == ("wf-9", None, "run-9")
    [body] = bodies
    assert body["workflow_type"] == "Greet" and body["input"] == ["a", 1]
    assert body["execution_timeout"] == 60.0
    assert body["retry_policy"]["maximum_attempts"] == 2
    assert body["signal"] == {"name": "go", "input": [True]}
    assert body["request_id"]  # makes a retried start harmless
