"""The dev server end to end on the MongoDB store, once: a workflow with one activity.

The server is the same MongoDB the contract suite uses (``SAGAS_TEST_MONGODB_URL``
or the SecantusDB stand-in, skipped without it and failing in CI without it).
"""

from __future__ import annotations

import uuid
from collections.abc import AsyncIterator, Iterator

import pytest

pytest.importorskip("pymongo")

from orchestrator.persistence.base import open_store  # noqa: E402
from orchestrator.server import DevServer  # noqa: E402
from tests.contract.conftest import mongo_server_url, stop_mongo_server  # noqa: E402
from tests.e2e.minimal_worker import MinimalWorker, of_type  # noqa: E402
from tests.e2e.test_server_http import one_activity  # noqa: E402


@pytest.fixture(scope="module", autouse=True)
def _stop_the_stand_in_afterwards() -> Iterator[None]:
    yield
    stop_mongo_server()


@pytest.fixture
def store_url() -> str:
    return mongo_server_url(f"sagas_e2e_{uuid.uuid4().hex[:12]}")


@pytest.fixture
async def worker(store_url: str) -> AsyncIterator[MinimalWorker]:
    server = DevServer(store_url=store_url, port=0)
    await server.start()
    w = MinimalWorker(f"http://{server.target}")
    try:
        yield w
    finally:
        await w.aclose()
        await server.stop()


async def test_one_activity_on_mongodb(worker: MinimalWorker, store_url: str) -> None:
    run_id = await worker.start("trip-1", input=[{"trip": 1}])
    await worker.workflow_task(one_activity)
    task = await worker.activity_task(lambda t: {"result": {"booked": t["activity_type"]}})
    assert task["kind"] == "activity_task" and task["attempt"] == 1
    await worker.workflow_task(one_activity)

    res = await worker.result("trip-1")
    assert res["status"] == "Completed" and res["result"] == {"booked": "work"}
    types = [e["event_type"] for e in await worker.history("trip-1")]
    assert types[0] == "WorkflowExecutionStarted" and types[-1] == "WorkflowExecutionCompleted"
    assert of_type(await worker.history("trip-1"), "ActivityTaskCompleted")
    count = await worker.http.get("/api/v1/namespaces/default/workflow-count")
    assert count.status_code == 200 and count.json()["count"] == 1

    # What the server answered is what MongoDB holds, read back by a store of its own.
    async with await open_store(store_url) as store:
        events = await store.read_events("default", "trip-1", run_id)
        assert [e.event_type for e in events] == types
        state = await store.get_execution("default", "trip-1", run_id)
        assert state is not None and state.status.value == "Completed"
        [record] = (await store.list_visibility("default", filters={"workflow_id": "trip-1"})).records
        assert (record.run_id, record.status) == (run_id, "Completed") and record.close_time is not None
