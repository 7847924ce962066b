"""Namespaces: register/describe/update/list, retention, payload and history limits, rate limits."""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator
from typing import Any

import httpx
import pytest

from orchestrator.api.tasks import TimerKind
from orchestrator.errors import RateLimitedError
from orchestrator.frontend.ratelimit import NamespaceRateLimiter
from orchestrator.server import DevServer
from sagas.client import Client
from tests.e2e.minimal_worker import MinimalWorker, of_type


@pytest.fixture
async def server() -> AsyncIterator[DevServer]:
    srv = DevServer(store_url="memory://", port=0)
    await srv.start()
    yield srv
    await srv.stop()


@pytest.fixture
async def http(server: DevServer) -> AsyncIterator[httpx.AsyncClient]:
    async with httpx.AsyncClient(base_url=f"http://{server.target}/api/v1", timeout=10) as client:
        yield client


async def register(http: httpx.AsyncClient, name: str, **settings: Any) -> dict[str, Any]:
    r = await http.post("/namespaces", json={"name": name, **settings})
    assert r.status_code == 201, r.text
    return dict(r.json())


def start_body(wid: str, **extra: Any) -> dict[str, Any]:
    return {"workflow_id": wid, "workflow_type": "Test", "task_queue": "q", **extra}


async def test_register_describe_update_list(http: httpx.AsyncClient) -> None:
    info = await register(
        http, "payments", description="money", retention_days=30, rate_limit_rps=50,
        max_payload_bytes=4096, max_history_events=1000, history_warn_events=500,
    )
    assert info == {
        "name": "payments", "description": "money", "retention_days": 30.0, "rate_limit_rps": 50.0,
        "rate_limit_burst": 50, "max_payload_bytes": 4096, "max_history_events": 1000, "history_warn_events": 500,
        "history_archival_uri": None, "visibility_archival_uri": None,
    }
    assert (await http.get("/namespaces/payments")).json() == info
    r = await http.patch("/namespaces/payments", json={"retention_days": 7, "rate_limit_rps": 0})
    assert r.status_code == 200
    assert r.json()["retention_days"] == 7.0 and r.json()["rate_limit_rps"] is None
    assert r.json()["description"] == "money"  # untouched fields stay
    names = [n["name"] for n in (await http.get("/namespaces")).json()["namespaces"]]
    assert names == ["default", "payments"]
    assert "payments" in (await http.get("/cluster")).json()["namespaces"]
    # default exists with the cluster defaults, and can be tuned
    default = (await http.get("/namespaces/default")).json()
    assert default["retention_days"] == 3.0 and default["max_payload_bytes"] == 2 * 1024 * 1024
    assert (await http.patch("/namespaces/default", json={"retention_days": 1})).json()["retention_days"] == 1.0


@pytest.mark.parametrize(
    "body, status, code, words",
    [
        ({"name": "payments"}, 409, "namespace_already_exists", "already registered"),
        ({"name": "default"}, 409, "namespace_already_exists", "already registered"),
        ({"name": "a.b"}, 400, "invalid_argument", "invalid namespace name"),
        ({"name": "x", "retention_days": 0}, 400, "invalid_argument", "retention_days"),
        ({"name": "x", "max_payload_bytes": 10**9}, 400, "invalid_argument", "over the cluster's limit"),
        ({"name": "x", "max_history_events": 100, "history_warn_events": 100}, 400, "invalid_argument", "must be below"),
    ],
)
async def test_register_refuses_bad_requests(http: httpx.AsyncClient, body: dict[str, Any], status: int, code: str, words: str) -> None:
    await register(http, "payments")
    r = await http.post("/namespaces", json=body)
    assert r.status_code == status and r.json()["code"] == code and words in r.text, r.text


async def test_unknown_namespace(http: httpx.AsyncClient) -> None:
    assert (await http.get("/namespaces/nope")).json()["code"] == "namespace_not_found"
    assert (await http.patch("/namespaces/nope", json={})).json()["code"] == "namespace_not_found"
    r = await http.post("/namespaces/nope/workflows", json=start_body("w"))
    assert r.status_code == 404 and r.json()["code"] == "namespace_not_found"


