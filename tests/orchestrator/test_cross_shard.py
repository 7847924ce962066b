"""The internal endpoint other cluster members call for cross-shard operations: signed, or refused."""

from __future__ import annotations

from collections.abc import AsyncIterator

import httpx
import pytest

from orchestrator.api import events as E
from orchestrator.matching import cross_shard
from sagas import workflow
from sagas.testing import WorkflowEnvironment
from sagas.worker import Worker


@workflow.defn
class Poked:
    def __init__(self) -> None:
        self.got = ""

    @workflow.signal
    def poke(self, value: str) -> None:
        self.got = value

    @workflow.run
    async def run(self) -> str:
        await workflow.wait_condition(lambda: bool(self.got))
        return self.got


@pytest.fixture
async def env() -> AsyncIterator[WorkflowEnvironment]:
    environment = await WorkflowEnvironment.start_local()
    try:
        yield environment
    finally:
        await environment.shutdown()


async def test_signed_operations_apply_and_unsigned_ones_are_refused(env: WorkflowEnvironment) -> None:
    assert env.server is not None
    key = env.server.orchestrator.token_key
    async with Worker(env.client, task_queue="xs", workflows=[Poked]):
        handle = await env.client.start_workflow(Poked.run, id="poked", task_queue="xs")
        op = cross_shard.HistoryOp(op="signal", namespace="default", workflow_id="poked", signal_name="poke",
                                   input=["hi"], request_id="ext:test:1")  # fmt: skip
        body = op.model_dump_json().encode()
        async with httpx.AsyncClient(base_url=env.server.url) as http:
            for signature in ("", "0" * 64, cross_shard.sign(b"another cluster's key" * 2, body)):
                r = await http.post(cross_shard.PATH, content=body, headers={cross_shard.SIGNATURE_HEADER: signature})
                assert r.status_code == 401 and r.json()["code"] == "unauthenticated", r.text
            garbage = b'{"op": "explode"}'
            r = await http.post(cross_shard.PATH, content=garbage,
                                headers={cross_shard.SIGNATURE_HEADER: cross_shard.sign(key, garbage)})  # fmt: skip
            assert r.status_code == 400 and "bad internal history operation" in r.json()["message"]
            signed = {cross_shard.SIGNATURE_HEADER: cross_shard.sign(key, body)}
            r = await http.post(cross_shard.PATH, content=body, headers=signed)
            assert r.status_code == 200, r.text
            again = await http.post(cross_shard.PATH, content=body, headers=signed)  # same request id: once
            assert again.status_code == 200
        assert await handle.result() == "hi"
        signals = [e for e in (await handle.fetch_history()).events if isinstance(e, E.WorkflowExecutionSignaled)]
        assert len(signals) == 1
        missing = cross_shard.HistoryOp(op="terminate", namespace="default", workflow_id="nobody", reason="x")
        body = missing.model_dump_json().encode()
        async with httpx.AsyncClient(base_url=env.server.url) as http:
            r = await http.post(cross_shard.PATH, content=body, headers={cross_shard.SIGNATURE_HEADER: cross_shard.sign(key, body)})
        assert r.status_code == 404 and r.json()["code"] == "workflow_not_found"