async def test_payload_limit_per_namespace(http: httpx.AsyncClient) -> None:
    await register(http, "tiny", max_payload_bytes=100)
    big = ["x" * 200]
    r = await http.post("/namespaces/tiny/workflows", json=start_body("w", input=big))
    assert r.status_code == 413 and r.json()["code"] == "payload_too_large"
    assert "limit of namespace 'tiny' of 100 bytes" in r.json()["message"]
    assert (await http.post("/namespaces/tiny/workflows", json=start_body("w", input=["ok"]))).status_code == 200
    r = await http.post("/namespaces/tiny/workflows/w/signal", json={"name": "s", "input": big})
    assert r.status_code == 413
    assert (await http.post("/namespaces/default/workflows", json=start_body("w", input=big))).status_code == 200


async def test_rate_limit_returns_429_and_recovers(server: DevServer, http: httpx.AsyncClient) -> None:
    await register(http, "slow", rate_limit_rps=2, rate_limit_burst=2)
    statuses = [(await http.get("/namespaces/slow/workflows")).status_code for _ in range(3)]
    assert statuses == [200, 200, 429]
    r = await http.get("/namespaces/slow/workflow-count")
    assert r.status_code == 429 and r.json()["code"] == "rate_limited" and r.headers["retry-after"] == "1"
    assert (await http.get("/namespaces/default/workflows")).status_code == 200  # other namespaces: unaffected
    await asyncio.sleep(0.6)
    assert (await http.get("/namespaces/slow/workflows")).status_code == 200
    # the SDK waits for Retry-After and tries again
    async with await Client.connect(server.target, namespace="slow") as client:
        counts = [(await client.count_workflows()).count for _ in range(4)]
    assert counts == [0, 0, 0, 0]


def test_token_bucket() -> None:
    now = [0.0]
    limiter = NamespaceRateLimiter(lambda ns: (10.0, 2) if ns == "a" else (None, None), clock=lambda: now[0])
    limiter.check("a")
    limiter.check("a")
    with pytest.raises(RateLimitedError) as caught:
        limiter.check("a")
    assert caught.value.retry_after == pytest.approx(0.1)
    now[0] += 0.1
    limiter.check("a")
    for _ in range(100):
        limiter.check("b")


async def test_retention_per_namespace(server: DevServer, http: httpx.AsyncClient) -> None:
    await register(http, "brief", retention_days=0.5)
    for ns in ("brief", "default"):
        assert (await http.post(f"/namespaces/{ns}/workflows", json=start_body("w"))).status_code == 200
        assert (await http.post(f"/namespaces/{ns}/workflows/w/terminate", json={})).status_code == 200
    orc = server.orchestrator
    fire: dict[str, float] = {}
    for shard in orc.history.range_ids:
        for t in await orc.store.get_timer_tasks(shard, time.time() + 30 * 86400, 1000):
            if t.kind == TimerKind.DELETE_HISTORY:
                fire[t.namespace] = t.fire_time - time.time()
    assert fire["brief"] == pytest.approx(0.5 * 86400, abs=60)
    assert fire["default"] == pytest.approx(3 * 86400, abs=60)


async def test_history_limit_warns_then_terminates(server: DevServer, http: httpx.AsyncClient) -> None:
    await register(http, "short", max_history_events=20, history_warn_events=8)
    worker = MinimalWorker(f"http://{server.target}", namespace="short")

    def sleep_again(events: list[dict[str, Any]]) -> list[dict[str, Any]]:
        n = len(of_type(events, "TimerStarted"))
        return [{"command_type": "StartTimer", "timer_id": str(n), "start_to_fire_timeout": 0.01}]

    try:
        await worker.start("loop")
        warnings: list[str] = []
        for _ in range(10):
            desc = (await http.get("/namespaces/short/workflows/loop")).json()
            warnings = warnings or desc["warnings"]
            if desc["info"]["status"] != "Running":
                break
            await worker.workflow_task(sleep_again)
            await worker.result("loop", wait=0.3)  # the timer fires (and may hit the limit) meanwhile
        assert desc["info"]["status"] == "Terminated"
        assert warnings and "continue-as-new" in warnings[0] and "threshold of 8" in warnings[0]
        last = (await worker.history("loop"))[-1]
        assert last["event_type"] == "WorkflowExecutionTerminated"
        assert "history size limit exceeded" in last["reason"] and "limit of 20" in last["reason"]
        assert desc["info"]["history_length"] <= 22
        assert desc["warnings"] == []  # closed: nothing to do any more
    finally:
        await worker.aclose()
